//! Module conventions.
//!
//! A module owns parameters (grad leaves, updated by optimizers) and buffers
//! (running statistics and other state, saved in checkpoints but never trained).
//! Both are reached through visitors with hierarchical, PyTorch-compatible names
//! (`blocks.0.attn.qkv.weight`), which is all that optimizers, checkpoints and
//! `zero_grad` need. Forward signatures differ per module (some take a padding
//! mask), so `forward` is not part of the trait.

use crate::norm::Norm;
use std::sync::{Arc, Mutex};
use unigrad_core::{Result, Tensor};

/// A mutable, shareable state tensor (running statistics, counters, ring buffers).
///
/// Cloning shares the slot: a norm's custom backward can hold a clone and update
/// state that the module (and its checkpoint) sees.
#[derive(Clone, Debug)]
pub struct Buffer(Arc<Mutex<Tensor>>);

impl Buffer {
    /// A buffer holding `t`.
    pub fn new(t: Tensor) -> Buffer {
        Buffer(Arc::new(Mutex::new(t.detach())))
    }

    /// The current value.
    pub fn get(&self) -> Tensor {
        self.0.lock().expect("buffer lock poisoned").clone()
    }

    /// Replace the value (shape and dtype are the caller's responsibility; checkpoint
    /// loading validates them).
    pub fn set(&self, t: Tensor) {
        *self.0.lock().expect("buffer lock poisoned") = t.detach();
    }
}

/// Callback receiving `(name, parameter)`.
pub type ParamVisitor<'a> = dyn FnMut(&str, &Tensor) + 'a;
/// Callback receiving `(name, buffer)`.
pub type BufferVisitor<'a> = dyn FnMut(&str, &Buffer) + 'a;
/// Callback receiving `(name, norm)` for every norm site of a module, mutably.
pub type NormVisitor<'a> = dyn FnMut(&str, &mut Norm) + 'a;

/// Join a name prefix and a child name with a dot.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// What every layer and model implements.
pub trait Module {
    /// Call `f` for every parameter with its full name under `prefix`.
    fn visit_params(&self, prefix: &str, f: &mut ParamVisitor<'_>);

    /// Call `f` for every buffer with its full name under `prefix` (default: none).
    fn visit_buffers(&self, _prefix: &str, _f: &mut BufferVisitor<'_>) {}

    /// Switch training (`true`) or evaluation mode (default: stateless, no-op).
    fn set_train(&mut self, _train: bool) {}

    /// Call `f` for every norm site ([`Norm`]) with its full name under `prefix`
    /// (`blocks.0.norm1`), mutably (default: none). What attaches statistics tracing to a
    /// whole model ([`Traceable`](crate::norm::Traceable)) without the norms knowing the
    /// model.
    fn visit_norms_mut(&mut self, _prefix: &str, _f: &mut NormVisitor<'_>) {}

    /// All parameters with their names.
    fn named_params(&self) -> Vec<(String, Tensor)> {
        let mut v = Vec::new();
        self.visit_params("", &mut |n, t| v.push((n.to_string(), t.clone())));
        v
    }

    /// All buffers with their names.
    fn named_buffers(&self) -> Vec<(String, Buffer)> {
        let mut v = Vec::new();
        self.visit_buffers("", &mut |n, b| v.push((n.to_string(), b.clone())));
        v
    }

    /// Total number of parameter elements.
    fn param_count(&self) -> usize {
        self.named_params().iter().map(|(_, t)| t.numel()).sum()
    }

    /// Clear every parameter's gradient.
    fn zero_grad(&self) {
        self.visit_params("", &mut |_, t| t.zero_grad());
    }

    /// All parameters, in visiting order (the order optimizers keep their state in).
    fn parameters(&self) -> Vec<Tensor> {
        let mut v = Vec::new();
        self.visit_params("", &mut |_, t| v.push(t.clone()));
        v
    }

    /// Training mode: dropout active, batch statistics used and running statistics updated.
    fn train(&mut self) {
        self.set_train(true);
    }

    /// Evaluation mode: dropout off, running statistics used and left unchanged.
    fn eval(&mut self) {
        self.set_train(false);
    }
}

/// Make `t` a trainable parameter: a fresh gradient leaf sharing `t`'s data.
pub fn param(t: Tensor) -> Tensor {
    t.detach().requires_grad()
}

/// Convenience for `Result`-returning module constructors.
pub type ModuleResult<M> = Result<M>;
