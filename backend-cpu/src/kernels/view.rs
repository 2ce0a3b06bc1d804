//! The view family: strided copies (`contiguous`, `cat`, slicing writes, reads to
//! the host) and dtype casts, the kernels behind core's view ops (views themselves
//! are layouts and need no kernel).
//!
//! A copy into a dense destination (`contiguous()`, the head permutes of
//! attention) runs its rows on rayon when large: the rows of a dense destination
//! are consecutive disjoint chunks, so they split without unsafe code.

use crate::storage::{mismatch, CpuStorage};
use crate::strided::{par_threshold, Plan, RowCursor};
use rayon::prelude::*;
use unigrad_core::{BackendStorage, DType, Error, HostData, Layout, Result};

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

/// `Backend::copy_strided`: `src` through `sl` into `dst` through `dl` (same shape,
/// same dtype, both layouts inside their storage).
pub fn copy_into(src: &CpuStorage, sl: &Layout, dst: &mut CpuStorage, dl: &Layout) -> Result<()> {
    if sl.shape() != dl.shape() {
        return Err(Error::ShapeMismatch {
            op: "copy_strided",
            lhs: sl.shape().to_vec(),
            rhs: dl.shape().to_vec(),
        });
    }
    if dl.storage_extent() > dst.len() || sl.storage_extent() > src.len() {
        return Err(Error::invalid("copy_strided", "layout exceeds its storage"));
    }
    match (src, dst) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => copy_strided(a, sl, b, dl),
        (CpuStorage::F64(a), CpuStorage::F64(b)) => copy_strided(a, sl, b, dl),
        (CpuStorage::I64(a), CpuStorage::I64(b)) => copy_strided(a, sl, b, dl),
        (a, b) => return Err(mismatch("copy_strided", a, b)),
    }
    Ok(())
}

/// `Backend::to_host`: the elements of `src` through `l` in row-major order.
pub fn to_host(src: &CpuStorage, l: &Layout) -> HostData {
    match src {
        CpuStorage::F32(v) => HostData::F32(to_dense(v, l)),
        CpuStorage::F64(v) => HostData::F64(to_dense(v, l)),
        CpuStorage::I64(v) => HostData::I64(to_dense(v, l)),
    }
}

/// `Backend::cast`: the elements of `src` through `l`, converted to `dtype` (dense).
pub fn cast(src: &CpuStorage, l: &Layout, dtype: DType) -> CpuStorage {
    CpuStorage::from_host(match (to_host(src, l), dtype) {
        (HostData::F32(v), DType::F64) => HostData::F64(v.into_iter().map(|x| x as f64).collect()),
        (HostData::F64(v), DType::F32) => HostData::F32(v.into_iter().map(|x| x as f32).collect()),
        (h, d) if h.dtype() == d => h,
        (h, d) => HostData::from_f64(h.to_f64(), d),
    })
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
