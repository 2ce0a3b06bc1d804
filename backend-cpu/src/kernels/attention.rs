//! The attention family: fused scaled-dot-product attention, forward and backward
//! (the overrides of `Backend::attention` and `Backend::attention_backward`).
//!
//! Why: the composed form runs a dozen kernels, each its own parallel region, and
//! writes and re-reads `[B, H, Tq, Tk]` scores and probabilities. Here each direction
//! is ONE rayon region over the `B·H` (batch, head) blocks. A block walks its queries
//! in tiles of [`TILE`] rows: the tile's scores (`TILE × Tk`, a few KiB) stay in
//! cache from the `Q·Kᵀ` product through the softmax to the `P·V` product, and the
//! products run on the strided heads directly (the heads of a packed QKV projection
//! are never copied out), through our own f32 kernel or matrixmultiply. With the causal flag a tile only
//! multiplies the keys its last query may see, which skips close to half the work.
//!
//! The forward keeps the log-sum-exp of each score row; the backward recomputes the
//! probabilities from it tile by tile (flash attention's scheme) into a per-block
//! scratch and runs each gradient product once per block. Outputs are token-major (`[B, T, H, X]`), as the trait
//! documents.

use super::reduce::{reduce_slice, sum_slice};
use crate::elem::Float;
use crate::pool;
use crate::simd::vectorized;
use crate::storage::{check_alloc, slice_of, unsupported, CpuStorage, StorageElem};
use crate::strided::par_threshold;
use rayon::prelude::*;
use unigrad_core::backend::AttentionArgs;
use unigrad_core::{BackendStorage, Layout, ReduceOp, Result};

/// Query rows per tile: small enough that a tile's scores stay in L2 at the sequence
/// lengths the models use, fine enough that the causal skip saves most of the masked
/// half. 64 measured faster than 32 at the reference shape (B·H = 64 blocks of
/// 128 × 128 × 32, one thread, CPU time; noisy): each tile's products re-pack the
/// block's keys and values, and halving the tiles halves that.
const TILE: usize = 64;

/// A type with a GEMM taking `alpha` and `beta`: matrixmultiply's, or for f32 our own
/// kernel where it applies.
trait Gemm: Float {
    /// `c = alpha·a·b + beta·c` for one matrix, strides in elements.
    ///
    /// # Safety
    /// The pointers must address every element implied by the sizes and strides,
    /// `c`'s elements must not overlap `a`'s or `b`'s, and with `beta ≠ 0` `c` must
    /// be initialised (with `beta = 0` it is never read).
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
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
        alpha: f32,
        a: *const f32,
        rsa: isize,
        csa: isize,
        b: *const f32,
        rsb: isize,
        csb: isize,
        beta: f32,
        c: *mut f32,
        rsc: isize,
        csc: isize,
    ) {
        // Our kernel where it applies (every call of this module: `beta = 0`, rows of
        // `c` with unit column stride), one thread, as the block tasks already run in
        // parallel. It reads a row-major A in place and packs only B; matrixmultiply
        // packs both, which on these small tiles cost about as much as the products.
        #[cfg(target_arch = "x86_64")]
        if let Some(isa) = super::matmul::f32_gemm() {
            if beta == 0.0 && csc == 1 && rsc >= n as isize && m > 0 && k > 0 && n > 0 {
                let op = |ptr, rs, cs| super::matmul::own::Operand { ptr, rs, cs };
                // SAFETY: the caller's contract covers a, b and c; `beta = 0`, so `c` is
                // only written, `m` rows of `n` values `rsc ≥ n` apart; `isa` comes from
                // `f32_gemm`, which only returns an ISA this CPU has.
                unsafe {
                    super::matmul::own::gemm(
                        isa,
                        m,
                        k,
                        n,
                        op(a, rsa, csa),
                        op(b, rsb, csb),
                        c,
                        rsc as usize,
                        alpha,
                        1,
                    )
                };
                return;
            }
        }
        // SAFETY: forwarded from the caller's contract.
        unsafe { matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
    }
}

impl Gemm for f64 {
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: f64,
        a: *const f64,
        rsa: isize,
        csa: isize,
        b: *const f64,
        rsb: isize,
        csb: isize,
        beta: f64,
        c: *mut f64,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: forwarded from the caller's contract.
        unsafe { matrixmultiply::dgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
    }
}

/// An output pointer shared by the block tasks, which write disjoint elements.
#[derive(Clone, Copy)]
struct Out<T>(*mut T);
// SAFETY: each task writes only the elements of its own (batch, head) block (see
// `forward_block` / `backward_block`), and the buffers outlive the parallel loop.
unsafe impl<T: Send> Send for Out<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Out<T> {}

impl<T> Out<T> {
    /// The pointer `i` elements in (a method, so closures capture the wrapper).
    fn at(self, i: usize) -> *mut T {
        self.0.wrapping_add(i)
    }
}

/// One strided `[B, H, T, X]` operand.
#[derive(Clone, Copy)]
struct Operand<'a, T> {
    data: &'a [T],
    l: &'a Layout,
}

impl<T> Operand<'_, T> {
    /// Pointer to row `row` of block `(b, h)`.
    fn row(&self, b: usize, h: usize, row: usize) -> *const T {
        let s = self.l.strides();
        self.data
            .as_ptr()
            .wrapping_add(self.l.offset() + b * s[0] + h * s[1] + row * s[2])
    }
    /// `(row stride, column stride)` as GEMM strides.
    fn rc(&self) -> (isize, isize) {
        let s = self.l.strides();
        (s[2] as isize, s[3] as isize)
    }
}

/// The typed operands of one call.
struct Problem<'a, T> {
    q: Operand<'a, T>,
    k: Operand<'a, T>,
    v: Operand<'a, T>,
    bias: Option<Operand<'a, T>>,
    scale: T,
    causal: bool,
    /// `(B, H, Tq, Tk, D, Dv)`
    dims: (usize, usize, usize, usize, usize, usize),
}

impl<T: Gemm> Problem<'_, T> {
    /// Keys visible to the rows `r0..r0 + rows` together, and to row `i` alone.
    fn keys_for_tile(&self, r0: usize, rows: usize) -> usize {
        let (_, _, tq, tk, _, _) = self.dims;
        if self.causal {
            tk.min(r0 + rows + tk - tq)
        } else {
            tk
        }
    }

    fn keys_for_row(&self, i: usize, kn: usize) -> usize {
        let (_, _, tq, tk, _, _) = self.dims;
        if self.causal {
            kn.min(i + tk - tq + 1)
        } else {
            kn
        }
    }

    /// Scores of the tile's rows against the first `kn` keys into `s` (`rows` rows
    /// `ld` apart), bias added on the visible part.
    #[allow(clippy::too_many_arguments)]
    fn scores(&self, b: usize, h: usize, r0: usize, rows: usize, kn: usize, ld: usize, s: &mut [T]) {
        let (_, _, _, _, d, _) = self.dims;
        let (qr, qc) = self.q.rc();
        let (kr, kc) = self.k.rc();
        // SAFETY: the layouts were checked to lie inside their storage, so the rows
        // r0..r0+rows of q and 0..kn of k (each d columns) are in bounds; `s` holds
        // `rows` rows of `ld ≥ kn` elements and is a separate buffer.
        unsafe {
            T::gemm(
                rows,
                d,
                kn,
                self.scale,
                self.q.row(b, h, r0),
                qr,
                qc,
                self.k.row(b, h, 0),
                kc,
                kr,
                T::ZERO,
                s.as_mut_ptr(),
                ld as isize,
                1,
            )
        }
        if let Some(bias) = &self.bias {
            let bs = bias.l.strides()[3];
            for i in 0..rows {
                let lim = self.keys_for_row(r0 + i, kn);
                let base = bias.l.offset()
                    + b * bias.l.strides()[0]
                    + h * bias.l.strides()[1]
                    + (r0 + i) * bias.l.strides()[2];
                for (j, x) in s[i * ld..i * ld + lim].iter_mut().enumerate() {
                    *x = *x + bias.data[base + j * bs];
                }
            }
        }
    }
}

impl<T: Gemm> Problem<'_, T> {
    /// The scores of the query tile `r0..r0 + rows` of block `(b, h)` into `s` (rows
    /// `ld` apart, or `kn` apart when `ld` is `None`), then `f(i, row, lim)` on the
    /// first `kn` entries of each row (`lim` visible keys); the rest of a row is zeroed.
    /// Returns `kn`, the number of keys the tile covers.
    #[allow(clippy::too_many_arguments)]
    fn tile(
        &self,
        b: usize,
        h: usize,
        r0: usize,
        rows: usize,
        ld: Option<usize>,
        s: &mut [T],
        mut f: impl FnMut(usize, &mut [T], usize),
    ) -> usize {
        let kn = self.keys_for_tile(r0, rows);
        let ld = ld.unwrap_or(kn);
        self.scores(b, h, r0, rows, kn, ld, s);
        for (i, row) in s[..rows * ld].chunks_exact_mut(ld).enumerate() {
            let (vis, rest) = row.split_at_mut(kn);
            f(i, vis, self.keys_for_row(r0 + i, kn));
            rest.fill(T::ZERO);
        }
        kn
    }
}

/// Softmax of `row[..lim]` in place, zeros after it; returns the row's log-sum-exp.
#[inline(always)]
fn softmax_row<T: Float>(row: &mut [T], lim: usize) -> T {
    let (vis, rest) = row.split_at_mut(lim);
    let m = reduce_slice(ReduceOp::Max, vis);
    // an all −∞ row: shift by 0 (the sum is then 0 and the row NaN, as in softmax)
    let m = if m == T::NEG_INF { T::ZERO } else { m };
    for x in vis.iter_mut() {
        *x = (*x - m).exp();
    }
    let s = sum_slice(vis);
    let inv = T::ONE / s;
    for x in vis.iter_mut() {
        *x = *x * inv;
    }
    rest.fill(T::ZERO);
    m + s.ln()
}

/// Probabilities `exp(row − lse)` on `row[..lim]`, zeros after it.
#[inline(always)]
fn probs_row<T: Float>(row: &mut [T], lim: usize, lse: T) {
    let (vis, rest) = row.split_at_mut(lim);
    for x in vis.iter_mut() {
        *x = (*x - lse).exp();
    }
    rest.fill(T::ZERO);
}

/// `gp ← p ⊙ (gp − Σ gp ⊙ p)` (the softmax backward of one row; p is 0 past the
/// visible keys, so so is the result).
#[inline(always)]
fn dscores_row<T: Float>(p: &[T], gp: &mut [T]) {
    let dot: T = p.iter().zip(gp.iter()).map(|(&a, &b)| a * b).sum();
    for (g, &pv) in gp.iter_mut().zip(p) {
        *g = pv * (*g - dot);
    }
}

/// Forward of block `bh = b·H + h`: its rows of `o` (token-major) and its `lse`.
fn forward_block<T: Gemm>(p: &Problem<'_, T>, bh: usize, lse: &mut [T], o: Out<T>, s: &mut Vec<T>) {
    let (_, nh, tq, tk, _, dv) = p.dims;
    let (b, h) = (bh / nh, bh % nh);
    let orow = nh * dv;
    let obase = b * tq * orow + h * dv;
    let (vr, vc) = p.v.rc();
    s.resize(TILE * tk, T::ZERO);
    for r0 in (0..tq).step_by(TILE) {
        let rows = TILE.min(tq - r0);
        let kn = p.tile(b, h, r0, rows, None, s, |i, row, lim| {
            lse[r0 + i] = vectorized!(softmax_row(row, lim));
        });
        // SAFETY: `s` holds rows·kn probabilities; v's rows 0..kn are in bounds (layout
        // checked); the output rows r0..r0+rows of this (b, h) are in bounds of the
        // B·Tq·H·Dv buffer and written by this task only.
        unsafe {
            T::gemm(
                rows,
                kn,
                dv,
                T::ONE,
                s.as_ptr(),
                kn as isize,
                1,
                p.v.row(b, h, 0),
                vr,
                vc,
                T::ZERO,
                o.at(obase + r0 * orow),
                orow as isize,
                1,
            )
        }
    }
}

/// Run `f(block, scratch)` over the `B·H` blocks in ONE parallel region, or on the
/// calling thread when the problem is too small to pay for waking the workers.
fn for_blocks<T: Gemm>(p: &Problem<'_, T>, f: impl Fn(usize, &mut (Vec<T>, Vec<T>)) + Sync + Send) {
    let (nb, nh, tq, tk, _, _) = p.dims;
    let blocks = nb * nh;
    if tq == 0 || blocks == 0 {
        return;
    }
    if blocks > 1 && blocks * tq * tk >= par_threshold() {
        (0..blocks)
            .into_par_iter()
            .for_each_init(|| (Vec::new(), Vec::new()), |scratch, bh| f(bh, scratch));
    } else {
        let mut scratch = (Vec::new(), Vec::new());
        (0..blocks).for_each(|bh| f(bh, &mut scratch));
    }
}

fn forward_typed<T: Gemm>(p: &Problem<'_, T>) -> (Vec<T>, Vec<T>) {
    let (nb, nh, tq, _, _, dv) = p.dims;
    // every element of both is written below (o by β = 0 products over all rows)
    let mut o = pool::take::<T>(nb * tq * nh * dv);
    let mut lse = pool::take::<T>(nb * nh * tq);
    let (out, l) = (Out(o.as_mut_ptr()), Out(lse.as_mut_ptr()));
    for_blocks(p, |bh, (s, _)| {
        // SAFETY: block bh's Tq log-sum-exps, written by this task only.
        let l = unsafe { std::slice::from_raw_parts_mut(l.at(bh * tq), tq) };
        forward_block(p, bh, l, out, s)
    });
    (o, lse)
}

/// The gradient buffers of one backward call.
#[derive(Clone, Copy)]
struct Grads<T> {
    q: Out<T>,
    k: Out<T>,
    v: Out<T>,
}

/// Backward of block `bh`: its rows of `dQ`, `dK`, `dV` (token-major). The block's
/// probabilities `P` and score gradients `dS` (`Tq × Tk` each, cache-resident at the
/// models' lengths) are rebuilt tile by tile (causal tiles skip their masked keys),
/// then each gradient is ONE product over the whole block: small per-tile products
/// with a 32-deep inner dimension measured slower than the masked work they save.
fn backward_block<T: Gemm>(
    p: &Problem<'_, T>,
    dout: &Operand<'_, T>,
    bh: usize,
    lse: &[T],
    g: Grads<T>,
    (s, gp): &mut (Vec<T>, Vec<T>),
) {
    let (_, nh, tq, tk, d, dv) = p.dims;
    let (b, h) = (bh / nh, bh % nh);
    let (qrow, vrow) = (nh * d, nh * dv);
    let (qbase, kbase, vbase) = (b * tq * qrow + h * d, b * tk * qrow + h * d, b * tk * vrow + h * dv);
    let (qr, qc) = p.q.rc();
    let (kr, kc) = p.k.rc();
    let (vr, vc) = p.v.rc();
    let (dr, dc) = dout.rc();
    s.resize(tq * tk, T::ZERO);
    gp.resize(tq * tk, T::ZERO);
    for r0 in (0..tq).step_by(TILE) {
        let rows = TILE.min(tq - r0);
        let tile = r0 * tk..(r0 + rows) * tk;
        let kn = p.tile(b, h, r0, rows, Some(tk), &mut s[tile.clone()], |i, row, lim| {
            vectorized!(probs_row(row, lim, lse[r0 + i]))
        });
        let gt = &mut gp[tile.clone()];
        // SAFETY: dout's rows r0..r0+rows and v's rows 0..kn lie inside their checked
        // layouts; `gt` holds `rows` rows of tk ≥ kn elements, a separate buffer.
        unsafe {
            // dP = dO·Vᵀ
            T::gemm(
                rows,
                dv,
                kn,
                T::ONE,
                dout.row(b, h, r0),
                dr,
                dc,
                p.v.row(b, h, 0),
                vc,
                vr,
                T::ZERO,
                gt.as_mut_ptr(),
                tk as isize,
                1,
            );
        }
        for (pr, gr) in s[tile].chunks_exact(tk).zip(gt.chunks_exact_mut(tk)) {
            let (vis, rest) = gr.split_at_mut(kn);
            vectorized!(dscores_row(&pr[..kn], vis));
            rest.fill(T::ZERO);
        }
    }
    // SAFETY: q, k, dout rows 0..T lie inside their checked layouts; `s` and `gp` hold
    // Tq·Tk elements; the written rows of dQ, dK, dV belong to this (b, h) block only,
    // and β = 0 writes every one of their elements without reading them.
    unsafe {
        // dQ = scale·dS·K
        T::gemm(
            tq,
            tk,
            d,
            p.scale,
            gp.as_ptr(),
            tk as isize,
            1,
            p.k.row(b, h, 0),
            kr,
            kc,
            T::ZERO,
            g.q.at(qbase),
            qrow as isize,
            1,
        );
        // dK = scale·dSᵀ·Q
        T::gemm(
            tk,
            tq,
            d,
            p.scale,
            gp.as_ptr(),
            1,
            tk as isize,
            p.q.row(b, h, 0),
            qr,
            qc,
            T::ZERO,
            g.k.at(kbase),
            qrow as isize,
            1,
        );
        // dV = Pᵀ·dO
        T::gemm(
            tk,
            tq,
            dv,
            T::ONE,
            s.as_ptr(),
            1,
            tk as isize,
            dout.row(b, h, 0),
            dr,
            dc,
            T::ZERO,
            g.v.at(vbase),
            vrow as isize,
            1,
        );
    }
}

fn backward_typed<T: Gemm>(p: &Problem<'_, T>, lse: &[T], dout: &Operand<'_, T>) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (nb, nh, tq, tk, d, dv) = p.dims;
    // every element of the three is written by β = 0 products
    let mut gq = pool::take::<T>(nb * tq * nh * d);
    let mut gk = pool::take::<T>(nb * tk * nh * d);
    let mut gv = pool::take::<T>(nb * tk * nh * dv);
    let g = Grads {
        q: Out(gq.as_mut_ptr()),
        k: Out(gk.as_mut_ptr()),
        v: Out(gv.as_mut_ptr()),
    };
    if tq == 0 {
        // no query reaches any key: the key and value gradients are zero
        gk.fill(T::ZERO);
        gv.fill(T::ZERO);
        return (gq, gk, gv);
    }
    for_blocks(p, |bh, scratch| {
        backward_block(p, dout, bh, &lse[bh * tq..(bh + 1) * tq], g, scratch)
    });
    (gq, gk, gv)
}

/// The CPU storage of an operand, with its layout checked against it.
fn operand<'a>(op: &'static str, s: &'a dyn BackendStorage, l: &Layout) -> Result<&'a CpuStorage> {
    crate::view(op, s, l)
}

/// The typed operands of `a`, all of `T` (a dtype mismatch is an error naming `op`).
fn problem<'a, T: Gemm + StorageElem>(op: &'static str, a: &AttentionArgs<'a>) -> Result<Problem<'a, T>> {
    let first = operand(op, a.q.0, a.q.1)?;
    let typed = |(s, l): (&'a dyn BackendStorage, &'a Layout)| -> Result<Operand<'a, T>> {
        Ok(Operand {
            data: slice_of(op, operand(op, s, l)?, first)?,
            l,
        })
    };
    Ok(Problem {
        q: typed(a.q)?,
        k: typed(a.k)?,
        v: typed(a.v)?,
        bias: a.bias.map(typed).transpose()?,
        scale: T::from_f64(a.scale),
        causal: a.causal,
        dims: a.dims(),
    })
}

fn forward_of<T: Gemm + StorageElem>(op: &'static str, a: &AttentionArgs<'_>) -> Result<(CpuStorage, CpuStorage)> {
    let (o, lse) = forward_typed(&problem::<T>(op, a)?);
    Ok((T::wrap(o), T::wrap(lse)))
}

/// `Backend::attention` on the CPU: `(O token-major, lse)`.
pub fn attention(a: &AttentionArgs<'_>) -> Result<(CpuStorage, CpuStorage)> {
    const OP: &str = "attention";
    let (nb, nh, tq, _, _, dv) = a.dims();
    check_alloc(OP, nb * tq * nh * dv, a.q.0.dtype())?;
    match operand(OP, a.q.0, a.q.1)? {
        CpuStorage::F32(_) => forward_of::<f32>(OP, a),
        CpuStorage::F64(_) => forward_of::<f64>(OP, a),
        s => Err(unsupported(OP, s, a.q.1.shape())),
    }
}

fn backward_of<T: Gemm + StorageElem>(
    op: &'static str,
    a: &AttentionArgs<'_>,
    lse: &CpuStorage,
    dout: &CpuStorage,
    dl: &Layout,
) -> Result<(CpuStorage, CpuStorage, CpuStorage)> {
    let p = problem::<T>(op, a)?;
    let first = operand(op, a.q.0, a.q.1)?;
    let lse = slice_of::<T>(op, lse, first)?;
    let dout = Operand {
        data: slice_of::<T>(op, dout, first)?,
        l: dl,
    };
    let (gq, gk, gv) = backward_typed(&p, lse, &dout);
    Ok((T::wrap(gq), T::wrap(gk), T::wrap(gv)))
}

/// `Backend::attention_backward` on the CPU: `(dQ, dK, dV)`, token-major.
pub fn attention_backward(
    a: &AttentionArgs<'_>,
    lse: &dyn BackendStorage,
    dout: &dyn BackendStorage,
    dl: &Layout,
) -> Result<(CpuStorage, CpuStorage, CpuStorage)> {
    const OP: &str = "attention_backward";
    let (nb, nh, tq, tk, d, dv) = a.dims();
    for n in [nb * tq * nh * d, nb * tk * nh * d, nb * tk * nh * dv] {
        check_alloc(OP, n, a.q.0.dtype())?;
    }
    let lse = operand(OP, lse, &Layout::contiguous(&[nb, nh, tq]))?;
    let dout = operand(OP, dout, dl)?;
    match operand(OP, a.q.0, a.q.1)? {
        CpuStorage::F32(_) => backward_of::<f32>(OP, a, lse, dout, dl),
        CpuStorage::F64(_) => backward_of::<f64>(OP, a, lse, dout, dl),
        s => Err(unsupported(OP, s, a.q.1.shape())),
    }
}
