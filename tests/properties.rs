//! Property tests: the safetensors writer and reader round-trip arbitrary dtypes, shapes,
//! names and metadata; every registered method restores random inputs within its named
//! error bound.
use std::collections::BTreeMap;

use proptest::prelude::*;
use quant::safetensors_io::{write_safetensors, SafetensorsFile};
use quant::{DType, Part, PartLayout, Registry, TensorMeta};

fn dtype() -> impl Strategy<Value = DType> {
    (0..DType::ALL.len()).prop_map(|i| DType::ALL[i])
}

/// Tensors with unique, arbitrary (non-empty, any Unicode) names and random bytes.
fn parts() -> impl Strategy<Value = Vec<Part>> {
    prop::collection::btree_map(
        "\\PC{1,24}".prop_filter("reserved key", |n| n != "__metadata__"),
        (dtype(), prop::collection::vec(0usize..5, 0..4)),
        0..6,
    )
    .prop_flat_map(|m| {
        m.into_iter()
            .map(|(name, (dt, shape))| {
                let n = PartLayout::new(name.clone(), dt, shape.clone())
                    .byte_len()
                    .unwrap();
                prop::collection::vec(any::<u8>(), n).prop_map(move |data| {
                    Part::new(PartLayout::new(name.clone(), dt, shape.clone()), data).unwrap()
                })
            })
            .collect::<Vec<_>>()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn safetensors_round_trip(
        parts in parts(),
        metadata in prop::collection::btree_map("\\PC{0,16}", "\\PC{0,32}", 0..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.safetensors");
        let metadata: BTreeMap<String, String> = metadata;
        write_safetensors(&p, &parts, &metadata).unwrap();
        let f = SafetensorsFile::open(&p).unwrap();
        prop_assert_eq!(f.metadata(), &metadata);
        prop_assert_eq!(f.data_start() % 8, 0);
        // File order is write order (empty tensors share an offset, so their relative
        // order is not kept by the format).
        let names: Vec<&str> = f.metas().filter(|m| m.byte_len().unwrap() > 0).map(|m| m.name.as_str()).collect();
        let want: Vec<&str> = parts.iter().filter(|p| !p.data.is_empty()).map(|p| p.layout.key.as_str()).collect();
        prop_assert_eq!(names, want, "file order is write order");
        prop_assert_eq!(f.len(), parts.len());
        for part in &parts {
            prop_assert_eq!(&f.part(&part.layout.key).unwrap(), part);
        }
        // The reference reader agrees.
        let bytes = std::fs::read(&p).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        prop_assert_eq!(st.len(), parts.len());
    }
}

/// Largest error of a restored value, as a fraction of the largest magnitude of the
/// input (per-tensor absmax: a per-block method is at least this good), for each method.
/// Derived from each format's step size at the block's absmax (half a step for round to
/// nearest), plus the rounding of stored scales and of the dequantized dtype.
const ERROR_BOUNDS: &[(&str, f32)] = &[
    // f16: 11-bit significand, half an ulp; bf16: 8 bits.
    ("basic_fp16", 1.0 / 2048.0),
    ("basic_bf16", 1.0 / 256.0),
    // Symmetric int8 per row: half of absmax/127.
    ("basic_int8", 0.5 / 127.0 * 1.01),
    // NF4: the widest gap of the NF4 code book (-1.0 to -0.6962) halved, fp16/bf16
    // absmax and output rounding on top.
    ("bnb_4bit_config_fp16", 0.1519 + 1.0 / 1024.0),
    ("bnb_4bit_config_bf16", 0.1519 + 1.0 / 128.0),
    // LLM.int8 row-wise absmax/127, output in the compute dtype.
    ("bnb_8bit_config_fp16", 0.5 / 127.0 + 1.0 / 1024.0),
    ("bnb_8bit_config_bf16", 0.5 / 127.0 + 1.0 / 128.0),
    // quanto: symmetric int8 per axis; asymmetric int4 / int2 groups (half a step of
    // range/15 or range/3, range up to 2 absmax); float8 e4m3 (3 mantissa bits).
    ("quanto_config_int8", 0.5 / 127.0 + 1.0 / 1024.0),
    ("quanto_config_int4", 1.0 / 15.0 + 1.0 / 256.0),
    ("quanto_config_int2", 1.0 / 3.0 + 1.0 / 256.0),
    ("quanto_config_float8", 1.0 / 16.0 + 1.0 / 256.0),
    // torchao: int4 groups (asymmetric range/15, bf16 scale and zero), int4dq (amax/7.5),
    // int8 per row, float8 e4m3 / e5m2, uintN asymmetric groups (range / (2^N - 1)).
    ("torch_ao_config_int4wo", 1.0 / 15.0 + 1.0 / 64.0),
    ("torch_ao_config_int4dq", 0.5 / 7.5 + 1.0 / 128.0),
    ("torch_ao_config_int8wo", 0.5 / 127.0 + 1.0 / 128.0),
    ("torch_ao_config_int8dq", 0.5 / 127.0 + 1.0 / 128.0),
    ("torch_ao_config_float8wo", 1.0 / 8.0 + 1.0 / 128.0),
    ("torch_ao_config_float8wo_e5m2", 1.0 / 8.0 + 1.0 / 128.0),
    ("torch_ao_config_float8wo_e4m3", 1.0 / 16.0 + 1.0 / 128.0),
    ("torch_ao_config_float8dq", 1.0 / 16.0 + 1.0 / 128.0),
    ("torch_ao_config_float8dq_e4m3", 1.0 / 16.0 + 1.0 / 128.0),
    (
        "torch_ao_config_float8_e4m3_tensor",
        1.0 / 16.0 + 1.0 / 128.0,
    ),
    ("torch_ao_config_float8_e4m3_row", 1.0 / 16.0 + 1.0 / 128.0),
    ("torch_ao_config_uint1wo", 1.0 + 1.0 / 128.0),
    ("torch_ao_config_uint2wo", 1.0 / 3.0 + 1.0 / 128.0),
    ("torch_ao_config_uint3wo", 1.0 / 7.0 + 1.0 / 128.0),
    ("torch_ao_config_uint4wo", 1.0 / 15.0 + 1.0 / 128.0),
    ("torch_ao_config_uint5wo", 1.0 / 31.0 + 1.0 / 128.0),
    ("torch_ao_config_uint6wo", 1.0 / 63.0 + 1.0 / 128.0),
    ("torch_ao_config_uint7wo", 1.0 / 127.0 + 1.0 / 128.0),
    // GGML, relative to the tensor's absmax: F16/BF16 as the casts; symmetric 32-blocks
    // (Q8_0/Q8_1: absmax/127, half a step; Q5_0 and Q4_0 put the signed extreme at the
    // lowest code, so the opposite extreme clips by a whole step, 1/16 and 1/8) and ones
    // (Q5_1: range/31, Q4_1: range/15) with an f16 scale; Q8_K with an f32 scale. The
    // K-quants and IQ4 search their scales for least weighted squared error and may clip
    // a block's extreme value, and their f16 super-block scale goes subnormal at the
    // smallest magnitude generated here (absmax 1e-3): their bounds are four steps of the
    // format's levels over twice the absmax (Q6_K 64 levels, Q5_K 32, Q4_K/IQ4 16, Q3_K 8,
    // Q2_K 4).
    ("gguf_config_fp16", 1.0 / 2048.0),
    ("gguf_config_bf16", 1.0 / 256.0),
    // Q8_0/Q8_1 scale by an f16 that goes subnormal for blocks with absmax below about
    // 8e-3: up to 127 codes times half an f16 subnormal step (2^-25) is 0.4% of an
    // absmax of 1e-3, the smallest magnitude generated here.
    ("gguf_config_q8_0", 0.5 / 127.0 + 1.0 / 128.0),
    ("gguf_config_q8_1", 0.5 / 127.0 + 1.0 / 128.0),
    ("gguf_config_q8_k", 0.5 / 127.0 + 1.0 / 1024.0),
    ("gguf_config_q5_0", 1.0 / 16.0 + 1.0 / 256.0),
    ("gguf_config_q5_1", 1.0 / 31.0 + 1.0 / 256.0),
    ("gguf_config_q4_0", 1.0 / 8.0 + 1.0 / 256.0),
    ("gguf_config_q4_1", 1.0 / 15.0 + 1.0 / 256.0),
    ("gguf_config_q6_k", 8.0 / 64.0),
    ("gguf_config_q5_k", 8.0 / 32.0),
    ("gguf_config_q4_k", 8.0 / 16.0),
    ("gguf_config_iq4_nl", 8.0 / 16.0),
    ("gguf_config_iq4_xs", 8.0 / 16.0),
    ("gguf_config_q3_k", 1.0),
    ("gguf_config_q2_k", 8.0 / 4.0),
    // The lattice and ternary types by the same rule (IQ3 8 levels, IQ2 4, IQ1 3); the
    // ternary TQ types round x/absmax of a block of 256 to {-1, 0, 1} (half a step, f16
    // scale); MXFP4 (E2M1 levels 0 … 6 times 2^e, e = floor(log2 absmax) - 2) clips values
    // in [6, 8)·2^e to 6·2^e and rounds 4 … 6 by half a step of 2·2^e: a quarter of the
    // block's absmax at most.
    ("gguf_config_iq3_s", 1.0),
    ("gguf_config_iq3_xxs", 1.0),
    ("gguf_config_iq2_s", 8.0 / 4.0),
    ("gguf_config_iq2_xs", 8.0 / 4.0),
    ("gguf_config_iq2_xxs", 8.0 / 4.0),
    ("gguf_config_iq1_m", 8.0 / 3.0),
    ("gguf_config_iq1_s", 8.0 / 3.0),
    ("gguf_config_tq1_0", 0.5 + 1.0 / 256.0),
    ("gguf_config_tq2_0", 0.5 + 1.0 / 256.0),
    ("gguf_config_mxfp4", 0.25 + 1.0 / 128.0),
    // llama-quantize's file types on a model without llama.cpp names: their default type.
    ("gguf_q4_0", 1.0 / 8.0 + 1.0 / 256.0),
    ("gguf_q4_1", 1.0 / 15.0 + 1.0 / 256.0),
    ("gguf_q5_0", 1.0 / 16.0 + 1.0 / 256.0),
    ("gguf_q5_1", 1.0 / 31.0 + 1.0 / 256.0),
    ("gguf_q8_0", 0.5 / 127.0 + 1.0 / 128.0),
    ("gguf_q2_k", 8.0 / 4.0),
    ("gguf_q3_k_s", 1.0),
    ("gguf_q3_k_m", 1.0),
    ("gguf_q3_k_l", 1.0),
    ("gguf_q4_k_s", 8.0 / 16.0),
    ("gguf_q4_k_m", 8.0 / 16.0),
    ("gguf_q5_k_s", 8.0 / 32.0),
    ("gguf_q5_k_m", 8.0 / 32.0),
    ("gguf_q6_k", 8.0 / 64.0),
    ("gguf_iq4_nl", 8.0 / 16.0),
    ("gguf_iq4_xs", 8.0 / 16.0),
    ("gguf_iq2_xxs", 8.0 / 4.0),
    ("gguf_iq2_xs", 8.0 / 4.0),
    ("gguf_iq2_s", 8.0 / 4.0),
    ("gguf_iq2_m", 8.0 / 4.0),
    ("gguf_iq3_xxs", 1.0),
    ("gguf_iq3_xs", 1.0),
    ("gguf_iq3_s", 1.0),
    ("gguf_iq3_m", 1.0),
    ("gguf_iq1_s", 8.0 / 3.0),
    ("gguf_iq1_m", 8.0 / 3.0),
    ("gguf_q2_k_s", 8.0 / 4.0),
    ("gguf_tq1_0", 0.5 + 1.0 / 256.0),
    ("gguf_tq2_0", 0.5 + 1.0 / 256.0),
    ("gguf_mxfp4_moe", 0.25 + 1.0 / 128.0),
    ("gguf_f16", 1.0 / 2048.0),
    ("gguf_bf16", 1.0 / 256.0),
    // The example backend's absmean ternary code {-1, 0, 1} x mean|x|: values above the
    // mean clip, so the error reaches absmax - mean|x| (< absmax).
    ("example_ternary", 1.0),
];

fn bound(method: &str) -> f32 {
    ERROR_BOUNDS
        .iter()
        .find(|(m, _)| *m == method)
        .map(|(_, b)| *b)
        .unwrap_or_else(|| panic!("no ERROR_BOUNDS entry for method {method}"))
}

/// Largest |x - restored| / max|x| for `values` through `method` (as bf16 weights for
/// the methods that take nothing else).
fn relative_error(method: &str, rows: usize, values: &[f32]) -> f32 {
    let registry = Registry::global().unwrap();
    let m = registry.create(method, &Default::default()).unwrap();
    let shape = vec![rows, values.len() / rows];
    let meta = TensorMeta::new("l.weight", DType::F32, shape.clone());
    let bf16: Vec<f32>;
    let imatrix_dir;
    let (q, values) = match m.quantize(&meta, values) {
        // Types that need importance weights (GGUF IQ2_XXS, IQ2_XS, IQ1_S): all ones, in a
        // legacy llama.cpp .dat file.
        Err(quant::Error::NeedsImatrix { .. }) => {
            imatrix_dir = tempfile::tempdir().unwrap();
            let path = imatrix_dir.path().join("ones.dat");
            let ncols = values.len() / rows;
            let mut b = Vec::new();
            b.extend(1i32.to_le_bytes());
            b.extend((meta.name.len() as i32).to_le_bytes());
            b.extend(meta.name.as_bytes());
            b.extend(1i32.to_le_bytes());
            b.extend((ncols as i32).to_le_bytes());
            for _ in 0..ncols {
                b.extend(1f32.to_le_bytes());
            }
            std::fs::write(&path, b).unwrap();
            let mut p = quant::Params::new();
            p.insert("imatrix".into(), path.display().to_string().into());
            (
                registry.create(method, &p).unwrap().quantize(&meta, values),
                values,
            )
        }
        Err(quant::Error::UnsupportedDType { .. }) => {
            bf16 = values
                .iter()
                .map(|&x| quant::dtype::round_bf16(x))
                .collect();
            let meta = TensorMeta::new("l.weight", DType::BF16, shape);
            (m.quantize(&meta, &bf16), &bf16[..])
        }
        q => (q, values),
    };
    let q = q.unwrap_or_else(|e| panic!("{method}: {e}"));
    let back = quant::load::dequantize(&q).unwrap_or_else(|e| panic!("{method}: {e}"));
    assert_eq!(back.len(), values.len(), "{method}");
    let absmax = values.iter().fold(0f32, |a, x| a.max(x.abs()));
    let worst = values
        .iter()
        .zip(&back)
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    if absmax == 0.0 {
        worst
    } else {
        worst / absmax
    }
}

fn weights() -> impl Strategy<Value = (usize, Vec<f32>)> {
    (
        1usize..4,
        1usize..3,
        prop_oneof![Just(1e-3f32), Just(1.0), Just(50.0)],
    )
        .prop_flat_map(|(rows, k, scale)| {
            (
                Just(rows),
                prop::collection::vec(-1.0f32..1.0, rows * 256 * k)
                    .prop_map(move |v| v.into_iter().map(|x| x * scale).collect()),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    #[test]
    fn every_method_within_its_error_bound((rows, values) in weights()) {
        for e in Registry::global().unwrap().entries() {
            let err = relative_error(e.name, rows, &values);
            prop_assert!(err <= bound(e.name), "{}: error {err} > bound {}", e.name, bound(e.name));
        }
    }
}

/// Prints each method's worst observed error (to check the bounds are tight):
/// `cargo test -p quant --test main probe_error_bounds -- --ignored --nocapture`.
#[test]
#[ignore = "prints measurements"]
fn probe_error_bounds() {
    let mut g = quant::sample::Gaussian::new(7);
    for e in Registry::global().unwrap().entries() {
        let mut worst = 0f32;
        for rows in 1..4 {
            for scale in [1e-3f32, 1.0, 50.0] {
                let v: Vec<f32> = g.fill(rows * 512, scale);
                worst = worst.max(relative_error(e.name, rows, &v));
            }
        }
        println!("{:40} {worst:.5} bound {:.5}", e.name, bound(e.name));
    }
}
