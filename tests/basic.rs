use half::{bf16, f16};
use quant::{DType, HostTensor, ModelQuantizer, TensorSource};

fn bits() -> impl Iterator<Item = f32> {
    // A spread of f32 bit patterns including specials, ties and subnormals.
    (0u32..=u32::MAX).step_by(9_973).map(f32::from_bits).chain([
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        65504.0,
        65520.0,
        1e-8,
        3.0e38,
    ])
}

#[test]
fn fp16_and_bf16_casts_round_to_nearest_even() {
    let values: Vec<f32> = bits().filter(|v| !v.is_nan()).collect();
    let t = HostTensor::from_f32("x", DType::F32, vec![values.len()], &values).unwrap();
    for (method, dt) in [("basic_fp16", DType::F16), ("basic_bf16", DType::BF16)] {
        let m = ModelQuantizer::new(method)
            .allow_nonfinite(true)
            .quantize_sources(&[&t])
            .unwrap();
        let part = &m.tensors[0].parts[0];
        assert_eq!(part.layout.dtype, dt);
        for (i, v) in values.iter().enumerate() {
            let got = u16::from_le_bytes([part.data[2 * i], part.data[2 * i + 1]]);
            let want = if dt == DType::F16 {
                f16::from_f32(*v).to_bits()
            } else {
                bf16::from_f32(*v).to_bits()
            };
            assert_eq!(got, want, "{method} {v:e}");
        }
        let back = m.dequantize("x").unwrap();
        assert_eq!(back.len(), values.len());
    }
}

#[test]
fn nan_is_kept_and_overflow_is_inf_when_allowed() {
    let t = HostTensor::from_f32("x", DType::F32, vec![3], &[f32::NAN, 1e6, -1e6]).unwrap();
    let m = ModelQuantizer::new("basic_fp16")
        .allow_nonfinite(true)
        .quantize_sources(&[&t])
        .unwrap();
    let d = m.dequantize("x").unwrap();
    assert!(d[0].is_nan());
    assert_eq!(d[1], f32::INFINITY);
    assert_eq!(d[2], f32::NEG_INFINITY);
    // Refused by default, naming the tensor and index.
    let e = ModelQuantizer::new("basic_fp16")
        .quantize_sources(&[&t])
        .unwrap_err();
    assert!(matches!(e, quant::Error::NonFinite { index: 0, .. }));
}

#[test]
fn int8_per_row_formula() {
    let rows = 5;
    let cols = 33;
    let mut g = quant::sample::Gaussian::new(7);
    let mut v = g.fill(rows * cols, 1.0);
    v[..cols].iter_mut().for_each(|x| *x = 0.0); // an all-zero row
    let t = HostTensor::from_f32("a.weight", DType::F32, vec![rows, cols], &v).unwrap();
    let b = HostTensor::from_f32("a.bias", DType::F32, vec![rows], &v[..rows]).unwrap();
    let m = ModelQuantizer::new("basic_int8")
        .quantize_sources(&[&t, &b])
        .unwrap();
    let q = &m.tensors[0];
    assert_eq!(q.parts[0].layout.dtype, DType::I8);
    let scales: Vec<f32> = q.parts[1]
        .data
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    for r in 0..rows {
        let row = &v[r * cols..(r + 1) * cols];
        let absmax = row.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert_eq!(scales[r], absmax / 127.0);
        for (c, x) in row.iter().enumerate() {
            let want = if absmax == 0.0 {
                0
            } else {
                (x / (absmax / 127.0)).round_ties_even() as i8
            };
            assert_eq!(q.parts[0].data[r * cols + c] as i8, want);
        }
    }
    let d = m.dequantize("a.weight").unwrap();
    assert!(d.iter().all(|x| x.is_finite()));
    assert!(d[..cols].iter().all(|&x| x == 0.0));
    // The bias is not a matrix weight: kept as is.
    assert_eq!(m.tensors[1].record.method, None);
    assert_eq!(m.tensors[1].parts[0].data, b.bytes().unwrap().into_owned());
}

#[test]
fn int8_dequantizes_to_the_original_dtype() {
    let v: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) / 7.0).collect();
    let t = HostTensor::from_f32("w.weight", DType::BF16, vec![2, 32], &v).unwrap();
    let m = ModelQuantizer::new("basic_int8")
        .quantize_sources(&[&t])
        .unwrap();
    assert_eq!(m.tensors[0].record.dequant_dtype, DType::BF16);
    for x in m.dequantize("w.weight").unwrap() {
        assert_eq!(x, bf16::from_f32(x).to_f32(), "exact in bf16");
    }
}
