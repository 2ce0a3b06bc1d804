//! Differentiable ops, one file per family. Each op validates its operands, calls a
//! backend primitive for the forward, and records a backward written in tensor ops.
//!
//! | file | ops |
//! | --- | --- |
//! | `elementwise.rs` | unary maps, binary arithmetic with broadcasting, scalar forms, comparisons, where |
//! | `reduce.rs` | sum / mean / max / min / var over axes, `sum_to` |
//! | `matmul.rs` | batched matmul with broadcast batch dims |
//! | `view.rs` | reshape, permute, transpose, narrow, squeeze, unsqueeze, expand, cat, stack |
//! | `index.rs` | index_select, embedding, gather, scatter_add |
//! | `nn.rs` | softmax, log_softmax, cross-entropy, dropout, casts and device moves |
//!
//! The matching CPU kernels live in `backend-cpu/src/kernels/` and the CUDA kernels in
//! `backend-cuda/kernels/`, under the same family names.

pub mod elementwise;
pub mod index;
pub mod matmul;
pub mod nn;
pub mod reduce;
pub mod view;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Reject non-float operands for arithmetic ops.
pub(crate) fn check_float(op: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype().is_float() {
        Ok(())
    } else {
        Err(Error::UnsupportedDType {
            op,
            dtype: t.dtype(),
            shape: t.shape().to_vec(),
        })
    }
}

/// Reject non-index operands where indices are expected.
pub(crate) fn check_index(op: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype() == DType::I64 {
        Ok(())
    } else {
        Err(Error::invalid(
            op,
            format!("indices must be i64, got {} (shape {:?})", t.dtype(), t.shape()),
        ))
    }
}
