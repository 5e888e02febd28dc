//! Hooks for file formats and foreign layouts that backends provide:
//!
//! - [`LayoutEntry`] (via [`register_layout!`](crate::register_layout)): recognises tensors
//!   written by another library (bitsandbytes, optimum-quanto, torchao) in a safetensors
//!   file without quant's own records, and says which method and parts restore each.
//! - [`ContainerEntry`] (via [`register_container!`](crate::register_container)): a whole
//!   file format other than safetensors (GGUF), read and written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::method::{Params, PartLayout, QuantizedTensor, TensorRecord};
use crate::tensor::TensorMeta;

/// What a layout detector sees of a safetensors file written by another library.
#[derive(Debug)]
pub struct ForeignFile<'a> {
    /// The file.
    pub path: &'a Path,
    /// Every tensor in it.
    pub tensors: &'a [TensorMeta],
    /// Its `__metadata__`.
    pub metadata: &'a BTreeMap<String, String>,
    /// The `config.json` beside it, if any.
    pub config: Option<&'a serde_json::Value>,
}

/// A detector of another library's layout, registered by a backend.
pub struct LayoutEntry {
    /// The backend crate.
    pub backend: &'static str,
    /// Returns a record (method, params, part keys) for every logical tensor of the
    /// layout it recognises; an empty list when the file is not in its layout; an error
    /// naming the file and tensor when it is, but malformed (e.g. a missing part).
    pub detect: fn(&ForeignFile<'_>) -> Result<Vec<TensorRecord>>,
}

inventory::collect!(LayoutEntry);

/// Registers a [`LayoutEntry`].
#[macro_export]
macro_rules! register_layout {
    ($entry:expr) => {
        $crate::__inventory::submit! { $entry }
    };
}

/// Every registered layout detector.
pub fn layouts() -> impl Iterator<Item = &'static LayoutEntry> {
    inventory::iter::<LayoutEntry>.into_iter()
}

/// One tensor a container will hold, known before any byte is quantized.
#[derive(Clone, Debug)]
pub struct PlannedOutput {
    /// The source tensor.
    pub meta: TensorMeta,
    /// The method that will produce it (`None`: stored unquantized in `layout[0].dtype`).
    pub method: Option<String>,
    /// That method's parameters.
    pub params: Params,
    /// The parts it will produce.
    pub layout: Vec<PartLayout>,
    /// Why the requested method is not the one used, if so.
    pub fallback: Option<String>,
}

impl PlannedOutput {
    /// Stored bytes of all its parts (`None` on overflow).
    pub fn byte_len(&self) -> Option<u64> {
        self.layout
            .iter()
            .try_fold(0u64, |a, l| a.checked_add(l.byte_len()? as u64))
    }
}

/// Writes tensors into a container in the planned order.
pub trait ContainerWriter: Send {
    /// Writes the next planned tensor.
    fn write(&mut self, q: &QuantizedTensor) -> Result<()>;
    /// Finishes the file (atomically renamed into place).
    fn finish(self: Box<Self>) -> Result<()>;
}

/// Reads tensors (quantized or not) from a file.
pub trait ContainerReader: Send + Sync {
    /// Key/value metadata of the file, as text.
    fn metadata(&self) -> BTreeMap<String, String>;
    /// A record for every tensor, in file order.
    fn records(&self) -> &[TensorRecord];
    /// The stored parts of tensor `name`.
    fn read(&self, name: &str) -> Result<QuantizedTensor>;
    /// Stored bytes of tensor `name` (all its parts). The default reads the parts; readers
    /// that know their layout answer without touching the data.
    fn stored_bytes(&self, name: &str) -> Result<u64> {
        Ok(self.read(name)?.byte_len() as u64)
    }
    /// The values of tensor `name` as f32 when the reader computes them itself (a
    /// converter transforming a checkpoint's tensors): the caller then skips
    /// [`read`](Self::read)'s f32 bytes and their decoding. `None` by default.
    fn f32_values(&self, name: &str) -> Option<Result<Vec<f32>>> {
        let _ = name;
        None
    }
    /// [`f32_values`](Self::f32_values) into `out`, replacing what it held (readers that
    /// compute values reuse its allocation). The default calls `f32_values`.
    fn f32_values_into(&self, name: &str, out: &mut Vec<f32>) -> Option<Result<()>> {
        self.f32_values(name).map(|r| r.map(|v| *out = v))
    }
    /// An unquantized tensor as a zero-copy source, when the container can give one
    /// (memory-mapped files); `None` otherwise, and the caller uses [`read`](Self::read).
    fn source(&self, name: &str) -> Option<Box<dyn crate::tensor::TensorSource + '_>> {
        let _ = name;
        None
    }
    /// The reader as [`Any`](std::any::Any), so a container's writer can recognise a
    /// reader of its own backend (e.g. to copy typed metadata); `None` by default.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

/// Starts writing a container file: (path, planned tensors, file-level metadata, the
/// reader of the input when it is a single file or a converted model).
pub type CreateContainerFn = fn(
    &Path,
    &[PlannedOutput],
    &BTreeMap<String, String>,
    Option<&dyn ContainerReader>,
) -> Result<Box<dyn ContainerWriter>>;

/// A file format other than safetensors, registered by a backend.
pub struct ContainerEntry {
    /// Short name, used by `--format` (e.g. `gguf`).
    pub name: &'static str,
    /// File extensions that select it (without the dot).
    pub extensions: &'static [&'static str],
    /// The backend crate.
    pub backend: &'static str,
    /// Whether `path` looks like this format (magic bytes).
    pub sniff: fn(&Path) -> bool,
    /// Opens a file for reading.
    pub open: fn(&Path) -> Result<Box<dyn ContainerReader>>,
    /// Starts writing a file holding `planned` tensors, with file-level `metadata`
    /// (provenance, source metadata such as `general.architecture`).
    pub create: CreateContainerFn,
    /// Splits an output into several files, when the format has a convention for it.
    pub split: Option<SplitFn>,
}

/// Limits for splitting a container output into several files (as llama-gguf-split's
/// `--split-max-size` and `--split-max-tensors`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SplitLimits {
    /// Most bytes of tensor data per file.
    pub max_bytes: Option<u64>,
    /// Most tensors per file.
    pub max_tensors: Option<usize>,
}

/// Splits an output (its path and every planned tensor, in order) into files: their
/// paths beside the output and each tensor's file index.
pub type SplitFn = fn(&Path, &[PlannedOutput], &SplitLimits) -> Result<(Vec<PathBuf>, Vec<usize>)>;

/// Metadata the engine gives each file of a split output: this file's index (0-based),
/// the number of files and the number of tensors in all of them (decimal text).
pub const META_SPLIT_NO: &str = "quant.split.no";
/// See [`META_SPLIT_NO`].
pub const META_SPLIT_COUNT: &str = "quant.split.count";
/// See [`META_SPLIT_NO`].
pub const META_SPLIT_TENSORS: &str = "quant.split.tensors";

inventory::collect!(ContainerEntry);

/// Registers a [`ContainerEntry`].
#[macro_export]
macro_rules! register_container {
    ($entry:expr) => {
        $crate::__inventory::submit! { $entry }
    };
}

/// Every registered container format.
pub fn containers() -> impl Iterator<Item = &'static ContainerEntry> {
    inventory::iter::<ContainerEntry>.into_iter()
}

/// The container registered for `name` or extension `ext`.
pub fn container(name_or_ext: &str) -> Option<&'static ContainerEntry> {
    containers().find(|c| c.name == name_or_ext || c.extensions.contains(&name_or_ext))
}

/// What a [`ConverterEntry`] makes of a model folder.
pub enum Converted {
    /// The model as the container's ecosystem names and lays it out (e.g. llama.cpp's
    /// tensor names, transformed values and key/values): the engine reads it instead of
    /// the folder's files.
    Reader(Box<dyn ContainerReader>),
    /// The converter does not know this model; the folder is read as it is and the
    /// warning is reported.
    Unknown {
        /// Names what was not recognised.
        warning: String,
    },
}

impl std::fmt::Debug for Converted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Converted::Reader(r) => write!(f, "Reader({} tensors)", r.records().len()),
            Converted::Unknown { warning } => write!(f, "Unknown({warning})"),
        }
    }
}

/// Converts a model folder for one container (e.g. Hugging Face → llama.cpp's GGUF
/// conventions), registered by a backend with [`register_converter!`](crate::register_converter).
pub struct ConverterEntry {
    /// Short name (e.g. `gguf-arch`).
    pub name: &'static str,
    /// The backend crate.
    pub backend: &'static str,
    /// The container ([`ContainerEntry::name`]) whose outputs it prepares.
    pub container: &'static str,
    /// Opens a model folder given its `config.json`.
    pub open: fn(&Path, &serde_json::Value) -> Result<Converted>,
}

inventory::collect!(ConverterEntry);

/// Registers a [`ConverterEntry`].
#[macro_export]
macro_rules! register_converter {
    ($entry:expr) => {
        $crate::__inventory::submit! { $entry }
    };
}

/// Every converter registered for `container`, sorted by name.
pub fn converters(container: &str) -> Vec<&'static ConverterEntry> {
    let mut v: Vec<_> = inventory::iter::<ConverterEntry>
        .into_iter()
        .filter(|c| c.container == container)
        .collect();
    v.sort_by_key(|c| c.name);
    v
}
