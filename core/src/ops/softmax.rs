//! The softmax family: softmax and log-softmax over any axis (one fused backend
//! kernel per direction, [`Backend::softmax_last`] and friends), cross-entropy, which
//! is composed from `log_softmax` and `gather`, and [`softmax_last_backward`], the
//! fused backward as a plain function for custom ops (attention's hand-written
//! backward uses it).
//!
//! [`Backend::softmax_last`]: crate::Backend::softmax_last

use super::view::dense;
use super::{check_float, check_index};
use crate::autograd::record;
use crate::error::{in_op, Error, Result};
use crate::layout::Layout;
use crate::shape::normalize_axis;
use crate::tensor::Tensor;

impl Tensor {
    /// Move `dim` to the end as a permuted view (no copy: the fused softmax kernels
    /// take any strided layout and reduce over its last axis). Returns the view and
    /// the permutation used.
    fn to_last(&self, dim: usize) -> Result<(Tensor, Option<Vec<usize>>)> {
        let r = self.rank();
        if dim == r - 1 {
            return Ok((self.clone(), None));
        }
        let mut perm: Vec<usize> = (0..r).filter(|&i| i != dim).collect();
        perm.push(dim);
        Ok((self.permute(&perm)?, Some(perm)))
    }

    fn from_last(t: Tensor, perm: Option<Vec<usize>>) -> Result<Tensor> {
        match perm {
            None => Ok(t),
            Some(p) => {
                let mut inv = vec![0; p.len()];
                for (i, &x) in p.iter().enumerate() {
                    inv[x] = i;
                }
                t.permute(&inv)
            }
        }
    }

    fn softmax_impl(&self, dim: isize, log: bool) -> Result<Tensor> {
        let name = if log { "log_softmax" } else { "softmax" };
        check_float(name, self)?;
        let d = normalize_axis(name, dim, self.shape())?;
        let (x, perm) = self.to_last(d)?;
        let b = x.device().backend();
        let s = x.storage();
        let out = if log {
            b.log_softmax_last(&*s, x.layout())?
        } else {
            b.softmax_last(&*s, x.layout())?
        };
        let out = Tensor::from_storage(out, Layout::contiguous(x.shape()), x.device().clone());
        let y = out.detach();
        let x_in = x.clone();
        let out = record(
            name,
            out,
            &[&x],
            Box::new(move |g| {
                if crate::autograd::is_grad_enabled() {
                    // create_graph: the composed form, differentiable through the
                    // softmax recomputed from the attached input
                    let p = x_in.softmax(-1)?;
                    let dx = if log {
                        g.sub(&p.mul(&g.sum(&[-1], true)?)?)?
                    } else {
                        p.mul(&g.sub(&g.mul(&p)?.sum(&[-1], true)?)?)?
                    };
                    return Ok(vec![Some(dx)]);
                }
                // dense, not `contiguous()`: the kernel reads the storage from element 0
                let g = crate::ops::view::dense(g)?;
                let b = g.device().backend();
                let (sy, sg) = (y.storage(), g.storage());
                let dx = if log {
                    b.log_softmax_last_backward(&*sy, &*sg, y.shape())?
                } else {
                    b.softmax_last_backward(&*sy, &*sg, y.shape())?
                };
                Ok(vec![Some(Tensor::from_storage(
                    dx,
                    Layout::contiguous(y.shape()),
                    g.device().clone(),
                ))])
            }),
        )?;
        Tensor::from_last(out, perm)
    }

    /// Softmax along `dim`, numerically stable, one fused kernel each way (a
    /// recorded backward, under `create_graph`, uses the composed form instead).
    pub fn softmax(&self, dim: isize) -> Result<Tensor> {
        self.softmax_impl(dim, false)
    }

    /// Log-softmax along `dim`, numerically stable, one fused kernel each way:
    /// `(x − max) − ln Σ exp(x − max)`, so small log-probabilities keep their
    /// precision however large the logits (PyTorch's order of operations).
    pub fn log_softmax(&self, dim: isize) -> Result<Tensor> {
        self.softmax_impl(dim, true)
    }

    /// Mean cross-entropy of `self` (logits `[N, C]`) against class `targets`
    /// (`[N]`, i64). Targets equal to `ignore_index` contribute nothing and are not
    /// counted; `label_smoothing` mixes the one-hot target with the uniform
    /// distribution as in PyTorch. Returns a scalar.
    ///
    /// **Differs from PyTorch:** when every target is ignored (or `N = 0`) the loss
    /// is 0 with zero gradients (also over zero classes, where every target must be
    /// ignored), where PyTorch returns NaN (0/0): a batch made only
    /// of padding then leaves the model unchanged instead of poisoning it.
    pub fn cross_entropy(&self, targets: &Tensor, ignore_index: Option<i64>, label_smoothing: f64) -> Result<Tensor> {
        const OP: &str = "cross_entropy";
        check_float(OP, self)?;
        check_index(OP, targets)?;
        if self.rank() != 2 || targets.rank() != 1 || targets.shape()[0] != self.shape()[0] {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: self.shape().to_vec(),
                rhs: targets.shape().to_vec(),
            });
        }
        if !(0.0..=1.0).contains(&label_smoothing) {
            return Err(Error::invalid(
                OP,
                format!("label_smoothing {label_smoothing} is not in [0, 1]"),
            ));
        }
        let (n, c) = (self.shape()[0], self.shape()[1]);
        let t = targets.to_vec::<i64>()?;
        let mut valid = vec![0.0; n];
        let mut safe = vec![0i64; n];
        for (i, &ti) in t.iter().enumerate() {
            if Some(ti) == ignore_index {
                continue;
            }
            if ti < 0 || ti as usize >= c {
                return Err(Error::IndexOutOfRange {
                    op: OP,
                    index: ti,
                    size: c,
                    shape: self.shape().to_vec(),
                });
            }
            valid[i] = 1.0;
            safe[i] = ti;
        }
        if c == 0 {
            // no class: every target was ignored (any other is out of range above), so
            // this is the all-ignored loss 0, as the empty sum of the logits (recorded,
            // zero gradient); the gather below would have no column 0 to read
            return in_op(OP, || self.sum_all());
        }
        let count: f64 = valid.iter().sum();
        in_op(OP, || self.cross_entropy_rows(&valid, safe, count, label_smoothing))
    }

    /// The loss of [`Tensor::cross_entropy`] from validated targets: `valid` marks
    /// the counted rows, `safe` holds their class ids (0 where ignored).
    fn cross_entropy_rows(&self, valid: &[f64], safe: Vec<i64>, count: f64, label_smoothing: f64) -> Result<Tensor> {
        let n = valid.len();
        let dev = self.device();
        let valid = Tensor::from_f64s(valid, &[n, 1], self.dtype(), dev)?;
        let ids = Tensor::from_vec(safe, &[n, 1], dev)?;
        let logp = self.log_softmax(-1)?;
        let nll = logp.gather(1, &ids)?.neg()?;
        let per_row = if label_smoothing > 0.0 {
            let smooth = logp.mean(&[-1], true)?.neg()?;
            nll.mul_scalar(1.0 - label_smoothing)?
                .add(&smooth.mul_scalar(label_smoothing)?)?
        } else {
            nll
        };
        // mean over valid rows; with no valid row the loss is 0 (PyTorch gives NaN)
        per_row.mul(&valid)?.sum_all()?.mul_scalar(1.0 / count.max(1.0))
    }
}

/// `dx = y ⊙ (dy − Σ dy ⊙ y)` over the last axis, in one backend call
/// ([`Backend::softmax_last_backward`](crate::Backend::softmax_last_backward)): the
/// softmax backward from its output `y` and upstream gradient `dy` (same shape). Records
/// nothing; for custom ops whose backward is written by hand.
pub fn softmax_last_backward(y: &Tensor, dy: &Tensor) -> Result<Tensor> {
    const OP: &str = "softmax_last_backward";
    if y.shape() != dy.shape() {
        return Err(Error::ShapeMismatch {
            op: OP,
            lhs: y.shape().to_vec(),
            rhs: dy.shape().to_vec(),
        });
    }
    if y.rank() == 0 {
        return Err(Error::invalid(OP, "needs a tensor of rank >= 1"));
    }
    check_float(OP, y)?;
    crate::tensor::check_same_kind(OP, y, dy)?;
    let (y, dy) = (dense(y)?, dense(dy)?);
    let dev = y.device();
    let (sy, sg) = (y.storage(), dy.storage());
    let dx = dev.backend().softmax_last_backward(&*sy, &*sg, y.shape())?;
    Tensor::from_backend_storage(dx, y.shape(), dev)
}
