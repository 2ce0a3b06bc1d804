//! Elementwise kernels: unary maps, binary maps with broadcasting, `where`.
//!
//! Each op is a zero-cost value (`Un<T, OP>` / `Bin<OP>`, the op chosen by a const
//! parameter) whose `call` is `#[inline(always)]`, and each row loop is an
//! `#[inline(always)]` function run through `simd::vectorized!`: the loop, the op and
//! the libm-free math it uses ([`crate::simd`]) are compiled into one body per SIMD
//! level, so LLVM vectorises it with AVX-512 or AVX2 when the CPU has them
//! (baseline builds otherwise only get SSE2). Closures are avoided on purpose: a
//! closure called from several levels' loops is not reliably inlined, and an op
//! that is not inlined is not vectorised.
//!
//! Outputs come from the [buffer pool](crate::pool) and are fully overwritten.

use super::drive;
use crate::elem::Float;
use crate::pool;
use crate::simd::vectorized;
use crate::strided::Plan;
use unigrad_core::{BinaryOp, Error, Layout, Result, UnaryOp};

/// A map of one element, inlined into the vectorised loops.
pub trait UnaryFn<T>: Copy + Send + Sync {
    /// Apply to one element.
    fn call(&self, v: T) -> T;
}

/// A map of two elements, inlined into the vectorised loops.
pub trait BinaryFn<T>: Copy + Send + Sync {
    /// Apply to one pair.
    fn call(&self, a: T, b: T) -> T;
}

/// Loop over one row: `o[j] = f(x[off + j·s])`.
#[inline(always)]
fn map_row<T: Float, F: UnaryFn<T>>(o: &mut [T], x: &[T], off: usize, s: usize, f: F) {
    let n = o.len();
    if s == 1 {
        for (d, &v) in o.iter_mut().zip(&x[off..off + n]) {
            *d = f.call(v);
        }
    } else {
        for (j, d) in o.iter_mut().enumerate() {
            *d = f.call(x[off + j * s]);
        }
    }
}

/// Apply `f` to every element of `x` viewed through `l`.
pub fn map<T: Float, F: UnaryFn<T>>(x: &[T], l: &Layout, f: F) -> Vec<T> {
    let mut out = pool::take::<T>(l.numel());
    let dense = Layout::contiguous(l.shape());
    let plan = Plan::new([l, &dense]);
    let s = plan.inner_stride[0];
    drive(&mut out, &plan, |o, [off, _]| vectorized!(map_row(o, x, off, s, f)));
    out
}

/// Loop over one row of a binary op, specialised on unit and broadcast strides.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn zip_row<T: Float, F: BinaryFn<T>>(o: &mut [T], a: &[T], oa: usize, sa: usize, b: &[T], ob: usize, sb: usize, f: F) {
    let n = o.len();
    match (sa, sb) {
        (1, 1) => {
            for ((d, &x), &y) in o.iter_mut().zip(&a[oa..oa + n]).zip(&b[ob..ob + n]) {
                *d = f.call(x, y);
            }
        }
        (1, 0) => {
            let y = b[ob];
            for (d, &x) in o.iter_mut().zip(&a[oa..oa + n]) {
                *d = f.call(x, y);
            }
        }
        (0, 1) => {
            let x = a[oa];
            for (d, &y) in o.iter_mut().zip(&b[ob..ob + n]) {
                *d = f.call(x, y);
            }
        }
        _ => {
            for (j, d) in o.iter_mut().enumerate() {
                *d = f.call(a[oa + j * sa], b[ob + j * sb]);
            }
        }
    }
}

/// Apply `f` pairwise to `a` and `b` viewed through layouts of one shape.
pub fn zip<T: Float, F: BinaryFn<T>>(a: &[T], la: &Layout, b: &[T], lb: &Layout, f: F) -> Vec<T> {
    let mut out = pool::take::<T>(la.numel());
    let dense = Layout::contiguous(la.shape());
    let plan = Plan::new([la, lb, &dense]);
    let [sa, sb, _] = plan.inner_stride;
    drive(&mut out, &plan, |o, [oa, ob, _]| {
        vectorized!(zip_row(o, a, oa, sa, b, ob, sb, f))
    });
    out
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn where_row<T: Float>(
    o: &mut [T],
    c: &[T],
    oc: usize,
    sc: usize,
    a: &[T],
    oa: usize,
    sa: usize,
    b: &[T],
    ob: usize,
    sb: usize,
) {
    if (sc, sa, sb) == (1, 1, 1) {
        let n = o.len();
        for (((d, &c), &x), &y) in o.iter_mut().zip(&c[oc..oc + n]).zip(&a[oa..oa + n]).zip(&b[ob..ob + n]) {
            *d = if c != T::ZERO { x } else { y };
        }
    } else {
        for (j, d) in o.iter_mut().enumerate() {
            *d = if c[oc + j * sc] != T::ZERO {
                a[oa + j * sa]
            } else {
                b[ob + j * sb]
            };
        }
    }
}

/// `c != 0 ? a : b` over three layouts of one shape.
pub fn where_cond<T: Float>(c: &[T], lc: &Layout, a: &[T], la: &Layout, b: &[T], lb: &Layout) -> Vec<T> {
    let mut out = pool::take::<T>(la.numel());
    let dense = Layout::contiguous(la.shape());
    let plan = Plan::new([lc, la, lb, &dense]);
    let [sc, sa, sb, _] = plan.inner_stride;
    drive(&mut out, &plan, |o, [oc, oa, ob, _]| {
        vectorized!(where_row(o, c, oc, sc, a, oa, sa, b, ob, sb))
    });
    out
}

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_C: f64 = 0.044_715;

/// Unary op codes for [`Un`].
mod u {
    pub const NEG: u8 = 0;
    pub const EXP: u8 = 1;
    pub const LOG: u8 = 2;
    pub const SQRT: u8 = 3;
    pub const RSQRT: u8 = 4;
    pub const ABS: u8 = 5;
    pub const RELU: u8 = 6;
    pub const TANH: u8 = 7;
    pub const SIGMOID: u8 = 8;
    pub const GELU_ERF: u8 = 9;
    pub const GELU_ERF_GRAD: u8 = 10;
    pub const GELU_TANH: u8 = 11;
    pub const GELU_TANH_GRAD: u8 = 12;
    pub const STEP: u8 = 13;
    pub const SIGN: u8 = 14;
    pub const SQR: u8 = 15;
    pub const RECIP: u8 = 16;
    pub const AFFINE: u8 = 17;
    pub const POWF: u8 = 18;
    pub const MAX: u8 = 19;
    pub const MIN: u8 = 20;
    pub const IDENTITY: u8 = 21;
    pub const ONE: u8 = 22;
}

/// The unary op `OP` (a code of the private `u` module) with up to two constants.
/// `OP` is a const parameter, so `call`'s `match` folds away at compile time.
#[derive(Clone, Copy, Debug)]
pub struct Un<T, const OP: u8> {
    a: T,
    b: T,
}

impl<T: Float, const OP: u8> Un<T, OP> {
    fn new(a: f64, b: f64) -> Self {
        Un {
            a: T::from_f64(a),
            b: T::from_f64(b),
        }
    }
}

impl<T: Float, const OP: u8> UnaryFn<T> for Un<T, OP> {
    #[inline(always)]
    fn call(&self, v: T) -> T {
        let one = T::ONE;
        let h = T::from_f64(0.5);
        match OP {
            u::NEG => -v,
            u::EXP => v.exp(),
            u::LOG => v.ln(),
            u::SQRT => v.sqrt(),
            u::RSQRT => one / v.sqrt(),
            u::ABS => v.abs(),
            // `<=`, so NaN falls through: relu(NaN) = NaN as in PyTorch
            u::RELU => {
                if v <= T::ZERO {
                    T::ZERO
                } else {
                    v
                }
            }
            u::TANH => v.tanh(),
            u::SIGMOID => one / (one + (-v).exp()),
            // a = 1/√2
            u::GELU_ERF => h * v * (one + (v * self.a).erf()),
            // a = 1/√2, b = 1/√(2π)
            u::GELU_ERF_GRAD => h * (one + (v * self.a).erf()) + v * self.b * (-h * v * v).exp(),
            // a = √(2/π), b = 0.044715
            u::GELU_TANH => h * v * (one + (self.a * (v + self.b * v * v * v)).tanh()),
            u::GELU_TANH_GRAD => {
                let t = (self.a * (v + self.b * v * v * v)).tanh();
                let c3 = T::from_f64(3.0) * self.b;
                h * (one + t) + h * v * (one - t * t) * self.a * (one + c3 * v * v)
            }
            // relu's derivative: 1 at NaN, so relu passes a NaN's gradient (PyTorch)
            u::STEP => {
                if v <= T::ZERO {
                    T::ZERO
                } else {
                    one
                }
            }
            u::SIGN => {
                if v > T::ZERO {
                    one
                } else if v < T::ZERO {
                    -one
                } else {
                    T::ZERO
                }
            }
            u::SQR => v * v,
            u::RECIP => one / v,
            u::AFFINE => v * self.a + self.b,
            u::POWF => v.powf(self.a),
            u::MAX => v.maxv(self.a),
            u::MIN => v.minv(self.a),
            u::IDENTITY => v,
            _ => one, // u::ONE
        }
    }
}

/// Binary op codes for [`Bin`] (the order of [`BinaryOp`]).
mod b {
    pub const ADD: u8 = 0;
    pub const SUB: u8 = 1;
    pub const MUL: u8 = 2;
    pub const DIV: u8 = 3;
    pub const MAX: u8 = 4;
    pub const MIN: u8 = 5;
    pub const EQ: u8 = 6;
    pub const NE: u8 = 7;
    pub const LT: u8 = 8;
    pub const LE: u8 = 9;
    pub const GT: u8 = 10;
    pub const GE: u8 = 11;
}

/// The binary op `OP` (a code of the private `b` module); `call` folds at compile time.
#[derive(Clone, Copy, Debug)]
pub struct Bin<const OP: u8>;

impl<T: Float, const OP: u8> BinaryFn<T> for Bin<OP> {
    #[inline(always)]
    fn call(&self, x: T, y: T) -> T {
        let b01 = |c: bool| if c { T::ONE } else { T::ZERO };
        match OP {
            b::ADD => x + y,
            b::SUB => x - y,
            b::MUL => x * y,
            b::DIV => x / y,
            b::MAX => x.maxv(y),
            b::MIN => x.minv(y),
            b::EQ => b01(x == y),
            b::NE => b01(x != y),
            b::LT => b01(x < y),
            b::LE => b01(x <= y),
            b::GT => b01(x > y),
            _ => b01(x >= y), // b::GE
        }
    }
}

/// Run a unary op.
pub fn unary<T: Float>(op: UnaryOp, x: &[T], l: &Layout) -> Vec<T> {
    use std::f64::consts::{FRAC_1_SQRT_2, PI};
    macro_rules! m {
        ($code:expr) => {
            map(x, l, Un::<T, { $code }>::new(0.0, 0.0))
        };
        ($code:expr, $a:expr, $b:expr) => {
            map(x, l, Un::<T, { $code }>::new($a, $b))
        };
    }
    match op {
        UnaryOp::Neg => m!(u::NEG),
        UnaryOp::Exp => m!(u::EXP),
        UnaryOp::Log => m!(u::LOG),
        UnaryOp::Sqrt => m!(u::SQRT),
        UnaryOp::Rsqrt => m!(u::RSQRT),
        UnaryOp::Abs => m!(u::ABS),
        UnaryOp::Relu => m!(u::RELU),
        UnaryOp::Tanh => m!(u::TANH),
        UnaryOp::Sigmoid => m!(u::SIGMOID),
        UnaryOp::GeluErf => m!(u::GELU_ERF, FRAC_1_SQRT_2, 0.0),
        UnaryOp::GeluErfGrad => m!(u::GELU_ERF_GRAD, FRAC_1_SQRT_2, 1.0 / (2.0 * PI).sqrt()),
        UnaryOp::GeluTanh => m!(u::GELU_TANH, SQRT_2_OVER_PI, GELU_C),
        UnaryOp::GeluTanhGrad => m!(u::GELU_TANH_GRAD, SQRT_2_OVER_PI, GELU_C),
        UnaryOp::Step => m!(u::STEP),
        UnaryOp::Sign => m!(u::SIGN),
        UnaryOp::Sqr => m!(u::SQR),
        UnaryOp::Recip => m!(u::RECIP),
        UnaryOp::Affine(mul, add) => m!(u::AFFINE, mul, add),
        UnaryOp::Powf(2.0) => m!(u::SQR),
        UnaryOp::Powf(1.0) => m!(u::IDENTITY),
        UnaryOp::Powf(0.0) => m!(u::ONE),
        UnaryOp::Powf(p) => m!(u::POWF, p, 0.0),
        UnaryOp::MaxScalar(c) => m!(u::MAX, c, 0.0),
        UnaryOp::MinScalar(c) => m!(u::MIN, c, 0.0),
    }
}

/// Run a binary op.
pub fn binary<T: Float>(op: BinaryOp, a: &[T], la: &Layout, bb: &[T], lb: &Layout) -> Vec<T> {
    match op {
        BinaryOp::Add => zip(a, la, bb, lb, Bin::<{ b::ADD }>),
        BinaryOp::Sub => zip(a, la, bb, lb, Bin::<{ b::SUB }>),
        BinaryOp::Mul => zip(a, la, bb, lb, Bin::<{ b::MUL }>),
        BinaryOp::Div => zip(a, la, bb, lb, Bin::<{ b::DIV }>),
        BinaryOp::Max => zip(a, la, bb, lb, Bin::<{ b::MAX }>),
        BinaryOp::Min => zip(a, la, bb, lb, Bin::<{ b::MIN }>),
        BinaryOp::Eq => zip(a, la, bb, lb, Bin::<{ b::EQ }>),
        BinaryOp::Ne => zip(a, la, bb, lb, Bin::<{ b::NE }>),
        BinaryOp::Lt => zip(a, la, bb, lb, Bin::<{ b::LT }>),
        BinaryOp::Le => zip(a, la, bb, lb, Bin::<{ b::LE }>),
        BinaryOp::Gt => zip(a, la, bb, lb, Bin::<{ b::GT }>),
        BinaryOp::Ge => zip(a, la, bb, lb, Bin::<{ b::GE }>),
    }
}

// ----- issue 17 (helper "ops"): i64 comparisons and `where` of any dtypes -----------

/// A comparison of two i64 operands viewed through layouts of one shape: i64 1/0.
/// Arithmetic on i64 is not a kernel (core accepts i64 in comparisons only).
pub fn compare_i64(op: BinaryOp, a: &[i64], la: &Layout, bb: &[i64], lb: &Layout) -> Result<Vec<i64>> {
    let f: fn(&i64, &i64) -> bool = match op {
        BinaryOp::Eq => i64::eq,
        BinaryOp::Ne => i64::ne,
        BinaryOp::Lt => i64::lt,
        BinaryOp::Le => i64::le,
        BinaryOp::Gt => i64::gt,
        BinaryOp::Ge => i64::ge,
        other => {
            return Err(Error::invalid(
                "binary",
                format!(
                    "{other:?} on i64 operands of shape {:?}: i64 takes comparisons only",
                    la.shape()
                ),
            ))
        }
    };
    let mut out = vec![0i64; la.numel()];
    let dense = Layout::contiguous(la.shape());
    let plan = Plan::new([la, lb, &dense]);
    let [sa, sb, _] = plan.inner_stride;
    drive(&mut out, &plan, |o, [oa, ob, _]| {
        for (j, d) in o.iter_mut().enumerate() {
            *d = i64::from(f(&a[oa + j * sa], &bb[ob + j * sb]));
        }
    });
    Ok(out)
}

/// `c != 0 ? a : b` for a condition of another dtype than the values (or i64
/// values): the plain loop, without the float kernel's vectorised rows.
pub fn where_any<C: Copy + PartialEq + Default + Sync, V: Copy + Default + Send + Sync>(
    c: &[C],
    lc: &Layout,
    a: &[V],
    la: &Layout,
    b: &[V],
    lb: &Layout,
) -> Vec<V> {
    let mut out = vec![V::default(); la.numel()];
    let dense = Layout::contiguous(la.shape());
    let plan = Plan::new([lc, la, lb, &dense]);
    let [sc, sa, sb, _] = plan.inner_stride;
    let zero = C::default();
    drive(&mut out, &plan, |o, [oc, oa, ob, _]| {
        for (j, d) in o.iter_mut().enumerate() {
            *d = if c[oc + j * sc] != zero {
                a[oa + j * sa]
            } else {
                b[ob + j * sb]
            };
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::{set_max_level, Level};

    fn lin(n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n)
            .map(|i| lo + (hi - lo) * i as f64 / (n - 1).max(1) as f64)
            .collect()
    }

    /// Every unary op in f32 against the same formula in f64 (std math), over a
    /// range that exercises both branches of each piecewise function.
    #[test]
    fn unary_f32_matches_f64_reference() {
        let x32: Vec<f32> = lin(2001, -9.0, 9.0).iter().map(|&v| v as f32).collect();
        let xs: Vec<f64> = x32.iter().map(|&v| v as f64).collect();
        let l = Layout::contiguous(&[xs.len()]);
        // |error| / max(|want|, 1): f32 rounding is 6e-8; the libm-free exp/tanh are
        // within 1–2 ulp, erf_f32 within 2.7e-7 absolute
        let ops = [
            (UnaryOp::Exp, 2e-7),
            (UnaryOp::Tanh, 3e-7),
            (UnaryOp::Sigmoid, 3e-7),
            (UnaryOp::GeluErf, 1e-6),
            (UnaryOp::GeluErfGrad, 1e-6),
            (UnaryOp::GeluTanh, 1e-6),
            (UnaryOp::GeluTanhGrad, 1e-6),
            (UnaryOp::Affine(2.0, -1.0), 1e-7),
            (UnaryOp::Powf(3.0), 2e-7),
        ];
        for (op, tol) in ops {
            let want = unary(op, &xs, &l);
            let got = unary(op, &x32, &l);
            for ((&g, &w), &x) in got.iter().zip(&want).zip(&xs) {
                let err = (g as f64 - w).abs() / w.abs().max(1.0);
                assert!(err <= tol, "{op:?}({x}) = {g}, want {w} (rel err {err:e})");
            }
        }
        let pos: Vec<f32> = lin(1000, 1e-3, 50.0).iter().map(|&v| v as f32).collect();
        let lp = Layout::contiguous(&[pos.len()]);
        let logs = unary(UnaryOp::Log, &pos, &lp);
        for (&g, &x) in logs.iter().zip(&pos) {
            assert!((g as f64 - (x as f64).ln()).abs() <= 2e-7 * (x as f64).ln().abs().max(1.0));
        }
    }

    #[test]
    fn exp_handles_extremes_through_the_kernel() {
        let xs = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 100.0, -200.0, 0.0];
        let out = unary(UnaryOp::Exp, &xs, &Layout::contiguous(&[6]));
        assert!(out[0].is_nan());
        assert_eq!(&out[1..], &[f32::INFINITY, 0.0, f32::INFINITY, 0.0, 1.0]);
    }

    /// Large strided and broadcast inputs (the parallel, chunked paths) against an
    /// element-by-element reference, at every SIMD level.
    #[test]
    fn binary_strided_and_broadcast_match_reference_at_every_level() {
        let (r, c) = (300, 257);
        let a: Vec<f32> = (0..r * c).map(|i| ((i * 37) % 101) as f32 * 0.25 - 12.0).collect();
        let bias: Vec<f32> = (0..c).map(|i| i as f32 * 0.5 - 3.0).collect();
        // a viewed transposed: [c, r] with strides [1, c]
        let at = Layout::new(&[c, r], &[1, c], 0);
        let bias_l = Layout::new(&[c, r], &[1, 0], 0);
        for lvl in [Level::Scalar, Level::Avx2, Level::Avx512] {
            set_max_level(Some(lvl));
            let out = binary(BinaryOp::Sub, &a, &at, &bias, &bias_l);
            let rows = binary(
                BinaryOp::Mul,
                &a,
                &Layout::contiguous(&[r, c]),
                &bias,
                &Layout::new(&[r, c], &[0, 1], 0),
            );
            for i in 0..c {
                for j in 0..r {
                    assert_eq!(out[i * r + j], a[j * c + i] - bias[i]);
                }
            }
            for i in 0..r {
                for j in 0..c {
                    assert_eq!(rows[i * c + j], a[i * c + j] * bias[j]);
                }
            }
            let w = where_cond(
                &a,
                &Layout::contiguous(&[r * c]),
                &a,
                &Layout::contiguous(&[r * c]),
                &bias,
                &Layout::new(&[r * c], &[0], 3),
            );
            for (i, &v) in w.iter().enumerate() {
                assert_eq!(v, if a[i] != 0.0 { a[i] } else { bias[3] });
            }
        }
        set_max_level(None);
    }

    #[test]
    fn comparisons_and_nan_propagation() {
        let a = [1.0f64, f64::NAN, 3.0, -0.0];
        let b = [2.0f64, 1.0, 3.0, 0.0];
        let l = Layout::contiguous(&[4]);
        assert_eq!(binary(BinaryOp::Lt, &a, &l, &b, &l), vec![1.0, 0.0, 0.0, 0.0]);
        assert_eq!(binary(BinaryOp::Eq, &a, &l, &b, &l), vec![0.0, 0.0, 1.0, 1.0]);
        let m = binary(BinaryOp::Max, &a, &l, &b, &l);
        assert!(m[1].is_nan());
        let m = binary(BinaryOp::Min, &b, &l, &a, &l);
        assert!(m[1].is_nan());
        assert_eq!(unary(UnaryOp::Powf(0.0), &a, &l), vec![1.0; 4]);
        assert_eq!(unary(UnaryOp::Sign, &a[..1], &Layout::contiguous(&[1])), vec![1.0]);
    }
}
