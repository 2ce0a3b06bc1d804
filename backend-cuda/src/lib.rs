//! NVIDIA GPU backend for unigrad.
//!
//! Implements `unigrad_core::backend::Backend` on the CUDA *driver* API, with
//! kernels written in CUDA C (`kernels/*.cu`) and shipped as PTX, so that:
//!
//! * **building needs no CUDA toolkit**: the PTX is generated once by the pinned
//!   nvcc 13.0 (`scripts/cuda/install-nvcc.sh`, `scripts/cuda/regen-ptx.sh`),
//!   committed, and embedded; `build.rs` only re-checks it when an nvcc is around;
//! * **running needs only the NVIDIA driver** (R580+, CUDA 13.0, for PTX ISA 9.0):
//!   the driver JIT-compiles the PTX for whatever GPU it finds (compute
//!   capability 7.5 or newer);
//! * **everything is behind the `cuda` feature**: without it this crate is empty,
//!   so a plain `cargo test --workspace` needs neither CUDA nor a stub library.
//!
//! ```no_run
//! # #[cfg(feature = "cuda")] {
//! let device = unigrad_cuda::cuda(0)?; // a unigrad_core::Device, like unigrad_cpu::cpu()
//! # }
//! # Ok::<(), unigrad_core::Error>(())
//! ```
//!
//! Design, in short (each module documents its part): one primary context and one
//! stream per device, so every operation is ordered after the previous one and the
//! host only waits when it reads data back; a caching allocator so a training loop
//! does not call `cuMemAlloc` per op; shapes and strides passed to kernels by value
//! after merging dimensions, so dense tensors take the cheapest path and any
//! strided view (transposes, broadcasts, narrows) is read in place; fused kernels
//! for softmax and log-softmax (forward and backward), row moments, LayerNorm /
//! RMSNorm (forward and backward) and the Adam / AdamW update.
//!
//! Layout: one name per op family (elementwise, reduce, matmul, view, index,
//! softmax, norm, optim) at every layer: the launches in `src/ops/<family>.rs`, the
//! CUDA C in `kernels/<family>.cu`, like core's `ops/<family>.rs` and the CPU
//! backend's `kernels/<family>.rs`. `src/backend.rs` holds the shared validation and
//! the `Backend` impl that dispatches to the families; [`ptx`] embeds and loads the
//! PTX.
#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

#[cfg(feature = "cuda")]
mod alloc;
#[cfg(feature = "cuda")]
mod backend;
#[cfg(feature = "cuda")]
mod driver;
#[cfg(feature = "cuda")]
mod ffi;
#[cfg(feature = "cuda")]
mod ops;
#[cfg(feature = "cuda")]
mod plan;
#[cfg(feature = "cuda")]
pub mod ptx;
#[cfg(feature = "cuda")]
mod storage;

#[cfg(feature = "cuda")]
pub use alloc::MemoryStats;
#[cfg(feature = "cuda")]
pub use api::{
    cuda, device_info, empty_cache, is_available, memory_stats, set_wide_gemm, skip_reason, try_device, DeviceInfo,
};

/// Environment variable that, with the `emulator` feature, makes [`cuda`] return the
/// CPU kernel emulator instead of a GPU (for testing the backend without one).
#[cfg(feature = "emulator")]
pub const EMULATOR_ENV: &str = "UNIGRAD_CUDA_EMULATOR";

#[cfg(feature = "cuda")]
mod api {
    use crate::alloc::MemoryStats;
    use crate::backend::CudaBackend;
    use std::sync::{Arc, Mutex};
    use unigrad_core::{Device, Result};

    /// One backend per device ordinal, created on first use and kept for the life of
    /// the process, so every `cuda(n)` shares one context, stream, allocator and set
    /// of loaded kernels.
    static BACKENDS: Mutex<Vec<Option<Arc<CudaBackend>>>> = Mutex::new(Vec::new());

    /// With the `emulator` feature, `UNIGRAD_CUDA_EMULATOR=1` turns every CUDA device of
    /// the process into the CPU kernel emulator (see `emu/emu.cpp`).
    #[cfg(feature = "emulator")]
    fn emulated() -> bool {
        std::env::var_os(crate::EMULATOR_ENV).is_some_and(|v| !v.is_empty() && v != "0")
    }
    #[cfg(not(feature = "emulator"))]
    fn emulated() -> bool {
        false
    }

    fn backend(ordinal: usize) -> Result<Arc<CudaBackend>> {
        let mut all = BACKENDS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(Some(b)) = all.get(ordinal) {
            return Ok(b.clone());
        }
        #[cfg(feature = "emulator")]
        let b = Arc::new(if emulated() {
            CudaBackend::without_driver(crate::driver::Mode::Emulated, ordinal)
        } else {
            CudaBackend::new(ordinal)?
        });
        #[cfg(not(feature = "emulator"))]
        let b = Arc::new(CudaBackend::new(ordinal)?);
        if all.len() <= ordinal {
            all.resize(ordinal + 1, None);
        }
        all[ordinal] = Some(b.clone());
        Ok(b)
    }

    /// The backend behind `device`, if it is a CUDA device of this process.
    fn of(device: &Device) -> Option<Arc<CudaBackend>> {
        let ordinal: usize = device.name().strip_prefix("cuda:")?.parse().ok()?;
        let all = BACKENDS.lock().unwrap_or_else(|e| e.into_inner());
        all.get(ordinal).cloned().flatten()
    }

    /// The GPU with the given ordinal as a unigrad [`Device`] named `cuda:<ordinal>`.
    ///
    /// The first call per ordinal initialises the driver, retains the device's
    /// primary context, creates its stream and JIT-loads the kernels (the driver
    /// caches the compiled code, so only the very first run on a machine is slow);
    /// later calls return the same device.
    ///
    /// # Errors
    /// [`unigrad_core::Error::Backend`] with device `cuda:<ordinal>` and a message
    /// carrying the driver's error name, e.g. `CUDA_ERROR_NO_DEVICE` or
    /// `CUDA_ERROR_STUB_LIBRARY` (no driver, only the build stub); for PTX the driver
    /// cannot load, the message names the PTX `.version` and the driver's CUDA version.
    pub fn cuda(ordinal: usize) -> Result<Device> {
        Ok(Device::new(backend(ordinal)?))
    }

    /// Whether a CUDA driver and at least one device answer: `Ok(())`, or a sentence
    /// saying why not.
    ///
    /// Probes with the raw driver calls `cuInit` and `cuDeviceGetCount` (through
    /// `cust::sys`), so the real code is visible: 34 (`CUDA_ERROR_STUB_LIBRARY`)
    /// means the build stub was loaded instead of a driver, 100
    /// (`CUDA_ERROR_NO_DEVICE`) a driver without a usable GPU. Cheap and creates no
    /// context; tests use it to decide whether to skip. With the `emulator` feature
    /// and `UNIGRAD_CUDA_EMULATOR=1` it always succeeds.
    pub fn is_available() -> std::result::Result<(), String> {
        if emulated() {
            return Ok(());
        }
        // SAFETY: cuInit may be called any number of times from any thread. The
        // driver returns codes cust_raw's enum declares (0, 34, 100, 999, ...).
        let code = unsafe { cust::sys::cuInit(0) } as i32;
        let mut count = 0i32;
        let count_code = if code == 0 {
            // SAFETY: writes one int; the driver is initialised.
            unsafe { cust::sys::cuDeviceGetCount(&mut count) as i32 }
        } else {
            code
        };
        match (code, count_code) {
            (0, 0) if count > 0 => Ok(()),
            (0, 0) => Err("the CUDA driver reports 0 devices".into()),
            (34, _) => Err(
                "libcuda.so.1 is a stub library (CUDA_ERROR_STUB_LIBRARY = 34): no NVIDIA driver on this machine"
                    .into(),
            ),
            (100, _) | (_, 100) => Err("no CUDA-capable device (CUDA_ERROR_NO_DEVICE = 100)".into()),
            (c, d) => Err(format!(
                "CUDA driver unusable: cuInit = {c} ({}), cuDeviceGetCount = {d}",
                crate::driver::error_name(c)
            )),
        }
    }

    /// True when `CUDA_REQUIRE_GPU` is set to anything but `0` (how GPU machines run
    /// the tests: a missing GPU must fail them, not skip them).
    fn gpu_required() -> bool {
        std::env::var_os("CUDA_REQUIRE_GPU").is_some_and(|v| !v.is_empty() && v != "0")
    }

    /// Device `cuda:0` for test suites: `Some` when a GPU answers, `None` when tests
    /// should be skipped (see [`skip_reason`]).
    ///
    /// # Panics
    /// When a GPU answers but cannot be opened (a real failure, e.g. PTX the driver
    /// rejects), and when no GPU answers while `CUDA_REQUIRE_GPU=1` is set.
    pub fn try_device() -> Option<Device> {
        match is_available() {
            Ok(()) => Some(cuda(0).unwrap_or_else(|e| panic!("a CUDA device answers but cuda(0) failed: {e}"))),
            Err(why) if gpu_required() => panic!("CUDA_REQUIRE_GPU is set but {why}"),
            Err(_) => None,
        }
    }

    /// Why [`try_device`] gives `None`, for `SKIPPED <test>: <reason>` lines (empty
    /// when a GPU answers).
    pub fn skip_reason() -> String {
        is_available().err().unwrap_or_default()
    }

    /// What the driver says about a CUDA device of this process.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct DeviceInfo {
        /// `cuda:<ordinal>`.
        pub name: String,
        /// Product name, e.g. `NVIDIA H100 80GB HBM3`.
        pub product: String,
        /// Compute capability (major, minor).
        pub compute_capability: (i32, i32),
        /// Number of streaming multiprocessors.
        pub sm_count: u32,
        /// CUDA version of the installed driver, e.g. `13.0`.
        pub driver_cuda_version: String,
    }

    /// Driver facts about `device`, or `None` if it is not a CUDA device made by [`cuda`].
    pub fn device_info(device: &Device) -> Option<DeviceInfo> {
        let b = of(device)?;
        let gpu = b.gpu();
        Some(DeviceInfo {
            name: gpu.name.clone(),
            product: gpu.product.clone(),
            compute_capability: gpu.compute_capability,
            sm_count: gpu.sm_count,
            driver_cuda_version: crate::driver::driver_version(),
        })
    }

    /// The caching allocator's counters for `device`, or `None` if it is not a CUDA
    /// device made by [`cuda`].
    pub fn memory_stats(device: &Device) -> Option<MemoryStats> {
        Some(of(device)?.gpu().memory_stats())
    }

    /// Make `matmul` on `device` always use its 64-bit-index GEMM kernels (`on`), or
    /// go back to choosing by size (`!on`, the default). The 64-bit kernels are
    /// normally taken only for matrices whose element offsets exceed 32 bits (tens
    /// of GiB); forcing them lets tests and benchmarks check them on ordinary sizes.
    /// They are slower, never less exact. A no-op for non-CUDA devices.
    pub fn set_wide_gemm(device: &Device, on: bool) {
        if let Some(b) = of(device) {
            b.set_wide_gemm(on);
        }
    }

    /// Wait for queued work, then give every cached (unused) block of `device` back
    /// to the driver. Memory held by live tensors is untouched. A no-op for
    /// non-CUDA devices.
    pub fn empty_cache(device: &Device) -> Result<()> {
        match of(device) {
            Some(b) => b.gpu().empty_cache(),
            None => Ok(()),
        }
    }
}
