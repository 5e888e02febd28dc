//! Helpers shared by the tests that compare files with gguf-py dumps.

use quant_gguf::gguf::GgufValue;

/// The stored payload of an array after its type and count, less its first part (a
/// string's length field, else the first element), as the dumps' `sha256_raw` hashes it
/// (gguf-py's field parts after the header).
pub fn array_raw(items: &[GgufValue]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in items {
        v.encode(&mut out);
    }
    let first_part = match items.first() {
        Some(GgufValue::String(_)) => 8,
        Some(v) => {
            let mut one = Vec::new();
            v.encode(&mut one);
            one.len()
        }
        None => 0,
    };
    out.drain(..first_part);
    out
}
