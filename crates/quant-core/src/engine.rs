//! The model quantizer: plans every tensor (rules, method selection, per-tensor
//! fallbacks, memory target), then quantizes and writes streaming, one tensor at a time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::dtype::{encode_f32, DType};
use crate::error::{Error, Result};
use crate::format::{self, ContainerReader, PlannedOutput};
use crate::load::{dequantize, ModelFiles, FORMAT_VERSION, META_FORMAT_VERSION, META_TENSORS};
use crate::method::{
    Artifacts, Mixture, ModelView, Params, Part, PartLayout, PlannedTensor, QuantMethod,
    QuantizedTensor, Selection, TensorChoice, TensorRecord,
};
use crate::registry::{Registry, Resolved};
use crate::rules::{RuleAction, Rules};
use crate::safetensors_io::{
    check_output, clean_stale_temps, temp_path_for, AtomicFile, SafetensorsWriter,
};
use crate::tensor::{TensorMeta, TensorSource};

/// What happens to one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Quantized by a method.
    Quantize,
    /// Kept unquantized, cast to another float dtype.
    Cast,
    /// Kept exactly as stored.
    Keep,
}

/// The plan for one tensor.
#[derive(Clone, Debug, Serialize)]
pub struct PlanEntry {
    /// Index of the input shard.
    pub shard: usize,
    /// The source tensor.
    #[serde(skip)]
    pub meta: TensorMeta,
    /// The tensor name.
    pub name: String,
    /// The rule that matched (`pattern = action`), if any.
    pub rule: Option<String>,
    /// What happens.
    pub action: Action,
    /// The method, for [`Action::Quantize`].
    pub method: Option<String>,
    /// Why the method differs from the requested one, or why the tensor is left as is.
    pub note: Option<String>,
    /// True when `note` describes a fallback (counted and refused in strict mode).
    pub is_fallback: bool,
    /// The stored parts.
    #[serde(skip)]
    pub layout: Vec<PartLayout>,
    /// Bytes of the source tensor.
    pub bytes_in: u64,
    /// Bytes it will be stored as.
    pub bytes_out: u64,
    /// The source is stored quantized and will be dequantized first.
    pub requantize: bool,
    /// Estimated relative RMS error (measured on sampled rows), when a memory target made
    /// the planner measure it.
    pub est_rel_error: Option<f64>,
}

/// The plan for a whole model.
pub struct Plan {
    /// How the default method resolved.
    pub resolved: Resolved,
    /// One entry per tensor, in input order.
    pub entries: Vec<PlanEntry>,
    methods: BTreeMap<String, Arc<dyn QuantMethod>>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("resolved", &self.resolved)
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl Plan {
    /// Total bytes of the stored output.
    pub fn bytes_out(&self) -> u64 {
        self.entries.iter().map(|e| e.bytes_out).sum()
    }
    /// Total bytes of the input.
    pub fn bytes_in(&self) -> u64 {
        self.entries.iter().map(|e| e.bytes_in).sum()
    }
    /// Number of per-tensor fallbacks.
    pub fn fallbacks(&self) -> usize {
        self.entries.iter().filter(|e| e.is_fallback).count()
    }
    /// The method instance used for `name`.
    pub fn method(&self, name: &str) -> Option<&Arc<dyn QuantMethod>> {
        self.methods.get(name)
    }
}

/// What a run did, for the summary table and `quantization_info.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// How the default method resolved.
    pub resolved: Resolved,
    /// Every tensor.
    pub tensors: Vec<PlanEntry>,
    /// Input bytes.
    pub bytes_in: u64,
    /// Output bytes (tensor data).
    pub bytes_out: u64,
    /// Per-tensor fallbacks.
    pub fallbacks: usize,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Files written.
    pub outputs: Vec<PathBuf>,
    /// Things the user should know that are not per-tensor fallbacks (e.g. a model
    /// architecture a converter does not know).
    pub warnings: Vec<String>,
}

/// Reads the values of a planned tensor (for measuring sensitivity).
pub type ValueFn<'a> = dyn Fn(&PlanEntry) -> Result<Vec<f32>> + 'a;

/// Progress callback: (tensor name, tensors done, tensors total).
pub type Progress = Arc<dyn Fn(&str, usize, usize) + Send + Sync>;

/// Quantizes models: the seed API, as a builder.
///
/// ```no_run
/// # fn main() -> quant_core::Result<()> {
/// use quant_core::engine::ModelQuantizer;
/// let report = ModelQuantizer::new("basic_int8")
///     .strict(false)
///     .quantize_path("model.safetensors", "model-int8.safetensors")?;
/// println!("{} -> {} bytes", report.bytes_in, report.bytes_out);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ModelQuantizer {
    method: String,
    params: Params,
    rules: Rules,
    target_memory_gb: Option<f64>,
    auto_optimize: bool,
    strict: bool,
    allow_nonfinite: bool,
    allow_requantize: bool,
    force: bool,
    format: Option<String>,
    progress: Option<Progress>,
}

impl std::fmt::Debug for ModelQuantizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelQuantizer")
            .field("method", &self.method)
            .field("params", &self.params)
            .finish()
    }
}

/// Bytes in one "GB" of `target_memory_gb` (10^9, as disk and model sizes are quoted).
pub const BYTES_PER_GB: f64 = 1e9;

impl ModelQuantizer {
    /// A quantizer for the default method `method`.
    pub fn new(method: impl Into<String>) -> Self {
        ModelQuantizer {
            method: method.into(),
            params: Params::new(),
            rules: Rules::new(),
            target_memory_gb: None,
            auto_optimize: true,
            strict: false,
            allow_nonfinite: false,
            allow_requantize: false,
            force: false,
            format: None,
            progress: None,
        }
    }
    /// Method parameters (e.g. `blocksize`).
    pub fn params(mut self, params: Params) -> Self {
        self.params = params;
        self
    }
    /// Sets one method parameter.
    pub fn param(mut self, key: impl Into<String>, value: serde_json::Value) -> Self {
        self.params.insert(key.into(), value);
        self
    }
    /// Per-tensor rules (dtype preservation and overrides).
    pub fn rules(mut self, rules: Rules) -> Self {
        self.rules = rules;
        self
    }
    /// Shorthand for rules keeping every tensor matching a pattern in a dtype.
    pub fn preserve_dtypes<'a>(
        self,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self> {
        Ok(self.rules(Rules::from_pairs(pairs)?))
    }
    /// Bound on the stored weight bytes, in GB (10^9 bytes).
    pub fn target_memory_gb(mut self, gb: Option<f64>) -> Self {
        self.target_memory_gb = gb;
        self
    }
    /// With a memory target, move tensors between methods of the same backend (measured
    /// sensitivity) to fit it and spend room left on the most sensitive tensors (default on).
    pub fn auto_optimize(mut self, on: bool) -> Self {
        self.auto_optimize = on;
        self
    }
    /// Refuse every fallback instead of reporting it.
    pub fn strict(mut self, on: bool) -> Self {
        self.strict = on;
        self
    }
    /// Quantize tensors holding NaN or infinities instead of refusing them.
    pub fn allow_nonfinite(mut self, on: bool) -> Self {
        self.allow_nonfinite = on;
        self
    }
    /// Dequantize already-quantized inputs and quantize them again.
    pub fn allow_requantize(mut self, on: bool) -> Self {
        self.allow_requantize = on;
        self
    }
    /// Overwrite an existing output.
    pub fn force(mut self, on: bool) -> Self {
        self.force = on;
        self
    }
    /// Output container (`safetensors` or a registered one such as `gguf`); default: from
    /// the output extension.
    pub fn format(mut self, format: Option<String>) -> Self {
        self.format = format;
        self
    }
    /// A progress callback.
    pub fn progress(mut self, p: Option<Progress>) -> Self {
        self.progress = p;
        self
    }

    fn instance(
        &self,
        name: &str,
        params: &Params,
        methods: &mut BTreeMap<String, Arc<dyn QuantMethod>>,
    ) -> Result<Arc<dyn QuantMethod>> {
        if let Some(m) = methods.get(name) {
            return Ok(Arc::clone(m));
        }
        let registry = Registry::global()?;
        // A method with its own non-finite gate follows the quantizer's.
        let mut params = params.clone();
        if self.allow_nonfinite
            && registry
                .get(name)
                .is_some_and(|e| e.params.iter().any(|p| p.name == "allow_nonfinite"))
        {
            params
                .entry("allow_nonfinite")
                .or_insert(serde_json::Value::Bool(true));
        }
        let m: Arc<dyn QuantMethod> = Arc::from(registry.create(name, &params)?);
        methods.insert(name.to_string(), Arc::clone(&m));
        Ok(m)
    }

    /// Plans every tensor given as (shard, record); quantized records need
    /// `allow_requantize`.
    pub fn plan(
        &self,
        records: &[(usize, TensorRecord)],
        values: Option<&ValueFn<'_>>,
    ) -> Result<Plan> {
        self.plan_model(records, &BTreeMap::new(), values)
    }

    /// Plans every tensor given as (shard, record) of a model whose file-level metadata
    /// is `metadata` (what a mixing method sees, see [`QuantMethod::mixture`]).
    pub fn plan_model(
        &self,
        records: &[(usize, TensorRecord)],
        metadata: &BTreeMap<String, String>,
        values: Option<&ValueFn<'_>>,
    ) -> Result<Plan> {
        let registry = Registry::global()?;
        let resolved = registry.resolve(&self.method, self.strict)?;
        let mut methods = BTreeMap::new();
        // The default method gets the user's parameters, unless it is a fallback.
        let default_params = if resolved.fallback_reason.is_none() {
            self.params.clone()
        } else {
            Params::new()
        };
        let default = self.instance(&resolved.effective, &default_params, &mut methods)?;
        let metas: Vec<TensorMeta> = records
            .iter()
            .map(|(_, r)| TensorMeta::new(&r.name, r.dtype, r.shape.clone()))
            .collect();
        let mixture = default.mixture(&ModelView {
            tensors: &metas,
            metadata,
        })?;
        if let Some(m) = &mixture {
            check_mixture(m, records.len(), default.name())?;
        }
        let mut entries = Vec::with_capacity(records.len());
        for (i, (shard, rec)) in records.iter().enumerate() {
            let choice = mixture.as_ref().and_then(|m| m.choices.get(i));
            entries.push(self.plan_one(*shard, rec, &resolved, choice, &mut methods)?);
        }
        if let Some(order) = mixture.and_then(|m| m.order) {
            let mut slots: Vec<Option<PlanEntry>> = entries.into_iter().map(Some).collect();
            entries = order
                .iter()
                .filter_map(|&i| slots.get_mut(i).and_then(Option::take))
                .collect();
        }
        let mut plan = Plan {
            resolved,
            entries,
            methods,
        };
        self.fit_target(&mut plan, values)?;
        Ok(plan)
    }

    fn plan_one(
        &self,
        shard: usize,
        rec: &TensorRecord,
        default: &Resolved,
        choice: Option<&TensorChoice>,
        methods: &mut BTreeMap<String, Arc<dyn QuantMethod>>,
    ) -> Result<PlanEntry> {
        let meta = TensorMeta::new(&rec.name, rec.dtype, rec.shape.clone());
        let bytes_in = meta.byte_len()? as u64;
        let requantize = rec.method.is_some();
        if requantize && !self.allow_requantize {
            return Err(Error::tensor(
                "",
                &rec.name,
                format!(
                    "is stored quantized ({}); pass --allow-requantize to dequantize it and quantize it again",
                    rec.method.as_deref().unwrap_or_default()
                ),
            ));
        }
        let mut entry = PlanEntry {
            shard,
            meta: meta.clone(),
            name: rec.name.clone(),
            rule: None,
            action: Action::Keep,
            method: None,
            note: None,
            is_fallback: false,
            layout: vec![PartLayout::new(&rec.name, rec.dtype, rec.shape.clone())],
            bytes_in,
            bytes_out: bytes_in,
            requantize,
            est_rel_error: None,
        };
        let rule = self.rules.matching(&rec.name);
        let mut chosen_params = None;
        let (method_name, mut note) = match rule {
            Some((i, r)) => {
                entry.rule = Some(format!("#{i} {} = {}", r.pattern, r.action.as_text()));
                match &r.action {
                    RuleAction::Dtype(d) => {
                        self.finish_keep(&mut entry, Some(*d))?;
                        return Ok(entry);
                    }
                    RuleAction::Skip => {
                        self.finish_keep(&mut entry, None)?;
                        return Ok(entry);
                    }
                    RuleAction::Method(m) => {
                        let res = Registry::global()?.resolve(m, self.strict)?;
                        (res.effective, res.fallback_reason)
                    }
                }
            }
            None => match choice {
                Some(TensorChoice::Keep(d)) => {
                    self.finish_keep(&mut entry, *d)?;
                    return Ok(entry);
                }
                Some(TensorChoice::Method {
                    name,
                    params,
                    fallback,
                }) => {
                    chosen_params = Some(params.clone());
                    (name.clone(), fallback.clone())
                }
                // A compiled-out default backend is reported once for the file (metadata
                // and a warning), not as a fallback of every tensor.
                Some(TensorChoice::Default) | None => (default.effective.clone(), None),
            },
        };
        entry.is_fallback = note.is_some();
        let params = match chosen_params {
            Some(p) => p,
            None if method_name == default.effective && default.fallback_reason.is_none() => {
                self.params.clone()
            }
            None => Params::new(),
        };
        let mut method = self.instance(&method_name, &params, methods)?;
        for _ in 0..8 {
            match method.select(&meta) {
                Selection::Quantize => {
                    entry.action = Action::Quantize;
                    entry.method = Some(method.name().to_string());
                    entry.layout = method.output_layout(&meta)?;
                    entry.note = note;
                    entry.bytes_out = layout_bytes(&entry.layout, &rec.name)?;
                    if entry.is_fallback && self.strict {
                        return Err(Error::StrictFallback {
                            tensor: rec.name.clone(),
                            reason: entry.note.clone().unwrap_or_default(),
                        });
                    }
                    return Ok(entry);
                }
                Selection::Keep(d) => {
                    entry.note = note;
                    self.finish_keep(&mut entry, d)?;
                    return Ok(entry);
                }
                Selection::Fallback {
                    method: next,
                    reason,
                } => {
                    if self.strict {
                        return Err(Error::StrictFallback {
                            tensor: rec.name.clone(),
                            reason: format!("{}: {reason}", method.name()),
                        });
                    }
                    let res = Registry::global()?.resolve(&next, false)?;
                    let mut text = format!("{} -> {}: {reason}", method.name(), res.effective);
                    if let Some(r) = res.fallback_reason {
                        text.push_str(&format!(" ({r})"));
                    }
                    note = Some(match note {
                        Some(prev) => format!("{prev}; {text}"),
                        None => text,
                    });
                    entry.is_fallback = true;
                    method = self.instance(&res.effective, &Params::new(), methods)?;
                }
            }
        }
        Err(Error::tensor(
            "",
            &rec.name,
            "method fallbacks loop without end",
        ))
    }

    fn finish_keep(&self, entry: &mut PlanEntry, cast: Option<DType>) -> Result<()> {
        let meta = &entry.meta;
        match cast {
            Some(d) if meta.dtype.is_float() && (d != meta.dtype || entry.requantize) => {
                entry.action = Action::Cast;
                entry.layout = vec![PartLayout::new(&meta.name, d, meta.shape.clone())];
            }
            _ if entry.requantize => {
                // A quantized source kept "as stored" is restored to its natural dtype.
                entry.action = Action::Cast;
                entry.layout = vec![PartLayout::new(&meta.name, meta.dtype, meta.shape.clone())];
            }
            _ => {
                entry.action = Action::Keep;
            }
        }
        entry.method = None;
        entry.bytes_out = layout_bytes(&entry.layout, &meta.name)?;
        Ok(())
    }

    fn fit_target(&self, plan: &mut Plan, values: Option<&ValueFn<'_>>) -> Result<()> {
        let Some(gb) = self.target_memory_gb else {
            return Ok(());
        };
        let target = (gb * BYTES_PER_GB) as u64;
        let needed = plan.bytes_out();
        if !self.auto_optimize {
            if needed <= target {
                return Ok(());
            }
            return Err(Error::OverTarget {
                needed,
                target,
                over: needed - target,
                hint: self.what_fits(plan, target)?,
            });
        }
        let registry = Registry::global()?;
        let backend = registry
            .get(&plan.resolved.effective)
            .map(|e| e.backend)
            .unwrap_or("");
        let mut ladder_methods: Vec<Arc<dyn QuantMethod>> = Vec::new();
        for e in registry.entries().filter(|e| e.backend == backend) {
            let params = if e.name == plan.resolved.effective {
                self.params.clone()
            } else {
                Params::new()
            };
            ladder_methods.push(self.instance(e.name, &params, &mut plan.methods)?);
        }
        let refs: Vec<&dyn QuantMethod> = ladder_methods.iter().map(|m| m.as_ref()).collect();
        let movable: Vec<usize> = (0..plan.entries.len())
            .filter(|&i| {
                let e = &plan.entries[i];
                e.action == Action::Quantize && !e.is_fallback && e.rule.is_none()
            })
            .collect();
        let mut ladders = Vec::with_capacity(movable.len());
        let mut start = Vec::with_capacity(movable.len());
        let mut energy = Vec::with_capacity(movable.len());
        for &i in &movable {
            let e = &plan.entries[i];
            let vals = match values {
                Some(f) => Some(f(e)?),
                None => None,
            };
            energy.push(
                vals.as_ref()
                    .map(|v| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>()),
            );
            let l = crate::planner::ladder(e, &refs, vals.as_deref())?;
            let at = l
                .iter()
                .position(|r| r.method.as_deref() == e.method.as_deref())
                .or_else(|| l.iter().position(|r| r.bytes >= e.bytes_out))
                .unwrap_or(0);
            ladders.push(l);
            start.push(at);
        }
        let fixed: u64 = plan
            .entries
            .iter()
            .enumerate()
            .filter(|(i, _)| !movable.contains(i))
            .map(|(_, e)| e.bytes_out)
            .sum();
        let chosen = match crate::planner::optimize(&ladders, &start, fixed, target) {
            Ok(c) => c,
            Err(Error::OverTarget { needed, over, .. }) => {
                return Err(Error::OverTarget {
                    needed,
                    target,
                    over,
                    hint: self.what_fits(plan, target)?,
                })
            }
            Err(e) => return Err(e),
        };
        for (k, &i) in movable.iter().enumerate() {
            let (Some(l), Some(&c)) = (ladders.get(k), chosen.get(k)) else {
                continue;
            };
            let Some(rung) = l.get(c) else { continue };
            let e = &mut plan.entries[i];
            if let Some(en) = energy.get(k).copied().flatten() {
                e.est_rel_error = Some(if en > 0.0 {
                    (rung.sse / en).sqrt()
                } else {
                    0.0
                });
            }
            if rung.method.as_deref() == e.method.as_deref() {
                continue;
            }
            let m = rung
                .method
                .as_deref()
                .and_then(|n| plan.methods.get(n))
                .cloned();
            let note = format!(
                "target {gb} GB: {} -> {}",
                e.method.clone().unwrap_or_default(),
                rung.method
                    .clone()
                    .unwrap_or_else(|| format!("unquantized {}", e.meta.dtype))
            );
            crate::planner::apply(e, rung, m.as_deref(), note)?;
        }
        Ok(())
    }

    /// Which uniform methods of the default's backend would fit `target`.
    fn what_fits(&self, plan: &Plan, target: u64) -> Result<String> {
        let registry = Registry::global()?;
        let current = registry.get(&plan.resolved.effective);
        let backend = current.map(|e| e.backend).unwrap_or("");
        let mut fits = Vec::new();
        for cand in registry.entries().filter(|e| e.backend == backend) {
            let alt = ModelQuantizer {
                method: cand.name.to_string(),
                params: Params::new(),
                target_memory_gb: None,
                ..self.clone()
            };
            let recs: Vec<(usize, TensorRecord)> = plan
                .entries
                .iter()
                .map(|e| (e.shard, crate::load::plain_record(&e.meta)))
                .collect();
            if let Ok(p) = alt.plan(&recs, None) {
                if p.bytes_out() <= target {
                    fits.push((
                        cand.bits_per_weight,
                        format!("{} ({} bytes)", cand.name, p.bytes_out()),
                    ));
                }
            }
        }
        fits.sort_by(|a, b| b.0.total_cmp(&a.0));
        Ok(if fits.is_empty() {
            "no method of the same backend fits; raise the target or keep fewer tensors unquantized"
                .to_string()
        } else {
            format!(
                "uniform methods that fit: {}{}",
                fits.into_iter().map(|f| f.1).collect::<Vec<_>>().join(", "),
                if self.auto_optimize {
                    ""
                } else {
                    " (or enable auto_optimize)"
                }
            )
        })
    }

    /// Quantizes one planned tensor from its values.
    fn run_entry(&self, plan: &Plan, e: &PlanEntry, values: &[f32]) -> Result<QuantizedTensor> {
        match e.action {
            Action::Quantize => {
                let name = e.method.as_deref().unwrap_or_default();
                let m = plan.methods.get(name).ok_or_else(|| {
                    Error::tensor("", &e.name, format!("method {name} not planned"))
                })?;
                if !self.allow_nonfinite {
                    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                        return Err(Error::NonFinite {
                            tensor: e.name.clone(),
                            index: i,
                            value: *v,
                        });
                    }
                }
                let mut q = m.quantize(&e.meta, values)?;
                if e.is_fallback {
                    q.record.fallback = e.note.clone();
                }
                Ok(q)
            }
            Action::Cast | Action::Keep => {
                let l = e
                    .layout
                    .first()
                    .ok_or_else(|| Error::tensor("", &e.name, "empty layout"))?;
                let data = encode_f32(l.dtype, values)?;
                Ok(QuantizedTensor {
                    record: self.kept_record(e),
                    parts: vec![Part::new(l.clone(), data)?],
                })
            }
        }
    }

    fn kept_record(&self, e: &PlanEntry) -> TensorRecord {
        let stored = e.layout.first().map(|l| l.dtype).unwrap_or(e.meta.dtype);
        TensorRecord {
            name: e.name.clone(),
            method: None,
            dtype: e.meta.dtype,
            shape: e.meta.shape.clone(),
            dequant_dtype: stored,
            params: Params::new(),
            parts: vec![e.name.clone()],
            fallback: if e.is_fallback { e.note.clone() } else { None },
        }
    }

    /// The record planned for `e` (the method may still refine `dequant_dtype`).
    fn planned_record(&self, plan: &Plan, e: &PlanEntry) -> TensorRecord {
        match (
            &e.action,
            e.method.as_deref().and_then(|m| plan.methods.get(m)),
        ) {
            (Action::Quantize, Some(m)) => TensorRecord {
                name: e.name.clone(),
                method: Some(m.name().to_string()),
                dtype: e.meta.dtype,
                shape: e.meta.shape.clone(),
                dequant_dtype: e.meta.dtype,
                params: m.params(),
                parts: e.layout.iter().map(|l| l.key.clone()).collect(),
                fallback: if e.is_fallback { e.note.clone() } else { None },
            },
            _ => self.kept_record(e),
        }
    }

    /// Every method's artifacts for one output file, each given all of the file's tensors.
    fn artifacts_for(
        &self,
        plan: &Plan,
        entries: &[&PlanEntry],
    ) -> Result<Vec<(String, Artifacts)>> {
        let planned: Vec<PlannedTensor> = entries
            .iter()
            .map(|e| PlannedTensor {
                meta: e.meta.clone(),
                layout: e.layout.clone(),
                method: if e.action == Action::Quantize {
                    e.method.clone()
                } else {
                    None
                },
            })
            .collect();
        let mut names: Vec<&str> = planned.iter().filter_map(|p| p.method.as_deref()).collect();
        names.sort_unstable();
        names.dedup();
        let mut out = Vec::new();
        for name in names {
            if let Some(m) = plan.methods.get(name) {
                out.push((name.to_string(), m.artifacts(&planned)?));
            }
        }
        Ok(out)
    }

    fn base_metadata(&self, plan: &Plan) -> BTreeMap<String, String> {
        let mut md = BTreeMap::new();
        md.insert(META_FORMAT_VERSION.to_string(), FORMAT_VERSION.to_string());
        md.insert(
            "quant.tool_version".into(),
            env!("CARGO_PKG_VERSION").into(),
        );
        md.insert(
            "quant.method.requested".into(),
            plan.resolved.requested.clone(),
        );
        md.insert(
            "quant.method.effective".into(),
            plan.resolved.effective.clone(),
        );
        if let Some(r) = &plan.resolved.fallback_reason {
            md.insert("quant.method.fallback".into(), r.clone());
        }
        if !self.params.is_empty() {
            md.insert(
                "quant.params".into(),
                serde_json::Value::Object(self.params.clone()).to_string(),
            );
        }
        if !self.rules.is_empty() {
            md.insert("quant.rules".into(), self.rules.to_json().to_string());
        }
        md
    }

    /// Quantizes in-memory tensors (e.g. candle tensors wrapped in
    /// [`CandleSource`](crate::tensor::CandleSource)).
    pub fn quantize_sources(&self, sources: &[&dyn TensorSource]) -> Result<QuantizedModel> {
        let start = Instant::now();
        let records: Vec<(usize, TensorRecord)> = sources
            .iter()
            .map(|s| (0, crate::load::plain_record(s.meta())))
            .collect();
        let by_name = |e: &PlanEntry| -> Result<Vec<f32>> {
            sources
                .iter()
                .find(|s| s.meta().name == e.name)
                .ok_or_else(|| Error::tensor("", &e.name, "no such source"))?
                .to_f32()
        };
        let plan = self.plan(&records, Some(&by_name))?;
        let mut tensors = Vec::with_capacity(sources.len());
        for (i, (e, s)) in plan.entries.iter().zip(sources).enumerate() {
            if let Some(p) = &self.progress {
                p(&e.name, i, sources.len());
            }
            let q = if e.action == Action::Keep {
                QuantizedTensor {
                    record: self.kept_record(e),
                    parts: vec![Part::new(
                        PartLayout::new(&e.name, e.meta.dtype, e.meta.shape.clone()),
                        s.bytes()?.into_owned(),
                    )?],
                }
            } else {
                self.run_entry(&plan, e, &s.to_f32()?)?
            };
            tensors.push(q);
        }
        let all: Vec<&PlanEntry> = plan.entries.iter().collect();
        let artifacts = self.artifacts_for(&plan, &all)?;
        let mut metadata = self.base_metadata(&plan);
        merge_metadata(&mut metadata, &artifacts);
        let report = Report {
            resolved: plan.resolved.clone(),
            bytes_in: plan.bytes_in(),
            bytes_out: plan.bytes_out(),
            fallbacks: plan.fallbacks(),
            tensors: plan.entries,
            seconds: start.elapsed().as_secs_f64(),
            outputs: Vec::new(),
            warnings: Vec::new(),
        };
        Ok(QuantizedModel {
            tensors,
            metadata,
            artifacts,
            report,
        })
    }

    /// Plans a model on disk without writing anything (`quant plan`).
    pub fn plan_path(&self, input: impl AsRef<Path>) -> Result<(ModelFiles, Plan)> {
        let container = match self.format.as_deref() {
            Some(f) => format::container(f),
            None => self
                .container_extension()
                .and_then(|e| format::container(&e)),
        };
        let (model, _) = self.open_input(input.as_ref(), container)?;
        self.plan_files(model)
    }

    /// Opens the input, through a converter registered for the output container when
    /// one recognises the model folder; also returns the converters' warnings.
    fn open_input(
        &self,
        input: &Path,
        container: Option<&format::ContainerEntry>,
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

    fn plan_files(&self, model: ModelFiles) -> Result<(ModelFiles, Plan)> {
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
            self.source_values(reader.as_ref(), e)
        };
        let plan = self
            .plan_model(&records, &metadata, Some(&values))
            .map_err(|e| e.with_path(&model.root))?;
        Ok((model, plan))
    }

    /// Quantizes a safetensors file, a model folder or a container file (GGUF) into
    /// `output`: a file (its extension or [`format`](Self::format) picks the container)
    /// or, for a folder input, a folder mirroring it. Streaming: one tensor is in memory
    /// at a time; the output appears only when complete.
    pub fn quantize_path(
        &self,
        input: impl AsRef<Path>,
        output: impl AsRef<Path>,
    ) -> Result<Report> {
        let start = Instant::now();
        let output = output.as_ref();
        check_output(output, self.force)?;
        let container = self.output_container(output)?;
        let (model, warnings) = self.open_input(input.as_ref(), container)?;
        let (model, plan) = self.plan_files(model)?;
        let mut outputs = Vec::new();
        if let Some(c) = container {
            self.write_container(c, &model, &plan, output)?;
            outputs.push(output.to_path_buf());
            let info = output.with_extension("quantization_info.json");
            self.write_info(&info, &plan, start)?;
        } else if model.is_dir {
            outputs = self.write_folder(&model, &plan, output, start)?;
        } else {
            let parent = output
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !parent.is_dir() {
                return Err(Error::io(
                    output,
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "the output folder does not exist",
                    ),
                ));
            }
            let all: Vec<usize> = (0..plan.entries.len()).collect();
            self.write_shard(&model, &plan, &all, output)?;
            outputs.push(output.to_path_buf());
            let stem = output
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let info = output.with_file_name(format!("{stem}.quantization_info.json"));
            self.write_info(&info, &plan, start)?;
        }
        Ok(Report {
            resolved: plan.resolved.clone(),
            bytes_in: plan.bytes_in(),
            bytes_out: plan.bytes_out(),
            fallbacks: plan.fallbacks(),
            tensors: plan.entries,
            seconds: start.elapsed().as_secs_f64(),
            outputs,
            warnings,
        })
    }

    /// The default method's name as requested.
    pub fn method_name(&self) -> &str {
        &self.method
    }

    /// The extension of the container this quantizer writes into a pipeline component:
    /// the one asked for by [`format`](Self::format), else the container registered by the
    /// method's own backend (GGUF methods write `.gguf`); `None` for safetensors.
    pub fn container_extension(&self) -> Option<String> {
        let entry = match self.format.as_deref() {
            Some("safetensors") => return None,
            Some(f) => format::container(f)?,
            None => {
                let backend = Registry::global().ok()?.get(&self.method)?.backend;
                format::containers().find(|c| c.backend == backend)?
            }
        };
        entry.extensions.first().map(|e| e.to_string())
    }

    fn output_container(&self, output: &Path) -> Result<Option<&'static format::ContainerEntry>> {
        let ext = output
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let wanted = self.format.clone().unwrap_or(ext);
        if wanted.is_empty() || wanted == "safetensors" {
            return Ok(None);
        }
        match format::container(&wanted) {
            Some(c) => Ok(Some(c)),
            None if wanted == "gguf" => Err(Error::MethodNotCompiled {
                name: "gguf output".into(),
                backend: "quant-gguf".into(),
                feature: "gguf".into(),
            }),
            None if self.format.is_some() => Err(Error::Config {
                source_name: "--format".into(),
                entry: wanted,
                reason: "unknown output format (safetensors or a compiled-in container)".into(),
            }),
            None => Ok(None),
        }
    }

    /// Values of a planned tensor's source, dequantized when it is stored quantized.
    fn source_values(&self, reader: &dyn ContainerReader, e: &PlanEntry) -> Result<Vec<f32>> {
        if let Some(src) = reader.source(&e.name) {
            return src.to_f32();
        }
        let q = reader.read(&e.name)?;
        dequantize(&q)
    }

    fn produce(
        &self,
        plan: &Plan,
        reader: &dyn ContainerReader,
        e: &PlanEntry,
    ) -> Result<QuantizedTensor> {
        if e.action == Action::Keep {
            let q = reader.read(&e.name)?;
            return Ok(QuantizedTensor {
                record: self.kept_record(e),
                parts: q.parts,
            });
        }
        let values = self.source_values(reader, e)?;
        self.run_entry(plan, e, &values)
    }

    fn write_shard(
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
        let artifacts = self.artifacts_for(plan, &entries)?;
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
        let total = plan.entries.len();
        for (k, e) in entries.iter().enumerate() {
            if let Some(p) = &self.progress {
                p(&e.name, idx.get(k).copied().unwrap_or(0), total);
            }
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
                Action::Quantize => e
                    .method
                    .as_deref()
                    .and_then(|m| plan.methods.get(m))
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
                .produce(plan, reader.as_ref(), e)
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

    fn write_container(
        &self,
        c: &'static format::ContainerEntry,
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
                    .and_then(|m| plan.methods.get(m))
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

    fn write_folder(
        &self,
        model: &ModelFiles,
        plan: &Plan,
        dest: &Path,
        start: Instant,
    ) -> Result<Vec<PathBuf>> {
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !parent.is_dir() {
            return Err(Error::io(
                dest,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the output's parent folder does not exist",
                ),
            ));
        }
        clean_stale_temps(dest);
        let tmp = temp_path_for(dest);
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let guard = TempDirGuard(tmp.clone());
        let mut weight_map = serde_json::Map::new();
        let mut outputs = Vec::new();
        for (s, (rel, _)) in model.shards.iter().enumerate() {
            let idx: Vec<usize> = (0..plan.entries.len())
                .filter(|&i| plan.entries[i].shard == s)
                .collect();
            let mut rel = rel.clone();
            if rel.extension().is_some_and(|e| e != "safetensors") {
                rel.set_extension("safetensors");
            }
            self.write_shard(model, plan, &idx, &tmp.join(&rel))?;
            for &i in &idx {
                for l in &plan.entries[i].layout {
                    weight_map.insert(
                        l.key.clone(),
                        serde_json::Value::String(rel.to_string_lossy().into_owned()),
                    );
                }
            }
            outputs.push(dest.join(&rel));
        }
        // Sharded inputs keep an index naming the new keys.
        if model.shards.len() > 1 {
            let total: u64 = plan.bytes_out();
            let index =
                serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
            let name = model
                .shards
                .first()
                .map(|(r, _)| index_name_for(r))
                .unwrap_or_else(|| "model.safetensors.index.json".into());
            write_json(&tmp.join(name), &index)?;
        }
        let all: Vec<&PlanEntry> = plan.entries.iter().collect();
        let artifacts = self.artifacts_for(plan, &all)?;
        for f in &model.other_files {
            if f.as_os_str() == "config.json" {
                continue;
            }
            let from = model.root.join(f);
            std::fs::copy(&from, tmp.join(f)).map_err(|e| Error::io(&from, e))?;
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
            write_json(&tmp.join("config.json"), &cfg)?;
        }
        for (name, bytes) in merge_files(&artifacts) {
            let p = tmp.join(name);
            let mut f = AtomicFile::create(&p)?;
            f.write_all(&bytes)?;
            f.commit()?;
        }
        self.write_info(&tmp.join("quantization_info.json"), plan, start)?;
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
        crate::safetensors_io::rename_durable(&tmp, dest)?;
        std::mem::forget(guard);
        Ok(outputs)
    }

    fn write_info(&self, path: &Path, plan: &Plan, start: Instant) -> Result<()> {
        let info = serde_json::json!({
            "format_version": FORMAT_VERSION,
            "tool": "quant",
            "tool_version": env!("CARGO_PKG_VERSION"),
            "method": plan.resolved,
            "params": self.params,
            "rules": self.rules.to_json(),
            "target_memory_gb": self.target_memory_gb,
            "strict": self.strict,
            "bytes_in": plan.bytes_in(),
            "bytes_out": plan.bytes_out(),
            "fallbacks": plan.fallbacks(),
            "seconds": start.elapsed().as_secs_f64(),
            "tensors": plan.entries,
        });
        write_json(path, &info)
    }
}

/// Checks a mixture against the model it was made for: one choice per tensor, the order a
/// permutation, and one parameter set per chosen method (methods are instantiated once).
fn check_mixture(m: &Mixture, tensors: usize, by: &str) -> Result<()> {
    let bad = |reason: String| Error::Config {
        source_name: format!("method {by}"),
        entry: "mixture".into(),
        reason,
    };
    if m.choices.len() != tensors {
        return Err(bad(format!(
            "{} choices for {tensors} tensors",
            m.choices.len()
        )));
    }
    if let Some(order) = &m.order {
        let mut seen = vec![false; tensors];
        for &i in order {
            match seen.get_mut(i) {
                Some(s) if !*s => *s = true,
                _ => return Err(bad(format!("order index {i} repeated or out of range"))),
            }
        }
        if order.len() != tensors {
            return Err(bad(format!(
                "order lists {} of {tensors} tensors",
                order.len()
            )));
        }
    }
    let mut params: BTreeMap<&str, &Params> = BTreeMap::new();
    for c in &m.choices {
        if let TensorChoice::Method {
            name, params: p, ..
        } = c
        {
            if let Some(prev) = params.insert(name, p) {
                if prev != p {
                    return Err(bad(format!("method {name} chosen with two parameter sets")));
                }
            }
        }
    }
    Ok(())
}

/// Merges two text values from different methods: JSON lists are united (order kept),
/// JSON objects merged; otherwise the first one stays.
fn merge_text(a: &str, b: &str) -> String {
    if a == b {
        return a.to_string();
    }
    match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(serde_json::Value::Array(mut x)), Ok(serde_json::Value::Array(y))) => {
            for v in y {
                if !x.contains(&v) {
                    x.push(v);
                }
            }
            serde_json::Value::Array(x).to_string()
        }
        (Ok(serde_json::Value::Object(mut x)), Ok(serde_json::Value::Object(y))) => {
            for (k, v) in y {
                x.entry(k).or_insert(v);
            }
            serde_json::Value::Object(x).to_string()
        }
        _ => a.to_string(),
    }
}

/// Adds every method's metadata, merging keys several methods set.
fn merge_metadata(md: &mut BTreeMap<String, String>, artifacts: &[(String, Artifacts)]) {
    for (_, a) in artifacts {
        for (k, v) in &a.metadata {
            let merged = match md.get(k) {
                Some(old) => merge_text(old, v),
                None => v.clone(),
            };
            md.insert(k.clone(), merged);
        }
    }
}

/// Every method's sidecar files, merging files of the same name (JSON objects merged).
fn merge_files(artifacts: &[(String, Artifacts)]) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for (_, a) in artifacts {
        for (name, bytes) in &a.files {
            match out.iter_mut().find(|(n, _)| n == name) {
                Some((_, old)) => {
                    if let (Ok(x), Ok(y)) = (std::str::from_utf8(old), std::str::from_utf8(bytes)) {
                        let merged = merge_text(x, y);
                        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&merged) {
                            *old = serde_json::to_vec_pretty(&v)
                                .unwrap_or_else(|_| merged.into_bytes());
                        }
                    }
                }
                None => out.push((name.clone(), bytes.clone())),
            }
        }
    }
    out
}

/// Removes a temporary output folder unless forgotten.
struct TempDirGuard(PathBuf);

impl Drop for TempDirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn index_name_for(shard: &Path) -> String {
    let n = shard.to_string_lossy();
    // model-00001-of-00002.safetensors -> model.safetensors.index.json
    let base = n
        .split("-0")
        .next()
        .unwrap_or("model")
        .trim_end_matches(".safetensors");
    format!("{base}.safetensors.index.json")
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let text =
        serde_json::to_vec_pretty(v).map_err(|e| Error::file(path, "json", e.to_string()))?;
    let mut f = AtomicFile::create(path)?;
    f.write_all(&text)?;
    f.commit()
}

fn layout_bytes(layout: &[PartLayout], name: &str) -> Result<u64> {
    layout.iter().try_fold(0u64, |acc, l| {
        l.byte_len()
            .and_then(|b| acc.checked_add(b as u64))
            .ok_or_else(|| Error::tensor("", name, "output size overflows"))
    })
}

/// Quantized tensors held in memory, with what is needed to save them.
#[derive(Debug)]
pub struct QuantizedModel {
    /// The tensors, in input order.
    pub tensors: Vec<QuantizedTensor>,
    /// Header metadata for a safetensors file.
    pub metadata: BTreeMap<String, String>,
    /// What each method contributes around the tensors.
    pub artifacts: Vec<(String, Artifacts)>,
    /// What was done.
    pub report: Report,
}

impl QuantizedModel {
    /// Restores tensor `name` as f32 values.
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>> {
        let q = self
            .tensors
            .iter()
            .find(|t| t.record.name == name)
            .ok_or_else(|| Error::tensor("", name, "no such tensor"))?;
        dequantize(q)
    }

    /// Saves as one safetensors file (atomically), with quant's records in the header.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut md = self.metadata.clone();
        let records: Vec<&TensorRecord> = self.tensors.iter().map(|t| &t.record).collect();
        md.insert(
            META_TENSORS.into(),
            serde_json::to_string(&records)
                .map_err(|e| Error::file(path.as_ref(), "json", e.to_string()))?,
        );
        let parts: Vec<Part> = self
            .tensors
            .iter()
            .flat_map(|t| t.parts.iter().cloned())
            .collect();
        crate::safetensors_io::write_safetensors(path, &parts, &md)
    }
}

/// Quantizes named candle tensors with `method` (the seed's convenience function).
#[cfg(feature = "candle")]
pub fn quantize_model<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a candle_core::Tensor)>,
    method: &str,
) -> Result<QuantizedModel> {
    let sources = tensors
        .into_iter()
        .map(|(n, t)| crate::tensor::CandleSource::new(n, t.clone()))
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&dyn TensorSource> = sources.iter().map(|s| s as &dyn TensorSource).collect();
    ModelQuantizer::new(method).quantize_sources(&refs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::MethodEntry;

    /// Stores f32 tensors as they are (a stand-in method for the mixture tests).
    struct Plain;

    impl QuantMethod for Plain {
        fn name(&self) -> &str {
            "test_plain"
        }
        fn params(&self) -> Params {
            Params::new()
        }
        fn select(&self, _: &TensorMeta) -> Selection {
            Selection::Quantize
        }
        fn output_layout(&self, t: &TensorMeta) -> Result<Vec<PartLayout>> {
            Ok(vec![PartLayout::new(&t.name, DType::F32, t.shape.clone())])
        }
        fn quantize(&self, t: &TensorMeta, values: &[f32]) -> Result<QuantizedTensor> {
            let record = crate::load::plain_record(t);
            let data = encode_f32(DType::F32, values)?;
            QuantizedTensor::from_layout(record, self.output_layout(t)?, vec![data])
        }
        fn dequantize(&self, q: &QuantizedTensor) -> Result<Vec<f32>> {
            dequantize(q)
        }
    }

    /// Mixes by name: `a*` → test_plain (a fallback for `a2`), `k*` → kept as f16,
    /// others by default; output in reverse order. `bad=1` gives one choice too few.
    struct Mix(bool);

    impl QuantMethod for Mix {
        fn name(&self) -> &str {
            "test_mix"
        }
        fn params(&self) -> Params {
            Params::new()
        }
        fn select(&self, _: &TensorMeta) -> Selection {
            Selection::Keep(None)
        }
        fn output_layout(&self, t: &TensorMeta) -> Result<Vec<PartLayout>> {
            Ok(vec![PartLayout::new(&t.name, t.dtype, t.shape.clone())])
        }
        fn quantize(&self, _: &TensorMeta, _: &[f32]) -> Result<QuantizedTensor> {
            Err(Error::Unsupported {
                method: "test_mix".into(),
                op: "quantize".into(),
            })
        }
        fn dequantize(&self, q: &QuantizedTensor) -> Result<Vec<f32>> {
            dequantize(q)
        }
        fn mixture(&self, model: &ModelView<'_>) -> Result<Option<Mixture>> {
            assert_eq!(model.metadata.get("arch").map(String::as_str), Some("x"));
            let mut choices: Vec<TensorChoice> = model
                .tensors
                .iter()
                .map(|t| match t.name.as_bytes().first() {
                    Some(b'a') => TensorChoice::Method {
                        name: "test_plain".into(),
                        params: Params::new(),
                        fallback: (t.name == "a2").then(|| "rows do not fit".to_string()),
                    },
                    Some(b'k') => TensorChoice::Keep(Some(DType::F16)),
                    _ => TensorChoice::Default,
                })
                .collect();
            if self.0 {
                choices.pop();
            }
            let order = (0..model.tensors.len()).rev().collect();
            Ok(Some(Mixture {
                choices,
                order: Some(order),
            }))
        }
    }

    crate::register_method!(MethodEntry {
        name: "test_plain",
        backend: "quant-core-tests",
        bits_per_weight: 32.0,
        summary: "f32 as stored (tests)",
        params: &[],
        create: |_| Ok(Box::new(Plain)),
    });
    crate::register_method!(MethodEntry {
        name: "test_mix",
        backend: "quant-core-tests",
        bits_per_weight: 32.0,
        summary: "a mixture (tests)",
        params: &[],
        create: |p| Ok(Box::new(Mix(p.contains_key("bad")))),
    });

    fn records() -> Vec<(usize, TensorRecord)> {
        ["a1", "k1", "z1", "a2"]
            .iter()
            .map(|n| {
                (
                    0,
                    crate::load::plain_record(&TensorMeta::new(*n, DType::F32, vec![2, 4])),
                )
            })
            .collect()
    }

    fn meta() -> BTreeMap<String, String> {
        BTreeMap::from([("arch".to_string(), "x".to_string())])
    }

    #[test]
    fn mixture_chooses_methods_keeps_and_order() {
        let plan = ModelQuantizer::new("test_mix")
            .plan_model(&records(), &meta(), None)
            .unwrap();
        let got: Vec<(&str, Action, Option<&str>, bool)> = plan
            .entries
            .iter()
            .map(|e| {
                (
                    e.name.as_str(),
                    e.action,
                    e.method.as_deref(),
                    e.is_fallback,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a2", Action::Quantize, Some("test_plain"), true),
                ("z1", Action::Keep, None, false),
                ("k1", Action::Cast, None, false),
                ("a1", Action::Quantize, Some("test_plain"), false),
            ]
        );
        assert_eq!(plan.entries[2].layout[0].dtype, DType::F16);
        assert_eq!(plan.fallbacks(), 1);
    }

    #[test]
    fn rules_win_over_the_mixture_and_strict_refuses_its_fallbacks() {
        let q = ModelQuantizer::new("test_mix")
            .rules(Rules::from_pairs([("^a1$", "float16")]).unwrap());
        let plan = q.plan_model(&records(), &meta(), None).unwrap();
        let a1 = plan.entries.iter().find(|e| e.name == "a1").unwrap();
        assert_eq!((a1.action, a1.method.as_deref()), (Action::Cast, None));
        let err = ModelQuantizer::new("test_mix")
            .strict(true)
            .plan_model(&records(), &meta(), None)
            .unwrap_err();
        assert!(matches!(err, Error::StrictFallback { ref tensor, .. } if tensor == "a2"));
    }

    #[test]
    fn a_mixture_that_does_not_fit_the_model_is_an_error() {
        let err = ModelQuantizer::new("test_mix")
            .param("bad", serde_json::Value::Bool(true))
            .plan_model(&records(), &meta(), None)
            .unwrap_err();
        assert!(err.to_string().contains("3 choices for 4 tensors"), "{err}");
    }
}
