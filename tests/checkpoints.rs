//! The acceptance test of the layouts through the public API: quantizing an original
//! model folder with `ModelQuantizer::quantize_path` gives the tensors (keys, dtypes,
//! shapes, bytes) and `quantization_config` of the folder the real library saved, and the
//! library-written folder loads back to the same values as ours.
#![cfg(any(feature = "bnb", feature = "quanto"))]

use std::path::{Path, PathBuf};

use quant::safetensors_io::SafetensorsFile;
use quant::{ModelFiles, ModelQuantizer};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn weights(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .unwrap()
}

fn config(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap()
}

/// Compares our folder with the library's; `json_part` marks U8 parts that hold JSON text
/// (compared as JSON).
fn compare(ours: &Path, theirs: &Path, json_part: impl Fn(&str) -> bool) {
    let a = SafetensorsFile::open(weights(ours)).unwrap();
    let b = SafetensorsFile::open(weights(theirs)).unwrap();
    let mut ka: Vec<_> = a.metas().map(|m| m.name.clone()).collect();
    let mut kb: Vec<_> = b.metas().map(|m| m.name.clone()).collect();
    ka.sort();
    kb.sort();
    assert_eq!(ka, kb, "{}", theirs.display());
    for k in &kb {
        let (pa, pb) = (a.part(k).unwrap(), b.part(k).unwrap());
        if json_part(k) {
            let ja: serde_json::Value = serde_json::from_slice(&pa.data).unwrap();
            let jb: serde_json::Value = serde_json::from_slice(&pb.data).unwrap();
            assert_eq!(ja, jb, "{k}");
            continue;
        }
        assert_eq!(pa.layout.dtype, pb.layout.dtype, "{k}");
        assert_eq!(pa.layout.shape, pb.layout.shape, "{k}");
        assert!(pa.data == pb.data, "{k}: bytes differ");
    }
    assert_eq!(
        config(ours)["quantization_config"],
        config(theirs)["quantization_config"],
        "{}",
        theirs.display()
    );
    // The library's folder restores every tensor exactly as ours does.
    let (ma, mb) = (
        ModelFiles::open(ours).unwrap(),
        ModelFiles::open(theirs).unwrap(),
    );
    assert_eq!(ma.records().count(), mb.records().count());
    for (_, r) in mb.records() {
        let (x, y) = (ma.load_f32(&r.name).unwrap(), mb.load_f32(&r.name).unwrap());
        assert_eq!(x.len(), y.len(), "{}", r.name);
        assert!(
            x.iter()
                .zip(&y)
                .all(|(p, q)| p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan())),
            "{}",
            r.name
        );
    }
}

fn run(
    original: &Path,
    saved: &Path,
    method: &str,
    params: serde_json::Value,
    json_part: impl Fn(&str) -> bool,
) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let params = params.as_object().cloned().unwrap_or_default();
    let report = ModelQuantizer::new(method)
        .params(params)
        .quantize_path(original, &out)
        .unwrap();
    assert_eq!(report.fallbacks, 0);
    compare(&out, saved, json_part);
}

#[cfg(feature = "quanto")]
#[test]
fn quanto_checkpoints() {
    let data = root().join("crates/quant-quanto/tests/data/checkpoints");
    let original = data.join("originals/unet_tiny_f16");
    for (folder, method, params) in [
        (
            "unet_diffusers_quanto_int8",
            "quanto_config_int8",
            serde_json::json!({}),
        ),
        (
            "unet_diffusers_quanto_int4",
            "quanto_config_int4",
            serde_json::json!({}),
        ),
        (
            "unet_diffusers_quanto_float8",
            "quanto_config_float8",
            serde_json::json!({}),
        ),
        (
            "unet_oq_qint4",
            "quanto_config_int4",
            serde_json::json!({"layout": "optimum"}),
        ),
    ] {
        run(
            &original,
            &data.join("quanto").join(folder),
            method,
            params,
            |_| false,
        );
    }
}

#[cfg(feature = "bnb")]
#[test]
fn bnb_checkpoints() {
    let data = root().join("crates/quant-bnb/tests/data/checkpoints");
    let f32_params = |extra: serde_json::Value| {
        let mut p = serde_json::json!({"dtype": "float32", "compute_dtype": "float32"});
        if let (Some(o), Some(e)) = (p.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        p
    };
    for (folder, original, method, params) in [
        (
            "bert_nf4",
            "bert_tiny_f32",
            "bnb_4bit_config_fp16",
            f32_params(serde_json::json!({})),
        ),
        (
            "bert_fp4_dq",
            "bert_tiny_f32",
            "bnb_4bit_config_fp16",
            f32_params(serde_json::json!({"quant_type": "fp4", "double_quant": true})),
        ),
        (
            "unet_nf4_dq",
            "unet_tiny_f16",
            "bnb_4bit_config_fp16",
            serde_json::json!({"double_quant": true}),
        ),
        (
            "unet_int8",
            "unet_tiny_f16",
            "bnb_8bit_config_fp16",
            serde_json::json!({}),
        ),
    ] {
        run(
            &data.join("originals").join(original),
            &data.join("bnb").join(folder),
            method,
            params,
            |k| k.contains(".quant_state."),
        );
    }
}
