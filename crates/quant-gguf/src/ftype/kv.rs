//! llama-quantize's key/value list for its output (the input's pairs, the file type, the
//! `quantize.imatrix.*` overrides) and llama.cpp's `general.file_type` of a type.

use crate::gguf::GgufValue;
use crate::types::GgmlType;

/// llama.cpp's `general.file_type` (`llama_ftype`) for a file mostly of `ty`: the `_S`
/// variant for K-quants; Q8_1 and Q8_K have no ftype and get `LLAMA_FTYPE_GUESSED` (1024).
pub const fn llama_ftype(ty: GgmlType) -> u32 {
    match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q8_0 => 7,
        GgmlType::Q5_0 => 8,
        GgmlType::Q5_1 => 9,
        GgmlType::Q2_K => 10,
        GgmlType::Q3_K => 11,
        GgmlType::Q4_K => 14,
        GgmlType::Q5_K => 16,
        GgmlType::Q6_K => 18,
        GgmlType::IQ4_NL => 25,
        GgmlType::IQ4_XS => 30,
        GgmlType::BF16 => 32,
        GgmlType::IQ2_XXS => 19,
        GgmlType::IQ2_XS => 20,
        GgmlType::IQ3_XXS => 23,
        GgmlType::IQ1_S => 24,
        GgmlType::IQ3_S => 26,
        GgmlType::IQ2_S => 28,
        GgmlType::IQ1_M => 31,
        GgmlType::TQ1_0 => 36,
        GgmlType::TQ2_0 => 37,
        // LLAMA_FTYPE_MOSTLY_MXFP4_MOE.
        GgmlType::MXFP4 => 38,
        GgmlType::Q8_1 | GgmlType::Q8_K => 1024,
    }
}

/// llama-quantize's key/value list (`llama_model_quantize_impl`): the input's pairs in
/// order, `general.quantization_version` (2) and `general.file_type` set (a set key
/// moves to the end, as `gguf_set_val_*` removes it first), `split.*` removed, then the
/// `overrides` set in order.
pub fn llama_quantize_kv(
    input: &[(String, GgufValue)],
    ftype: crate::Ftype,
    overrides: Vec<(String, GgufValue)>,
) -> Vec<(String, GgufValue)> {
    fn set(kv: &mut Vec<(String, GgufValue)>, key: &str, value: GgufValue) {
        kv.retain(|(k, _)| k != key);
        kv.push((key.to_string(), value));
    }
    let mut kv = input.to_vec();
    set(&mut kv, "general.quantization_version", GgufValue::U32(2));
    set(&mut kv, "general.file_type", GgufValue::U32(ftype.id()));
    kv.retain(|(k, _)| {
        !matches!(
            k.as_str(),
            "split.no" | "split.count" | "split.tensors.count"
        )
    });
    for (k, v) in overrides {
        set(&mut kv, &k, v);
    }
    kv
}

/// C's `strncpy(dst, s, 127)` into a 128-byte buffer: at most 127 bytes (cut at a byte,
/// as llama-quantize's key/value override; invalid UTF-8 at the cut is replaced).
fn c_str_127(s: &str) -> String {
    let bytes = s.as_bytes();
    String::from_utf8_lossy(&bytes[..bytes.len().min(127)]).into_owned()
}

/// The `quantize.imatrix.*` pairs llama-quantize's tool adds for an importance matrix
/// loaded from `file` (as given) and left with entries after `--include/--exclude-weights`:
/// `file` and the first dataset as strings (≤ 127 bytes), `entries_count` and, when
/// positive, `chunks_count` as u32. Empty when the matrix has no entries.
pub fn llama_imatrix_kv(file: &str, imatrix: &crate::Imatrix) -> Vec<(String, GgufValue)> {
    if imatrix.is_empty() {
        return Vec::new();
    }
    let mut kv = vec![(
        "quantize.imatrix.file".to_string(),
        GgufValue::String(c_str_127(file)),
    )];
    if let Some(d) = imatrix.datasets().first() {
        kv.push((
            "quantize.imatrix.dataset".into(),
            GgufValue::String(c_str_127(d)),
        ));
    }
    // An integer override is stored as u32 of its absolute value.
    kv.push((
        "quantize.imatrix.entries_count".into(),
        GgufValue::U32(imatrix.len() as u32),
    ));
    if let Some(c) = imatrix.chunk_count().filter(|&c| c > 0) {
        kv.push((
            "quantize.imatrix.chunks_count".into(),
            GgufValue::U32(c.unsigned_abs() as u32),
        ));
    }
    kv
}
