//! Malformed safetensors and bad paths: typed errors naming the file, no output left.
use std::path::Path;

use quant::{Error, ModelQuantizer};

use crate::common::{listing, write_f32};

fn raw_file(dir: &Path, name: &str, header: &str, data_len: usize) -> std::path::PathBuf {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(std::iter::repeat_n(0u8, data_len));
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn quantize_err(input: &Path, out_dir: &Path) -> Error {
    let out = out_dir.join("out.safetensors");
    let e = ModelQuantizer::new("basic_int8")
        .quantize_path(input, &out)
        .unwrap_err();
    assert!(!out.exists(), "no output for a failed run");
    e
}

#[test]
fn malformed_headers_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, String, usize)> = vec![
        ("offset_past_end", r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#.into(), 8),
        ("overlap", r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#.into(), 12),
        ("gap", r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#.into(), 8),
        ("shape_vs_bytes", r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#.into(), 8),
        ("overflow_dims", r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}}"#.into(), 8),
        ("unknown_dtype", r#"{"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}}"#.into(), 8),
        ("not_json", "{not json".into(), 0),
        ("trailing_data", r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#.into(), 12),
    ];
    for (name, header, n) in cases {
        let p = raw_file(dir.path(), &format!("{name}.safetensors"), &header, n);
        match quantize_err(&p, out.path()) {
            Error::InvalidFile { path, .. } | Error::InvalidTensor { path, .. } => {
                assert_eq!(path, p, "{name}")
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    assert!(listing(out.path()).is_empty(), "{:?}", listing(out.path()));
}

#[test]
fn header_length_past_end_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.safetensors");
    write_f32(
        &good,
        &[
            ("a.weight", vec![2, 4], vec![1.0; 8]),
            ("b", vec![3], vec![2.0; 3]),
        ],
    );
    let bytes = std::fs::read(&good).unwrap();
    // Every truncation point: inside the length field, the header and the data.
    for cut in [0, 4, 8, 9, 20, bytes.len() - 13, bytes.len() - 1] {
        let p = dir.path().join(format!("cut{cut}.safetensors"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = quantize_err(&p, out.path());
        assert!(matches!(e, Error::InvalidFile { .. }), "cut {cut}: {e:?}");
    }
    // A header length larger than the file.
    let mut huge = bytes.clone();
    huge[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let p = dir.path().join("huge.safetensors");
    std::fs::write(&p, &huge).unwrap();
    assert!(matches!(
        quantize_err(&p, out.path()),
        Error::InvalidFile { .. }
    ));
}

#[test]
fn missing_input_and_missing_output_folder() {
    let dir = tempfile::tempdir().unwrap();
    let e = quantize_err(&dir.path().join("nope.safetensors"), dir.path());
    assert!(matches!(e, Error::Io { .. }));
    let good = dir.path().join("good.safetensors");
    write_f32(&good, &[("a.weight", vec![2, 2], vec![1.0; 4])]);
    let e = ModelQuantizer::new("basic_int8")
        .quantize_path(&good, dir.path().join("no/such/dir/out.safetensors"))
        .unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    let empty = dir.path().join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        quantize_err(&empty, dir.path()),
        Error::InvalidFile { .. }
    ));
}

#[test]
fn nonfinite_weights_are_refused_with_name_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nan.safetensors");
    write_f32(
        &p,
        &[("a.weight", vec![2, 2], vec![1.0, 2.0, f32::INFINITY, 0.0])],
    );
    let out = dir.path().join("out.safetensors");
    match ModelQuantizer::new("basic_int8").quantize_path(&p, &out) {
        Err(Error::NonFinite { tensor, index, .. }) => {
            assert_eq!(tensor, "a.weight");
            assert_eq!(index, 2);
        }
        other => panic!("{other:?}"),
    }
    assert!(!out.exists());
    ModelQuantizer::new("basic_int8")
        .allow_nonfinite(true)
        .quantize_path(&p, &out)
        .unwrap();
}

#[test]
fn existing_output_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("in.safetensors");
    write_f32(&p, &[("a.weight", vec![2, 2], vec![1.0; 4])]);
    let out = dir.path().join("out.safetensors");
    std::fs::write(&out, b"precious").unwrap();
    let e = ModelQuantizer::new("basic_int8")
        .quantize_path(&p, &out)
        .unwrap_err();
    assert!(matches!(e, Error::OutputExists { .. }));
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    ModelQuantizer::new("basic_int8")
        .force(true)
        .quantize_path(&p, &out)
        .unwrap();
    assert_ne!(std::fs::read(&out).unwrap(), b"precious");
}

/// A bitsandbytes-quantized file opened by a build without that backend fails naming the
/// feature instead of handing out packed bytes as weights.
#[cfg(not(feature = "bnb"))]
#[test]
fn foreign_layout_without_backend_names_the_feature() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bnb.safetensors");
    write_f32(
        &p,
        &[
            ("fc.weight", vec![2], vec![0.0; 2]),
            ("fc.SCB", vec![1], vec![1.0]),
        ],
    );
    match quant::ModelFiles::open(&p) {
        Err(Error::MethodNotCompiled { feature, .. }) => assert_eq!(feature, "bnb"),
        other => panic!("{other:?}"),
    }
}
