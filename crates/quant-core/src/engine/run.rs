//! Stage 3, run: turns one planned tensor into its stored parts (quantized, cast or kept),
//! with the record a loader needs to restore it.

use std::sync::Arc;

use super::configure::ModelQuantizer;
use super::plan::source_values_into;

use crate::dtype::encode_f32;
use crate::error::{Error, Result};
use crate::format::ContainerReader;
use crate::method::{Params, Part, QuantizedTensor, TensorRecord};
use crate::plan::{Action, Plan, PlanEntry};
use crate::progress::Meter;

impl ModelQuantizer {
    /// With a progress hook: a copy of this quantizer counting the tensors of `plan` this
    /// run writes (a worker's: those of its files), for [`tick`](Self::tick).
    pub(super) fn metered(&self, plan: &Plan) -> Option<ModelQuantizer> {
        let hook = self.progress.clone()?;
        let mine = |e: &&PlanEntry| self.worker.is_none_or(|w| w.owns(e.file));
        let (count, bytes) = plan
            .entries
            .iter()
            .filter(mine)
            .fold((0, 0), |(n, b), e| (n + 1, b + e.bytes_in));
        let mut q = self.clone();
        q.meter = Some(Arc::new(Meter::new(Some(hook), "", count, bytes)));
        Some(q)
    }

    /// Reports that planned tensor `e` starts to the run's progress hook (if any).
    pub(super) fn tick(&self, e: &PlanEntry) {
        if let Some(m) = &self.meter {
            m.step(&e.name, e.bytes_in);
        }
    }

    /// The stored parts of planned tensor `e`, read from `reader`. `scratch` carries the
    /// f32 values from tensor to tensor of one writer: the buffer for the largest tensor is
    /// allocated once, not once per tensor (fresh pages the kernel must fault in and zero).
    pub(super) fn produce(
        &self,
        plan: &Plan,
        reader: &dyn ContainerReader,
        e: &PlanEntry,
        scratch: &mut Vec<f32>,
    ) -> Result<QuantizedTensor> {
        if e.action == Action::Keep {
            let q = reader.read(&e.name)?;
            return Ok(QuantizedTensor {
                record: self.kept_record(e),
                parts: q.parts,
            });
        }
        source_values_into(reader, e, scratch)?;
        self.run_entry(plan, e, scratch)
    }

    /// Quantizes one planned tensor from its values.
    pub(super) fn run_entry(
        &self,
        plan: &Plan,
        e: &PlanEntry,
        values: &[f32],
    ) -> Result<QuantizedTensor> {
        match e.action {
            Action::Quantize => {
                let name = e.method.as_deref().unwrap_or_default();
                let m = plan.instance(e).ok_or_else(|| {
                    Error::tensor("", &e.name, format!("method {name} not planned"))
                })?;
                if !self.allow_nonfinite && !m.checks_finite() {
                    if let Some(i) = crate::simd::first_nonfinite(values) {
                        return Err(Error::NonFinite {
                            tensor: e.name.clone(),
                            index: i,
                            value: values[i],
                        });
                    }
                }
                let mut q = m.quantize(&e.meta, values)?;
                if e.is_fallback {
                    q.record.fallback = e.note.clone();
                }
                Ok(q)
            }
            Action::Cast | Action::Keep => {
                let l = e
                    .layout
                    .first()
                    .ok_or_else(|| Error::tensor("", &e.name, "empty layout"))?;
                let data = encode_f32(l.dtype, values)?;
                Ok(QuantizedTensor {
                    record: self.kept_record(e),
                    parts: vec![Part::new(l.clone(), data)?],
                })
            }
        }
    }

    pub(super) fn kept_record(&self, e: &PlanEntry) -> TensorRecord {
        let stored = e.layout.first().map(|l| l.dtype).unwrap_or(e.meta.dtype);
        TensorRecord {
            name: e.name.clone(),
            method: None,
            dtype: e.meta.dtype,
            shape: e.meta.shape.clone(),
            dequant_dtype: stored,
            params: Params::new(),
            parts: vec![e.name.clone()],
            fallback: if e.is_fallback { e.note.clone() } else { None },
        }
    }

    /// The record planned for `e` (the method may still refine `dequant_dtype`).
    pub(super) fn planned_record(&self, plan: &Plan, e: &PlanEntry) -> TensorRecord {
        match (&e.action, plan.instance(e)) {
            (Action::Quantize, Some(m)) => TensorRecord {
                name: e.name.clone(),
                method: Some(m.name().to_string()),
                dtype: e.meta.dtype,
                shape: e.meta.shape.clone(),
                dequant_dtype: e.meta.dtype,
                params: m.params(),
                parts: e.layout.iter().map(|l| l.key.clone()).collect(),
                fallback: if e.is_fallback { e.note.clone() } else { None },
            },
            _ => self.kept_record(e),
        }
    }
}
