//! # unigrad
//!
//! unigrad in one dependency. The library is split into member crates so that each part
//! builds and is published on its own: `unigrad-core` (tensors, autograd, the backend
//! trait) needs no backend, `unigrad-cpu` and `unigrad-cuda` implement the backend trait,
//! and `unigrad-nn` (modules, norms, optimizers, checkpoints) is written against core
//! alone and runs on whichever device it is handed. That split is right for the library
//! and wrong for a user, who would otherwise need three or four dependencies and as many
//! `use` lines before the first training step. This crate is the user's side:
//!
//! * one dependency, `unigrad`, re-exporting the members as [`core`], [`cpu`], [`nn`] and,
//!   with the feature `cuda`, `cuda`;
//! * device selection from a string ([`device_from_str`]: `"cpu"`, `"cuda"`, `"cuda:1"`),
//!   which is the one place that has to know every backend;
//! * a [`prelude`] with what a training loop names: tensors, dtypes, devices, the layers
//!   and models, the optimizers, the loss and the `Result` type.
//!
//! The member crates do not depend on this one, so nothing here is needed to extend them
//! (a custom op, a new module or a new backend is written against the member crate).
//!
//! A complete training loop, with `unigrad` as the only dependency:
//!
//! ```
//! use unigrad::prelude::*;
//!
//! /// Two linear layers with a ReLU between them.
//! struct Mlp {
//!     hidden: Linear,
//!     out: Linear,
//! }
//!
//! impl Module for Mlp {
//!     fn visit_params(&self, prefix: &str, f: &mut ParamVisitor<'_>) {
//!         // PyTorch-style names: `hidden.weight`, `hidden.bias`, `out.weight`, `out.bias`
//!         self.hidden.visit_params(&unigrad::nn::module::join(prefix, "hidden"), f);
//!         self.out.visit_params(&unigrad::nn::module::join(prefix, "out"), f);
//!     }
//! }
//!
//! fn main() -> Result<()> {
//!     manual_seed(0);
//!     let dev = device_from_str("cpu")?; // "cuda:0" with the `cuda` feature
//!     let model = Mlp {
//!         hidden: Linear::new(8, 32, true, DType::F32, &dev)?,
//!         out: Linear::new(32, 4, true, DType::F32, &dev)?,
//!     };
//!     // 64 random points, each labelled with the index of its largest coordinate among the first 4
//!     let x = Tensor::randn(&[64, 8], DType::F32, &dev)?;
//!     let xs = x.to_vec::<f32>()?;
//!     let labels: Vec<i64> = xs
//!         .chunks(8)
//!         .map(|r| (0..4).fold(0, |best, j| if r[j] > r[best] { j } else { best }) as i64)
//!         .collect();
//!     let y = Tensor::from_vec(labels, &[64], &dev)?;
//!
//!     let mut opt = Adam::new(decay_groups(model.named_params(), 0.01), AdamConfig::adamw(1e-2))?;
//!     let mut losses = Vec::new();
//!     for _ in 0..30 {
//!         opt.zero_grad();
//!         let logits = model.out.forward(&model.hidden.forward(&x)?.relu()?)?;
//!         let loss = cross_entropy(&logits, &y, None, 0.0)?;
//!         loss.backward()?;
//!         opt.step()?;
//!         losses.push(loss.to_scalar()?);
//!     }
//!     assert!(losses[29] < 0.5 * losses[0], "{losses:?}");
//!     Ok(())
//! }
//! ```

#![warn(missing_docs)]

pub mod device;
pub mod prelude;

pub use device::device_from_str;

/// Tensors, autograd, the backend trait and gradcheck (the `unigrad-core` crate).
pub use unigrad_core as core;

/// The CPU backend (the `unigrad-cpu` crate): `unigrad::cpu::cpu()` is the CPU device.
pub use unigrad_cpu as cpu;

/// Modules, norms, attention, Transformer models, optimizers, losses and checkpoints (the
/// `unigrad-nn` crate).
pub use unigrad_nn as nn;

/// The CUDA backend (the `unigrad-cuda` crate), with the feature `cuda`.
#[cfg(feature = "cuda")]
pub use unigrad_cuda as cuda;

/// The README's code blocks, compiled and run as doc tests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
