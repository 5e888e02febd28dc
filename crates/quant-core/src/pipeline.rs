//! Diffusers-style pipelines: a folder with `model_index.json` and one folder per
//! component (`text_encoder`, `transformer`, `unet`, `vae`, ...). Weight components are
//! quantized each with its own method and layout; other folders (`tokenizer`,
//! `scheduler`, ...) and files are carried along unchanged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::engine::{ModelQuantizer, Plan, Report};
use crate::error::{Error, Result};
use crate::format::ContainerReader;
use crate::load::ModelFiles;
use crate::method::{QuantizedTensor, TensorRecord};
use crate::progress::scoped;
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

    /// Every weight component's tensors (quantized or not, in whatever layout the
    /// component holds) as one model, each named `<component>/<tensor>`: what
    /// `quant dequantize` and `quant eval` read from a pipeline folder.
    pub fn open_weights(&self) -> Result<ModelFiles> {
        let mut shards: Vec<(PathBuf, Box<dyn ContainerReader>)> = Vec::new();
        for c in self.components.iter().filter(|c| c.has_weights) {
            let model = ModelFiles::open(&c.path)?;
            for (file, reader) in model.shards {
                let prefix = format!("{}/", c.name);
                let records = reader
                    .records()
                    .iter()
                    .map(|r| TensorRecord {
                        name: format!("{prefix}{}", r.name),
                        parts: r.parts.iter().map(|k| format!("{prefix}{k}")).collect(),
                        ..r.clone()
                    })
                    .collect();
                shards.push((
                    Path::new(&c.name).join(file),
                    Box::new(ComponentReader {
                        prefix,
                        inner: reader,
                        records,
                    }),
                ));
            }
        }
        if shards.is_empty() {
            return Err(Error::file(
                &self.root,
                "pipeline folder",
                "no component holds weight files",
            ));
        }
        Ok(ModelFiles {
            root: self.root.clone(),
            is_dir: true,
            shards,
            config: None,
            other_files: Vec::new(),
        })
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
        // Every component reports to the default's progress hook, under its own name.
        let hook = default.and_then(|q| q.progress_hook());
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
                    let q = match hook {
                        Some(h) => q.force(false).progress(Some(scoped(h, &c.name))),
                        None => q.force(false),
                    };
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
        crate::safetensors_io::rename_durable(&tmp, out)?;
        std::mem::forget(guard);
        Ok(reports)
    }
}

/// One component's weight file with its tensors and their parts named
/// `<component>/<key>` (both renamed alike, so a method finds its parts by name as usual).
struct ComponentReader {
    prefix: String,
    inner: Box<dyn ContainerReader>,
    records: Vec<TensorRecord>,
}

impl ComponentReader {
    fn inner_name<'n>(&self, name: &'n str) -> Result<&'n str> {
        name.strip_prefix(&self.prefix)
            .ok_or_else(|| Error::tensor("", name, format!("not in component '{}'", self.prefix)))
    }
}

impl ContainerReader for ComponentReader {
    fn metadata(&self) -> BTreeMap<String, String> {
        self.inner.metadata()
    }
    fn records(&self) -> &[TensorRecord] {
        &self.records
    }
    fn read(&self, name: &str) -> Result<QuantizedTensor> {
        let mut q = self.inner.read(self.inner_name(name)?)?;
        q.record.name = name.to_string();
        q.record.parts = q
            .record
            .parts
            .iter()
            .map(|k| format!("{}{k}", self.prefix))
            .collect();
        for p in &mut q.parts {
            p.layout.key = format!("{}{}", self.prefix, p.layout.key);
        }
        Ok(q)
    }
    fn stored_bytes(&self, name: &str) -> Result<u64> {
        self.inner.stored_bytes(self.inner_name(name)?)
    }
}

impl ModelFiles {
    /// Opens a model file or folder like [`ModelFiles::open`], or a pipeline folder
    /// (`model_index.json`) as [`Pipeline::open_weights`] does.
    pub fn open_any(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if Pipeline::is_pipeline(path) {
            Pipeline::open(path)?.open_weights()
        } else {
            ModelFiles::open(path)
        }
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

/// One component's entry in a [`PipelineRecipe`].
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentRecipe {
    /// Method name, or `skip` to copy the component unchanged.
    pub method: Option<String>,
    /// Method parameters.
    #[serde(default)]
    pub params: crate::method::Params,
    /// Rules for this component (same forms as a rules file).
    #[serde(default)]
    pub rules: serde_json::Value,
    /// Memory target for this component, in GB.
    pub target_memory_gb: Option<f64>,
}

/// A pipeline recipe (TOML, JSON or YAML): a default method and per-component settings.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineRecipe {
    /// Default method for weight components without an entry.
    pub method: Option<String>,
    /// Default method parameters.
    #[serde(default)]
    pub params: crate::method::Params,
    /// Target for the whole pipeline, in GB, shared in proportion to each component's
    /// planned size (components with their own target keep it).
    pub target_memory_gb: Option<f64>,
    /// Per-component settings.
    #[serde(default)]
    pub components: BTreeMap<String, ComponentRecipe>,
}

impl PipelineRecipe {
    /// Loads a recipe from `.toml`, `.json`, `.yaml` or `.yml`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let bad = |reason: String| Error::Config {
            source_name: name.clone(),
            entry: "(recipe)".into(),
            reason,
        };
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let recipe: PipelineRecipe = match ext.as_str() {
            "toml" => toml::from_str(&text).map_err(|e| bad(e.to_string()))?,
            "json" => serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?,
            "yaml" | "yml" => serde_norway::from_str(&text).map_err(|e| bad(e.to_string()))?,
            other => return Err(bad(format!("unknown recipe extension '{other}'"))),
        };
        // Compile every component's rules now, so a bad one names the file.
        for (c, r) in &recipe.components {
            crate::rules::ConfigFile::from_value(
                &format!("{name} [components.{c}]"),
                serde_json::json!({"rules": r.rules}),
            )?;
        }
        Ok(recipe)
    }

    /// The default quantizer of the recipe, if it names a method.
    pub fn default_quantizer(&self) -> Option<ModelQuantizer> {
        self.method
            .as_ref()
            .map(|m| ModelQuantizer::new(m.clone()).params(self.params.clone()))
    }
}

impl Pipeline {
    /// Plans every component as `recipe` says (its default method for weight components
    /// without an entry), then shares the recipe's pipeline target, if any.
    pub fn apply_recipe(&mut self, recipe: &PipelineRecipe, strict: bool) -> Result<()> {
        for (name, c) in &recipe.components {
            match c.method.as_deref() {
                Some("skip") => self.skip_component(name)?,
                m => {
                    let method = m
                        .map(str::to_string)
                        .or_else(|| recipe.method.clone())
                        .ok_or_else(|| Error::Config {
                            source_name: "recipe".into(),
                            entry: name.clone(),
                            reason: "no method for this component and no default method".into(),
                        })?;
                    let rules = crate::rules::ConfigFile::from_value(
                        &format!("recipe [components.{name}]"),
                        serde_json::json!({"rules": c.rules}),
                    )?
                    .rules;
                    let params = if c.params.is_empty() && m.is_none() {
                        recipe.params.clone()
                    } else {
                        c.params.clone()
                    };
                    let q = ModelQuantizer::new(method)
                        .params(params)
                        .rules(rules)
                        .strict(strict)
                        .target_memory_gb(c.target_memory_gb);
                    self.quantize_component(name, q)?;
                }
            }
        }
        if let Some(q) = recipe.default_quantizer() {
            let names: Vec<String> = self
                .components
                .iter()
                .filter(|c| c.has_weights && !self.plans.contains_key(&c.name))
                .map(|c| c.name.clone())
                .collect();
            for n in names {
                self.quantize_component(&n, q.clone().strict(strict))?;
            }
        }
        if let Some(gb) = recipe.target_memory_gb {
            let fixed: Vec<String> = recipe
                .components
                .iter()
                .filter(|(_, c)| c.target_memory_gb.is_some())
                .map(|(n, _)| n.clone())
                .collect();
            self.share_target(gb, &fixed)?;
        }
        Ok(())
    }

    /// Shares a whole-pipeline target (GB) among the planned components not in `fixed`:
    /// each gets the least it can be stored in (every tensor on its smallest method) plus a
    /// share of what is left in proportion to how much its untargeted plan exceeds that.
    /// Bytes of `fixed` components and of copied ones are taken off first.
    pub fn share_target(&mut self, gb: f64, fixed: &[String]) -> Result<()> {
        let total = gb * crate::engine::BYTES_PER_GB;
        // (name, least bytes, untargeted bytes)
        let mut sizes: Vec<(String, f64, f64)> = Vec::new();
        let mut taken = 0f64;
        for c in &self.components {
            match self.plans.get(&c.name) {
                Some(ComponentPlan::Quantize(q)) if fixed.contains(&c.name) => {
                    taken += q.plan_path(&c.path)?.1.bytes_out() as f64;
                }
                Some(ComponentPlan::Quantize(q)) => {
                    let free = q.as_ref().clone().target_memory_gb(None);
                    let full = free.plan_path(&c.path)?.1.bytes_out() as f64;
                    let least = match free
                        .clone()
                        .target_memory_gb(Some(0.0))
                        .auto_optimize(true)
                        .plan_path(&c.path)
                    {
                        Ok((_, p)) => p.bytes_out() as f64,
                        Err(Error::OverTarget { needed, .. }) => needed as f64,
                        Err(e) => return Err(e),
                    };
                    sizes.push((c.name.clone(), least.min(full), full));
                }
                _ if c.has_weights => taken += dir_weight_bytes(&c.path) as f64,
                _ => {}
            }
        }
        let least: f64 = sizes.iter().map(|s| s.1).sum();
        let spare: f64 = sizes.iter().map(|s| s.2 - s.1).sum();
        let rest = total - taken - least;
        if rest < 0.0 {
            let needed = (taken + least) as u64;
            return Err(Error::OverTarget {
                needed,
                target: total as u64,
                over: needed.saturating_sub(total as u64),
                hint: "even with every tensor on its backend's smallest method the pipeline does not fit".into(),
            });
        }
        for (name, lo, full) in sizes {
            if let Some(ComponentPlan::Quantize(q)) = self.plans.get(&name).cloned() {
                let extra = if spare > 0.0 {
                    rest.min(spare) * (full - lo) / spare
                } else {
                    0.0
                };
                let share = (lo + extra).floor() / crate::engine::BYTES_PER_GB;
                self.quantize_component(&name, q.target_memory_gb(Some(share)))?;
            }
        }
        Ok(())
    }
}

fn dir_weight_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| is_weight_file(&e.file_name().to_string_lossy()))
                .filter_map(|e| e.metadata().ok().map(|m| m.len()))
                .sum()
        })
        .unwrap_or(0)
}
