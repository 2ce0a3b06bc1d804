//! The scan family's CPU kernel: `cumsum` (prefix or suffix sums along one axis),
//! the row algorithm of `unigrad_core::ops::scan::rows` run on the storage's own
//! memory, lines split over rayon when the tensor is large.

use super::sort::by_lines;
use super::view::dense_cow;
use crate::storage::CpuStorage;
use unigrad_core::backend::host_rows;
use unigrad_core::ops::scan::rows;
use unigrad_core::{Layout, Result};

/// `Backend::cumsum`: dense output in the input's dtype.
pub fn cumsum(src: &CpuStorage, l: &Layout, axis: usize, reverse: bool) -> Result<CpuStorage> {
    let dims = host_rows::check("cumsum", l.shape(), axis, None)?;
    let line = dims.1 * dims.2;
    Ok(match src {
        CpuStorage::F32(v) => CpuStorage::F32(by_lines(&dense_cow(v, l), dims, line, |x, d| {
            rows::cumsum(x, d, reverse)
        })),
        CpuStorage::F64(v) => CpuStorage::F64(by_lines(&dense_cow(v, l), dims, line, |x, d| {
            rows::cumsum(x, d, reverse)
        })),
        CpuStorage::I64(v) => CpuStorage::I64(by_lines(&dense_cow(v, l), dims, line, |x, d| {
            rows::cumsum(x, d, reverse)
        })),
    })
}
