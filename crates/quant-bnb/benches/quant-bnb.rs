//! Criterion benches: quantize and dequantize a 4096×4096 f32 matrix with each bnb variant.
//! Groups are named `{method}/{op}`; throughput is the f32 input size.

// A bench that cannot set up has nothing to measure.
#![allow(clippy::panic)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quant_core::{DType, Params, QuantMethod, Registry, TensorMeta};
use std::hint::black_box;

const ROWS: usize = 4096;
const COLS: usize = 4096;

fn weights() -> Vec<f32> {
    let mut s = 0x1234_5678_9abc_def0u64;
    (0..ROWS * COLS)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.04
        })
        .collect()
}

fn create(name: &str, params: serde_json::Value) -> Box<dyn QuantMethod> {
    // Naming the crate links its registrations.
    black_box(quant_bnb::method::quantization_config_8bit());
    let p: Params = params.as_object().cloned().unwrap_or_default();
    match Registry::global().and_then(|r| r.create(name, &p)) {
        Ok(m) => m,
        Err(e) => panic!("{name}: {e}"),
    }
}

fn bench(c: &mut Criterion) {
    let values = weights();
    let meta = TensorMeta::new("layer.weight", DType::F32, vec![ROWS, COLS]);
    let variants = [
        (
            "bnb_4bit_config_fp16",
            "nf4",
            serde_json::json!({"dtype": "float32"}),
        ),
        (
            "bnb_4bit_config_fp16",
            "fp4",
            serde_json::json!({"dtype": "float32", "quant_type": "fp4"}),
        ),
        (
            "bnb_4bit_config_fp16",
            "nf4_dq",
            serde_json::json!({"dtype": "float32", "double_quant": true}),
        ),
        (
            "bnb_8bit_config_fp16",
            "int8",
            serde_json::json!({"dtype": "float32"}),
        ),
    ];
    for (name, variant, params) in variants {
        let m = create(name, params);
        let Ok(q) = m.quantize(&meta, &values) else {
            panic!("{name} {variant}: quantize failed");
        };
        let mut g = c.benchmark_group(format!("{name}/quantize"));
        g.throughput(Throughput::Bytes((ROWS * COLS * 4) as u64));
        g.sample_size(10);
        g.bench_function(BenchmarkId::from_parameter(variant), |b| {
            b.iter(|| m.quantize(black_box(&meta), black_box(&values)))
        });
        g.finish();
        let mut g = c.benchmark_group(format!("{name}/dequantize"));
        g.throughput(Throughput::Bytes((ROWS * COLS * 4) as u64));
        g.sample_size(10);
        g.bench_function(BenchmarkId::from_parameter(variant), |b| {
            b.iter(|| m.dequantize(black_box(&q)))
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
