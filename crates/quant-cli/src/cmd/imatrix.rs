//! `quant imatrix`: an importance matrix from text, as llama-imatrix computes it.

use std::time::Instant;

use quant::safetensors_io::check_output;
use quant::{Error, Result};

use super::util::set_threads;
use crate::progress::{Mode, Reporter};
use crate::ImatrixArgs;

pub fn imatrix(a: ImatrixArgs, mode: Mode) -> Result<()> {
    if let Some(n) = a.threads {
        set_threads(n)?;
    }
    let dat = match a.output_format.as_deref() {
        Some("gguf") => false,
        Some("dat") => true,
        Some(other) => {
            return Err(Error::Config {
                source_name: "--output-format".into(),
                entry: other.into(),
                reason: "expected gguf or dat".into(),
            })
        }
        None => a.output.extension().is_some_and(|e| e == "dat"),
    };
    check_output(&a.output, a.force)?;
    let tokenizer = quant_calib::tokenizer_path(&a.model, a.tokenizer.as_deref())?;
    let text = std::fs::read(&a.file).map_err(|e| Error::io(&a.file, e))?;
    let text = String::from_utf8_lossy(&text);
    let opts = quant_calib::ImatrixOptions {
        ctx: a.ctx,
        chunks: a.chunks,
        process_output: a.process_output,
        dataset: a.file.display().to_string(),
    };
    let start = Instant::now();
    let reporter = Reporter::new(mode, "imatrix", "chunks");
    let mut meter = None;
    let stats = quant_calib::compute_imatrix(&a.model, &tokenizer, &text, &opts, |done, all| {
        let m = meter.get_or_insert_with(|| reporter.meter(all as u64, 0));
        if done > 0 {
            m.finished(0);
        }
        if done < all {
            m.start(&format!("chunk {}", done + 1));
        } else {
            m.end();
        }
    });
    reporter.finish();
    let stats = stats?;
    let bytes = if dat {
        stats.legacy_bytes()
    } else {
        stats.gguf_bytes()
    };
    let mut out = quant::safetensors_io::AtomicFile::create(&a.output)?;
    out.write_all(&bytes)?;
    out.commit()?;
    eprintln!(
        "{}: {} entries, {} chunks of {} tokens, {:.2} s",
        a.output.display(),
        stats.entries.len(),
        stats.chunk_count,
        stats.chunk_size,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
