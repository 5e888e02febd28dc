//! `quant dequantize`: restore every tensor of a quantized model to floats, as a flat
//! safetensors file, a model or pipeline folder the libraries load ([`super::restore`]),
//! or a .gguf of float tensors.

use std::collections::BTreeMap;
use std::path::Path;

use quant::dtype::encode_f32;
use quant::progress::Meter;
use quant::rules::Rules;
use quant::safetensors_io::{check_output, SafetensorsWriter};
use quant::{
    DType, Error, ModelFiles, ModelQuantizer, PartLayout, Pipeline, Registry, Result, TensorRecord,
};

use super::restore;
use crate::progress::{Mode, Reporter};

/// What `dequantize` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// One safetensors file (a pipeline's tensors named `<component>/<tensor>`).
    Flat,
    /// A model folder mirroring the input's.
    Folder,
    /// A pipeline folder mirroring the input's.
    Pipeline,
    /// A .gguf of F32/F16/BF16 tensors.
    Gguf,
}

/// `--format`, else the output's extension, else the kind of input.
fn kind(input: &Path, output: &Path, format: Option<&str>) -> Result<Kind> {
    let ext = |p: &Path| {
        p.extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default()
    };
    match format {
        Some("safetensors") => return Ok(Kind::Flat),
        Some("gguf") => return Ok(Kind::Gguf),
        Some(f) => {
            return Err(Error::Config {
                source_name: "--format".into(),
                entry: f.into(),
                reason: "expected safetensors or gguf (default: a folder for a folder input, a .gguf for a .gguf input)".into(),
            })
        }
        None => {}
    }
    Ok(match ext(output).as_str() {
        "safetensors" => Kind::Flat,
        "gguf" => Kind::Gguf,
        _ if Pipeline::is_pipeline(input) => Kind::Pipeline,
        _ if input.is_dir() => Kind::Folder,
        _ if ext(input) == "gguf" => Kind::Gguf,
        _ => Kind::Flat,
    })
}

/// Restores `input` into `output` in `dtype` (f32, f16 or bf16).
pub fn dequantize(
    input: &Path,
    output: &Path,
    dtype: &str,
    format: Option<&str>,
    force: bool,
    mode: Mode,
) -> Result<()> {
    let dt = DType::parse(dtype)?;
    if !matches!(dt, DType::F32 | DType::F16 | DType::BF16) {
        return Err(Error::UnsupportedDType {
            tensor: "*".into(),
            dtype: dt.to_string(),
            op: "dequantize (f32, f16 or bf16)".into(),
        });
    }
    check_output(output, force)?;
    let reporter = Reporter::new(mode, "dequantize", "tensors");
    let result = match kind(input, output, format)? {
        Kind::Flat => flat(input, output, dt, &reporter),
        Kind::Folder => restore::folder(&ModelFiles::open(input)?, output, dt, force, &reporter)
            .map(|n| (n, format!("a model folder of {dt} weights"))),
        Kind::Pipeline => restore::pipeline(input, output, dt, force, &reporter)
            .map(|n| (n, format!("a pipeline folder of {dt} weights"))),
        Kind::Gguf => gguf(input, output, dt, force, &reporter),
    };
    reporter.finish();
    let (count, what) = result?;
    println!("wrote {} ({count} tensors, {what})", output.display());
    Ok(())
}

/// Every tensor into one safetensors file, as before folders.
fn flat(
    input: &Path,
    output: &Path,
    dt: DType,
    reporter: &std::sync::Arc<Reporter>,
) -> Result<(usize, String)> {
    let model = ModelFiles::open_any(input)?;
    let records: Vec<&TensorRecord> = model.records().map(|(_, r)| r).collect();
    let meter = reporter.meter(records.len() as u64, restored_bytes(&records, dt));
    write_tensors(&model, &records, output, dt, &Default::default(), &meter)?;
    meter.end();
    Ok((records.len(), dt.to_string()))
}

/// The bytes `records` take restored in `dt`.
pub fn restored_bytes(records: &[&TensorRecord], dt: DType) -> u64 {
    records
        .iter()
        .map(|r| r.shape.iter().product::<usize>() as u64 * restored_dtype(r, dt).size() as u64)
        .sum()
}

/// The dtype tensor `r` is restored in: `dt` for floats and quantized tensors, its own
/// for the rest (integer buffers).
fn restored_dtype(r: &TensorRecord, dt: DType) -> DType {
    if r.method.is_some() || r.dtype.is_float() {
        dt
    } else {
        r.dtype
    }
}

/// A .gguf input restored to a .gguf of float tensors: quant's GGUF writer with every
/// tensor dequantized (F32: every tensor cast; F16/BF16: as llama-quantize's F16/BF16
/// file types, one-dimensional tensors in F32), the input's key/values carried.
fn gguf(
    input: &Path,
    output: &Path,
    dt: DType,
    force: bool,
    reporter: &std::sync::Arc<Reporter>,
) -> Result<(usize, String)> {
    let is_gguf = input.is_file() && !Pipeline::is_pipeline(input);
    if !is_gguf
        || ModelFiles::open(input)?
            .shards
            .iter()
            .any(|(p, _)| p.extension().is_none_or(|e| e != "gguf"))
    {
        return Err(Error::Config {
            source_name: input.display().to_string(),
            entry: "--format gguf".into(),
            reason: "a .gguf output is restored from a .gguf input (for another input, quantize with gguf_config_fp16 or gguf_config_bf16)".into(),
        });
    }
    let q = match dt {
        DType::BF16 => ModelQuantizer::new("gguf_config_bf16"),
        DType::F16 => ModelQuantizer::new("gguf_config_fp16"),
        _ => ModelQuantizer::new("gguf_config_fp16").rules(Rules::all_to(DType::F32)?),
    };
    let report = q
        .strict(true)
        .allow_requantize(true)
        .force(force)
        .progress(reporter.hook())
        .quantize_path(input, output)?;
    Ok((report.tensors.len(), format!("a .gguf of {dt} weights")))
}

/// Writes `records` of `model` restored in `dt` into the safetensors file `output`
/// (unquantized tensors and elementwise casts streamed from the mapped input), with
/// `metadata` in its header; returns the bytes of tensor data written.
pub fn write_tensors(
    model: &ModelFiles,
    records: &[&TensorRecord],
    output: &Path,
    dt: DType,
    metadata: &BTreeMap<String, String>,
    meter: &Meter,
) -> Result<u64> {
    let layouts: Vec<PartLayout> = records
        .iter()
        .map(|r| PartLayout::new(&r.name, restored_dtype(r, dt), r.shape.clone()))
        .collect();
    let bytes = layouts
        .iter()
        .map(|l| l.byte_len().unwrap_or(0) as u64)
        .sum();
    let mut w = SafetensorsWriter::create(output, layouts.clone(), metadata)?;
    // One f32 buffer serves every quantized tensor; unquantized ones stream from the
    // mapped input. Either way the output is encoded a chunk at a time.
    let mut values = Vec::new();
    let mut casts: std::collections::HashMap<(String, String), Option<DType>> =
        std::collections::HashMap::new();
    const CHUNK: usize = 1 << 20;
    for (r, l) in records.iter().zip(&layouts) {
        meter.step(&r.name, l.byte_len().unwrap_or(0) as u64);
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
    Ok(bytes)
}
