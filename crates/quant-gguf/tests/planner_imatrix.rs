//! The memory-target planner with an importance matrix: every GGUF candidate's error is
//! weighted by the imatrix, and every candidate quantizes with it. Also without a target:
//! a shape fallback and a rule's method quantize with the user's imatrix, as llama-quantize
//! uses it for every tensor.
//!
//! Two 64×512 tensors: `attn_q` five times the magnitude of `ffn_up` (25× its squared
//! error under any method), an imatrix that makes `ffn_up`'s columns a thousand times as
//! important, and a budget of one tensor at Q2_K and one at Q4_K.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::sync::Arc;

use quant_core::{DType, ModelFiles, ModelQuantizer, Part, PartLayout, QuantMethod, TensorMeta};
use quant_gguf::{method_type, GgmlType, GgufMethod, Imatrix, ImatrixStats};

const BIG: &str = "blk.0.attn_q.weight";
const SMALL: &str = "blk.0.ffn_up.weight";
const ROWS: usize = 64;
const COLS: usize = 512;

/// Deterministic values uniform in `[-scale, scale)` (xorshift).
fn values(seed: u64, scale: f32) -> Vec<f32> {
    values_n(seed, scale, ROWS * COLS)
}

/// `n` deterministic values uniform in `[-scale, scale)` (xorshift).
fn values_n(seed: u64, scale: f32, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Per-column importance: varies by column, `factor` times as large for the tensor.
fn weights(factor: f32, period: usize) -> Vec<f32> {
    (0..COLS)
        .map(|c| factor * (1.0 + (c % period) as f32 / period as f32))
        .collect()
}

fn write_input(path: &Path) -> Vec<(&'static str, Vec<f32>)> {
    let tensors = vec![
        (BIG, values(0x9e37_79b9, 0.1)),
        (SMALL, values(0x7f4a_7c15, 0.02)),
    ];
    let parts: Vec<Part> = tensors
        .iter()
        .map(|(n, v)| {
            let data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            Part::new(PartLayout::new(*n, DType::F32, vec![ROWS, COLS]), data).unwrap()
        })
        .collect();
    quant_core::safetensors_io::write_safetensors(path, &parts, &Default::default()).unwrap();
    tensors
}

fn write_imatrix(path: &Path) {
    let count = 4i64;
    let entry = |w: Vec<f32>| (w.iter().map(|x| x * count as f32).collect(), vec![count]);
    let mut stats = ImatrixStats {
        datasets: vec!["test.txt".into()],
        chunk_count: 4,
        chunk_size: 512,
        ..Default::default()
    };
    stats.entries.insert(BIG.into(), entry(weights(1.0, 7)));
    stats
        .entries
        .insert(SMALL.into(), entry(weights(1000.0, 5)));
    std::fs::write(path, stats.gguf_bytes()).unwrap();
}

/// Stored bytes and method of `name` in a run's report.
fn chosen(report: &quant_core::Report, name: &str) -> (u64, Option<String>, Option<String>) {
    let e = report.tensors.iter().find(|t| t.name == name).unwrap();
    (e.bytes_out, e.method.clone(), e.note.clone())
}

#[test]
fn imatrix_weighted_target_favours_the_important_tensor_and_quantizes_with_the_imatrix() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.safetensors");
    let tensors = write_input(&input);
    let imatrix = dir.path().join("imatrix.gguf");
    write_imatrix(&imatrix);
    let imatrix_arg = imatrix.display().to_string();

    // The budget: one tensor at Q2_K, the other at Q4_K.
    let uniform = |m: &str| {
        ModelQuantizer::new(m)
            .plan_path(&input)
            .unwrap()
            .1
            .bytes_out()
    };
    let (q2, q4) = (uniform("gguf_config_q2_k"), uniform("gguf_config_q4_k"));
    assert!(q2 < q4);
    let target = q2 / 2 + q4 / 2;
    let gb = (target as f64 + 0.5) / 1e9;

    let plain_out = dir.path().join("plain.safetensors");
    let plain = ModelQuantizer::new("gguf_config_q4_k")
        .target_memory_gb(Some(gb))
        .quantize_path(&input, &plain_out)
        .unwrap();
    let weighted_out = dir.path().join("weighted.safetensors");
    let weighted = ModelQuantizer::new("gguf_config_q4_k")
        .param("imatrix", imatrix_arg.clone().into())
        .target_memory_gb(Some(gb))
        .quantize_path(&input, &weighted_out)
        .unwrap();
    assert!(plain.bytes_out <= target && weighted.bytes_out <= target);

    // (a) Unweighted, the larger-valued tensor keeps more bytes; weighted, the important one.
    let (p_big, p_small) = (chosen(&plain, BIG), chosen(&plain, SMALL));
    let (w_big, w_small) = (chosen(&weighted, BIG), chosen(&weighted, SMALL));
    println!("plain: {BIG} {p_big:?}, {SMALL} {p_small:?}");
    println!("weighted: {BIG} {w_big:?}, {SMALL} {w_small:?}");
    assert!(p_big.0 > p_small.0, "plain {p_big:?} {p_small:?}");
    assert!(w_small.0 > w_big.0, "weighted {w_big:?} {w_small:?}");

    // (b) The tensor moved off the default is byte for byte its method with the imatrix
    // (and not without it: the imatrix changes this tensor's bytes).
    let (_, method, note) = &w_big;
    let method = method.as_deref().unwrap();
    assert_ne!(method, "gguf_config_q4_k");
    assert!(note.as_deref().unwrap().contains("gguf_config_q4_k -> "));
    let ty = method_type(method).unwrap();
    assert!(ty.uses_imatrix(), "{ty}");
    let written = ModelFiles::open(&weighted_out).unwrap().read(BIG).unwrap();
    let meta = TensorMeta::new(BIG, DType::F32, vec![ROWS, COLS]);
    let big_values = &tensors[0].1;
    let im = Arc::new(Imatrix::load(&imatrix).unwrap());
    let with = GgufMethod::new(ty).unwrap().with_imatrix(im);
    let direct = with.quantize(&meta, big_values).unwrap();
    assert!(
        written.parts[0].data == direct.parts[0].data,
        "not the imatrix quantization"
    );
    let without = GgufMethod::new(ty)
        .unwrap()
        .quantize(&meta, big_values)
        .unwrap();
    assert!(written.parts[0].data != without.parts[0].data);

    // (c) The notes say the measure was imatrix-weighted, in the report and the sidecar.
    for (_, _, note) in [&w_big, &w_small] {
        if let Some(n) = note {
            assert!(n.contains("(imatrix-weighted)"), "{n}");
        }
    }
    for (_, _, note) in [&p_big, &p_small] {
        assert!(
            !note.as_deref().unwrap_or("").contains("imatrix"),
            "{note:?}"
        );
    }
    let info = std::fs::read_to_string(dir.path().join("weighted.quantization_info.json")).unwrap();
    assert!(info.contains("(imatrix-weighted)"), "{info}");
    let info = std::fs::read_to_string(dir.path().join("plain.quantization_info.json")).unwrap();
    assert!(!info.contains("imatrix-weighted"));
}

/// `column_importance` is the imatrix entry of a 2-D tensor, for every type (also those
/// that quantize without it); nothing for a 3-D expert tensor, a tensor without an entry
/// or an entry of the wrong length, or without an imatrix.
#[test]
fn column_importance_is_the_imatrix_entry_of_a_matrix() {
    let w = weights(3.0, 7);
    let im = Imatrix::from_entries(
        "mem",
        [
            (BIG.to_string(), w.clone()),
            (
                "blk.0.ffn_up_exps.weight".to_string(),
                weights(1.0, 5).repeat(2),
            ),
        ],
    )
    .unwrap();
    let im = Arc::new(im);
    let matrix = TensorMeta::new(BIG, DType::F32, vec![ROWS, COLS]);
    for ty in [
        GgmlType::Q2_K,
        GgmlType::Q4_K,
        GgmlType::Q8_0,
        GgmlType::F16,
    ] {
        let m = GgufMethod::new(ty).unwrap().with_imatrix(im.clone());
        assert_eq!(m.column_importance(&matrix), Some(w.clone()), "{ty}");
        let experts = TensorMeta::new("blk.0.ffn_up_exps.weight", DType::F32, vec![2, 4, COLS]);
        assert_eq!(m.column_importance(&experts), None);
        let other = TensorMeta::new(SMALL, DType::F32, vec![ROWS, COLS]);
        assert_eq!(m.column_importance(&other), None);
        let wrong = TensorMeta::new(BIG, DType::F32, vec![COLS, ROWS]);
        assert_eq!(m.column_importance(&wrong), None);
    }
    let plain = GgufMethod::new(GgmlType::Q4_K).unwrap();
    assert_eq!(plain.column_importance(&matrix), None);
}

/// Without a target, every GGUF method of the run gets the user's imatrix: the default
/// (`attn_q`, Q4_K), a shape fallback (`attn_k`, 384 wide: Q4_K falls back to Q5_0, as in
/// llama-quantize) and a rule's method (`attn_v` = gguf_config_q6_k). Each written tensor
/// is its type quantized with the imatrix, not without. Before, the fallback and the rule
/// got no parameters (so `gguf_config_q4_k --imatrix` differed from `llama-quantize --pure
/// --imatrix Q4_K` on every fallback tensor).
#[test]
fn fallbacks_and_rule_methods_quantize_with_the_imatrix() {
    let dir = tempfile::tempdir().unwrap();
    let shapes = [
        ("blk.0.attn_q.weight", 512usize),
        ("blk.0.attn_k.weight", 384),
        ("blk.0.attn_v.weight", 512),
    ];
    let tensors: Vec<(&str, Vec<f32>, usize)> = shapes
        .iter()
        .enumerate()
        .map(|(i, &(n, cols))| (n, values_n(0x51_7cc1 + i as u64, 0.05, ROWS * cols), cols))
        .collect();
    let parts: Vec<Part> = tensors
        .iter()
        .map(|(n, v, cols)| {
            let data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            Part::new(PartLayout::new(*n, DType::F32, vec![ROWS, *cols]), data).unwrap()
        })
        .collect();
    let input = dir.path().join("in.safetensors");
    quant_core::safetensors_io::write_safetensors(&input, &parts, &Default::default()).unwrap();
    let im = Imatrix::from_entries(
        "mem",
        tensors.iter().map(|(n, _, cols)| {
            let w: Vec<f32> = (0..*cols).map(|c| 1.0 + (c % 11) as f32 * 3.0).collect();
            (n.to_string(), w)
        }),
    )
    .unwrap();
    let imatrix = dir.path().join("imatrix.dat");
    let stats = ImatrixStats {
        entries: tensors
            .iter()
            .map(|(n, _, _)| (n.to_string(), (im.get(n).unwrap().to_vec(), vec![1])))
            .collect(),
        datasets: vec!["test.txt".into()],
        chunk_count: 1,
        chunk_size: 512,
    };
    std::fs::write(&imatrix, stats.legacy_bytes()).unwrap();
    let out = dir.path().join("out.safetensors");
    let report = ModelQuantizer::new("gguf_config_q4_k")
        .param("imatrix", imatrix.display().to_string().into())
        .rules(quant_core::Rules::from_pairs([("attn_v", "gguf_config_q6_k")]).unwrap())
        .quantize_path(&input, &out)
        .unwrap();
    let files = ModelFiles::open(&out).unwrap();
    let im = Arc::new(Imatrix::load(&imatrix).unwrap());
    for ((name, v, cols), want) in
        tensors
            .iter()
            .zip([GgmlType::Q4_K, GgmlType::Q5_0, GgmlType::Q6_K])
    {
        let e = report.tensors.iter().find(|t| t.name == *name).unwrap();
        let ty = method_type(e.method.as_deref().unwrap()).unwrap();
        assert_eq!(ty, want, "{name}");
        let meta = TensorMeta::new(*name, DType::F32, vec![ROWS, *cols]);
        let written = files.read(name).unwrap();
        let with = GgufMethod::new(ty)
            .unwrap()
            .with_imatrix(im.clone())
            .quantize(&meta, v)
            .unwrap();
        let without = GgufMethod::new(ty).unwrap().quantize(&meta, v).unwrap();
        assert!(
            written.parts[0].data == with.parts[0].data,
            "{name}: not with the imatrix"
        );
        assert!(with.parts[0].data != without.parts[0].data, "{name}");
    }
}

/// `Imatrix::load_shared`: the same file and filters give one shared copy; other filters
/// another; a file rewritten on disk is read again.
#[test]
fn shared_imatrix_is_read_once_per_file_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("im.dat");
    let write = |entries: &[&str]| {
        let stats = ImatrixStats {
            entries: entries
                .iter()
                .map(|n| (n.to_string(), (vec![2.0; 4], vec![1])))
                .collect(),
            datasets: vec!["t.txt".into()],
            chunk_count: 1,
            chunk_size: 16,
        };
        std::fs::write(&path, stats.legacy_bytes()).unwrap();
    };
    write(&[BIG, SMALL]);
    let a = Imatrix::load_shared(&path, &[], &[]).unwrap();
    let b = Imatrix::load_shared(&path, &[], &[]).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(a.len(), 2);
    let only = Imatrix::load_shared(&path, &["attn_q".to_string()], &[]).unwrap();
    assert!(!Arc::ptr_eq(&a, &only));
    assert_eq!((only.len(), only.get(BIG).is_some()), (1, true));
    write(&[BIG, SMALL, "blk.1.attn_q.weight"]);
    let c = Imatrix::load_shared(&path, &[], &[]).unwrap();
    assert_eq!(c.len(), 3);
    assert!(!Arc::ptr_eq(&a, &c));
}
