//! [`CudaBackend`]: the core `Backend` trait on one GPU.
//!
//! This file holds what every op family shares: the backend struct, operand
//! validation (device, dtype, shape, and that every strided view stays inside its
//! storage, so no kernel can read out of bounds), allocation, the checked launch, and
//! the `impl Backend`, which only dispatches to the family that owns each method.
//! The launches themselves live in [`crate::ops`], one module per family, each beside
//! its `kernels/<family>.cu`.
//!
//! Nothing waits for the GPU except reading data back ([`Backend::to_host`]),
//! [`Backend::synchronize`], and the indexing ops, which must read the kernels'
//! out-of-range flag before they can report an error.

use crate::driver::Gpu;
use crate::ops;
use crate::plan::{StridedIndex, View, BLOCK};
use crate::ptx::{KArg, Kernels};
use crate::storage::CudaStorage;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use unigrad_core::backend::{AdamStep, Backend, BackendStorage, BinaryOp, BoxStorage, ReduceOp, UnaryOp};
use unigrad_core::dtype::{DType, HostData};
use unigrad_core::layout::Layout;
use unigrad_core::{Error, Result};

/// Rows of at most this many columns get one warp each in the row kernels.
const WARP_ROW_MAX_COLS: usize = 1024;
/// Threads per block for rows handled by a whole block.
const ROW_BLOCK: u32 = 512;

/// The CUDA backend of one device.
#[derive(Debug)]
pub(crate) struct CudaBackend {
    kernels: Kernels,
    /// Two u64 words the indexing kernels set on an out-of-range id:
    /// `[1, offending id]`. The mutex serialises the ops that use it.
    flag: Mutex<CudaStorage>,
    gpu: Arc<Gpu>,
    /// `matmul` always takes its 64-bit-index kernels (see [`crate::set_wide_gemm`]).
    wide_gemm: AtomicBool,
}

/// Kernel-name suffix of a dtype.
pub(crate) fn sfx(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::F64 => "f64",
        DType::I64 => "i64",
    }
}

/// Kernel-name suffix for kernels that only move elements of a given size.
pub(crate) fn bytes_sfx(dtype: DType) -> &'static str {
    match dtype.size_in_bytes() {
        4 => "b4",
        _ => "b8",
    }
}

/// Number of elements of `shape` (1 for a scalar).
pub(crate) fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Error unless `dtype` is a float type (the arithmetic kernels have no i64 variant).
pub(crate) fn float_only(op: &'static str, dtype: DType, shape: &[usize]) -> Result<()> {
    if dtype.is_float() {
        Ok(())
    } else {
        Err(Error::UnsupportedDType {
            op,
            dtype,
            shape: shape.to_vec(),
        })
    }
}

/// Error unless both operands of `op` have one dtype.
pub(crate) fn same_dtype(op: &'static str, lhs: DType, rhs: DType) -> Result<()> {
    if lhs == rhs {
        Ok(())
    } else {
        Err(Error::DTypeMismatch { op, lhs, rhs })
    }
}

/// Error unless both operands of `op` have one shape.
pub(crate) fn same_shape(op: &'static str, lhs: &[usize], rhs: &[usize]) -> Result<()> {
    if lhs == rhs {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            op,
            lhs: lhs.to_vec(),
            rhs: rhs.to_vec(),
        })
    }
}

/// Rows of a last-axis op: index over the leading dims, stride of the last axis,
/// row count and row length. A scalar is one row of one element.
pub(crate) fn rows_of(op: &'static str, layout: &Layout) -> Result<(StridedIndex<1>, u64, u64, u64)> {
    let rank = layout.rank();
    if rank == 0 {
        let rows = StridedIndex::new(op, &[], [View::of(layout)])?;
        return Ok((rows, 1, 1, 1));
    }
    let shape = layout.shape();
    let strides = layout.strides();
    let rows = StridedIndex::new(
        op,
        &shape[..rank - 1],
        [View {
            strides: &strides[..rank - 1],
            offset: layout.offset(),
        }],
    )?;
    Ok((
        rows,
        strides[rank - 1] as u64,
        numel(&shape[..rank - 1]) as u64,
        shape[rank - 1] as u64,
    ))
}

/// Reinterpret plain numbers as mutable bytes.
fn as_bytes_mut<T: Copy>(v: &mut [T]) -> &mut [u8] {
    // SAFETY: only called with f32/f64/i64 slices, for which every bit pattern is valid.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, std::mem::size_of_val(v)) }
}

impl CudaBackend {
    /// Open device `ordinal` and load the kernels.
    pub(crate) fn new(ordinal: usize) -> Result<CudaBackend> {
        let gpu = Arc::new(Gpu::open(ordinal)?);
        let kernels = Kernels::load(gpu.clone())?;
        let flag = CudaStorage::alloc(&gpu, 2, DType::I64)?;
        Ok(CudaBackend {
            kernels,
            flag: Mutex::new(flag),
            gpu,
            wide_gemm: AtomicBool::new(false),
        })
    }

    /// A backend on a driverless [`Gpu`]: [`Mode::DryRun`](crate::driver::Mode) for
    /// unit tests of the host side, `Mode::Emulated` for the CPU kernel emulator.
    #[cfg(any(test, feature = "emulator"))]
    pub(crate) fn without_driver(mode: crate::driver::Mode, ordinal: usize) -> CudaBackend {
        let gpu = Arc::new(Gpu::without_driver(mode, ordinal));
        let kernels = Kernels::without_driver(gpu.clone());
        let flag = CudaStorage::alloc(&gpu, 2, DType::I64).expect("dry-run allocation");
        CudaBackend {
            kernels,
            flag: Mutex::new(flag),
            gpu,
            wide_gemm: AtomicBool::new(false),
        }
    }

    /// The device.
    pub(crate) fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// Whether `matmul` must use its 64-bit-index kernels whatever the sizes.
    pub(crate) fn wide_gemm(&self) -> bool {
        self.wide_gemm.load(Ordering::Relaxed)
    }

    /// Force (or stop forcing) the 64-bit-index GEMM kernels.
    pub(crate) fn set_wide_gemm(&self, on: bool) {
        self.wide_gemm.store(on, Ordering::Relaxed);
    }

    fn mismatch(&self, op: &'static str, other: String) -> Error {
        Error::DeviceMismatch {
            op,
            lhs: self.gpu.name.clone(),
            rhs: other,
        }
    }

    /// `s` as this device's storage.
    pub(crate) fn cuda<'a>(&self, op: &'static str, s: &'a dyn BackendStorage) -> Result<&'a CudaStorage> {
        let c = s
            .as_any()
            .downcast_ref::<CudaStorage>()
            .ok_or_else(|| self.mismatch(op, format!("{s:?}")))?;
        if Arc::ptr_eq(&c.gpu, &self.gpu) {
            Ok(c)
        } else {
            Err(self.mismatch(op, c.gpu.name.clone()))
        }
    }

    /// `s` as this device's storage, mutably.
    pub(crate) fn cuda_mut<'a>(&self, op: &'static str, s: &'a mut dyn BackendStorage) -> Result<&'a mut CudaStorage> {
        let desc = format!("{s:?}");
        let c = s
            .as_any_mut()
            .downcast_mut::<CudaStorage>()
            .ok_or_else(|| self.mismatch(op, desc))?;
        if Arc::ptr_eq(&c.gpu, &self.gpu) {
            Ok(c)
        } else {
            Err(self.mismatch(op, c.gpu.name.clone()))
        }
    }

    /// Reject layouts that would read or write outside `s`, or whose sizes overflow
    /// `usize` (core's one check, [`Layout::check_fits`], shared with the CPU backend).
    pub(crate) fn check_view(&self, op: &'static str, s: &CudaStorage, l: &Layout) -> Result<()> {
        l.check_fits(op, s.len)
    }

    /// `s` as this device's storage, with `l` checked to lie inside it.
    pub(crate) fn operand<'a>(
        &self,
        op: &'static str,
        s: &'a dyn BackendStorage,
        l: &Layout,
    ) -> Result<&'a CudaStorage> {
        let c = self.cuda(op, s)?;
        self.check_view(op, c, l)?;
        Ok(c)
    }

    /// `s` as this device's float storage of `dtype` holding at least `len` elements
    /// (a dense operand of the fused kernels).
    pub(crate) fn dense_operand<'a>(
        &self,
        op: &'static str,
        s: &'a dyn BackendStorage,
        len: usize,
        dtype: DType,
    ) -> Result<&'a CudaStorage> {
        let c = self.operand(op, s, &Layout::contiguous(&[len]))?;
        same_dtype(op, dtype, c.dtype)?;
        float_only(op, c.dtype, &[len])?;
        Ok(c)
    }

    /// Uninitialised storage of `len` elements (from the caching allocator).
    pub(crate) fn alloc(&self, len: usize, dtype: DType) -> Result<CudaStorage> {
        CudaStorage::alloc(&self.gpu, len, dtype)
    }

    /// Zero-filled storage of `len` elements.
    pub(crate) fn zeroed(&self, len: usize, dtype: DType) -> Result<CudaStorage> {
        let s = self.alloc(len, dtype)?;
        if s.len > 0 {
            self.gpu.memset_zero(s.ptr, s.bytes())?;
        }
        Ok(s)
    }

    /// Launch a kernel (see [`Kernels::launch`] for the contract on `params`). No
    /// kernel uses dynamic shared memory, so none is requested.
    ///
    /// # Safety
    /// As for [`Kernels::launch`].
    pub(crate) unsafe fn launch(&self, name: &str, grid: [u32; 3], block: u32, params: &[KArg]) -> Result<()> {
        self.kernels.launch(name, grid, block, 0, params)
    }

    /// Read `n` elements at device address `ptr` (waits for queued work).
    pub(crate) fn download<T: Copy + Default>(&self, ptr: u64, n: usize) -> Result<Vec<T>> {
        let mut v = vec![T::default(); n];
        // SAFETY: callers pass an address inside a live storage with `n` elements of T
        // from there on.
        unsafe { self.gpu.download(as_bytes_mut(&mut v), ptr)? };
        Ok(v)
    }

    /// Clear the out-of-range flag; run `launch(flag address)`; report a recorded id.
    pub(crate) fn with_flag(
        &self,
        op: &'static str,
        size: usize,
        shape: &[usize],
        launch: impl FnOnce(u64) -> Result<()>,
    ) -> Result<()> {
        let flag = self.flag.lock().unwrap_or_else(|e| e.into_inner());
        self.gpu.memset_zero(flag.ptr, flag.bytes())?;
        launch(flag.ptr)?;
        let words: Vec<u64> = self.download(flag.ptr, 2)?;
        if words[0] != 0 {
            return Err(Error::IndexOutOfRange {
                op,
                index: words[1] as i64,
                size,
                shape: shape.to_vec(),
            });
        }
        Ok(())
    }

    /// Launch configuration of the row kernels: (warp mode, grid, block).
    pub(crate) fn row_config(&self, n_rows: u64, n_cols: u64) -> (u32, u32, u32) {
        if n_cols as usize <= WARP_ROW_MAX_COLS {
            // One warp per row, BLOCK / 32 rows per block, grid-stride beyond the cap.
            let blocks = n_rows
                .div_ceil((BLOCK / 32) as u64)
                .clamp(1, self.gpu.sm_count as u64 * 32);
            (1, blocks as u32, BLOCK)
        } else {
            (0, n_rows.clamp(1, self.gpu.sm_count as u64 * 32) as u32, ROW_BLOCK)
        }
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> String {
        self.gpu.name.clone()
    }

    fn zeros(&self, len: usize, dtype: DType) -> Result<BoxStorage> {
        self.gpu.enter()?;
        Ok(Box::new(self.zeroed(len, dtype)?))
    }

    fn from_host(&self, data: &HostData) -> Result<BoxStorage> {
        ops::view::from_host(self, data)
    }

    fn to_host(&self, src: &dyn BackendStorage, layout: &Layout) -> Result<HostData> {
        ops::view::to_host(self, src, layout)
    }

    fn copy_strided(
        &self,
        src: &dyn BackendStorage,
        src_layout: &Layout,
        dst: &mut dyn BackendStorage,
        dst_layout: &Layout,
    ) -> Result<()> {
        ops::view::copy_strided(self, (src, src_layout), dst, dst_layout)
    }

    fn cast(&self, src: &dyn BackendStorage, layout: &Layout, dtype: DType) -> Result<BoxStorage> {
        ops::view::cast(self, src, layout, dtype)
    }

    fn unary(&self, op: UnaryOp, src: &dyn BackendStorage, layout: &Layout) -> Result<BoxStorage> {
        ops::elementwise::unary(self, op, src, layout)
    }

    fn binary(
        &self,
        op: BinaryOp,
        lhs: &dyn BackendStorage,
        lhs_layout: &Layout,
        rhs: &dyn BackendStorage,
        rhs_layout: &Layout,
    ) -> Result<BoxStorage> {
        ops::elementwise::binary(self, op, (lhs, lhs_layout), (rhs, rhs_layout))
    }

    fn where_cond(
        &self,
        cond: &dyn BackendStorage,
        cond_layout: &Layout,
        a: &dyn BackendStorage,
        a_layout: &Layout,
        b: &dyn BackendStorage,
        b_layout: &Layout,
    ) -> Result<BoxStorage> {
        ops::elementwise::where_cond(self, (cond, cond_layout), (a, a_layout), (b, b_layout))
    }

    fn reduce(&self, op: ReduceOp, src: &dyn BackendStorage, layout: &Layout, axes: &[usize]) -> Result<BoxStorage> {
        ops::reduce::reduce(self, op, src, layout, axes)
    }

    fn matmul(
        &self,
        lhs: &dyn BackendStorage,
        lhs_layout: &Layout,
        rhs: &dyn BackendStorage,
        rhs_layout: &Layout,
    ) -> Result<BoxStorage> {
        ops::matmul::matmul(self, (lhs, lhs_layout), (rhs, rhs_layout))
    }

    fn index_select(
        &self,
        src: &dyn BackendStorage,
        src_layout: &Layout,
        ids: &dyn BackendStorage,
        ids_layout: &Layout,
        dim: usize,
    ) -> Result<BoxStorage> {
        ops::index::index_select(self, (src, src_layout), (ids, ids_layout), dim)
    }

    fn index_add(
        &self,
        dst: &mut dyn BackendStorage,
        dst_shape: &[usize],
        dim: usize,
        ids: &dyn BackendStorage,
        ids_layout: &Layout,
        src: &dyn BackendStorage,
        src_layout: &Layout,
    ) -> Result<()> {
        ops::index::index_add(self, (dst, dst_shape), dim, (ids, ids_layout), (src, src_layout))
    }

    fn gather(
        &self,
        src: &dyn BackendStorage,
        src_layout: &Layout,
        ids: &dyn BackendStorage,
        ids_layout: &Layout,
        dim: usize,
    ) -> Result<BoxStorage> {
        ops::index::gather(self, (src, src_layout), (ids, ids_layout), dim)
    }

    fn scatter_add(
        &self,
        dst: &mut dyn BackendStorage,
        dst_shape: &[usize],
        dim: usize,
        ids: &dyn BackendStorage,
        ids_layout: &Layout,
        src: &dyn BackendStorage,
        src_layout: &Layout,
    ) -> Result<()> {
        ops::index::scatter_add(self, (dst, dst_shape), dim, (ids, ids_layout), (src, src_layout))
    }

    fn synchronize(&self) -> Result<()> {
        self.gpu.enter()?;
        self.gpu.sync()
    }

    fn softmax_last(&self, src: &dyn BackendStorage, layout: &Layout) -> Result<BoxStorage> {
        ops::softmax::forward(self, "softmax_last", src, layout, false)
    }

    fn log_softmax_last(&self, src: &dyn BackendStorage, layout: &Layout) -> Result<BoxStorage> {
        ops::softmax::forward(self, "log_softmax_last", src, layout, true)
    }

    fn softmax_last_backward(
        &self,
        y: &dyn BackendStorage,
        dy: &dyn BackendStorage,
        shape: &[usize],
    ) -> Result<BoxStorage> {
        ops::softmax::backward(self, "softmax_last_backward", (y, dy), shape, false)
    }

    fn log_softmax_last_backward(
        &self,
        y: &dyn BackendStorage,
        dy: &dyn BackendStorage,
        shape: &[usize],
    ) -> Result<BoxStorage> {
        ops::softmax::backward(self, "log_softmax_last_backward", (y, dy), shape, true)
    }

    fn moments_last(&self, src: &dyn BackendStorage, layout: &Layout) -> Result<(BoxStorage, BoxStorage)> {
        ops::norm::moments_last(self, src, layout)
    }

    fn norm_last(
        &self,
        x: &dyn BackendStorage,
        rows: usize,
        n: usize,
        weight: Option<&dyn BackendStorage>,
        bias: Option<&dyn BackendStorage>,
        eps: f64,
        rms: bool,
    ) -> Result<(BoxStorage, BoxStorage, BoxStorage)> {
        ops::norm::forward(self, x, [rows, n], (weight, bias), eps, rms)
    }

    fn norm_last_backward(
        &self,
        x: &dyn BackendStorage,
        mean: &dyn BackendStorage,
        rstd: &dyn BackendStorage,
        weight: Option<&dyn BackendStorage>,
        dy: &dyn BackendStorage,
        rows: usize,
        n: usize,
        rms: bool,
    ) -> Result<(BoxStorage, Option<BoxStorage>, Option<BoxStorage>)> {
        ops::norm::backward(self, ops::norm::Saved { x, mean, rstd }, weight, dy, [rows, n], rms)
    }

    fn adam_update(
        &self,
        param: &dyn BackendStorage,
        grad: &dyn BackendStorage,
        m: Option<&dyn BackendStorage>,
        v: Option<&dyn BackendStorage>,
        len: usize,
        h: &AdamStep,
    ) -> Result<(BoxStorage, BoxStorage, BoxStorage)> {
        ops::optim::adam_update(self, (param, grad), (m, v), len, h)
    }

    // ----- issue 17 (helper "ops"): the sort and scan families -----

    fn arg_reduce(&self, op: ReduceOp, src: &dyn BackendStorage, layout: &Layout, axis: usize) -> Result<BoxStorage> {
        ops::sort::arg_reduce(self, op, src, layout, axis)
    }

    fn argsort(&self, src: &dyn BackendStorage, layout: &Layout, axis: usize, descending: bool) -> Result<BoxStorage> {
        ops::sort::argsort(self, src, layout, axis, descending)
    }

    fn cumsum(&self, src: &dyn BackendStorage, layout: &Layout, axis: usize, reverse: bool) -> Result<BoxStorage> {
        ops::scan::cumsum(self, src, layout, axis, reverse)
    }
}
