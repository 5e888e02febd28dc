//! A worker's bookkeeping for `--shard I/N`: which output files it owns, the manifest it
//! leaves when its share is complete, and the staged files merge moves into place.

use std::path::{Path, PathBuf};

use super::metadata::write_json;
use crate::engine::configure::Worker;
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::safetensors_io::{clean_stale_temps, rename_durable, temp_path_for};

/// The staging folder of a folder output (inside it).
pub(in crate::engine) const FOLDER_STAGING: &str = ".quant-merge";

/// Where the workers of output `dest` leave manifests and tie files: inside a folder
/// output, beside a single-file (container) output as `<name>.quant-merge`.
pub(in crate::engine) fn staging_for(dest: &Path, folder: bool) -> PathBuf {
    if folder {
        dest.join(FOLDER_STAGING)
    } else {
        let mut name = dest.file_name().unwrap_or(dest.as_os_str()).to_os_string();
        name.push(FOLDER_STAGING);
        dest.with_file_name(name)
    }
}

/// The manifest a worker leaves when its share is complete.
pub(in crate::engine) fn manifest_name(w: Worker) -> String {
    format!("worker-{}-of-{}.json", w.index, w.count)
}

/// One worker's share of a run: `root` is the folder the output files go into.
pub(super) struct Share<'a> {
    w: Worker,
    staging: PathBuf,
    root: &'a Path,
    files: Vec<serde_json::Value>,
}

impl<'a> Share<'a> {
    /// Starts worker `w`'s share: withdraws its old manifest (until the new one is
    /// written, merge sees it as unfinished) and removes the files that manifest listed
    /// that this plan does not have (left by a run with other settings).
    pub(super) fn begin(w: Worker, staging: PathBuf, root: &'a Path, plan: &Plan) -> Result<Self> {
        std::fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
        let manifest = staging.join(manifest_name(w));
        if manifest.exists() {
            let old: serde_json::Value = std::fs::read(&manifest)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            let stale = old["files"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| {
                    let name = Path::new(f["name"].as_str()?);
                    let ours =
                        name.components().count() == 1 && !plan.files.iter().any(|p| p == name);
                    ours.then(|| root.join(name))
                });
            for path in stale {
                if path.is_file() {
                    std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                }
            }
            std::fs::remove_file(&manifest).map_err(|e| Error::io(&manifest, e))?;
        }
        Ok(Share {
            w,
            staging,
            root,
            files: Vec::new(),
        })
    }

    /// Whether output file `f` is this worker's to write.
    pub(super) fn owns(&self, f: usize) -> bool {
        self.w.owns(f)
    }

    /// Records output file `f` of `plan` as written (its size and the keys it holds).
    pub(super) fn wrote(&mut self, plan: &Plan, f: usize) -> Result<()> {
        let Some(rel) = plan.files.get(f) else {
            return Ok(());
        };
        let path = self.root.join(rel);
        let bytes = std::fs::metadata(&path)
            .map_err(|e| Error::io(&path, e))?
            .len();
        let keys: Vec<&str> = plan
            .entries_of(f)
            .into_iter()
            .flat_map(|i| plan.entries[i].layout.iter().map(|l| l.key.as_str()))
            .collect();
        self.files.push(serde_json::json!({
            "name": rel.to_string_lossy(),
            "bytes": bytes,
            "keys": keys,
        }));
        Ok(())
    }

    /// Stages the tie files (written by `tie` into a fresh folder), then writes the
    /// manifest that marks this worker's share complete.
    pub(super) fn finish(self, plan: &Plan, tie: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        let dir = self.staging.join(format!("tie-{}", self.w.index));
        clean_stale_temps(&dir);
        let tmp = temp_path_for(&dir);
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let written = tie(&tmp).and_then(|()| {
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            }
            rename_durable(&tmp, &dir)
        });
        if written.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        written?;
        let manifest = serde_json::json!({
            "worker": self.w.index,
            "workers": self.w.count,
            "plan": plan_signature(plan),
            "files": self.files,
        });
        write_json(&self.staging.join(manifest_name(self.w)), &manifest)
    }
}

/// What every worker of one run agrees on: each output file and, per tensor, its file,
/// method and stored parts.
fn plan_signature(plan: &Plan) -> serde_json::Value {
    let entries: Vec<serde_json::Value> = plan
        .entries
        .iter()
        .map(|e| {
            let parts: Vec<String> = e
                .layout
                .iter()
                .map(|l| format!("{} {} {:?}", l.key, l.dtype, l.shape))
                .collect();
            serde_json::json!([e.name, e.file, e.method, parts])
        })
        .collect();
    serde_json::json!({
        "files": plan.files.iter().map(|f| f.to_string_lossy()).collect::<Vec<_>>(),
        "tensors": entries,
    })
}
