//! # unigrad-nn
//!
//! Modules, normalization layers (LayerNorm, RMSNorm, BatchNorm, PowerNorm and
//! Unified Normalization), attention, Transformer models, optimizers, losses and
//! safetensors checkpoints, written on `unigrad-core` and run on any backend.
//!
//! | file | contents |
//! | --- | --- |
//! | `module.rs` | the [`Module`] trait: named parameters, buffers and norm sites, train/eval |
//! | `linear.rs`, `embedding.rs`, `dropout.rs` | basic layers, positional encodings |
//! | `norm/` | the norm slot ([`norm::NormKind`], [`norm::Norm`]) and every norm |
//! | `attention.rs` | multi-head attention (fused QKV, masks, fused softmax) |
//! | `transformer.rs` | feed-forward, encoder and decoder layers (pre/post-norm) |
//! | `models/` | decoder-only LM, encoder-decoder, ViT |
//! | `fold.rs` | inference folding: per-channel-affine norms folded into Linear layers |
//! | `optim.rs`, `schedule.rs` | SGD, Adam, AdamW, clipping; LR schedules |
//! | `loss.rs` | cross-entropy |
//! | `checkpoint.rs` | safetensors save/load with validation |
//! | `profile.rs` | opt-in timing of layers (`UNIGRAD_PROFILE=1`) |
//!
//! The crate depends on `unigrad-core` alone and never names a backend: every
//! constructor takes the [`Device`](unigrad_core::Device) to build on. The `unigrad`
//! facade crate re-exports this one and picks the device from a string
//! (`unigrad::device_from_str("cuda:0")`).
//!
//! A training step of a small language model:
//!
//! ```
//! use unigrad_core::{DType, Tensor};
//! use unigrad_nn::{checkpoint, decay_groups, Adam, AdamConfig, LmConfig, Module, NormKind, Optimizer, TransformerLm};
//!
//! # fn main() -> unigrad_core::Result<()> {
//! let dev = unigrad_cpu::cpu(); // or any other backend's device
//! let mut cfg = LmConfig::reference(NormKind::LayerNorm); // or RmsNorm, BatchNorm, PowerNorm, Unified
//! cfg.layers = 1;
//! let model = TransformerLm::new(cfg, DType::F32, &dev)?;
//! let mut opt = Adam::new(decay_groups(model.named_params(), 0.1), AdamConfig::adamw(1e-3))?;
//! let x = Tensor::from_vec(vec![1i64, 2, 3, 4], &[1, 4], &dev)?;
//! let y = Tensor::from_vec(vec![2i64, 3, 4, 5], &[1, 4], &dev)?;
//! opt.zero_grad();
//! let loss = model.loss(&x, &y)?; // mean cross-entropy in nats
//! loss.backward()?;
//! opt.step()?;
//! let path = std::env::temp_dir().join(format!("doc-lm-{}.safetensors", std::process::id()));
//! checkpoint::save(&model, &path)?; // names like `blocks.0.attn.qkv.weight`
//! assert!(checkpoint::load(&model, &path)?.is_clean());
//! # std::fs::remove_file(&path).ok();
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod attention;
pub mod checkpoint;
pub mod dropout;
pub mod embedding;
pub mod fold;
pub mod init;
pub mod linear;
pub mod loss;
pub mod models;
pub mod module;
pub mod norm;
pub mod optim;
pub mod profile;
pub mod schedule;
pub mod transformer;

pub use attention::{attention_bias, Init, MultiHeadAttention};
pub use dropout::Dropout;
pub use embedding::{Embedding, LearnedPositions, PositionKind, Positions, SinusoidalPositions};
pub use linear::Linear;
pub use loss::cross_entropy;
pub use models::{LmConfig, Seq2Seq, Seq2SeqConfig, TransformerLm, Vit, VitConfig};
pub use module::{param, Buffer, Module};
pub use norm::{BatchNorm, LayerNorm, Norm, NormConfig, NormKind, RmsNorm, Traceable};
pub use optim::{clip_grad_norm, decay_groups, Adam, AdamConfig, Optimizer, ParamGroup, Sgd};
pub use schedule::LrSchedule;
pub use transformer::{DecoderLayer, EncoderLayer, FeedForward, LayerConfig};

/// The error a custom op's backward returns when its forward never ran (cannot happen
/// through `custom::apply`, which always runs the forward first).
pub(crate) fn not_run(op: &'static str) -> unigrad_core::Error {
    unigrad_core::Error::invalid(op, "backward called before forward")
}
