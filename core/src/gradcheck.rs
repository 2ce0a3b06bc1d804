//! Numerical gradient checking, for our ops and for users' own.
//!
//! [`gradcheck`] compares the gradients autograd computes for a function with
//! central finite differences in f64. The function's output may have any shape: it
//! is reduced to a scalar with fixed random weights, so every output element's
//! gradient is exercised (a plain sum can hide errors that cancel).
//!
//! [`gradgradcheck`] does the same for second derivatives: it checks the gradient
//! computed by a recorded (`create_graph`) backward, as a function of the inputs and
//! of the upstream gradient, by central differences of that gradient.

use crate::autograd::{enable_grad, grad, no_grad};
use crate::dtype::{DType, HostData};
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// Settings for [`gradcheck`].
#[derive(Clone, Debug)]
pub struct GradcheckOptions {
    /// Finite-difference step.
    pub eps: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance.
    pub rtol: f64,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions {
            eps: 1e-6,
            atol: 1e-7,
            rtol: 1e-6,
        }
    }
}

/// Worst errors for one input.
#[derive(Clone, Debug)]
pub struct InputReport {
    /// Largest `|analytic − numeric|`.
    pub max_abs_err: f64,
    /// Largest `|analytic − numeric| / max(|numeric|, 1e-12)` among elements that failed
    /// the absolute tolerance (0 when none did).
    pub max_rel_err: f64,
    /// Flat index of the worst element.
    pub worst_index: usize,
    /// True when every element satisfies `|a − n| ≤ atol + rtol·|n|`.
    pub passed: bool,
}

/// Result of a gradient check: one report per input.
#[derive(Clone, Debug)]
pub struct GradcheckReport {
    /// Per-input reports, in input order.
    pub inputs: Vec<InputReport>,
}

impl GradcheckReport {
    /// True when every input passed.
    pub fn passed(&self) -> bool {
        self.inputs.iter().all(|r| r.passed)
    }
}

/// Check `f`'s gradients with respect to each of `inputs` (f64 tensors) by central
/// differences. Returns the report: [`GradcheckReport::passed`] says whether every
/// input passed, and [`GradcheckReport::inputs`] holds the worst errors per input for
/// a failure message. Inputs are copied into fresh leaves, so `inputs` themselves
/// need not require gradients.
pub fn gradcheck(
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    opts: &GradcheckOptions,
) -> Result<GradcheckReport> {
    for t in inputs {
        if t.dtype() != DType::F64 {
            return Err(Error::invalid(
                "gradcheck",
                format!(
                    "inputs must be f64 for tight checks, got {} (shape {:?})",
                    t.dtype(),
                    t.shape()
                ),
            ));
        }
    }
    let base: Vec<Vec<f64>> = inputs.iter().map(|t| t.to_vec_f64()).collect::<Result<_>>()?;
    let leaves: Vec<Tensor> = inputs
        .iter()
        .zip(&base)
        .map(|(t, v)| Tensor::from_f64s(v, t.shape(), DType::F64, t.device()).map(|x| x.requires_grad()))
        .collect::<Result<_>>()?;
    let out = f(&leaves)?;
    let mut rng = Rng::new(0xC0FFEE);
    let w: Vec<f64> = (0..out.numel()).map(|_| rng.uniform() + 0.5).collect();
    let wt = Tensor::from_f64s(&w, out.shape(), out.dtype(), out.device())?;
    let loss = out.mul(&wt)?.sum_all()?;
    loss.backward()?;
    let objective = |xs: &[Tensor]| -> Result<f64> {
        no_grad(|| {
            let o = f(xs)?;
            let v = o.to_vec_f64()?;
            Ok(v.iter().zip(&w).map(|(a, b)| a * b).sum())
        })
    };
    let mut reports = Vec::new();
    for (i, t) in inputs.iter().enumerate() {
        let analytic = match leaves[i].grad() {
            Some(g) => g.to_vec_f64()?,
            None => vec![0.0; t.numel()],
        };
        let mut rep = InputReport {
            max_abs_err: 0.0,
            max_rel_err: 0.0,
            worst_index: 0,
            passed: true,
        };
        for j in 0..t.numel() {
            let eval = |delta: f64| -> Result<f64> {
                let mut v = base[i].clone();
                v[j] += delta;
                let xs: Vec<Tensor> = inputs
                    .iter()
                    .enumerate()
                    .map(|(k, x)| {
                        if k == i {
                            Tensor::from_host(HostData::F64(v.clone()), x.shape(), x.device())
                        } else {
                            Tensor::from_f64s(&base[k], x.shape(), DType::F64, x.device())
                        }
                    })
                    .collect::<Result<_>>()?;
                objective(&xs)
            };
            let numeric = (eval(opts.eps)? - eval(-opts.eps)?) / (2.0 * opts.eps);
            let abs = (analytic[j] - numeric).abs();
            if abs > rep.max_abs_err {
                rep.max_abs_err = abs;
                rep.worst_index = j;
            }
            if abs > opts.atol + opts.rtol * numeric.abs() {
                rep.passed = false;
            }
            if abs > opts.atol {
                rep.max_rel_err = rep.max_rel_err.max(abs / numeric.abs().max(1e-12));
            }
        }
        reports.push(rep);
    }
    Ok(GradcheckReport { inputs: reports })
}

/// Check `f`'s second derivatives (PyTorch's `gradgradcheck`). With a fixed random
/// `v` of `f`'s output shape, the first gradient `G(x, v) = ∂(f(x)·v)/∂x` is computed
/// by a recorded backward ([`grad`] with `create_graph`), and [`gradcheck`] then
/// checks `G` itself by central differences with respect to every input **and** to
/// `v`: the analytic side is autograd through the recorded backward (Hessian-vector
/// products for the inputs, the first-order Jacobian again for `v`), the numeric side
/// differences of the first gradient. The report has one entry per input and a last
/// one for `v`. Inputs must be f64; an op whose backward is not twice differentiable
/// makes this an error naming it.
pub fn gradgradcheck(
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    opts: &GradcheckOptions,
) -> Result<GradcheckReport> {
    if inputs.iter().any(|t| t.dtype() != DType::F64) {
        // the same message as gradcheck's
        return gradcheck(&f, inputs, opts);
    }
    let out = no_grad(|| f(inputs))?;
    let mut rng = Rng::new(0xBEEF);
    let v: Vec<f64> = (0..out.numel()).map(|_| rng.uniform() * 2.0 - 1.0).collect();
    let v = Tensor::from_f64s(&v, out.shape(), DType::F64, out.device())?;
    let n = inputs.len();
    let first_grad = |xs: &[Tensor]| -> Result<Tensor> {
        // runs inside gradcheck's no_grad for the numeric side: record regardless
        enable_grad(|| {
            // leaves where gradcheck passed plain tensors (its numeric evaluations)
            let xs: Vec<Tensor> = xs
                .iter()
                .map(|x| {
                    if x.tracks_grad() {
                        x.clone()
                    } else {
                        x.detach().requires_grad()
                    }
                })
                .collect();
            let out = f(&xs[..n])?;
            let grads = if out.tracks_grad() {
                let inputs: Vec<&Tensor> = xs[..n].iter().collect();
                grad(&[&out], &[&xs[n]], &inputs, true)?
            } else {
                vec![None; n]
            };
            let flat: Vec<Tensor> = grads
                .into_iter()
                .zip(&xs[..n])
                .map(|(g, x)| match g {
                    Some(g) => g.reshape(&[x.numel()]),
                    None => Tensor::zeros(&[x.numel()], DType::F64, x.device()),
                })
                .collect::<Result<_>>()?;
            let refs: Vec<&Tensor> = flat.iter().collect();
            Tensor::cat(&refs, 0)
        })
    };
    let mut all: Vec<Tensor> = inputs.to_vec();
    all.push(v);
    gradcheck(first_grad, &all, opts)
}
