//! Reductions over sets of axes.
//!
//! Two paths: when the reduced axes are the trailing ones (softmax and norm
//! statistics, `sum(-1)`), each output is an independent row reduction and rows run
//! in parallel with an 8-way unrolled accumulator; otherwise the input is streamed
//! once in storage order and accumulated into the broadcast output.

use crate::elem::Float;
use crate::strided::{coalesce, Plan, PAR_THRESHOLD};
use rayon::prelude::*;
use unigrad_core::{Layout, ReduceOp};

/// Sum of a dense slice with eight independent accumulators (vectorises).
#[inline]
pub fn sum_slice<T: Float>(x: &[T]) -> T {
    let mut acc = [T::ZERO; 8];
    let chunks = x.chunks_exact(8);
    let rem = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] = acc[i] + c[i];
        }
    }
    let mut s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for &v in rem {
        s = s + v;
    }
    s
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
        // independent row reductions
        let k = rank - axes.len();
        let (ishape, [istr]) = coalesce(&shape[k..], [&l.strides()[k..]]);
        let outer = Layout::new(&shape[..k], &l.strides()[..k], l.offset());
        let dense_outer = Layout::contiguous(&shape[..k]);
        let plan = Plan::new([&outer, &dense_outer]);
        let row = |base: usize| -> T {
            if ishape.len() == 1 && istr[0] == 1 && op == ReduceOp::Sum {
                return sum_slice(&x[base..base + ishape[0]]);
            }
            let inner = Layout::new(&ishape, &istr, base);
            inner.indices().fold(init(op), |acc, i| combine(op, acc, x[i]))
        };
        let mut out = vec![T::ZERO; out_n];
        let per_out = l.numel() / out_n.max(1);
        let offset_of = |o: usize| -> usize {
            if plan.outer.is_empty() && plan.inner == 1 {
                plan.offsets[0]
            } else {
                let r = o / plan.inner;
                plan.row_offsets(r)[0] + (o % plan.inner) * plan.inner_stride[0]
            }
        };
        if l.numel() >= PAR_THRESHOLD && out_n > 1 {
            out.par_iter_mut()
                .with_min_len((PAR_THRESHOLD / per_out.max(1)).max(1))
                .enumerate()
                .for_each(|(o, d)| *d = row(offset_of(o)));
        } else {
            for (o, d) in out.iter_mut().enumerate() {
                *d = row(offset_of(o));
            }
        }
        return out;
    }
    // general path: stream the input, accumulate into the broadcast output
    let mut out = vec![init::<T>(op); out_n];
    if l.numel() == 0 {
        return out;
    }
    let ob = Layout::contiguous(&out_shape)
        .broadcast_to(shape)
        .expect("keepdim shape broadcasts");
    let plan = Plan::new([l, &ob]);
    let [sx, so] = plan.inner_stride;
    for r in 0..plan.rows() {
        let [ox, oo] = plan.row_offsets(r);
        if so == 0 {
            let mut acc = out[oo];
            for j in 0..plan.inner {
                acc = combine(op, acc, x[ox + j * sx]);
            }
            out[oo] = acc;
        } else if sx == 1 && so == 1 {
            let n = plan.inner;
            for (d, &v) in out[oo..oo + n].iter_mut().zip(&x[ox..ox + n]) {
                *d = combine(op, *d, v);
            }
        } else {
            for j in 0..plan.inner {
                let d = &mut out[oo + j * so];
                *d = combine(op, *d, x[ox + j * sx]);
            }
        }
    }
    out
}
