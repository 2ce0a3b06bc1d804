//! Strided copies (`contiguous`, `cat`, slicing writes) and dtype casts.

use crate::strided::Plan;
use unigrad_core::Layout;

/// Copy `src` viewed through `ls` into `dst` viewed through `ld` (same shape).
pub fn copy_strided<T: Copy>(src: &[T], ls: &Layout, dst: &mut [T], ld: &Layout) {
    if ls.numel() == 0 {
        return;
    }
    let plan = Plan::new([ls, ld]);
    let [ss, sd] = plan.inner_stride;
    let n = plan.inner;
    for r in 0..plan.rows() {
        let [os, od] = plan.row_offsets(r);
        if ss == 1 && sd == 1 {
            dst[od..od + n].copy_from_slice(&src[os..os + n]);
        } else {
            for j in 0..n {
                dst[od + j * sd] = src[os + j * ss];
            }
        }
    }
}

/// Elements of `src` through `l` as a dense vector.
pub fn to_dense<T: Copy + Default>(src: &[T], l: &Layout) -> Vec<T> {
    if l.is_contiguous() {
        return src[l.offset()..l.offset() + l.numel()].to_vec();
    }
    let mut out = vec![T::default(); l.numel()];
    copy_strided(src, l, &mut out, &Layout::contiguous(l.shape()));
    out
}

/// Borrow the elements when already dense, else copy them.
pub fn dense_cow<'a, T: Copy + Default>(src: &'a [T], l: &Layout) -> std::borrow::Cow<'a, [T]> {
    if l.is_contiguous() {
        std::borrow::Cow::Borrowed(&src[l.offset()..l.offset() + l.numel()])
    } else {
        std::borrow::Cow::Owned(to_dense(src, l))
    }
}
