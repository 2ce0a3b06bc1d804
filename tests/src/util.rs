//! Helpers shared by the suite: random inputs with controlled domains, strided
//! views of inputs, value comparisons and the counted gradient check.
//!
//! Inputs are drawn from the global seeded RNG (reseeded per test by the harness),
//! so failures reproduce exactly. Domains are chosen per op so that finite
//! differences never straddle a kink (abs, relu, max ties, clamp bounds) or leave
//! the domain (log, sqrt of positives).

use crate::reference::Nd;
use std::cell::Cell;
use unigrad_core::gradcheck::{gradcheck, gradgradcheck, GradcheckOptions};
use unigrad_core::{rng, DType, Device, Result, Tensor};

thread_local! {
    static GRADCHECKS: Cell<usize> = const { Cell::new(0) };
    static GRADGRADCHECKS: Cell<usize> = const { Cell::new(0) };
    static SECOND_ORDER: Cell<bool> = const { Cell::new(false) };
}

/// Reset this thread's counts of gradient and second-derivative checks (the harness
/// does it per test).
pub fn reset_gradcheck_count() {
    GRADCHECKS.with(|c| c.set(0));
    GRADGRADCHECKS.with(|c| c.set(0));
}

/// Second-derivative checks ([`gradgradcheck`]) run on this thread since the last reset.
pub fn gradgradcheck_count() -> usize {
    GRADGRADCHECKS.with(|c| c.get())
}

/// Run `f` (a suite function made of [`check_grad`] calls) with every case checked
/// to second order instead: inside it, [`check_grad_with`] runs [`gradgradcheck`]
/// (same tolerances) on the case rather than [`gradcheck`]. How the
/// `higher_order` group re-runs the first-order tables without copying them.
pub fn second_order<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            SECOND_ORDER.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(SECOND_ORDER.with(|c| c.replace(true)));
    f()
}

/// Gradient checks run on this thread since the last reset.
pub fn gradcheck_count() -> usize {
    GRADCHECKS.with(|c| c.get())
}

/// The suite's gradcheck tolerances: central differences with `eps = 1e-6` in f64,
/// `|analytic − numeric| ≤ 1e-7 + 1e-6·|numeric|` per element. Tight enough that a
/// gradient off by 0.1 % fails (see `autograd::gradcheck_catches_wrong_gradient`).
pub fn tight() -> GradcheckOptions {
    GradcheckOptions {
        eps: 1e-6,
        atol: 1e-7,
        rtol: 1e-6,
    }
}

/// Gradient-check `f` at `inputs` (f64) with [`tight`] tolerances; panics with the
/// report when it fails. Counts one case.
pub fn check_grad(name: &str, inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>) -> Result<()> {
    check_grad_with(name, inputs, &tight(), f)
}

/// [`check_grad`] with explicit options.
pub fn check_grad_with(
    name: &str,
    inputs: &[Tensor],
    opts: &GradcheckOptions,
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) -> Result<()> {
    let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
    if SECOND_ORDER.with(|c| c.get()) {
        GRADGRADCHECKS.with(|c| c.set(c.get() + 1));
        let report = gradgradcheck(f, inputs, opts)?;
        assert!(
            report.passed(),
            "gradgradcheck failed for {name} with input shapes {shapes:?} (last report entry: the upstream gradient): {report:?}"
        );
        return Ok(());
    }
    GRADCHECKS.with(|c| c.set(c.get() + 1));
    let report = gradcheck(f, inputs, opts)?;
    assert!(
        report.passed(),
        "gradcheck failed for {name} with input shapes {shapes:?}: {report:?}"
    );
    Ok(())
}

/// Standard normal f64 tensor.
pub fn randn(dev: &Device, shape: &[usize]) -> Result<Tensor> {
    Tensor::randn(shape, DType::F64, dev)
}

/// Uniform f64 tensor in `[lo, hi)`.
pub fn uniform(dev: &Device, shape: &[usize], lo: f64, hi: f64) -> Result<Tensor> {
    Tensor::rand_uniform(shape, lo, hi, DType::F64, dev)
}

/// f64 values with `|x|` uniform in `[lo, hi)` and a random sign: keeps every
/// element at least `lo` away from zero (the kink of abs / relu, the pole of recip).
pub fn signed_away(dev: &Device, shape: &[usize], lo: f64, hi: f64) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = rng::with_rng(|r| {
        (0..n)
            .map(|_| {
                let m = lo + (hi - lo) * r.uniform();
                if r.uniform() < 0.5 {
                    -m
                } else {
                    m
                }
            })
            .collect()
    });
    Tensor::from_f64s(&v, shape, DType::F64, dev)
}

/// f64 values that differ pairwise by at least `gap`: a random permutation of
/// `gap·(i − n/2)` plus jitter below `gap/4`. No ties, so max/min have one winner
/// and finite differences cannot swap it.
pub fn distinct(dev: &Device, shape: &[usize], gap: f64) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = rng::with_rng(|r| {
        let mut idx: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = r.below(i as u64 + 1) as usize;
            idx.swap(i, j);
        }
        idx.iter()
            .map(|&i| gap * (i as f64 - n as f64 / 2.0) + gap * 0.25 * r.uniform())
            .collect()
    });
    Tensor::from_f64s(&v, shape, DType::F64, dev)
}

/// Random i64 ids in `0..hi` of the given shape.
pub fn rand_ids(dev: &Device, shape: &[usize], hi: usize) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<i64> = rng::with_rng(|r| (0..n).map(|_| r.below(hi as u64) as i64).collect());
    Tensor::from_vec(v, shape, dev)
}

/// An i64 tensor from a slice.
pub fn ids(dev: &Device, v: &[i64], shape: &[usize]) -> Result<Tensor> {
    Tensor::from_vec(v.to_vec(), shape, dev)
}

/// A random shape of rank `rank` with dims in `1..=max_dim`, from the seeded RNG.
pub fn rand_shape(rank: usize, max_dim: usize) -> Vec<usize> {
    rng::with_rng(|r| (0..rank).map(|_| 1 + r.below(max_dim as u64) as usize).collect())
}

/// How a test operand is laid out in memory. Inputs to gradcheck are always dense
/// leaves, so a view is applied *inside* the checked function: the op then runs on
/// a strided operand and the gradient flows back through the view op as well.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// Dense row-major.
    Contig,
    /// The last two dims swapped (a transposed view); dense for rank < 2.
    Transposed,
    /// A slice of the last dim with an offset (strided rows); dense for rank 0.
    Narrowed,
    /// Dims in reversed order (a general permutation); dense for rank < 3.
    Reversed,
}

/// Every [`View`], for loops over layouts.
pub const VIEWS: [View; 4] = [View::Contig, View::Transposed, View::Narrowed, View::Reversed];

impl View {
    /// The shape of the dense leaf from which [`View::apply`] makes a `shape` view.
    pub fn leaf_shape(self, shape: &[usize]) -> Vec<usize> {
        let r = shape.len();
        let mut s = shape.to_vec();
        match self {
            View::Transposed if r >= 2 => s.swap(r - 2, r - 1),
            View::Narrowed if r >= 1 => s[r - 1] += 3,
            View::Reversed if r >= 3 => s.reverse(),
            _ => {}
        }
        s
    }

    /// The view of `leaf` (of shape `leaf_shape(shape)`) that has shape `shape`.
    pub fn apply(self, leaf: &Tensor, shape: &[usize]) -> Result<Tensor> {
        let r = shape.len();
        match self {
            View::Transposed if r >= 2 => leaf.transpose(-2, -1),
            View::Narrowed if r >= 1 => leaf.narrow(-1, 1, shape[r - 1]),
            View::Reversed if r >= 3 => {
                let perm: Vec<usize> = (0..r).rev().collect();
                leaf.permute(&perm)
            }
            _ => Ok(leaf.clone()),
        }
    }

    /// A view of `shape` over fresh data drawn by `gen` for the leaf shape.
    pub fn make(self, shape: &[usize], gen: impl FnOnce(&[usize]) -> Result<Tensor>) -> Result<Tensor> {
        let leaf = gen(&self.leaf_shape(shape))?;
        self.apply(&leaf, shape)
    }
}

/// Relative/absolute tolerance for comparing against a reference.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    /// Relative part.
    pub rtol: f64,
    /// Absolute part.
    pub atol: f64,
}

impl Tol {
    /// Tolerance for results computed in `dtype`: near round-off in f64, a few
    /// f32 ulps (amplified by accumulation) in f32.
    pub fn for_dtype(dtype: DType) -> Tol {
        match dtype {
            DType::F32 => Tol { rtol: 2e-5, atol: 2e-6 },
            _ => Tol {
                rtol: 1e-12,
                atol: 1e-13,
            },
        }
    }

    /// Scale both parts by `k` (for long accumulations).
    pub fn times(self, k: f64) -> Tol {
        Tol {
            rtol: self.rtol * k,
            atol: self.atol * k,
        }
    }
}

/// Assert that `got` matches `want` elementwise within `tol`; NaN matches NaN and
/// infinities must match exactly.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], tol: Tol) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} values, expected {}",
        got.len(),
        want.len()
    );
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() {
            g == w
        } else {
            (g - w).abs() <= tol.atol + tol.rtol * w.abs()
        };
        assert!(ok, "{what}: element {i} is {g}, expected {w} (tol {tol:?})");
    }
}

/// Assert that tensor `t` has the reference's shape and values within `tol`.
pub fn assert_nd(what: &str, t: &Tensor, want: &Nd, tol: Tol) -> Result<()> {
    assert_eq!(t.shape(), &want.shape[..], "{what}: shape");
    assert_close(what, &t.to_vec_f64()?, &want.data, tol);
    Ok(())
}

/// A tensor of `dtype` with exactly the (rounded) values of `nd`.
pub fn tensor_of(nd: &Nd, dtype: DType, dev: &Device) -> Result<Tensor> {
    Tensor::from_f64s(&nd.data, &nd.shape, dtype, dev)
}

/// True when two tensors share one storage allocation (one is a view of the other).
pub fn same_storage(a: &Tensor, b: &Tensor) -> bool {
    std::sync::Arc::ptr_eq(&a.storage(), &b.storage())
}
