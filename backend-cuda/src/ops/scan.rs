//! The scan family: `cumsum` (prefix or suffix sums) along one axis of any strided
//! view, one thread per line, launched by the sort family's line launcher. Kernels
//! in `kernels/scan.cu`.

use super::sort::{line_kernel, LineOut};
use crate::backend::CudaBackend;
use unigrad_core::backend::{BackendStorage, BoxStorage};
use unigrad_core::layout::Layout;
use unigrad_core::Result;

/// `Backend::cumsum`.
pub(crate) fn cumsum(
    b: &CudaBackend,
    src: &dyn BackendStorage,
    layout: &Layout,
    axis: usize,
    reverse: bool,
) -> Result<BoxStorage> {
    let rev = i32::from(reverse);
    line_kernel(b, "cumsum", "cumsum", (src, layout), axis, None, LineOut::Values, rev)
}
