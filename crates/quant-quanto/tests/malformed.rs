//! Malformed quanto files, parts and inputs give typed errors, never panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use quant_core::format::{layouts, ForeignFile};
use quant_core::safetensors_io::{write_safetensors, SafetensorsFile};
use quant_core::{DType, Error, Result, TensorMeta, TensorRecord};

fn detect(
    tensors: &[TensorMeta],
    metadata: &BTreeMap<String, String>,
    config: Option<&serde_json::Value>,
) -> Result<Vec<TensorRecord>> {
    let d = layouts()
        .find(|l| l.backend == quant_quanto::BACKEND)
        .unwrap()
        .detect;
    d(&ForeignFile {
        path: Path::new("bad.safetensors"),
        tensors,
        metadata,
        config,
    })
}

fn t(name: &str, dtype: DType, shape: &[usize]) -> TensorMeta {
    TensorMeta::new(name, dtype, shape.to_vec())
}

fn names(err: &Error) -> (String, String) {
    match err {
        Error::InvalidTensor { path, tensor, .. } => (path.display().to_string(), tensor.clone()),
        other => panic!("expected InvalidTensor, got {other:?}"),
    }
}

#[test]
fn detector_reports_malformed_layouts() {
    let none = BTreeMap::new();
    let good_i8 = [
        t("a.weight._data", DType::I8, &[4, 8]),
        t("a.weight._scale", DType::F16, &[4, 1]),
    ];
    assert_eq!(detect(&good_i8, &none, None).unwrap().len(), 1);

    let cases: Vec<(Vec<TensorMeta>, &str)> = vec![
        // data without scale
        (vec![t("a.weight._data", DType::I8, &[4, 8])], "a.weight"),
        // scale without data, beside a good weight
        (
            [
                good_i8.to_vec(),
                vec![t("b.weight._scale", DType::F16, &[4, 1])],
            ]
            .concat(),
            "b.weight._scale",
        ),
        // packed data without shift
        (
            vec![
                t("a.weight._data._data", DType::U8, &[2, 8]),
                t("a.weight._scale", DType::F16, &[4, 1]),
            ],
            "a.weight",
        ),
        // unknown data dtype
        (
            vec![
                t("a.weight._data", DType::F32, &[4, 8]),
                t("a.weight._scale", DType::F16, &[4, 1]),
            ],
            "a.weight",
        ),
        // scale shape does not fit the data
        (
            vec![
                t("a.weight._data", DType::I8, &[4, 8]),
                t("a.weight._scale", DType::F16, &[5, 1]),
            ],
            "a.weight._scale",
        ),
        // scale dtype not a float
        (
            vec![
                t("a.weight._data", DType::I8, &[4, 8]),
                t("a.weight._scale", DType::I32, &[4, 1]),
            ],
            "a.weight",
        ),
        // packed rows fit neither 4 nor 2 bits
        (
            vec![
                t("a.weight._data._data", DType::U8, &[7, 8]),
                t("a.weight._scale", DType::F16, &[8, 1]),
                t("a.weight._shift", DType::F16, &[8, 1]),
            ],
            "a.weight",
        ),
        // shift does not match scale
        (
            vec![
                t("a.weight._data._data", DType::U8, &[4, 8]),
                t("a.weight._scale", DType::F16, &[8, 1]),
                t("a.weight._shift", DType::F32, &[8, 1]),
            ],
            "a.weight",
        ),
        // packed data not U8
        (
            vec![
                t("a.weight._data._data", DType::I8, &[4, 8]),
                t("a.weight._scale", DType::F16, &[8, 1]),
                t("a.weight._shift", DType::F16, &[8, 1]),
            ],
            "a.weight",
        ),
        // input_scale present but not a scalar
        (
            [good_i8.to_vec(), vec![t("a.input_scale", DType::F16, &[1])]].concat(),
            "a.input_scale",
        ),
    ];
    for (tensors, tensor) in cases {
        let err = detect(&tensors, &none, None).unwrap_err();
        assert_eq!(
            names(&err),
            ("bad.safetensors".to_string(), tensor.to_string()),
            "{err}"
        );
    }

    // Packed 1-row data: qint4 or qint2 cannot be told apart without config or peers.
    let tiny = [
        t("a.weight._data._data", DType::U8, &[1, 8]),
        t("a.weight._scale", DType::F16, &[2, 1]),
        t("a.weight._shift", DType::F16, &[2, 1]),
    ];
    assert!(matches!(
        detect(&tiny, &none, None),
        Err(Error::InvalidTensor { .. })
    ));
    let int2 = serde_json::json!({"quantization_config": {"quant_method": "quanto", "weights_dtype": "int2"}});
    let recs = detect(&tiny, &none, Some(&int2)).unwrap();
    assert_eq!(recs[0].method.as_deref(), Some("quanto_config_int2"));
    // Config contradicting the packing ratio.
    let four = [
        t("a.weight._data._data", DType::U8, &[4, 8]),
        t("a.weight._scale", DType::F16, &[8, 1]),
        t("a.weight._shift", DType::F16, &[8, 1]),
    ];
    assert!(matches!(
        detect(&four, &none, Some(&int2)),
        Err(Error::InvalidTensor { .. })
    ));
    // Bad config value and bad shape metadata name the file.
    let bad_cfg = serde_json::json!({"quantization_config": {"quant_method": "quanto", "weights_dtype": "int3"}});
    assert!(matches!(
        detect(&four, &none, Some(&bad_cfg)),
        Err(Error::InvalidFile { .. })
    ));
    let mut bad_md = BTreeMap::new();
    bad_md.insert(
        quant_quanto::SHAPES_METADATA_KEY.to_string(),
        "{not json".to_string(),
    );
    assert!(matches!(
        detect(&four, &bad_md, None),
        Err(Error::InvalidFile { .. })
    ));
    // Shape metadata that contradicts the stored parts.
    let mut wrong_md = BTreeMap::new();
    wrong_md.insert(
        quant_quanto::SHAPES_METADATA_KEY.to_string(),
        r#"{"a.weight": [3, 3]}"#.to_string(),
    );
    assert!(matches!(
        detect(&four, &wrong_md, None),
        Err(Error::InvalidTensor { .. })
    ));
}

#[test]
fn library_checkpoint_with_a_part_removed_is_an_error() {
    let dir = data("checkpoints/quanto/unet_diffusers_quanto_int4");
    let src = SafetensorsFile::open(dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let victim = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight._shift";
    let parts: Vec<_> = src
        .metas()
        .filter(|m| m.name != victim)
        .map(|m| src.part(&m.name).unwrap())
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("model.safetensors");
    write_safetensors(&path, &parts, &BTreeMap::new()).unwrap();
    let f = SafetensorsFile::open(&path).unwrap();
    let metas: Vec<TensorMeta> = f.metas().cloned().collect();
    let err = detect(&metas, f.metadata(), None).unwrap_err();
    assert_eq!(
        names(&err).1,
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    );
}

#[test]
fn bad_parts_and_inputs_are_typed_errors() {
    let m = method("quanto_config_int4", &[]);
    let meta = TensorMeta::new("l.weight", DType::F32, vec![4, 8]);
    let values = vec![0.5f32; 32];
    // Wrong value count, too few dimensions, non-float dtype.
    assert!(matches!(
        m.quantize(&meta, &values[..31]),
        Err(Error::ShapeMismatch { .. })
    ));
    let flat = TensorMeta::new("l.weight", DType::F32, vec![32]);
    assert!(matches!(
        m.quantize(&flat, &values),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        m.output_layout(&flat),
        Err(Error::ShapeMismatch { .. })
    ));
    let ints = TensorMeta::new("l.weight", DType::I32, vec![4, 8]);
    assert!(matches!(
        m.quantize(&ints, &values),
        Err(Error::UnsupportedDType { .. })
    ));

    let q = m.quantize(&meta, &values).unwrap();
    // A part with the wrong shape.
    let mut bad = q.clone();
    bad.parts[1].layout.shape = vec![2, 2];
    assert!(
        matches!(m.dequantize(&bad), Err(Error::InvalidTensor { tensor, .. }) if tensor == "l.weight._scale")
    );
    // A missing part.
    let mut missing = q.clone();
    missing.parts.remove(2);
    assert!(matches!(
        m.dequantize(&missing),
        Err(Error::InvalidTensor { .. })
    ));
    // Parts of another qtype.
    let int8 = method("quanto_config_int8", &[]);
    let q8 = int8.quantize(&meta, &values).unwrap();
    let mut mixed = q8.clone();
    mixed.record = q.record.clone();
    assert!(matches!(
        m.dequantize(&mixed),
        Err(Error::InvalidTensor { .. })
    ));
    let mut mixed = q.clone();
    mixed.record = q8.record.clone();
    assert!(matches!(
        int8.dequantize(&mixed),
        Err(Error::InvalidTensor { .. })
    ));
}

#[test]
fn bad_quantization_maps_are_typed_errors() {
    for text in [
        &b"{not json"[..],
        b"[1, 2]",
        br#"{"a": {"weights": "qint4"}}"#,
        br#"{"a": {"weights": 4, "activations": "none"}}"#,
    ] {
        assert!(matches!(
            quant_quanto::parse_qmap(text),
            Err(Error::InvalidFile { .. })
        ));
    }
}
