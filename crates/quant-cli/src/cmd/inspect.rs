//! `quant inspect`: the tensors, methods and sizes of a file, folder or pipeline.

use std::path::Path;

use quant::{ModelFiles, Pipeline, Result};

use super::util::human;

pub fn inspect(input: &Path, json: bool) -> Result<()> {
    if Pipeline::is_pipeline(input) {
        let pipe = Pipeline::open(input)?;
        let mut rows = Vec::new();
        for c in pipe.components() {
            if !c.has_weights {
                rows.push(serde_json::json!({"component": c.name, "weights": false}));
                continue;
            }
            let m = ModelFiles::open(&c.path)?;
            let mut methods: std::collections::BTreeMap<String, usize> = Default::default();
            let mut bytes = 0u64;
            for (i, r) in m.records() {
                *methods
                    .entry(
                        r.method
                            .clone()
                            .unwrap_or_else(|| format!("unquantized {}", r.dtype)),
                    )
                    .or_default() += 1;
                bytes += m
                    .shards
                    .get(i)
                    .and_then(|(_, rd)| rd.stored_bytes(&r.name).ok())
                    .unwrap_or(0);
            }
            let files: Vec<String> = m
                .shards
                .iter()
                .map(|(p, _)| p.display().to_string())
                .collect();
            rows.push(serde_json::json!({"component": c.name, "weights": true, "files": files, "methods": methods, "bytes": bytes}));
        }
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&rows).unwrap_or_default()
            );
        } else {
            println!(
                "{:<20} {:>12}  FILES / METHODS (tensor count)",
                "COMPONENT", "BYTES"
            );
            for r in &rows {
                if r["weights"] == false {
                    println!(
                        "{:<20} {:>12}  (no weights, carried along)",
                        r["component"].as_str().unwrap_or(""),
                        "-"
                    );
                    continue;
                }
                println!(
                    "{:<20} {:>12}  {} / {}",
                    r["component"].as_str().unwrap_or(""),
                    r["bytes"],
                    r["files"],
                    r["methods"]
                );
            }
        }
        return Ok(());
    }
    let model = ModelFiles::open(input)?;
    let mut rows = Vec::new();
    for (i, r) in model.records() {
        let bytes: u64 = model
            .shards
            .get(i)
            .and_then(|(_, rd)| rd.stored_bytes(&r.name).ok())
            .unwrap_or(0);
        rows.push((
            model
                .shards
                .get(i)
                .map(|s| s.0.display().to_string())
                .unwrap_or_default(),
            r.clone(),
            bytes,
        ));
    }
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|(f, r, b)| serde_json::json!({"file": f, "record": r, "bytes": b}))
            .collect();
        let md: Vec<_> = model
            .shards
            .iter()
            .map(|(p, r)| serde_json::json!({"file": p, "metadata": r.metadata()}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"files": md, "tensors": v}))
                .unwrap_or_default()
        );
        return Ok(());
    }
    for (p, r) in &model.shards {
        println!("file {}", p.display());
        for (k, v) in r.metadata() {
            if k != quant::load::META_TENSORS {
                let v: String = v.chars().take(100).collect();
                println!("  {k} = {v}");
            }
        }
    }
    println!(
        "{:<52} {:<26} {:<6} {:<18} {:>10}",
        "TENSOR", "METHOD", "DTYPE", "SHAPE", "BYTES"
    );
    let mut total = 0;
    for (_, r, b) in &rows {
        total += b;
        println!(
            "{:<52} {:<26} {:<6} {:<18} {:>10}",
            r.name,
            r.method.as_deref().unwrap_or("-"),
            r.dtype.to_string(),
            format!("{:?}", r.shape),
            b
        );
    }
    println!("{} tensors, {}", rows.len(), human(total));
    Ok(())
}
