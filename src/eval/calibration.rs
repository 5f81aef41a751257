//! Calibration: making a model's confidence mean the same whatever the model kind.

/// The temperature T minimising the negative log-likelihood of softmax(logits / T) on labeled
/// rows (Guo et al., 2017), by golden-section search over log T in [1/100, 100]. `logits` holds
/// `classes` values per row. Returns 1 when there are no rows.
pub fn fit_temperature(logits: &[f32], classes: usize, y: &[usize]) -> f32 {
    if y.is_empty() || classes == 0 {
        return 1.0;
    }
    let nll = |log_t: f64| -> f64 {
        let t = log_t.exp() as f32;
        logits
            .chunks_exact(classes)
            .zip(y)
            .map(|(l, &y)| {
                let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = l.iter().map(|x| ((x - max) / t).exp()).sum();
                f64::from(sum.ln() - (l[y] - max) / t)
            })
            .sum()
    };
    let (mut lo, mut hi) = ((0.01f64).ln(), (100f64).ln());
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..60 {
        let (a, b) = (hi - ratio * (hi - lo), lo + ratio * (hi - lo));
        if nll(a) < nll(b) {
            hi = b;
        } else {
            lo = a;
        }
    }
    ((lo + hi) / 2.0).exp() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overconfident_logits_get_a_temperature_above_one() {
        // Right 3 times in 4 with logit gap 10: far too sure, so T must soften it.
        let logits = [10.0, 0.0, 10.0, 0.0, 10.0, 0.0, 10.0, 0.0];
        let t = fit_temperature(&logits, 2, &[0, 0, 0, 1]);
        // The optimum sets softmax to p = 0.75: 10 / T = ln 3.
        assert!((t - 10.0 / 3f32.ln()).abs() < 0.01, "{t}");
        // Under-confident logits (always right, gap 0.1) get T below one.
        assert!(fit_temperature(&[0.1, 0.0, 0.1, 0.0], 2, &[0, 0]) < 0.05);
        assert_eq!(fit_temperature(&[], 2, &[]), 1.0);
    }
}
