//! [`HfGgufReader`]: a converted Hugging Face folder as a container reader, every tensor F32
//! and transformed on read, one tensor at a time from the mapped safetensors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;

use quant_core::format::ContainerReader;
use quant_core::safetensors_io::SafetensorsFile;
use quant_core::tensor::TensorSource;
use quant_core::{DType, Error, Part, PartLayout, QuantizedTensor, Result, TensorRecord};
use serde_json::Value;

use super::{checks, experts, general, Architecture, HfModel, KvList, Transform};
use crate::gguf::GgufValue;

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
    /// Every key but the vocabulary's (what [`ContainerReader::metadata`] gives).
    kv: KvList,
    /// The vocabulary (`tokenizer.*`), read on its own thread on a pool of more than one
    /// thread (see [`HfGgufReader::kvs`]).
    vocab: Vocab,
    /// The values before a rope permutation ([`HfGgufReader::values_into`]).
    permute_scratch: Mutex<Vec<f32>>,
}

/// The whole key/value list once the vocabulary is read: `pending` is the thread still
/// reading it, `done` the list.
struct Vocab {
    pending: Mutex<Option<JoinHandle<Result<KvList>>>>,
    done: OnceLock<KvList>,
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
    let mut names: Vec<String> = match crate::arch::tokenizer::read_json(&index)? {
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
    pub fn open(dir: &Path, config: &Value, arch: &'static dyn Architecture) -> Result<Self> {
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

        // The vocabulary (tokenizer.json, the pre-tokenizer's hash, special tokens) is
        // only needed for the file's header: on a pool of more than one thread it is read
        // while the tensors are planned and the first ones quantized.
        let base = kv.clone();
        let checked = records.clone();
        let read_vocab = move || -> Result<KvList> {
            let mut kv = base;
            arch.set_vocab(&model, &mut kv)?;
            checks::check_vocab(&model, &checked, &kv)?;
            Ok(kv)
        };
        let vocab = Vocab {
            pending: Mutex::new(None),
            done: OnceLock::new(),
        };
        if rayon::current_num_threads() > 1 {
            *vocab.pending.lock().map_err(|_| poisoned(dir))? =
                Some(std::thread::spawn(read_vocab));
        } else {
            let _ = vocab.done.set(read_vocab()?);
        }
        Ok(HfGgufReader {
            dir: dir.to_path_buf(),
            files,
            entries,
            records,
            kv,
            vocab,
            permute_scratch: Mutex::new(Vec::new()),
        })
    }

    /// The typed key/value list with the vocabulary, in the reference's order (waits for
    /// the vocabulary; its error, such as a malformed tokenizer.json, comes from here the
    /// first time, and names the folder after that).
    pub fn kvs(&self) -> Result<&KvList> {
        if let Some(kv) = self.vocab.done.get() {
            return Ok(kv);
        }
        let mut pending = self.vocab.pending.lock().map_err(|_| poisoned(&self.dir))?;
        if let Some(kv) = self.vocab.done.get() {
            return Ok(kv);
        }
        let handle = pending.take().ok_or_else(|| {
            Error::file(
                &self.dir,
                "vocabulary",
                "could not be read (reported before)",
            )
        })?;
        let kv = handle
            .join()
            .map_err(|_| Error::file(&self.dir, "vocabulary", "its reader panicked"))??;
        Ok(self.vocab.done.get_or_init(|| kv))
    }

    /// The f32 values of output tensor `name` (transformed).
    pub fn values(&self, name: &str) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        self.values_into(name, &mut out)?;
        Ok(out)
    }

    /// [`values`](Self::values) into `out`, replacing what it held and reusing its
    /// allocation (a run converts tensor after tensor through one buffer instead of
    /// having the kernel fault in and zero fresh pages for each).
    pub fn values_into(&self, name: &str, out: &mut Vec<f32>) -> Result<()> {
        let (entry, record) = self
            .entries
            .iter()
            .zip(&self.records)
            .find(|(_, r)| r.name == name)
            .ok_or_else(|| {
                Error::tensor(&self.dir, name, "no such tensor in the converted model")
            })?;
        let read_into = |file: usize, hf_name: &str, out: &mut Vec<f32>| {
            self.files
                .get(file)
                .and_then(|f| f.get(hf_name))
                .ok_or_else(|| Error::tensor(&self.dir, hf_name, "vanished from its file"))?
                .to_f32_into(out)
        };
        let mut f16_source = false;
        match &entry.source {
            EntrySource::Tensor(file, hf_name) => {
                f16_source = self
                    .files
                    .get(*file)
                    .and_then(|f| f.get(hf_name))
                    .is_some_and(|t| t.meta().dtype == DType::F16);
                read_into(*file, hf_name, out)?;
            }
            EntrySource::Generated(v) => {
                out.clear();
                out.extend_from_slice(v);
            }
            EntrySource::Stack(sources) => {
                // The experts one after another through one buffer, into the stack's size.
                out.clear();
                out.reserve(record.shape.iter().product());
                let mut one = Vec::new();
                for (file, hf_name) in sources {
                    read_into(*file, hf_name, &mut one)?;
                    out.extend_from_slice(&one);
                }
            }
        }
        match entry.transform {
            Transform::None => {}
            Transform::RopePermute(heads) => {
                // From a second buffer the reader keeps (the two trade places, so both
                // keep their allocations from tensor to tensor).
                let mut src = self
                    .permute_scratch
                    .lock()
                    .map_err(|_| poisoned(&self.dir))?;
                std::mem::swap(out, &mut *src);
                rope_permute_into(&src, &record.shape, heads, out);
            }
            Transform::KeepRows(_) => out.truncate(record.shape.iter().product()),
            Transform::AddOne => {
                for v in out.iter_mut() {
                    let x = *v + 1.0;
                    *v = if f16_source {
                        quant_core::dtype::f16_bits_to_f32(quant_core::dtype::f32_to_f16_bits(x))
                    } else {
                        x
                    };
                }
            }
        }
        Ok(())
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
    let mut out = Vec::new();
    rope_permute_into(values, shape, heads, &mut out);
    out
}

/// [`rope_permute`] into `out`, replacing what it held.
pub fn rope_permute_into(values: &[f32], shape: &[usize], heads: usize, out: &mut Vec<f32>) {
    let rows = shape.first().copied().unwrap_or(0);
    let row_len = values.len().checked_div(rows).unwrap_or(0).max(1);
    let src: Vec<&[f32]> = values.chunks(row_len).collect();
    let half = rows / heads.max(1) / 2;
    out.clear();
    out.reserve(values.len());
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                if let Some(row) = src.get(h * 2 * half + j * half + i) {
                    out.extend_from_slice(row);
                }
            }
        }
    }
}

impl ContainerReader for HfGgufReader {
    /// Every key but the vocabulary's (`tokenizer.*`, read for the file's header:
    /// [`HfGgufReader::kvs`]), as text.
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

    fn f32_values(&self, name: &str) -> Option<Result<Vec<f32>>> {
        Some(self.values(name))
    }

    fn f32_values_into(&self, name: &str, out: &mut Vec<f32>) -> Option<Result<()>> {
        Some(self.values_into(name, out))
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

fn poisoned(dir: &Path) -> Error {
    Error::file(dir, "vocabulary", "its lock was poisoned")
}

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
}
