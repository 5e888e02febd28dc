//! LOCAL ONLY (not committed): times the low-bit kernels against the ggml driver's matrix.
#![allow(clippy::unwrap_used, clippy::panic)]
use crate::lowbit::test_rows::{deq, quant};
use crate::lowbit::LowBit;
use std::time::Instant;

fn f32s(p: &str) -> Vec<f32> {
    std::fs::read(p)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn one<T: LowBit>(name: &str, imat: bool) {
    let x = f32s("/work/ggml-bench/matrix.f32");
    let w = f32s("/work/ggml-bench/imatrix.f32");
    let size = w.len();
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let wq = if imat { Some(&w[..]) } else { None };
    let _ = quant::<T>(&x[..size * 1.min(size)], size, wq);
    let (mut bq, mut bd) = (f64::MAX, f64::MAX);
    let mut q = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        q = quant::<T>(&x, size, wq);
        bq = bq.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let d = deq::<T>(&q, size);
        bd = bd.min(t.elapsed().as_secs_f64());
        std::hint::black_box(d);
    }
    let want = std::fs::read(format!("/work/ggml-bench/{name}.q")).unwrap();
    let same = want == q;
    eprintln!(
        "| {name} | {:.1} | {:.0} | identical to ggml: {same} |",
        x.len() as f64 * 4.0 / bq / 1e6,
        x.len() as f64 * 4.0 / bd / 1e6
    );
}

#[test]
#[ignore]
fn timing() {
    let only = std::env::var("ONLY").unwrap_or_default();
    let _g = quant_core::simd::force_simd(std::env::var("NOSIMD").is_err());
    let want = |n: &str| only.is_empty() || only.split(',').any(|o| o == n);
    if want("tq1_0") {
        one::<crate::tq1_0::BlockTq1_0>("tq1_0", false);
    }
    if want("tq2_0") {
        one::<crate::tq2_0::BlockTq2_0>("tq2_0", false);
    }
    if want("mxfp4") {
        one::<crate::mxfp4::BlockMxfp4>("mxfp4", false);
    }
    if want("iq3_xxs") {
        one::<crate::iq3_xxs::BlockIq3Xxs>("iq3_xxs", false);
    }
    if want("iq3_s") {
        one::<crate::iq3_s::BlockIq3S>("iq3_s", false);
    }
    if want("iq2_xxs") {
        one::<crate::iq2_xxs::BlockIq2Xxs>("iq2_xxs", true);
    }
    if want("iq2_xs") {
        one::<crate::iq2_xs::BlockIq2Xs>("iq2_xs", true);
    }
    if want("iq2_s") {
        one::<crate::iq2_s::BlockIq2S>("iq2_s", false);
    }
    if want("iq1_s") {
        one::<crate::iq1_s::BlockIq1S>("iq1_s", true);
    }
    if want("iq1_m") {
        one::<crate::iq1_m::BlockIq1M>("iq1_m", false);
    }
}

#[test]
#[ignore]
fn neighbour_stats() {
    use crate::iq_grid::{lattice, Book};
    for b in [
        Book::Iq2Xxs,
        Book::Iq2Xs,
        Book::Iq2S,
        Book::Iq1,
        Book::Iq3Xxs,
        Book::Iq3S,
    ] {
        let l = lattice(b);
        let lists: Vec<usize> = (0..l.map.len())
            .filter(|&u| {
                l.map[u] < 0 && l.map[u] != -1
                    || (l.map[u] == -1 && l.neighbours.first().is_some() && false)
            })
            .map(|u| l.neighbours_of(u).len())
            .collect();
        let n = lists.len();
        let avg = lists.iter().sum::<usize>() as f64 / n as f64;
        let max = lists.iter().max().unwrap();
        eprintln!("{b:?}: {n} lists, avg {avg:.1}, max {max}");
    }
}
