//! Stage 2, plan: opens the input (through a converter when one applies), then decides
//! every tensor's action, method, layout and output file once — rules, the method's
//! selection or mixture, per-tensor fallbacks and the memory target.
//!
//! By what it decides: here, each tensor's action and method (rules, the method's
//! selection or mixture, per-tensor fallbacks, method instances); [`target`], the memory
//! target; [`files`], the input (converters) and the output files (shards, splits).

mod files;
mod target;
#[cfg(test)]
mod tests;

pub(in crate::engine) use files::source_values_into;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::dtype::DType;
use crate::engine::configure::ModelQuantizer;
use crate::error::{Error, Result};
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

    pub(super) fn plan_one(
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

    pub(super) fn finish_keep(&self, entry: &mut PlanEntry, cast: Option<DType>) -> Result<()> {
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

    /// The (cached) instance of `name`, a method other than the default (a rule's, a
    /// fallback, a memory-target candidate), with the user's parameters it declares,
    /// leaving out each one it refuses by name (e.g. a GGUF `type` that names another
    /// method's type) so the others (the imatrix) still reach it. None when the default
    /// itself is a fallback (`default`), whose parameters were given for another method.
    pub(super) fn shared_instance(
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
