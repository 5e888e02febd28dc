//! After the write stage of `--shard I/N` workers: checks that every worker finished the
//! same plan and that each weight file is the one planned, then moves what ties the
//! files together (index, `config.json`, sidecar files, `quantization_info.json`) into
//! the output folder.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::write::worker::staging_for;
use crate::error::{Error, Result};
use crate::load::ModelFiles;
use crate::progress::{Meter, Progress};
use crate::safetensors_io::rename_durable;

/// What [`merge`] did.
#[derive(Clone, Debug)]
pub struct Merged {
    /// How many workers shared the run.
    pub workers: usize,
    /// The weight files checked, relative to the output folder.
    pub files: Vec<PathBuf>,
    /// The files moved into place.
    pub tied: Vec<PathBuf>,
}

/// One worker's manifest.
struct Manifest {
    worker: usize,
    workers: usize,
    plan: serde_json::Value,
    files: Vec<(String, u64, BTreeSet<String>)>,
}

fn parse_manifest(path: &Path) -> Result<Manifest> {
    let bad = |why: &str| Error::file(path, "worker manifest", why.to_string());
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::file(path, "json", e.to_string()))?;
    let num = |k: &str| {
        v[k].as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| bad(&format!("'{k}' is not a number")))
    };
    let mut files = Vec::new();
    for f in v["files"]
        .as_array()
        .ok_or_else(|| bad("no 'files' list"))?
    {
        let name = f["name"]
            .as_str()
            .ok_or_else(|| bad("a file without a name"))?;
        let bytes = f["bytes"]
            .as_u64()
            .ok_or_else(|| bad("a file without bytes"))?;
        let keys = f["keys"]
            .as_array()
            .ok_or_else(|| bad("a file without keys"))?
            .iter()
            .filter_map(|k| k.as_str().map(String::from))
            .collect();
        files.push((name.to_string(), bytes, keys));
    }
    Ok(Manifest {
        worker: num("worker")?,
        workers: num("workers")?,
        plan: v["plan"].clone(),
        files,
    })
}

/// Ties together an output folder written by `--shard I/N` workers: refuses a set with
/// a missing worker, a worker of another plan, or a weight file that is missing, of the
/// wrong size or holding other tensors (naming them); then moves the staged index,
/// `config.json`, sidecar files and `quantization_info.json` into `out`. The result is
/// the folder one run without workers writes.
pub fn merge(out: &Path) -> Result<Merged> {
    merge_with_progress(out, None)
}

/// [`merge`], reporting each weight file checked to `progress`.
pub fn merge_with_progress(out: &Path, progress: Option<Progress>) -> Result<Merged> {
    // A folder output holds its staging folder; a split container output has it beside
    // the output name, and its files beside it too.
    let (staging, root) = if staging_for(out, true).is_dir() {
        (staging_for(out, true), out.to_path_buf())
    } else {
        let root = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        (staging_for(out, false), root)
    };
    if !staging.is_dir() {
        return Err(Error::file(
            out,
            "merge",
            "no worker output here (no .quant-merge staging folder: nothing to merge, or already merged)",
        ));
    }
    let mut manifests: BTreeMap<usize, Manifest> = BTreeMap::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&staging)
        .map_err(|e| Error::io(&staging, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with("worker-") && name.ends_with(".json") {
            let m = parse_manifest(&p)?;
            manifests.insert(m.worker, m);
        }
    }
    let Some(first) = manifests.values().next() else {
        return Err(Error::file(
            out,
            "merge",
            "no worker has finished yet (no manifest in .quant-merge)",
        ));
    };
    let workers = first.workers;
    for m in manifests.values() {
        if m.workers != workers || m.plan != first.plan {
            return Err(Error::file(
                out,
                "merge",
                format!(
                    "worker {} of {} ran another plan than worker {} of {workers} (other settings or input): rerun it",
                    m.worker, m.workers, first.worker
                ),
            ));
        }
    }
    let missing: Vec<String> = (0..workers)
        .filter(|i| !manifests.contains_key(i))
        .map(|i| format!("{i}/{workers}"))
        .collect();
    if !missing.is_empty() {
        return Err(Error::file(
            out,
            "merge",
            format!("workers not finished: {}", missing.join(", ")),
        ));
    }
    let planned: BTreeSet<String> = first.plan["files"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let mut problems = Vec::new();
    let mut files = Vec::new();
    let count = manifests.values().map(|m| m.files.len() as u64).sum();
    let size = manifests
        .values()
        .flat_map(|m| m.files.iter().map(|f| f.1))
        .sum();
    let meter = Meter::new(progress, "", count, size);
    for m in manifests.values() {
        for (name, bytes, keys) in &m.files {
            meter.step(name, *bytes);
            let path = root.join(name);
            match std::fs::metadata(&path) {
                Err(_) => problems.push(format!("{name}: missing (worker {})", m.worker)),
                Ok(md) if md.len() != *bytes => problems.push(format!(
                    "{name}: {} bytes, worker {} wrote {bytes} (replaced or incomplete)",
                    md.len(),
                    m.worker
                )),
                Ok(_) => {
                    let held: BTreeSet<String> = ModelFiles::open(&path)?
                        .records()
                        .flat_map(|(_, r)| r.parts.iter().cloned())
                        .collect();
                    if &held != keys {
                        problems.push(format!(
                            "{name}: holds other tensors than worker {} planned (a foreign shard)",
                            m.worker
                        ));
                    }
                }
            }
            files.push(PathBuf::from(name));
        }
    }
    let written: BTreeSet<String> = files
        .iter()
        .map(|f| f.to_string_lossy().into_owned())
        .collect();
    for f in planned.difference(&written) {
        problems.push(format!("{f}: planned but no worker wrote it"));
    }
    // Weight files of this output's naming that the plan does not have.
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = out
        .extension()
        .map(|s| format!(".{}", s.to_string_lossy()))
        .unwrap_or_default();
    let stray = |name: &str| -> bool {
        if root == out {
            name.ends_with(".safetensors")
        } else {
            name.starts_with(&format!("{stem}-")) && name.ends_with(&ext) && name.contains("-of-")
        }
    };
    for e in std::fs::read_dir(&root)
        .map_err(|e| Error::io(&root, e))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if stray(&name) && !planned.contains(&name) {
            problems.push(format!("{name}: not in the plan (a foreign shard)"));
        }
    }
    meter.end();
    if !problems.is_empty() {
        return Err(Error::file(out, "merge", problems.join("; ")));
    }
    let tie = staging.join(format!("tie-{}", first.worker));
    let mut tied = Vec::new();
    let mut staged: Vec<PathBuf> = std::fs::read_dir(&tie)
        .map_err(|e| Error::io(&tie, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    staged.sort();
    for from in staged {
        let Some(name) = from.file_name().map(PathBuf::from) else {
            continue;
        };
        rename_durable(&from, &root.join(&name))?;
        tied.push(name);
    }
    std::fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    Ok(Merged {
        workers,
        files,
        tied,
    })
}
