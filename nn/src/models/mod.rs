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

/// The `ln_scale` factor of layer `index` (0-based): `1/√(index + 1)` with LayerNorm
/// Scaling, 1 without.
pub fn ln_scale(enabled: bool, index: usize) -> f64 {
    if enabled {
        1.0 / ((index + 1) as f64).sqrt()
    } else {
        1.0
    }
}
