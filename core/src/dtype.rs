//! Element types.
//!
//! unigrad computes in `f32` (fast) and `f64` (what makes gradient checks tight).
//! `I64` exists only to carry indices (embedding ids, class targets) to a device;
//! arithmetic ops reject it with an error naming the op.

use std::fmt;

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// 64-bit IEEE float.
    F64,
    /// 64-bit signed integer, for indices only.
    I64,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 | DType::I64 => 8,
        }
    }

    /// True for the floating-point types (the ones arithmetic and autograd accept).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }

    /// Lower-case name as used in error messages and checkpoints (`f32`, `f64`, `i64`).
    pub fn as_str(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::I64 => "i64",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Host-side data of one tensor, in row-major order. This is what crosses the
/// host/device boundary: backends copy it in (`Backend::from_host`) and out
/// (`Backend::to_host`).
#[derive(Clone, Debug, PartialEq)]
pub enum HostData {
    /// f32 elements.
    F32(Vec<f32>),
    /// f64 elements.
    F64(Vec<f64>),
    /// i64 elements.
    I64(Vec<i64>),
}

impl HostData {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            HostData::F32(_) => DType::F32,
            HostData::F64(_) => DType::F64,
            HostData::I64(_) => DType::I64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            HostData::F32(v) => v.len(),
            HostData::F64(v) => v.len(),
            HostData::I64(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Build host data of `dtype` from f64 values (rounding to f32, truncating to i64).
    pub fn from_f64(values: Vec<f64>, dtype: DType) -> HostData {
        match dtype {
            DType::F64 => HostData::F64(values),
            DType::F32 => HostData::F32(values.into_iter().map(|v| v as f32).collect()),
            DType::I64 => HostData::I64(values.into_iter().map(|v| v as i64).collect()),
        }
    }

    /// All elements converted to f64.
    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            HostData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            HostData::F64(v) => v.clone(),
            HostData::I64(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }
}
