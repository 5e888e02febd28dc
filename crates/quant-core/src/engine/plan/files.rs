//! The input and the output files: open the input (through a converter when one
//! recognises the folder), plan it for an output, and name the files each entry goes to
//! (the input's shards, size-split shards, a container's splits, one file).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::engine::configure::{ModelQuantizer, Output};
use crate::error::{Error, Result};
use crate::format::{self, ContainerEntry, ContainerReader};
use crate::load::{dequantize_into, ModelFiles};
use crate::method::TensorRecord;
use crate::plan::{Plan, PlanEntry};

impl ModelQuantizer {
    /// Plans a model on disk without writing anything (`quant plan`).
    pub fn plan_path(&self, input: impl AsRef<Path>) -> Result<(ModelFiles, Plan)> {
        let container = match self.format.as_deref() {
            Some(f) => format::container(f),
            None => self
                .container_extension()
                .and_then(|e| format::container(&e)),
        };
        let (model, _) = self.open_input(input.as_ref(), container)?;
        self.plan_files(model, None)
    }

    /// Opens the input, through a converter registered for the output container when
    /// one recognises the model folder; also returns the converters' warnings.
    pub(in crate::engine) fn open_input(
        &self,
        input: &Path,
        container: Option<&ContainerEntry>,
    ) -> Result<(ModelFiles, Vec<String>)> {
        let model = ModelFiles::open(input)?;
        let mut warnings = Vec::new();
        let (Some(c), Some(config), true) = (container, &model.config, model.is_dir) else {
            return Ok((model, warnings));
        };
        for conv in format::converters(c.name) {
            match (conv.open)(&model.root, config)? {
                format::Converted::Reader(reader) => {
                    let name = PathBuf::from(format!("{}.{}", conv.name, c.name));
                    let converted = ModelFiles {
                        root: model.root.clone(),
                        is_dir: true,
                        shards: vec![(name, reader)],
                        config: model.config.clone(),
                        other_files: Vec::new(),
                    };
                    return Ok((converted, warnings));
                }
                format::Converted::Unknown { warning } => warnings.push(warning),
            }
        }
        Ok((model, warnings))
    }

    /// Plans an opened model for `output` (kind and path; `None`: a dry run, the files
    /// named as the input's).
    pub(in crate::engine) fn plan_files(
        &self,
        model: ModelFiles,
        output: Option<(Output, &Path)>,
    ) -> Result<(ModelFiles, Plan)> {
        let mut metadata = BTreeMap::new();
        for (_, r) in &model.shards {
            for (k, v) in r.metadata() {
                metadata.entry(k).or_insert(v);
            }
        }
        let records: Vec<(usize, TensorRecord)> =
            model.records().map(|(i, r)| (i, r.clone())).collect();
        let values = |e: &PlanEntry| -> Result<Vec<f32>> {
            let (_, reader) = model
                .shards
                .get(e.shard)
                .ok_or_else(|| Error::tensor(&model.root, &e.name, "shard index out of range"))?;
            source_values(reader.as_ref(), e)
        };
        let mut plan = self
            .plan_model(&records, &metadata, Some(&values))
            .map_err(|e| e.with_path(&model.root))?;
        self.assign_files(&mut plan, &model, output)?;
        Ok((model, plan))
    }

    /// Names the output files and puts each entry in one: a folder output keeps the
    /// input's shards (as `.safetensors`) or, with a maximum shard size, is split by size
    /// as transformers' `save_pretrained` splits; a container output is one file, or
    /// split by its format's convention; a single file holds everything.
    pub(super) fn assign_files(
        &self,
        plan: &mut Plan,
        model: &ModelFiles,
        output: Option<(Output, &Path)>,
    ) -> Result<()> {
        let file_name = |p: &Path| PathBuf::from(p.file_name().unwrap_or(p.as_os_str()));
        match (output, self.max_shard_size, self.split) {
            (Some((Output::Folder, _)), Some(max), _) => {
                shard_by_size(plan, max, &shard_prefix(model))
            }
            (None | Some((Output::Folder, _)), _, _) => {
                plan.files = model
                    .shards
                    .iter()
                    .map(|(rel, _)| {
                        let mut rel = rel.clone();
                        if output.is_some() && rel.extension().is_some_and(|e| e != "safetensors") {
                            rel.set_extension("safetensors");
                        }
                        rel
                    })
                    .collect();
                for e in &mut plan.entries {
                    e.file = e.shard;
                }
            }
            (Some((Output::Container(c), p)), _, Some(limits)) => {
                let split = c.split.ok_or_else(|| Error::Config {
                    source_name: p.display().to_string(),
                    entry: "split".into(),
                    reason: format!("{} files cannot be split", c.name),
                })?;
                let all: Vec<usize> = (0..plan.entries.len()).collect();
                let (files, file_of) = split(p, &plan.planned_outputs(&all), &limits)?;
                plan.files = files.iter().map(|f| file_name(f)).collect();
                for (e, f) in plan.entries.iter_mut().zip(file_of) {
                    e.file = f;
                }
            }
            (Some((Output::File | Output::Container(_), p)), _, _) => {
                plan.files = vec![file_name(p)];
                for e in &mut plan.entries {
                    e.file = 0;
                }
            }
        }
        Ok(())
    }
}

/// The stem of a folder's weight files (`model` for `model-00001-of-00002.safetensors`,
/// `diffusion_pytorch_model` for diffusers); `model` for a single-file input.
fn shard_prefix(model: &ModelFiles) -> String {
    let first = model.shards.first().filter(|_| model.is_dir);
    let Some((rel, _)) = first else {
        return "model".into();
    };
    let stem = rel
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = match stem.rsplit_once("-of-") {
        Some((head, _)) => head.rsplit_once('-').map(|(b, _)| b).unwrap_or(head),
        None => stem.as_str(),
    };
    if base.is_empty() {
        "model".into()
    } else {
        base.to_string()
    }
}

/// Splits the plan's entries (in plan order, each logical tensor whole) into files of at
/// most `max` bytes as huggingface_hub's `split_state_dict_into_shards` does: a tensor
/// larger than `max` gets a file of its own at once, and a file is closed when the next
/// tensor would take it over `max`. One file is `{prefix}.safetensors`; several are
/// `{prefix}-0000K-of-0000N.safetensors`.
fn shard_by_size(plan: &mut Plan, max: u64, prefix: &str) {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut size = 0u64;
    for (i, e) in plan.entries.iter().enumerate() {
        if e.bytes_out > max {
            groups.push(vec![i]);
            continue;
        }
        if size + e.bytes_out > max && !current.is_empty() {
            groups.push(std::mem::take(&mut current));
            size = 0;
        }
        current.push(i);
        size += e.bytes_out;
    }
    if !current.is_empty() || groups.is_empty() {
        groups.push(current);
    }
    let n = groups.len();
    plan.files = (1..=n)
        .map(|k| {
            PathBuf::from(if n == 1 {
                format!("{prefix}.safetensors")
            } else {
                format!("{prefix}-{k:05}-of-{n:05}.safetensors")
            })
        })
        .collect();
    for (f, group) in groups.iter().enumerate() {
        for &i in group {
            if let Some(e) = plan.entries.get_mut(i) {
                e.file = f;
            }
        }
    }
}

/// Values of a planned tensor's source, dequantized when it is stored quantized.
pub(in crate::engine) fn source_values(
    reader: &dyn ContainerReader,
    e: &PlanEntry,
) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    source_values_into(reader, e, &mut out)?;
    Ok(out)
}

/// [`source_values`] into `out`, reusing its allocation where the source can.
pub(in crate::engine) fn source_values_into(
    reader: &dyn ContainerReader,
    e: &PlanEntry,
    out: &mut Vec<f32>,
) -> Result<()> {
    if let Some(done) = reader.f32_values_into(&e.name, out) {
        return done;
    }
    if let Some(src) = reader.source(&e.name) {
        return src.to_f32_into(out);
    }
    let q = reader.read(&e.name)?;
    dequantize_into(&q, out)
}
