//! Host-side planning: turning layouts into the `Index<N>` the kernels read, and
//! sizing grids.
//!
//! Kernels receive shapes and strides *by value* in a fixed-size struct (no device
//! buffer to upload per launch). Before that, dimensions are merged wherever every
//! operand allows it (`stride[d-1] == shape[d] * stride[d]` for all operands) and
//! size-1 dimensions dropped: a dense tensor becomes rank 1 and costs the kernel no
//! index division, a transposed matrix stays rank 2, and the fixed capacity of
//! [`MAX_DIMS`] is only exceeded by genuinely irregular views of rank > 8.

use crate::ptx::KernelArg;
use unigrad_core::{Error, Result};

/// Capacity of [`StridedIndex`]; `MAX_DIMS` in `kernels/common.cuh`.
pub(crate) const MAX_DIMS: usize = 8;

/// Threads per block for the elementwise-style kernels.
pub(crate) const BLOCK: u32 = 256;

/// The host twin of `Index<N>` in `kernels/common.cuh`: one logical shape and, per
/// operand, strides and a start offset (in elements). Field order and types must
/// match the C struct exactly; `repr(C)` with all u64 fields first and two u32 last
/// has no padding on either side.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StridedIndex<const N: usize> {
    shape: [u64; MAX_DIMS],
    strides: [[u64; MAX_DIMS]; N],
    offset: [u64; N],
    rank: u32,
    small: u32,
}

// SAFETY: repr(C), Copy, no padding (u64 arrays then two u32), layout equal to the
// kernels' Index<N>.
unsafe impl<const N: usize> KernelArg for StridedIndex<N> {}

/// One operand's view for [`StridedIndex::new`]: strides and offset in elements.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View<'a> {
    /// Strides, one per dimension of the shared shape.
    pub strides: &'a [usize],
    /// Start offset.
    pub offset: usize,
}

impl<'a> View<'a> {
    /// A view starting at element 0 with the given strides (e.g. a dense destination).
    pub(crate) fn from_start(strides: &'a [usize]) -> View<'a> {
        View { strides, offset: 0 }
    }

    /// A view from a layout's strides and offset.
    pub(crate) fn of(layout: &'a unigrad_core::layout::Layout) -> View<'a> {
        View {
            strides: layout.strides(),
            offset: layout.offset(),
        }
    }
}

impl<const N: usize> StridedIndex<N> {
    /// Index over `shape` for `N` operands, merging dimensions where possible.
    /// `op` names the calling op in the error for a rank that does not fit.
    pub(crate) fn new(op: &'static str, shape: &[usize], views: [View<'_>; N]) -> Result<Self> {
        for v in &views {
            debug_assert_eq!(v.strides.len(), shape.len());
        }
        // (size, strides per operand), outermost first, size-1 dims dropped.
        let mut dims: Vec<(usize, [usize; N])> = Vec::with_capacity(shape.len());
        for (d, &size) in shape.iter().enumerate() {
            if size == 1 {
                continue;
            }
            let strides: [usize; N] = std::array::from_fn(|k| views[k].strides[d]);
            if let Some((last_size, last_strides)) = dims.last_mut() {
                if (0..N).all(|k| last_strides[k] == size * strides[k]) {
                    *last_size *= size;
                    *last_strides = strides;
                    continue;
                }
            }
            dims.push((size, strides));
        }
        Self::from_dims(op, &dims, std::array::from_fn(|k| views[k].offset))
    }

    /// Index over `shape` without merging (for kernels that single out one
    /// dimension, like the indexing ops).
    pub(crate) fn unmerged(op: &'static str, shape: &[usize], views: [View<'_>; N]) -> Result<Self> {
        let dims: Vec<(usize, [usize; N])> = (0..shape.len())
            .map(|d| (shape[d], std::array::from_fn(|k| views[k].strides[d])))
            .collect();
        Self::from_dims(op, &dims, std::array::from_fn(|k| views[k].offset))
    }

    fn from_dims(op: &'static str, dims: &[(usize, [usize; N])], offsets: [usize; N]) -> Result<Self> {
        if dims.len() > MAX_DIMS {
            return Err(Error::invalid(
                op,
                format!(
                    "the cuda backend supports views of at most {MAX_DIMS} non-mergeable dimensions, got {}; \
                     make the tensor contiguous first",
                    dims.len()
                ),
            ));
        }
        let mut ix = StridedIndex {
            shape: [1; MAX_DIMS],
            strides: [[0; MAX_DIMS]; N],
            offset: offsets.map(|o| o as u64),
            rank: dims.len() as u32,
            small: 0,
        };
        let mut numel: u128 = 1;
        for (d, (size, strides)) in dims.iter().enumerate() {
            ix.shape[d] = *size as u64;
            for (row, &stride) in ix.strides.iter_mut().zip(strides) {
                row[d] = stride as u64;
            }
            numel *= *size as u128;
        }
        ix.small = u32::from(numel <= u32::MAX as u128);
        Ok(ix)
    }

    /// Rank after merging.
    #[cfg(test)]
    pub(crate) fn rank(&self) -> usize {
        self.rank as usize
    }

    /// Shape after merging.
    #[cfg(test)]
    pub(crate) fn dims(&self) -> &[u64] {
        &self.shape[..self.rank as usize]
    }

    /// Strides of operand `k` after merging.
    #[cfg(test)]
    pub(crate) fn strides(&self, k: usize) -> &[u64] {
        &self.strides[k][..self.rank as usize]
    }
}

/// Blocks for a grid-stride kernel over `n` items with `block` threads: enough to
/// fill the GPU several times over, capped so huge tensors loop instead.
pub(crate) fn grid_for(n: u64, block: u32, sm_count: u32) -> u32 {
    let needed = n.div_ceil(block as u64).max(1);
    let cap = (sm_count as u64 * 32).max(1);
    needed.min(cap) as u32
}

/// Row-major strides of a dense shape.
pub(crate) fn dense_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut acc = 1usize;
    for d in (0..shape.len()).rev() {
        strides[d] = acc;
        acc *= shape[d].max(1);
    }
    strides
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(strides: &[usize], offset: usize) -> View<'_> {
        View { strides, offset }
    }

    #[test]
    fn dense_collapses_to_rank_one() {
        let ix = StridedIndex::new("t", &[2, 3, 4], [v(&[12, 4, 1], 5)]).unwrap();
        assert_eq!((ix.rank(), ix.dims(), ix.strides(0)), (1, &[24u64][..], &[1u64][..]));
        assert_eq!(ix.offset, [5]);
        assert_eq!(ix.small, 1);
    }

    #[test]
    fn transpose_and_broadcast_keep_their_dims() {
        // [3, 4] transposed view of a [4, 3] matrix, against a row vector broadcast.
        let ix = StridedIndex::new("t", &[3, 4], [v(&[1, 3], 0), v(&[0, 1], 0)]).unwrap();
        assert_eq!(ix.rank(), 2);
        assert_eq!(ix.strides(0), &[1, 3]);
        assert_eq!(ix.strides(1), &[0, 1]);
        // Broadcast over the leading two dims of a dense inner block merges them.
        let ix = StridedIndex::new("t", &[2, 3, 4], [v(&[0, 0, 1], 0), v(&[12, 4, 1], 0)]).unwrap();
        assert_eq!(
            (ix.dims(), ix.strides(0), ix.strides(1)),
            (&[6u64, 4][..], &[0u64, 1][..], &[4u64, 1][..])
        );
    }

    #[test]
    fn size_one_dims_vanish_and_scalars_have_rank_zero() {
        let ix = StridedIndex::new("t", &[1, 5, 1], [v(&[99, 7, 3], 2)]).unwrap();
        assert_eq!((ix.dims(), ix.strides(0)), (&[5u64][..], &[7u64][..]));
        let ix = StridedIndex::<1>::new("t", &[], [v(&[], 3)]).unwrap();
        assert_eq!((ix.rank(), ix.offset), (0, [3]));
    }

    #[test]
    fn too_many_irregular_dims_is_an_error() {
        let shape = [2usize; 9];
        let strides: Vec<usize> = (0..9).map(|d| 1usize << (2 * (9 - d))).collect();
        let err = StridedIndex::new("unary", &shape, [v(&strides, 0)]).unwrap_err();
        assert!(err.to_string().contains("at most 8"), "{err}");
        // The same rank merges fine when dense.
        assert!(StridedIndex::new("unary", &shape, [v(&dense_strides(&shape), 0)]).is_ok());
    }

    #[test]
    fn index_struct_matches_the_c_layout() {
        // Index<N> in common.cuh: 8 + 8N + N u64 words, then two u32.
        assert_eq!(std::mem::size_of::<StridedIndex<1>>(), 8 * (8 + 8 + 1) + 8);
        assert_eq!(std::mem::size_of::<StridedIndex<3>>(), 8 * (8 + 24 + 3) + 8);
        assert_eq!(std::mem::align_of::<StridedIndex<2>>(), 8);
    }

    #[test]
    fn grids_are_capped() {
        assert_eq!(grid_for(0, 256, 132), 1);
        assert_eq!(grid_for(1000, 256, 132), 4);
        assert_eq!(grid_for(1 << 40, 256, 132), 132 * 32);
    }
}
