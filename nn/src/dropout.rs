//! Dropout as a module, so it follows the model's train/eval switch.

use crate::module::{Module, ParamVisitor};
use unigrad_core::{Error, Result, Tensor};

/// Inverted dropout with probability `p`; the identity in eval mode.
#[derive(Clone, Debug)]
pub struct Dropout {
    p: f64,
    train: bool,
}

impl Dropout {
    /// Dropout with probability `p ∈ [0, 1)`, in training mode.
    pub fn new(p: f64) -> Result<Dropout> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::invalid("Dropout", format!("probability {p} is not in [0, 1)")));
        }
        Ok(Dropout { p, train: true })
    }

    /// The drop probability.
    pub fn p(&self) -> f64 {
        self.p
    }

    /// True when the layer changes its input (training mode and `p > 0`).
    pub fn is_active(&self) -> bool {
        self.train && self.p > 0.0
    }

    /// Apply (zeroing with probability `p` and rescaling by `1/(1−p)` in training).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.dropout(self.p, self.train)
    }
}

impl Module for Dropout {
    fn visit_params(&self, _prefix: &str, _f: &mut ParamVisitor<'_>) {}

    fn set_train(&mut self, train: bool) {
        self.train = train;
    }
}
