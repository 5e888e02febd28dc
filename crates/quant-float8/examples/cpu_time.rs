//! Throughput per CPU second on a shared machine: runs quantize and dequantize of a
//! 4096x4096 weight a few times and divides the input bytes by the process CPU time
//! (user + system, from /proc/self/stat), which other processes do not inflate the way
//! they inflate wall time. Run with `RAYON_NUM_THREADS=1` for a per-thread figure:
//! `cargo run --release -p quant-float8 --example cpu_time -- [METHOD...]`.

use quant_core::dtype::round_to;
use quant_core::{DType, Params, QuantMethod, TensorMeta};
use quant_float8::TorchAo;

fn cpu_seconds() -> f64 {
    let (u, s) = cpu_split();
    u + s
}

/// (user, system) CPU seconds of this process.
fn cpu_split() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 14th field
    // of the whole line, stime the 15th, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    (
        f.get(11).copied().unwrap_or(0.0) / 100.0,
        f.get(12).copied().unwrap_or(0.0) / 100.0,
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let methods: Vec<String> = if args.is_empty() {
        [
            "float8wo_e4m3",
            "float8dq",
            "int8wo",
            "int4dq",
            "uint4wo",
            "int4wo",
        ]
        .iter()
        .map(|m| format!("torch_ao_config_{m}"))
        .collect()
    } else {
        args
    };
    let (n, k) = (4096usize, 4096usize);
    for dtype in [DType::BF16, DType::F32] {
        let mut s: u32 = 7;
        let values: Vec<f32> = (0..n * k)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                round_to(dtype, ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.1)
            })
            .collect();
        let meta = TensorMeta::new("w.weight", dtype, vec![n, k]);
        let bytes = (n * k * dtype.size()) as f64;
        for name in &methods {
            let Ok(m) = TorchAo::new(name, &Params::new()) else {
                eprintln!("unknown method {name}");
                continue;
            };
            let Ok(q) = m.quantize(&meta, &values) else {
                continue;
            };
            let reps = 8;
            let t0 = cpu_seconds();
            let u0 = cpu_split().0;
            for _ in 0..reps {
                std::hint::black_box(m.quantize(&meta, std::hint::black_box(&values)).ok());
            }
            let t1 = cpu_seconds();
            let (u1, s1) = cpu_split();
            for _ in 0..reps {
                std::hint::black_box(m.dequantize(std::hint::black_box(&q)).ok());
            }
            let t2 = cpu_seconds();
            let (u2, s2) = cpu_split();
            let gbs = |t: f64| bytes * f64::from(reps) / t.max(1e-9) / 1e9;
            // Fresh output buffers are page-faulted in by the kernel (system time), which
            // a loaded machine makes slow; user time is the quantizer's own work.
            println!(
                "{name:<32} {dtype:<4} quantize {:5.2} GB/s per CPU-s ({:5.2} user)   dequantize {:5.2} ({:5.2} user, {:.0}% system)",
                gbs(t1 - t0),
                gbs(u1 - u0),
                gbs(t2 - t1),
                gbs(u2 - u1),
                100.0 * (s2 - s1) / (t2 - t1).max(1e-9)
            );
        }
    }
}
