//! `quant quantize`: build the quantizer from the command line, run it, print the summary.

use quant::engine::{parse_size, Action, Report, Worker};
use quant::format::SplitLimits;
use quant::{parse_param_arg, ConfigFile, Error, ModelQuantizer, Pipeline, Result, Rules};

use super::util::{human, set_threads};
use crate::progress::{Mode, Reporter};
use crate::{PlanArgs, QuantizeArgs};

pub fn quantizer(a: &PlanArgs) -> Result<ModelQuantizer> {
    let mut method = a.method.clone();
    let mut params = quant::Params::new();
    let mut rules = Rules::new();
    if let Some(path) = &a.config {
        let cfg = ConfigFile::load(path)?;
        if method.is_none() {
            method = cfg.method;
        }
        params = cfg.params;
        rules = cfg.rules;
    }
    for p in &a.params {
        let (k, v) = parse_param_arg(p)?;
        params.insert(k, v);
    }
    if let Some(im) = &a.imatrix {
        params.insert(
            "imatrix".into(),
            serde_json::Value::String(im.display().to_string()),
        );
    }
    if let Some(r) = &a.rules {
        rules = Rules::from_arg(r)?;
    }
    let method = method.or_else(|| a.recipe.as_ref().map(|_| "basic_bf16".to_string()));
    let method = method.ok_or_else(|| Error::Config {
        source_name: "command line".into(),
        entry: "--method".into(),
        reason: "no method given (pass --method NAME or a --config with one; see `quant methods`)"
            .into(),
    })?;
    Ok(ModelQuantizer::new(method)
        .params(params)
        .rules(rules)
        .target_memory_gb(a.target_memory_gb)
        .auto_optimize(!a.no_auto_optimize)
        .strict(a.strict)
        .allow_requantize(a.allow_requantize))
}

pub fn split_limits(a: &QuantizeArgs) -> Result<Option<SplitLimits>> {
    let max_bytes = a.split_max_size.as_deref().map(parse_size).transpose()?;
    Ok(
        (max_bytes.is_some() || a.split_max_tensors.is_some()).then_some(SplitLimits {
            max_bytes,
            max_tensors: a.split_max_tensors,
        }),
    )
}

pub fn print_warnings(report: &Report) {
    if let Some(r) = &report.resolved.fallback_reason {
        eprintln!("warning: {}: {r}", report.resolved.requested);
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    for t in report.tensors.iter().filter(|t| t.is_fallback) {
        eprintln!("fallback: {}: {}", t.name, t.note.as_deref().unwrap_or(""));
    }
}

pub fn quantize(a: QuantizeArgs, mode: Mode) -> Result<()> {
    if let Some(n) = a.threads {
        set_threads(n)?;
    }
    let bar = Reporter::new(mode, "quantize", "tensors");
    let q = quantizer(&a.plan)?
        .force(a.force)
        .allow_nonfinite(a.allow_nonfinite)
        .format(a.format.clone())
        .max_shard_size(a.max_shard_size.as_deref().map(parse_size).transpose()?)
        .worker(a.shard.as_deref().map(Worker::parse).transpose()?)
        .split(split_limits(&a)?)
        .progress(bar.hook());
    if Pipeline::is_pipeline(&a.plan.input) {
        if a.shard.is_some()
            || a.max_shard_size.is_some()
            || a.split_max_size.is_some()
            || a.split_max_tensors.is_some()
        {
            return Err(Error::Config {
                source_name: a.plan.input.display().to_string(),
                entry: "--shard / --max-shard-size".into(),
                reason: "are for model files and folders, not pipeline folders (quantize a large component's folder on its own)".into(),
            });
        }
        let pipe = pipeline_with_components(&a.plan, &q)?;
        let result = pipe.save(&a.output, Some(&q.clone().format(None)), a.force);
        bar.finish();
        for (name, report) in result? {
            print!("{name}: ");
            print_warnings(&report);
            summary(&report);
        }
        println!("wrote {}", a.output.display());
        return Ok(());
    }
    if !a.plan.components.is_empty() {
        return Err(Error::Config {
            source_name: a.plan.input.display().to_string(),
            entry: "--component".into(),
            reason: "is for pipeline folders (with model_index.json)".into(),
        });
    }
    let result = q.quantize_path(&a.plan.input, &a.output);
    bar.finish();
    let report = result?;
    print_warnings(&report);
    summary(&report);
    if let Some(path) = &a.stats_json {
        let stats = serde_json::json!({
            "method": report.resolved.effective,
            "seconds": report.seconds,
            "bytes_in": report.bytes_in,
            "bytes_out": report.bytes_out,
            "tensors": report.tensors.len(),
            "fallbacks": report.fallbacks,
            "peak_rss_bytes": peak_rss_bytes(),
            "threads": rayon::current_num_threads(),
        });
        std::fs::write(path, stats.to_string()).map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

/// Peak resident set size of this process (Linux `VmHWM`), when the OS says.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Opens a pipeline and applies `--component NAME=METHOD|skip`; the other weight
/// components take the default quantizer `q`.
pub fn pipeline_with_components(a: &PlanArgs, q: &ModelQuantizer) -> Result<Pipeline> {
    let mut pipe = Pipeline::open(&a.input)?;
    if let Some(r) = &a.recipe {
        pipe.apply_recipe(&quant::PipelineRecipe::load(r)?, a.strict)?;
    }
    let q = &q.clone().target_memory_gb(None);
    for c in &a.components {
        let (name, method) = c.split_once('=').ok_or_else(|| Error::Config {
            source_name: "--component".into(),
            entry: c.clone(),
            reason: "expected NAME=METHOD or NAME=skip".into(),
        })?;
        if method == "skip" {
            pipe.skip_component(name)?;
        } else {
            let cq = ModelQuantizer::new(method)
                .strict(a.strict)
                .auto_optimize(!a.no_auto_optimize);
            pipe.quantize_component(name, cq)?;
        }
    }
    // Validate the default on every remaining weight component now, before writing.
    for c in pipe.components().to_vec() {
        if c.has_weights && pipe.planned(&c.name).is_none() {
            pipe.quantize_component(&c.name, q.clone().force(false))?;
        }
    }
    // A target on the command line is for the whole pipeline.
    if let Some(gb) = a.target_memory_gb {
        pipe.share_target(gb, &[])?;
    }
    Ok(pipe)
}

pub fn summary(r: &Report) {
    let count = |a: Action| r.tensors.iter().filter(|t| t.action == a).count();
    let ratio = if r.bytes_out > 0 {
        r.bytes_in as f64 / r.bytes_out as f64
    } else {
        0.0
    };
    println!(
        "method {} (effective {}): {} tensors ({} quantized, {} cast, {} kept), {} -> {} ({ratio:.2}x), {} fallbacks, {:.2}s",
        r.resolved.requested,
        r.resolved.effective,
        r.tensors.len(),
        count(Action::Quantize),
        count(Action::Cast),
        count(Action::Keep),
        human(r.bytes_in),
        human(r.bytes_out),
        r.fallbacks,
        r.seconds
    );
    if let Some(rss) = peak_rss_bytes() {
        println!("peak RSS {}", human(rss));
    }
    for o in &r.outputs {
        println!("wrote {}", o.display());
    }
}
