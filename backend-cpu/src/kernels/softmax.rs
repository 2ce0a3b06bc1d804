//! Fused row kernels over the last axis: softmax, log-softmax (forward and
//! backward) and mean/variance. One pass over memory per direction instead of the
//! five kernels the composed fallback in core launches.

use super::reduce::sum_slice;
use crate::elem::Float;
use crate::strided::PAR_THRESHOLD;
use rayon::prelude::*;

fn rows<T: Float>(out: &mut [T], n: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if n == 0 {
        return;
    }
    if out.len() >= PAR_THRESHOLD {
        out.par_chunks_mut(n).enumerate().for_each(|(r, o)| f(r, o));
    } else {
        out.chunks_mut(n).enumerate().for_each(|(r, o)| f(r, o));
    }
}

/// Softmax (or log-softmax) of each row of dense `x` with rows of length `n`.
pub fn softmax<T: Float>(x: &[T], n: usize, log: bool) -> Vec<T> {
    let mut out = vec![T::ZERO; x.len()];
    rows(&mut out, n, |r, o| {
        let xr = &x[r * n..(r + 1) * n];
        let m = xr.iter().fold(T::NEG_INF, |a, &b| a.maxv(b));
        let m = if m == T::NEG_INF { T::ZERO } else { m };
        for (d, &v) in o.iter_mut().zip(xr) {
            *d = (v - m).exp();
        }
        let s = sum_slice(o);
        if log {
            let ls = s.ln() + m;
            for (d, &v) in o.iter_mut().zip(xr) {
                *d = v - ls;
            }
        } else {
            let inv = T::ONE / s;
            for d in o.iter_mut() {
                *d = *d * inv;
            }
        }
    });
    out
}

/// Backward of softmax (`log == false`, `y` = probabilities) or log-softmax
/// (`log == true`, `y` = log-probabilities), rows of length `n`.
pub fn softmax_backward<T: Float>(y: &[T], dy: &[T], n: usize, log: bool) -> Vec<T> {
    let mut out = vec![T::ZERO; y.len()];
    rows(&mut out, n, |r, o| {
        let (yr, gr) = (&y[r * n..(r + 1) * n], &dy[r * n..(r + 1) * n]);
        if log {
            let s = sum_slice(gr);
            for ((d, &yv), &gv) in o.iter_mut().zip(yr).zip(gr) {
                *d = gv - yv.exp() * s;
            }
        } else {
            let s: T = yr.iter().zip(gr).map(|(&a, &b)| a * b).sum();
            for ((d, &yv), &gv) in o.iter_mut().zip(yr).zip(gr) {
                *d = yv * (gv - s);
            }
        }
    });
    out
}

/// Per-row mean and biased variance (two passes, numerically stable).
pub fn moments<T: Float>(x: &[T], n: usize) -> (Vec<T>, Vec<T>) {
    let r = if n == 0 { 0 } else { x.len() / n };
    let mut stats = vec![T::ZERO; 2 * r];
    let inv = T::ONE / T::from_f64(n.max(1) as f64);
    let f = |i: usize, o: &mut [T]| {
        let xr = &x[i * n..(i + 1) * n];
        let mean = sum_slice(xr) * inv;
        let var: T = xr.iter().map(|&v| (v - mean) * (v - mean)).sum::<T>() * inv;
        o[0] = mean;
        o[1] = var;
    };
    if x.len() >= PAR_THRESHOLD {
        stats.par_chunks_mut(2).enumerate().for_each(|(i, o)| f(i, o));
    } else {
        stats.chunks_mut(2).enumerate().for_each(|(i, o)| f(i, o));
    }
    let mean = stats.iter().step_by(2).copied().collect();
    let var = stats.iter().skip(1).step_by(2).copied().collect();
    (mean, var)
}
