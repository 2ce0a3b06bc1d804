//! The backend trait: what a device must implement for unigrad to run on it.
//!
//! Designed for GPUs from day one: storage is opaque (device memory the host may
//! not be able to address), data crosses to and from the host only through
//! [`Backend::from_host`] / [`Backend::to_host`], every primitive receives strided
//! [`Layout`]s and picks its own specialisation (the fused methods take dense
//! operands and their sizes, except where a method says otherwise), and every call
//! returns a
//! [`Result`] so device errors surface with context.
//!
//! Following tinygrad, the required methods are a *small set of primitives*
//! (elementwise unary and binary maps, reductions, batched matmul, strided copies and
//! casts, gathers and scatters): a new backend that implements only these runs every
//! op in `ops/`. The fused kernels are *provided methods* whose default body composes
//! those primitives, and a backend overrides one only when it has something faster:
//! softmax and log-softmax with their backward passes, row moments, LayerNorm /
//! RMSNorm forward ([`Backend::norm_last`]) and backward
//! ([`Backend::norm_last_backward`]), and the Adam update ([`Backend::adam_update`]).
//!
//! Most ops record a backward written in tensor ops. The softmax and norm families
//! do not: their recorded backward calls a device method
//! ([`Backend::softmax_last_backward`], [`Backend::log_softmax_last_backward`],
//! [`Backend::norm_last_backward`]) on the saved forward results, so a backend's
//! fused kernels serve both directions, and the composed defaults keep every backend
//! differentiable. The Adam update has no gradient: optimizers call it under
//! `no_grad`.
//!
//! The sort and scan families ([`Backend::arg_reduce`], [`Backend::argsort`],
//! [`Backend::cumsum`]) are provided methods whose defaults run the row algorithms
//! of `ops::sort::rows` / `ops::scan::rows` on a host copy, so a new backend runs
//! them unchanged; the CPU and CUDA backends override them.

use crate::dtype::{DType, HostData};
use crate::error::Result;
use crate::layout::Layout;
use std::any::Any;
use std::fmt::Debug;

/// One block of device memory holding elements of a single dtype.
pub trait BackendStorage: Send + Sync + Debug + Any {
    /// Element type.
    fn dtype(&self) -> DType;
    /// Number of elements.
    fn len(&self) -> usize;
    /// True when empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Downcast support for the owning backend.
    fn as_any(&self) -> &dyn Any;
    /// Mutable downcast support for the owning backend.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// Elementwise maps of one operand. Parameterised ops carry their constants.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    /// `-x`
    Neg,
    /// `e^x`
    Exp,
    /// natural log
    Log,
    /// square root
    Sqrt,
    /// `1/sqrt(x)`
    Rsqrt,
    /// `|x|`
    Abs,
    /// `max(x, 0)`; NaN stays NaN (PyTorch)
    Relu,
    /// hyperbolic tangent
    Tanh,
    /// logistic sigmoid
    Sigmoid,
    /// GELU, exact form `x·Φ(x)` with the error function
    GeluErf,
    /// GELU, tanh approximation
    GeluTanh,
    /// derivative of [`UnaryOp::GeluErf`]
    GeluErfGrad,
    /// derivative of [`UnaryOp::GeluTanh`]
    GeluTanhGrad,
    /// `0` where `x ≤ 0`, else `1`, NaN included: the derivative of relu, which
    /// passes the gradient at a NaN input through as PyTorch does
    Step,
    /// sign of x (-1, 0, 1)
    Sign,
    /// `x²`
    Sqr,
    /// `1/x`
    Recip,
    /// `x·mul + add`
    Affine(f64, f64),
    /// `x^p`
    Powf(f64),
    /// `max(x, c)`
    MaxScalar(f64),
    /// `min(x, c)`
    MinScalar(f64),
}

/// Elementwise maps of two operands of the same (already broadcast) shape.
/// Comparisons return 1 or 0 in the operands' dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// `a / b`
    Div,
    /// `max(a, b)`
    Max,
    /// `min(a, b)`
    Min,
    /// `a == b`
    Eq,
    /// `a != b`
    Ne,
    /// `a < b`
    Lt,
    /// `a <= b`
    Le,
    /// `a > b`
    Gt,
    /// `a >= b`
    Ge,
}

/// Reductions over a set of axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    /// sum
    Sum,
    /// maximum
    Max,
    /// minimum
    Min,
}

/// Owned, not yet shared storage: kernels return it, scatter kernels write into it.
pub type BoxStorage = Box<dyn BackendStorage>;

/// Constants of one fused Adam / AdamW update ([`Backend::adam_update`]).
///
/// With `g` the gradient (plus `weight_decay · p` when not `decoupled`):
/// `m ← β1·m + (1−β1)·g`, `v ← β2·v + (1−β2)·g²`, and, when `lr ≠ 0`,
/// `p ← p·(1 − lr·wd if decoupled) − lr/bc1 · m / (√v/√bc2 + eps)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay β1.
    pub beta1: f64,
    /// Second-moment decay β2.
    pub beta2: f64,
    /// Added to the bias-corrected `√v`.
    pub eps: f64,
    /// Weight decay coefficient.
    pub weight_decay: f64,
    /// AdamW (decay applied to the weights) instead of Adam's L2 term.
    pub decoupled: bool,
    /// `1 − β1^t` for this step `t`.
    pub bias_correction1: f64,
    /// `1 − β2^t`.
    pub bias_correction2: f64,
}

impl AdamStep {
    /// The constants of update number `step` (1 for the first), with the bias
    /// corrections `1 − β1^step` and `1 − β2^step` computed here.
    pub fn at_step(
        step: u64,
        lr: f64,
        (beta1, beta2): (f64, f64),
        eps: f64,
        weight_decay: f64,
        decoupled: bool,
    ) -> AdamStep {
        let t = i32::try_from(step).unwrap_or(i32::MAX);
        AdamStep {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
            decoupled,
            bias_correction1: 1.0 - beta1.powi(t),
            bias_correction2: 1.0 - beta2.powi(t),
        }
    }

    /// The update written as `p·decay − m / (√v·a + c)`: returns `(decay, a, c)`.
    /// Both the fused kernels and the composed default use this form, so they agree.
    /// With `lr == 0` `a` and `c` are infinite: callers skip the parameter update then.
    pub fn folded(&self) -> (f64, f64, f64) {
        let decay = if self.decoupled {
            1.0 - self.lr * self.weight_decay
        } else {
            1.0
        };
        let a = self.bias_correction1 / (self.lr * self.bias_correction2.sqrt());
        let c = self.eps * self.bias_correction1 / self.lr;
        (decay, a, c)
    }
}

/// A compute device. Implemented by `unigrad-cpu` and `unigrad-cuda`.
///
/// Conventions for every kernel: input layouts may be arbitrary strided views
/// (broadcast strides of 0 included); outputs are fresh, dense and row-major.
/// Float kernels receive operands of one float dtype (core checks it);
/// index operands are always [`DType::I64`].
pub trait Backend: Send + Sync + Debug {
    /// Device name used in errors and `Display`, e.g. `cpu` or `cuda:0`.
    fn name(&self) -> String;

    /// Zero-filled storage of `len` elements.
    fn zeros(&self, len: usize, dtype: DType) -> Result<BoxStorage>;

    /// Copy host data to the device.
    // `from_host` reads as "upload from the host"; it needs the device, hence `&self`.
    #[allow(clippy::wrong_self_convention)]
    fn from_host(&self, data: &HostData) -> Result<BoxStorage>;

    /// Copy the elements of `layout`, in logical row-major order, to the host.
    fn to_host(&self, src: &dyn BackendStorage, layout: &Layout) -> Result<HostData>;

    /// Copy the elements of `src` viewed through `src_layout` into `dst` viewed
    /// through `dst_layout` (same shape, same dtype).
    fn copy_strided(
        &self,
        src: &dyn BackendStorage,
        src_layout: &Layout,
        dst: &mut dyn BackendStorage,
        dst_layout: &Layout,
    ) -> Result<()>;

    /// Convert to another dtype (dense output).
    fn cast(&self, src: &dyn BackendStorage, layout: &Layout, dtype: DType) -> Result<BoxStorage>;

    /// Elementwise map of one operand.
    fn unary(&self, op: UnaryOp, src: &dyn BackendStorage, layout: &Layout) -> Result<BoxStorage>;

    /// Elementwise map of two operands whose layouts have the same shape. Two i64
    /// operands take the comparisons only (giving i64 1/0).
    fn binary(
        &self,
        op: BinaryOp,
        lhs: &dyn BackendStorage,
        lhs_layout: &Layout,
        rhs: &dyn BackendStorage,
        rhs_layout: &Layout,
    ) -> Result<BoxStorage>;

    /// `cond != 0 ? a : b`, all three layouts of the same shape; `cond` of any dtype,
    /// `a` and `b` of one dtype (float or i64).
    fn where_cond(
        &self,
        cond: &dyn BackendStorage,
        cond_layout: &Layout,
        a: &dyn BackendStorage,
        a_layout: &Layout,
        b: &dyn BackendStorage,
        b_layout: &Layout,
    ) -> Result<BoxStorage>;

    /// Reduce over `axes` (sorted, distinct; empty reduces nothing, a copy: the
    /// tensor ops map PyTorch's `dim=[]` to every axis before calling this); the
    /// output has the input's rank with reduced axes of size 1. Reducing an empty
    /// axis gives 0 for sum and an error for max/min.
    fn reduce(&self, op: ReduceOp, src: &dyn BackendStorage, layout: &Layout, axes: &[usize]) -> Result<BoxStorage>;

    /// Batched matrix product. `lhs_layout` is `[batch.., m, k]`, `rhs_layout` is
    /// `[batch.., k, n]` with identical batch dims (possibly stride 0). Transposed
    /// operands arrive as strides and should be consumed without copying where the
    /// GEMM allows. Output `[batch.., m, n]`.
    fn matmul(
        &self,
        lhs: &dyn BackendStorage,
        lhs_layout: &Layout,
        rhs: &dyn BackendStorage,
        rhs_layout: &Layout,
    ) -> Result<BoxStorage>;

    /// Select entries of `dim` by `ids` (I64, any layout, flattened in order).
    /// Output shape: `src` shape with `dim` replaced by the number of ids.
    /// Out-of-range ids are an error.
    fn index_select(
        &self,
        src: &dyn BackendStorage,
        src_layout: &Layout,
        ids: &dyn BackendStorage,
        ids_layout: &Layout,
        dim: usize,
    ) -> Result<BoxStorage>;

    /// The adjoint of `index_select`: `dst[.., ids[i], ..] += src[.., i, ..]`, where
    /// `dst` is dense with shape `dst_shape`.
    #[allow(clippy::too_many_arguments)]
    fn index_add(
        &self,
        dst: &mut dyn BackendStorage,
        dst_shape: &[usize],
        dim: usize,
        ids: &dyn BackendStorage,
        ids_layout: &Layout,
        src: &dyn BackendStorage,
        src_layout: &Layout,
    ) -> Result<()>;

    /// `out[i..] = src[i.. with dim replaced by ids[i..]]`; `ids` has the output's
    /// shape, which matches `src` except along `dim`.
    fn gather(
        &self,
        src: &dyn BackendStorage,
        src_layout: &Layout,
        ids: &dyn BackendStorage,
        ids_layout: &Layout,
        dim: usize,
    ) -> Result<BoxStorage>;

    /// The adjoint of `gather`: `dst[i.. with dim replaced by ids[i..]] += src[i..]`.
    #[allow(clippy::too_many_arguments)]
    fn scatter_add(
        &self,
        dst: &mut dyn BackendStorage,
        dst_shape: &[usize],
        dim: usize,
        ids: &dyn BackendStorage,
        ids_layout: &Layout,
        src: &dyn BackendStorage,
        src_layout: &Layout,
    ) -> Result<()>;

    /// Wait for queued work to finish (a no-op on synchronous backends).
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    /// Softmax over the last axis (`layout` any strided view; dense output). Fused
    /// override point; the default composes primitives (max-subtracted, so it is
    /// numerically stable).
    fn softmax_last(&self, src: &dyn BackendStorage, layout: &Layout) -> Result<BoxStorage> {
        let (shifted, sl) = composed::shift_by_max(self, src, layout)?;
        let e = self.unary(UnaryOp::Exp, &*shifted, &sl)?;
        let s = self.reduce(ReduceOp::Sum, &*e, &sl, &[sl.rank() - 1])?;
        let s_l = composed::row_stat_layout(&sl);
        self.binary(BinaryOp::Div, &*e, &sl, &*s, &s_l)
    }

    /// Log-softmax over the last axis (`layout` any strided view; dense output),
    /// computed as `(x − max) − ln Σ exp(x − max)`: subtracting `max + ln Σ` in one
    /// step instead rounds to the precision of the row maximum, which loses small
    /// log-probabilities when the logits are large. Fused override point (overrides
    /// must keep this order); the default composes primitives.
    fn log_softmax_last(&self, src: &dyn BackendStorage, layout: &Layout) -> Result<BoxStorage> {
        let (shifted, sl) = composed::shift_by_max(self, src, layout)?;
        let e = self.unary(UnaryOp::Exp, &*shifted, &sl)?;
        let s = self.reduce(ReduceOp::Sum, &*e, &sl, &[sl.rank() - 1])?;
        let s_l = composed::row_stat_layout(&sl);
        let ls = self.unary(UnaryOp::Log, &*s, &Layout::contiguous(&reduced_last(sl.shape())))?;
        self.binary(BinaryOp::Sub, &*shifted, &sl, &*ls, &s_l)
    }

    /// Backward of softmax over the last axis: `dx = y ⊙ (dy − Σ dy ⊙ y)` for
    /// dense `y`, `dy` of the same shape.
    fn softmax_last_backward(
        &self,
        y: &dyn BackendStorage,
        dy: &dyn BackendStorage,
        shape: &[usize],
    ) -> Result<BoxStorage> {
        let l = Layout::contiguous(shape);
        let prod = self.binary(BinaryOp::Mul, dy, &l, y, &l)?;
        let s = self.reduce(ReduceOp::Sum, &*prod, &l, &[l.rank() - 1])?;
        let diff = self.binary(BinaryOp::Sub, dy, &l, &*s, &composed::row_stat_layout(&l))?;
        self.binary(BinaryOp::Mul, y, &l, &*diff, &l)
    }

    /// Backward of log-softmax over the last axis: `dx = dy − exp(y) ⊙ Σ dy` for
    /// dense `y` (the log-probabilities) and `dy`.
    fn log_softmax_last_backward(
        &self,
        y: &dyn BackendStorage,
        dy: &dyn BackendStorage,
        shape: &[usize],
    ) -> Result<BoxStorage> {
        let l = Layout::contiguous(shape);
        let s = self.reduce(ReduceOp::Sum, dy, &l, &[l.rank() - 1])?;
        let p = self.unary(UnaryOp::Exp, y, &l)?;
        let ps = self.binary(BinaryOp::Mul, &*p, &l, &*s, &composed::row_stat_layout(&l))?;
        self.binary(BinaryOp::Sub, dy, &l, &*ps, &l)
    }

    /// Mean and biased variance over the last axis of `src` viewed through `layout`
    /// (any strided view). Fused override point; outputs are dense with the last axis
    /// of size 1.
    fn moments_last(&self, src: &dyn BackendStorage, layout: &Layout) -> Result<(BoxStorage, BoxStorage)> {
        let rank = layout.rank();
        let n = layout.shape()[rank - 1].max(1) as f64;
        let s = self.reduce(ReduceOp::Sum, src, layout, &[rank - 1])?;
        let stat_shape = reduced_last(layout.shape());
        let stat = Layout::contiguous(&stat_shape);
        let mean = self.unary(UnaryOp::Affine(1.0 / n, 0.0), &*s, &stat)?;
        let centered = self.binary(BinaryOp::Sub, src, layout, &*mean, &composed::row_stat_layout(layout))?;
        let dense = Layout::contiguous(layout.shape());
        let sq = self.unary(UnaryOp::Sqr, &*centered, &dense)?;
        let ss = self.reduce(ReduceOp::Sum, &*sq, &dense, &[rank - 1])?;
        let var = self.unary(UnaryOp::Affine(1.0 / n, 0.0), &*ss, &stat)?;
        Ok((mean, var))
    }

    /// LayerNorm (`rms == false`) or RMSNorm (`rms == true`) over the rows of dense
    /// `x` viewed as `[rows, n]`: `y = x̂·γ + β` with `x̂ = (x − μ)·r`,
    /// `r = 1/√(σ² + eps)` (RMS: `μ = 0`, `r = 1/√(mean(x²) + eps)`). `weight` and
    /// `bias` are dense `[n]` or absent. Returns `(y, μ, r)`, the statistics dense
    /// `[rows]` (μ all zero for RMS), which [`Backend::norm_last_backward`] takes.
    /// Fused override point; the default composes primitives.
    #[allow(clippy::too_many_arguments)]
    fn norm_last(
        &self,
        x: &dyn BackendStorage,
        rows: usize,
        n: usize,
        weight: Option<&dyn BackendStorage>,
        bias: Option<&dyn BackendStorage>,
        eps: f64,
        rms: bool,
    ) -> Result<(BoxStorage, BoxStorage, BoxStorage)> {
        let l = Layout::contiguous(&[rows, n]);
        let stat = Layout::contiguous(&[rows, 1]);
        let (mean, var) = if rms {
            let sq = self.unary(UnaryOp::Sqr, x, &l)?;
            let ss = self.reduce(ReduceOp::Sum, &*sq, &l, &[1])?;
            let ms = self.unary(UnaryOp::Affine(1.0 / n.max(1) as f64, 0.0), &*ss, &stat)?;
            (self.zeros(rows, x.dtype())?, ms)
        } else {
            self.moments_last(x, &l)?
        };
        let rstd = self.unary(
            UnaryOp::Rsqrt,
            &*self.unary(UnaryOp::Affine(1.0, eps), &*var, &stat)?,
            &stat,
        )?;
        let xhat = composed::normalized(self, x, &*mean, &*rstd, rows, n)?;
        let chan = composed::channel_layout(rows, n);
        let mut y = match weight {
            Some(w) => self.binary(BinaryOp::Mul, &*xhat, &l, w, &chan)?,
            None => xhat,
        };
        if let Some(b) = bias {
            y = self.binary(BinaryOp::Add, &*y, &l, b, &chan)?;
        }
        Ok((y, mean, rstd))
    }

    /// Backward of [`Backend::norm_last`] from the forward's input `x`, its
    /// statistics `mean`, `rstd` and the upstream gradient `dy` (all dense; `x`, `dy`
    /// `[rows, n]`). Returns `(dx, dγ, dβ)`: `dγ = Σ_rows dy·x̂` when `weight` is
    /// given, `dβ = Σ_rows dy` when `weight` is given and `rms` is false, and
    /// `dx = r·(g − x̂·mean(g·x̂) − mean(g))` with `g = dy·γ` (RMS: without the last
    /// term). Fused override point; the default composes primitives.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn norm_last_backward(
        &self,
        x: &dyn BackendStorage,
        mean: &dyn BackendStorage,
        rstd: &dyn BackendStorage,
        weight: Option<&dyn BackendStorage>,
        dy: &dyn BackendStorage,
        rows: usize,
        n: usize,
        rms: bool,
    ) -> Result<(BoxStorage, Option<BoxStorage>, Option<BoxStorage>)> {
        let l = Layout::contiguous(&[rows, n]);
        let stat = Layout::contiguous(&[rows, 1]);
        let per_row = composed::row_stat_layout(&l);
        let inv_n = UnaryOp::Affine(1.0 / n.max(1) as f64, 0.0);
        let xhat = composed::normalized(self, x, mean, rstd, rows, n)?;
        let (g, dw, db) = match weight {
            Some(w) => {
                let dw = self.reduce(
                    ReduceOp::Sum,
                    &*self.binary(BinaryOp::Mul, dy, &l, &*xhat, &l)?,
                    &l,
                    &[0],
                )?;
                let db = if rms {
                    None
                } else {
                    Some(self.reduce(ReduceOp::Sum, dy, &l, &[0])?)
                };
                let g = self.binary(BinaryOp::Mul, dy, &l, w, &composed::channel_layout(rows, n))?;
                (g, Some(dw), db)
            }
            None => (self.unary(UnaryOp::Affine(1.0, 0.0), dy, &l)?, None, None),
        };
        let gx = self.binary(BinaryOp::Mul, &*g, &l, &*xhat, &l)?;
        let proj = self.unary(inv_n, &*self.reduce(ReduceOp::Sum, &*gx, &l, &[1])?, &stat)?;
        let mut t = self.binary(
            BinaryOp::Sub,
            &*g,
            &l,
            &*self.binary(BinaryOp::Mul, &*xhat, &l, &*proj, &per_row)?,
            &l,
        )?;
        if !rms {
            let mg = self.unary(inv_n, &*self.reduce(ReduceOp::Sum, &*g, &l, &[1])?, &stat)?;
            t = self.binary(BinaryOp::Sub, &*t, &l, &*mg, &per_row)?;
        }
        let dx = self.binary(BinaryOp::Mul, &*t, &l, rstd, &per_row)?;
        Ok((dx, dw, db))
    }

    /// One Adam / AdamW step over dense `param`, `grad` and moments `m`, `v` (absent
    /// on the first step: zeros), all of `len` elements. Returns the new
    /// `(param, m, v)` as fresh storage (see [`AdamStep`]). Fused override point; the
    /// default composes primitives.
    fn adam_update(
        &self,
        param: &dyn BackendStorage,
        grad: &dyn BackendStorage,
        m: Option<&dyn BackendStorage>,
        v: Option<&dyn BackendStorage>,
        len: usize,
        h: &AdamStep,
    ) -> Result<(BoxStorage, BoxStorage, BoxStorage)> {
        let l = Layout::contiguous(&[len]);
        let g = if !h.decoupled && h.weight_decay != 0.0 {
            let wp = self.unary(UnaryOp::Affine(h.weight_decay, 0.0), param, &l)?;
            self.binary(BinaryOp::Add, grad, &l, &*wp, &l)?
        } else {
            self.unary(UnaryOp::Affine(1.0, 0.0), grad, &l)?
        };
        // m + (x − m)·(1 − β): the same rounding as the fused kernels
        let ema = |old: Option<&dyn BackendStorage>, x: &dyn BackendStorage, beta: f64| -> Result<BoxStorage> {
            match old {
                Some(o) => {
                    let d = self.binary(BinaryOp::Sub, x, &l, o, &l)?;
                    let d = self.unary(UnaryOp::Affine(1.0 - beta, 0.0), &*d, &l)?;
                    self.binary(BinaryOp::Add, o, &l, &*d, &l)
                }
                None => self.unary(UnaryOp::Affine(1.0 - beta, 0.0), x, &l),
            }
        };
        let new_m = ema(m, &*g, h.beta1)?;
        let g2 = self.unary(UnaryOp::Sqr, &*g, &l)?;
        let new_v = ema(v, &*g2, h.beta2)?;
        let new_p = if h.lr != 0.0 {
            let (decay, a, c) = h.folded();
            let denom = self.unary(UnaryOp::Affine(a, c), &*self.unary(UnaryOp::Sqrt, &*new_v, &l)?, &l)?;
            let upd = self.binary(BinaryOp::Div, &*new_m, &l, &*denom, &l)?;
            let base = self.unary(UnaryOp::Affine(decay, 0.0), param, &l)?;
            self.binary(BinaryOp::Sub, &*base, &l, &*upd, &l)?
        } else {
            self.unary(UnaryOp::Affine(1.0, 0.0), param, &l)?
        };
        Ok((new_p, new_m, new_v))
    }

    // ----- issue 17, requirement 3 (helper "ops"): the sort and scan families -----
    // Provided methods whose defaults copy the operand to the host, run the row
    // algorithms of `ops::sort::rows` / `ops::scan::rows` there and copy the result
    // back, so every backend runs them; a backend overrides them with kernels.

    /// Index (dense i64, the input's shape with `axis` of size 1) of the first
    /// maximum (`op == ReduceOp::Max`) or minimum (`ReduceOp::Min`) along `axis` of
    /// `src` viewed through `layout`, or of the first NaN where a line has one.
    /// `ReduceOp::Sum` and an empty axis are errors.
    fn arg_reduce(&self, op: ReduceOp, src: &dyn BackendStorage, layout: &Layout, axis: usize) -> Result<BoxStorage> {
        let dims = host_rows::check("arg_reduce", layout.shape(), axis, Some(op))?;
        let out = match self.to_host(src, layout)? {
            HostData::F32(v) => crate::ops::sort::rows::arg_reduce(op, &v, dims),
            HostData::F64(v) => crate::ops::sort::rows::arg_reduce(op, &v, dims),
            HostData::I64(v) => crate::ops::sort::rows::arg_reduce(op, &v, dims),
        };
        self.from_host(&HostData::I64(out))
    }

    /// Indices (dense i64, the input's shape) of a stable sort along `axis`,
    /// ascending or `descending`, with NaN above every number.
    fn argsort(&self, src: &dyn BackendStorage, layout: &Layout, axis: usize, descending: bool) -> Result<BoxStorage> {
        let dims = host_rows::check("argsort", layout.shape(), axis, None)?;
        let out = match self.to_host(src, layout)? {
            HostData::F32(v) => crate::ops::sort::rows::argsort(&v, dims, descending),
            HostData::F64(v) => crate::ops::sort::rows::argsort(&v, dims, descending),
            HostData::I64(v) => crate::ops::sort::rows::argsort(&v, dims, descending),
        };
        self.from_host(&HostData::I64(out))
    }

    /// Inclusive prefix sums along `axis` (suffix sums when `reverse`), dense, in
    /// the input's dtype (f32, f64, or i64 wrapping on overflow).
    fn cumsum(&self, src: &dyn BackendStorage, layout: &Layout, axis: usize, reverse: bool) -> Result<BoxStorage> {
        let dims = host_rows::check("cumsum", layout.shape(), axis, None)?;
        let out = match self.to_host(src, layout)? {
            HostData::F32(v) => HostData::F32(crate::ops::scan::rows::cumsum(&v, dims, reverse)),
            HostData::F64(v) => HostData::F64(crate::ops::scan::rows::cumsum(&v, dims, reverse)),
            HostData::I64(v) => HostData::I64(crate::ops::scan::rows::cumsum(&v, dims, reverse)),
        };
        self.from_host(&out)
    }

    // ----- attention (fused causal attention, issue 18) -----------------------

    /// Storage of `len` elements that the caller overwrites entirely before anyone
    /// reads it (a dense copy, a concatenation whose parts cover the output): its
    /// contents are unspecified. A backend may skip the zero fill of
    /// [`Backend::zeros`] here (the CPU backend hands out a recycled buffer as it
    /// is), but must never expose memory another tensor still uses. The default is
    /// [`Backend::zeros`].
    fn empty(&self, len: usize, dtype: DType) -> Result<BoxStorage> {
        self.zeros(len, dtype)
    }

    /// Fused scaled-dot-product attention forward:
    /// `O = softmax(scale·Q·Kᵀ + bias + causal mask)·V` per (batch, head).
    /// Operands are strided views (see [`AttentionArgs`]). Returns `(O, lse)`: `O`
    /// dense in *token-major* order `[B, Tq, H, Dv]` (so merging the heads back into
    /// `[B, Tq, H·Dv]` is free), and `lse` dense `[B, H, Tq]`, the log-sum-exp of each
    /// score row, from which [`Backend::attention_backward`] recomputes the
    /// probabilities instead of storing `[B, H, Tq, Tk]` of them. Fused override
    /// point; the default composes matmul, add, max/sum reductions, exp and log.
    fn attention(&self, a: &AttentionArgs<'_>) -> Result<(BoxStorage, BoxStorage)> {
        composed::attention(self, a)
    }

    /// Backward of [`Backend::attention`] from the forward's operands, its `lse`
    /// (dense `[B, H, Tq]`) and the output gradient `dout` viewed through `dout_layout`
    /// (`[B, H, Tq, Dv]`, any strides). With `P = exp(S − lse)` recomputed:
    /// `dV = Pᵀ·dO`, `dS = P ⊙ (dO·Vᵀ − rowsum(dO·Vᵀ ⊙ P))`, `dQ = scale·dS·K`,
    /// `dK = scale·dSᵀ·Q`. Returns `(dQ, dK, dV)` dense and token-major
    /// (`[B, Tq, H, D]`, `[B, Tk, H, D]`, `[B, Tk, H, Dv]`). Fused override point; the
    /// default composes primitives.
    fn attention_backward(
        &self,
        a: &AttentionArgs<'_>,
        lse: &dyn BackendStorage,
        dout: &dyn BackendStorage,
        dout_layout: &Layout,
    ) -> Result<(BoxStorage, BoxStorage, BoxStorage)> {
        composed::attention_backward(self, a, lse, dout, dout_layout)
    }
}

/// The operands of [`Backend::attention`] and [`Backend::attention_backward`].
///
/// `q` is `[B, H, Tq, D]`, `k` `[B, H, Tk, D]`, `v` `[B, H, Tk, Dv]`, each any strided
/// view (the heads of a packed projection arrive without a copy); `bias`, when given,
/// is an additive score bias already broadcast to `[B, H, Tq, Tk]` (stride 0 on the
/// broadcast axes). With `causal`, query `i` sees keys `j ≤ i + Tk − Tq` only (core
/// checks `Tq ≤ Tk` and `Tk ≥ 1`, so every row sees at least one key).
#[derive(Clone, Copy, Debug)]
pub struct AttentionArgs<'a> {
    /// Queries and their layout.
    pub q: (&'a dyn BackendStorage, &'a Layout),
    /// Keys and their layout.
    pub k: (&'a dyn BackendStorage, &'a Layout),
    /// Values and their layout.
    pub v: (&'a dyn BackendStorage, &'a Layout),
    /// Additive score bias broadcast to `[B, H, Tq, Tk]`.
    pub bias: Option<(&'a dyn BackendStorage, &'a Layout)>,
    /// Factor applied to `Q·Kᵀ`.
    pub scale: f64,
    /// Mask out keys after each query's position.
    pub causal: bool,
}

impl AttentionArgs<'_> {
    /// `(B, H, Tq, Tk, D, Dv)` read from the layouts.
    pub fn dims(&self) -> (usize, usize, usize, usize, usize, usize) {
        let (q, k, v) = (self.q.1.shape(), self.k.1.shape(), self.v.1.shape());
        (q[0], q[1], q[2], k[2], q[3], v[3])
    }
}

/// Argument checks of the sort and scan families' backend methods.
pub mod host_rows {
    use super::ReduceOp;
    use crate::error::{Error, Result};

    /// `[outer, n, inner]` of `shape` around `axis`, after checking that `axis` is
    /// an axis of `shape` and, for an arg-reduction (`arg` given), that it is
    /// non-empty and the op is max or min.
    pub fn check(
        op: &'static str,
        shape: &[usize],
        axis: usize,
        arg: Option<ReduceOp>,
    ) -> Result<(usize, usize, usize)> {
        if axis >= shape.len() {
            return Err(Error::InvalidAxis {
                op,
                axis: axis as isize,
                shape: shape.to_vec(),
            });
        }
        if let Some(r) = arg {
            if r == ReduceOp::Sum {
                return Err(Error::invalid(op, "takes ReduceOp::Max or ReduceOp::Min, got Sum"));
            }
            if shape[axis] == 0 {
                return Err(Error::invalid(op, format!("axis {axis} of shape {shape:?} is empty")));
            }
        }
        Ok(crate::ops::sort::rows::split(shape, axis))
    }
}

fn reduced_last(shape: &[usize]) -> Vec<usize> {
    let mut s = shape.to_vec();
    if let Some(l) = s.last_mut() {
        *l = 1;
    }
    s
}

/// Helpers for the composed default implementations.
mod composed {
    use super::*;

    /// Token-major `[B, T, H, X]` storage filled from `src` viewed through `l`
    /// (`[B, H, T, X]`).
    fn to_token_major<B: Backend + ?Sized>(b: &B, src: &dyn BackendStorage, l: &Layout) -> Result<BoxStorage> {
        let s = l.shape();
        let tm = Layout::contiguous(&[s[0], s[2], s[1], s[3]]).permute(&[0, 2, 1, 3])?;
        let mut dst = b.empty(l.numel(), src.dtype())?;
        b.copy_strided(src, l, &mut *dst, &tm)?;
        Ok(dst)
    }

    /// The masked, scaled scores `scale·Q·Kᵀ + bias (+ −∞ after each query's causal
    /// limit)`, dense `[B, H, Tq, Tk]`.
    fn attention_scores<B: Backend + ?Sized>(b: &B, a: &AttentionArgs<'_>) -> Result<(BoxStorage, Layout)> {
        let (nb, h, tq, tk, _, _) = a.dims();
        let kt = a.k.1.permute(&[0, 1, 3, 2])?;
        let s = b.matmul(a.q.0, a.q.1, a.k.0, &kt)?;
        let l = Layout::contiguous(&[nb, h, tq, tk]);
        let mut s = b.unary(UnaryOp::Affine(a.scale, 0.0), &*s, &l)?;
        if let Some((bs, bl)) = a.bias {
            s = b.binary(BinaryOp::Add, &*s, &l, bs, bl)?;
        }
        if a.causal {
            let shift = tk - tq;
            let m: Vec<f64> = (0..tq * tk)
                .map(|i| {
                    if i % tk > i / tk + shift {
                        f64::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
                .collect();
            let host = match s.dtype() {
                DType::F32 => HostData::F32(m.iter().map(|&x| x as f32).collect()),
                _ => HostData::F64(m),
            };
            let mask = b.from_host(&host)?;
            let ml = Layout::contiguous(&[1, 1, tq, tk])
                .broadcast_to(l.shape())
                .expect("[1, 1, tq, tk] broadcasts to [B, H, tq, tk]");
            s = b.binary(BinaryOp::Add, &*s, &l, &*mask, &ml)?;
        }
        Ok((s, l))
    }

    /// Default body of [`Backend::attention`].
    pub fn attention<B: Backend + ?Sized>(b: &B, a: &AttentionArgs<'_>) -> Result<(BoxStorage, BoxStorage)> {
        let (s, l) = attention_scores(b, a)?;
        let m = b.reduce(ReduceOp::Max, &*s, &l, &[3])?;
        let shifted = b.binary(BinaryOp::Sub, &*s, &l, &*m, &row_stat_layout(&l))?;
        let e = b.unary(UnaryOp::Exp, &*shifted, &l)?;
        let sum = b.reduce(ReduceOp::Sum, &*e, &l, &[3])?;
        let stat = Layout::contiguous(&reduced_last(l.shape()));
        let p = b.binary(BinaryOp::Div, &*e, &l, &*sum, &row_stat_layout(&l))?;
        let lse = b.binary(BinaryOp::Add, &*m, &stat, &*b.unary(UnaryOp::Log, &*sum, &stat)?, &stat)?;
        let o = b.matmul(&*p, &l, a.v.0, a.v.1)?;
        let (nb, h, tq, _, _, dv) = a.dims();
        Ok((to_token_major(b, &*o, &Layout::contiguous(&[nb, h, tq, dv]))?, lse))
    }

    /// Default body of [`Backend::attention_backward`].
    pub fn attention_backward<B: Backend + ?Sized>(
        b: &B,
        a: &AttentionArgs<'_>,
        lse: &dyn BackendStorage,
        dout: &dyn BackendStorage,
        dl: &Layout,
    ) -> Result<(BoxStorage, BoxStorage, BoxStorage)> {
        let (nb, h, tq, tk, d, dv) = a.dims();
        let (s, l) = attention_scores(b, a)?;
        let p = b.unary(
            UnaryOp::Exp,
            &*b.binary(BinaryOp::Sub, &*s, &l, lse, &row_stat_layout(&l))?,
            &l,
        )?;
        let pt = l.permute(&[0, 1, 3, 2])?;
        let gv = b.matmul(&*p, &pt, dout, dl)?;
        let gp = b.matmul(dout, dl, a.v.0, &a.v.1.permute(&[0, 1, 3, 2])?)?;
        let dot = b.reduce(ReduceOp::Sum, &*b.binary(BinaryOp::Mul, &*gp, &l, &*p, &l)?, &l, &[3])?;
        let diff = b.binary(BinaryOp::Sub, &*gp, &l, &*dot, &row_stat_layout(&l))?;
        let gs = b.binary(BinaryOp::Mul, &*p, &l, &*diff, &l)?;
        let gs = b.unary(UnaryOp::Affine(a.scale, 0.0), &*gs, &l)?;
        let gq = b.matmul(&*gs, &l, a.k.0, a.k.1)?;
        let gk = b.matmul(&*gs, &pt, a.q.0, a.q.1)?;
        Ok((
            to_token_major(b, &*gq, &Layout::contiguous(&[nb, h, tq, d]))?,
            to_token_major(b, &*gk, &Layout::contiguous(&[nb, h, tk, d]))?,
            to_token_major(b, &*gv, &Layout::contiguous(&[nb, h, tk, dv]))?,
        ))
    }

    /// Layout of a dense `[.., 1]` row statistic broadcast back over the last axis.
    pub fn row_stat_layout(l: &Layout) -> Layout {
        Layout::contiguous(&reduced_last(l.shape()))
            .broadcast_to(l.shape())
            .expect("a [.., 1] statistic always broadcasts over its rows")
    }

    /// Layout of a dense `[n]` per-channel vector broadcast over `[rows, n]`.
    pub fn channel_layout(rows: usize, n: usize) -> Layout {
        Layout::contiguous(&[n])
            .broadcast_to(&[rows, n])
            .expect("[n] always broadcasts to [rows, n]")
    }

    /// `x̂ = (x − μ)·r` for dense `x` `[rows, n]` and dense row statistics `[rows]`.
    pub fn normalized<B: Backend + ?Sized>(
        b: &B,
        x: &dyn BackendStorage,
        mean: &dyn BackendStorage,
        rstd: &dyn BackendStorage,
        rows: usize,
        n: usize,
    ) -> Result<BoxStorage> {
        let l = Layout::contiguous(&[rows, n]);
        let per_row = row_stat_layout(&l);
        let c = b.binary(BinaryOp::Sub, x, &l, mean, &per_row)?;
        b.binary(BinaryOp::Mul, &*c, &l, rstd, &per_row)
    }

    /// `x − max(x)` along the last axis, as dense storage with its layout.
    pub fn shift_by_max<B: Backend + ?Sized>(
        b: &B,
        src: &dyn BackendStorage,
        layout: &Layout,
    ) -> Result<(BoxStorage, Layout)> {
        let m = b.reduce(ReduceOp::Max, src, layout, &[layout.rank() - 1])?;
        let shifted = b.binary(BinaryOp::Sub, src, layout, &*m, &row_stat_layout(layout))?;
        Ok((shifted, Layout::contiguous(layout.shape())))
    }
}
