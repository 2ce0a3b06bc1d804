//! Fused LayerNorm / RMSNorm over the last axis (forward and backward) and the fused
//! Adam update: the overrides of `Backend::norm_last`, `norm_last_backward` and
//! `adam_update`. Each is one pass over memory (two for the backward's row sums)
//! instead of the dozen primitive kernels of the composed defaults in core.
//!
//! Work is split into blocks of whole rows of a fixed size, so column sums (dγ, dβ)
//! are added in the same order whatever the number of threads: results are
//! bit-identical from run to run.

use super::reduce::sum_slice;
use crate::elem::Float;
use crate::pool;
use crate::simd::vectorized;
use crate::strided::par_threshold;
use rayon::prelude::*;
use unigrad_core::AdamStep;

/// Rows per block: about 8K elements, at least one row, and at most 64 blocks in all
/// (each backward block keeps two partial column sums of `n`). Depends only on the
/// shape, never on the thread count, so the column sums are deterministic.
fn block_rows(rows: usize, n: usize) -> usize {
    (8192 / n.max(1)).max(rows.div_ceil(64)).max(1)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_rows<T: Float>(
    x: &[T],
    y: &mut [T],
    mean: &mut [T],
    rstd: &mut [T],
    w: Option<&[T]>,
    b: Option<&[T]>,
    n: usize,
    eps: T,
    rms: bool,
) {
    let inv = T::ONE / T::from_f64(n.max(1) as f64);
    for (((xr, yr), m), r) in x
        .chunks_exact(n)
        .zip(y.chunks_exact_mut(n))
        .zip(mean.iter_mut())
        .zip(rstd.iter_mut())
    {
        let mu = if rms { T::ZERO } else { sum_slice(xr) * inv };
        // second pass on the centred values (stable); written into y as scratch
        for (d, &v) in yr.iter_mut().zip(xr) {
            *d = (v - mu) * (v - mu);
        }
        let rs = T::ONE / (sum_slice(yr) * inv + eps).sqrt();
        // the row is in L1 by now: the affine steps as separate passes cost nothing and
        // round exactly like `(v − μ)·r·γ + β` in one expression
        for (d, &v) in yr.iter_mut().zip(xr) {
            *d = (v - mu) * rs;
        }
        if let Some(w) = w {
            for (d, &wv) in yr.iter_mut().zip(w) {
                *d = *d * wv;
            }
        }
        if let Some(b) = b {
            for (d, &bv) in yr.iter_mut().zip(b) {
                *d = *d + bv;
            }
        }
        *m = mu;
        *r = rs;
    }
}

/// Forward of LayerNorm (`rms == false`) or RMSNorm over `rows` rows of length `n` of
/// dense `x`: `(y, mean, rstd)` (mean all zero for RMS; an empty row has mean 0 and
/// `rstd = 1/√eps`, as the composed default gives).
#[allow(clippy::too_many_arguments)]
pub fn norm_forward<T: Float>(
    x: &[T],
    rows: usize,
    n: usize,
    w: Option<&[T]>,
    b: Option<&[T]>,
    eps: f64,
    rms: bool,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let mut y = pool::take::<T>(x.len());
    let mut mean = pool::take::<T>(rows);
    let mut rstd = pool::take::<T>(rows);
    if n == 0 || rows == 0 {
        mean.fill(T::ZERO);
        rstd.fill(T::ONE / T::from_f64(eps).sqrt());
        return (y, mean, rstd);
    }
    let eps = T::from_f64(eps);
    let br = block_rows(rows, n);
    let work = |blk: usize, y: &mut [T], m: &mut [T], r: &mut [T]| {
        let xs = &x[blk * br * n..blk * br * n + y.len()];
        vectorized!(forward_rows(xs, y, m, r, w, b, n, eps, rms))
    };
    if x.len() >= par_threshold() {
        y.par_chunks_mut(br * n)
            .zip(mean.par_chunks_mut(br))
            .zip(rstd.par_chunks_mut(br))
            .enumerate()
            .for_each(|(blk, ((y, m), r))| work(blk, y, m, r));
    } else {
        work(0, &mut y, &mut mean, &mut rstd);
    }
    (y, mean, rstd)
}

/// Per-block partial column sums of the backward: `(Σ dy·x̂, Σ dy)` over the block's rows.
type Partial<T> = (Vec<T>, Vec<T>);

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_rows<T: Float>(
    x: &[T],
    dy: &[T],
    dx: &mut [T],
    mean: &[T],
    rstd: &[T],
    w: Option<&[T]>,
    acc: &mut Partial<T>,
    n: usize,
    rms: bool,
) {
    let inv = T::ONE / T::from_f64(n.max(1) as f64);
    for (i, ((xr, gr), dr)) in x
        .chunks_exact(n)
        .zip(dy.chunks_exact(n))
        .zip(dx.chunks_exact_mut(n))
        .enumerate()
    {
        let (mu, rs) = (mean[i], rstd[i]);
        // dx holds g = dy·γ first, then the result
        match w {
            Some(w) => {
                for ((d, &gv), &wv) in dr.iter_mut().zip(gr).zip(w) {
                    *d = gv * wv;
                }
                for (((a, c), &gv), &xv) in acc.0.iter_mut().zip(acc.1.iter_mut()).zip(gr).zip(xr) {
                    *a = *a + gv * ((xv - mu) * rs);
                    *c = *c + gv;
                }
            }
            None => dr.copy_from_slice(gr),
        }
        // Σ g·x̂ and Σ g over the row
        let mut sgx = [T::ZERO; 16];
        let mut sg = [T::ZERO; 16];
        let cx = xr.chunks_exact(16);
        let rem_x = cx.remainder();
        let cd = dr.chunks_exact(16);
        let rem_d = cd.remainder();
        for (xc, dc) in cx.zip(cd) {
            for j in 0..16 {
                sgx[j] = sgx[j] + dc[j] * ((xc[j] - mu) * rs);
                sg[j] = sg[j] + dc[j];
            }
        }
        let mut pgx = sgx.iter().fold(T::ZERO, |a, &b| a + b);
        let mut pg = sg.iter().fold(T::ZERO, |a, &b| a + b);
        for (&xv, &gv) in rem_x.iter().zip(rem_d) {
            pgx = pgx + gv * ((xv - mu) * rs);
            pg = pg + gv;
        }
        let proj = pgx * inv;
        let mg = if rms { T::ZERO } else { pg * inv };
        for (d, &xv) in dr.iter_mut().zip(xr) {
            *d = rs * (*d - (xv - mu) * rs * proj - mg);
        }
    }
}

/// Backward of [`norm_forward`]: `(dx, dγ, dβ)`; `dγ`, `dβ` are computed when `w` is
/// given (the caller drops `dβ` for RMS).
#[allow(clippy::type_complexity)]
pub fn norm_backward<T: Float>(
    x: &[T],
    dy: &[T],
    mean: &[T],
    rstd: &[T],
    w: Option<&[T]>,
    n: usize,
    rms: bool,
) -> (Vec<T>, Option<Vec<T>>, Option<Vec<T>>) {
    let mut dx = pool::take::<T>(x.len());
    let want_w = w.is_some();
    let zero = || {
        (
            vec![T::ZERO; if want_w { n } else { 0 }],
            vec![T::ZERO; if want_w { n } else { 0 }],
        )
    };
    if n == 0 || x.is_empty() {
        let (a, c) = zero();
        return (dx, want_w.then_some(a), want_w.then_some(c));
    }
    let br = block_rows(x.len() / n, n);
    let work = |blk: usize, d: &mut [T]| -> Partial<T> {
        let r0 = blk * br;
        let range = r0 * n..r0 * n + d.len();
        let nr = d.len() / n;
        let mut acc = zero();
        vectorized!(backward_rows(
            &x[range.clone()],
            &dy[range],
            d,
            &mean[r0..r0 + nr],
            &rstd[r0..r0 + nr],
            w,
            &mut acc,
            n,
            rms
        ));
        acc
    };
    let partials: Vec<Partial<T>> = if x.len() >= par_threshold() {
        dx.par_chunks_mut(br * n)
            .enumerate()
            .map(|(blk, d)| work(blk, d))
            .collect()
    } else {
        dx.chunks_mut(br * n).enumerate().map(|(blk, d)| work(blk, d)).collect()
    };
    if !want_w {
        return (dx, None, None);
    }
    let (mut dw, mut db) = zero();
    for (a, c) in &partials {
        for ((s, t), (&u, &v)) in dw.iter_mut().zip(db.iter_mut()).zip(a.iter().zip(c)) {
            *s = *s + u;
            *t = *t + v;
        }
    }
    (dx, Some(dw), Some(db))
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn adam_chunk<T: Float>(
    p: &[T],
    g: &[T],
    m: Option<&[T]>,
    v: Option<&[T]>,
    np: &mut [T],
    nm: &mut [T],
    nv: &mut [T],
    k: [T; 7],
    step: bool,
) {
    let [wd_l2, one_m_b1, one_m_b2, decay, a, c, _] = k;
    for i in 0..p.len() {
        let gi = g[i] + wd_l2 * p[i];
        let mi = match m {
            Some(m) => m[i] + (gi - m[i]) * one_m_b1,
            None => gi * one_m_b1,
        };
        let g2 = gi * gi;
        let vi = match v {
            Some(v) => v[i] + (g2 - v[i]) * one_m_b2,
            None => g2 * one_m_b2,
        };
        nm[i] = mi;
        nv[i] = vi;
        np[i] = if step {
            p[i] * decay - mi / (vi.sqrt() * a + c)
        } else {
            p[i]
        };
    }
}

/// One Adam / AdamW update over dense slices of one length: `(p, m, v)` after the
/// step; absent `m`, `v` are zeros. Same arithmetic as core's composed default.
pub fn adam<T: Float>(p: &[T], g: &[T], m: Option<&[T]>, v: Option<&[T]>, h: &AdamStep) -> (Vec<T>, Vec<T>, Vec<T>) {
    let len = p.len();
    let (mut np, mut nm, mut nv) = (pool::take::<T>(len), pool::take::<T>(len), pool::take::<T>(len));
    let (decay, a, c) = h.folded();
    let wd_l2 = if h.decoupled { 0.0 } else { h.weight_decay };
    let k = [wd_l2, 1.0 - h.beta1, 1.0 - h.beta2, decay, a, c, 0.0].map(T::from_f64);
    let step = h.lr != 0.0;
    const CH: usize = 1 << 14;
    let work = |i: usize, np: &mut [T], nm: &mut [T], nv: &mut [T]| {
        let r = i * CH..i * CH + np.len();
        let (m, v) = (m.map(|m| &m[r.clone()]), v.map(|v| &v[r.clone()]));
        vectorized!(adam_chunk(&p[r.clone()], &g[r.clone()], m, v, np, nm, nv, k, step))
    };
    if len >= par_threshold() {
        np.par_chunks_mut(CH)
            .zip(nm.par_chunks_mut(CH))
            .zip(nv.par_chunks_mut(CH))
            .enumerate()
            .for_each(|(i, ((a, b), c))| work(i, a, b, c));
    } else {
        for (i, ((a, b), c)) in np
            .chunks_mut(CH)
            .zip(nm.chunks_mut(CH))
            .zip(nv.chunks_mut(CH))
            .enumerate()
        {
            work(i, a, b, c);
        }
    }
    (np, nm, nv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strided::{par_threshold, set_par_threshold};
    use unigrad_core::{Backend, DType, HostData};

    fn data(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect()
    }

    #[test]
    fn column_sums_do_not_depend_on_threading() {
        let (rows, n) = (3000, 96);
        let (x, dy, w) = (data(rows * n, 1), data(rows * n, 2), data(n, 3));
        let (_, mean, rstd) = norm_forward(&x, rows, n, Some(&w), None, 1e-5, false);
        let run = || norm_backward(&x, &dy, &mean, &rstd, Some(&w), n, false);
        let old = par_threshold();
        set_par_threshold(usize::MAX);
        let (dx1, dw1, db1) = run();
        set_par_threshold(0);
        let (dx2, dw2, db2) = run();
        set_par_threshold(old);
        assert_eq!(dx1, dx2);
        assert_eq!(dw1, dw2, "dγ must be bit-identical on one thread and on the pool");
        assert_eq!(db1, db2);
    }

    #[test]
    fn storage_shorter_than_the_sizes_is_an_error_not_a_panic() {
        let b = crate::CpuBackend;
        let x = b.from_host(&HostData::F32(data(10, 4))).unwrap();
        let w = b.from_host(&HostData::F32(data(3, 5))).unwrap();
        // 4 rows of 5 need 20 elements; the weight needs 5
        assert!(b.norm_last(&*x, 4, 5, None, None, 1e-5, false).is_err());
        assert!(b.norm_last(&*x, 2, 5, Some(&*w), None, 1e-5, false).is_err());
        let (_, m, r) = b.norm_last(&*x, 2, 5, None, None, 1e-5, false).unwrap();
        assert!(b.norm_last_backward(&*x, &*m, &*r, None, &*x, 3, 5, false).is_err());
        assert!(b
            .norm_last_backward(&*x, &*m, &*r, Some(&*w), &*x, 2, 5, false)
            .is_err());
        let h = AdamStep {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: true,
            bias_correction1: 0.1,
            bias_correction2: 0.001,
        };
        assert!(b.adam_update(&*x, &*w, None, None, 10, &h).is_err());
        assert!(b.adam_update(&*x, &*x, Some(&*w), None, 10, &h).is_err());
        assert!(b.adam_update(&*x, &*x, None, None, 10, &h).is_ok());
        let z = b.zeros(10, DType::F64).unwrap();
        assert!(b.adam_update(&*x, &*z, None, None, 10, &h).is_err(), "dtype mismatch");
    }
}
