//! What the write stage adds around the tensors: header metadata, every method's
//! artifacts (merged when several methods share a file) and `quantization_info.json`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use crate::engine::configure::ModelQuantizer;
use crate::error::{Error, Result};
use crate::load::{FORMAT_VERSION, META_FORMAT_VERSION};
use crate::method::{Artifacts, PlannedTensor};
use crate::plan::{Action, Plan, PlanEntry};
use crate::safetensors_io::AtomicFile;

impl ModelQuantizer {
    /// Every method's artifacts for one output file, each given all of the file's tensors.
    pub(in crate::engine) fn artifacts_for(
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
            if let Some(m) = plan.method(name) {
                out.push((name.to_string(), m.artifacts(&planned)?));
            }
        }
        Ok(out)
    }

    pub(in crate::engine) fn base_metadata(&self, plan: &Plan) -> BTreeMap<String, String> {
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

    /// Writes `quantization_info.json` (the plan and the run's settings) to `path`.
    pub(in crate::engine) fn write_info(
        &self,
        path: &Path,
        plan: &Plan,
        start: Instant,
    ) -> Result<()> {
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
pub(in crate::engine) fn merge_metadata(
    md: &mut BTreeMap<String, String>,
    artifacts: &[(String, Artifacts)],
) {
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
pub(super) fn merge_files(artifacts: &[(String, Artifacts)]) -> Vec<(String, Vec<u8>)> {
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

/// Writes pretty JSON atomically.
pub(super) fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let text =
        serde_json::to_vec_pretty(v).map_err(|e| Error::file(path, "json", e.to_string()))?;
    let mut f = AtomicFile::create(path)?;
    f.write_all(&text)?;
    f.commit()
}
