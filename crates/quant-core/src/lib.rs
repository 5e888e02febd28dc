//! Core of quant: tensors, the [`QuantMethod`] trait, the method registry and catalog,
//! rules, safetensors I/O and the model quantizer.
//!
//! Backends depend on this crate only and register their methods with
//! [`register_method!`]; the `quant` facade links them in.

pub mod atomic;
pub mod catalog;
pub mod dtype;
pub mod engine;
pub mod error;
pub mod format;
pub mod load;
pub mod method;
pub mod metrics;
pub mod pipeline;
pub mod plan;
pub mod planner;
pub mod progress;
pub mod registry;
pub mod rules;
pub mod safetensors_io;
pub mod simd;
pub mod tensor;

pub use catalog::{CatalogEntry, CATALOG, EXTRA};
pub use dtype::DType;
pub use error::{Error, Result};
pub use method::{
    parse_param_arg, parse_params, Artifacts, Mixture, ModelView, ParamSpec, Params, Part,
    PartLayout, PlannedTensor, QuantMethod, QuantizedTensor, Selection, TensorChoice, TensorRecord,
};
pub use registry::{MethodEntry, Registry, Resolved};
pub use tensor::{HostTensor, TensorMeta, TensorSource};

#[doc(hidden)]
pub use inventory as __inventory;

/// The candle version quant hands tensors to (feature `candle`).
#[cfg(feature = "candle")]
pub use candle_core;
#[cfg(feature = "candle")]
pub use engine::quantize_model;
pub use engine::{ModelQuantizer, QuantizedModel, Report};
pub use load::ModelFiles;
pub use pipeline::{ComponentPlan, Pipeline, PipelineRecipe};
pub use rules::{ConfigFile, RuleAction, Rules};
