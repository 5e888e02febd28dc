//! The writer for a registered container (GGUF): the backend's writer gets the planned
//! tensors, the file-level metadata and the input's reader, then each tensor in order.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::Writer;
use crate::engine::configure::ModelQuantizer;
use crate::error::{Error, Result};
use crate::format::{ContainerEntry, PlannedOutput};
use crate::load::ModelFiles;
use crate::plan::Plan;

/// One file of a registered container.
pub(super) struct ContainerFile(pub(super) &'static ContainerEntry);

impl Writer for ContainerFile {
    fn write(
        &self,
        q: &ModelQuantizer,
        model: &ModelFiles,
        plan: &Plan,
        dest: &Path,
        start: Instant,
    ) -> Result<Vec<PathBuf>> {
        q.write_container(self.0, model, plan, dest)?;
        let info = dest.with_extension("quantization_info.json");
        q.write_info(&info, plan, start)?;
        Ok(vec![dest.to_path_buf()])
    }
}

impl ModelQuantizer {
    fn write_container(
        &self,
        c: &'static ContainerEntry,
        model: &ModelFiles,
        plan: &Plan,
        dest: &Path,
    ) -> Result<()> {
        let planned: Vec<PlannedOutput> = plan
            .entries
            .iter()
            .map(|e| PlannedOutput {
                meta: e.meta.clone(),
                method: e.method.clone(),
                params: e
                    .method
                    .as_deref()
                    .and_then(|m| plan.method(m))
                    .map(|m| m.params())
                    .unwrap_or_default(),
                layout: e.layout.clone(),
                fallback: if e.is_fallback { e.note.clone() } else { None },
            })
            .collect();
        let mut metadata = self.base_metadata(plan);
        for (_, r) in &model.shards {
            for (k, v) in r.metadata() {
                metadata.entry(format!("source.{k}")).or_insert(v);
            }
        }
        if let Some(cfg) = &model.config {
            metadata.insert("source.config.json".into(), cfg.to_string());
        }
        let source = match model.shards.as_slice() {
            [(_, r)] => Some(r.as_ref()),
            _ => None,
        };
        let mut w = (c.create)(dest, &planned, &metadata, source)?;
        for e in &plan.entries {
            let Some((_, reader)) = model.shards.get(e.shard) else {
                return Err(Error::tensor(
                    &model.root,
                    &e.name,
                    "shard index out of range",
                ));
            };
            let q = self
                .produce(plan, reader.as_ref(), e)
                .map_err(|err| err.with_path(&model.root))?;
            w.write(&q)?;
        }
        w.finish()
    }
}
