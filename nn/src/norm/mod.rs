//! Normalization layers, all behind one slot so a model definition trains with any
//! of them: `NormKind` is the config value, [`Norm`] the layer.
//!
//! | file | layer |
//! | --- | --- |
//! | `layer.rs` | LayerNorm, RMSNorm |
//! | `batch.rs` | BatchNorm over tokens (optional padding mask) |
//! | `power.rs` | PowerNorm (Shen et al. 2020), reference-exact |
//! | `unified.rs` | Unified Normalization (Yang et al. 2022), reference-exact |

pub mod power;
pub mod unified;
