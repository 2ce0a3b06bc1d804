//! The optim family: the fused Adam / AdamW update (`Backend::adam_update`), one
//! launch over dense parameter, gradient and moments. Kernels in `kernels/optim.cu`.

use crate::backend::{sfx, CudaBackend};
use crate::plan::{grid_for, BLOCK};
use crate::ptx::kargs;
use unigrad_core::backend::{AdamStep, BackendStorage, BoxStorage};
use unigrad_core::Result;

/// `Backend::adam_update`: the new `(param, m, v)` as fresh storage; absent moments
/// are zeros (the first step).
pub(crate) fn adam_update(
    b: &CudaBackend,
    (param, grad): (&dyn BackendStorage, &dyn BackendStorage),
    (m, v): (Option<&dyn BackendStorage>, Option<&dyn BackendStorage>),
    len: usize,
    h: &AdamStep,
) -> Result<(BoxStorage, BoxStorage, BoxStorage)> {
    const OP: &str = "adam_update";
    b.gpu().enter()?;
    let dtype = param.dtype();
    let ps = b.dense_operand(OP, param, len, dtype)?;
    let gs = b.dense_operand(OP, grad, len, dtype)?;
    let ms = m.map(|m| b.dense_operand(OP, m, len, dtype)).transpose()?;
    let vs = v.map(|v| b.dense_operand(OP, v, len, dtype)).transpose()?;
    let (np, nm, nv) = (b.alloc(len, dtype)?, b.alloc(len, dtype)?, b.alloc(len, dtype)?);
    if len > 0 {
        let (decay, a, c) = h.folded();
        let wd_l2 = if h.decoupled { 0.0 } else { h.weight_decay };
        let (one_m_b1, one_m_b2, step) = (1.0 - h.beta1, 1.0 - h.beta2, u32::from(h.lr != 0.0));
        let (pp, gp, mp, vp) = (ps.ptr, gs.ptr, ms.map_or(0, |s| s.ptr), vs.map_or(0, |s| s.ptr));
        let (npp, nmp, nvp, n) = (np.ptr, nm.ptr, nv.ptr, len as u64);
        let name = format!("adam_{}", sfx(dtype));
        let grid = grid_for(n, BLOCK, b.gpu().sm_count);
        let params = kargs![pp, gp, mp, vp, npp, nmp, nvp, n, wd_l2, one_m_b1, one_m_b2, decay, a, c, step];
        // SAFETY: params match adam_*(p, g, m, v, np, nm, nv, u64, double x 6, u32);
        // every buffer holds `len` elements (m and v, when absent, are null and unread).
        unsafe { b.launch(&name, [grid, 1, 1], BLOCK, &params)? };
    }
    Ok((Box::new(np), Box::new(nm), Box::new(nv)))
}
