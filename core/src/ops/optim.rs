//! The optim family: the fused Adam / AdamW parameter update as one backend call
//! ([`Backend::adam_update`](crate::Backend::adam_update)) instead of the ten or so
//! elementwise kernels of the composed default. It lives in core, not in an
//! optimizer, so that every backend's kernel is reached through one checked entry
//! point (and tested against the composed default by the shared suite).

use super::check_float;
use super::view::dense;
use crate::backend::AdamStep;
use crate::error::{Error, Result};
use crate::tensor::{check_same_meta, Tensor};

/// One Adam / AdamW update of `param` from its gradient `grad` and moments `m`, `v`
/// (absent: zeros, the first step), with the constants of `h` (see [`AdamStep`]).
/// Returns the new `(param, m, v)` as fresh tensors and writes nothing in place; with
/// `h.lr == 0` the returned parameter equals `param`. Records nothing (optimizers run
/// under `no_grad`).
///
/// All operands must be float tensors of `param`'s shape, dtype and device; a
/// mismatch is an error naming `adam_update` and both shapes, dtypes or devices.
pub fn adam_update(
    param: &Tensor,
    grad: &Tensor,
    m: Option<&Tensor>,
    v: Option<&Tensor>,
    h: &AdamStep,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "adam_update";
    check_float(OP, param)?;
    for t in [Some(grad), m, v].into_iter().flatten() {
        check_same_meta(OP, param, t)?;
    }
    if !(h.bias_correction1 > 0.0 && h.bias_correction2 > 0.0) {
        return Err(Error::invalid(
            OP,
            format!(
                "bias corrections must be > 0, got {} and {}",
                h.bias_correction1, h.bias_correction2
            ),
        ));
    }
    let (p, g) = (dense(param)?, dense(grad)?);
    let (m, v) = (m.map(dense).transpose()?, v.map(dense).transpose()?);
    let dev = p.device();
    let (sm, sv) = (m.as_ref().map(|t| t.storage()), v.as_ref().map(|t| t.storage()));
    let (np, nm, nv) =
        dev.backend()
            .adam_update(&*p.storage(), &*g.storage(), sm.as_deref(), sv.as_deref(), p.numel(), h)?;
    let shape = p.shape();
    Ok((
        Tensor::from_backend_storage(np, shape, dev)?,
        Tensor::from_backend_storage(nm, shape, dev)?,
        Tensor::from_backend_storage(nv, shape, dev)?,
    ))
}
