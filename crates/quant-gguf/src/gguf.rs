//! The .gguf container (GGUF v3, read v2/v3): a bounded reader and a streaming writer.
//!
//! File layout: magic `GGUF`, version u32, tensor count u64, KV count u64, KV pairs
//! (string key, u32 value type, value), tensor infos (name, n_dims u32, dims u64 with
//! `ne[0]` = row length first, type u32, offset u64 relative to the data section), padding
//! to `general.alignment` (default 32), then tensor data, each tensor padded to the
//! alignment — including after the last one, which ggml's loader requires.
//!
//! Reading never trusts a count or length: every count is checked against the bytes
//! left in the file before anything is allocated, strings are capped, n_dims ≤ 4,
//! dims products are checked, type ids must be known, offsets must be aligned and inside
//! the file. Any violation is [`quant_core::Error::InvalidFile`] naming the file.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use quant_core::format::{ContainerReader, ContainerWriter, PlannedOutput};
use quant_core::safetensors_io::AtomicFile;
use quant_core::{DType, Error, Params, Part, PartLayout, QuantizedTensor, Result, TensorRecord};

use crate::arch::{HfGgufReader, KvList};
use crate::block::GgmlType;
use crate::method::{method_name, method_type};

/// The file magic.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// The version this crate writes.
pub const GGUF_VERSION: u32 = 3;
/// ggml's default tensor data alignment.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Longest string accepted when reading (keys, names, values).
pub const MAX_STRING_LEN: u64 = 1 << 24;
/// Deepest array nesting accepted when reading.
pub const MAX_ARRAY_DEPTH: usize = 4;
/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: u32 = 4;

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

fn encode_str(s: &str, out: &mut Vec<u8>) {
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

/// One tensor's entry in the header.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTensorInfo {
    /// The name.
    pub name: String,
    /// Dims in ggml order (`ne[0]`, the row length, first).
    pub dims: Vec<u64>,
    /// The tensor type.
    pub ty: GgufType,
    /// Offset of the data, relative to the data section.
    pub offset: u64,
    /// Size of the data in bytes.
    pub size: u64,
}

impl GgufTensorInfo {
    /// The shape in PyTorch order (outermost first).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

struct Cursor<'p> {
    r: BufReader<File>,
    pos: u64,
    len: u64,
    path: &'p Path,
}

impl Cursor<'_> {
    fn bad(&self, reason: impl Into<String>) -> Error {
        Error::file(self.path, "gguf", reason)
    }

    fn left(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn bytes(&mut self, n: u64) -> Result<Vec<u8>> {
        if n > self.left() {
            return Err(self.bad(format!(
                "truncated: {n} bytes needed at offset {}, {} left",
                self.pos,
                self.left()
            )));
        }
        let mut buf = vec![0u8; n as usize];
        self.r
            .read_exact(&mut buf)
            .map_err(|e| Error::io(self.path, e))?;
        self.pos += n;
        Ok(buf)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let v = self.bytes(N as u64)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&v);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String> {
        let n = self.u64()?;
        if n > MAX_STRING_LEN {
            return Err(self.bad(format!(
                "string of {n} bytes at offset {} exceeds the cap of {MAX_STRING_LEN}",
                self.pos
            )));
        }
        let b = self.bytes(n)?;
        String::from_utf8(b)
            .map_err(|_| self.bad(format!("string at offset {} is not utf-8", self.pos)))
    }

    /// Checks that `count` items of at least `min_size` bytes fit in the rest of the file.
    fn check_count(&self, count: u64, min_size: u64, what: &str) -> Result<()> {
        if count.checked_mul(min_size).is_none_or(|n| n > self.left()) {
            return Err(self.bad(format!(
                "{what} count {count} cannot fit in the {} bytes left",
                self.left()
            )));
        }
        Ok(())
    }

    fn value(&mut self, ty: u32, depth: usize) -> Result<GgufValue> {
        Ok(match ty {
            0 => GgufValue::U8(u8::from_le_bytes(self.array()?)),
            1 => GgufValue::I8(i8::from_le_bytes(self.array()?)),
            2 => GgufValue::U16(u16::from_le_bytes(self.array()?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array()?)),
            4 => GgufValue::U32(self.u32()?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array()?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array()?)),
            7 => match u8::from_le_bytes(self.array()?) {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(self.bad(format!("bool value {b}"))),
            },
            8 => GgufValue::String(self.string()?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.bad("arrays nested too deeply"));
                }
                let ety = self.u32()?;
                let n = self.u64()?;
                let min = match ety {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    other => return Err(self.bad(format!("unknown array element type {other}"))),
                };
                self.check_count(n, min, "array element")?;
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(ety, depth + 1)?);
                }
                GgufValue::Array(ety, items)
            }
            10 => GgufValue::U64(self.u64()?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array()?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array()?)),
            other => return Err(self.bad(format!("unknown value type {other}"))),
        })
    }
}

/// An open .gguf file: its header, parsed and checked; tensor data read on demand.
pub struct GgufFile {
    path: PathBuf,
    /// The file's GGUF version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, GgufValue)>,
    /// Tensor infos in file order.
    pub tensors: Vec<GgufTensorInfo>,
    /// Tensor data alignment.
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    file: Mutex<File>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Opens and validates `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let reader = file.try_clone().map_err(|e| Error::io(path, e))?;
        let mut c = Cursor {
            r: BufReader::new(reader),
            pos: 0,
            len,
            path,
        };
        let magic: [u8; 4] = c.array()?;
        if magic != GGUF_MAGIC {
            return Err(c.bad(format!("bad magic {magic:02x?} (expected \"GGUF\")")));
        }
        let version = c.u32()?;
        if version != 2 && version != 3 {
            return Err(c.bad(format!(
                "unsupported version {version} (2 and 3 are read; big-endian files are not)"
            )));
        }
        let n_tensors = c.u64()?;
        let n_kv = c.u64()?;
        // A KV pair is at least a key length, a value type and one byte.
        c.check_count(n_kv, 13, "metadata")?;
        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut keys = HashSet::new();
        for _ in 0..n_kv {
            let key = c.string()?;
            let ty = c.u32()?;
            let v = c.value(ty, 0)?;
            if !keys.insert(key.clone()) {
                return Err(c.bad(format!("duplicate metadata key '{key}'")));
            }
            metadata.push((key, v));
        }
        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, GgufValue::U32(a))) if *a > 0 && a.is_power_of_two() => u64::from(*a),
            Some((_, v)) => {
                return Err(c.bad(format!(
                    "general.alignment {} is not a power of two u32",
                    v.to_text()
                )))
            }
        };
        // A tensor info is at least name length, n_dims, one dim, type and offset.
        c.check_count(n_tensors, 32, "tensor")?;
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut names = HashSet::new();
        for _ in 0..n_tensors {
            let name = c.string()?;
            let n_dims = c.u32()?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(c.bad(format!(
                    "tensor '{name}': {n_dims} dims (1 to {MAX_DIMS} allowed)"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64()?);
            }
            let type_id = c.u32()?;
            let offset = c.u64()?;
            let ty = GgufType::from_id(type_id).ok_or_else(|| {
                c.bad(format!(
                    "tensor '{name}': unknown or unsupported ggml type id {type_id}"
                ))
            })?;
            let numel = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            let row = dims.first().copied().unwrap_or(1);
            let size = numel.and_then(|n| {
                if row % ty.block_size() as u64 != 0 {
                    None
                } else {
                    (n / ty.block_size() as u64).checked_mul(ty.type_size() as u64)
                }
            });
            let Some(size) = size.filter(|&s| usize::try_from(s).is_ok()) else {
                return Err(c.bad(format!(
                    "tensor '{name}': dims {dims:?} do not fit type {ty} (block {})",
                    ty.block_size()
                )));
            };
            if offset % alignment != 0 {
                return Err(c.bad(format!(
                    "tensor '{name}': offset {offset} is not aligned to {alignment}"
                )));
            }
            if !names.insert(name.clone()) {
                return Err(c.bad(format!("duplicate tensor name '{name}'")));
            }
            tensors.push(GgufTensorInfo {
                name,
                dims,
                ty,
                offset,
                size,
            });
        }
        let data_offset = c.pos.div_ceil(alignment) * alignment;
        let data_len = len.saturating_sub(data_offset);
        for t in &tensors {
            if t.offset
                .checked_add(t.size)
                .is_none_or(|end| end > data_len)
            {
                return Err(c.bad(format!(
                    "tensor '{}': data [{}, +{}) runs past the end of the data section ({data_len} bytes)",
                    t.name, t.offset, t.size
                )));
            }
        }
        Ok(GgufFile {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
            file: Mutex::new(file),
        })
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The metadata value of `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The info of tensor `name`.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The stored bytes of `info`.
    pub fn read_data(&self, info: &GgufTensorInfo) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; info.size as usize];
        let mut f = self
            .file
            .lock()
            .map_err(|_| Error::file(&self.path, "gguf", "file lock poisoned"))?;
        f.seek(SeekFrom::Start(self.data_offset + info.offset))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(buf)
    }
}

/// Whether `path` starts with the GGUF magic.
pub fn sniff(path: &Path) -> bool {
    let mut m = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut m))
        .is_ok_and(|_| m == GGUF_MAGIC)
}

/// The record quant gives a tensor read from a .gguf: F32 and the integer types are stored
/// unquantized, every other type is the matching `gguf_config_*` method with
/// `{"type": NAME}`.
fn record_for(info: &GgufTensorInfo) -> TensorRecord {
    let shape = info.shape();
    let ty = match info.ty {
        GgufType::Ggml(ty) => ty,
        GgufType::Int(int) => {
            let mut r = quant_core::load::plain_record(&quant_core::TensorMeta::new(
                info.name.clone(),
                int.dtype(),
                shape,
            ));
            r.parts = vec![info.name.clone()];
            return r;
        }
    };
    let (method, dtype, dequant) = match ty {
        GgmlType::F32 => (None, DType::F32, DType::F32),
        // Plain 16-bit floats, as llama-quantize reads them (not a requantization).
        GgmlType::F16 => (None, DType::F16, DType::F16),
        GgmlType::BF16 => (None, DType::BF16, DType::BF16),
        ty => (method_name(ty), DType::F32, DType::F32),
    };
    let mut params = Params::new();
    if method.is_some() {
        params.insert("type".into(), ty.name().into());
    }
    TensorRecord {
        name: info.name.clone(),
        method: method.map(str::to_string),
        dtype,
        shape,
        dequant_dtype: dequant,
        params,
        parts: vec![info.name.clone()],
        fallback: None,
    }
}

/// The part layout of a tensor of `ty` and PyTorch `shape` (as the methods store it).
fn part_layout(name: &str, ty: GgufType, shape: &[usize], size: usize) -> PartLayout {
    let ty = match ty {
        GgufType::Ggml(ty) => ty,
        GgufType::Int(int) => return PartLayout::new(name, int.dtype(), shape.to_vec()),
    };
    match ty {
        GgmlType::F32 => PartLayout::new(name, DType::F32, shape.to_vec()),
        GgmlType::F16 => PartLayout::new(name, DType::F16, shape.to_vec()),
        GgmlType::BF16 => PartLayout::new(name, DType::BF16, shape.to_vec()),
        _ => {
            let row = shape.last().copied().unwrap_or(1).max(1);
            // An empty tensor may pair a 0 with dims whose product overflows; a product
            // that overflows otherwise describes no data this file can hold (0 rows: the
            // part's size check then refuses it).
            let rows = if shape.contains(&0) {
                0
            } else {
                quant_core::tensor::checked_numel(shape).map_or(0, |n| n / row)
            };
            PartLayout::new(name, DType::U8, vec![rows, size / rows.max(1)])
        }
    }
}

/// [`ContainerReader`] over a .gguf file.
pub struct GgufReader {
    file: GgufFile,
    records: Vec<TensorRecord>,
}

impl GgufReader {
    /// Opens `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = GgufFile::open(path)?;
        let records = file.tensors.iter().map(record_for).collect();
        Ok(GgufReader { file, records })
    }

    /// The parsed file.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }
}

/// Typed key/values as text (what [`ContainerReader::metadata`] gives).
pub fn kv_text(kv: &[(String, GgufValue)]) -> BTreeMap<String, String> {
    kv.iter().map(|(k, v)| (k.clone(), v.to_text())).collect()
}

impl ContainerReader for GgufReader {
    fn metadata(&self) -> BTreeMap<String, String> {
        kv_text(&self.file.metadata)
    }

    fn records(&self) -> &[TensorRecord] {
        &self.records
    }

    fn read(&self, name: &str) -> Result<QuantizedTensor> {
        let (info, record) = self
            .file
            .tensors
            .iter()
            .zip(&self.records)
            .find(|(t, _)| t.name == name)
            .ok_or_else(|| Error::tensor(&self.file.path, name, "no such tensor in the file"))?;
        let data = self.file.read_data(info)?;
        let layout = part_layout(name, info.ty, &record.shape, data.len());
        let part = Part::new(layout, data)
            .map_err(|e| Error::tensor(&self.file.path, name, e.to_string()))?;
        Ok(QuantizedTensor {
            record: record.clone(),
            parts: vec![part],
        })
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

/// The type a planned tensor is written as: its method's GGML type, or for a tensor kept
/// as it is F32/F16/BF16 or the integer type of its dtype.
fn planned_type(p: &PlannedOutput) -> Result<GgufType> {
    let unsupported = |what: String| Error::UnsupportedDType {
        tensor: p.meta.name.clone(),
        dtype: what,
        op: "the gguf container (F32, F16, BF16, I8-I64 and the gguf_config_* methods only)".into(),
    };
    match &p.method {
        // A gguf_<ftype> method stores a tensor it quantizes itself in its default type.
        Some(m) => method_type(m)
            .or_else(|| crate::Ftype::from_method(m).map(crate::Ftype::default_type))
            .map(GgufType::Ggml)
            .ok_or_else(|| unsupported(format!("method {m}"))),
        None => match p.layout.first().map(|l| l.dtype) {
            Some(DType::F32) => Ok(GgmlType::F32.into()),
            Some(DType::F16) => Ok(GgmlType::F16.into()),
            Some(DType::BF16) => Ok(GgmlType::BF16.into()),
            Some(d) => IntType::from_dtype(d)
                .map(GgufType::Int)
                .ok_or_else(|| unsupported(d.to_string())),
            None => Err(unsupported("no stored part".into())),
        },
    }
}

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
        GgmlType::Q8_1 | GgmlType::Q8_K => 1024,
    }
}

/// Keys the writer sets itself (not copied from the caller's metadata).
const OWN_KEYS: [&str; 5] = [
    "general.architecture",
    "general.name",
    "general.file_type",
    "general.quantization_version",
    "general.alignment",
];

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

/// A GGUF v3 header: magic, version, counts, the key/values, the tensor infos (name, ggml
/// dims, type, data offset; the size is not stored), padded to [`DEFAULT_ALIGNMENT`].
pub fn header_bytes(kv: &[(String, GgufValue)], infos: &[TensorInfo]) -> Vec<u8> {
    let mut header = Vec::new();
    header.extend(GGUF_MAGIC);
    header.extend(GGUF_VERSION.to_le_bytes());
    header.extend((infos.len() as u64).to_le_bytes());
    header.extend((kv.len() as u64).to_le_bytes());
    for (k, v) in kv {
        encode_str(k, &mut header);
        header.extend(v.type_id().to_le_bytes());
        v.encode(&mut header);
    }
    for (name, dims, ty, off, _) in infos {
        encode_str(name, &mut header);
        header.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            header.extend(d.to_le_bytes());
        }
        header.extend(ty.id().to_le_bytes());
        header.extend(off.to_le_bytes());
    }
    let pad = (header.len() as u64).div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
    header.resize(pad as usize, 0);
    header
}

/// Streaming .gguf writer: the header is computed from the plan, then each tensor is
/// appended (and padded) as it arrives.
pub struct GgufWriter {
    out: AtomicFile,
    pending: VecDeque<(String, u64)>,
}

/// One planned tensor's header entry: (name, dims in ggml order, type, offset, bytes).
pub type TensorInfo = (String, Vec<u64>, GgufType, u64, u64);

/// The header entries of `planned` and the type holding the most non-fallback elements.
fn tensor_infos(path: &Path, planned: &[PlannedOutput]) -> Result<(Vec<TensorInfo>, GgmlType)> {
    let mut infos = Vec::with_capacity(planned.len());
    let mut offset = 0u64;
    // (type, elements) of the quantized tensors that did not fall back, first seen first.
    let mut weight_by_type: Vec<(GgmlType, u64)> = Vec::new();
    for p in planned {
        let ty = planned_type(p)?;
        let size = p
            .byte_len()
            .ok_or_else(|| Error::tensor(path, &p.meta.name, "byte size overflows"))?;
        let numel = p.meta.numel()? as u64;
        let mut dims: Vec<u64> = p.meta.shape.iter().rev().map(|&d| d as u64).collect();
        if dims.is_empty() {
            dims.push(1);
        }
        if dims.len() > MAX_DIMS as usize {
            return Err(Error::ShapeMismatch {
                tensor: p.meta.name.clone(),
                expected: format!("at most {MAX_DIMS} dims for gguf"),
                got: p.meta.shape.clone(),
            });
        }
        let want = ty
            .row_size(dims[0] as usize)
            .map(|r| r as u64 * (numel / dims[0].max(1)));
        if want != Some(size) {
            return Err(Error::tensor(
                path,
                &p.meta.name,
                format!(
                    "planned {size} bytes do not match {ty} for shape {:?}",
                    p.meta.shape
                ),
            ));
        }
        let counted = ty
            .ggml()
            .filter(|t| *t != GgmlType::F32 && p.method.is_some() && p.fallback.is_none());
        if let Some(ty) = counted {
            match weight_by_type.iter_mut().find(|(t, _)| *t == ty) {
                Some((_, n)) => *n += numel,
                None => weight_by_type.push((ty, numel)),
            }
        }
        infos.push((p.meta.name.clone(), dims, ty, offset, size));
        offset += size.div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
    }
    // The type holding the most elements; on a tie the one seen first.
    let main_type = weight_by_type
        .iter()
        .fold(None::<(GgmlType, u64)>, |best, &(t, n)| match best {
            Some((_, bn)) if bn >= n => best,
            _ => Some((t, n)),
        })
        .map_or(GgmlType::F32, |(t, _)| t);
    Ok((infos, main_type))
}

impl GgufWriter {
    /// Writes the header for `planned` with file-level `metadata` (string values; keys
    /// without a dot are skipped, `quantize.imatrix.*_count` become i32 like llama.cpp).
    pub fn create(
        path: &Path,
        planned: &[PlannedOutput],
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self> {
        Self::create_with(path, planned, metadata, None)
    }

    /// [`create`](Self::create) for a converted model or a .gguf input: its typed
    /// key/values ([`crate::arch::HfGgufReader::kvs`], or the input file's) come first,
    /// in their order, with
    /// `general.file_type` set to the file's type; then quant's own keys (`quantize.*`,
    /// `quant.*`; the `source.*` copies of the converted keys are left out).
    pub fn create_with(
        path: &Path,
        planned: &[PlannedOutput],
        metadata: &BTreeMap<String, String>,
        converted: Option<&KvList>,
    ) -> Result<Self> {
        let (infos, main_type) = tensor_infos(path, planned)?;
        let name = metadata
            .get("general.name")
            .cloned()
            .unwrap_or_else(|| crate::split::model_stem(path, metadata));
        let mut kv: Vec<(String, GgufValue)> = architecture(metadata)
            .map(|a| ("general.architecture".into(), GgufValue::String(a)))
            .into_iter()
            .collect();
        kv.extend([
            ("general.name".into(), GgufValue::String(name)),
            (
                "general.file_type".into(),
                GgufValue::U32(llama_ftype(main_type)),
            ),
            ("general.quantization_version".into(), GgufValue::U32(2)),
            (
                "quantize.tool".into(),
                GgufValue::String(format!("quant {}", env!("CARGO_PKG_VERSION"))),
            ),
            (
                "quantize.ggml_type".into(),
                GgufValue::String(main_type.name().into()),
            ),
        ]);
        for (k, v) in metadata {
            if !k.contains('.')
                || OWN_KEYS.contains(&k.as_str())
                || k.starts_with("quant.split.")
                || kv.iter().any(|(e, _)| e == k)
            {
                continue;
            }
            let value = match (k.as_str(), v.parse::<i32>()) {
                ("quantize.imatrix.entries_count" | "quantize.imatrix.chunks_count", Ok(n)) => {
                    GgufValue::I32(n)
                }
                _ => GgufValue::String(v.clone()),
            };
            kv.push((k.clone(), value));
        }
        if let Some(list) = converted {
            let mut typed = list.clone();
            typed.set("general.file_type", GgufValue::U32(llama_ftype(main_type)));
            for (k, v) in kv {
                if !OWN_KEYS.contains(&k.as_str())
                    && !k.starts_with("source.")
                    && typed.get(&k).is_none()
                {
                    typed.set(k, v);
                }
            }
            kv = typed.entries().to_vec();
        }
        Self::start(path, infos, kv, metadata)
    }

    /// Writes the header of llama-quantize's output for `ftype`: the input's key/values
    /// `input_kv` in their order (typed), `general.quantization_version` and
    /// `general.file_type` moved to the end, the split keys removed, then `overrides`
    /// (e.g. the `quantize.imatrix.*` keys, see [`llama_imatrix_kv`]) as its
    /// `--override-kv` does.
    /// `metadata` is only read for the split keys of a split output.
    pub fn create_llama(
        path: &Path,
        planned: &[PlannedOutput],
        input_kv: &[(String, GgufValue)],
        ftype: crate::Ftype,
        overrides: Vec<(String, GgufValue)>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self> {
        let (infos, _) = tensor_infos(path, planned)?;
        let kv = llama_quantize_kv(input_kv, ftype, overrides);
        if let Some((_, v)) = kv.iter().find(|(k, _)| k == "general.alignment") {
            if v.as_u64() != Some(DEFAULT_ALIGNMENT) {
                return Err(Error::InvalidFile {
                    path: path.into(),
                    format: "gguf",
                    reason: format!(
                        "the input's general.alignment {} is not supported (only {DEFAULT_ALIGNMENT})",
                        v.to_text()
                    ),
                });
            }
        }
        Self::start(path, infos, kv, metadata)
    }

    /// Writes the header (`kv`, then the split keys of one file of a split output: the
    /// first keeps every key, each ends with the split keys, as llama-gguf-split writes
    /// them) and starts the file.
    fn start(
        path: &Path,
        infos: Vec<TensorInfo>,
        mut kv: Vec<(String, GgufValue)>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self> {
        if let Some((no, keys)) = crate::split::split_keys(path, metadata)? {
            if no > 0 {
                kv.clear();
            }
            kv.extend(keys);
        }
        let header = header_bytes(&kv, &infos);
        let mut out = AtomicFile::create(path)?;
        out.write_all(&header)?;
        Ok(GgufWriter {
            out,
            pending: infos.into_iter().map(|(n, _, _, _, s)| (n, s)).collect(),
        })
    }
}

impl ContainerWriter for GgufWriter {
    fn write(&mut self, q: &QuantizedTensor) -> Result<()> {
        let dest = self.out.dest().to_path_buf();
        let Some((name, size)) = self.pending.pop_front() else {
            return Err(Error::tensor(
                &dest,
                &q.record.name,
                "more tensors written than planned",
            ));
        };
        let got: u64 = q.parts.iter().map(|p| p.data.len() as u64).sum();
        if name != q.record.name || got != size {
            return Err(Error::tensor(
                &dest,
                &q.record.name,
                format!("expected tensor '{name}' of {size} bytes next, got {got} bytes"),
            ));
        }
        for p in &q.parts {
            self.out.write_all(&p.data)?;
        }
        let pad = size.div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT - size;
        self.out.write_all(&vec![0u8; pad as usize])?;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        if let Some((name, _)) = self.pending.front() {
            return Err(Error::tensor(
                self.out.dest(),
                name,
                format!("{} planned tensors were never written", self.pending.len()),
            ));
        }
        self.out.commit()
    }
}

fn open_reader(path: &Path) -> Result<Box<dyn ContainerReader>> {
    Ok(Box::new(GgufReader::open(path)?))
}

fn create_writer(
    path: &Path,
    planned: &[PlannedOutput],
    metadata: &BTreeMap<String, String>,
    source: Option<&dyn ContainerReader>,
) -> Result<Box<dyn ContainerWriter>> {
    let ftype = [
        "quant.method.effective",
        "quant.method.requested",
        "quant.method",
    ]
    .iter()
    .find_map(|k| metadata.get(*k))
    .and_then(|m| crate::Ftype::from_method(m));
    // The input's typed key/values (a converted HF folder: what convert_hf_to_gguf.py
    // would have written; a .gguf: its own, as `llama-quantize --pure` keeps them), less
    // the keys of the input's own split.
    let input_kv = source.and_then(typed_kv);
    let typed: Option<KvList> = input_kv.map(|kv| {
        let mut list = KvList::default();
        // quant writes with the default alignment: another one is not carried over.
        let keep = |(k, v): &&(String, GgufValue)| {
            !k.starts_with("split.")
                && (k != "general.alignment" || v.as_u64() == Some(DEFAULT_ALIGNMENT))
        };
        for (k, v) in kv.iter().filter(keep) {
            list.set(k.clone(), v.clone());
        }
        list
    });
    let converted = typed.as_ref();
    match (ftype, input_kv) {
        (Some(ftype), Some(input_kv)) => {
            let overrides = imatrix_overrides(metadata)?;
            Ok(Box::new(GgufWriter::create_llama(
                path, planned, input_kv, ftype, overrides, metadata,
            )?))
        }
        _ => Ok(Box::new(GgufWriter::create_with(
            path, planned, metadata, converted,
        )?)),
    }
}

/// `general.architecture` of a file quant writes without a conversion: the caller's, the
/// input GGUF's, or what the input's `config.json` names (never a guess; `None` leaves
/// the key out).
fn architecture(metadata: &BTreeMap<String, String>) -> Option<String> {
    if let Some(a) = metadata
        .get("general.architecture")
        .or_else(|| metadata.get("source.general.architecture"))
    {
        return Some(a.clone());
    }
    let config: serde_json::Value =
        serde_json::from_str(metadata.get("source.config.json")?).ok()?;
    crate::arch::generic_architecture(&config)
}

/// The typed key/values of an input reader this crate knows (a .gguf file, or a converted
/// HF folder), in order.
fn typed_kv(source: &dyn ContainerReader) -> Option<&[(String, GgufValue)]> {
    let any = source.as_any()?;
    if let Some(r) = any.downcast_ref::<GgufReader>() {
        return Some(r.file().metadata.as_slice());
    }
    any.downcast_ref::<HfGgufReader>()
        .map(|r| r.kvs().entries())
}

/// The `quantize.imatrix.*` pairs for the run's parameters (`quant.params`: `imatrix`,
/// `imatrix_include`, `imatrix_exclude`), as llama-quantize's tool adds them.
fn imatrix_overrides(metadata: &BTreeMap<String, String>) -> Result<Vec<(String, GgufValue)>> {
    let Some(params) = metadata
        .get("quant.params")
        .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
    else {
        return Ok(Vec::new());
    };
    let Some(file) = params.get("imatrix").and_then(|v| v.as_str()) else {
        return Ok(Vec::new());
    };
    let list = |key: &str| {
        params
            .get(key)
            .and_then(|v| serde_json::from_value::<crate::method::NameList>(v.clone()).ok())
    };
    let (include, exclude) =
        crate::method::name_lists(&list("imatrix_include"), &list("imatrix_exclude"));
    let im = crate::Imatrix::load_shared(file, &include, &exclude)?;
    Ok(llama_imatrix_kv(file, &im))
}

quant_core::register_container!(quant_core::format::ContainerEntry {
    name: "gguf",
    extensions: &["gguf"],
    backend: crate::BACKEND,
    sniff,
    open: open_reader,
    create: create_writer,
    split: Some(crate::split::split_files),
});
