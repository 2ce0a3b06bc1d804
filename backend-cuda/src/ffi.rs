//! The few CUDA driver API entry points this backend calls, declared here with
//! `c_int` results.
//!
//! Why not `cust::sys` (cust_raw 0.11)? Its `CUresult` is a Rust `enum` generated from
//! CUDA 11.4 headers. Newer drivers return codes that enum does not have, and a
//! Rust enum holding an undeclared value is undefined behaviour. With a plain
//! integer every code is representable, and [`crate::driver`] turns it into the
//! driver's own error name (`cuGetErrorName`), which cust would fold into
//! `UnknownError`. cust still provides the linking (its build script finds libcuda
//! via `CUDA_LIBRARY_PATH`) and the probe in [`crate::is_available`].
//!
//! Every symbol here is exported by CUDA 11.4 through 13.x drivers under this exact
//! name (the `_v2` names are the current ABI), and by `scripts/cuda/make-libcuda-stub.sh`.
#![allow(non_snake_case, non_camel_case_types)]

use std::ffi::{c_char, c_int, c_uchar, c_uint, c_void};

/// `CUresult`: 0 is success.
pub type CUresult = c_int;
/// Device ordinal handle.
pub type CUdevice = c_int;
/// Device address.
pub type CUdeviceptr = u64;
/// Opaque context handle.
pub type CUcontext = *mut c_void;
/// Opaque module handle.
pub type CUmodule = *mut c_void;
/// Opaque kernel handle.
pub type CUfunction = *mut c_void;
/// Opaque stream handle.
pub type CUstream = *mut c_void;

/// `CUDA_SUCCESS`.
pub const CUDA_SUCCESS: CUresult = 0;
/// `CUDA_ERROR_OUT_OF_MEMORY`.
pub const CUDA_ERROR_OUT_OF_MEMORY: CUresult = 2;
/// `CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT`.
pub const ATTR_MULTIPROCESSOR_COUNT: c_int = 16;
/// `CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR`.
pub const ATTR_CC_MAJOR: c_int = 75;
/// `CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR`.
pub const ATTR_CC_MINOR: c_int = 76;
/// `CU_JIT_ERROR_LOG_BUFFER`.
pub const CU_JIT_ERROR_LOG_BUFFER: c_int = 5;
/// `CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES`.
pub const CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES: c_int = 6;
/// `CU_STREAM_DEFAULT`: a blocking stream, ordered with the legacy default stream.
pub const CU_STREAM_DEFAULT: c_uint = 0;

extern "C" {
    pub fn cuInit(flags: c_uint) -> CUresult;
    pub fn cuDriverGetVersion(version: *mut c_int) -> CUresult;
    pub fn cuGetErrorName(error: CUresult, name: *mut *const c_char) -> CUresult;
    pub fn cuGetErrorString(error: CUresult, text: *mut *const c_char) -> CUresult;

    pub fn cuDeviceGetCount(count: *mut c_int) -> CUresult;
    pub fn cuDeviceGet(device: *mut CUdevice, ordinal: c_int) -> CUresult;
    pub fn cuDeviceGetName(name: *mut c_char, len: c_int, device: CUdevice) -> CUresult;
    pub fn cuDeviceGetAttribute(value: *mut c_int, attribute: c_int, device: CUdevice) -> CUresult;

    pub fn cuDevicePrimaryCtxRetain(ctx: *mut CUcontext, device: CUdevice) -> CUresult;
    pub fn cuDevicePrimaryCtxRelease_v2(device: CUdevice) -> CUresult;
    pub fn cuCtxSetCurrent(ctx: CUcontext) -> CUresult;

    pub fn cuStreamCreate(stream: *mut CUstream, flags: c_uint) -> CUresult;
    pub fn cuStreamDestroy_v2(stream: CUstream) -> CUresult;
    pub fn cuStreamSynchronize(stream: CUstream) -> CUresult;

    pub fn cuModuleLoadDataEx(
        module: *mut CUmodule,
        image: *const c_void,
        num_options: c_uint,
        options: *mut c_int,
        option_values: *mut *mut c_void,
    ) -> CUresult;
    pub fn cuModuleGetFunction(function: *mut CUfunction, module: CUmodule, name: *const c_char) -> CUresult;
    pub fn cuModuleUnload(module: CUmodule) -> CUresult;

    pub fn cuMemAlloc_v2(ptr: *mut CUdeviceptr, bytes: usize) -> CUresult;
    pub fn cuMemFree_v2(ptr: CUdeviceptr) -> CUresult;
    pub fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CUresult;
    pub fn cuMemcpyHtoDAsync_v2(dst: CUdeviceptr, src: *const c_void, bytes: usize, stream: CUstream) -> CUresult;
    pub fn cuMemcpyDtoHAsync_v2(dst: *mut c_void, src: CUdeviceptr, bytes: usize, stream: CUstream) -> CUresult;
    pub fn cuMemcpyDtoDAsync_v2(dst: CUdeviceptr, src: CUdeviceptr, bytes: usize, stream: CUstream) -> CUresult;
    pub fn cuMemsetD8Async(dst: CUdeviceptr, value: c_uchar, count: usize, stream: CUstream) -> CUresult;

    #[allow(clippy::too_many_arguments)]
    pub fn cuLaunchKernel(
        function: CUfunction,
        grid_x: c_uint,
        grid_y: c_uint,
        grid_z: c_uint,
        block_x: c_uint,
        block_y: c_uint,
        block_z: c_uint,
        shared_bytes: c_uint,
        stream: CUstream,
        params: *mut *mut c_void,
        extra: *mut *mut c_void,
    ) -> CUresult;
}
