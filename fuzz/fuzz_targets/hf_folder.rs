#![no_main]
//! See `quant::fuzzing::hf_folder`.

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("scratch folder"));
    quant::fuzzing::hf_folder(dir.path(), data);
});
