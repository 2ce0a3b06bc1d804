//! The elementwise family: unary and binary maps and `where`, over any strided views
//! (broadcasting arrives as stride-0 dimensions). Kernels in `kernels/elementwise.cu`.

use super::Operand;
use crate::backend::{bytes_sfx, float_only, same_dtype, same_shape, sfx, CudaBackend};
use crate::plan::{grid_for, StridedIndex, View, BLOCK};
use crate::ptx::kargs;
use unigrad_core::backend::{BackendStorage, BinaryOp, BoxStorage, UnaryOp};
use unigrad_core::dtype::DType;
use unigrad_core::layout::Layout;
use unigrad_core::Result;

/// Op code and constants for `unary_*`; codes match `U_*` in kernels/elementwise.cu.
fn unary_code(op: UnaryOp) -> (i32, f64, f64) {
    match op {
        UnaryOp::Neg => (0, 0.0, 0.0),
        UnaryOp::Exp => (1, 0.0, 0.0),
        UnaryOp::Log => (2, 0.0, 0.0),
        UnaryOp::Sqrt => (3, 0.0, 0.0),
        UnaryOp::Rsqrt => (4, 0.0, 0.0),
        UnaryOp::Abs => (5, 0.0, 0.0),
        UnaryOp::Relu => (6, 0.0, 0.0),
        UnaryOp::Tanh => (7, 0.0, 0.0),
        UnaryOp::Sigmoid => (8, 0.0, 0.0),
        UnaryOp::GeluErf => (9, 0.0, 0.0),
        UnaryOp::GeluTanh => (10, 0.0, 0.0),
        UnaryOp::GeluErfGrad => (11, 0.0, 0.0),
        UnaryOp::GeluTanhGrad => (12, 0.0, 0.0),
        UnaryOp::Step => (13, 0.0, 0.0),
        UnaryOp::Sign => (14, 0.0, 0.0),
        UnaryOp::Sqr => (15, 0.0, 0.0),
        UnaryOp::Recip => (16, 0.0, 0.0),
        UnaryOp::Affine(mul, add) => (17, mul, add),
        UnaryOp::Powf(p) => (18, p, 0.0),
        UnaryOp::MaxScalar(c) => (19, c, 0.0),
        UnaryOp::MinScalar(c) => (20, c, 0.0),
    }
}

/// Op code for `binary_*`; codes match `B_*` in kernels/elementwise.cu.
fn binary_code(op: BinaryOp) -> i32 {
    match op {
        BinaryOp::Add => 0,
        BinaryOp::Sub => 1,
        BinaryOp::Mul => 2,
        BinaryOp::Div => 3,
        BinaryOp::Max => 4,
        BinaryOp::Min => 5,
        BinaryOp::Eq => 6,
        BinaryOp::Ne => 7,
        BinaryOp::Lt => 8,
        BinaryOp::Le => 9,
        BinaryOp::Gt => 10,
        BinaryOp::Ge => 11,
    }
}

/// True for the comparisons, the only binary ops on i64 operands.
fn op_is_comparison(op: BinaryOp) -> bool {
    matches!(
        op,
        BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge
    )
}

/// `Backend::unary`.
pub(crate) fn unary(b: &CudaBackend, op: UnaryOp, src: &dyn BackendStorage, layout: &Layout) -> Result<BoxStorage> {
    b.gpu().enter()?;
    let s = b.operand("unary", src, layout)?;
    float_only("unary", s.dtype, layout.shape())?;
    let out = b.alloc(layout.numel(), s.dtype)?;
    let n = out.len as u64;
    if n > 0 {
        let ix = StridedIndex::<1>::new("unary", layout.shape(), [View::of(layout)])?;
        let (code, p0, p1) = unary_code(op);
        let (sp, dp) = (s.ptr, out.ptr);
        let name = format!("unary_{}", sfx(s.dtype));
        let grid = grid_for(n, BLOCK, b.gpu().sm_count);
        // SAFETY: params match unary_*(Index<1>, x, y, u64, int, double, double).
        unsafe { b.launch(&name, [grid, 1, 1], BLOCK, &kargs![ix, sp, dp, n, code, p0, p1])? };
    }
    Ok(Box::new(out))
}

/// `Backend::binary`.
pub(crate) fn binary(
    b: &CudaBackend,
    op: BinaryOp,
    (lhs, lhs_layout): Operand<'_>,
    (rhs, rhs_layout): Operand<'_>,
) -> Result<BoxStorage> {
    const OP: &str = "binary";
    b.gpu().enter()?;
    let (x, y) = (b.operand(OP, lhs, lhs_layout)?, b.operand(OP, rhs, rhs_layout)?);
    same_shape(OP, lhs_layout.shape(), rhs_layout.shape())?;
    same_dtype(OP, x.dtype, y.dtype)?;
    // i64 operands: comparisons only (`compare_i64`)
    let compare = x.dtype == DType::I64 && op_is_comparison(op);
    if !compare {
        float_only(OP, x.dtype, lhs_layout.shape())?;
    }
    let out = b.alloc(lhs_layout.numel(), x.dtype)?;
    let n = out.len as u64;
    if n > 0 {
        let ix = StridedIndex::<2>::new(OP, lhs_layout.shape(), [View::of(lhs_layout), View::of(rhs_layout)])?;
        let code = binary_code(op);
        let (ap, bp, dp) = (x.ptr, y.ptr, out.ptr);
        let name = if compare {
            "compare_i64".to_owned()
        } else {
            format!("binary_{}", sfx(x.dtype))
        };
        let grid = grid_for(n, BLOCK, b.gpu().sm_count);
        // SAFETY: params match binary_* and compare_i64 (Index<2>, a, b, y, u64, int);
        // views checked.
        unsafe { b.launch(&name, [grid, 1, 1], BLOCK, &kargs![ix, ap, bp, dp, n, code])? };
    }
    Ok(Box::new(out))
}

/// `Backend::where_cond`: `cond` of any dtype (non-zero selects `a`).
pub(crate) fn where_cond(
    b: &CudaBackend,
    (cond, cond_layout): Operand<'_>,
    (a, a_layout): Operand<'_>,
    (o, b_layout): Operand<'_>,
) -> Result<BoxStorage> {
    const OP: &str = "where_cond";
    b.gpu().enter()?;
    let c = b.operand(OP, cond, cond_layout)?;
    let (x, y) = (b.operand(OP, a, a_layout)?, b.operand(OP, o, b_layout)?);
    same_shape(OP, cond_layout.shape(), a_layout.shape())?;
    same_shape(OP, a_layout.shape(), b_layout.shape())?;
    same_dtype(OP, x.dtype, y.dtype)?;
    let out = b.alloc(a_layout.numel(), x.dtype)?;
    let n = out.len as u64;
    if n > 0 {
        let ix = StridedIndex::<3>::new(
            OP,
            a_layout.shape(),
            [View::of(cond_layout), View::of(a_layout), View::of(b_layout)],
        )?;
        let (cp, xp, yp, dp) = (c.ptr, x.ptr, y.ptr, out.ptr);
        let name = format!("where_{}_{}", sfx(c.dtype), bytes_sfx(x.dtype));
        let grid = grid_for(n, BLOCK, b.gpu().sm_count);
        // SAFETY: params match where_*_*(Index<3>, cond, a, b, y, u64); views checked.
        unsafe { b.launch(&name, [grid, 1, 1], BLOCK, &kargs![ix, cp, xp, yp, dp, n])? };
    }
    Ok(Box::new(out))
}
