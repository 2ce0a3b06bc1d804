//! The optim family: the fused Adam / AdamW update, the override of
//! `Backend::adam_update`. One pass over the parameter, its gradient and both moments
//! instead of the ten or so elementwise kernels of the composed default in core, with
//! the same arithmetic ([`AdamStep::folded`]), so both agree to rounding.

use crate::elem::Float;
use crate::pool;
use crate::simd::vectorized;
use crate::storage::{need, opt_operand, slice_of, unsupported, CpuStorage, StorageElem};
use crate::strided::par_threshold;
use rayon::prelude::*;
use unigrad_core::{AdamStep, Result};

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn adam_chunk<T: Float>(
    p: &[T],
    g: &[T],
    m: Option<&[T]>,
    v: Option<&[T]>,
    np: &mut [T],
    nm: &mut [T],
    nv: &mut [T],
    k: [T; 7],
    step: bool,
) {
    let [wd_l2, one_m_b1, one_m_b2, decay, a, c, _] = k;
    for i in 0..p.len() {
        let gi = g[i] + wd_l2 * p[i];
        let mi = match m {
            Some(m) => m[i] + (gi - m[i]) * one_m_b1,
            None => gi * one_m_b1,
        };
        let g2 = gi * gi;
        let vi = match v {
            Some(v) => v[i] + (g2 - v[i]) * one_m_b2,
            None => g2 * one_m_b2,
        };
        nm[i] = mi;
        nv[i] = vi;
        np[i] = if step {
            p[i] * decay - mi / (vi.sqrt() * a + c)
        } else {
            p[i]
        };
    }
}

/// One Adam / AdamW update over dense slices of one length: `(p, m, v)` after the
/// step; absent `m`, `v` are zeros. Same arithmetic as core's composed default.
pub fn adam<T: Float>(p: &[T], g: &[T], m: Option<&[T]>, v: Option<&[T]>, h: &AdamStep) -> (Vec<T>, Vec<T>, Vec<T>) {
    let len = p.len();
    let (mut np, mut nm, mut nv) = (pool::take::<T>(len), pool::take::<T>(len), pool::take::<T>(len));
    let (decay, a, c) = h.folded();
    let wd_l2 = if h.decoupled { 0.0 } else { h.weight_decay };
    let k = [wd_l2, 1.0 - h.beta1, 1.0 - h.beta2, decay, a, c, 0.0].map(T::from_f64);
    let step = h.lr != 0.0;
    const CH: usize = 1 << 14;
    let work = |i: usize, np: &mut [T], nm: &mut [T], nv: &mut [T]| {
        let r = i * CH..i * CH + np.len();
        let (m, v) = (m.map(|m| &m[r.clone()]), v.map(|v| &v[r.clone()]));
        vectorized!(adam_chunk(&p[r.clone()], &g[r.clone()], m, v, np, nm, nv, k, step))
    };
    if len >= par_threshold() {
        np.par_chunks_mut(CH)
            .zip(nm.par_chunks_mut(CH))
            .zip(nv.par_chunks_mut(CH))
            .enumerate()
            .for_each(|(i, ((a, b), c))| work(i, a, b, c));
    } else {
        for (i, ((a, b), c)) in np
            .chunks_mut(CH)
            .zip(nm.chunks_mut(CH))
            .zip(nv.chunks_mut(CH))
            .enumerate()
        {
            work(i, a, b, c);
        }
    }
    (np, nm, nv)
}

/// `Backend::adam_update` over dense storage of `len` elements: the new
/// `(param, m, v)`. Storage shorter than `len`, or operands of another dtype, are
/// errors.
pub fn adam_update(
    p: &CpuStorage,
    g: &CpuStorage,
    m: Option<&CpuStorage>,
    v: Option<&CpuStorage>,
    len: usize,
    h: &AdamStep,
) -> Result<(CpuStorage, CpuStorage, CpuStorage)> {
    fn run<T: StorageElem>(
        ps: &[T],
        [p, g]: [&CpuStorage; 2],
        m: Option<&CpuStorage>,
        v: Option<&CpuStorage>,
        len: usize,
        h: &AdamStep,
    ) -> Result<(CpuStorage, CpuStorage, CpuStorage)> {
        const OP: &str = "adam_update";
        let gs = need(OP, slice_of::<T>(OP, g, p)?, len)?;
        let (ms, vs) = (opt_operand::<T>(OP, m, p, len)?, opt_operand::<T>(OP, v, p, len)?);
        let (np, nm, nv) = adam(need(OP, ps, len)?, gs, ms, vs, h);
        Ok((T::wrap(np), T::wrap(nm), T::wrap(nv)))
    }
    match p {
        CpuStorage::F32(d) => run(d, [p, g], m, v, len, h),
        CpuStorage::F64(d) => run(d, [p, g], m, v, len, h),
        s => Err(unsupported("adam_update", s, &[len])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use unigrad_core::{Backend, DType, HostData};

    #[test]
    fn storage_shorter_than_the_length_is_an_error_not_a_panic() {
        let b = crate::CpuBackend;
        let x = b
            .from_host(&HostData::F32((0..10).map(|i| i as f32 * 0.1).collect()))
            .unwrap();
        let w = b.from_host(&HostData::F32(vec![0.5; 3])).unwrap();
        let h = AdamStep::at_step(1, 1e-3, (0.9, 0.999), 1e-8, 0.0, true);
        assert!(b.adam_update(&*x, &*w, None, None, 10, &h).is_err());
        assert!(b.adam_update(&*x, &*x, Some(&*w), None, 10, &h).is_err());
        assert!(b.adam_update(&*x, &*x, None, None, 10, &h).is_ok());
        let z = b.zeros(10, DType::F64).unwrap();
        assert!(b.adam_update(&*x, &*z, None, None, 10, &h).is_err(), "dtype mismatch");
    }
}
