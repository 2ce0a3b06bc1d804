//! Reductions over sets of axes.
//!
//! Two paths:
//! - **trailing axes** (`sum(-1)`, softmax and norm statistics): each output is an
//!   independent row reduction; rows run in parallel, a long row (or a whole-tensor
//!   reduction) is split into fixed-size pieces reduced in parallel and combined in
//!   order, and contiguous rows use 32 independent accumulators (vectorised).
//! - **other axes** (`sum(0)` of a `[rows, C]` bias gradient): the input is streamed
//!   once in storage order and accumulated into the broadcast output; large inputs
//!   are cut into fixed blocks of rows, each accumulated into its own partial output
//!   in parallel, and the partials are combined in block order.
//!
//! Pieces and blocks have fixed sizes (never "one per thread"), so a result does not
//! depend on the number of threads.

use crate::elem::Float;
use crate::pool;
use crate::simd::vectorized;
use crate::strided::{coalesce, par_threshold, Plan};
use rayon::prelude::*;
use unigrad_core::{Layout, ReduceOp};

/// Number of independent accumulators in the slice reductions.
const LANES: usize = 32;

/// Elements per piece when one long row is split, and the least number of input
/// elements per block of rows in the general path. Fixed, so results depend on
/// neither the thread count nor [`par_threshold`].
const PIECE: usize = 1 << 15;

#[inline(always)]
fn fold_slice<T: Float>(x: &[T], init: T, f: impl Fn(T, T) -> T + Copy) -> T {
    let mut acc = [init; LANES];
    let chunks = x.chunks_exact(LANES);
    let rem = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = f(acc[i], c[i]);
        }
    }
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            acc[i] = f(acc[i], acc[i + w]);
        }
    }
    let mut s = acc[0];
    for &v in rem {
        s = f(s, v);
    }
    s
}

/// Sum of a dense slice with 32 independent accumulators (vectorises). Inline it
/// into a `simd::vectorized!` body to get wide vectors.
#[inline(always)]
pub fn sum_slice<T: Float>(x: &[T]) -> T {
    fold_slice(x, T::ZERO, |a, b| a + b)
}

/// Reduce a dense slice with `op`.
#[inline(always)]
pub fn reduce_slice<T: Float>(op: ReduceOp, x: &[T]) -> T {
    match op {
        ReduceOp::Sum => sum_slice(x),
        ReduceOp::Max => fold_slice(x, T::NEG_INF, |a, b| a.maxv(b)),
        ReduceOp::Min => fold_slice(x, T::INF, |a, b| a.minv(b)),
    }
}

fn init<T: Float>(op: ReduceOp) -> T {
    match op {
        ReduceOp::Sum => T::ZERO,
        ReduceOp::Max => T::NEG_INF,
        ReduceOp::Min => T::INF,
    }
}

#[inline(always)]
fn combine<T: Float>(op: ReduceOp, a: T, b: T) -> T {
    match op {
        ReduceOp::Sum => a + b,
        ReduceOp::Max => a.maxv(b),
        ReduceOp::Min => a.minv(b),
    }
}

/// Reduce one row of `len` elements at stride `st` starting at `base`.
#[inline(always)]
fn reduce_row<T: Float>(op: ReduceOp, x: &[T], base: usize, len: usize, st: usize) -> T {
    if len == 0 {
        // an empty row: `base` may lie past the end of an empty storage
        init(op)
    } else if st == 1 {
        reduce_slice(op, &x[base..base + len])
    } else {
        let mut acc = init(op);
        for j in 0..len {
            acc = combine(op, acc, x[base + j * st]);
        }
        acc
    }
}

/// Reduce `x` (viewed through `l`) over the sorted `axes`; output dense keepdim.
pub fn reduce<T: Float>(op: ReduceOp, x: &[T], l: &Layout, axes: &[usize]) -> Vec<T> {
    let shape = l.shape();
    let rank = shape.len();
    let out_shape: Vec<usize> = (0..rank)
        .map(|d| if axes.contains(&d) { 1 } else { shape[d] })
        .collect();
    let out_n: usize = out_shape.iter().product();
    let trailing = axes.iter().enumerate().all(|(i, &a)| a == rank - axes.len() + i);
    if trailing && out_n > 0 {
        reduce_trailing(op, x, l, rank - axes.len(), out_n)
    } else {
        reduce_general(op, x, l, &out_shape, out_n)
    }
}

/// Reduce over the axes `k..` (each output is one row).
fn reduce_trailing<T: Float>(op: ReduceOp, x: &[T], l: &Layout, k: usize, out_n: usize) -> Vec<T> {
    let shape = l.shape();
    let (ishape, [istr]) = coalesce(&shape[k..], [&l.strides()[k..]]);
    let outer = Layout::new(&shape[..k], &l.strides()[..k], l.offset());
    let dense_outer = Layout::contiguous(&shape[..k]);
    let plan = Plan::new([&outer, &dense_outer]);
    let offset_of = |o: usize| -> usize {
        let r = o / plan.inner;
        plan.row_offsets(r)[0] + (o % plan.inner) * plan.inner_stride[0]
    };
    let per_out = l.numel() / out_n;
    let mut out = pool::take::<T>(out_n);
    if ishape.len() > 1 {
        // several non-mergeable strided axes: the generic index walk
        for (o, d) in out.iter_mut().enumerate() {
            let inner = Layout::new(&ishape, &istr, offset_of(o));
            *d = inner.indices().fold(init(op), |acc, i| combine(op, acc, x[i]));
        }
        return out;
    }
    let (len, st) = (ishape[0], istr[0]);
    let par = l.numel() >= par_threshold();
    if out_n >= 4 || len < 2 * PIECE {
        let rows = |first: usize, o: &mut [T]| {
            vectorized!({
                for (i, d) in o.iter_mut().enumerate() {
                    *d = reduce_row(op, x, offset_of(first + i), len, st);
                }
            })
        };
        if par {
            let grain = (PIECE / 4 / per_out.max(1)).max(1);
            out.par_chunks_mut(grain)
                .enumerate()
                .for_each(|(c, o)| rows(c * grain, o));
        } else {
            rows(0, &mut out);
        }
    } else {
        // few long rows: split each into fixed pieces, reduce them (in parallel
        // when large) and combine in order
        for (o, d) in out.iter_mut().enumerate() {
            let base = offset_of(o);
            let mut part = vec![T::ZERO; len.div_ceil(PIECE)];
            let piece = |p: usize, v: &mut T| {
                let lo = p * PIECE;
                let n = PIECE.min(len - lo);
                *v = vectorized!(reduce_row(op, x, base + lo * st, n, st));
            };
            if par {
                part.par_iter_mut().enumerate().for_each(|(p, v)| piece(p, v));
            } else {
                part.iter_mut().enumerate().for_each(|(p, v)| piece(p, v));
            }
            *d = part.into_iter().fold(init(op), |a, b| combine(op, a, b));
        }
    }
    out
}

/// Accumulate plan rows `rows` of `x` into `out` (the broadcast output).
#[inline(always)]
fn accumulate_rows<T: Float>(op: ReduceOp, x: &[T], plan: &Plan<2>, rows: std::ops::Range<usize>, out: &mut [T]) {
    let [sx, so] = plan.inner_stride;
    let n = plan.inner;
    for r in rows {
        let [ox, oo] = plan.row_offsets(r);
        if so == 0 {
            out[oo] = combine(op, out[oo], reduce_row(op, x, ox, n, sx));
        } else if sx == 1 && so == 1 {
            for (d, &v) in out[oo..oo + n].iter_mut().zip(&x[ox..ox + n]) {
                *d = combine(op, *d, v);
            }
        } else {
            for j in 0..n {
                let d = &mut out[oo + j * so];
                *d = combine(op, *d, x[ox + j * sx]);
            }
        }
    }
}

/// Reduce over axes that are not all trailing: stream the input, accumulate into
/// the broadcast output.
fn reduce_general<T: Float>(op: ReduceOp, x: &[T], l: &Layout, out_shape: &[usize], out_n: usize) -> Vec<T> {
    let mut out = pool::take::<T>(out_n);
    out.fill(init(op));
    if l.numel() == 0 {
        return out;
    }
    let ob = Layout::contiguous(out_shape)
        .broadcast_to(l.shape())
        .expect("keepdim shape broadcasts");
    let plan = Plan::new([l, &ob]);
    let rows = plan.rows();
    // A block must be large enough to pay for a partial output of `out_n` elements.
    let block_elems = PIECE.max(8 * out_n);
    let block_rows = block_elems.div_ceil(plan.inner).max(1);
    let blocks = rows.div_ceil(block_rows);
    if blocks < 2 {
        vectorized!(accumulate_rows(op, x, &plan, 0..rows, &mut out));
        return out;
    }
    let block = |bi: usize| {
        let mut part = pool::take::<T>(out_n);
        part.fill(init(op));
        let range = bi * block_rows..((bi + 1) * block_rows).min(rows);
        vectorized!(accumulate_rows(op, x, &plan, range, &mut part));
        part
    };
    let partials: Vec<Vec<T>> = if l.numel() >= par_threshold() {
        (0..blocks).into_par_iter().map(block).collect()
    } else {
        (0..blocks).map(block).collect()
    };
    for part in partials {
        vectorized!({
            for (d, &v) in out.iter_mut().zip(&part) {
                *d = combine(op, *d, v);
            }
        });
        pool::give(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straightforward reference: walk every element, accumulate in f64.
    fn reference(op: ReduceOp, x: &[f64], l: &Layout, axes: &[usize]) -> Vec<f64> {
        let shape = l.shape();
        let out_shape: Vec<usize> = (0..shape.len())
            .map(|d| if axes.contains(&d) { 1 } else { shape[d] })
            .collect();
        let n: usize = out_shape.iter().product();
        let mut out = vec![init::<f64>(op); n];
        let dense = Layout::contiguous(shape);
        for (logical, storage) in dense.indices().zip(l.indices()) {
            // logical index → output index
            let mut rem = logical;
            let mut o = 0;
            let mut mul = 1;
            let mut idx = vec![0; shape.len()];
            for d in (0..shape.len()).rev() {
                idx[d] = rem % shape[d];
                rem /= shape[d];
            }
            for d in (0..shape.len()).rev() {
                if !axes.contains(&d) {
                    o += idx[d] * mul;
                }
                mul *= out_shape[d];
            }
            out[o] = combine(op, out[o], x[storage]);
        }
        out
    }

    fn check(shape: &[usize], strides: Option<&[usize]>, axes: &[usize]) {
        let l = match strides {
            Some(s) => Layout::new(shape, s, 1),
            None => Layout::contiguous(shape),
        };
        let len = l.storage_extent().max(1);
        let x: Vec<f64> = (0..len).map(|i| ((i * 7919) % 1013) as f64 - 500.0).collect();
        for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min] {
            let got = reduce(op, &x, &l, axes);
            let want = reference(op, &x, &l, axes);
            assert_eq!(got.len(), want.len(), "{shape:?} {axes:?}");
            for (g, w) in got.iter().zip(&want) {
                // integers: sums are exact in any order
                assert_eq!(g, w, "{op:?} {shape:?} strides {strides:?} axes {axes:?}");
            }
        }
    }

    #[test]
    fn trailing_and_general_paths_match_reference() {
        check(&[5, 7], None, &[1]);
        check(&[5, 7], None, &[0]);
        check(&[5, 7], None, &[0, 1]);
        check(&[3, 4, 5], None, &[1, 2]);
        check(&[3, 4, 5], None, &[0, 2]);
        check(&[3, 4, 5], None, &[1]);
        check(&[3, 1, 5], None, &[1]);
        check(&[3, 4, 5], None, &[]);
        // transposed view: trailing axis is strided
        check(&[6, 5], Some(&[1, 6]), &[1]);
        check(&[6, 5], Some(&[1, 6]), &[0]);
        // two strided trailing axes that do not merge
        check(&[2, 3, 4], Some(&[1, 8, 2]), &[1, 2]);
        // broadcast input (stride 0)
        check(&[4, 6], Some(&[0, 1]), &[0]);
        check(&[4, 6], Some(&[1, 0]), &[1]);
    }

    #[test]
    fn large_inputs_take_the_parallel_paths() {
        // many rows, few long rows, a whole-tensor reduction, and column sums
        check(&[300, 257], None, &[1]);
        check(&[2, 100_000], None, &[1]);
        check(&[200_003], None, &[0]);
        check(&[2048, 130], None, &[0]);
        check(&[64, 40, 30], None, &[0, 1]);
        check(&[300, 257], Some(&[1, 300]), &[0]);
    }

    #[test]
    fn empty_inputs() {
        let x: Vec<f64> = vec![];
        // reducing an empty axis: sum is 0 (core rejects max/min before this)
        assert_eq!(
            reduce(ReduceOp::Sum, &x, &Layout::contiguous(&[3, 0]), &[1]),
            vec![0.0; 3]
        );
        assert_eq!(
            reduce(ReduceOp::Sum, &x, &Layout::contiguous(&[0, 3]), &[0]),
            vec![0.0; 3]
        );
        assert!(reduce(ReduceOp::Sum, &x, &Layout::contiguous(&[0, 3]), &[1]).is_empty());
    }

    #[test]
    fn nan_propagates_through_max_and_min() {
        let mut x = vec![1.0f32; 1000];
        x[517] = f32::NAN;
        let l = Layout::contiguous(&[1000]);
        assert!(reduce(ReduceOp::Max, &x, &l, &[0])[0].is_nan());
        assert!(reduce(ReduceOp::Min, &x, &l, &[0])[0].is_nan());
    }
}
