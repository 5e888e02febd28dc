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
    let mut ppl = None;
    // The running perplexity, as llama-imatrix prints it after each chunk ([3]5.4321).
    let stats =
        quant_calib::compute_imatrix_reporting(&a.model, &tokenizer, &text, &opts, true, |p| {
            let m = meter.get_or_insert_with(|| reporter.meter(p.total as u64, 0));
            if p.done > 0 {
                m.finished(0);
            }
            if let Some(v) = p.ppl {
                m.set_note(format!("[{}]{v:.4}", p.done));
                ppl = Some(v);
            }
            if p.done < p.total {
                m.start(&format!("chunk {}", p.done + 1));
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
        "{}: {} entries, {} chunks of {} tokens, {}{:.2} s",
        a.output.display(),
        stats.entries.len(),
        stats.chunk_count,
        stats.chunk_size,
        ppl.map(|p| format!("final PPL estimate {p:.4}, "))
            .unwrap_or_default(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
