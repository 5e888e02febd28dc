//! `quant-bench`: the numbers in README.md.
//!
//! - `quant-bench methods`: quantize and dequantize a 4096×4096 f32 matrix with every
//!   registered method, on 1 thread and on all threads; prints a markdown table of f32
//!   input throughput (best of N runs). Dequantization writes into one reused buffer.
//! - `quant-bench e2e`: writes a synthetic bf16 checkpoint of a given size (transformer
//!   shapes, with a 32000×4096 embedding and output head), quantizes it with the `quant`
//!   binary (built beside this one) for representative methods, and prints wall time,
//!   input GB/s, peak RSS (from the OS) against the streaming bound (largest tensor's f32
//!   size + 256 MiB) and output size.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use clap::{Parser, Subcommand};
use quant::safetensors_io::SafetensorsWriter;
use quant::sample::Gaussian;
use quant::{DType, Error, PartLayout, Registry, Result, TensorMeta};

#[derive(Parser)]
#[command(name = "quant-bench", about = "quant's benchmark tables")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Per-method quantize/dequantize throughput on a square f32 matrix.
    Methods {
        /// Matrix side.
        #[arg(long, default_value_t = 4096)]
        size: usize,
        /// Runs per measurement (the best is kept).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Only these methods (comma separated).
        #[arg(long)]
        methods: Option<String>,
    },
    /// Whole-file runs of the `quant` CLI on a synthetic checkpoint, with peak RSS.
    E2e {
        /// Checkpoint size in GiB.
        #[arg(long, default_value_t = 4.0)]
        size_gib: f64,
        /// Work folder (default: a temporary folder, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Methods (comma separated).
        #[arg(
            long,
            default_value = "basic_fp16,basic_int8,gguf_config_q4_k,gguf_config_q8_0,bnb_4bit_config_bf16,quanto_config_int4,torch_ao_config_float8wo_e4m3"
        )]
        methods: String,
        /// Threads for the quant runs (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
}

fn main() -> ExitCode {
    let r = match Cli::parse().command {
        Cmd::Methods {
            size,
            runs,
            methods,
        } => methods_table(size, runs.max(1), methods.as_deref()),
        Cmd::E2e {
            size_gib,
            dir,
            methods,
            threads,
        } => e2e(size_gib, dir, &methods, threads),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> Result<T>) -> Result<(f64, T)> {
    let mut best = f64::INFINITY;
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        let v = f()?;
        best = best.min(t.elapsed().as_secs_f64());
        last = Some(v);
    }
    last.map(|v| (best, v)).ok_or_else(|| Error::Unsupported {
        method: "bench".into(),
        op: "zero runs".into(),
    })
}

/// The best time of `runs` calls of `quantize_reusing`, each given the buffers of the
/// output before (the first from a plain `quantize`), as ggml's benchmarks quantize into
/// one reused buffer; and the last output.
fn best_of_reusing(
    runs: usize,
    m: &dyn quant::QuantMethod,
    meta: &TensorMeta,
    values: &[f32],
) -> Result<(f64, quant::QuantizedTensor)> {
    let mut q = m.quantize(meta, values)?;
    let mut best = f64::INFINITY;
    for _ in 0..runs {
        let buffers = q.into_buffers();
        let t = Instant::now();
        q = m.quantize_reusing(meta, values, buffers)?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok((best, q))
}

fn pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::Unsupported {
            method: "bench".into(),
            op: format!("thread pool: {e}"),
        })
}

fn methods_table(size: usize, runs: usize, only: Option<&str>) -> Result<()> {
    let all = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let meta = TensorMeta::new("bench.weight", DType::F32, vec![size, size]);
    let values = Gaussian::new(1).fill(size * size, 0.02);
    // For methods that refuse f32 weights (torchao's PerRow float8 asserts bf16): the same
    // matrix rounded to bf16, still handed over as f32 values.
    let meta_bf16 = TensorMeta::new("bench.weight", DType::BF16, vec![size, size]);
    let values_bf16: Vec<f32> = values
        .iter()
        .map(|&v| quant::dtype::round_bf16(v))
        .collect();
    let bytes = (values.len() * 4) as f64;
    let mut bf16_used = false;
    let mut imatrix_used = false;
    let mut imatrix_file: Option<PathBuf> = None;
    let wanted: Option<Vec<&str>> = only.map(|s| s.split(',').map(str::trim).collect());
    println!("{}", cpu_line());
    println!();
    println!(
        "f32 input {size}x{size} ({:.0} MB), best of {runs}, MB/s of f32 input (quantize and dequantize: into the output before, reused; fresh output: `quantize`'s whole call, allocation included)",
        bytes / 1e6
    );
    println!();
    println!("| method | quantize 1 thread | quantize {all} threads | scaling | fresh output 1 thread | dequantize 1 thread | dequantize {all} threads |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for e in Registry::global()?.entries() {
        if wanted.as_ref().is_some_and(|w| !w.contains(&e.name)) {
            continue;
        }
        let mut m = (e.create)(&Default::default())?;
        let (meta, values, mark) = match m.quantize(&meta, &values) {
            Err(Error::UnsupportedDType { .. }) => {
                bf16_used = true;
                (&meta_bf16, &values_bf16, " ¹")
            }
            // A type that needs an importance matrix (GGUF IQ2_XXS, IQ2_XS, IQ1_S): the
            // bench's own, as ggml's benchmarks make one.
            Err(Error::NeedsImatrix { .. }) => {
                let path = match &imatrix_file {
                    Some(p) => p.clone(),
                    None => {
                        let p = write_bench_imatrix(size)?;
                        imatrix_file = Some(p.clone());
                        p
                    }
                };
                let mut p = quant::Params::new();
                p.insert("imatrix".into(), path.display().to_string().into());
                m = (e.create)(&p)?;
                imatrix_used = true;
                (&meta, &values, " ²")
            }
            _ => (&meta, &values, ""),
        };
        let mut row = Vec::new();
        for threads in [1, all] {
            let p = pool(threads)?;
            // Into reused buffers, as ggml's `ggml_quantize_chunk` and `to_float`
            // benchmarks do: the time of the kernel, not of the allocator's fresh pages.
            let (tq, q) = p.install(|| best_of_reusing(runs, m.as_ref(), meta, values))?;
            let mut out = vec![0f32; values.len()];
            let (td, _) = p.install(|| best_of(runs, || m.dequantize_into(&q, &mut out)))?;
            row.push((bytes / tq / 1e6, bytes / td / 1e6));
        }
        // `quantize`'s whole call, a fresh output each time (allocated while the one
        // before is still held).
        let (tf, _) = pool(1)?.install(|| best_of(runs, || m.quantize(meta, values)))?;
        let f1 = bytes / tf / 1e6;
        let (q1, d1) = row[0];
        let (qn, dn) = row[row.len() - 1];
        println!(
            "| {}{mark} | {q1:.0} | {qn:.0} | {:.2}x | {f1:.0} | {d1:.0} | {dn:.0} |",
            e.name,
            qn / q1
        );
    }
    if bf16_used {
        println!();
        println!(
            "¹ refuses f32 weights, so it is measured on the matrix rounded to bf16 (dtype BF16, \
             values still handed over as f32); MB/s still counts 4 bytes per element."
        );
    }
    if imatrix_used {
        println!();
        println!(
            "² needs an importance matrix: quantized with the bench's own (per column, the \
             square of a standard normal + 1e-3, as ggml's benchmarks make one)."
        );
    }
    if let Some(p) = imatrix_file {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

/// The CPU model (from `/proc/cpuinfo` where there is one), the vector extensions it has
/// and the kernel path the run uses, so that a table says which code it measured.
fn cpu_line() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    #[cfg(target_arch = "x86_64")]
    let flags = {
        let mut f = Vec::new();
        if std::is_x86_feature_detected!("avx2") {
            f.push("avx2");
        }
        if std::is_x86_feature_detected!("fma") {
            f.push("fma");
        }
        if std::is_x86_feature_detected!("f16c") {
            f.push("f16c");
        }
        if std::is_x86_feature_detected!("avx512f") {
            f.push("avx512f");
        }
        if std::is_x86_feature_detected!("avx512bw") {
            f.push("avx512bw");
        }
        f.join(" ")
    };
    #[cfg(not(target_arch = "x86_64"))]
    let flags = String::new();
    let path = if quant::simd::simd_enabled() {
        "AVX2 kernels"
    } else {
        "portable kernels"
    };
    format!(
        "CPU: {model} ({} logical CPUs); flags: {flags}; {path}",
        rayon::current_num_threads()
    )
}

/// Writes a legacy llama.cpp importance matrix (`.dat`) for `bench.weight` with `size`
/// columns, each the square of a standard normal + 1e-3 (one call, so the stored sums
/// are the weights); returns its path in the temporary folder.
fn write_bench_imatrix(size: usize) -> Result<PathBuf> {
    let path = std::env::temp_dir().join(format!("quant-bench-imatrix-{}.dat", std::process::id()));
    let name = b"bench.weight";
    let mut g = Gaussian::new(7);
    let mut b = Vec::with_capacity(32 + size * 4);
    b.extend(1i32.to_le_bytes());
    b.extend((name.len() as i32).to_le_bytes());
    b.extend(name);
    b.extend(1i32.to_le_bytes());
    b.extend((size as i32).to_le_bytes());
    for _ in 0..size {
        let z = g.sample();
        b.extend((z * z + 1e-3).to_le_bytes());
    }
    b.extend(1i32.to_le_bytes());
    let dataset = b"quant-bench";
    b.extend((dataset.len() as i32).to_le_bytes());
    b.extend(dataset);
    std::fs::write(&path, &b).map_err(|e| Error::io(&path, e))?;
    Ok(path)
}

/// Transformer-like shapes adding up to about `size_gib` GiB of bf16.
fn checkpoint_shapes(size_gib: f64) -> Vec<(String, Vec<usize>)> {
    let (hidden, ffn, vocab) = (4096usize, 11008usize, 32000usize);
    let mut shapes = vec![("model.embed_tokens.weight".to_string(), vec![vocab, hidden])];
    let budget = (size_gib * (1u64 << 30) as f64 / 2.0) as usize; // bf16 elements
    let fixed = 2 * vocab * hidden + hidden;
    let per_layer = 4 * hidden * hidden + 3 * ffn * hidden + 2 * hidden;
    let layers = budget.saturating_sub(fixed) / per_layer;
    for l in 0..layers.max(1) {
        let p = format!("model.layers.{l}");
        shapes.push((format!("{p}.input_layernorm.weight"), vec![hidden]));
        for m in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            shapes.push((format!("{p}.self_attn.{m}.weight"), vec![hidden, hidden]));
        }
        shapes.push((format!("{p}.post_attention_layernorm.weight"), vec![hidden]));
        shapes.push((format!("{p}.mlp.gate_proj.weight"), vec![ffn, hidden]));
        shapes.push((format!("{p}.mlp.up_proj.weight"), vec![ffn, hidden]));
        shapes.push((format!("{p}.mlp.down_proj.weight"), vec![hidden, ffn]));
    }
    shapes.push(("model.norm.weight".to_string(), vec![hidden]));
    shapes.push(("lm_head.weight".to_string(), vec![vocab, hidden]));
    shapes
}

fn write_checkpoint(path: &Path, shapes: &[(String, Vec<usize>)]) -> Result<()> {
    let layouts: Vec<PartLayout> = shapes
        .iter()
        .map(|(n, s)| PartLayout::new(n.clone(), DType::BF16, s.clone()))
        .collect();
    let mut w = SafetensorsWriter::create(path, layouts, &Default::default())?;
    let mut g = Gaussian::new(5);
    for (name, shape) in shapes {
        let n: usize = shape.iter().product();
        w.write_with(name, |out| {
            let mut left = n;
            while left > 0 {
                let k = left.min(1 << 20);
                let bytes: Vec<u8> = (0..k)
                    .flat_map(|_| quant::dtype::f32_to_bf16_bits(g.sample() * 0.02).to_le_bytes())
                    .collect();
                out.write_all(&bytes)?;
                left -= k;
            }
            Ok(())
        })?;
    }
    w.finish()
}

fn e2e(size_gib: f64, dir: Option<PathBuf>, methods: &str, threads: Option<usize>) -> Result<()> {
    let quant_bin = std::env::current_exe()
        .map_err(|e| Error::io("current_exe", e))?
        .with_file_name("quant");
    if !quant_bin.is_file() {
        return Err(Error::io(
            &quant_bin,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "build it first: cargo build --release -p quant-cli",
            ),
        ));
    }
    let (dir, temp) = match dir {
        Some(d) => (d, false),
        None => (
            std::env::temp_dir().join(format!("quant-e2e-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let input = dir.join("checkpoint.safetensors");
    let shapes = checkpoint_shapes(size_gib);
    let largest = shapes
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .max()
        .unwrap_or(0);
    if !input.is_file() {
        let t = Instant::now();
        write_checkpoint(&input, &shapes)?;
        eprintln!(
            "wrote {} in {:.1}s",
            input.display(),
            t.elapsed().as_secs_f64()
        );
    }
    let in_bytes = std::fs::metadata(&input)
        .map_err(|e| Error::io(&input, e))?
        .len();
    let bound = (largest * 4) as u64 + (256 << 20);
    println!("{}", cpu_line());
    println!(
        "checkpoint: {} tensors, {:.2} GiB bf16, largest tensor {} elements; streaming bound {:.0} MiB (largest f32 + 256 MiB); threads {}",
        shapes.len(),
        in_bytes as f64 / (1u64 << 30) as f64,
        largest,
        bound as f64 / (1u64 << 20) as f64,
        threads.map(|t| t.to_string()).unwrap_or_else(|| "all".into())
    );
    println!();
    println!("| method | wall s | input GB/s | peak RSS MiB | within bound | output MiB |");
    println!("|---|---:|---:|---:|---|---:|");
    for m in methods.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let out = dir.join(format!("{m}.safetensors"));
        let stats = dir.join(format!("{m}.json"));
        let mut cmd = Command::new(&quant_bin);
        cmd.arg("quantize")
            .arg(&input)
            .arg("-o")
            .arg(&out)
            .arg("--method")
            .arg(m);
        cmd.arg("--force").arg("--stats-json").arg(&stats);
        if let Some(t) = threads {
            cmd.arg("--threads").arg(t.to_string());
        }
        let t = Instant::now();
        let o = cmd.output().map_err(|e| Error::io(&quant_bin, e))?;
        let wall = t.elapsed().as_secs_f64();
        if !o.status.success() {
            println!(
                "| {m} | failed: {} | | | | |",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            continue;
        }
        let s: serde_json::Value = std::fs::read(&stats)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let rss = s["peak_rss_bytes"].as_u64().unwrap_or(0);
        let out_bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        println!(
            "| {m} | {wall:.1} | {:.2} | {:.0} | {} | {:.0} |",
            in_bytes as f64 / wall / 1e9,
            rss as f64 / (1u64 << 20) as f64,
            if rss <= bound { "yes" } else { "NO" },
            out_bytes as f64 / (1u64 << 20) as f64
        );
        let _ = std::fs::remove_file(&out);
        let _ = std::fs::remove_file(&stats);
        let stem = out
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = std::fs::remove_file(dir.join(format!("{stem}.quantization_info.json")));
    }
    if temp {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
