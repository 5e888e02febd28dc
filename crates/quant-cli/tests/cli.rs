//! The `quant` binary end to end.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

fn quant(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quant"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = quant(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let o = quant(args);
    assert_eq!(o.status.code(), Some(1), "{args:?}");
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
}

fn sample(dir: &Path) -> String {
    let p = dir.join("in");
    quant::sample::write_sample_model(&p, quant::DType::BF16).unwrap();
    p.display().to_string()
}

#[test]
fn methods_lists_all_43_names() {
    let v: serde_json::Value = serde_json::from_str(&ok(&["methods", "--json"])).unwrap();
    let rows = v.as_array().unwrap();
    let in_list = |list: &[quant::CatalogEntry]| {
        rows.iter()
            .filter(|r| list.iter().any(|c| r["name"] == c.name))
            .count()
    };
    assert_eq!(in_list(quant::CATALOG), 43);
    // The extras (GGUF file types) are listed too, compiled in or not.
    assert_eq!(in_list(quant::EXTRA), quant::EXTRA.len());
    let basic = rows.iter().find(|r| r["name"] == "basic_int8").unwrap();
    assert_eq!(basic["available"], true);
    assert_eq!(basic["bits_per_weight"], 8.0);
    assert!(ok(&["methods"]).contains("basic_fp16"));
    let linked = rows.iter().any(|r| r["name"] == "example_ternary");
    assert_eq!(linked, cfg!(feature = "example-backend"));
}

#[test]
fn quantize_inspect_dequantize_eval_plan() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample(dir.path());
    let out = dir.path().join("out").display().to_string();
    let s = ok(&[
        "quantize",
        &input,
        "-o",
        &out,
        "--method",
        "basic_int8",
        "--rules",
        "bfloat16",
        "--threads",
        "2",
    ]);
    assert!(s.contains("23 tensors"), "{s}");
    let s = ok(&["inspect", &out]);
    assert!(
        s.contains("basic_int8") && s.contains("model.layers.0.mlp.up_proj.weight"),
        "{s}"
    );
    let v: serde_json::Value = serde_json::from_str(&ok(&["inspect", &out, "--json"])).unwrap();
    assert_eq!(v["tensors"].as_array().unwrap().len(), 23);
    let deq = dir.path().join("deq.safetensors").display().to_string();
    ok(&["dequantize", &out, "-o", &deq, "--dtype", "bf16"]);
    let f = quant::ModelFiles::open(&deq).unwrap();
    assert_eq!(f.records().count(), 23);
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["eval", &input, &out, "--json"])).unwrap();
    for row in v.as_array().unwrap() {
        assert!(row["stats"]["cosine"].as_f64().unwrap() > 0.999, "{row}");
    }
    let s = ok(&[
        "plan",
        &input,
        "--method",
        "basic_int8",
        "--rules",
        "../../configs/keep-norms.json",
    ]);
    assert!(s.contains("#0 norm = float32"), "{s}");
    // Existing output without --force.
    let e = fails(&["quantize", &input, "-o", &out, "--method", "basic_int8"]);
    assert!(e.contains("--force"), "{e}");
    ok(&[
        "quantize",
        &input,
        "-o",
        &out,
        "--method",
        "basic_fp16",
        "--force",
    ]);
}

#[test]
fn errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample(dir.path());
    let out = dir.path().join("o").display().to_string();
    let e = fails(&["quantize", &input, "-o", &out, "--method", "basic_int9"]);
    assert!(e.contains("did you mean basic_int8"), "{e}");
    let e = fails(&[
        "quantize",
        &input,
        "-o",
        &out,
        "--method",
        "basic_int8",
        "--param",
        "blocksize=64",
    ]);
    assert!(e.contains("blocksize"), "{e}");
    fails(&[
        "quantize",
        "/no/such/file.safetensors",
        "-o",
        &out,
        "--method",
        "basic_int8",
    ]);
    fails(&["inspect", "/no/such/file.safetensors"]);
    fails(&[
        "quantize",
        &input,
        "-o",
        &out,
        "--method",
        "basic_int8",
        "--rules",
        "no-such-rules.json",
    ]);
    assert!(!Path::new(&out).exists());
}

#[test]
fn demo_runs_on_the_built_in_sample() {
    let s = ok(&["demo", "--methods", "basic_int8,basic_bf16"]);
    assert!(s.contains("basic_int8") && s.contains("basic_bf16"), "{s}");
}

/// `quant dequantize` (streamed, one reused buffer) writes exactly what the loader restores,
/// for unquantized, cast and quantized tensors in every output dtype.
#[test]
fn dequantize_writes_what_the_loader_restores() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample(dir.path());
    for method in [
        "basic_fp16",
        "basic_int8",
        "gguf_config_q4_k",
        "bnb_4bit_config_bf16",
    ] {
        let out = dir.path().join(method).display().to_string();
        ok(&["quantize", &input, "-o", &out, "--method", method]);
        let model = quant::ModelFiles::open(&out).unwrap();
        for dtype in ["f32", "f16", "bf16"] {
            let deq = dir.path().join(format!("{method}-{dtype}.safetensors"));
            ok(&[
                "dequantize",
                &out,
                "-o",
                deq.to_str().unwrap(),
                "--dtype",
                dtype,
            ]);
            let got = quant::ModelFiles::open(&deq).unwrap();
            let dt = quant::DType::parse(dtype).unwrap();
            for (_, r) in model.records() {
                let want = model.load(&r.name, Some(dt)).unwrap();
                let have = got.read(&r.name).unwrap();
                assert_eq!(have.parts[0].data, want.data, "{method} {dtype} {}", r.name);
            }
        }
    }
}

/// Three workers and `quant merge` give the folder one run writes.
#[test]
fn shard_workers_and_merge_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample(dir.path());
    let one = dir.path().join("one").display().to_string();
    let split = dir.path().join("split").display().to_string();
    let args = |out: &str| {
        vec![
            "quantize".to_string(),
            input.clone(),
            "-o".into(),
            out.into(),
            "--method".into(),
            "basic_int8".into(),
            "--max-shard-size".into(),
            "300kB".into(),
        ]
    };
    let run = |a: Vec<String>| ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    run(args(&one));
    for i in 0..3 {
        let mut a = args(&split);
        a.extend(["--shard".to_string(), format!("{i}/3")]);
        run(a);
    }
    let e = fails(&["merge", &one]);
    assert!(e.contains("nothing to merge"), "{e}");
    let s = ok(&["merge", &split]);
    assert!(s.contains("3 workers"), "{s}");
    let files = |d: &str| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "quantization_info.json")
            .collect();
        v.sort();
        v
    };
    assert_eq!(files(&one), files(&split));
    for f in files(&one) {
        let (a, b) = (Path::new(&one).join(&f), Path::new(&split).join(&f));
        assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap(), "{f}");
    }
}

/// `dequantize` and `eval` read a quantized pipeline folder in every layout quant writes
/// (GGUF, bitsandbytes, torchao and optimum-quanto components, a skipped one), naming
/// tensors `<component>/<tensor>`.
#[test]
fn dequantize_and_eval_read_pipelines() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pipe");
    quant::sample::write_sample_pipeline(&input, quant::DType::F32).unwrap();
    let input = input.display().to_string();
    let original = quant::ModelFiles::open_any(&input).unwrap();
    let names: Vec<String> = original.records().map(|(_, r)| r.name.clone()).collect();
    assert!(
        names.iter().any(|n| n.starts_with("transformer/")),
        "{names:?}"
    );
    let layouts = [
        [
            "transformer=gguf_config_q8_0",
            "text_encoder=bnb_4bit_config_bf16",
            "vae=torch_ao_config_int8wo",
        ],
        [
            "transformer=quanto_config_int8",
            "text_encoder=torch_ao_config_float8wo_e4m3",
            "vae=skip",
        ],
    ];
    for (i, components) in layouts.iter().enumerate() {
        let out = dir.path().join(format!("out{i}")).display().to_string();
        let mut args = vec!["quantize", &input, "-o", &out, "--method", "basic_bf16"];
        for c in components {
            args.extend(["--component", c]);
        }
        ok(&args);
        let deq = dir.path().join(format!("deq{i}.safetensors"));
        let deq_s = deq.display().to_string();
        let s = ok(&["dequantize", &out, "-o", &deq_s]);
        assert!(s.contains(&format!("{} tensors", names.len())), "{s}");
        let restored = quant::ModelFiles::open(&deq).unwrap();
        let got: Vec<String> = restored.records().map(|(_, r)| r.name.clone()).collect();
        let (mut want, mut got) = (names.clone(), got);
        want.sort();
        got.sort();
        assert_eq!(got, want);
        let v: serde_json::Value =
            serde_json::from_str(&ok(&["eval", &input, &out, "--json"])).unwrap();
        let rows = v.as_array().unwrap();
        assert_eq!(rows.len(), names.len());
        for row in rows {
            assert!(
                row["stats"]["cosine"].as_f64().unwrap() > 0.99,
                "{components:?}: {row}"
            );
        }
    }
}

/// `dequantize` restores tensors kept in another dtype than the original's (a rule's
/// `float32` here, bitsandbytes' compute dtype in its folders) in the requested dtype.
#[test]
fn dequantize_converts_tensors_kept_cast() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample(dir.path());
    let out = dir.path().join("out").display().to_string();
    ok(&[
        "quantize",
        &input,
        "-o",
        &out,
        "--method",
        "basic_int8",
        "--rules",
        "../../configs/keep-norms.json",
    ]);
    let deq = dir.path().join("deq.safetensors");
    ok(&[
        "dequantize",
        &out,
        "-o",
        &deq.display().to_string(),
        "--dtype",
        "bf16",
    ]);
    let original = quant::ModelFiles::open(&input).unwrap();
    let restored = quant::ModelFiles::open(&deq).unwrap();
    for (_, r) in original.records().filter(|(_, r)| r.name.contains("norm")) {
        let t = restored.load(&r.name, None).unwrap();
        assert_eq!(t.meta.dtype, quant::DType::BF16, "{}", r.name);
        assert_eq!(
            restored.load_f32(&r.name).unwrap(),
            original.load_f32(&r.name).unwrap(),
            "{}",
            r.name
        );
    }
}

#[cfg(feature = "imatrix")]
#[test]
fn imatrix_writes_gguf_and_dat_that_quantize_reads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let model = root.join("quant-gguf/tests/data/llamacpp/llama_a");
    let text = root.join("quant-calib/tests/data/corpus.txt");
    let (model, text) = (model.to_str().unwrap(), text.to_str().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let out = |n: &str| dir.path().join(n).display().to_string();
    fn args<'a>(model: &'a str, text: &'a str, o: &'a str) -> Vec<&'a str> {
        let mut a = vec!["imatrix", model, "-f", text, "-o", o];
        a.extend(["-c", "64", "--chunks", "2", "-t", "1"]);
        a
    }
    let (a_gguf, a_dat) = (out("a.gguf"), out("a.dat"));

    ok(&args(model, text, &a_gguf));
    let im = quant::gguf::Imatrix::load(&a_gguf).unwrap();
    assert_eq!((im.len(), im.chunk_count()), (14, Some(2)));
    assert_eq!(im.datasets(), [text.to_string()]);
    // A .dat name gives the legacy format.
    ok(&args(model, text, &a_dat));
    assert_ne!(&std::fs::read(&a_dat).unwrap()[..4], b"GGUF");
    let dat = quant::gguf::Imatrix::load(&a_dat).unwrap();
    assert_eq!((dat.len(), dat.chunk_count()), (14, Some(2)));

    assert!(fails(&args(model, text, &a_gguf)).contains("output exists"));
    let b = out("b.gguf");
    let mut bad = args(model, text, &b);
    bad.extend(["--output-format", "txt"]);
    assert!(fails(&bad).contains("expected gguf or dat"));
    let short = out("short.txt");
    std::fs::write(&short, "too short").unwrap();
    assert!(fails(&args(model, &short, &b)).contains("needs at least 128 tokens"));

    // A .gguf model needs a tokenizer.json (none beside this one).
    let gguf = root.join("quant-gguf/tests/data/llamacpp/gguf/llama_a/llama_a-bf16.gguf");
    let gguf = gguf.to_str().unwrap();
    let g = out("g.gguf");
    assert!(fails(&args(gguf, text, &g)).contains("--tokenizer"));
    let tok = format!("{model}/tokenizer.json");
    let mut with_tok = args(gguf, text, &g);
    with_tok.extend(["--tokenizer", &tok]);
    ok(&with_tok);
    assert_eq!(std::fs::read(&g).unwrap(), std::fs::read(&a_gguf).unwrap());

    ok(&[
        "quantize",
        model,
        "-o",
        &out("q.gguf"),
        "--method",
        "gguf_q4_k_m",
        "--imatrix",
        &a_gguf,
    ]);
}
