//! The softmax family: softmax and log-softmax over the last axis, forward and
//! backward (the overrides of `Backend::softmax_last` and friends). One pass over
//! memory per direction instead of the five kernels the composed default in core
//! launches; each row body runs through `simd::vectorized!`, with the libm-free f32
//! `exp` so the exponentials vectorise.

use super::reduce::{reduce_slice, sum_slice};
use super::view::dense_cow;
use crate::elem::Float;
use crate::pool;
use crate::simd::vectorized;
use crate::storage::{mismatch, unsupported, CpuStorage};
use crate::strided::par_threshold;
use rayon::prelude::*;
use unigrad_core::{Layout, ReduceOp, Result};

/// Run `f(first_row, rows)` over blocks of whole rows of length `n` of `out`, in
/// parallel when large. Blocks hold about 4K elements so short rows are batched.
fn row_blocks<T: Float>(out: &mut [T], n: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if n == 0 || out.is_empty() {
        return;
    }
    let rows_per_block = (4096 / n).max(1);
    if out.len() >= par_threshold() {
        out.par_chunks_mut(rows_per_block * n)
            .enumerate()
            .for_each(|(b, o)| f(b * rows_per_block, o));
    } else {
        f(0, out);
    }
}

#[inline(always)]
fn softmax_rows<T: Float>(x: &[T], o: &mut [T], n: usize, log: bool) {
    for (xr, or) in x.chunks_exact(n).zip(o.chunks_exact_mut(n)) {
        let m = reduce_slice(ReduceOp::Max, xr);
        // an all −∞ row: shift by 0 so exp gives 0s (and the sum 0) instead of NaN
        let m = if m == T::NEG_INF { T::ZERO } else { m };
        for (d, &v) in or.iter_mut().zip(xr) {
            *d = (v - m).exp();
        }
        let s = sum_slice(or);
        if log {
            // (x − m) − ln Σ, not x − (m + ln Σ): the latter rounds to the precision
            // of m, which swamps small log-probabilities when |m| is large
            let ls = s.ln();
            for (d, &v) in or.iter_mut().zip(xr) {
                *d = (v - m) - ls;
            }
        } else {
            let inv = T::ONE / s;
            for d in or.iter_mut() {
                *d = *d * inv;
            }
        }
    }
}

/// Softmax (or log-softmax) of each row of dense `x` with rows of length `n`.
pub fn softmax<T: Float>(x: &[T], n: usize, log: bool) -> Vec<T> {
    let mut out = pool::take::<T>(x.len());
    row_blocks(&mut out, n, |r0, o| {
        let xs = &x[r0 * n..r0 * n + o.len()];
        vectorized!(softmax_rows(xs, o, n, log))
    });
    out
}

#[inline(always)]
fn softmax_backward_rows<T: Float>(y: &[T], dy: &[T], o: &mut [T], n: usize, log: bool) {
    for ((yr, gr), or) in y.chunks_exact(n).zip(dy.chunks_exact(n)).zip(o.chunks_exact_mut(n)) {
        if log {
            let s = sum_slice(gr);
            for ((d, &yv), &gv) in or.iter_mut().zip(yr).zip(gr) {
                *d = gv - yv.exp() * s;
            }
        } else {
            for ((d, &yv), &gv) in or.iter_mut().zip(yr).zip(gr) {
                *d = yv * gv;
            }
            let s = sum_slice(or);
            for ((d, &yv), &gv) in or.iter_mut().zip(yr).zip(gr) {
                *d = yv * (gv - s);
            }
        }
    }
}

/// Backward of softmax (`log == false`, `y` = probabilities) or log-softmax
/// (`log == true`, `y` = log-probabilities), rows of length `n`.
pub fn softmax_backward<T: Float>(y: &[T], dy: &[T], n: usize, log: bool) -> Vec<T> {
    let mut out = pool::take::<T>(y.len());
    row_blocks(&mut out, n, |r0, o| {
        let range = r0 * n..r0 * n + o.len();
        vectorized!(softmax_backward_rows(&y[range.clone()], &dy[range], o, n, log))
    });
    out
}

/// `Backend::softmax_last` / `log_softmax_last` (`log`) over the last axis of `src`
/// viewed through `l`: dense output.
pub fn softmax_last(src: &CpuStorage, l: &Layout, log: bool) -> Result<CpuStorage> {
    let n = *l.shape().last().unwrap_or(&1);
    Ok(match src {
        CpuStorage::F32(x) => CpuStorage::F32(softmax(&dense_cow(x, l), n, log)),
        CpuStorage::F64(x) => CpuStorage::F64(softmax(&dense_cow(x, l), n, log)),
        s => return Err(unsupported("softmax", s, l.shape())),
    })
}

/// `Backend::softmax_last_backward` / `log_softmax_last_backward` (`log`) for dense
/// `y` and `dy` of `shape`.
pub fn softmax_last_backward(y: &CpuStorage, dy: &CpuStorage, shape: &[usize], log: bool) -> Result<CpuStorage> {
    let n = *shape.last().unwrap_or(&1);
    Ok(match (y, dy) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => CpuStorage::F32(softmax_backward(a, b, n, log)),
        (CpuStorage::F64(a), CpuStorage::F64(b)) => CpuStorage::F64(softmax_backward(a, b, n, log)),
        (a, b) => return Err(mismatch("softmax_backward", a, b)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn softmax_ref(x: &[f64], n: usize) -> Vec<f64> {
        let mut out = Vec::new();
        for r in x.chunks(n) {
            let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = r.iter().map(|&v| (v - m).exp()).collect();
            let s: f64 = e.iter().sum();
            out.extend(e.iter().map(|v| v / s));
        }
        out
    }

    #[test]
    fn softmax_f32_matches_f64_reference_small_and_large() {
        for (rows, n) in [(3, 5), (2, 1), (700, 128), (40, 1030)] {
            let x64: Vec<f64> = (0..rows * n)
                .map(|i| ((i * 7919) % 2003) as f64 * 0.01 - 10.0)
                .collect();
            let x32: Vec<f32> = x64.iter().map(|&v| v as f32).collect();
            let x64: Vec<f64> = x32.iter().map(|&v| v as f64).collect();
            let want = softmax_ref(&x64, n);
            let got = softmax(&x32, n, false);
            for (g, w) in got.iter().zip(&want) {
                assert!((*g as f64 - w).abs() <= 1e-6 * w.max(1e-3), "{g} vs {w}");
            }
            let got = softmax(&x32, n, true);
            for (g, w) in got.iter().zip(&want) {
                assert!((*g as f64 - w.ln()).abs() <= 2e-5, "{g} vs {}", w.ln());
            }
        }
    }

    #[test]
    fn softmax_of_all_neg_inf_row_and_backward() {
        let x = [f32::NEG_INFINITY; 4];
        let y = softmax(&x, 4, false);
        assert!(y.iter().all(|v| v.is_nan()), "0/0 like the composed path: {y:?}");
        // backward against the formula
        let y = [0.1f64, 0.2, 0.7, 0.25, 0.25, 0.5];
        let dy = [1.0f64, -2.0, 0.5, 0.0, 3.0, 1.0];
        let dx = softmax_backward(&y, &dy, 3, false);
        for r in 0..2 {
            let s: f64 = (0..3).map(|j| y[r * 3 + j] * dy[r * 3 + j]).sum();
            for j in 0..3 {
                let i = r * 3 + j;
                assert!((dx[i] - y[i] * (dy[i] - s)).abs() < 1e-15);
            }
        }
        let dx = softmax_backward(&y, &dy, 3, true);
        for r in 0..2 {
            let s: f64 = (0..3).map(|j| dy[r * 3 + j]).sum();
            for j in 0..3 {
                let i = r * 3 + j;
                assert!((dx[i] - (dy[i] - y[i].exp() * s)).abs() < 1e-15);
            }
        }
    }
}
