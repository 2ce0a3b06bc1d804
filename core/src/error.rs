//! The one error type of unigrad.
//!
//! Every fallible op returns [`Result`]; the variants carry the op's name and the
//! operands' shapes, dtypes or devices, so a user sees *which* call was wrong and
//! *why* without a backtrace. Library code never panics on bad input.

use crate::dtype::DType;

/// Shorthand for `std::result::Result<T, unigrad_core::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in unigrad.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Operand shapes are incompatible for the op.
    #[error("{op}: shape mismatch between {lhs:?} and {rhs:?}")]
    ShapeMismatch {
        /// Op name.
        op: &'static str,
        /// First operand's shape.
        lhs: Vec<usize>,
        /// Second operand's shape.
        rhs: Vec<usize>,
    },
    /// Operand dtypes differ.
    #[error("{op}: dtype mismatch between {lhs} and {rhs}")]
    DTypeMismatch {
        /// Op name.
        op: &'static str,
        /// First operand's dtype.
        lhs: DType,
        /// Second operand's dtype.
        rhs: DType,
    },
    /// The op does not support this dtype.
    #[error("{op}: unsupported dtype {dtype} (shape {shape:?})")]
    UnsupportedDType {
        /// Op name.
        op: &'static str,
        /// The rejected dtype.
        dtype: DType,
        /// Shape of the operand.
        shape: Vec<usize>,
    },
    /// Operands live on different devices.
    #[error("{op}: device mismatch between {lhs} and {rhs}")]
    DeviceMismatch {
        /// Op name.
        op: &'static str,
        /// First operand's device.
        lhs: String,
        /// Second operand's device.
        rhs: String,
    },
    /// An axis is out of range for the shape.
    #[error("{op}: axis {axis} is out of range for shape {shape:?}")]
    InvalidAxis {
        /// Op name.
        op: &'static str,
        /// The axis as given.
        axis: isize,
        /// Shape of the operand.
        shape: Vec<usize>,
    },
    /// An index is out of range.
    #[error("{op}: index {index} is out of range for a dimension of size {size} (shape {shape:?})")]
    IndexOutOfRange {
        /// Op name.
        op: &'static str,
        /// The offending index.
        index: i64,
        /// Size of the indexed dimension.
        size: usize,
        /// Shape of the indexed tensor.
        shape: Vec<usize>,
    },
    /// Arguments are invalid in some other way; `msg` says how.
    #[error("{op}: {msg}")]
    InvalidArgument {
        /// Op name.
        op: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// `backward()` was called on a non-scalar without an upstream gradient.
    #[error("backward: called on a tensor of shape {shape:?} without an upstream gradient; reduce it to a scalar or call backward_with(grad)")]
    BackwardNonScalar {
        /// Shape of the tensor backward was called on.
        shape: Vec<usize>,
    },
    /// The graph behind a tensor was already consumed by an earlier backward.
    #[error("backward: the graph of op {op} was already released by an earlier backward; recompute the forward")]
    GraphReleased {
        /// Op whose backward state is gone.
        op: String,
    },
    /// Anomaly mode found a NaN or Inf.
    #[error("anomaly: {phase} of op {op} produced a non-finite value ({detail})")]
    Anomaly {
        /// Op name.
        op: String,
        /// "forward" or "backward".
        phase: &'static str,
        /// Shape and count of the bad values.
        detail: String,
    },
    /// An error from a device backend (allocation, kernel launch, driver).
    #[error("{device}: {msg}")]
    Backend {
        /// Device name, e.g. `cuda:0`.
        device: String,
        /// The backend's message, including the driver's error name where it has one.
        msg: String,
    },
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Error {
        Error::InvalidArgument { op, msg: msg.into() }
    }

    /// The same error attributed to `op`, the op the user called.
    ///
    /// A composed op (`masked_fill` over `where_cond`, `mean` over `sum`, a layer over
    /// `matmul`) reports an invalid operand under the inner op's name, which the user
    /// never called. This rewrites the op of the argument-checking variants (shape,
    /// dtype, device, axis, index, invalid argument) and keeps their shapes, dtypes
    /// and messages. It leaves alone what is not about the arguments: anomalies keep
    /// the primitive that produced the non-finite value, backend errors their device,
    /// and backward errors their graph node.
    pub fn in_op(self, op: &'static str) -> Error {
        match self {
            Error::ShapeMismatch { lhs, rhs, .. } => Error::ShapeMismatch { op, lhs, rhs },
            Error::DTypeMismatch { lhs, rhs, .. } => Error::DTypeMismatch { op, lhs, rhs },
            Error::UnsupportedDType { dtype, shape, .. } => Error::UnsupportedDType { op, dtype, shape },
            Error::DeviceMismatch { lhs, rhs, .. } => Error::DeviceMismatch { op, lhs, rhs },
            Error::InvalidAxis { axis, shape, .. } => Error::InvalidAxis { op, axis, shape },
            Error::IndexOutOfRange { index, size, shape, .. } => Error::IndexOutOfRange { op, index, size, shape },
            Error::InvalidArgument { msg, .. } => Error::InvalidArgument { op, msg },
            other => other,
        }
    }
}

/// Attribute the errors of a composed op's inner calls to the op the user called
/// (see [`Error::in_op`]): `x.sum(axes, keepdim).in_op("mean")`.
pub trait ResultExt<T> {
    /// Rewrite an error's op to `op`; pass a value through.
    fn in_op(self, op: &'static str) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn in_op(self, op: &'static str) -> Result<T> {
        self.map_err(|e| e.in_op(op))
    }
}

/// Run the body of the composed op `op`, attributing every error of its inner calls
/// to `op` (see [`Error::in_op`]).
pub fn in_op<T>(op: &'static str, body: impl FnOnce() -> Result<T>) -> Result<T> {
    body().in_op(op)
}
