//! Safetensors input (memory-mapped, validated by the `safetensors` crate) and streaming,
//! atomic output.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::method::{Part, PartLayout};
use crate::tensor::{TensorMeta, TensorSource};

pub use crate::atomic::{
    check_output, clean_stale_temps, rename_durable, temp_path_for, AtomicFile,
};

/// A memory-mapped safetensors file whose header has been validated (offsets contiguous
/// and in range, byte counts matching dtype × shape, no overflow).
pub struct SafetensorsFile {
    path: PathBuf,
    map: Arc<Mmap>,
    data_start: usize,
    tensors: Vec<(TensorMeta, std::ops::Range<usize>)>,
    metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsFile")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl SafetensorsFile {
    /// Opens and validates `path`. Nothing but the header is read.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        if len < 8 {
            return Err(Error::file(
                &path,
                "safetensors",
                format!("{len} bytes is too short for a header"),
            ));
        }
        // SAFETY: the map is read-only; quant never writes to its inputs. A file truncated
        // by another process while mapped is outside what any mmap reader can defend against.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        let (n, meta) = safetensors::SafeTensors::read_metadata(&map)
            .map_err(|e| Error::file(&path, "safetensors", describe_st_error(&e)))?;
        let data_start = 8 + n;
        let infos = meta.tensors();
        let mut tensors = Vec::with_capacity(infos.len());
        for name in meta.offset_keys() {
            let Some(info) = infos.get(&name) else {
                continue;
            };
            let dtype = DType::from_safetensors(info.dtype).map_err(|_| {
                Error::tensor(&path, &name, format!("unsupported dtype {:?}", info.dtype))
            })?;
            let (s, e) = info.data_offsets;
            tensors.push((
                TensorMeta::new(name, dtype, info.shape.clone()),
                data_start + s..data_start + e,
            ));
        }
        let metadata = meta
            .metadata()
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .map(read_own_keys)
            .unwrap_or_default();
        Ok(SafetensorsFile {
            path,
            map: Arc::new(map),
            data_start,
            tensors,
            metadata,
        })
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Header metadata (`__metadata__`).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Tensors in file order.
    pub fn metas(&self) -> impl Iterator<Item = &TensorMeta> {
        self.tensors.iter().map(|(m, _)| m)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// True when the file holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Byte offset where tensor data starts.
    pub fn data_start(&self) -> usize {
        self.data_start
    }

    /// A view of the tensor `name`.
    pub fn get(&self, name: &str) -> Option<SafetensorsTensor> {
        self.tensors
            .iter()
            .find(|(m, _)| m.name == name)
            .map(|(m, r)| SafetensorsTensor {
                meta: m.clone(),
                map: Arc::clone(&self.map),
                range: r.clone(),
            })
    }

    /// Views of every tensor, in file order.
    pub fn tensors(&self) -> Vec<SafetensorsTensor> {
        self.tensors
            .iter()
            .map(|(m, r)| SafetensorsTensor {
                meta: m.clone(),
                map: Arc::clone(&self.map),
                range: r.clone(),
            })
            .collect()
    }

    /// The tensor `name` as a part (key, dtype, shape, bytes), or an error naming the file.
    pub fn part(&self, name: &str) -> Result<Part> {
        let t = self
            .get(name)
            .ok_or_else(|| Error::tensor(&self.path, name, "not in file"))?;
        Part::new(
            PartLayout::new(name, t.meta.dtype, t.meta.shape.clone()),
            t.copy_out(),
        )
    }
}

fn describe_st_error(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooSmall => "header length field missing".into(),
        E::HeaderTooLarge => "header length is larger than allowed".into(),
        E::InvalidHeaderLength => "header length points past the end of the file".into(),
        E::MetadataIncompleteBuffer => "tensor data does not cover the file exactly".into(),
        E::InvalidOffset(t) => {
            format!("tensor '{t}': offsets overlap, leave gaps or are out of order")
        }
        E::TensorInvalidInfo => "a tensor's byte range does not match its dtype and shape".into(),
        E::ValidationOverflow => "a tensor's shape overflows when multiplied out".into(),
        other => other.to_string(),
    }
}

/// One tensor of a mapped safetensors file.
#[derive(Clone)]
pub struct SafetensorsTensor {
    meta: TensorMeta,
    map: Arc<Mmap>,
    range: std::ops::Range<usize>,
}

/// Bytes of mapped input handled at a time before their pages are given back.
const CHUNK_BYTES: usize = 8 << 20;

impl SafetensorsTensor {
    /// The mapped bytes.
    pub fn data(&self) -> &[u8] {
        // The range was validated against the file length when the header was read.
        self.map.get(self.range.clone()).unwrap_or(&[])
    }

    /// A copy of the bytes, the mapped pages given back as they are copied.
    fn copy_out(&self) -> Vec<u8> {
        let data = self.data();
        let mut out = Vec::with_capacity(data.len());
        for (i, chunk) in data.chunks(CHUNK_BYTES).enumerate() {
            out.extend_from_slice(chunk);
            self.release(i * CHUNK_BYTES, chunk.len());
        }
        out
    }

    /// Gives the pages of `start..start + len` (relative to this tensor) back to the OS:
    /// mapped input read once should not stay resident, or peak memory grows with the
    /// model instead of the largest tensor.
    fn release(&self, start: usize, len: usize) {
        let offset = self.range.start + start;
        if len == 0 || offset + len > self.range.end {
            return;
        }
        // SAFETY: the map is a read-only file mapping; MADV_DONTNEED only drops its pages,
        // which fault back in from the file with the same contents if touched again.
        let _ = unsafe {
            self.map
                .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len)
        };
    }
}

impl TensorSource for SafetensorsTensor {
    fn meta(&self) -> &TensorMeta {
        &self.meta
    }
    fn bytes(&self) -> Result<Cow<'_, [u8]>> {
        Ok(Cow::Borrowed(self.data()))
    }
    fn write_bytes(&self, w: &mut dyn Write) -> std::io::Result<()> {
        for (i, chunk) in self.data().chunks(CHUNK_BYTES).enumerate() {
            w.write_all(chunk)?;
            self.release(i * CHUNK_BYTES, chunk.len());
        }
        Ok(())
    }

    fn for_each_f32_chunk(
        &self,
        chunk: usize,
        f: &mut dyn FnMut(&[f32]) -> Result<()>,
    ) -> Result<()> {
        let size = self.meta.dtype.size();
        let step = chunk.max(1) * size;
        let mut tmp = Vec::new();
        for (i, c) in self.data().chunks(step).enumerate() {
            tmp.clear();
            crate::dtype::decode_to_f32(self.meta.dtype, c, &mut tmp)
                .map_err(|e| Error::tensor("", &self.meta.name, e.to_string()))?;
            self.release(i * step, c.len());
            f(&tmp)?;
        }
        Ok(())
    }

    /// Decodes in parallel chunks, releasing each chunk's input pages once decoded.
    fn to_f32(&self) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        self.to_f32_into(&mut out)?;
        Ok(out)
    }

    /// As [`to_f32`](Self::to_f32), into `out`: a buffer large enough is reused (overwritten
    /// in place), a smaller one replaced by fresh zeroed memory, so a run allocates the largest
    /// tensor's buffer once instead of having the kernel fault in and zero one per tensor.
    fn to_f32_into(&self, out: &mut Vec<f32>) -> Result<()> {
        use rayon::prelude::*;
        let dtype = self.meta.dtype;
        let size = dtype.size();
        let data = self.data();
        let n = data.len() / size;
        if out.capacity() < n {
            *out = Vec::new();
            *out = vec![0f32; n];
        } else {
            // Every value is written below: only a growth is zeroed, nothing cleared.
            out.resize(n, 0.0);
        }
        let elems = (CHUNK_BYTES / size).max(1);
        out.par_chunks_mut(elems)
            .enumerate()
            .try_for_each(|(i, o)| -> Result<()> {
                let start = i * elems * size;
                let Some(bytes) = data.get(start..start + o.len() * size) else {
                    return Err(Error::tensor("", &self.meta.name, "short tensor data"));
                };
                crate::dtype::decode_into(dtype, bytes, o)
                    .map_err(|e| Error::tensor("", &self.meta.name, e.to_string()))?;
                self.release(start, bytes.len());
                Ok(())
            })
    }
}

/// The index of a sharded output: `model-00001-of-00002.safetensors` →
/// `model.safetensors.index.json`.
pub fn index_name_for(shard: &Path) -> String {
    let n = shard.to_string_lossy();
    let base = n
        .split("-0")
        .next()
        .unwrap_or("model")
        .trim_end_matches(".safetensors");
    format!("{base}.safetensors.index.json")
}

/// The prefix of quant's own `__metadata__` keys (`quant.tensors`, `quant.format_version`,
/// `quant.method.requested`, ...).
pub const OWN_KEY_PREFIX: &str = "quant.";
/// How quant's keys are stored in a header in torchao's form: `quant:tensors`,
/// `quant:method:requested`, ... (every `.` as `:`).
pub const TORCHAO_OWN_KEY_PREFIX: &str = "quant:";

/// Whether `metadata` is in torchao's safetensors form (`tensor_names` lists the
/// flattened tensors). transformers' and diffusers' torchao loaders JSON-parse the value of
/// every key holding a `.` there and expect an object, so quant's own keys must not hold one.
pub fn is_torchao_form(metadata: &BTreeMap<String, String>) -> bool {
    metadata.contains_key("tensor_names")
}

/// `metadata` as stored: in torchao's form, quant's own keys get `:` for `.` (keys without a
/// dot, which the torchao loaders skip); otherwise unchanged.
fn stored_own_keys(metadata: &BTreeMap<String, String>) -> Cow<'_, BTreeMap<String, String>> {
    if !is_torchao_form(metadata) || !metadata.keys().any(|k| k.starts_with(OWN_KEY_PREFIX)) {
        return Cow::Borrowed(metadata);
    }
    Cow::Owned(
        metadata
            .iter()
            .map(|(k, v)| {
                let k = if k.starts_with(OWN_KEY_PREFIX) {
                    k.replace('.', ":")
                } else {
                    k.clone()
                };
                (k, v.clone())
            })
            .collect(),
    )
}

/// The inverse of [`stored_own_keys`]: quant's keys of a torchao-form header under their
/// usual dotted names (a dotted key already present wins).
fn read_own_keys(metadata: BTreeMap<String, String>) -> BTreeMap<String, String> {
    if !is_torchao_form(&metadata) {
        return metadata;
    }
    let mut out = BTreeMap::new();
    let mut renamed = Vec::new();
    for (k, v) in metadata {
        if k.starts_with(TORCHAO_OWN_KEY_PREFIX) {
            renamed.push((k.replace(':', "."), v));
        } else {
            out.insert(k, v);
        }
    }
    for (k, v) in renamed {
        out.entry(k).or_insert(v);
    }
    out
}

/// Builds a safetensors header (JSON, space-padded to a multiple of 8 bytes) for parts
/// stored in the given order, with `metadata` as `__metadata__` (quant's own keys renamed
/// in torchao's form, see [`TORCHAO_OWN_KEY_PREFIX`]).
pub fn safetensors_header(
    layouts: &[PartLayout],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let mut map = serde_json::Map::new();
    if !metadata.is_empty() {
        map.insert(
            "__metadata__".into(),
            serde_json::to_value(stored_own_keys(metadata)).map_err(json_err)?,
        );
    }
    let mut offset = 0usize;
    for l in layouts {
        let len = l
            .byte_len()
            .ok_or_else(|| Error::tensor("", &l.key, "byte size overflows"))?;
        let end = offset
            .checked_add(len)
            .ok_or_else(|| Error::tensor("", &l.key, "file size overflows"))?;
        if map.contains_key(&l.key) {
            return Err(Error::tensor("", &l.key, "two parts share this key"));
        }
        map.insert(
            l.key.clone(),
            serde_json::json!({
                "dtype": l.dtype.safetensors_name(),
                "shape": l.shape,
                "data_offsets": [offset, end],
            }),
        );
        offset = end;
    }
    let mut json = serde_json::to_vec(&map).map_err(json_err)?;
    while json.len() % 8 != 0 {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    Ok(out)
}

/// Adds `extra` spaces (rounded down to a multiple of 8) to a header built by
/// [`safetensors_header`], fixing its length field.
fn pad_header(mut header: Vec<u8>, extra: usize) -> Result<Vec<u8>> {
    let extra = extra - extra % 8;
    header.resize(header.len() + extra, b' ');
    let json_len = (header.len() - 8) as u64;
    header
        .get_mut(..8)
        .ok_or_else(|| Error::file("", "safetensors", "header shorter than its length field"))?
        .copy_from_slice(&json_len.to_le_bytes());
    Ok(header)
}

fn json_err(e: serde_json::Error) -> Error {
    Error::file("", "json", e.to_string())
}

/// Writes a safetensors file part by part: the header is computed from the layouts up
/// front, then each part must arrive in that order with exactly its byte count. Written
/// through an [`AtomicFile`], so a failure leaves nothing at the destination.
pub struct SafetensorsWriter {
    out: AtomicFile,
    layouts: Vec<PartLayout>,
    next: usize,
    header_len: usize,
}

impl SafetensorsWriter {
    /// Starts writing `dest` with the given part layouts and metadata.
    pub fn create(
        dest: impl AsRef<Path>,
        layouts: Vec<PartLayout>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self> {
        Self::create_with_reserve(dest, layouts, metadata, 0)
    }

    /// Like [`create`](Self::create), padding the header with `reserve` extra bytes so
    /// [`finish_with_metadata`](Self::finish_with_metadata) can rewrite the metadata.
    pub fn create_with_reserve(
        dest: impl AsRef<Path>,
        layouts: Vec<PartLayout>,
        metadata: &BTreeMap<String, String>,
        reserve: usize,
    ) -> Result<Self> {
        let header = pad_header(safetensors_header(&layouts, metadata)?, reserve)?;
        let mut out = AtomicFile::create(dest)?;
        out.write_all(&header)?;
        Ok(SafetensorsWriter {
            out,
            layouts,
            next: 0,
            header_len: header.len(),
        })
    }

    /// Writes the next part from borrowed bytes (no copy); it must match the next layout.
    pub fn write_raw(&mut self, key: &str, bytes: &[u8]) -> Result<()> {
        let dest = self.out.dest().to_path_buf();
        let Some(want) = self.layouts.get(self.next) else {
            return Err(Error::tensor(&dest, key, "more parts than planned"));
        };
        if want.key != key || Some(bytes.len()) != want.byte_len() {
            return Err(Error::tensor(
                &dest,
                key,
                format!(
                    "{} bytes do not match the planned {} {:?} {:?}",
                    bytes.len(),
                    want.key,
                    want.dtype,
                    want.shape
                ),
            ));
        }
        self.out.write_all(bytes)?;
        self.next += 1;
        Ok(())
    }

    /// Writes the next part by letting `fill` stream exactly its bytes into the file.
    pub fn write_with(
        &mut self,
        key: &str,
        fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<()> {
        let dest = self.out.dest().to_path_buf();
        let Some(want) = self.layouts.get(self.next) else {
            return Err(Error::tensor(&dest, key, "more parts than planned"));
        };
        if want.key != key {
            return Err(Error::tensor(
                &dest,
                key,
                format!("expected part {}", want.key),
            ));
        }
        let want_len = want.byte_len().unwrap_or(0) as u64;
        let mut counting = CountingWriter {
            inner: &mut self.out,
            written: 0,
        };
        fill(&mut counting).map_err(|e| Error::io(&dest, e))?;
        if counting.written != want_len {
            return Err(Error::tensor(
                &dest,
                key,
                format!("{} bytes written, {want_len} planned", counting.written),
            ));
        }
        self.next += 1;
        Ok(())
    }

    /// Rewrites the header with new metadata (it must fit the reserved space), then
    /// commits the file.
    pub fn finish_with_metadata(mut self, metadata: &BTreeMap<String, String>) -> Result<()> {
        use std::io::Seek;
        let header = safetensors_header(&self.layouts, metadata)?;
        let extra = self.header_len.checked_sub(header.len()).ok_or_else(|| {
            Error::file(
                self.out.dest(),
                "safetensors",
                "final metadata outgrew the reserved header space",
            )
        })?;
        let header = pad_header(header, extra)?;
        if let Some(w) = self.out.writer.as_mut() {
            w.flush().map_err(|e| Error::io(&self.out.dest, e))?;
            let f = w.get_mut();
            f.seek(std::io::SeekFrom::Start(0))
                .map_err(|e| Error::io(&self.out.dest, e))?;
            f.write_all(&header)
                .map_err(|e| Error::io(&self.out.dest, e))?;
            f.seek(std::io::SeekFrom::End(0))
                .map_err(|e| Error::io(&self.out.dest, e))?;
        }
        self.finish()
    }

    /// Writes the next part; it must match the next layout.
    pub fn write_part(&mut self, part: &Part) -> Result<()> {
        let dest = self.out.dest().to_path_buf();
        let Some(want) = self.layouts.get(self.next) else {
            return Err(Error::tensor(
                &dest,
                &part.layout.key,
                "more parts than planned",
            ));
        };
        if *want != part.layout || Some(part.data.len()) != want.byte_len() {
            return Err(Error::tensor(
                &dest,
                &part.layout.key,
                format!(
                    "part {:?} {:?} does not match the planned {} {:?} {:?}",
                    part.layout.dtype, part.layout.shape, want.key, want.dtype, want.shape
                ),
            ));
        }
        self.out.write_all(&part.data)?;
        self.next += 1;
        Ok(())
    }

    /// Checks every planned part was written, then commits the file.
    pub fn finish(self) -> Result<()> {
        if self.next != self.layouts.len() {
            let missing = self
                .layouts
                .get(self.next)
                .map(|l| l.key.clone())
                .unwrap_or_default();
            return Err(Error::tensor(
                self.out.dest(),
                &missing,
                "planned part never written",
            ));
        }
        self.out.commit()
    }
}

struct CountingWriter<'a> {
    inner: &'a mut AtomicFile,
    written: u64,
}

impl Write for CountingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes parts (all in memory) to a safetensors file atomically.
pub fn write_safetensors(
    dest: impl AsRef<Path>,
    parts: &[Part],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let layouts = parts.iter().map(|p| p.layout.clone()).collect();
    let mut w = SafetensorsWriter::create(dest, layouts, metadata)?;
    for p in parts {
        w.write_part(p)?;
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.safetensors");
        let p = Part::new(
            PartLayout::new("x", DType::F32, vec![2]),
            vec![0, 0, 128, 63, 0, 0, 0, 64],
        )
        .unwrap();
        let q = Part::new(PartLayout::new("y", DType::U8, vec![3]), vec![1, 2, 3]).unwrap();
        let mut md = BTreeMap::new();
        md.insert("k".to_string(), "v".to_string());
        write_safetensors(&dest, &[p.clone(), q.clone()], &md).unwrap();
        let f = SafetensorsFile::open(&dest).unwrap();
        assert_eq!(f.metadata().get("k").unwrap(), "v");
        assert_eq!(f.part("x").unwrap(), p);
        assert_eq!(f.part("y").unwrap(), q);
        assert_eq!(f.get("x").unwrap().to_f32().unwrap(), vec![1.0, 2.0]);

        // A writer dropped half way leaves nothing behind.
        let dest2 = dir.path().join("b.safetensors");
        let mut w =
            SafetensorsWriter::create(&dest2, vec![p.layout.clone(), q.layout.clone()], &md)
                .unwrap();
        w.write_part(&p).unwrap();
        assert!(w.write_part(&p).is_err());
        drop(w);
        assert!(!dest2.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// In torchao's form no quant key holds a `.` on disk (transformers json-parses every
    /// dotted key), and reading gives the dotted names back; other files are unchanged.
    #[test]
    fn own_keys_in_torchao_form() {
        let dir = tempfile::tempdir().unwrap();
        let p = Part::new(PartLayout::new("x", DType::U8, vec![1]), vec![7]).unwrap();
        let mut md = BTreeMap::new();
        md.insert("quant.tensors".to_string(), "[]".to_string());
        md.insert("quant.method.requested".to_string(), "m".to_string());
        md.insert("a.weight".to_string(), r#"{"_type": "Tensor"}"#.to_string());
        for torchao in [false, true] {
            let mut md = md.clone();
            if torchao {
                md.insert("tensor_names".into(), r#"["a.weight"]"#.into());
            }
            let dest = dir.path().join(format!("{torchao}.safetensors"));
            write_safetensors(&dest, std::slice::from_ref(&p), &md).unwrap();
            let bytes = std::fs::read(&dest).unwrap();
            let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
            let stored = header["__metadata__"].as_object().unwrap();
            assert_eq!(stored.contains_key("quant:method:requested"), torchao);
            assert_eq!(stored.contains_key("quant.tensors"), !torchao);
            assert!(stored.contains_key("a.weight"));
            assert_eq!(SafetensorsFile::open(&dest).unwrap().metadata(), &md);
        }
    }
}
