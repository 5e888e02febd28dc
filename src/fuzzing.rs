//! Entry points shared by the `fuzz/` targets (libFuzzer) and the corpus replay test of
//! the main workspace, so both run exactly the same code on the same bytes.
//!
//! Each function takes arbitrary bytes, must never panic, and ignores the `Result`s it
//! gets: a typed error is the expected outcome for almost every input. The `dir`
//! argument is a scratch folder owned by the caller, where the input is written as a
//! file because the loaders under test open paths.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use quant_core::load::{dequantize, META_TENSORS};
use quant_core::{
    ConfigFile, DType, ModelFiles, Part, PartLayout, QuantizedTensor, Registry, TensorMeta,
    TensorRecord,
};

/// Values restored per tensor at most: keeps one fuzz input cheap.
const MAX_ELEMENTS: usize = 1 << 16;

fn write(dir: &Path, name: &str, data: &[u8]) -> Option<PathBuf> {
    let p = dir.join(name);
    std::fs::write(&p, data).ok()?;
    Some(p)
}

/// Restores every tensor of an opened model (the work a loader does after the header).
fn load_all(files: &ModelFiles) {
    let names: Vec<String> = files.records().map(|(_, r)| r.name.clone()).collect();
    for name in names {
        if let Ok(q) = files.read(&name) {
            let _ = dequantize(&q);
        }
        let _ = files.load(&name, None);
        let _ = files.load(&name, Some(DType::F16));
    }
}

/// Fuzz target `safetensors`: `data` is a whole `.safetensors` file (header, metadata,
/// tensor data); it is opened as a model and every tensor is restored.
pub fn safetensors_file(dir: &Path, data: &[u8]) {
    let Some(p) = write(dir, "model.safetensors", data) else {
        return;
    };
    if let Ok(f) = quant_core::safetensors_io::SafetensorsFile::open(&p) {
        for t in f.tensors() {
            let _ = quant_core::TensorSource::to_f32(&t);
        }
    }
    if let Ok(files) = ModelFiles::open(&p) {
        load_all(&files);
    }
}

/// Fuzz target `gguf`: `data` is a whole `.gguf` file, opened through the registered
/// `gguf` container and restored tensor by tensor. Does nothing when no `gguf` container
/// is linked into this build.
pub fn gguf_file(dir: &Path, data: &[u8]) {
    if quant_core::format::container("gguf").is_none() {
        return;
    }
    let Some(p) = write(dir, "model.gguf", data) else {
        return;
    };
    if let Ok(files) = ModelFiles::open(&p) {
        load_all(&files);
    }
}

/// Fuzz target `config`: the first byte picks the syntax (JSON, TOML, YAML), the rest is
/// a rules/config file loaded with [`ConfigFile::load`]; valid JSON is also fed to
/// [`ConfigFile::from_value`], and the rules are matched against a few tensor names.
pub fn config_file(dir: &Path, data: &[u8]) {
    let Some((&sel, text)) = data.split_first() else {
        return;
    };
    let ext = ["json", "toml", "yaml"][usize::from(sel % 3)];
    if let Some(p) = write(dir, &format!("rules.{ext}"), text) {
        if let Ok(cfg) = ConfigFile::load(&p) {
            exercise_rules(&cfg);
        }
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(text) {
        if let Ok(cfg) = ConfigFile::from_value("<fuzz>", v) {
            exercise_rules(&cfg);
        }
    }
}

fn exercise_rules(cfg: &ConfigFile) {
    for name in [
        "model.layers.0.mlp.weight",
        "lm_head.weight",
        "norm.bias",
        "",
    ] {
        let _ = cfg.rules.matching(name);
    }
    let _ = cfg.rules.to_json();
}

/// Fuzz target `metadata`: builds a well-formed safetensors file whose header metadata
/// and tensor names come from `data`, so the fuzzer works on quant's per-tensor records
/// (`quant.tensors`) and on the foreign-layout detectors (bitsandbytes, quanto, torchao
/// keys and `config.json`) rather than on the safetensors syntax.
///
/// `data` is split on NUL bytes: `quant.tensors` text (empty: none), `config.json` text
/// (empty: none), then one tensor per line `name dtype d0,d1,...` whose bytes cycle
/// through the rest of the input, then `key=value` metadata lines.
pub fn metadata_file(dir: &Path, data: &[u8]) {
    let mut sections = data.splitn(4, |&b| b == 0);
    let records = sections.next().unwrap_or_default();
    let config = sections.next().unwrap_or_default();
    let specs = sections.next().unwrap_or_default();
    let extra = sections.next().unwrap_or_default();

    let mut metadata = BTreeMap::new();
    if !records.is_empty() {
        metadata.insert(
            META_TENSORS.to_string(),
            String::from_utf8_lossy(records).into_owned(),
        );
    }
    for line in String::from_utf8_lossy(extra).lines() {
        if let Some((k, v)) = line.split_once('=') {
            metadata.insert(k.to_string(), v.to_string());
        }
    }
    let fill: Vec<u8> = if data.is_empty() {
        vec![0]
    } else {
        data.to_vec()
    };
    let mut parts: Vec<Part> = Vec::new();
    for line in String::from_utf8_lossy(specs).lines().take(64) {
        let mut it = line.split_whitespace();
        let (Some(name), Some(dtype)) = (it.next(), it.next()) else {
            continue;
        };
        let Ok(dtype) = DType::parse(dtype) else {
            continue;
        };
        let shape: Vec<usize> = it
            .next()
            .unwrap_or("")
            .split(',')
            .filter_map(|d| d.parse().ok())
            .collect();
        let layout = PartLayout::new(name, dtype, shape);
        let Some(len) = layout.byte_len().filter(|&n| n <= MAX_ELEMENTS * 8) else {
            continue;
        };
        if parts.iter().any(|p| p.layout.key == layout.key) {
            continue;
        }
        let bytes = fill.iter().copied().cycle().take(len).collect();
        if let Ok(p) = Part::new(layout, bytes) {
            parts.push(p);
        }
    }
    let sub = dir.join("model");
    let _ = std::fs::remove_dir_all(&sub);
    if std::fs::create_dir_all(&sub).is_err() {
        return;
    }
    if !config.is_empty() && write(&sub, "config.json", config).is_none() {
        return;
    }
    let file = sub.join("model.safetensors");
    if quant_core::safetensors_io::write_safetensors(&file, &parts, &metadata).is_err() {
        return;
    }
    if let Ok(files) = ModelFiles::open(&sub) {
        load_all(&files);
    }
    if let Ok(files) = ModelFiles::open(&file) {
        load_all(&files);
    }
}

/// A cursor over fuzz bytes that yields zeros once exhausted.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
    fn shape(&mut self) -> Vec<usize> {
        let rank = usize::from(self.u8() % 4);
        (0..rank).map(|_| usize::from(self.u16() % 600)).collect()
    }
}

/// Fuzz target `dequantize`: restores a [`QuantizedTensor`] of a registered method from
/// arbitrary parts through [`quant_core::load::dequantize`], as a loader would after
/// reading a file.
///
/// Byte 0 picks the method (registry order), byte 1 holds flags, then the tensor shape;
/// the parts follow the method's own [`output_layout`](quant_core::QuantMethod::output_layout)
/// for that shape, with their bytes from the input, and the flags mutate part shapes,
/// byte counts, the record's shape, dtypes and parameters.
pub fn dequantize_parts(data: &[u8]) {
    let Ok(registry) = Registry::global() else {
        return;
    };
    let entries: Vec<_> = registry.entries().collect();
    let mut b = Bytes(data);
    let Some(entry) = entries.get(usize::from(b.u8()) % entries.len().max(1)) else {
        return;
    };
    let flags = b.u8();
    let shape = b.shape();
    let name = "layer.weight";
    let params: quant_core::Params = if flags & 1 != 0 {
        let n = usize::from(b.u8());
        serde_json::from_slice(b.take(n)).unwrap_or_default()
    } else {
        Default::default()
    };
    let Ok(method) = registry.create(entry.name, &params) else {
        return;
    };
    let dtype = if flags & 2 != 0 {
        DType::ALL[usize::from(b.u8()) % DType::ALL.len()]
    } else {
        DType::F32
    };
    let meta = TensorMeta::new(name, dtype, shape.clone());
    let layout = match method.output_layout(&meta) {
        Ok(l) => l,
        Err(_) => vec![PartLayout::new(name, DType::U8, vec![b.u16() as usize])],
    };
    let mut parts = Vec::new();
    for mut l in layout {
        if flags & 4 != 0 && b.u8() & 1 != 0 {
            l.shape = b.shape();
        }
        if flags & 8 != 0 && b.u8() & 1 != 0 {
            l.dtype = DType::ALL[usize::from(b.u8()) % DType::ALL.len()];
        }
        let want = match l.byte_len() {
            Some(n) if n <= MAX_ELEMENTS * 8 => n,
            _ => return,
        };
        let len = if flags & 16 != 0 {
            usize::from(b.u16()).min(MAX_ELEMENTS)
        } else {
            want
        };
        let mut bytes = b.take(len).to_vec();
        bytes.resize(len, 0);
        parts.push(Part {
            layout: l,
            data: bytes,
        });
    }
    let record_shape = if flags & 32 != 0 { b.shape() } else { shape };
    let record = TensorRecord {
        name: name.to_string(),
        method: Some(entry.name.to_string()),
        dtype,
        shape: record_shape,
        dequant_dtype: if flags & 64 != 0 {
            DType::ALL[usize::from(b.u8()) % DType::ALL.len()]
        } else {
            DType::F32
        },
        params: method.params(),
        parts: parts.iter().map(|p| p.layout.key.clone()).collect(),
        fallback: None,
    };
    if flags & 128 != 0 {
        parts.reverse();
    }
    let _ = dequantize(&QuantizedTensor { record, parts });
}

/// The tiny model folders [`hf_folder`] starts from: (config.json, tokenizer.json,
/// tokenizer_config.json, tensors) of a Llama-3-style BPE model and of a two-expert
/// Qwen3-MoE.
#[cfg(feature = "gguf")]
fn hf_template(moe: bool) -> (String, String, String, Vec<Part>) {
    let hidden = 8usize;
    let vocab: serde_json::Map<String, serde_json::Value> =
        ["a", "b", "c", "d", "ab", "cd", "abcd", "<|end|>"]
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), serde_json::Value::from(i)))
            .collect();
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": 7, "content": "<|end|>", "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|end|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<|end|>": {"id": "<|end|>", "ids": [7], "tokens": ["<|end|>"]}}},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": true, "vocab": vocab, "merges": [["a", "b"], ["c", "d"], ["ab", "cd"]]}
    });
    let tokenizer_config = serde_json::json!({
        "bos_token": "<|end|>", "eos_token": "<|end|>", "chat_template": "{{ messages }}",
        "added_tokens_decoder": {"7": {"content": "<|end|>", "special": true}}
    });
    let f = |name: &str, shape: &[usize]| {
        let n: usize = shape.iter().product();
        let data = (0..n)
            .flat_map(|i| (i as f32 * 0.01).to_le_bytes())
            .collect();
        Part::new(PartLayout::new(name, DType::F32, shape.to_vec()), data).ok()
    };
    let l = "model.layers.0";
    let mut specs: Vec<(String, Vec<usize>)> = vec![
        ("model.embed_tokens.weight".into(), vec![8, hidden]),
        ("model.norm.weight".into(), vec![hidden]),
        (format!("{l}.input_layernorm.weight"), vec![hidden]),
        (format!("{l}.post_attention_layernorm.weight"), vec![hidden]),
        (format!("{l}.self_attn.q_proj.weight"), vec![hidden, hidden]),
        (format!("{l}.self_attn.k_proj.weight"), vec![4, hidden]),
        (format!("{l}.self_attn.v_proj.weight"), vec![4, hidden]),
        (format!("{l}.self_attn.o_proj.weight"), vec![hidden, hidden]),
    ];
    let config = if moe {
        specs.push((format!("{l}.self_attn.q_norm.weight"), vec![4]));
        specs.push((format!("{l}.self_attn.k_norm.weight"), vec![4]));
        specs.push((format!("{l}.mlp.gate.weight"), vec![2, hidden]));
        for x in 0..2 {
            for k in ["gate_proj", "up_proj"] {
                specs.push((format!("{l}.mlp.experts.{x}.{k}.weight"), vec![16, hidden]));
            }
            specs.push((
                format!("{l}.mlp.experts.{x}.down_proj.weight"),
                vec![hidden, 16],
            ));
        }
        serde_json::json!({
            "architectures": ["Qwen3MoeForCausalLM"], "hidden_size": hidden, "intermediate_size": 16,
            "moe_intermediate_size": 16, "num_attention_heads": 2, "num_key_value_heads": 1,
            "head_dim": 4, "num_hidden_layers": 1, "vocab_size": 8, "num_experts": 2,
            "num_experts_per_tok": 1, "max_position_embeddings": 64, "rope_theta": 1e6
        })
    } else {
        specs.push(("lm_head.weight".into(), vec![8, hidden]));
        for k in ["gate_proj", "up_proj"] {
            specs.push((format!("{l}.mlp.{k}.weight"), vec![16, hidden]));
        }
        specs.push((format!("{l}.mlp.down_proj.weight"), vec![hidden, 16]));
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "hidden_size": hidden, "intermediate_size": 16,
            "num_attention_heads": 2, "num_key_value_heads": 1, "num_hidden_layers": 1,
            "vocab_size": 8, "max_position_embeddings": 64, "rope_theta": 5e5,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
        })
    };
    let parts = specs.iter().filter_map(|(n, s)| f(n, s)).collect();
    (
        config.to_string(),
        tokenizer.to_string(),
        tokenizer_config.to_string(),
        parts,
    )
}

/// Fuzz target `hf_folder`: a Hugging Face model folder converted to llama.cpp's layout
/// (config, BPE `tokenizer.json` with its merges, special tokens, expert stacking). The
/// first byte picks the template (even: Llama 3, odd: Qwen3-MoE) and which of its files
/// the rest of `data` replaces (`(b / 2) % 4`: config.json, tokenizer.json,
/// tokenizer_config.json, model.safetensors); the folder is converted and every tensor of
/// the result read. Does nothing without the `gguf` feature.
pub fn hf_folder(dir: &Path, data: &[u8]) {
    #[cfg(feature = "gguf")]
    {
        let Some((&sel, rest)) = data.split_first() else {
            return;
        };
        let (config, tokenizer, tokenizer_config, parts) = hf_template(sel % 2 == 1);
        let folder = dir.join("hf");
        if std::fs::create_dir_all(&folder).is_err() {
            return;
        }
        let files: [(&str, &[u8]); 3] = [
            ("config.json", config.as_bytes()),
            ("tokenizer.json", tokenizer.as_bytes()),
            ("tokenizer_config.json", tokenizer_config.as_bytes()),
        ];
        let which = usize::from(sel / 2) % 4;
        for (i, (name, text)) in files.iter().enumerate() {
            let bytes = if i == which { rest } else { text };
            if write(&folder, name, bytes).is_none() {
                return;
            }
        }
        let st = folder.join("model.safetensors");
        if which == 3 {
            if write(&folder, "model.safetensors", rest).is_none() {
                return;
            }
        } else if quant_core::safetensors_io::write_safetensors(&st, &parts, &BTreeMap::new())
            .is_err()
        {
            return;
        }
        let _ = quant_gguf::arch::tokenizer::bpe::load_merges(&folder);
        let _ = quant_gguf::arch::tokenizer::special::SpecialVocab::load(
            &folder,
            None,
            quant_gguf::arch::tokenizer::special::DEFAULT_TYPES,
        );
        let Ok(text) = std::fs::read_to_string(folder.join("config.json")) else {
            return;
        };
        let Ok(cfg) = serde_json::from_str::<serde_json::Value>(&text) else {
            return;
        };
        let Some(arch) = quant_gguf::arch::architecture_for(&cfg) else {
            return;
        };
        if let Ok(reader) = quant_gguf::arch::HfGgufReader::open(&folder, &cfg, arch) {
            for r in quant_core::format::ContainerReader::records(&reader) {
                if r.shape.iter().product::<usize>() <= MAX_ELEMENTS {
                    let _ = reader.values(&r.name);
                }
            }
        }
    }
    #[cfg(not(feature = "gguf"))]
    let _ = (dir, data);
}
