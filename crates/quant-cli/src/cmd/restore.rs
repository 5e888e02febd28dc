//! `quant dequantize` into folders the libraries load: a model folder (config.json without
//! `quantization_config`, the other files carried, shards and index like the input) and a
//! pipeline folder (each weight component restored so, the rest copied).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quant::method::PlannedTensor;
use quant::safetensors_io::{
    clean_stale_temps, index_name_for, rename_durable, temp_path_for, AtomicFile,
};
use quant::{DType, Error, ModelFiles, Pipeline, Registry, Result, TensorMeta, TensorRecord};

use super::dequantize::{restored_bytes, write_tensors};
use crate::progress::Reporter;

/// Restores the model folder (or single file) `model` into the new folder `out`; returns
/// the tensors written.
pub fn folder(
    model: &ModelFiles,
    out: &Path,
    dt: DType,
    force: bool,
    reporter: &Arc<Reporter>,
) -> Result<usize> {
    in_temp_dir(out, force, |tmp| {
        restore_into(model, tmp, dt, reporter.meter_for(model, dt, ""))
    })
}

/// Restores the pipeline folder `input` into the new folder `out`: weight components
/// restored as [`folder`] does, every other file and folder copied; returns the tensors
/// written.
pub fn pipeline(
    input: &Path,
    out: &Path,
    dt: DType,
    force: bool,
    reporter: &Arc<Reporter>,
) -> Result<usize> {
    let pipe = Pipeline::open(input)?;
    in_temp_dir(out, force, |tmp| {
        copy_files(input, tmp)?;
        let mut count = 0;
        for c in pipe.components() {
            let dest = tmp.join(&c.name);
            if c.has_weights {
                std::fs::create_dir(&dest).map_err(|e| Error::io(&dest, e))?;
                let model = ModelFiles::open(&c.path)?;
                count += restore_into(&model, &dest, dt, reporter.meter_for(&model, dt, &c.name))?;
            } else {
                copy_dir(&c.path, &dest)?;
            }
        }
        Ok(count)
    })
}

impl Reporter {
    /// A meter over every tensor of `model` restored in `dt`, reporting under `scope`.
    fn meter_for(
        self: &Arc<Self>,
        model: &ModelFiles,
        dt: DType,
        scope: &str,
    ) -> quant::progress::Meter {
        let records: Vec<&TensorRecord> = model.records().map(|(_, r)| r).collect();
        let hook = self.hook().map(|h| quant::progress::scoped(&h, scope));
        quant::progress::Meter::new(hook, "", records.len() as u64, restored_bytes(&records, dt))
    }
}

/// Writes the restored weight files of `model` into the existing folder `dir`, with an
/// index when there are several, `config.json` without `quantization_config` and the
/// model's other files.
fn restore_into(
    model: &ModelFiles,
    dir: &Path,
    dt: DType,
    meter: quant::progress::Meter,
) -> Result<usize> {
    let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let mut weight_map = serde_json::Map::new();
    let mut total = 0u64;
    let mut count = 0;
    let names = shard_names(model);
    for ((_, reader), name) in model.shards.iter().zip(&names) {
        let records: Vec<&TensorRecord> = reader.records().iter().collect();
        total += write_tensors(model, &records, &dir.join(name), dt, &metadata, &meter)?;
        for r in &records {
            weight_map.insert(r.name.clone(), serde_json::Value::String(name.clone()));
        }
        count += records.len();
    }
    meter.end();
    if names.len() > 1 {
        let index =
            serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        let index_name = names
            .first()
            .map(|n| index_name_for(Path::new(n)))
            .unwrap_or_else(|| "model.safetensors.index.json".into());
        write_json(&dir.join(index_name), &index)?;
    }
    if let Some(mut cfg) = model.config.clone() {
        if let Some(obj) = cfg.as_object_mut() {
            obj.remove("quantization_config");
            for key in ["torch_dtype", "dtype"] {
                if obj.contains_key(key) {
                    obj.insert(key.into(), dt.torch_name().into());
                }
            }
        }
        write_json(&dir.join("config.json"), &cfg)?;
    }
    let sidecars = sidecar_files(model)?;
    for f in &model.other_files {
        let name = f.to_string_lossy();
        if name == "config.json" || is_info(f) || sidecars.contains(name.as_ref()) {
            continue;
        }
        let from = model.root.join(f);
        std::fs::copy(&from, dir.join(f)).map_err(|e| Error::io(&from, e))?;
    }
    Ok(count)
}

/// The files the methods of `model` write beside its weights (optimum-quanto's
/// `quanto_qmap.json`): part of the quantized model, not of the restored one.
fn sidecar_files(model: &ModelFiles) -> Result<BTreeSet<String>> {
    let mut by_method: BTreeMap<(String, String), (&TensorRecord, Vec<PlannedTensor>)> =
        BTreeMap::new();
    for (_, r) in model.records() {
        let Some(m) = &r.method else { continue };
        let key = (
            m.clone(),
            serde_json::Value::Object(r.params.clone()).to_string(),
        );
        by_method
            .entry(key)
            .or_insert((r, Vec::new()))
            .1
            .push(PlannedTensor {
                meta: TensorMeta::new(&r.name, r.dtype, r.shape.clone()),
                layout: Vec::new(),
                method: Some(m.clone()),
            });
    }
    let mut names = BTreeSet::new();
    for ((m, _), (r, planned)) in by_method {
        let method = Registry::global()?.create(&m, &r.params)?;
        names.extend(
            method
                .artifacts(&planned)?
                .files
                .into_iter()
                .map(|(n, _)| n),
        );
    }
    Ok(names)
}

/// The output file of each input weight file: its own name for a safetensors file; for
/// a container file (a component written as .gguf), the name its library looks for
/// (`diffusion_pytorch_model.safetensors` for a diffusers model, else `model.safetensors`).
fn shard_names(model: &ModelFiles) -> Vec<String> {
    let diffusers = model
        .config
        .as_ref()
        .is_some_and(|c| c.get("_class_name").is_some() || c.get("_diffusers_version").is_some());
    let plain = if diffusers {
        "diffusion_pytorch_model"
    } else {
        "model"
    };
    let n = model.shards.len();
    model
        .shards
        .iter()
        .enumerate()
        .map(|(i, (p, _))| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.ends_with(".safetensors") && model.is_dir {
                name
            } else if n == 1 {
                format!("{plain}.safetensors")
            } else {
                format!("{plain}-{:05}-of-{n:05}.safetensors", i + 1)
            }
        })
        .collect()
}

/// Runs `fill` on a temporary folder beside `out` and renames it to `out` when it
/// succeeds (replacing `out` when `force`), removing it when it fails.
fn in_temp_dir(
    out: &Path,
    force: bool,
    fill: impl FnOnce(&Path) -> Result<usize>,
) -> Result<usize> {
    clean_stale_temps(out);
    let tmp = temp_path_for(out);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let result = fill(&tmp).and_then(|n| {
        if out.exists() && force {
            let r = if out.is_dir() {
                std::fs::remove_dir_all(out)
            } else {
                std::fs::remove_file(out)
            };
            r.map_err(|e| Error::io(out, e))?;
        }
        rename_durable(&tmp, out)?;
        Ok(n)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// quant's record of a quantization run, which a restored model no longer is.
fn is_info(path: &Path) -> bool {
    path.to_string_lossy().ends_with("quantization_info.json")
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let text =
        serde_json::to_string_pretty(v).map_err(|e| Error::file(path, "json", e.to_string()))?;
    let mut f = AtomicFile::create(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.commit()
}

/// Copies the files (not folders) directly in `from` into `to`.
fn copy_files(from: &Path, to: &Path) -> Result<()> {
    for e in std::fs::read_dir(from)
        .map_err(|e| Error::io(from, e))?
        .flatten()
    {
        let p = e.path();
        if p.is_file() && !is_info(&p) {
            std::fs::copy(&p, to.join(e.file_name())).map_err(|e| Error::io(&p, e))?;
        }
    }
    Ok(())
}

/// Copies folder `from` with everything in it to the new folder `to`.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    for e in std::fs::read_dir(from)
        .map_err(|e| Error::io(from, e))?
        .flatten()
    {
        let p: PathBuf = e.path();
        let dest = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &dest)?;
        } else {
            std::fs::copy(&p, &dest).map_err(|e| Error::io(&p, e))?;
        }
    }
    Ok(())
}
