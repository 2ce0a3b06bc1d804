//! The reduce family: sum, max and min over any set of axes of a strided view, split
//! over several blocks (and combined by a second pass) when few outputs have long
//! reductions. Kernels in `kernels/reduce.cu`.

use crate::backend::{float_only, numel, sfx, CudaBackend};
use crate::driver::backend_error;
use crate::plan::{StridedIndex, View, BLOCK};
use crate::ptx::kargs;
use crate::storage::CudaStorage;
use unigrad_core::backend::{BackendStorage, BoxStorage, ReduceOp};
use unigrad_core::dtype::DType;
use unigrad_core::layout::Layout;
use unigrad_core::{Error, Result};

/// Op code for `reduce_*`; codes match `RED_*` in kernels/common.cuh.
fn reduce_code(op: ReduceOp) -> i32 {
    match op {
        ReduceOp::Sum => 0,
        ReduceOp::Max => 1,
        ReduceOp::Min => 2,
    }
}

/// One reduction pass: `src` viewed as (kept, red) reduced over `red`.
struct ReduceLaunch {
    kept: StridedIndex<1>,
    red: StridedIndex<1>,
    src: u64,
    dtype: DType,
    n_out: u64,
    n_red: u64,
    /// Threads cooperate along the reduction (true) or take adjacent outputs (false).
    row_mode: bool,
    code: i32,
}

/// Queue a reduction into `out` (`n_out` elements). With few outputs and long
/// reductions (`allow_split`), each reduction is split over several blocks into
/// partials `[splits, n_out]` that a second pass combines, so the whole GPU works.
fn reduce_into(b: &CudaBackend, r: ReduceLaunch, out: &CudaStorage, allow_split: bool) -> Result<()> {
    let (tr, to) = if r.row_mode {
        let tr = r.n_red.next_power_of_two().min(BLOCK as u64) as u32;
        (tr, BLOCK / tr)
    } else {
        let to = r.n_out.next_power_of_two().min(BLOCK as u64) as u32;
        (BLOCK / to, to)
    };
    let o_fast = u32::from(!r.row_mode);
    let blocks_o = r.n_out.div_ceil(to as u64);
    let target = 2 * b.gpu().sm_count as u64;
    let mut splits = 1u64;
    if allow_split && blocks_o < target && r.n_red > tr as u64 * 32 {
        splits = target
            .div_ceil(blocks_o)
            .min(r.n_red.div_ceil(tr as u64 * 32))
            .min(65_535);
    }
    let per_split = r.n_red.div_ceil(splits);
    let splits = r.n_red.div_ceil(per_split);
    let blocks_o = u32::try_from(blocks_o)
        .map_err(|_| backend_error(&b.gpu().name, format!("reduce: {} outputs are too many", r.n_out)))?;
    let partial = if splits > 1 {
        Some(b.alloc((splits * r.n_out) as usize, r.dtype)?)
    } else {
        None
    };
    let dp = partial.as_ref().map_or(out.ptr, |p| p.ptr);
    let ReduceLaunch {
        kept,
        red,
        src: sp,
        n_out,
        n_red,
        code,
        ..
    } = r;
    let name = format!("reduce_{}", sfx(r.dtype));
    let params = kargs![kept, red, sp, dp, n_out, n_red, per_split, to, tr, o_fast, code];
    // SAFETY: params match reduce_*(Index<1>, Index<1>, src, dst, u64, u64, u64, u32,
    // u32, u32, int); the source view was checked by the caller; dst holds
    // splits * n_out elements; BLOCK = REDUCE_THREADS of the kernel.
    unsafe { b.launch(&name, [blocks_o, splits as u32, 1], BLOCK, &params)? };
    let Some(partial) = partial else {
        return Ok(());
    };
    // Combine the partials: dense [splits, n_out] reduced over its first axis.
    reduce_into(b, dense_columns(partial.ptr, r.dtype, splits, n_out, code)?, out, false)
    // `partial` returns to the cache here; later users are ordered after the
    // combining kernel on the stream.
}

/// The reduction of dense `[rows, cols]` storage at `src` over its first axis.
fn dense_columns(src: u64, dtype: DType, rows: u64, cols: u64, code: i32) -> Result<ReduceLaunch> {
    let kept = StridedIndex::<1>::new("reduce", &[cols as usize], [View::from_start(&[1])])?;
    let red = StridedIndex::<1>::new("reduce", &[rows as usize], [View::from_start(&[cols as usize])])?;
    Ok(ReduceLaunch {
        kept,
        red,
        src,
        dtype,
        n_out: cols,
        n_red: rows,
        row_mode: cols == 1,
        code,
    })
}

/// Column sums of dense `[rows, cols]` storage `src` into `out` (`cols` elements), in
/// an order fixed by the shape and the device: the same bits on every run.
pub(crate) fn column_sums(
    b: &CudaBackend,
    src: &CudaStorage,
    rows: usize,
    cols: usize,
    out: &CudaStorage,
) -> Result<()> {
    let launch = dense_columns(src.ptr, src.dtype, rows as u64, cols as u64, reduce_code(ReduceOp::Sum))?;
    reduce_into(b, launch, out, true)
}

/// `Backend::reduce`: sum, max or min over sorted distinct `axes` of any strided view.
pub(crate) fn reduce(
    b: &CudaBackend,
    op: ReduceOp,
    src: &dyn BackendStorage,
    layout: &Layout,
    axes: &[usize],
) -> Result<BoxStorage> {
    const OP: &str = "reduce";
    b.gpu().enter()?;
    let s = b.operand(OP, src, layout)?;
    let shape = layout.shape();
    float_only(OP, s.dtype, shape)?;
    if axes.windows(2).any(|w| w[0] >= w[1]) || axes.iter().any(|&a| a >= shape.len()) {
        return Err(Error::invalid(
            OP,
            format!("axes {axes:?} must be sorted, distinct and below the rank of {shape:?}"),
        ));
    }
    let (mut kept_shape, mut kept_strides, mut red_shape, mut red_strides) = (vec![], vec![], vec![], vec![]);
    for (d, (&size, &stride)) in shape.iter().zip(layout.strides()).enumerate() {
        if axes.contains(&d) {
            red_shape.push(size);
            red_strides.push(stride);
        } else {
            kept_shape.push(size);
            kept_strides.push(stride);
        }
    }
    let (n_out, n_red) = (numel(&kept_shape) as u64, numel(&red_shape) as u64);
    if n_out == 0 {
        return Ok(Box::new(b.alloc(0, s.dtype)?));
    }
    if n_red == 0 {
        return match op {
            ReduceOp::Sum => Ok(Box::new(b.zeroed(n_out as usize, s.dtype)?)),
            _ => Err(Error::invalid(
                OP,
                format!("{op:?} over axes {axes:?} of shape {shape:?}: the reduced axes are empty"),
            )),
        };
    }
    let kept = StridedIndex::<1>::new(
        OP,
        &kept_shape,
        [View {
            strides: &kept_strides,
            offset: layout.offset(),
        }],
    )?;
    let red = StridedIndex::<1>::new(OP, &red_shape, [View::from_start(&red_strides)])?;
    // Row mode when the reduced elements are the closer ones in memory.
    let min_stride = |shape: &[usize], strides: &[usize]| {
        shape
            .iter()
            .zip(strides)
            .filter(|(&d, _)| d > 1)
            .map(|(_, &s)| s)
            .min()
            .unwrap_or(usize::MAX)
    };
    let row_mode = min_stride(&red_shape, &red_strides) < min_stride(&kept_shape, &kept_strides);
    let out = b.alloc(n_out as usize, s.dtype)?;
    reduce_into(
        b,
        ReduceLaunch {
            kept,
            red,
            src: s.ptr,
            dtype: s.dtype,
            n_out,
            n_red,
            row_mode,
            code: reduce_code(op),
        },
        &out,
        true,
    )?;
    Ok(Box::new(out))
}
