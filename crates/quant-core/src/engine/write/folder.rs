//! The folder writer: a model folder mirrored (its weight files, the index,
//! `config.json` with its `quantization_config`, sidecar files and the rest of the
//! folder). A whole run assembles it under a temporary name and renames it into place; a
//! worker (`--shard I/N`) writes its own weight files into the shared folder and leaves
//! what ties them together in a staging folder for [`merge`](crate::engine::merge).

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::metadata::{merge_files, write_json};
use super::worker::{staging_for, Share};
use super::{output_parent, Writer};
use crate::engine::configure::{ModelQuantizer, Worker};
use crate::error::{Error, Result};
use crate::load::ModelFiles;
use crate::plan::{Plan, PlanEntry};
use crate::safetensors_io::{
    clean_stale_temps, index_name_for, rename_durable, temp_path_for, AtomicFile,
};

/// A folder mirroring a model folder.
pub(super) struct Folder;

impl Writer for Folder {
    fn write(
        &self,
        q: &ModelQuantizer,
        model: &ModelFiles,
        plan: &Plan,
        dest: &Path,
        start: Instant,
    ) -> Result<Vec<PathBuf>> {
        output_parent(dest)?;
        match q.worker {
            None => q.write_whole_folder(model, plan, dest, start),
            Some(w) => q.write_worker_share(model, plan, dest, start, w),
        }
    }
}

impl ModelQuantizer {
    fn write_whole_folder(
        &self,
        model: &ModelFiles,
        plan: &Plan,
        dest: &Path,
        start: Instant,
    ) -> Result<Vec<PathBuf>> {
        clean_stale_temps(dest);
        let tmp = temp_path_for(dest);
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let guard = TempDirGuard(tmp.clone());
        let mut outputs = Vec::new();
        for (f, rel) in plan.files.iter().enumerate() {
            self.write_shard(model, plan, &plan.entries_of(f), &tmp.join(rel))?;
            outputs.push(dest.join(rel));
        }
        self.write_tie_files(model, plan, &tmp, start)?;
        if dest.exists() {
            if !self.force {
                return Err(Error::OutputExists {
                    path: dest.to_path_buf(),
                });
            }
            let r = if dest.is_dir() {
                std::fs::remove_dir_all(dest)
            } else {
                std::fs::remove_file(dest)
            };
            r.map_err(|e| Error::io(dest, e))?;
        }
        rename_durable(&tmp, dest)?;
        std::mem::forget(guard);
        Ok(outputs)
    }

    /// Writes the weight files worker `w` owns straight into `dest` (each atomically, so
    /// a rerun replaces only its own), then stages the tie files and its manifest.
    fn write_worker_share(
        &self,
        model: &ModelFiles,
        plan: &Plan,
        dest: &Path,
        start: Instant,
        w: Worker,
    ) -> Result<Vec<PathBuf>> {
        let mut share = Share::begin(w, staging_for(dest, true), dest, plan)?;
        let mut outputs = Vec::new();
        for (f, rel) in plan.files.iter().enumerate() {
            if share.owns(f) {
                let path = dest.join(rel);
                self.write_shard(model, plan, &plan.entries_of(f), &path)?;
                share.wrote(plan, f)?;
                outputs.push(path);
            }
        }
        share.finish(plan, |dir| self.write_tie_files(model, plan, dir, start))?;
        Ok(outputs)
    }

    /// Everything of a folder output but the weight files: the index (several files),
    /// the folder's other files, `config.json` with `quantization_config`, the methods'
    /// sidecar files and `quantization_info.json`.
    fn write_tie_files(
        &self,
        model: &ModelFiles,
        plan: &Plan,
        dir: &Path,
        start: Instant,
    ) -> Result<()> {
        // Sharded outputs keep an index naming the new keys.
        if plan.files.len() > 1 {
            let mut weight_map = serde_json::Map::new();
            for (f, rel) in plan.files.iter().enumerate() {
                for i in plan.entries_of(f) {
                    for l in &plan.entries[i].layout {
                        weight_map.insert(
                            l.key.clone(),
                            serde_json::Value::String(rel.to_string_lossy().into_owned()),
                        );
                    }
                }
            }
            let total: u64 = plan.bytes_out();
            let index =
                serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
            let name = plan
                .files
                .first()
                .map(|r| index_name_for(r))
                .unwrap_or_else(|| "model.safetensors.index.json".into());
            write_json(&dir.join(name), &index)?;
        }
        let all: Vec<&PlanEntry> = plan.entries.iter().collect();
        let artifacts = self.artifacts_for(plan, &all)?;
        for f in &model.other_files {
            if f.as_os_str() == "config.json" {
                continue;
            }
            let from = model.root.join(f);
            std::fs::copy(&from, dir.join(f)).map_err(|e| Error::io(&from, e))?;
        }
        let qc = artifacts
            .iter()
            .find(|(m, _)| *m == plan.resolved.effective)
            .or(artifacts.first())
            .and_then(|(_, a)| a.quantization_config.clone());
        if let Some(mut cfg) = model.config.clone() {
            if let (Some(obj), Some(qc)) = (cfg.as_object_mut(), qc) {
                obj.insert("quantization_config".into(), qc);
            }
            write_json(&dir.join("config.json"), &cfg)?;
        }
        for (name, bytes) in merge_files(&artifacts) {
            let p = dir.join(name);
            let mut f = AtomicFile::create(&p)?;
            f.write_all(&bytes)?;
            f.commit()?;
        }
        self.write_info(&dir.join("quantization_info.json"), plan, start)
    }
}

/// Removes a temporary output folder unless forgotten.
struct TempDirGuard(PathBuf);

impl Drop for TempDirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
