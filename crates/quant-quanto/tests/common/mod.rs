//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use quant_core::safetensors_io::SafetensorsFile;
use quant_core::{Params, QuantMethod, QuantizedTensor, Registry, TensorRecord};

/// `tests/data/...`.
pub fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

/// Reads a JSON file under `tests/data`.
pub fn json(rel: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(data(rel)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Creates a registered method (this also links the crate's registrations).
pub fn method(name: &str, params: &[(&str, serde_json::Value)]) -> Box<dyn QuantMethod> {
    assert_eq!(quant_quanto::BACKEND, "quant-quanto");
    let mut p = Params::new();
    for (k, v) in params {
        p.insert((*k).to_string(), v.clone());
    }
    Registry::global().unwrap().create(name, &p).unwrap()
}

/// The method name and parameters for a quanto qtype name.
pub fn method_for_qtype(qtype: &str) -> (&'static str, Vec<(&'static str, serde_json::Value)>) {
    match qtype {
        "qint8" => ("quanto_config_int8", vec![]),
        "qint4" => ("quanto_config_int4", vec![]),
        "qint2" => ("quanto_config_int2", vec![]),
        "qfloat8_e4m3fn" => ("quanto_config_float8", vec![]),
        "qfloat8_e5m2" => (
            "quanto_config_float8",
            vec![
                ("float8_format", "e5m2".into()),
                ("layout", "optimum".into()),
            ],
        ),
        "qfloat8_e4m3fnuz" => (
            "quanto_config_float8",
            vec![
                ("float8_format", "e4m3fnuz".into()),
                ("layout", "optimum".into()),
            ],
        ),
        other => panic!("unknown qtype {other}"),
    }
}

/// Loads the parts named by `record` from a file.
pub fn load(file: &SafetensorsFile, record: &TensorRecord) -> QuantizedTensor {
    QuantizedTensor {
        record: record.clone(),
        parts: record.parts.iter().map(|k| file.part(k).unwrap()).collect(),
    }
}

/// f32 bit patterns (NaN payloads included).
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}
