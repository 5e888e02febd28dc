//! Quantize and dequantize a 4096x4096 weight (bf16 and f32) with one method per family.
//! Groups are `{method}/{op}`, throughput in bytes of the input weight as stored
//! (quantize) or of the weight produced (dequantize).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quant_core::dtype::round_to;
use quant_core::{DType, Params, QuantMethod, TensorMeta};
use quant_float8::TorchAo;
use std::hint::black_box;

const N: usize = 4096;
const K: usize = 4096;

const METHODS: [&str; 6] = [
    "torch_ao_config_float8wo_e4m3",
    "torch_ao_config_float8dq",
    "torch_ao_config_int8wo",
    "torch_ao_config_int4dq",
    "torch_ao_config_uint4wo",
    "torch_ao_config_int4wo",
];

fn weights(dtype: DType) -> Vec<f32> {
    let mut s: u32 = 7;
    (0..N * K)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            round_to(dtype, ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.1)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    for dtype in [DType::BF16, DType::F32] {
        let values = weights(dtype);
        let meta = TensorMeta::new("w.weight", dtype, vec![N, K]);
        let bytes = (N * K * dtype.size()) as u64;
        for name in METHODS {
            let Ok(method) = TorchAo::new(name, &Params::new()) else {
                continue;
            };
            let Ok(q) = method.quantize(&meta, &values) else {
                continue;
            };
            let mut g = c.benchmark_group(format!("{name}/quantize"));
            g.throughput(Throughput::Bytes(bytes));
            g.sample_size(10);
            g.bench_function(BenchmarkId::from_parameter(dtype), |b| {
                b.iter(|| method.quantize(black_box(&meta), black_box(&values)))
            });
            g.finish();
            let mut g = c.benchmark_group(format!("{name}/dequantize"));
            g.throughput(Throughput::Bytes(bytes));
            g.sample_size(10);
            g.bench_function(BenchmarkId::from_parameter(dtype), |b| {
                b.iter(|| method.dequantize(black_box(&q)))
            });
            g.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
