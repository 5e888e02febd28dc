//! `quant merge`: tie together the output folder of `quantize --shard I/N` workers.

use std::path::Path;

use quant::Result;

pub fn merge(output: &Path) -> Result<()> {
    let m = quant::engine::merge(output)?;
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
