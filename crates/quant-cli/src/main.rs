//! `quant`: quantize model weights into GGUF, bitsandbytes, optimum-quanto, TorchAO and
//! plain formats, inspect them, load them back and measure the error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use quant::dtype::encode_f32;
use quant::engine::{parse_size, Action, Report, Worker};
use quant::format::SplitLimits;
use quant::metrics::ErrorStats;
use quant::safetensors_io::{check_output, SafetensorsWriter};
use quant::{
    parse_param_arg, ConfigFile, DType, Error, ModelFiles, ModelQuantizer, PartLayout, Pipeline,
    Registry, Result, Rules, CATALOG,
};

#[cfg(feature = "example-backend")]
use quant_example_backend as _;

#[derive(Parser)]
#[command(
    name = "quant",
    version,
    about = "Quantize neural-network weights and load them back"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every method: availability, backend, fallback, bits per weight.
    Methods {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Quantize a safetensors file, model folder or GGUF file.
    Quantize(QuantizeArgs),
    /// Dry run: show for each tensor the rule that matched and what will happen.
    Plan(PlanArgs),
    /// Show the tensors, methods and sizes of a file or folder.
    Inspect {
        /// File or folder.
        input: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Restore every tensor to a plain safetensors file (a pipeline's tensors named
    /// `<component>/<tensor>`).
    Dequantize {
        /// Quantized file, folder or pipeline folder.
        input: PathBuf,
        /// Output .safetensors file.
        #[arg(short, long)]
        output: PathBuf,
        /// Output dtype.
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// Overwrite an existing output.
        #[arg(long)]
        force: bool,
    },
    /// Per-tensor error of a quantized model against its original.
    Eval {
        /// The original model (file, folder or pipeline folder).
        original: PathBuf,
        /// The quantized model (file, folder or pipeline folder).
        quantized: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Tie together an output folder written by `quantize --shard I/N` workers (checks
    /// that every worker finished the same plan, then writes the index and config).
    Merge {
        /// The output folder the workers wrote.
        output: PathBuf,
    },
    /// Compute an importance matrix from text, as llama-imatrix does (llama and bert
    /// models, from a Hugging Face folder or a .gguf file), for `quantize --imatrix`.
    #[cfg(feature = "imatrix")]
    Imatrix(ImatrixArgs),
    /// Quantize a built-in sample model with every method, reload it and print a table.
    Demo {
        /// Only these methods (comma separated).
        #[arg(long)]
        methods: Option<String>,
        /// Keep the sample and every output in this new folder (default: a temporary
        /// folder removed afterwards).
        #[arg(long)]
        keep: Option<PathBuf>,
    },
}

#[derive(Args)]
struct PlanArgs {
    /// Input safetensors file, model folder or GGUF file.
    input: PathBuf,
    /// Default method (see `quant methods`).
    #[arg(short, long)]
    method: Option<String>,
    /// Method parameter KEY=VALUE (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// A config file (JSON, TOML, YAML) with method, params and rules.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Rules file (JSON, TOML, YAML) or a dtype for every tensor not quantized.
    #[arg(long)]
    rules: Option<String>,
    /// Bound on the stored weights, in GB (10^9 bytes).
    #[arg(long)]
    target_memory_gb: Option<f64>,
    /// With a target: do not move tensors between methods (fail if the plan is over).
    #[arg(long)]
    no_auto_optimize: bool,
    /// Refuse every fallback.
    #[arg(long)]
    strict: bool,
    /// Importance matrix file (GGUF methods).
    #[arg(long)]
    imatrix: Option<PathBuf>,
    /// Dequantize quantized inputs and quantize them again.
    #[arg(long)]
    allow_requantize: bool,
    /// For a pipeline folder: COMPONENT=METHOD or COMPONENT=skip (repeatable).
    #[arg(long = "component", value_name = "NAME=METHOD")]
    components: Vec<String>,
    /// For a pipeline folder: a recipe (TOML, JSON, YAML) with per-component methods,
    /// rules and targets.
    #[arg(long)]
    recipe: Option<PathBuf>,
}

#[cfg(feature = "imatrix")]
#[derive(Args)]
struct ImatrixArgs {
    /// The model: a Hugging Face folder (LlamaForCausalLM and its kind, or a BERT
    /// encoder such as all-MiniLM-L6-v2) or a llama/bert .gguf file.
    model: PathBuf,
    /// The tokenizer.json (default: the one in the folder, or beside the .gguf file).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// The calibration text file.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Output file.
    #[arg(short, long, default_value = "imatrix.gguf")]
    output: PathBuf,
    /// Output format: gguf or dat (llama.cpp's legacy format). Default: dat for a .dat
    /// output, else gguf.
    #[arg(long, value_name = "FORMAT")]
    output_format: Option<String>,
    /// Tokens per chunk.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    ctx: usize,
    /// Process at most N chunks (default: all).
    #[arg(long, value_name = "N")]
    chunks: Option<usize>,
    /// Also collect output.weight.
    #[arg(long)]
    process_output: bool,
    /// Threads (default: all cores).
    #[arg(short = 't', long)]
    threads: Option<usize>,
    /// Overwrite an existing output.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct QuantizeArgs {
    #[command(flatten)]
    plan: PlanArgs,
    /// Output file (.safetensors, .gguf) or folder (for a folder input).
    #[arg(short, long)]
    output: PathBuf,
    /// Output container: safetensors or gguf (default: from the extension).
    #[arg(long)]
    format: Option<String>,
    /// Split safetensors output into files of at most SIZE (5GB, 500MB, 2GiB), named and
    /// indexed as transformers' save_pretrained does; the output is a folder.
    #[arg(long, value_name = "SIZE")]
    max_shard_size: Option<String>,
    /// Split a .gguf output into files of at most SIZE of tensor data (500M, 2G), in
    /// llama-gguf-split's format (<stem>-00001-of-0000N.gguf).
    #[arg(long, value_name = "SIZE", conflicts_with = "split_max_tensors")]
    split_max_size: Option<String>,
    /// Split a .gguf output every N tensors, in llama-gguf-split's format.
    #[arg(long, value_name = "N")]
    split_max_tensors: Option<usize>,
    /// Be worker I of N (0-based, e.g. $SLURM_ARRAY_TASK_ID/N or
    /// $JOB_COMPLETION_INDEX/N): write only this worker's output files; then `quant merge OUT`.
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Overwrite an existing output.
    #[arg(long)]
    force: bool,
    /// Quantize tensors holding NaN or infinities.
    #[arg(long)]
    allow_nonfinite: bool,
    /// Also write the run's numbers (seconds, bytes, peak RSS) as JSON to this file.
    #[arg(long, value_name = "FILE")]
    stats_json: Option<PathBuf>,
}

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of stdout goes away (`| head`)
    // instead of failing to print.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Methods { json } => methods(json),
        Command::Quantize(a) => quantize(a),
        Command::Plan(a) => plan(a),
        Command::Inspect { input, json } => inspect(&input, json),
        Command::Dequantize {
            input,
            output,
            dtype,
            force,
        } => dequantize(&input, &output, &dtype, force),
        Command::Eval {
            original,
            quantized,
            json,
        } => eval(&original, &quantized, json),
        Command::Merge { output } => merge(&output),
        #[cfg(feature = "imatrix")]
        Command::Imatrix(a) => imatrix(a),
        Command::Demo { methods, keep } => demo(methods.as_deref(), keep),
    }
}

/// Sizes rayon's global pool (and candle's matrix products, which read
/// `RAYON_NUM_THREADS`) to `n` threads.
fn set_threads(n: usize) -> Result<()> {
    std::env::set_var("RAYON_NUM_THREADS", n.max(1).to_string());
    rayon::ThreadPoolBuilder::new()
        .num_threads(n.max(1))
        .build_global()
        .map_err(|e| Error::Config {
            source_name: "--threads".into(),
            entry: n.to_string(),
            reason: e.to_string(),
        })
}

#[cfg(feature = "imatrix")]
fn imatrix(a: ImatrixArgs) -> Result<()> {
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
    let stats = quant_calib::compute_imatrix(&a.model, &tokenizer, &text, &opts, |done, all| {
        eprint!("\rchunk {done}/{all}");
    })?;
    eprintln!();
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

fn methods(json: bool) -> Result<()> {
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

fn quantizer(a: &PlanArgs) -> Result<ModelQuantizer> {
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

fn split_limits(a: &QuantizeArgs) -> Result<Option<SplitLimits>> {
    let max_bytes = a.split_max_size.as_deref().map(parse_size).transpose()?;
    Ok(
        (max_bytes.is_some() || a.split_max_tensors.is_some()).then_some(SplitLimits {
            max_bytes,
            max_tensors: a.split_max_tensors,
        }),
    )
}

fn merge(output: &Path) -> Result<()> {
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

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.2} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}

fn print_warnings(report: &Report) {
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

fn quantize(a: QuantizeArgs) -> Result<()> {
    if let Some(n) = a.threads {
        set_threads(n)?;
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let b2 = bar.clone();
    let progress: quant::engine::Progress = Arc::new(move |name: &str, i: usize, n: usize| {
        b2.set_length(n as u64);
        b2.set_position(i as u64);
        b2.set_message(name.to_string());
    });
    let q = quantizer(&a.plan)?
        .force(a.force)
        .allow_nonfinite(a.allow_nonfinite)
        .format(a.format.clone())
        .max_shard_size(a.max_shard_size.as_deref().map(parse_size).transpose()?)
        .worker(a.shard.as_deref().map(Worker::parse).transpose()?)
        .split(split_limits(&a)?)
        .progress(Some(progress));
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
        bar.finish_and_clear();
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
    bar.finish_and_clear();
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
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Opens a pipeline and applies `--component NAME=METHOD|skip`; the other weight
/// components take the default quantizer `q`.
fn pipeline_with_components(a: &PlanArgs, q: &ModelQuantizer) -> Result<Pipeline> {
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

fn summary(r: &Report) {
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

fn plan(a: PlanArgs) -> Result<()> {
    let q = quantizer(&a)?;
    if Pipeline::is_pipeline(&a.input) {
        let pipe = pipeline_with_components(&a, &q)?;
        let mut total = 0;
        for c in pipe.components() {
            match pipe.planned(&c.name) {
                Some(quant::ComponentPlan::Quantize(cq)) => {
                    println!("== component {} ({})", c.name, cq.method_name());
                    let (_, plan) = cq.plan_path(&c.path)?;
                    print_plan(&plan);
                    total += plan.bytes_out();
                }
                _ => println!("== component {}: copied unchanged", c.name),
            }
        }
        println!("pipeline total {}", human(total));
        return Ok(());
    }
    let (_, plan) = q.plan_path(&a.input)?;
    print_plan(&plan);
    Ok(())
}

fn print_plan(plan: &quant::engine::Plan) {
    if let Some(r) = &plan.resolved.fallback_reason {
        eprintln!("warning: {}: {r}", plan.resolved.requested);
    }
    println!(
        "{:<52} {:<14} {:<6} {:<9} {:<26} {:>10}  RULE / NOTE",
        "TENSOR", "SHAPE", "DTYPE", "ACTION", "METHOD / DTYPE", "BYTES"
    );
    for e in &plan.entries {
        let what = match e.action {
            Action::Quantize => e.method.clone().unwrap_or_default(),
            _ => e
                .layout
                .first()
                .map(|l| l.dtype.to_string())
                .unwrap_or_default(),
        };
        let why = [e.rule.clone(), e.note.clone()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; ");
        println!(
            "{:<52} {:<14} {:<6} {:<9} {:<26} {:>10}  {}",
            e.name,
            format!("{:?}", e.meta.shape),
            e.meta.dtype.to_string(),
            format!("{:?}", e.action).to_lowercase(),
            what,
            e.bytes_out,
            why
        );
    }
    println!(
        "total {} -> {} ({} bytes), {} fallbacks",
        human(plan.bytes_in()),
        human(plan.bytes_out()),
        plan.bytes_out(),
        plan.fallbacks()
    );
}

fn inspect(input: &Path, json: bool) -> Result<()> {
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

fn dequantize(input: &Path, output: &Path, dtype: &str, force: bool) -> Result<()> {
    let dt = DType::parse(dtype)?;
    if !matches!(dt, DType::F32 | DType::F16 | DType::BF16) {
        return Err(Error::UnsupportedDType {
            tensor: "*".into(),
            dtype: dt.to_string(),
            op: "dequantize (f32, f16 or bf16)".into(),
        });
    }
    check_output(output, force)?;
    let model = ModelFiles::open_any(input)?;
    let records: Vec<_> = model.records().map(|(_, r)| r.clone()).collect();
    let layouts: Vec<PartLayout> = records
        .iter()
        .map(|r| {
            let d = if r.method.is_some() || r.dtype.is_float() {
                dt
            } else {
                r.dtype
            };
            PartLayout::new(&r.name, d, r.shape.clone())
        })
        .collect();
    let mut w = SafetensorsWriter::create(output, layouts.clone(), &Default::default())?;
    // One f32 buffer serves every quantized tensor; unquantized ones stream from the
    // mapped input. Either way the output is encoded a chunk at a time.
    let mut values = Vec::new();
    let mut casts: std::collections::HashMap<(String, String), Option<DType>> =
        std::collections::HashMap::new();
    const CHUNK: usize = 1 << 20;
    for (r, l) in records.iter().zip(&layouts) {
        let encode = |v: &[f32], out: &mut dyn std::io::Write| -> std::io::Result<()> {
            let bytes = encode_f32(l.dtype, v).map_err(std::io::Error::other)?;
            out.write_all(&bytes)
        };
        // Stored unquantized, or by an elementwise cast (whose stored values decode to
        // exactly what dequantizing gives): stream from the mapped file.
        let source = match &r.method {
            None => model.source(&r.name),
            Some(m) => match model.stored_source(&r.name, &r.name) {
                Some(src) if r.parts.len() == 1 => {
                    // One instance per method and parameters, not per tensor.
                    let key = (
                        m.clone(),
                        serde_json::Value::Object(r.params.clone()).to_string(),
                    );
                    let cast = match casts.get(&key) {
                        Some(c) => *c,
                        None => {
                            let c = Registry::global()?.create(m, &r.params)?.elementwise_cast();
                            *casts.entry(key).or_insert(c)
                        }
                    };
                    (cast == Some(src.meta().dtype)).then_some(src)
                }
                _ => None,
            },
        };
        match source {
            Some(src) if l.dtype == src.meta().dtype => {
                w.write_with(&r.name, |out| src.write_bytes(out))?
            }
            Some(src) => w.write_with(&r.name, |out| {
                src.for_each_f32_chunk(CHUNK, &mut |v| {
                    encode(v, out).map_err(|e| Error::io(&r.name, e))
                })
                .map_err(std::io::Error::other)
            })?,
            None if r.method.is_none() && !r.dtype.is_float() => {
                let t = model.load(&r.name, Some(l.dtype))?;
                w.write_raw(&r.name, &t.data)?;
            }
            None => {
                model.load_f32_into(&r.name, &mut values)?;
                w.write_with(&r.name, |out| {
                    values.chunks(CHUNK).try_for_each(|v| encode(v, out))
                })?;
            }
        }
    }
    w.finish()?;
    println!(
        "wrote {} ({} tensors, {})",
        output.display(),
        records.len(),
        dt
    );
    Ok(())
}

fn eval_models(original: &ModelFiles, quantized: &ModelFiles) -> Result<Vec<(String, ErrorStats)>> {
    let mut out = Vec::new();
    for (_, r) in original.records() {
        if !r.dtype.is_float() {
            continue;
        }
        let a = original.load_f32(&r.name)?;
        let b = quantized.load_f32(&r.name)?;
        if a.len() != b.len() {
            return Err(Error::ShapeMismatch {
                tensor: r.name.clone(),
                expected: format!("{} values", a.len()),
                got: vec![b.len()],
            });
        }
        out.push((r.name.clone(), ErrorStats::compare(&a, &b)));
    }
    Ok(out)
}

fn eval(original: &Path, quantized: &Path, json: bool) -> Result<()> {
    let stats = eval_models(
        &ModelFiles::open_any(original)?,
        &ModelFiles::open_any(quantized)?,
    )?;
    if json {
        let v: Vec<_> = stats
            .iter()
            .map(|(n, s)| serde_json::json!({"tensor": n, "stats": s}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    println!(
        "{:<52} {:>11} {:>9} {:>9} {:>10} {:>11}",
        "TENSOR", "RMSE", "REL_RMSE", "SQNR_DB", "COSINE", "MAX_ABS"
    );
    for (n, s) in &stats {
        println!(
            "{:<52} {:>11.3e} {:>9.5} {:>9.2} {:>10.7} {:>11.3e}",
            n, s.rmse, s.rel_rmse, s.sqnr_db, s.cosine, s.max_abs
        );
    }
    Ok(())
}

fn demo(only: Option<&str>, keep: Option<PathBuf>) -> Result<()> {
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
        let report = ModelQuantizer::new(e.name).quantize_path(&input, &out)?;
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
