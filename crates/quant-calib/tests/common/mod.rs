//! Helpers shared by the imatrix tests: test data, comparison with a llama-imatrix file.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use quant_calib::{compute_imatrix, ImatrixOptions};
use quant_gguf::gguf::GgufFile;
use quant_gguf::ImatrixStats;

/// A file of `tests/data`.
pub fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// quant's matrix of `model` (tokenized by `tokenizer`) on the test corpus with the
/// references' settings: `-c 64 --chunks 8`, dataset `corpus.txt`.
pub fn corpus_stats(model: &Path, tokenizer: &Path) -> ImatrixStats {
    let text = std::fs::read_to_string(data("corpus.txt")).unwrap();
    let opts = ImatrixOptions {
        ctx: 64,
        chunks: Some(8),
        process_output: false,
        dataset: "corpus.txt".into(),
    };
    compute_imatrix(model, tokenizer, &text, &opts, |_, _| {}).unwrap()
}

/// ‖a − b‖ / ‖b‖.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum();
    let den: f64 = b.iter().map(|&y| f64::from(y).powi(2)).sum();
    (num / den).sqrt()
}

/// Little-endian f32 values.
pub fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Writes `stats` as a GGUF imatrix and compares it with llama-imatrix's file `reference`:
/// the same key/values, tensors (names, order, types, shapes, offsets), every count equal
/// to `rows`, every `in_sum2` within 1e-3 relative L2. Returns the largest relative L2 and
/// the number of tensors.
pub fn compare_with_reference(stats: &ImatrixStats, reference: &Path, rows: f32) -> (f64, usize) {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("quant.imatrix.gguf");
    std::fs::write(&ours, stats.gguf_bytes()).unwrap();
    let ours = GgufFile::open(&ours).unwrap();
    let theirs = GgufFile::open(reference).unwrap();

    assert_eq!(ours.metadata, theirs.metadata, "key/value pairs");
    let names = |f: &GgufFile| f.tensors.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&ours), names(&theirs), "tensor names and order");
    let mut worst = 0.0f64;
    for (a, b) in ours.tensors.iter().zip(&theirs.tensors) {
        assert_eq!(
            (a.ty, &a.dims, a.offset),
            (b.ty, &b.dims, b.offset),
            "{}",
            a.name
        );
        let va = f32s(&ours.read_data(a).unwrap());
        let vb = f32s(&theirs.read_data(b).unwrap());
        if a.name.ends_with(".counts") {
            assert_eq!(va, vb, "{}", a.name);
            assert_eq!(va, vec![rows], "{}", a.name);
        } else {
            let r = rel_l2(&va, &vb);
            assert!(r < 1e-3, "{}: relative L2 {r:e}", a.name);
            worst = worst.max(r);
        }
    }
    (worst, theirs.tensors.len())
}
