//! The sort family: `argmax` / `argmin`, `sort` / `argsort` and `topk` along one
//! axis.
//!
//! The backend computes indices only ([`Backend::arg_reduce`],
//! [`Backend::argsort`]); values are then taken with [`Tensor::gather`], so their
//! gradient is gather's (a `scatter_add` of `g` into the input's shape), which is
//! itself recorded and differentiable: sort and topk are twice differentiable.
//! Indices are i64 and never take part in differentiation.
//!
//! Order conventions follow PyTorch: sorting is stable (equal elements keep their
//! order, so ties go to the first index), NaN sorts above every number, and
//! `argmax` / `argmin` return the first NaN of a row that has one (NaN propagates
//! through max and min).
//!
//! [`Backend::arg_reduce`]: crate::Backend::arg_reduce
//! [`Backend::argsort`]: crate::Backend::argsort

use crate::backend::ReduceOp;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::shape::normalize_axis;
use crate::tensor::Tensor;

/// The axis of `op`, which must have at least one element.
fn nonempty_axis(op: &'static str, t: &Tensor, axis: isize) -> Result<usize> {
    let d = normalize_axis(op, axis, t.shape())?;
    if t.shape()[d] == 0 {
        return Err(Error::invalid(
            op,
            format!(
                "axis {axis} of shape {:?} is empty: there is no extreme to find",
                t.shape()
            ),
        ));
    }
    Ok(d)
}

impl Tensor {
    fn arg_extreme(&self, op: &'static str, which: ReduceOp, axis: isize, keepdim: bool) -> Result<Tensor> {
        let d = nonempty_axis(op, self, axis)?;
        let mut shape = self.shape().to_vec();
        shape[d] = 1;
        let s = self.storage();
        let out = self.device().backend().arg_reduce(which, &*s, self.layout(), d)?;
        let out = Tensor::from_storage(out, Layout::contiguous(&shape), self.device().clone());
        if keepdim {
            Ok(out)
        } else {
            out.squeeze(d as isize)
        }
    }

    /// Index (i64) of the largest element along `axis`: the first one on ties, the
    /// first NaN where a row has one (PyTorch). `keepdim` keeps `axis` with size 1.
    /// An empty axis is an error.
    pub fn argmax(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        self.arg_extreme("argmax", ReduceOp::Max, axis, keepdim)
    }

    /// Index (i64) of the smallest element along `axis`: the first one on ties, the
    /// first NaN where a row has one (PyTorch). `keepdim` keeps `axis` with size 1.
    /// An empty axis is an error.
    pub fn argmin(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        self.arg_extreme("argmin", ReduceOp::Min, axis, keepdim)
    }

    fn argsort_as(&self, op: &'static str, axis: isize, descending: bool) -> Result<(usize, Tensor)> {
        let d = normalize_axis(op, axis, self.shape())?;
        let s = self.storage();
        let out = self.device().backend().argsort(&*s, self.layout(), d, descending)?;
        Ok((
            d,
            Tensor::from_storage(out, Layout::contiguous(self.shape()), self.device().clone()),
        ))
    }

    /// The indices (i64, the input's shape) that sort `self` along `axis`: a stable
    /// sort, ascending or `descending`, with NaN above every number.
    pub fn argsort(&self, axis: isize, descending: bool) -> Result<Tensor> {
        Ok(self.argsort_as("argsort", axis, descending)?.1)
    }

    /// Sort along `axis` (stable; NaN above every number): returns `(values,
    /// indices)` with `values = self.gather(axis, indices)`. Values of a float input
    /// carry the gradient, scattered back to the positions they came from.
    pub fn sort(&self, axis: isize, descending: bool) -> Result<(Tensor, Tensor)> {
        let (d, ids) = self.argsort_as("sort", axis, descending)?;
        let values = self.take_along("sort", d, &ids)?;
        Ok((values, ids))
    }

    /// The `k` largest (`largest`) or smallest elements along `axis`, as `(values,
    /// indices)`, values with the gradient as in [`Tensor::sort`]. They are always
    /// returned in sorted order (largest first, or smallest first), ties by first
    /// index, so `sorted == false` (which in PyTorch allows any order) gives the same
    /// result. `k` larger than the axis is an error.
    pub fn topk(&self, k: usize, axis: isize, largest: bool, sorted: bool) -> Result<(Tensor, Tensor)> {
        const OP: &str = "topk";
        let _ = sorted;
        let d = normalize_axis(OP, axis, self.shape())?;
        let n = self.shape()[d];
        if k > n {
            return Err(Error::invalid(
                OP,
                format!(
                    "k = {k} is larger than size {n} of axis {axis} of shape {:?}",
                    self.shape()
                ),
            ));
        }
        let (_, order) = self.argsort_as(OP, axis, largest)?;
        let ids = order.narrow(d as isize, 0, k)?.contiguous()?;
        let values = self.take_along(OP, d, &ids)?;
        Ok((values, ids))
    }

    /// `self.gather(d, ids)` for floats (recorded, so the values carry the
    /// gradient); for i64, the backend's gather directly (integers have none).
    fn take_along(&self, op: &'static str, d: usize, ids: &Tensor) -> Result<Tensor> {
        if self.dtype().is_float() {
            return self.gather(d as isize, ids).map_err(|e| e.in_op(op));
        }
        let (s, si) = (self.storage(), ids.storage());
        let out = self
            .device()
            .backend()
            .gather(&*s, self.layout(), &*si, ids.layout(), d)?;
        Ok(Tensor::from_storage(
            out,
            Layout::contiguous(ids.shape()),
            self.device().clone(),
        ))
    }
}

/// Row algorithms on dense row-major data viewed as `[outer, n, inner]` (the axis
/// in the middle). [`crate::Backend`]'s default methods run them on host copies and
/// the CPU backend on its own memory, so both share one implementation.
pub mod rows {
    use crate::backend::ReduceOp;
    use std::cmp::Ordering;

    /// Total order with NaN above every number and equal to itself (PyTorch's sort
    /// order); the plain order for integers.
    #[inline]
    pub fn nan_last<T: PartialOrd>(a: &T, b: &T) -> Ordering {
        #[allow(clippy::eq_op)]
        let (an, bn) = (a != a, b != b);
        match (an, bn) {
            (false, false) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
        }
    }

    /// `[outer, n, inner]` of `shape` around `axis`.
    pub fn split(shape: &[usize], axis: usize) -> (usize, usize, usize) {
        let outer = shape[..axis].iter().product();
        let inner = shape[axis + 1..].iter().product();
        (outer, shape[axis], inner)
    }

    /// Index of the first maximum (`ReduceOp::Max`) or minimum (`ReduceOp::Min`)
    /// of each line, the first NaN where a line has one; output `[outer, inner]`.
    /// `n` must be at least 1.
    pub fn arg_reduce<T: PartialOrd + Copy>(
        op: ReduceOp,
        x: &[T],
        (outer, n, inner): (usize, usize, usize),
    ) -> Vec<i64> {
        let want = if op == ReduceOp::Max {
            Ordering::Greater
        } else {
            Ordering::Less
        };
        let mut out = vec![0i64; outer * inner];
        for o in 0..outer {
            for i in 0..inner {
                let at = |j: usize| x[(o * n + j) * inner + i];
                let mut best = 0;
                #[allow(clippy::eq_op)]
                let is_nan = |v: T| v != v;
                if !is_nan(at(0)) {
                    for j in 1..n {
                        let v = at(j);
                        if is_nan(v) {
                            best = j;
                            break;
                        }
                        if v.partial_cmp(&at(best)) == Some(want) {
                            best = j;
                        }
                    }
                }
                out[o * inner + i] = best as i64;
            }
        }
        out
    }

    /// Stable argsort of each line (ascending, or `descending`; NaN above every
    /// number); output `[outer, n, inner]`.
    pub fn argsort<T: PartialOrd + Copy>(
        x: &[T],
        (outer, n, inner): (usize, usize, usize),
        descending: bool,
    ) -> Vec<i64> {
        let mut out = vec![0i64; outer * n * inner];
        let mut idx: Vec<usize> = Vec::with_capacity(n);
        for o in 0..outer {
            for i in 0..inner {
                let at = |j: usize| x[(o * n + j) * inner + i];
                idx.clear();
                idx.extend(0..n);
                if descending {
                    idx.sort_by(|&a, &b| nan_last(&at(b), &at(a)));
                } else {
                    idx.sort_by(|&a, &b| nan_last(&at(a), &at(b)));
                }
                for (j, &k) in idx.iter().enumerate() {
                    out[(o * n + j) * inner + i] = k as i64;
                }
            }
        }
        out
    }
}
