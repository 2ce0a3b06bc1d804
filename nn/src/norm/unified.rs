//! Unified Normalization (UN, Yang et al., ACM MM 2022), reproducing the authors'
//! reference layer `UN1d` exactly, quirks included.
//!
//! # Why a custom op
//!
//! UN normalises by an *offline* statistic (no per-token mean, a quadratic mean over the
//! batch, smoothed over a window of past iterations) so that at inference it folds into
//! the neighbouring linear layers like BatchNorm. Its backward is deliberately *not* the
//! derivative of its forward: it replaces the per-batch correction term by an exponential
//! moving average of a windowed mean ("calibrated" gradient) and scales the gradient by a
//! ratio `r` of the current to the running statistic. Autograd cannot derive that, so the
//! training path is a [`CustomOp`] built with core's public custom-op API — core and the
//! backends know nothing about UN. Forward and backward are composed of ordinary tensor
//! ops, so the layer runs on every backend. Only the branch decisions reach the host: the
//! outlier test reads one scalar (only while filtering is active), and the iteration
//! counter is mirrored on the host (re-read only when its buffer was replaced from outside,
//! e.g. by a checkpoint load), so a step without filtering does not wait for the device.
//!
//! # State
//!
//! Every piece of state is a [`Buffer`], visited under the reference's names
//! (`running_var`, `ema_gz`, `iters`, `buffer_x2`, `buffer_gz`, `skip_counter`) so a
//! checkpoint saves and restores it. The custom op holds clones of the buffers: its
//! backward updates `ema_gz` and `buffer_gz`, which the module (and its checkpoint) then
//! sees. Buffers are always *replaced* (never mutated in place), so a [`UnState`]
//! snapshot taken with [`UnifiedNorm::state`] stays valid and [`UnifiedNorm::set_state`]
//! rewinds the layer — which is what a gradient check needs, because every training
//! forward advances the state.
//!
//! # The algorithm
//!
//! `ALGORITHMS.md` §1 next to the fixtures (`tests/data/fixtures/`) describes it step by
//! step (F1–F10 forward, B1–B8 backward); the comments below cite those step names and the
//! §3 checklist items ("quirk §3.n") where a reference peculiarity is reproduced.
//!
//! Set [`UnConfig::calibrated_backward`] to `false` for the *exact* variant: the same
//! forward (same statistics, branches and state updates of `running_var`, `buffer_x2`,
//! `iters`, `skip_counter`) built from differentiable ops, so autograd yields the true
//! gradient (ALGORITHMS.md §1.6). It leaves `ema_gz` and `buffer_gz` untouched, since only
//! the calibrated backward uses them.
//!
//! # Higher-order gradients
//!
//! The calibrated backward is first-order only, by design: it is a deliberately
//! approximate gradient (statistics from past steps, smoothed `ema_gz`), not the
//! derivative of any function of the input, so "its derivative" has no meaning to
//! reproduce. The op does not implement `CustomOp::differentiable_backward`: a
//! `create_graph` backward gets the calibrated first-order gradient, and a second
//! backward through it is an error naming the op. The exact variant
//! (`calibrated_backward = false`) is built from differentiable core ops and supports
//! gradients of gradients.
//!
//! # Where this layer differs from the reference
//!
//! A training batch whose padding mask covers every token would make the reference write
//! NaN into `running_var` (and every later step, evaluation and checkpoint would inherit
//! it); this layer skips such a batch ([`UnifiedNorm::forward`]). A mask holds only 0 and
//! 1: any other value is an error here, where the reference's valid set (ALGORITHMS.md
//! §1.1, positions where the mask is 0) would count it as padding.

use super::stats::{check_state, token_norm_accessors, valid_sq_mean, Counter, TokenParams};
use super::trace::TraceSite;
use crate::module::{join, Buffer, BufferVisitor, Module, ParamVisitor};
use std::sync::{Arc, Mutex};
use unigrad_core::custom::{apply, CustomOp};
use unigrad_core::{no_grad, DType, Device, Error, Result, Tensor};

const OP: &str = "UnifiedNorm";

/// Forward and backward window sizes of UN. Build it from one value (`4.into()`: both
/// windows 4) or a pair (`(3, 5).into()`: forward 3, backward 5), as the reference's
/// `window_size` argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Forward window `F`: rows of `buffer_x2` (fluctuation smoothing, outlier test).
    pub fwd: usize,
    /// Backward window `K`: rows of `buffer_gz` (the calibrated gradient statistic).
    pub bwd: usize,
}

impl From<usize> for Window {
    fn from(w: usize) -> Window {
        Window { fwd: w, bwd: w }
    }
}

impl From<(usize, usize)> for Window {
    fn from((fwd, bwd): (usize, usize)) -> Window {
        Window { fwd, bwd }
    }
}

/// Hyperparameters of [`UnifiedNorm`]. The defaults are the reference `UN1d`'s.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UnConfig {
    /// Forward/backward windows (reference default 4).
    pub window: Window,
    /// Iterations before the smoothed statistic and the windowed gradient statistic are
    /// used (reference default 4000).
    pub warmup_iters: u64,
    /// Adaptive outlier filtration (reference default off; the authors suggest on for
    /// vision, off for NLP).
    pub outlier_filtration: bool,
    /// Added to the statistic before the square root (default 1e-5).
    pub eps: f64,
    /// Momentum of `running_var` and `ema_gz`, applied as `μ·old + (1−μ)·new`
    /// (default 0.9).
    pub momentum: f64,
    /// `true` (default): the reference's calibrated custom backward. `false`: the exact
    /// gradient of the same forward, through autograd (for experiments and gradchecks).
    pub calibrated_backward: bool,
    /// Bounds on the calibrated backward's gradient scale `r = √(v+ε)/√(ρ+ε)` (reference:
    /// `Some((0.2, 5.0))`, hard-wired there). `None` leaves `r` unclamped; `Some((1.0, 1.0))`
    /// turns `r` off (it is then 1 at every step). A switch for ablations: the authors'
    /// code has no such option.
    pub r_clamp: Option<(f64, f64)>,
}

impl Default for UnConfig {
    fn default() -> Self {
        UnConfig {
            window: Window { fwd: 4, bwd: 4 },
            warmup_iters: 4000,
            outlier_filtration: false,
            eps: 1e-5,
            momentum: 0.9,
            calibrated_backward: true,
            r_clamp: Some((0.2, 5.0)),
        }
    }
}

impl UnConfig {
    /// The same config with another window (`4` or `(3, 5)`).
    pub fn with_window(mut self, w: impl Into<Window>) -> Self {
        self.window = w.into();
        self
    }

    fn validate(&self, channels: usize) -> Result<()> {
        let bad = |msg: String| Err(Error::invalid(OP, msg));
        if channels == 0 {
            return bad("channels must be at least 1".into());
        }
        if self.window.fwd == 0 || self.window.bwd == 0 {
            return bad(format!("window sizes must be at least 1, got {:?}", self.window));
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return bad(format!("eps must be finite and >= 0, got {}", self.eps));
        }
        if !(0.0..=1.0).contains(&self.momentum) {
            return bad(format!("momentum must be in [0, 1], got {}", self.momentum));
        }
        if let Some((lo, hi)) = self.r_clamp {
            if !(lo.is_finite() && hi.is_finite() && 0.0 < lo && lo <= hi) {
                return bad(format!("r_clamp must satisfy 0 < lo <= hi (finite), got ({lo}, {hi})"));
            }
        }
        Ok(())
    }
}

/// A snapshot of all of UN's state buffers (cheap: tensors are shared handles, and the
/// layer replaces buffers rather than mutating them).
#[derive(Clone, Debug)]
pub struct UnState {
    /// `[C]` running statistic `ρ` (initially 1).
    pub running_var: Tensor,
    /// `[C]` EMA of the gradient statistic `e` (initially 0).
    pub ema_gz: Tensor,
    /// `[F, C]` ring buffer of batch statistics `Q` (initially 0).
    pub buffer_x2: Tensor,
    /// `[K, C]` ring buffer of gradient statistics `H` (initially 0).
    pub buffer_gz: Tensor,
    /// `[1]` i64 iteration counter.
    pub iters: Tensor,
    /// `[1]` i64 number of iterations the outlier filter skipped.
    pub skip_counter: Tensor,
}

/// What the last training forward did (diagnostics; mirrors the fixtures' per-step
/// `var`, `r` and `skipped` records).
#[derive(Clone, Debug)]
pub struct UnStep {
    /// The counter value the step ran with (the first training call has 1).
    pub iteration: u64,
    /// The outlier filter fired (the skip counter went up).
    pub skipped: bool,
    /// The step behaved as skipped: a filter skip, or any step when the forward window
    /// is 1 (the reference treats those as skips without counting them).
    pub treated_as_skip: bool,
    /// The forward normalised by the windowed geometric mean (else the batch statistic).
    pub smoothed: bool,
    /// `[C]` statistic the step normalised by.
    pub var: Tensor,
    /// `[C]` gradient scale `r` handed to the backward (exactly 1 where not applied).
    pub r: Tensor,
}

// ----- helpers -------------------------------------------------------------------------

/// `buf` (`[R, C]`) with row `j` replaced by `row` (`[C]`); differentiable in `row`.
fn write_row(buf: &Tensor, j: usize, row: &Tensor) -> Result<Tensor> {
    let rows = buf.shape()[0];
    let row = row.reshape(&[1, row.numel()])?;
    let mut parts = Vec::with_capacity(3);
    if j > 0 {
        parts.push(buf.narrow(0, 0, j)?);
    }
    parts.push(row);
    if j + 1 < rows {
        parts.push(buf.narrow(0, j + 1, rows - j - 1)?);
    }
    let refs: Vec<&Tensor> = parts.iter().collect();
    Tensor::cat(&refs, 0)
}

// ----- the layer -------------------------------------------------------------------------

/// Everything a training step reads or writes besides its inputs; cloned (cheaply: all
/// handles) into each custom op so that its backward updates the layer's own buffers.
#[derive(Clone, Debug)]
struct UnShared {
    cfg: UnConfig,
    device: Device,
    running_var: Buffer,
    ema_gz: Buffer,
    buffer_x2: Buffer,
    buffer_gz: Buffer,
    skip_counter: Arc<Counter>,
    last: Arc<Mutex<Option<UnStep>>>,
    /// Where statistics are recorded ([`super::trace`]); `None`: nothing is read back.
    trace: Option<TraceSite>,
}

/// What the training forward hands to the backward.
struct FwdOut {
    y: Tensor,
    z: Tensor,
    s: Tensor,
    r: Tensor,
    skip: bool,
}

/// The training forward, F2–F10 of ALGORITHMS.md §1.2, for iteration `i` (F1 done by the
/// caller). Runs on detached inputs inside the calibrated custom op, or on tracked inputs
/// for the exact variant (then autograd differentiates it; the host decisions and the
/// buffer writes use detached values, so the buffers' old contents are constants).
fn un_forward(sh: &UnShared, i: u64, x: &Tensor, w: &Tensor, b: &Tensor, valid: Option<&Tensor>) -> Result<FwdOut> {
    let cfg = &sh.cfg;
    let (f, wu) = (cfg.window.fwd, cfg.warmup_iters);
    let c = x.shape()[2];
    let rho = sh.running_var.get();
    let q_old = sh.buffer_x2.get();

    // F2: batch quadratic mean over valid tokens only (quirk §3.1, §3.2).
    let q = valid_sq_mean(x, valid)?;

    // F4: ring-buffer write at slot i mod F with the incremented counter (quirk §3.3): the
    // first call writes row 1 (row 0 when F = 1), on every step, filtering or not.
    let j = (i % f as u64) as usize;
    let mut qbuf = write_row(&q_old, j, &q)?;

    // F5: with a one-row window every step is internally a skip, but not counted.
    let mut skip = f == 1;
    let mut counted_skip = false;
    if cfg.outlier_filtration && i >= wu {
        // F3: the spread σ is ONE scalar over all F·C entries: the unbiased variance of
        // sqrt(Q), taken from the buffer BEFORE this step's write (quirk §3.4). With F·C = 1
        // it is NaN and the comparison below is false.
        let fired = if f * c > 1 {
            no_grad(|| -> Result<bool> {
                let sigma = q_old.sqrt()?.var(&[0, 1], false, true)?;
                let qd = qbuf.detach();
                let am = qd.mean(&[0], false)?;
                // quirk §3.7: geometric mean = exp(mean(ln Q)); ln 0 = −∞ makes it 0 while
                // zero rows remain (§1.5).
                let gm = qd.log()?.mean(&[0], false)?.exp()?;
                // quirk §3.5: strict `>`, and ANY channel fires the skip for all.
                let hits = am.sub(&gm)?.gt(&sigma.mul_scalar(f as f64)?)?.sum_all()?;
                Ok(hits.to_scalar()? > 0.0)
            })?
        } else {
            false
        };
        if fired {
            // The slot gets the running statistic ρ from before its F9 update.
            qbuf = write_row(&q_old, j, &rho)?;
            skip = true;
            counted_skip = true;
            let n = sh.skip_counter.get(OP)?;
            sh.skip_counter.set(n + 1, &sh.device)?;
        }
    }

    // F6: note `i ≤ F` for the window but strict `i < W` for warm-up (quirk §3.6).
    let smoothed = !(i <= f as u64 || i < wu || skip);
    let v = if smoothed {
        qbuf.log()?.mean(&[0], false)?.exp()?
    } else {
        q.clone()
    };
    let vd = v.detach();

    // F7: r uses ρ before its update; exactly 1 until i > max(1000, W) — the 1000 is
    // hard-wired in the reference — and on skips, else clamped to [0.2, 5] (quirk §3.8;
    // `r_clamp` changes the bounds for ablations).
    let r = if i <= 1000u64.max(wu) || skip {
        Tensor::ones(&[c], x.dtype(), x.device())?
    } else {
        no_grad(|| {
            let r = vd.add_scalar(cfg.eps)?.sqrt()?.div(&rho.add_scalar(cfg.eps)?.sqrt()?)?;
            match cfg.r_clamp {
                Some((lo, hi)) => r.clamp(lo, hi),
                None => Ok(r),
            }
        })?
    };

    // F8: normalise every position, padded ones included.
    let s = v.add_scalar(cfg.eps)?.sqrt()?;
    let z = x.div(&s)?;

    // F9: ρ ← μ·ρ + (1−μ)·v ("old times momentum", quirk §3.9), on skipped steps too:
    // the skip protects buffer_x2 but not ρ (§1.5).
    let new_rho = no_grad(|| rho.mul_scalar(cfg.momentum)?.add(&vd.mul_scalar(1.0 - cfg.momentum)?))?;
    if let Some(t) = sh.trace.as_ref().filter(|t| t.is_active()) {
        let flags = [
            (counted_skip, "skip"),
            (skip, "treated_as_skip"),
            (smoothed, "smoothed"),
        ];
        trace_forward(t, &q, &vd, &qbuf, &rho, &new_rho, &r, flags)?;
    }
    sh.running_var.set(new_rho);
    sh.buffer_x2.set(qbuf);

    // F10.
    let y = w.mul(&z)?.add(b)?;

    *sh.last.lock().expect("UnifiedNorm diagnostics lock poisoned") = Some(UnStep {
        iteration: i,
        skipped: counted_skip,
        treated_as_skip: skip,
        smoothed,
        var: vd,
        r: r.clone(),
    });
    Ok(FwdOut {
        y,
        z: z.detach(),
        s: s.detach(),
        r,
        skip,
    })
}

/// Record one training forward's statistics (see [`super::trace`] for the quantities).
#[allow(clippy::too_many_arguments)]
fn trace_forward(
    t: &TraceSite,
    q: &Tensor,
    v: &Tensor,
    qbuf: &Tensor,
    rho_old: &Tensor,
    rho_new: &Tensor,
    r: &Tensor,
    flags: [(bool, &'static str); 3],
) -> Result<()> {
    let qh = q.to_vec_f64()?;
    t.record_values("un", "batch_stat", &qh);
    t.record_tensor("un", "used_stat", v)?;
    // geometric mean over the window rows, per channel (exp(mean(ln Q)), 0 for empty rows)
    let (rows, c) = (qbuf.shape()[0], qbuf.shape()[1]);
    let qb = qbuf.to_vec_f64()?;
    let gm: Vec<f64> = (0..c)
        .map(|j| ((0..rows).map(|i| qb[i * c + j].ln()).sum::<f64>() / rows as f64).exp())
        .collect();
    t.record_values("un", "window_gm", &gm);
    t.record_tensor("un", "running_stat", rho_new)?;
    t.record_fluctuation("un", &qh, &rho_old.to_vec_f64()?);
    t.record_tensor("un", "r", r)?;
    for (on, name) in flags {
        t.record_scalar("un", name, if on { 1.0 } else { 0.0 });
    }
    Ok(())
}

/// The calibrated training step as a custom op: inputs `[x, weight, bias]`.
struct UnOp {
    sh: UnShared,
    i: u64,
    valid: Option<Tensor>,
    saved: Option<(FwdOut, Tensor)>,
}

impl CustomOp for UnOp {
    fn name(&self) -> String {
        "unified_norm".into()
    }

    fn forward(&mut self, inputs: &[Tensor]) -> Result<Tensor> {
        let (x, w, b) = (&inputs[0], &inputs[1], &inputs[2]);
        let out = un_forward(&self.sh, self.i, x, w, b, self.valid.as_ref())?;
        let y = out.y.clone();
        self.saved = Some((out, w.clone()));
        Ok(y)
    }

    /// B1–B8 of ALGORITHMS.md §1.3, with the `i` and skip decision of the forward.
    fn backward(self: Box<Self>, gy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (out, w) = self
            .saved
            .ok_or_else(|| Error::invalid(OP, "backward ran before the forward"))?;
        let cfg = &self.sh.cfg;
        let (k, wu, mu, i) = (cfg.window.bwd, cfg.warmup_iters, cfg.momentum, self.i);
        let FwdOut { z, s, r, skip, .. } = out;

        // B1: g = δ·γ·r — r scales the gradient (quirk §3.8).
        let g = gy.mul(&w)?.mul(&r)?;
        // B2: the correction statistic averages over ALL P positions, padding included,
        // dividing by P (quirk §3.1).
        let h = g.mul(&z)?.mean(&[0, 1], false)?;
        let trace = self.sh.trace.as_ref().filter(|t| t.is_active());
        if let Some(t) = trace {
            t.record_tensor("un", "grad_stat", &h)?;
        }
        // B3: slot i mod K; a skipped step stores the OLD ema_gz instead of h (quirk §3.5).
        let e_old = self.sh.ema_gz.get();
        let j = (i % k as u64) as usize;
        let hbuf = write_row(&self.sh.buffer_gz.get(), j, if skip { &e_old } else { &h })?;
        // B4: `i ≤ K`, strict `i < W` (quirk §3.6).
        let m = if i <= k as u64 || i < wu || skip {
            h
        } else {
            hbuf.mean(&[0], false)?
        };
        // B5: e ← μ·e + (1−μ)·m on every step, skipped or not (quirk §3.9).
        let e_new = e_old.mul_scalar(mu)?.add(&m.mul_scalar(1.0 - mu)?)?;
        if let Some(t) = trace {
            t.record_tensor("un", "grad_stat_used", &m)?;
            t.record_tensor("un", "ema_gz", &e_new)?;
        }
        // B6: a skip corrects with the batch's own h, otherwise with the updated EMA.
        let corr = if skip { m } else { e_new.clone() };
        let d = g.sub(&corr.mul(&z)?)?;
        self.sh.buffer_gz.set(hbuf);
        self.sh.ema_gz.set(e_new);
        // B7: the reference multiplies by 1/s rather than dividing.
        let gx = s.recip()?.mul(&d)?;
        // B8: ∂γ uses r·z; both sums run over all positions.
        let gw = gy.mul(&r.mul(&z)?)?.sum(&[0, 1], false)?;
        let gb = gy.sum(&[0, 1], false)?;
        Ok(vec![Some(gx), Some(gw), Some(gb)])
    }
}

/// Unified Normalization over the channel (last) dimension of `[B, N, C]` tokens.
#[derive(Debug)]
pub struct UnifiedNorm {
    p: TokenParams,
    sh: UnShared,
}

impl UnifiedNorm {
    /// A layer for `channels` features, with `weight = 1`, `bias = 0` and the reference's
    /// initial state (`running_var = 1`, everything else 0). Starts in training mode.
    pub fn new(channels: usize, cfg: UnConfig, dtype: DType, device: &Device) -> Result<Self> {
        cfg.validate(channels)?;
        let p = TokenParams::new(OP, channels, dtype, device)?;
        let (f, k) = (cfg.window.fwd, cfg.window.bwd);
        Ok(UnifiedNorm {
            p,
            sh: UnShared {
                cfg,
                device: device.clone(),
                running_var: Buffer::new(Tensor::ones(&[channels], dtype, device)?),
                ema_gz: Buffer::new(Tensor::zeros(&[channels], dtype, device)?),
                buffer_x2: Buffer::new(Tensor::zeros(&[f, channels], dtype, device)?),
                buffer_gz: Buffer::new(Tensor::zeros(&[k, channels], dtype, device)?),
                skip_counter: Arc::new(Counter::new(device)?),
                last: Arc::new(Mutex::new(None)),
                trace: None,
            },
        })
    }

    /// The configuration.
    pub fn config(&self) -> &UnConfig {
        &self.sh.cfg
    }

    token_norm_accessors!();

    /// How many iterations the outlier filter has skipped.
    pub fn skip_count(&self) -> Result<u64> {
        self.sh.skip_counter.get(OP)
    }

    /// What the last training forward did, if there was one.
    pub fn last_step(&self) -> Option<UnStep> {
        self.sh
            .last
            .lock()
            .expect("UnifiedNorm diagnostics lock poisoned")
            .clone()
    }

    /// A snapshot of every state buffer.
    pub fn state(&self) -> UnState {
        UnState {
            running_var: self.sh.running_var.get(),
            ema_gz: self.sh.ema_gz.get(),
            buffer_x2: self.sh.buffer_x2.get(),
            buffer_gz: self.sh.buffer_gz.get(),
            iters: self.p.iters.buffer().get(),
            skip_counter: self.sh.skip_counter.buffer().get(),
        }
    }

    /// Restore a snapshot. Shapes and dtypes are checked first (nothing changes on an
    /// error); tensors on another device are copied to this layer's.
    pub fn set_state(&self, s: &UnState) -> Result<()> {
        let (c, f, k, d) = (
            self.p.channels,
            self.sh.cfg.window.fwd,
            self.sh.cfg.window.bwd,
            self.p.dtype,
        );
        check_state(OP, "running_var", &s.running_var, &[c], d)?;
        check_state(OP, "ema_gz", &s.ema_gz, &[c], d)?;
        check_state(OP, "buffer_x2", &s.buffer_x2, &[f, c], d)?;
        check_state(OP, "buffer_gz", &s.buffer_gz, &[k, c], d)?;
        check_state(OP, "iters", &s.iters, &[1], DType::I64)?;
        check_state(OP, "skip_counter", &s.skip_counter, &[1], DType::I64)?;
        let dev = &self.sh.device;
        let moved = [
            s.running_var.to_device(dev)?,
            s.ema_gz.to_device(dev)?,
            s.buffer_x2.to_device(dev)?,
            s.buffer_gz.to_device(dev)?,
            s.iters.to_device(dev)?,
            s.skip_counter.to_device(dev)?,
        ];
        let [rv, ez, bx, bg, it, sc] = moved;
        self.sh.running_var.set(rv);
        self.sh.ema_gz.set(ez);
        self.sh.buffer_x2.set(bx);
        self.sh.buffer_gz.set(bg);
        self.p.iters.buffer().set(it);
        self.sh.skip_counter.buffer().set(sc);
        Ok(())
    }

    /// Normalise `x` (`[B, N, C]`, or `[N, C]` as one sequence) with an optional padding
    /// mask `[B, N]` (1 = padding, 0 = token; any dtype, and any other value is an error
    /// naming it). In training mode this advances the state (see the module docs) and the
    /// result's backward is the calibrated one; in eval mode it uses `running_var` and
    /// changes nothing (the mask is still checked).
    ///
    /// # A batch of padding only
    ///
    /// A training call whose mask marks every token as padding has no batch statistic
    /// (the reference divides 0 by 0 and writes NaN into `running_var` for good). This
    /// layer skips such a step instead: it returns the eval-mode output
    /// `γ·x/sqrt(running_var + ε) + β` (finite, differentiable by ordinary autograd) and
    /// leaves every buffer, the iteration counter, the skip counter,
    /// [`last_step`](Self::last_step) and the trace untouched, so evaluation and checkpoints never see
    /// a statistic from it.
    pub fn forward(&self, x: &Tensor, pad_mask: Option<&Tensor>) -> Result<Tensor> {
        self.forward_with_params(x, &self.p.weight, &self.p.bias, pad_mask)
    }

    /// [`forward`](Self::forward) with explicit `weight` and `bias` (`[C]` each) in place
    /// of the layer's parameters — for gradient checks and functional use.
    pub fn forward_with_params(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        pad_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let inp = self.p.input(OP, x, weight, bias, pad_mask)?;
        let y = if !self.p.training || inp.all_padding() {
            // §1.4: y = γ·x/sqrt(ρ+ε) + β everywhere; the mask is ignored (quirk §3.12).
            // A training batch of padding only takes this path too (see `forward`).
            let s = self.sh.running_var.get().add_scalar(self.sh.cfg.eps)?.sqrt()?;
            weight.mul(&inp.x.div(&s)?)?.add(bias)?
        } else {
            // F1: the counter goes up before anything else; the step runs with the new value.
            let i = self.p.next_iteration(OP)?;
            if self.sh.cfg.calibrated_backward {
                let op = UnOp {
                    sh: self.sh.clone(),
                    i,
                    valid: inp.valid.clone(),
                    saved: None,
                };
                apply(op, &[&inp.x, weight, bias])?
            } else {
                un_forward(&self.sh, i, &inp.x, weight, bias, inp.valid.as_ref())?.y
            }
        };
        let y = inp.finish(y)?;
        super::trace::record_output_grad(self.sh.trace.as_ref(), "un", &y)?;
        Ok(y)
    }
}

impl Module for UnifiedNorm {
    fn visit_params(&self, prefix: &str, f: &mut ParamVisitor<'_>) {
        self.p.visit(prefix, f);
    }

    /// The reference's buffer names, in its registration order.
    fn visit_buffers(&self, prefix: &str, f: &mut BufferVisitor<'_>) {
        f(&join(prefix, "running_var"), &self.sh.running_var);
        f(&join(prefix, "ema_gz"), &self.sh.ema_gz);
        f(&join(prefix, "iters"), self.p.iters.buffer());
        f(&join(prefix, "buffer_x2"), &self.sh.buffer_x2);
        f(&join(prefix, "buffer_gz"), &self.sh.buffer_gz);
        f(&join(prefix, "skip_counter"), self.sh.skip_counter.buffer());
    }

    fn set_train(&mut self, train: bool) {
        self.p.training = train;
    }
}
