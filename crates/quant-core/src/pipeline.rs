//! Diffusers-style pipelines: a folder with `model_index.json` and one folder per
//! component (`text_encoder`, `transformer`, `unet`, `vae`, ...). Weight components are
//! quantized each with its own method and layout; other folders (`tokenizer`,
//! `scheduler`, ...) and files are carried along unchanged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::engine::{ModelQuantizer, Plan, Report};
use crate::error::{Error, Result};
use crate::load::ModelFiles;
use crate::safetensors_io::{check_output, clean_stale_temps, temp_path_for};

/// One folder of a pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Component {
    /// Folder name, e.g. `transformer`.
    pub name: String,
    /// Its path.
    pub path: PathBuf,
    /// True when it holds weight files (safetensors or a registered container).
    pub has_weights: bool,
}

/// What to do with a component when saving a pipeline.
#[derive(Clone, Debug)]
pub enum ComponentPlan {
    /// Quantize with this quantizer (method, params, rules, target).
    Quantize(Box<ModelQuantizer>),
    /// Copy unchanged.
    Skip,
}

/// A pipeline folder and the plan for each of its components.
#[derive(Debug)]
pub struct Pipeline {
    root: PathBuf,
    components: Vec<Component>,
    other_files: Vec<PathBuf>,
    plans: BTreeMap<String, ComponentPlan>,
}

fn is_weight_file(name: &str) -> bool {
    name.ends_with(".safetensors")
        || crate::format::containers().any(|c| {
            c.extensions
                .iter()
                .any(|e| name.ends_with(&format!(".{e}")))
        })
}

/// The output name of a component written as a container file (`<component>/<name>.<ext>`).
fn container_file_name(component: &str, ext: &str) -> String {
    format!("{component}.{ext}")
}

impl Pipeline {
    /// True when `path` is a pipeline folder (`model_index.json` inside).
    pub fn is_pipeline(path: &Path) -> bool {
        path.join("model_index.json").is_file()
    }

    /// Opens a pipeline folder, listing its components.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let root = path.as_ref().to_path_buf();
        if !Self::is_pipeline(&root) {
            return Err(Error::file(&root, "pipeline folder", "no model_index.json"));
        }
        let mut components = Vec::new();
        let mut other_files = Vec::new();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&root)
            .map_err(|e| Error::io(&root, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            let Some(name) = p.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            if p.is_dir() {
                let has_weights = std::fs::read_dir(&p)
                    .map_err(|e| Error::io(&p, e))?
                    .filter_map(|e| e.ok())
                    .any(|e| is_weight_file(&e.file_name().to_string_lossy()));
                components.push(Component {
                    name,
                    path: p,
                    has_weights,
                });
            } else {
                other_files.push(PathBuf::from(name));
            }
        }
        Ok(Pipeline {
            root,
            components,
            other_files,
            plans: BTreeMap::new(),
        })
    }

    /// The pipeline folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every component folder.
    pub fn components(&self) -> &[Component] {
        &self.components
    }

    fn component(&self, name: &str) -> Result<&Component> {
        self.components
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| Error::Config {
                source_name: self.root.display().to_string(),
                entry: name.to_string(),
                reason: format!(
                    "no such component; components: {}",
                    self.components
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }

    /// Opens a component's weights (quantized or not) for loading.
    pub fn open_component(&self, name: &str) -> Result<ModelFiles> {
        ModelFiles::open(&self.component(name)?.path)
    }

    /// Plans `name` with `quantizer` (method, params, rules, memory target) and remembers
    /// it for saving; returns the plan (exact bytes per tensor). Nothing is written.
    pub fn quantize_component(&mut self, name: &str, quantizer: ModelQuantizer) -> Result<Plan> {
        let c = self.component(name)?;
        if !c.has_weights {
            return Err(Error::Config {
                source_name: self.root.display().to_string(),
                entry: name.to_string(),
                reason: "this component holds no weights".into(),
            });
        }
        let (_, plan) = quantizer.plan_path(&c.path)?;
        self.plans.insert(
            name.to_string(),
            ComponentPlan::Quantize(Box::new(quantizer)),
        );
        Ok(plan)
    }

    /// The plan remembered for `name`, if any.
    pub fn planned(&self, name: &str) -> Option<&ComponentPlan> {
        self.plans.get(name)
    }

    /// Marks `name` to be copied unchanged.
    pub fn skip_component(&mut self, name: &str) -> Result<()> {
        self.component(name)?;
        self.plans.insert(name.to_string(), ComponentPlan::Skip);
        Ok(())
    }

    /// Quantizes and writes one planned component to `path` (a folder, or a file for a
    /// container format such as `.gguf`).
    pub fn save_quantized_component(&self, name: &str, path: impl AsRef<Path>) -> Result<Report> {
        let c = self.component(name)?;
        match self.plans.get(name) {
            Some(ComponentPlan::Quantize(q)) => q.quantize_path(&c.path, path),
            _ => Err(Error::Config {
                source_name: self.root.display().to_string(),
                entry: name.to_string(),
                reason: "component was not planned with quantize_component".into(),
            }),
        }
    }

    /// Writes the whole pipeline to `out`, mirroring the input: every planned component
    /// quantized in its own format (a container format as `<component>/<component>.<ext>`),
    /// weight components without a plan quantized with `default` (if given) else copied,
    /// everything else copied. Assembled in a temporary folder and renamed when complete.
    pub fn save(
        &self,
        out: impl AsRef<Path>,
        default: Option<&ModelQuantizer>,
        force: bool,
    ) -> Result<Vec<(String, Report)>> {
        let out = out.as_ref();
        check_output(out, force)?;
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !parent.is_dir() {
            return Err(Error::io(
                out,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the output's parent folder does not exist",
                ),
            ));
        }
        clean_stale_temps(out);
        let tmp = temp_path_for(out);
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let guard = RemoveDir(tmp.clone());
        for f in &self.other_files {
            let from = self.root.join(f);
            std::fs::copy(&from, tmp.join(f)).map_err(|e| Error::io(&from, e))?;
        }
        let mut reports = Vec::new();
        for c in &self.components {
            let plan = match self.plans.get(&c.name) {
                Some(p) => Some(p.clone()),
                None if c.has_weights => {
                    default.map(|q| ComponentPlan::Quantize(Box::new(q.clone())))
                }
                None => None,
            };
            let dest = tmp.join(&c.name);
            match plan {
                Some(ComponentPlan::Quantize(q)) => {
                    let q = q.force(false);
                    if let Some(ext) = q.container_extension() {
                        std::fs::create_dir_all(&dest).map_err(|e| Error::io(&dest, e))?;
                        // Configs and other small files of the component come along.
                        copy_non_weights(&c.path, &dest)?;
                        let file = dest.join(container_file_name(&c.name, &ext));
                        reports.push((c.name.clone(), q.quantize_path(&c.path, &file)?));
                    } else {
                        reports.push((c.name.clone(), q.quantize_path(&c.path, &dest)?));
                    }
                }
                _ => copy_dir(&c.path, &dest)?,
            }
        }
        if out.exists() {
            let r = if out.is_dir() {
                std::fs::remove_dir_all(out)
            } else {
                std::fs::remove_file(out)
            };
            r.map_err(|e| Error::io(out, e))?;
        }
        std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
        std::mem::forget(guard);
        Ok(reports)
    }
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    for e in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let e = e.map_err(|e| Error::io(from, e))?;
        let p = e.path();
        let dest = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &dest)?;
        } else {
            std::fs::copy(&p, &dest).map_err(|err| Error::io(&p, err))?;
        }
    }
    Ok(())
}

fn copy_non_weights(from: &Path, to: &Path) -> Result<()> {
    for e in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let e = e.map_err(|e| Error::io(from, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let p = e.path();
        if p.is_file() && !is_weight_file(&name) && !name.ends_with(".safetensors.index.json") {
            std::fs::copy(&p, to.join(&name)).map_err(|err| Error::io(&p, err))?;
        }
    }
    Ok(())
}
