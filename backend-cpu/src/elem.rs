//! The float element trait the generic kernels are written against, with the math
//! functions (erf included) that `std` lacks or spells differently per type.
//!
//! For f32, `exp`, `ln` and `tanh` are the libm-free versions in [`crate::simd`], so
//! loops using them vectorise (within 1 ulp for exp and ln, 2 for tanh, of the
//! correctly rounded result; exp flushes subnormal results to 0).
//! f64 keeps `std`'s functions: f64 is the gradient-checking type, where accuracy
//! matters more than speed.

use crate::simd;
use std::ops::{Add, Div, Mul, Neg, Sub};

/// A float type the CPU kernels run on (`f32` or `f64`).
pub trait Float:
    crate::pool::Pooled
    + Copy
    + Default
    + Send
    + Sync
    + PartialOrd
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + std::iter::Sum
    + std::fmt::Debug
{
    /// 0
    const ZERO: Self;
    /// 1
    const ONE: Self;
    /// −∞
    const NEG_INF: Self;
    /// +∞
    const INF: Self;
    /// Convert from f64 (rounding for f32).
    fn from_f64(v: f64) -> Self;
    /// Widen to f64.
    fn to_f64(self) -> f64;
    /// e^x
    fn exp(self) -> Self;
    /// ln x
    fn ln(self) -> Self;
    /// √x
    fn sqrt(self) -> Self;
    /// tanh
    fn tanh(self) -> Self;
    /// |x|
    fn abs(self) -> Self;
    /// x^p
    fn powf(self, p: Self) -> Self;
    /// error function
    fn erf(self) -> Self;
    /// true for NaN
    fn is_nan(self) -> bool;
    /// max that propagates NaN from either side
    fn maxv(self, o: Self) -> Self {
        if self.is_nan() || self > o {
            self
        } else {
            o
        }
    }
    /// min that propagates NaN from either side
    fn minv(self, o: Self) -> Self {
        if self.is_nan() || self < o {
            self
        } else {
            o
        }
    }
}

macro_rules! float_impl {
    ($t:ty, $erf:path, $exp:path, $ln:path, $tanh:path) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INF: Self = <$t>::NEG_INFINITY;
            const INF: Self = <$t>::INFINITY;
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn exp(self) -> Self {
                $exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                $ln(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                $tanh(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn powf(self, p: Self) -> Self {
                <$t>::powf(self, p)
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            #[inline(always)]
            fn erf(self) -> Self {
                $erf(self)
            }
        }
    };
}
float_impl!(f32, erf_f32, simd::exp_f32, simd::log_f32, simd::tanh_f32);
float_impl!(f64, erf_f64, f64::exp, f64::ln, f64::tanh);

/// erf for f64, within a couple of ulps: for `|x| < 2` the everywhere-positive
/// series `erf(x) = 2/√π · e^{−x²} · Σ 2ⁿ x^{2n+1} / (1·3·…·(2n+1))` (no
/// cancellation); for `2 ≤ |x| < 6` `1 − erfc(x)` with erfc from its continued
/// fraction (A&S 7.1.14, modified Lentz), which the series cannot match there; ±1
/// beyond, where erfc is below half an ulp of 1.
pub fn erf_f64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let ax = x.abs();
    if ax >= 6.0 {
        return x.signum();
    }
    let x2 = ax * ax;
    if ax >= 2.0 {
        // erfc(z) = e^{−z²}/√π · 1/(z + (1/2)/(z + 1/(z + (3/2)/(z + …))))
        let (mut f, mut c, mut d) = (ax, ax, 0.0f64);
        for n in 1..200 {
            let a = n as f64 * 0.5;
            d = 1.0 / (ax + a * d);
            c = ax + a / c;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        let erfc = (-x2).exp() / (std::f64::consts::PI.sqrt() * f);
        return (1.0 - erfc).copysign(x);
    }
    let mut term = ax;
    let mut sum = ax;
    let mut n = 0.0;
    loop {
        n += 1.0;
        term *= 2.0 * x2 / (2.0 * n + 1.0);
        sum += term;
        // `<=` so that x = 0 (term = sum = 0) stops at once
        if term <= sum * 1e-17 {
            break;
        }
    }
    let r = std::f64::consts::FRAC_2_SQRT_PI * (-x2).exp() * sum;
    r.min(1.0).copysign(x)
}

/// erf for f32, libm-free and branch-free so it vectorises: the rational
/// `x·P(x²)/Q(x²)` of Eigen's `generic_fast_erf_float` for |x| < 3.92, exactly ±1
/// beyond (where erf rounds to ±1 in f32). One division, no `exp`:
/// the rational alone is within 6.5e-8 of erf on [−4, 4] (checked against libm in
/// f64), within 2.7e-7 after f32 rounding, about 4.5 ulp near ±1 (tested; Horner
/// steps use `mul_add`, exact on every SIMD level). An earlier version switched to
/// Abramowitz & Stegun 7.1.26 for |x| ≥ 1, which cost an `exp` and a second
/// division per element and made GELU take 2.5× the time of a memcpy of its bytes.
/// On the scalar level (no AVX2/FMA) `mul_add` is a libm `fmaf` call: correct, slow.
#[inline(always)]
#[allow(clippy::excessive_precision)]
pub fn erf_f32(x: f32) -> f32 {
    // NaN stays NaN through the clamp and the rational
    let xc = x.clamp(-4.0, 4.0);
    let x2 = xc * xc;
    let p = -2.726_142_258_013_06e-10f32;
    let p = p.mul_add(x2, 2.770_681_424_959_02e-08);
    let p = p.mul_add(x2, -2.101_024_020_825_08e-06);
    let p = p.mul_add(x2, -5.692_506_394_623_46e-05);
    let p = p.mul_add(x2, -7.349_906_303_268_55e-04);
    let p = p.mul_add(x2, -2.954_599_808_540_25e-03);
    let p = p.mul_add(x2, -1.609_603_332_624_15e-02);
    let q = -1.456_607_184_649_96e-05f32;
    let q = q.mul_add(x2, -2.133_740_552_789_05e-04);
    let q = q.mul_add(x2, -1.682_826_974_382_03e-03);
    let q = q.mul_add(x2, -7.373_329_167_204_68e-03);
    let q = q.mul_add(x2, -1.426_473_905_141_89e-02);
    let r = xc * p / q;
    // from 3.92 on erf rounds to ±1 in f32 (erfc(3.92) = 2.96e-8, under half an ulp below 1); the rational
    // would stay a few ulp below
    if xc.abs() >= 3.92 {
        1.0f32.copysign(x)
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn erf_known_values() {
        // reference values: mpmath at 30 digits, and libm (Python math.erf) for 1.99
        let cases = [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.5, 0.999_999_256_901_627_7),
            (1.5, 0.966_105_146_475_310_7),
            (1.99, 0.995_111_413_199_617),
            (2.5, 0.999_593_047_982_555),
            (5.0, 0.999_999_999_998_462_5),
        ];
        for (x, want) in cases {
            assert!((erf_f64(x) - want).abs() <= 4.5e-16, "erf({x}) = {}", erf_f64(x));
            assert!((erf_f64(-x) + want).abs() <= 4.5e-16);
            assert!((erf_f32(x as f32) as f64 - want).abs() < 2.5e-7, "erf_f32({x})");
        }
    }

    #[test]
    fn erf_f32_error_bound_over_its_range() {
        let mut worst: f64 = 0.0;
        for i in 0..=24_000 {
            let x = -6.0 + i as f64 * 0.0005;
            let x32 = x as f32;
            worst = worst.max((erf_f32(x32) as f64 - erf_f64(x32 as f64)).abs());
        }
        assert!(worst < 3e-7, "max |erf_f32 - erf| = {worst:e}");
        assert_eq!(erf_f32(0.0), 0.0);
        for x in [3.92f32, 4.0, 4.5, 10.0, 1e30] {
            assert_eq!(erf_f32(x), 1.0);
            assert_eq!(erf_f32(-x), -1.0);
        }
        assert!(erf_f32(f32::NAN).is_nan());
        assert_eq!(erf_f32(f32::INFINITY), 1.0);
        assert_eq!(erf_f32(f32::NEG_INFINITY), -1.0);
    }
}
