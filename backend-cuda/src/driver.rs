//! One GPU: its primary context, its stream, its memory, and error reporting.
//!
//! Everything the backend does on a device goes through [`Gpu`]:
//! * **Context.** The device's *primary* context (the one the CUDA runtime and
//!   libraries such as cuBLAS use too) is retained once. A context is current per
//!   host thread, and the backend may be called from any thread, so every entry
//!   point calls [`Gpu::enter`] first (`cuCtxSetCurrent`, a thread-local store).
//! * **Stream.** All work is queued on one stream created with `CU_STREAM_DEFAULT`
//!   (blocking), so it is also ordered with anything on the legacy default stream.
//!   One stream means every kernel, copy and memset is ordered after the previous
//!   one: a buffer dropped by the host and handed to the next op cannot be
//!   overwritten while an earlier kernel still reads it.
//! * **Memory.** Blocks come from the caching allocator ([`crate::alloc`]); the
//!   driver is asked only on a cache miss, and the cache is flushed (after a
//!   stream sync) and the allocation retried when the driver reports out-of-memory.
//! * **Errors.** Driver codes become [`Error::Backend`] messages carrying the
//!   driver's name for the code (`CUDA_ERROR_OUT_OF_MEMORY`), its description, and
//!   what was being done.

use crate::alloc::{bucket, MemoryStats, Pool};
use crate::ffi::{self, CUcontext, CUdevice, CUresult, CUstream};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::{Mutex, MutexGuard};
use unigrad_core::{Error, Result};

/// The driver's name for `code`, e.g. `CUDA_ERROR_NO_DEVICE`.
pub(crate) fn error_name(code: CUresult) -> String {
    let mut p: *const c_char = std::ptr::null();
    // SAFETY: cuGetErrorName writes a pointer to a static string or fails; we read
    // it only on success and when non-null.
    let r = unsafe { ffi::cuGetErrorName(code, &mut p) };
    if r == ffi::CUDA_SUCCESS && !p.is_null() {
        // SAFETY: the driver returns a NUL-terminated static string.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    } else {
        format!("CUDA error {code}")
    }
}

/// `NAME (code): description` for a driver result code.
pub(crate) fn describe(code: CUresult) -> String {
    let mut p: *const c_char = std::ptr::null();
    // SAFETY: as in `error_name`.
    let r = unsafe { ffi::cuGetErrorString(code, &mut p) };
    let text = if r == ffi::CUDA_SUCCESS && !p.is_null() {
        // SAFETY: the driver returns a NUL-terminated static string.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    } else {
        "no description".to_owned()
    };
    format!("{} ({code}): {text}", error_name(code))
}

/// An [`Error::Backend`] for `device`.
pub(crate) fn backend_error(device: &str, msg: impl Into<String>) -> Error {
    Error::Backend {
        device: device.to_owned(),
        msg: msg.into(),
    }
}

/// `Ok(())` for `CUDA_SUCCESS`, else an [`Error::Backend`] saying what failed.
pub(crate) fn check(code: CUresult, device: &str, what: &str) -> Result<()> {
    if code == ffi::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(backend_error(device, format!("{what} failed: {}", describe(code))))
    }
}

/// The installed driver's CUDA version, e.g. `13.0`, or why it is unknown.
pub(crate) fn driver_version() -> String {
    let mut v: c_int = 0;
    // SAFETY: writes one int.
    match unsafe { ffi::cuDriverGetVersion(&mut v) } {
        ffi::CUDA_SUCCESS => format!("{}.{}", v / 1000, (v % 1000) / 10),
        code => format!("unknown ({})", error_name(code)),
    }
}

/// A retained primary context, its stream and its memory pool.
#[derive(Debug)]
pub(crate) struct Gpu {
    /// `cuda:N`.
    pub name: String,
    /// The driver's product name, e.g. `NVIDIA H100 80GB HBM3`.
    pub product: String,
    /// Number of streaming multiprocessors (sizes grids).
    pub sm_count: u32,
    /// Compute capability (major, minor).
    pub compute_capability: (i32, i32),
    device: CUdevice,
    ctx: CUcontext,
    stream: CUstream,
    pool: Mutex<Pool>,
    /// Where memory and launches go.
    mode: Mode,
}

/// Where the work of a [`Gpu`] goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(dead_code)] // DryRun exists only in unit tests, Emulated only with the `emulator` feature
pub(crate) enum Mode {
    /// The NVIDIA driver: the real thing.
    Driver,
    /// Nowhere: allocations get fake addresses, reads return zeros, launches are
    /// only checked against the kernels' signatures. Unit tests use it to run the
    /// host-side planning of every op on machines without a GPU.
    DryRun,
    /// The CPU kernel emulator (feature `emulator`, `emu/emu.cpp`): device memory is
    /// host memory and kernels run as CPU code, so whole ops can be checked without
    /// a GPU.
    Emulated,
}

/// Alignment of emulated device blocks (cuMemAlloc gives at least 256).
const EMU_ALIGN: usize = 256;

// SAFETY: the handles are plain driver handles. CUDA contexts, streams and device
// memory may be used from any host thread once the context is current there, which
// every entry point ensures with `enter`; the pool is behind a mutex.
unsafe impl Send for Gpu {}
// SAFETY: see `Send`; no method hands out interior references to unsynchronized state.
unsafe impl Sync for Gpu {}

impl Gpu {
    /// Initialise the driver and open device `ordinal`.
    pub(crate) fn open(ordinal: usize) -> Result<Gpu> {
        let name = format!("cuda:{ordinal}");
        // SAFETY: cuInit may be called any number of times.
        check(unsafe { ffi::cuInit(0) }, &name, "cuInit")?;
        let mut count: c_int = 0;
        // SAFETY: writes one int.
        check(unsafe { ffi::cuDeviceGetCount(&mut count) }, &name, "cuDeviceGetCount")?;
        if ordinal >= count.max(0) as usize {
            return Err(backend_error(
                &name,
                format!("no such device: the driver reports {count} CUDA device(s)"),
            ));
        }
        let mut device: CUdevice = 0;
        // SAFETY: writes one handle; the ordinal is in range.
        let code = unsafe { ffi::cuDeviceGet(&mut device, ordinal as c_int) };
        check(code, &name, "cuDeviceGet")?;
        let mut buf = [0 as c_char; 256];
        // SAFETY: the driver writes at most `len` bytes including the NUL.
        let code = unsafe { ffi::cuDeviceGetName(buf.as_mut_ptr(), buf.len() as c_int, device) };
        check(code, &name, "cuDeviceGetName")?;
        // SAFETY: NUL-terminated within `buf` (the driver guarantees it on success).
        let product = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned();
        let attr = |attribute: c_int, what: &str| -> Result<i32> {
            let mut v: c_int = 0;
            // SAFETY: writes one int.
            let code = unsafe { ffi::cuDeviceGetAttribute(&mut v, attribute, device) };
            check(code, &name, what)?;
            Ok(v)
        };
        let sm_count = attr(
            ffi::ATTR_MULTIPROCESSOR_COUNT,
            "cuDeviceGetAttribute(MULTIPROCESSOR_COUNT)",
        )?;
        let major = attr(ffi::ATTR_CC_MAJOR, "cuDeviceGetAttribute(COMPUTE_CAPABILITY_MAJOR)")?;
        let minor = attr(ffi::ATTR_CC_MINOR, "cuDeviceGetAttribute(COMPUTE_CAPABILITY_MINOR)")?;
        if major < 7 || (major == 7 && minor < 5) {
            return Err(backend_error(
                &name,
                format!("{product} has compute capability {major}.{minor}; the kernels need 7.5 or newer"),
            ));
        }
        let mut ctx: CUcontext = std::ptr::null_mut();
        // SAFETY: retains the primary context; released in Drop.
        let code = unsafe { ffi::cuDevicePrimaryCtxRetain(&mut ctx, device) };
        check(code, &name, "cuDevicePrimaryCtxRetain")?;
        let mut gpu = Gpu {
            name,
            product,
            sm_count: sm_count.max(1) as u32,
            compute_capability: (major, minor),
            device,
            ctx,
            stream: std::ptr::null_mut(),
            pool: Mutex::new(Pool::default()),
            mode: Mode::Driver,
        };
        gpu.enter()?;
        let mut stream: CUstream = std::ptr::null_mut();
        // SAFETY: the context is current; the stream is destroyed in Drop.
        let code = unsafe { ffi::cuStreamCreate(&mut stream, ffi::CU_STREAM_DEFAULT) };
        check(code, &gpu.name, "cuStreamCreate")?;
        gpu.stream = stream;
        Ok(gpu)
    }

    /// A driverless stand-in ([`Mode::DryRun`] or [`Mode::Emulated`]) named `cuda:<ordinal>`.
    #[cfg(any(test, feature = "emulator"))]
    pub(crate) fn without_driver(mode: Mode, ordinal: usize) -> Gpu {
        let (product, sm_count) = match mode {
            // A small SM count keeps emulated grids small while still exercising
            // the split reductions and both GEMM tile sizes.
            Mode::Emulated => ("unigrad kernel emulator (CPU)", 2),
            _ => ("dry run", 132),
        };
        Gpu {
            name: format!("cuda:{ordinal}"),
            product: product.into(),
            sm_count,
            compute_capability: (9, 0),
            device: 0,
            ctx: std::ptr::null_mut(),
            stream: std::ptr::null_mut(),
            pool: Mutex::new(Pool::default()),
            mode,
        }
    }

    /// Where memory and launches go.
    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// Make this device's context current on the calling thread.
    pub(crate) fn enter(&self) -> Result<()> {
        if self.mode != Mode::Driver {
            return Ok(());
        }
        // SAFETY: `ctx` is a retained primary context, valid until Drop.
        check(unsafe { ffi::cuCtxSetCurrent(self.ctx) }, &self.name, "cuCtxSetCurrent")
    }

    /// The stream all work is queued on.
    pub(crate) fn stream(&self) -> CUstream {
        self.stream
    }

    /// Wait until all queued work has finished; reports asynchronous kernel faults.
    pub(crate) fn sync(&self) -> Result<()> {
        if self.mode != Mode::Driver {
            return Ok(());
        }
        // SAFETY: a live stream of the current context.
        check(
            unsafe { ffi::cuStreamSynchronize(self.stream) },
            &self.name,
            "cuStreamSynchronize",
        )
    }

    fn pool(&self) -> MutexGuard<'_, Pool> {
        // A panic while holding the lock cannot leave the pool inconsistent (each
        // method updates it in one step), so a poisoned lock is still usable.
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A block of at least `bytes` bytes (`bytes > 0`): `(address, bucket size)`.
    /// The context must be current.
    pub(crate) fn alloc(&self, bytes: usize) -> Result<(u64, usize)> {
        let size = bucket(bytes);
        if let Some(ptr) = self.pool().take(size) {
            return Ok((ptr, size));
        }
        let mut ptr = 0u64;
        match self.mode {
            Mode::Driver => {}
            Mode::DryRun => {
                // Distinct, aligned fake addresses.
                let mut pool = self.pool();
                pool.note_driver_alloc(size);
                return Ok((0x1000 * (pool.stats().driver_allocs + 1), size));
            }
            Mode::Emulated => {
                let layout = std::alloc::Layout::from_size_align(size, EMU_ALIGN)
                    .map_err(|e| backend_error(&self.name, format!("emulated allocation of {size} bytes: {e}")))?;
                // SAFETY: `layout` has a non-zero size (buckets are >= 512 bytes).
                let p = unsafe { std::alloc::alloc(layout) };
                if p.is_null() {
                    return Err(backend_error(
                        &self.name,
                        format!("emulated allocation of {size} bytes failed"),
                    ));
                }
                self.pool().note_driver_alloc(size);
                return Ok((p as u64, size));
            }
        }
        // SAFETY: writes one device address; the context is current.
        let mut code = unsafe { ffi::cuMemAlloc_v2(&mut ptr, size) };
        if code == ffi::CUDA_ERROR_OUT_OF_MEMORY {
            // Give the cached blocks back and try once more.
            self.empty_cache()?;
            // SAFETY: as above.
            code = unsafe { ffi::cuMemAlloc_v2(&mut ptr, size) };
        }
        if code != ffi::CUDA_SUCCESS {
            let stats = self.pool().stats();
            let mut free = 0usize;
            let mut total = 0usize;
            // SAFETY: writes two sizes.
            let info = unsafe { ffi::cuMemGetInfo_v2(&mut free, &mut total) };
            let device_mem = if info == ffi::CUDA_SUCCESS {
                format!("; device: {} MiB free of {} MiB", free >> 20, total >> 20)
            } else {
                String::new()
            };
            return Err(backend_error(
                &self.name,
                format!(
                    "cuMemAlloc of {bytes} bytes (bucket {size}) failed: {}; this process holds {} MiB in tensors{device_mem}",
                    describe(code),
                    stats.in_use_bytes >> 20
                ),
            ));
        }
        self.pool().note_driver_alloc(size);
        Ok((ptr, size))
    }

    /// Return a block to the cache (no driver call, so it is safe in `Drop`).
    pub(crate) fn release(&self, ptr: u64, bucket: usize) {
        self.pool().put(ptr, bucket);
    }

    /// Free every cached block with the driver, after the queued work is done.
    pub(crate) fn empty_cache(&self) -> Result<()> {
        self.enter()?;
        self.sync()?;
        let blocks = self.pool().drain();
        match self.mode {
            Mode::Driver => {}
            Mode::DryRun => return Ok(()),
            Mode::Emulated => {
                for (ptr, size) in blocks {
                    // SAFETY: allocated by `alloc` in emulated mode with this size and
                    // alignment, and owned by no storage any more.
                    unsafe {
                        std::alloc::dealloc(
                            ptr as *mut u8,
                            std::alloc::Layout::from_size_align_unchecked(size, EMU_ALIGN),
                        )
                    };
                }
                return Ok(());
            }
        }
        let mut first_error = Ok(());
        for (ptr, _) in blocks {
            // SAFETY: each block came from cuMemAlloc and is owned by no storage.
            let code = unsafe { ffi::cuMemFree_v2(ptr) };
            if first_error.is_ok() {
                first_error = check(code, &self.name, "cuMemFree");
            }
        }
        first_error
    }

    /// The allocator's counters.
    pub(crate) fn memory_stats(&self) -> MemoryStats {
        self.pool().stats()
    }

    /// `cuMemsetD8Async` of `bytes` bytes at `ptr` on the stream.
    pub(crate) fn memset_zero(&self, ptr: u64, bytes: usize) -> Result<()> {
        match self.mode {
            Mode::Driver => {}
            Mode::DryRun => return Ok(()),
            Mode::Emulated => {
                // SAFETY: the caller owns `bytes` bytes at `ptr` (host memory here).
                unsafe { std::ptr::write_bytes(ptr as *mut u8, 0, bytes) };
                return Ok(());
            }
        }
        // SAFETY: the caller passes a block it owns of at least `bytes` bytes.
        check(
            unsafe { ffi::cuMemsetD8Async(ptr, 0, bytes, self.stream) },
            &self.name,
            "cuMemsetD8Async",
        )
    }

    /// Copy host bytes to device memory, ordered on the stream.
    ///
    /// # Safety
    /// `dst` must be a device block of at least `src.len()` bytes.
    pub(crate) unsafe fn upload(&self, dst: u64, src: &[u8]) -> Result<()> {
        match self.mode {
            _ if src.is_empty() => return Ok(()),
            Mode::Driver => {}
            Mode::DryRun => return Ok(()),
            Mode::Emulated => {
                std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len());
                return Ok(());
            }
        }
        // With pageable host memory the driver stages the bytes before returning,
        // so `src` may be dropped right after.
        check(
            ffi::cuMemcpyHtoDAsync_v2(dst, src.as_ptr() as *const c_void, src.len(), self.stream),
            &self.name,
            "cuMemcpyHtoDAsync",
        )
    }

    /// Copy device memory to the host after all queued work, and wait for it.
    ///
    /// # Safety
    /// `src` must be a device block with at least `dst.len()` readable bytes.
    pub(crate) unsafe fn download(&self, dst: &mut [u8], src: u64) -> Result<()> {
        if dst.is_empty() {
            return Ok(());
        }
        match self.mode {
            Mode::Driver => {}
            Mode::DryRun => {
                dst.fill(0);
                return Ok(());
            }
            Mode::Emulated => {
                std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len());
                return Ok(());
            }
        }
        check(
            ffi::cuMemcpyDtoHAsync_v2(dst.as_mut_ptr() as *mut c_void, src, dst.len(), self.stream),
            &self.name,
            "cuMemcpyDtoHAsync",
        )?;
        self.sync()
    }

    /// Device-to-device copy on the stream.
    ///
    /// # Safety
    /// Both ranges must lie inside live device blocks.
    pub(crate) unsafe fn copy_d2d(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        match self.mode {
            _ if bytes == 0 => return Ok(()),
            Mode::Driver => {}
            Mode::DryRun => return Ok(()),
            Mode::Emulated => {
                std::ptr::copy(src as *const u8, dst as *mut u8, bytes);
                return Ok(());
            }
        }
        check(
            ffi::cuMemcpyDtoDAsync_v2(dst, src, bytes, self.stream),
            &self.name,
            "cuMemcpyDtoDAsync",
        )
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        if self.mode != Mode::Driver {
            let _ = self.empty_cache();
            return;
        }
        // Nothing can be reported from Drop: errors are ignored (the process is
        // usually exiting, or the context is already unusable).
        if self.enter().is_ok() {
            let _ = self.empty_cache();
            if !self.stream.is_null() {
                // SAFETY: the stream belongs to this context and is no longer used.
                unsafe { ffi::cuStreamDestroy_v2(self.stream) };
            }
        }
        // SAFETY: balances the retain in `open`.
        unsafe { ffi::cuDevicePrimaryCtxRelease_v2(self.device) };
    }
}
