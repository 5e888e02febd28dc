//! Reading a .gguf file: header, key/values and tensor infos checked against the file size
//! before anything is allocated, tensor data read on demand.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use quant_core::{Error, Result};

use super::{
    GgufType, GgufValue, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_DEPTH, MAX_DIMS, MAX_STRING_LEN,
};

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
