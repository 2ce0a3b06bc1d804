//! Thin wrappers that call a backend's fused kernels from inside custom ops.
//!
//! The backend trait exposes fused kernels (row moments, softmax backward) with
//! composed defaults, so these wrappers work on every device; a backend that
//! overrides them (the CPU one does) runs one pass instead of several. They record
//! nothing: callers use them inside `CustomOp::forward` / `backward`, whose
//! gradients are written by hand.

use unigrad_core::{Error, Result, Tensor, UnaryOp};

/// Shape with the last dimension replaced by 1.
fn stat_shape(shape: &[usize]) -> Vec<usize> {
    let mut s = shape.to_vec();
    if let Some(l) = s.last_mut() {
        *l = 1;
    }
    s
}

/// Mean and biased variance over the last axis, each `[.., 1]` (no gradient).
pub fn moments_last(x: &Tensor) -> Result<(Tensor, Tensor)> {
    if x.rank() == 0 {
        return Err(Error::invalid("moments_last", "needs a tensor of rank >= 1"));
    }
    let dev = x.device();
    let s = x.storage();
    let (m, v) = dev.backend().moments_last(&*s, x.layout())?;
    let shape = stat_shape(x.shape());
    Ok((
        Tensor::from_backend_storage(m, &shape, dev)?,
        Tensor::from_backend_storage(v, &shape, dev)?,
    ))
}

/// `dx = y ⊙ (dy − Σ dy ⊙ y)` over the last axis: the softmax backward, one kernel.
pub fn softmax_last_backward(y: &Tensor, dy: &Tensor) -> Result<Tensor> {
    if y.shape() != dy.shape() {
        return Err(Error::ShapeMismatch {
            op: "softmax_last_backward",
            lhs: y.shape().to_vec(),
            rhs: dy.shape().to_vec(),
        });
    }
    let (y, dy) = (dense(y)?, dense(dy)?);
    let dev = y.device();
    let (sy, sg) = (y.storage(), dy.storage());
    let dx = dev.backend().softmax_last_backward(&*sy, &*sg, y.shape())?;
    Tensor::from_backend_storage(dx, y.shape(), dev)
}

/// `t` itself when its storage is exactly its dense elements, else a dense copy
/// (what kernels that take bare storage need).
fn dense(t: &Tensor) -> Result<Tensor> {
    if t.is_contiguous() && t.layout().offset() == 0 && t.storage().len() == t.numel() {
        Ok(t.clone())
    } else {
        // `contiguous` alone keeps a dense view with an offset; force a fresh copy
        let c = t.contiguous()?;
        if c.layout().offset() == 0 && c.storage().len() == c.numel() {
            Ok(c)
        } else {
            c.affine(1.0, 0.0)
        }
    }
}

/// Apply a backend unary map (including the derivative maps such as
/// [`UnaryOp::GeluErfGrad`] that have no tensor op of their own), without recording.
pub fn unary(x: &Tensor, op: UnaryOp) -> Result<Tensor> {
    let dev = x.device();
    let s = x.storage();
    let out = dev.backend().unary(op, &*s, x.layout())?;
    Tensor::from_backend_storage(out, x.shape(), dev)
}
