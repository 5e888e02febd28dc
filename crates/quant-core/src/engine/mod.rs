//! The model quantizer, top to bottom: [`configure`] (the builder and the output kind),
//! [`plan`](mod@plan) (every tensor's action, method, layout and output file, decided once),
//! [`run`] (one planned tensor into its stored parts) and [`write`] (one writer per kind
//! of output), then [`merge`](mod@merge) for the folders `--shard I/N` workers write.
//! Data flows plan → run → write; no stage imports a later one. This file
//! holds the two drivers: [`ModelQuantizer::quantize_path`] (files, streaming) and
//! [`ModelQuantizer::quantize_sources`] (tensors in memory).

pub mod configure;
pub mod merge;
pub mod plan;
pub mod run;
pub mod write;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

pub use self::configure::{parse_size, ModelQuantizer, Output, Progress, Worker, BYTES_PER_GB};
pub use self::merge::{merge, merge_with_progress, Merged};
use self::write::metadata::merge_metadata;
use crate::error::{Error, Result};
use crate::load::{dequantize, META_TENSORS};
use crate::method::{Artifacts, Part, PartLayout, QuantizedTensor, TensorRecord};
pub use crate::plan::{Action, Plan, PlanEntry, ValueFn};
use crate::registry::Resolved;
use crate::safetensors_io::check_output;
use crate::tensor::TensorSource;

/// What a run did, for the summary table and `quantization_info.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// How the default method resolved.
    pub resolved: Resolved,
    /// Every tensor.
    pub tensors: Vec<PlanEntry>,
    /// Input bytes.
    pub bytes_in: u64,
    /// Output bytes (tensor data).
    pub bytes_out: u64,
    /// Per-tensor fallbacks.
    pub fallbacks: usize,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Files written.
    pub outputs: Vec<PathBuf>,
    /// Things the user should know that are not per-tensor fallbacks (e.g. a model
    /// architecture a converter does not know).
    pub warnings: Vec<String>,
}

impl Report {
    /// What a run of `plan` that started at `start` did.
    fn new(plan: Plan, start: Instant, outputs: Vec<PathBuf>, warnings: Vec<String>) -> Self {
        Report {
            resolved: plan.resolved.clone(),
            bytes_in: plan.bytes_in(),
            bytes_out: plan.bytes_out(),
            fallbacks: plan.fallbacks(),
            tensors: plan.entries,
            seconds: start.elapsed().as_secs_f64(),
            outputs,
            warnings,
        }
    }
}

impl ModelQuantizer {
    /// Quantizes a safetensors file, a model folder or a container file (GGUF) into
    /// `output`: a file (its extension or [`format`](Self::format) picks the container)
    /// or, for a folder input, a folder mirroring it. Streaming: one tensor is in memory
    /// at a time; the output appears only when complete.
    pub fn quantize_path(
        &self,
        input: impl AsRef<Path>,
        output: impl AsRef<Path>,
    ) -> Result<Report> {
        let start = Instant::now();
        let output = output.as_ref();
        match self.worker {
            None => check_output(output, self.force)?,
            // Workers share one output folder: only a finished one is refused.
            Some(_) if !self.force && output.exists() && !write::is_worker_output(output) => {
                return Err(Error::OutputExists {
                    path: output.to_path_buf(),
                })
            }
            Some(_) => {}
        }
        // 1. configure: what the output is.
        let container = self.output_container(output)?;
        // 2. plan: open the input (through a converter for the container when one knows
        //    the model) and plan every tensor into the output's files.
        let (model, warnings) = self.open_input(input.as_ref(), container)?;
        let kind = match container {
            Some(c) => Output::Container(c),
            None if model.is_dir || self.max_shard_size.is_some() => Output::Folder,
            None => Output::File,
        };
        let (model, plan) = self.plan_files(model, Some((kind, output)))?;
        // 3 and 4. run each planned tensor and write it, in plan order, counting what
        //    this run writes (a worker: its files' tensors) for the progress hook.
        let metered = self.metered(&plan);
        let q = metered.as_ref().unwrap_or(self);
        let outputs = write::writer_for(kind).write(q, &model, &plan, output, start)?;
        if let Some(m) = &q.meter {
            m.end();
        }
        Ok(Report::new(plan, start, outputs, warnings))
    }

    /// Quantizes in-memory tensors (e.g. candle tensors wrapped in
    /// [`CandleSource`](crate::tensor::CandleSource)).
    pub fn quantize_sources(&self, sources: &[&dyn TensorSource]) -> Result<QuantizedModel> {
        let start = Instant::now();
        let records: Vec<(usize, TensorRecord)> = sources
            .iter()
            .map(|s| (0, crate::load::plain_record(s.meta())))
            .collect();
        let by_name = |e: &PlanEntry| -> Result<Vec<f32>> {
            sources
                .iter()
                .find(|s| s.meta().name == e.name)
                .ok_or_else(|| Error::tensor("", &e.name, "no such source"))?
                .to_f32()
        };
        let plan = self.plan(&records, Some(&by_name))?;
        let metered = self.metered(&plan);
        let meter = metered.as_ref().and_then(|q| q.meter.as_ref());
        let mut tensors = Vec::with_capacity(sources.len());
        for (e, s) in plan.entries.iter().zip(sources) {
            if let Some(m) = meter {
                m.step(&e.name, e.bytes_in);
            }
            let q = if e.action == Action::Keep {
                QuantizedTensor {
                    record: self.kept_record(e),
                    parts: vec![Part::new(
                        PartLayout::new(&e.name, e.meta.dtype, e.meta.shape.clone()),
                        s.bytes()?.into_owned(),
                    )?],
                }
            } else {
                self.run_entry(&plan, e, &s.to_f32()?)?
            };
            tensors.push(q);
        }
        if let Some(m) = meter {
            m.end();
        }
        let all: Vec<&PlanEntry> = plan.entries.iter().collect();
        let artifacts = self.artifacts_for(&plan, &all)?;
        let mut metadata = self.base_metadata(&plan);
        merge_metadata(&mut metadata, &artifacts);
        let report = Report::new(plan, start, Vec::new(), Vec::new());
        Ok(QuantizedModel {
            tensors,
            metadata,
            artifacts,
            report,
        })
    }
}

/// Quantized tensors held in memory, with what is needed to save them.
#[derive(Debug)]
pub struct QuantizedModel {
    /// The tensors, in input order.
    pub tensors: Vec<QuantizedTensor>,
    /// Header metadata for a safetensors file.
    pub metadata: BTreeMap<String, String>,
    /// What each method contributes around the tensors.
    pub artifacts: Vec<(String, Artifacts)>,
    /// What was done.
    pub report: Report,
}

impl QuantizedModel {
    /// Restores tensor `name` as f32 values.
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>> {
        let q = self
            .tensors
            .iter()
            .find(|t| t.record.name == name)
            .ok_or_else(|| Error::tensor("", name, "no such tensor"))?;
        dequantize(q)
    }

    /// Saves as one safetensors file (atomically), with quant's records in the header.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut md = self.metadata.clone();
        let records: Vec<&TensorRecord> = self.tensors.iter().map(|t| &t.record).collect();
        md.insert(
            META_TENSORS.into(),
            serde_json::to_string(&records)
                .map_err(|e| Error::file(path.as_ref(), "json", e.to_string()))?,
        );
        let parts: Vec<Part> = self
            .tensors
            .iter()
            .flat_map(|t| t.parts.iter().cloned())
            .collect();
        crate::safetensors_io::write_safetensors(path, &parts, &md)
    }
}

/// Quantizes named candle tensors with `method` (the seed's convenience function).
#[cfg(feature = "candle")]
pub fn quantize_model<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a candle_core::Tensor)>,
    method: &str,
) -> Result<QuantizedModel> {
    let sources = tensors
        .into_iter()
        .map(|(n, t)| crate::tensor::CandleSource::new(n, t.clone()))
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&dyn TensorSource> = sources.iter().map(|s| s as &dyn TensorSource).collect();
    ModelQuantizer::new(method).quantize_sources(&refs)
}
