//! `quant dequantize`: restore every tensor of a quantized model to floats.

use std::path::Path;

use quant::dtype::encode_f32;
use quant::safetensors_io::{check_output, SafetensorsWriter};
use quant::{DType, Error, ModelFiles, PartLayout, Registry, Result};

pub fn dequantize(input: &Path, output: &Path, dtype: &str, force: bool) -> Result<()> {
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
