//! LayerNorm and RMSNorm over the last dimension.
//!
//! Both are custom ops with hand-derived backward passes: the statistics come from
//! the backend's fused row-moments kernel, and the backward is the closed form
//! (a handful of passes) instead of the dozen recorded ops a composed version would
//! replay. Gradient checks in the shared suite (`tests/src/nn_modules.rs`) pin both against
//! finite differences on every backend.
//!
//! LayerNorm: `x̂ = (x − μ)/√(σ² + ε)`, `y = γ x̂ + β`;
//! `dx = (γg − mean(γg) − x̂·mean(γg ⊙ x̂)) / √(σ² + ε)`.
//! RMSNorm (Zhang & Sennrich 2019): `x̂ = x/√(mean(x²) + ε)`, `y = γ x̂`;
//! `dx = (γg − x̂·mean(γg ⊙ x̂)) / √(mean(x²) + ε)`.

use crate::fused::{dense, norm_last, norm_last_backward};
use crate::init;
use crate::module::{join, Module, ParamVisitor};
use unigrad_core::custom::{apply, CustomOp};
use unigrad_core::{DType, Device, Error, Result, Tensor};

fn check_channels(op: &'static str, x: &Tensor, c: usize) -> Result<()> {
    if x.rank() == 0 || x.shape()[x.rank() - 1] != c {
        return Err(Error::invalid(
            op,
            format!("input of shape {:?} does not end in {c} channels", x.shape()),
        ));
    }
    Ok(())
}

/// Layer normalization (Ba et al. 2016) with PyTorch's names (`weight`, `bias`).
#[derive(Clone, Debug)]
pub struct LayerNorm {
    /// Scale `γ` `[C]` (absent without elementwise affine).
    pub weight: Option<Tensor>,
    /// Shift `β` `[C]`.
    pub bias: Option<Tensor>,
    /// Added to the variance.
    pub eps: f64,
    channels: usize,
    /// Statistics tracing ([`super::trace`]); `None`: nothing is read back.
    trace: Option<super::trace::TraceSite>,
}

impl LayerNorm {
    /// `γ = 1`, `β = 0`, `ε = 1e-5` (PyTorch's defaults).
    pub fn new(channels: usize, dtype: DType, dev: &Device) -> Result<LayerNorm> {
        LayerNorm::with_options(channels, 1e-5, true, dtype, dev)
    }

    /// Choose `eps` and whether there is a learned affine.
    pub fn with_options(channels: usize, eps: f64, affine: bool, dtype: DType, dev: &Device) -> Result<LayerNorm> {
        let (weight, bias) = if affine {
            (
                Some(init::ones(&[channels], dtype, dev)?),
                Some(init::zeros(&[channels], dtype, dev)?),
            )
        } else {
            (None, None)
        };
        Ok(LayerNorm {
            weight,
            bias,
            eps,
            channels,
            trace: None,
        })
    }

    /// Attach (or with `None` detach) a statistics trace site ([`super::trace`]).
    pub fn set_trace(&mut self, site: Option<super::trace::TraceSite>) {
        self.trace = site;
    }

    /// Normalize `x [.., C]` over its last dimension.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        check_channels("LayerNorm", x, self.channels)?;
        if let Some(t) = &self.trace {
            super::trace::record_layer_norm(t, x)?;
        }
        let op = NormOp {
            rms: false,
            eps: self.eps,
            saved: None,
        };
        match (&self.weight, &self.bias) {
            (Some(w), Some(b)) => apply(op, &[x, w, b]),
            _ => apply(op, &[x]),
        }
    }
}

impl Module for LayerNorm {
    fn visit_params(&self, prefix: &str, f: &mut ParamVisitor<'_>) {
        if let Some(w) = &self.weight {
            f(&join(prefix, "weight"), w);
        }
        if let Some(b) = &self.bias {
            f(&join(prefix, "bias"), b);
        }
    }
}

/// Root-mean-square normalization: no centering, no shift; `weight` only.
#[derive(Clone, Debug)]
pub struct RmsNorm {
    /// Scale `γ` `[C]`.
    pub weight: Tensor,
    /// Added to the mean square.
    pub eps: f64,
}

impl RmsNorm {
    /// `γ = 1`, `ε = 1e-5` (as in the reference workload).
    pub fn new(channels: usize, dtype: DType, dev: &Device) -> Result<RmsNorm> {
        Ok(RmsNorm {
            weight: init::ones(&[channels], dtype, dev)?,
            eps: 1e-5,
        })
    }

    /// Normalize `x [.., C]` over its last dimension.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        check_channels("RmsNorm", x, self.weight.shape()[0])?;
        apply(
            NormOp {
                rms: true,
                eps: self.eps,
                saved: None,
            },
            &[x, &self.weight],
        )
    }
}

impl Module for RmsNorm {
    fn visit_params(&self, prefix: &str, f: &mut ParamVisitor<'_>) {
        f(&join(prefix, "weight"), &self.weight);
    }
}

/// Shared custom op: inputs `[x]`, `[x, γ]` (RMS) or `[x, γ, β]` (LayerNorm). Both
/// directions are one fused backend call each ([`crate::fused::norm_last`]).
struct NormOp {
    rms: bool,
    eps: f64,
    /// `(x, μ, 1/√(σ² + ε), γ)`, the statistics `[.., 1]`.
    saved: Option<(Tensor, Tensor, Tensor, Option<Tensor>)>,
}

impl CustomOp for NormOp {
    fn name(&self) -> String {
        if self.rms { "rms_norm" } else { "layer_norm" }.into()
    }

    fn forward(&mut self, inputs: &[Tensor]) -> Result<Tensor> {
        let _p = crate::profile::scope("layer_norm.fwd", Some(inputs[0].device()));
        // saved dense: the backward then reads it without another copy
        let x = dense(&inputs[0])?;
        let w = inputs.get(1).cloned();
        let (y, mean, rstd) = norm_last(&x, w.as_ref(), inputs.get(2), self.eps, self.rms)?;
        self.saved = Some((x, mean, rstd, w));
        Ok(y)
    }

    fn backward(self: Box<Self>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let _p = crate::profile::scope("layer_norm.bwd", Some(g.device()));
        let (x, mean, rstd, w) = self.saved.ok_or_else(|| crate::not_run("layer_norm"))?;
        let (dx, dw, db) = norm_last_backward(&x, &mean, &rstd, w.as_ref(), g, self.rms)?;
        let mut grads = vec![Some(dx)];
        if w.is_some() {
            grads.push(dw);
            if !self.rms {
                grads.push(db);
            }
        }
        Ok(grads)
    }
}
