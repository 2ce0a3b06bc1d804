//! The sort family's CPU kernels: `arg_reduce` (argmax / argmin) and `argsort`,
//! the row algorithms of `unigrad_core::ops::sort::rows` run on the storage's own
//! memory (dense views are borrowed, strided ones copied once), lines split over
//! rayon when the tensor is large.

use super::view::dense_cow;
use crate::storage::CpuStorage;
use crate::strided::par_threshold;
use rayon::prelude::*;
use unigrad_core::backend::host_rows;
use unigrad_core::ops::sort::rows;
use unigrad_core::{Layout, ReduceOp, Result};

/// Run `f` on each block of `outer` lines (`[lines, n, inner]` elements of input,
/// `per_line` elements of output each), in parallel when the input is large.
pub(crate) fn by_lines<T: Sync, O: Send + Default + Clone>(
    x: &[T],
    (outer, n, inner): (usize, usize, usize),
    per_line: usize,
    f: impl Fn(&[T], (usize, usize, usize)) -> Vec<O> + Sync,
) -> Vec<O> {
    let line = n * inner;
    if outer <= 1 || x.len() < par_threshold() || line == 0 {
        return f(x, (outer, n, inner));
    }
    let mut out = vec![O::default(); outer * per_line];
    out.par_chunks_mut(per_line)
        .zip(x.par_chunks(line))
        .for_each(|(o, xs)| o.clone_from_slice(&f(xs, (1, n, inner))));
    out
}

/// `Backend::arg_reduce`: dense i64 indices, `axis` of size 1.
pub fn arg_reduce(op: ReduceOp, src: &CpuStorage, l: &Layout, axis: usize) -> Result<CpuStorage> {
    let dims = host_rows::check("arg_reduce", l.shape(), axis, Some(op))?;
    let inner = dims.2;
    Ok(CpuStorage::I64(match src {
        CpuStorage::F32(v) => by_lines(&dense_cow(v, l), dims, inner, |x, d| rows::arg_reduce(op, x, d)),
        CpuStorage::F64(v) => by_lines(&dense_cow(v, l), dims, inner, |x, d| rows::arg_reduce(op, x, d)),
        CpuStorage::I64(v) => by_lines(&dense_cow(v, l), dims, inner, |x, d| rows::arg_reduce(op, x, d)),
    }))
}

/// `Backend::argsort`: dense i64 indices of the input's shape.
pub fn argsort(src: &CpuStorage, l: &Layout, axis: usize, descending: bool) -> Result<CpuStorage> {
    let dims = host_rows::check("argsort", l.shape(), axis, None)?;
    let line = dims.1 * dims.2;
    Ok(CpuStorage::I64(match src {
        CpuStorage::F32(v) => by_lines(&dense_cow(v, l), dims, line, |x, d| rows::argsort(x, d, descending)),
        CpuStorage::F64(v) => by_lines(&dense_cow(v, l), dims, line, |x, d| rows::argsort(x, d, descending)),
        CpuStorage::I64(v) => by_lines(&dense_cow(v, l), dims, line, |x, d| rows::argsort(x, d, descending)),
    }))
}
