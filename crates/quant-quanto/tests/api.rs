//! Registration, parameters, tensor selection, layouts and round trips.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use quant_core::format::{layouts, ForeignFile};
use quant_core::safetensors_io::{write_safetensors, SafetensorsFile};
use quant_core::{DType, Error, Params, Registry, Selection, TensorMeta};

const NAMES: [&str; 4] = [
    "quanto_config_int8",
    "quanto_config_int4",
    "quanto_config_int2",
    "quanto_config_float8",
];

/// Worst dequantization error: half a quantization step, plus the model-dtype roundings
/// of the intermediate results — `q` (up to 15 steps, rounded to the dtype) and the
/// weight-sized sums — each at most a few units of the dtype's epsilon.
fn max_error(step: f32, range: f32, dtype: DType) -> f32 {
    let eps = match dtype {
        DType::BF16 => 2f32.powi(-8),
        DType::F16 => 2f32.powi(-11),
        _ => 2f32.powi(-24),
    };
    step * (0.5 + 16.0 * eps) + 4.0 * eps * range
}

/// A deterministic pseudo-random weight in [-amp, amp).
fn weight(n: usize, seed: u64, amp: f32) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let mut z = (i + seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amp
        })
        .collect()
}

#[test]
fn four_methods_registered_with_round_tripping_params() {
    let reg = Registry::global().unwrap();
    for name in NAMES {
        let entry = reg.get(name).unwrap();
        assert_eq!(entry.backend, quant_quanto::BACKEND);
        let m = reg.create(name, &Params::new()).unwrap();
        assert_eq!(m.name(), name);
        let again = reg.create(name, &m.params()).unwrap();
        assert_eq!(again.params(), m.params());
        for spec in entry.params {
            assert!(m.params().contains_key(spec.name), "{name}: {}", spec.name);
        }
    }
    let m = method(
        "quanto_config_float8",
        &[
            ("float8_format", "e5m2".into()),
            ("layout", "optimum".into()),
            ("modules_to_not_convert", serde_json::json!(["proj_out"])),
        ],
    );
    let again = reg.create(m.name(), &m.params()).unwrap();
    assert_eq!(again.params(), m.params());
    assert_eq!(m.params()["float8_format"], "e5m2");
}

#[test]
fn bad_params_are_typed_errors() {
    let reg = Registry::global().unwrap();
    let bad = |name: &str, k: &str, v: serde_json::Value| {
        let mut p = Params::new();
        p.insert(k.into(), v);
        reg.create(name, &p).err().unwrap()
    };
    assert!(
        matches!(bad("quanto_config_int4", "group_size", 64.into()), Error::BadParam { param, .. } if param == "group_size")
    );
    assert!(matches!(
        bad("quanto_config_int8", "layout", "gguf".into()),
        Error::BadParam { .. }
    ));
    assert!(matches!(
        bad("quanto_config_int8", "float8_format", "e5m2".into()),
        Error::BadParam { .. }
    ));
    assert!(
        matches!(bad("quanto_config_float8", "float8_format", "e3m4".into()), Error::BadParam { param, .. } if param == "float8_format")
    );
    assert!(matches!(
        bad("quanto_config_int2", "modules_to_not_convert", 3.into()),
        Error::BadParam { .. }
    ));
    // diffusers' QuantoConfig has no e5m2: refused rather than written unloadable.
    assert!(
        matches!(bad("quanto_config_float8", "float8_format", "e5m2".into()), Error::BadParam { param, .. } if param == "layout")
    );
}

#[test]
fn selection_follows_quanto_defaults() {
    let d = method("quanto_config_int4", &[]);
    let o = method(
        "quanto_config_int4",
        &[
            ("layout", "optimum".into()),
            ("modules_to_not_convert", serde_json::json!(["lm_head"])),
        ],
    );
    let t = |name: &str, dtype, shape: &[usize]| TensorMeta::new(name, dtype, shape.to_vec());
    let q = Selection::Quantize;
    let k = Selection::Keep(None);
    for (meta, diffusers, optimum) in [
        (t("a.to_q.weight", DType::F16, &[8, 8]), &q, &q),
        (t("a.to_q.bias", DType::F16, &[8]), &k, &k),
        (t("a.norm.weight", DType::F32, &[8]), &k, &k),
        (t("conv_in.weight", DType::F16, &[8, 4, 3, 3]), &k, &q),
        (
            t("embeddings.word_embeddings.weight", DType::F32, &[256, 8]),
            &k,
            &k,
        ),
        (
            t("model.embed_tokens.weight", DType::BF16, &[256, 8]),
            &k,
            &k,
        ),
        (
            t("time_embedding.linear_1.weight", DType::F16, &[8, 8]),
            &q,
            &q,
        ),
        (t("lm_head.weight", DType::F16, &[256, 8]), &q, &k),
        (t("a.idx.weight", DType::I64, &[4, 4]), &k, &k),
        (t("a.pos", DType::F32, &[4, 4]), &k, &k),
        (t("weight", DType::F32, &[4, 4]), &q, &q),
    ] {
        assert_eq!(&d.select(&meta), diffusers, "{}", meta.name);
        assert_eq!(&o.select(&meta), optimum, "{}", meta.name);
    }
}

#[test]
fn layouts_match_quanto_shapes() {
    let shapes = |m: &str, params: &[(&str, serde_json::Value)], dtype, shape: &[usize]| {
        let meta = TensorMeta::new("m.w.weight", dtype, shape.to_vec());
        method(m, params)
            .output_layout(&meta)
            .unwrap()
            .into_iter()
            .map(|l| (l.key, l.dtype, l.shape))
            .collect::<Vec<_>>()
    };
    let s = |k: &str| k.to_string();
    // One output row: scalar scale (per-tensor), as quanto does for an axis of size 1.
    assert_eq!(
        shapes("quanto_config_int8", &[], DType::BF16, &[1, 16])[1],
        (s("m.w.weight._scale"), DType::BF16, vec![])
    );
    // Conv weights keep 4-D data and a [out,1,1,1] scale; ungrouped qint2 packs 4 rows/byte.
    assert_eq!(
        shapes("quanto_config_int2", &[], DType::F16, &[10, 4, 3, 3])[..2],
        [
            (s("m.w.weight._data._data"), DType::U8, vec![3, 4, 3, 3]),
            (s("m.w.weight._scale"), DType::F16, vec![10, 1, 1, 1]),
        ]
    );
    // Grouped: 864 = 9 * 96.
    assert_eq!(
        shapes("quanto_config_int4", &[], DType::F32, &[48, 96, 3, 3])[..3],
        [
            (s("m.w.weight._data._data"), DType::U8, vec![216, 96]),
            (s("m.w.weight._scale"), DType::F32, vec![432, 1]),
            (s("m.w.weight._shift"), DType::F32, vec![432, 1]),
        ]
    );
    let fnuz = shapes(
        "quanto_config_float8",
        &[
            ("float8_format", "e4m3fnuz".into()),
            ("layout", "optimum".into()),
        ],
        DType::F32,
        &[3, 5],
    );
    assert_eq!(fnuz[0].1, DType::F8E4M3FNUZ);
    assert_eq!(
        fnuz[2..],
        [
            (s("m.w.input_scale"), DType::F32, vec![]),
            (s("m.w.output_scale"), DType::F32, vec![]),
        ]
    );
}

#[test]
fn round_trips_stay_within_half_a_step() {
    for name in NAMES {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            for shape in [
                vec![33usize, 100],
                vec![16, 512],
                vec![1, 256],
                vec![6, 8, 3, 3],
            ] {
                let n: usize = shape.iter().product();
                let mut values = weight(n, shape[0] as u64, 0.05);
                values
                    .iter_mut()
                    .for_each(|v| *v = quant_core::dtype::round_to(dtype, *v));
                let meta = TensorMeta::new("l.weight", dtype, shape.clone());
                let m = method(name, &[]);
                let q = m.quantize(&meta, &values).unwrap();
                assert_eq!(q.record.dequant_dtype, dtype);
                let back = m.dequantize(&q).unwrap();
                assert_eq!(back.len(), n);
                let step = match name {
                    "quanto_config_int8" => 0.05 / 127.0,
                    "quanto_config_int4" => 0.1 / 15.0,
                    "quanto_config_int2" => 0.1 / 3.0,
                    // float8: relative; e4m3 has 3 mantissa bits.
                    _ => 0.05 / 8.0,
                };
                for (a, b) in values.iter().zip(&back) {
                    assert_eq!(quant_core::dtype::round_to(dtype, *b), *b);
                    assert!(
                        (a - b).abs() <= max_error(step, 0.1, dtype),
                        "{name} {dtype} {shape:?}: {a} -> {b}"
                    );
                }
            }
        }
    }
}

#[test]
fn tinygemm_shift_for_bf16_qint4_g128() {
    // bf16, qint4, 2-D, group 128: the stored shift goes through TinyGemm's round trip.
    let m = method("quanto_config_int4", &[]);
    let values: Vec<f32> = weight(4 * 256, 7, 0.05)
        .into_iter()
        .map(quant_core::dtype::round_bf16)
        .collect();
    let meta = TensorMeta::new("l.weight", DType::BF16, vec![4, 256]);
    let q = m.quantize(&meta, &values).unwrap();
    let scale = q.part("l.weight._scale").unwrap();
    let shift = q.part("l.weight._shift").unwrap();
    let dec = |b: &[u8]| -> Vec<f32> {
        b.chunks(2)
            .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
            .collect()
    };
    let (scale, shift) = (dec(&scale.data), dec(&shift.data));
    let rd = quant_core::dtype::round_bf16;
    for (g, (s, z)) in values.chunks(128).zip(scale.iter().zip(&shift)) {
        let rmin = g.iter().copied().fold(f32::INFINITY, f32::min);
        let half = rd(8.0 * s);
        assert_eq!(*z, rd(half - rd(rmin + half)));
    }
    // A 4-D weight with the same group size is not TinyGemm: shift is exactly -min.
    let meta4 = TensorMeta::new("c.weight", DType::BF16, vec![4, 128, 1, 2]);
    let q4 = m.quantize(&meta4, &values).unwrap();
    let z4 = dec(&q4.part("c.weight._shift").unwrap().data);
    for (g, z) in values.chunks(128).zip(&z4) {
        assert_eq!(*z, -g.iter().copied().fold(f32::INFINITY, f32::min));
    }
}

#[test]
fn our_files_load_back_through_the_detector() {
    // Grouped weights without bias need quant's shape metadata to be restored.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let m = method("quanto_config_int2", &[("layout", "optimum".into())]);
    let metas = [
        TensorMeta::new("a.q_proj.weight", DType::F16, vec![8, 256]),
        TensorMeta::new("a.conv.weight", DType::F16, vec![4, 32, 3, 3]),
        TensorMeta::new("a.o_proj.weight", DType::F16, vec![2, 64]),
    ];
    let mut parts = Vec::new();
    let mut planned = Vec::new();
    let mut expected = Vec::new();
    for (i, meta) in metas.iter().enumerate() {
        let values: Vec<f32> = weight(meta.numel().unwrap(), i as u64, 1.0)
            .into_iter()
            .map(quant_core::dtype::round_f16)
            .collect();
        let q = m.quantize(meta, &values).unwrap();
        expected.push(m.dequantize(&q).unwrap());
        parts.extend(q.parts);
        planned.push(quant_core::PlannedTensor {
            meta: meta.clone(),
            layout: m.output_layout(meta).unwrap(),
            method: Some(m.name().to_string()),
        });
    }
    let art = m.artifacts(&planned).unwrap();
    assert!(art.quantization_config.is_none());
    assert_eq!(art.metadata.get("format").map(String::as_str), Some("pt"));
    assert!(art.metadata.contains_key(quant_quanto::SHAPES_METADATA_KEY));
    write_safetensors(&path, &parts, &art.metadata).unwrap();

    let f = SafetensorsFile::open(&path).unwrap();
    let tensors: Vec<TensorMeta> = f.metas().cloned().collect();
    let ff = ForeignFile {
        path: &path,
        tensors: &tensors,
        metadata: f.metadata(),
        config: None,
    };
    let detect = layouts()
        .find(|l| l.backend == quant_quanto::BACKEND)
        .unwrap()
        .detect;
    let records = detect(&ff).unwrap();
    assert_eq!(records.len(), 3);
    for (meta, want) in metas.iter().zip(&expected) {
        let rec = records.iter().find(|r| r.name == meta.name).unwrap();
        assert_eq!(rec.shape, meta.shape);
        assert_eq!(rec.dtype, DType::F16);
        let restored = Registry::global()
            .unwrap()
            .create(rec.method.as_deref().unwrap(), &rec.params)
            .unwrap();
        assert_eq!(
            bits(&restored.dequantize(&load(&f, rec)).unwrap()),
            bits(want)
        );
    }
    // Without the metadata the bias-less grouped q_proj is ambiguous: a typed error.
    let empty = Default::default();
    let ff = ForeignFile {
        metadata: &empty,
        ..ff
    };
    assert!(
        matches!(detect(&ff), Err(Error::InvalidTensor { tensor, .. }) if tensor == "a.q_proj.weight")
    );
    // A file without quanto keys is not ours.
    let plain = [TensorMeta::new("x.weight", DType::F32, vec![2, 2])];
    let ff = ForeignFile {
        tensors: &plain,
        ..ff
    };
    assert!(detect(&ff).unwrap().is_empty());
}
