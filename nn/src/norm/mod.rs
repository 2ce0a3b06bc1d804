//! Normalization layers, all behind one slot so a model definition trains with any
//! of them: [`NormKind`] is the config value, [`Norm`] the layer.
//!
//! | file | layer |
//! | --- | --- |
//! | `layer.rs` | LayerNorm, RMSNorm |
//! | `batch.rs` | BatchNorm over tokens (optional padding mask) |
//! | `power.rs` | PowerNorm (Shen et al. 2020), reference-exact |
//! | `unified.rs` | Unified Normalization (Yang et al. 2022), reference-exact |
//! | `stats.rs` | what BatchNorm, PowerNorm and UN share: mask → validity indicator, quadratic mean over valid tokens, input and state checks, the step counter (and UN's and PowerNorm's common parameters and accessors) |
//! | `trace.rs` | opt-in tracing of every norm's statistics, CSV export |
//!
//! Inside `norm/` the files form a tree: `stats.rs` and `trace.rs` import no layer, each
//! layer file imports only those two (and `power.rs` nothing of `unified.rs`), and this
//! file ties the layers together ([`Norm`]) and attaches tracing to whole models
//! ([`Traceable`], through [`Module::visit_norms_mut`]) — no model or Transformer layer is
//! imported here.
//!
//! Every norm takes `forward(x, pad_mask)`; the token-statistics norms (BatchNorm,
//! PowerNorm, UN) use the padding mask (`[B, N]`, 1 = pad, 0 = token, any dtype; another
//! value is an error naming it) to keep padding out of their statistics, the per-token ones
//! (LayerNorm, RMSNorm) ignore it. A training batch whose mask marks every token as padding
//! leaves the statistics and counters of those three as they were (each layer's `forward`
//! says what it returns then), so neither evaluation nor a checkpoint can inherit a
//! statistic of an empty batch.

pub mod batch;
pub mod layer;
pub mod power;
mod stats;
pub mod trace;
pub mod unified;

pub use batch::BatchNorm;
pub use layer::{LayerNorm, RmsNorm};
pub use power::{PnConfig, PowerNorm};
pub use unified::{UnConfig, UnifiedNorm};

use crate::module::{BufferVisitor, Module, NormVisitor, ParamVisitor};
use std::fmt;
use std::str::FromStr;
use trace::{TraceSite, Tracer};
use unigrad_core::{DType, Device, Error, Result, Tensor};

/// Which normalization a model uses at every norm site.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NormKind {
    /// [`LayerNorm`].
    LayerNorm,
    /// [`RmsNorm`].
    RmsNorm,
    /// [`BatchNorm`] over tokens.
    BatchNorm,
    /// PowerNorm (Shen et al. 2020).
    PowerNorm,
    /// Unified Normalization ([`UnifiedNorm`]).
    Unified,
}

impl NormKind {
    /// Short name as used on command lines: `ln`, `rms`, `bn`, `pn`, `un`.
    pub fn short_name(self) -> &'static str {
        match self {
            NormKind::LayerNorm => "ln",
            NormKind::RmsNorm => "rms",
            NormKind::BatchNorm => "bn",
            NormKind::PowerNorm => "pn",
            NormKind::Unified => "un",
        }
    }

    /// True for the norms whose statistics span the batch (and so use the padding mask
    /// and keep running statistics).
    pub fn uses_batch_statistics(self) -> bool {
        matches!(self, NormKind::BatchNorm | NormKind::PowerNorm | NormKind::Unified)
    }
}

impl fmt::Display for NormKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

impl FromStr for NormKind {
    type Err = Error;

    /// `ln|layernorm`, `rms|rmsnorm`, `bn|batchnorm`, `pn|powernorm`, `un|unified`.
    fn from_str(s: &str) -> Result<NormKind> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "ln" | "layernorm" | "layer_norm" => NormKind::LayerNorm,
            "rms" | "rmsnorm" | "rms_norm" => NormKind::RmsNorm,
            "bn" | "batchnorm" | "batch_norm" => NormKind::BatchNorm,
            "pn" | "powernorm" | "power_norm" => NormKind::PowerNorm,
            "un" | "unified" | "unifiednorm" => NormKind::Unified,
            other => {
                return Err(Error::invalid(
                    "NormKind",
                    format!("unknown norm `{other}`; expected ln, rms, bn, pn or un"),
                ))
            }
        })
    }
}

/// Everything needed to build a norm: the kind plus the per-kind hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormConfig {
    /// The layer kind.
    pub kind: NormKind,
    /// `ε` of LayerNorm, RMSNorm and BatchNorm (default 1e-5).
    pub eps: f64,
    /// BatchNorm momentum (default `Some(0.1)`, PyTorch's).
    pub bn_momentum: Option<f64>,
    /// Hyperparameters of Unified Normalization.
    pub un: UnConfig,
    /// Hyperparameters of PowerNorm.
    pub pn: PnConfig,
}

impl From<NormKind> for NormConfig {
    fn from(kind: NormKind) -> NormConfig {
        NormConfig {
            kind,
            eps: 1e-5,
            bn_momentum: Some(0.1),
            un: UnConfig::default(),
            pn: PnConfig::default(),
        }
    }
}

impl Default for NormConfig {
    fn default() -> Self {
        NormKind::LayerNorm.into()
    }
}

/// A norm layer of any kind, dispatching `forward(x, pad_mask)`.
#[derive(Debug)]
pub enum Norm {
    /// LayerNorm.
    Layer(LayerNorm),
    /// RMSNorm.
    Rms(RmsNorm),
    /// BatchNorm over tokens.
    Batch(BatchNorm),
    /// PowerNorm.
    Power(PowerNorm),
    /// Unified Normalization.
    Unified(UnifiedNorm),
}

impl Norm {
    /// Build the configured norm over `channels` features.
    pub fn new(cfg: &NormConfig, channels: usize, dtype: DType, dev: &Device) -> Result<Norm> {
        Ok(match cfg.kind {
            NormKind::LayerNorm => Norm::Layer(LayerNorm::with_options(channels, cfg.eps, true, dtype, dev)?),
            NormKind::RmsNorm => {
                let mut n = RmsNorm::new(channels, dtype, dev)?;
                n.eps = cfg.eps;
                Norm::Rms(n)
            }
            NormKind::BatchNorm => {
                Norm::Batch(BatchNorm::with_options(channels, cfg.eps, cfg.bn_momentum, dtype, dev)?)
            }
            NormKind::Unified => Norm::Unified(UnifiedNorm::new(channels, cfg.un, dtype, dev)?),
            NormKind::PowerNorm => Norm::Power(PowerNorm::new(channels, cfg.pn, dtype, dev)?),
        })
    }

    /// The kind of this layer.
    pub fn kind(&self) -> NormKind {
        match self {
            Norm::Layer(_) => NormKind::LayerNorm,
            Norm::Rms(_) => NormKind::RmsNorm,
            Norm::Batch(_) => NormKind::BatchNorm,
            Norm::Power(_) => NormKind::PowerNorm,
            Norm::Unified(_) => NormKind::Unified,
        }
    }

    /// Normalize `x [.., C]`; `pad_mask` (`x`'s shape without `C`, 1 = pad, 0 = token, any
    /// dtype) reaches the norms that use batch statistics.
    pub fn forward(&self, x: &Tensor, pad_mask: Option<&Tensor>) -> Result<Tensor> {
        match self {
            Norm::Layer(n) => n.forward(x),
            Norm::Rms(n) => n.forward(x),
            Norm::Batch(n) => n.forward(x, pad_mask),
            Norm::Power(n) => n.forward(x, pad_mask),
            Norm::Unified(n) => n.forward(x, pad_mask),
        }
    }

    /// Attach (or with `None` detach) a statistics trace site ([`trace`]). An RMSNorm
    /// records nothing, so it ignores the site.
    pub fn set_trace(&mut self, site: Option<TraceSite>) {
        match self {
            Norm::Layer(n) => n.set_trace(site),
            Norm::Rms(_) => {}
            Norm::Batch(n) => n.set_trace(site),
            Norm::Power(n) => n.set_trace(site),
            Norm::Unified(n) => n.set_trace(site),
        }
    }
}

impl Module for Norm {
    fn visit_params(&self, prefix: &str, f: &mut ParamVisitor<'_>) {
        match self {
            Norm::Layer(n) => n.visit_params(prefix, f),
            Norm::Rms(n) => n.visit_params(prefix, f),
            Norm::Batch(n) => n.visit_params(prefix, f),
            Norm::Power(n) => n.visit_params(prefix, f),
            Norm::Unified(n) => n.visit_params(prefix, f),
        }
    }

    fn visit_buffers(&self, prefix: &str, f: &mut BufferVisitor<'_>) {
        match self {
            Norm::Layer(n) => n.visit_buffers(prefix, f),
            Norm::Rms(n) => n.visit_buffers(prefix, f),
            Norm::Batch(n) => n.visit_buffers(prefix, f),
            Norm::Power(n) => n.visit_buffers(prefix, f),
            Norm::Unified(n) => n.visit_buffers(prefix, f),
        }
    }

    fn set_train(&mut self, train: bool) {
        match self {
            Norm::Layer(n) => n.set_train(train),
            Norm::Rms(n) => n.set_train(train),
            Norm::Batch(n) => n.set_train(train),
            Norm::Power(n) => n.set_train(train),
            Norm::Unified(n) => n.set_train(train),
        }
    }

    /// A norm site is itself: `f(prefix, self)`.
    fn visit_norms_mut(&mut self, prefix: &str, f: &mut NormVisitor<'_>) {
        f(prefix, self);
    }
}

/// Attach a [`Tracer`] to every norm of a module (or detach it). Implemented for every
/// [`Module`]: the norms are found through [`Module::visit_norms_mut`], so any model whose
/// layers report their norm sites (the LM, Seq2Seq, ViT) can be traced.
pub trait Traceable: Module {
    /// Attach `tracer` (or detach with `None`) to every norm site, naming each site by its
    /// parameter prefix under `prefix` (`blocks.0.norm1`). RMSNorm sites record nothing.
    fn attach_tracer(&mut self, prefix: &str, tracer: Option<&Tracer>) {
        self.visit_norms_mut(prefix, &mut |name, n| n.set_trace(tracer.map(|t| t.site(name))));
    }

    /// Trace every norm of this module into `tracer` (names like the parameters').
    fn enable_trace(&mut self, tracer: &Tracer) {
        self.attach_tracer("", Some(tracer));
    }

    /// Detach every norm from its tracer: no more records, no device reads.
    fn disable_trace(&mut self) {
        self.attach_tracer("", None);
    }
}

impl<M: Module + ?Sized> Traceable for M {}
