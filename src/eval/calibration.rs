//! Calibration: making a model's confidence mean the same whatever the model kind.

/// The temperature T minimising the negative log-likelihood of softmax(logits / T) on labeled
/// rows (Guo et al., 2017), by golden-section search over log T in [1/100, 100]. `logits` holds
/// `classes` values per row. Returns 1 when there are no rows.
pub fn fit_temperature(logits: &[f32], classes: usize, y: &[usize]) -> f32 {
    // Labels are one-hot target distributions.
    let targets: Vec<f32> = y.iter().flat_map(|&y| (0..classes).map(move |c| f32::from(u8::from(c == y)))).collect();
    fit_temperature_to(logits, classes, &targets)
}

/// The temperature T minimising the cross-entropy between `targets` (a probability distribution
/// per row, `classes` values each) and softmax(logits / T): the T that makes one model's scores
/// look most like another's. Returns 1 when there are no rows.
pub fn fit_temperature_to(logits: &[f32], classes: usize, targets: &[f32]) -> f32 {
    if logits.is_empty() || classes == 0 {
        return 1.0;
    }
    search(|t| {
        logits
            .chunks_exact(classes)
            .zip(targets.chunks_exact(classes))
            .map(|(l, q)| {
                let (max, log_sum) = log_sum_exp(l, t);
                l.iter().zip(q).map(|(&x, &q)| f64::from(q * (log_sum - (x - max) / t))).sum::<f64>()
            })
            .sum()
    })
}

/// `probs` = softmax(`logits`), one row.
pub fn softmax(logits: &[f32], probs: &mut [f32]) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
    probs.iter_mut().zip(logits).for_each(|(p, l)| *p = (l - max).exp() / sum);
}

/// The row's largest logit and ln Σ exp((x − max) / t).
fn log_sum_exp(l: &[f32], t: f32) -> (f32, f32) {
    let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    (max, l.iter().map(|x| ((x - max) / t).exp()).sum::<f32>().ln())
}

/// Golden-section search of `loss(T)` over log T in [1/100, 100].
fn search(loss: impl Fn(f32) -> f64) -> f32 {
    let (mut lo, mut hi) = ((0.01f64).ln(), (100f64).ln());
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    let at = |log_t: f64| loss(log_t.exp() as f32);
    for _ in 0..60 {
        let (a, b) = (hi - ratio * (hi - lo), lo + ratio * (hi - lo));
        if at(a) < at(b) {
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

    #[test]
    fn a_temperature_fitted_to_target_distributions_reproduces_them() {
        // Logit gap 4 against targets 0.75 / 0.25: softmax(4 / T) = 0.75 at T = 4 / ln 3.
        let t = fit_temperature_to(&[4.0, 0.0, 0.0, 4.0], 2, &[0.75, 0.25, 0.25, 0.75]);
        assert!((t - 4.0 / 3f32.ln()).abs() < 0.01, "{t}");
        // Already alike: T stays near 1.
        let t = fit_temperature_to(&[2.0, 0.0], 2, &[0.880_797, 0.119_203]);
        assert!((t - 1.0).abs() < 0.01, "{t}");
        assert_eq!(fit_temperature_to(&[], 2, &[]), 1.0);
    }
}
