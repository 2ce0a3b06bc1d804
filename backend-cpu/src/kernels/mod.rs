//! CPU kernels, one file per op family, under the same family names as
//! `core/src/ops/<family>.rs`: elementwise, reduce, matmul, view, index, softmax,
//! norm, optim, sort, scan and attention. Each file holds the typed loops; the view,
//! softmax, norm, optim, sort, scan and attention files also hold the dtype dispatch and
//! operand-length checks of their `Backend`
//! methods, so those methods of [`CpuBackend`](crate::CpuBackend) in `lib.rs` only
//! unwrap storage and forward. For the primitives, `lib.rs` matches the dtype and
//! calls the typed kernel directly.

pub mod attention;
pub mod elementwise;
pub mod index;
pub mod matmul;
pub mod norm;
pub mod optim;
pub mod reduce;
pub mod softmax;
pub mod view;
// issue 17 (helper "ops")
pub mod scan;
pub mod sort;

use crate::strided::{par_threshold, Plan, RowCursor};
use rayon::prelude::*;

/// Elements per parallel chunk when a whole tensor is one dense row.
const CHUNK: usize = 1 << 13;

/// Fill dense `out` segment by segment: `f(out_segment, operand_offsets)` where the
/// segment is one row of the plan (or a chunk of the only row). Runs on rayon's
/// pool when the tensor is large.
pub fn drive<T: Send, const N: usize>(out: &mut [T], plan: &Plan<N>, f: impl Fn(&mut [T], [usize; N]) + Sync) {
    if out.is_empty() {
        return;
    }
    let rows = plan.rows();
    let par = out.len() >= par_threshold();
    if rows == 1 {
        let st = plan.inner_stride;
        let offs = |c: usize| -> [usize; N] { std::array::from_fn(|i| plan.offsets[i] + c * CHUNK * st[i]) };
        if par {
            out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, o)| f(o, offs(c)));
        } else {
            out.chunks_mut(CHUNK).enumerate().for_each(|(c, o)| f(o, offs(c)));
        }
    } else {
        // blocks of whole rows (about CHUNK elements), each walked with a cursor
        let rows_per_block = (CHUNK / plan.inner).max(1);
        let block = |b: usize, o: &mut [T]| {
            let mut cur = RowCursor::new(plan, b * rows_per_block);
            for row in o.chunks_mut(plan.inner) {
                f(row, cur.offsets());
                cur.advance();
            }
        };
        if par {
            out.par_chunks_mut(rows_per_block * plan.inner)
                .enumerate()
                .for_each(|(b, o)| block(b, o));
        } else {
            block(0, out);
        }
    }
}
