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

/// Platt scaling shared by every class of a one-vs-rest model: the `(a, b)` minimising the
/// negative log-likelihood of sigmoid(a·score + b) against `positive` over every (row, class)
/// decision, with Platt's smoothed targets, by Newton's method with backtracking (Lin, Lin and Weng,
/// 2007). Returns `(1, 0)` without decisions of both kinds.
pub fn fit_platt(scores: &[f32], positive: &[bool]) -> (f32, f32) {
    let positives = positive.iter().filter(|&&p| p).count() as f64;
    let negatives = positive.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return (1.0, 0.0);
    }
    let (hi, lo) = ((positives + 1.0) / (positives + 2.0), 1.0 / (negatives + 2.0));
    let targets: Vec<f64> = positive.iter().map(|&p| if p { hi } else { lo }).collect();
    // ln(1 + e^z) without overflow.
    let softplus = |z: f64| if z > 0.0 { z + (-z).exp().ln_1p() } else { z.exp().ln_1p() };
    let loss = |a: f64, b: f64| -> f64 {
        scores.iter().zip(&targets).map(|(&s, &t)| softplus(a * f64::from(s) + b) - t * (a * f64::from(s) + b)).sum()
    };
    let (mut a, mut b) = (1.0f64, 0.0f64);
    let mut current = loss(a, b);
    for _ in 0..100 {
        // Gradient and Hessian of the loss in (a, b).
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 1e-12, 0.0, 1e-12);
        for (&s, &t) in scores.iter().zip(&targets) {
            let s = f64::from(s);
            let p = 1.0 / (1.0 + (-(a * s + b)).exp());
            let (g, h) = (p - t, p * (1.0 - p));
            ga += g * s;
            gb += g;
            haa += h * s * s;
            hab += h * s;
            hbb += h;
        }
        if ga.abs() < 1e-9 && gb.abs() < 1e-9 {
            break;
        }
        let det = haa * hbb - hab * hab;
        let (da, db) = (-(hbb * ga - hab * gb) / det, -(-hab * ga + haa * gb) / det);
        let mut step = 1.0;
        let improved = loop {
            let (na, nb) = (a + step * da, b + step * db);
            let next = loss(na, nb);
            if next < current + 1e-4 * step * (ga * da + gb * db) {
                (a, b, current) = (na, nb, next);
                break true;
            }
            step /= 2.0;
            if step < 1e-10 {
                break false;
            }
        };
        if !improved {
            break;
        }
    }
    (a as f32, b as f32)
}

/// Per-class probability thresholds that maximise each class's F1 on labeled rows (`probs`
/// row-major, `classes` per row; `truth` each row's classes): halfway between the lowest
/// probability kept at the best F1 and the next one below it, within [0.05, 0.95].
/// [`crate::serve::DEFAULT_LABEL_THRESHOLD`] for a class without positive rows.
pub fn tune_thresholds(probs: &[f32], classes: usize, truth: &[Vec<u32>]) -> Vec<f32> {
    (0..classes)
        .map(|c| {
            let mut scored: Vec<(f32, bool)> =
                truth.iter().enumerate().map(|(r, t)| (probs[r * classes + c], t.contains(&(c as u32)))).collect();
            let positives = scored.iter().filter(|s| s.1).count();
            if positives == 0 {
                return crate::serve::DEFAULT_LABEL_THRESHOLD;
            }
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
            let (mut tp, mut best, mut at) = (0usize, -1.0f64, 0usize);
            for (i, &(_, positive)) in scored.iter().enumerate() {
                tp += usize::from(positive);
                // Only between distinct probabilities can a threshold keep rows 0..=i.
                if scored.get(i + 1).is_some_and(|next| next.0 == scored[i].0) {
                    continue;
                }
                let f1 = 2.0 * tp as f64 / (i + 1 + positives) as f64;
                if f1 > best {
                    (best, at) = (f1, i);
                }
            }
            let below = scored.get(at + 1).map_or(0.0, |s| s.0);
            ((scored[at].0 + below) / 2.0).clamp(0.05, 0.95)
        })
        .collect()
}

/// A multi-label model's calibration on labeled rows (`scores`: its margins, `classes` per row;
/// `truth`: each row's classes): the Platt `(a, b)` shared by every class (`(1, 0)` unless
/// `calibrate`), and each class's threshold on sigmoid(a·score + b).
pub fn calibrate_label_sets(
    scores: &[f32],
    classes: usize,
    truth: &[Vec<u32>],
    calibrate: bool,
) -> ((f32, f32), Vec<f32>) {
    let positive: Vec<bool> = truth.iter().flat_map(|t| (0..classes).map(|k| t.contains(&(k as u32)))).collect();
    let (a, b) = if calibrate { fit_platt(scores, &positive) } else { (1.0, 0.0) };
    let probs: Vec<f32> = scores.iter().map(|&s| 1.0 / (1.0 + (-(a * s + b)).exp())).collect();
    ((a, b), tune_thresholds(&probs, classes, truth))
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
    fn platt_scaling_recovers_the_slope_and_offset_of_its_data() {
        // Decisions drawn as sigmoid(2s - 1) says: the fit comes back near (2, -1).
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let scores: Vec<f32> = (0..20_000).map(|_| rng.random_range(-3.0..3.0)).collect();
        let positive: Vec<bool> =
            scores.iter().map(|&s| rng.random::<f32>() < 1.0 / (1.0 + (-(2.0 * s - 1.0)).exp())).collect();
        let (a, b) = fit_platt(&scores, &positive);
        assert!((a - 2.0).abs() < 0.1 && (b + 1.0).abs() < 0.1, "a={a} b={b}");
        assert_eq!(fit_platt(&scores, &vec![true; scores.len()]), (1.0, 0.0));
    }

    #[test]
    fn thresholds_sit_between_the_classes_best_cut_and_the_next_row() {
        // Class 0: positives at 0.9 and 0.6, a negative at 0.7 and 0.2: best F1 keeps 0.9..0.6.
        // Class 1: no positives: the default.
        let probs = [0.9, 0.1, 0.7, 0.1, 0.6, 0.1, 0.2, 0.1];
        let truth = [vec![0], vec![], vec![0], vec![]];
        let t = tune_thresholds(&probs, 2, &truth);
        assert!((t[0] - 0.4).abs() < 1e-6, "{t:?}");
        assert_eq!(t[1], 0.5);
    }

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
