//! The norm family: fused LayerNorm / RMSNorm over the last axis (forward and
//! backward) and the row moments, the overrides of `Backend::norm_last`,
//! `norm_last_backward` and `moments_last`. Each is one pass over memory (two for the
//! backward's row sums and for the moments) instead of the dozen primitive kernels of
//! the composed defaults in core.
//!
//! Work is split into blocks of whole rows of a fixed size, so column sums (dγ, dβ)
//! are added in the same order whatever the number of threads: results are
//! bit-identical from run to run.

use super::reduce::sum_slice;
use super::view::dense_cow;
use crate::elem::Float;
use crate::pool;
use crate::simd::vectorized;
use crate::storage::{need, opt_operand, rows_by_n, slice_of, unsupported, CpuStorage, StorageElem};
use crate::strided::par_threshold;
use rayon::prelude::*;
use unigrad_core::{Layout, Result};

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
fn moments_rows<T: Float>(x: &[T], mean: &mut [T], var: &mut [T], n: usize) {
    let inv = T::ONE / T::from_f64(n.max(1) as f64);
    for (i, (m, v)) in mean.iter_mut().zip(var.iter_mut()).enumerate() {
        let xr = &x[i * n..(i + 1) * n];
        let mu = sum_slice(xr) * inv;
        let mut acc = [T::ZERO; 16];
        let chunks = xr.chunks_exact(16);
        let rem = chunks.remainder();
        for c in chunks {
            for j in 0..16 {
                let d = c[j] - mu;
                acc[j] = acc[j] + d * d;
            }
        }
        let mut ss = acc.iter().fold(T::ZERO, |a, &b| a + b);
        for &x in rem {
            ss = ss + (x - mu) * (x - mu);
        }
        *m = mu;
        *v = ss * inv;
    }
}

/// Per-row mean and biased variance (two passes, numerically stable) of `rows`
/// rows of length `n` of dense `x`. An empty row has mean 0 and variance 0 (what
/// the composed default in core computes).
pub fn moments<T: Float>(x: &[T], rows: usize, n: usize) -> (Vec<T>, Vec<T>) {
    let mut mean = pool::take::<T>(rows);
    let mut var = pool::take::<T>(rows);
    if n == 0 {
        mean.fill(T::ZERO);
        var.fill(T::ZERO);
        return (mean, var);
    }
    let block = (4096 / n).max(1);
    let work = |b: usize, m: &mut [T], v: &mut [T]| {
        let xs = &x[b * block * n..(b * block + m.len()) * n];
        vectorized!(moments_rows(xs, m, v, n))
    };
    if x.len() >= par_threshold() {
        mean.par_chunks_mut(block)
            .zip(var.par_chunks_mut(block))
            .enumerate()
            .for_each(|(b, (m, v))| work(b, m, v));
    } else {
        work(0, &mut mean, &mut var);
    }
    (mean, var)
}

/// `Backend::moments_last`: per-row mean and biased variance over the last axis of
/// `src` viewed through `l`, each dense with one element per row.
pub fn moments_last(src: &CpuStorage, l: &Layout) -> Result<(CpuStorage, CpuStorage)> {
    let (n, rows) = match l.shape().split_last() {
        Some((&n, rest)) => (n, rest.iter().product()),
        None => (1, 1),
    };
    Ok(match src {
        CpuStorage::F32(x) => {
            let (m, v) = moments(&dense_cow(x, l), rows, n);
            (CpuStorage::F32(m), CpuStorage::F32(v))
        }
        CpuStorage::F64(x) => {
            let (m, v) = moments(&dense_cow(x, l), rows, n);
            (CpuStorage::F64(m), CpuStorage::F64(v))
        }
        s => return Err(unsupported("moments_last", s, l.shape())),
    })
}

/// `Backend::norm_last` for dense `x` seen as `[rows, n]`: `(y, mean, rstd)`. Storage
/// shorter than the sizes, or operands of another dtype, are errors.
#[allow(clippy::too_many_arguments)]
pub fn norm_last(
    x: &CpuStorage,
    rows: usize,
    n: usize,
    w: Option<&CpuStorage>,
    b: Option<&CpuStorage>,
    eps: f64,
    rms: bool,
) -> Result<(CpuStorage, CpuStorage, CpuStorage)> {
    fn run<T: StorageElem>(
        xs: &[T],
        x: &CpuStorage,
        (rows, n): (usize, usize),
        w: Option<&CpuStorage>,
        b: Option<&CpuStorage>,
        eps: f64,
        rms: bool,
    ) -> Result<(CpuStorage, CpuStorage, CpuStorage)> {
        const OP: &str = "norm_last";
        let (ws, bs) = (opt_operand::<T>(OP, w, x, n)?, opt_operand::<T>(OP, b, x, n)?);
        let len = rows_by_n(OP, rows, n)?;
        let (y, m, r) = norm_forward(need(OP, xs, len)?, rows, n, ws, bs, eps, rms);
        Ok((T::wrap(y), T::wrap(m), T::wrap(r)))
    }
    match x {
        CpuStorage::F32(d) => run(d, x, (rows, n), w, b, eps, rms),
        CpuStorage::F64(d) => run(d, x, (rows, n), w, b, eps, rms),
        s => Err(unsupported("norm_last", s, &[rows, n])),
    }
}

/// Outputs of `Backend::norm_last_backward`: `(dx, dγ, dβ)`.
type NormGrads = (CpuStorage, Option<CpuStorage>, Option<CpuStorage>);

/// `Backend::norm_last_backward` for dense operands (`x`, `dy` `[rows, n]`, the
/// statistics `[rows]`, `w` `[n]`): `(dx, dγ, dβ)`, `dβ` absent for RMS. Storage
/// shorter than the sizes, or operands of another dtype, are errors.
#[allow(clippy::too_many_arguments)]
pub fn norm_last_backward(
    x: &CpuStorage,
    mean: &CpuStorage,
    rstd: &CpuStorage,
    w: Option<&CpuStorage>,
    dy: &CpuStorage,
    rows: usize,
    n: usize,
    rms: bool,
) -> Result<NormGrads> {
    fn run<T: StorageElem>(
        xs: &[T],
        [x, mean, rstd, dy]: [&CpuStorage; 4],
        w: Option<&CpuStorage>,
        (rows, n): (usize, usize),
        rms: bool,
    ) -> Result<NormGrads> {
        const OP: &str = "norm_last_backward";
        let one = |s, len| need(OP, slice_of::<T>(OP, s, x)?, len);
        let len = rows_by_n(OP, rows, n)?;
        let (dx, dw, db) = norm_backward(
            need(OP, xs, len)?,
            one(dy, len)?,
            one(mean, rows)?,
            one(rstd, rows)?,
            opt_operand::<T>(OP, w, x, n)?,
            n,
            rms,
        );
        let db = if rms { None } else { db };
        Ok((T::wrap(dx), dw.map(T::wrap), db.map(T::wrap)))
    }
    let ops = [x, mean, rstd, dy];
    match x {
        CpuStorage::F32(d) => run(d, ops, w, (rows, n), rms),
        CpuStorage::F64(d) => run(d, ops, w, (rows, n), rms),
        s => Err(unsupported("norm_last_backward", s, &[rows, n])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strided::{par_threshold, set_par_threshold};
    use unigrad_core::{Backend, HostData};

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
    }

    #[test]
    fn moments_match_two_pass_reference_and_handle_empty_rows() {
        for (rows, n) in [(3, 7), (300, 129), (5, 1)] {
            let x: Vec<f64> = (0..rows * n).map(|i| ((i * 31) % 97) as f64 * 0.1 + 1e3).collect();
            let (m, v) = moments(&x, rows, n);
            for r in 0..rows {
                let xr = &x[r * n..(r + 1) * n];
                let mu = xr.iter().sum::<f64>() / n as f64;
                let var = xr.iter().map(|a| (a - mu) * (a - mu)).sum::<f64>() / n as f64;
                assert!((m[r] - mu).abs() < 1e-9 && (v[r] - var).abs() < 1e-9);
            }
        }
        let (m, v) = moments::<f32>(&[], 4, 0);
        assert_eq!((m, v), (vec![0.0; 4], vec![0.0; 4]));
    }
}
