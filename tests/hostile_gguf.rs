//! Hostile GGUF files, opened through whatever `gguf` container the build registers
//! (quant-gguf): every case is a typed error naming the file, no panic, no allocation
//! beyond what the file's bytes justify. Skipped when no `gguf` container is linked.
#![cfg(feature = "gguf")]

use std::path::{Path, PathBuf};

use quant::{Error, ModelFiles};

use crate::alloc_probe::largest_allocation;

const GGUF_TYPE_U32: u32 = 4;
const GGUF_TYPE_STRING: u32 = 8;
const GGUF_TYPE_ARRAY: u32 = 9;
const GGML_F32: u32 = 0;
const GGML_Q4_0: u32 = 2;

fn s(b: &mut Vec<u8>, text: &[u8]) {
    b.extend((text.len() as u64).to_le_bytes());
    b.extend(text);
}

/// A GGUF v3 file builder: key/values, tensor infos, then 32-aligned data.
#[derive(Clone)]
struct Gguf {
    version: u32,
    n_tensors: Option<u64>,
    n_kv: Option<u64>,
    kv: Vec<u8>,
    kv_count: u64,
    infos: Vec<u8>,
    info_count: u64,
    data: Vec<u8>,
}

impl Gguf {
    fn new() -> Self {
        let mut g = Gguf {
            version: 3,
            n_tensors: None,
            n_kv: None,
            kv: Vec::new(),
            kv_count: 0,
            infos: Vec::new(),
            info_count: 0,
            data: Vec::new(),
        };
        g.kv_str(b"general.architecture", b"llama");
        g.kv_u32(b"general.alignment", 32);
        g
    }
    fn kv_str(&mut self, k: &[u8], v: &[u8]) -> &mut Self {
        s(&mut self.kv, k);
        self.kv.extend(GGUF_TYPE_STRING.to_le_bytes());
        s(&mut self.kv, v);
        self.kv_count += 1;
        self
    }
    fn kv_u32(&mut self, k: &[u8], v: u32) -> &mut Self {
        s(&mut self.kv, k);
        self.kv.extend(GGUF_TYPE_U32.to_le_bytes());
        self.kv.extend(v.to_le_bytes());
        self.kv_count += 1;
        self
    }
    fn kv_raw(&mut self, raw: &[u8]) -> &mut Self {
        self.kv.extend(raw);
        self.kv_count += 1;
        self
    }
    /// A tensor whose data is appended (zero-padded to 32 bytes first).
    fn tensor(&mut self, name: &[u8], dims: &[u64], ty: u32, data: &[u8]) -> &mut Self {
        while self.data.len() % 32 != 0 {
            self.data.push(0);
        }
        let offset = self.data.len() as u64;
        self.tensor_at(name, dims, ty, offset);
        self.data.extend(data);
        self
    }
    fn tensor_at(&mut self, name: &[u8], dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        s(&mut self.infos, name);
        self.infos.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            self.infos.extend(d.to_le_bytes());
        }
        self.infos.extend(ty.to_le_bytes());
        self.infos.extend(offset.to_le_bytes());
        self.info_count += 1;
        self
    }
    fn bytes(&self) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(self.version.to_le_bytes());
        b.extend(self.n_tensors.unwrap_or(self.info_count).to_le_bytes());
        b.extend(self.n_kv.unwrap_or(self.kv_count).to_le_bytes());
        b.extend(&self.kv);
        b.extend(&self.infos);
        while b.len() % 32 != 0 {
            b.push(0);
        }
        b.extend(&self.data);
        b
    }
}

fn f32s(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| (i as f32 / 7.0).to_le_bytes())
        .collect()
}

fn good() -> Gguf {
    let mut g = Gguf::new();
    g.tensor(b"w.weight", &[32, 2], GGML_F32, &f32s(64));
    // One Q4_0 row of 32: f16 scale 1.0 and 16 bytes of codes.
    let mut q = 0x3c00u16.to_le_bytes().to_vec();
    q.extend([0x98u8; 16]);
    g.tensor(b"q.weight", &[32, 1], GGML_Q4_0, &q);
    g
}

fn load_all(path: &Path) -> quant::Result<usize> {
    let files = ModelFiles::open(path)?;
    let names: Vec<String> = files.records().map(|(_, r)| r.name.clone()).collect();
    for n in &names {
        files.load_f32(n)?;
    }
    Ok(names.len())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(format!("{name}.gguf"));
    std::fs::write(&p, bytes).unwrap();
    p
}

#[track_caller]
fn hostile(p: &Path) -> Error {
    let size = std::fs::metadata(p).unwrap().len() as usize;
    let (r, largest) = largest_allocation(|| load_all(p));
    assert!(
        largest <= 16 * size + (1 << 20),
        "{}: allocated {largest} bytes for a {size}-byte file",
        p.display()
    );
    let e = match r {
        Ok(n) => panic!("{}: loaded {n} tensors", p.display()),
        Err(e) => e,
    };
    match &e {
        Error::InvalidFile { path, .. } | Error::InvalidTensor { path, .. } => {
            assert!(p.starts_with(path) || path.as_os_str().is_empty(), "{e}")
        }
        Error::UnknownDType { .. } | Error::ShapeMismatch { .. } => {}
        other => panic!("{}: {other:?}", p.display()),
    }
    e
}

#[test]
fn hostile_gguf_files() {
    if quant::format::container("gguf").is_none() {
        eprintln!("no gguf container registered: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ok = write(d, "good", &good().bytes());
    assert_eq!(load_all(&ok).unwrap(), 2, "the well-formed file loads");

    // Truncated at every byte of the header and at every tensor boundary.
    let bytes = good().bytes();
    let header_end = bytes.len() - good().data.len();
    let p = d.join("cut.gguf");
    for cut in (0..header_end).chain([bytes.len() - 1, bytes.len() - 20]) {
        std::fs::write(&p, &bytes[..cut]).unwrap();
        hostile(&p);
    }

    let mut cases: Vec<(&str, Gguf)> = Vec::new();
    let mut g = good();
    g.n_tensors = Some(3_000_000_000);
    cases.push(("tensor_count_billions", g));
    let mut g = good();
    g.n_kv = Some(3_000_000_000);
    cases.push(("kv_count_billions", g));
    let mut g = good();
    g.version = 99;
    cases.push(("version", g));
    // A key whose length claims 2^62 bytes; a string value of 2^40 bytes.
    let mut g = good();
    let mut raw = (1u64 << 62).to_le_bytes().to_vec();
    raw.extend(b"k");
    g.kv_raw(&raw);
    cases.push(("key_length_absurd", g));
    let mut g = good();
    let mut raw = Vec::new();
    s(&mut raw, b"general.name");
    raw.extend(GGUF_TYPE_STRING.to_le_bytes());
    raw.extend((1u64 << 40).to_le_bytes());
    g.kv_raw(&raw);
    cases.push(("string_length_absurd", g));
    // An array of 2^40 u32 and one of an unknown element type.
    let mut g = good();
    let mut raw = Vec::new();
    s(&mut raw, b"tokenizer.ggml.scores");
    raw.extend(GGUF_TYPE_ARRAY.to_le_bytes());
    raw.extend(GGUF_TYPE_U32.to_le_bytes());
    raw.extend((1u64 << 40).to_le_bytes());
    g.kv_raw(&raw);
    cases.push(("array_count_absurd", g));
    let mut g = good();
    let mut raw = Vec::new();
    s(&mut raw, b"x");
    raw.extend(99u32.to_le_bytes());
    raw.extend(0u64.to_le_bytes());
    g.kv_raw(&raw);
    cases.push(("unknown_value_type", g));
    // Tensor infos: unknown GGML type, absurd rank, overflowing dims, data out of range,
    // misaligned, a Q4_0 row that is not a whole number of blocks, duplicate and non-UTF-8
    // names, a billion-element tensor in a small file.
    let mut g = good();
    g.tensor(b"u.weight", &[32], 999, &f32s(32));
    cases.push(("unknown_ggml_type", g));
    let mut g = good();
    g.tensor_at(b"r.weight", &[2; 200], GGML_F32, 0);
    cases.push(("rank_200", g));
    let mut g = good();
    g.tensor_at(b"o.weight", &[1 << 40, 1 << 40, 1 << 40], GGML_F32, 0);
    cases.push(("dims_overflow", g));
    let mut g = good();
    g.tensor_at(b"b.weight", &[1_000_000_000, 4], GGML_F32, 0);
    cases.push(("billion_elements", g));
    let mut g = good();
    g.tensor_at(b"p.weight", &[32], GGML_F32, 1 << 50);
    cases.push(("offset_past_end", g));
    let mut g = good();
    g.tensor_at(b"m.weight", &[4], GGML_F32, 3);
    cases.push(("offset_misaligned", g));
    let mut g = good();
    g.tensor(b"z.weight", &[33, 1], GGML_Q4_0, &[0u8; 36]);
    cases.push(("partial_block", g));
    let mut g = good();
    g.tensor(b"w.weight", &[32, 2], GGML_F32, &f32s(64));
    cases.push(("duplicate_name", g));
    let mut g = good();
    g.tensor(b"bad\xff\xfe.weight", &[4], GGML_F32, &f32s(4));
    cases.push(("non_utf8_name", g));
    let mut g = good();
    g.kv_str(b"general.name\xff", b"x");
    cases.push(("non_utf8_key", g));
    for (name, g) in cases {
        let p = write(d, name, &g.bytes());
        let r = std::panic::catch_unwind(|| hostile(&p));
        assert!(r.is_ok(), "{name} panicked");
    }
}
