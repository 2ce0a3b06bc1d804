//! The launches of every op family, one module per family: `ops/<family>.rs` plans
//! and launches the kernels of `kernels/<family>.cu` (core's `ops/<family>.rs` and
//! the CPU backend's `kernels/<family>.rs` carry the same names).
//!
//! Each function validates its operands on the host through the shared helpers of
//! [`crate::backend`] before it queues anything, so no kernel reads or writes outside
//! a storage; `impl Backend for CudaBackend` in `backend.rs` only dispatches here.
//! `dry_run` holds the unit tests that run every family's call sites without a GPU.

use unigrad_core::backend::BackendStorage;
use unigrad_core::layout::Layout;

#[cfg(test)]
mod dry_run;
pub(crate) mod elementwise;
pub(crate) mod index;
pub(crate) mod matmul;
pub(crate) mod norm;
pub(crate) mod optim;
pub(crate) mod reduce;
pub(crate) mod softmax;
pub(crate) mod view;
// issue 17 (helper "ops")
pub(crate) mod scan;
pub(crate) mod sort;

/// A strided operand: a storage and the view of it that an op reads.
pub(crate) type Operand<'a> = (&'a dyn BackendStorage, &'a Layout);
