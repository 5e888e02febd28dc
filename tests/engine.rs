//! Planning, streaming save and load through the public API.
use quant::engine::Action;
use quant::{DType, Error, ModelFiles, ModelQuantizer, Registry, Rules};

use crate::common::listing;

fn sample_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    quant::sample::write_sample_model(&dir.path().join("in"), DType::BF16).unwrap();
    dir
}

#[test]
fn folder_round_trip_with_rules_and_records() {
    let dir = sample_dir();
    let input = dir.path().join("in");
    let out = dir.path().join("out");
    let rules = Rules::from_pairs([
        ("norm", "float32"),
        ("lm_head", "skip"),
        ("layers\\.1\\.mlp", "basic_fp16"),
    ])
    .unwrap();
    let report = ModelQuantizer::new("basic_int8")
        .rules(rules)
        .quantize_path(&input, &out)
        .unwrap();
    assert_eq!(
        listing(&out),
        ["config.json", "model.safetensors", "quantization_info.json"]
    );
    let by_name = |n: &str| report.tensors.iter().find(|t| t.name == n).unwrap();
    assert_eq!(by_name("model.norm.weight").action, Action::Cast);
    assert_eq!(by_name("lm_head.weight").action, Action::Keep);
    assert_eq!(
        by_name("model.layers.1.mlp.up_proj.weight")
            .method
            .as_deref(),
        Some("basic_fp16")
    );
    assert_eq!(
        by_name("model.layers.0.mlp.up_proj.weight")
            .method
            .as_deref(),
        Some("basic_int8")
    );
    assert!(by_name("model.norm.weight")
        .rule
        .as_deref()
        .unwrap()
        .contains("norm"));

    let original = ModelFiles::open(&input).unwrap();
    let restored = ModelFiles::open(&out).unwrap();
    assert_eq!(original.records().count(), restored.records().count());
    for (_, r) in original.records() {
        let a = original.load_f32(&r.name).unwrap();
        let b = restored.load_f32(&r.name).unwrap();
        let s = quant::metrics::ErrorStats::compare(&a, &b);
        assert!(s.cosine > 0.999, "{}: {s:?}", r.name);
        let t = restored.load(&r.name, None).unwrap();
        assert_eq!(t.meta.shape, r.shape);
    }
    // Kept tensors are byte-identical; the norm was cast to f32 exactly.
    assert_eq!(
        original.read("lm_head.weight").unwrap().parts,
        restored.read("lm_head.weight").unwrap().parts
    );
    assert_eq!(
        restored.load("model.norm.weight", None).unwrap().meta.dtype,
        DType::F32
    );
    let md = restored.shards[0].1.metadata();
    assert_eq!(md["quant.method.requested"], "basic_int8");
    assert!(md["quant.rules"].contains("lm_head"));
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("quantization_info.json")).unwrap())
            .unwrap();
    assert_eq!(info["tensors"].as_array().unwrap().len(), 23);
}

#[test]
fn compiled_out_backend_is_recorded_or_refused() {
    let reg = Registry::global().unwrap();
    let Some(c) = quant::CATALOG.iter().find(|c| reg.get(c.name).is_none()) else {
        return; // every backend is compiled in: nothing falls back
    };
    let dir = sample_dir();
    let out = dir.path().join("o.safetensors");
    let input = dir.path().join("in/model.safetensors");
    let r = ModelQuantizer::new(c.name)
        .quantize_path(&input, &out)
        .unwrap();
    assert_eq!(r.resolved.effective, c.fallback);
    let f = ModelFiles::open(&out).unwrap();
    let md = f.shards[0].1.metadata();
    assert_eq!(md["quant.method.requested"], c.name);
    assert_eq!(md["quant.method.effective"], c.fallback);
    assert!(md["quant.method.fallback"].contains(c.feature));
    let out2 = dir.path().join("o2.safetensors");
    let e = ModelQuantizer::new(c.name)
        .strict(true)
        .quantize_path(&input, &out2)
        .unwrap_err();
    assert!(matches!(e, Error::MethodNotCompiled { .. }));
    assert!(!out2.exists());
}

#[test]
fn memory_target_reports_what_fits() {
    let dir = sample_dir();
    let input = dir.path().join("in");
    let (_, plan) = ModelQuantizer::new("basic_fp16").plan_path(&input).unwrap();
    let full = plan.bytes_out();
    let e = ModelQuantizer::new("basic_fp16")
        .target_memory_gb(Some(full as f64 * 0.6 / 1e9))
        .auto_optimize(false)
        .plan_path(&input)
        .unwrap_err();
    match e {
        Error::OverTarget {
            needed, over, hint, ..
        } => {
            assert_eq!(needed, full);
            assert!(over > 0);
            assert!(hint.contains("basic_int8"), "{hint}");
        }
        other => panic!("{other:?}"),
    }
    let (_, plan) = ModelQuantizer::new("basic_fp16")
        .target_memory_gb(Some(full as f64 * 0.6 / 1e9))
        .auto_optimize(true)
        .plan_path(&input)
        .unwrap();
    assert!(plan.bytes_out() as f64 <= full as f64 * 0.6);
}

#[cfg(feature = "candle")]
#[test]
fn in_memory_candle_tensors() {
    use quant::candle_core;
    let dev = candle_core::Device::Cpu;
    let w = candle_core::Tensor::arange(0f32, 64.0, &dev)
        .unwrap()
        .reshape((8, 8))
        .unwrap();
    let b = candle_core::Tensor::zeros(8, candle_core::DType::F32, &dev).unwrap();
    let m = quant::quantize_model([("fc.weight", &w), ("fc.bias", &b)], "basic_int8").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    m.save(&p).unwrap();
    let f = ModelFiles::open(&p).unwrap();
    let t = f.load_candle("fc.weight", Some(DType::F32)).unwrap();
    assert_eq!(t.dims(), &[8, 8]);
    let back: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    for (i, v) in back.iter().enumerate() {
        assert!(
            (v - i as f32).abs() <= 63.0 / 127.0 / 2.0 + 1e-4,
            "{i}: {v}"
        );
    }
}

#[test]
fn sharded_folder_keeps_shards_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    crate::common::write_f32(
        &input.join("model-00001-of-00002.safetensors"),
        &[("a.weight", vec![4, 8], vec![0.5; 32])],
    );
    crate::common::write_f32(
        &input.join("model-00002-of-00002.safetensors"),
        &[
            ("b.weight", vec![4, 8], vec![-0.25; 32]),
            ("b.bias", vec![4], vec![1.0; 4]),
        ],
    );
    std::fs::write(input.join("model.safetensors.index.json"), "{}").unwrap();
    std::fs::write(input.join("tokenizer.json"), "{}").unwrap();
    let out = dir.path().join("out");
    ModelQuantizer::new("basic_int8")
        .quantize_path(&input, &out)
        .unwrap();
    assert_eq!(
        listing(&out),
        [
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "quantization_info.json",
            "tokenizer.json"
        ]
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("model.safetensors.index.json")).unwrap())
            .unwrap();
    assert_eq!(
        index["weight_map"]["b.weight.scale"],
        "model-00002-of-00002.safetensors"
    );
    let f = ModelFiles::open(&out).unwrap();
    assert_eq!(f.load_f32("b.weight").unwrap(), vec![-0.25; 32]);
}

fn total_rel_error(original: &ModelFiles, restored: &ModelFiles) -> f64 {
    let (mut se, mut ss) = (0f64, 0f64);
    for (_, r) in original.records() {
        let a = original.load_f32(&r.name).unwrap();
        let b = restored.load_f32(&r.name).unwrap();
        for (x, y) in a.iter().zip(&b) {
            se += ((x - y) as f64).powi(2);
            ss += (*x as f64).powi(2);
        }
    }
    (se / ss).sqrt()
}

/// With a byte budget between two uniform methods, the measured-sensitivity plan fits,
/// the file is exactly the planned size, and its error is lower than the best uniform
/// method that fits.
#[test]
fn optimized_plan_beats_the_best_uniform_method_that_fits() {
    let dir = sample_dir();
    let input = dir.path().join("in");
    let bytes = |m: &str| {
        ModelQuantizer::new(m)
            .plan_path(&input)
            .unwrap()
            .1
            .bytes_out()
    };
    let (int8, bf16) = (bytes("basic_int8"), bytes("basic_bf16"));
    assert!(int8 < bf16);
    let target = (int8 + bf16) / 2;
    let gb = target as f64 / 1e9;
    let (_, plan) = ModelQuantizer::new("basic_int8")
        .target_memory_gb(Some(gb))
        .plan_path(&input)
        .unwrap();
    assert!(plan.bytes_out() <= target);
    assert!(plan
        .entries
        .iter()
        .any(|e| e.note.as_deref().is_some_and(|n| n.contains("target"))));
    let out = dir.path().join("opt");
    let report = ModelQuantizer::new("basic_int8")
        .target_memory_gb(Some(gb))
        .quantize_path(&input, &out)
        .unwrap();
    assert_eq!(report.bytes_out, plan.bytes_out());
    let written: u64 = ModelFiles::open(&out)
        .unwrap()
        .records()
        .map(|(_, r)| {
            let f = ModelFiles::open(&out).unwrap();
            f.read(&r.name).unwrap().byte_len() as u64
        })
        .sum();
    assert_eq!(written, plan.bytes_out(), "the file matches the plan");
    let uniform = dir.path().join("uniform");
    ModelQuantizer::new("basic_int8")
        .quantize_path(&input, &uniform)
        .unwrap();
    let original = ModelFiles::open(&input).unwrap();
    let e_opt = total_rel_error(&original, &ModelFiles::open(&out).unwrap());
    let e_uni = total_rel_error(&original, &ModelFiles::open(&uniform).unwrap());
    assert!(e_opt < e_uni, "optimized {e_opt} vs uniform {e_uni}");
    // Over a target below every option: an error saying by how much.
    let e = ModelQuantizer::new("basic_int8")
        .target_memory_gb(Some(1e-6))
        .plan_path(&input)
        .unwrap_err();
    assert!(matches!(e, Error::OverTarget { .. }));
}

/// A model folder to a `.gguf` file and back: llama.cpp's selection (1-D tensors F32),
/// the fallback ladder for a row length that does not fit the K-quant block, and every
/// tensor restored through the container.
#[cfg(feature = "gguf")]
#[test]
fn gguf_output_round_trip_with_fallbacks() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.safetensors");
    let mut g = quant::sample::Gaussian::new(3);
    crate::common::write_f32(
        &input,
        &[
            ("blk.0.attn_q.weight", vec![8, 256], g.fill(8 * 256, 0.05)),
            ("blk.0.odd.weight", vec![4, 96], g.fill(4 * 96, 0.05)),
            ("blk.0.attn_norm.weight", vec![256], vec![1.0; 256]),
        ],
    );
    let out = dir.path().join("out.gguf");
    let report = ModelQuantizer::new("gguf_config_q4_k")
        .quantize_path(&input, &out)
        .unwrap();
    let by = |n: &str| report.tensors.iter().find(|t| t.name == n).unwrap().clone();
    assert_eq!(
        by("blk.0.attn_q.weight").method.as_deref(),
        Some("gguf_config_q4_k")
    );
    let odd = by("blk.0.odd.weight");
    assert!(odd.is_fallback);
    assert_eq!(odd.method.as_deref(), Some("gguf_config_q5_0"));
    assert_eq!(report.fallbacks, 1);
    let f = ModelFiles::open(&out).unwrap();
    let original = ModelFiles::open(&input).unwrap();
    for (_, r) in original.records() {
        let a = original.load_f32(&r.name).unwrap();
        let b = f.load_f32(&r.name).unwrap();
        assert!(
            quant::metrics::ErrorStats::compare(&a, &b).cosine > 0.99,
            "{}",
            r.name
        );
    }
    assert_eq!(
        f.load_f32("blk.0.attn_norm.weight").unwrap(),
        vec![1.0; 256]
    );
    // Strict mode refuses the per-tensor fallback and writes nothing.
    let out2 = dir.path().join("strict.gguf");
    let e = ModelQuantizer::new("gguf_config_q4_k")
        .strict(true)
        .quantize_path(&input, &out2)
        .unwrap_err();
    assert!(matches!(e, Error::StrictFallback { .. }));
    assert!(!out2.exists());
    // Re-quantizing a .gguf needs --allow-requantize.
    let e = ModelQuantizer::new("gguf_config_q8_0")
        .quantize_path(&out, dir.path().join("re.gguf"))
        .unwrap_err();
    assert!(matches!(e, Error::InvalidTensor { .. }), "{e:?}");
    ModelQuantizer::new("gguf_config_q8_0")
        .allow_requantize(true)
        .quantize_path(&out, dir.path().join("re.gguf"))
        .unwrap();
}

/// A GGUF output whose later tensor holds a NaN: the error names that tensor, and nothing
/// is left in the folder, whether the tensors are written in turn (one thread) or by the
/// writer thread while the next ones are quantized (two).
#[cfg(feature = "gguf")]
#[test]
fn gguf_output_error_mid_file_leaves_nothing_on_any_pool() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.safetensors");
    let mut g = quant::sample::Gaussian::new(5);
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = (0..12)
        .map(|i| {
            (
                format!("blk.{i}.ffn_up.weight"),
                vec![16, 256],
                g.fill(16 * 256, 0.05),
            )
        })
        .collect();
    tensors[9].2[300] = f32::NAN;
    let named: Vec<(&str, Vec<usize>, Vec<f32>)> = tensors
        .iter()
        .map(|(n, s, v)| (n.as_str(), s.clone(), v.clone()))
        .collect();
    crate::common::write_f32(&input, &named);
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let out = dir.path().join(format!("out{threads}.gguf"));
        let e = pool
            .install(|| ModelQuantizer::new("gguf_config_q4_k").quantize_path(&input, &out))
            .unwrap_err();
        match &e {
            Error::NonFinite { tensor, index, .. } => {
                assert_eq!(
                    (tensor.as_str(), *index),
                    ("blk.9.ffn_up.weight", 300),
                    "{threads}"
                );
            }
            other => panic!("{threads} threads: {other:?}"),
        }
        let left: Vec<String> = listing(dir.path())
            .into_iter()
            .filter(|n| n.starts_with("out") || n.contains("quant-tmp"))
            .collect();
        assert!(left.is_empty(), "{threads} threads left {left:?}");
        // The same input without the NaN writes a file both ways, byte for byte the same.
        let clean = dir.path().join(format!("clean{threads}.safetensors"));
        let mut fixed = named.clone();
        fixed[9].2[300] = 0.0;
        crate::common::write_f32(&clean, &fixed);
        let ok = dir.path().join(format!("ok{threads}.gguf"));
        pool.install(|| ModelQuantizer::new("gguf_config_q4_k").quantize_path(&clean, &ok))
            .unwrap();
        std::fs::remove_file(&clean).unwrap();
    }
    let strip = |p: &str| {
        let f = ModelFiles::open(dir.path().join(p)).unwrap();
        f.records()
            .map(|(_, r)| f.load_f32(&r.name).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(strip("ok1.gguf"), strip("ok2.gguf"));
}
