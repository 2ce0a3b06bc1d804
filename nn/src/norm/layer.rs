//! LayerNorm and RMSNorm layers over the last dimension.
//!
//! The layers hold the parameters and the trace site; the op itself is core's norm
//! family ([`Tensor::layer_norm`], [`Tensor::rms_norm`]): one fused backend call
//! forward and one for the closed-form backward, on every backend. The shared suite
//! (`unigrad-tests`, `gradcheck_ops::norms`) checks the op against finite differences
//! on every backend; the nn module gradchecks (`tests/src/nn_modules.rs`) check the layers.

use crate::init;
use crate::module::{join, Module, ParamVisitor};
use unigrad_core::{DType, Device, Error, Result, ResultExt, Tensor};

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
        let _p = crate::profile::scope("layer_norm.fwd", Some(x.device()));
        let y = x
            .layer_norm(self.weight.as_ref(), self.bias.as_ref(), self.eps)
            .in_op("LayerNorm")?;
        super::trace::record_output_grad(self.trace.as_ref(), "ln", &y)?;
        Ok(y)
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
        let _p = crate::profile::scope("layer_norm.fwd", Some(x.device()));
        x.rms_norm(Some(&self.weight), self.eps).in_op("RmsNorm")
    }
}

impl Module for RmsNorm {
    fn visit_params(&self, prefix: &str, f: &mut ParamVisitor<'_>) {
        f(&join(prefix, "weight"), &self.weight);
    }
}
