//! `quant methods`: every method with its availability, backend and fallback.

use quant::{Registry, Result, CATALOG};

pub fn methods(json: bool) -> Result<()> {
    let reg = Registry::global()?;
    let mut rows = Vec::new();
    for c in CATALOG.iter().chain(quant::EXTRA) {
        let e = reg.get(c.name);
        rows.push(serde_json::json!({
            "name": c.name,
            "backend": c.backend,
            "available": e.is_some(),
            "feature": c.feature,
            "fallback": if e.is_some() || c.fallback.is_empty() { None } else { Some(c.fallback) },
            "bits_per_weight": e.map(|e| e.bits_per_weight),
            "summary": e.map(|e| e.summary),
            "params": e.map(|e| e.params.iter().map(|p| p.describe()).collect::<Vec<_>>()),
        }));
    }
    for e in reg
        .entries()
        .filter(|e| quant::catalog::lookup(e.name).is_none())
    {
        rows.push(serde_json::json!({
            "name": e.name,
            "backend": e.backend,
            "available": true,
            "feature": null,
            "fallback": null,
            "bits_per_weight": e.bits_per_weight,
            "summary": e.summary,
            "params": e.params.iter().map(|p| p.describe()).collect::<Vec<_>>(),
        }));
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return Ok(());
    }
    println!(
        "{:<36} {:<22} {:<10} {:>6}  NOTES",
        "METHOD", "BACKEND", "AVAILABLE", "BITS"
    );
    for r in &rows {
        let avail = r["available"].as_bool().unwrap_or(false);
        let notes = if avail {
            r["summary"].as_str().unwrap_or("").to_string()
        } else {
            format!(
                "feature '{}' off; falls back to {}",
                r["feature"].as_str().unwrap_or(""),
                r["fallback"].as_str().unwrap_or("-")
            )
        };
        println!(
            "{:<36} {:<22} {:<10} {:>6}  {}",
            r["name"].as_str().unwrap_or(""),
            r["backend"].as_str().unwrap_or(""),
            if avail { "yes" } else { "no" },
            r["bits_per_weight"]
                .as_f64()
                .map(|b| format!("{b:.2}"))
                .unwrap_or_else(|| "-".into()),
            notes
        );
    }
    let n_avail = rows
        .iter()
        .filter(|r| r["available"].as_bool() == Some(true))
        .count();
    println!(
        "{n_avail} of {} methods available in this build",
        rows.len()
    );
    Ok(())
}
