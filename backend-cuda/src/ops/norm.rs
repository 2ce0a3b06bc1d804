//! The norm family: row statistics (`Backend::moments_last`) and fused LayerNorm /
//! RMSNorm over the last axis, forward (`Backend::norm_last`) and backward
//! (`Backend::norm_last_backward`). Kernels in `kernels/norm.cu`.
//!
//! The forward is one launch (a warp or a block per row, as
//! [`CudaBackend::row_config`] picks). The backward is one launch for `dx` and, with
//! an affine weight, the column sums `dγ = Σ dy·x̂` and `dβ = Σ dy`: `norm_bwd_cols`
//! sums fixed chunks of rows per column, and [`column_sums`] adds the chunks. Chunks
//! depend only on the shape, so the sums have the same bits on every run.

use super::reduce::column_sums;
use crate::backend::{float_only, numel, rows_of, sfx, CudaBackend};
use crate::plan::{grid_for, BLOCK};
use crate::ptx::kargs;
use crate::storage::CudaStorage;
use unigrad_core::backend::{BackendStorage, BoxStorage};
use unigrad_core::layout::Layout;
use unigrad_core::{Error, Result};

/// Columns × chunks the column-sum kernel aims for (enough threads to fill a GPU).
const COLUMN_SUM_THREADS: usize = 1 << 16;
/// Fewest rows a chunk of the column-sum kernel sums (fewer only when `rows` is smaller).
const MIN_CHUNK_ROWS: usize = 8;

/// `Backend::moments_last`: mean and biased variance over the last axis of any
/// strided view, dense with the last axis of size 1.
pub(crate) fn moments_last(
    b: &CudaBackend,
    src: &dyn BackendStorage,
    layout: &Layout,
) -> Result<(BoxStorage, BoxStorage)> {
    const OP: &str = "moments_last";
    b.gpu().enter()?;
    let s = b.operand(OP, src, layout)?;
    float_only(OP, s.dtype, layout.shape())?;
    let n_stat = numel(&layout.shape()[..layout.rank().saturating_sub(1)]);
    let (mean, var) = (b.alloc(n_stat, s.dtype)?, b.alloc(n_stat, s.dtype)?);
    if n_stat > 0 {
        let (rows, cs, n_rows, n_cols) = rows_of(OP, layout)?;
        let (warp, grid, block) = b.row_config(n_rows, n_cols);
        let (xp, mp, vp) = (s.ptr, mean.ptr, var.ptr);
        let name = format!("moments_{}", sfx(s.dtype));
        let params = kargs![rows, cs, xp, mp, vp, n_rows, n_cols, warp];
        // SAFETY: params match moments_*(Index<1>, u64, x, mean, var, u64, u64, u32);
        // view checked; mean/var hold n_rows elements.
        unsafe { b.launch(&name, [grid, 1, 1], block, &params)? };
    }
    Ok((Box::new(mean), Box::new(var)))
}

/// `rows · n`, or an error naming `op` when it overflows.
fn elements(op: &'static str, [rows, n]: [usize; 2]) -> Result<usize> {
    rows.checked_mul(n)
        .ok_or_else(|| Error::invalid(op, format!("{rows} rows of {n} elements overflow usize")))
}

/// Device address of an optional operand (0, which the kernels test, when absent).
fn ptr_or_null(s: Option<&CudaStorage>) -> u64 {
    s.map_or(0, |s| s.ptr)
}

/// `Backend::norm_last` over dense `x` viewed as `[rows, n]`, with optional dense `[n]`
/// weight and bias: `(y, mean, rstd)`, the statistics dense `[rows]`.
pub(crate) fn forward(
    b: &CudaBackend,
    x: &dyn BackendStorage,
    [rows, n]: [usize; 2],
    (weight, bias): (Option<&dyn BackendStorage>, Option<&dyn BackendStorage>),
    eps: f64,
    rms: bool,
) -> Result<(BoxStorage, BoxStorage, BoxStorage)> {
    const OP: &str = "norm_last";
    b.gpu().enter()?;
    let len = elements(OP, [rows, n])?;
    let dtype = x.dtype();
    let xs = b.dense_operand(OP, x, len, dtype)?;
    let w = weight.map(|w| b.dense_operand(OP, w, n, dtype)).transpose()?;
    let bs = bias.map(|s| b.dense_operand(OP, s, n, dtype)).transpose()?;
    let (y, mean, rstd) = (b.alloc(len, dtype)?, b.alloc(rows, dtype)?, b.alloc(rows, dtype)?);
    if rows > 0 {
        let (n_rows, n_cols, rms) = (rows as u64, n as u64, u32::from(rms));
        let (warp, grid, block) = b.row_config(n_rows, n_cols);
        let (xp, wp, bp) = (xs.ptr, ptr_or_null(w), ptr_or_null(bs));
        let (yp, mp, rp) = (y.ptr, mean.ptr, rstd.ptr);
        let name = format!("norm_fwd_{}", sfx(dtype));
        let params = kargs![xp, wp, bp, yp, mp, rp, n_rows, n_cols, eps, warp, rms];
        // SAFETY: params match norm_fwd_*(x, w, b, y, mean, rstd, u64, u64, double, u32,
        // u32); x and y hold rows * n elements, w and b (when not null) n, mean and
        // rstd rows.
        unsafe { b.launch(&name, [grid, 1, 1], block, &params)? };
    }
    Ok((Box::new(y), Box::new(mean), Box::new(rstd)))
}

/// What the forward saved for the backward: its input and row statistics.
pub(crate) struct Saved<'a> {
    /// The forward's input, dense `[rows, n]`.
    pub x: &'a dyn BackendStorage,
    /// Row means, dense `[rows]` (zeros for RMSNorm).
    pub mean: &'a dyn BackendStorage,
    /// Row reciprocal standard deviations, dense `[rows]`.
    pub rstd: &'a dyn BackendStorage,
}

/// `Backend::norm_last_backward`: `(dx, dγ, dβ)`, `dγ` with a weight, `dβ` with a
/// weight and `rms == false`.
pub(crate) fn backward(
    b: &CudaBackend,
    saved: Saved<'_>,
    weight: Option<&dyn BackendStorage>,
    dy: &dyn BackendStorage,
    [rows, n]: [usize; 2],
    rms: bool,
) -> Result<(BoxStorage, Option<BoxStorage>, Option<BoxStorage>)> {
    const OP: &str = "norm_last_backward";
    b.gpu().enter()?;
    let len = elements(OP, [rows, n])?;
    let dtype = saved.x.dtype();
    let xs = b.dense_operand(OP, saved.x, len, dtype)?;
    let gs = b.dense_operand(OP, dy, len, dtype)?;
    let ms = b.dense_operand(OP, saved.mean, rows, dtype)?;
    let rs = b.dense_operand(OP, saved.rstd, rows, dtype)?;
    let w = weight.map(|w| b.dense_operand(OP, w, n, dtype)).transpose()?;
    let dx = b.alloc(len, dtype)?;
    let (xp, gp, mp, rp, dp) = (xs.ptr, gs.ptr, ms.ptr, rs.ptr, dx.ptr);
    let (n_rows, n_cols) = (rows as u64, n as u64);
    if len > 0 {
        let (warp, grid, block) = b.row_config(n_rows, n_cols);
        let (wp, rms) = (ptr_or_null(w), u32::from(rms));
        let name = format!("norm_bwd_{}", sfx(dtype));
        let params = kargs![xp, gp, mp, rp, wp, dp, n_rows, n_cols, warp, rms];
        // SAFETY: params match norm_bwd_*(x, dy, mean, rstd, w, dx, u64, u64, u32, u32);
        // x, dy and dx hold rows * n elements, mean and rstd rows, w (when not null) n.
        unsafe { b.launch(&name, [grid, 1, 1], block, &params)? };
    }
    if w.is_none() {
        return Ok((Box::new(dx), None, None));
    }
    // Every column is written below unless there are no rows: then the sums are zero.
    let sums = || if len > 0 { b.alloc(n, dtype) } else { b.zeroed(n, dtype) };
    let (dw, db) = (sums()?, if rms { None } else { Some(sums()?) });
    if len > 0 {
        let n_chunks = (COLUMN_SUM_THREADS / n).clamp(1, rows.div_ceil(MIN_CHUNK_ROWS));
        let chunk_rows = rows.div_ceil(n_chunks);
        let n_chunks = rows.div_ceil(chunk_rows);
        // One chunk writes the sums themselves; more write partials [n_chunks, n].
        let partial = |out: &CudaStorage| -> Result<Option<CudaStorage>> {
            if n_chunks == 1 {
                Ok(None)
            } else {
                b.alloc(n_chunks * n, out.dtype).map(Some)
            }
        };
        let (pw, pb) = (partial(&dw)?, db.as_ref().map(partial).transpose()?.flatten());
        let pwp = pw.as_ref().map_or(dw.ptr, |p| p.ptr);
        let pbp = pb.as_ref().or(db.as_ref()).map_or(0, |p| p.ptr);
        let (chunk64, chunks64) = (chunk_rows as u64, n_chunks as u64);
        let grid = grid_for(chunks64 * n_cols, BLOCK, b.gpu().sm_count);
        let name = format!("norm_bwd_cols_{}", sfx(dtype));
        let params = kargs![xp, gp, mp, rp, pwp, pbp, n_rows, n_cols, chunk64, chunks64];
        // SAFETY: params match norm_bwd_cols_*(x, dy, mean, rstd, pw, pb, u64 x 4); x and
        // dy hold rows * n elements, mean and rstd rows, pw and pb (when not null)
        // n_chunks * n, and n_chunks * chunk_rows >= rows.
        unsafe { b.launch(&name, [grid, 1, 1], BLOCK, &params)? };
        for (p, out) in [(pw.as_ref(), Some(&dw)), (pb.as_ref(), db.as_ref())] {
            if let (Some(p), Some(out)) = (p, out) {
                column_sums(b, p, n_chunks, n, out)?;
            }
        }
    }
    let boxed = |s: CudaStorage| Box::new(s) as BoxStorage;
    Ok((Box::new(dx), Some(boxed(dw)), db.map(boxed)))
}
