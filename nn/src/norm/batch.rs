//! BatchNorm over tokens, with an optional padding mask.
//!
//! Transformers feed `[B, N, C]` activations; "BatchNorm over tokens" normalises each
//! channel with statistics over all `B·N` tokens (PyTorch's `BatchNorm1d` applied to the
//! tokens reshaped to `[B·N, C]`). With a padding mask (`[B, N]`, 1 = pad, 0 = token; any
//! other value is an error) the statistics cover the valid tokens only, so padding cannot
//! shift them (Shen et al. 2020 show how much that matters for NLP). Outputs at padded
//! positions are computed with the same statistics and are meant to be ignored downstream.
//!
//! A training batch needs at least 2 valid tokens (the unbiased variance of one token is
//! undefined; PyTorch refuses it too), with one exception: a batch whose mask marks
//! *every* token as padding is skipped — normalised with the running statistics as in eval
//! mode, with no update of `running_mean`, `running_var` or `num_batches_tracked` — since
//! it has no statistic and no output that counts (see [`BatchNorm::forward`]).
//!
//! Running statistics (`running_mean`, `running_var` with the unbiased variance, and
//! `num_batches_tracked`) are buffers updated in training as in PyTorch:
//! `running = (1 − momentum)·running + momentum·batch`, or a cumulative average when
//! `momentum` is `None`. Evaluation uses the running statistics and changes nothing.
//!
//! The training forward is one custom op with the closed-form backward through the
//! batch statistics (fewer passes and fewer saved tensors than the dozen recorded ops
//! of the composed form); the shared suite (`tests/src/nn_modules.rs`) gradchecks it with
//! and without a mask on every backend.

use super::stats::{check_mask, valid_indicator};
use crate::init;
use crate::module::{join, Buffer, BufferVisitor, Module, ParamVisitor};
use std::sync::{Arc, Mutex};
use unigrad_core::custom::{apply, CustomOp};
use unigrad_core::{no_grad, DType, Device, Error, Result, Tensor};

/// Batch normalization of the last (channel) dimension over all other positions.
#[derive(Clone, Debug)]
pub struct BatchNorm {
    /// Scale `γ` `[C]`.
    pub weight: Tensor,
    /// Shift `β` `[C]`.
    pub bias: Tensor,
    /// Running mean `[C]`.
    pub running_mean: Buffer,
    /// Running unbiased variance `[C]`.
    pub running_var: Buffer,
    /// Number of training batches seen (i64 scalar, as PyTorch saves it).
    pub num_batches_tracked: Buffer,
    /// Added to the variance.
    pub eps: f64,
    /// Weight of the new batch in the running statistics; `None`: cumulative average.
    pub momentum: Option<f64>,
    train: bool,
    /// Statistics tracing ([`super::trace`]); `None`: nothing is read back.
    trace: Option<super::trace::TraceSite>,
}

impl BatchNorm {
    /// PyTorch's defaults: `eps = 1e-5`, `momentum = 0.1`, `γ = 1`, `β = 0`,
    /// running mean 0 and variance 1. Starts in training mode.
    pub fn new(channels: usize, dtype: DType, dev: &Device) -> Result<BatchNorm> {
        BatchNorm::with_options(channels, 1e-5, Some(0.1), dtype, dev)
    }

    /// Choose `eps` and `momentum`.
    pub fn with_options(
        channels: usize,
        eps: f64,
        momentum: Option<f64>,
        dtype: DType,
        dev: &Device,
    ) -> Result<BatchNorm> {
        if let Some(m) = momentum {
            if !(0.0..=1.0).contains(&m) {
                return Err(Error::invalid("BatchNorm", format!("momentum {m} is not in [0, 1]")));
            }
        }
        Ok(BatchNorm {
            weight: init::ones(&[channels], dtype, dev)?,
            bias: init::zeros(&[channels], dtype, dev)?,
            running_mean: Buffer::new(Tensor::zeros(&[channels], dtype, dev)?),
            running_var: Buffer::new(Tensor::ones(&[channels], dtype, dev)?),
            num_batches_tracked: Buffer::new(Tensor::from_vec(vec![0i64], &[], dev)?),
            eps,
            momentum,
            train: true,
            trace: None,
        })
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.weight.shape()[0]
    }

    /// Attach (or with `None` detach) a statistics trace site ([`super::trace`]).
    pub fn set_trace(&mut self, site: Option<super::trace::TraceSite>) {
        self.trace = site;
    }

    /// True in training mode.
    pub fn is_training(&self) -> bool {
        self.train
    }

    /// Normalize `x [.., C]`; `pad_mask` has `x`'s shape without the channel dim
    /// (`[B, N]` for `[B, N, C]`), 1 where the token is padding and 0 where it counts (any
    /// dtype; another value is an error naming it, in eval mode too).
    ///
    /// In training mode a mask that marks every token as padding skips the step: the
    /// output is the eval-mode `γ·(x − running_mean)/sqrt(running_var + ε) + β` (finite,
    /// differentiable by ordinary autograd) and the running statistics, the batch counter
    /// and the trace are left as they were, so evaluation and checkpoints never see a
    /// statistic of an empty batch. Fewer than 2 valid tokens otherwise is an error.
    pub fn forward(&self, x: &Tensor, pad_mask: Option<&Tensor>) -> Result<Tensor> {
        let c = self.channels();
        if x.rank() < 2 || x.shape()[x.rank() - 1] != c {
            return Err(Error::invalid(
                "BatchNorm",
                format!("input of shape {:?} must be [.., {c}] with rank >= 2", x.shape()),
            ));
        }
        let lead = &x.shape()[..x.rank() - 1];
        let rows = x.numel() / c;
        let x2 = x.reshape(&[rows, c])?;
        let y = if self.train {
            let valid = pad_mask
                .map(|m| valid_indicator("BatchNorm", m, lead, x.dtype()))
                .transpose()?;
            match valid {
                // every token is padding: skip the step (see above); an empty input is
                // still refused below, as without a mask
                Some((_, 0)) if rows > 0 => self.forward_running(&x2)?,
                Some((v, count)) => self.forward_train(&x2, Some(&v), count)?,
                None => self.forward_train(&x2, None, rows)?,
            }
        } else {
            // Running statistics: the mask changes nothing, but a wrong one is still an error.
            pad_mask.map(|m| check_mask("BatchNorm", m, lead)).transpose()?;
            self.forward_running(&x2)?
        };
        let y = y.reshape(x.shape())?;
        super::trace::record_output_grad(self.trace.as_ref(), "bn", &y)?;
        Ok(y)
    }

    /// `x [rows, C]` normalised with the running statistics (eval mode).
    fn forward_running(&self, x2: &Tensor) -> Result<Tensor> {
        let rstd = self.running_var.get().add_scalar(self.eps)?.rsqrt()?;
        let scale = self.weight.mul(&rstd)?;
        let shift = self.bias.sub(&self.running_mean.get().mul(&scale)?)?;
        x2.mul(&scale)?.add(&shift)
    }

    /// `valid`: the padding mask's validity indicator (`x`'s positions + `[1]`, 1 = valid),
    /// `count` valid tokens.
    fn forward_train(&self, x2: &Tensor, valid: Option<&Tensor>, count: usize) -> Result<Tensor> {
        let rows = x2.shape()[0];
        let valid = valid.map(|v| v.reshape(&[rows, 1])).transpose()?;
        check_count(count)?;
        let count = count as f64;
        let stats = Arc::new(Mutex::new(None));
        let op = BatchNormOp {
            valid,
            count,
            eps: self.eps,
            stats: stats.clone(),
            saved: None,
        };
        let y = apply(op, &[x2, &self.weight, &self.bias])?;
        let (mean, var) = stats
            .lock()
            .map_err(|_| Error::invalid("BatchNorm", "statistics slot poisoned"))?
            .take()
            .ok_or_else(|| crate::not_run("BatchNorm"))?;
        let traced = self.trace.as_ref().filter(|t| t.is_active());
        let old_var = traced.map(|_| self.running_var.get());
        self.update_running(&mean, &var, count)?;
        if let (Some(t), Some(old)) = (traced, old_var) {
            let (rm, rv) = (self.running_mean.get(), self.running_var.get());
            super::trace::record_batch_norm(t, &mean, &var, &old, &rm, &rv)?;
        }
        Ok(y)
    }

    fn update_running(&self, mean: &Tensor, var: &Tensor, count: f64) -> Result<()> {
        no_grad(|| {
            let tracked = self.num_batches_tracked.get();
            let n = tracked.to_vec::<i64>()?.first().copied().unwrap_or(0) + 1;
            self.num_batches_tracked
                .set(Tensor::from_vec(vec![n], &[], tracked.device())?);
            let m = self.momentum.unwrap_or(1.0 / n as f64);
            let c = self.channels();
            let unbiased = var.mul_scalar(count / (count - 1.0))?.reshape(&[c])?;
            let blend = |old: &Tensor, new: &Tensor| old.mul_scalar(1.0 - m)?.add(&new.mul_scalar(m)?);
            self.running_mean
                .set(blend(&self.running_mean.get(), &mean.reshape(&[c])?)?);
            self.running_var.set(blend(&self.running_var.get(), &unbiased)?);
            Ok(())
        })
    }
}

/// Training-mode BatchNorm of `x [rows, C]` as one op with the closed-form backward.
///
/// With `v` the valid-row indicator, `n = Σ v`, `x̂ = (x − μ)·r`, `g̃ = γ·g`:
/// `dx = r·(g̃ − v·(Σ_rows g̃ + x̂·Σ_rows g̃x̂)/n)` — the sums run over *all* rows, because
/// the outputs at padded rows also depend on the statistics; without a mask `v = 1`.
struct BatchNormOp {
    /// `[rows, 1]` with 1 for valid rows; `None`: every row is valid.
    valid: Option<Tensor>,
    count: f64,
    eps: f64,
    /// Where the forward leaves the batch mean and biased variance (`[1, C]`) for the
    /// running statistics.
    stats: Arc<Mutex<Option<(Tensor, Tensor)>>>,
    /// `(x̂, r, γ)`.
    saved: Option<(Tensor, Tensor, Tensor)>,
}

impl CustomOp for BatchNormOp {
    fn name(&self) -> String {
        "batch_norm".into()
    }

    fn forward(&mut self, inputs: &[Tensor]) -> Result<Tensor> {
        let _p = crate::profile::scope("batch_norm.fwd", Some(inputs[0].device()));
        let (w, b) = (&inputs[1], &inputs[2]);
        let (mean, var, rstd, xhat) = self.normalize(&inputs[0])?;
        let y = xhat.mul(w)?.add(b)?;
        if let Ok(mut s) = self.stats.lock() {
            *s = Some((mean, var));
        }
        self.saved = Some((xhat, rstd, w.clone()));
        Ok(y)
    }

    fn backward(self: Box<Self>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let _p = crate::profile::scope("batch_norm.bwd", Some(g.device()));
        let (xhat, rstd, w) = self.saved.as_ref().ok_or_else(|| crate::not_run("batch_norm"))?;
        self.grads(xhat, rstd, w, g)
    }

    /// The same closed form in recorded ops on the attached inputs, with the batch
    /// statistics recomputed from them, so gradients of gradients (`create_graph`) go
    /// through training-mode BatchNorm (eval mode is composed of recorded ops anyway).
    fn differentiable_backward(&self, inputs: &[Tensor], g: &Tensor) -> Option<Result<Vec<Option<Tensor>>>> {
        Some(
            self.normalize(&inputs[0])
                .and_then(|(_, _, rstd, xhat)| self.grads(&xhat, &rstd, &inputs[1], g)),
        )
    }
}

impl BatchNormOp {
    /// `(mean, biased variance, r, x̂)` of `x [rows, C]` over the valid rows.
    fn normalize(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let inv = 1.0 / self.count;
        let (mean, xc, var) = match &self.valid {
            Some(v) => {
                let mean = x.mul(v)?.sum(&[0], true)?.mul_scalar(inv)?;
                let xc = x.sub(&mean)?;
                let var = xc.sqr()?.mul(v)?.sum(&[0], true)?.mul_scalar(inv)?;
                (mean, xc, var)
            }
            None => {
                let mean = x.mean(&[0], true)?;
                let xc = x.sub(&mean)?;
                let var = xc.sqr()?.mean(&[0], true)?;
                (mean, xc, var)
            }
        };
        let rstd = var.add_scalar(self.eps)?.rsqrt()?;
        let xhat = xc.mul(&rstd)?;
        Ok((mean, var, rstd, xhat))
    }

    /// `(dx, dγ, dβ)` from `x̂`, `r`, `γ` and the output gradient `g` (see the type docs).
    fn grads(&self, xhat: &Tensor, rstd: &Tensor, w: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let inv = 1.0 / self.count;
        let gb = g.sum(&[0], false)?;
        let gw = g.mul(xhat)?.sum(&[0], false)?;
        let gx = g.mul(w)?;
        let a = gx.sum(&[0], true)?.mul_scalar(inv)?;
        let c = gx.mul(xhat)?.sum(&[0], true)?.mul_scalar(inv)?;
        let mut corr = xhat.mul(&c)?.add(&a)?;
        if let Some(v) = &self.valid {
            corr = corr.mul(v)?;
        }
        let dx = gx.sub(&corr)?.mul(rstd)?;
        Ok(vec![Some(dx), Some(gw), Some(gb)])
    }
}

fn check_count(count: usize) -> Result<()> {
    if count < 2 {
        return Err(Error::invalid(
            "BatchNorm",
            format!("training needs at least 2 valid tokens per channel, got {count}"),
        ));
    }
    Ok(())
}

impl Module for BatchNorm {
    fn visit_params(&self, prefix: &str, f: &mut ParamVisitor<'_>) {
        f(&join(prefix, "weight"), &self.weight);
        f(&join(prefix, "bias"), &self.bias);
    }

    fn visit_buffers(&self, prefix: &str, f: &mut BufferVisitor<'_>) {
        f(&join(prefix, "running_mean"), &self.running_mean);
        f(&join(prefix, "running_var"), &self.running_var);
        f(&join(prefix, "num_batches_tracked"), &self.num_batches_tracked);
    }

    fn set_train(&mut self, train: bool) {
        self.train = train;
    }
}
