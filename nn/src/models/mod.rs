//! Complete models built from the layers: a decoder-only language model
//! ([`TransformerLm`]), an encoder-decoder for translation ([`Seq2Seq`]) and a Vision
//! Transformer ([`Vit`]). Each takes its norm as a config value, so the same model
//! trains with LayerNorm, RMSNorm, BatchNorm, PowerNorm or UN.

pub mod lm;
pub mod seq2seq;
pub mod vit;

pub use lm::{LmConfig, TransformerLm};
pub use seq2seq::{Seq2Seq, Seq2SeqConfig};
pub use vit::{Vit, VitConfig};

use crate::norm::Norm;
use crate::transformer::{DecoderLayer, EncoderLayer, LayerConfig};
use unigrad_core::{DType, Device, Error, Result};

/// The `ln_scale` factor of layer `index` (0-based): `1/√(index + 1)` with LayerNorm
/// Scaling, 1 without.
pub fn ln_scale(enabled: bool, index: usize) -> f64 {
    if enabled {
        1.0 / ((index + 1) as f64).sqrt()
    } else {
        1.0
    }
}

/// What every model builds the same way from the shape of its layers (`template`, whose
/// `ln_scale` each layer replaces by [`ln_scale`] of its index).
pub(crate) struct Layers {
    /// Every layer's config but the LayerNorm Scaling factor.
    pub(crate) template: LayerConfig,
    /// LayerNorm Scaling: pre-norm outputs of layer `l` scaled by `1/√l`.
    pub(crate) ln_scaling: bool,
}

impl Layers {
    /// `op`'s error when LayerNorm Scaling is asked for without pre-norm layers.
    pub(crate) fn check(&self, op: &'static str) -> Result<()> {
        if self.ln_scaling && !self.template.pre_norm {
            return Err(Error::invalid(op, "LayerNorm Scaling needs pre-norm layers"));
        }
        Ok(())
    }

    fn layer(&self, index: usize) -> LayerConfig {
        LayerConfig {
            ln_scale: ln_scale(self.ln_scaling, index),
            ..self.template
        }
    }

    /// `n` encoder layers.
    pub(crate) fn encoders(&self, n: usize, dtype: DType, dev: &Device) -> Result<Vec<EncoderLayer>> {
        (0..n).map(|i| EncoderLayer::new(&self.layer(i), dtype, dev)).collect()
    }

    /// `n` decoder layers.
    pub(crate) fn decoders(&self, n: usize, dtype: DType, dev: &Device) -> Result<Vec<DecoderLayer>> {
        (0..n).map(|i| DecoderLayer::new(&self.layer(i), dtype, dev)).collect()
    }

    /// The final norm of a pre-norm stack; `None` after post-norm layers.
    pub(crate) fn final_norm(&self, dtype: DType, dev: &Device) -> Result<Option<Norm>> {
        let t = &self.template;
        t.pre_norm
            .then(|| Norm::new(&t.norm, t.d_model, dtype, dev))
            .transpose()
    }
}
