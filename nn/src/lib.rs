//! # unigrad-nn
//!
//! Modules, normalization layers (LayerNorm, RMSNorm, BatchNorm, PowerNorm and
//! Unified Normalization), attention, Transformer models, optimizers, losses and
//! safetensors checkpoints, written on `unigrad-core` and run on any backend.

#![warn(missing_docs)]

pub mod module;
pub mod norm;

pub use module::{Buffer, Module};
