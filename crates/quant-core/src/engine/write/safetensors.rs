//! The safetensors writer: one file with quant's records in its header, unquantized
//! tensors and elementwise casts streamed from the mapped input in chunks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::metadata::merge_metadata;
use super::{output_parent, Writer};
use crate::dtype::encode_f32;
use crate::engine::configure::ModelQuantizer;
use crate::error::{Error, Result};
use crate::load::{ModelFiles, META_TENSORS};
use crate::method::{PartLayout, TensorRecord};
use crate::plan::{Action, Plan, PlanEntry};
use crate::safetensors_io::SafetensorsWriter;

/// One safetensors file holding every tensor.
pub(super) struct SafetensorsFile;

impl Writer for SafetensorsFile {
    fn write(
        &self,
        q: &ModelQuantizer,
        model: &ModelFiles,
        plan: &Plan,
        dest: &Path,
        start: Instant,
    ) -> Result<Vec<PathBuf>> {
        output_parent(dest)?;
        q.write_shard(model, plan, &plan.entries_of(0), dest)?;
        let stem = dest
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let info = dest.with_file_name(format!("{stem}.quantization_info.json"));
        q.write_info(&info, plan, start)?;
        Ok(vec![dest.to_path_buf()])
    }
}

impl ModelQuantizer {
    /// Writes the entries `idx` of `plan` into the safetensors file `dest`.
    pub(super) fn write_shard(
        &self,
        model: &ModelFiles,
        plan: &Plan,
        idx: &[usize],
        dest: &Path,
    ) -> Result<()> {
        let entries: Vec<&PlanEntry> = idx.iter().filter_map(|&i| plan.entries.get(i)).collect();
        let layouts: Vec<PartLayout> = entries
            .iter()
            .flat_map(|e| e.layout.iter().cloned())
            .collect();
        // Every shard carries the file-level metadata of the whole model, as transformers'
        // save_pretrained writes it (torchao's loaders read `tensor_names` of one shard).
        let all: Vec<&PlanEntry> = plan.entries.iter().collect();
        let artifacts = self.artifacts_for(plan, &all)?;
        let mut metadata = self.base_metadata(plan);
        merge_metadata(&mut metadata, &artifacts);
        let mut records: Vec<TensorRecord> = entries
            .iter()
            .map(|e| self.planned_record(plan, e))
            .collect();
        let with_records = |records: &[TensorRecord]| -> Result<BTreeMap<String, String>> {
            let mut md = metadata.clone();
            md.insert(
                META_TENSORS.into(),
                serde_json::to_string(records)
                    .map_err(|e| Error::file(dest, "json", e.to_string()))?,
            );
            Ok(md)
        };
        // Room for each record's dequant dtype to change by a few characters.
        let reserve = 16 * records.len() + 64;
        let mut w = SafetensorsWriter::create_with_reserve(
            dest,
            layouts,
            &with_records(&records)?,
            reserve,
        )?;
        let mut scratch = Vec::new();
        for (k, e) in entries.iter().enumerate() {
            self.tick(e);
            let Some((_, reader)) = model.shards.get(e.shard) else {
                return Err(Error::tensor(
                    &model.root,
                    &e.name,
                    "shard index out of range",
                ));
            };
            // Unquantized tensors and elementwise casts stream from the mapped input in
            // chunks: nothing of their size is held in memory.
            let cast = match e.action {
                Action::Quantize => plan
                    .instance(e)
                    .and_then(|m| m.elementwise_cast())
                    .filter(|_| e.layout.len() == 1),
                _ => e.layout.first().map(|l| l.dtype),
            };
            if let (false, Some(src), Some(dtype)) = (e.requantize, reader.source(&e.name), cast) {
                if e.action == Action::Keep {
                    w.write_with(&e.name, |out| src.write_bytes(out))?;
                } else {
                    let check = e.action == Action::Quantize && !self.allow_nonfinite;
                    let mut seen = 0usize;
                    let mut bad = None;
                    let res = w.write_with(&e.name, |out| {
                        src.for_each_f32_chunk(1 << 20, &mut |v| {
                            if check {
                                if let Some((i, x)) =
                                    v.iter().enumerate().find(|(_, x)| !x.is_finite())
                                {
                                    bad = Some((seen + i, *x));
                                    return Err(Error::tensor("", &e.name, "non-finite value"));
                                }
                            }
                            seen += v.len();
                            let bytes = encode_f32(dtype, v)?;
                            out.write_all(&bytes).map_err(|err| Error::io("", err))
                        })
                        .map_err(std::io::Error::other)
                    });
                    if let Some((index, value)) = bad {
                        return Err(Error::NonFinite {
                            tensor: e.name.clone(),
                            index,
                            value,
                        });
                    }
                    res?;
                    if let Some(r) = records.get_mut(k) {
                        r.dequant_dtype = dtype;
                    }
                }
                continue;
            }
            let q = self
                .produce(plan, reader.as_ref(), e, &mut scratch)
                .map_err(|err| err.with_path(&model.root))?;
            for part in &q.parts {
                w.write_part(part)?;
            }
            if let Some(r) = records.get_mut(k) {
                r.dequant_dtype = q.record.dequant_dtype;
                r.params = q.record.params.clone();
            }
        }
        w.finish_with_metadata(&with_records(&records)?)
    }
}
