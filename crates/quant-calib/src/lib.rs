//! Calibration data for quant: importance matrices computed from text, compatible with
//! llama.cpp's `llama-imatrix` (b11312, `tools/imatrix/imatrix.cpp`).
//!
//! [`compute_imatrix`] tokenizes the text, cuts it into chunks as llama-imatrix does
//! (BOS first in each chunk when the vocabulary adds one), runs the model with candle
//! ([`llama`] for llama/Mistral/Mixtral/Qwen decoders, [`gemma`] for Gemma 2 and 3, [`bert`] for
//! BERT encoders such as all-MiniLM-L6-v2) and accumulates, for every weight matrix of the
//! blocks, `Σx²` of each input column and the number of rows seen ([`Collector`]). The result is a
//! [`quant_gguf::ImatrixStats`], written in llama.cpp's GGUF or legacy `.dat` form.
//!
//! A crate of its own because it runs models: it depends on candle-core and tokenizers,
//! which the format backends (quant-core only) must not; it uses quant-gguf's Hugging Face
//! → llama.cpp converter for tensor names and values, and its imatrix writer.

pub mod bert;
pub mod gemma;
pub mod llama;
mod moe;
mod ops;
mod phi3;
pub mod source;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use quant_core::{Error, Result};
use quant_gguf::gguf::GgufValue;
use quant_gguf::{ImatrixStats, StatsEntries};
pub use source::{GgufSource, HfSource, ModelSource};

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

    /// Adds the inputs `x` (`rows × cols`) that expert `expert` of the `n_experts` of the
    /// 3-D weight `name` multiplied (`GGML_OP_MUL_MAT_ID`, which llama-imatrix collects
    /// for every weight and any number of rows): `Σx²` per expert and column, one count
    /// per row routed to the expert. The entry exists once the weight has been used, even
    /// for experts no row reached.
    pub fn add_expert(
        &mut self,
        name: &str,
        expert: usize,
        n_experts: usize,
        x: &[f32],
        cols: usize,
    ) -> Result<()> {
        let (sums, counts) = self
            .entries
            .entry(name.to_string())
            .or_insert_with(|| (vec![0.0; cols * n_experts], vec![0; n_experts]));
        if sums.len() != cols * n_experts || counts.len() != n_experts || expert >= n_experts {
            return Err(Error::tensor(
                "imatrix",
                name,
                format!(
                    "inconsistent size ({} sums, {} experts vs {cols} × {n_experts}, expert {expert})",
                    sums.len(),
                    counts.len()
                ),
            ));
        }
        let acc = &mut sums[expert * cols..(expert + 1) * cols];
        let mut rows = 0i64;
        for row in x.chunks_exact(cols.max(1)) {
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v * v;
            }
            rows += 1;
        }
        if let Some(i) = acc.iter().position(|v| !v.is_finite()) {
            return Err(Error::tensor(
                "imatrix",
                name,
                format!("non-finite sum of squared activations of expert {expert} at column {i}"),
            ));
        }
        counts[expert] += rows;
        Ok(())
    }

    /// The statistics collected.
    pub fn into_entries(self) -> StatsEntries {
        self.entries
    }
}

/// The token ids of a text as llama-imatrix gets them: one trailing newline removed (as
/// `-f` does), tokenized by `tokenizer.json` at `path` without adding special tokens (and
/// without the file's truncation or padding), BOS prepended and EOS appended when the
/// vocabulary adds them (`bos`, `eos`).
pub fn tokenize(path: &Path, text: &str, bos: Option<u32>, eos: Option<u32>) -> Result<Vec<u32>> {
    tokenize_spaced(path, text, bos, eos, true)
}

/// [`tokenize`]; without `space_prefix` (llama.cpp's `tokenizer.ggml.add_space_prefix =
/// false`, as Gemma's vocabulary is converted), a SentencePiece `Metaspace` pre-tokenizer
/// of the file does not prepend `▁` to the text, as llama.cpp's tokenizer then does not.
pub fn tokenize_spaced(
    path: &Path,
    text: &str,
    bos: Option<u32>,
    eos: Option<u32>,
    space_prefix: bool,
) -> Result<Vec<u32>> {
    let mut tok = tokenizers::Tokenizer::from_file(path)
        .map_err(|e| Error::file(path, "tokenizer.json", e.to_string()))?;
    if !space_prefix {
        if let Some(tokenizers::PreTokenizerWrapper::Metaspace(m)) = tok.get_pre_tokenizer() {
            let mut m = m.clone();
            m.set_prepend_scheme(tokenizers::pre_tokenizers::metaspace::PrependScheme::Never);
            tok.with_pre_tokenizer(Some(tokenizers::PreTokenizerWrapper::Metaspace(m)));
        }
    }
    tok.with_padding(None);
    tok.with_truncation(None)
        .map_err(|e| Error::file(path, "tokenizer.json", e.to_string()))?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let enc = tok
        .encode(text, false)
        .map_err(|e| Error::file(path, "tokenizer.json", e.to_string()))?;
    let mut ids = Vec::with_capacity(enc.len() + 1);
    ids.extend(bos);
    ids.extend_from_slice(enc.get_ids());
    ids.extend(eos);
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

/// A special token llama.cpp adds: `tokenizer.ggml.<what>_token_id` unless
/// `tokenizer.ggml.add_<what>_token` says not to (`default`: whether it adds it when the
/// file says nothing: BOS yes, EOS no).
fn added_token(src: &dyn ModelSource, what: &str, default: bool) -> Option<u32> {
    let add = ops::kv_bool(src, &format!("tokenizer.ggml.add_{what}_token")).unwrap_or(default);
    add.then(|| {
        src.kv(&format!("tokenizer.ggml.{what}_token_id"))
            .and_then(GgufValue::as_u64)
            .map(|id| id as u32)
    })
    .flatten()
}

/// A model graph quant runs to collect activations: llama.cpp's `llama`, `gemma2` /
/// `gemma3` or `bert`.
#[derive(Debug)]
pub enum Graph {
    /// Decoder-only llama (also Mistral and Mixtral, as llama.cpp converts them), qwen2,
    /// qwen3, qwen3moe and phi3.
    Llama(llama::Llama),
    /// BERT encoder (sentence embedding models such as all-MiniLM-L6-v2).
    Bert(bert::Bert),
    /// Gemma 2 and Gemma 3 (text) decoders.
    Gemma(gemma::Gemma),
}

impl Graph {
    /// Loads the graph named by the model's `general.architecture`.
    pub fn load(src: &dyn ModelSource) -> Result<Self> {
        match src.kv("general.architecture") {
            Some(GgufValue::String(a)) if a == "bert" => Ok(Graph::Bert(bert::Bert::load(src)?)),
            Some(GgufValue::String(a)) if a == "gemma2" || a == "gemma3" => {
                Ok(Graph::Gemma(gemma::Gemma::load(src, a)?))
            }
            Some(GgufValue::String(a))
                if matches!(a.as_str(), "llama" | "qwen2" | "qwen3" | "qwen3moe" | "phi3") =>
            {
                Ok(Graph::Llama(llama::Llama::load(src)?))
            }
            other => Err(Error::file(
                src.path(),
                "model",
                format!(
                    "quant's imatrix runs llama, qwen2, qwen3, qwen3moe, phi3, gemma2, gemma3 and bert models; general.architecture is {}",
                    match other {
                        Some(GgufValue::String(a)) => format!("'{a}'"),
                        _ => "missing".to_string(),
                    }
                ),
            )),
        }
    }

    /// Runs one chunk of tokens, giving `collector` the input of every weight product.
    pub fn forward(&self, tokens: &[u32], collector: &mut Collector) -> Result<()> {
        self.forward_nll(tokens, collector, false).map(|_| ())
    }

    /// [`forward`](Self::forward); with `nll` on a causal model (llama), also llama-imatrix's
    /// perplexity terms of the chunk: (sum of −log p, sum of squares, tokens).
    pub fn forward_nll(
        &self,
        tokens: &[u32],
        collector: &mut Collector,
        nll: bool,
    ) -> Result<Option<(f64, f64, usize)>> {
        match self {
            Graph::Llama(m) => m.forward_nll(tokens, collector, nll),
            Graph::Bert(m) => m.forward(tokens, collector).map(|_| None),
            Graph::Gemma(m) => m.forward_nll(tokens, collector, nll),
        }
    }
}

/// Opens `model`: a `.gguf` file, else a Hugging Face folder.
pub fn open_model(model: &Path) -> Result<Box<dyn ModelSource>> {
    Ok(if model.is_file() && quant_gguf::gguf::sniff(model) {
        Box::new(GgufSource::open(model)?)
    } else {
        Box::new(HfSource::open(model)?)
    })
}

/// The `tokenizer.json` to use for `model`: `explicit` when given, else the one in the
/// folder (or beside the `.gguf` file).
pub fn tokenizer_path(model: &Path, explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let dir = if model.is_dir() {
        model
    } else {
        model.parent().unwrap_or(Path::new("."))
    };
    let p = dir.join("tokenizer.json");
    if p.is_file() {
        Ok(p)
    } else {
        Err(Error::file(
            model,
            "model",
            "no tokenizer.json beside it: give one (--tokenizer); quant tokenizes with the \
             Hugging Face tokenizer, not the GGUF vocabulary",
        ))
    }
}

/// Computes the importance matrix of `model` (a Hugging Face folder or a `.gguf` file) on
/// `text`, tokenized by `tokenizer` (a `tokenizer.json`). `progress` is called with
/// (chunks done, chunks in all) before the first chunk and after each.
pub fn compute_imatrix(
    model: &Path,
    tokenizer: &Path,
    text: &str,
    opts: &ImatrixOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<ImatrixStats> {
    compute_imatrix_reporting(model, tokenizer, text, opts, false, |p| {
        progress(p.done, p.total)
    })
}

/// Where [`compute_imatrix_reporting`] is.
#[derive(Clone, Copy, Debug)]
pub struct ChunkProgress {
    /// Chunks done.
    pub done: usize,
    /// Chunks in all.
    pub total: usize,
    /// The running perplexity estimate as llama-imatrix prints it (`[3]5.4321`): exp of
    /// the mean −log p of every chunk's second half so far (llama models, when asked).
    pub ppl: Option<f64>,
}

/// [`compute_imatrix`], reporting each chunk with the running perplexity when `ppl` (an
/// output product over the vocabulary per chunk, as llama-imatrix computes by default).
pub fn compute_imatrix_reporting(
    model: &Path,
    tokenizer: &Path,
    text: &str,
    opts: &ImatrixOptions,
    ppl: bool,
    mut progress: impl FnMut(&ChunkProgress),
) -> Result<ImatrixStats> {
    let src = open_model(model)?;
    let graph = Graph::load(src.as_ref())?;
    // llama.cpp adds BOS unless the vocabulary says not to, EOS only when it says so.
    let bos = added_token(src.as_ref(), "bos", true);
    let eos = added_token(src.as_ref(), "eos", false);
    let space_prefix =
        ops::kv_bool(src.as_ref(), "tokenizer.ggml.add_space_prefix").unwrap_or(true);
    let tokens = tokenize_spaced(tokenizer, text, bos, eos, space_prefix)?;
    let chunks = chunks(&opts.dataset, &tokens, opts.ctx, opts.chunks, bos)?;
    let mut collector = Collector::new(opts.process_output);
    let total = chunks.len();
    progress(&ChunkProgress {
        done: 0,
        total,
        ppl: None,
    });
    let (mut nll, mut count) = (0f64, 0usize);
    for (i, chunk) in chunks.iter().enumerate() {
        let terms = graph.forward_nll(chunk, &mut collector, ppl)?;
        if let Some((sum, _, n)) = terms {
            nll += sum;
            count += n;
        }
        progress(&ChunkProgress {
            done: i + 1,
            total,
            ppl: (count > 0).then(|| (nll / count as f64).exp()),
        });
    }
    Ok(ImatrixStats {
        entries: collector.into_entries(),
        datasets: vec![opts.dataset.clone()],
        chunk_count: chunks.len() as u32,
        chunk_size: opts.ctx as u32,
    })
}
