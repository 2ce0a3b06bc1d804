//! Strided copies (`contiguous`, `cat`, slicing writes) and dtype casts.
//!
//! A copy into a dense destination (`contiguous()`, the head permutes of
//! attention) runs its rows on rayon when large: the rows of a dense destination
//! are consecutive disjoint chunks, so they split without unsafe code.

use crate::strided::{par_threshold, Plan, RowCursor};
use rayon::prelude::*;
use unigrad_core::Layout;

#[inline(always)]
fn copy_row<T: Copy>(src: &[T], os: usize, ss: usize, dst: &mut [T], od: usize, sd: usize, n: usize) {
    if ss == 1 && sd == 1 {
        let (s, d) = (&src[os..os + n], &mut dst[od..od + n]);
        if n > 256 {
            d.copy_from_slice(s);
            return;
        }
        // short rows (attention heads: 32 elements) in fixed 8-element pieces, which
        // compile to plain vector moves instead of a `memcpy` call per row
        let mut dc = d.chunks_exact_mut(8);
        let mut sc = s.chunks_exact(8);
        for (a, b) in (&mut dc).zip(&mut sc) {
            let piece: [T; 8] = b.try_into().expect("chunks_exact(8)");
            a.copy_from_slice(&piece);
        }
        for (a, &b) in dc.into_remainder().iter_mut().zip(sc.remainder()) {
            *a = b;
        }
    } else {
        for j in 0..n {
            dst[od + j * sd] = src[os + j * ss];
        }
    }
}

/// Copy `src` viewed through `ls` into `dst` viewed through `ld` (same shape).
pub fn copy_strided<T: Copy + Send + Sync>(src: &[T], ls: &Layout, dst: &mut [T], ld: &Layout) {
    let numel = ls.numel();
    if numel == 0 {
        return;
    }
    let plan = Plan::new([ls, ld]);
    let [ss, sd] = plan.inner_stride;
    let n = plan.inner;
    if ld.is_contiguous() && numel >= par_threshold() && plan.rows() > 1 {
        // dense destination: row r is dst[off + r·n .. off + (r+1)·n]; blocks of whole
        // rows, each walked with a cursor
        let off = ld.offset();
        let rows_per_block = (BLOCK / n).max(1);
        dst[off..off + numel]
            .par_chunks_mut(rows_per_block * n)
            .enumerate()
            .for_each(|(b, d)| {
                let mut cur = RowCursor::new(&plan, b * rows_per_block);
                for row in d.chunks_mut(n) {
                    copy_row(src, cur.offsets()[0], ss, row, 0, 1, n);
                    cur.advance();
                }
            });
        return;
    }
    let mut cur = RowCursor::new(&plan, 0);
    for _ in 0..plan.rows() {
        let [os, od] = cur.offsets();
        copy_row(src, os, ss, dst, od, sd, n);
        cur.advance();
    }
}

/// Elements per parallel block of a copy.
const BLOCK: usize = 1 << 13;

/// Elements of `src` through `l` as a dense vector.
pub fn to_dense<T: Copy + Default + Send + Sync>(src: &[T], l: &Layout) -> Vec<T> {
    if l.is_contiguous() {
        return src[l.offset()..l.offset() + l.numel()].to_vec();
    }
    let mut out = vec![T::default(); l.numel()];
    copy_strided(src, l, &mut out, &Layout::contiguous(l.shape()));
    out
}

/// Borrow the elements when already dense, else copy them.
pub fn dense_cow<'a, T: Copy + Default + Send + Sync>(src: &'a [T], l: &Layout) -> std::borrow::Cow<'a, [T]> {
    if l.is_contiguous() {
        std::borrow::Cow::Borrowed(&src[l.offset()..l.offset() + l.numel()])
    } else {
        std::borrow::Cow::Owned(to_dense(src, l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_copies_match_index_walk_small_and_large() {
        for (b, t, h, d) in [(2, 3, 2, 4), (4, 64, 4, 32)] {
            let src: Vec<f32> = (0..b * t * h * d).map(|i| i as f32).collect();
            // [b, t, h, d] viewed as [b, h, t, d]
            let l = Layout::contiguous(&[b, t, h, d]).permute(&[0, 2, 1, 3]).unwrap();
            let dense = to_dense(&src, &l);
            let want: Vec<f32> = l.indices().map(|i| src[i]).collect();
            assert_eq!(dense, want);
            // into a strided destination (every other column of a wider buffer)
            let mut wide = vec![-1.0f32; b * h * t * d * 2];
            let ld = Layout::new(&[b, h, t, d], &[h * t * d * 2, t * d * 2, d * 2, 1], d);
            copy_strided(&src, &l, &mut wide, &ld);
            let got: Vec<f32> = ld.indices().map(|i| wide[i]).collect();
            assert_eq!(got, want);
            assert_eq!(wide[0], -1.0);
        }
    }
}
