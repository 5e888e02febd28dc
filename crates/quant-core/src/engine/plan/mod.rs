//! Stage 2, plan: opens the input (through a converter when one applies), then decides
//! every tensor's action, method, layout and output file once — rules, the method's
//! selection or mixture, per-tensor fallbacks and the memory target.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::configure::{ModelQuantizer, Output, BYTES_PER_GB};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::format::{self, ContainerEntry, ContainerReader};
use crate::load::{dequantize, ModelFiles};
use crate::method::{
    Mixture, ModelView, Params, PartLayout, QuantMethod, Selection, TensorChoice, TensorRecord,
};
use crate::plan::{layout_bytes, Action, Plan, PlanEntry, ValueFn};
use crate::registry::{Registry, Resolved};
use crate::rules::RuleAction;
use crate::tensor::TensorMeta;

impl ModelQuantizer {
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
        let (default_instance, default) =
            self.instance(&resolved.effective, &default_params, &mut methods)?;
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
            files: Vec::new(),
            methods,
            default_instance,
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
            file: 0,
            meta: meta.clone(),
            name: rec.name.clone(),
            rule: None,
            action: Action::Keep,
            method: None,
            instance: None,
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
        let (mut key, mut method) = match chosen_params {
            Some(p) => self.instance(&method_name, &p, methods)?,
            None if method_name == default.effective && default.fallback_reason.is_none() => {
                self.instance(&method_name, &self.params, methods)?
            }
            // A rule's method gets the user's parameters it takes (every GGUF method the
            // imatrix), as llama-quantize uses the imatrix for overridden tensors too.
            None => self.shared_instance(&method_name, default, methods)?,
        };
        for _ in 0..8 {
            match method.select(&meta) {
                Selection::Quantize => {
                    entry.action = Action::Quantize;
                    entry.method = Some(method.name().to_string());
                    entry.instance = Some(key);
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
                    (key, method) = self.shared_instance(&res.effective, default, methods)?;
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
        entry.instance = None;
        entry.bytes_out = layout_bytes(&entry.layout, &meta.name)?;
        Ok(())
    }

    /// Applies the memory target, if any: refuses a plan over it, or (auto-optimize)
    /// moves tensors between methods of the default's backend until it fits.
    fn fit_target(&self, plan: &mut Plan, values: Option<&ValueFn<'_>>) -> Result<()> {
        let Some(gb) = self.target_memory_gb else {
            return Ok(());
        };
        let target = (gb * BYTES_PER_GB) as u64;
        let needed = plan.bytes_out();
        let result = if !self.auto_optimize {
            if needed <= target {
                return Ok(());
            }
            Err(Error::OverTarget {
                needed,
                target,
                over: needed - target,
                hint: String::new(),
            })
        } else {
            let registry = Registry::global()?;
            let backend = registry
                .get(&plan.resolved.effective)
                .map(|e| e.backend)
                .unwrap_or("");
            // Every candidate gets the user's parameters it declares (e.g. every GGUF
            // method the imatrix), as the default got them.
            let mut ladder = Vec::new();
            for e in registry.entries().filter(|e| e.backend == backend) {
                ladder.push(self.shared_instance(e.name, &plan.resolved, &mut plan.methods)?);
            }
            crate::planner::fit(plan, &ladder, target, gb, values)
        };
        match result {
            Err(Error::OverTarget { needed, over, .. }) => Err(Error::OverTarget {
                needed,
                target,
                over,
                hint: self.what_fits(plan, target)?,
            }),
            other => other,
        }
    }

    /// The (cached) instance of `name`, a method other than the default (a rule's, a
    /// fallback, a memory-target candidate), with the user's parameters it declares,
    /// leaving out each one it refuses by name (e.g. a GGUF `type` that names another
    /// method's type) so the others (the imatrix) still reach it. None when the default
    /// itself is a fallback (`default`), whose parameters were given for another method.
    fn shared_instance(
        &self,
        name: &str,
        default: &Resolved,
        methods: &mut BTreeMap<String, Arc<dyn QuantMethod>>,
    ) -> Result<(String, Arc<dyn QuantMethod>)> {
        let declared = Registry::global()?
            .get(name)
            .map(|e| e.params)
            .unwrap_or(&[]);
        let mut params: Params = if default.fallback_reason.is_none() {
            self.params
                .iter()
                .filter(|(k, _)| declared.iter().any(|p| p.name == k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        } else {
            Params::new()
        };
        loop {
            match self.instance(name, &params, methods) {
                Err(Error::BadParam { param, .. }) if params.remove(&param).is_some() => {}
                other => return other,
            }
        }
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

    /// Plans a model on disk without writing anything (`quant plan`).
    pub fn plan_path(&self, input: impl AsRef<Path>) -> Result<(ModelFiles, Plan)> {
        let container = match self.format.as_deref() {
            Some(f) => format::container(f),
            None => self
                .container_extension()
                .and_then(|e| format::container(&e)),
        };
        let (model, _) = self.open_input(input.as_ref(), container)?;
        self.plan_files(model, None)
    }

    /// Opens the input, through a converter registered for the output container when
    /// one recognises the model folder; also returns the converters' warnings.
    pub(super) fn open_input(
        &self,
        input: &Path,
        container: Option<&ContainerEntry>,
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

    /// Plans an opened model for `output` (kind and path; `None`: a dry run, the files
    /// named as the input's).
    pub(super) fn plan_files(
        &self,
        model: ModelFiles,
        output: Option<(Output, &Path)>,
    ) -> Result<(ModelFiles, Plan)> {
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
            source_values(reader.as_ref(), e)
        };
        let mut plan = self
            .plan_model(&records, &metadata, Some(&values))
            .map_err(|e| e.with_path(&model.root))?;
        self.assign_files(&mut plan, &model, output)?;
        Ok((model, plan))
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

impl ModelQuantizer {
    /// Names the output files and puts each entry in one: a folder output keeps the
    /// input's shards (as `.safetensors`) or, with a maximum shard size, is split by size
    /// as transformers' `save_pretrained` splits; a container output is one file, or
    /// split by its format's convention; a single file holds everything.
    fn assign_files(
        &self,
        plan: &mut Plan,
        model: &ModelFiles,
        output: Option<(Output, &Path)>,
    ) -> Result<()> {
        let file_name = |p: &Path| PathBuf::from(p.file_name().unwrap_or(p.as_os_str()));
        match (output, self.max_shard_size, self.split) {
            (Some((Output::Folder, _)), Some(max), _) => {
                shard_by_size(plan, max, &shard_prefix(model))
            }
            (None | Some((Output::Folder, _)), _, _) => {
                plan.files = model
                    .shards
                    .iter()
                    .map(|(rel, _)| {
                        let mut rel = rel.clone();
                        if output.is_some() && rel.extension().is_some_and(|e| e != "safetensors") {
                            rel.set_extension("safetensors");
                        }
                        rel
                    })
                    .collect();
                for e in &mut plan.entries {
                    e.file = e.shard;
                }
            }
            (Some((Output::Container(c), p)), _, Some(limits)) => {
                let split = c.split.ok_or_else(|| Error::Config {
                    source_name: p.display().to_string(),
                    entry: "split".into(),
                    reason: format!("{} files cannot be split", c.name),
                })?;
                let all: Vec<usize> = (0..plan.entries.len()).collect();
                let (files, file_of) = split(p, &plan.planned_outputs(&all), &limits)?;
                plan.files = files.iter().map(|f| file_name(f)).collect();
                for (e, f) in plan.entries.iter_mut().zip(file_of) {
                    e.file = f;
                }
            }
            (Some((Output::File | Output::Container(_), p)), _, _) => {
                plan.files = vec![file_name(p)];
                for e in &mut plan.entries {
                    e.file = 0;
                }
            }
        }
        Ok(())
    }
}

/// The stem of a folder's weight files (`model` for `model-00001-of-00002.safetensors`,
/// `diffusion_pytorch_model` for diffusers); `model` for a single-file input.
fn shard_prefix(model: &ModelFiles) -> String {
    let first = model.shards.first().filter(|_| model.is_dir);
    let Some((rel, _)) = first else {
        return "model".into();
    };
    let stem = rel
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = match stem.rsplit_once("-of-") {
        Some((head, _)) => head.rsplit_once('-').map(|(b, _)| b).unwrap_or(head),
        None => stem.as_str(),
    };
    if base.is_empty() {
        "model".into()
    } else {
        base.to_string()
    }
}

/// Splits the plan's entries (in plan order, each logical tensor whole) into files of at
/// most `max` bytes as huggingface_hub's `split_state_dict_into_shards` does: a tensor
/// larger than `max` gets a file of its own at once, and a file is closed when the next
/// tensor would take it over `max`. One file is `{prefix}.safetensors`; several are
/// `{prefix}-0000K-of-0000N.safetensors`.
fn shard_by_size(plan: &mut Plan, max: u64, prefix: &str) {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut size = 0u64;
    for (i, e) in plan.entries.iter().enumerate() {
        if e.bytes_out > max {
            groups.push(vec![i]);
            continue;
        }
        if size + e.bytes_out > max && !current.is_empty() {
            groups.push(std::mem::take(&mut current));
            size = 0;
        }
        current.push(i);
        size += e.bytes_out;
    }
    if !current.is_empty() || groups.is_empty() {
        groups.push(current);
    }
    let n = groups.len();
    plan.files = (1..=n)
        .map(|k| {
            PathBuf::from(if n == 1 {
                format!("{prefix}.safetensors")
            } else {
                format!("{prefix}-{k:05}-of-{n:05}.safetensors")
            })
        })
        .collect();
    for (f, group) in groups.iter().enumerate() {
        for &i in group {
            if let Some(e) = plan.entries.get_mut(i) {
                e.file = f;
            }
        }
    }
}

/// Values of a planned tensor's source, dequantized when it is stored quantized.
pub(super) fn source_values(reader: &dyn ContainerReader, e: &PlanEntry) -> Result<Vec<f32>> {
    if let Some(src) = reader.source(&e.name) {
        return src.to_f32();
    }
    let q = reader.read(&e.name)?;
    dequantize(&q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::encode_f32;
    use crate::method::QuantizedTensor;
    use crate::registry::MethodEntry;
    use crate::rules::Rules;

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
    /// `p*` → test_ladder_wide with `scale = 7`, others by default; output in reverse
    /// order. `bad=1` gives one choice too few.
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
                    Some(b'p') => {
                        let mut params = Params::new();
                        params.insert("scale".into(), 7.into());
                        TensorChoice::Method {
                            name: "test_ladder_wide".into(),
                            params,
                            fallback: None,
                        }
                    }
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

    /// A ladder method of backend `quant-core-ladder-tests` that keeps its parameters:
    /// `wide` (f32) takes `scale`, `tag` and `extra`; `narrow` (f16) takes `scale` and
    /// `tag`, and refuses a `tag` other than "narrow".
    struct Rung(&'static str, DType, Params);

    impl QuantMethod for Rung {
        fn name(&self) -> &str {
            self.0
        }
        fn params(&self) -> Params {
            self.2.clone()
        }
        fn select(&self, _: &TensorMeta) -> Selection {
            Selection::Quantize
        }
        fn output_layout(&self, t: &TensorMeta) -> Result<Vec<PartLayout>> {
            Ok(vec![PartLayout::new(&t.name, self.1, t.shape.clone())])
        }
        fn quantize(&self, t: &TensorMeta, values: &[f32]) -> Result<QuantizedTensor> {
            let record = crate::load::plain_record(t);
            let data = encode_f32(self.1, values)?;
            QuantizedTensor::from_layout(record, self.output_layout(t)?, vec![data])
        }
        fn dequantize(&self, q: &QuantizedTensor) -> Result<Vec<f32>> {
            dequantize(q)
        }
    }

    const fn spec(name: &'static str) -> crate::method::ParamSpec {
        crate::method::ParamSpec {
            name,
            default: "none",
            help: "test",
        }
    }

    const WIDE: &[crate::method::ParamSpec] = &[spec("scale"), spec("tag"), spec("extra")];
    const NARROW: &[crate::method::ParamSpec] = &[spec("scale"), spec("tag")];

    fn create_rung(
        name: &'static str,
        dtype: DType,
        specs: &[crate::method::ParamSpec],
        p: &Params,
    ) -> Result<Box<dyn QuantMethod>> {
        let known = || specs.iter().map(|s| s.describe()).collect();
        if let Some(k) = p.keys().find(|k| !specs.iter().any(|s| s.name == *k)) {
            return Err(Error::BadParam {
                method: name.into(),
                param: k.clone(),
                reason: "unknown parameter".into(),
                known: known(),
            });
        }
        if name == "test_ladder_narrow" && p.get("tag").is_some_and(|t| t != "narrow") {
            return Err(Error::BadParam {
                method: name.into(),
                param: "tag".into(),
                reason: "not this method's tag".into(),
                known: known(),
            });
        }
        Ok(Box::new(Rung(name, dtype, p.clone())))
    }

    crate::register_method!(MethodEntry {
        name: "test_ladder_wide",
        backend: "quant-core-ladder-tests",
        bits_per_weight: 32.0,
        summary: "f32, keeps its parameters (tests)",
        params: WIDE,
        create: |p| create_rung("test_ladder_wide", DType::F32, WIDE, p),
    });
    crate::register_method!(MethodEntry {
        name: "test_ladder_narrow",
        backend: "quant-core-ladder-tests",
        bits_per_weight: 16.0,
        summary: "f16, keeps its parameters (tests)",
        params: NARROW,
        create: |p| create_rung("test_ladder_narrow", DType::F16, NARROW, p),
    });

    /// The memory target's ladder: the other candidate gets the user's parameters it
    /// declares (`scale`), not those it does not (`extra`, which it would refuse), and
    /// not one it refuses by name (`tag`); before, it got none.
    #[test]
    fn ladder_candidates_get_the_user_params_they_declare() {
        let recs: Vec<(usize, TensorRecord)> = ["w1", "w2"]
            .iter()
            .map(|n| {
                let meta = TensorMeta::new(*n, DType::F32, vec![4, 8]);
                (0, crate::load::plain_record(&meta))
            })
            .collect();
        let q = ModelQuantizer::new("test_ladder_wide")
            .param("scale", 2.into())
            .param("tag", "wide".into())
            .param("extra", 1.into());
        // 2 tensors of 32 values: 256 bytes as f32, 128 as f16; 200 fits one of each.
        let plan = q
            .clone()
            .target_memory_gb(Some(200.0 / BYTES_PER_GB))
            .plan_model(&recs, &BTreeMap::new(), None)
            .unwrap();
        assert_eq!(plan.bytes_out(), 192);
        let narrow = plan.method("test_ladder_narrow").unwrap().params();
        assert_eq!(
            serde_json::Value::Object(narrow),
            serde_json::json!({"scale": 2})
        );
        let wide = plan.method("test_ladder_wide").unwrap().params();
        assert_eq!(wide.len(), 3, "{wide:?}");
        let methods: Vec<_> = plan.entries.iter().map(|e| e.method.as_deref()).collect();
        assert!(methods.contains(&Some("test_ladder_narrow")), "{methods:?}");
    }

    /// One method with two sets of parameters in one plan (a rule's, none; the
    /// mixture's, `scale = 7`) is two instances, whichever tensor comes first: before,
    /// the first instance created served both.
    #[test]
    fn one_method_with_two_parameter_sets_is_two_instances() {
        for names in [["p1", "r1"], ["r1", "p1"]] {
            let recs: Vec<(usize, TensorRecord)> = names
                .iter()
                .map(|n| {
                    let meta = TensorMeta::new(*n, DType::F32, vec![4, 8]);
                    (0, crate::load::plain_record(&meta))
                })
                .collect();
            let plan = ModelQuantizer::new("test_mix")
                .rules(Rules::from_pairs([("^r1$", "test_ladder_wide")]).unwrap())
                .plan_model(&recs, &meta(), None)
                .unwrap();
            let idx: Vec<usize> = (0..plan.entries.len()).collect();
            for (e, out) in plan.entries.iter().zip(plan.planned_outputs(&idx)) {
                assert_eq!(e.method.as_deref(), Some("test_ladder_wide"), "{names:?}");
                let want = if e.name == "p1" {
                    serde_json::json!({"scale": 7})
                } else {
                    serde_json::json!({})
                };
                assert_eq!(serde_json::Value::Object(out.params), want, "{}", e.name);
                let m = plan.instance(e).unwrap();
                assert_eq!(serde_json::Value::Object(m.params()), want, "{}", e.name);
            }
            let keys: Vec<_> = plan.entries.iter().map(|e| e.instance.clone()).collect();
            assert_ne!(keys[0], keys[1], "{names:?}");
        }
    }

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
