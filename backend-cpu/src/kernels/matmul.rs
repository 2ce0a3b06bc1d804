//! Batched GEMM through `matrixmultiply`, which takes arbitrary row and column
//! strides: transposed operands are consumed in place, never copied. Batches run on
//! rayon when there are several and each is large enough to pay for a task.

use crate::strided::PAR_THRESHOLD;
use rayon::prelude::*;
use unigrad_core::Layout;

/// A type `matrixmultiply` has a GEMM for.
pub trait Gemm: Copy + Send + Sync + Default + 'static {
    /// `c = a·b` for one matrix, strides in elements.
    ///
    /// # Safety
    /// The pointers must address every element implied by the sizes and strides.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );
}

impl Gemm for f32 {
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const f32,
        rsa: isize,
        csa: isize,
        b: *const f32,
        rsb: isize,
        csb: isize,
        c: *mut f32,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: forwarded from the caller's contract.
        unsafe { matrixmultiply::sgemm(m, k, n, 1.0, a, rsa, csa, b, rsb, csb, 0.0, c, rsc, csc) }
    }
}

impl Gemm for f64 {
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const f64,
        rsa: isize,
        csa: isize,
        b: *const f64,
        rsb: isize,
        csb: isize,
        c: *mut f64,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: forwarded from the caller's contract.
        unsafe { matrixmultiply::dgemm(m, k, n, 1.0, a, rsa, csa, b, rsb, csb, 0.0, c, rsc, csc) }
    }
}

/// Batched product of `[.., m, k]` and `[.., k, n]` views with identical batch dims.
pub fn matmul<T: Gemm>(a: &[T], la: &Layout, b: &[T], lb: &Layout) -> Vec<T> {
    let r = la.rank();
    let (m, k, n) = (la.shape()[r - 2], la.shape()[r - 1], lb.shape()[r - 1]);
    let batch_shape = &la.shape()[..r - 2];
    let batch: usize = batch_shape.iter().product();
    let mut out = vec![T::default(); batch * m * n];
    if m * n == 0 {
        return out;
    }
    let (rsa, csa) = (la.strides()[r - 2] as isize, la.strides()[r - 1] as isize);
    let (rsb, csb) = (lb.strides()[r - 2] as isize, lb.strides()[r - 1] as isize);
    let a_batch = Layout::new(batch_shape, &la.strides()[..r - 2], la.offset());
    let b_batch = Layout::new(batch_shape, &lb.strides()[..r - 2], lb.offset());
    let a_offs: Vec<usize> = a_batch.indices().collect();
    let b_offs: Vec<usize> = b_batch.indices().collect();
    let a_offs = if batch_shape.is_empty() {
        vec![la.offset()]
    } else {
        a_offs
    };
    let b_offs = if batch_shape.is_empty() {
        vec![lb.offset()]
    } else {
        b_offs
    };
    let one = |i: usize, c: &mut [T]| {
        if k == 0 {
            return; // already zero
        }
        // SAFETY: a_offs/b_offs come from the validated layouts, so every element
        // addressed by (m, k, strides) and (k, n, strides) lies inside `a` and `b`;
        // `c` is a dense m×n block of `out`.
        unsafe {
            T::gemm(
                m,
                k,
                n,
                a.as_ptr().add(a_offs[i]),
                rsa,
                csa,
                b.as_ptr().add(b_offs[i]),
                rsb,
                csb,
                c.as_mut_ptr(),
                n as isize,
                1,
            )
        }
    };
    if batch > 1 && batch * m * n * k >= PAR_THRESHOLD * 8 {
        out.par_chunks_mut(m * n).enumerate().for_each(|(i, c)| one(i, c));
    } else {
        out.chunks_mut(m * n).enumerate().for_each(|(i, c)| one(i, c));
    }
    out
}
