//! The one error type of quant.

use std::path::PathBuf;

/// Result alias used across quant.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error quant reports. Messages are lowercase and name the file, tensor,
/// method and values involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on `path` failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file is not a valid container (safetensors, gguf, json...).
    #[error("{path}: invalid {format} file: {reason}")]
    InvalidFile {
        /// The file.
        path: PathBuf,
        /// Which format was expected.
        format: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A tensor inside a file is malformed.
    #[error("{path}: tensor '{tensor}': {reason}")]
    InvalidTensor {
        /// The file (empty for in-memory tensors).
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor has a shape a method cannot take.
    #[error("tensor '{tensor}': expected shape {expected}, got {got:?}")]
    ShapeMismatch {
        /// The tensor name.
        tensor: String,
        /// What was expected, in words.
        expected: String,
        /// The shape that was found.
        got: Vec<usize>,
    },
    /// A dtype name or id that quant does not know.
    #[error("unknown dtype '{name}'{}", context_suffix(.context))]
    UnknownDType {
        /// The name as given.
        name: String,
        /// Where it came from (file, tensor), may be empty.
        context: String,
    },
    /// A dtype that a method or operation does not accept.
    #[error("tensor '{tensor}': dtype {dtype} is not supported by {op}")]
    UnsupportedDType {
        /// The tensor name.
        tensor: String,
        /// The dtype.
        dtype: String,
        /// The operation or method.
        op: String,
    },
    /// A method name nobody knows.
    #[error("unknown method '{name}'{}; available: {}", did_you_mean(.close), .available.join(", "))]
    UnknownMethod {
        /// The name as given.
        name: String,
        /// Close matches among the known names.
        close: Vec<String>,
        /// The methods available in this build.
        available: Vec<String>,
    },
    /// A known method whose backend is compiled out (and fallbacks are refused).
    #[error("method '{name}' needs the cargo feature '{feature}' of quant (backend {backend}), which is not enabled in this build")]
    MethodNotCompiled {
        /// The method name.
        name: String,
        /// The backend crate.
        backend: String,
        /// The facade feature to enable.
        feature: String,
    },
    /// Two registrations use the same method name.
    #[error("method '{name}' is registered twice, by backends '{first}' and '{second}'")]
    DuplicateMethod {
        /// The method name.
        name: String,
        /// One backend.
        first: String,
        /// The other backend.
        second: String,
    },
    /// A method parameter that is unknown or has a bad value.
    #[error("method '{method}': parameter '{param}': {reason}; parameters: {}", .known.join(", "))]
    BadParam {
        /// The method.
        method: String,
        /// The parameter key.
        param: String,
        /// What is wrong.
        reason: String,
        /// The parameters the method accepts (`key=default: help`).
        known: Vec<String>,
    },
    /// A method cannot do an optional operation.
    #[error("method '{method}' does not support {op}")]
    Unsupported {
        /// The method.
        method: String,
        /// The operation.
        op: String,
    },
    /// The method needs an importance matrix (`--imatrix`) it was not given, or one that
    /// covers the tensor (llama.cpp's lattice types, and the file types built on them).
    #[error("method '{method}' needs an importance matrix: {reason}")]
    NeedsImatrix {
        /// The method.
        method: String,
        /// Which tensor or type, and what to pass (names `--imatrix`).
        reason: String,
    },
    /// A fallback happened while strict mode forbids it.
    #[error("strict mode: tensor '{tensor}': {reason}")]
    StrictFallback {
        /// The tensor (or `*` for the whole run).
        tensor: String,
        /// Why the requested method was not used.
        reason: String,
    },
    /// A rule or config file entry is wrong.
    #[error("{source_name}: entry '{entry}': {reason}")]
    Config {
        /// The file path, or `<inline>` for rules given in code.
        source_name: String,
        /// The offending entry.
        entry: String,
        /// What is wrong.
        reason: String,
    },
    /// A weight is NaN or infinite and non-finite weights are refused.
    #[error("tensor '{tensor}': non-finite value {value} at flat index {index} (pass --allow-nonfinite to quantize anyway)")]
    NonFinite {
        /// The tensor.
        tensor: String,
        /// The flat index of the first such value.
        index: usize,
        /// The value.
        value: f32,
    },
    /// The plan does not fit the memory target.
    #[error("the quantized weights need {needed} bytes, {over} more than the target of {target} bytes; {hint}")]
    OverTarget {
        /// Bytes the plan needs.
        needed: u64,
        /// The target.
        target: u64,
        /// How many bytes too many.
        over: u64,
        /// What would fit.
        hint: String,
    },
    /// The output exists and overwriting was not allowed.
    #[error("{path}: output exists (pass --force to overwrite)")]
    OutputExists {
        /// The output path.
        path: PathBuf,
    },
    /// An error from a backend crate.
    #[error("{backend}: {source}")]
    Backend {
        /// The backend name.
        backend: &'static str,
        /// The backend's own error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An error from candle.
    #[cfg(feature = "candle")]
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

fn context_suffix(context: &str) -> String {
    if context.is_empty() {
        String::new()
    } else {
        format!(" ({context})")
    }
}

fn did_you_mean(close: &[String]) -> String {
    if close.is_empty() {
        String::new()
    } else {
        format!(" (did you mean {}?)", close.join(", "))
    }
}

impl Error {
    /// An I/O error on a path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A malformed tensor in memory or in a file.
    pub fn tensor(path: impl Into<PathBuf>, tensor: &str, reason: impl Into<String>) -> Self {
        Error::InvalidTensor {
            path: path.into(),
            tensor: tensor.to_string(),
            reason: reason.into(),
        }
    }

    /// Fills in the file of an [`Error::InvalidTensor`] raised without one (tensors in
    /// memory do not know where they came from); other errors are returned unchanged.
    pub fn with_path(self, path: &std::path::Path) -> Self {
        match self {
            Error::InvalidTensor {
                path: p,
                tensor,
                reason,
            } if p.as_os_str().is_empty() => Error::InvalidTensor {
                path: path.to_path_buf(),
                tensor,
                reason,
            },
            other => other,
        }
    }

    /// A malformed file.
    pub fn file(path: impl Into<PathBuf>, format: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidFile {
            path: path.into(),
            format,
            reason: reason.into(),
        }
    }
}
