//! # unigrad-core
//!
//! Tensors (f32 and f64, strided views, broadcasting), a small tape-based autograd
//! with a public custom-op API, the [`Backend`] trait that devices implement, one
//! error type, and [`gradcheck`](gradcheck::gradcheck).
//!
//! Where things live:
//!
//! | concern | file |
//! | --- | --- |
//! | element types, host data | `dtype.rs` |
//! | shapes and broadcasting rules | `shape.rs` |
//! | strided views | `layout.rs` |
//! | the tensor handle | `tensor.rs` |
//! | recording and backward | `autograd.rs` |
//! | gradients of intermediates, gradient hooks | `hooks.rs` |
//! | ops and their backward, by family | `ops/*.rs` |
//! | user-defined differentiable ops | `custom.rs` |
//! | the device contract | `backend.rs`, `device.rs` |
//! | numerical gradient checks | `gradcheck.rs` |
//!
//! Backends live in their own crates: `unigrad-cpu` (always built) and
//! `unigrad-cuda` (behind the `cuda` feature).

#![warn(missing_docs)]

pub mod autograd;
pub mod backend;
pub mod custom;
pub mod device;
pub mod dtype;
pub mod error;
pub mod gradcheck;
pub mod hooks;
pub mod layout;
pub mod ops;
pub mod rng;
pub mod shape;
pub mod tensor;

pub use autograd::{anomaly_detection, is_grad_enabled, no_grad, set_anomaly_detection, NoGradGuard};
pub use backend::{AdamStep, Backend, BackendStorage, BinaryOp, BoxStorage, ReduceOp, UnaryOp};
pub use device::Device;
pub use dtype::{DType, HostData};
pub use error::{in_op, Error, Result, ResultExt};
pub use hooks::{GradHook, HookHandle};
pub use layout::Layout;
pub use rng::{manual_seed, with_generator, Generator, Rng};
pub use tensor::{Element, Tensor};
