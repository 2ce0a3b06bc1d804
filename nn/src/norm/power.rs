//! PowerNorm (Shen et al., ICML 2020), reproducing the authors' reference layer
//! `MaskPowerNorm` (with its `GroupScaling1D` front end) exactly, quirks included.
//!
//! # Why a custom op
//!
//! PowerNorm normalises by a quadratic mean (no centring) and, after warm-up, by a
//! running statistic `φ`; its backward "approximates" the correction term with a running
//! sum `ema_gz` of past gradient statistics. That backward is not the derivative of the
//! forward (ALGORITHMS.md §2.6), so, like [`UnifiedNorm`](super::unified::UnifiedNorm), the
//! training step is a [`CustomOp`] from core's public API, composed of ordinary tensor ops
//! (any backend). The group scaling in front of it is ordinary differentiable computation,
//! so autograd supplies its exact chain rule (P-B6), as in the reference.
//!
//! # Layout
//!
//! The reference takes time-major input `[L, B, C]` with a `[B, L]` mask. This layer takes
//! the crate's usual batch-major `[B, N, C]` (or `[N, C]`) with a `[B, N]` mask. Every
//! statistic is a per-channel reduction over positions, so the two layouts compute the
//! same thing; transpose a time-major tensor with `x.transpose(0, 1)` to feed it.
//!
//! Buffers keep the reference's names and shapes (`running_phi` and `ema_gz` are
//! `[1, C, 1, 1]`, `iters` is i64 `[1]`) so checkpoints map one to one. Step names (P1–P7,
//! P-B1–P-B6) and "quirk §3.n" refer to ALGORITHMS.md next to the fixtures.
//!
//! # Higher-order gradients
//!
//! PowerNorm's backward is the paper's approximate backward (the statistic's gradient
//! through the running `ema_gz`), written by hand and first-order only: the op does not
//! implement `CustomOp::differentiable_backward`, so a `create_graph` backward gets
//! that first-order gradient and a second backward through it is an error naming the
//! op, never a second derivative of an approximation.
//!
//! # Where this layer differs from the reference
//!
//! A training batch whose padding mask covers every token would make the reference write
//! NaN into `running_phi` (0/0 in P3), which every later step, evaluation and checkpoint
//! would inherit; this layer skips such a batch ([`PowerNorm::forward`]). A mask holds only
//! 0 and 1: any other value is an error here, where the reference's valid set (positions
//! where the mask is 0) would count it as padding.

use super::stats::{check_state, token_norm_accessors, valid_sq_mean, TokenParams};
use super::trace::TraceSite;
use crate::module::{join, Buffer, BufferVisitor, Module, ParamVisitor};
use std::sync::{Arc, Mutex};
use unigrad_core::custom::{apply, CustomOp};
use unigrad_core::{DType, Device, Error, Result, Tensor};

const OP: &str = "PowerNorm";

/// The group scaling's own epsilon. Quirk §3.10: fixed at 1e-5, independent of
/// [`PnConfig::eps`].
pub const GROUP_SCALE_EPS: f64 = 1e-5;

/// Hyperparameters of [`PowerNorm`]. The defaults are the reference `MaskPowerNorm`'s.
/// (The reference's `affine` flag has no effect there — γ and β are always applied — so it
/// is not represented.)
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PnConfig {
    /// Added to the statistic before the square root (default 1e-5).
    pub eps: f64,
    /// Momentum of `running_phi`, applied as `α·old + (1−α)·new` (default 0.9).
    pub alpha_fwd: f64,
    /// Backward factor: the correction uses `(1 − alpha_bkw)·ema_gz` (default 0.9).
    pub alpha_bkw: f64,
    /// Iterations that normalise by the batch statistic (default 10000).
    pub warmup_iters: u64,
    /// Number of channel groups of the group scaling; must divide `C` (default 1).
    pub group_num: usize,
}

impl Default for PnConfig {
    fn default() -> Self {
        PnConfig {
            eps: 1e-5,
            alpha_fwd: 0.9,
            alpha_bkw: 0.9,
            warmup_iters: 10000,
            group_num: 1,
        }
    }
}

/// A snapshot of PowerNorm's state buffers.
#[derive(Clone, Debug)]
pub struct PnState {
    /// `[1, C, 1, 1]` running statistic `φ` (initially 1).
    pub running_phi: Tensor,
    /// `[1, C, 1, 1]` running sum of gradient statistics `e` (initially 0).
    pub ema_gz: Tensor,
    /// `[1]` i64 iteration counter.
    pub iters: Tensor,
}

/// What the last training forward did (diagnostics; mirrors the fixtures' `var`).
#[derive(Clone, Debug)]
pub struct PnStep {
    /// The counter value the step ran with (the first training call has 1).
    pub iteration: u64,
    /// The forward divided by the batch statistic (`i ≤ warmup_iters`), else by `φ`.
    pub batch_statistic: bool,
    /// `[C]` batch quadratic mean of the group-scaled input over valid tokens (the
    /// backward always divides by it).
    pub var: Tensor,
}

/// Group scaling (ALGORITHMS.md §2.2): each token's channels, in `groups` contiguous
/// groups, divided by the group's RMS: `u = x / sqrt(mean_group(x²) + 1e-5)`. Input
/// `[..., C]` with `C` divisible by `groups`; ordinary differentiable ops.
pub fn group_scale(x: &Tensor, groups: usize) -> Result<Tensor> {
    let c = x.shape().last().copied().unwrap_or(0);
    if c == 0 || c.checked_rem(groups) != Some(0) {
        return Err(Error::invalid(
            "group_scale",
            format!(
                "{groups} groups do not divide the last dimension of shape {:?}",
                x.shape()
            ),
        ));
    }
    let mut gshape = x.shape()[..x.rank() - 1].to_vec();
    gshape.extend([groups, c / groups]);
    let xg = x.reshape(&gshape)?;
    let sigma = xg.sqr()?.mean(&[-1], true)?.add_scalar(GROUP_SCALE_EPS)?.sqrt()?;
    xg.div(&sigma)?.reshape(x.shape())
}

#[derive(Clone, Debug)]
struct PnShared {
    cfg: PnConfig,
    channels: usize,
    running_phi: Buffer,
    ema_gz: Buffer,
    last: Arc<Mutex<Option<PnStep>>>,
    /// Where statistics are recorded ([`super::trace`]); `None`: nothing is read back.
    trace: Option<TraceSite>,
}

/// The training step P3–P7 and its backward P-B1–P-B5, as a custom op on `[u, γ, β]`.
struct PnOp {
    sh: PnShared,
    i: u64,
    valid: Option<Tensor>,
    saved: Option<(Tensor, Tensor, Tensor)>, // z, q, γ
}

impl CustomOp for PnOp {
    fn name(&self) -> String {
        "power_norm".into()
    }

    fn forward(&mut self, inputs: &[Tensor]) -> Result<Tensor> {
        let (u, w, b) = (&inputs[0], &inputs[1], &inputs[2]);
        let cfg = &self.sh.cfg;
        let (c, i, wu) = (self.sh.channels, self.i, cfg.warmup_iters);
        // P3: quadratic mean of the group-scaled input over valid tokens (quirk §3.1, §3.2).
        let q = valid_sq_mean(u, self.valid.as_ref())?;
        let phi = self.sh.running_phi.get().reshape(&[c])?;
        // P4: `i ≤ W` selects the batch statistic (quirk §3.6); φ is read before P5/P6.
        let batch = i <= wu;
        let stat = if batch { &q } else { &phi };
        let s = stat.add_scalar(cfg.eps)?.sqrt()?;
        let z = u.div(&s)?;
        // P5: cumulative average only while `i < W` (strict, quirk §3.6) ...
        let mut phi_new = phi;
        if i < wu {
            let fi = i as f64;
            phi_new = phi_new.mul_scalar(fi - 1.0)?.div_scalar(fi)?.add(&q.div_scalar(fi)?)?;
        }
        // P6: ... then the EMA on every training step ("old times momentum", quirk §3.9).
        phi_new = phi_new
            .mul_scalar(cfg.alpha_fwd)?
            .add(&q.mul_scalar(1.0 - cfg.alpha_fwd)?)?;
        if let Some(t) = self.sh.trace.as_ref().filter(|t| t.is_active()) {
            let qh = q.to_vec_f64()?;
            let phi_old = self.sh.running_phi.get().to_vec_f64()?;
            t.record_values("pn", "batch_stat", &qh);
            t.record_tensor("pn", "running_stat", &phi_new)?;
            t.record_fluctuation("pn", &qh, &phi_old);
            t.record_scalar("pn", "used_batch_stat", if batch { 1.0 } else { 0.0 });
        }
        self.sh.running_phi.set(phi_new.reshape(&[1, c, 1, 1])?);
        // P7.
        let y = w.mul(&z)?.add(b)?;
        *self.sh.last.lock().expect("PowerNorm diagnostics lock poisoned") = Some(PnStep {
            iteration: i,
            batch_statistic: batch,
            var: q.clone(),
        });
        self.saved = Some((z, q, w.clone()));
        Ok(y)
    }

    fn backward(self: Box<Self>, gy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (z, q, w) = self
            .saved
            .ok_or_else(|| Error::invalid(OP, "backward ran before the forward"))?;
        let (c, abkw) = (self.sh.channels, self.sh.cfg.alpha_bkw);
        // P-B1.
        let g = gy.mul(&w)?;
        // P-B2: d = g − (1−α_b)·e·z with e from before this step's update.
        let e = self.sh.ema_gz.get().reshape(&[c])?;
        let d = g.sub(&e.mul_scalar(1.0 - abkw)?.mul(&z)?)?;
        // P-B3: e is a running SUM over steps (the (1−α_b) factor is applied where e is
        // used, not to the new term), averaged over ALL positions, padding included
        // (quirk §3.1, §3.9).
        let term = d.mul(&z)?.mean(&[0, 1], false)?;
        let e_new = e.add(&term)?;
        if let Some(t) = self.sh.trace.as_ref().filter(|t| t.is_active()) {
            t.record_tensor("pn", "grad_stat", &term)?;
            t.record_tensor("pn", "ema_gz", &e_new)?;
        }
        self.sh.ema_gz.set(e_new.reshape(&[1, c, 1, 1])?);
        // P-B4: always divides by the BATCH statistic, even after warm-up when the forward
        // divided by sqrt(φ+ε) (quirk §3.11); the reference multiplies by 1/sqrt.
        let gu = q.add_scalar(self.sh.cfg.eps)?.sqrt()?.recip()?.mul(&d)?;
        // P-B5.
        let gw = gy.mul(&z)?.sum(&[0, 1], false)?;
        let gb = gy.sum(&[0, 1], false)?;
        Ok(vec![Some(gu), Some(gw), Some(gb)])
    }
}

/// PowerNorm over the channel (last) dimension of `[B, N, C]` tokens.
#[derive(Debug)]
pub struct PowerNorm {
    p: TokenParams,
    sh: PnShared,
}

impl PowerNorm {
    /// A layer for `channels` features with `weight = 1`, `bias = 0`, `running_phi = 1`,
    /// `ema_gz = 0`, `iters = 0`. Starts in training mode.
    pub fn new(channels: usize, cfg: PnConfig, dtype: DType, device: &Device) -> Result<Self> {
        let bad = |msg: String| Err(Error::invalid(OP, msg));
        if channels.checked_rem(cfg.group_num) != Some(0) {
            return bad(format!("group_num {} must divide channels {channels}", cfg.group_num));
        }
        if !(cfg.eps.is_finite() && cfg.eps >= 0.0) {
            return bad(format!("eps must be finite and >= 0, got {}", cfg.eps));
        }
        if !(0.0..=1.0).contains(&cfg.alpha_fwd) || !(0.0..=1.0).contains(&cfg.alpha_bkw) {
            return bad(format!(
                "alpha_fwd and alpha_bkw must be in [0, 1], got {} and {}",
                cfg.alpha_fwd, cfg.alpha_bkw
            ));
        }
        Ok(PowerNorm {
            p: TokenParams::new(OP, channels, dtype, device)?,
            sh: PnShared {
                cfg,
                channels,
                running_phi: Buffer::new(Tensor::ones(&[1, channels, 1, 1], dtype, device)?),
                ema_gz: Buffer::new(Tensor::zeros(&[1, channels, 1, 1], dtype, device)?),
                last: Arc::new(Mutex::new(None)),
                trace: None,
            },
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PnConfig {
        &self.sh.cfg
    }

    token_norm_accessors!();

    /// What the last training forward did, if there was one.
    pub fn last_step(&self) -> Option<PnStep> {
        self.sh
            .last
            .lock()
            .expect("PowerNorm diagnostics lock poisoned")
            .clone()
    }

    /// A snapshot of every state buffer.
    pub fn state(&self) -> PnState {
        PnState {
            running_phi: self.sh.running_phi.get(),
            ema_gz: self.sh.ema_gz.get(),
            iters: self.p.iters.buffer().get(),
        }
    }

    /// Restore a snapshot (checked first; copied to this layer's device if needed).
    pub fn set_state(&self, s: &PnState) -> Result<()> {
        let (c, d, dev) = (self.p.channels, self.p.dtype, &self.p.device);
        check_state(OP, "running_phi", &s.running_phi, &[1, c, 1, 1], d)?;
        check_state(OP, "ema_gz", &s.ema_gz, &[1, c, 1, 1], d)?;
        check_state(OP, "iters", &s.iters, &[1], DType::I64)?;
        let phi = s.running_phi.to_device(dev)?;
        let e = s.ema_gz.to_device(dev)?;
        let it = s.iters.to_device(dev)?;
        self.sh.running_phi.set(phi);
        self.sh.ema_gz.set(e);
        self.p.iters.buffer().set(it);
        Ok(())
    }

    /// Normalise `x` (`[B, N, C]`, or `[N, C]` as one sequence) with an optional padding
    /// mask `[B, N]` (1 = padding, 0 = token; any dtype, and any other value is an error
    /// naming it). Training mode advances the state and records the PowerNorm backward;
    /// eval mode uses `running_phi` and changes nothing (the mask is still checked).
    ///
    /// # A batch of padding only
    ///
    /// A training call whose mask marks every token as padding has no batch statistic
    /// (the reference divides 0 by 0 and writes NaN into `running_phi` for good). This
    /// layer skips such a step instead: it returns the eval-mode output
    /// `γ·u/sqrt(running_phi + ε) + β` of the group-scaled input `u` (finite,
    /// differentiable by ordinary autograd) and leaves `running_phi`, `ema_gz`, the
    /// iteration counter, [`last_step`](Self::last_step) and the trace untouched, so
    /// evaluation and checkpoints never see a statistic from it.
    pub fn forward(&self, x: &Tensor, pad_mask: Option<&Tensor>) -> Result<Tensor> {
        self.forward_with_params(x, &self.p.weight, &self.p.bias, pad_mask)
    }

    /// [`forward`](Self::forward) with explicit `weight` and `bias` (`[C]` each).
    pub fn forward_with_params(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        pad_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let c = self.p.channels;
        let inp = self.p.input(OP, x, weight, bias, pad_mask)?;
        // P1 (and §2.5): group scaling first, in training and eval, at every position.
        let u = group_scale(&inp.x, self.sh.cfg.group_num)?;
        let y = if !self.p.training || inp.all_padding() {
            // §2.5: y = γ·u/sqrt(φ+ε) + β; the mask is ignored, no state changes (quirk §3.12).
            // A training batch of padding only takes this path too (see `forward`).
            let s = self
                .sh
                .running_phi
                .get()
                .reshape(&[c])?
                .add_scalar(self.sh.cfg.eps)?
                .sqrt()?;
            weight.mul(&u.div(&s)?)?.add(bias)?
        } else {
            // P2: the counter goes up first; the step runs with the new value.
            let i = self.p.next_iteration(OP)?;
            let op = PnOp {
                sh: self.sh.clone(),
                i,
                valid: inp.valid.clone(),
                saved: None,
            };
            apply(op, &[&u, weight, bias])?
        };
        let y = inp.finish(y)?;
        super::trace::record_output_grad(self.sh.trace.as_ref(), "pn", &y)?;
        Ok(y)
    }
}

impl Module for PowerNorm {
    fn visit_params(&self, prefix: &str, f: &mut ParamVisitor<'_>) {
        self.p.visit(prefix, f);
    }

    /// The reference's buffer names, in its registration order.
    fn visit_buffers(&self, prefix: &str, f: &mut BufferVisitor<'_>) {
        f(&join(prefix, "running_phi"), &self.sh.running_phi);
        f(&join(prefix, "ema_gz"), &self.sh.ema_gz);
        f(&join(prefix, "iters"), self.p.iters.buffer());
    }

    fn set_train(&mut self, train: bool) {
        self.p.training = train;
    }
}
