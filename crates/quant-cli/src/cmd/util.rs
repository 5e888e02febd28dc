//! Helpers shared by the subcommands: byte counts for people, the thread pool.

use quant::{Error, Result};

pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.2} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}

/// Sizes rayon's global pool (and candle's matrix products, which read
/// `RAYON_NUM_THREADS`) to `n` threads.
pub fn set_threads(n: usize) -> Result<()> {
    std::env::set_var("RAYON_NUM_THREADS", n.max(1).to_string());
    rayon::ThreadPoolBuilder::new()
        .num_threads(n.max(1))
        .build_global()
        .map_err(|e| Error::Config {
            source_name: "--threads".into(),
            entry: n.to_string(),
            reason: e.to_string(),
        })
}
