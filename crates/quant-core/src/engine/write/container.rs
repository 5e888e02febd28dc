//! The writer for a registered container (GGUF): the backend's writer gets the planned
//! tensors, the file-level metadata and the input's reader, then each tensor in order;
//! a split output is one such file per split, each told its place among them.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::worker::{staging_for, Share};
use super::{output_parent, Writer};
use crate::engine::configure::ModelQuantizer;
use crate::error::{Error, Result};
use crate::format::{ContainerEntry, META_SPLIT_COUNT, META_SPLIT_NO, META_SPLIT_TENSORS};
use crate::load::ModelFiles;
use crate::plan::Plan;

/// A registered container's file, or the files of a split output.
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
        let dir = output_parent(dest)?;
        let info = dest.with_extension("quantization_info.json");
        let mut share = match q.worker {
            Some(w) => Some(Share::begin(w, staging_for(dest, false), dir, plan)?),
            None => None,
        };
        let mut outputs = Vec::new();
        for (f, rel) in plan.files.iter().enumerate() {
            if share.as_ref().is_some_and(|s| !s.owns(f)) {
                continue;
            }
            let path = dir.join(rel);
            if plan.files.len() > 1 && q.worker.is_none() && path.exists() && !q.force {
                return Err(Error::OutputExists { path });
            }
            q.write_container(self.0, model, plan, f, &path)?;
            if let Some(s) = share.as_mut() {
                s.wrote(plan, f)?;
            }
            outputs.push(path);
        }
        match share {
            Some(s) => s.finish(plan, |tie| {
                let name = info.file_name().map(PathBuf::from).unwrap_or_default();
                q.write_info(&tie.join(name), plan, start)
            })?,
            None => q.write_info(&info, plan, start)?,
        }
        Ok(outputs)
    }
}

impl ModelQuantizer {
    /// Writes output file `file` of `plan` (all of it for a single file) to `dest`.
    fn write_container(
        &self,
        c: &'static ContainerEntry,
        model: &ModelFiles,
        plan: &Plan,
        file: usize,
        dest: &Path,
    ) -> Result<()> {
        let idx = plan.entries_of(file);
        let planned = plan.planned_outputs(&idx);
        let mut metadata = self.base_metadata(plan);
        for (_, r) in &model.shards {
            for (k, v) in r.metadata() {
                metadata.entry(format!("source.{k}")).or_insert(v);
            }
        }
        if let Some(cfg) = &model.config {
            metadata.insert("source.config.json".into(), cfg.to_string());
        }
        if plan.files.len() > 1 {
            metadata.insert(META_SPLIT_NO.into(), file.to_string());
            metadata.insert(META_SPLIT_COUNT.into(), plan.files.len().to_string());
            metadata.insert(META_SPLIT_TENSORS.into(), plan.entries.len().to_string());
        }
        let source = match model.shards.as_slice() {
            [(_, r)] => Some(r.as_ref()),
            _ => None,
        };
        let mut w = (c.create)(dest, &planned, &metadata, source)?;
        let mut scratch = Vec::new();
        for e in idx.iter().filter_map(|&i| plan.entries.get(i)) {
            self.tick(e);
            let Some((_, reader)) = model.shards.get(e.shard) else {
                return Err(Error::tensor(
                    &model.root,
                    &e.name,
                    "shard index out of range",
                ));
            };
            let q = self
                .produce(plan, reader.as_ref(), e, &mut scratch)
                .map_err(|err| err.with_path(&model.root))?;
            w.write(&q)?;
        }
        w.finish()
    }
}
