//! Writing a .gguf file by streaming: the header is computed up front from the tensor
//! infos, then each tensor is appended and padded to the alignment (after the last one too,
//! as ggml's loader requires).

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use quant_core::format::ContainerWriter;
use quant_core::safetensors_io::AtomicFile;
use quant_core::{Error, QuantizedTensor, Result};

use super::value::encode_str;
use super::{GgufType, GgufValue, DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION};

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

impl GgufWriter {
    /// Writes the header (`kv`, then the split keys of one file of a split output: the
    /// first keeps every key, each ends with the split keys, as llama-gguf-split writes
    /// them) and starts the file.
    pub fn start(
        path: &Path,
        infos: Vec<TensorInfo>,
        mut kv: Vec<(String, GgufValue)>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self> {
        if let Some((no, keys)) = super::split::split_keys(path, metadata)? {
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
