//! [`CudaBackend`]: the core `Backend` trait on one GPU.
//!
//! Each method validates its operands on the host (dtypes, shapes, and that every
//! strided view stays inside its storage, so no kernel can read out of bounds),
//! plans the launch ([`crate::plan`]) and queues kernels on the device's stream.
//! Nothing waits for the GPU except reading data back ([`Backend::to_host`]),
//! [`Backend::synchronize`], and the indexing ops, which must read the kernels'
//! out-of-range flag before they can report an error.

use crate::driver::{backend_error, Gpu};
use crate::kernels::{kargs, KArg, Kernels};
use crate::plan::{dense_strides, grid_for, StridedIndex, View, BLOCK};
use crate::storage::CudaStorage;
use std::sync::{Arc, Mutex};
use unigrad_core::backend::{Backend, BackendStorage, BinaryOp, BoxStorage, ReduceOp, UnaryOp};
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
}

/// Kernel-name suffix of a dtype.
fn sfx(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::F64 => "f64",
        DType::I64 => "i64",
    }
}

/// Kernel-name suffix for kernels that only move elements of a given size.
fn bytes_sfx(dtype: DType) -> &'static str {
    match dtype.size_in_bytes() {
        4 => "b4",
        _ => "b8",
    }
}

/// Op code and constants for `unary_*`; codes match `U_*` in kernels/elementwise.cu.
fn unary_code(op: UnaryOp) -> (i32, f64, f64) {
    match op {
        UnaryOp::Neg => (0, 0.0, 0.0),
        UnaryOp::Exp => (1, 0.0, 0.0),
        UnaryOp::Log => (2, 0.0, 0.0),
        UnaryOp::Sqrt => (3, 0.0, 0.0),
        UnaryOp::Rsqrt => (4, 0.0, 0.0),
        UnaryOp::Abs => (5, 0.0, 0.0),
        UnaryOp::Relu => (6, 0.0, 0.0),
        UnaryOp::Tanh => (7, 0.0, 0.0),
        UnaryOp::Sigmoid => (8, 0.0, 0.0),
        UnaryOp::GeluErf => (9, 0.0, 0.0),
        UnaryOp::GeluTanh => (10, 0.0, 0.0),
        UnaryOp::GeluErfGrad => (11, 0.0, 0.0),
        UnaryOp::GeluTanhGrad => (12, 0.0, 0.0),
        UnaryOp::Step => (13, 0.0, 0.0),
        UnaryOp::Sign => (14, 0.0, 0.0),
        UnaryOp::Sqr => (15, 0.0, 0.0),
        UnaryOp::Recip => (16, 0.0, 0.0),
        UnaryOp::Affine(mul, add) => (17, mul, add),
        UnaryOp::Powf(p) => (18, p, 0.0),
        UnaryOp::MaxScalar(c) => (19, c, 0.0),
        UnaryOp::MinScalar(c) => (20, c, 0.0),
    }
}

/// Op code for `binary_*`; codes match `B_*` in kernels/elementwise.cu.
fn binary_code(op: BinaryOp) -> i32 {
    match op {
        BinaryOp::Add => 0,
        BinaryOp::Sub => 1,
        BinaryOp::Mul => 2,
        BinaryOp::Div => 3,
        BinaryOp::Max => 4,
        BinaryOp::Min => 5,
        BinaryOp::Eq => 6,
        BinaryOp::Ne => 7,
        BinaryOp::Lt => 8,
        BinaryOp::Le => 9,
        BinaryOp::Gt => 10,
        BinaryOp::Ge => 11,
    }
}

/// Op code for `reduce_*`; codes match `RED_*` in kernels/common.cuh.
fn reduce_code(op: ReduceOp) -> i32 {
    match op {
        ReduceOp::Sum => 0,
        ReduceOp::Max => 1,
        ReduceOp::Min => 2,
    }
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

fn float_only(op: &'static str, dtype: DType, shape: &[usize]) -> Result<()> {
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

fn same_dtype(op: &'static str, lhs: DType, rhs: DType) -> Result<()> {
    if lhs == rhs {
        Ok(())
    } else {
        Err(Error::DTypeMismatch { op, lhs, rhs })
    }
}

fn same_shape(op: &'static str, lhs: &[usize], rhs: &[usize]) -> Result<()> {
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

fn ids_only(op: &'static str, ids: &CudaStorage, layout: &Layout) -> Result<()> {
    if ids.dtype == DType::I64 {
        Ok(())
    } else {
        Err(Error::UnsupportedDType {
            op,
            dtype: ids.dtype,
            shape: layout.shape().to_vec(),
        })
    }
}

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

/// Shape `shape` with its last axis set to 1 (the shape of a row statistic).
fn reduced_last(shape: &[usize]) -> Vec<usize> {
    let mut s = shape.to_vec();
    if let Some(l) = s.last_mut() {
        *l = 1;
    }
    s
}

/// Rows of a last-axis op: index over the leading dims, stride of the last axis,
/// row count and row length. A scalar is one row of one element.
fn rows_of(op: &'static str, layout: &Layout) -> Result<(StridedIndex<1>, u64, u64, u64)> {
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

/// Reinterpret plain numbers as bytes.
fn as_bytes<T: Copy>(v: &[T]) -> &[u8] {
    // SAFETY: only called with f32/f64/i64 slices: no padding, every byte initialised,
    // and u8 has alignment 1.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
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
        })
    }

    /// A backend on a driverless [`Gpu`]: [`Mode::DryRun`] for unit tests of the host
    /// side, [`Mode::Emulated`] for the CPU kernel emulator.
    #[cfg(any(test, feature = "emulator"))]
    pub(crate) fn without_driver(mode: crate::driver::Mode, ordinal: usize) -> CudaBackend {
        let gpu = Arc::new(Gpu::without_driver(mode, ordinal));
        let kernels = Kernels::without_driver(gpu.clone());
        let flag = CudaStorage::alloc(&gpu, 2, DType::I64).expect("dry-run allocation");
        CudaBackend {
            kernels,
            flag: Mutex::new(flag),
            gpu,
        }
    }

    /// The device.
    pub(crate) fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    fn mismatch(&self, op: &'static str, other: String) -> Error {
        Error::DeviceMismatch {
            op,
            lhs: self.gpu.name.clone(),
            rhs: other,
        }
    }

    /// `s` as this device's storage.
    fn cuda<'a>(&self, op: &'static str, s: &'a dyn BackendStorage) -> Result<&'a CudaStorage> {
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
    fn cuda_mut<'a>(&self, op: &'static str, s: &'a mut dyn BackendStorage) -> Result<&'a mut CudaStorage> {
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

    /// Reject layouts that would read or write outside `s`.
    fn check_view(&self, op: &'static str, s: &CudaStorage, l: &Layout) -> Result<()> {
        if l.strides().len() != l.rank() {
            return Err(Error::invalid(
                op,
                format!("layout has {} strides for shape {:?}", l.strides().len(), l.shape()),
            ));
        }
        let numel = l.shape().iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let extent = if numel == Some(0) {
            Some(0)
        } else {
            l.shape()
                .iter()
                .zip(l.strides())
                .try_fold(l.offset(), |acc, (&d, &s)| acc.checked_add((d - 1).checked_mul(s)?))
                .and_then(|last| last.checked_add(1))
        };
        match extent {
            Some(e) if e <= s.len => Ok(()),
            _ => Err(Error::invalid(
                op,
                format!(
                    "view (shape {:?}, strides {:?}, offset {}) reaches past the end of a storage of {} elements",
                    l.shape(),
                    l.strides(),
                    l.offset(),
                    s.len
                ),
            )),
        }
    }

    fn alloc(&self, len: usize, dtype: DType) -> Result<CudaStorage> {
        CudaStorage::alloc(&self.gpu, len, dtype)
    }

    fn zeroed(&self, len: usize, dtype: DType) -> Result<CudaStorage> {
        let s = self.alloc(len, dtype)?;
        if s.len > 0 {
            self.gpu.memset_zero(s.ptr, s.bytes())?;
        }
        Ok(s)
    }

    /// Launch a kernel (see [`Kernels::launch`] for the contract on `params`).
    ///
    /// # Safety
    /// As for [`Kernels::launch`].
    unsafe fn launch(&self, name: &str, grid: [u32; 3], block: u32, shared: u32, params: &[KArg]) -> Result<()> {
        self.kernels.launch(name, grid, block, shared, params)
    }

    /// Copy `src` viewed through `src_layout` into `dst` at `dst_view` (same shape).
    fn copy_kernel(&self, src: &CudaStorage, src_layout: &Layout, dst: &CudaStorage, dst_view: View<'_>) -> Result<()> {
        let n = src_layout.numel() as u64;
        if n == 0 {
            return Ok(());
        }
        let ix = StridedIndex::<2>::new("copy_strided", src_layout.shape(), [View::of(src_layout), dst_view])?;
        let (sp, dp) = (src.ptr, dst.ptr);
        let name = format!("copy_{}", bytes_sfx(src.dtype));
        let grid = grid_for(n, BLOCK, self.gpu.sm_count);
        // SAFETY: params match copy_b4/b8(Index<2>, src, dst, u64); both views were
        // checked to lie inside their storages.
        unsafe { self.launch(&name, [grid, 1, 1], BLOCK, 0, &kargs![ix, sp, dp, n]) }
    }

    /// Dense copy of a view (a fresh storage).
    fn dense_copy(&self, src: &CudaStorage, layout: &Layout) -> Result<CudaStorage> {
        let out = self.alloc(layout.numel(), src.dtype)?;
        let strides = dense_strides(layout.shape());
        self.copy_kernel(
            src,
            layout,
            &out,
            View {
                strides: &strides,
                offset: 0,
            },
        )?;
        Ok(out)
    }

    /// Read `n` elements at device address `ptr` (waits for queued work).
    fn download<T: Copy + Default>(&self, ptr: u64, n: usize) -> Result<Vec<T>> {
        let mut v = vec![T::default(); n];
        // SAFETY: callers pass an address inside a live storage with `n` elements of T
        // from there on.
        unsafe { self.gpu.download(as_bytes_mut(&mut v), ptr)? };
        Ok(v)
    }

    /// Clear the out-of-range flag; run `launch(flag address)`; report a recorded id.
    fn with_flag(
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

    /// Error unless every id in `ids` is in `0..size` (one launch and one readback).
    fn check_ids(&self, op: &'static str, ids: &CudaStorage, il: &Layout, size: usize, shape: &[usize]) -> Result<()> {
        let n = il.numel() as u64;
        if n == 0 {
            return Ok(());
        }
        let ix = StridedIndex::<1>::new(op, il.shape(), [View::of(il)])?;
        let (ip, size64) = (ids.ptr, size as u64);
        let grid = grid_for(n, BLOCK, self.gpu.sm_count);
        self.with_flag(op, size, shape, |fp| {
            // SAFETY: params match check_ids(Index<1>, ids, u64, u64, flag); the ids view
            // was checked against its storage.
            unsafe { self.launch("check_ids", [grid, 1, 1], BLOCK, 0, &kargs![ix, ip, n, size64, fp]) }
        })
    }

    /// Launch configuration of the row kernels: (warp mode, grid, block).
    fn row_config(&self, n_rows: u64, n_cols: u64) -> (u32, u32, u32) {
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

    fn softmax_forward(
        &self,
        op: &'static str,
        src: &dyn BackendStorage,
        layout: &Layout,
        log: u32,
    ) -> Result<BoxStorage> {
        self.gpu.enter()?;
        let s = self.cuda(op, src)?;
        self.check_view(op, s, layout)?;
        float_only(op, s.dtype, layout.shape())?;
        let out = self.alloc(layout.numel(), s.dtype)?;
        if out.len == 0 {
            return Ok(Box::new(out));
        }
        let (rows, cs, n_rows, n_cols) = rows_of(op, layout)?;
        let (warp, grid, block) = self.row_config(n_rows, n_cols);
        let (xp, yp) = (s.ptr, out.ptr);
        let name = format!("softmax_fwd_{}", sfx(s.dtype));
        // SAFETY: params match softmax_fwd_*(Index<1>, u64, x, y, u64, u64, u32, u32);
        // the input view was checked, the output has n_rows * n_cols elements.
        unsafe {
            self.launch(
                &name,
                [grid, 1, 1],
                block,
                0,
                &kargs![rows, cs, xp, yp, n_rows, n_cols, warp, log],
            )?;
        }
        Ok(Box::new(out))
    }

    fn softmax_backward(
        &self,
        op: &'static str,
        y: &dyn BackendStorage,
        dy: &dyn BackendStorage,
        shape: &[usize],
        log: u32,
    ) -> Result<BoxStorage> {
        self.gpu.enter()?;
        let (ys, gs) = (self.cuda(op, y)?, self.cuda(op, dy)?);
        same_dtype(op, ys.dtype, gs.dtype)?;
        float_only(op, ys.dtype, shape)?;
        let n = numel(shape);
        if ys.len < n || gs.len < n {
            return Err(Error::invalid(
                op,
                format!("shape {shape:?} needs {n} elements, got {} and {}", ys.len, gs.len),
            ));
        }
        let out = self.alloc(n, ys.dtype)?;
        if n == 0 {
            return Ok(Box::new(out));
        }
        let n_cols = shape.last().copied().unwrap_or(1) as u64;
        let n_rows = n as u64 / n_cols;
        let (warp, grid, block) = self.row_config(n_rows, n_cols);
        let (yp, gp, dp) = (ys.ptr, gs.ptr, out.ptr);
        let name = format!("softmax_bwd_{}", sfx(ys.dtype));
        // SAFETY: params match softmax_bwd_*(y, dy, dx, u64, u64, u32, u32); all three
        // buffers hold at least n_rows * n_cols elements.
        unsafe {
            self.launch(
                &name,
                [grid, 1, 1],
                block,
                0,
                &kargs![yp, gp, dp, n_rows, n_cols, warp, log],
            )?;
        }
        Ok(Box::new(out))
    }
}

/// One reduction pass: `src` viewed as (kept, red) reduced over `red`.
struct ReduceLaunch {
    kept: StridedIndex<1>,
    red: StridedIndex<1>,
    src: u64,
    dtype: DType,
    n_out: u64,
    n_red: u64,
    /// Threads cooperate along the reduction (true) or take adjacent outputs (false).
    row_mode: bool,
    code: i32,
}

impl CudaBackend {
    /// Queue a reduction into `out` (`n_out` elements). With few outputs and long
    /// reductions (`allow_split`), each reduction is split over several blocks into
    /// partials `[splits, n_out]` that a second pass combines, so the whole GPU works.
    fn reduce_into(&self, r: ReduceLaunch, out: &CudaStorage, allow_split: bool) -> Result<()> {
        let (tr, to) = if r.row_mode {
            let tr = r.n_red.next_power_of_two().min(BLOCK as u64) as u32;
            (tr, BLOCK / tr)
        } else {
            let to = r.n_out.next_power_of_two().min(BLOCK as u64) as u32;
            (BLOCK / to, to)
        };
        let o_fast = u32::from(!r.row_mode);
        let blocks_o = r.n_out.div_ceil(to as u64);
        let target = 2 * self.gpu.sm_count as u64;
        let mut splits = 1u64;
        if allow_split && blocks_o < target && r.n_red > tr as u64 * 32 {
            splits = target
                .div_ceil(blocks_o)
                .min(r.n_red.div_ceil(tr as u64 * 32))
                .min(65_535);
        }
        let per_split = r.n_red.div_ceil(splits);
        let splits = r.n_red.div_ceil(per_split);
        let blocks_o = u32::try_from(blocks_o)
            .map_err(|_| backend_error(&self.gpu.name, format!("reduce: {} outputs are too many", r.n_out)))?;
        let partial = if splits > 1 {
            Some(self.alloc((splits * r.n_out) as usize, r.dtype)?)
        } else {
            None
        };
        let dp = partial.as_ref().map_or(out.ptr, |p| p.ptr);
        let ReduceLaunch {
            kept,
            red,
            src: sp,
            n_out,
            n_red,
            code,
            ..
        } = r;
        let name = format!("reduce_{}", sfx(r.dtype));
        // SAFETY: params match reduce_*(Index<1>, Index<1>, src, dst, u64, u64, u64, u32,
        // u32, u32, int); the source view was checked by the caller; dst holds
        // splits * n_out elements; BLOCK = REDUCE_THREADS of the kernel.
        unsafe {
            self.launch(
                &name,
                [blocks_o, splits as u32, 1],
                BLOCK,
                0,
                &kargs![kept, red, sp, dp, n_out, n_red, per_split, to, tr, o_fast, code],
            )?;
        }
        let Some(partial) = partial else {
            return Ok(());
        };
        // Combine the partials: dense [splits, n_out] reduced over its first axis.
        let kept = StridedIndex::<1>::new(
            "reduce",
            &[n_out as usize],
            [View {
                strides: &[1],
                offset: 0,
            }],
        )?;
        let red = StridedIndex::<1>::new(
            "reduce",
            &[splits as usize],
            [View {
                strides: &[n_out as usize],
                offset: 0,
            }],
        )?;
        self.reduce_into(
            ReduceLaunch {
                kept,
                red,
                src: partial.ptr,
                dtype: r.dtype,
                n_out,
                n_red: splits,
                row_mode: n_out == 1,
                code,
            },
            out,
            false,
        )
        // `partial` returns to the cache here; later users are ordered after the
        // combining kernel on the stream.
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
        self.gpu.enter()?;
        let s = self.alloc(data.len(), data.dtype())?;
        let bytes = match data {
            HostData::F32(v) => as_bytes(v),
            HostData::F64(v) => as_bytes(v),
            HostData::I64(v) => as_bytes(v),
        };
        // SAFETY: `s` was allocated for exactly `data.len()` elements of its dtype.
        unsafe { self.gpu.upload(s.ptr, bytes)? };
        Ok(Box::new(s))
    }

    fn to_host(&self, src: &dyn BackendStorage, layout: &Layout) -> Result<HostData> {
        self.gpu.enter()?;
        let s = self.cuda("to_host", src)?;
        self.check_view("to_host", s, layout)?;
        let n = layout.numel();
        let tmp;
        let ptr = if n == 0 {
            0
        } else if layout.is_contiguous() {
            s.at(layout.offset())
        } else {
            tmp = self.dense_copy(s, layout)?;
            tmp.ptr
        };
        Ok(match s.dtype {
            DType::F32 => HostData::F32(self.download(ptr, n)?),
            DType::F64 => HostData::F64(self.download(ptr, n)?),
            DType::I64 => HostData::I64(self.download(ptr, n)?),
        })
    }

    fn copy_strided(
        &self,
        src: &dyn BackendStorage,
        src_layout: &Layout,
        dst: &mut dyn BackendStorage,
        dst_layout: &Layout,
    ) -> Result<()> {
        const OP: &str = "copy_strided";
        self.gpu.enter()?;
        let s = self.cuda(OP, src)?;
        let d = self.cuda_mut(OP, dst)?;
        same_shape(OP, src_layout.shape(), dst_layout.shape())?;
        same_dtype(OP, s.dtype, d.dtype)?;
        self.check_view(OP, s, src_layout)?;
        self.check_view(OP, d, dst_layout)?;
        let n = src_layout.numel();
        if n == 0 {
            return Ok(());
        }
        if src_layout.is_contiguous() && dst_layout.is_contiguous() {
            // SAFETY: both ranges were checked to lie inside their storages.
            return unsafe {
                self.gpu.copy_d2d(
                    d.at(dst_layout.offset()),
                    s.at(src_layout.offset()),
                    n * s.dtype.size_in_bytes(),
                )
            };
        }
        self.copy_kernel(s, src_layout, d, View::of(dst_layout))
    }

    fn cast(&self, src: &dyn BackendStorage, layout: &Layout, dtype: DType) -> Result<BoxStorage> {
        self.gpu.enter()?;
        let s = self.cuda("cast", src)?;
        self.check_view("cast", s, layout)?;
        let out = self.alloc(layout.numel(), dtype)?;
        let n = out.len as u64;
        if n > 0 {
            let ix = StridedIndex::<1>::new("cast", layout.shape(), [View::of(layout)])?;
            let (sp, dp) = (s.ptr, out.ptr);
            let name = format!("cast_{}_{}", sfx(s.dtype), sfx(dtype));
            let grid = grid_for(n, BLOCK, self.gpu.sm_count);
            // SAFETY: params match cast_*_*(Index<1>, src, dst, u64); view checked,
            // output dense with n elements.
            unsafe { self.launch(&name, [grid, 1, 1], BLOCK, 0, &kargs![ix, sp, dp, n])? };
        }
        Ok(Box::new(out))
    }

    fn unary(&self, op: UnaryOp, src: &dyn BackendStorage, layout: &Layout) -> Result<BoxStorage> {
        self.gpu.enter()?;
        let s = self.cuda("unary", src)?;
        self.check_view("unary", s, layout)?;
        float_only("unary", s.dtype, layout.shape())?;
        let out = self.alloc(layout.numel(), s.dtype)?;
        let n = out.len as u64;
        if n > 0 {
            let ix = StridedIndex::<1>::new("unary", layout.shape(), [View::of(layout)])?;
            let (code, p0, p1) = unary_code(op);
            let (sp, dp) = (s.ptr, out.ptr);
            let name = format!("unary_{}", sfx(s.dtype));
            let grid = grid_for(n, BLOCK, self.gpu.sm_count);
            // SAFETY: params match unary_*(Index<1>, x, y, u64, int, double, double).
            unsafe { self.launch(&name, [grid, 1, 1], BLOCK, 0, &kargs![ix, sp, dp, n, code, p0, p1])? };
        }
        Ok(Box::new(out))
    }

    fn binary(
        &self,
        op: BinaryOp,
        lhs: &dyn BackendStorage,
        lhs_layout: &Layout,
        rhs: &dyn BackendStorage,
        rhs_layout: &Layout,
    ) -> Result<BoxStorage> {
        const OP: &str = "binary";
        self.gpu.enter()?;
        let (a, b) = (self.cuda(OP, lhs)?, self.cuda(OP, rhs)?);
        same_shape(OP, lhs_layout.shape(), rhs_layout.shape())?;
        same_dtype(OP, a.dtype, b.dtype)?;
        float_only(OP, a.dtype, lhs_layout.shape())?;
        self.check_view(OP, a, lhs_layout)?;
        self.check_view(OP, b, rhs_layout)?;
        let out = self.alloc(lhs_layout.numel(), a.dtype)?;
        let n = out.len as u64;
        if n > 0 {
            let ix = StridedIndex::<2>::new(OP, lhs_layout.shape(), [View::of(lhs_layout), View::of(rhs_layout)])?;
            let code = binary_code(op);
            let (ap, bp, dp) = (a.ptr, b.ptr, out.ptr);
            let name = format!("binary_{}", sfx(a.dtype));
            let grid = grid_for(n, BLOCK, self.gpu.sm_count);
            // SAFETY: params match binary_*(Index<2>, a, b, y, u64, int); views checked.
            unsafe { self.launch(&name, [grid, 1, 1], BLOCK, 0, &kargs![ix, ap, bp, dp, n, code])? };
        }
        Ok(Box::new(out))
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
        const OP: &str = "where_cond";
        self.gpu.enter()?;
        let (c, x, y) = (self.cuda(OP, cond)?, self.cuda(OP, a)?, self.cuda(OP, b)?);
        same_shape(OP, cond_layout.shape(), a_layout.shape())?;
        same_shape(OP, a_layout.shape(), b_layout.shape())?;
        same_dtype(OP, x.dtype, y.dtype)?;
        self.check_view(OP, c, cond_layout)?;
        self.check_view(OP, x, a_layout)?;
        self.check_view(OP, y, b_layout)?;
        let out = self.alloc(a_layout.numel(), x.dtype)?;
        let n = out.len as u64;
        if n > 0 {
            let ix = StridedIndex::<3>::new(
                OP,
                a_layout.shape(),
                [View::of(cond_layout), View::of(a_layout), View::of(b_layout)],
            )?;
            let (cp, xp, yp, dp) = (c.ptr, x.ptr, y.ptr, out.ptr);
            let name = format!("where_{}_{}", sfx(c.dtype), bytes_sfx(x.dtype));
            let grid = grid_for(n, BLOCK, self.gpu.sm_count);
            // SAFETY: params match where_*_*(Index<3>, cond, a, b, y, u64); views checked.
            unsafe { self.launch(&name, [grid, 1, 1], BLOCK, 0, &kargs![ix, cp, xp, yp, dp, n])? };
        }
        Ok(Box::new(out))
    }

    fn reduce(&self, op: ReduceOp, src: &dyn BackendStorage, layout: &Layout, axes: &[usize]) -> Result<BoxStorage> {
        const OP: &str = "reduce";
        self.gpu.enter()?;
        let s = self.cuda(OP, src)?;
        self.check_view(OP, s, layout)?;
        let shape = layout.shape();
        float_only(OP, s.dtype, shape)?;
        if axes.windows(2).any(|w| w[0] >= w[1]) || axes.iter().any(|&a| a >= shape.len()) {
            return Err(Error::invalid(
                OP,
                format!("axes {axes:?} must be sorted, distinct and below the rank of {shape:?}"),
            ));
        }
        let (mut kept_shape, mut kept_strides, mut red_shape, mut red_strides) = (vec![], vec![], vec![], vec![]);
        for (d, (&size, &stride)) in shape.iter().zip(layout.strides()).enumerate() {
            if axes.contains(&d) {
                red_shape.push(size);
                red_strides.push(stride);
            } else {
                kept_shape.push(size);
                kept_strides.push(stride);
            }
        }
        let (n_out, n_red) = (numel(&kept_shape) as u64, numel(&red_shape) as u64);
        if n_out == 0 {
            return Ok(Box::new(self.alloc(0, s.dtype)?));
        }
        if n_red == 0 {
            return match op {
                ReduceOp::Sum => Ok(Box::new(self.zeroed(n_out as usize, s.dtype)?)),
                _ => Err(Error::invalid(
                    OP,
                    format!("{op:?} over axes {axes:?} of shape {shape:?}: the reduced axes are empty"),
                )),
            };
        }
        let kept = StridedIndex::<1>::new(
            OP,
            &kept_shape,
            [View {
                strides: &kept_strides,
                offset: layout.offset(),
            }],
        )?;
        let red = StridedIndex::<1>::new(
            OP,
            &red_shape,
            [View {
                strides: &red_strides,
                offset: 0,
            }],
        )?;
        // Row mode when the reduced elements are the closer ones in memory.
        let min_stride = |shape: &[usize], strides: &[usize]| {
            shape
                .iter()
                .zip(strides)
                .filter(|(&d, _)| d > 1)
                .map(|(_, &s)| s)
                .min()
                .unwrap_or(usize::MAX)
        };
        let row_mode = min_stride(&red_shape, &red_strides) < min_stride(&kept_shape, &kept_strides);
        let out = self.alloc(n_out as usize, s.dtype)?;
        self.reduce_into(
            ReduceLaunch {
                kept,
                red,
                src: s.ptr,
                dtype: s.dtype,
                n_out,
                n_red,
                row_mode,
                code: reduce_code(op),
            },
            &out,
            true,
        )?;
        Ok(Box::new(out))
    }

    fn matmul(
        &self,
        lhs: &dyn BackendStorage,
        lhs_layout: &Layout,
        rhs: &dyn BackendStorage,
        rhs_layout: &Layout,
    ) -> Result<BoxStorage> {
        const OP: &str = "matmul";
        self.gpu.enter()?;
        let (a, b) = (self.cuda(OP, lhs)?, self.cuda(OP, rhs)?);
        same_dtype(OP, a.dtype, b.dtype)?;
        float_only(OP, a.dtype, lhs_layout.shape())?;
        self.check_view(OP, a, lhs_layout)?;
        self.check_view(OP, b, rhs_layout)?;
        let (ls, rs) = (lhs_layout.shape(), rhs_layout.shape());
        let r = ls.len();
        if r < 2 || rs.len() != r || ls[..r - 2] != rs[..r - 2] || ls[r - 1] != rs[r - 2] {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: ls.to_vec(),
                rhs: rs.to_vec(),
            });
        }
        let (m, k, n) = (ls[r - 2], ls[r - 1], rs[r - 1]);
        let batch_shape = &ls[..r - 2];
        let n_batch = numel(batch_shape);
        let len = n_batch * m * n;
        if len == 0 {
            return Ok(Box::new(self.alloc(0, a.dtype)?));
        }
        if k == 0 {
            return Ok(Box::new(self.zeroed(len, a.dtype)?));
        }
        let (lst, rst) = (lhs_layout.strides(), rhs_layout.strides());
        let (a_sm, a_sk, b_sk, b_sn) = (lst[r - 2], lst[r - 1], rst[r - 2], rst[r - 1]);
        let batch = StridedIndex::<2>::new(
            OP,
            batch_shape,
            [
                View {
                    strides: &lst[..r - 2],
                    offset: lhs_layout.offset(),
                },
                View {
                    strides: &rst[..r - 2],
                    offset: rhs_layout.offset(),
                },
            ],
        )?;
        let out = self.alloc(len, a.dtype)?;

        // 32-bit indexing inside each matrix when every offset fits (with room for
        // the tile overshoot at the edges); otherwise the 64-bit kernels.
        let ext = |rows: usize, rs: usize, cols: usize, cs: usize| {
            (rows as u128 - 1) * rs as u128 + (cols as u128 - 1) * cs as u128 + 1
        };
        let limit = (u32::MAX - 1024) as u128;
        let fits32 = !crate::testing::wide_gemm_forced()
            && [m, n, k].iter().all(|&d| (d as u128) < limit)
            && ext(m, a_sm, k, a_sk) < limit
            && ext(k, b_sk, n, b_sn) < limit
            && (m as u128 * n as u128) < limit;
        let sm = self.gpu.sm_count as usize;
        let (name, tile) = match (a.dtype, fits32) {
            (DType::F32, true) if m.div_ceil(128) * n.div_ceil(128) * n_batch >= sm => ("matmul_f32_t128", 128),
            (DType::F32, true) => ("matmul_f32_t64", 64),
            (DType::F32, false) => ("matmul_f32_big", 64),
            (_, true) => ("matmul_f64_t64", 64),
            (_, false) => ("matmul_f64_big", 64),
        };
        let grid_y = m.div_ceil(tile);
        if grid_y > 65_535 {
            return Err(backend_error(
                &self.gpu.name,
                format!("matmul: {m} rows need {grid_y} row tiles; at most 65535 are supported"),
            ));
        }
        let grid = [
            u32::try_from(n.div_ceil(tile)).map_err(|_| backend_error(&self.gpu.name, "matmul: too many columns"))?,
            grid_y as u32,
            n_batch.min(65_535) as u32,
        ];
        let (ap, bp, cp, nb) = (a.ptr, b.ptr, out.ptr, n_batch as u64);
        // Both arms: the views were checked against their storages and C holds
        // n_batch * m * n elements.
        if fits32 {
            let [m32, n32, k32, asm, ask, bsk, bsn] = [m, n, k, a_sm, a_sk, b_sk, b_sn].map(|v| v as u32);
            // SAFETY: params match matmul_f*_t*(Index<2>, u64, A, B, C, u32 x 7), and
            // `fits32` guarantees the kernels' 32-bit offsets do not wrap.
            unsafe {
                self.launch(
                    name,
                    grid,
                    256,
                    0,
                    &kargs![batch, nb, ap, bp, cp, m32, n32, k32, asm, ask, bsk, bsn],
                )?;
            }
        } else {
            let [m64, n64, k64, asm, ask, bsk, bsn] = [m, n, k, a_sm, a_sk, b_sk, b_sn].map(|v| v as u64);
            // SAFETY: params match matmul_f*_big(Index<2>, u64, A, B, C, u64 x 7).
            unsafe {
                self.launch(
                    name,
                    grid,
                    256,
                    0,
                    &kargs![batch, nb, ap, bp, cp, m64, n64, k64, asm, ask, bsk, bsn],
                )?;
            }
        }
        Ok(Box::new(out))
    }

    fn index_select(
        &self,
        src: &dyn BackendStorage,
        src_layout: &Layout,
        ids: &dyn BackendStorage,
        ids_layout: &Layout,
        dim: usize,
    ) -> Result<BoxStorage> {
        const OP: &str = "index_select";
        self.gpu.enter()?;
        let (s, i) = (self.cuda(OP, src)?, self.cuda(OP, ids)?);
        ids_only(OP, i, ids_layout)?;
        self.check_view(OP, s, src_layout)?;
        self.check_view(OP, i, ids_layout)?;
        let shape = src_layout.shape();
        check_dim(OP, dim, shape)?;
        let n_ids = ids_layout.numel();
        let mut out_shape = shape.to_vec();
        out_shape[dim] = n_ids;
        let out = self.alloc(numel(&out_shape), s.dtype)?;
        let size = shape[dim];
        if out.len == 0 {
            // Nothing to copy, but bad ids are still an error.
            self.check_ids(OP, i, ids_layout, size, shape)?;
            return Ok(Box::new(out));
        }
        let ix = StridedIndex::<1>::unmerged(
            OP,
            &out_shape,
            [View {
                strides: src_layout.strides(),
                offset: src_layout.offset(),
            }],
        )?;
        let ids_ix = StridedIndex::<1>::new(OP, ids_layout.shape(), [View::of(ids_layout)])?;
        let (dim32, ip, sp, dp, n, size64) = (dim as u32, i.ptr, s.ptr, out.ptr, out.len as u64, size as u64);
        let name = format!("index_select_{}", bytes_sfx(s.dtype));
        let grid = grid_for(n, BLOCK, self.gpu.sm_count);
        self.with_flag(OP, size, shape, |fp| {
            // SAFETY: params match index_select_b*(Index<1>, u32, Index<1>, ids, src, out,
            // u64, u64, flag); views checked; ids are bounds-checked in the kernel.
            unsafe {
                self.launch(
                    &name,
                    [grid, 1, 1],
                    BLOCK,
                    0,
                    &kargs![ix, dim32, ids_ix, ip, sp, dp, n, size64, fp],
                )
            }
        })?;
        Ok(Box::new(out))
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
        const OP: &str = "index_add";
        self.gpu.enter()?;
        let (i, s) = (self.cuda(OP, ids)?, self.cuda(OP, src)?);
        let d = self.cuda_mut(OP, dst)?;
        ids_only(OP, i, ids_layout)?;
        same_dtype(OP, d.dtype, s.dtype)?;
        float_only(OP, d.dtype, dst_shape)?;
        self.check_view(OP, i, ids_layout)?;
        self.check_view(OP, s, src_layout)?;
        self.check_view(OP, d, &Layout::contiguous(dst_shape))?;
        check_dim(OP, dim, dst_shape)?;
        let mut expected = dst_shape.to_vec();
        expected[dim] = ids_layout.numel();
        same_shape(OP, &expected, src_layout.shape())?;
        let size = dst_shape[dim];
        self.check_ids(OP, i, ids_layout, size, dst_shape)?;
        let n = src_layout.numel() as u64;
        if n == 0 {
            return Ok(());
        }
        let dst_strides = dense_strides(dst_shape);
        let ix = StridedIndex::<2>::unmerged(
            OP,
            src_layout.shape(),
            [
                View::of(src_layout),
                View {
                    strides: &dst_strides,
                    offset: 0,
                },
            ],
        )?;
        let ids_ix = StridedIndex::<1>::new(OP, ids_layout.shape(), [View::of(ids_layout)])?;
        let (dim32, ip, sp, dp, size64) = (dim as u32, i.ptr, s.ptr, d.ptr, size as u64);
        let name = format!("index_add_{}", sfx(d.dtype));
        let grid = grid_for(n, BLOCK, self.gpu.sm_count);
        self.with_flag(OP, size, dst_shape, |fp| {
            // SAFETY: params match index_add_*(Index<2>, u32, Index<1>, ids, src, dst, u64,
            // u64, flag); views checked; dst is dense with dst_shape; ids validated above
            // and bounds-checked again in the kernel.
            unsafe {
                self.launch(
                    &name,
                    [grid, 1, 1],
                    BLOCK,
                    0,
                    &kargs![ix, dim32, ids_ix, ip, sp, dp, n, size64, fp],
                )
            }
        })
    }

    fn gather(
        &self,
        src: &dyn BackendStorage,
        src_layout: &Layout,
        ids: &dyn BackendStorage,
        ids_layout: &Layout,
        dim: usize,
    ) -> Result<BoxStorage> {
        const OP: &str = "gather";
        self.gpu.enter()?;
        let (s, i) = (self.cuda(OP, src)?, self.cuda(OP, ids)?);
        ids_only(OP, i, ids_layout)?;
        self.check_view(OP, s, src_layout)?;
        self.check_view(OP, i, ids_layout)?;
        let (shape, ids_shape) = (src_layout.shape(), ids_layout.shape());
        check_dim(OP, dim, shape)?;
        if ids_shape.len() != shape.len() || (0..shape.len()).any(|d| d != dim && ids_shape[d] > shape[d]) {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: shape.to_vec(),
                rhs: ids_shape.to_vec(),
            });
        }
        let out = self.alloc(ids_layout.numel(), s.dtype)?;
        let size = shape[dim];
        if out.len == 0 {
            return Ok(Box::new(out));
        }
        let ix = StridedIndex::<2>::unmerged(
            OP,
            ids_shape,
            [
                View {
                    strides: src_layout.strides(),
                    offset: src_layout.offset(),
                },
                View::of(ids_layout),
            ],
        )?;
        let (dim32, ip, sp, dp, n, size64) = (dim as u32, i.ptr, s.ptr, out.ptr, out.len as u64, size as u64);
        let name = format!("gather_{}", bytes_sfx(s.dtype));
        let grid = grid_for(n, BLOCK, self.gpu.sm_count);
        self.with_flag(OP, size, shape, |fp| {
            // SAFETY: params match gather_b*(Index<2>, u32, ids, src, out, u64, u64, flag);
            // views checked; ids bounds-checked in the kernel; other coordinates are
            // within src because ids_shape[d] <= shape[d].
            unsafe {
                self.launch(
                    &name,
                    [grid, 1, 1],
                    BLOCK,
                    0,
                    &kargs![ix, dim32, ip, sp, dp, n, size64, fp],
                )
            }
        })?;
        Ok(Box::new(out))
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
        const OP: &str = "scatter_add";
        self.gpu.enter()?;
        let (i, s) = (self.cuda(OP, ids)?, self.cuda(OP, src)?);
        let d = self.cuda_mut(OP, dst)?;
        ids_only(OP, i, ids_layout)?;
        same_dtype(OP, d.dtype, s.dtype)?;
        float_only(OP, d.dtype, dst_shape)?;
        self.check_view(OP, i, ids_layout)?;
        self.check_view(OP, s, src_layout)?;
        self.check_view(OP, d, &Layout::contiguous(dst_shape))?;
        check_dim(OP, dim, dst_shape)?;
        let ids_shape = ids_layout.shape();
        same_shape(OP, ids_shape, src_layout.shape())?;
        if ids_shape.len() != dst_shape.len() || (0..dst_shape.len()).any(|k| k != dim && ids_shape[k] > dst_shape[k]) {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: dst_shape.to_vec(),
                rhs: ids_shape.to_vec(),
            });
        }
        let size = dst_shape[dim];
        self.check_ids(OP, i, ids_layout, size, dst_shape)?;
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
                View {
                    strides: &dst_strides,
                    offset: 0,
                },
            ],
        )?;
        let (dim32, ip, sp, dp, size64) = (dim as u32, i.ptr, s.ptr, d.ptr, size as u64);
        let name = format!("scatter_add_{}", sfx(d.dtype));
        let grid = grid_for(n, BLOCK, self.gpu.sm_count);
        self.with_flag(OP, size, dst_shape, |fp| {
            // SAFETY: params match scatter_add_*(Index<3>, u32, ids, src, dst, u64, u64,
            // flag); views checked; dst dense with dst_shape and ids_shape[k] <=
            // dst_shape[k] off `dim`; ids validated above and in the kernel.
            unsafe {
                self.launch(
                    &name,
                    [grid, 1, 1],
                    BLOCK,
                    0,
                    &kargs![ix, dim32, ip, sp, dp, n, size64, fp],
                )
            }
        })
    }

    fn synchronize(&self) -> Result<()> {
        self.gpu.enter()?;
        self.gpu.sync()
    }

    fn softmax_last(&self, src: &dyn BackendStorage, layout: &Layout) -> Result<BoxStorage> {
        self.softmax_forward("softmax_last", src, layout, 0)
    }

    fn log_softmax_last(&self, src: &dyn BackendStorage, layout: &Layout) -> Result<BoxStorage> {
        self.softmax_forward("log_softmax_last", src, layout, 1)
    }

    fn softmax_last_backward(
        &self,
        y: &dyn BackendStorage,
        dy: &dyn BackendStorage,
        shape: &[usize],
    ) -> Result<BoxStorage> {
        self.softmax_backward("softmax_last_backward", y, dy, shape, 0)
    }

    fn log_softmax_last_backward(
        &self,
        y: &dyn BackendStorage,
        dy: &dyn BackendStorage,
        shape: &[usize],
    ) -> Result<BoxStorage> {
        self.softmax_backward("log_softmax_last_backward", y, dy, shape, 1)
    }

    fn moments_last(&self, src: &dyn BackendStorage, layout: &Layout) -> Result<(BoxStorage, BoxStorage)> {
        const OP: &str = "moments_last";
        self.gpu.enter()?;
        let s = self.cuda(OP, src)?;
        self.check_view(OP, s, layout)?;
        float_only(OP, s.dtype, layout.shape())?;
        let n_stat = numel(&reduced_last(layout.shape()));
        let (mean, var) = (self.alloc(n_stat, s.dtype)?, self.alloc(n_stat, s.dtype)?);
        if n_stat > 0 {
            let (rows, cs, n_rows, n_cols) = rows_of(OP, layout)?;
            let (warp, grid, block) = self.row_config(n_rows, n_cols);
            let (xp, mp, vp) = (s.ptr, mean.ptr, var.ptr);
            let name = format!("moments_{}", sfx(s.dtype));
            // SAFETY: params match moments_*(Index<1>, u64, x, mean, var, u64, u64, u32);
            // view checked; mean/var hold n_rows elements.
            unsafe {
                self.launch(
                    &name,
                    [grid, 1, 1],
                    block,
                    0,
                    &kargs![rows, cs, xp, mp, vp, n_rows, n_cols, warp],
                )?;
            }
        }
        Ok((Box::new(mean), Box::new(var)))
    }
}

/// Host-side tests on a driverless backend: every op is planned and "launched", so
/// kernel names, argument counts and argument sizes are checked against the PTX
/// signatures, and the validation paths run, all without a GPU.
#[cfg(test)]
mod dry_run_tests {
    use super::*;
    use crate::testing::force_wide_gemm;

    fn put(b: &CudaBackend, n: usize, dtype: DType) -> BoxStorage {
        b.from_host(&HostData::from_f64(vec![0.0; n], dtype)).unwrap()
    }

    fn transposed(shape: &[usize]) -> Layout {
        let r = shape.len();
        let rev: Vec<usize> = shape.iter().rev().copied().collect();
        Layout::contiguous(&rev)
            .permute(&(0..r).rev().collect::<Vec<_>>())
            .unwrap()
    }

    #[test]
    fn every_elementwise_and_copy_kernel_matches_its_call_site() {
        let b = CudaBackend::without_driver(crate::driver::Mode::DryRun, 0);
        let shape = [4usize, 5, 6];
        let dense = Layout::contiguous(&shape);
        let bcast = Layout::contiguous(&[4, 1, 6]).broadcast_to(&shape).unwrap();
        for dtype in [DType::F32, DType::F64] {
            let x = put(&b, 120, dtype);
            for op in [
                UnaryOp::Neg,
                UnaryOp::GeluTanhGrad,
                UnaryOp::Affine(2.0, 1.0),
                UnaryOp::Powf(0.5),
                UnaryOp::MinScalar(1.0),
            ] {
                b.unary(op, &*x, &dense).unwrap();
                b.unary(op, &*x, &transposed(&shape)).unwrap();
            }
            for op in [BinaryOp::Add, BinaryOp::Ge] {
                b.binary(op, &*x, &dense, &*x, &bcast).unwrap();
            }
            for cond in [DType::F32, DType::F64, DType::I64] {
                let c = put(&b, 120, cond);
                b.where_cond(&*c, &bcast, &*x, &dense, &*x, &transposed(&shape))
                    .unwrap();
            }
        }
        for from in [DType::F32, DType::F64, DType::I64] {
            let x = put(&b, 120, from);
            for to in [DType::F32, DType::F64, DType::I64] {
                assert_eq!(b.cast(&*x, &transposed(&shape), to).unwrap().dtype(), to);
            }
            let mut y = put(&b, 120, from);
            b.copy_strided(&*x, &transposed(&shape), &mut *y, &dense).unwrap();
            b.copy_strided(&*x, &dense, &mut *y, &dense).unwrap();
            b.to_host(&*x, &transposed(&shape)).unwrap();
            b.zeros(7, from).unwrap();
        }
    }

    #[test]
    fn reductions_and_row_kernels_match_their_call_sites() {
        let b = CudaBackend::without_driver(crate::driver::Mode::DryRun, 0);
        for dtype in [DType::F32, DType::F64] {
            for (shape, axes) in [
                (&[4usize, 50, 6][..], &[1usize][..]),
                (&[4, 50, 6], &[0, 2]),
                (&[3, 70_000], &[1]),
                (&[70_000, 3], &[0]),
                (&[1000, 1000], &[0, 1]),
                (&[], &[]),
            ] {
                let n = shape.iter().product();
                let x = put(&b, n, dtype);
                for op in [ReduceOp::Sum, ReduceOp::Max] {
                    b.reduce(op, &*x, &Layout::contiguous(shape), axes).unwrap();
                }
            }
            for shape in [&[4usize, 7][..], &[2, 3000], &[]] {
                let n = shape.iter().product();
                let x = put(&b, n, dtype);
                let l = transposed(shape);
                b.softmax_last(&*x, &l).unwrap();
                b.log_softmax_last(&*x, &l).unwrap();
                b.softmax_last_backward(&*x, &*x, shape).unwrap();
                b.log_softmax_last_backward(&*x, &*x, shape).unwrap();
                b.moments_last(&*x, &l).unwrap();
            }
        }
        let x = put(&b, 0, DType::F32);
        assert!(b
            .reduce(ReduceOp::Max, &*x, &Layout::contiguous(&[3, 0]), &[1])
            .is_err());
        b.reduce(ReduceOp::Sum, &*x, &Layout::contiguous(&[3, 0]), &[1])
            .unwrap();
    }

    #[test]
    fn every_gemm_variant_matches_its_call_site() {
        let b = CudaBackend::without_driver(crate::driver::Mode::DryRun, 0);
        for dtype in [DType::F32, DType::F64] {
            for (batch, m, k, n) in [
                (1usize, 2048usize, 32usize, 2048usize),
                (3, 17, 33, 9),
                (2, 0, 3, 4),
                (2, 3, 0, 4),
            ] {
                let a = put(&b, batch * m * k, dtype);
                let w = put(&b, k * n, dtype);
                let ll = Layout::contiguous(&[batch, m, k]);
                let rl = Layout::contiguous(&[k, n]).broadcast_to(&[batch, k, n]).unwrap();
                for wide in [false, true] {
                    force_wide_gemm(wide);
                    let c = b.matmul(&*a, &ll, &*w, &rl).unwrap();
                    assert_eq!(c.len(), batch * m * n);
                }
                force_wide_gemm(false);
            }
        }
        let a = put(&b, 6, DType::F32);
        assert!(b
            .matmul(&*a, &Layout::contiguous(&[2, 3]), &*a, &Layout::contiguous(&[2, 3]))
            .is_err());
    }

    #[test]
    fn index_kernels_match_their_call_sites() {
        let b = CudaBackend::without_driver(crate::driver::Mode::DryRun, 0);
        let shape = [6usize, 5, 4];
        let ids = put(&b, 6, DType::I64);
        let il = transposed(&[3, 2]);
        for dtype in [DType::F32, DType::F64, DType::I64] {
            let src = put(&b, 120, dtype);
            for dim in 0..3 {
                let mut out = shape.to_vec();
                out[dim] = 6;
                b.index_select(&*src, &transposed(&shape), &*ids, &il, dim).unwrap();
                let mut gshape = shape.to_vec();
                gshape[dim] = 3;
                let gn = gshape.iter().product();
                let gids = put(&b, gn, DType::I64);
                let gl = Layout::contiguous(&gshape);
                b.gather(&*src, &transposed(&shape), &*gids, &gl, dim).unwrap();
                if dtype == DType::I64 {
                    assert!(b
                        .index_add(
                            &mut *put(&b, 120, dtype),
                            &shape,
                            dim,
                            &*ids,
                            &il,
                            &*src,
                            &Layout::contiguous(&out)
                        )
                        .is_err());
                    continue;
                }
                let add = put(&b, out.iter().product(), dtype);
                let mut dst = put(&b, 120, dtype);
                b.index_add(&mut *dst, &shape, dim, &*ids, &il, &*add, &Layout::contiguous(&out))
                    .unwrap();
                let sadd = put(&b, gn, dtype);
                b.scatter_add(&mut *dst, &shape, dim, &*gids, &gl, &*sadd, &gl).unwrap();
            }
        }
        // Float ids and out-of-bounds views are rejected before any launch.
        let f = put(&b, 6, DType::F32);
        assert!(b
            .index_select(&*f, &Layout::contiguous(&[6]), &*f, &Layout::contiguous(&[6]), 0)
            .is_err());
        assert!(b.unary(UnaryOp::Exp, &*f, &Layout::new(&[2, 3], &[3, 1], 1)).is_err());
    }

    #[test]
    fn the_cache_serves_repeated_sizes() {
        let b = CudaBackend::without_driver(crate::driver::Mode::DryRun, 0);
        let before = b.gpu().memory_stats();
        for _ in 0..10 {
            let x = put(&b, 1000, DType::F32);
            drop(b.unary(UnaryOp::Exp, &*x, &Layout::contiguous(&[1000])).unwrap());
        }
        let after = b.gpu().memory_stats();
        assert_eq!(after.driver_allocs - before.driver_allocs, 2, "{after:?}");
        assert_eq!(after.reuses - before.reuses, 18);
        b.gpu().empty_cache().unwrap();
        assert_eq!(b.gpu().memory_stats().cached_bytes, 0);
    }
}
