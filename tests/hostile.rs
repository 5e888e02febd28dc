//! The hostile-input corpus, generated here: malformed safetensors files, quantized files
//! of every registered method with a part missing, cut short or resized, bad records and
//! quant-state JSON, non-finite, denormal and zero-sized weights. Each must give a typed
//! error naming the file (and the tensor where there is one), never a panic, and never an
//! allocation larger than the file could justify.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use quant::safetensors_io::{write_safetensors, SafetensorsFile};
use quant::{DType, Error, ModelFiles, ModelQuantizer, Part, Registry};

use crate::alloc_probe::largest_allocation;
use crate::common::{write, write_f32, NEEDS_IMATRIX};

/// Opens `path` and restores every tensor, stopping at the first error.
fn load_all(path: &Path) -> quant::Result<usize> {
    let files = ModelFiles::open(path)?;
    let names: Vec<String> = files.records().map(|(_, r)| r.name.clone()).collect();
    for n in &names {
        files.load_f32(n)?;
    }
    Ok(names.len())
}

fn size_of(path: &Path) -> usize {
    if path.is_dir() {
        std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len() as usize)
            .sum()
    } else {
        std::fs::metadata(path).unwrap().len() as usize
    }
}

/// Loads a hostile file: returns the error, checking that no single allocation exceeded
/// what restoring the file's own bytes could need (f32 values of 4-bit codes: 8x, plus
/// a fixed slack for buffers).
#[track_caller]
fn hostile(path: &Path) -> Error {
    let size = size_of(path);
    let (r, largest) = largest_allocation(|| load_all(path));
    assert!(
        largest <= 16 * size + (1 << 20),
        "{}: allocated {largest} bytes for a {size}-byte input",
        path.display()
    );
    match r {
        Ok(n) => panic!("{}: loaded {n} tensors", path.display()),
        Err(e) => e,
    }
}

/// The error names `file` (and `tensor` when given).
#[track_caller]
fn names(e: &Error, file: &Path, tensor: Option<&str>) {
    match e {
        Error::InvalidFile { path, .. } => {
            assert_eq!(path, file, "{e}");
            assert!(tensor.is_none(), "no tensor named: {e}");
        }
        Error::InvalidTensor {
            path, tensor: t, ..
        } => {
            assert!(file.starts_with(path) || path.starts_with(file), "{e}");
            if let Some(want) = tensor {
                assert!(
                    t.starts_with(want) || want.starts_with(t.as_str()),
                    "{want}: {e}"
                );
            }
        }
        Error::ShapeMismatch { tensor: t, .. } => {
            if let Some(want) = tensor {
                assert!(t.starts_with(want), "{want}: {e}");
            }
        }
        other => panic!("{}: untyped or unexpected error {other:?}", file.display()),
    }
}

fn raw(dir: &Path, name: &str, header: &[u8], data: &[u8]) -> PathBuf {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(data);
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn safetensors_syntax_attacks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let zeros = [0u8; 64];
    let cases: Vec<(&str, Vec<u8>, usize)> = vec![
        // Duplicate names: JSON allows them, safetensors must not keep either silently.
        (
            "duplicate",
            br#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#.to_vec(),
            8,
        ),
        // A name that is not UTF-8.
        (
            "non_utf8",
            b"{\"a\xff\xfe\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}".to_vec(),
            4,
        ),
        // Offsets: reversed, near u64::MAX, beyond the data.
        (
            "reversed",
            br#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#.to_vec(),
            4,
        ),
        (
            "offset_overflow",
            br#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,18446744073709551615]}}"#.to_vec(),
            4,
        ),
        // A billion-element tensor in a 64-byte file.
        (
            "billion_elements",
            br#"{"a":{"dtype":"F32","shape":[1000000000],"data_offsets":[0,4000000000]}}"#.to_vec(),
            64,
        ),
        // Shape product overflowing in the byte count only.
        (
            "bytes_overflow",
            br#"{"a":{"dtype":"F64","shape":[2305843009213693952,4],"data_offsets":[0,0]}}"#.to_vec(),
            0,
        ),
        // A negative or fractional dim.
        (
            "negative_dim",
            br#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#.to_vec(),
            4,
        ),
        // Dtypes safetensors knows but quant does not, and names nobody knows.
        (
            "dtype_e8m0",
            br#"{"a":{"dtype":"F8_E8M0","shape":[4],"data_offsets":[0,4]}}"#.to_vec(),
            4,
        ),
        (
            "dtype_unknown",
            br#"{"a":{"dtype":"Q4_K","shape":[4],"data_offsets":[0,4]}}"#.to_vec(),
            4,
        ),
        // Metadata that is not a string map, and a header that is not an object.
        (
            "metadata_not_strings",
            br#"{"__metadata__":{"quant.tensors":[1,2]}}"#.to_vec(),
            0,
        ),
        ("header_array", b"[1,2,3]".to_vec(), 0),
        ("header_nul", b"\0\0\0\0\0\0\0\0".to_vec(), 0),
        // Absurdly deep nesting must not overflow the stack.
        ("deep_nesting", [b"{\"a\":".repeat(5000), b"1".to_vec(), b"}".repeat(5000)].concat(), 0),
    ];
    for (name, header, n) in cases {
        let p = raw(d, &format!("{name}.safetensors"), &header, &zeros[..n]);
        let e = hostile(&p);
        match &e {
            Error::InvalidFile { path, .. } | Error::InvalidTensor { path, .. } => {
                assert_eq!(path, &p, "{name}: {e}")
            }
            Error::UnknownDType { context, .. } => assert!(context.contains(name), "{e}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    // A header length claiming more than the format's cap, or than the file.
    for claim in [100_000_001u64, 1 << 40, u64::MAX, u64::MAX - 7] {
        let mut bytes = claim.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}      ");
        let p = d.join(format!("len{claim}.safetensors"));
        std::fs::write(&p, &bytes).unwrap();
        assert!(matches!(hostile(&p), Error::InvalidFile { .. }), "{claim}");
    }
}

/// A small model folder (config.json + one safetensors file) quantized by `method`, with
/// a weight it quantizes in its own layout.
fn quantized_folder(root: &Path, method: &str) -> Option<PathBuf> {
    let dtype = weight_dtype(root, method);
    let input = root.join(format!("in-{dtype}"));
    if !input.exists() {
        std::fs::create_dir_all(&input).unwrap();
        write(
            &input.join("model.safetensors"),
            dtype,
            &[
                (
                    "l.weight",
                    vec![16, 256],
                    (0..4096)
                        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                        .collect(),
                ),
                ("l.bias", vec![16], vec![0.5; 16]),
            ],
        );
        std::fs::write(input.join("config.json"), br#"{"model_type":"llama"}"#).unwrap();
    }
    let out = root.join(method);
    ModelQuantizer::new(method)
        .quantize_path(&input, &out)
        .ok()?;
    Some(out)
}

/// Every registered method: (method, folder, weight file).
fn every_method_output(root: &Path) -> Vec<(String, PathBuf, PathBuf)> {
    let registry = Registry::global().unwrap();
    let mut out = Vec::new();
    for e in registry
        .entries()
        .filter(|e| !NEEDS_IMATRIX.contains(&e.name))
    {
        let folder = quantized_folder(root, e.name)
            .unwrap_or_else(|| panic!("{}: the sample does not quantize", e.name));
        let file = folder.join("model.safetensors");
        assert!(load_all(&folder).is_ok(), "{}: clean output loads", e.name);
        out.push((e.name.to_string(), folder, file));
    }
    out
}

/// Rewrites `file` with `edit` applied to its parts and metadata.
fn rewrite(file: &Path, edit: impl FnOnce(&mut Vec<Part>, &mut BTreeMap<String, String>)) {
    let f = SafetensorsFile::open(file).unwrap();
    let mut parts: Vec<Part> = f.metas().map(|m| f.part(&m.name).unwrap()).collect();
    let mut md = f.metadata().clone();
    drop(f);
    edit(&mut parts, &mut md);
    std::fs::remove_file(file).unwrap();
    write_safetensors(file, &parts, &md).unwrap();
}

fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn restored_by_method(folder: &Path) -> bool {
    ModelFiles::open(folder)
        .unwrap()
        .records()
        .any(|(_, r)| r.name == "l.weight" && r.method.is_some())
}

fn config_has_quantization(folder: &Path) -> bool {
    let Ok(text) = std::fs::read(folder.join("config.json")) else {
        return false;
    };
    let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
    v.get("quantization_config").is_some()
}

/// Keys of the stored parts of the quantized weight `l.weight` (besides itself when the
/// layout keeps the name for the codes).
fn weight_parts(file: &Path) -> Vec<String> {
    SafetensorsFile::open(file)
        .unwrap()
        .metas()
        .map(|m| m.name.clone())
        .filter(|k| k.starts_with("l.weight"))
        .collect()
}

/// A quantized folder missing one part of its weight, with quant's records and without
/// them (then the foreign-layout detectors must notice), fails naming the tensor; the
/// same for a part whose block count (shape) is wrong, or whose bytes are cut in half.
#[test]
fn quantized_parts_missing_resized_or_cut() {
    let tmp = tempfile::tempdir().unwrap();
    for (method, folder, file) in every_method_output(tmp.path()) {
        let parts = weight_parts(&file);
        let quantized = ModelFiles::open(&folder)
            .unwrap()
            .records()
            .any(|(_, r)| r.name == "l.weight" && r.method.as_deref() == Some(method.as_str()));
        assert!(quantized, "{method}: l.weight is quantized by it");
        for (i, key) in parts.iter().enumerate() {
            for keep_records in [true, false] {
                let case = tmp.path().join(format!("{method}-drop{i}-{keep_records}"));
                copy_folder(&folder, &case);
                let f = case.join("model.safetensors");
                rewrite(&f, |p, md| {
                    p.retain(|x| &x.layout.key != key);
                    if !keep_records {
                        md.remove("quant.tensors");
                    }
                });
                // Without quant's records, the folder is still another library's layout
                // when config.json says so: a missing part must be noticed unless the
                // library treats it as optional (the weight is then still restored through
                // its method, never handed out as packed codes). A file of plain-looking
                // tensors and no such config may load as plain tensors.
                let foreign = !keep_records && config_has_quantization(&case);
                match load_all(&case) {
                    Ok(_) if !keep_records && !foreign => {}
                    Ok(_) if foreign && restored_by_method(&case) => {}
                    Ok(n) => panic!(
                        "{method}: without '{key}' (records: {keep_records}) {n} tensors load"
                    ),
                    Err(e) => names(&e, &f, Some("l.weight")),
                }
                let _ = std::fs::remove_dir_all(&case);
            }
        }
        // Wrong block counts: every part with one row / element fewer.
        for (i, key) in parts.iter().enumerate() {
            let case = tmp.path().join(format!("{method}-short{i}"));
            copy_folder(&folder, &case);
            let f = case.join("model.safetensors");
            let mut changed = false;
            rewrite(&f, |p, _| {
                let part = p.iter_mut().find(|x| &x.layout.key == key).unwrap();
                if let Some(d0) = part.layout.shape.first_mut().filter(|d| **d > 1) {
                    *d0 -= 1;
                    let n = part.layout.byte_len().unwrap();
                    part.data.truncate(n);
                    changed = true;
                }
            });
            if changed {
                let e = hostile(&case);
                names(&e, &f, Some("l.weight"));
            }
            let _ = std::fs::remove_dir_all(&case);
        }
    }
}

/// Every quantized file cut at each section boundary (length field, header, start and end
/// of every tensor's bytes) and at every byte of the header is an invalid file.
#[test]
fn quantized_files_truncated_at_every_boundary() {
    let tmp = tempfile::tempdir().unwrap();
    for (method, _, file) in every_method_output(tmp.path()) {
        let bytes = std::fs::read(&file).unwrap();
        let f = SafetensorsFile::open(&file).unwrap();
        let start = f.data_start();
        let mut cuts: Vec<usize> = (0..start.min(2048)).step_by(7).collect();
        cuts.extend([0, 1, 7, 8, 9, start - 1, start, start + 1, bytes.len() - 1]);
        let mut at = start;
        for m in f.metas() {
            at += m.byte_len().unwrap();
            cuts.extend([at.saturating_sub(1), at]);
        }
        drop(f);
        cuts.retain(|&c| c < bytes.len());
        cuts.sort();
        cuts.dedup();
        let p = tmp.path().join(format!("{method}-cut.safetensors"));
        for cut in cuts {
            std::fs::write(&p, &bytes[..cut]).unwrap();
            let e = hostile(&p);
            assert!(
                matches!(&e, Error::InvalidFile { path, .. } if path == &p),
                "{method} cut at {cut}: {e:?}"
            );
        }
    }
}

/// quant's own per-tensor records, when malformed: bad JSON, unknown methods and dtypes,
/// shapes that overflow or claim billions of values for a few stored bytes, parts that
/// are not in the file.
#[test]
fn bad_tensor_records() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = quantized_folder(tmp.path(), "basic_int8").unwrap();
    let file = folder.join("model.safetensors");
    let good: serde_json::Value = serde_json::from_str(
        SafetensorsFile::open(&file).unwrap().metadata()["quant.tensors"].as_str(),
    )
    .unwrap();
    let set = |k: &str, x: serde_json::Value| -> String {
        let mut v = good.clone();
        for r in v.as_array_mut().unwrap() {
            if r["name"] == "l.weight" {
                r[k] = x.clone();
            }
        }
        v.to_string()
    };
    let cases: Vec<(&str, String, bool)> = vec![
        ("not_json", "[{".into(), false),
        ("not_a_list", "{}".into(), false),
        ("unknown_dtype", set("dtype", "Q9".into()), false),
        (
            "unknown_method",
            set("method", "no_such_method".into()),
            true,
        ),
        (
            "billion_shape",
            set("shape", serde_json::json!([1000000000, 4])),
            true,
        ),
        (
            "overflow_shape",
            set(
                "shape",
                serde_json::json!([4294967296u64, 4294967296u64, 16]),
            ),
            true,
        ),
        (
            "zero_shape",
            set("shape", serde_json::json!([0, 256])),
            true,
        ),
        (
            "missing_part",
            set("parts", serde_json::json!(["l.weight", "nope"])),
            true,
        ),
        ("no_parts", set("parts", serde_json::json!([])), true),
        (
            "bad_params",
            set("params", serde_json::json!({"bits": "many"})),
            true,
        ),
    ];
    for (name, records, names_tensor) in cases {
        let case = tmp.path().join(format!("rec-{name}"));
        copy_folder(&folder, &case);
        let f = case.join("model.safetensors");
        rewrite(&f, |_, md| {
            md.insert("quant.tensors".into(), records.clone());
        });
        let e = hostile(&case);
        match &e {
            Error::UnknownMethod { name: m, .. } => assert_eq!(m, "no_such_method"),
            Error::BadParam { .. } => {}
            _ if names_tensor => names(&e, &f, Some("l.weight")),
            _ => names(&e, &f, None),
        }
    }
}

/// Which dtype `method` quantizes a [16, 256] `l.weight` in: f32, or bf16 for the
/// methods that take bf16 weights only (others keep or reroute f32 ones).
fn weight_dtype(dir: &Path, method: &str) -> DType {
    let p = dir.join("probe.safetensors");
    write(
        &p,
        DType::F32,
        &[("l.weight", vec![16, 256], vec![0.5; 4096])],
    );
    let (_, plan) = ModelQuantizer::new(method).plan_path(&p).unwrap();
    let own = plan
        .entries
        .iter()
        .any(|e| e.method.as_deref() == Some(method));
    if own {
        DType::F32
    } else {
        DType::BF16
    }
}

/// Every method's records claiming a billion values (or an overflowing shape) for the few
/// bytes stored: a typed error naming the tensor, nothing that size allocated.
#[test]
fn record_shapes_claiming_billions_every_method() {
    let tmp = tempfile::tempdir().unwrap();
    for (method, folder, _) in every_method_output(tmp.path()) {
        let shapes = [
            serde_json::json!([1_000_000_000, 256]),
            serde_json::json!([16, 1u64 << 40]),
            serde_json::json!([4294967296u64, 4294967296u64, 16]),
        ];
        for (i, shape) in shapes.into_iter().enumerate() {
            let case = tmp.path().join(format!("{method}-shape{i}"));
            copy_folder(&folder, &case);
            let f = case.join("model.safetensors");
            rewrite(&f, |_, md| {
                let mut v: serde_json::Value = serde_json::from_str(&md["quant.tensors"]).unwrap();
                for r in v.as_array_mut().unwrap() {
                    if r["name"] == "l.weight" {
                        r["shape"] = shape.clone();
                    }
                }
                md.insert("quant.tensors".into(), v.to_string());
            });
            let e = hostile(&case);
            names(&e, &f, Some("l.weight"));
        }
    }
}

/// NaN and infinities are refused by every method with the tensor and first index,
/// unless allowed; denormals and zero-sized tensors quantize and load back.
#[test]
fn nonfinite_denormal_and_empty_weights_every_method() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::global().unwrap();
    let mut w: Vec<f32> = (0..4096).map(|i| (i as f32 - 2048.0) / 1024.0).collect();
    w[700] = f32::NAN;
    w[900] = f32::NEG_INFINITY;
    // Denormals that bf16 holds exactly too.
    let denormals: Vec<f32> = (0..4096u32)
        .map(|i| f32::from_bits(((1 + i % 127) << 16) | (i % 2) << 31))
        .collect();
    assert!(denormals.iter().all(|x| x.is_subnormal()));
    for dtype in [DType::F32, DType::BF16] {
        write(
            &tmp.path().join(format!("nan-{dtype}.safetensors")),
            dtype,
            &[("l.weight", vec![16, 256], w.clone())],
        );
        write(
            &tmp.path().join(format!("denormal-{dtype}.safetensors")),
            dtype,
            &[("l.weight", vec![16, 256], denormals.clone())],
        );
    }
    let empty = tmp.path().join("empty.safetensors");
    write_f32(
        &empty,
        &[
            ("l.weight", vec![0, 256], vec![]),
            ("e.weight", vec![16, 0], vec![]),
            ("b", vec![0], vec![]),
        ],
    );
    for e in registry
        .entries()
        .filter(|e| !NEEDS_IMATRIX.contains(&e.name))
    {
        let dtype = weight_dtype(tmp.path(), e.name);
        let bad = tmp.path().join(format!("nan-{dtype}.safetensors"));
        let tiny = tmp.path().join(format!("denormal-{dtype}.safetensors"));
        let out = tmp.path().join(format!("{}.safetensors", e.name));
        match ModelQuantizer::new(e.name).quantize_path(&bad, &out) {
            Err(Error::NonFinite { tensor, index, .. }) => {
                assert_eq!((tensor.as_str(), index), ("l.weight", 700), "{}", e.name)
            }
            other => panic!("{}: {other:?}", e.name),
        }
        assert!(!out.exists());
        // Denormal weights: finite results, each within the largest denormal.
        ModelQuantizer::new(e.name)
            .force(true)
            .quantize_path(&tiny, &out)
            .unwrap_or_else(|err| panic!("{}: {err}", e.name));
        let back = ModelFiles::open(&out)
            .unwrap()
            .load_f32("l.weight")
            .unwrap();
        assert!(
            back.iter()
                .all(|x| x.is_finite() && x.abs() <= f32::MIN_POSITIVE),
            "{}: {:?}",
            e.name,
            &back[..8]
        );
        // Zero-sized tensors: stored and restored as empty, or refused with a typed error.
        match ModelQuantizer::new(e.name)
            .force(true)
            .quantize_path(&empty, &out)
        {
            Ok(_) => {
                let files = ModelFiles::open(&out).unwrap();
                for t in ["l.weight", "e.weight", "b"] {
                    assert_eq!(files.load_f32(t).unwrap().len(), 0, "{}: {t}", e.name);
                }
            }
            Err(err) => names(&err, &empty, None),
        }
    }
}

/// A bitsandbytes 4-bit folder whose quant-state JSON part is corrupt: not UTF-8, not JSON,
/// wrong types, unknown keys, a blocksize of 0, a shape claiming billions of values, a
/// quant type that contradicts its key. With quant's records and without them (the
/// detector reads the JSON), a typed error naming the weight.
#[cfg(feature = "bnb")]
#[test]
fn bad_bnb_quant_state_json() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = quantized_folder(tmp.path(), "bnb_4bit_config_bf16").unwrap();
    let state_key = weight_parts(&folder.join("model.safetensors"))
        .into_iter()
        .find(|k| k.contains("quant_state.bitsandbytes__"))
        .unwrap();
    let good = SafetensorsFile::open(folder.join("model.safetensors"))
        .unwrap()
        .part(&state_key)
        .unwrap()
        .data;
    let good = String::from_utf8(good).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not_utf8", b"{\"quant_type\": \"nf4\xff\"}".to_vec()),
        ("not_json", b"{\"quant_type\": ".to_vec()),
        ("not_object", b"[1, 2, 3]".to_vec()),
        ("empty", Vec::new()),
        (
            "unknown_key",
            good.replacen('{', "{\"evil\": 1, ", 1).into_bytes(),
        ),
        (
            "blocksize_zero",
            good.replace("\"blocksize\": 64", "\"blocksize\": 0")
                .into_bytes(),
        ),
        (
            "blocksize_string",
            good.replace("\"blocksize\": 64", "\"blocksize\": \"64\"")
                .into_bytes(),
        ),
        (
            "shape_billions",
            good.replace("\"shape\": [16, 256]", "\"shape\": [1000000000, 256]")
                .into_bytes(),
        ),
        (
            "shape_overflow",
            good.replace(
                "\"shape\": [16, 256]",
                "\"shape\": [18446744073709551615, 2]",
            )
            .into_bytes(),
        ),
        (
            "shape_negative",
            good.replace("\"shape\": [16, 256]", "\"shape\": [-16, 256]")
                .into_bytes(),
        ),
        (
            "quant_type_mismatch",
            good.replace("\"nf4\"", "\"fp4\"").into_bytes(),
        ),
        (
            "dtype_unknown",
            good.replace("\"bfloat16\"", "\"float128\"").into_bytes(),
        ),
    ];
    for (name, bytes) in cases {
        for keep_records in [true, false] {
            let case = tmp.path().join(format!("qs-{name}-{keep_records}"));
            copy_folder(&folder, &case);
            let f = case.join("model.safetensors");
            rewrite(&f, |parts, md| {
                let p = parts
                    .iter_mut()
                    .find(|p| p.layout.key == state_key)
                    .unwrap();
                p.layout.shape = vec![bytes.len()];
                p.data = bytes.clone();
                if !keep_records {
                    md.remove("quant.tensors");
                }
            });
            let e = hostile(&case);
            names(&e, &f, Some("l.weight"));
        }
    }
}
