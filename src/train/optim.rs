//! AdamW with decoupled weight decay and a linear warm-up / linear decay schedule, whose state can
//! be saved in a checkpoint and restored exactly (candle-nn's optimizer keeps its moments private).

use std::collections::HashMap;

use candle_core::{Tensor, Var};

use crate::error::Result;

/// Optimizer hyper-parameters.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWSettings {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWSettings {
    fn default() -> Self {
        Self { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

/// Linear warm-up to the peak rate, then linear decay to zero at `total_steps`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearSchedule {
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl LinearSchedule {
    /// Multiplier of the peak learning rate at `step` (0-based).
    pub fn factor(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            (step + 1) as f64 / self.warmup_steps as f64
        } else {
            let rest = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
            (1.0 - (step - self.warmup_steps) as f64 / rest).max(0.0)
        }
    }
}

struct Moments {
    m: Tensor,
    v: Tensor,
}

/// AdamW over named variables.
pub struct AdamW {
    vars: Vec<(String, Var)>,
    moments: Vec<Moments>,
    /// Per variable: its learning rate as a multiple of the peak rate.
    lr_scales: Vec<f64>,
    settings: AdamWSettings,
    /// Steps taken so far.
    pub step: usize,
}

impl AdamW {
    /// A fresh optimizer (zero moments).
    pub fn new(vars: Vec<(String, Var)>, settings: AdamWSettings) -> Result<Self> {
        let moments = vars
            .iter()
            .map(|(_, v)| Ok(Moments { m: v.as_tensor().zeros_like()?, v: v.as_tensor().zeros_like()? }))
            .collect::<Result<Vec<_>>>()?;
        let lr_scales = vec![1.0; vars.len()];
        Ok(Self { vars, moments, lr_scales, settings, step: 0 })
    }

    /// Sets each variable's learning rate to `scale(name)` × the peak rate.
    pub fn scale_lr(&mut self, scale: impl Fn(&str) -> f64) {
        self.lr_scales = self.vars.iter().map(|(name, _)| scale(name)).collect();
    }

    /// Gradients of this optimizer's variables, summed over several backward passes (data-parallel
    /// shards of one batch), in variable order.
    pub fn sum_gradients(&self, stores: &[candle_core::backprop::GradStore]) -> Result<Vec<Option<Tensor>>> {
        self.vars
            .iter()
            .map(|(_, var)| {
                let mut total: Option<Tensor> = None;
                for store in stores {
                    if let Some(g) = store.get(var.as_tensor()) {
                        total = Some(match total {
                            Some(t) => (t + g)?,
                            None => g.clone(),
                        });
                    }
                }
                Ok(total)
            })
            .collect()
    }

    /// One update with `lr_factor × lr` from gradients in variable order (see
    /// [`AdamW::sum_gradients`]); variables without a gradient are left alone.
    pub fn step(&mut self, grads: &[Option<Tensor>], lr_factor: f64) -> Result<()> {
        self.step += 1;
        let s = &self.settings;
        let t = self.step as i32;
        let (bc1, bc2) = (1.0 - s.beta1.powi(t), 1.0 - s.beta2.powi(t));
        for ((((_, var), mom), g), scale) in self.vars.iter().zip(&mut self.moments).zip(grads).zip(&self.lr_scales) {
            let Some(g) = g else {
                continue;
            };
            let lr = s.lr * lr_factor * scale;
            mom.m = ((&mom.m * s.beta1)? + (g * (1.0 - s.beta1))?)?;
            mom.v = ((&mom.v * s.beta2)? + (g.sqr()? * (1.0 - s.beta2))?)?;
            let m_hat = (&mom.m / bc1)?;
            let v_hat = (&mom.v / bc2)?;
            let update = (m_hat / (v_hat.sqrt()? + s.eps)?)?;
            let decayed = (var.as_tensor() * (1.0 - lr * s.weight_decay))?;
            var.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(())
    }

    /// Moments as named tensors (`m.<name>`, `v.<name>`) for a checkpoint.
    pub fn state(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for ((name, _), mom) in self.vars.iter().zip(&self.moments) {
            out.insert(format!("m.{name}"), mom.m.clone());
            out.insert(format!("v.{name}"), mom.v.clone());
        }
        out
    }

    /// Restores moments saved by [`AdamW::state`]; missing entries keep their zeros.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>, step: usize) {
        for ((name, _), mom) in self.vars.iter().zip(&mut self.moments) {
            if let (Some(m), Some(v)) = (state.get(&format!("m.{name}")), state.get(&format!("v.{name}"))) {
                mom.m = m.clone();
                mom.v = v.clone();
            }
        }
        self.step = step;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedule_warms_up_then_decays() {
        let s = LinearSchedule { warmup_steps: 10, total_steps: 110 };
        assert!((s.factor(0) - 0.1).abs() < 1e-12);
        assert!((s.factor(9) - 1.0).abs() < 1e-12);
        assert!((s.factor(60) - 0.5).abs() < 1e-12);
        assert_eq!(s.factor(200), 0.0);
    }

    #[test]
    fn minimises_a_quadratic() {
        let x = Var::from_tensor(&Tensor::new(&[3.0f32, -2.0], &Device::Cpu).unwrap()).unwrap();
        let mut opt = AdamW::new(
            vec![("x".into(), x.clone())],
            AdamWSettings { lr: 0.1, weight_decay: 0.0, ..Default::default() },
        )
        .unwrap();
        for _ in 0..300 {
            let loss = x.as_tensor().sqr().unwrap().sum_all().unwrap();
            let grads = opt.sum_gradients(&[loss.backward().unwrap()]).unwrap();
            opt.step(&grads, 1.0).unwrap();
        }
        let v = x.as_tensor().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|x| x.abs() < 0.05), "{v:?}");
    }

    #[test]
    fn each_variable_steps_at_its_own_scale_of_the_rate() {
        let var = |v: f32| Var::from_tensor(&Tensor::new(&[v], &Device::Cpu).unwrap()).unwrap();
        let (head, frozen, slow) = (var(1.0), var(1.0), var(1.0));
        let mut opt = AdamW::new(
            vec![("head".into(), head.clone()), ("frozen".into(), frozen.clone()), ("slow".into(), slow.clone())],
            AdamWSettings { lr: 0.1, weight_decay: 0.0, ..Default::default() },
        )
        .unwrap();
        opt.scale_lr(|name| match name {
            "frozen" => 0.0,
            "slow" => 0.1,
            _ => 1.0,
        });
        let loss = ((head.as_tensor() + frozen.as_tensor()).unwrap() + slow.as_tensor()).unwrap().sum_all().unwrap();
        let grads = opt.sum_gradients(&[loss.backward().unwrap()]).unwrap();
        opt.step(&grads, 1.0).unwrap();
        let value = |v: &Var| v.as_tensor().to_vec1::<f32>().unwrap()[0];
        // Adam's first step moves each by its rate (the normalised gradient is 1).
        assert!((value(&head) - 0.9).abs() < 1e-5, "{}", value(&head));
        assert_eq!(value(&frozen), 1.0);
        assert!((value(&slow) - 0.99).abs() < 1e-5, "{}", value(&slow));
    }
}
