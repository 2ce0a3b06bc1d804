//! Parameter initialisers.
//!
//! Every initialiser draws from the global seeded generator of `unigrad-core`
//! ([`unigrad_core::manual_seed`]) on the host and copies to the device, so one seed
//! gives the same model on every backend. Each returns a fresh gradient leaf.

use crate::module::param;
use unigrad_core::{DType, Device, Result, Tensor};

/// Normal samples with mean 0 and standard deviation `std`.
pub fn normal(shape: &[usize], std: f64, dtype: DType, dev: &Device) -> Result<Tensor> {
    Ok(param(Tensor::randn(shape, dtype, dev)?.mul_scalar(std)?))
}

/// Uniform samples in `[-bound, bound)`.
pub fn uniform(shape: &[usize], bound: f64, dtype: DType, dev: &Device) -> Result<Tensor> {
    Ok(param(Tensor::rand_uniform(shape, -bound, bound, dtype, dev)?))
}

/// Zeros.
pub fn zeros(shape: &[usize], dtype: DType, dev: &Device) -> Result<Tensor> {
    Ok(param(Tensor::zeros(shape, dtype, dev)?))
}

/// Ones.
pub fn ones(shape: &[usize], dtype: DType, dev: &Device) -> Result<Tensor> {
    Ok(param(Tensor::ones(shape, dtype, dev)?))
}

/// Replace a parameter's values in place (keeps its identity, grad slot and name),
/// e.g. to apply a model-wide initialisation scheme after construction.
pub fn reinit(p: &Tensor, values: &Tensor) -> Result<()> {
    unigrad_core::no_grad(|| p.assign(values))
}
