//! Every reference vector of ggml (tests/data, copied from ggml d99724f2 outputs):
//! quantized bytes equal byte for byte (with and without the AVX2 build), dequantized
//! values bit for bit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use quant_gguf::GgmlType;
use serde_json::Value;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn read(file: &str) -> Vec<u8> {
    std::fs::read(data_dir().join(file)).unwrap()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn manifest() -> Value {
    serde_json::from_slice(&read("manifest.json")).unwrap()
}

fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// Runs every output of every case of `kinds`; returns (checked, failures). Prints per
/// type and imatrix use: quantized identical, dequantized identical / total.
fn run(kinds: &[&str]) -> (usize, Vec<String>) {
    let m = manifest();
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut tally: BTreeMap<(String, bool), [usize; 3]> = BTreeMap::new();
    for case in m["cases"].as_array().unwrap() {
        let kind = case["kind"].as_str().unwrap();
        if !kinds.contains(&kind) {
            continue;
        }
        let name = case["name"].as_str().unwrap();
        let ncols = case["ncols"].as_u64().unwrap() as usize;
        let input = f32s(&read(case["input"]["file"].as_str().unwrap()));
        let imatrix = case["imatrix"]["file"].as_str().map(|f| f32s(&read(f)));
        for out in case["outputs"].as_array().unwrap() {
            let tname = out["type"].as_str().unwrap();
            let ty = GgmlType::from_name(tname).unwrap();
            if out["variant"]
                .as_str()
                .unwrap()
                .starts_with("from_float_ref")
            {
                continue;
            }
            let imat = out["imatrix"].as_bool().unwrap();
            let w = if imat { imatrix.as_deref() } else { None };
            let want_q = read(out["quant"]["file"].as_str().unwrap());
            checked += 1;
            let t = tally.entry((tname.to_string(), imat)).or_default();
            t[2] += 1;
            let failed_before = failures.len();
            // Both builds of the row quantizers: the AVX2 one (where the CPU has it) and
            // the baseline one.
            for simd in [true, false] {
                let _simd = quant_core::simd::force_simd(simd);
                let got_q = quant_gguf::quantize(ty, &input, ncols, w).unwrap();
                if got_q != want_q {
                    failures.push(format!(
                        "{name} {tname} imat={imat} simd={simd}: quantized bytes differ (first at {:?}, len {} vs {})",
                        first_diff(&got_q, &want_q),
                        got_q.len(),
                        want_q.len()
                    ));
                }
            }
            if failures.len() == failed_before {
                t[0] += 1;
            }
            let want_d = read(out["dequant"]["file"].as_str().unwrap());
            let got_d: Vec<u8> = quant_gguf::dequantize(ty, &want_q, ncols)
                .unwrap()
                .iter()
                .flat_map(|v| v.to_bits().to_le_bytes())
                .collect();
            if got_d == want_d {
                t[1] += 1;
            } else {
                failures.push(format!(
                    "{name} {tname} imat={imat}: dequantized values differ (first byte at {:?})",
                    first_diff(&got_d, &want_d)
                ));
            }
        }
    }
    for ((ty, imat), [q, d, n]) in &tally {
        let with = if *imat { "imatrix" } else { "plain" };
        println!("{kinds:?} {ty:8} {with:7} quantized {q}/{n} dequantized {d}/{n}");
    }
    (checked, failures)
}

#[test]
fn main_cases_are_byte_identical() {
    let (checked, failures) = run(&["main"]);
    // 4 cases x 16 types, the imatrix and lowbit_real cases 16 + 11 weighted each,
    // odd_3x96 9 block-32 types (the IQ4_NL `from_float_ref` row-reference variant is
    // skipped: not the chunk path): 127; the low-bit types 57 more (TQ1_0, TQ2_0,
    // IQ3_XXS, IQ3_S, IQ2_S, IQ1_M 6 plain each, MXFP4 7 plain; 2 with the imatrix for
    // every IQ type, the only ones for IQ2_XXS, IQ2_XS, IQ1_S, which need one).
    assert_eq!(checked, 184);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// ggml's behaviour on finite inputs whose f16 block scales overflow or underflow
/// (`kind: edge`): the low-level row API reproduces it exactly (inf/NaN scales included).
#[test]
fn edge_cases_reproduce_ggml() {
    let (checked, failures) = run(&["edge"]);
    // 16 + TQ1_0, TQ2_0, MXFP4, IQ3_XXS, IQ3_S, IQ2_S, IQ1_M.
    assert_eq!(checked, 23);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// ggml's output on NaN/Inf inputs (`kind: special`): the low-level row API emulates C's
/// float-to-int conversions on x86-64, so it reproduces ggml here too. (The methods refuse
/// non-finite input unless `allow_nonfinite` is set.)
#[test]
fn special_cases_reproduce_ggml() {
    let (checked, failures) = run(&["special"]);
    // 16 + TQ1_0, TQ2_0, MXFP4.
    assert_eq!(checked, 19);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// ggml's `ggml_quantize_requires_imatrix` types are refused without importance weights,
/// with an error naming `--imatrix`; the other low-bit types quantize without them.
#[test]
fn types_that_need_an_imatrix_are_refused_without_one() {
    let x: Vec<f32> = (0..512)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
        .collect();
    let w = vec![1.0f32; 256];
    for ty in [GgmlType::IQ2_XXS, GgmlType::IQ2_XS, GgmlType::IQ1_S] {
        assert!(ty.requires_imatrix());
        let err = quant_gguf::quantize(ty, &x, 256, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--imatrix") && err.contains(ty.name()),
            "{err}"
        );
        assert!(quant_gguf::quantize(ty, &x, 256, Some(&w)).is_ok());
    }
    for ty in [
        GgmlType::IQ1_M,
        GgmlType::IQ2_S,
        GgmlType::IQ3_XXS,
        GgmlType::IQ3_S,
        GgmlType::TQ1_0,
        GgmlType::TQ2_0,
        GgmlType::MXFP4,
    ] {
        assert!(!ty.requires_imatrix());
        let q = quant_gguf::quantize(ty, &x, 256, None).unwrap();
        assert_eq!(
            q.len(),
            2 * 256 / ty.block_size() * ty.type_size(),
            "{ty:?}"
        );
    }
}
