//! Wide vectors without `-C target-cpu=native`: run-time dispatch plus kernels
//! shaped for the auto-vectoriser.
//!
//! Release builds target baseline x86-64 (SSE2), because users' and CI's CPUs are
//! unknown. To still get AVX2 or AVX-512 code, every hot loop runs through
//! [`dispatch`]: it calls the loop inside a function compiled with
//! `#[target_feature(enable = "avx512f,…")]` (or AVX2 + FMA) when the CPU has those
//! features, detected once with `is_x86_feature_detected!`. The loop body is
//! inlined into that function, so LLVM vectorises it at that width. The loop bodies
//! are ordinary, branch-free scalar code — one source for every width.
//!
//! What makes that work for transcendental functions is that they must not call
//! libm (a call per element cannot be vectorised): [`exp_f32`], [`log_f32`] and
//! [`tanh_f32`] are written as range reduction plus polynomial with only
//! arithmetic, selects and bit casts. They use no fused multiply-add (which Rust
//! never forms implicitly), so every level computes **bit-identical** results: the
//! SIMD level changes speed, never numbers (tested below).
//!
//! [`set_max_level`] caps the level at run time, which the benchmarks use to show
//! the scalar path beside the vector paths.

use std::sync::atomic::{AtomicU8, Ordering};

/// The instruction-set level kernels run at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Baseline code (SSE2 on x86-64, 4 f32 lanes at best).
    Scalar = 1,
    /// AVX2 + FMA (8 f32 lanes).
    Avx2 = 2,
    /// AVX-512 F/BW/DQ/VL (16 f32 lanes).
    Avx512 = 3,
}

impl Level {
    fn from_u8(v: u8) -> Level {
        match v {
            3 => Level::Avx512,
            2 => Level::Avx2,
            _ => Level::Scalar,
        }
    }
}

static DETECTED: AtomicU8 = AtomicU8::new(0);
static CAP: AtomicU8 = AtomicU8::new(3);

/// The best level this CPU supports (detected once).
pub fn detected() -> Level {
    let d = DETECTED.load(Ordering::Relaxed);
    if d != 0 {
        return Level::from_u8(d);
    }
    let l = detect();
    DETECTED.store(l as u8, Ordering::Relaxed);
    l
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Level {
    if is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512dq")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
    {
        Level::Avx512
    } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        Level::Avx2
    } else {
        Level::Scalar
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Level {
    Level::Scalar
}

/// The level kernels use now: the detected level, capped by [`set_max_level`].
#[inline]
pub fn level() -> Level {
    detected().min(Level::from_u8(CAP.load(Ordering::Relaxed)))
}

/// Cap the level for the whole process (`None` removes the cap). Returns the level
/// kernels will use. Meant for benchmarks and tests comparing paths.
pub fn set_max_level(cap: Option<Level>) -> Level {
    CAP.store(cap.unwrap_or(Level::Avx512) as u8, Ordering::Relaxed);
    level()
}

/// Run `f` compiled for the current [`level`]: `f` is inlined into a function with
/// the level's target features, so the loops in it are vectorised at that width.
/// Call it around a whole loop (a row or a chunk), not per element.
///
/// The kernels use the `vectorized!` macro instead, which makes a separate
/// closure per level: a closure called from one place only is always inlined,
/// which is what carries the loop into the target-feature function.
#[inline(always)]
pub fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    dispatch_at(level(), f)
}

/// [`dispatch`] at an explicit level (clamped to what the CPU supports).
#[inline(always)]
pub fn dispatch_at<R>(l: Level, f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        match l.min(detected()) {
            // SAFETY: `detected()` confirmed every feature `avx512` enables.
            Level::Avx512 => return unsafe { x86::avx512(f) },
            // SAFETY: `detected()` confirmed AVX2 and FMA.
            Level::Avx2 => return unsafe { x86::avx2(f) },
            Level::Scalar => {}
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = l;
    f()
}

/// Evaluate an expression (typically a call of an `#[inline(always)]` loop) compiled
/// for the current [`level`]. Expands the expression once per level, each in its own
/// closure, so that each is inlined into its target-feature function.
macro_rules! vectorized {
    ($body:expr) => {
        $crate::simd::vectorized!(@at $crate::simd::level(), $body)
    };
    (@at $level:expr, $body:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            match $level.min($crate::simd::detected()) {
                $crate::simd::Level::Avx512 => {
                    let f = || $body;
                    // SAFETY: `detected()` confirmed every feature `avx512` enables.
                    unsafe { $crate::simd::x86::avx512(f) }
                }
                $crate::simd::Level::Avx2 => {
                    let f = || $body;
                    // SAFETY: `detected()` confirmed AVX2 and FMA.
                    unsafe { $crate::simd::x86::avx2(f) }
                }
                $crate::simd::Level::Scalar => $body,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = $level;
            $body
        }
    }};
}
pub(crate) use vectorized;

// `#[inline]` on these is essential although they are never inlined into their
// (feature-less) callers: it makes rustc instantiate each one in the codegen unit
// of its caller, where the closure `f` lives. Without it the instantiations are
// placed in this module's unit, LLVM cannot inline `f` across units, and `f` runs
// as baseline code (measured: softmax ran entirely on SSE).
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    /// Runs `f` with AVX-512 enabled for everything inlined into it.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
    pub fn avx512<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    /// Runs `f` with AVX2 and FMA enabled for everything inlined into it.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub fn avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
}

// Polynomial coefficients below are quoted with the digits of their sources
// (Cephes); the compiler rounds them to f32.
#[allow(clippy::excessive_precision)]
mod math {
    /// `1.5·2²³`: adding it rounds an f32 of magnitude < 2²² to an integer, which
    /// then sits in the low mantissa bits.
    const ROUND_MAGIC: f32 = 12_582_912.0;

    /// Below this, [`exp_f32`] returns 0: `e^x` would be subnormal (< 1.19e-38).
    pub const EXP_FLUSH_BELOW: f32 = -87.33;

    /// `e^x` for f32 without libm, vectorisable. Cody–Waite reduction
    /// `x = n·ln2 + r`, `|r| ≤ ln2/2`, Cephes' degree-5 polynomial for `e^r`, then
    /// scaling by `2^n` in two halves (so results up to `f32::MAX` stay finite).
    /// Max error 1 ulp against the correctly rounded result (tested over the whole
    /// range); `exp(NaN) = NaN`, `exp(+∞) = +∞`, `exp(−∞) = 0`.
    ///
    /// Results that would be subnormal (`x < −87.33`) are flushed to 0, and the
    /// arithmetic never produces a subnormal intermediate: on Intel cores each
    /// subnormal result costs a microcode assist of 100+ cycles, which made GELU
    /// (whose `erf` takes `e^{−x²}`) and masked softmax rows 5× slower.
    #[inline(always)]
    pub fn exp_f32(x: f32) -> f32 {
        const LOG2E: f32 = std::f32::consts::LOG2_E;
        const LN2_HI: f32 = 0.693_359_375; // 9 significant bits: n·LN2_HI is exact
        const LN2_LO: f32 = -2.121_944_400_546_905_8e-4;
        // clamp so the scaled result stays normal (n ≥ −126 with r > 0) and 2^n
        // representable in two halves; NaN passes through untouched here
        // (comparisons are false) and is restored at the end
        let xc = if x < EXP_FLUSH_BELOW { EXP_FLUSH_BELOW } else { x };
        let xc = if xc > 89.0 { 89.0 } else { xc };
        let t = xc * LOG2E + ROUND_MAGIC;
        let n = t - ROUND_MAGIC;
        let r = xc - n * LN2_HI;
        let r = r - n * LN2_LO;
        let p = 1.987_569_150_0e-4;
        let p = p * r + 1.398_199_950_7e-3;
        let p = p * r + 8.333_451_907_3e-3;
        let p = p * r + 4.166_579_589_4e-2;
        let p = p * r + 1.666_666_545_9e-1;
        let p = p * r + 5.000_000_120_1e-1;
        let e = p * (r * r) + r + 1.0;
        let ni = (t.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32);
        let n1 = ni >> 1;
        let n2 = ni.wrapping_sub(n1);
        let s1 = f32::from_bits((n1.wrapping_add(127) << 23) as u32);
        let s2 = f32::from_bits((n2.wrapping_add(127) << 23) as u32);
        let y = e * s1 * s2;
        let y = if x > 88.722_84 { f32::INFINITY } else { y };
        let y = if x < EXP_FLUSH_BELOW { 0.0 } else { y };
        if x.is_nan() {
            x
        } else {
            y
        }
    }

    /// Natural log for f32 without libm, vectorisable (Cephes `logf`: mantissa in
    /// `[√½, √2)`, degree-8 polynomial). Max error 1 ulp (tested); subnormal inputs
    /// are scaled first; `ln 0 = −∞`, `ln(x<0) = NaN`, `ln ∞ = ∞`.
    #[inline(always)]
    pub fn log_f32(x: f32) -> f32 {
        const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
        let tiny = x < f32::MIN_POSITIVE;
        let xs = if tiny { x * 8_388_608.0 } else { x }; // 2^23: subnormals become normal
        let bits = xs.to_bits() as i32;
        let bias = if tiny { 126 + 23 } else { 126 };
        let e = ((bits >> 23) & 0xff).wrapping_sub(bias); // so that xs = m·2^e, m ∈ [½, 1)
        let m = f32::from_bits(((bits & 0x007f_ffff) | 0x3f00_0000) as u32);
        let low = m < SQRT_HALF;
        let e = if low { e.wrapping_sub(1) } else { e };
        let f = if low { m + m - 1.0 } else { m - 1.0 };
        let z = f * f;
        let p = 7.037_683_629_2e-2;
        let p = p * f - 1.151_461_031_0e-1;
        let p = p * f + 1.167_699_874_0e-1;
        let p = p * f - 1.242_014_084_6e-1;
        let p = p * f + 1.424_932_278_7e-1;
        let p = p * f - 1.666_805_766_5e-1;
        let p = p * f + 2.000_071_476_5e-1;
        let p = p * f - 2.499_999_399_3e-1;
        let p = p * f + 3.333_333_117_4e-1;
        let ef = e as f32;
        let y = p * f * z;
        let y = y + ef * -2.121_944_400e-4;
        let y = y - 0.5 * z;
        let r = f + y;
        let r = r + ef * 0.693_359_375;
        let r = if x == f32::INFINITY { x } else { r };
        let r = if x == 0.0 { f32::NEG_INFINITY } else { r };
        // negative or NaN
        if x >= 0.0 {
            r
        } else {
            f32::NAN
        }
    }

    /// tanh for f32 without libm, vectorisable: Cephes' odd polynomial for
    /// `|x| < 0.625`, `1 − 2/(e^{2|x|} + 1)` beyond. Max error 2 ulp (tested).
    #[inline(always)]
    pub fn tanh_f32(x: f32) -> f32 {
        let ax = x.abs();
        let e = exp_f32(ax + ax);
        let big = 1.0 - 2.0 / (e + 1.0);
        let z = x * x;
        let p = -5.704_988_727_45e-3;
        let p = p * z + 2.063_908_879_54e-2;
        let p = p * z - 5.373_971_555_31e-2;
        let p = p * z + 1.333_144_220_36e-1;
        let p = p * z - 3.333_328_194_22e-1;
        let small = p * z * x + x;
        if ax < 0.625 {
            small
        } else {
            big.copysign(x)
        }
    }
}

pub use math::{exp_f32, log_f32, tanh_f32, EXP_FLUSH_BELOW};

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between two finite f32 of one sign.
    fn ulps(a: f32, b: f32) -> u32 {
        if a == b {
            return 0;
        }
        let (ia, ib) = (a.to_bits() as i64, b.to_bits() as i64);
        (ia - ib).unsigned_abs() as u32
    }

    /// Every `step`-th f32 in [lo, hi] (walking the bit patterns of one sign).
    fn sweep(lo: f32, hi: f32, step: u32) -> impl Iterator<Item = f32> {
        assert!(lo >= 0.0 || hi <= 0.0);
        let (a, b) = (lo.to_bits().min(hi.to_bits()), lo.to_bits().max(hi.to_bits()));
        (a..=b).step_by(step as usize).map(f32::from_bits)
    }

    fn max_ulps(f: fn(f32) -> f32, reference: fn(f64) -> f64, xs: impl Iterator<Item = f32>) -> (u32, f32) {
        let mut worst = (0, 0.0);
        for x in xs {
            let want = reference(x as f64) as f32;
            let got = f(x);
            let u = ulps(got, want);
            if u > worst.0 {
                worst = (u, x);
            }
        }
        worst
    }

    #[test]
    fn exp_is_within_one_ulp_everywhere() {
        let neg = max_ulps(exp_f32, f64::exp, sweep(-0.0, EXP_FLUSH_BELOW, 97));
        let pos = max_ulps(exp_f32, f64::exp, sweep(0.0, 88.72, 97));
        assert!(neg.0 <= 1, "exp: {} ulp at {}", neg.0, neg.1);
        assert!(pos.0 <= 1, "exp: {} ulp at {}", pos.0, pos.1);
    }

    #[test]
    fn exp_special_values() {
        assert!(exp_f32(f32::NAN).is_nan());
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-0.0), 1.0);
        assert_eq!(exp_f32(88.73), f32::INFINITY);
        assert_eq!(exp_f32(1000.0), f32::INFINITY);
        assert_eq!(exp_f32(-1000.0), 0.0);
        assert_eq!(exp_f32(88.72), 88.72f32.exp());
        // subnormal results are flushed to zero (absolute error < 1.2e-38)
        assert!(exp_f32(EXP_FLUSH_BELOW) >= f32::MIN_POSITIVE);
        for x in [-87.34f32, -87.5, -90.0, -95.3, -103.9, -104.0] {
            assert_eq!(exp_f32(x), 0.0, "{x}");
            assert!(x.exp() < 1.2e-38);
        }
    }

    #[test]
    fn log_is_within_one_ulp_everywhere() {
        let normal = max_ulps(log_f32, f64::ln, sweep(f32::MIN_POSITIVE, f32::MAX, 4099));
        assert!(normal.0 <= 1, "log: {} ulp at {}", normal.0, normal.1);
        let near1 = max_ulps(log_f32, f64::ln, sweep(0.5, 2.0, 7));
        assert!(near1.0 <= 1, "log: {} ulp at {}", near1.0, near1.1);
        let sub = max_ulps(log_f32, f64::ln, sweep(f32::from_bits(1), f32::MIN_POSITIVE, 1013));
        assert!(sub.0 <= 1, "log: {} ulp at {}", sub.0, sub.1);
    }

    #[test]
    fn log_special_values() {
        assert!(log_f32(f32::NAN).is_nan());
        assert!(log_f32(-1.0).is_nan());
        assert!(log_f32(f32::NEG_INFINITY).is_nan());
        assert_eq!(log_f32(0.0), f32::NEG_INFINITY);
        assert_eq!(log_f32(-0.0), f32::NEG_INFINITY);
        assert_eq!(log_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(log_f32(1.0), 0.0);
    }

    #[test]
    fn tanh_is_within_two_ulps() {
        let pos = max_ulps(tanh_f32, f64::tanh, sweep(0.0, 12.0, 1009));
        let neg = max_ulps(tanh_f32, f64::tanh, sweep(-0.0, -12.0, 1009));
        assert!(pos.0 <= 2, "tanh: {} ulp at {}", pos.0, pos.1);
        assert!(neg.0 <= 2, "tanh: {} ulp at {}", neg.0, neg.1);
        assert_eq!(tanh_f32(50.0), 1.0);
        assert_eq!(tanh_f32(-50.0), -1.0);
        assert_eq!(tanh_f32(f32::INFINITY), 1.0);
        assert!(tanh_f32(f32::NAN).is_nan());
        assert_eq!(tanh_f32(1e-30), 1e-30);
    }

    #[test]
    fn every_level_computes_identical_bits() {
        let xs: Vec<f32> = (0..4099).map(|i| (i as f32 - 2000.0) * 0.037).collect();
        let run = |l: Level| -> Vec<u32> {
            let mut out = vec![0u32; xs.len()];
            vectorized!(@at l, {
                for (o, &x) in out.iter_mut().zip(&xs) {
                    *o = (exp_f32(x) + log_f32(x.abs()) + tanh_f32(x)).to_bits();
                }
            });
            out
        };
        let base = run(Level::Scalar);
        assert_eq!(run(Level::Avx2), base);
        assert_eq!(run(Level::Avx512), base);
        let via_fn = |l: Level| -> Vec<u32> { dispatch_at(l, || xs.iter().map(|&x| exp_f32(x).to_bits()).collect()) };
        assert_eq!(via_fn(Level::Avx512), via_fn(Level::Scalar));
    }

    #[test]
    fn level_cap_is_clamped_to_the_cpu() {
        assert!(level() <= detected());
        assert!(Level::Scalar <= detected());
    }
}
