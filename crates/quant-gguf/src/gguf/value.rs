//! GGUF's typed values, its tensor types (a GGML type or an integer type), and ordered
//! key/value lists.

use std::collections::BTreeMap;

use quant_core::DType;

use crate::types::GgmlType;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    /// Type 0.
    U8(u8),
    /// Type 1.
    I8(i8),
    /// Type 2.
    U16(u16),
    /// Type 3.
    I16(i16),
    /// Type 4.
    U32(u32),
    /// Type 5.
    I32(i32),
    /// Type 6.
    F32(f32),
    /// Type 7.
    Bool(bool),
    /// Type 8.
    String(String),
    /// Type 9: element type and elements.
    Array(u32, Vec<GgufValue>),
    /// Type 10.
    U64(u64),
    /// Type 11.
    I64(i64),
    /// Type 12.
    F64(f64),
}

impl GgufValue {
    /// GGUF's id of the value's type (0 = u8 … 12 = f64).
    pub fn type_id(&self) -> u32 {
        match self {
            GgufValue::U8(_) => 0,
            GgufValue::I8(_) => 1,
            GgufValue::U16(_) => 2,
            GgufValue::I16(_) => 3,
            GgufValue::U32(_) => 4,
            GgufValue::I32(_) => 5,
            GgufValue::F32(_) => 6,
            GgufValue::Bool(_) => 7,
            GgufValue::String(_) => 8,
            GgufValue::Array(..) => 9,
            GgufValue::U64(_) => 10,
            GgufValue::I64(_) => 11,
            GgufValue::F64(_) => 12,
        }
    }

    /// The value as an unsigned integer, if it is one.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// gguf-py's name of the value's type (`UINT32`, `FLOAT32`, `STRING`, `ARRAY`, …).
    pub fn type_name(&self) -> &'static str {
        match self {
            GgufValue::U8(_) => "UINT8",
            GgufValue::I8(_) => "INT8",
            GgufValue::U16(_) => "UINT16",
            GgufValue::I16(_) => "INT16",
            GgufValue::U32(_) => "UINT32",
            GgufValue::I32(_) => "INT32",
            GgufValue::F32(_) => "FLOAT32",
            GgufValue::Bool(_) => "BOOL",
            GgufValue::String(_) => "STRING",
            GgufValue::Array(..) => "ARRAY",
            GgufValue::U64(_) => "UINT64",
            GgufValue::I64(_) => "INT64",
            GgufValue::F64(_) => "FLOAT64",
        }
    }

    /// The value as text (arrays longer than 16 elements are summarised).
    pub fn to_text(&self) -> String {
        match self {
            GgufValue::U8(v) => v.to_string(),
            GgufValue::I8(v) => v.to_string(),
            GgufValue::U16(v) => v.to_string(),
            GgufValue::I16(v) => v.to_string(),
            GgufValue::U32(v) => v.to_string(),
            GgufValue::I32(v) => v.to_string(),
            GgufValue::F32(v) => v.to_string(),
            GgufValue::Bool(v) => v.to_string(),
            GgufValue::String(s) => s.clone(),
            GgufValue::U64(v) => v.to_string(),
            GgufValue::I64(v) => v.to_string(),
            GgufValue::F64(v) => v.to_string(),
            GgufValue::Array(_, items) if items.len() > 16 => {
                format!("[{} items]", items.len())
            }
            GgufValue::Array(_, items) => format!(
                "[{}]",
                items
                    .iter()
                    .map(GgufValue::to_text)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Appends the value as GGUF stores it after its type id (a string with its u64
    /// length, an array with its element type and count).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            GgufValue::U8(v) => out.push(*v),
            GgufValue::I8(v) => out.extend(v.to_le_bytes()),
            GgufValue::U16(v) => out.extend(v.to_le_bytes()),
            GgufValue::I16(v) => out.extend(v.to_le_bytes()),
            GgufValue::U32(v) => out.extend(v.to_le_bytes()),
            GgufValue::I32(v) => out.extend(v.to_le_bytes()),
            GgufValue::F32(v) => out.extend(v.to_le_bytes()),
            GgufValue::Bool(v) => out.push(u8::from(*v)),
            GgufValue::String(s) => encode_str(s, out),
            GgufValue::Array(ty, items) => {
                out.extend(ty.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for i in items {
                    i.encode(out);
                }
            }
            GgufValue::U64(v) => out.extend(v.to_le_bytes()),
            GgufValue::I64(v) => out.extend(v.to_le_bytes()),
            GgufValue::F64(v) => out.extend(v.to_le_bytes()),
        }
    }
}

pub(crate) fn encode_str(s: &str, out: &mut Vec<u8>) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// GGUF's integer tensor types (`GGML_TYPE_I8` … `GGML_TYPE_I64`): values stored as is,
/// little-endian (llama.cpp's converter and gguf-py read and write them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntType {
    /// `GGML_TYPE_I8` (id 24).
    I8,
    /// `GGML_TYPE_I16` (id 25).
    I16,
    /// `GGML_TYPE_I32` (id 26).
    I32,
    /// `GGML_TYPE_I64` (id 27).
    I64,
}

impl IntType {
    /// Every integer type, in id order.
    pub const ALL: [IntType; 4] = [IntType::I8, IntType::I16, IntType::I32, IntType::I64];

    /// ggml's numeric type id.
    pub const fn id(self) -> u32 {
        match self {
            IntType::I8 => 24,
            IntType::I16 => 25,
            IntType::I32 => 26,
            IntType::I64 => 27,
        }
    }

    /// The matching safetensors dtype.
    pub const fn dtype(self) -> DType {
        match self {
            IntType::I8 => DType::I8,
            IntType::I16 => DType::I16,
            IntType::I32 => DType::I32,
            IntType::I64 => DType::I64,
        }
    }

    /// The integer type holding `dtype`, if GGUF has one (signed 8 to 64 bits).
    pub fn from_dtype(dtype: DType) -> Option<IntType> {
        IntType::ALL.into_iter().find(|t| t.dtype() == dtype)
    }
}

/// A tensor's type in a .gguf: a GGML float or quantized type, or an integer type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgufType {
    /// F32, F16, BF16 or a quantized block type.
    Ggml(GgmlType),
    /// I8, I16, I32 or I64, stored as is.
    Int(IntType),
}

impl GgufType {
    /// The type with ggml id `id`.
    pub fn from_id(id: u32) -> Option<GgufType> {
        GgmlType::from_id(id).map(GgufType::Ggml).or_else(|| {
            IntType::ALL
                .into_iter()
                .find(|t| t.id() == id)
                .map(GgufType::Int)
        })
    }

    /// ggml's numeric type id.
    pub const fn id(self) -> u32 {
        match self {
            GgufType::Ggml(t) => t.id(),
            GgufType::Int(t) => t.id(),
        }
    }

    /// The GGML float/quantized type, `None` for an integer type.
    pub const fn ggml(self) -> Option<GgmlType> {
        match self {
            GgufType::Ggml(t) => Some(t),
            GgufType::Int(_) => None,
        }
    }

    /// Values per block (1 for integers).
    pub const fn block_size(self) -> usize {
        match self {
            GgufType::Ggml(t) => t.block_size(),
            GgufType::Int(_) => 1,
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        match self {
            GgufType::Ggml(t) => t.type_size(),
            GgufType::Int(t) => t.dtype().size(),
        }
    }

    /// Bytes of one row of `n` values (`None` when `n` is not a multiple of the block
    /// size or the size overflows).
    pub fn row_size(self, n: usize) -> Option<usize> {
        if n % self.block_size() != 0 {
            return None;
        }
        (n / self.block_size()).checked_mul(self.type_size())
    }
}

impl From<GgmlType> for GgufType {
    fn from(t: GgmlType) -> Self {
        GgufType::Ggml(t)
    }
}

impl PartialEq<GgmlType> for GgufType {
    fn eq(&self, other: &GgmlType) -> bool {
        *self == GgufType::Ggml(*other)
    }
}

impl GgufType {
    /// The type's name as ggml and gguf-py spell it (`Q4_K`, `F32`, `I64`).
    pub fn name(self) -> &'static str {
        match self {
            GgufType::Ggml(t) => t.name(),
            GgufType::Int(t) => t.dtype().safetensors_name(),
        }
    }
}

impl std::fmt::Display for GgufType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Typed key/values as text (what [`quant_core::format::ContainerReader::metadata`] gives).
pub fn kv_text(kv: &[(String, GgufValue)]) -> BTreeMap<String, String> {
    kv.iter().map(|(k, v)| (k.clone(), v.to_text())).collect()
}

/// Typed key/value pairs in insertion order; setting an existing key replaces its value in
/// place (gguf-py's writer is a Python dict).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KvList(Vec<(String, GgufValue)>);

impl KvList {
    /// Sets `key`, keeping its position when it exists.
    pub fn set(&mut self, key: impl Into<String>, value: GgufValue) {
        let key = key.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((key, value)),
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Every pair, in order.
    pub fn entries(&self) -> &[(String, GgufValue)] {
        &self.0
    }
}
