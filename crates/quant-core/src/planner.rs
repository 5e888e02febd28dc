//! Memory targeting: fits a plan into a byte budget by moving tensors along a ladder of
//! methods of the same backend, using measured sensitivity.
//!
//! For every tensor the default method quantizes, each candidate (the registered methods
//! of the default's backend that take its shape, plus "unquantized" in its own dtype) is
//! tried on a sample of up to [`SAMPLE_ROWS`] evenly spaced rows: the squared error of
//! quantize → dequantize, scaled to the whole tensor, is the tensor's error under that
//! candidate. Over the budget, the move that loses the least error per byte saved is taken
//! until the plan fits; with room left, the move that removes the most error per byte added
//! is taken while it fits. Both are greedy over exact byte counts, so the written file is
//! exactly the planned size.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::method::QuantMethod;
use crate::method::Selection;
use crate::plan::{Action, Plan, PlanEntry, ValueFn};
use crate::tensor::TensorMeta;

/// Rows sampled per tensor to measure a candidate's error.
pub const SAMPLE_ROWS: usize = 128;

/// One rung of a tensor's ladder.
#[derive(Clone, Debug)]
pub struct Rung {
    /// The method (`None`: unquantized in the source dtype).
    pub method: Option<String>,
    /// Exact stored bytes.
    pub bytes: u64,
    /// Estimated squared error over the whole tensor.
    pub sse: f64,
}

/// Picks evenly spaced rows of a tensor viewed as `[shape[0], rest]`; returns the sampled
/// meta, values and the factor that scales sampled error to the whole tensor.
pub fn sample_rows(meta: &TensorMeta, values: &[f32]) -> (TensorMeta, Vec<f32>, f64) {
    let rows = meta.shape.first().copied().unwrap_or(1).max(1);
    let cols = values.len() / rows;
    if rows <= SAMPLE_ROWS || cols == 0 {
        return (meta.clone(), values.to_vec(), 1.0);
    }
    let mut out = Vec::with_capacity(SAMPLE_ROWS * cols);
    for k in 0..SAMPLE_ROWS {
        let r = k * rows / SAMPLE_ROWS;
        out.extend_from_slice(values.get(r * cols..(r + 1) * cols).unwrap_or(&[]));
    }
    let mut shape = meta.shape.clone();
    if let Some(first) = shape.first_mut() {
        *first = SAMPLE_ROWS;
    }
    (
        TensorMeta::new(meta.name.clone(), meta.dtype, shape),
        out,
        rows as f64 / SAMPLE_ROWS as f64,
    )
}

/// Squared error of `method` on `values` (sampled), scaled to the whole tensor.
pub fn measure(method: &dyn QuantMethod, meta: &TensorMeta, values: &[f32]) -> Result<f64> {
    let (smeta, svalues, scale) = sample_rows(meta, values);
    let attempt = |m: &TensorMeta, v: &[f32]| -> Result<f64> {
        let q = method.quantize(m, v)?;
        let d = method.dequantize(&q)?;
        Ok(v.iter()
            .zip(&d)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum())
    };
    match attempt(&smeta, &svalues) {
        Ok(e) => Ok(e * scale),
        // Some methods need the whole tensor (shape rules on the row count).
        Err(_) => attempt(meta, values),
    }
}

/// The candidates for one tensor, cheapest first.
pub fn ladder(
    entry: &PlanEntry,
    methods: &[&dyn QuantMethod],
    values: Option<&[f32]>,
) -> Result<Vec<Rung>> {
    let mut rungs = Vec::new();
    let meta = &entry.meta;
    for m in methods {
        if m.select(meta) != Selection::Quantize {
            continue;
        }
        let layout = m.output_layout(meta)?;
        let bytes = layout.iter().try_fold(0u64, |a, l| {
            l.byte_len().and_then(|b| a.checked_add(b as u64))
        });
        let Some(bytes) = bytes else { continue };
        let sse = match values {
            Some(v) => match measure(*m, meta, v) {
                Ok(e) => e,
                Err(_) => continue,
            },
            None => f64::NAN,
        };
        rungs.push(Rung {
            method: Some(m.name().to_string()),
            bytes,
            sse,
        });
    }
    rungs.push(Rung {
        method: None,
        bytes: entry.bytes_in,
        sse: 0.0,
    });
    rungs.sort_by(|a, b| a.bytes.cmp(&b.bytes).then(b.sse.total_cmp(&a.sse)));
    // Without measurements, error falls with size: rank by bytes alone.
    if values.is_none() {
        let n = rungs.len();
        for (i, r) in rungs.iter_mut().enumerate() {
            r.sse = (n - 1 - i) as f64;
        }
    }
    // Drop rungs that cost more and are not better than a cheaper one.
    let mut kept: Vec<Rung> = Vec::new();
    for r in rungs {
        if kept.last().is_some_and(|k| k.sse <= r.sse) {
            continue;
        }
        if kept.last().is_some_and(|k| k.bytes == r.bytes) {
            kept.pop();
        }
        kept.push(r);
    }
    Ok(kept)
}

/// Greedy fit of `entries` (with their ladders and current rung) into `target` bytes;
/// `fixed` is the bytes of everything not on a ladder. Returns the chosen rung per entry.
pub fn optimize(
    ladders: &[Vec<Rung>],
    start: &[usize],
    fixed: u64,
    target: u64,
) -> Result<Vec<usize>> {
    let mut at = start.to_vec();
    let total = |at: &[usize]| -> u64 {
        fixed
            + ladders
                .iter()
                .zip(at)
                .map(|(l, &i)| l.get(i).map(|r| r.bytes).unwrap_or(0))
                .sum::<u64>()
    };
    let mut now = total(&at);
    while now > target {
        // Cheapest loss of error per byte saved.
        let best = (0..ladders.len())
            .filter(|&t| at[t] > 0)
            .map(|t| {
                let (hi, lo) = (&ladders[t][at[t]], &ladders[t][at[t] - 1]);
                let saved = (hi.bytes - lo.bytes) as f64;
                ((lo.sse - hi.sse) / saved, t)
            })
            .min_by(|a, b| a.0.total_cmp(&b.0));
        let Some((_, t)) = best else {
            return Err(Error::OverTarget {
                needed: now,
                target,
                over: now - target,
                hint: "even the smallest method of the backend for every tensor does not fit"
                    .into(),
            });
        };
        at[t] -= 1;
        now = total(&at);
    }
    loop {
        let room = target - now;
        let best = (0..ladders.len())
            .filter(|&t| at[t] + 1 < ladders[t].len())
            .filter_map(|t| {
                let (lo, hi) = (&ladders[t][at[t]], &ladders[t][at[t] + 1]);
                let added = hi.bytes - lo.bytes;
                (added <= room && hi.sse < lo.sse)
                    .then(|| ((lo.sse - hi.sse) / added.max(1) as f64, t))
            })
            .max_by(|a, b| a.0.total_cmp(&b.0));
        let Some((_, t)) = best else { break };
        at[t] += 1;
        now = total(&at);
    }
    Ok(at)
}

/// Applies a chosen rung to a plan entry.
pub fn apply(
    entry: &mut PlanEntry,
    rung: &Rung,
    method: Option<&dyn QuantMethod>,
    note: String,
) -> Result<()> {
    match (&rung.method, method) {
        (Some(_), Some(m)) => {
            entry.action = Action::Quantize;
            entry.method = Some(m.name().to_string());
            entry.layout = m.output_layout(&entry.meta)?;
        }
        _ => {
            entry.action = Action::Keep;
            entry.method = None;
            entry.layout = vec![crate::method::PartLayout::new(
                &entry.name,
                entry.meta.dtype,
                entry.meta.shape.clone(),
            )];
        }
    }
    entry.bytes_out = rung.bytes;
    entry.note = Some(note);
    Ok(())
}

/// Fits `plan` into `target` bytes (`gb` as the user gave it, for the notes) by moving the
/// tensors the default method quantizes (no rule, no fallback) along ladders of `methods`
/// (instances also held by the plan), measuring each candidate on `values` when given.
/// Over the target even at the cheapest rungs: [`Error::OverTarget`] with an empty hint.
pub fn fit(
    plan: &mut Plan,
    methods: &[Arc<dyn QuantMethod>],
    target: u64,
    gb: f64,
    values: Option<&ValueFn<'_>>,
) -> Result<()> {
    let refs: Vec<&dyn QuantMethod> = methods.iter().map(|m| m.as_ref()).collect();
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
        let l = ladder(e, &refs, vals.as_deref())?;
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
    let chosen = optimize(&ladders, &start, fixed, target)?;
    for (k, &i) in movable.iter().enumerate() {
        let (Some(l), Some(&c)) = (ladders.get(k), chosen.get(k)) else {
            continue;
        };
        let Some(rung) = l.get(c) else { continue };
        let m = rung
            .method
            .as_deref()
            .and_then(|n| plan.methods.get(n))
            .cloned();
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
        let note = format!(
            "target {gb} GB: {} -> {}",
            e.method.clone().unwrap_or_default(),
            rung.method
                .clone()
                .unwrap_or_else(|| format!("unquantized {}", e.meta.dtype))
        );
        apply(e, rung, m.as_deref(), note)?;
    }
    Ok(())
}
