//! Test support: the reference vectors of one GGML type (tests/data, copied from ggml
//! d99724f2's outputs) run through a row quantizer and dequantizer given as closures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

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

/// Counts of one type's vectors: (quantized identical, dequantized identical, total), per
/// imatrix use.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Outputs without an imatrix: (quantized equal, dequantized equal, total).
    pub plain: (usize, usize, usize),
    /// Outputs with the imatrix.
    pub imat: (usize, usize, usize),
    /// Descriptions of the differences.
    pub failures: Vec<String>,
}

/// Runs every output of `ty` (manifest name, e.g. `tq1_0`) in every case: `quant(x,
/// ncols, imatrix)` must give ggml's bytes, `deq(bytes, ncols)` ggml's values bit for bit.
pub(crate) fn run(
    ty: &str,
    quant: impl Fn(&[f32], usize, Option<&[f32]>) -> Vec<u8>,
    deq: impl Fn(&[u8], usize) -> Vec<f32>,
) -> Tally {
    let m: serde_json::Value = serde_json::from_slice(&read("manifest.json")).unwrap();
    let mut t = Tally::default();
    for case in m["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let ncols = case["ncols"].as_u64().unwrap() as usize;
        let input = f32s(&read(case["input"]["file"].as_str().unwrap()));
        let imatrix = case["imatrix"]["file"].as_str().map(|f| f32s(&read(f)));
        for out in case["outputs"].as_array().unwrap() {
            if out["type"].as_str() != Some(ty)
                || out["variant"].as_str() != Some("ggml_quantize_chunk")
            {
                continue;
            }
            let imat = out["imatrix"].as_bool().unwrap();
            let w = if imat { imatrix.as_deref() } else { None };
            let tally = if imat { &mut t.imat } else { &mut t.plain };
            tally.2 += 1;
            let want_q = read(out["quant"]["file"].as_str().unwrap());
            let mut q_ok = true;
            for simd in [true, false] {
                let _simd = quant_core::simd::force_simd(simd);
                let got = quant(&input, ncols, w);
                if got != want_q {
                    q_ok = false;
                    let at = got.iter().zip(&want_q).position(|(a, b)| a != b);
                    t.failures.push(format!(
                        "{name} {ty} imat={imat} simd={simd}: bytes differ (first at {at:?}, len {} vs {})",
                        got.len(),
                        want_q.len()
                    ));
                }
            }
            if q_ok {
                tally.0 += 1;
            }
            let want_d = read(out["dequant"]["file"].as_str().unwrap());
            let got_d: Vec<u8> = deq(&want_q, ncols)
                .iter()
                .flat_map(|v| v.to_bits().to_le_bytes())
                .collect();
            if got_d == want_d {
                tally.1 += 1;
            } else {
                let at = got_d.iter().zip(&want_d).position(|(a, b)| a != b);
                t.failures.push(format!(
                    "{name} {ty} imat={imat}: dequantized values differ (first byte at {at:?})"
                ));
            }
        }
    }
    t
}
