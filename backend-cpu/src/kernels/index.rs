//! Index kernels: `index_select` / `index_add` along one dim, and `gather` /
//! `scatter_add` (per-element indices). Every index is bounds-checked before any
//! write, so a bad id is an error, not memory corruption.

use super::copy::dense_cow;
use unigrad_core::{Error, Layout, Result};

/// Split a shape at `dim` into (outer, size, inner) element counts.
fn split(shape: &[usize], dim: usize) -> (usize, usize, usize) {
    (
        shape[..dim].iter().product(),
        shape[dim],
        shape[dim + 1..].iter().product(),
    )
}

/// Check every id against `size`.
pub fn check_ids(op: &'static str, ids: &[i64], size: usize, shape: &[usize]) -> Result<()> {
    if let Some(&bad) = ids.iter().find(|&&i| i < 0 || i as usize >= size) {
        return Err(Error::IndexOutOfRange {
            op,
            index: bad,
            size,
            shape: shape.to_vec(),
        });
    }
    Ok(())
}

/// `out[o, i, :] = src[o, ids[i], :]`.
pub fn index_select<T: Copy + Default + Send + Sync>(
    src: &[T],
    ls: &Layout,
    ids: &[i64],
    dim: usize,
) -> Result<Vec<T>> {
    let (outer, size, inner) = split(ls.shape(), dim);
    check_ids("index_select", ids, size, ls.shape())?;
    let src = dense_cow(src, ls);
    let mut out = vec![T::default(); outer * ids.len() * inner];
    for o in 0..outer {
        for (i, &id) in ids.iter().enumerate() {
            let s = (o * size + id as usize) * inner;
            let d = (o * ids.len() + i) * inner;
            out[d..d + inner].copy_from_slice(&src[s..s + inner]);
        }
    }
    Ok(out)
}

/// `dst[o, ids[i], :] += src[o, i, :]` with `dst` dense of `dst_shape`.
pub fn index_add<T: crate::elem::Float>(
    dst: &mut [T],
    dst_shape: &[usize],
    dim: usize,
    ids: &[i64],
    src: &[T],
    ls: &Layout,
) -> Result<()> {
    let (outer, size, inner) = split(dst_shape, dim);
    check_ids("index_add", ids, size, dst_shape)?;
    if ls.numel() != outer * ids.len() * inner {
        return Err(Error::ShapeMismatch {
            op: "index_add",
            lhs: dst_shape.to_vec(),
            rhs: ls.shape().to_vec(),
        });
    }
    let src = dense_cow(src, ls);
    for o in 0..outer {
        for (i, &id) in ids.iter().enumerate() {
            let d = (o * size + id as usize) * inner;
            let s = (o * ids.len() + i) * inner;
            for (a, &b) in dst[d..d + inner].iter_mut().zip(&src[s..s + inner]) {
                *a = *a + b;
            }
        }
    }
    Ok(())
}

/// `out[o, j, k] = src[o, ids[o, j, k], k]`; `ids` dense with the output's shape.
pub fn gather<T: Copy + Default>(
    src: &[T],
    ls: &Layout,
    ids: &[i64],
    ids_shape: &[usize],
    dim: usize,
) -> Result<Vec<T>> {
    let (outer, size, inner) = split(ls.shape(), dim);
    let (_, n, _) = split(ids_shape, dim);
    check_ids("gather", ids, size, ls.shape())?;
    let src = dense_cow(src, ls);
    let mut out = vec![T::default(); ids.len()];
    for o in 0..outer {
        for j in 0..n {
            for k in 0..inner {
                let at = (o * n + j) * inner + k;
                out[at] = src[(o * size + ids[at] as usize) * inner + k];
            }
        }
    }
    Ok(out)
}

/// `dst[o, ids[o, j, k], k] += src[o, j, k]`.
pub fn scatter_add<T: crate::elem::Float>(
    dst: &mut [T],
    dst_shape: &[usize],
    dim: usize,
    ids: &[i64],
    ids_shape: &[usize],
    src: &[T],
    ls: &Layout,
) -> Result<()> {
    let (outer, size, inner) = split(dst_shape, dim);
    let (_, n, _) = split(ids_shape, dim);
    check_ids("scatter_add", ids, size, dst_shape)?;
    let src = dense_cow(src, ls);
    for o in 0..outer {
        for j in 0..n {
            for k in 0..inner {
                let at = (o * n + j) * inner + k;
                let d = &mut dst[(o * size + ids[at] as usize) * inner + k];
                *d = *d + src[at];
            }
        }
    }
    Ok(())
}
