//! Shared by the PyTorch cross-checks (`torch_lm.rs`, `torch_ckpt.rs`).

use unigrad_nn::{LmConfig, NormKind};

/// The miniature of the reference LM that the PyTorch fixtures use (the sizes set by
/// `tests/data/torch_lm/make_fixture.py` and `scripts/torch-ckpt/gen.py`).
pub fn mini_lm_config(kind: NormKind) -> LmConfig {
    LmConfig {
        vocab: 16,
        d_model: 8,
        heads: 2,
        d_ff: 16,
        layers: 2,
        max_seq: 8,
        ..LmConfig::reference(kind)
    }
}
