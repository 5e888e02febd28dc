//! Error metrics between original and restored weights (`quant eval`, `quant demo`).

use serde::Serialize;

/// How far restored values are from the originals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct ErrorStats {
    /// Root mean squared error.
    pub rmse: f64,
    /// RMSE divided by the RMS of the original (0 when the original is all zero).
    pub rel_rmse: f64,
    /// Signal-to-quantization-noise ratio in dB (infinite when exact).
    pub sqnr_db: f64,
    /// Cosine similarity (1 when both are zero).
    pub cosine: f64,
    /// Largest absolute difference.
    pub max_abs: f64,
    /// Number of values compared.
    pub count: usize,
}

impl ErrorStats {
    /// Compares `restored` with `original` (same length; extra values are ignored).
    /// Non-finite pairs that are equal count as exact.
    pub fn compare(original: &[f32], restored: &[f32]) -> Self {
        let (mut se, mut ss, mut dot, mut nr, mut max_abs) = (0f64, 0f64, 0f64, 0f64, 0f64);
        let mut count = 0usize;
        for (&a, &b) in original.iter().zip(restored) {
            count += 1;
            if a == b || (a.is_nan() && b.is_nan()) {
                if a.is_finite() {
                    let a = a as f64;
                    ss += a * a;
                    dot += a * a;
                    nr += a * a;
                }
                continue;
            }
            let (a, b) = (a as f64, b as f64);
            let d = a - b;
            se += d * d;
            ss += a * a;
            dot += a * b;
            nr += b * b;
            max_abs = max_abs.max(d.abs());
        }
        let n = count.max(1) as f64;
        let rmse = (se / n).sqrt();
        let rms = (ss / n).sqrt();
        ErrorStats {
            rmse,
            rel_rmse: if rms > 0.0 { rmse / rms } else { 0.0 },
            sqnr_db: if se > 0.0 {
                10.0 * (ss / se).log10()
            } else {
                f64::INFINITY
            },
            cosine: if ss > 0.0 && nr > 0.0 {
                dot / (ss.sqrt() * nr.sqrt())
            } else if ss == 0.0 && nr == 0.0 {
                1.0
            } else {
                0.0
            },
            max_abs,
            count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_noisy() {
        let a = [1.0f32, -2.0, 3.0];
        let s = ErrorStats::compare(&a, &a);
        assert_eq!(s.rmse, 0.0);
        assert!(s.sqnr_db.is_infinite());
        assert!((s.cosine - 1.0).abs() < 1e-12);
        let s = ErrorStats::compare(&a, &[1.0, -2.0, 2.0]);
        assert!((s.max_abs - 1.0).abs() < 1e-12);
        assert!(s.cosine < 1.0 && s.cosine > 0.9);
    }
}
