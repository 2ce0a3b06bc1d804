//! The elementwise family: unary maps, broadcasting binary arithmetic, scalar forms,
//! comparisons, `where`, and dropout (a random mask times `x`). Each op is one
//! backend `unary` / `binary` / `where_cond` call forward and a few of them backward.

use super::check_float;
use crate::autograd::{self, record};
use crate::backend::{BinaryOp, UnaryOp};
use crate::dtype::DType;
use crate::error::{in_op, Error, Result, ResultExt};
use crate::layout::Layout;
use crate::shape::broadcast_shape;
use crate::tensor::{check_same_kind, Tensor};

impl Tensor {
    /// Apply a backend unary map without recording (building block for ops).
    pub(crate) fn map_raw(&self, op: UnaryOp) -> Result<Tensor> {
        let s = self.storage();
        let out = self.device().backend().unary(op, &*s, self.layout())?;
        Ok(Tensor::from_storage(
            out,
            Layout::contiguous(self.shape()),
            self.device().clone(),
        ))
    }

    /// Record a unary map. `grad(x, y, g)` gets the input `x`, the output `y` and the
    /// upstream gradient. In a plain backward `x` and `y` are saved, detached values;
    /// when the backward is recorded (`create_graph`), `x` is the attached input and
    /// `y` is recomputed from it with `recompute` (the op itself; `None` when `grad`
    /// does not read `y`), so a derivative
    /// written through `y` keeps `y`'s own dependence on `x`. `grad` must use recorded
    /// ops on `x`, `y` and `g` in that mode (unrecorded derivative kernels only where
    /// the derivative is piecewise constant).
    fn unary_op(
        &self,
        name: &'static str,
        op: UnaryOp,
        recompute: Option<fn(&Tensor) -> Result<Tensor>>,
        grad: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor> + Send + Sync + 'static,
    ) -> Result<Tensor> {
        check_float(name, self)?;
        let out = self.map_raw(op)?;
        let x_in = self.clone();
        let x = self.detach();
        let y = out.detach();
        record(
            name,
            out,
            &[self],
            Box::new(move |g| {
                if autograd::is_grad_enabled() {
                    let y = match recompute {
                        Some(f) => f(&x_in)?,
                        None => y.clone(), // not read by `grad`
                    };
                    Ok(vec![Some(grad(&x_in, &y, g)?)])
                } else {
                    Ok(vec![Some(grad(&x, &y, g)?)])
                }
            }),
        )
    }

    /// `-x`
    pub fn neg(&self) -> Result<Tensor> {
        self.unary_op("neg", UnaryOp::Neg, None, |_, _, g| g.neg())
    }
    /// `e^x`
    pub fn exp(&self) -> Result<Tensor> {
        self.unary_op("exp", UnaryOp::Exp, Some(Tensor::exp), |_, y, g| g.mul(y))
    }
    /// natural logarithm
    pub fn log(&self) -> Result<Tensor> {
        self.unary_op("log", UnaryOp::Log, None, |x, _, g| g.div(x))
    }
    /// square root
    pub fn sqrt(&self) -> Result<Tensor> {
        self.unary_op("sqrt", UnaryOp::Sqrt, Some(Tensor::sqrt), |_, y, g| {
            g.div(y)?.mul_scalar(0.5)
        })
    }
    /// `1/sqrt(x)`
    pub fn rsqrt(&self) -> Result<Tensor> {
        // d/dx x^-1/2 = -1/2 x^-3/2 = -1/2 y^3
        self.unary_op("rsqrt", UnaryOp::Rsqrt, Some(Tensor::rsqrt), |_, y, g| {
            g.mul(&y.powf(3.0)?)?.mul_scalar(-0.5)
        })
    }
    /// `|x|` (gradient 0 at 0; second derivative 0 away from the kink)
    pub fn abs(&self) -> Result<Tensor> {
        self.unary_op("abs", UnaryOp::Abs, None, |x, _, g| g.mul(&x.map_raw(UnaryOp::Sign)?))
    }
    /// `max(x, 0)`, with PyTorch's conventions: `relu(NaN)` is NaN (an upstream NaN
    /// stays visible, to anomaly mode too), the gradient is 0 where `x ≤ 0` (so 0 at
    /// the kink) and passes unchanged elsewhere, NaN included. The second derivative
    /// is 0 (the step mask is a constant).
    pub fn relu(&self) -> Result<Tensor> {
        self.unary_op("relu", UnaryOp::Relu, None, |x, _, g| g.mul(&x.map_raw(UnaryOp::Step)?))
    }
    /// hyperbolic tangent
    pub fn tanh(&self) -> Result<Tensor> {
        self.unary_op("tanh", UnaryOp::Tanh, Some(Tensor::tanh), |_, y, g| {
            g.mul(&y.sqr()?.affine(-1.0, 1.0)?)
        })
    }
    /// logistic sigmoid
    pub fn sigmoid(&self) -> Result<Tensor> {
        self.unary_op("sigmoid", UnaryOp::Sigmoid, Some(Tensor::sigmoid), |_, y, g| {
            g.mul(&y.mul(&y.affine(-1.0, 1.0)?)?)
        })
    }
    /// GELU with the exact error-function form (PyTorch's default).
    pub fn gelu(&self) -> Result<Tensor> {
        self.unary_op("gelu", UnaryOp::GeluErf, None, |x, _, g| g.mul(&gelu_erf_grad(x)?))
    }
    /// GELU with the tanh approximation.
    pub fn gelu_tanh(&self) -> Result<Tensor> {
        self.unary_op("gelu_tanh", UnaryOp::GeluTanh, None, |x, _, g| {
            if autograd::is_grad_enabled() {
                g.mul(&gelu_tanh_grad_composed(x)?)
            } else {
                g.mul(&x.map_raw(UnaryOp::GeluTanhGrad)?)
            }
        })
    }
    /// `x²`
    pub fn sqr(&self) -> Result<Tensor> {
        self.unary_op("sqr", UnaryOp::Sqr, None, |x, _, g| g.mul(x)?.mul_scalar(2.0))
    }
    /// `1/x`
    pub fn recip(&self) -> Result<Tensor> {
        self.unary_op("recip", UnaryOp::Recip, Some(Tensor::recip), |_, y, g| {
            g.mul(&y.sqr()?)?.neg()
        })
    }
    /// `x^p` for a constant exponent. The gradient is `p·x^(p−1)`, except that
    /// `p = 0` has gradient 0 everywhere (PyTorch), where the formula gives
    /// `0·0⁻¹ = NaN` at `x = 0`.
    pub fn powf(&self, p: f64) -> Result<Tensor> {
        self.unary_op("powf", UnaryOp::Powf(p), None, move |x, _, g| {
            if p == 0.0 {
                return x.zeros_like();
            }
            g.mul(&x.powf(p - 1.0)?)?.mul_scalar(p)
        })
    }
    /// `x·a + b` for constants.
    pub fn affine(&self, a: f64, b: f64) -> Result<Tensor> {
        self.unary_op("affine", UnaryOp::Affine(a, b), None, move |_, _, g| g.mul_scalar(a))
    }
    /// `x + c`
    pub fn add_scalar(&self, c: f64) -> Result<Tensor> {
        self.affine(1.0, c).in_op("add_scalar")
    }
    /// `x · c`
    pub fn mul_scalar(&self, c: f64) -> Result<Tensor> {
        self.affine(c, 0.0).in_op("mul_scalar")
    }
    /// `x − c`
    pub fn sub_scalar(&self, c: f64) -> Result<Tensor> {
        self.affine(1.0, -c).in_op("sub_scalar")
    }
    /// `x / c`
    pub fn div_scalar(&self, c: f64) -> Result<Tensor> {
        self.affine(1.0 / c, 0.0).in_op("div_scalar")
    }
    /// Clamp into `[lo, hi]`: `min(max(x, lo), hi)`, so `hi` wins when `lo > hi`, and
    /// NaN stays NaN. As in PyTorch 2.15, the gradient passes only strictly inside,
    /// `lo < x < hi`: it is 0 at exactly `lo` or `hi`, outside, and at NaN.
    pub fn clamp(&self, lo: f64, hi: f64) -> Result<Tensor> {
        check_float("clamp", self)?;
        let out = self.map_raw(UnaryOp::MaxScalar(lo))?.map_raw(UnaryOp::MinScalar(hi))?;
        let x = self.detach();
        record(
            "clamp",
            out,
            &[self],
            Box::new(move |g| {
                let inside = x.gt_scalar(lo)?.mul(&x.lt_scalar(hi)?)?;
                Ok(vec![Some(g.mul(&inside)?)])
            }),
        )
    }

    // ----- binary ---------------------------------------------------------------

    /// Broadcast two operands to a common shape (views, no copy).
    pub(crate) fn broadcast_pair(op: &'static str, a: &Tensor, b: &Tensor) -> Result<(Layout, Layout)> {
        check_same_kind(op, a, b)?;
        check_float(op, a)?;
        let shape = broadcast_shape(op, a.shape(), b.shape())?;
        let la = a.layout().broadcast_to(&shape).expect("broadcast_shape validated");
        let lb = b.layout().broadcast_to(&shape).expect("broadcast_shape validated");
        Ok((la, lb))
    }

    /// Apply a backend binary map with broadcasting, without recording.
    pub(crate) fn zip_raw(&self, op: BinaryOp, name: &'static str, rhs: &Tensor) -> Result<Tensor> {
        let (la, lb) = Tensor::broadcast_pair(name, self, rhs)?;
        let (sa, sb) = (self.storage(), rhs.storage());
        let out = self.device().backend().binary(op, &*sa, &la, &*sb, &lb)?;
        Ok(Tensor::from_storage(
            out,
            Layout::contiguous(la.shape()),
            self.device().clone(),
        ))
    }

    fn binary_op(
        &self,
        name: &'static str,
        op: BinaryOp,
        rhs: &Tensor,
        grad: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> + Send + Sync + 'static,
    ) -> Result<Tensor> {
        let out = self.zip_raw(op, name, rhs)?;
        // attached: a recorded backward (create_graph) differentiates through them
        let (a, b) = (self.clone(), rhs.clone());
        let (need_a, need_b) = (self.tracks_grad(), rhs.tracks_grad());
        record(
            name,
            out,
            &[self, rhs],
            Box::new(move |g| {
                let (ga, gb) = if autograd::is_grad_enabled() {
                    grad(&a, &b, g)?
                } else {
                    grad(&a.detach(), &b.detach(), g)?
                };
                let ga = match ga {
                    Some(t) if need_a => Some(t.sum_to(a.shape())?),
                    _ => None,
                };
                let gb = match gb {
                    Some(t) if need_b => Some(t.sum_to(b.shape())?),
                    _ => None,
                };
                Ok(vec![ga, gb])
            }),
        )
    }

    /// `a + b` with broadcasting.
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op("add", BinaryOp::Add, rhs, |_, _, g| {
            Ok((Some(g.clone()), Some(g.clone())))
        })
    }
    /// `a − b` with broadcasting.
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op("sub", BinaryOp::Sub, rhs, |_, _, g| {
            Ok((Some(g.clone()), Some(g.neg()?)))
        })
    }
    /// `a · b` with broadcasting.
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op("mul", BinaryOp::Mul, rhs, |a, b, g| {
            Ok((Some(g.mul(b)?), Some(g.mul(a)?)))
        })
    }
    /// `a / b` with broadcasting.
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op("div", BinaryOp::Div, rhs, |a, b, g| {
            let ga = g.div(b)?;
            let gb = ga.mul(a)?.div(b)?.neg()?;
            Ok((Some(ga), Some(gb)))
        })
    }
    /// Elementwise maximum; a NaN in either operand gives NaN. The gradient goes to
    /// the larger operand, and to both in full where either is NaN (as in PyTorch).
    ///
    /// **Differs from PyTorch on ties:** where `a == b` the whole gradient goes to
    /// `a` (PyTorch splits it, half to each), so it is a subgradient of one operand.
    pub fn maximum(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op("maximum", BinaryOp::Max, rhs, |a, b, g| {
            extremum_grads("maximum", a, b, g, BinaryOp::Lt, BinaryOp::Ge)
        })
    }
    /// Elementwise minimum; a NaN in either operand gives NaN. The gradient goes to
    /// the smaller operand, and to both in full where either is NaN (as in PyTorch).
    ///
    /// **Differs from PyTorch on ties:** where `a == b` the whole gradient goes to
    /// `a` (PyTorch splits it, half to each).
    pub fn minimum(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op("minimum", BinaryOp::Min, rhs, |a, b, g| {
            extremum_grads("minimum", a, b, g, BinaryOp::Gt, BinaryOp::Le)
        })
    }

    // ----- comparisons (no gradient) -------------------------------------------

    fn cmp(&self, op: BinaryOp, name: &'static str, rhs: &Tensor) -> Result<Tensor> {
        if self.dtype() == DType::I64 {
            return self.cmp_i64(op, name, rhs);
        }
        self.zip_raw(op, name, rhs)
    }
    fn cmp_scalar(&self, op: BinaryOp, name: &'static str, c: f64) -> Result<Tensor> {
        if self.dtype() == DType::I64 {
            let s = Tensor::from_vec(vec![i64_scalar(name, c, self.shape())?], &[], self.device())?;
            return self.cmp_i64(op, name, &s);
        }
        check_float(name, self)?;
        let s = Tensor::scalar(c, self.dtype(), self.device())?;
        self.zip_raw(op, name, &s)
    }
    /// `a == b` as 1/0 in the operands' dtype (no gradient). Comparisons take two
    /// float operands of one dtype or two i64 operands (and give i64 1/0); the
    /// `*_scalar` forms on i64 take an integer-valued `c`.
    pub fn eq(&self, rhs: &Tensor) -> Result<Tensor> {
        self.cmp(BinaryOp::Eq, "eq", rhs)
    }
    /// `a != b` as 1/0.
    pub fn ne(&self, rhs: &Tensor) -> Result<Tensor> {
        self.cmp(BinaryOp::Ne, "ne", rhs)
    }
    /// `a < b` as 1/0.
    pub fn lt(&self, rhs: &Tensor) -> Result<Tensor> {
        self.cmp(BinaryOp::Lt, "lt", rhs)
    }
    /// `a <= b` as 1/0.
    pub fn le(&self, rhs: &Tensor) -> Result<Tensor> {
        self.cmp(BinaryOp::Le, "le", rhs)
    }
    /// `a > b` as 1/0.
    pub fn gt(&self, rhs: &Tensor) -> Result<Tensor> {
        self.cmp(BinaryOp::Gt, "gt", rhs)
    }
    /// `a >= b` as 1/0.
    pub fn ge(&self, rhs: &Tensor) -> Result<Tensor> {
        self.cmp(BinaryOp::Ge, "ge", rhs)
    }
    /// `x == c` as 1/0.
    pub fn eq_scalar(&self, c: f64) -> Result<Tensor> {
        self.cmp_scalar(BinaryOp::Eq, "eq_scalar", c)
    }
    /// `x != c` as 1/0.
    pub fn ne_scalar(&self, c: f64) -> Result<Tensor> {
        self.cmp_scalar(BinaryOp::Ne, "ne_scalar", c)
    }
    /// `x < c` as 1/0.
    pub fn lt_scalar(&self, c: f64) -> Result<Tensor> {
        self.cmp_scalar(BinaryOp::Lt, "lt_scalar", c)
    }
    /// `x <= c` as 1/0.
    pub fn le_scalar(&self, c: f64) -> Result<Tensor> {
        self.cmp_scalar(BinaryOp::Le, "le_scalar", c)
    }
    /// `x > c` as 1/0.
    pub fn gt_scalar(&self, c: f64) -> Result<Tensor> {
        self.cmp_scalar(BinaryOp::Gt, "gt_scalar", c)
    }
    /// `x >= c` as 1/0.
    pub fn ge_scalar(&self, c: f64) -> Result<Tensor> {
        self.cmp_scalar(BinaryOp::Ge, "ge_scalar", c)
    }

    // ----- selection ------------------------------------------------------------

    /// `self != 0 ? a : b`, all three broadcast together. `a` and `b` share one
    /// dtype, float or i64; the condition has theirs or is i64 (a mask from an i64
    /// comparison, say). Gradients flow to `a` where the condition holds and to `b`
    /// elsewhere; the condition gets none.
    pub fn where_cond(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        const OP: &str = "where_cond";
        if self.dtype() == DType::I64 {
            super::index::check_device(OP, a, self)?;
        } else {
            check_same_kind(OP, self, a)?;
        }
        check_same_kind(OP, a, b)?;
        if a.dtype() != DType::I64 {
            check_float(OP, a)?;
        }
        let shape = broadcast_shape(OP, self.shape(), a.shape())?;
        let shape = broadcast_shape(OP, &shape, b.shape())?;
        let lc = self.layout().broadcast_to(&shape).expect("validated");
        let la = a.layout().broadcast_to(&shape).expect("validated");
        let lb = b.layout().broadcast_to(&shape).expect("validated");
        let (sc, sa, sb) = (self.storage(), a.storage(), b.storage());
        let out = self.device().backend().where_cond(&*sc, &lc, &*sa, &la, &*sb, &lb)?;
        let out = Tensor::from_storage(out, Layout::contiguous(&shape), self.device().clone());
        let cond = self.detach();
        let (sa_shape, sb_shape) = (a.shape().to_vec(), b.shape().to_vec());
        let (need_a, need_b) = (a.tracks_grad(), b.tracks_grad());
        record(
            OP,
            out,
            &[a, b],
            Box::new(move |g| {
                let zero = g.zeros_like()?;
                let ga = if need_a {
                    Some(cond.where_cond(g, &zero)?.sum_to(&sa_shape)?)
                } else {
                    None
                };
                let gb = if need_b {
                    Some(cond.where_cond(&zero, g)?.sum_to(&sb_shape)?)
                } else {
                    None
                };
                Ok(vec![ga, gb])
            }),
        )
    }

    /// Replace elements where `mask != 0` by `value` (mask broadcasts to self).
    pub fn masked_fill(&self, mask: &Tensor, value: f64) -> Result<Tensor> {
        in_op("masked_fill", || {
            let fill = Tensor::scalar(value, self.dtype(), self.device())?;
            mask.where_cond(&fill, self)
        })
    }

    /// Inverted dropout: zero each element with probability `p` and scale the rest
    /// by `1/(1−p)`. Identity when `train` is false or `p == 0`.
    pub fn dropout(&self, p: f64, train: bool) -> Result<Tensor> {
        check_float("dropout", self)?;
        if !(0.0..1.0).contains(&p) {
            return Err(Error::invalid("dropout", format!("probability {p} is not in [0, 1)")));
        }
        if !train || p == 0.0 {
            return Ok(self.clone());
        }
        in_op("dropout", || {
            let mask = Tensor::bernoulli(self.shape(), 1.0 - p, self.dtype(), self.device())?;
            self.mul(&mask.mul_scalar(1.0 / (1.0 - p))?)
        })
    }
}

/// Gradients `(ga, gb)` of `maximum` (`a_loses = Lt`, `a_wins = Ge`) or `minimum`
/// (`Gt`, `Le`): `a` gets `g` unless it loses strictly, `b` gets `g` unless `a` wins
/// or ties. A NaN makes both comparisons false, so both operands get `g`.
fn extremum_grads(
    name: &'static str,
    a: &Tensor,
    b: &Tensor,
    g: &Tensor,
    a_loses: BinaryOp,
    a_wins: BinaryOp,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let not = UnaryOp::Affine(-1.0, 1.0);
    let to_a = a.zip_raw(a_loses, name, b)?.map_raw(not)?;
    let to_b = a.zip_raw(a_wins, name, b)?.map_raw(not)?;
    Ok((Some(g.mul(&to_a)?), Some(g.mul(&to_b)?)))
}

/// The derivative of exact GELU, `Φ(x) + x·φ(x)`, as a recorded op (there is no
/// `erf` tensor op to compose `Φ` from): one derivative kernel forward, and its own
/// derivative `φ(x)·(2 − x²)` in recorded ops backward, so GELU is differentiable to
/// any order. Public for the differentiable backward of custom ops (nn's fused
/// feed-forward).
pub fn gelu_erf_grad(x: &Tensor) -> Result<Tensor> {
    let out = x.map_raw(UnaryOp::GeluErfGrad)?;
    let x_in = x.clone();
    record(
        "gelu_grad",
        out,
        &[x],
        Box::new(move |g| {
            // φ(x) = e^(−x²/2)/√(2π)
            let x2 = x_in.sqr()?;
            let phi = x2
                .mul_scalar(-0.5)?
                .exp()?
                .mul_scalar(1.0 / (2.0 * std::f64::consts::PI).sqrt())?;
            Ok(vec![Some(g.mul(&phi.mul(&x2.affine(-1.0, 2.0)?)?)?)])
        }),
    )
}

/// The derivative of tanh-GELU in recorded ops: with `u = c(x + 0.044715x³)`,
/// `t = tanh(u)`: `0.5(1 + t) + 0.5x(1 − t²)·c(1 + 3·0.044715x²)`.
fn gelu_tanh_grad_composed(x: &Tensor) -> Result<Tensor> {
    const K: f64 = 0.044715;
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let x2 = x.sqr()?;
    let t = x.add(&x.mul(&x2)?.mul_scalar(K)?)?.mul_scalar(c)?.tanh()?;
    let du = x2.affine(3.0 * K * c, c)?;
    let left = t.affine(0.5, 0.5)?;
    let right = x.mul(&t.sqr()?.affine(-1.0, 1.0)?)?.mul(&du)?.mul_scalar(0.5)?;
    left.add(&right)
}

/// Apply a backend unary map without recording a gradient, including the derivative
/// maps such as [`UnaryOp::GeluErfGrad`] that have no tensor op of their own: for
/// the hand-written backward passes of custom ops.
pub fn unary(x: &Tensor, op: UnaryOp) -> Result<Tensor> {
    check_float("unary", x)?;
    let dev = x.device();
    let s = x.storage();
    let out = dev.backend().unary(op, &*s, x.layout())?;
    Tensor::from_backend_storage(out, x.shape(), dev)
}

// ----- issue 17 (helper "ops"): comparisons on i64 ----------------------------------

impl Tensor {
    /// Comparison of two i64 tensors with broadcasting: i64 1/0, never recorded.
    fn cmp_i64(&self, op: BinaryOp, name: &'static str, rhs: &Tensor) -> Result<Tensor> {
        check_same_kind(name, self, rhs)?;
        let shape = broadcast_shape(name, self.shape(), rhs.shape())?;
        let la = self.layout().broadcast_to(&shape).expect("broadcast_shape validated");
        let lb = rhs.layout().broadcast_to(&shape).expect("broadcast_shape validated");
        let (sa, sb) = (self.storage(), rhs.storage());
        let out = self.device().backend().binary(op, &*sa, &la, &*sb, &lb)?;
        Ok(Tensor::from_storage(
            out,
            Layout::contiguous(&shape),
            self.device().clone(),
        ))
    }
}

/// `c` as the i64 it equals, or an error naming `op`: an i64 tensor is compared
/// with integers only, so that `x < 2.5` cannot silently become `x < 2`.
fn i64_scalar(op: &'static str, c: f64, shape: &[usize]) -> Result<i64> {
    // 2^63 is exactly representable; every integer-valued f64 in [-2^63, 2^63) fits
    let lim = 2f64.powi(63);
    if c.fract() == 0.0 && (-lim..lim).contains(&c) {
        Ok(c as i64)
    } else {
        Err(Error::invalid(
            op,
            format!("compares an i64 tensor (shape {shape:?}) with {c}, which is not an integer in i64's range"),
        ))
    }
}
