//! Side-by-side timing of a few variants of one computation (e.g. eval forwards of
//! LayerNorm and folded-UN models).
//!
//! Speed claims are only meaningful as ratios measured in one run, and machines drift (turbo,
//! other processes). So the variants are timed in *rounds*: each round runs every variant
//! once, the order rotating from round to round so that no variant always runs first or
//! right after a particular other one, and the medians over rounds are compared. Besides
//! wall-clock time each call's *CPU time* of the whole process (all threads, from Linux's
//! `/proc/self/task/*/schedstat`) is recorded: on a loaded machine wall-clock time includes
//! time spent waiting for a core, CPU time measures the work itself. Where schedstat is
//! unavailable the CPU times are `None`.

use super::TrainResult;
use std::time::Instant;
use unigrad::prelude::*;

/// Nanoseconds the current process's threads have spent on a CPU, summed over threads
/// (Linux `schedstat`); `None` elsewhere.
pub fn process_cpu_ns() -> Option<u64> {
    let mut total = 0u64;
    let mut any = false;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let path = entry.ok()?.path().join("schedstat");
        // a thread can exit between listing and reading: skip it
        if let Ok(text) = std::fs::read_to_string(path) {
            total += text.split_whitespace().next()?.parse::<u64>().ok()?;
            any = true;
        }
    }
    any.then_some(total)
}

/// Medians of one variant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// Median wall-clock seconds per call.
    pub wall_s: f64,
    /// Median process CPU seconds per call (all threads), where measurable.
    pub cpu_s: Option<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Time `variants` in `warmup` untimed and `rounds` timed rounds, rotating the order each
/// round. Each call's result is copied to the host (which waits for asynchronous devices).
pub fn time_interleaved<F>(variants: &[F], warmup: usize, rounds: usize) -> TrainResult<Vec<Timing>>
where
    F: Fn() -> Result<Tensor>,
{
    let n = variants.len();
    let mut wall = vec![Vec::with_capacity(rounds); n];
    let mut cpu = vec![Vec::with_capacity(rounds); n];
    for round in 0..warmup + rounds {
        for k in 0..n {
            let i = (k + round) % n;
            let c0 = process_cpu_ns();
            let t0 = Instant::now();
            let y = variants[i]()?;
            let _ = y.to_vec_f64()?;
            let dt = t0.elapsed().as_secs_f64();
            let c1 = process_cpu_ns();
            if round >= warmup {
                wall[i].push(dt);
                if let (Some(a), Some(b)) = (c0, c1) {
                    cpu[i].push(b.saturating_sub(a) as f64 * 1e-9);
                }
            }
        }
    }
    Ok(wall
        .into_iter()
        .zip(cpu)
        .map(|(w, c)| Timing {
            wall_s: median(w),
            cpu_s: (c.len() == rounds && rounds > 0).then(|| median(c)),
        })
        .collect())
}

/// Number of subnormal (denormal) values among `tensors` (floating point only): such values
/// make CPU arithmetic much slower and explain surprising timings.
pub fn count_subnormal(tensors: &[Tensor]) -> TrainResult<usize> {
    let mut n = 0;
    for t in tensors {
        if t.dtype().is_float() {
            n += t
                .to_vec_f64()?
                .iter()
                .filter(|&&x| x != 0.0 && x.abs() < f32::MIN_POSITIVE as f64)
                .count();
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn medians_and_rotation() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
        let dev = unigrad::cpu::cpu();
        let calls = Cell::new(0usize);
        let order = std::cell::RefCell::new(Vec::new());
        let mk = |id: usize| {
            let (calls, order, dev) = (&calls, &order, &dev);
            move || {
                calls.set(calls.get() + 1);
                order.borrow_mut().push(id);
                Tensor::zeros(&[2], DType::F32, dev)
            }
        };
        let v = [mk(0), mk(1), mk(2)];
        let t = time_interleaved(&v, 1, 3).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(calls.get(), 12);
        // rotation: each round starts with a different variant
        let o = order.borrow();
        assert_eq!(&o[..], &[0, 1, 2, 1, 2, 0, 2, 0, 1, 0, 1, 2]);
        assert!(t.iter().all(|x| x.wall_s >= 0.0));
    }

    #[test]
    fn subnormals_are_counted() {
        let dev = unigrad::cpu::cpu();
        let t = Tensor::from_vec(vec![1.0f32, 1e-40, 0.0, -1e-39, 3.0], &[5], &dev).unwrap();
        assert_eq!(count_subnormal(&[t]).unwrap(), 2);
        if cfg!(target_os = "linux") {
            let a = process_cpu_ns().unwrap();
            let mut x = 0u64;
            for i in 0..2_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
            assert!(process_cpu_ns().unwrap() >= a);
        }
    }
}
