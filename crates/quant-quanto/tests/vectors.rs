//! Every optimum-quanto reference vector: quantized parts byte for byte, dequantized values
//! bit for bit (ours and the library's parts), group size, and float8 decode tables.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use quant_core::safetensors_io::SafetensorsFile;
use quant_core::{DType, TensorMeta, TensorSource};

#[test]
fn every_quanto_vector_is_byte_identical() {
    // Both builds of the kernels: AVX2 (where the CPU has it) and the baseline.
    for simd in [true, false] {
        let _simd = quant_core::simd::force_simd(simd);
        every_quanto_vector_is_byte_identical_once();
    }
}

fn every_quanto_vector_is_byte_identical_once() {
    let manifest = json("vectors/manifest.json");
    let entries = manifest["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 66);
    let mut checked = 0;
    for e in entries {
        let case = e["case"].as_str().unwrap();
        let dtype = e["dtype"].as_str().unwrap();
        let qtype = e["params"]["qtype"].as_str().unwrap();
        let input =
            SafetensorsFile::open(data(&format!("vectors/inputs/{case}__{dtype}.safetensors")))
                .unwrap();
        let w = input.get("weight").unwrap();
        let values = w.to_f32().unwrap();
        let meta = TensorMeta::new("weight", w.meta().dtype, w.meta().shape.clone());
        assert_eq!(meta.dtype, DType::parse(dtype).unwrap());

        let reference =
            SafetensorsFile::open(data(&format!("vectors/{}", e["file"].as_str().unwrap())))
                .unwrap();
        let (name, params) = method_for_qtype(qtype);
        let m = method(name, &params);
        let tag = format!("{case} {dtype} {qtype}");

        // Layout known before quantizing, and equal to the library's tensors.
        let layout = m.output_layout(&meta).unwrap();
        let q = m.quantize(&meta, &values).unwrap();
        assert_eq!(q.parts.len(), layout.len(), "{tag}");
        for (part, l) in q.parts.iter().zip(&layout) {
            assert_eq!(&part.layout, l, "{tag}");
            let want = reference
                .part(&l.key)
                .unwrap_or_else(|e| panic!("{tag}: {e}"));
            assert_eq!(part.layout, want.layout, "{tag} {}", l.key);
            assert!(part.data == want.data, "{tag}: bytes of {} differ", l.key);
        }
        // Nothing of the library's is missing from ours.
        for t in reference.metas() {
            if !t.name.starts_with("ref.") {
                assert!(
                    layout.iter().any(|l| l.key == t.name),
                    "{tag}: we lack {}",
                    t.name
                );
            }
        }
        // Group size as quanto chose it.
        let gs = reference.get("ref.group_size").unwrap().to_f32().unwrap()[0];
        let ours = quant_quanto::group_size(meta.shape[1]);
        if qtype == "qint4" || qtype == "qint2" {
            assert_eq!(ours.map_or(-1.0, |g| g as f32), gs, "{tag}");
        }

        // Dequantization, bit for bit, from our parts and from the library's.
        let want = bits(&reference.get("ref.dequant").unwrap().to_f32().unwrap());
        assert_eq!(
            bits(&m.dequantize(&q).unwrap()),
            want,
            "{tag}: dequant of our parts"
        );
        let theirs = load(&reference, &q.record);
        assert_eq!(
            bits(&m.dequantize(&theirs).unwrap()),
            want,
            "{tag}: dequant of their parts"
        );
        checked += 1;
    }
    assert_eq!(checked, 66);
}

#[test]
fn float8_decoding_matches_the_reference_tables() {
    let c = json("vectors/constants.json");
    let m = method("quanto_config_float8", &[]);
    for (fmt, table) in c["float8_decode_tables"].as_object().unwrap() {
        let f = fmt.strip_prefix("float8_").unwrap();
        let params: Vec<(&str, serde_json::Value)> =
            vec![("float8_format", f.into()), ("layout", "optimum".into())];
        let m = method("quanto_config_float8", &params);
        // Dequantize a 256-code row with scale 1 (f32 model): value(code) exactly.
        let meta = TensorMeta::new("w.weight", DType::F32, vec![2, 256]);
        let mut q = m.quantize(&meta, &vec![1.0; 512]).unwrap();
        q.parts[0].data = (0..=255u8).chain(0..=255u8).collect();
        q.parts[1].data = [1.0f32, 1.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let got = m.dequantize(&q).unwrap();
        for (code, want) in table.as_array().unwrap().iter().enumerate() {
            match want.as_f64() {
                Some(v) => {
                    assert_eq!(
                        got[code].to_bits(),
                        (v as f32).to_bits(),
                        "{fmt} code {code:#x}"
                    );
                }
                // JSON has no NaN/inf: null marks a non-finite code.
                None => assert!(!got[code].is_finite(), "{fmt} code {code:#x}"),
            }
        }
    }
    assert_eq!(m.name(), "quanto_config_float8");
}
