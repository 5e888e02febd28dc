//! A .gguf written by quant is read back by candle-core's GGUF reader
//! (`candle_core::quantized::gguf_file`): same names, shapes and types, and candle's
//! dequantization equals ours bit for bit where candle's dequantizer matches ggml
//! (F16, BF16, Q8_0, Q4_0, Q5_0, Q3_K); for the other types it is compared within a tight
//! bound (candle's float order differs from ggml's in places). candle 0.11 cannot load
//! Q8_K and Q8_1 tensor data; for those only the tensor info is compared.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::quantized::{gguf_file, GgmlDType};
use candle_core::Device;
use quant_core::format::{container, PlannedOutput};
use quant_core::{DType, Params, QuantMethod, Registry, TensorMeta};
use quant_gguf::{GgmlType, METHODS};

fn input() -> Vec<f32> {
    let b = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/imatrix_8x512/input.f32"),
    )
    .unwrap();
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn candle_type(ty: GgmlType) -> Option<GgmlDType> {
    Some(match ty {
        GgmlType::F32 => GgmlDType::F32,
        GgmlType::F16 => GgmlDType::F16,
        GgmlType::BF16 => GgmlDType::BF16,
        GgmlType::Q4_0 => GgmlDType::Q4_0,
        GgmlType::Q4_1 => GgmlDType::Q4_1,
        GgmlType::Q5_0 => GgmlDType::Q5_0,
        GgmlType::Q5_1 => GgmlDType::Q5_1,
        GgmlType::Q8_0 => GgmlDType::Q8_0,
        GgmlType::Q8_1 => GgmlDType::Q8_1,
        GgmlType::Q2_K => GgmlDType::Q2K,
        GgmlType::Q3_K => GgmlDType::Q3K,
        GgmlType::Q4_K => GgmlDType::Q4K,
        GgmlType::Q5_K => GgmlDType::Q5K,
        GgmlType::Q6_K => GgmlDType::Q6K,
        GgmlType::Q8_K => GgmlDType::Q8K,
        GgmlType::IQ4_NL
        | GgmlType::IQ4_XS
        | GgmlType::IQ2_XXS
        | GgmlType::IQ2_XS
        | GgmlType::IQ2_S
        | GgmlType::IQ3_XXS
        | GgmlType::IQ3_S
        | GgmlType::IQ1_S
        | GgmlType::IQ1_M
        | GgmlType::TQ1_0
        | GgmlType::TQ2_0
        | GgmlType::MXFP4 => return None,
    })
}

#[test]
fn candle_reads_what_we_write() {
    let reg = Registry::global().unwrap();
    let values = input();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all.gguf");
    let mut planned = Vec::new();
    let mut methods: Vec<Box<dyn QuantMethod>> = Vec::new();
    // candle 0.11 has none of the IQ, TQ and MXFP4 types.
    let methods_candle_knows = METHODS.iter().filter(|(_, t)| candle_type(*t).is_some());
    for (name, _) in methods_candle_knows.clone() {
        let meta = TensorMeta::new(format!("{name}.weight"), DType::F32, vec![8, 512]);
        let m = reg.create(name, &Params::new()).unwrap();
        planned.push(PlannedOutput {
            layout: m.output_layout(&meta).unwrap(),
            meta,
            method: Some(name.to_string()),
            params: m.params(),
            fallback: None,
        });
        methods.push(m);
    }
    let entry = container("gguf").unwrap();
    let mut w = (entry.create)(&path, &planned, &BTreeMap::new(), None).unwrap();
    let mut ours = Vec::new();
    for (p, m) in planned.iter().zip(&methods) {
        let q = m.quantize(&p.meta, &values).unwrap();
        ours.push(m.dequantize(&q).unwrap());
        w.write(&q).unwrap();
    }
    w.finish().unwrap();

    let mut f = std::fs::File::open(&path).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    assert_eq!(content.tensor_infos.len(), planned.len());
    for (((name, ty), p), ours) in methods_candle_knows.zip(&planned).zip(&ours) {
        let info = &content.tensor_infos[&p.meta.name];
        assert_eq!(Some(info.ggml_dtype), candle_type(*ty), "{name}");
        assert_eq!(info.shape.dims(), &[8, 512], "{name}");
        if matches!(ty, GgmlType::Q8_K | GgmlType::Q8_1) {
            // candle 0.11 reads the info but refuses to load Q8_K and Q8_1 tensor data
            // ("quantized type ... is not supported yet").
            assert!(content.tensor(&mut f, &p.meta.name, &Device::Cpu).is_err());
            continue;
        }
        let qt = content.tensor(&mut f, &p.meta.name, &Device::Cpu).unwrap();
        let theirs: Vec<f32> = qt
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let exact = matches!(
            ty,
            GgmlType::F16
                | GgmlType::BF16
                | GgmlType::Q8_0
                | GgmlType::Q4_0
                | GgmlType::Q5_0
                | GgmlType::Q3_K
        );
        if exact {
            let a: Vec<u32> = theirs.iter().map(|v| v.to_bits()).collect();
            let b: Vec<u32> = ours.iter().map(|v| v.to_bits()).collect();
            assert!(a == b, "{name}: candle's dequantization differs");
        } else {
            let max_abs = ours.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (i, (a, b)) in theirs.iter().zip(ours).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * max_abs,
                    "{name}[{i}]: candle {a} vs ours {b}"
                );
            }
        }
    }
}
