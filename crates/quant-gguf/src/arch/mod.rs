//! Hugging Face model folder → llama.cpp GGUF conversion, as convert_hf_to_gguf.py
//! (llama.cpp b11312) does it with `--outtype f32`: llama.cpp tensor names, the
//! reference's tensor order and value transforms, and its typed key/value list
//! (`general.*`, hyperparameters, `tokenizer.*`) in its order.
//!
//! One module per architecture behind the small [`Architecture`] trait ([`llama`],
//! [`bert`]); adding one is one file and one line in [`ARCHITECTURES`]. [`HfGgufReader`]
//! presents the converted model as a [`ContainerReader`]: every tensor F32, unquantized,
//! values transformed on read (one tensor at a time, straight from the mapped safetensors).
//!
//! What the reference writes that quant's writer owns: `general.file_type` (a placeholder
//! 0 here, as for `--outtype f32`, replaced by the writer with the file's real type) and
//! `general.quantization_version` (2).

pub mod bert;
pub mod checks;
pub mod experts;
pub mod gemma;
pub mod general;
pub mod hparams;
pub mod llama;
pub mod phi3;
pub mod qwen;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use quant_core::format::{ContainerReader, Converted};
use quant_core::safetensors_io::SafetensorsFile;
use quant_core::tensor::TensorSource;
use quant_core::{DType, Error, Part, PartLayout, QuantizedTensor, Result, TensorRecord};
use serde_json::{Map, Value};

use crate::gguf::GgufValue;

/// Typed key/value pairs in insertion order; setting an existing key replaces its value in
/// place (gguf-py's writer is a Python dict).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KvList(Vec<(String, GgufValue)>);

impl KvList {
    /// Sets `key`, keeping its position when it exists.
    pub fn set(&mut self, key: impl Into<String>, value: GgufValue) {
        let key = key.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((key, value)),
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Every pair, in order.
    pub fn entries(&self) -> &[(String, GgufValue)] {
        &self.0
    }
}

/// A value transform the reference applies to a tensor before writing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    /// Written as read.
    None,
    /// `LlamaModel.permute` with this head count: rows regrouped for llama.cpp's rope
    /// (within each head, the two halves interleaved).
    RopePermute(usize),
    /// `+ 1` (Gemma's norm weights), in the dtype the reference adds in: float32, or
    /// float16 for an F16 checkpoint tensor.
    AddOne,
    /// `w[:n]`: the first `n` rows (all of them when there are fewer).
    KeepRows(usize),
}

/// One architecture of convert_hf_to_gguf.py.
pub trait Architecture: Sync {
    /// llama.cpp's architecture name (`general.architecture`, the key prefix).
    fn name(&self) -> &'static str;
    /// The `architectures[0]` values of `config.json` it converts.
    fn hf_classes(&self) -> &'static [&'static str];
    /// Fills in what transformers' config class would for keys the conversion reads
    /// (the reference reads `AutoConfig(...).to_dict()`, not the raw file).
    fn complete_config(&self, config: &mut Map<String, Value>);
    /// The reference's `filter_tensors`: the name the tensor goes by, `None` to drop it.
    fn filter(&self, name: &str) -> Option<String>;
    /// llama.cpp's name of a (filtered) tensor and how its values change, or an error
    /// naming a tensor the reference cannot map either.
    fn map_tensor(&self, model: &HfModel, name: &str) -> Result<(String, Transform)>;
    /// The architecture's hyperparameter keys (`set_gguf_parameters`, after
    /// [`text_model_parameters`]).
    fn set_gguf_parameters(&self, model: &HfModel, kv: &mut KvList) -> Result<()>;
    /// The tokenizer keys (`set_vocab`).
    fn set_vocab(&self, model: &HfModel, kv: &mut KvList) -> Result<()>;
    /// The vocabulary files it reads, any one of which must be in the folder.
    fn vocab_files(&self) -> &'static [&'static str];
    /// Tensors the reference makes before the checkpoint's (`generate_extra_tensors`),
    /// and the keys it writes meanwhile (they follow `general.architecture`).
    fn extra_tensors(&self, _model: &HfModel, _kv: &mut KvList) -> Result<Vec<experts::Generated>> {
        Ok(Vec::new())
    }
    /// The hyperparameters before [`Architecture::set_gguf_parameters`]'s: `TextModel`'s
    /// ([`text_model_parameters`]) unless the architecture writes its own.
    fn text_parameters(&self, model: &HfModel, kv: &mut KvList) -> Result<()> {
        text_model_parameters(model, self.name(), kv)
    }
    /// For a per-expert tensor (a filtered name): the 3-D tensor it is stacked into
    /// (`modify_tensors`' expert merging); `None` for every other tensor.
    fn expert_part(&self, _model: &HfModel, _name: &str) -> Result<Option<experts::ExpertPart>> {
        Ok(None)
    }
}

/// Every architecture quant converts.
pub static ARCHITECTURES: &[&dyn Architecture] = &[
    &llama::Llama,
    &bert::Bert,
    &qwen::Qwen2,
    &qwen::Qwen3,
    &qwen::Qwen3Moe,
    &phi3::Phi3,
    &gemma::Gemma2,
    &gemma::Gemma3,
];

/// The architecture converting `config.json`'s `architectures[0]`, if any.
pub fn architecture_for(config: &Value) -> Option<&'static dyn Architecture> {
    let class = hf_class(config)?;
    ARCHITECTURES
        .iter()
        .copied()
        .find(|a| a.hf_classes().contains(&class))
}

fn hf_class(config: &Value) -> Option<&str> {
    config.get("architectures")?.get(0)?.as_str()
}

/// What `general.architecture` may honestly say for a model quant does not convert: the
/// config's `model_type`, else its `architectures[0]`, else a diffusers `_class_name`
/// (lowercased, e.g. `flux` for `FluxTransformer2DModel`); `None` when it names nothing.
/// Never `llama` or `bert` unless the config says so.
pub fn generic_architecture(config: &Value) -> Option<String> {
    if let Some(t) = config.get("model_type").and_then(|v| v.as_str()) {
        return Some(t.to_string());
    }
    if let Some(c) = hf_class(config) {
        return Some(c.to_string());
    }
    let class = config.get("_class_name")?.as_str()?;
    let base = ["Transformer2DModel", "Transformer3DModel", "Model"]
        .iter()
        .find_map(|s| class.strip_suffix(s).filter(|b| !b.is_empty()))
        .unwrap_or(class);
    Some(base.to_ascii_lowercase())
}

/// An HF model folder being converted: its path, completed config and block count.
#[derive(Debug)]
pub struct HfModel {
    /// The folder.
    pub dir: PathBuf,
    /// `config.json`, completed by [`Architecture::complete_config`].
    pub hparams: Map<String, Value>,
    /// The raw `config.json` (what gguf-py's metadata reads).
    pub raw_config: Value,
    /// Number of blocks (`num_hidden_layers` and its aliases).
    pub block_count: usize,
}

impl HfModel {
    /// The config path (for errors).
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// `find_hparam(keys, optional=True)`: the first key present (a JSON `null` counts as
    /// present and gives `None`, as Python's lookup does).
    pub fn find(&self, keys: &[&str]) -> Option<&Value> {
        keys.iter()
            .find_map(|k| self.hparams.get(*k))
            .filter(|v| !v.is_null())
    }

    /// A required non-negative integer hyperparameter (first of `keys`).
    pub fn uint(&self, keys: &[&str]) -> Result<u64> {
        self.find(keys).and_then(Value::as_u64).ok_or_else(|| {
            self.bad(
                keys.first().copied().unwrap_or(""),
                "missing or not a non-negative integer",
            )
        })
    }

    /// A config error naming `entry`.
    pub fn bad(&self, entry: &str, reason: impl Into<String>) -> Error {
        Error::Config {
            source_name: self.config_path().display().to_string(),
            entry: entry.to_string(),
            reason: reason.into(),
        }
    }
}

/// The rope parameters the reference sees: transformers (5.x) folds `rope_theta` and
/// `rope_scaling` into `rope_parameters` (`type` → `rope_type`, default `default`).
pub fn rope_parameters(config: &mut Map<String, Value>, default_theta: f64) {
    if config.get("rope_parameters").is_some_and(Value::is_object) {
        return;
    }
    let mut rope = match config.get("rope_scaling") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    if let Some(t) = rope.remove("type") {
        rope.entry("rope_type").or_insert(t);
    }
    let theta = config
        .get("rope_theta")
        // Anything but null is kept, for the key writer to accept or name.
        .filter(|t| !t.is_null())
        .cloned()
        .unwrap_or_else(|| Value::from(default_theta));
    rope.entry("rope_theta").or_insert(theta);
    rope.entry("rope_type")
        .or_insert_with(|| Value::from("default"));
    config.insert("rope_parameters".into(), Value::Object(rope));
}

pub use hparams::text_model_parameters;

/// `_try_set_pooling_type`: a sentence-transformers folder's pooling (`modules.json` →
/// the Pooling module's `config.json`) as `{arch}.pooling_type`.
pub fn set_pooling_type(model: &HfModel, arch: &str, kv: &mut KvList) -> Result<()> {
    let modules_path = model.dir.join("modules.json");
    let Some(modules) = crate::tokenizer::read_json(&modules_path)? else {
        return Ok(());
    };
    let pooling_dir = modules.as_array().into_iter().flatten().find_map(|m| {
        m.get("type")
            .and_then(Value::as_str)
            .filter(|t| t.ends_with("Pooling"))
            .and_then(|_| m.get("path").and_then(Value::as_str))
    });
    let Some(pooling_dir) = pooling_dir else {
        return Ok(());
    };
    let path = model.dir.join(pooling_dir).join("config.json");
    let pooling = crate::tokenizer::read_json(&path)?
        .ok_or_else(|| Error::file(&path, "json", "the pooling module's config is missing"))?;
    let on = |k: &str| pooling.get(k).and_then(Value::as_bool) == Some(true);
    let ty = if on("pooling_mode_mean_tokens") {
        1
    } else if on("pooling_mode_cls_token") {
        2
    } else if on("pooling_mode_lasttoken") {
        3
    } else {
        match pooling.get("pooling_mode").and_then(Value::as_str) {
            Some("mean") => 1,
            Some("cls") => 2,
            Some("lasttoken") => 3,
            _ => {
                return Err(Error::file(
                    &path,
                    "json",
                    "only mean, cls and last-token pooling are supported (as llama.cpp)",
                ))
            }
        }
    };
    kv.set(format!("{arch}.pooling_type"), GgufValue::U32(ty));
    Ok(())
}

/// Matches `name` against a pattern where `{bid}` stands for a block number below
/// `blocks`; returns the block number (or `Some(None)` for patterns without one).
pub fn match_pattern(pattern: &str, name: &str, blocks: usize) -> Option<Option<usize>> {
    match pattern.split_once("{bid}") {
        None => (pattern == name).then_some(None),
        Some((pre, post)) => {
            let mid = name.strip_prefix(pre)?.strip_suffix(post)?;
            if mid.is_empty() || !mid.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let bid: usize = mid.parse().ok()?;
            (bid < blocks).then_some(Some(bid))
        }
    }
}

/// gguf-py's `TensorNameMap.get_name` with suffixes `.weight`/`.bias` over a table of
/// (HF base name, llama.cpp base name) patterns.
pub fn map_name(table: &[(&str, &str)], name: &str, blocks: usize) -> Option<String> {
    let lookup = |base: &str| {
        table.iter().find_map(|(hf, gg)| {
            match_pattern(hf, base, blocks).map(|bid| match bid {
                Some(b) => gg.replace("{bid}", &b.to_string()),
                None => gg.to_string(),
            })
        })
    };
    if let Some(n) = lookup(name) {
        return Some(n);
    }
    for suffix in [".weight", ".bias"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if let Some(n) = lookup(base) {
                return Some(n + suffix);
            }
        }
    }
    None
}

/// One output tensor: where it comes from and what happens to it.
#[derive(Clone, Debug)]
struct Entry {
    source: EntrySource,
    transform: Transform,
}

/// Where an output tensor's values come from.
#[derive(Clone, Debug)]
enum EntrySource {
    /// One checkpoint tensor: (file index, name).
    Tensor(usize, String),
    /// Per-expert checkpoint tensors stacked along a new first axis.
    Stack(Vec<experts::Source>),
    /// Values the reference generates.
    Generated(Vec<f32>),
}

/// A converted HF folder as a [`ContainerReader`]: llama.cpp names and order, F32 values
/// (transformed on read), and the typed key/value list.
pub struct HfGgufReader {
    dir: PathBuf,
    files: Vec<SafetensorsFile>,
    entries: Vec<Entry>,
    records: Vec<TensorRecord>,
    kv: KvList,
}

impl std::fmt::Debug for HfGgufReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfGgufReader")
            .field("dir", &self.dir)
            .field("tensors", &self.records.len())
            .finish()
    }
}

/// The safetensors files of a folder in the reference's order: the parts named by
/// `model.safetensors.index.json` (sorted), else every `model*.safetensors` (sorted).
fn part_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    let mut names: Vec<String> = match crate::tokenizer::read_json(&index)? {
        Some(v) => {
            let map = v
                .get("weight_map")
                .and_then(Value::as_object)
                .ok_or_else(|| Error::file(&index, "json", "no weight_map object"))?;
            let mut parts: Vec<String> = Vec::new();
            for (tensor, part) in map {
                let Some(part) = part.as_str() else {
                    return Err(Error::file(
                        &index,
                        "json",
                        format!("tensor '{tensor}': part is not a string"),
                    ));
                };
                if !parts.iter().any(|p| p == part) {
                    parts.push(part.to_string());
                }
            }
            parts
        }
        None => std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("model") && n.ends_with(".safetensors"))
            .collect(),
    };
    names.sort();
    if names.is_empty() {
        return Err(Error::file(
            dir,
            "model folder",
            "no model*.safetensors file (pytorch .bin weights are not converted)",
        ));
    }
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

/// Tensor names whose values the reference never writes.
const DROPPED_SUFFIXES: [&str; 3] = [
    ".attention.masked_bias",
    ".attention.bias",
    ".rotary_emb.inv_freq",
];

impl HfGgufReader {
    /// Converts the folder `dir` (whose `config.json` is `config`) with `arch`.
    pub fn open(dir: &Path, config: &Value, arch: &dyn Architecture) -> Result<Self> {
        let Some(raw) = config.as_object() else {
            return Err(Error::file(
                dir.join("config.json"),
                "json",
                "not an object",
            ));
        };
        let mut hparams = raw.clone();
        if let Some(Value::Object(text)) = raw.get("text_config") {
            hparams.extend(text.clone());
        }
        arch.complete_config(&mut hparams);
        let mut model = HfModel {
            dir: dir.to_path_buf(),
            hparams,
            raw_config: config.clone(),
            block_count: 0,
        };
        model.block_count =
            model.uint(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"])? as usize;

        // index_tensors: parts in order, each part's tensors sorted by name; a renamed
        // tensor that collides keeps the first one's position (a Python dict).
        let files: Vec<SafetensorsFile> = part_files(dir)?
            .iter()
            .map(SafetensorsFile::open)
            .collect::<Result<_>>()?;
        let mut indexed: Vec<(String, usize, String)> = Vec::new();
        for (fi, f) in files.iter().enumerate() {
            let mut names: Vec<&str> = f.metas().map(|m| m.name.as_str()).collect();
            names.sort_unstable();
            for raw_name in names {
                let Some(name) = arch.filter(raw_name) else {
                    continue;
                };
                match indexed.iter_mut().find(|(n, _, _)| *n == name) {
                    Some(slot) => *slot = (name, fi, raw_name.to_string()),
                    None => indexed.push((name, fi, raw_name.to_string())),
                }
            }
        }

        let mut entries = Vec::new();
        let mut records: Vec<TensorRecord> = Vec::new();
        let mut push = |gguf_name: String, shape: Vec<usize>, entry: Entry| -> Result<()> {
            if records.iter().any(|r| r.name == gguf_name) {
                return Err(Error::tensor(
                    dir,
                    &gguf_name,
                    "two tensors of the checkpoint map to this name",
                ));
            }
            records.push(TensorRecord {
                name: gguf_name.clone(),
                method: None,
                dtype: DType::F32,
                shape,
                dequant_dtype: DType::F32,
                params: Default::default(),
                parts: vec![gguf_name],
                fallback: None,
            });
            entries.push(entry);
            Ok(())
        };
        let mut kv = KvList::default();
        kv.set(
            "general.architecture",
            GgufValue::String(arch.name().into()),
        );
        for g in arch.extra_tensors(&model, &mut kv)? {
            let entry = Entry {
                source: EntrySource::Generated(g.values),
                transform: Transform::None,
            };
            push(g.name, g.shape, entry)?;
        }
        let meta_of = |file: usize, hf_name: &str| {
            files
                .get(file)
                .and_then(|f| f.get(hf_name))
                .map(|t| t.meta().clone())
                .ok_or_else(|| Error::tensor(dir, hf_name, "vanished from its file"))
        };
        let mut stacker = experts::Stacker::default();
        for (name, file, hf_name) in indexed {
            if DROPPED_SUFFIXES.iter().any(|s| name.ends_with(s)) {
                continue;
            }
            if let Some(part) = arch.expert_part(&model, &name)? {
                if part.block >= model.block_count {
                    return Err(Error::tensor(
                        dir,
                        &hf_name,
                        format!(
                            "block {} is not below the config's block count {}",
                            part.block, model.block_count
                        ),
                    ));
                }
                for stack in stacker.add(dir, &hf_name, &part, (file, hf_name.clone()))? {
                    let mut shape: Option<Vec<usize>> = None;
                    for (f, n) in &stack.sources {
                        let m = meta_of(*f, n)?;
                        match &shape {
                            Some(s) if *s != m.shape => {
                                return Err(Error::ShapeMismatch {
                                    tensor: format!("{} ({n})", dir.display()),
                                    expected: format!("{s:?}, the shape of expert 0"),
                                    got: m.shape,
                                })
                            }
                            Some(_) => {}
                            None => shape = Some(m.shape),
                        }
                    }
                    let mut shape = shape.unwrap_or_default();
                    shape.insert(0, stack.sources.len());
                    let (gguf_name, transform) = arch.map_tensor(&model, &stack.name)?;
                    let entry = Entry {
                        source: EntrySource::Stack(stack.sources),
                        transform,
                    };
                    push(gguf_name, shape, entry)?;
                }
                continue;
            }
            let (gguf_name, transform) = arch.map_tensor(&model, &name)?;
            let meta = meta_of(file, &hf_name)?;
            let mut shape = meta.shape.clone();
            match transform {
                Transform::RopePermute(heads) => check_permute(dir, &hf_name, &shape, heads)?,
                Transform::KeepRows(n) => {
                    if let Some(rows) = shape.first_mut() {
                        *rows = (*rows).min(n);
                    }
                }
                Transform::None | Transform::AddOne => {}
            }
            let entry = Entry {
                source: EntrySource::Tensor(file, hf_name),
                transform,
            };
            push(gguf_name, shape, entry)?;
        }
        stacker.finish(dir)?;

        checks::check_model(&model, &records)?;

        // prepare_metadata: general.*, the hyperparameters, the quantization version,
        // then the vocabulary.
        kv.set("general.type", GgufValue::String("model".into()));
        general::set_general(&model, &general::ParamCounts::of(&records), &mut kv)?;
        arch.text_parameters(&model, &mut kv)?;
        arch.set_gguf_parameters(&model, &mut kv)?;
        kv.set("general.quantization_version", GgufValue::U32(2));
        arch.set_vocab(&model, &mut kv)?;
        checks::check_vocab(&model, &records, &kv)?;

        Ok(HfGgufReader {
            dir: dir.to_path_buf(),
            files,
            entries,
            records,
            kv,
        })
    }

    /// The typed key/value list, in the reference's order.
    pub fn kvs(&self) -> &KvList {
        &self.kv
    }

    /// The f32 values of output tensor `name` (transformed).
    pub fn values(&self, name: &str) -> Result<Vec<f32>> {
        let (entry, record) = self
            .entries
            .iter()
            .zip(&self.records)
            .find(|(_, r)| r.name == name)
            .ok_or_else(|| {
                Error::tensor(&self.dir, name, "no such tensor in the converted model")
            })?;
        let read = |file: usize, hf_name: &str| {
            self.files
                .get(file)
                .and_then(|f| f.get(hf_name))
                .ok_or_else(|| Error::tensor(&self.dir, hf_name, "vanished from its file"))?
                .to_f32()
        };
        let mut f16_source = false;
        let values = match &entry.source {
            EntrySource::Tensor(file, hf_name) => {
                f16_source = self
                    .files
                    .get(*file)
                    .and_then(|f| f.get(hf_name))
                    .is_some_and(|t| t.meta().dtype == DType::F16);
                read(*file, hf_name)?
            }
            EntrySource::Generated(v) => v.clone(),
            EntrySource::Stack(sources) => {
                let mut all = Vec::new();
                for (file, hf_name) in sources {
                    all.extend(read(*file, hf_name)?);
                }
                all
            }
        };
        Ok(match entry.transform {
            Transform::None => values,
            Transform::RopePermute(heads) => rope_permute(&values, &record.shape, heads),
            Transform::KeepRows(_) => {
                let mut values = values;
                values.truncate(record.shape.iter().product());
                values
            }
            Transform::AddOne => values
                .into_iter()
                .map(|v| {
                    let x = v + 1.0;
                    if f16_source {
                        quant_core::dtype::f16_bits_to_f32(quant_core::dtype::f32_to_f16_bits(x))
                    } else {
                        x
                    }
                })
                .collect(),
        })
    }
}

/// Checks that `LlamaModel.permute` can reshape `shape` by `heads`.
fn check_permute(dir: &Path, name: &str, shape: &[usize], heads: usize) -> Result<()> {
    let rows = shape.first().copied().unwrap_or(0);
    if heads == 0 || rows % (heads * 2) != 0 {
        return Err(Error::ShapeMismatch {
            tensor: format!("{} ({name})", dir.display()),
            expected: format!("a first dimension divisible by 2 × {heads} heads"),
            got: shape.to_vec(),
        });
    }
    Ok(())
}

/// `LlamaModel.permute`: `w.reshape(heads, 2, rows/heads/2, *rest).swapaxes(1, 2)`: within
/// each head, output row `2i + j` is input row `j·half + i`.
pub fn rope_permute(values: &[f32], shape: &[usize], heads: usize) -> Vec<f32> {
    let rows = shape.first().copied().unwrap_or(0);
    let row_len = values.len().checked_div(rows).unwrap_or(0).max(1);
    let src: Vec<&[f32]> = values.chunks(row_len).collect();
    let half = rows / heads.max(1) / 2;
    let mut out = Vec::with_capacity(values.len());
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                if let Some(row) = src.get(h * 2 * half + j * half + i) {
                    out.extend_from_slice(row);
                }
            }
        }
    }
    out
}

impl ContainerReader for HfGgufReader {
    fn metadata(&self) -> BTreeMap<String, String> {
        crate::gguf::kv_text(self.kv.entries())
    }

    fn records(&self) -> &[TensorRecord] {
        &self.records
    }

    fn read(&self, name: &str) -> Result<QuantizedTensor> {
        let values = self.values(name)?;
        let record = self
            .records
            .iter()
            .find(|r| r.name == name)
            .cloned()
            .ok_or_else(|| {
                Error::tensor(&self.dir, name, "no such tensor in the converted model")
            })?;
        let data = quant_core::dtype::encode_f32(DType::F32, &values)
            .map_err(|e| Error::tensor(&self.dir, name, e.to_string()))?;
        let part = Part::new(
            PartLayout::new(name, DType::F32, record.shape.clone()),
            data,
        )?;
        Ok(QuantizedTensor {
            record,
            parts: vec![part],
        })
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn stored_bytes(&self, name: &str) -> Result<u64> {
        let r = self
            .records
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| {
                Error::tensor(&self.dir, name, "no such tensor in the converted model")
            })?;
        Ok(r.shape.iter().map(|&d| d as u64).product::<u64>() * 4)
    }
}

/// `TextModel.filter_tensors` then `ModelBase.filter_tensors`: multimodal towers are
/// dropped (`None`), `language_model.` prefixes removed.
pub fn text_model_filter(name: &str) -> Option<String> {
    const PREFIXES: [&str; 10] = [
        "mlp",
        "vit.",
        "vpm.",
        "siglip2.",
        "conformer.",
        "merger.",
        "resampler.",
        "sound_encoder.",
        "sound_projection.",
        "speech_embeddings.",
    ];
    const PARTS: [&str; 17] = [
        "visual.",
        "vision.",
        "audio.",
        "talker.",
        "vision_",
        "audio_",
        "token2wav.",
        "code2wav.",
        "projector.",
        "pre_mm_projector_norm",
        "image_newline",
        "view_seperator",
        "patch_embed",
        "patch_embedding",
        "patch_merger.",
        "patch_merge_mlp.",
        "model.connector.",
    ];
    if PREFIXES.iter().any(|p| name.starts_with(p)) || PARTS.iter().any(|p| name.contains(p)) {
        return None;
    }
    let name = match name.strip_suffix("e_score_correction_bias") {
        Some(b) => format!("{b}e_score_correction.bias"),
        None => name.to_string(),
    };
    Some(name.replace("language_model.", ""))
}

/// The converter quant registers for `.gguf` outputs: a folder whose `config.json` names
/// an architecture of [`ARCHITECTURES`] is converted; any other is left to the generic
/// writer with a warning naming it.
pub fn convert(dir: &Path, config: &Value) -> Result<Converted> {
    let what = hf_class(config)
        .or_else(|| config.get("_class_name").and_then(Value::as_str))
        .unwrap_or("a model without `architectures` in config.json");
    let why = match architecture_for(config) {
        Some(arch) if arch.vocab_files().iter().any(|f| dir.join(f).is_file()) => {
            let reader = HfGgufReader::open(dir, config, arch)?;
            return Ok(Converted::Reader(Box::new(reader)));
        }
        // llama.cpp's file holds the vocabulary: without one there is nothing to convert
        // to (the reference refuses such folders).
        Some(arch) => format!(
            "the folder has no {}: llama.cpp's file needs the vocabulary",
            arch.vocab_files().join(" or ")
        ),
        None => {
            let known: Vec<&str> = ARCHITECTURES
                .iter()
                .flat_map(|a| a.hf_classes().iter().copied())
                .collect();
            format!("quant converts {}", known.join(", "))
        }
    };
    Ok(Converted::Unknown {
        warning: format!(
            "{}: {what} is not converted to llama.cpp's layout ({why}); writing a generic GGUF{}",
            dir.display(),
            generic_architecture(config)
                .map(|a| format!(" with general.architecture = {a}"))
                .unwrap_or_else(|| " without general.architecture".into()),
        ),
    })
}

quant_core::register_converter!(quant_core::format::ConverterEntry {
    name: "hf-to-llamacpp",
    backend: crate::BACKEND,
    container: "gguf",
    open: convert,
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_matches_the_reshape() {
        // 2 heads × 4 rows, row length 1: per head rows [0 1 2 3] → [0 2 1 3].
        let v: Vec<f32> = (0..8).map(|i| i as f32).collect();
        assert_eq!(
            rope_permute(&v, &[8, 1], 2),
            [0., 2., 1., 3., 4., 6., 5., 7.]
        );
    }

    #[test]
    fn patterns_need_a_block_below_the_count() {
        assert_eq!(match_pattern("a.{bid}.b", "a.3.b", 4), Some(Some(3)));
        assert_eq!(match_pattern("a.{bid}.b", "a.4.b", 4), None);
        assert_eq!(match_pattern("a.{bid}.b", "a.x.b", 4), None);
        assert_eq!(match_pattern("a.b", "a.b", 4), Some(None));
    }

    #[test]
    fn generic_architecture_never_guesses() {
        let c = serde_json::json!({"_class_name": "FluxTransformer2DModel"});
        assert_eq!(generic_architecture(&c).as_deref(), Some("flux"));
        let c = serde_json::json!({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]});
        assert_eq!(generic_architecture(&c).as_deref(), Some("gpt2"));
        assert_eq!(generic_architecture(&serde_json::json!({})), None);
    }
}
