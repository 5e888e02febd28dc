//! What each method stores for NaN and infinities when they are allowed
//! (`allow_nonfinite`), as documented in README.md ("NaN and infinities").
use quant::{DType, ModelFiles, ModelQuantizer, Registry};

use crate::common::{write, NEEDS_IMATRIX};

/// Restores a [16, 256] weight holding NaN at 1, +inf at 2 and -inf at 3 (the rest
/// finite, |x| <= 1) quantized by `method` with non-finite values allowed: stored as f32,
/// or as bf16 for the methods that quantize bf16 weights only.
fn restored(method: &str) -> Vec<f32> {
    let dir = tempfile::tempdir().unwrap();
    let mut w: Vec<f32> = (0..4096).map(|i| ((i % 17) as f32 - 8.0) / 8.0).collect();
    w[1] = f32::NAN;
    w[2] = f32::INFINITY;
    w[3] = f32::NEG_INFINITY;
    for dtype in [DType::F32, DType::BF16] {
        let p = dir.path().join(format!("in-{dtype}.safetensors"));
        write(&p, dtype, &[("l.weight", vec![16, 256], w.clone())]);
        let out = dir.path().join(format!("out-{dtype}.safetensors"));
        ModelQuantizer::new(method)
            .allow_nonfinite(true)
            .quantize_path(&p, &out)
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        let files = ModelFiles::open(&out).unwrap();
        let quantized = files
            .records()
            .any(|(_, r)| r.name == "l.weight" && r.method.as_deref() == Some(method));
        if quantized {
            return files.load_f32("l.weight").unwrap();
        }
    }
    panic!("{method} quantizes neither f32 nor bf16 [16, 256] weights")
}

#[derive(Debug, PartialEq)]
enum Kind {
    Nan,
    PosInf,
    NegInf,
    Finite,
}

fn kind(x: f32) -> Kind {
    if x.is_nan() {
        Kind::Nan
    } else if x == f32::INFINITY {
        Kind::PosInf
    } else if x == f32::NEG_INFINITY {
        Kind::NegInf
    } else {
        Kind::Finite
    }
}

/// Prints, per method: what NaN, +inf, -inf come back as, and how many finite values of
/// the first row (the block holding them) and of the last row (untouched) come back
/// non-finite.
#[test]
#[ignore = "prints measurements"]
fn probe_nonfinite() {
    for e in Registry::global().unwrap().entries() {
        if NEEDS_IMATRIX.contains(&e.name) {
            continue;
        }
        let b = restored(e.name);
        let bad_row0 = b[4..256].iter().filter(|x| !x.is_finite()).count();
        let bad_row3 = b[3840..].iter().filter(|x| !x.is_finite()).count();
        println!(
            "{:36} nan->{:?}({}) +inf->{:?}({}) -inf->{:?}({}) row0 nonfinite {bad_row0} row3 {bad_row3}",
            e.name, kind(b[1]), b[1], kind(b[2]), b[2], kind(b[3]), b[3]
        );
    }
}
/// How far a NaN or infinity spreads in what a method restores (README.md, "NaN and
/// infinities"): only itself, its block of `n` values, its row, or the whole tensor.
#[derive(Clone, Copy, Debug)]
enum Scope {
    Value,
    Block(usize),
    Row,
    Tensor,
}

const SCOPES: &[(&str, Scope)] = &[
    ("basic_fp16", Scope::Value),
    ("basic_bf16", Scope::Value),
    ("basic_int8", Scope::Row),
    ("bnb_4bit_config_fp16", Scope::Block(64)),
    ("bnb_4bit_config_bf16", Scope::Block(64)),
    ("bnb_8bit_config_fp16", Scope::Row),
    ("bnb_8bit_config_bf16", Scope::Row),
    ("quanto_config_int8", Scope::Row),
    ("quanto_config_float8", Scope::Row),
    ("quanto_config_int4", Scope::Block(128)),
    ("quanto_config_int2", Scope::Block(128)),
    ("torch_ao_config_int4wo", Scope::Block(128)),
    ("torch_ao_config_int4dq", Scope::Block(32)),
    ("torch_ao_config_int8wo", Scope::Row),
    ("torch_ao_config_int8dq", Scope::Row),
    ("torch_ao_config_float8wo", Scope::Row),
    ("torch_ao_config_float8wo_e5m2", Scope::Row),
    ("torch_ao_config_float8wo_e4m3", Scope::Row),
    ("torch_ao_config_float8_e4m3_row", Scope::Row),
    ("torch_ao_config_float8dq", Scope::Tensor),
    ("torch_ao_config_float8dq_e4m3", Scope::Tensor),
    ("torch_ao_config_float8_e4m3_tensor", Scope::Tensor),
    ("torch_ao_config_uint1wo", Scope::Block(64)),
    ("torch_ao_config_uint2wo", Scope::Block(64)),
    ("torch_ao_config_uint3wo", Scope::Block(64)),
    ("torch_ao_config_uint4wo", Scope::Block(64)),
    ("torch_ao_config_uint5wo", Scope::Block(64)),
    ("torch_ao_config_uint6wo", Scope::Block(64)),
    ("torch_ao_config_uint7wo", Scope::Block(64)),
    // GGML: a non-finite value spoils its 32-value block (256 for the K-quants and IQ4_XS);
    // F16/BF16 keep it.
    ("gguf_config_fp16", Scope::Value),
    ("gguf_config_bf16", Scope::Value),
    ("gguf_config_q8_0", Scope::Block(32)),
    ("gguf_config_q8_1", Scope::Block(32)),
    ("gguf_config_q5_0", Scope::Block(32)),
    ("gguf_config_q5_1", Scope::Block(32)),
    ("gguf_config_q4_0", Scope::Block(32)),
    ("gguf_config_q4_1", Scope::Block(32)),
    ("gguf_config_iq4_nl", Scope::Block(32)),
    ("gguf_config_iq4_xs", Scope::Block(256)),
    ("gguf_config_q8_k", Scope::Block(256)),
    ("gguf_config_q6_k", Scope::Block(256)),
    ("gguf_config_q5_k", Scope::Block(256)),
    ("gguf_config_q4_k", Scope::Block(256)),
    ("gguf_config_q3_k", Scope::Block(256)),
    ("gguf_config_q2_k", Scope::Block(256)),
    ("gguf_config_iq3_s", Scope::Block(256)),
    ("gguf_config_iq3_xxs", Scope::Block(256)),
    ("gguf_config_iq2_s", Scope::Block(256)),
    ("gguf_config_iq1_m", Scope::Block(256)),
    ("gguf_config_tq1_0", Scope::Block(256)),
    ("gguf_config_tq2_0", Scope::Block(256)),
    ("gguf_config_mxfp4", Scope::Block(32)),
    // llama-quantize's file types on a model without llama.cpp names: their default type.
    ("gguf_q4_0", Scope::Block(32)),
    ("gguf_q4_1", Scope::Block(32)),
    ("gguf_q5_0", Scope::Block(32)),
    ("gguf_q5_1", Scope::Block(32)),
    ("gguf_q8_0", Scope::Block(32)),
    ("gguf_q2_k", Scope::Block(256)),
    ("gguf_iq2_m", Scope::Block(256)),
    ("gguf_iq3_xxs", Scope::Block(256)),
    ("gguf_iq3_xs", Scope::Block(256)),
    ("gguf_iq3_s", Scope::Block(256)),
    ("gguf_iq3_m", Scope::Block(256)),
    ("gguf_tq1_0", Scope::Block(256)),
    ("gguf_tq2_0", Scope::Block(256)),
    ("gguf_mxfp4_moe", Scope::Block(32)),
    ("gguf_q3_k_s", Scope::Block(256)),
    ("gguf_q3_k_m", Scope::Block(256)),
    ("gguf_q3_k_l", Scope::Block(256)),
    ("gguf_q4_k_s", Scope::Block(256)),
    ("gguf_q4_k_m", Scope::Block(256)),
    ("gguf_q5_k_s", Scope::Block(256)),
    ("gguf_q5_k_m", Scope::Block(256)),
    ("gguf_q6_k", Scope::Block(256)),
    ("gguf_iq4_nl", Scope::Block(32)),
    ("gguf_iq4_xs", Scope::Block(256)),
    ("gguf_f16", Scope::Value),
    ("gguf_bf16", Scope::Value),
    ("example_ternary", Scope::Tensor),
];

#[test]
fn nonfinite_values_spread_no_further_than_documented() {
    for e in Registry::global().unwrap().entries() {
        if NEEDS_IMATRIX.contains(&e.name) {
            continue;
        }
        let scope = SCOPES
            .iter()
            .find(|(m, _)| *m == e.name)
            .map(|(_, s)| *s)
            .unwrap_or_else(|| panic!("{}: no documented NaN/inf scope", e.name));
        let b = restored(e.name);
        assert_eq!(b.len(), 4096, "{}", e.name);
        let clean_from = match scope {
            Scope::Value => {
                assert_eq!(
                    (kind(b[1]), kind(b[2]), kind(b[3])),
                    (Kind::Nan, Kind::PosInf, Kind::NegInf),
                    "{}",
                    e.name
                );
                4
            }
            Scope::Block(n) => n,
            Scope::Row => 256,
            Scope::Tensor => 4096,
        };
        let first_bad = b[clean_from..].iter().position(|x| !x.is_finite());
        assert_eq!(first_bad, None, "{} ({scope:?})", e.name);
    }
}
