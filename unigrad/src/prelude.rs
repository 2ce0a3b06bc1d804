//! What a training loop names, in one `use unigrad::prelude::*;`.
//!
//! Tensors and devices, the layers and models with their configurations, the norm slot,
//! the optimizers and schedules, the loss, seeding (the process-wide `manual_seed` and explicit `Generator`s), `no_grad`, device selection and the
//! error type, and higher-order gradients (`grad`, `BackwardOptions`, `enable_grad`). Everything else stays one path away (`unigrad::nn::checkpoint`,
//! `unigrad::nn::fold`, `unigrad::core::gradcheck`, ...), so the glob brings in no names
//! a user is likely to define.
//!
//! `Result` here takes an optional error type (`Result<T>` is unigrad's, `Result<T, E>`
//! any other), so the glob does not break functions that return
//! `Result<(), Box<dyn std::error::Error>>`.

pub use crate::device::device_from_str;
pub use unigrad_core::autograd::{enable_grad, grad, BackwardOptions};
pub use unigrad_core::{manual_seed, no_grad, with_generator, DType, Device, Error, Generator, Tensor};
pub use unigrad_nn::module::ParamVisitor;
pub use unigrad_nn::{
    clip_grad_norm, cross_entropy, decay_groups, Adam, AdamConfig, BatchNorm, Dropout, Embedding, LayerNorm, Linear,
    LmConfig, LrSchedule, Module, MultiHeadAttention, Norm, NormConfig, NormKind, Optimizer, RmsNorm, Seq2Seq,
    Seq2SeqConfig, Sgd, TransformerLm, Vit, VitConfig,
};

/// `std::result::Result` with unigrad's [`Error`] as the default error type; the same
/// type as `unigrad::core::Result<T>` when the error type is left out.
pub type Result<T, E = Error> = std::result::Result<T, E>;
