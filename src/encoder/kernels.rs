//! CPU kernels behind the training ops: matrix multiply and vectorisable `exp`/`erf` for GELU.
//!
//! [`matmul`] runs on OpenBLAS when its library is installed (`scripts/provision.sh` puts PyPI's
//! `scipy-openblas32` build in `.deps/lib`; `PRODCAT_BLAS_LIB` names another), which is about 2.5×
//! faster than the pure-Rust `gemm` crate on the machines we measured; otherwise it uses `gemm`
//! (the crate candle itself uses). The crate's only `unsafe` code lives here: both take raw
//! pointers and strides, so [`matmul`] checks every extent against the slices before calling.
#![allow(unsafe_code)]

use std::path::Path;
use std::sync::OnceLock;

use gemm::Parallelism;

/// `cblas_sgemm` (row/column order, transposes, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc).
type Sgemm =
    unsafe extern "C" fn(i32, i32, i32, i32, i32, i32, f32, *const f32, i32, *const f32, i32, f32, *mut f32, i32);
type SetThreads = unsafe extern "C" fn(i32);

const CBLAS_ROW_MAJOR: i32 = 101;
const CBLAS_NO_TRANS: i32 = 111;
const CBLAS_TRANS: i32 = 112;

struct Blas {
    _lib: libloading::Library,
    sgemm: Sgemm,
    set_threads: Option<SetThreads>,
    path: String,
}

static BLAS: OnceLock<Option<Blas>> = OnceLock::new();

fn load_blas() -> Option<Blas> {
    let explicit = std::env::var_os("PRODCAT_BLAS_LIB").filter(|v| !v.is_empty());
    if explicit.as_deref().is_some_and(|v| v == "none") {
        return None;
    }
    let path = match explicit {
        Some(p) => std::path::PathBuf::from(p),
        None => crate::runtime::find_in_deps("libscipy_openblas.so")?,
    };
    // SAFETY: loading a shared library runs its initialisers; this is OpenBLAS from our
    // provisioning (or the file the operator named), whose initialisers are benign.
    let lib = unsafe { libloading::Library::new(&path) }.ok()?;
    let symbol = |names: &[&[u8]]| -> Option<*const ()> {
        names.iter().find_map(|n| unsafe { lib.get::<*const ()>(*n) }.ok().map(|s| *s))
    };
    let sgemm = symbol(&[b"scipy_cblas_sgemm\0", b"cblas_sgemm\0"])?;
    let set_threads = symbol(&[b"scipy_openblas_set_num_threads\0", b"openblas_set_num_threads\0"]);
    // SAFETY: both symbols have the standard CBLAS / OpenBLAS C signatures named by the types.
    let sgemm: Sgemm = unsafe { std::mem::transmute::<*const (), Sgemm>(sgemm) };
    let set_threads: Option<SetThreads> =
        set_threads.map(|f| unsafe { std::mem::transmute::<*const (), SetThreads>(f) });
    Some(Blas { _lib: lib, sgemm, set_threads, path: path.display().to_string() })
}

fn blas() -> Option<&'static Blas> {
    BLAS.get_or_init(|| {
        let blas = load_blas();
        match &blas {
            Some(b) => tracing::debug!(library = %b.path, "matrix multiply on OpenBLAS"),
            None => tracing::debug!("OpenBLAS not found; matrix multiply on the gemm crate"),
        }
        blas
    })
    .as_ref()
}

/// Which implementation [`matmul`] uses in this process.
pub fn backend() -> &'static str {
    if blas().is_some() { "openblas" } else { "gemm" }
}

/// Sets the threads BLAS may use (the training thread budget); no-op on the `gemm` backend,
/// which follows the current rayon pool.
pub fn set_threads(threads: usize) {
    if let Some(f) = blas().and_then(|b| b.set_threads) {
        // SAFETY: plain C call with an integer argument.
        unsafe { f(threads.max(1) as i32) }
    }
}

/// Whether `path` holds a usable BLAS (for diagnostics).
pub fn blas_path() -> Option<&'static Path> {
    blas().map(|b| Path::new(b.path.as_str()))
}

/// A matrix operand in a slice: element `(row, col)` is at `row * row_stride + col * col_stride`.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major `rows × cols` matrix.
    pub fn row_major(data: &'a [f32], cols: usize) -> Self {
        Self { data, row_stride: cols, col_stride: 1 }
    }

    /// The transpose of a row-major `rows × cols` matrix (so `cols × rows`), without copying.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        Self { data, row_stride: 1, col_stride: cols }
    }

    /// CBLAS transpose flag and leading dimension (row-major), if the layout has one.
    fn cblas(&self) -> Option<(i32, i32)> {
        if self.col_stride == 1 {
            Some((CBLAS_NO_TRANS, i32::try_from(self.row_stride.max(1)).ok()?))
        } else if self.row_stride == 1 {
            Some((CBLAS_TRANS, i32::try_from(self.col_stride).ok()?))
        } else {
            None
        }
    }

    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.row_stride + (cols - 1) * self.col_stride < self.data.len()
    }
}

/// `out[m×n] (row-major) = (accumulate ? out : 0) + a[m×k] · b[k×n]`.
///
/// Panics if an operand is smaller than its shape says (a caller bug, never user data).
pub fn matmul(out: &mut [f32], m: usize, n: usize, k: usize, a: MatRef<'_>, b: MatRef<'_>, accumulate: bool) {
    assert!(out.len() >= m * n, "matmul: output holds {} < {m}×{n}", out.len());
    assert!(a.fits(m, k), "matmul: lhs too small for {m}×{k}");
    assert!(b.fits(k, n), "matmul: rhs too small for {k}×{n}");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            out[..m * n].fill(0.0);
        }
        return;
    }
    if let Some(blas) = blas() {
        if let (Some((trans_a, lda)), Some((trans_b, ldb))) = (a.cblas(), b.cblas()) {
            // SAFETY: as below; CBLAS reads A (m×k) and B (k×n) through the leading dimensions
            // derived from the same strides `fits` checked, and writes C (m×n, ldc = n).
            unsafe {
                (blas.sgemm)(
                    CBLAS_ROW_MAJOR,
                    trans_a,
                    trans_b,
                    m as i32,
                    n as i32,
                    k as i32,
                    1.0,
                    a.data.as_ptr(),
                    lda,
                    b.data.as_ptr(),
                    ldb,
                    if accumulate { 1.0 } else { 0.0 },
                    out.as_mut_ptr(),
                    n as i32,
                );
            }
            return;
        }
    }
    gemm_crate(out, m, n, k, a, b, accumulate);
}

/// The pure-Rust path (also the reference the BLAS path is tested against).
pub fn gemm_crate(out: &mut [f32], m: usize, n: usize, k: usize, a: MatRef<'_>, b: MatRef<'_>, accumulate: bool) {
    assert!(out.len() >= m * n && a.fits(m, k) && b.fits(k, n), "gemm_crate: operand too small");
    if m == 0 || n == 0 || k == 0 {
        if !accumulate {
            out[..m * n].fill(0.0);
        }
        return;
    }
    let threads = rayon::current_num_threads();
    // Tiny products are faster on one thread than the cost of waking the pool.
    let parallelism = if threads > 1 && m * n * k >= 1 << 18 { Parallelism::Rayon(threads) } else { Parallelism::None };
    // SAFETY: `fits` above proves every element gemm reads from `a`/`b` lies inside the slices,
    // and `out` holds `m×n` row-major elements; the slices are borrowed for the whole call and
    // `out` is exclusively borrowed, so nothing aliases the destination.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;

/// `e^x` with ~1 ulp-level relative error, branch-free so loops over it vectorise.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Round to nearest by adding and subtracting 1.5·2²³ (no libm call, so the loop vectorises).
    const ROUND: f32 = 12_582_912.0;
    let k = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = x - k * LN2_HI - k * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((k as i32 + 127) as u32) << 23)
}

/// `erf(x)` (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7), branch-free.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1/√(2π)
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// Exact-form GELU: `x·Φ(x) = 0.5·x·(1 + erf(x/√2))`.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2))
}

/// `d gelu(x) / dx = Φ(x) + x·φ(x)`.
#[inline(always)]
pub fn gelu_grad(x: f32) -> f32 {
    0.5 * (1.0 + erf(x * FRAC_1_SQRT_2)) + x * INV_SQRT_2PI * exp(-0.5 * x * x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_erf_are_accurate() {
        for i in -2000..=2000 {
            let x = i as f32 / 100.0;
            let e = exp(x);
            assert!(((e - x.exp()) / x.exp()).abs() < 2e-6, "exp({x}) = {e} vs {}", x.exp());
            let reference = libm_erf(x);
            assert!((erf(x) - reference).abs() < 3e-7, "erf({x}) = {} vs {reference}", erf(x));
        }
    }

    /// A slow, accurate reference: erf via a long series / continued fraction in f64.
    fn libm_erf(x: f32) -> f32 {
        let x = f64::from(x);
        if x.abs() < 3.0 {
            let (mut sum, mut term) = (x, x);
            for n in 1..200 {
                term *= -x * x / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            (sum * 2.0 / std::f64::consts::PI.sqrt()) as f32
        } else {
            // Asymptotic erfc for |x| ≥ 3 (relative error < 1e-4 of erfc, i.e. < 1e-8 absolute).
            let a = x.abs();
            let x2 = a * a;
            let erfc = (-x2).exp() / (a * std::f64::consts::PI.sqrt())
                * (1.0 - 1.0 / (2.0 * x2) + 3.0 / (4.0 * x2 * x2) - 15.0 / (8.0 * x2 * x2 * x2));
            (x.signum() * (1.0 - erfc)) as f32
        }
    }

    #[test]
    fn gelu_grad_matches_finite_differences() {
        for i in -60..=60 {
            let x = i as f32 / 10.0;
            let h = 1e-2;
            let numeric = (gelu(x + h) - gelu(x - h)) / (2.0 * h);
            assert!((numeric - gelu_grad(x)).abs() < 1e-3, "x={x}: {numeric} vs {}", gelu_grad(x));
        }
    }

    #[test]
    fn matmul_with_strides_and_accumulate() {
        // a: 2×3, b given as the transpose of a row-major 2×3 (so 3×2).
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let w = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0];
        let mut out = vec![10.0; 4];
        matmul(&mut out, 2, 2, 3, MatRef::row_major(&a, 3), MatRef::transposed(&w, 3), true);
        assert_eq!(out, vec![14.0, 12.0, 20.0, 15.0]);
        matmul(&mut out, 2, 2, 3, MatRef::row_major(&a, 3), MatRef::transposed(&w, 3), false);
        assert_eq!(out, vec![4.0, 2.0, 10.0, 5.0]);
    }

    #[test]
    fn active_backend_agrees_with_the_gemm_crate() {
        let (m, n, k) = (37, 29, 61);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5).collect();
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 104_729) % 89) as f32 / 89.0 - 0.5).collect();
        for (b, accumulate) in [(MatRef::transposed(&w, k), true), (MatRef::row_major(&w, n), false)] {
            let mut fast = vec![0.25f32; m * n];
            let mut reference = fast.clone();
            matmul(&mut fast, m, n, k, MatRef::row_major(&a, k), b, accumulate);
            gemm_crate(&mut reference, m, n, k, MatRef::row_major(&a, k), b, accumulate);
            let diff = fast.iter().zip(&reference).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(diff < 1e-4, "{} differs from gemm by {diff}", backend());
        }
    }
}
