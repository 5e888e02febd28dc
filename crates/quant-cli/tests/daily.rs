//! The daily run end to end: progress lines on a non-terminal stderr for every command
//! (none with `--quiet`), and `dequantize` restoring folders, pipelines and .gguf files
//! to what the libraries load, holding exactly the loader's dequantization.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use quant::{DType, ModelFiles};

/// Runs quant with stderr piped (not a terminal) and a progress line for every item
/// (`QUANT_PROGRESS_SECONDS=0`, instead of one every 30 s); returns (stdout, stderr).
fn run(args: &[&str]) -> (String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_quant"))
        .args(args)
        .env("QUANT_PROGRESS_SECONDS", "0")
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8(o.stdout).unwrap(),
        String::from_utf8(o.stderr).unwrap(),
    );
    assert!(o.status.success(), "{args:?}: {err}");
    (out, err)
}

/// The sample model in `dir/in`; `with_tokenizer` adds a `tokenizer.json` (a file a
/// restored folder carries; not a vocabulary, so not for the llama.cpp converter).
fn sample(dir: &Path, with_tokenizer: bool) -> String {
    let p = dir.join("in");
    quant::sample::write_sample_model(&p, DType::BF16).unwrap();
    if with_tokenizer {
        std::fs::write(p.join("tokenizer.json"), "{}").unwrap();
    }
    p.display().to_string()
}

/// The progress lines of `what` in `err`: one as each of the `total` items starts, one
/// at the end.
fn assert_lines(err: &str, what: &str, unit: &str, total: usize) {
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with(&format!("{what}: ")))
        .collect();
    assert_eq!(lines.len(), total + 1, "{err}");
    for (i, l) in lines.iter().enumerate() {
        assert!(
            l.starts_with(&format!("{what}: {i}/{total} {unit}")),
            "{err}"
        );
    }
    assert!(lines[total].contains("(100%)"), "{err}");
}

#[test]
fn progress_lines_on_a_pipe_and_none_when_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample(dir.path(), false);
    let d = |n: &str| dir.path().join(n).display().to_string();
    for (out, method) in [
        (d("q.gguf"), "gguf_config_q8_0"),
        (d("q"), "bnb_4bit_config_bf16"),
        (d("q.safetensors"), "basic_int8"),
    ] {
        let (stdout, err) = run(&["quantize", &input, "-o", &out, "--method", method]);
        assert_lines(&err, "quantize", "tensors", 23);
        assert!(stdout.contains("23 tensors"), "{stdout}");
        let (_, err) = run(&[
            "quantize", &input, "-o", &out, "--method", method, "--force", "--quiet",
        ]);
        // Warnings stay; progress goes.
        assert!(
            !err.contains("quantize: "),
            "--quiet prints no progress: {err}"
        );
    }
    let (_, err) = run(&["dequantize", &d("q"), "-o", &d("r")]);
    assert_lines(&err, "dequantize", "tensors", 23);
    let (_, err) = run(&["eval", &input, &d("q"), "--json"]);
    assert_lines(&err, "eval", "tensors", 23);
    for args in [
        vec!["dequantize", &d("q"), "-o", &d("r2"), "-q"],
        vec!["eval", &input, &d("q"), "--quiet"],
    ] {
        let err = run(&args).1;
        assert!(!err.contains("23/23 tensors"), "{args:?}: {err}");
    }
}

#[test]
fn pipeline_progress_per_component() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pipe");
    quant::sample::write_sample_pipeline(&input, DType::F32).unwrap();
    let out = dir.path().join("out").display().to_string();
    let (_, err) = run(&[
        "quantize",
        input.to_str().unwrap(),
        "-o",
        &out,
        "--method",
        "basic_int8",
        "--component",
        "transformer=gguf_config_q8_0",
    ]);
    for c in ["transformer", "text_encoder"] {
        let ends = err
            .lines()
            .filter(|l| l.starts_with(&format!("quantize {c}: ")) && l.contains("(100%)"))
            .count();
        assert_eq!(ends, 1, "{c}: {err}");
    }
}

/// Every tensor of `restored` is the loader's dequantization of `quantized` in `dt`.
fn assert_restored(quantized: &ModelFiles, restored: &ModelFiles, dt: DType) {
    let mut n = 0;
    for (_, r) in quantized.records() {
        let want = quantized.load(&r.name, Some(dt)).unwrap();
        let have = restored.read(&r.name).unwrap();
        assert_eq!(have.record.method, None, "{}", r.name);
        assert_eq!(have.parts[0].data, want.data, "{}", r.name);
        n += 1;
    }
    assert_eq!(n, restored.records().count());
}

#[test]
fn dequantize_a_folder_to_a_folder_like_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample(dir.path(), true);
    let q = dir.path().join("q");
    let qs = q.display().to_string();
    for method in ["bnb_4bit_config_bf16", "quanto_config_int8", "basic_int8"] {
        run(&[
            "quantize",
            &input,
            "-o",
            &qs,
            "--method",
            method,
            "--max-shard-size",
            "20kB",
            "--force",
            "-q",
        ]);
        for dtype in ["f32", "bf16"] {
            let r = dir.path().join(format!("r-{method}-{dtype}"));
            let (stdout, _) = run(&[
                "dequantize",
                &qs,
                "-o",
                r.to_str().unwrap(),
                "--dtype",
                dtype,
                "-q",
            ]);
            assert!(stdout.contains("23 tensors, a model folder"), "{stdout}");
            let names = |d: &Path| {
                let mut v: Vec<String> = std::fs::read_dir(d)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                v.sort();
                v
            };
            // The shards and index of the input, config.json and tokenizer.json: no
            // quantization_info.json, no method sidecar (quanto_qmap.json).
            let want: Vec<String> = names(&q)
                .into_iter()
                .filter(|n| n != "quantization_info.json" && n != "quanto_qmap.json")
                .collect();
            assert_eq!(names(&r), want, "{method}");
            assert!(want.len() > 4, "several shards: {want:?}");
            let cfg: serde_json::Value =
                serde_json::from_slice(&std::fs::read(r.join("config.json")).unwrap()).unwrap();
            assert!(cfg.get("quantization_config").is_none(), "{cfg}");
            let index: serde_json::Value = serde_json::from_slice(
                &std::fs::read(r.join("model.safetensors.index.json")).unwrap(),
            )
            .unwrap();
            let quantized = ModelFiles::open(&q).unwrap();
            let restored = ModelFiles::open(&r).unwrap();
            for (i, rec) in restored.records() {
                assert_eq!(
                    index["weight_map"][&rec.name].as_str().unwrap(),
                    restored.shards[i].0.to_str().unwrap()
                );
            }
            assert_eq!(index["weight_map"].as_object().unwrap().len(), 23);
            assert_restored(&quantized, &restored, DType::parse(dtype).unwrap());
        }
    }
}

#[test]
fn dequantize_a_pipeline_to_a_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pipe");
    quant::sample::write_sample_pipeline(&input, DType::F32).unwrap();
    let q = dir.path().join("q");
    run(&[
        "quantize",
        input.to_str().unwrap(),
        "-o",
        q.to_str().unwrap(),
        "--method",
        "basic_bf16",
        "--component",
        "transformer=gguf_config_q8_0",
        "--component",
        "text_encoder=bnb_4bit_config_bf16",
        "-q",
    ]);
    let r = dir.path().join("r");
    run(&["dequantize", q.to_str().unwrap(), "-o", r.to_str().unwrap()]);
    assert!(r.join("model_index.json").is_file());
    for c in quant::Pipeline::open(&input).unwrap().components() {
        if !c.has_weights {
            assert!(r.join(&c.name).is_dir(), "{} copied", c.name);
            continue;
        }
        let restored = ModelFiles::open(r.join(&c.name)).unwrap();
        // The GGUF component comes back as the safetensors file diffusers looks for.
        for (p, _) in &restored.shards {
            assert_eq!(p.extension().unwrap(), "safetensors", "{}", c.name);
        }
        if let Some(cfg) = &restored.config {
            assert!(cfg.get("quantization_config").is_none(), "{cfg}");
        }
        let quantized = ModelFiles::open(q.join(&c.name)).unwrap();
        assert_restored(&quantized, &restored, DType::F32);
    }
}

#[test]
fn dequantize_a_gguf_to_a_gguf_of_floats() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample(dir.path(), false);
    let q = dir.path().join("q.gguf");
    run(&[
        "quantize",
        &input,
        "-o",
        q.to_str().unwrap(),
        "--method",
        "gguf_config_q4_0",
        "-q",
    ]);
    let quantized = ModelFiles::open(&q).unwrap();
    let r = dir.path().join("r.gguf");
    run(&["dequantize", q.to_str().unwrap(), "-o", r.to_str().unwrap()]);
    let restored = ModelFiles::open(&r).unwrap();
    for (_, rec) in restored.records() {
        assert_eq!(rec.dtype, DType::F32, "{}", rec.name);
    }
    assert_restored(&quantized, &restored, DType::F32);
    // --format safetensors: the flat file as before.
    let flat = dir.path().join("flat");
    run(&[
        "dequantize",
        q.to_str().unwrap(),
        "-o",
        flat.to_str().unwrap(),
        "--format",
        "safetensors",
    ]);
    assert_restored(&quantized, &ModelFiles::open(&flat).unwrap(), DType::F32);
    // F16: the quantized matrices in F16, one-dimensional tensors kept F32.
    let r16 = dir.path().join("r16.gguf");
    run(&[
        "dequantize",
        q.to_str().unwrap(),
        "-o",
        r16.to_str().unwrap(),
        "--dtype",
        "f16",
    ]);
    for (_, rec) in ModelFiles::open(&r16).unwrap().records() {
        let want = if rec.shape.len() == 1 {
            DType::F32
        } else {
            DType::F16
        };
        assert_eq!(rec.dtype, want, "{}", rec.name);
    }
}
