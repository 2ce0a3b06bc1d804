//! Device memory owned by a tensor.

use crate::driver::Gpu;
use std::any::Any;
use std::fmt;
use std::sync::Arc;
use unigrad_core::backend::BackendStorage;
use unigrad_core::dtype::DType;

/// `len` elements of `dtype` in one block from the device's caching allocator.
/// Dropping it returns the block to the cache (no driver call, so dropping is cheap
/// and safe on any thread); the `Arc<Gpu>` keeps the context alive meanwhile.
pub(crate) struct CudaStorage {
    pub(crate) ptr: u64,
    pub(crate) len: usize,
    pub(crate) dtype: DType,
    bucket: usize,
    pub(crate) gpu: Arc<Gpu>,
}

impl CudaStorage {
    /// Uninitialised storage (the caller fills it before anyone reads it).
    pub(crate) fn alloc(gpu: &Arc<Gpu>, len: usize, dtype: DType) -> unigrad_core::Result<CudaStorage> {
        let bytes = len.checked_mul(dtype.size_in_bytes()).ok_or_else(|| {
            crate::driver::backend_error(&gpu.name, format!("{len} elements of {dtype} overflow usize"))
        })?;
        let (ptr, bucket) = if bytes == 0 { (0, 0) } else { gpu.alloc(bytes)? };
        Ok(CudaStorage {
            ptr,
            len,
            dtype,
            bucket,
            gpu: gpu.clone(),
        })
    }

    /// Size in bytes of the elements (not of the bucket).
    pub(crate) fn bytes(&self) -> usize {
        self.len * self.dtype.size_in_bytes()
    }

    /// Device address of element `i`.
    pub(crate) fn at(&self, i: usize) -> u64 {
        self.ptr + (i * self.dtype.size_in_bytes()) as u64
    }
}

impl Drop for CudaStorage {
    fn drop(&mut self) {
        if self.bucket > 0 {
            self.gpu.release(self.ptr, self.bucket);
        }
    }
}

impl fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CudaStorage({}, {} x {}, at {:#x})",
            self.gpu.name, self.len, self.dtype, self.ptr
        )
    }
}

impl BackendStorage for CudaStorage {
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn len(&self) -> usize {
        self.len
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
