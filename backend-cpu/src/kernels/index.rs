//! Index kernels: `index_select` / `index_add` along one dim, and `gather` /
//! `scatter_add` (per-element indices). Every index is bounds-checked before any
//! write, so a bad id is an error, not memory corruption.

use super::view::dense_cow;
use crate::pool::{self, Pooled};
use unigrad_core::{Error, Layout, Result};

/// `dim` must name an axis of `shape`.
fn check_dim(op: &'static str, shape: &[usize], dim: usize) -> Result<()> {
    if dim >= shape.len() {
        return Err(Error::invalid(
            op,
            format!("dim {dim} out of range for shape {shape:?}"),
        ));
    }
    Ok(())
}

/// `ids_shape` must match `shape` on every axis but `dim`, and `ids` hold its elements.
fn check_ids_shape(op: &'static str, shape: &[usize], ids_shape: &[usize], ids: usize, dim: usize) -> Result<()> {
    let ok = ids_shape.len() == shape.len()
        && ids_shape
            .iter()
            .zip(shape)
            .enumerate()
            .all(|(i, (a, b))| i == dim || a == b)
        && ids_shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) == Some(ids);
    if !ok {
        return Err(Error::ShapeMismatch {
            op,
            lhs: shape.to_vec(),
            rhs: ids_shape.to_vec(),
        });
    }
    Ok(())
}

/// The dense destination must hold exactly `shape`'s elements.
fn check_dst(op: &'static str, len: usize, shape: &[usize]) -> Result<()> {
    if Some(len) != shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) {
        return Err(Error::invalid(
            op,
            format!("destination of {len} elements does not match shape {shape:?}"),
        ));
    }
    Ok(())
}

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
pub fn index_select<T: Pooled + Sync>(src: &[T], ls: &Layout, ids: &[i64], dim: usize) -> Result<Vec<T>> {
    check_dim("index_select", ls.shape(), dim)?;
    let (outer, size, inner) = split(ls.shape(), dim);
    check_ids("index_select", ids, size, ls.shape())?;
    let src = dense_cow(src, ls);
    // every element is written below
    let mut out = pool::take::<T>(outer * ids.len() * inner);
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
    check_dim("index_add", dst_shape, dim)?;
    check_dst("index_add", dst.len(), dst_shape)?;
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
pub fn gather<T: Pooled + Sync>(
    src: &[T],
    ls: &Layout,
    ids: &[i64],
    ids_shape: &[usize],
    dim: usize,
) -> Result<Vec<T>> {
    check_dim("gather", ls.shape(), dim)?;
    check_ids_shape("gather", ls.shape(), ids_shape, ids.len(), dim)?;
    let (outer, size, inner) = split(ls.shape(), dim);
    let (_, n, _) = split(ids_shape, dim);
    check_ids("gather", ids, size, ls.shape())?;
    let src = dense_cow(src, ls);
    // every element is written below
    let mut out = pool::take::<T>(ids.len());
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
    check_dim("scatter_add", dst_shape, dim)?;
    check_dst("scatter_add", dst.len(), dst_shape)?;
    check_ids_shape("scatter_add", dst_shape, ids_shape, ids.len(), dim)?;
    if ls.numel() != ids.len() {
        return Err(Error::ShapeMismatch {
            op: "scatter_add",
            lhs: ids_shape.to_vec(),
            rhs: ls.shape().to_vec(),
        });
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_gather_and_their_adjoints() {
        // src [2, 3, 2] viewed through a permuted layout to exercise dense_cow
        let src: Vec<f64> = (0..12).map(|v| v as f64).collect();
        let l = Layout::contiguous(&[2, 3, 2]);
        let out = index_select(&src, &l, &[2, 0, 2], 1).unwrap();
        assert_eq!(out, vec![4., 5., 0., 1., 4., 5., 10., 11., 6., 7., 10., 11.]);
        let mut dst = vec![0.0; 12];
        index_add(
            &mut dst,
            &[2, 3, 2],
            1,
            &[2, 0, 2],
            &out,
            &Layout::contiguous(&[2, 3, 2]),
        )
        .unwrap();
        assert_eq!(dst, vec![0., 1., 0., 0., 8., 10., 6., 7., 0., 0., 20., 22.]);
        // gather along dim 1 of [2, 3]
        let s2: Vec<f64> = (0..6).map(|v| v as f64).collect();
        let g = gather(&s2, &Layout::contiguous(&[2, 3]), &[2, 2, 0, 1], &[2, 2], 1).unwrap();
        assert_eq!(g, vec![2., 2., 3., 4.]);
        let mut d = vec![0.0; 6];
        scatter_add(
            &mut d,
            &[2, 3],
            1,
            &[2, 2, 0, 1],
            &[2, 2],
            &g,
            &Layout::contiguous(&[2, 2]),
        )
        .unwrap();
        assert_eq!(d, vec![0., 0., 4., 3., 4., 0.]);
        // transposed source
        let t = gather(&s2, &Layout::new(&[3, 2], &[1, 3], 0), &[1, 0], &[1, 2], 0).unwrap();
        assert_eq!(t, vec![1., 3.]);
    }

    #[test]
    fn bad_ids_dims_and_shapes_are_errors_not_panics() {
        let s: Vec<f64> = vec![0.0; 6];
        let l = Layout::contiguous(&[2, 3]);
        assert!(index_select(&s, &l, &[3], 1).is_err());
        assert!(index_select(&s, &l, &[-1], 1).is_err());
        assert!(index_select(&s, &l, &[0], 2).is_err());
        assert!(gather(&s, &l, &[0, 0, 0], &[3, 1], 1).is_err());
        assert!(gather(&s, &l, &[0, 0], &[2, 2], 1).is_err());
        assert!(gather(&s, &l, &[0, 0], &[2, 1], 5).is_err());
        let mut d = vec![0.0; 6];
        let src = [1.0, 2.0];
        assert!(scatter_add(
            &mut d,
            &[2, 3],
            1,
            &[0, 0],
            &[2, 1],
            &src[..1],
            &Layout::contiguous(&[1])
        )
        .is_err());
        assert!(scatter_add(&mut d, &[2, 3], 1, &[0, 7], &[2, 1], &src, &Layout::contiguous(&[2, 1])).is_err());
        assert!(scatter_add(&mut d, &[3, 3], 1, &[0, 0], &[2, 1], &src, &Layout::contiguous(&[2, 1])).is_err());
        assert!(index_add(&mut d, &[2, 3], 1, &[0], &src, &Layout::contiguous(&[2])).is_ok());
        assert!(index_add(&mut d, &[2, 3], 1, &[0], &src[..1], &Layout::contiguous(&[1])).is_err());
        assert_eq!(d, vec![1.0, 0.0, 0.0, 2.0, 0.0, 0.0]);
    }
}
