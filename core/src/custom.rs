//! The public custom-op API: differentiable functions with a hand-written backward.
//!
//! Implement [`CustomOp`] and call [`apply`]. The forward sees detached inputs and
//! runs with recording off, so it may use any tensor op (or read data to the host);
//! whatever it needs later it keeps in `self`. The backward consumes the op and
//! returns one optional gradient per input. Core has no special case for any layer:
//! the nn crate's Unified Normalization and PowerNorm are written with this API,
//! exactly as a user would write theirs.
//!
//! Higher-order gradients: a `create_graph` backward calls
//! [`CustomOp::differentiable_backward`] when the op provides it (the gradient in
//! recorded ops of the attached inputs); without it the op is first-order only, and a
//! second backward through its gradients is an error naming it.
//!
//! ```
//! use unigrad_core::{custom::{apply, CustomOp}, Result, Tensor};
//!
//! /// y = x³ with a hand-written gradient 3x².
//! struct Cube { x: Option<Tensor> }
//! impl CustomOp for Cube {
//!     fn name(&self) -> String { "cube".into() }
//!     fn forward(&mut self, inputs: &[Tensor]) -> Result<Tensor> {
//!         self.x = Some(inputs[0].clone());
//!         inputs[0].powf(3.0)
//!     }
//!     fn backward(self: Box<Self>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
//!         let x = self.x.expect("forward ran");
//!         Ok(vec![Some(g.mul(&x.sqr()?.mul_scalar(3.0)?)?)])
//!     }
//!     // optional: the same gradient in recorded ops of the attached input, so that
//!     // gradients of gradients (create_graph) go through this op
//!     fn differentiable_backward(&self, inputs: &[Tensor], g: &Tensor)
//!         -> Option<Result<Vec<Option<Tensor>>>> {
//!         Some(inputs[0].sqr().and_then(|x2| Ok(vec![Some(g.mul(&x2.mul_scalar(3.0)?)?)])))
//!     }
//! }
//! # fn main() {}
//! ```

use crate::autograd::{is_grad_enabled, no_grad, not_twice_differentiable, record};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::sync::Mutex;

/// A differentiable function with its own backward and saved state.
pub trait CustomOp: Send + 'static {
    /// Name used in errors and anomaly reports.
    fn name(&self) -> String;

    /// Compute the output from detached inputs (recording is off). Save what the
    /// backward needs in `self`.
    fn forward(&mut self, inputs: &[Tensor]) -> Result<Tensor>;

    /// Map the output's gradient to one optional gradient per input (same shape and
    /// dtype as that input). Runs at most once, with recording off.
    fn backward(self: Box<Self>, grad_output: &Tensor) -> Result<Vec<Option<Tensor>>>;

    /// The backward written in recorded tensor ops, for higher-order gradients: called
    /// instead of [`CustomOp::backward`] when the backward pass is itself recorded
    /// (`create_graph`), with the op's `inputs` *attached* (their history intact) and
    /// a `grad_output` that may have history too. Compute the gradients from `inputs`
    /// and `grad_output` with public tensor ops only (state saved in `self` is
    /// detached: a gradient computed from it is a constant to the next backward); it
    /// may run any number of times.
    ///
    /// The default, `None`, declares the op not twice differentiable: a recorded
    /// backward then computes the first-order gradients with [`CustomOp::backward`]
    /// and any backward through *those* gradients is an error naming the op, never a
    /// silently wrong second derivative.
    fn differentiable_backward(&self, inputs: &[Tensor], grad_output: &Tensor) -> Option<Result<Vec<Option<Tensor>>>> {
        let _ = (inputs, grad_output);
        None
    }
}

/// Run `op` on `inputs` and record it for autograd. An output that is not floating
/// point (an `i64` result) is returned without history: it is never differentiable,
/// and its backward is never called.
///
/// The op's state is consumed by its first [`CustomOp::backward`]; a second backward
/// through the same node (`retain_graph`, or the second pass of a higher-order
/// gradient) needs [`CustomOp::differentiable_backward`], which borrows the op, and is
/// otherwise an error naming the op.
pub fn apply<O: CustomOp>(mut op: O, inputs: &[&Tensor]) -> Result<Tensor> {
    let detached: Vec<Tensor> = inputs.iter().map(|t| t.detach()).collect();
    let out = no_grad(|| op.forward(&detached))?;
    let name = op.name();
    let n = inputs.len();
    let op_name = name.clone();
    let attached: Vec<Tensor> = inputs.iter().map(|t| (*t).clone()).collect();
    let op = Mutex::new(Some(Box::new(op)));
    record(
        &name,
        out.detach(),
        inputs,
        Box::new(move |g| {
            let mut slot = op.lock().unwrap_or_else(|e| e.into_inner());
            let recorded = is_grad_enabled();
            let differentiable = match slot.as_ref() {
                Some(op) if recorded => op.differentiable_backward(&attached, g),
                Some(_) => None,
                None => {
                    return Err(Error::invalid(
                        "backward",
                        format!(
                            "custom op {op_name}: its backward already ran and consumed its saved state, so a second \
                             backward through it (retain_graph, or a gradient of a gradient) is not available; \
                             implement CustomOp::differentiable_backward to allow it"
                        ),
                    ))
                }
            };
            let grads = match differentiable {
                Some(grads) => grads?,
                None => {
                    let op = slot.take().expect("checked above");
                    let grads = no_grad(|| op.backward(g))?;
                    let refs: Vec<&Tensor> = attached.iter().chain(std::iter::once(g)).collect();
                    not_twice_differentiable(&op_name, grads, &refs)?
                }
            };
            if grads.len() != n {
                return Err(Error::invalid(
                    "custom op",
                    format!("{op_name}: backward returned {} gradients for {n} inputs", grads.len()),
                ));
            }
            Ok(grads)
        }),
    )
}
