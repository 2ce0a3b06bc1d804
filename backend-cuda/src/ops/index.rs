//! The index family: `index_select` / `index_add` along one dimension and
//! `gather` / `scatter_add` with a per-element id tensor. Kernels in
//! `kernels/index.cu`.
//!
//! Every id is bounds-checked on the device; a kernel that meets an out-of-range id
//! records it in the backend's flag, which the host reads back after the launch to
//! return `Error::IndexOutOfRange`. The accumulating ops (`index_add`,
//! `scatter_add`) validate all ids with `check_ids` before touching the destination,
//! so an error leaves it unchanged.

use super::Operand;
use crate::backend::{bytes_sfx, float_only, numel, same_dtype, same_shape, sfx, CudaBackend};
use crate::plan::{dense_strides, grid_for, StridedIndex, View, BLOCK};
use crate::ptx::{arg, kargs, KArg};
use crate::storage::CudaStorage;
use unigrad_core::backend::{BackendStorage, BoxStorage};
use unigrad_core::dtype::DType;
use unigrad_core::layout::Layout;
use unigrad_core::{Error, Result};

/// The destination of `index_add` / `scatter_add`: storage holding a dense tensor of
/// the given shape.
pub(crate) type Target<'a> = (&'a mut dyn BackendStorage, &'a [usize]);

/// The read side of every index op: `src` and `ids` on this device with their views
/// inside their storages, `ids` of dtype i64.
fn index_operands<'a>(
    b: &CudaBackend,
    op: &'static str,
    (src, src_layout): Operand<'a>,
    (ids, ids_layout): Operand<'a>,
) -> Result<(&'a CudaStorage, &'a CudaStorage)> {
    b.gpu().enter()?;
    let (s, i) = (b.cuda(op, src)?, b.cuda(op, ids)?);
    if i.dtype != DType::I64 {
        return Err(Error::UnsupportedDType {
            op,
            dtype: i.dtype,
            shape: ids_layout.shape().to_vec(),
        });
    }
    b.check_view(op, s, src_layout)?;
    b.check_view(op, i, ids_layout)?;
    Ok((s, i))
}

/// The destination of an accumulating op, validated before it is touched: dense
/// `shape` on this device with a float dtype equal to the source's, and every id in
/// `0..shape[dim]` (`dim` must already be checked). Returns it with that size.
fn accumulator<'a>(
    b: &CudaBackend,
    op: &'static str,
    (dst, shape): Target<'a>,
    dim: usize,
    src_dtype: DType,
    (ids, ids_layout): (&CudaStorage, &Layout),
) -> Result<(&'a mut CudaStorage, usize)> {
    let d = b.cuda_mut(op, dst)?;
    same_dtype(op, d.dtype, src_dtype)?;
    float_only(op, d.dtype, shape)?;
    b.check_view(op, d, &Layout::contiguous(shape))?;
    check_ids(b, op, ids, ids_layout, shape[dim], shape)?;
    Ok((d, shape[dim]))
}

/// Error unless `dim` is an axis of `shape`.
fn check_dim(op: &'static str, dim: usize, shape: &[usize]) -> Result<()> {
    if dim < shape.len() {
        Ok(())
    } else {
        Err(Error::InvalidAxis {
            op,
            axis: dim as isize,
            shape: shape.to_vec(),
        })
    }
}

/// Error unless `ids` has the rank of `shape` and no larger extent off `dim` (the
/// shape rule of gather and scatter_add).
fn check_id_shape(op: &'static str, shape: &[usize], ids_shape: &[usize], dim: usize) -> Result<()> {
    if ids_shape.len() != shape.len() || (0..shape.len()).any(|d| d != dim && ids_shape[d] > shape[d]) {
        return Err(Error::ShapeMismatch {
            op,
            lhs: shape.to_vec(),
            rhs: ids_shape.to_vec(),
        });
    }
    Ok(())
}

/// Launch `name` over `n` elements with `params` followed by the out-of-range flag's
/// address, then report an id the kernel found outside `0..size`.
///
/// # Safety
/// As for [`CudaBackend::launch`], with the flag pointer as the kernel's last parameter.
unsafe fn launch_flagged(
    b: &CudaBackend,
    op: &'static str,
    name: &str,
    n: u64,
    (size, shape): (usize, &[usize]),
    params: &[KArg],
) -> Result<()> {
    let grid = grid_for(n, BLOCK, b.gpu().sm_count);
    b.with_flag(op, size, shape, |fp| {
        let all: Vec<KArg> = params.iter().copied().chain([arg(&fp)]).collect();
        // SAFETY: the caller's contract, plus the flag address, which `with_flag` keeps
        // alive and zeroed for the launch.
        unsafe { b.launch(name, [grid, 1, 1], BLOCK, &all) }
    })
}

/// Error unless every id in `ids` is in `0..size` (one launch and one readback).
fn check_ids(
    b: &CudaBackend,
    op: &'static str,
    ids: &CudaStorage,
    il: &Layout,
    size: usize,
    shape: &[usize],
) -> Result<()> {
    let n = il.numel() as u64;
    if n == 0 {
        return Ok(());
    }
    let ix = StridedIndex::<1>::new(op, il.shape(), [View::of(il)])?;
    let (ip, size64) = (ids.ptr, size as u64);
    // SAFETY: params match check_ids(Index<1>, ids, u64, u64, flag); the ids view was
    // checked against its storage.
    unsafe { launch_flagged(b, op, "check_ids", n, (size, shape), &kargs![ix, ip, n, size64]) }
}

/// `Backend::index_select`: `out[.., i, ..] = src[.., ids[i], ..]` along `dim`.
pub(crate) fn index_select(b: &CudaBackend, src: Operand<'_>, ids: Operand<'_>, dim: usize) -> Result<BoxStorage> {
    const OP: &str = "index_select";
    let (s, i) = index_operands(b, OP, src, ids)?;
    let (src_layout, ids_layout) = (src.1, ids.1);
    let shape = src_layout.shape();
    check_dim(OP, dim, shape)?;
    let mut out_shape = shape.to_vec();
    out_shape[dim] = ids_layout.numel();
    let out = b.alloc(numel(&out_shape), s.dtype)?;
    let size = shape[dim];
    if out.len == 0 {
        // Nothing to copy, but bad ids are still an error.
        check_ids(b, OP, i, ids_layout, size, shape)?;
        return Ok(Box::new(out));
    }
    let ix = StridedIndex::<1>::unmerged(OP, &out_shape, [View::of(src_layout)])?;
    let ids_ix = StridedIndex::<1>::new(OP, ids_layout.shape(), [View::of(ids_layout)])?;
    let (dim32, ip, sp, dp, n, size64) = (dim as u32, i.ptr, s.ptr, out.ptr, out.len as u64, size as u64);
    let name = format!("index_select_{}", bytes_sfx(s.dtype));
    let params = kargs![ix, dim32, ids_ix, ip, sp, dp, n, size64];
    // SAFETY: params match index_select_b*(Index<1>, u32, Index<1>, ids, src, out, u64,
    // u64, flag); views checked; ids are bounds-checked in the kernel.
    unsafe { launch_flagged(b, OP, &name, n, (size, shape), &params)? };
    Ok(Box::new(out))
}

/// `Backend::index_add`: `dst[.., ids[i], ..] += src[.., i, ..]` along `dim`, for
/// dense `dst` of shape `dst.1`.
pub(crate) fn index_add(
    b: &CudaBackend,
    dst: Target<'_>,
    dim: usize,
    ids: Operand<'_>,
    src: Operand<'_>,
) -> Result<()> {
    const OP: &str = "index_add";
    let dst_shape = dst.1;
    let (s, i) = index_operands(b, OP, src, ids)?;
    let (src_layout, ids_layout) = (src.1, ids.1);
    check_dim(OP, dim, dst_shape)?;
    let mut expected = dst_shape.to_vec();
    expected[dim] = ids_layout.numel();
    same_shape(OP, &expected, src_layout.shape())?;
    let (d, size) = accumulator(b, OP, dst, dim, s.dtype, (i, ids_layout))?;
    let n = src_layout.numel() as u64;
    if n == 0 {
        return Ok(());
    }
    let dst_strides = dense_strides(dst_shape);
    let ix = StridedIndex::<2>::unmerged(
        OP,
        src_layout.shape(),
        [View::of(src_layout), View::from_start(&dst_strides)],
    )?;
    let ids_ix = StridedIndex::<1>::new(OP, ids_layout.shape(), [View::of(ids_layout)])?;
    let (dim32, ip, sp, dp, size64) = (dim as u32, i.ptr, s.ptr, d.ptr, size as u64);
    let name = format!("index_add_{}", sfx(d.dtype));
    let params = kargs![ix, dim32, ids_ix, ip, sp, dp, n, size64];
    // SAFETY: params match index_add_*(Index<2>, u32, Index<1>, ids, src, dst, u64, u64,
    // flag); views checked; dst is dense with dst_shape; ids validated above and
    // bounds-checked again in the kernel.
    unsafe { launch_flagged(b, OP, &name, n, (size, dst_shape), &params) }
}

/// `Backend::gather`: `out[p] = src[p with p[dim] = ids[p]]` over the shape of `ids`.
pub(crate) fn gather(b: &CudaBackend, src: Operand<'_>, ids: Operand<'_>, dim: usize) -> Result<BoxStorage> {
    const OP: &str = "gather";
    let (s, i) = index_operands(b, OP, src, ids)?;
    let (src_layout, ids_layout) = (src.1, ids.1);
    let (shape, ids_shape) = (src_layout.shape(), ids_layout.shape());
    check_dim(OP, dim, shape)?;
    check_id_shape(OP, shape, ids_shape, dim)?;
    let out = b.alloc(ids_layout.numel(), s.dtype)?;
    let size = shape[dim];
    if out.len == 0 {
        return Ok(Box::new(out));
    }
    let ix = StridedIndex::<2>::unmerged(OP, ids_shape, [View::of(src_layout), View::of(ids_layout)])?;
    let (dim32, ip, sp, dp, n, size64) = (dim as u32, i.ptr, s.ptr, out.ptr, out.len as u64, size as u64);
    let name = format!("gather_{}", bytes_sfx(s.dtype));
    let params = kargs![ix, dim32, ip, sp, dp, n, size64];
    // SAFETY: params match gather_b*(Index<2>, u32, ids, src, out, u64, u64, flag);
    // views checked; ids bounds-checked in the kernel; other coordinates are within
    // src because ids_shape[d] <= shape[d].
    unsafe { launch_flagged(b, OP, &name, n, (size, shape), &params)? };
    Ok(Box::new(out))
}

/// `Backend::scatter_add`: `dst[p with p[dim] = ids[p]] += src[p]` over the shape of
/// `ids`, for dense `dst` of shape `dst.1`.
pub(crate) fn scatter_add(
    b: &CudaBackend,
    dst: Target<'_>,
    dim: usize,
    ids: Operand<'_>,
    src: Operand<'_>,
) -> Result<()> {
    const OP: &str = "scatter_add";
    let dst_shape = dst.1;
    let (s, i) = index_operands(b, OP, src, ids)?;
    let (src_layout, ids_layout) = (src.1, ids.1);
    let ids_shape = ids_layout.shape();
    check_dim(OP, dim, dst_shape)?;
    same_shape(OP, ids_shape, src_layout.shape())?;
    check_id_shape(OP, dst_shape, ids_shape, dim)?;
    let (d, size) = accumulator(b, OP, dst, dim, s.dtype, (i, ids_layout))?;
    let n = ids_layout.numel() as u64;
    if n == 0 {
        return Ok(());
    }
    let dst_strides = dense_strides(dst_shape);
    let ix = StridedIndex::<3>::unmerged(
        OP,
        ids_shape,
        [
            View::of(src_layout),
            View::of(ids_layout),
            View::from_start(&dst_strides),
        ],
    )?;
    let (dim32, ip, sp, dp, size64) = (dim as u32, i.ptr, s.ptr, d.ptr, size as u64);
    let name = format!("scatter_add_{}", sfx(d.dtype));
    let params = kargs![ix, dim32, ip, sp, dp, n, size64];
    // SAFETY: params match scatter_add_*(Index<3>, u32, ids, src, dst, u64, u64, flag);
    // views checked; dst dense with dst_shape and ids_shape[k] <= dst_shape[k] off
    // `dim`; ids validated above and in the kernel.
    unsafe { launch_flagged(b, OP, &name, n, (size, dst_shape), &params) }
}
