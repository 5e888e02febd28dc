#![no_main]
//! See `quant::fuzzing::config_file`.

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("scratch folder"));
    quant::fuzzing::config_file(dir.path(), data);
});
