//! `quant-minilm MODEL_DIR`: quantizes all-MiniLM-L6-v2 with every registered method,
//! reloads each output, embeds the fixed sentences at batch 1 and prints the table of
//! size, cosine against the f32 model and latency (see the crate docs and README.md).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::quantized::GgmlDType;
use clap::Parser;
use quant::{ModelQuantizer, Registry};
use quant_minilm::qbert::MatmulPath;
use quant_minilm::{cosine, cosine_target, nominal_bits, sentences::SENTENCES, Embedder, Encoder};

#[derive(Parser)]
#[command(about = "all-MiniLM-L6-v2 quantized by every method: size, cosine vs f32, latency")]
struct Args {
    /// The model folder (config.json, model.safetensors, tokenizer.json); see
    /// scripts/fetch-minilm.sh.
    model_dir: PathBuf,
    /// Only these methods (comma-separated); default every registered method.
    #[arg(long, value_delimiter = ',')]
    methods: Vec<String>,
    /// Timed passes over the sentences per method (after one warm-up pass over the first
    /// five); latency percentiles are over all passes.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Where quantized outputs are written (each is deleted after it is measured);
    /// default a temporary folder.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Also write the table into this Markdown file, between the lines
    /// `<!-- minilm-table:start -->` and `<!-- minilm-table:end -->`.
    #[arg(long)]
    readme: Option<PathBuf>,
    /// A per-tensor rule `REGEX=ACTION` applied to every method (an ablation, e.g.
    /// `--rule 'word_embeddings=float32'`); repeatable, first match wins.
    #[arg(long = "rule")]
    rules: Vec<String>,
    /// Keep GGML types whose candle CPU kernel is scalar (Q4_1, Q5_0, Q5_1, Q8_1) packed
    /// in `QMatMul` instead of dequantizing them at load (slow; for comparison).
    #[arg(long)]
    pack_scalar: bool,
}

struct Row {
    method: String,
    nominal: Option<u32>,
    bits: Option<f32>,
    matmul: String,
    file_bytes: u64,
    fallbacks: usize,
    mean_cos: f64,
    min_cos: f64,
    median_ms: f64,
    p95_ms: f64,
    target: Option<f64>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let model_dir = args.model_dir.as_path();
    let weights = model_dir.join("model.safetensors");
    let f32_bytes = std::fs::metadata(&weights)?.len();
    let tmp = tempfile::tempdir()?;
    let work = args.work_dir.clone().unwrap_or_else(|| tmp.path().into());
    std::fs::create_dir_all(&work)?;

    let rules: Vec<(String, String)> = args
        .rules
        .iter()
        .map(|r| match r.rsplit_once('=') {
            Some((p, a)) => Ok((p.to_string(), a.to_string())),
            None => Err(format!("--rule {r}: expected REGEX=ACTION")),
        })
        .collect::<Result<_, _>>()?;
    let registry = Registry::global()?;
    let methods: Vec<String> = if args.methods.is_empty() {
        registry.entries().map(|e| e.name.to_string()).collect()
    } else {
        args.methods.clone()
    };

    eprintln!("f32 reference: {}", weights.display());
    let reference = Embedder::dequantized(model_dir, model_dir)?;
    let (ref_emb, ref_times) = run(&reference, args.repeats)?;
    sanity_check(&ref_emb);
    // GGUF methods read a copy without the integer position_ids buffer (see gguf_input).
    let mut gguf_src: Option<PathBuf> = None;
    let mut rows = vec![row(
        "f32 (reference)",
        None,
        "dense f32",
        f32_bytes,
        0,
        &ref_emb,
        &ref_emb,
        ref_times,
        None,
    )];

    for name in &methods {
        let entry = registry
            .get(name)
            .ok_or_else(|| format!("unknown method {name}"))?;
        let quantizer = ModelQuantizer::new(name.as_str())
            .force(true)
            .preserve_dtypes(rules.iter().map(|(p, a)| (p.as_str(), a.as_str())))?;
        let out = match quantizer.container_extension() {
            Some(ext) => work.join(format!("{name}.{ext}")),
            None => work.join(name),
        };
        eprintln!("{name}: quantizing -> {}", out.display());
        let input = if out.extension().is_some_and(|e| e == "gguf") {
            match &gguf_src {
                Some(p) => p.clone(),
                None => {
                    let (p, dropped) =
                        quant_minilm::gguf_input(model_dir, &work.join("gguf-input"))?;
                    eprintln!("GGUF input: {} without {dropped:?}", p.display());
                    gguf_src = Some(p.clone());
                    p
                }
            }
        } else {
            model_dir.to_path_buf()
        };
        let report = match quantizer.quantize_path(&input, &out) {
            Ok(r) => r,
            // The lattice types ggml quantizes only with importance weights (as `quant demo`).
            Err(quant::Error::NeedsImatrix { .. }) => {
                eprintln!("{name}: skipped: needs an importance matrix (--imatrix)");
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        let file_bytes = weight_bytes(&out)?;
        let is_gguf = out.extension().is_some_and(|e| e == "gguf");
        let (embedder, matmul) = if is_gguf {
            match Embedder::native_gguf(model_dir, &out, args.pack_scalar) {
                Ok(e) => {
                    let kinds = match e.encoder() {
                        Encoder::Native(q) => describe_types(q.linear_types()),
                        Encoder::Dense(_) => String::new(),
                    };
                    (e, kinds)
                }
                Err(err) => {
                    let first = err.to_string();
                    let first = first.lines().next().unwrap_or_default();
                    eprintln!("{name}: candle cannot run this .gguf natively ({first}); dequantizing at load");
                    (
                        Embedder::dequantized(model_dir, &out)?,
                        "dequantized at load (candle 0.11 cannot load this GGML type)".to_string(),
                    )
                }
            }
        } else {
            (
                Embedder::dequantized(model_dir, &out)?,
                "dequantized at load".to_string(),
            )
        };
        let (emb, times) = run(&embedder, args.repeats)?;
        rows.push(row(
            name,
            Some(entry.bits_per_weight),
            &matmul,
            file_bytes,
            report.fallbacks,
            &emb,
            &ref_emb,
            times,
            cosine_target(nominal_bits(name, entry.bits_per_weight)),
        ));
        if let Some(r) = rows.last() {
            eprintln!(
                "{name}: mean cos {:.6}, min {:.6}, median {:.1} ms",
                r.mean_cos, r.min_cos, r.median_ms
            );
        }
        if out.is_dir() {
            std::fs::remove_dir_all(&out)?;
        } else {
            std::fs::remove_file(&out)?;
        }
    }

    let table = render(&rows, f32_bytes, args.repeats, &args.rules);
    println!("{table}");
    if let Some(readme) = &args.readme {
        write_into(readme, &table)?;
        eprintln!("table written into {}", readme.display());
    }
    Ok(())
}

/// Embeds every sentence once for the embeddings, after a warm-up, then `repeats` timed
/// passes; returns the first timed pass's embeddings and every latency in ms.
fn run(e: &Embedder, repeats: usize) -> Result<(Vec<Vec<f32>>, Vec<f64>), BoxError> {
    for s in SENTENCES.iter().take(5) {
        e.embed(s)?;
    }
    let mut embs = Vec::with_capacity(SENTENCES.len());
    let mut times = Vec::with_capacity(SENTENCES.len() * repeats.max(1));
    for pass in 0..repeats.max(1) {
        for s in SENTENCES {
            let t = Instant::now();
            let v = e.embed(s)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            if pass == 0 {
                embs.push(v);
            }
        }
    }
    Ok((embs, times))
}

/// Prints two pairs whose similarity sentence-transformers documents for this model, so a
/// broken tokenizer or pooling shows at once.
fn sanity_check(emb: &[Vec<f32>]) {
    if let (Some(a), Some(b), Some(c)) = (emb.first(), emb.get(1), emb.get(2)) {
        eprintln!(
            "f32 sanity: cos('{}', '{}') = {:.4}, cos('{}', '{}') = {:.4}",
            SENTENCES[0],
            SENTENCES[1],
            cosine(a, b),
            SENTENCES[0],
            SENTENCES[2],
            cosine(a, c)
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn row(
    method: &str,
    bits: Option<f32>,
    matmul: &str,
    file_bytes: u64,
    fallbacks: usize,
    emb: &[Vec<f32>],
    reference: &[Vec<f32>],
    mut times: Vec<f64>,
    target: Option<f64>,
) -> Row {
    let cos: Vec<f64> = emb
        .iter()
        .zip(reference)
        .map(|(a, b)| cosine(a, b))
        .collect();
    let mean_cos = cos.iter().sum::<f64>() / cos.len().max(1) as f64;
    let min_cos = cos.iter().copied().fold(f64::INFINITY, f64::min);
    times.sort_by(f64::total_cmp);
    Row {
        method: method.to_string(),
        nominal: bits.map(|b| nominal_bits(method, b)),
        bits,
        matmul: matmul.to_string(),
        file_bytes,
        fallbacks,
        mean_cos,
        min_cos,
        median_ms: percentile(&times, 0.5),
        p95_ms: percentile(&times, 0.95),
        target,
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summarises the matmul weights by path and GGML type, e.g.
/// `QMatMul Q4K×6; dense Q5_0×30 (scalar kernel)`.
fn describe_types(types: &[(GgmlDType, MatmulPath)]) -> String {
    let mut groups: Vec<(&str, Vec<(String, usize)>)> = Vec::new();
    for (t, path) in types {
        let label = match path {
            MatmulPath::Packed => "QMatMul",
            MatmulPath::PackedScalar => "QMatMul, scalar kernel",
            MatmulPath::DequantizedByCandle => "dense (QMatMul dequantizes)",
            MatmulPath::DequantizedScalar => "dense (candle kernel scalar)",
        };
        let name = format!("{t:?}");
        let i = match groups.iter().position(|(l, _)| *l == label) {
            Some(i) => i,
            None => {
                groups.push((label, Vec::new()));
                groups.len() - 1
            }
        };
        let counts = &mut groups[i].1;
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => counts.push((name, 1)),
        }
    }
    groups
        .iter()
        .map(|(label, counts)| {
            let list: Vec<String> = counts.iter().map(|(n, c)| format!("{n}×{c}")).collect();
            format!("{label}: {}", list.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Bytes of the weight files of an output: the file itself, or every `.safetensors` of
/// an output folder (config, tokenizer and info files excluded).
fn weight_bytes(out: &Path) -> Result<u64, BoxError> {
    if !out.is_dir() {
        return Ok(std::fs::metadata(out)?.len());
    }
    let mut total = 0;
    for entry in std::fs::read_dir(out)? {
        let p = entry?.path();
        if p.extension().is_some_and(|e| e == "safetensors") {
            total += std::fs::metadata(&p)?.len();
        }
    }
    Ok(total)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    format!("{cpu}, {cores} logical cores, 1-minute load average {load} when the run ended (the machine is shared)")
}

fn render(rows: &[Row], f32_bytes: u64, repeats: usize, rules: &[String]) -> String {
    let mut s = String::new();
    if !rules.is_empty() {
        s.push_str(&format!(
            "Rules applied to every method: {}.\n\n",
            rules.join(", ")
        ));
    }
    s.push_str(&format!(
        "Machine: {}. {} sentences, batch 1, latency = tokenize + forward + pooling, \
         {} timed passes after a warm-up. Cosine: embedding of each sentence vs the f32 model.\n\n",
        machine(),
        SENTENCES.len(),
        repeats.max(1)
    ));
    s.push_str("| method | bits | b/w stored | matmul | file MB | vs f32 | fallbacks | mean cos | min cos | target | median ms | p95 ms |\n");
    s.push_str("|---|---:|---:|---|---:|---:|---:|---:|---:|---|---:|---:|\n");
    for r in rows {
        let target = match r.target {
            Some(t) => {
                let ok = |c: f64| if c >= t { "✓" } else { "✗" };
                format!("≥ {t}: mean {} min {}", ok(r.mean_cos), ok(r.min_cos))
            }
            None if r.bits.is_some() => "report only".to_string(),
            None => String::new(),
        };
        let latency = if r.median_ms < 100.0 { "" } else { " ✗" };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.2} | {:.2}× | {} | {:.6} | {:.6} | {} | {:.2}{} | {:.2} |\n",
            r.method,
            r.nominal.map_or("32".to_string(), |b| b.to_string()),
            r.bits.map_or("32".to_string(), |b| format!("{b:.2}")),
            r.matmul,
            r.file_bytes as f64 / 1e6,
            f32_bytes as f64 / r.file_bytes.max(1) as f64,
            r.fallbacks,
            r.mean_cos,
            r.min_cos,
            target,
            r.median_ms,
            latency,
            r.p95_ms
        ));
    }
    s
}

fn write_into(readme: &Path, table: &str) -> Result<(), BoxError> {
    const START: &str = "<!-- minilm-table:start -->";
    const END: &str = "<!-- minilm-table:end -->";
    let text = std::fs::read_to_string(readme)?;
    let (Some(a), Some(b)) = (text.find(START), text.find(END)) else {
        return Err(format!("{}: no {START} … {END} markers", readme.display()).into());
    };
    if b < a {
        return Err(format!("{}: {END} comes before {START}", readme.display()).into());
    }
    let new = format!("{}{START}\n{table}{}", &text[..a], &text[b..]);
    std::fs::write(readme, new)?;
    Ok(())
}
