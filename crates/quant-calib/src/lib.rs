//! Calibration data for quant: importance matrices computed from text, compatible with
//! llama.cpp's `llama-imatrix` (b11312, `tools/imatrix/imatrix.cpp`).
//!
//! [`compute_imatrix`] tokenizes the text, cuts it into chunks as llama-imatrix does
//! (BOS first in each chunk when the vocabulary adds one), runs the model with candle
//! ([`llama`]) and accumulates, for every weight matrix of the blocks, `Σx²` of each input
//! column and the number of rows seen ([`Collector`]). The result is a
//! [`quant_gguf::ImatrixStats`], written in llama.cpp's GGUF or legacy `.dat` form.
//!
//! A crate of its own because it runs models: it depends on candle-core and tokenizers,
//! which the format backends (quant-core only) must not; it uses quant-gguf's Hugging Face
//! → llama.cpp converter for tensor names and values, and its imatrix writer.

pub mod llama;

use std::collections::BTreeMap;
use std::path::Path;

use quant_core::{Error, Result};
use quant_gguf::arch::{architecture_for, HfGgufReader};
use quant_gguf::gguf::GgufValue;
use quant_gguf::{ImatrixStats, StatsEntries};

/// llama-imatrix ignores matrix products over fewer rows than this (`src1->ne[1] < 16`).
pub const MIN_ROWS: usize = 16;

/// How to compute an importance matrix (llama-imatrix's options of the same names).
#[derive(Clone, Debug)]
pub struct ImatrixOptions {
    /// Tokens per chunk (`-c`, default 512).
    pub ctx: usize,
    /// Process at most this many chunks (`--chunks`; `None` = all).
    pub chunks: Option<usize>,
    /// Also collect `output.weight` (`--process-output`).
    pub process_output: bool,
    /// The dataset name stored in the file (the `-f` argument as given).
    pub dataset: String,
}

impl Default for ImatrixOptions {
    fn default() -> Self {
        ImatrixOptions {
            ctx: 512,
            chunks: None,
            process_output: false,
            dataset: String::new(),
        }
    }
}

/// Accumulates `Σx²` per input column and row counts per weight, as
/// `IMatrixCollector::collect_imatrix` does for `GGML_OP_MUL_MAT` on a 2-D weight.
#[derive(Debug, Default)]
pub struct Collector {
    entries: StatsEntries,
    process_output: bool,
}

impl Collector {
    /// A collector; `process_output` also keeps `output.weight`.
    pub fn new(process_output: bool) -> Self {
        Collector {
            entries: BTreeMap::new(),
            process_output,
        }
    }

    /// Whether llama-imatrix collects the input of weight `name` over `rows` rows:
    /// block weights (`blk.*`), `output.weight` only on request, at least [`MIN_ROWS`].
    pub fn wants(&self, name: &str, rows: usize) -> bool {
        rows >= MIN_ROWS
            && (name.starts_with("blk.") || (self.process_output && name == "output.weight"))
    }

    /// Adds the input `x` (`rows × cols`, row-major) of a product with weight `name`.
    /// Fails on a size that changed or a non-finite sum (llama-imatrix exits on both).
    pub fn add(&mut self, name: &str, x: &[f32], cols: usize) -> Result<()> {
        let rows = x.len().checked_div(cols).unwrap_or(0);
        if !self.wants(name, rows) {
            return Ok(());
        }
        let (sums, counts) = self
            .entries
            .entry(name.to_string())
            .or_insert_with(|| (vec![0.0; cols], vec![0]));
        if sums.len() != cols {
            return Err(Error::tensor(
                "imatrix",
                name,
                format!("inconsistent size ({} vs {cols})", sums.len()),
            ));
        }
        for row in x.chunks_exact(cols) {
            for (acc, &v) in sums.iter_mut().zip(row) {
                *acc += v * v;
            }
        }
        if let Some(i) = sums.iter().position(|v| !v.is_finite()) {
            return Err(Error::tensor(
                "imatrix",
                name,
                format!("non-finite sum of squared activations at column {i}"),
            ));
        }
        counts[0] += rows as i64;
        Ok(())
    }

    /// The statistics collected.
    pub fn into_entries(self) -> StatsEntries {
        self.entries
    }
}

/// The token ids of a text as llama-imatrix gets them: one trailing newline removed (as
/// `-f` does), tokenized without special-token parsing by the model's `tokenizer.json`,
/// BOS prepended when the vocabulary adds it.
pub fn tokenize(dir: &Path, text: &str, bos: Option<u32>) -> Result<Vec<u32>> {
    let path = dir.join("tokenizer.json");
    let tok = tokenizers::Tokenizer::from_file(&path)
        .map_err(|e| Error::file(&path, "tokenizer.json", e.to_string()))?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let enc = tok
        .encode(text, false)
        .map_err(|e| Error::file(&path, "tokenizer.json", e.to_string()))?;
    let mut ids = Vec::with_capacity(enc.len() + 1);
    ids.extend(bos);
    ids.extend_from_slice(enc.get_ids());
    Ok(ids)
}

/// The chunks llama-imatrix evaluates: `min(chunks, len / ctx)` consecutive runs of
/// `ctx` tokens, the first token of each replaced by BOS when there is one. Fails, as
/// llama-imatrix does, with fewer than `2 · ctx` tokens (`source` names the text).
pub fn chunks(
    source: &str,
    tokens: &[u32],
    ctx: usize,
    limit: Option<usize>,
    bos: Option<u32>,
) -> Result<Vec<Vec<u32>>> {
    if ctx < MIN_ROWS || tokens.len() < 2 * ctx {
        return Err(Error::file(
            source,
            "text",
            format!(
                "a context of {ctx} tokens (at least {MIN_ROWS}) needs at least {} tokens; \
                 the text has {}",
                2 * ctx,
                tokens.len()
            ),
        ));
    }
    let n = limit.map_or(tokens.len() / ctx, |c| c.min(tokens.len() / ctx));
    Ok(tokens
        .chunks_exact(ctx)
        .take(n)
        .map(|c| {
            let mut c = c.to_vec();
            if let (Some(b), Some(first)) = (bos, c.first_mut()) {
                *first = b;
            }
            c
        })
        .collect())
}

fn kv_bool(kv: &quant_gguf::arch::KvList, key: &str) -> Option<bool> {
    match kv.get(key)? {
        GgufValue::Bool(b) => Some(*b),
        _ => None,
    }
}

/// Computes the importance matrix of the Hugging Face model folder `dir` on `text`.
/// `progress` is called after each chunk with (chunks done, chunks in all).
pub fn compute_imatrix(
    dir: &Path,
    text: &str,
    opts: &ImatrixOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<ImatrixStats> {
    let config_path = dir.join("config.json");
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&config_path).map_err(|e| Error::io(&config_path, e))?,
    )
    .map_err(|e| Error::file(&config_path, "json", e.to_string()))?;
    let arch = architecture_for(&config).ok_or_else(|| {
        Error::file(
            &config_path,
            "config.json",
            "imatrix runs LlamaForCausalLM-type models only (architectures[0])",
        )
    })?;
    let reader = HfGgufReader::open(dir, &config, arch)?;
    let model = llama::Llama::load(&reader, dir)?;
    let kv = reader.kvs();
    let bos = match kv_bool(kv, "tokenizer.ggml.add_bos_token") {
        Some(false) => None,
        _ => kv
            .get("tokenizer.ggml.bos_token_id")
            .and_then(GgufValue::as_u64)
            .map(|b| b as u32),
    };
    let tokens = tokenize(dir, text, bos)?;
    let chunks = chunks(&opts.dataset, &tokens, opts.ctx, opts.chunks, bos)?;
    let mut collector = Collector::new(opts.process_output);
    for (i, chunk) in chunks.iter().enumerate() {
        model.forward(chunk, &mut collector)?;
        progress(i + 1, chunks.len());
    }
    Ok(ImatrixStats {
        entries: collector.into_entries(),
        datasets: vec![opts.dataset.clone()],
        chunk_count: chunks.len() as u32,
        chunk_size: opts.ctx as u32,
    })
}
