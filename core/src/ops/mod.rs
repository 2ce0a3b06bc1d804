//! Differentiable ops, one file per family. Each op validates its operands, calls a
//! backend method for the forward, and records its backward: written in tensor ops
//! for most families, one fused backend call for softmax and norm (whose backward
//! passes are device methods, [`Backend::softmax_last_backward`] and
//! [`Backend::norm_last_backward`]). The optim family records nothing.
//!
//! | family | file | ops |
//! | --- | --- | --- |
//! | elementwise | `elementwise.rs` | unary maps, binary arithmetic with broadcasting, scalar forms, comparisons, where, dropout |
//! | reduce | `reduce.rs` | sum / mean / max / min / var over axes, `sum_to` |
//! | matmul | `matmul.rs` | batched matmul with broadcast batch dims |
//! | view | `view.rs` | reshape, permute, transpose, narrow, squeeze, unsqueeze, `broadcast_as` (PyTorch's `expand`), contiguous / dense copies, cat, stack, `to_dtype`, `to_device` |
//! | index | `index.rs` | index_select, embedding, gather, scatter_add |
//! | softmax | `softmax.rs` | softmax, log_softmax, cross-entropy (log_softmax + gather), the fused softmax backward |
//! | norm | `norm.rs` | `layer_norm`, `rms_norm`, row moments |
//! | optim | `optim.rs` | the fused Adam / AdamW update |
//! | sort | `sort.rs` | argmax, argmin, sort, argsort, topk |
//! | scan | `scan.rs` | cumsum |
//! | attention | `attention.rs` | fused scaled-dot-product attention (causal flag, additive bias), backward from saved row log-sum-exps |
//!
//! The same family names hold at every layer: the CPU kernels live in
//! `backend-cpu/src/kernels/<family>.rs`, the CUDA launches in
//! `backend-cuda/src/ops/<family>.rs` and its kernels in `backend-cuda/kernels/<family>.cu`.
//!
//! [`Backend::softmax_last_backward`]: crate::Backend::softmax_last_backward
//! [`Backend::norm_last_backward`]: crate::Backend::norm_last_backward

pub mod attention;
pub mod elementwise;
pub mod index;
pub mod matmul;
pub mod norm;
pub mod optim;
pub mod reduce;
pub mod softmax;
pub mod view;
// issue 17 (helper "ops")
pub mod scan;
pub mod sort;

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
