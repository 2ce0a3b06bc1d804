//! CPU storage: a plain `Vec` per dtype, recycled through [`crate::pool`] when
//! dropped so a training step reuses the previous step's buffers.

use crate::elem::Float;
use crate::pool;
use std::any::Any;
use unigrad_core::{BackendStorage, DType, Error, HostData, Result};

/// Host memory holding one tensor's elements.
///
/// Dropping it files the buffer in the [buffer pool](crate::pool) (when large enough), from
/// which kernels take their outputs.
#[derive(Debug, Clone)]
pub enum CpuStorage {
    /// f32 elements.
    F32(Vec<f32>),
    /// f64 elements.
    F64(Vec<f64>),
    /// i64 elements (indices).
    I64(Vec<i64>),
}

impl BackendStorage for CpuStorage {
    fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::I64(_) => DType::I64,
        }
    }
    fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F64(v) => v.len(),
            CpuStorage::I64(v) => v.len(),
        }
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl CpuStorage {
    /// Take host data as CPU storage.
    pub fn from_host(h: HostData) -> CpuStorage {
        match h {
            HostData::F32(v) => CpuStorage::F32(v),
            HostData::F64(v) => CpuStorage::F64(v),
            HostData::I64(v) => CpuStorage::I64(v),
        }
    }

    /// Zero-filled storage of `len` elements of `dtype` (from the pool when possible).
    pub fn zeros(len: usize, dtype: DType) -> CpuStorage {
        match dtype {
            DType::F32 => CpuStorage::F32(pool::take_zeroed(len)),
            DType::F64 => CpuStorage::F64(pool::take_zeroed(len)),
            DType::I64 => CpuStorage::I64(pool::take_zeroed(len)),
        }
    }

    /// Storage of `len` elements of `dtype` for an output the caller overwrites
    /// entirely: a recycled pool buffer as it is (stale values, no zero fill), or a
    /// fresh zeroed allocation when the pool has none. Never uninitialised memory:
    /// the pool only files buffers whose elements were all initialised (see
    /// [`pool::take`]), so this needs no `unsafe`.
    pub fn for_overwrite(len: usize, dtype: DType) -> CpuStorage {
        match dtype {
            DType::F32 => CpuStorage::F32(pool::take(len)),
            DType::F64 => CpuStorage::F64(pool::take(len)),
            DType::I64 => CpuStorage::I64(pool::take(len)),
        }
    }

    /// [`CpuStorage::zeros`], but a size the system cannot allocate is an
    /// [`Error::Backend`] (as a device's out-of-memory is) naming `op`, instead of an
    /// abort (see [`pool::can_allocate`]).
    pub fn try_zeros(op: &'static str, len: usize, dtype: DType) -> Result<CpuStorage> {
        check_alloc(op, len, dtype)?;
        Ok(CpuStorage::zeros(len, dtype))
    }

    /// Move the elements out as host data (no copy; the buffer leaves the pool's reach).
    pub fn into_host(mut self) -> HostData {
        match &mut self {
            CpuStorage::F32(v) => HostData::F32(std::mem::take(v)),
            CpuStorage::F64(v) => HostData::F64(std::mem::take(v)),
            CpuStorage::I64(v) => HostData::I64(std::mem::take(v)),
        }
    }
}

/// Float element types of [`CpuStorage`]: typed access for the kernels' dtype dispatch.
pub(crate) trait StorageElem: Float {
    /// The elements when `s` holds this type.
    fn of(s: &CpuStorage) -> Option<&[Self]>;
    /// Wrap a kernel's output.
    fn wrap(v: Vec<Self>) -> CpuStorage;
}

impl StorageElem for f32 {
    fn of(s: &CpuStorage) -> Option<&[f32]> {
        match s {
            CpuStorage::F32(d) => Some(d),
            _ => None,
        }
    }
    fn wrap(v: Vec<f32>) -> CpuStorage {
        CpuStorage::F32(v)
    }
}

impl StorageElem for f64 {
    fn of(s: &CpuStorage) -> Option<&[f64]> {
        match s {
            CpuStorage::F64(d) => Some(d),
            _ => None,
        }
    }
    fn wrap(v: Vec<f64>) -> CpuStorage {
        CpuStorage::F64(v)
    }
}

/// Error unless an output of `len` elements of `dtype` can be allocated
/// ([`pool::can_allocate`]): an [`Error::Backend`] naming `op`, as a device's
/// out-of-memory is, instead of an abort inside the kernel.
pub(crate) fn check_alloc(op: &'static str, len: usize, dtype: DType) -> Result<()> {
    let ok = match dtype {
        DType::F32 => pool::can_allocate::<f32>(len),
        DType::F64 => pool::can_allocate::<f64>(len),
        DType::I64 => pool::can_allocate::<i64>(len),
    };
    if ok {
        return Ok(());
    }
    Err(Error::Backend {
        device: "cpu".into(),
        msg: format!(
            "{op}: cannot allocate {len} elements of {dtype} ({} bytes)",
            len as u128 * dtype.size_in_bytes() as u128
        ),
    })
}

/// The error for a kernel that does not take `s`'s dtype (an i64 operand of a float op).
pub(crate) fn unsupported(op: &'static str, s: &CpuStorage, shape: &[usize]) -> Error {
    Error::UnsupportedDType {
        op,
        dtype: s.dtype(),
        shape: shape.to_vec(),
    }
}

/// The error for two operands of different dtypes.
pub(crate) fn mismatch(op: &'static str, a: &CpuStorage, b: &CpuStorage) -> Error {
    Error::DTypeMismatch {
        op,
        lhs: a.dtype(),
        rhs: b.dtype(),
    }
}

/// The elements of `s` as a slice of `T`, or a dtype-mismatch error against `first`.
pub(crate) fn slice_of<'a, T: StorageElem>(op: &'static str, s: &'a CpuStorage, first: &CpuStorage) -> Result<&'a [T]> {
    T::of(s).ok_or_else(|| mismatch(op, first, s))
}

/// The first `len` elements of `s`, or an error naming `op` when the storage is
/// shorter than the sizes the caller passed (a fused kernel must not index past it).
pub(crate) fn need<'a, T>(op: &'static str, s: &'a [T], len: usize) -> Result<&'a [T]> {
    s.get(..len).ok_or_else(|| {
        Error::invalid(
            op,
            format!("storage of {} elements where the given sizes need {len}", s.len()),
        )
    })
}

/// `rows · n`, the element count of a fused kernel's `[rows, n]` operand, or an error
/// naming `op` when the sizes overflow (counting `n = 0` as 1, as
/// [`unigrad_core::shape::check_shape`] does, so the `[rows]` statistics fit too).
pub(crate) fn rows_by_n(op: &'static str, rows: usize, n: usize) -> Result<usize> {
    unigrad_core::shape::check_shape(op, &[rows, n])
}

/// [`slice_of`] then [`need`] of an optional operand: its first `len` elements.
pub(crate) fn opt_operand<'a, T: StorageElem>(
    op: &'static str,
    s: Option<&'a CpuStorage>,
    first: &CpuStorage,
    len: usize,
) -> Result<Option<&'a [T]>> {
    s.map(|s| need(op, slice_of(op, s, first)?, len)).transpose()
}

impl Drop for CpuStorage {
    fn drop(&mut self) {
        match self {
            CpuStorage::F32(v) => pool::give(std::mem::take(v)),
            CpuStorage::F64(v) => pool::give(std::mem::take(v)),
            CpuStorage::I64(v) => pool::give(std::mem::take(v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_are_zero_even_from_a_dirty_recycled_buffer() {
        let n = pool::MIN_POOLED_BYTES; // f32: 4× the minimum poolable size
        for _ in 0..3 {
            let mut s = CpuStorage::zeros(n, DType::F32);
            let CpuStorage::F32(v) = &mut s else { unreachable!() };
            assert!(v.iter().all(|&x| x == 0.0));
            v.iter_mut().for_each(|x| *x = f32::NAN);
            drop(s);
        }
        let h = CpuStorage::F64(vec![1.5; 3]).into_host();
        assert_eq!(h, HostData::F64(vec![1.5; 3]));
    }
}
