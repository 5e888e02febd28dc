//! `QuantMethod::dequantize_into` restores exactly what `dequantize` does, for every
//! method of the build, into a buffer reused from tensor to tensor.
use quant::{DType, QuantMethod, Registry, TensorMeta};

fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            // bf16-exact, so methods that refuse f32 inputs take them as bf16.
            half::bf16::from_f32((x as f32 / u32::MAX as f32 - 0.5) * 0.2).to_f32()
        })
        .collect()
}

#[test]
fn dequantize_into_equals_dequantize_for_every_method() {
    let reg = Registry::global().unwrap();
    let mut compared = Vec::new();
    let mut buffer = vec![f32::NAN; 7];
    for e in reg.entries() {
        let m: Box<dyn QuantMethod> = (e.create)(&Default::default()).unwrap();
        for (k, shape) in [vec![64usize, 256], vec![32, 512]].into_iter().enumerate() {
            let n: usize = shape.iter().product();
            let v = values(n, k as u32 + 1);
            let q = [DType::F32, DType::BF16].into_iter().find_map(|d| {
                m.quantize(&TensorMeta::new("layer.weight", d, shape.clone()), &v)
                    .ok()
            });
            let Some(q) = q else { continue };
            let want = m.dequantize(&q).unwrap();
            buffer.clear();
            buffer.resize(n, f32::NAN);
            m.dequantize_into(&q, &mut buffer).unwrap();
            let same = want
                .iter()
                .zip(&buffer)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same && want.len() == n, "{} {:?}", e.name, shape);
            // A buffer of the wrong size is an error, never a partial write or a panic.
            let mut short = vec![0f32; n - 1];
            assert!(m.dequantize_into(&q, &mut short).is_err(), "{}", e.name);
        }
        compared.push(e.name);
    }
    assert_eq!(compared.len(), reg.entries().count(), "{compared:?}");
}
