//! The sort family: `arg_reduce` (argmax / argmin) and `argsort` along one axis of
//! any strided view, one thread per line. Kernels in `kernels/sort.cu`; the scan
//! family's kernels share their signature and [`line_kernel`], the launcher.

use crate::backend::{sfx, CudaBackend};
use crate::plan::{grid_for, StridedIndex, View, BLOCK};
use crate::ptx::kargs;
use unigrad_core::backend::{host_rows, BackendStorage, BoxStorage, ReduceOp};
use unigrad_core::dtype::DType;
use unigrad_core::layout::Layout;
use unigrad_core::Result;

/// Codes for `arg_reduce_*`; they match `ARG_*` in kernels/sort.cu.
fn arg_code(op: ReduceOp) -> i32 {
    if op == ReduceOp::Max {
        1
    } else {
        2
    }
}

/// What a line kernel writes: one i64 per line (`arg_reduce`), i64 of the input's
/// shape (`argsort`), or the input's dtype and shape (`cumsum`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineOut {
    PerLine,
    Indices,
    Values,
}

/// Launch `{kernel}_{dtype}(Index<1> lines, u64 axis_stride, x, y, u64 n_lines, u64 n,
/// u64 inner, int flag)`, one thread per line of `src` viewed through `layout`
/// along `axis`: `lines` indexes the shape without `axis` (line `l = o·inner + i`
/// starts at its offset) and `axis_stride` walks a line. `arg` is the arg-reduction
/// (which also rejects an empty axis), if that is the kernel.
#[allow(clippy::too_many_arguments)]
pub(crate) fn line_kernel(
    b: &CudaBackend,
    op: &'static str,
    kernel: &str,
    (src, layout): super::Operand<'_>,
    axis: usize,
    arg: Option<ReduceOp>,
    out: LineOut,
    flag: i32,
) -> Result<BoxStorage> {
    b.gpu().enter()?;
    let s = b.operand(op, src, layout)?;
    let (outer, n, inner) = host_rows::check(op, layout.shape(), axis, arg)?;
    let n_lines = outer * inner;
    let dst = match out {
        LineOut::PerLine => b.alloc(n_lines, DType::I64)?,
        LineOut::Indices => b.alloc(layout.numel(), DType::I64)?,
        LineOut::Values => b.alloc(layout.numel(), s.dtype)?,
    };
    if dst.len > 0 {
        let mut shape = layout.shape().to_vec();
        let mut strides = layout.strides().to_vec();
        shape.remove(axis);
        let axis_stride = strides.remove(axis) as u64;
        let view = View {
            strides: &strides,
            offset: layout.offset(),
        };
        let ix = StridedIndex::<1>::new(op, &shape, [view])?;
        let (sp, dp, n_lines, n, inner) = (s.ptr, dst.ptr, n_lines as u64, n as u64, inner as u64);
        let name = format!("{kernel}_{}", sfx(s.dtype));
        let grid = grid_for(n_lines, BLOCK, b.gpu().sm_count);
        // SAFETY: params match every line kernel's (Index<1>, u64, x, y, u64, u64,
        // u64, int); the view was checked, so each line start + j·axis_stride (j < n)
        // lies in `src`; `dst` holds n_lines (PerLine) or n_lines·n elements.
        unsafe {
            b.launch(
                &name,
                [grid, 1, 1],
                BLOCK,
                &kargs![ix, axis_stride, sp, dp, n_lines, n, inner, flag],
            )?
        };
    }
    Ok(Box::new(dst))
}

/// `Backend::arg_reduce`.
pub(crate) fn arg_reduce(
    b: &CudaBackend,
    op: ReduceOp,
    src: &dyn BackendStorage,
    layout: &Layout,
    axis: usize,
) -> Result<BoxStorage> {
    let code = arg_code(op);
    line_kernel(
        b,
        "arg_reduce",
        "arg_reduce",
        (src, layout),
        axis,
        Some(op),
        LineOut::PerLine,
        code,
    )
}

/// `Backend::argsort`.
pub(crate) fn argsort(
    b: &CudaBackend,
    src: &dyn BackendStorage,
    layout: &Layout,
    axis: usize,
    descending: bool,
) -> Result<BoxStorage> {
    let desc = i32::from(descending);
    line_kernel(
        b,
        "argsort",
        "argsort",
        (src, layout),
        axis,
        None,
        LineOut::Indices,
        desc,
    )
}
