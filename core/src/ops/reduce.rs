//! Reductions over axes: sum, mean, max, min, variance, and `sum_to` (the
//! adjoint of broadcasting, used by every broadcasting op's backward).
//!
//! Every reduction taking `axes` follows PyTorch's `dim=[]`: an empty list reduces
//! over *all* dimensions (not over none), so `x.sum(&[], false)` equals `x.sum_all()`.

use super::check_float;
use crate::autograd::record;
use crate::backend::{BinaryOp, ReduceOp};
use crate::error::{in_op, Error, Result};
use crate::layout::Layout;
use crate::shape::{normalize_axes, numel, reduced_shape};
use crate::tensor::Tensor;

impl Tensor {
    /// Backend reduction keeping dims, without recording.
    pub(crate) fn reduce_raw(&self, op: ReduceOp, axes: &[usize]) -> Result<Tensor> {
        let s = self.storage();
        let out = self.device().backend().reduce(op, &*s, self.layout(), axes)?;
        let shape = reduced_shape(self.shape(), axes, true);
        Ok(Tensor::from_storage(
            out,
            Layout::contiguous(&shape),
            self.device().clone(),
        ))
    }

    fn finish_keepdim(t: Tensor, in_shape: &[usize], axes: &[usize], keepdim: bool) -> Result<Tensor> {
        if keepdim {
            Ok(t)
        } else {
            t.reshape(&reduced_shape(in_shape, axes, false))
        }
    }

    /// Sum over `axes` (negative axes count from the end; empty: every axis). An
    /// empty axis sums to 0.
    pub fn sum(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        check_float("sum", self)?;
        let ax = reduction_axes("sum", axes, self.shape())?;
        let out = self.reduce_raw(ReduceOp::Sum, &ax)?;
        let in_shape = self.shape().to_vec();
        let out = record(
            "sum",
            out,
            &[self],
            Box::new(move |g| Ok(vec![Some(g.broadcast_as(&in_shape)?)])),
        )?;
        Tensor::finish_keepdim(out, self.shape(), &ax, keepdim)
    }

    /// Sum of every element (a scalar).
    pub fn sum_all(&self) -> Result<Tensor> {
        in_op("sum_all", || self.sum(&[], false))
    }

    /// Mean over `axes` (empty: every axis). The mean over an empty axis is NaN
    /// (0/0), as in PyTorch.
    pub fn mean(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        in_op("mean", || {
            check_float("mean", self)?;
            let ax = reduction_axes("mean", axes, self.shape())?;
            let n: usize = ax.iter().map(|&a| self.shape()[a]).product();
            // n = 0: the sum is 0 and 0·∞ is NaN
            self.sum(axes, keepdim)?.mul_scalar(1.0 / n as f64)
        })
    }

    /// Mean of every element (a scalar); NaN for an empty tensor, as in PyTorch.
    pub fn mean_all(&self) -> Result<Tensor> {
        in_op("mean_all", || self.mean(&[], false))
    }

    /// Variance over `axes` (empty: every axis); `unbiased` divides by `n − 1`.
    /// Fewer than 1 (biased) or 2 (unbiased) elements per output is an error
    /// (PyTorch returns NaN with a warning).
    pub fn var(&self, axes: &[isize], keepdim: bool, unbiased: bool) -> Result<Tensor> {
        check_float("var", self)?;
        let ax = reduction_axes("var", axes, self.shape())?;
        let n: usize = ax.iter().map(|&a| self.shape()[a]).product();
        let denom = if unbiased { n as f64 - 1.0 } else { n as f64 };
        if denom <= 0.0 {
            return Err(Error::invalid(
                "var",
                format!(
                    "cannot take the variance of {n} element(s) over axes {axes:?} of shape {:?}",
                    self.shape()
                ),
            ));
        }
        in_op("var", || {
            let mu = self.mean(axes, true)?;
            self.sub(&mu)?.sqr()?.sum(axes, keepdim)?.mul_scalar(1.0 / denom)
        })
    }

    fn extremum(&self, op: ReduceOp, name: &'static str, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        check_float(name, self)?;
        let ax = reduction_axes(name, axes, self.shape())?;
        if ax.iter().any(|&a| self.shape()[a] == 0) {
            return Err(Error::invalid(
                name,
                format!("reduction over an empty axis of shape {:?}", self.shape()),
            ));
        }
        let out = self.reduce_raw(op, &ax)?;
        let x = self.detach();
        let y = out.detach();
        let kept = ax.clone();
        let out = record(
            name,
            out,
            &[self],
            Box::new(move |g| {
                // gradient split evenly between tied extrema
                let hit = x.zip_raw(BinaryOp::Eq, name, &y)?;
                let count = hit.reduce_raw(ReduceOp::Sum, &kept)?;
                Ok(vec![Some(hit.mul(&g.div(&count)?)?)])
            }),
        )?;
        Tensor::finish_keepdim(out, self.shape(), &ax, keepdim)
    }

    /// Maximum over `axes` (empty: every axis). Tied maxima share the gradient
    /// equally (PyTorch's `amax`); a reduction over an empty axis is an error.
    pub fn max(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        self.extremum(ReduceOp::Max, "max", axes, keepdim)
    }

    /// Minimum over `axes` (empty: every axis). Tied minima share the gradient
    /// equally (PyTorch's `amin`); a reduction over an empty axis is an error.
    pub fn min(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        self.extremum(ReduceOp::Min, "min", axes, keepdim)
    }

    /// Sum a broadcast result back down to `shape` (the adjoint of broadcasting).
    pub fn sum_to(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let r = self.rank();
        if shape.len() > r || Layout::contiguous(shape).broadcast_to(self.shape()).is_none() {
            return Err(Error::ShapeMismatch {
                op: "sum_to",
                lhs: self.shape().to_vec(),
                rhs: shape.to_vec(),
            });
        }
        let extra = r - shape.len();
        let axes: Vec<isize> = (0..r)
            .filter(|&i| i < extra || (shape[i - extra] == 1 && self.shape()[i] != 1))
            .map(|i| i as isize)
            .collect();
        if axes.is_empty() {
            // same element count, only size-1 axes differ: `sum(&[])` would reduce all
            return self.reshape(shape);
        }
        let s = self.sum(&axes, true)?;
        if numel(shape) == s.numel() {
            s.reshape(shape)
        } else {
            Err(Error::ShapeMismatch {
                op: "sum_to",
                lhs: self.shape().to_vec(),
                rhs: shape.to_vec(),
            })
        }
    }
}

/// The axes a reduction runs over: `axes` normalised and sorted, or, for an empty
/// list, every axis (PyTorch's `dim=[]`).
fn reduction_axes(op: &'static str, axes: &[isize], shape: &[usize]) -> Result<Vec<usize>> {
    if axes.is_empty() {
        Ok((0..shape.len()).collect())
    } else {
        normalize_axes(op, axes, shape)
    }
}
