//! `quant`: quantize model weights into GGUF, bitsandbytes, optimum-quanto, TorchAO and
//! plain formats, inspect them, load them back and measure the error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use quant::Result;

mod cmd;
mod progress;

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
    /// No progress on stderr (by default: a bar on a terminal, else a line at each tenth
    /// of the work and every 30 s).
    #[arg(short, long, global = true)]
    quiet: bool,
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
    /// Restore every tensor: a model folder to a folder transformers loads, a pipeline
    /// folder to one diffusers loads, a .gguf to a .gguf of float tensors, or anything to
    /// one .safetensors file (a pipeline's tensors named `<component>/<tensor>`).
    Dequantize {
        /// Quantized file, folder or pipeline folder.
        input: PathBuf,
        /// Output folder, .gguf or .safetensors file.
        #[arg(short, long)]
        output: PathBuf,
        /// Output dtype.
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// Output kind: safetensors (one file) or gguf (default: from the output's
        /// extension, else like the input).
        #[arg(long)]
        format: Option<String>,
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
    /// Compute an importance matrix from text, as llama-imatrix does (llama, Mixtral,
    /// qwen2, qwen3, qwen3moe, phi3, gemma2, gemma3 and bert models, from a Hugging Face
    /// folder or a .gguf file), for `quantize --imatrix`.
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
    match run(cli.command, progress::Mode::detect(cli.quiet)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Command, mode: progress::Mode) -> Result<()> {
    match cmd {
        Command::Methods { json } => cmd::methods::methods(json),
        Command::Quantize(a) => cmd::quantize::quantize(a, mode),
        Command::Plan(a) => cmd::plan::plan(a),
        Command::Inspect { input, json } => cmd::inspect::inspect(&input, json),
        Command::Dequantize {
            input,
            output,
            dtype,
            format,
            force,
        } => cmd::dequantize::dequantize(&input, &output, &dtype, format.as_deref(), force, mode),
        Command::Eval {
            original,
            quantized,
            json,
        } => cmd::eval::eval(&original, &quantized, json, mode),
        Command::Merge { output } => cmd::merge::merge(&output, mode),
        #[cfg(feature = "imatrix")]
        Command::Imatrix(a) => cmd::imatrix::imatrix(a, mode),
        Command::Demo { methods, keep } => cmd::demo::demo(methods.as_deref(), keep),
    }
}
