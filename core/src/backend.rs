//! The backend trait: what a device must implement for unigrad to run on it.
//!
//! Designed for GPUs from day one: storage is opaque (device memory the host may
//! not be able to address), data crosses to and from the host only through
//! [`Backend::from_host`] / [`Backend::to_host`], every kernel receives strided
//! [`Layout`]s and picks its own specialisation, and every call returns a
//! [`Result`] so device errors surface with context.
//!
//! Following tinygrad, the trait is a *small set of primitives* (elementwise unary and
//! binary maps, reductions, batched matmul, strided copies, gathers and scatters).
//! Everything in `ops/` is composed from them. Fused kernels (softmax, norm
//! statistics) are *provided methods*: the default body composes primitives, and a
//! backend overrides it only when it has something faster. Because backward passes
//! are written in terms of tensor ops in core, a fused forward never loses its
//! gradient.

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
    /// `max(x, 0)`
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
    /// `1` where `x > 0`, else `0` (derivative of relu)
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

    /// Elementwise map of two operands whose layouts have the same shape.
    fn binary(
        &self,
        op: BinaryOp,
        lhs: &dyn BackendStorage,
        lhs_layout: &Layout,
        rhs: &dyn BackendStorage,
        rhs_layout: &Layout,
    ) -> Result<BoxStorage>;

    /// `cond != 0 ? a : b`, all three layouts of the same shape.
    fn where_cond(
        &self,
        cond: &dyn BackendStorage,
        cond_layout: &Layout,
        a: &dyn BackendStorage,
        a_layout: &Layout,
        b: &dyn BackendStorage,
        b_layout: &Layout,
    ) -> Result<BoxStorage>;

    /// Reduce over `axes` (sorted, distinct); the output has the input's rank with
    /// reduced axes of size 1. Reducing an empty axis gives 0 for sum and an error
    /// for max/min.
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

    /// Softmax over the last axis. Fused override point; the default composes
    /// primitives (max-subtracted, so it is numerically stable).
    fn softmax_last(&self, src: &dyn BackendStorage, layout: &Layout) -> Result<BoxStorage> {
        let (shifted, sl) = composed::shift_by_max(self, src, layout)?;
        let e = self.unary(UnaryOp::Exp, &*shifted, &sl)?;
        let s = self.reduce(ReduceOp::Sum, &*e, &sl, &[sl.rank() - 1])?;
        let s_l = composed::row_stat_layout(&sl);
        self.binary(BinaryOp::Div, &*e, &sl, &*s, &s_l)
    }

    /// Log-softmax over the last axis (fused override point, composed default).
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

    /// Mean and biased variance over the last axis (the statistics of LayerNorm).
    /// Fused override point; outputs are dense with the last axis of size 1.
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

    /// Layout of a dense `[.., 1]` row statistic broadcast back over the last axis.
    pub fn row_stat_layout(l: &Layout) -> Layout {
        Layout::contiguous(&reduced_last(l.shape()))
            .broadcast_to(l.shape())
            .expect("a [.., 1] statistic always broadcasts over its rows")
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
