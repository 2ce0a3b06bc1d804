//! Elementwise kernels: unary maps, binary maps with broadcasting, `where`.
//! Inner loops with unit strides are written as slice iterators so LLVM emits
//! vector code (AVX-512 on this machine's target when built with
//! `-C target-cpu=native`; SSE2/AVX2 otherwise).

use super::drive;
use crate::elem::Float;
use crate::strided::Plan;
use unigrad_core::{BinaryOp, Layout, UnaryOp};

/// Apply `f` to every element of `x` viewed through `l`.
pub fn map<T: Float>(x: &[T], l: &Layout, f: impl Fn(T) -> T + Sync) -> Vec<T> {
    let n = l.numel();
    let mut out = vec![T::ZERO; n];
    let dense = Layout::contiguous(l.shape());
    let plan = Plan::new([l, &dense]);
    let s = plan.inner_stride[0];
    drive(&mut out, &plan, |o, [off, _]| {
        if s == 1 {
            let n = o.len();
            for (d, &v) in o.iter_mut().zip(&x[off..off + n]) {
                *d = f(v);
            }
        } else {
            for (j, d) in o.iter_mut().enumerate() {
                *d = f(x[off + j * s]);
            }
        }
    });
    out
}

/// Apply `f` pairwise to `a` and `b` viewed through layouts of one shape.
pub fn zip<T: Float>(a: &[T], la: &Layout, b: &[T], lb: &Layout, f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    let mut out = vec![T::ZERO; la.numel()];
    let dense = Layout::contiguous(la.shape());
    let plan = Plan::new([la, lb, &dense]);
    let [sa, sb, _] = plan.inner_stride;
    drive(&mut out, &plan, |o, [oa, ob, _]| {
        let n = o.len();
        match (sa, sb) {
            (1, 1) => {
                for ((d, &x), &y) in o.iter_mut().zip(&a[oa..oa + n]).zip(&b[ob..ob + n]) {
                    *d = f(x, y);
                }
            }
            (1, 0) => {
                let y = b[ob];
                for (d, &x) in o.iter_mut().zip(&a[oa..oa + n]) {
                    *d = f(x, y);
                }
            }
            (0, 1) => {
                let x = a[oa];
                for (d, &y) in o.iter_mut().zip(&b[ob..ob + n]) {
                    *d = f(x, y);
                }
            }
            _ => {
                for (j, d) in o.iter_mut().enumerate() {
                    *d = f(a[oa + j * sa], b[ob + j * sb]);
                }
            }
        }
    });
    out
}

/// `c != 0 ? a : b` over three layouts of one shape.
pub fn where_cond<T: Float>(c: &[T], lc: &Layout, a: &[T], la: &Layout, b: &[T], lb: &Layout) -> Vec<T> {
    let mut out = vec![T::ZERO; la.numel()];
    let dense = Layout::contiguous(la.shape());
    let plan = Plan::new([lc, la, lb, &dense]);
    let [sc, sa, sb, _] = plan.inner_stride;
    drive(&mut out, &plan, |o, [oc, oa, ob, _]| {
        for (j, d) in o.iter_mut().enumerate() {
            *d = if c[oc + j * sc] != T::ZERO {
                a[oa + j * sa]
            } else {
                b[ob + j * sb]
            };
        }
    });
    out
}

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_C: f64 = 0.044_715;

/// Run a unary op.
pub fn unary<T: Float>(op: UnaryOp, x: &[T], l: &Layout) -> Vec<T> {
    let h = T::from_f64(0.5);
    let one = T::ONE;
    match op {
        UnaryOp::Neg => map(x, l, |v| -v),
        UnaryOp::Exp => map(x, l, |v| v.exp()),
        UnaryOp::Log => map(x, l, |v| v.ln()),
        UnaryOp::Sqrt => map(x, l, |v| v.sqrt()),
        UnaryOp::Rsqrt => map(x, l, |v| one / v.sqrt()),
        UnaryOp::Abs => map(x, l, |v| v.abs()),
        UnaryOp::Relu => map(x, l, |v| if v > T::ZERO { v } else { T::ZERO }),
        UnaryOp::Tanh => map(x, l, |v| v.tanh()),
        UnaryOp::Sigmoid => map(x, l, |v| one / (one + (-v).exp())),
        UnaryOp::GeluErf => {
            let r = T::from_f64(std::f64::consts::FRAC_1_SQRT_2);
            map(x, l, |v| h * v * (one + (v * r).erf()))
        }
        UnaryOp::GeluErfGrad => {
            let r = T::from_f64(std::f64::consts::FRAC_1_SQRT_2);
            let k = T::from_f64(1.0 / (2.0 * std::f64::consts::PI).sqrt());
            map(x, l, |v| h * (one + (v * r).erf()) + v * k * (-h * v * v).exp())
        }
        UnaryOp::GeluTanh => {
            let (k, c) = (T::from_f64(SQRT_2_OVER_PI), T::from_f64(GELU_C));
            map(x, l, |v| h * v * (one + (k * (v + c * v * v * v)).tanh()))
        }
        UnaryOp::GeluTanhGrad => {
            let (k, c, c3) = (
                T::from_f64(SQRT_2_OVER_PI),
                T::from_f64(GELU_C),
                T::from_f64(3.0 * GELU_C),
            );
            map(x, l, |v| {
                let t = (k * (v + c * v * v * v)).tanh();
                h * (one + t) + h * v * (one - t * t) * k * (one + c3 * v * v)
            })
        }
        UnaryOp::Step => map(x, l, |v| if v > T::ZERO { one } else { T::ZERO }),
        UnaryOp::Sign => map(x, l, |v| {
            if v > T::ZERO {
                one
            } else if v < T::ZERO {
                -one
            } else {
                T::ZERO
            }
        }),
        UnaryOp::Sqr => map(x, l, |v| v * v),
        UnaryOp::Recip => map(x, l, |v| one / v),
        UnaryOp::Affine(m, a) => {
            let (m, a) = (T::from_f64(m), T::from_f64(a));
            map(x, l, |v| v * m + a)
        }
        UnaryOp::Powf(p) => {
            if p == 2.0 {
                map(x, l, |v| v * v)
            } else if p == 1.0 {
                map(x, l, |v| v)
            } else if p == 0.0 {
                map(x, l, |_| one)
            } else {
                let p = T::from_f64(p);
                map(x, l, |v| v.powf(p))
            }
        }
        UnaryOp::MaxScalar(c) => {
            let c = T::from_f64(c);
            map(x, l, |v| v.maxv(c))
        }
        UnaryOp::MinScalar(c) => {
            let c = T::from_f64(c);
            map(x, l, |v| v.minv(c))
        }
    }
}

/// Run a binary op.
pub fn binary<T: Float>(op: BinaryOp, a: &[T], la: &Layout, b: &[T], lb: &Layout) -> Vec<T> {
    let b01 = |c: bool| if c { T::ONE } else { T::ZERO };
    match op {
        BinaryOp::Add => zip(a, la, b, lb, |x, y| x + y),
        BinaryOp::Sub => zip(a, la, b, lb, |x, y| x - y),
        BinaryOp::Mul => zip(a, la, b, lb, |x, y| x * y),
        BinaryOp::Div => zip(a, la, b, lb, |x, y| x / y),
        BinaryOp::Max => zip(a, la, b, lb, |x, y| x.maxv(y)),
        BinaryOp::Min => zip(a, la, b, lb, |x, y| x.minv(y)),
        BinaryOp::Eq => zip(a, la, b, lb, |x, y| b01(x == y)),
        BinaryOp::Ne => zip(a, la, b, lb, |x, y| b01(x != y)),
        BinaryOp::Lt => zip(a, la, b, lb, |x, y| b01(x < y)),
        BinaryOp::Le => zip(a, la, b, lb, |x, y| b01(x <= y)),
        BinaryOp::Gt => zip(a, la, b, lb, |x, y| b01(x > y)),
        BinaryOp::Ge => zip(a, la, b, lb, |x, y| b01(x >= y)),
    }
}
