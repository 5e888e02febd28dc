//! The plan: what happens to every tensor and which output file holds it, computed once
//! before any byte is quantized, read by every later stage and by the memory planner.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::PlannedOutput;
use crate::method::{PartLayout, QuantMethod};
use crate::registry::Resolved;
use crate::tensor::TensorMeta;

/// What happens to one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Quantized by a method.
    Quantize,
    /// Kept unquantized, cast to another float dtype.
    Cast,
    /// Kept exactly as stored.
    Keep,
}

/// The plan for one tensor.
#[derive(Clone, Debug, Serialize)]
pub struct PlanEntry {
    /// Index of the input shard.
    pub shard: usize,
    /// Index of the output file in [`Plan::files`].
    #[serde(skip)]
    pub file: usize,
    /// The source tensor.
    #[serde(skip)]
    pub meta: TensorMeta,
    /// The tensor name.
    pub name: String,
    /// The rule that matched (`pattern = action`), if any.
    pub rule: Option<String>,
    /// What happens.
    pub action: Action,
    /// The method, for [`Action::Quantize`].
    pub method: Option<String>,
    /// The key of the method's instance (its name and parameters) in the plan, for
    /// [`Action::Quantize`]: one method may run with different parameters (a rule's and
    /// the default's) in one plan.
    #[serde(skip)]
    pub instance: Option<String>,
    /// Why the method differs from the requested one, or why the tensor is left as is.
    pub note: Option<String>,
    /// True when `note` describes a fallback (counted and refused in strict mode).
    pub is_fallback: bool,
    /// The stored parts.
    #[serde(skip)]
    pub layout: Vec<PartLayout>,
    /// Bytes of the source tensor.
    pub bytes_in: u64,
    /// Bytes it will be stored as.
    pub bytes_out: u64,
    /// The source is stored quantized and will be dequantized first.
    pub requantize: bool,
    /// Estimated relative RMS error (measured on sampled rows), when a memory target made
    /// the planner measure it.
    pub est_rel_error: Option<f64>,
}

/// The plan for a whole model.
pub struct Plan {
    /// How the default method resolved.
    pub resolved: Resolved,
    /// One entry per tensor, in output order.
    pub entries: Vec<PlanEntry>,
    /// The output files, relative to the output (a single file's own name, or the
    /// folder's weight files); [`PlanEntry::file`] indexes this list.
    pub files: Vec<PathBuf>,
    /// Every method instance the entries use, by [`PlanEntry::instance`] key.
    pub(crate) methods: BTreeMap<String, Arc<dyn QuantMethod>>,
    /// The key of the default method's instance.
    pub(crate) default_instance: String,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("resolved", &self.resolved)
            .field("entries", &self.entries.len())
            .field("files", &self.files)
            .finish()
    }
}

impl Plan {
    /// Total bytes of the stored output.
    pub fn bytes_out(&self) -> u64 {
        self.entries.iter().map(|e| e.bytes_out).sum()
    }
    /// Total bytes of the input.
    pub fn bytes_in(&self) -> u64 {
        self.entries.iter().map(|e| e.bytes_in).sum()
    }
    /// Number of per-tensor fallbacks.
    pub fn fallbacks(&self) -> usize {
        self.entries.iter().filter(|e| e.is_fallback).count()
    }
    /// An instance of method `name` in the plan (the one without parameters when there
    /// is one, else the first by key).
    pub fn method(&self, name: &str) -> Option<&Arc<dyn QuantMethod>> {
        self.methods
            .get(name)
            .or_else(|| self.methods.values().find(|m| m.name() == name))
    }
    /// The method instance that quantizes entry `e`.
    pub fn instance(&self, e: &PlanEntry) -> Option<&Arc<dyn QuantMethod>> {
        self.methods.get(e.instance.as_deref()?)
    }
    /// What a container writer is told about entries `idx`.
    pub fn planned_outputs(&self, idx: &[usize]) -> Vec<PlannedOutput> {
        idx.iter()
            .filter_map(|&i| self.entries.get(i))
            .map(|e| PlannedOutput {
                meta: e.meta.clone(),
                method: e.method.clone(),
                params: self.instance(e).map(|m| m.params()).unwrap_or_default(),
                layout: e.layout.clone(),
                fallback: if e.is_fallback { e.note.clone() } else { None },
            })
            .collect()
    }
    /// The indices of the entries that go into output file `file`, in plan order.
    pub fn entries_of(&self, file: usize) -> Vec<usize> {
        (0..self.entries.len())
            .filter(|&i| self.entries[i].file == file)
            .collect()
    }
}

/// Reads the values of a planned tensor (for measuring sensitivity).
pub type ValueFn<'a> = dyn Fn(&PlanEntry) -> Result<Vec<f32>> + 'a;

/// Stored bytes of a layout, or an error naming the tensor on overflow.
pub(crate) fn layout_bytes(layout: &[PartLayout], name: &str) -> Result<u64> {
    layout.iter().try_fold(0u64, |acc, l| {
        l.byte_len()
            .and_then(|b| acc.checked_add(b as u64))
            .ok_or_else(|| Error::tensor("", name, "output size overflows"))
    })
}
