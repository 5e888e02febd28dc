//! Helpers shared by the integration tests: fixtures under tests/data.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use quant_core::safetensors_io::SafetensorsFile;
use quant_core::{Params, QuantMethod, Registry, TensorSource};

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

pub fn manifest(rel: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(data_dir().join(rel)).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn open(rel: &str) -> SafetensorsFile {
    SafetensorsFile::open(data_dir().join(rel)).unwrap()
}

pub fn f32s(f: &SafetensorsFile, name: &str) -> Vec<f32> {
    f.get(name)
        .unwrap_or_else(|| panic!("{name}"))
        .to_f32()
        .unwrap()
}

/// Names an item of quant-bnb so the linker keeps the crate and its registrations
/// (inventory issue #7), as the facade's `pub use quant_bnb as bnb` does.
pub fn link_backend() {
    std::hint::black_box(quant_bnb::method::quantization_config_8bit());
}

pub fn method(name: &str, params: serde_json::Value) -> Box<dyn QuantMethod> {
    link_backend();
    let params: Params = params.as_object().unwrap().clone();
    Registry::global().unwrap().create(name, &params).unwrap()
}

/// Distance in f32 ulps (same sign assumed).
pub fn ulps(a: f32, b: f32) -> u32 {
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
}

pub fn json_of(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

/// Compares two quant-state JSON objects: every key equal, except `nested_offset`, which
/// is returned as (ours, theirs) for the caller to judge.
pub fn compare_state(ours: &[u8], theirs: &[u8], ctx: &str) -> Option<(f32, f32)> {
    let mut a = json_of(ours);
    let mut b = json_of(theirs);
    let oa = a.as_object_mut().unwrap().remove("nested_offset");
    let ob = b.as_object_mut().unwrap().remove("nested_offset");
    assert_eq!(a, b, "{ctx}: quant state");
    assert_eq!(oa.is_some(), ob.is_some(), "{ctx}: nested_offset presence");
    match (oa, ob) {
        (Some(x), Some(y)) => Some((x.as_f64().unwrap() as f32, y.as_f64().unwrap() as f32)),
        _ => None,
    }
}
