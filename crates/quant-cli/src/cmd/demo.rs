//! `quant demo`: quantize a built-in sample with every method and print a table.

use std::path::PathBuf;
use std::time::Instant;

use quant::metrics::ErrorStats;
use quant::{DType, Error, ModelFiles, ModelQuantizer, Registry, Result};

use super::util::human;

pub fn demo(only: Option<&str>, keep: Option<PathBuf>) -> Result<()> {
    let (dir, _cleanup) = match keep {
        Some(dir) => {
            std::fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
            (dir, None)
        }
        None => {
            let dir = std::env::temp_dir().join(format!("quant-demo-{}", std::process::id()));
            (dir.clone(), Some(RemoveOnDrop(dir)))
        }
    };
    let input = dir.join("sample");
    quant::sample::write_sample_model(&input, DType::BF16)?;
    let original = ModelFiles::open(&input)?;
    let in_bytes: u64 = original
        .records()
        .map(|(_, r)| r.shape.iter().product::<usize>() as u64 * r.dtype.size() as u64)
        .sum();
    println!(
        "sample model: {} tensors, {} (bf16), generated in code",
        original.records().count(),
        human(in_bytes)
    );
    let reg = Registry::global()?;
    let wanted: Option<Vec<&str>> = only.map(|s| s.split(',').map(str::trim).collect());
    println!(
        "{:<36} {:>10} {:>7} {:>11} {:>9} {:>10} {:>9}",
        "METHOD", "SIZE", "RATIO", "RMSE", "SQNR_DB", "MIN_COS", "TIME_MS"
    );
    for e in reg.entries() {
        if wanted.as_ref().is_some_and(|w| !w.contains(&e.name)) {
            continue;
        }
        let out = dir.join(e.name);
        let t0 = Instant::now();
        let report = match ModelQuantizer::new(e.name).quantize_path(&input, &out) {
            // GGUF types ggml (or llama-quantize) refuses without an importance matrix.
            Err(Error::NeedsImatrix { .. }) => {
                println!(
                    "{:<36} skipped: needs an importance matrix (--imatrix)",
                    e.name
                );
                continue;
            }
            r => r?,
        };
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let restored = ModelFiles::open(&out)?;
        let (mut all_a, mut all_b) = (Vec::new(), Vec::new());
        let mut min_cos = 1f64;
        for (_, r) in original.records() {
            let a = original.load_f32(&r.name)?;
            let b = restored.load_f32(&r.name)?;
            min_cos = min_cos.min(ErrorStats::compare(&a, &b).cosine);
            all_a.extend(a);
            all_b.extend(b);
        }
        let total = ErrorStats::compare(&all_a, &all_b);
        let (rmse, sqnr) = (total.rmse, total.sqnr_db);
        for t in report.tensors.iter().filter(|t| t.is_fallback) {
            eprintln!(
                "  fallback in {}: {}: {}",
                e.name,
                t.name,
                t.note.as_deref().unwrap_or("")
            );
        }
        println!(
            "{:<36} {:>10} {:>6.2}x {:>11.3e} {:>9.2} {:>10.6} {:>9.1}",
            e.name,
            human(report.bytes_out),
            in_bytes as f64 / report.bytes_out.max(1) as f64,
            rmse,
            sqnr,
            min_cos,
            ms
        );
    }
    println!("every output was written to disk, reloaded through its method and compared with the original");
    Ok(())
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
