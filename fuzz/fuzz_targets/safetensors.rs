#![no_main]
//! See `quant::fuzzing::safetensors_file`.

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("scratch folder"));
    quant::fuzzing::safetensors_file(dir.path(), data);
});
