//! The .gguf container: write through the registered container entry, read back
//! (metadata, records, bytes, dequantization), and malformed input as typed errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use quant_core::format::{container, PlannedOutput};
use quant_core::{
    DType, Error, Params, Part, QuantMethod, QuantizedTensor, Registry, Selection, TensorMeta,
    TensorRecord,
};
use quant_gguf::gguf::{GgufFile, GgufValue};
use quant_gguf::GgmlType;

fn data(file: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(file),
    )
    .unwrap()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A small model: quantized weights of several types (one falling back), an F32 norm.
fn model() -> Vec<(TensorMeta, Vec<f32>, Option<&'static str>)> {
    let gauss = f32s(&data("gauss_4x512/input.f32"));
    let odd = f32s(&data("odd_3x96/input.f32"));
    vec![
        (
            TensorMeta::new("blk.0.attn_q.weight", DType::F32, vec![4, 512]),
            gauss.clone(),
            Some("gguf_config_q4_k"),
        ),
        (
            TensorMeta::new("blk.0.attn_norm.weight", DType::F32, vec![512]),
            gauss[..512].to_vec(),
            Some("gguf_config_q4_k"),
        ),
        (
            TensorMeta::new("blk.0.ffn_down.weight", DType::F32, vec![3, 96]),
            odd,
            Some("gguf_config_q4_k"),
        ),
        (
            TensorMeta::new("blk.0.ffn_up.weight", DType::F32, vec![2, 2, 512]),
            gauss.clone(),
            Some("gguf_config_q8_1"),
        ),
        (
            TensorMeta::new("output.weight", DType::F32, vec![4, 512]),
            gauss,
            Some("gguf_config_bf16"),
        ),
    ]
}

/// Plans and writes `model()` as a .gguf; returns what was written.
fn write_model(path: &Path) -> Vec<QuantizedTensor> {
    let reg = Registry::global().unwrap();
    let mut planned = Vec::new();
    let mut methods: Vec<Option<Box<dyn QuantMethod>>> = Vec::new();
    for (meta, _, method) in model() {
        let m = reg.create(method.unwrap(), &Params::new()).unwrap();
        let (m, fallback) = match m.select(&meta) {
            Selection::Quantize => (Some(m), None),
            Selection::Fallback { method, reason } => (
                Some(reg.create(&method, &Params::new()).unwrap()),
                Some(reason),
            ),
            Selection::Keep(_) => (None, None),
        };
        let layout = match &m {
            Some(m) => m.output_layout(&meta).unwrap(),
            None => vec![quant_core::PartLayout::new(
                &meta.name,
                DType::F32,
                meta.shape.clone(),
            )],
        };
        planned.push(PlannedOutput {
            meta: meta.clone(),
            method: m.as_ref().map(|m| m.name().to_string()),
            params: m.as_ref().map(|m| m.params()).unwrap_or_default(),
            layout,
            fallback,
        });
        methods.push(m);
    }
    let mut metadata = BTreeMap::new();
    metadata.insert("general.architecture".to_string(), "qwen2".to_string());
    metadata.insert(
        "quantize.imatrix.entries_count".to_string(),
        "7".to_string(),
    );
    metadata.insert("format".to_string(), "pt".to_string());
    let entry = container("gguf").unwrap();
    let mut w = (entry.create)(path, &planned, &metadata, None).unwrap();
    let mut written = Vec::new();
    for ((meta, values, _), m) in model().into_iter().zip(&methods) {
        let q = match m {
            Some(m) => m.quantize(&meta, &values).unwrap(),
            None => QuantizedTensor {
                record: TensorRecord {
                    name: meta.name.clone(),
                    method: None,
                    dtype: DType::F32,
                    shape: meta.shape.clone(),
                    dequant_dtype: DType::F32,
                    params: Params::new(),
                    parts: vec![meta.name.clone()],
                    fallback: None,
                },
                parts: vec![Part::new(
                    quant_core::PartLayout::new(&meta.name, DType::F32, meta.shape.clone()),
                    values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                )
                .unwrap()],
            },
        };
        w.write(&q).unwrap();
        written.push(q);
    }
    w.finish().unwrap();
    written
}

#[test]
fn round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    let written = write_model(&path);
    let entry = container("gguf").unwrap();
    assert!((entry.sniff)(&path));
    assert!(container("gguf").unwrap().extensions.contains(&"gguf"));

    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.version, 3);
    assert_eq!(
        file.get("general.architecture"),
        Some(&GgufValue::String("qwen2".into()))
    );
    assert_eq!(
        file.get("general.name"),
        Some(&GgufValue::String("model".into()))
    );
    assert_eq!(
        file.get("general.quantization_version"),
        Some(&GgufValue::U32(2))
    );
    // Q4_K, Q8_1 and BF16 hold 2048 elements each (the Q5_0 fallback does not count):
    // the first wins, LLAMA_FTYPE_MOSTLY_Q4_K_S.
    assert_eq!(file.get("general.file_type"), Some(&GgufValue::U32(14)));
    assert_eq!(
        file.get("quantize.ggml_type"),
        Some(&GgufValue::String("Q4_K".into()))
    );
    assert_eq!(
        file.get("quantize.imatrix.entries_count"),
        Some(&GgufValue::I32(7))
    );
    assert!(file.get("format").is_none());
    let types: Vec<GgmlType> = file.tensors.iter().map(|t| t.ty.ggml().unwrap()).collect();
    assert_eq!(
        types,
        [
            GgmlType::Q4_K,
            GgmlType::F32,
            GgmlType::Q5_0,
            GgmlType::Q8_1,
            GgmlType::BF16
        ]
    );
    assert_eq!(file.tensors[2].dims, vec![96, 3]);
    assert_eq!(file.tensors[3].dims, vec![512, 2, 2]);
    // Every tensor aligned, and padding after the last one too.
    let mut end = 0;
    for t in &file.tensors {
        assert_eq!(t.offset % 32, 0);
        end = t.offset + t.size.div_ceil(32) * 32;
    }
    let len = std::fs::metadata(&path).unwrap().len();
    assert_eq!(len, file.data_offset + end);
    assert_eq!(len % 32, 0);

    // Read back through the registered container: records, bytes, dequantization.
    let reader = (entry.open)(&path).unwrap();
    assert_eq!(reader.metadata()["general.architecture"], "qwen2");
    let reg = Registry::global().unwrap();
    for (rec, q) in reader.records().iter().zip(&written) {
        assert_eq!(rec.name, q.record.name);
        assert_eq!(rec.shape, q.record.shape);
        // F16/BF16 tensors read back as plain 16-bit floats (as llama-quantize reads
        // them), the others as their gguf_config_* method.
        match q.record.method.as_deref() {
            Some("gguf_config_fp16" | "gguf_config_bf16") => {
                assert_eq!(rec.method, None);
                assert_eq!(rec.dtype, q.parts[0].layout.dtype);
            }
            _ => assert_eq!(rec.method, q.record.method),
        }
        let back = reader.read(&rec.name).unwrap();
        assert_eq!(back.parts[0].data, q.parts[0].data);
        assert_eq!(back.parts[0].layout, q.parts[0].layout);
        if let Some(m) = &rec.method {
            let method = reg.create(m, &rec.params).unwrap();
            let want = reg
                .create(m, &q.record.params)
                .unwrap()
                .dequantize(q)
                .unwrap();
            let got = method.dequantize(&back).unwrap();
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }
    assert!(matches!(
        reader.read("missing.weight"),
        Err(Error::InvalidTensor { .. })
    ));
}

#[test]
fn writer_checks_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    let meta = TensorMeta::new("w.weight", DType::F32, vec![2, 256]);
    let m = Registry::global()
        .unwrap()
        .create("gguf_config_q8_0", &Params::new())
        .unwrap();
    let planned = vec![PlannedOutput {
        meta: meta.clone(),
        method: Some("gguf_config_q8_0".into()),
        params: m.params(),
        layout: m.output_layout(&meta).unwrap(),
        fallback: None,
    }];
    let entry = container("gguf").unwrap();
    // Finishing early fails and leaves no file.
    let w = (entry.create)(&path, &planned, &BTreeMap::new(), None).unwrap();
    assert!(matches!(w.finish(), Err(Error::InvalidTensor { .. })));
    assert!(!path.exists());
    // A tensor that is not the planned one.
    let mut w = (entry.create)(&path, &planned, &BTreeMap::new(), None).unwrap();
    let other = TensorMeta::new("x.weight", DType::F32, vec![2, 256]);
    let q = m.quantize(&other, &[0.5; 512]).unwrap();
    assert!(matches!(w.write(&q), Err(Error::InvalidTensor { .. })));
    drop(w);
    assert!(!path.exists());
    // A method the container cannot hold.
    let mut foreign = planned.clone();
    foreign[0].method = Some("basic_int8".into());
    assert!(matches!(
        (entry.create)(&path, &foreign, &BTreeMap::new(), None),
        Err(Error::UnsupportedDType { .. })
    ));
}

/// Builds a GGUF v3 file by hand: `kv` raw pairs and tensors (name, dims, type, offset)
/// followed by `data_len` zero bytes after alignment.
fn raw_gguf(
    n_tensors: u64,
    kv: &[u8],
    n_kv: u64,
    tensors: &[(&str, &[u64], u32, u64)],
    data_len: usize,
) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(b"GGUF");
    b.extend(3u32.to_le_bytes());
    b.extend(n_tensors.to_le_bytes());
    b.extend(n_kv.to_le_bytes());
    b.extend(kv);
    for (name, dims, ty, off) in tensors {
        b.extend((name.len() as u64).to_le_bytes());
        b.extend(name.as_bytes());
        b.extend((dims.len() as u32).to_le_bytes());
        for d in *dims {
            b.extend(d.to_le_bytes());
        }
        b.extend(ty.to_le_bytes());
        b.extend(off.to_le_bytes());
    }
    b.resize(b.len().div_ceil(32) * 32, 0);
    b.extend(vec![0u8; data_len]);
    b
}

fn kv_string(key: &str, value: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend((key.len() as u64).to_le_bytes());
    b.extend(key.as_bytes());
    b.extend(8u32.to_le_bytes());
    b.extend((value.len() as u64).to_le_bytes());
    b.extend(value.as_bytes());
    b
}

fn open_bytes(bytes: &[u8]) -> quant_core::Result<GgufFile> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.gguf");
    std::fs::write(&path, bytes).unwrap();
    GgufFile::open(&path)
}

fn invalid(bytes: &[u8]) -> bool {
    matches!(open_bytes(bytes), Err(Error::InvalidFile { .. }))
}

#[test]
fn malformed_files_are_typed_errors() {
    let kv = kv_string("general.architecture", "llama");
    let good = raw_gguf(1, &kv, 1, &[("w", &[32, 2], 8, 0)], 2 * 34 + 28);
    assert!(open_bytes(&good).is_ok());

    // Every truncation of the header is an error, never a panic.
    let header_len = good.len() - (2 * 34 + 28);
    for cut in 0..good.len() - 1 {
        if cut >= header_len && cut >= good.len() - 28 {
            continue; // only padding after the data was cut
        }
        assert!(invalid(&good[..cut]), "truncated at {cut}");
    }
    let mut bad_magic = good.clone();
    bad_magic[..4].copy_from_slice(b"GGML");
    assert!(invalid(&bad_magic));
    let mut v1 = good.clone();
    v1[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(invalid(&v1));
    let mut v_be = good.clone();
    v_be[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert!(invalid(&v_be));
    // Absurd counts, before any allocation.
    assert!(invalid(&raw_gguf(
        u64::MAX,
        &kv,
        1,
        &[("w", &[32, 2], 8, 0)],
        96
    )));
    assert!(invalid(&raw_gguf(
        1,
        &kv,
        u64::MAX / 2,
        &[("w", &[32, 2], 8, 0)],
        96
    )));
    let mut huge_str = kv.clone();
    huge_str[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(invalid(&raw_gguf(
        1,
        &huge_str,
        1,
        &[("w", &[32, 2], 8, 0)],
        96
    )));
    let mut arr = Vec::new();
    arr.extend(3u64.to_le_bytes());
    arr.extend(b"arr");
    arr.extend(9u32.to_le_bytes());
    arr.extend(4u32.to_le_bytes());
    arr.extend((1u64 << 60).to_le_bytes());
    assert!(invalid(&raw_gguf(1, &arr, 1, &[("w", &[32, 2], 8, 0)], 96)));
    let mut bad_type = kv.clone();
    let ty_at = 8 + "general.architecture".len();
    bad_type[ty_at..ty_at + 4].copy_from_slice(&99u32.to_le_bytes());
    assert!(invalid(&raw_gguf(
        1,
        &bad_type,
        1,
        &[("w", &[32, 2], 8, 0)],
        96
    )));
    // Bad tensor infos.
    assert!(invalid(&raw_gguf(
        1,
        &kv,
        1,
        &[("w", &[32, 2, 1, 1, 1], 8, 0)],
        96
    )));
    assert!(invalid(&raw_gguf(1, &kv, 1, &[("w", &[], 8, 0)], 96)));
    assert!(invalid(&raw_gguf(1, &kv, 1, &[("w", &[32, 2], 77, 0)], 96)));
    assert!(invalid(&raw_gguf(1, &kv, 1, &[("w", &[33, 2], 8, 0)], 96)));
    assert!(invalid(&raw_gguf(
        1,
        &kv,
        1,
        &[("w", &[u64::MAX, u64::MAX], 0, 0)],
        96
    )));
    assert!(invalid(&raw_gguf(1, &kv, 1, &[("w", &[32, 2], 8, 64)], 96)));
    assert!(invalid(&raw_gguf(1, &kv, 1, &[("w", &[32, 2], 8, 3)], 200)));
    assert!(invalid(&raw_gguf(
        1,
        &kv,
        1,
        &[("w", &[32, 2], 8, u64::MAX - 16)],
        96
    )));
    assert!(invalid(&raw_gguf(
        2,
        &kv,
        1,
        &[("w", &[32], 8, 0), ("w", &[32], 8, 64)],
        128
    )));
    let mut dup = kv.clone();
    dup.extend(&kv);
    assert!(invalid(&raw_gguf(1, &dup, 2, &[("w", &[32, 2], 8, 0)], 96)));
    // Through the registered container entry too.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    std::fs::write(&path, &bad_magic).unwrap();
    assert!(!(container("gguf").unwrap().sniff)(&path));
    assert!(matches!(
        (container("gguf").unwrap().open)(&path),
        Err(Error::InvalidFile { .. })
    ));
}

/// Integer tensors (BERT's I64 `position_ids`, ...) are written as GGUF's integer types
/// (ids 24-27) and read back byte for byte; the weight beside them is quantized as usual.
#[test]
fn integer_tensors_round_trip() {
    use quant_gguf::gguf::{GgufType, IntType};
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.safetensors");
    let weight: Vec<u8> = f32s(&data("gauss_4x512/input.f32"))[..512]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let ints: Vec<(&str, DType, Vec<usize>, Vec<u8>)> = vec![
        (
            "embeddings.position_ids",
            DType::I64,
            vec![1, 512],
            (0i64..512).flat_map(|v| v.to_le_bytes()).collect(),
        ),
        (
            "i32",
            DType::I32,
            vec![3],
            [-7i32, 0, i32::MAX]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        (
            "i16",
            DType::I16,
            vec![2, 2],
            [i16::MIN, -1, 1, 300]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        ("i8", DType::I8, vec![3], vec![0x80, 0xff, 0x7f]),
    ];
    let mut parts = vec![Part::new(
        quant_core::PartLayout::new("w.weight", DType::F32, vec![2, 256]),
        weight,
    )
    .unwrap()];
    for (name, dt, shape, bytes) in &ints {
        parts.push(
            Part::new(
                quant_core::PartLayout::new(*name, *dt, shape.clone()),
                bytes.clone(),
            )
            .unwrap(),
        );
    }
    quant_core::safetensors_io::write_safetensors(&input, &parts, &BTreeMap::new()).unwrap();
    let out = dir.path().join("out.gguf");
    quant_core::ModelQuantizer::new("gguf_config_q8_0")
        .quantize_path(&input, &out)
        .unwrap();
    let file = GgufFile::open(&out).unwrap();
    let ty = |n: &str| file.tensor(n).unwrap().ty;
    assert_eq!(ty("w.weight"), GgufType::Ggml(GgmlType::Q8_0));
    let want = [IntType::I64, IntType::I32, IntType::I16, IntType::I8];
    let model = quant_core::ModelFiles::open(&out).unwrap();
    for ((name, dt, shape, bytes), it) in ints.iter().zip(want) {
        assert_eq!(ty(name), GgufType::Int(it), "{name}");
        let info = file.tensor(name).unwrap();
        assert_eq!(info.shape(), *shape);
        assert_eq!(&file.read_data(info).unwrap(), bytes);
        let (_, rec) = model.records().find(|(_, r)| r.name == *name).unwrap();
        assert_eq!((rec.method.as_deref(), rec.dtype), (None, *dt));
        let t = model.load(name, None).unwrap();
        assert_eq!((t.meta.dtype, &t.meta.shape, &t.data), (*dt, shape, bytes));
    }
}
