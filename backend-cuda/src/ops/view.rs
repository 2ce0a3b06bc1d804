//! The view family: moving elements between layouts and devices without arithmetic
//! (host uploads and downloads, strided copies) and dtype casts. Kernels in
//! `kernels/view.cu`.

use super::Operand;
use crate::backend::{bytes_sfx, same_dtype, same_shape, sfx, CudaBackend};
use crate::plan::{dense_strides, grid_for, StridedIndex, View, BLOCK};
use crate::ptx::kargs;
use crate::storage::CudaStorage;
use unigrad_core::backend::{BackendStorage, BoxStorage};
use unigrad_core::dtype::{DType, HostData};
use unigrad_core::layout::Layout;
use unigrad_core::Result;

/// Reinterpret plain numbers as bytes.
fn as_bytes<T: Copy>(v: &[T]) -> &[u8] {
    // SAFETY: only called with f32/f64/i64 slices: no padding, every byte initialised,
    // and u8 has alignment 1.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

/// Copy `src` viewed through `src_layout` into `dst` at `dst_view` (same shape).
fn copy_kernel(
    b: &CudaBackend,
    src: &CudaStorage,
    src_layout: &Layout,
    dst: &CudaStorage,
    dst_view: View<'_>,
) -> Result<()> {
    let n = src_layout.numel() as u64;
    if n == 0 {
        return Ok(());
    }
    let ix = StridedIndex::<2>::new("copy_strided", src_layout.shape(), [View::of(src_layout), dst_view])?;
    let (sp, dp) = (src.ptr, dst.ptr);
    let name = format!("copy_{}", bytes_sfx(src.dtype));
    let grid = grid_for(n, BLOCK, b.gpu().sm_count);
    // SAFETY: params match copy_b4/b8(Index<2>, src, dst, u64); both views were
    // checked to lie inside their storages.
    unsafe { b.launch(&name, [grid, 1, 1], BLOCK, &kargs![ix, sp, dp, n]) }
}

/// Dense copy of a view (a fresh storage).
fn dense_copy(b: &CudaBackend, src: &CudaStorage, layout: &Layout) -> Result<CudaStorage> {
    let out = b.alloc(layout.numel(), src.dtype)?;
    let strides = dense_strides(layout.shape());
    copy_kernel(b, src, layout, &out, View::from_start(&strides))?;
    Ok(out)
}

/// `Backend::from_host`: one upload into fresh storage.
pub(crate) fn from_host(b: &CudaBackend, data: &HostData) -> Result<BoxStorage> {
    b.gpu().enter()?;
    let s = b.alloc(data.len(), data.dtype())?;
    let bytes = match data {
        HostData::F32(v) => as_bytes(v),
        HostData::F64(v) => as_bytes(v),
        HostData::I64(v) => as_bytes(v),
    };
    // SAFETY: `s` was allocated for exactly `data.len()` elements of its dtype.
    unsafe { b.gpu().upload(s.ptr, bytes)? };
    Ok(Box::new(s))
}

/// `Backend::to_host`: a dense copy on the device first unless the view is dense.
pub(crate) fn to_host(b: &CudaBackend, src: &dyn BackendStorage, layout: &Layout) -> Result<HostData> {
    b.gpu().enter()?;
    let s = b.operand("to_host", src, layout)?;
    let n = layout.numel();
    let tmp;
    let ptr = if n == 0 {
        0
    } else if layout.is_contiguous() {
        s.at(layout.offset())
    } else {
        tmp = dense_copy(b, s, layout)?;
        tmp.ptr
    };
    Ok(match s.dtype {
        DType::F32 => HostData::F32(b.download(ptr, n)?),
        DType::F64 => HostData::F64(b.download(ptr, n)?),
        DType::I64 => HostData::I64(b.download(ptr, n)?),
    })
}

/// `Backend::copy_strided`: a device-to-device copy when both views are dense, else
/// the strided copy kernel.
pub(crate) fn copy_strided(
    b: &CudaBackend,
    (src, src_layout): Operand<'_>,
    dst: &mut dyn BackendStorage,
    dst_layout: &Layout,
) -> Result<()> {
    const OP: &str = "copy_strided";
    b.gpu().enter()?;
    let s = b.operand(OP, src, src_layout)?;
    let d = b.cuda_mut(OP, dst)?;
    same_shape(OP, src_layout.shape(), dst_layout.shape())?;
    same_dtype(OP, s.dtype, d.dtype)?;
    b.check_view(OP, d, dst_layout)?;
    let n = src_layout.numel();
    if n == 0 {
        return Ok(());
    }
    if src_layout.is_contiguous() && dst_layout.is_contiguous() {
        // SAFETY: both ranges were checked to lie inside their storages.
        return unsafe {
            b.gpu().copy_d2d(
                d.at(dst_layout.offset()),
                s.at(src_layout.offset()),
                n * s.dtype.size_in_bytes(),
            )
        };
    }
    copy_kernel(b, s, src_layout, d, View::of(dst_layout))
}

/// `Backend::cast`: any dtype to any dtype, read through a strided view.
pub(crate) fn cast(b: &CudaBackend, src: &dyn BackendStorage, layout: &Layout, dtype: DType) -> Result<BoxStorage> {
    b.gpu().enter()?;
    let s = b.operand("cast", src, layout)?;
    let out = b.alloc(layout.numel(), dtype)?;
    let n = out.len as u64;
    if n > 0 {
        let ix = StridedIndex::<1>::new("cast", layout.shape(), [View::of(layout)])?;
        let (sp, dp) = (s.ptr, out.ptr);
        let name = format!("cast_{}_{}", sfx(s.dtype), sfx(dtype));
        let grid = grid_for(n, BLOCK, b.gpu().sm_count);
        // SAFETY: params match cast_*_*(Index<1>, src, dst, u64); view checked,
        // output dense with n elements.
        unsafe { b.launch(&name, [grid, 1, 1], BLOCK, &kargs![ix, sp, dp, n])? };
    }
    Ok(Box::new(out))
}
