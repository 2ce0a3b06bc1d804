//! The public custom-op API: differentiable functions with a hand-written backward.
//!
//! Implement [`CustomOp`] and call [`apply`]. The forward sees detached inputs and
//! runs with recording off, so it may use any tensor op (or read data to the host);
//! whatever it needs later it keeps in `self`. The backward consumes the op and
//! returns one optional gradient per input. Core has no special case for any layer:
//! the nn crate's Unified Normalization and PowerNorm are written with this API,
//! exactly as a user would write theirs.
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
//! }
//! # fn main() {}
//! ```

use crate::autograd::{no_grad, record};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

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
}

/// Run `op` on `inputs` and record it for autograd. An output that is not floating
/// point (an `i64` result) is returned without history: it is never differentiable,
/// and its backward is never called.
pub fn apply<O: CustomOp>(mut op: O, inputs: &[&Tensor]) -> Result<Tensor> {
    let detached: Vec<Tensor> = inputs.iter().map(|t| t.detach()).collect();
    let out = no_grad(|| op.forward(&detached))?;
    let name = op.name();
    let n = inputs.len();
    let op_name = name.clone();
    record(
        &name,
        out.detach(),
        inputs,
        Box::new(move |g| {
            let grads = Box::new(op).backward(g)?;
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
