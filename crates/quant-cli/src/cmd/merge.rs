//! `quant merge`: tie together the output folder of `quantize --shard I/N` workers.

use std::path::Path;

use quant::Result;

use crate::progress::{Mode, Reporter};

pub fn merge(output: &Path, mode: Mode) -> Result<()> {
    let reporter = Reporter::new(mode, "merge", "files");
    let m = quant::engine::merge_with_progress(output, reporter.hook());
    reporter.finish();
    let m = m?;
    println!(
        "merged {} ({} workers, {} weight files checked, {} files tied: {})",
        output.display(),
        m.workers,
        m.files.len(),
        m.tied.len(),
        m.tied
            .iter()
            .map(|t| t.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
