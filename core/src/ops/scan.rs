//! The scan family: `cumsum` along one axis.
//!
//! One backend method ([`Backend::cumsum`]) computes prefix sums or, reversed,
//! suffix sums. They are each other's adjoint, so the backward of a cumsum is a
//! reversed cumsum of `g`, recorded like any op: the gradient is itself
//! differentiable, to any order.
//!
//! [`Backend::cumsum`]: crate::Backend::cumsum

use super::check_float;
use crate::autograd::record;
use crate::dtype::DType;
use crate::error::Result;
use crate::layout::Layout;
use crate::shape::normalize_axis;
use crate::tensor::Tensor;

impl Tensor {
    /// Inclusive prefix sums along `axis` (`out[i] = Σ_{j ≤ i} x[j]`), for f32, f64
    /// and i64 (same dtype out; i64 wraps on overflow). The gradient (floats) is the reversed prefix sum of
    /// `g`: `dx[j] = Σ_{i ≥ j} g[i]`.
    pub fn cumsum(&self, axis: isize) -> Result<Tensor> {
        const OP: &str = "cumsum";
        if self.dtype() != DType::I64 {
            check_float(OP, self)?;
        }
        let d = normalize_axis(OP, axis, self.shape())?;
        self.scan_sum(OP, d, false)
    }

    /// Prefix (`reverse == false`) or suffix sums along axis `d`, recorded with the
    /// opposite direction as backward.
    fn scan_sum(&self, op: &'static str, d: usize, reverse: bool) -> Result<Tensor> {
        let s = self.storage();
        let out = self.device().backend().cumsum(&*s, self.layout(), d, reverse)?;
        let out = Tensor::from_storage(out, Layout::contiguous(self.shape()), self.device().clone());
        record(
            op,
            out,
            &[self],
            Box::new(move |g| Ok(vec![Some(g.scan_sum("cumsum_backward", d, !reverse)?)])),
        )
    }
}

/// Prefix and suffix sums of dense row-major data viewed as `[outer, n, inner]`,
/// shared by [`crate::Backend::cumsum`]'s default (on a host copy) and the CPU
/// backend.
pub mod rows {
    /// Element types a scan adds: floats as usual, i64 wrapping on overflow (as
    /// PyTorch does) instead of panicking.
    pub trait Summand: Copy {
        /// `self + other`.
        fn plus(self, other: Self) -> Self;
    }
    impl Summand for f32 {
        fn plus(self, o: f32) -> f32 {
            self + o
        }
    }
    impl Summand for f64 {
        fn plus(self, o: f64) -> f64 {
            self + o
        }
    }
    impl Summand for i64 {
        fn plus(self, o: i64) -> i64 {
            self.wrapping_add(o)
        }
    }

    /// Inclusive prefix sums of each line (suffix sums when `reverse`), summed in
    /// order from the line's start (or end).
    pub fn cumsum<T: Summand>(x: &[T], (outer, n, inner): (usize, usize, usize), reverse: bool) -> Vec<T> {
        let mut out = x.to_vec();
        for o in 0..outer {
            let base = o * n * inner;
            for j in 1..n {
                let (cur, prev) = if reverse { (n - 1 - j, n - j) } else { (j, j - 1) };
                for i in 0..inner {
                    out[base + cur * inner + i] = out[base + prev * inner + i].plus(out[base + cur * inner + i]);
                }
            }
        }
        out
    }
}
