//! Replays every committed fuzz input (fuzz/corpus/TARGET/ and fuzz/regressions/TARGET/)
//! through the same entry points the libFuzzer targets call, so CI checks them without
//! libFuzzer. An input that panics fails the test.
use std::path::{Path, PathBuf};

use quant::fuzzing;

type Target = fn(&Path, &[u8]);

const TARGETS: [(&str, Target); 6] = [
    ("safetensors", fuzzing::safetensors_file),
    ("gguf", fuzzing::gguf_file),
    ("config", fuzzing::config_file),
    ("metadata", fuzzing::metadata_file),
    ("dequantize", |_, data| fuzzing::dequantize_parts(data)),
    ("hf_folder", fuzzing::hf_folder),
];

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for sub in ["corpus", "regressions"] {
        let Ok(rd) = std::fs::read_dir(root.join(sub).join(target)) else {
            continue;
        };
        files.extend(rd.map(|e| e.unwrap().path()).filter(|p| p.is_file()));
    }
    files.sort();
    files
}

fn replay(target: &str) {
    let run = TARGETS
        .iter()
        .find(|(t, _)| *t == target)
        .map(|(_, f)| *f)
        .unwrap();
    let files = inputs(target);
    // Every target has a committed corpus; a missing folder is a packaging mistake.
    assert!(!files.is_empty(), "no corpus for fuzz target {target}");
    let dir = tempfile::tempdir().unwrap();
    for f in files {
        // (A running fuzzer may remove files of its corpus while this test runs.)
        let Ok(data) = std::fs::read(&f) else {
            continue;
        };
        let ok = std::panic::catch_unwind(|| run(dir.path(), &data));
        assert!(ok.is_ok(), "{target}: {} panicked", f.display());
    }
}

#[test]
fn replay_safetensors() {
    replay("safetensors");
}

#[test]
fn replay_gguf() {
    replay("gguf");
}

#[test]
fn replay_config() {
    replay("config");
}

#[test]
fn replay_metadata() {
    replay("metadata");
}

#[test]
fn replay_dequantize() {
    replay("dequantize");
}

#[test]
fn replay_hf_folder() {
    replay("hf_folder");
}

/// Writes the seed inputs of every fuzz target under fuzz/corpus/ (run by hand:
/// `cargo test -p quant --test main write_fuzz_seeds -- --ignored`, then minimise with
/// `cargo fuzz cmin`).
#[test]
#[ignore = "regenerates the fuzz seeds"]
fn write_fuzz_seeds() {
    use quant::safetensors_io::SafetensorsFile;

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let seed = |target: &str, name: &str, data: &[u8]| {
        let d = root.join(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("seed-{name}")), data).unwrap();
    };
    let tmp = tempfile::tempdir().unwrap();
    // A tiny model folder with a config.json, quantized by a few methods of each backend.
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    crate::common::write_f32(
        &input.join("model.safetensors"),
        &[
            (
                "l.weight",
                vec![2, 64],
                (0..128).map(|i| i as f32 / 50.0 - 1.0).collect(),
            ),
            ("l.bias", vec![2], vec![0.5, -0.25]),
        ],
    );
    std::fs::write(input.join("config.json"), br#"{"model_type":"llama"}"#).unwrap();
    seed(
        "safetensors",
        "plain",
        &std::fs::read(input.join("model.safetensors")).unwrap(),
    );
    let registry = quant::Registry::global().unwrap();
    for (i, e) in registry.entries().enumerate() {
        // The dequantize target: this method, no flags, shape [2, 64] (and [64] for 1-D).
        let mut d = vec![i as u8, 0, 2, 2, 0, 64, 0];
        d.extend((0..255u8).cycle().take(400));
        seed("dequantize", e.name, &d);
        let out = tmp.path().join(e.name);
        let quantized = quant::ModelQuantizer::new(e.name).quantize_path(&input, &out);
        if quantized.is_err() {
            continue;
        }
        let Some(file) = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "safetensors"))
        else {
            continue;
        };
        seed("safetensors", e.name, &std::fs::read(&file).unwrap());
        // The metadata target: records, config.json, tensor specs, other metadata.
        let f = SafetensorsFile::open(&file).unwrap();
        let mut md = f.metadata().clone();
        let records = md.remove("quant.tensors").unwrap_or_default();
        let config = std::fs::read(out.join("config.json")).unwrap_or_default();
        let specs: String = f
            .metas()
            .map(|m| {
                let dims: Vec<String> = m.shape.iter().map(|d| d.to_string()).collect();
                format!("{} {} {}\n", m.name, m.dtype, dims.join(","))
            })
            .collect();
        let extra: String = md
            .iter()
            .filter(|(k, v)| !k.contains('=') && !v.contains('\n'))
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect();
        for (tag, recs) in [("records", records.as_bytes()), ("foreign", &[][..])] {
            let mut d = recs.to_vec();
            d.push(0);
            d.extend_from_slice(&config);
            d.push(0);
            d.extend_from_slice(specs.as_bytes());
            d.push(0);
            d.extend_from_slice(extra.as_bytes());
            seed("metadata", &format!("{}-{tag}", e.name), &d);
        }
    }
    // Rules and config files: the repository's examples in each syntax.
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    for entry in std::fs::read_dir(&configs).unwrap() {
        let p = entry.unwrap().path();
        let sel = match p.extension().and_then(|e| e.to_str()) {
            Some("json") => 0u8,
            Some("toml") => 1,
            Some("yaml") => 2,
            _ => continue,
        };
        let mut d = vec![sel];
        d.extend(std::fs::read(&p).unwrap());
        seed("config", p.file_name().unwrap().to_str().unwrap(), &d);
    }
    // A minimal GGUF v3 file: one F32 tensor `w` [32, 2] and general.architecture.
    let mut g = b"GGUF".to_vec();
    g.extend(3u32.to_le_bytes());
    g.extend(1u64.to_le_bytes());
    g.extend(1u64.to_le_bytes());
    let gstr = |g: &mut Vec<u8>, s: &str| {
        g.extend((s.len() as u64).to_le_bytes());
        g.extend(s.as_bytes());
    };
    gstr(&mut g, "general.architecture");
    g.extend(8u32.to_le_bytes());
    gstr(&mut g, "llama");
    gstr(&mut g, "w");
    g.extend(2u32.to_le_bytes());
    g.extend(32u64.to_le_bytes());
    g.extend(2u64.to_le_bytes());
    g.extend(0u32.to_le_bytes());
    g.extend(0u64.to_le_bytes());
    while g.len() % 32 != 0 {
        g.push(0);
    }
    g.extend((0..64).flat_map(|i| (i as f32).to_le_bytes()));
    seed("gguf", "f32", &g);
}
