//! Learning-rate schedules.
//!
//! `lr_at(step)` takes the number of optimizer updates already done (0 before the
//! first update) and returns the rate for the next one, so a loop does
//! `opt.set_lr(sched.lr_at(step))?; opt.step()`. [`LrSchedule::validate`] refuses a rate
//! parameter that is not finite or is negative, and `set_lr` refuses such a rate too.

use unigrad_core::{Error, Result};

/// A learning-rate schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LrSchedule {
    /// The same rate throughout.
    Constant {
        /// The rate.
        lr: f64,
    },
    /// Linear warmup from `lr/warmup` to `lr` over `warmup` updates, then cosine decay to
    /// `min_lr` at `total` updates (and `min_lr` after).
    WarmupCosine {
        /// Peak rate.
        lr: f64,
        /// Warmup updates.
        warmup: u64,
        /// Total updates.
        total: u64,
        /// Final rate.
        min_lr: f64,
    },
    /// fairseq's `inverse_sqrt`: linear warmup from `warmup_init_lr` to `lr` over
    /// `warmup` updates, then `lr·√warmup/√step`.
    InverseSqrt {
        /// Peak rate.
        lr: f64,
        /// Warmup updates.
        warmup: u64,
        /// Rate at step 0.
        warmup_init_lr: f64,
    },
}

impl LrSchedule {
    /// Check the parameters: every rate (`lr`, `min_lr`, `warmup_init_lr`) must be finite
    /// and at least 0, `total` at least `warmup`, and `warmup` at least 1 for
    /// `InverseSqrt`. The error names the schedule and the value.
    pub fn validate(&self) -> Result<()> {
        let (name, rates): (&str, &[(&str, f64)]) = match self {
            LrSchedule::Constant { lr } => ("constant", &[("lr", *lr)]),
            LrSchedule::WarmupCosine { lr, min_lr, .. } => ("warmup_cosine", &[("lr", *lr), ("min_lr", *min_lr)]),
            LrSchedule::InverseSqrt { lr, warmup_init_lr, .. } => {
                ("inverse_sqrt", &[("lr", *lr), ("warmup_init_lr", *warmup_init_lr)])
            }
        };
        let bad = |m: String| Err(Error::invalid("LrSchedule", format!("{name}: {m}")));
        for &(what, v) in rates {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!("{what} {v} must be finite and >= 0"));
            }
        }
        match *self {
            LrSchedule::WarmupCosine { total, warmup, .. } if total < warmup => {
                bad(format!("total {total} is shorter than warmup {warmup}"))
            }
            LrSchedule::InverseSqrt { warmup: 0, .. } => bad("needs warmup >= 1".into()),
            _ => Ok(()),
        }
    }

    /// The rate for the update after `step` updates.
    pub fn lr_at(&self, step: u64) -> f64 {
        match *self {
            LrSchedule::Constant { lr } => lr,
            LrSchedule::WarmupCosine {
                lr,
                warmup,
                total,
                min_lr,
            } => {
                if step < warmup {
                    lr * (step + 1) as f64 / warmup as f64
                } else if total <= warmup {
                    min_lr
                } else {
                    let p = ((step - warmup) as f64 / (total - warmup) as f64).min(1.0);
                    min_lr + 0.5 * (lr - min_lr) * (1.0 + (std::f64::consts::PI * p).cos())
                }
            }
            LrSchedule::InverseSqrt {
                lr,
                warmup,
                warmup_init_lr,
            } => {
                if step < warmup {
                    warmup_init_lr + step as f64 * (lr - warmup_init_lr) / warmup as f64
                } else {
                    lr * (warmup as f64).sqrt() / (step as f64).sqrt()
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_cosine_shape() {
        let s = LrSchedule::WarmupCosine {
            lr: 1.0,
            warmup: 10,
            total: 110,
            min_lr: 0.1,
        };
        s.validate().unwrap();
        assert!((s.lr_at(0) - 0.1).abs() < 1e-12);
        assert!((s.lr_at(9) - 1.0).abs() < 1e-12);
        assert!((s.lr_at(10) - 1.0).abs() < 1e-12);
        assert!((s.lr_at(60) - 0.55).abs() < 1e-12);
        assert!((s.lr_at(110) - 0.1).abs() < 1e-12);
        assert!((s.lr_at(500) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn inverse_sqrt_matches_fairseq() {
        let s = LrSchedule::InverseSqrt {
            lr: 5e-4,
            warmup: 4000,
            warmup_init_lr: 1e-7,
        };
        assert_eq!(s.lr_at(0), 1e-7);
        assert!((s.lr_at(2000) - (1e-7 + 2000.0 * (5e-4 - 1e-7) / 4000.0)).abs() < 1e-15);
        assert!((s.lr_at(4000) - 5e-4).abs() < 1e-15);
        assert!((s.lr_at(16000) - 2.5e-4).abs() < 1e-15);
        assert!(LrSchedule::InverseSqrt {
            lr: 1.0,
            warmup: 0,
            warmup_init_lr: 0.0
        }
        .validate()
        .is_err());
    }
}
