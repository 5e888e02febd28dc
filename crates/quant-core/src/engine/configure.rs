//! Stage 1, configure: the quantizer's settings (builder), the output it writes and the
//! method instances it uses.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::{self, ContainerEntry, SplitLimits};
use crate::method::{Params, QuantMethod};
use crate::registry::Registry;
use crate::rules::Rules;

use crate::progress::Meter;
pub use crate::progress::Progress;

/// Quantizes models: the seed API, as a builder.
///
/// ```no_run
/// # fn main() -> quant_core::Result<()> {
/// use quant_core::engine::ModelQuantizer;
/// let report = ModelQuantizer::new("basic_int8")
///     .strict(false)
///     .quantize_path("model.safetensors", "model-int8.safetensors")?;
/// println!("{} -> {} bytes", report.bytes_in, report.bytes_out);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ModelQuantizer {
    pub(super) method: String,
    pub(super) params: Params,
    pub(super) rules: Rules,
    pub(super) target_memory_gb: Option<f64>,
    pub(super) auto_optimize: bool,
    pub(super) strict: bool,
    pub(super) allow_nonfinite: bool,
    pub(super) allow_requantize: bool,
    pub(super) force: bool,
    pub(super) format: Option<String>,
    pub(super) progress: Option<Progress>,
    /// The run's counter, set by the driver for the writers (none outside a run).
    pub(super) meter: Option<Arc<Meter>>,
    pub(super) max_shard_size: Option<u64>,
    pub(super) worker: Option<Worker>,
    pub(super) split: Option<SplitLimits>,
}

/// One worker's share of a run split over `count` workers (`--shard I/N`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Worker {
    /// This worker, 0-based.
    pub index: usize,
    /// How many workers share the run.
    pub count: usize,
}

impl Worker {
    /// Parses `I/N` (0 ≤ I < N), as a Kubernetes Indexed Job or a Slurm array gives it.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |reason: &str| Error::Config {
            source_name: "--shard".into(),
            entry: text.into(),
            reason: reason.into(),
        };
        let (i, n) = text
            .split_once('/')
            .ok_or_else(|| bad("expected I/N, e.g. 0/3"))?;
        let index: usize = i
            .trim()
            .parse()
            .map_err(|_| bad("I is not a whole number"))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| bad("N is not a whole number"))?;
        if count == 0 || index >= count {
            return Err(bad("needs 0 <= I < N"));
        }
        Ok(Worker { index, count })
    }

    /// Whether output file number `file` is this worker's to write.
    pub fn owns(&self, file: usize) -> bool {
        file % self.count == self.index
    }
}

/// Parses a size as transformers' `max_shard_size` takes it: `5GB` (10^9), `500MB`,
/// `2GiB` (2^30), `100KiB`, or a number of bytes.
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale: f64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "KB" | "K" => 1e3,
        "MB" | "M" => 1e6,
        "GB" | "G" => 1e9,
        "TB" | "T" => 1e12,
        "KIB" => 1024.0,
        "MIB" => 1024f64.powi(2),
        "GIB" => 1024f64.powi(3),
        "TIB" => 1024f64.powi(4),
        _ => f64::NAN,
    };
    let v = num.parse::<f64>().map(|n| n * scale).unwrap_or(f64::NAN);
    if !v.is_finite() || v < 1.0 {
        return Err(Error::Config {
            source_name: "size".into(),
            entry: text.into(),
            reason: "expected a size such as 5GB, 500MB, 2GiB or a byte count".into(),
        });
    }
    Ok(v as u64)
}

impl std::fmt::Debug for ModelQuantizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelQuantizer")
            .field("method", &self.method)
            .field("params", &self.params)
            .finish()
    }
}

/// Bytes in one "GB" of `target_memory_gb` (10^9, as disk and model sizes are quoted).
pub const BYTES_PER_GB: f64 = 1e9;

impl ModelQuantizer {
    /// A quantizer for the default method `method`.
    pub fn new(method: impl Into<String>) -> Self {
        ModelQuantizer {
            method: method.into(),
            params: Params::new(),
            rules: Rules::new(),
            target_memory_gb: None,
            auto_optimize: true,
            strict: false,
            allow_nonfinite: false,
            allow_requantize: false,
            force: false,
            format: None,
            progress: None,
            meter: None,
            max_shard_size: None,
            worker: None,
            split: None,
        }
    }
    /// Method parameters (e.g. `blocksize`).
    pub fn params(mut self, params: Params) -> Self {
        self.params = params;
        self
    }
    /// Sets one method parameter.
    pub fn param(mut self, key: impl Into<String>, value: serde_json::Value) -> Self {
        self.params.insert(key.into(), value);
        self
    }
    /// Per-tensor rules (dtype preservation and overrides).
    pub fn rules(mut self, rules: Rules) -> Self {
        self.rules = rules;
        self
    }
    /// Shorthand for rules keeping every tensor matching a pattern in a dtype.
    pub fn preserve_dtypes<'a>(
        self,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self> {
        Ok(self.rules(Rules::from_pairs(pairs)?))
    }
    /// Bound on the stored weight bytes, in GB (10^9 bytes).
    pub fn target_memory_gb(mut self, gb: Option<f64>) -> Self {
        self.target_memory_gb = gb;
        self
    }
    /// With a memory target, move tensors between methods of the same backend (measured
    /// sensitivity) to fit it and spend room left on the most sensitive tensors (default on).
    pub fn auto_optimize(mut self, on: bool) -> Self {
        self.auto_optimize = on;
        self
    }
    /// Refuse every fallback instead of reporting it.
    pub fn strict(mut self, on: bool) -> Self {
        self.strict = on;
        self
    }
    /// Quantize tensors holding NaN or infinities instead of refusing them.
    pub fn allow_nonfinite(mut self, on: bool) -> Self {
        self.allow_nonfinite = on;
        self
    }
    /// Dequantize already-quantized inputs and quantize them again.
    pub fn allow_requantize(mut self, on: bool) -> Self {
        self.allow_requantize = on;
        self
    }
    /// Overwrite an existing output.
    pub fn force(mut self, on: bool) -> Self {
        self.force = on;
        self
    }
    /// Output container (`safetensors` or a registered one such as `gguf`); default: from
    /// the output extension.
    pub fn format(mut self, format: Option<String>) -> Self {
        self.format = format;
        self
    }
    /// A progress hook, called as each tensor starts and once at the end (see
    /// [`Tick`](crate::progress::Tick)).
    pub fn progress(mut self, p: Option<Progress>) -> Self {
        self.progress = p;
        self
    }

    /// The progress hook, if any.
    pub fn progress_hook(&self) -> Option<&Progress> {
        self.progress.as_ref()
    }

    /// Split safetensors output into files of at most this many bytes (a larger tensor
    /// gets a file of its own), named and indexed as transformers' `save_pretrained` does;
    /// the output is then a folder.
    pub fn max_shard_size(mut self, bytes: Option<u64>) -> Self {
        self.max_shard_size = bytes;
        self
    }
    /// Split a container output (GGUF) into several files by its format's convention
    /// (llama-gguf-split's `--split-max-size` / `--split-max-tensors`).
    pub fn split(mut self, limits: Option<SplitLimits>) -> Self {
        self.split = limits;
        self
    }
    /// Write only this worker's share of the output files (plus what `merge` needs);
    /// every worker plans the whole model the same way.
    pub fn worker(mut self, worker: Option<Worker>) -> Self {
        self.worker = worker;
        self
    }
}

/// What kind of output a run writes.
#[derive(Clone, Copy)]
pub enum Output {
    /// One safetensors file.
    File,
    /// A folder mirroring a model folder (one safetensors file per input shard).
    Folder,
    /// One file of a registered container (GGUF).
    Container(&'static ContainerEntry),
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::File => write!(f, "File"),
            Output::Folder => write!(f, "Folder"),
            Output::Container(c) => write!(f, "Container({})", c.name),
        }
    }
}

impl Output {
    /// The container, for [`Output::Container`].
    pub fn container(&self) -> Option<&'static ContainerEntry> {
        match self {
            Output::Container(c) => Some(c),
            _ => None,
        }
    }
}

impl ModelQuantizer {
    /// The default method's name as requested.
    pub fn method_name(&self) -> &str {
        &self.method
    }

    /// The extension of the container this quantizer writes into a pipeline component:
    /// the one asked for by [`format`](Self::format), else the container registered by the
    /// method's own backend (GGUF methods write `.gguf`); `None` for safetensors.
    pub fn container_extension(&self) -> Option<String> {
        let entry = match self.format.as_deref() {
            Some("safetensors") => return None,
            Some(f) => format::container(f)?,
            None => {
                let backend = Registry::global().ok()?.get(&self.method)?.backend;
                format::containers().find(|c| c.backend == backend)?
            }
        };
        entry.extensions.first().map(|e| e.to_string())
    }

    pub(super) fn output_container(
        &self,
        output: &Path,
    ) -> Result<Option<&'static format::ContainerEntry>> {
        let ext = output
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let wanted = self.format.clone().unwrap_or(ext);
        if wanted.is_empty() || wanted == "safetensors" {
            return Ok(None);
        }
        match format::container(&wanted) {
            Some(c) => Ok(Some(c)),
            None if wanted == "gguf" => Err(Error::MethodNotCompiled {
                name: "gguf output".into(),
                backend: "quant-gguf".into(),
                feature: "gguf".into(),
            }),
            None if self.format.is_some() => Err(Error::Config {
                source_name: "--format".into(),
                entry: wanted,
                reason: "unknown output format (safetensors or a compiled-in container)".into(),
            }),
            None => Ok(None),
        }
    }

    /// The instance of method `name` with `params`, created once per plan: returns its
    /// key in `methods` ([`instance_key`]) and the instance.
    pub(super) fn instance(
        &self,
        name: &str,
        params: &Params,
        methods: &mut BTreeMap<String, Arc<dyn QuantMethod>>,
    ) -> Result<(String, Arc<dyn QuantMethod>)> {
        let key = instance_key(name, params);
        if let Some(m) = methods.get(&key) {
            return Ok((key, Arc::clone(m)));
        }
        let registry = Registry::global()?;
        // A method with its own non-finite gate follows the quantizer's.
        let mut params = params.clone();
        if self.allow_nonfinite
            && registry
                .get(name)
                .is_some_and(|e| e.params.iter().any(|p| p.name == "allow_nonfinite"))
        {
            params
                .entry("allow_nonfinite")
                .or_insert(serde_json::Value::Bool(true));
        }
        let m: Arc<dyn QuantMethod> = Arc::from(registry.create(name, &params)?);
        methods.insert(key.clone(), Arc::clone(&m));
        Ok((key, m))
    }
}

/// The key of a method instance in a plan: the method's name, followed by its parameters
/// (sorted, as JSON) when it has any, so one method with two sets of parameters is two
/// instances.
pub(crate) fn instance_key(name: &str, params: &Params) -> String {
    if params.is_empty() {
        return name.to_string();
    }
    let sorted: BTreeMap<&String, &serde_json::Value> = params.iter().collect();
    format!(
        "{name} {}",
        serde_json::to_string(&sorted).unwrap_or_default()
    )
}
