//! The registered methods end to end: registry, parameters, selection and fallback,
//! quantize/dequantize through `QuantMethod` against ggml's vectors, importance matrices
//! (in memory, legacy `.dat`, GGUF), and typed errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use quant_core::format::PlannedOutput;
use quant_core::{
    DType, Error, Params, PartLayout, PlannedTensor, QuantMethod, Registry, Selection, TensorMeta,
};
use quant_gguf::{GgmlType, GgufMethod, Imatrix, METHODS};

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

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The file stem ggml's vectors use for a type.
fn stem(ty: GgmlType) -> String {
    match ty {
        GgmlType::F16 | GgmlType::BF16 => ty.name().to_lowercase(),
        _ => {
            let n = ty.name().to_lowercase();
            n.strip_suffix("_k").map_or(n.clone(), |b| format!("{b}_K"))
        }
    }
}

fn create(name: &str, params: Params) -> Box<dyn QuantMethod> {
    Registry::global().unwrap().create(name, &params).unwrap()
}

const WEIGHT: &str = "blk.0.ffn_down.weight";

#[test]
fn registry_holds_the_26_methods_and_the_ftypes() {
    assert_eq!(METHODS.len(), 26);
    let reg = Registry::global().unwrap();
    let mut ours: Vec<&str> = reg
        .entries()
        .filter(|e| e.backend == quant_gguf::BACKEND)
        .map(|e| e.name)
        .collect();
    ours.sort_unstable();
    let mut want: Vec<&str> = METHODS.iter().map(|(n, _)| *n).collect();
    want.extend(quant_gguf::FTYPES.iter().map(|f| f.method()));
    want.sort_unstable();
    assert_eq!(ours, want);
    for (name, ty) in METHODS {
        let e = reg.get(name).unwrap();
        let bpw = (ty.type_size() * 8) as f32 / ty.block_size() as f32;
        assert_eq!(e.bits_per_weight, bpw, "{name}");
        let r = reg.resolve(name, true).unwrap();
        assert_eq!(r.effective, name);
    }
    assert!(quant_core::format::container("gguf").is_some());
}

/// Every method through `QuantMethod` on the imatrix_8x512 input: the stored part is
/// ggml's bytes, dequantization is ggml's values, and the record recreates the method.
#[test]
fn methods_reproduce_ggml_through_the_trait() {
    let input = f32s(&data("imatrix_8x512/input.f32"));
    let meta = TensorMeta::new(WEIGHT, DType::F32, vec![8, 512]);
    for (name, ty) in METHODS {
        let m = create(name, Params::new());
        assert_eq!(m.name(), name);
        assert_eq!(m.select(&meta), Selection::Quantize);
        let layout = m.output_layout(&meta).unwrap();
        if ty.requires_imatrix() {
            // ggml has no plain output for these (checked with weights in check_imatrix).
            let err = m.quantize(&meta, &input).unwrap_err();
            assert!(
                matches!(&err, Error::NeedsImatrix { reason, .. } if reason.contains("--imatrix")),
                "{name}: {err:?}"
            );
            continue;
        }
        let q = m.quantize(&meta, &input).unwrap();
        assert_eq!(q.parts.len(), 1);
        assert_eq!(q.parts[0].layout, layout[0]);
        let want = data(&format!("imatrix_8x512/{}.q", stem(ty)));
        assert!(q.parts[0].data == want, "{name}: bytes differ from ggml");
        let want_deq = f32s(&data(&format!("imatrix_8x512/{}.deq.f32", stem(ty))));
        assert_eq!(bits(&m.dequantize(&q).unwrap()), bits(&want_deq), "{name}");
        // The record alone recreates the method.
        assert_eq!(q.record.method.as_deref(), Some(name));
        assert!(!q.record.params.contains_key("imatrix"));
        let again = create(name, q.record.params.clone());
        assert_eq!(bits(&again.dequantize(&q).unwrap()), bits(&want_deq));
        if ty == GgmlType::F16 || ty == GgmlType::BF16 {
            assert_eq!(layout[0].shape, vec![8, 512]);
        } else {
            assert_eq!(layout[0].dtype, DType::U8);
            assert_eq!(layout[0].shape, vec![8, ty.row_size(512).unwrap()]);
        }
    }
}

#[test]
fn params_are_checked() {
    let reg = Registry::global().unwrap();
    let mut p = Params::new();
    p.insert("blocksize".into(), 64.into());
    assert!(matches!(
        reg.create("gguf_config_q4_k", &p),
        Err(Error::BadParam { param, .. }) if param == "blocksize"
    ));
    let mut p = Params::new();
    p.insert("type".into(), "Q5_K".into());
    assert!(matches!(
        reg.create("gguf_config_q4_k", &p),
        Err(Error::BadParam { param, .. }) if param == "type"
    ));
    let mut p = Params::new();
    p.insert("type".into(), "q4_k".into());
    assert!(reg.create("gguf_config_q4_k", &p).is_ok());
    let mut p = Params::new();
    p.insert("imatrix".into(), "/nonexistent/imatrix.dat".into());
    assert!(matches!(
        reg.create("gguf_config_q4_k", &p),
        Err(Error::Io { .. })
    ));
    let mut p = Params::new();
    p.insert("allow_nonfinite".into(), "yes".into());
    assert!(matches!(
        reg.create("gguf_config_q4_k", &p),
        Err(Error::BadParam { .. })
    ));
}

#[test]
fn selection_follows_llama_cpp() {
    let q4k = create("gguf_config_q4_k", Params::new());
    let t =
        |name: &str, dtype: DType, shape: &[usize]| TensorMeta::new(name, dtype, shape.to_vec());
    assert_eq!(
        q4k.select(&t("blk.0.attn_norm.weight", DType::F32, &[512])),
        Selection::Keep(Some(DType::F32))
    );
    assert_eq!(
        q4k.select(&t("blk.0.attn_q.bias", DType::F16, &[512, 512])),
        Selection::Keep(Some(DType::F32))
    );
    assert_eq!(
        q4k.select(&t("model.norm.weight", DType::BF16, &[2, 512])),
        Selection::Keep(Some(DType::F32))
    );
    assert_eq!(
        q4k.select(&t("tokens", DType::I64, &[4, 512])),
        Selection::Keep(None)
    );
    // BERT's position and token-type tables, by llama.cpp and Hugging Face names.
    for name in [
        "position_embd.weight",
        "token_types.weight",
        "embeddings.position_embeddings.weight",
        "bert.embeddings.token_type_embeddings.weight",
    ] {
        assert_eq!(
            q4k.select(&t(name, DType::F32, &[512, 512])),
            Selection::Keep(Some(DType::F32)),
            "{name}"
        );
    }
    assert_eq!(
        q4k.select(&t(
            "embeddings.word_embeddings.weight",
            DType::F32,
            &[512, 512]
        )),
        Selection::Quantize
    );
    assert_eq!(
        q4k.select(&t(WEIGHT, DType::BF16, &[4, 512])),
        Selection::Quantize
    );
    let ladder = [
        ("gguf_config_q2_k", 96, "gguf_config_q4_0"),
        ("gguf_config_q3_k", 96, "gguf_config_q4_0"),
        ("gguf_config_q4_k", 96, "gguf_config_q5_0"),
        ("gguf_config_q5_k", 96, "gguf_config_q5_1"),
        ("gguf_config_q6_k", 96, "gguf_config_q8_0"),
        ("gguf_config_q8_k", 96, "gguf_config_fp16"),
        ("gguf_config_q4_k", 100, "gguf_config_fp16"),
        ("gguf_config_q6_k", 100, "gguf_config_fp16"),
        ("gguf_config_q4_0", 100, "gguf_config_fp16"),
        ("gguf_config_q8_1", 48, "gguf_config_fp16"),
        ("gguf_config_iq4_xs", 96, "gguf_config_iq4_nl"),
        ("gguf_config_iq4_xs", 100, "gguf_config_fp16"),
        ("gguf_config_iq4_nl", 100, "gguf_config_fp16"),
        ("gguf_config_iq2_xxs", 96, "gguf_config_iq4_nl"),
        ("gguf_config_iq2_xs", 96, "gguf_config_iq4_nl"),
        ("gguf_config_iq2_s", 96, "gguf_config_iq4_nl"),
        ("gguf_config_iq3_xxs", 96, "gguf_config_iq4_nl"),
        ("gguf_config_iq3_s", 96, "gguf_config_iq4_nl"),
        ("gguf_config_iq1_s", 96, "gguf_config_iq4_nl"),
        ("gguf_config_iq1_m", 96, "gguf_config_iq4_nl"),
        ("gguf_config_iq1_m", 100, "gguf_config_fp16"),
        ("gguf_config_tq1_0", 96, "gguf_config_q4_0"),
        ("gguf_config_tq2_0", 96, "gguf_config_q4_0"),
        ("gguf_config_mxfp4", 48, "gguf_config_fp16"),
    ];
    for (method, cols, want) in ladder {
        let sel = create(method, Params::new()).select(&t(WEIGHT, DType::F32, &[3, cols]));
        match sel {
            Selection::Fallback {
                method: got,
                reason,
            } => {
                assert_eq!(got, want, "{method} with rows of {cols}");
                assert!(reason.contains(&cols.to_string()));
            }
            other => panic!("{method} with rows of {cols}: {other:?}"),
        }
    }
    assert_eq!(
        create("gguf_config_q4_0", Params::new()).select(&t(WEIGHT, DType::F32, &[3, 96])),
        Selection::Quantize
    );
    assert_eq!(
        create("gguf_config_fp16", Params::new()).select(&t(WEIGHT, DType::F32, &[3, 7])),
        Selection::Quantize
    );
}

/// The fallback a K-quant picks for the 96-column case produces ggml's bytes for it.
#[test]
fn fallback_methods_reproduce_ggml() {
    let input = f32s(&data("odd_3x96/input.f32"));
    let meta = TensorMeta::new(WEIGHT, DType::F32, vec![3, 96]);
    for (method, file) in [
        ("gguf_config_q4_k", "q5_0"),
        ("gguf_config_q5_k", "q5_1"),
        ("gguf_config_q6_k", "q8_0"),
        ("gguf_config_q3_k", "q4_0"),
        ("gguf_config_q8_k", "f16"),
        ("gguf_config_iq4_xs", "iq4_nl"),
    ] {
        let Selection::Fallback { method: fb, .. } = create(method, Params::new()).select(&meta)
        else {
            panic!("{method} should fall back")
        };
        let q = create(&fb, Params::new()).quantize(&meta, &input).unwrap();
        assert!(
            q.parts[0].data == data(&format!("odd_3x96/{file}.q")),
            "{fb}"
        );
    }
    // Asked directly, a K-quant refuses the shape with a typed error.
    assert!(matches!(
        create("gguf_config_q4_k", Params::new()).quantize(&meta, &input),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        create("gguf_config_q4_k", Params::new()).output_layout(&meta),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn wrong_value_count_is_a_shape_error() {
    let meta = TensorMeta::new(WEIGHT, DType::F32, vec![2, 256]);
    for (name, _) in METHODS {
        assert!(matches!(
            create(name, Params::new()).quantize(&meta, &[0.0; 100]),
            Err(Error::ShapeMismatch { .. })
        ));
    }
}

#[test]
fn nonfinite_is_refused_unless_allowed() {
    let input = f32s(&data("special_nan_inf_2x256/input.f32"));
    let meta = TensorMeta::new(WEIGHT, DType::F32, vec![2, 256]);
    // The types ggml has NaN/Inf vectors for (not the lattice types).
    let with_vectors = METHODS.iter().filter(|(_, ty)| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/data/special_nan_inf_2x256/{}.q", stem(*ty)))
            .exists()
    });
    assert_eq!(with_vectors.clone().count(), 19);
    for &(name, ty) in with_vectors {
        let err = create(name, Params::new()).quantize(&meta, &input);
        assert!(
            matches!(err, Err(Error::NonFinite { index: 5, .. })),
            "{name}: {err:?}"
        );
        let mut p = Params::new();
        p.insert("allow_nonfinite".into(), true.into());
        let m = create(name, p);
        let q = m.quantize(&meta, &input).unwrap();
        assert!(
            q.parts[0].data == data(&format!("special_nan_inf_2x256/{}.q", stem(ty))),
            "{name}"
        );
        assert_eq!(q.record.params.get("allow_nonfinite"), Some(&true.into()));
        assert!(create(name, q.record.params.clone()).dequantize(&q).is_ok());
    }
}

#[test]
fn malformed_parts_are_typed_errors() {
    let input = f32s(&data("gauss_4x512/input.f32"));
    let meta = TensorMeta::new(WEIGHT, DType::F32, vec![4, 512]);
    let ones = Imatrix::from_entries("ones", [(WEIGHT.to_string(), vec![1.0; 512])]).unwrap();
    let ones = Arc::new(ones);
    for (name, ty) in METHODS {
        let m: Box<dyn QuantMethod> = if ty.requires_imatrix() {
            Box::new(GgufMethod::new(ty).unwrap().with_imatrix(ones.clone()))
        } else {
            create(name, Params::new())
        };
        let q = m.quantize(&meta, &input).unwrap();
        let mut short = q.clone();
        short.parts[0].data.pop();
        assert!(
            matches!(m.dequantize(&short), Err(Error::InvalidTensor { .. })),
            "{name}"
        );
        let mut renamed = q.clone();
        renamed.parts[0].layout.key = "other".into();
        assert!(
            matches!(m.dequantize(&renamed), Err(Error::InvalidTensor { .. })),
            "{name}"
        );
        let mut retyped = q.clone();
        retyped.parts[0].layout.dtype = DType::I32;
        assert!(
            matches!(m.dequantize(&retyped), Err(Error::InvalidTensor { .. })),
            "{name}"
        );
    }
}

fn imatrix_case() -> (Vec<f32>, Vec<f32>, TensorMeta) {
    (
        f32s(&data("imatrix_8x512/input.f32")),
        f32s(&data("imatrix_8x512/imatrix.f32")),
        TensorMeta::new(WEIGHT, DType::F32, vec![8, 512]),
    )
}

/// Checks every type with importance matrix `im` against ggml's `*.imat.q` (types
/// ggml quantizes without weights must give their plain output).
fn check_imatrix(im: Arc<Imatrix>) {
    let (input, _, meta) = imatrix_case();
    for (name, ty) in METHODS {
        let m = GgufMethod::new(ty).unwrap().with_imatrix(im.clone());
        let q = m.quantize(&meta, &input).unwrap();
        let file = if ty.uses_imatrix() {
            format!("imatrix_8x512/{}.imat.q", stem(ty))
        } else {
            format!("imatrix_8x512/{}.q", stem(ty))
        };
        assert!(q.parts[0].data == data(&file), "{name} vs {file}");
        if ty.uses_imatrix() {
            let deq = f32s(&data(&format!("imatrix_8x512/{}.imat.deq.f32", stem(ty))));
            assert_eq!(bits(&m.dequantize(&q).unwrap()), bits(&deq), "{name}");
        }
        assert!(!q.record.params.contains_key("imatrix"));
    }
}

#[test]
fn imatrix_in_memory() {
    let (_, w, _) = imatrix_case();
    let im = Imatrix::from_entries("test", [(WEIGHT.to_string(), w)]).unwrap();
    check_imatrix(Arc::new(im));
}

#[test]
fn imatrix_legacy_file() {
    let (_, w, _) = imatrix_case();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("imatrix.dat");
    // ncall = 4: the file holds sums 4·w (exact), llama.cpp divides by ncall.
    let mut b = Vec::new();
    b.extend(2i32.to_le_bytes());
    for (name, vals) in [(WEIGHT, w.clone()), ("other.weight", vec![1.0; 32])] {
        b.extend((name.len() as i32).to_le_bytes());
        b.extend(name.as_bytes());
        b.extend(4i32.to_le_bytes());
        b.extend((vals.len() as i32).to_le_bytes());
        for v in vals {
            b.extend((v * 4.0).to_le_bytes());
        }
    }
    b.extend(10i32.to_le_bytes());
    b.extend(4i32.to_le_bytes());
    b.extend(b"wiki");
    std::fs::write(&path, &b).unwrap();
    let im = Imatrix::load(&path).unwrap();
    assert_eq!(im.len(), 2);
    assert_eq!(im.chunk_count(), Some(10));
    assert_eq!(im.datasets(), ["wiki".to_string()]);
    check_imatrix(Arc::new(im));

    // Through the registry parameter, and recorded in the artifacts.
    let mut p = Params::new();
    p.insert("imatrix".into(), path.display().to_string().into());
    let m = create("gguf_config_q4_k", p);
    assert!(!m.params().contains_key("imatrix"));
    let (input, _, meta) = imatrix_case();
    assert!(m.quantize(&meta, &input).unwrap().parts[0].data == data("imatrix_8x512/q4_K.imat.q"));
    let planned = [
        PlannedTensor {
            meta: meta.clone(),
            layout: m.output_layout(&meta).unwrap(),
            method: Some(m.name().to_string()),
        },
        PlannedTensor {
            meta: TensorMeta::new("blk.1.ffn_up.weight", DType::F32, vec![8, 512]),
            layout: Vec::new(),
            method: Some(m.name().to_string()),
        },
    ];
    let art = m.artifacts(&planned).unwrap();
    assert_eq!(art.metadata["quantize.imatrix.entries_count"], "2");
    assert_eq!(art.metadata["quantize.imatrix.chunks_count"], "10");
    assert_eq!(
        art.metadata["quantize.imatrix.missing"],
        "blk.1.ffn_up.weight"
    );

    // Malformed legacy files.
    for cut in [0, 3, 4, 10, 40, 200] {
        assert!(
            matches!(
                Imatrix::parse_legacy(&b[..cut], "cut"),
                Err(Error::Backend { .. })
            ),
            "cut at {cut}"
        );
    }
    let mut absurd = b.clone();
    absurd[..4].copy_from_slice(&i32::MAX.to_le_bytes());
    assert!(matches!(
        Imatrix::parse_legacy(&absurd, "absurd"),
        Err(Error::Backend { .. })
    ));
    let mut nan = b.clone();
    let first_value = 4 + 4 + WEIGHT.len() + 8;
    nan[first_value..first_value + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    assert!(matches!(
        Imatrix::parse_legacy(&nan, "nan"),
        Err(Error::Backend { .. })
    ));
}

#[test]
fn imatrix_gguf_file() {
    let (_, w, _) = imatrix_case();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("imatrix.gguf");
    // Two chunks: sums 2·w, count 2.
    let sums: Vec<u8> = w.iter().flat_map(|v| (v * 2.0).to_le_bytes()).collect();
    let counts: Vec<u8> = 2.0f32.to_le_bytes().to_vec();
    let tensor = |name: &str, shape: Vec<usize>| PlannedOutput {
        meta: TensorMeta::new(name, DType::F32, shape.clone()),
        method: None,
        params: Params::new(),
        layout: vec![PartLayout::new(name, DType::F32, shape)],
        fallback: None,
    };
    let planned = vec![
        tensor(&format!("{WEIGHT}.in_sum2"), vec![1, 512]),
        tensor(&format!("{WEIGHT}.counts"), vec![1, 1]),
    ];
    let mut meta = BTreeMap::new();
    meta.insert("imatrix.chunk_count".to_string(), "2".to_string());
    let entry = quant_core::format::container("gguf").unwrap();
    let mut wr = (entry.create)(&path, &planned, &meta, None).unwrap();
    for (p, bytes) in planned.iter().zip([sums, counts]) {
        wr.write(&quant_core::QuantizedTensor {
            record: quant_core::TensorRecord {
                name: p.meta.name.clone(),
                method: None,
                dtype: DType::F32,
                shape: p.meta.shape.clone(),
                dequant_dtype: DType::F32,
                params: Params::new(),
                parts: vec![p.meta.name.clone()],
                fallback: None,
            },
            parts: vec![quant_core::Part::new(p.layout[0].clone(), bytes).unwrap()],
        })
        .unwrap();
    }
    wr.finish().unwrap();
    let im = Imatrix::load(&path).unwrap();
    assert_eq!(im.len(), 1);
    check_imatrix(Arc::new(im));
}

#[test]
fn imatrix_size_mismatch_is_an_error() {
    let (input, w, meta) = imatrix_case();
    let im = Imatrix::from_entries("test", [(WEIGHT.to_string(), w[..256].to_vec())]).unwrap();
    let m = GgufMethod::new(GgmlType::Q4_K)
        .unwrap()
        .with_imatrix(Arc::new(im));
    assert!(matches!(
        m.quantize(&meta, &input),
        Err(Error::Backend { .. })
    ));
    assert!(matches!(
        Imatrix::from_entries("test", [(WEIGHT.to_string(), vec![f32::INFINITY])]),
        Err(Error::Backend { .. })
    ));
    // A tensor without an entry uses the plain quantizer.
    let other = TensorMeta::new("blk.9.attn_k.weight", DType::F32, vec![8, 512]);
    assert!(m.quantize(&other, &input).unwrap().parts[0].data == data("imatrix_8x512/q4_K.q"));
}

/// A 3-D expert tensor uses one imatrix slice per expert, as llama.cpp does.
#[test]
fn imatrix_per_expert() {
    let (input, w, _) = imatrix_case();
    let meta = TensorMeta::new(WEIGHT, DType::F32, vec![2, 4, 512]);
    let mut both = w.clone();
    both.extend(w.iter().map(|v| v + 1.0));
    let im = Arc::new(Imatrix::from_entries("test", [(WEIGHT.to_string(), both.clone())]).unwrap());
    let m = GgufMethod::new(GgmlType::Q3_K).unwrap().with_imatrix(im);
    let got = m.quantize(&meta, &input).unwrap().parts[0].data.clone();
    let half = input.len() / 2;
    let mut want =
        quant_gguf::quantize(GgmlType::Q3_K, &input[..half], 512, Some(&both[..512])).unwrap();
    want.extend(
        quant_gguf::quantize(GgmlType::Q3_K, &input[half..], 512, Some(&both[512..])).unwrap(),
    );
    assert!(got == want);
}
