use std::path::Path;

use quant::{DType, Part, PartLayout};

/// The methods that refuse to quantize without an importance matrix (the GGUF types ggml
/// needs one for, and the llama-quantize file types llama-quantize refuses without one);
/// `registry::methods_needing_an_imatrix_are_these` checks the list. The every-method
/// tests that run without a matrix leave them out.
#[allow(dead_code)]
pub const NEEDS_IMATRIX: &[&str] = &[
    "gguf_config_iq2_xxs",
    "gguf_config_iq2_xs",
    "gguf_config_iq1_s",
    "gguf_iq2_xxs",
    "gguf_iq2_xs",
    "gguf_iq2_s",
    "gguf_iq1_s",
    "gguf_iq1_m",
    "gguf_q2_k_s",
];

/// Writes f32 tensors to a safetensors file.
pub fn write_f32(path: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    write(path, DType::F32, tensors)
}

/// Writes tensors given as f32 values to a safetensors file, stored as `dtype`.
pub fn write(path: &Path, dtype: DType, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let parts: Vec<Part> = tensors
        .iter()
        .map(|(n, s, v)| {
            Part::new(
                PartLayout::new(*n, dtype, s.clone()),
                quant::dtype::encode_f32(dtype, v).unwrap(),
            )
            .unwrap()
        })
        .collect();
    quant::safetensors_io::write_safetensors(path, &parts, &Default::default()).unwrap();
}

/// Files in a folder (names), sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
