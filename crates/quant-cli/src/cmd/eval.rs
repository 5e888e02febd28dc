//! `quant eval`: per-tensor error of a quantized model against its original.

use std::path::Path;

use quant::metrics::ErrorStats;
use quant::{Error, ModelFiles, Result};

use crate::progress::{Mode, Reporter};

pub fn eval_models(
    original: &ModelFiles,
    quantized: &ModelFiles,
    reporter: &std::sync::Arc<Reporter>,
) -> Result<Vec<(String, ErrorStats)>> {
    let mut out = Vec::new();
    let floats: Vec<_> = original
        .records()
        .filter(|(_, r)| r.dtype.is_float())
        .collect();
    let bytes = |r: &quant::TensorRecord| r.shape.iter().product::<usize>() as u64 * 4;
    let meter = reporter.meter(
        floats.len() as u64,
        floats.iter().map(|(_, r)| bytes(r)).sum(),
    );
    for (_, r) in floats {
        meter.step(&r.name, bytes(r));
        let a = original.load_f32(&r.name)?;
        let b = quantized.load_f32(&r.name)?;
        if a.len() != b.len() {
            return Err(Error::ShapeMismatch {
                tensor: r.name.clone(),
                expected: format!("{} values", a.len()),
                got: vec![b.len()],
            });
        }
        out.push((r.name.clone(), ErrorStats::compare(&a, &b)));
    }
    meter.end();
    Ok(out)
}

pub fn eval(original: &Path, quantized: &Path, json: bool, mode: Mode) -> Result<()> {
    let reporter = Reporter::new(mode, "eval", "tensors");
    let stats = eval_models(
        &ModelFiles::open_any(original)?,
        &ModelFiles::open_any(quantized)?,
        &reporter,
    );
    reporter.finish();
    let stats = stats?;
    if json {
        let v: Vec<_> = stats
            .iter()
            .map(|(n, s)| serde_json::json!({"tensor": n, "stats": s}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    println!(
        "{:<52} {:>11} {:>9} {:>9} {:>10} {:>11}",
        "TENSOR", "RMSE", "REL_RMSE", "SQNR_DB", "COSINE", "MAX_ABS"
    );
    for (n, s) in &stats {
        println!(
            "{:<52} {:>11.3e} {:>9.5} {:>9.2} {:>10.7} {:>11.3e}",
            n, s.rmse, s.rel_rmse, s.sqnr_db, s.cosine, s.max_abs
        );
    }
    Ok(())
}
