//! Hugging Face model folder → llama.cpp GGUF conversion, as convert_hf_to_gguf.py
//! (llama.cpp b11312) does it with `--outtype f32`: llama.cpp tensor names, the
//! reference's tensor order and value transforms, and its typed key/value list
//! (`general.*`, hyperparameters, `tokenizer.*`) in its order.
//!
//! One module per architecture behind the small [`Architecture`] trait ([`llama`],
//! [`bert`]); adding one is one file and one line in [`ARCHITECTURES`]. [`HfGgufReader`]
//! presents the converted model as a [`quant_core::format::ContainerReader`]: every tensor F32, unquantized,
//! values transformed on read (one tensor at a time, straight from the mapped safetensors).
//! Shared pieces: hyperparameter keys ([`hparams`]), tensor-name tables ([`names`]), the
//! reader ([`reader`]) and the vocabularies ([`tokenizer`]). The converter writes into the
//! container's types ([`crate::gguf`]) and knows nothing of methods.
//!
//! What the reference writes that quant's writer owns: `general.file_type` (a placeholder
//! 0 here, as for `--outtype f32`, replaced by the writer with the file's real type) and
//! `general.quantization_version` (2).

pub mod bert;
pub mod general;
pub mod hparams;
pub mod llama;
pub mod names;
pub mod reader;
pub mod tokenizer;

use std::path::{Path, PathBuf};

use quant_core::format::Converted;
use quant_core::{Error, Result};
use serde_json::{Map, Value};

pub use crate::gguf::KvList;
pub use hparams::{rope_parameters, set_pooling_type, text_model_parameters};
pub use names::{map_name, match_pattern, text_model_filter};
pub use reader::{rope_permute, HfGgufReader};

/// A value transform the reference applies to a tensor before writing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    /// Written as read.
    None,
    /// `LlamaModel.permute` with this head count: rows regrouped for llama.cpp's rope
    /// (within each head, the two halves interleaved).
    RopePermute(usize),
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
}

/// Every architecture quant converts.
pub static ARCHITECTURES: &[&dyn Architecture] = &[&llama::Llama, &bert::Bert];

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
    fn generic_architecture_never_guesses() {
        let c = serde_json::json!({"_class_name": "FluxTransformer2DModel"});
        assert_eq!(generic_architecture(&c).as_deref(), Some("flux"));
        let c = serde_json::json!({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]});
        assert_eq!(generic_architecture(&c).as_deref(), Some("gpt2"));
        assert_eq!(generic_architecture(&serde_json::json!({})), None);
    }
}
