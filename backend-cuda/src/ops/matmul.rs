//! The matmul family: batched GEMM over strided views (any batch broadcast or
//! transposition is read in place), tiled kernels with 32-bit offsets, and 64-bit-index
//! kernels for matrices whose offsets do not fit. Kernels in `kernels/matmul.cu`.

use super::Operand;
use crate::backend::{float_only, numel, same_dtype, CudaBackend};
use crate::driver::backend_error;
use crate::plan::{StridedIndex, View};
use crate::ptx::{kargs, KernelArg};
use unigrad_core::backend::BoxStorage;
use unigrad_core::dtype::DType;
use unigrad_core::{Error, Result};

/// Launch GEMM kernel `name`: params `(Index<2> batch, u64 n_batch, A, B, C, T x 7)`
/// with `dims` = m, n, k and the strides of A's rows and columns and B's rows and
/// columns, as `T` (u32 for the tiled kernels, u64 for the `_big` ones).
///
/// # Safety
/// `T` must be the type kernel `name` declares for its sizes and strides, the three
/// device addresses must hold the matrices the batch index and `dims` describe, and
/// C `n_batch * m * n` elements.
unsafe fn launch_gemm<T: KernelArg>(
    b: &CudaBackend,
    name: &str,
    grid: [u32; 3],
    (batch, [nb, ap, bp, cp]): (StridedIndex<2>, [u64; 4]),
    [m, n, k, asm, ask, bsk, bsn]: [T; 7],
) -> Result<()> {
    let params = kargs![batch, nb, ap, bp, cp, m, n, k, asm, ask, bsk, bsn];
    // SAFETY: the caller's contract; the launcher checks the argument sizes against
    // the kernel's PTX signature.
    unsafe { b.launch(name, grid, 256, &params) }
}

/// `Backend::matmul`: batched `[.., m, k] x [.., k, n]` over any strided views.
pub(crate) fn matmul(
    b: &CudaBackend,
    (lhs, lhs_layout): Operand<'_>,
    (rhs, rhs_layout): Operand<'_>,
) -> Result<BoxStorage> {
    const OP: &str = "matmul";
    b.gpu().enter()?;
    let (a, w) = (b.operand(OP, lhs, lhs_layout)?, b.operand(OP, rhs, rhs_layout)?);
    same_dtype(OP, a.dtype, w.dtype)?;
    float_only(OP, a.dtype, lhs_layout.shape())?;
    let (ls, rs) = (lhs_layout.shape(), rhs_layout.shape());
    let r = ls.len();
    if r < 2 || rs.len() != r || ls[..r - 2] != rs[..r - 2] || ls[r - 1] != rs[r - 2] {
        return Err(Error::ShapeMismatch {
            op: OP,
            lhs: ls.to_vec(),
            rhs: rs.to_vec(),
        });
    }
    let (m, k, n) = (ls[r - 2], ls[r - 1], rs[r - 1]);
    let batch_shape = &ls[..r - 2];
    let n_batch = numel(batch_shape);
    let len = n_batch * m * n;
    if len == 0 {
        return Ok(Box::new(b.alloc(0, a.dtype)?));
    }
    if k == 0 {
        return Ok(Box::new(b.zeroed(len, a.dtype)?));
    }
    let (lst, rst) = (lhs_layout.strides(), rhs_layout.strides());
    let (a_sm, a_sk, b_sk, b_sn) = (lst[r - 2], lst[r - 1], rst[r - 2], rst[r - 1]);
    let batch = StridedIndex::<2>::new(
        OP,
        batch_shape,
        [
            View {
                strides: &lst[..r - 2],
                offset: lhs_layout.offset(),
            },
            View {
                strides: &rst[..r - 2],
                offset: rhs_layout.offset(),
            },
        ],
    )?;
    let out = b.alloc(len, a.dtype)?;

    // 32-bit indexing inside each matrix when every offset fits (with room for
    // the tile overshoot at the edges); otherwise the 64-bit kernels.
    let ext = |rows: usize, rs: usize, cols: usize, cs: usize| {
        (rows as u128 - 1) * rs as u128 + (cols as u128 - 1) * cs as u128 + 1
    };
    let limit = (u32::MAX - 1024) as u128;
    let fits32 = !b.wide_gemm()
        && [m, n, k].iter().all(|&d| (d as u128) < limit)
        && ext(m, a_sm, k, a_sk) < limit
        && ext(k, b_sk, n, b_sn) < limit
        && (m as u128 * n as u128) < limit;
    let sm = b.gpu().sm_count as usize;
    let (name, tile) = match (a.dtype, fits32) {
        (DType::F32, true) if m.div_ceil(128) * n.div_ceil(128) * n_batch >= sm => ("matmul_f32_t128", 128),
        (DType::F32, true) => ("matmul_f32_t64", 64),
        (DType::F32, false) => ("matmul_f32_big", 64),
        (_, true) => ("matmul_f64_t64", 64),
        (_, false) => ("matmul_f64_big", 64),
    };
    let grid_y = m.div_ceil(tile);
    if grid_y > 65_535 {
        return Err(backend_error(
            &b.gpu().name,
            format!("matmul: {m} rows need {grid_y} row tiles; at most 65535 are supported"),
        ));
    }
    let grid = [
        u32::try_from(n.div_ceil(tile)).map_err(|_| backend_error(&b.gpu().name, "matmul: too many columns"))?,
        grid_y as u32,
        n_batch.min(65_535) as u32,
    ];
    let operands = (batch, [n_batch as u64, a.ptr, w.ptr, out.ptr]);
    let dims = [m, n, k, a_sm, a_sk, b_sk, b_sn];
    // Both arms: the views were checked against their storages and C holds
    // n_batch * m * n elements.
    if fits32 {
        // SAFETY: the tiled kernels take their sizes and strides as u32, and `fits32`
        // guarantees their 32-bit offsets do not wrap.
        unsafe { launch_gemm(b, name, grid, operands, dims.map(|v| v as u32))? };
    } else {
        // SAFETY: the `_big` kernels take their sizes and strides as u64.
        unsafe { launch_gemm(b, name, grid, operands, dims.map(|v| v as u64))? };
    }
    Ok(Box::new(out))
}
