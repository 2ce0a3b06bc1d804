//! The norm family: LayerNorm and RMSNorm over the last dimension as differentiable
//! core ops, and the row statistics they are built on.
//!
//! Both directions are one backend call each: [`Backend::norm_last`] forward and
//! [`Backend::norm_last_backward`] for the closed-form backward, instead of the dozen
//! recorded ops a composed version would replay. A backend without kernels of its own
//! gets the composed defaults of the trait, so these ops run on every device.
//!
//! LayerNorm (Ba et al. 2016): `x̂ = (x − μ)/√(σ² + ε)`, `y = γ x̂ + β`;
//! `dx = (γg − mean(γg) − x̂·mean(γg ⊙ x̂)) / √(σ² + ε)`.
//! RMSNorm (Zhang & Sennrich 2019): `x̂ = x/√(mean(x²) + ε)`, `y = γ x̂`;
//! `dx = (γg − x̂·mean(γg ⊙ x̂)) / √(mean(x²) + ε)`.
//!
//! [`norm_last`] and [`norm_last_backward`] are the same two calls without recording,
//! for custom ops that need the statistics (nn's norm layers), and [`moments_last`]
//! is the row mean and variance alone ([`Backend::moments_last`]).
//!
//! [`Backend::norm_last`]: crate::Backend::norm_last
//! [`Backend::norm_last_backward`]: crate::Backend::norm_last_backward
//! [`Backend::moments_last`]: crate::Backend::moments_last

use super::check_float;
use super::view::dense;
use crate::autograd::record;
use crate::backend::BoxStorage;
use crate::error::{Error, Result};
use crate::tensor::{check_same_kind, Tensor};

/// Shape with the last dimension replaced by 1.
fn stat_shape(shape: &[usize]) -> Vec<usize> {
    let mut s = shape.to_vec();
    if let Some(l) = s.last_mut() {
        *l = 1;
    }
    s
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

/// Mean and biased variance over the last axis, each `[.., 1]`, in one backend call
/// ([`Backend::moments_last`](crate::Backend::moments_last)). Records nothing (no
/// gradient flows through the result); `x` may be any strided view.
pub fn moments_last(x: &Tensor) -> Result<(Tensor, Tensor)> {
    const OP: &str = "moments_last";
    if x.rank() == 0 {
        return Err(Error::invalid(OP, "needs a tensor of rank >= 1"));
    }
    check_float(OP, x)?;
    let dev = x.device();
    let s = x.storage();
    let (m, v) = dev.backend().moments_last(&*s, x.layout())?;
    let shape = stat_shape(x.shape());
    Ok((
        Tensor::from_backend_storage(m, &shape, dev)?,
        Tensor::from_backend_storage(v, &shape, dev)?,
    ))
}

/// LayerNorm (or RMSNorm with `rms`) over the last axis in one backend call
/// ([`Backend::norm_last`](crate::Backend::norm_last)): returns `(y, μ, r)` with the
/// statistics shaped `[.., 1]` (`r = 1/√(σ² + eps)`; μ all zero for RMS). `weight`
/// and `bias` are `[n]` of `x`'s dtype and device. Records nothing.
pub fn norm_last(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
    rms: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let op = if rms { "rms_norm" } else { "layer_norm" };
    let (rows, n) = rows_of(op, x)?;
    check_float(op, x)?;
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

/// Backward of [`norm_last`] in one backend call
/// ([`Backend::norm_last_backward`](crate::Backend::norm_last_backward)) from the
/// forward's input `x`, its statistics and the upstream gradient `dy`: returns
/// `(dx, dγ, dβ)`, `dγ`/`dβ` shaped `[n]`. `dγ` is present when `weight` is given;
/// `dβ` only when `weight` is given and `rms` is false (a bias without a weight gets
/// its gradient from the caller: `Σ_rows dy`). Records nothing.
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
    check_float(op, x)?;
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
    let chan = |s: Option<BoxStorage>| s.map(|s| Tensor::from_backend_storage(s, &[n], dev)).transpose();
    Ok((Tensor::from_backend_storage(dx, x.shape(), dev)?, chan(dw)?, chan(db)?))
}

/// The LayerNorm / RMSNorm backward of the module doc's closed form in recorded ops
/// (for `create_graph`): `(dx, dγ, dβ)` with `dγ = Σ_rows g ⊙ x̂`, `dβ = Σ_rows g`.
fn norm_backward_composed(
    x: &Tensor,
    w: Option<&Tensor>,
    g: &Tensor,
    eps: f64,
    rms: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (rows, n) = rows_of(if rms { "rms_norm" } else { "layer_norm" }, x)?;
    let centered = if rms { x.clone() } else { x.sub(&x.mean(&[-1], true)?)? };
    let r = centered.sqr()?.mean(&[-1], true)?.add_scalar(eps)?.rsqrt()?;
    let xhat = centered.mul(&r)?;
    let gx = match w {
        Some(w) => g.mul(w)?,
        None => g.clone(),
    };
    let mut inner = gx.sub(&xhat.mul(&gx.mul(&xhat)?.mean(&[-1], true)?)?)?;
    if !rms {
        inner = inner.sub(&gx.mean(&[-1], true)?)?;
    }
    let dx = inner.mul(&r)?;
    let per_channel = |t: &Tensor| t.reshape(&[rows, n])?.sum(&[0], false);
    Ok((dx, per_channel(&g.mul(&xhat)?)?, per_channel(g)?))
}

impl Tensor {
    /// LayerNorm over the last dimension: `(x − μ)/√(σ² + eps)·weight + bias`, with
    /// the biased variance σ² of each row, as PyTorch's `layer_norm(x, [C], weight,
    /// bias, eps)`. `weight` and `bias` are `[C]` or absent (then 1 and 0). One fused
    /// backend call each way.
    pub fn layer_norm(&self, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
        self.norm_impl(weight, bias, eps, false)
    }

    /// RMSNorm over the last dimension: `x/√(mean(x²) + eps)·weight`, with `weight`
    /// `[C]` or absent (then 1). No centering and no shift. One fused backend call
    /// each way.
    pub fn rms_norm(&self, weight: Option<&Tensor>, eps: f64) -> Result<Tensor> {
        self.norm_impl(weight, None, eps, true)
    }

    fn norm_impl(&self, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64, rms: bool) -> Result<Tensor> {
        let op = if rms { "rms_norm" } else { "layer_norm" };
        if !(eps >= 0.0 && eps.is_finite()) {
            return Err(Error::invalid(op, format!("eps {eps} is not a finite value >= 0")));
        }
        // saved dense and detached: the backward reads them without another copy
        let x = dense(&self.detach())?;
        let w = weight.map(|w| w.detach());
        let b = bias.map(|b| b.detach());
        let (y, mean, rstd) = norm_last(&x, w.as_ref(), b.as_ref(), eps, rms)?;
        let mut inputs = vec![self];
        inputs.extend(weight);
        inputs.extend(bias);
        let (has_w, has_b) = (w.is_some(), b.is_some());
        let (x_in, w_in) = (self.clone(), weight.cloned());
        record(
            op,
            y,
            &inputs,
            Box::new(move |g| {
                if crate::autograd::is_grad_enabled() {
                    // create_graph: the closed form in recorded ops of the attached inputs
                    let (dx, dw, db) = norm_backward_composed(&x_in, w_in.as_ref(), g, eps, rms)?;
                    let mut grads = vec![Some(dx)];
                    if has_w {
                        grads.push(Some(dw));
                    }
                    if has_b {
                        grads.push(Some(db));
                    }
                    return Ok(grads);
                }
                let (dx, dw, db) = norm_last_backward(&x, &mean, &rstd, w.as_ref(), g, rms)?;
                let mut grads = vec![Some(dx)];
                if has_w {
                    grads.push(dw);
                }
                if has_b {
                    // the backend gives dβ with dγ; a bias alone is summed here
                    let db = match db {
                        Some(db) => db,
                        None => {
                            let (rows, n) = rows_of(op, g)?;
                            g.reshape(&[rows, n])?.sum(&[0], false)?
                        }
                    };
                    grads.push(Some(db));
                }
                Ok(grads)
            }),
        )
    }
}
