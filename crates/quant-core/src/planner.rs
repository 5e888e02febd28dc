//! Memory targeting: fits a plan into a byte budget by moving tensors along a ladder of
//! methods of the same backend, using measured sensitivity.
//!
//! For every tensor the default method quantizes, each candidate (the registered methods
//! of the default's backend that take its shape, plus "unquantized" in its own dtype) is
//! tried on a sample of up to [`SAMPLE_ROWS`] evenly spaced rows: the squared error of
//! quantize → dequantize, scaled to the whole tensor, is the tensor's error under that
//! candidate. When a method knows how much each column matters
//! ([`QuantMethod::column_importance`], e.g. a GGUF method given an importance matrix),
//! the error is weighted per column, `Σ weight[col]·(v − v̂)²`, and so is the energy the
//! relative error is taken against (`Σ weight[col]·v²`). The weights of a tensor come from
//! the default method's instance, else from the first candidate that has some, and every
//! candidate of that tensor is measured with the same weights; weights that do not have
//! one non-negative finite value per column are not used. Tensors without weights beside
//! weighted ones (token embeddings) have their error scaled by the average weight, so all
//! errors are in one unit ([`unweighted_in_weighted_units`]). Over the budget, the move that
//! loses the least error per byte saved is taken until the plan fits; with room left, the
//! move that removes the most error per byte added is taken while it fits. Both are greedy
//! over exact byte counts, so the written file is exactly the planned size.

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

/// The columns of `meta` viewed as `[shape[0], rest]` with `len` values (0 when the
/// values do not split into whole rows).
fn columns(meta: &TensorMeta, len: usize) -> usize {
    let rows = meta.shape.first().copied().unwrap_or(1).max(1);
    if len % rows == 0 {
        len / rows
    } else {
        0
    }
}

/// `weights` when they can weight the columns of `meta` (with `len` values): one finite,
/// non-negative value per column of the `[shape[0], rest]` view. `None` otherwise.
pub fn usable_weights<'w>(
    meta: &TensorMeta,
    len: usize,
    weights: Option<&'w [f32]>,
) -> Option<&'w [f32]> {
    let cols = columns(meta, len);
    weights.filter(|w| cols > 0 && w.len() == cols && w.iter().all(|x| x.is_finite() && *x >= 0.0))
}

/// `Σ w[col]·(a − b)²` over rows of `w.len()` values (`Σ (a − b)²` without weights).
fn squared_error(a: &[f32], b: &[f32], weights: Option<&[f32]>) -> f64 {
    let sq = |x: &f32, y: &f32| ((x - y) as f64).powi(2);
    match weights.filter(|w| !w.is_empty()) {
        Some(w) => a
            .chunks(w.len())
            .zip(b.chunks(w.len()))
            .map(|(ra, rb)| {
                ra.iter()
                    .zip(rb)
                    .zip(w)
                    .map(|((x, y), c)| *c as f64 * sq(x, y))
                    .sum::<f64>()
            })
            .sum(),
        None => a.iter().zip(b).map(|(x, y)| sq(x, y)).sum(),
    }
}

/// The energy relative errors are taken against: `Σ w[col]·v²` over rows of `w.len()`
/// values (`Σ v²` without weights).
pub fn weighted_energy(values: &[f32], weights: Option<&[f32]>) -> f64 {
    let sq = |x: &f32| (*x as f64).powi(2);
    match weights.filter(|w| !w.is_empty()) {
        Some(w) => values
            .chunks(w.len())
            .map(|r| r.iter().zip(w).map(|(x, c)| *c as f64 * sq(x)).sum::<f64>())
            .sum(),
        None => values.iter().map(sq).sum(),
    }
}

/// Squared error of `method` on `values` (sampled), scaled to the whole tensor; weighted
/// per column by `weights` when they fit the tensor's columns (see [`usable_weights`]).
pub fn measure(
    method: &dyn QuantMethod,
    meta: &TensorMeta,
    values: &[f32],
    weights: Option<&[f32]>,
) -> Result<f64> {
    let weights = usable_weights(meta, values.len(), weights);
    let (smeta, svalues, scale) = sample_rows(meta, values);
    let attempt = |m: &TensorMeta, v: &[f32]| -> Result<f64> {
        let q = method.quantize(m, v)?;
        let d = method.dequantize(&q)?;
        Ok(squared_error(v, &d, weights))
    };
    match attempt(&smeta, &svalues) {
        Ok(e) => Ok(e * scale),
        // Some methods need the whole tensor (shape rules on the row count).
        Err(_) => attempt(meta, values),
    }
}

/// The column weights to measure `meta` with: the `default` method's
/// [`column_importance`](QuantMethod::column_importance), else that of the first of
/// `methods` that has some.
pub fn importance(
    default: Option<&dyn QuantMethod>,
    methods: &[&dyn QuantMethod],
    meta: &TensorMeta,
) -> Option<Vec<f32>> {
    default
        .into_iter()
        .chain(methods.iter().copied())
        .find_map(|m| m.column_importance(meta))
}

/// The candidates for one tensor, cheapest first, each measured on `values` (weighted by
/// `weights`, see [`measure`]) when given.
pub fn ladder(
    entry: &PlanEntry,
    methods: &[&dyn QuantMethod],
    values: Option<&[f32]>,
    weights: Option<&[f32]>,
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
            Some(v) => match measure(*m, meta, v, weights) {
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

/// Applies a chosen rung to a plan entry: `method` is the rung's instance and its key in
/// the plan.
pub fn apply(
    entry: &mut PlanEntry,
    rung: &Rung,
    method: Option<(&str, &dyn QuantMethod)>,
    note: String,
) -> Result<()> {
    match (&rung.method, method) {
        (Some(_), Some((key, m))) => {
            entry.action = Action::Quantize;
            entry.method = Some(m.name().to_string());
            entry.instance = Some(key.to_string());
            entry.layout = m.output_layout(&entry.meta)?;
        }
        _ => {
            entry.action = Action::Keep;
            entry.method = None;
            entry.instance = None;
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
/// (instances also held by the plan, with their keys there), measuring each candidate on `values` when given
/// (weighted by the tensor's column importance, if any: see the module doc).
/// Over the target even at the cheapest rungs: [`Error::OverTarget`] with an empty hint.
pub fn fit(
    plan: &mut Plan,
    methods: &[(String, Arc<dyn QuantMethod>)],
    target: u64,
    gb: f64,
    values: Option<&ValueFn<'_>>,
) -> Result<()> {
    let refs: Vec<&dyn QuantMethod> = methods.iter().map(|(_, m)| m.as_ref()).collect();
    let movable: Vec<usize> = (0..plan.entries.len())
        .filter(|&i| {
            let e = &plan.entries[i];
            e.action == Action::Quantize && !e.is_fallback && e.rule.is_none()
        })
        .collect();
    let mut ladders = Vec::with_capacity(movable.len());
    let mut start = Vec::with_capacity(movable.len());
    let mut energy = Vec::with_capacity(movable.len());
    let mut weighted = Vec::with_capacity(movable.len());
    let default = plan.methods.get(&plan.default_instance).cloned();
    for &i in &movable {
        let e = &plan.entries[i];
        let vals = match values {
            Some(f) => Some(f(e)?),
            None => None,
        };
        // One set of column weights for every rung of this tensor.
        let imp = vals
            .as_ref()
            .and_then(|_| importance(default.as_deref(), &refs, &e.meta));
        let w = vals
            .as_ref()
            .and_then(|v| usable_weights(&e.meta, v.len(), imp.as_deref()));
        energy.push(vals.as_ref().map(|v| weighted_energy(v, w)));
        weighted.push(w.map(|w| w.iter().map(|&x| f64::from(x)).sum::<f64>() / w.len() as f64));
        let l = ladder(e, &refs, vals.as_deref(), w)?;
        let at = l
            .iter()
            .position(|r| r.method.as_deref() == e.method.as_deref())
            .or_else(|| l.iter().position(|r| r.bytes >= e.bytes_out))
            .unwrap_or(0);
        ladders.push(l);
        start.push(at);
    }
    unweighted_in_weighted_units(&mut ladders, &mut energy, &weighted);
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
        // Ladder names are unique: one candidate per registered method.
        let m = rung
            .method
            .as_deref()
            .and_then(|n| methods.iter().find(|(_, m)| m.name() == n));
        let e = &mut plan.entries[i];
        if let Some(en) = energy.get(k).copied().flatten() {
            e.est_rel_error = Some(if en > 0.0 {
                (rung.sse / en).sqrt()
            } else {
                0.0
            });
        }
        if m.map(|(key, _)| key.as_str()) == e.instance.as_deref() {
            continue;
        }
        // "imatrix": the per-column importance matrix the error was weighted by.
        let how = if weighted.get(k).copied().flatten().is_some() {
            " (imatrix-weighted)"
        } else {
            ""
        };
        let note = format!(
            "target {gb} GB{how}: {} -> {}",
            e.method.clone().unwrap_or_default(),
            rung.method
                .clone()
                .unwrap_or_else(|| format!("unquantized {}", e.meta.dtype))
        );
        apply(e, rung, m.map(|(key, m)| (key.as_str(), m.as_ref())), note)?;
    }
    Ok(())
}

/// Puts the errors of tensors without importance weights in the units of the weighted
/// ones: a weighted error is an expected output error (`Σ E[x²]·Δ²`), an unweighted one a
/// weight error (`Σ Δ²`). Without an entry (token embeddings, `output.weight` by default)
/// a tensor is taken to see inputs of the average importance of the weighted tensors
/// (`mean_weights`: each tensor's mean weight, `None` when unweighted), so one greedy
/// compares like with like. Nothing changes when no tensor, or every tensor, is weighted.
pub fn unweighted_in_weighted_units(
    ladders: &mut [Vec<Rung>],
    energy: &mut [Option<f64>],
    mean_weights: &[Option<f64>],
) {
    let means: Vec<f64> = mean_weights.iter().copied().flatten().collect();
    if means.is_empty() || means.len() == mean_weights.len() {
        return;
    }
    let scale = means.iter().sum::<f64>() / means.len() as f64;
    for ((l, en), w) in ladders.iter_mut().zip(energy.iter_mut()).zip(mean_weights) {
        if w.is_some() {
            continue;
        }
        for r in l.iter_mut() {
            r.sse *= scale;
        }
        if let Some(en) = en {
            *en *= scale;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::method::{Params, Part, PartLayout, QuantizedTensor, TensorRecord};

    /// Stores each value as the nearest multiple of `step`, as an integer code of `dtype`
    /// (I8 or I16), and may know column weights.
    struct Codes {
        name: &'static str,
        step: f32,
        dtype: DType,
        importance: Option<Vec<f32>>,
    }

    impl Codes {
        fn new(name: &'static str, step: f32, dtype: DType) -> Self {
            Codes {
                name,
                step,
                dtype,
                importance: None,
            }
        }
    }

    impl QuantMethod for Codes {
        fn name(&self) -> &str {
            self.name
        }
        fn params(&self) -> Params {
            Params::new()
        }
        fn select(&self, _: &TensorMeta) -> Selection {
            Selection::Quantize
        }
        fn output_layout(&self, t: &TensorMeta) -> Result<Vec<PartLayout>> {
            Ok(vec![PartLayout::new(&t.name, self.dtype, t.shape.clone())])
        }
        fn quantize(&self, t: &TensorMeta, values: &[f32]) -> Result<QuantizedTensor> {
            let code = |v: &f32| (v / self.step).round() as i16;
            let data: Vec<u8> = match self.dtype {
                DType::I8 => values.iter().map(|v| code(v) as i8 as u8).collect(),
                _ => values.iter().flat_map(|v| code(v).to_le_bytes()).collect(),
            };
            let mut layout = self.output_layout(t)?;
            let record = TensorRecord {
                method: Some(self.name.to_string()),
                ..crate::load::plain_record(t)
            };
            let part = Part::new(layout.remove(0), data)?;
            Ok(QuantizedTensor {
                record,
                parts: vec![part],
            })
        }
        fn dequantize(&self, q: &QuantizedTensor) -> Result<Vec<f32>> {
            let data = &q.part(&q.record.name)?.data;
            Ok(match self.dtype {
                DType::I8 => data.iter().map(|b| *b as i8 as f32 * self.step).collect(),
                _ => data
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 * self.step)
                    .collect(),
            })
        }
        fn column_importance(&self, _: &TensorMeta) -> Option<Vec<f32>> {
            self.importance.clone()
        }
    }

    fn entry(name: &str, shape: Vec<usize>) -> PlanEntry {
        let meta = TensorMeta::new(name, DType::F32, shape);
        let n = meta.numel().unwrap_or(0) as u64;
        PlanEntry {
            shard: 0,
            file: 0,
            name: name.to_string(),
            rule: None,
            action: Action::Quantize,
            method: Some("coarse".into()),
            instance: Some("coarse".into()),
            note: None,
            is_fallback: false,
            layout: Vec::new(),
            bytes_in: 4 * n,
            bytes_out: n,
            requantize: false,
            est_rel_error: None,
            meta,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-6 * b.abs().max(1.0)
    }

    /// Rounding to integers: errors 0.4, 0.25, 0 and 0.3; the column weights 3 and 1
    /// give 3·0.16 + 0.0625 + 3·0 + 0.09 = 0.6325 (0.3125 unweighted).
    #[test]
    fn weighted_measure_is_the_hand_computed_sum() {
        let coarse = Codes::new("coarse", 1.0, DType::I8);
        let meta = TensorMeta::new("t", DType::F32, vec![2, 2]);
        let v = [0.4, 1.25, 2.0, -0.3];
        let w = [3.0, 1.0];
        let weighted = measure(&coarse, &meta, &v, Some(&w)).unwrap();
        assert!(close(weighted, 0.6325), "{weighted}");
        let plain = measure(&coarse, &meta, &v, None).unwrap();
        assert!(close(plain, 0.3125), "{plain}");
        assert!(close(weighted_energy(&v, Some(&w)), 14.1325));
        assert!(close(weighted_energy(&v, None), 5.8125));
        // Weights that do not fit the columns, or are negative, are not used.
        for bad in [
            &[3.0, 1.0, 1.0][..],
            &[3.0][..],
            &[3.0, -1.0][..],
            &[f32::NAN, 1.0][..],
        ] {
            let e = measure(&coarse, &meta, &v, Some(bad)).unwrap();
            assert!(close(e, plain), "{bad:?}: {e}");
        }
        // 256 rows: 128 sampled, scaled by 2 to the whole tensor.
        let big = TensorMeta::new("t", DType::F32, vec![256, 2]);
        let rows: Vec<f32> = (0..256).flat_map(|_| [0.4f32, 1.25]).collect();
        let e = measure(&coarse, &big, &rows, Some(&w)).unwrap();
        assert!(close(e, 256.0 * (3.0 * 0.16 + 0.0625)), "{e}");
    }

    /// Two tensors, one upgrade affordable. A's errors are in column 1, B's (smaller) in
    /// column 0: unweighted, A is upgraded; with column 0 a hundred times as important,
    /// B is.
    #[test]
    fn weighted_ladders_upgrade_the_tensor_whose_important_columns_suffer() {
        let coarse = Codes::new("coarse", 1.0, DType::I8);
        let fine = Codes::new("fine", 0.25, DType::I16);
        let methods: [&dyn QuantMethod; 2] = [&coarse, &fine];
        let a = entry("a", vec![4, 2]);
        let b = entry("b", vec![4, 2]);
        let va = [1.0, 0.5, 2.0, 1.5, -1.0, -0.5, 0.0, 2.5];
        let vb = [0.25, 1.0, 1.25, 2.0, -0.75, -1.0, 2.25, 0.0];
        let w = [10.0, 0.1];
        let run = |w: Option<&[f32]>| {
            let ladders = vec![
                ladder(&a, &methods, Some(&va), w).unwrap(),
                ladder(&b, &methods, Some(&vb), w).unwrap(),
            ];
            for l in &ladders {
                let names: Vec<_> = l.iter().map(|r| r.method.as_deref()).collect();
                assert_eq!(names, [Some("coarse"), Some("fine")]);
            }
            let target = ladders[0][0].bytes + ladders[1][1].bytes;
            (
                ladders.clone(),
                optimize(&ladders, &[0, 0], 0, target).unwrap(),
            )
        };
        let (plain, chosen) = run(None);
        assert!(close(plain[0][0].sse, 1.0) && close(plain[1][0].sse, 0.25));
        assert_eq!(chosen, [1, 0], "unweighted: A's larger error is removed");
        let (weighted, chosen) = run(Some(&w));
        assert!(close(weighted[0][0].sse, 0.1) && close(weighted[1][0].sse, 2.5));
        assert_eq!(chosen, [0, 1], "weighted: B's important column is fixed");
    }

    /// A tensor without importance weights beside weighted ones has its error scaled by
    /// the weighted tensors' average weight; alone or all weighted, nothing changes.
    #[test]
    fn unweighted_errors_are_scaled_to_the_weighted_units() {
        let rung = |sse: f64| Rung {
            method: None,
            bytes: 0,
            sse,
        };
        let mut ladders = vec![vec![rung(4.0), rung(1.0)], vec![rung(2.0)], vec![rung(3.0)]];
        let mut energy = vec![Some(8.0), Some(2.0), None];
        // Tensor 0 weighted (mean weight 10), tensor 1 weighted (mean 30), tensor 2 not.
        unweighted_in_weighted_units(&mut ladders, &mut energy, &[Some(10.0), Some(30.0), None]);
        assert!(close(ladders[0][0].sse, 4.0) && close(ladders[1][0].sse, 2.0));
        assert!(close(ladders[2][0].sse, 60.0), "{}", ladders[2][0].sse);
        assert_eq!(energy, [Some(8.0), Some(2.0), None]);
        let mut energy = vec![Some(1.0), None];
        let mut l = vec![vec![rung(1.0)], vec![rung(1.0)]];
        unweighted_in_weighted_units(&mut l, &mut energy, &[Some(5.0), None]);
        assert!(close(l[1][0].sse, 5.0) && close(l[0][0].sse, 1.0));
        let before = vec![vec![rung(1.0)], vec![rung(2.0)]];
        for w in [[None, None], [Some(3.0), Some(4.0)]] {
            let mut l = before.clone();
            unweighted_in_weighted_units(&mut l, &mut [None, None], &w);
            assert!(l
                .iter()
                .zip(&before)
                .all(|(a, b)| close(a[0].sse, b[0].sse)));
        }
    }

    #[test]
    fn importance_comes_from_the_default_else_the_first_candidate_that_has_some() {
        let meta = TensorMeta::new("t", DType::F32, vec![2, 2]);
        let plain = Codes::new("plain", 1.0, DType::I8);
        let with = |w: f32| Codes {
            importance: Some(vec![w, w]),
            ..Codes::new("weighted", 1.0, DType::I8)
        };
        let (first, second, default) = (with(1.0), with(2.0), with(3.0));
        let ladder: [&dyn QuantMethod; 3] = [&plain, &first, &second];
        assert_eq!(
            importance(Some(&default), &ladder, &meta),
            Some(vec![3.0, 3.0])
        );
        assert_eq!(
            importance(Some(&plain), &ladder, &meta),
            Some(vec![1.0, 1.0])
        );
        assert_eq!(importance(None, &ladder[..1], &meta), None);
    }
}
