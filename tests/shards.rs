//! Sharded outputs and `--shard I/N` workers: N workers then `merge` give the bytes of one
//! run; merge refuses missing, foreign and replaced shards.
use std::collections::BTreeMap;
use std::path::Path;

use quant::engine::{merge, parse_size, Worker};
use quant::{DType, ModelFiles, ModelQuantizer};

use crate::common::listing;

fn sample(dir: &Path) -> std::path::PathBuf {
    let input = dir.join("in");
    quant::sample::write_sample_model(&input, DType::BF16).unwrap();
    input
}

/// Every file of a folder by name, with `quantization_info.json`'s timing removed.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    listing(dir)
        .into_iter()
        .map(|n| {
            let bytes = std::fs::read(dir.join(&n)).unwrap();
            let bytes = if n.ends_with("quantization_info.json") {
                let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                v.as_object_mut().unwrap().remove("seconds");
                v.to_string().into_bytes()
            } else {
                bytes
            };
            (n, bytes)
        })
        .collect()
}

/// The two folders hold the same files with the same bytes (timings aside).
fn same_files(a: &Path, b: &Path) {
    let (x, y) = (contents(a), contents(b));
    assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>());
    let differ: Vec<&String> = x.keys().filter(|k| x[*k] != y[*k]).collect();
    assert!(differ.is_empty(), "files differ: {differ:?}");
}

fn quantizer(method: &str, max: u64) -> ModelQuantizer {
    ModelQuantizer::new(method).max_shard_size(Some(max))
}

#[test]
fn sizes_parse_as_transformers_takes_them() {
    assert_eq!(parse_size("5GB").unwrap(), 5_000_000_000);
    assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
    assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
    assert_eq!(parse_size("1024").unwrap(), 1024);
    assert!(parse_size("5 parsecs").is_err());
    assert!(parse_size("0").is_err());
    assert_eq!(Worker::parse("2/3").unwrap(), Worker { index: 2, count: 3 });
    for bad in ["3/3", "1", "a/2", "0/0"] {
        assert!(Worker::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn max_shard_size_splits_as_save_pretrained_and_loads_back() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample(dir.path());
    let out = dir.path().join("out");
    let report = quantizer("basic_int8", 400_000)
        .quantize_path(&input, &out)
        .unwrap();
    let names = listing(&out);
    let shards: Vec<&String> = names
        .iter()
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    assert!(shards.len() >= 3, "{names:?}");
    let n = shards.len();
    for (k, s) in shards.iter().enumerate() {
        assert_eq!(**s, format!("model-{:05}-of-{n:05}.safetensors", k + 1));
        // No file over the limit unless it holds one tensor bigger than the limit.
        let f = quant::safetensors_io::SafetensorsFile::open(out.join(s)).unwrap();
        let data = std::fs::metadata(out.join(s)).unwrap().len() - f.data_start() as u64;
        let records: Vec<serde_json::Value> =
            serde_json::from_str(&f.metadata()["quant.tensors"]).unwrap();
        assert!(data <= 400_000 || records.len() == 1, "{s}: {data} bytes");
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("model.safetensors.index.json")).unwrap())
            .unwrap();
    assert_eq!(
        index["metadata"]["total_size"].as_u64().unwrap(),
        report.bytes_out
    );
    // Every key of every file is in the index under that file.
    for s in &shards {
        let f = quant::safetensors_io::SafetensorsFile::open(out.join(s)).unwrap();
        for t in f.metas() {
            assert_eq!(index["weight_map"][&t.name], s.as_str(), "{}", t.name);
        }
    }
    // The sharded folder restores what the single-file run restores.
    let single = dir.path().join("single");
    ModelQuantizer::new("basic_int8")
        .quantize_path(&input, &single)
        .unwrap();
    let (a, b) = (
        ModelFiles::open(&out).unwrap(),
        ModelFiles::open(&single).unwrap(),
    );
    for (_, r) in b.records() {
        assert_eq!(a.load_f32(&r.name).unwrap(), b.load_f32(&r.name).unwrap());
    }
}

#[test]
fn workers_then_merge_give_the_bytes_of_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample(dir.path());
    for method in ["basic_int8", "bnb_4bit_config_bf16"] {
        let one = dir.path().join(format!("one-{method}"));
        quantizer(method, 300_000)
            .quantize_path(&input, &one)
            .unwrap();
        let split = dir.path().join(format!("split-{method}"));
        // Workers in any order, one of them twice (a rerun replaces only its own files).
        for i in [2, 0, 1, 2] {
            let w = Worker { index: i, count: 3 };
            quantizer(method, 300_000)
                .worker(Some(w))
                .quantize_path(&input, &split)
                .unwrap();
        }
        let m = merge(&split).unwrap();
        assert_eq!(m.workers, 3);
        assert!(m.files.len() >= 3, "{method}: {:?}", m.files);
        same_files(&one, &split);
    }
}

#[test]
fn merge_refuses_missing_foreign_and_replaced_shards() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample(dir.path());
    let out = dir.path().join("out");
    let run = |i: usize, method: &str| {
        quantizer(method, 300_000)
            .worker(Some(Worker { index: i, count: 3 }))
            .quantize_path(&input, &out)
            .unwrap()
    };
    let err = merge(&out).unwrap_err().to_string();
    assert!(err.contains("no worker output"), "{err}");
    run(0, "basic_int8");
    run(2, "basic_int8");
    let err = merge(&out).unwrap_err().to_string();
    assert!(err.contains("workers not finished: 1/3"), "{err}");
    // A worker of another plan.
    run(1, "basic_fp16");
    let err = merge(&out).unwrap_err().to_string();
    assert!(err.contains("ran another plan"), "{err}");
    run(1, "basic_int8");
    // A shard replaced behind the workers' back, and a stray one.
    let victim = listing(&out)
        .into_iter()
        .find(|n| n.ends_with(".safetensors"))
        .unwrap();
    let saved = std::fs::read(out.join(&victim)).unwrap();
    std::fs::write(out.join(&victim), b"not a shard").unwrap();
    std::fs::write(out.join("model-00009-of-00009.safetensors"), b"x").unwrap();
    let err = merge(&out).unwrap_err().to_string();
    assert!(err.contains(&format!("{victim}: 11 bytes")), "{err}");
    assert!(
        err.contains("model-00009-of-00009.safetensors: not in the plan"),
        "{err}"
    );
    std::fs::remove_file(out.join(&victim)).unwrap();
    std::fs::remove_file(out.join("model-00009-of-00009.safetensors")).unwrap();
    let err = merge(&out).unwrap_err().to_string();
    assert!(err.contains(&format!("{victim}: missing")), "{err}");
    std::fs::write(out.join(&victim), saved).unwrap();
    merge(&out).unwrap();
    assert!(ModelFiles::open(&out).is_ok());
    // A finished folder is not a worker folder: another worker run is refused.
    let again = quantizer("basic_int8", 300_000)
        .worker(Some(Worker { index: 0, count: 3 }))
        .quantize_path(&input, &out);
    assert!(matches!(again, Err(quant::Error::OutputExists { .. })));
}

/// Every file in `dir` whose name starts with `stem-`, sorted.
fn splits(dir: &Path, stem: &str) -> Vec<std::path::PathBuf> {
    listing(dir)
        .into_iter()
        .filter(|n| n.starts_with(&format!("{stem}-")) && n.ends_with(".gguf"))
        .map(|n| dir.join(n))
        .collect()
}

#[cfg(feature = "gguf")]
#[test]
fn gguf_splits_hold_the_single_file_as_llama_gguf_split_lays_it_out() {
    use quant::format::SplitLimits;
    use quant::gguf::gguf::{GgufFile, GgufValue};
    let dir = tempfile::tempdir().unwrap();
    let input = sample(dir.path());
    std::fs::create_dir(dir.path().join("one")).unwrap();
    let single = dir.path().join("one").join("m.gguf");
    let q = || ModelQuantizer::new("gguf_config_q4_k");
    q().quantize_path(&input, &single).unwrap();
    let one = GgufFile::open(&single).unwrap();
    for limits in [
        SplitLimits {
            max_bytes: None,
            max_tensors: Some(5),
        },
        SplitLimits {
            max_bytes: Some(400_000),
            max_tensors: None,
        },
    ] {
        let sub = tempfile::tempdir_in(dir.path()).unwrap();
        let out = sub.path().join("m.gguf");
        q().split(Some(limits)).quantize_path(&input, &out).unwrap();
        let files = splits(sub.path(), "m");
        let n = files.len();
        assert!(n >= 3, "{limits:?}: {files:?}");
        let mut tensors = Vec::new();
        for (k, f) in files.iter().enumerate() {
            assert!(f.ends_with(format!("m-{:05}-of-{n:05}.gguf", k + 1)));
            let g = GgufFile::open(f).unwrap();
            let split_keys = vec![
                ("split.no".to_string(), GgufValue::U16(k as u16)),
                (
                    "split.tensors.count".to_string(),
                    GgufValue::I32(one.tensors.len() as i32),
                ),
                ("split.count".to_string(), GgufValue::U16(n as u16)),
            ];
            // The first split keeps every key/value of the single file, each ends with the
            // split keys.
            let (head, tail) = g.metadata.split_at(g.metadata.len() - 3);
            assert_eq!(tail, split_keys.as_slice());
            if k == 0 {
                assert_eq!(head, one.metadata.as_slice());
            } else {
                assert!(head.is_empty());
            }
            if let Some(max) = limits.max_tensors {
                assert!(g.tensors.len() <= max);
            }
            for t in &g.tensors {
                tensors.push((
                    t.name.clone(),
                    t.ty,
                    t.dims.clone(),
                    g.read_data(t).unwrap(),
                ));
            }
        }
        let whole: Vec<_> = one
            .tensors
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    t.ty,
                    t.dims.clone(),
                    one.read_data(t).unwrap(),
                )
            })
            .collect();
        assert_eq!(tensors, whole, "{limits:?}");
    }
}

#[cfg(feature = "gguf")]
#[test]
fn gguf_split_workers_then_merge_give_the_bytes_of_one_run() {
    use quant::format::SplitLimits;
    let dir = tempfile::tempdir().unwrap();
    let input = sample(dir.path());
    let limits = SplitLimits {
        max_bytes: None,
        max_tensors: Some(4),
    };
    let q = || ModelQuantizer::new("gguf_config_q6_k").split(Some(limits));
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    q().quantize_path(&input, a.join("m.gguf")).unwrap();
    for i in [1, 2, 0] {
        q().worker(Some(Worker { index: i, count: 3 }))
            .quantize_path(&input, b.join("m.gguf"))
            .unwrap();
    }
    assert!(merge(&b.join("m.gguf")).is_ok());
    same_files(&a, &b);
    assert!(splits(&a, "m").len() >= 4);
}
