//! Strided iteration shared by the kernels.
//!
//! Operands are described by their strides over a common shape. Adjacent
//! dimensions that are contiguous for every operand are merged first
//! ([`coalesce`]), so a dense tensor becomes one long row and a `[B, N, C] + [C]`
//! broadcast becomes `B·N` rows of `C`. Kernels then run a tight inner loop per
//! row, which the compiler auto-vectorises when the inner strides are 1.

use std::sync::atomic::{AtomicUsize, Ordering};
use unigrad_core::Layout;

/// Merge adjacent dims that are contiguous in all operands. Returns the new shape
/// and each operand's strides. Size-1 dims are dropped.
pub fn coalesce<const N: usize>(shape: &[usize], strides: [&[usize]; N]) -> (Vec<usize>, [Vec<usize>; N]) {
    let mut out_shape: Vec<usize> = Vec::with_capacity(shape.len());
    let mut out_strides: [Vec<usize>; N] = std::array::from_fn(|_| Vec::with_capacity(shape.len()));
    for d in 0..shape.len() {
        if shape[d] == 1 {
            continue;
        }
        if let Some(&last) = out_shape.last() {
            let k = out_shape.len() - 1;
            if (0..N).all(|o| out_strides[o][k] == strides[o][d] * shape[d]) {
                out_shape[k] = last * shape[d];
                for (o, st) in out_strides.iter_mut().enumerate() {
                    st[k] = strides[o][d];
                }
                continue;
            }
        }
        out_shape.push(shape[d]);
        for (o, st) in out_strides.iter_mut().enumerate() {
            st.push(strides[o][d]);
        }
    }
    if out_shape.is_empty() {
        out_shape.push(1);
        for st in out_strides.iter_mut() {
            st.push(0);
        }
    }
    (out_shape, out_strides)
}

/// A coalesced iteration plan: rows of `inner` elements.
pub struct Plan<const N: usize> {
    /// Shape of the outer (row) dims.
    pub outer: Vec<usize>,
    /// Each operand's strides over the outer dims.
    pub outer_strides: [Vec<usize>; N],
    /// Row length.
    pub inner: usize,
    /// Each operand's stride along a row.
    pub inner_stride: [usize; N],
    /// Each operand's start offset.
    pub offsets: [usize; N],
}

impl<const N: usize> Plan<N> {
    /// Plan over layouts of one common shape.
    pub fn new(layouts: [&Layout; N]) -> Plan<N> {
        let shape = layouts[0].shape();
        let (s, st) = coalesce::<N>(shape, std::array::from_fn(|i| layouts[i].strides()));
        let r = s.len();
        Plan {
            outer: s[..r - 1].to_vec(),
            outer_strides: std::array::from_fn(|i| st[i][..r - 1].to_vec()),
            inner: s[r - 1],
            inner_stride: std::array::from_fn(|i| st[i][r - 1]),
            offsets: std::array::from_fn(|i| layouts[i].offset()),
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.outer.iter().product()
    }

    /// Start offsets of row `row` (row-major over the outer dims).
    #[inline]
    pub fn row_offsets(&self, mut row: usize) -> [usize; N] {
        let mut off = self.offsets;
        for d in (0..self.outer.len()).rev() {
            let i = row % self.outer[d];
            row /= self.outer[d];
            for (o, v) in off.iter_mut().enumerate() {
                *v += i * self.outer_strides[o][d];
            }
        }
        off
    }
}

/// Walks consecutive rows of a [`Plan`], keeping the row's multi-index and operand
/// offsets up to date by carrying (an odometer) instead of dividing the row number
/// by every outer dim for every row (short rows, such as the 32-element rows of the
/// attention head permutes, paid several integer divisions per 32 elements).
pub struct RowCursor<'a, const N: usize> {
    plan: &'a Plan<N>,
    idx: Vec<usize>,
    off: [usize; N],
}

impl<'a, const N: usize> RowCursor<'a, N> {
    /// A cursor at row `row`.
    pub fn new(plan: &'a Plan<N>, row: usize) -> Self {
        let mut idx = vec![0; plan.outer.len()];
        let mut r = row;
        for d in (0..idx.len()).rev() {
            idx[d] = r % plan.outer[d];
            r /= plan.outer[d];
        }
        RowCursor {
            plan,
            idx,
            off: plan.row_offsets(row),
        }
    }

    /// Operand offsets of the current row.
    #[inline]
    pub fn offsets(&self) -> [usize; N] {
        self.off
    }

    /// Move to the next row (past the last row it wraps to row 0).
    #[inline]
    pub fn advance(&mut self) {
        let p = self.plan;
        for d in (0..self.idx.len()).rev() {
            self.idx[d] += 1;
            if self.idx[d] < p.outer[d] {
                for (o, v) in self.off.iter_mut().enumerate() {
                    *v += p.outer_strides[o][d];
                }
                return;
            }
            self.idx[d] = 0;
            for (o, v) in self.off.iter_mut().enumerate() {
                *v -= (p.outer[d] - 1) * p.outer_strides[o][d];
            }
        }
    }
}

/// Default of [`par_threshold`]: below this many elements, kernels stay on the
/// calling thread (a rayon fork/join costs a few microseconds, more than small
/// tensors take: 32K f32 adds take ≈ 13 µs on one core).
///
/// Measured on an idle 2-core machine (2026-11-28): in isolation
/// (`examples/par_threshold.rs`, workers asleep between calls) the parallel path lost
/// 2–3× from 16K to 256K elements and won 1.2–1.6× at 1M, because waking a sleeping
/// worker costs more than the op. Inside a training step the workers are kept awake
/// by the GEMMs, and there raising the threshold to 512K made the reference step
/// slower (median 157–165 vs 127–148 ms, alternating, same session), so 32K stays.
pub const PAR_THRESHOLD: usize = 1 << 15;

static PAR_MIN: AtomicUsize = AtomicUsize::new(PAR_THRESHOLD);

/// Elements from which elementwise, reduction and row kernels use rayon.
#[inline]
pub fn par_threshold() -> usize {
    PAR_MIN.load(Ordering::Relaxed)
}

/// Change [`par_threshold`] for the whole process (`usize::MAX`: never go
/// parallel). Results do not depend on it: reductions split their work into
/// fixed-size blocks whether or not the blocks run in parallel.
pub fn set_par_threshold(elements: usize) {
    PAR_MIN.store(elements, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_cursor_walks_the_same_offsets_as_row_offsets() {
        // a permuted view and a broadcast operand: three outer dims after coalescing
        let a = Layout::contiguous(&[3, 5, 4, 6]).permute(&[0, 2, 1, 3]).unwrap();
        let b = Layout::contiguous(&[1, 4, 1, 6]).broadcast_to(&[3, 4, 5, 6]).unwrap();
        let plan = Plan::new([&a, &b]);
        assert!(plan.outer.len() >= 2);
        for start in [0, 1, 7, plan.rows() - 1] {
            let mut cur = RowCursor::new(&plan, start);
            for r in start..plan.rows() {
                assert_eq!(cur.offsets(), plan.row_offsets(r), "row {r} from {start}");
                cur.advance();
            }
            assert_eq!(cur.offsets(), plan.row_offsets(0), "wraps to row 0");
        }
    }
}
