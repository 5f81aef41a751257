//! Tensor operations for fine-tuning a frozen encoder on CPU, with backward passes that compute
//! only what LoRA training needs.
//!
//! candle's generic autograd computes a gradient for every input of every op, so a plain
//! `x.matmul(w)` with a frozen `w` still pays for `∂w` (as much work as the forward matmul), and
//! candle-nn's fast layer-norm and softmax kernels have no backward at all. These custom ops hold
//! the frozen parameters inside the op, so their backward returns only `∂x`.

use candle_core::{CpuStorage, CustomOp1, D, Layout, Result, Shape, Storage, Tensor, bail};
use rayon::prelude::*;

use super::kernels::{self, MatRef};

/// Rows per rayon task for the row-wise kernels below.
const ROWS_PER_TASK: usize = 64;

fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else { bail!("{op}: only f32 tensors are supported") };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: input must be contiguous"),
    }
}

/// Runs `f` on the f32 data of `t` (made contiguous first), without copying.
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(data)) = &*storage else { bail!("expected an f32 CPU tensor") };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(f(&data[start..end])),
        None => bail!("expected a contiguous tensor"),
    }
}

/// `y = x·Wᵀ + b` for a frozen `W` (`[out, in]`) and `b` (`[out]`).
#[derive(Debug, Clone)]
pub struct FrozenLinear {
    /// `[out, in]`, as stored in Hugging Face checkpoints.
    weight: Tensor,
    weight_data: std::sync::Arc<Vec<f32>>,
    bias: Tensor,
    bias_data: std::sync::Arc<Vec<f32>>,
    in_features: usize,
    out_features: usize,
}

impl FrozenLinear {
    /// Wraps a frozen dense layer.
    pub fn new(weight: Tensor, bias: Tensor) -> Result<Self> {
        let (out_features, in_features) = weight.dims2()?;
        let weight = weight.contiguous()?;
        let weight_data = std::sync::Arc::new(weight.flatten_all()?.to_vec1::<f32>()?);
        let bias_data = std::sync::Arc::new(bias.to_vec1::<f32>()?);
        if bias_data.len() != out_features {
            bail!("bias has {} values for {out_features} outputs", bias_data.len());
        }
        Ok(Self { weight, weight_data, bias, bias_data, in_features, out_features })
    }

    /// The weight, `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, `[out]`.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// Applies the layer to `x` (`[..., in]`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1(self.clone())
    }
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, self.name())?;
        let dims = layout.shape().dims();
        if dims.last() != Some(&self.in_features) {
            bail!("{}: input width {:?} is not {}", self.name(), dims.last(), self.in_features);
        }
        let rows = x.len() / self.in_features;
        // Start from the bias rows and accumulate x·Wᵀ onto them (one pass, no temporaries).
        let mut out: Vec<f32> = Vec::with_capacity(rows * self.out_features);
        for _ in 0..rows {
            out.extend_from_slice(&self.bias_data);
        }
        kernels::matmul(
            &mut out,
            rows,
            self.out_features,
            self.in_features,
            MatRef::row_major(x, self.in_features),
            MatRef::transposed(&self.weight_data, self.in_features),
            true,
        );
        let mut out_dims = dims.to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = self.out_features;
        }
        Ok((CpuStorage::F32(out), Shape::from(out_dims)))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let rows = grad_res.elem_count() / self.out_features;
        let mut dx = vec![0f32; rows * self.in_features];
        with_f32(grad_res, |g| {
            kernels::matmul(
                &mut dx,
                rows,
                self.in_features,
                self.out_features,
                MatRef::row_major(g, self.out_features),
                MatRef::row_major(&self.weight_data, self.in_features),
                false,
            )
        })?;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// Exact-form GELU with a backward pass (vectorised `erf`, rows split across threads).
#[derive(Debug, Clone, Copy)]
pub struct Gelu;

impl Gelu {
    /// Applies GELU elementwise.
    pub fn forward(x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1(Gelu)
    }
}

const ELEMS_PER_TASK: usize = 1 << 14;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, self.name())?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(ELEMS_PER_TASK).zip(x.par_chunks(ELEMS_PER_TASK)).for_each(|(o, x)| {
            for (o, &v) in o.iter_mut().zip(x) {
                *o = kernels::gelu(v);
            }
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let mut dx = vec![0f32; arg.elem_count()];
        with_f32(arg, |x| {
            with_f32(grad_res, |g| {
                dx.par_chunks_mut(ELEMS_PER_TASK)
                    .zip(x.par_chunks(ELEMS_PER_TASK).zip(g.par_chunks(ELEMS_PER_TASK)))
                    .for_each(|(d, (x, g))| {
                        for ((d, &x), &g) in d.iter_mut().zip(x).zip(g) {
                            *d = g * kernels::gelu_grad(x);
                        }
                    })
            })
        })??;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// Layer normalisation over the last dimension with frozen scale and shift.
#[derive(Debug, Clone)]
pub struct FrozenLayerNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

impl FrozenLayerNorm {
    /// Wraps frozen LayerNorm parameters.
    pub fn new(gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Self> {
        Ok(Self { gamma: gamma.to_vec1()?, beta: beta.to_vec1()?, eps: eps as f32 })
    }

    /// Normalises `x` (`[..., hidden]`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1(self.clone())
    }

    /// Mean and inverse standard deviation of one row.
    fn stats(&self, row: &[f32]) -> (f32, f32) {
        let n = row.len() as f32;
        let mean = row.iter().sum::<f32>() / n;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        (mean, 1.0 / (var + self.eps).sqrt())
    }
}

impl CustomOp1 for FrozenLayerNorm {
    fn name(&self) -> &'static str {
        "frozen-layer-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, self.name())?;
        let width = self.gamma.len();
        if x.len() % width != 0 {
            bail!("{}: last dimension is not {width}", self.name());
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(width * ROWS_PER_TASK).zip(x.par_chunks(width * ROWS_PER_TASK)).for_each(|(o, x)| {
            for (o, row) in o.chunks_mut(width).zip(x.chunks(width)) {
                let (mean, inv) = self.stats(row);
                for i in 0..width {
                    o[i] = (row[i] - mean) * inv * self.gamma[i] + self.beta[i];
                }
            }
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let mut dx = vec![0f32; arg.elem_count()];
        with_f32(arg, |x| with_f32(grad_res, |g| self.backward_rows(&mut dx, x, g)))??;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

impl FrozenLayerNorm {
    fn backward_rows(&self, dx: &mut [f32], x: &[f32], g: &[f32]) {
        let width = self.gamma.len();
        dx.par_chunks_mut(width * ROWS_PER_TASK)
            .zip(x.par_chunks(width * ROWS_PER_TASK).zip(g.par_chunks(width * ROWS_PER_TASK)))
            .for_each(|(dx, (x, g))| {
                let mut gy = vec![0f32; width];
                for ((dx, row), g) in dx.chunks_mut(width).zip(x.chunks(width)).zip(g.chunks(width)) {
                    let (mean, inv) = self.stats(row);
                    let (mut sum_gy, mut sum_gy_xhat) = (0f32, 0f32);
                    for i in 0..width {
                        gy[i] = g[i] * self.gamma[i];
                        sum_gy += gy[i];
                        sum_gy_xhat += gy[i] * (row[i] - mean) * inv;
                    }
                    let n = width as f32;
                    for i in 0..width {
                        let xhat = (row[i] - mean) * inv;
                        dx[i] = inv * (gy[i] - sum_gy / n - xhat * sum_gy_xhat / n);
                    }
                }
            });
    }
}

/// Softmax over the last dimension, with a backward pass.
#[derive(Debug, Clone, Copy)]
pub struct SoftmaxLastDim;

impl SoftmaxLastDim {
    /// Applies softmax over the last dimension of `x`.
    pub fn forward(x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1(SoftmaxLastDim)
    }
}

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "softmax-last-dim-bwd"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, self.name())?;
        let width = layout.shape().dims().last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(width * ROWS_PER_TASK).zip(x.par_chunks(width * ROWS_PER_TASK)).for_each(|(o, x)| {
            for (o, row) in o.chunks_mut(width).zip(x.chunks(width)) {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for (o, &v) in o.iter_mut().zip(row) {
                    *o = (v - max).exp();
                    sum += *o;
                }
                o.iter_mut().for_each(|v| *v /= sum);
            }
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        // ∂x = y ⊙ (g − Σ g⊙y)
        let dot = (grad_res * res)?.sum_keepdim(D::Minus1)?;
        Ok(Some((res * grad_res.broadcast_sub(&dot)?)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Compares custom-op gradients against candle's generic autograd on the same function.
    fn close(a: &Tensor, b: &Tensor, tol: f32) {
        let diff = (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < tol, "max diff {diff}");
    }

    fn input() -> Var {
        let data: Vec<f32> = (0..2 * 3 * 8).map(|i| ((i * 37 % 19) as f32 - 9.0) / 7.0).collect();
        Var::from_tensor(&Tensor::from_vec(data, (2, 3, 8), &Device::Cpu).unwrap()).unwrap()
    }

    #[test]
    fn frozen_linear_matches_generic_autograd() {
        let x = input();
        let w = Tensor::from_vec((0..5 * 8).map(|i| (i as f32 * 0.13).sin()).collect::<Vec<_>>(), (5, 8), &Device::Cpu)
            .unwrap();
        let b = Tensor::from_vec(vec![0.1f32, -0.2, 0.3, 0.0, 0.5], 5, &Device::Cpu).unwrap();
        let op = FrozenLinear::new(w.clone(), b.clone()).unwrap();
        let y = op.forward(x.as_tensor()).unwrap();
        let reference = x.as_tensor().broadcast_matmul(&w.t().unwrap()).unwrap().broadcast_add(&b).unwrap();
        close(&y, &reference, 1e-5);
        let g1 = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = reference.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        close(g1.get(x.as_tensor()).unwrap(), g2.get(x.as_tensor()).unwrap(), 1e-4);
    }

    #[test]
    fn layer_norm_matches_generic_autograd() {
        let x = input();
        let gamma =
            Tensor::from_vec((0..8).map(|i| 1.0 + i as f32 * 0.1).collect::<Vec<_>>(), 8, &Device::Cpu).unwrap();
        let beta = Tensor::from_vec((0..8).map(|i| i as f32 * -0.05).collect::<Vec<_>>(), 8, &Device::Cpu).unwrap();
        let op = FrozenLayerNorm::new(&gamma, &beta, 1e-12).unwrap();
        let y = op.forward(x.as_tensor()).unwrap();
        let reference = candle_nn::ops::layer_norm_slow(x.as_tensor(), &gamma, &beta, 1e-12).unwrap();
        close(&y, &reference, 1e-5);
        let weights =
            Tensor::from_vec((0..48).map(|i| (i as f32).cos()).collect::<Vec<_>>(), (2, 3, 8), &Device::Cpu).unwrap();
        let g1 = (y * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (reference * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        close(g1.get(x.as_tensor()).unwrap(), g2.get(x.as_tensor()).unwrap(), 1e-4);
    }

    #[test]
    fn softmax_matches_generic_autograd() {
        let x = input();
        let y = SoftmaxLastDim::forward(x.as_tensor()).unwrap();
        let reference = candle_nn::ops::softmax(x.as_tensor(), D::Minus1).unwrap();
        close(&y, &reference, 1e-6);
        let weights =
            Tensor::from_vec((0..48).map(|i| (i as f32 * 0.7).sin()).collect::<Vec<_>>(), (2, 3, 8), &Device::Cpu)
                .unwrap();
        let g1 = (y * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (reference * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        close(g1.get(x.as_tensor()).unwrap(), g2.get(x.as_tensor()).unwrap(), 1e-5);
    }

    #[test]
    fn gelu_matches_generic_autograd() {
        let x = input();
        let y = Gelu::forward(x.as_tensor()).unwrap();
        let reference = x.as_tensor().gelu_erf().unwrap();
        close(&y, &reference, 1e-5);
        let g1 = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = reference.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        close(g1.get(x.as_tensor()).unwrap(), g2.get(x.as_tensor()).unwrap(), 1e-4);
    }
}
