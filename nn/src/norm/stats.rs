//! What the token-statistics norms (BatchNorm, PowerNorm, UN) share: input and state
//! checks, the padding mask turned into a validity indicator, the quadratic mean over
//! valid tokens, and the host-mirrored step counter.
//!
//! # Why one module
//!
//! The three layers define "valid token" and "iteration" the same way, and a checkpoint
//! or a mask must mean the same thing to each. Keeping these helpers here (rather than in
//! one layer that the others borrow from) keeps `norm/` a tree: this module and
//! `trace.rs` are leaves, the layer files use them, and `mod.rs` ties the layers together.

use crate::module::{join, Buffer, ParamVisitor};
use std::sync::{Arc, Mutex, Weak};
use unigrad_core::{BackendStorage, DType, Device, Error, HostData, Result, Tensor};

/// A host mirror of an i64 `[1]` counter buffer, so that reading it does not copy from
/// the device on every step. The mirror is trusted only while the buffer still holds the
/// very storage the mirror was taken from (a checkpoint load or `set_state` replaces it,
/// and so does an in-place `assign`).
pub(crate) struct Counter {
    buf: Buffer,
    cache: Mutex<Option<(Arc<dyn BackendStorage>, u64)>>,
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counter")
            .field("buf", &self.buf)
            .finish_non_exhaustive()
    }
}

impl Counter {
    /// A counter at 0 on `device`.
    pub(crate) fn new(device: &Device) -> Result<Counter> {
        Ok(Counter {
            buf: Buffer::new(Tensor::from_vec(vec![0i64], &[1], device)?),
            cache: Mutex::new(None),
        })
    }

    /// The buffer (visited by the layer's `visit_buffers`, so checkpoints see it).
    pub(crate) fn buffer(&self) -> &Buffer {
        &self.buf
    }

    /// The count; copies from the device only when the buffer was replaced from outside.
    pub(crate) fn get(&self, op: &'static str) -> Result<u64> {
        let t = self.buf.get();
        let storage = t.storage();
        let mut cache = self.cache.lock().expect("counter lock poisoned");
        if let Some((s, v)) = cache.as_ref() {
            if std::ptr::addr_eq(Arc::as_ptr(s), Arc::as_ptr(&storage)) {
                return Ok(*v);
            }
        }
        if t.numel() != 1 {
            return Err(Error::invalid(
                op,
                format!("counter buffer must hold one element, has shape {:?}", t.shape()),
            ));
        }
        let v = t.to_scalar()?;
        if !(v >= 0.0 && v.fract() == 0.0) {
            return Err(Error::invalid(op, format!("counter buffer holds {v}, not a count")));
        }
        *cache = Some((storage, v as u64));
        Ok(v as u64)
    }

    /// Replace the count by `v`.
    pub(crate) fn set(&self, v: u64, device: &Device) -> Result<()> {
        let t = Tensor::from_vec(vec![v as i64], &[1], device)?;
        let storage = t.storage();
        self.buf.set(t);
        *self.cache.lock().expect("counter lock poisoned") = Some((storage, v));
        Ok(())
    }
}

/// Check a `[B, N, C]` or `[N, C]` input; return it as `[B, N, C]` and whether it was 2-D.
pub(crate) fn input_3d(
    op: &'static str,
    x: &Tensor,
    channels: usize,
    dtype: DType,
    device: &Device,
) -> Result<(Tensor, bool)> {
    if x.dtype() != dtype {
        return Err(Error::DTypeMismatch {
            op,
            lhs: x.dtype(),
            rhs: dtype,
        });
    }
    if !x.device().same(device) {
        return Err(Error::DeviceMismatch {
            op,
            lhs: x.device().name(),
            rhs: device.name(),
        });
    }
    let ok = matches!(x.rank(), 2 | 3) && x.shape()[x.rank() - 1] == channels && x.numel() > 0;
    if !ok {
        return Err(Error::invalid(
            op,
            format!(
                "expected a non-empty input [B, N, {channels}] or [N, {channels}], got {:?}",
                x.shape()
            ),
        ));
    }
    if x.rank() == 2 {
        Ok((x.unsqueeze(0)?, true))
    } else {
        Ok((x.clone(), false))
    }
}

/// Turn a padding mask (any dtype; 1 = padding, 0 = token) over the token positions `lead`
/// (the input's shape without its channel dimension) into the validity indicator of shape
/// `lead + [1]` in `dtype` (1 = valid token, 0 = padding), with the number of valid tokens.
/// The mask has shape `lead`, or `lead` without its leading 1s (`[N]` for a single sequence
/// `[1, N]`), and holds only 0 and 1 ([`check_mask`]).
pub(crate) fn valid_indicator(
    op: &'static str,
    mask: &Tensor,
    lead: &[usize],
    dtype: DType,
) -> Result<(Tensor, usize)> {
    let count = check_mask(op, mask, lead)?;
    let mut shape = lead.to_vec();
    shape.push(1);
    Ok((mask.detach().to_dtype(dtype)?.reshape(&shape)?.eq_scalar(0.0)?, count))
}

/// Check that a padding mask fits the token positions `lead` (see [`valid_indicator`]) and
/// holds only 0 (token) and 1 (padding); return the number of valid tokens (zeros).
///
/// Any other value — 2, −1, 0.5, NaN — is an error naming the value and its position: a
/// mask is a set of positions, and a weight other than 0 or 1 has no meaning in the
/// statistics (an earlier BatchNorm counted a 2 with weight −1).
///
/// Checking the values reads the mask on the host. Every norm of a model gets the same
/// mask tensor, so the result is remembered (per thread) for the last mask checked, and
/// the other layers of the same step do not read it again. The memory is keyed by the
/// tensor's id and its storage, so a new mask or an `assign` to this one is read afresh.
pub(crate) fn check_mask(op: &'static str, mask: &Tensor, lead: &[usize]) -> Result<usize> {
    let ones = lead.iter().take_while(|&&d| d == 1).count();
    if mask.shape() != lead && mask.shape() != &lead[ones..] {
        return Err(Error::invalid(
            op,
            format!(
                "padding mask must have shape {lead:?} to match the input, got {:?}",
                mask.shape()
            ),
        ));
    }
    let storage = mask.storage();
    let cached = LAST_MASK.with(|c| match &*c.borrow() {
        Some((id, weak, count)) if *id == mask.id() => weak
            .upgrade()
            .filter(|s| std::ptr::addr_eq(Arc::as_ptr(s), Arc::as_ptr(&storage)))
            .map(|_| *count),
        _ => None,
    });
    if let Some(count) = cached {
        return Ok(count);
    }
    let count = count_valid(op, mask)?;
    LAST_MASK.with(|c| *c.borrow_mut() = Some((mask.id(), Arc::downgrade(&storage), count)));
    Ok(count)
}

/// A mask [`check_mask`] accepted: its tensor id, its storage and its number of valid
/// tokens.
type CheckedMask = (usize, Weak<dyn BackendStorage>, usize);

thread_local! {
    /// The last mask [`check_mask`] accepted on this thread.
    static LAST_MASK: std::cell::RefCell<Option<CheckedMask>> = const { std::cell::RefCell::new(None) };
}

/// The number of zeros of a 0/1 mask; any other value is an error naming it and where.
fn count_valid(op: &'static str, mask: &Tensor) -> Result<usize> {
    let bad = |i: usize, v: String| {
        let mut pos = vec![0; mask.rank()];
        let mut rest = i;
        for (p, &d) in pos.iter_mut().zip(mask.shape()).rev() {
            *p = rest % d;
            rest /= d;
        }
        Err(Error::invalid(
            op,
            format!(
                "padding mask of shape {:?} must hold only 0 (token) and 1 (padding), found {v} at {pos:?}",
                mask.shape()
            ),
        ))
    };
    let scanned = match mask.to_host()? {
        HostData::I64(v) => scan(&v, 0, 1),
        HostData::F32(v) => scan(&v, 0.0, 1.0),
        HostData::F64(v) => scan(&v, 0.0, 1.0),
    };
    scanned.or_else(|(i, v)| bad(i, v))
}

/// The number of `zero`s in `v`, or the first element that is neither `zero` nor `one`
/// (its index and value).
fn scan<T: Copy + PartialEq + std::fmt::Display>(
    v: &[T],
    zero: T,
    one: T,
) -> std::result::Result<usize, (usize, String)> {
    let mut zeros = 0;
    for (i, &m) in v.iter().enumerate() {
        if m == zero {
            zeros += 1;
        } else if m != one {
            return Err((i, m.to_string()));
        }
    }
    Ok(zeros)
}

/// Per-channel quadratic mean over valid tokens: `[B, N, C]` → `[C]`.
///
/// Quirk §3.1/§3.2 of the fixtures' ALGORITHMS.md: only valid tokens enter the forward
/// statistic, divided by their count `M`, and nothing is centred. (An all-padding batch
/// would give NaN, like the reference's mean of an empty selection; the layers never call
/// this for one, see [`TokenInput::all_padding`].)
pub(crate) fn valid_sq_mean(x: &Tensor, valid: Option<&Tensor>) -> Result<Tensor> {
    let x2 = x.sqr()?;
    match valid {
        None => x2.mean(&[0, 1], false),
        Some(v) => {
            let zero = Tensor::scalar(0.0, x.dtype(), x.device())?;
            let s = v.where_cond(&x2, &zero)?.sum(&[0, 1], false)?;
            s.div(&v.sum_all()?)
        }
    }
}

/// Check that a parameter is a `[C]` tensor of the layer's dtype.
pub(crate) fn check_param(op: &'static str, name: &str, p: &Tensor, channels: usize, dtype: DType) -> Result<()> {
    if p.shape() != [channels] || p.dtype() != dtype {
        return Err(Error::invalid(
            op,
            format!("{name} must be [{channels}] {dtype}, got {:?} {}", p.shape(), p.dtype()),
        ));
    }
    Ok(())
}

/// Check a state tensor's shape and dtype before it is restored.
pub(crate) fn check_state(op: &'static str, name: &str, t: &Tensor, shape: &[usize], dtype: DType) -> Result<()> {
    if t.shape() != shape || t.dtype() != dtype {
        return Err(Error::invalid(
            op,
            format!(
                "state {name} must be {shape:?} {dtype}, got {:?} {}",
                t.shape(),
                t.dtype()
            ),
        ));
    }
    Ok(())
}

/// The checked operands of one UN or PowerNorm call: the input as `[B, N, C]`, whether it
/// came as `[N, C]`, and the validity indicator `[B, N, 1]` of the padding mask.
pub(crate) struct TokenInput {
    /// The input as `[B, N, C]`.
    pub(crate) x: Tensor,
    /// The caller passed `[N, C]` (the output is squeezed back by [`TokenInput::finish`]).
    pub(crate) was_2d: bool,
    /// `[B, N, 1]`, 1 for valid tokens; `None` without a mask.
    pub(crate) valid: Option<Tensor>,
    /// The number of valid tokens; `None` without a mask (then every token is valid).
    pub(crate) valid_count: Option<usize>,
}

impl TokenInput {
    /// Check `x`, `weight`, `bias` (`[C]` each) and the mask of a layer over `channels`
    /// features in `dtype` on `device`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        op: &'static str,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        pad_mask: Option<&Tensor>,
        channels: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<TokenInput> {
        let (x3, was_2d) = input_3d(op, x, channels, dtype, device)?;
        check_param(op, "weight", weight, channels, dtype)?;
        check_param(op, "bias", bias, channels, dtype)?;
        let lead = [x3.shape()[0], x3.shape()[1]];
        let (valid, valid_count) = match pad_mask {
            Some(m) => {
                let (v, n) = valid_indicator(op, m, &lead, dtype)?;
                (Some(v), Some(n))
            }
            None => (None, None),
        };
        Ok(TokenInput {
            x: x3,
            was_2d,
            valid,
            valid_count,
        })
    }

    /// The mask marks every token as padding. A training step then has no statistic to
    /// take (the quadratic mean over no token is 0/0), so UN and PowerNorm skip it: they
    /// normalise as in eval mode and change no state and no counter.
    pub(crate) fn all_padding(&self) -> bool {
        self.valid_count == Some(0)
    }

    /// `y` (`[B, N, C]`) in the caller's layout.
    pub(crate) fn finish(&self, y: Tensor) -> Result<Tensor> {
        if self.was_2d {
            y.squeeze(0)
        } else {
            Ok(y)
        }
    }
}

/// What UN and PowerNorm hold alike: the channel count, dtype and device, the affine
/// parameters `γ` and `β`, the train/eval mode and the iteration counter.
#[derive(Debug)]
pub(crate) struct TokenParams {
    pub(crate) channels: usize,
    pub(crate) dtype: DType,
    pub(crate) device: Device,
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
    pub(crate) training: bool,
    pub(crate) iters: Counter,
}

impl TokenParams {
    /// `γ = 1`, `β = 0` over `channels` features (at least 1) in a float `dtype`, counter
    /// 0, training mode.
    pub(crate) fn new(op: &'static str, channels: usize, dtype: DType, device: &Device) -> Result<TokenParams> {
        if channels == 0 {
            return Err(Error::invalid(op, "channels must be at least 1"));
        }
        if !dtype.is_float() {
            return Err(Error::UnsupportedDType {
                op,
                dtype,
                shape: vec![channels],
            });
        }
        Ok(TokenParams {
            channels,
            dtype,
            device: device.clone(),
            weight: Tensor::ones(&[channels], dtype, device)?.requires_grad(),
            bias: Tensor::zeros(&[channels], dtype, device)?.requires_grad(),
            training: true,
            iters: Counter::new(device)?,
        })
    }

    /// Check one call's input, parameters and mask ([`TokenInput::new`]).
    pub(crate) fn input(
        &self,
        op: &'static str,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        pad_mask: Option<&Tensor>,
    ) -> Result<TokenInput> {
        TokenInput::new(op, x, weight, bias, pad_mask, self.channels, self.dtype, &self.device)
    }

    /// Advance the counter before anything else of a training step (UN's F1, PowerNorm's
    /// P2) and return the iteration the step runs as (the first training call has 1).
    pub(crate) fn next_iteration(&self, op: &'static str) -> Result<u64> {
        let i = self.iters.get(op)? + 1;
        self.iters.set(i, &self.device)?;
        Ok(i)
    }

    /// Visit `weight` and `bias` under `prefix`.
    pub(crate) fn visit(&self, prefix: &str, f: &mut ParamVisitor<'_>) {
        f(&join(prefix, "weight"), &self.weight);
        f(&join(prefix, "bias"), &self.bias);
    }
}

/// The public accessors UN and PowerNorm share, for a layer with a `p: TokenParams` field
/// and an `OP` name in scope.
macro_rules! token_norm_accessors {
    () => {
        /// Number of channels `C`.
        pub fn channels(&self) -> usize {
            self.p.channels
        }

        /// The layer's dtype (parameters and float buffers).
        pub fn dtype(&self) -> DType {
            self.p.dtype
        }

        /// The scale parameter `γ` (`[C]`, a grad leaf).
        pub fn weight(&self) -> &Tensor {
            &self.p.weight
        }

        /// The shift parameter `β` (`[C]`, a grad leaf).
        pub fn bias(&self) -> &Tensor {
            &self.p.bias
        }

        /// Whether the layer is in training mode.
        pub fn is_training(&self) -> bool {
            self.p.training
        }

        /// The iteration counter: training calls since construction or the last
        /// [`reset_iterations`](Self::reset_iterations).
        pub fn iterations(&self) -> Result<u64> {
            self.p.iters.get(OP)
        }

        /// Restart the iteration counter at 0, so the next training call is iteration 1
        /// and warm-up starts over (fine-tuning from a checkpoint). Statistics (and UN's
        /// skip counter) are kept.
        pub fn reset_iterations(&self) -> Result<()> {
            self.p.iters.set(0, &self.p.device)
        }

        /// Attach (or with `None` detach) a trace site: training steps then record their
        /// statistics there ([`super::trace`]). Without one nothing is read back.
        pub fn set_trace(&mut self, site: Option<TraceSite>) {
            self.sh.trace = site;
        }

        /// The attached trace site, if any.
        pub fn trace_site(&self) -> Option<&TraceSite> {
            self.sh.trace.as_ref()
        }
    };
}
pub(crate) use token_norm_accessors;
