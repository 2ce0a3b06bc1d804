//! The softmax family: softmax and log-softmax over the last axis, forward (any
//! strided view) and backward (dense). One launch each, a warp or a block per row
//! ([`CudaBackend::row_config`]). Kernels in `kernels/softmax.cu`.

use crate::backend::{float_only, numel, rows_of, same_dtype, sfx, CudaBackend};
use crate::ptx::kargs;
use unigrad_core::backend::{BackendStorage, BoxStorage};
use unigrad_core::layout::Layout;
use unigrad_core::{Error, Result};

/// `Backend::softmax_last` (`log == false`) or `Backend::log_softmax_last`.
pub(crate) fn forward(
    b: &CudaBackend,
    op: &'static str,
    src: &dyn BackendStorage,
    layout: &Layout,
    log: bool,
) -> Result<BoxStorage> {
    b.gpu().enter()?;
    let s = b.operand(op, src, layout)?;
    float_only(op, s.dtype, layout.shape())?;
    let out = b.alloc(layout.numel(), s.dtype)?;
    if out.len == 0 {
        return Ok(Box::new(out));
    }
    let (rows, cs, n_rows, n_cols) = rows_of(op, layout)?;
    let (warp, grid, block) = b.row_config(n_rows, n_cols);
    let (xp, yp, log) = (s.ptr, out.ptr, u32::from(log));
    let name = format!("softmax_fwd_{}", sfx(s.dtype));
    let params = kargs![rows, cs, xp, yp, n_rows, n_cols, warp, log];
    // SAFETY: params match softmax_fwd_*(Index<1>, u64, x, y, u64, u64, u32, u32);
    // the input view was checked, the output has n_rows * n_cols elements.
    unsafe { b.launch(&name, [grid, 1, 1], block, &params)? };
    Ok(Box::new(out))
}

/// `Backend::softmax_last_backward` (`log == false`) or
/// `Backend::log_softmax_last_backward`, from dense `y` and `dy` of `shape`.
pub(crate) fn backward(
    b: &CudaBackend,
    op: &'static str,
    (y, dy): (&dyn BackendStorage, &dyn BackendStorage),
    shape: &[usize],
    log: bool,
) -> Result<BoxStorage> {
    b.gpu().enter()?;
    let (ys, gs) = (b.cuda(op, y)?, b.cuda(op, dy)?);
    same_dtype(op, ys.dtype, gs.dtype)?;
    float_only(op, ys.dtype, shape)?;
    let n = numel(shape);
    if ys.len < n || gs.len < n {
        return Err(Error::invalid(
            op,
            format!("shape {shape:?} needs {n} elements, got {} and {}", ys.len, gs.len),
        ));
    }
    let out = b.alloc(n, ys.dtype)?;
    if n == 0 {
        return Ok(Box::new(out));
    }
    let n_cols = shape.last().copied().unwrap_or(1) as u64;
    let n_rows = n as u64 / n_cols;
    let (warp, grid, block) = b.row_config(n_rows, n_cols);
    let (yp, gp, dp, log) = (ys.ptr, gs.ptr, out.ptr, u32::from(log));
    let name = format!("softmax_bwd_{}", sfx(ys.dtype));
    let params = kargs![yp, gp, dp, n_rows, n_cols, warp, log];
    // SAFETY: params match softmax_bwd_*(y, dy, dx, u64, u64, u32, u32); all three
    // buffers hold at least n_rows * n_cols elements.
    unsafe { b.launch(&name, [grid, 1, 1], block, &params)? };
    Ok(Box::new(out))
}
