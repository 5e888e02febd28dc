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
