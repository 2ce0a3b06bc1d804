//! Thin wrappers that call a backend's fused kernels from inside custom ops.
//!
//! The backend trait exposes fused kernels (row moments, softmax backward, LayerNorm /
//! RMSNorm forward and backward, the Adam update) with composed defaults, so these wrappers work on every device; a backend that
//! overrides them (the CPU one does) runs one pass instead of several. They record
//! nothing: callers use them inside `CustomOp::forward` / `backward`, whose
//! gradients are written by hand.

use unigrad_core::tensor::{check_same_kind, check_same_meta};
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
/// (what kernels that take bare storage need). Callers that keep an input for the
/// backward keep this result, so a strided input is copied once, not per direction.
pub fn dense(t: &Tensor) -> Result<Tensor> {
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

/// Rows and row length of `x` seen as `[rows, n]` over its last axis.
fn rows_of(op: &'static str, x: &Tensor) -> Result<(usize, usize)> {
    match x.shape().split_last() {
        Some((&n, rest)) => Ok((rest.iter().product(), n)),
        None => Err(Error::invalid(op, "needs a tensor of rank >= 1")),
    }
}

/// Check that an optional per-channel vector is `[n]` of `x`'s dtype and device.
fn check_channel(op: &'static str, x: &Tensor, p: Option<&Tensor>, n: usize) -> Result<()> {
    if let Some(p) = p {
        if p.shape() != [n] {
            return Err(Error::ShapeMismatch {
                op,
                lhs: x.shape().to_vec(),
                rhs: p.shape().to_vec(),
            });
        }
        check_same_kind(op, x, p)?;
    }
    Ok(())
}

/// LayerNorm (or RMSNorm with `rms`) over the last axis in one backend call
/// ([`unigrad_core::Backend::norm_last`]): returns `(y, μ, r)` with the statistics
/// shaped `[.., 1]`. Records nothing. [`norm_last_backward`] returns `dβ` only together
/// with `dγ` (LayerNorm with both or neither affine parameter, as the layers use it).
pub fn norm_last(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
    rms: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let op = if rms { "rms_norm" } else { "layer_norm" };
    let (rows, n) = rows_of(op, x)?;
    check_channel(op, x, weight, n)?;
    check_channel(op, x, bias, n)?;
    let x = dense(x)?;
    let (w, b) = (weight.map(dense).transpose()?, bias.map(dense).transpose()?);
    let dev = x.device();
    let (sx, sw, sb) = (
        x.storage(),
        w.as_ref().map(|w| w.storage()),
        b.as_ref().map(|b| b.storage()),
    );
    let (y, m, r) = dev
        .backend()
        .norm_last(&*sx, rows, n, sw.as_deref(), sb.as_deref(), eps, rms)?;
    let stat = stat_shape(x.shape());
    Ok((
        Tensor::from_backend_storage(y, x.shape(), dev)?,
        Tensor::from_backend_storage(m, &stat, dev)?,
        Tensor::from_backend_storage(r, &stat, dev)?,
    ))
}

/// Backward of [`norm_last`] ([`unigrad_core::Backend::norm_last_backward`]):
/// `(dx, dγ, dβ)`, `dγ`/`dβ` shaped `[n]` and present as documented there.
#[allow(clippy::type_complexity)]
pub fn norm_last_backward(
    x: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    weight: Option<&Tensor>,
    dy: &Tensor,
    rms: bool,
) -> Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
    let op = if rms {
        "rms_norm_backward"
    } else {
        "layer_norm_backward"
    };
    let (rows, n) = rows_of(op, x)?;
    if dy.shape() != x.shape() {
        return Err(Error::ShapeMismatch {
            op,
            lhs: x.shape().to_vec(),
            rhs: dy.shape().to_vec(),
        });
    }
    check_channel(op, x, weight, n)?;
    let stat = stat_shape(x.shape());
    for t in [mean, rstd] {
        if t.shape() != stat.as_slice() {
            return Err(Error::ShapeMismatch {
                op,
                lhs: stat.clone(),
                rhs: t.shape().to_vec(),
            });
        }
    }
    for t in [mean, rstd, dy] {
        check_same_kind(op, x, t)?;
    }
    let (x, mean, rstd, dy) = (dense(x)?, dense(mean)?, dense(rstd)?, dense(dy)?);
    let w = weight.map(dense).transpose()?;
    let dev = x.device();
    let sw = w.as_ref().map(|w| w.storage());
    let (dx, dw, db) = dev.backend().norm_last_backward(
        &*x.storage(),
        &*mean.storage(),
        &*rstd.storage(),
        sw.as_deref(),
        &*dy.storage(),
        rows,
        n,
        rms,
    )?;
    let chan = |s: Option<unigrad_core::BoxStorage>| s.map(|s| Tensor::from_backend_storage(s, &[n], dev)).transpose();
    Ok((Tensor::from_backend_storage(dx, x.shape(), dev)?, chan(dw)?, chan(db)?))
}

/// One fused Adam / AdamW update of `param` ([`unigrad_core::Backend::adam_update`]):
/// returns the new `(param, m, v)`; `m`, `v` absent means zeros (the first step).
pub fn adam_update(
    param: &Tensor,
    grad: &Tensor,
    m: Option<&Tensor>,
    v: Option<&Tensor>,
    h: &unigrad_core::AdamStep,
) -> Result<(Tensor, Tensor, Tensor)> {
    for t in [Some(grad), m, v].into_iter().flatten() {
        check_same_meta("adam_update", param, t)?;
    }
    let (p, g) = (dense(param)?, dense(grad)?);
    let (m, v) = (m.map(dense).transpose()?, v.map(dense).transpose()?);
    let dev = p.device();
    let (sm, sv) = (m.as_ref().map(|t| t.storage()), v.as_ref().map(|t| t.storage()));
    let (np, nm, nv) =
        dev.backend()
            .adam_update(&*p.storage(), &*g.storage(), sm.as_deref(), sv.as_deref(), p.numel(), h)?;
    let shape = p.shape();
    Ok((
        Tensor::from_backend_storage(np, shape, dev)?,
        Tensor::from_backend_storage(nm, shape, dev)?,
        Tensor::from_backend_storage(nv, shape, dev)?,
    ))
}
