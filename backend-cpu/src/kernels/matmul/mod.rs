//! Batched GEMM. f32 on x86-64 with AVX-512F or AVX2 + FMA takes our own kernel
//! ([`own`]: the right operand packed once per product and shared by all
//! tasks); everything else (f64, other CPUs, `UNIGRAD_OWN_GEMM=0`) takes
//! `matrixmultiply`, which is also the reference our kernel is tested against. Both
//! take arbitrary row and column strides: transposed operands (`x.t()`,
//! `k.transpose(-1, -2)`) are consumed in place, never copied, and broadcast batch
//! dims (stride 0) cost nothing.
//!
//! Measured with `examples/step_ops.rs` on every product of the reference step
//! (2-core Zen 4, one thread, CPU clock, machine shared with other jobs): ours 93 and
//! matrixmultiply 91 GFLOP/s weighted over the step, both close to this core's FMA
//! peak (≈ 100–115 GFLOP/s measured with an FMA-only loop: 2×256-bit FMA pipes, so
//! AVX-512 has the same peak as AVX2 here).
//!
//! The threading policy below was measured on the matrixmultiply path; our kernel
//! uses the same number of parts per product (`split_parts`).
//!
//! # Threading policy (measured with `examples/gemm_policy.rs`)
//!
//! Both cores are used, by rayon, in two ways:
//! - a **batch** of products (attention: `[64,128,32]·[64,32,128]` and the
//!   backward variants with a transposed operand) runs one single-threaded GEMM per
//!   matrix on rayon's pool. matrixmultiply's own `threading` feature cannot help
//!   here: its heuristic keeps a GEMM on one thread while `m·k + k·n < 2¹⁴`, which
//!   holds for every attention product of the Transformer. Measured with the
//!   feature on, these products ran at the 1-thread rate (e.g. 100 vs 99 GFLOP/s
//!   for `Q·Kᵀ`), while rayon over the batch reached up to 1.8× that rate.
//! - a **single large product** (the Linear layers, `[2048,128]·[128,512]`, and
//!   their backward `dY·Wᵀ`, `Xᵀ·dY`) is cut into one block of rows (or of
//!   columns, when `n > m`) — four blocks per rayon thread, one GEMM call per
//!   block, on multiples of 16 rows/columns. Four rather than one block per thread
//!   lets rayon balance the work when one core is briefly busy elsewhere: with one
//!   block per thread the Linear shapes ran at 120–200 GFLOP/s, with four at
//!   165–236 GFLOP/s (`examples/step_ops.rs`, 2 threads, same session), at the cost of
//!   packing the shared operand once per block.
//!
//! For single products, the `threading` feature (kept as the opt-in `mm-threading`
//! cargo feature, which then skips the split) and the rayon split both peaked near
//! 2× the 1-thread rate in side-by-side runs (best of interleaved rounds: 209 vs
//! 161 GFLOP/s on different shapes; 1 thread ≈ 120–140 GFLOP/s), but the machine
//! was shared with other jobs (load 10–15 on 2 cores), so the two could not be
//! ranked reliably. The rayon split is the default because it needs no second
//! thread pool (two pools' workers would compete for the same two cores when GEMMs
//! and elementwise kernels alternate) and it also splits batched products whose
//! batch is smaller than the thread count. On one thread the API costs nothing
//! measurable over a direct `sgemm` call: 0.97–1.05× for n = 128…2048 and the
//! Transformer shapes (`examples/bench_report.rs`, thread CPU time).

use crate::pool::{self, Pooled};
use rayon::prelude::*;
use std::sync::atomic::{AtomicU8, Ordering};
use unigrad_core::{Error, Layout, Result};

#[cfg(target_arch = "x86_64")]
pub mod own;

/// The instruction set of our own f32 GEMM (see [`own`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Isa {
    /// AVX-512F, 12×32 register tiles.
    Avx512,
    /// AVX2 + FMA, 6×16 register tiles.
    Avx2,
}

/// Which GEMM f32 products take: 0 = not decided yet, 1 = matrixmultiply, 2 = ours
/// with AVX-512F, 3 = ours with AVX2.
static F32_PATH: AtomicU8 = AtomicU8::new(0);

fn encode(isa: Option<Isa>) -> u8 {
    match isa {
        None => 1,
        Some(Isa::Avx512) => 2,
        Some(Isa::Avx2) => 3,
    }
}

/// The best ISA our GEMM can use on this CPU (`None` off x86-64 or without AVX2+FMA).
pub fn detect_isa() -> Option<Isa> {
    #[cfg(target_arch = "x86_64")]
    {
        own::detect()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// The GEMM f32 products use: our own kernel with the returned ISA, or
/// matrixmultiply (`None`). Ours is the default where the CPU supports it, unless
/// the environment sets `UNIGRAD_OWN_GEMM=0` (for side-by-side measurements).
pub fn f32_gemm() -> Option<Isa> {
    match F32_PATH.load(Ordering::Relaxed) {
        0 => {
            let off = std::env::var("UNIGRAD_OWN_GEMM").is_ok_and(|v| v == "0");
            let isa = if off { None } else { detect_isa() };
            F32_PATH.store(encode(isa), Ordering::Relaxed);
            isa
        }
        2 => Some(Isa::Avx512),
        3 => Some(Isa::Avx2),
        _ => None,
    }
}

/// Route f32 products through our kernel (`true`, when the CPU supports it) or
/// through matrixmultiply (`false`), process-wide; for benchmarks that compare the two.
pub fn set_own_gemm(on: bool) {
    F32_PATH.store(encode(if on { detect_isa() } else { None }), Ordering::Relaxed);
}

/// Multiply-adds below which a product stays on the calling thread.
const PAR_MACS: usize = 1 << 20;

/// A type `matrixmultiply` has a GEMM for.
pub trait Gemm: Pooled + Sync {
    /// `c = a·b` for one matrix, strides in elements (`c` is overwritten, never read).
    ///
    /// # Safety
    /// The pointers must address every element implied by the sizes and strides,
    /// and `c`'s elements must not overlap `a`'s or `b`'s.
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

    /// Whether [`Gemm::own_gemm`] is our own kernel (f32 on x86-64) rather than
    /// matrixmultiply.
    const HAS_OWN: bool = false;

    /// `c = a·b` for one matrix (`c` dense `m×n`, overwritten) with our own kernel
    /// split into `parts` rayon tasks; without one ([`Gemm::HAS_OWN`] false), one
    /// serial matrixmultiply call.
    ///
    /// # Safety
    /// As [`Gemm::gemm`], with `c` holding `m·n` values, `k > 0`, and `isa`
    /// supported by the CPU.
    #[allow(clippy::too_many_arguments)]
    unsafe fn own_gemm(
        isa: Isa,
        m: usize,
        k: usize,
        n: usize,
        a: (*const Self, isize, isize),
        b: (*const Self, isize, isize),
        c: *mut Self,
        parts: usize,
    ) {
        let _ = (isa, parts);
        // SAFETY: forwarded from the caller's contract.
        unsafe { Self::gemm(m, k, n, a.0, a.1, a.2, b.0, b.1, b.2, c, n as isize, 1) }
    }
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
        // SAFETY: forwarded from the caller's contract; beta = 0, so matrixmultiply
        // never reads `c`.
        unsafe { matrixmultiply::sgemm(m, k, n, 1.0, a, rsa, csa, b, rsb, csb, 0.0, c, rsc, csc) }
    }

    #[cfg(target_arch = "x86_64")]
    const HAS_OWN: bool = true;

    #[cfg(target_arch = "x86_64")]
    unsafe fn own_gemm(
        isa: Isa,
        m: usize,
        k: usize,
        n: usize,
        a: (*const f32, isize, isize),
        b: (*const f32, isize, isize),
        c: *mut f32,
        parts: usize,
    ) {
        let op = |(ptr, rs, cs): (*const f32, isize, isize)| own::Operand { ptr, rs, cs };
        // SAFETY: forwarded from the caller's contract.
        unsafe { own::gemm(isa, m, k, n, op(a), op(b), c, n, 1.0, parts) }
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
        // SAFETY: forwarded from the caller's contract; beta = 0, so matrixmultiply
        // never reads `c`.
        unsafe { matrixmultiply::dgemm(m, k, n, 1.0, a, rsa, csa, b, rsb, csb, 0.0, c, rsc, csc) }
    }
}

/// The output pointer shared by tasks that write disjoint blocks.
#[derive(Clone, Copy)]
struct OutPtr<T>(*mut T);
// SAFETY: tasks only write disjoint blocks through it (see `matmul`), and the
// buffer outlives the parallel loop that uses it.
unsafe impl<T: Send> Send for OutPtr<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for OutPtr<T> {}

impl<T> OutPtr<T> {
    /// The pointer (a method, so closures capture the `Send` wrapper, not the field).
    fn get(self) -> *mut T {
        self.0
    }
}

/// How many blocks to cut each of `batch` products of `macs` multiply-adds into.
fn parts_per_product(batch: usize, macs: usize, threads: usize) -> usize {
    if cfg!(feature = "mm-threading") && batch == 1 {
        return 1; // matrixmultiply threads a single product itself
    }
    split_parts(batch, macs, threads)
}

/// [`parts_per_product`] for a GEMM that does not thread itself.
fn split_parts(batch: usize, macs: usize, threads: usize) -> usize {
    if threads <= 1 || batch >= threads {
        return 1;
    }
    let want = (threads * 4).div_ceil(batch);
    want.min(macs / PAR_MACS).max(1)
}

/// Error unless `la` is `[.., m, k]` and `lb` `[.., k, n]` with identical batch dims
/// (rank ≥ 2): the shapes [`matmul`] assumes. With both layouts inside their storage
/// (checked by the backend entry), every pointer the GEMM forms is then in bounds.
pub fn check_shapes(la: &Layout, lb: &Layout) -> Result<()> {
    let (a, b) = (la.shape(), lb.shape());
    let r = a.len();
    if r < 2 || b.len() != r || a[..r - 2] != b[..r - 2] || a[r - 1] != b[r - 2] {
        return Err(Error::ShapeMismatch {
            op: "matmul",
            lhs: a.to_vec(),
            rhs: b.to_vec(),
        });
    }
    Ok(())
}

/// Batched product of `[.., m, k]` and `[.., k, n]` views with identical batch dims
/// (see [`check_shapes`]), each inside its slice. f32 takes our own kernel where
/// [`f32_gemm`] says so; everything else takes matrixmultiply.
pub fn matmul<T: Gemm>(a: &[T], la: &Layout, b: &[T], lb: &Layout) -> Vec<T> {
    let isa = if T::HAS_OWN { f32_gemm() } else { None };
    matmul_with(a, la, b, lb, isa)
}

/// Whether the CPU can run our kernel with `isa`.
fn isa_supported(isa: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        own::supports(isa)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = isa;
        false
    }
}

/// The batch dims' start offsets of `l` (`[.., rows, cols]`, batch shape `batch`).
fn batch_offsets(l: &Layout, batch: &[usize]) -> Vec<usize> {
    let r = l.rank();
    Layout::new(batch, &l.strides()[..r - 2], l.offset())
        .indices()
        .collect()
}

/// [`matmul_with`] on our kernel: one product at a time split over the threads, or
/// a batch of serial products over rayon.
fn matmul_own<T: Gemm>(a: &[T], la: &Layout, b: &[T], lb: &Layout, isa: Isa) -> Vec<T> {
    let r = la.rank();
    let (m, k, n) = (la.shape()[r - 2], la.shape()[r - 1], lb.shape()[r - 1]);
    let batch_shape = &la.shape()[..r - 2];
    let batch: usize = batch_shape.iter().product();
    let (a_offs, b_offs) = (batch_offsets(la, batch_shape), batch_offsets(lb, batch_shape));
    let (rsa, csa) = (la.strides()[r - 2] as isize, la.strides()[r - 1] as isize);
    let (rsb, csb) = (lb.strides()[r - 2] as isize, lb.strides()[r - 1] as isize);
    // every element is written by exactly one product
    let mut out = pool::take::<T>(batch * m * n);
    let out_ptr = OutPtr(out.as_mut_ptr());
    let macs = m * n * k;
    let parts = split_parts(batch, macs, rayon::current_num_threads());
    let product = |i: usize, parts: usize| {
        // SAFETY: `a_offs[i]`/`b_offs[i]` start product i of the validated layouts,
        // so (m, k, rsa, csa) and (k, n, rsb, csb) address elements inside `a` and
        // `b`; product i's output is the dense block [i·m·n, (i+1)·m·n) of `out`,
        // disjoint from the others and from the operands; k > 0 (caller); `isa` was
        // checked by `isa_supported`.
        unsafe {
            T::own_gemm(
                isa,
                m,
                k,
                n,
                (a.as_ptr().add(a_offs[i]), rsa, csa),
                (b.as_ptr().add(b_offs[i]), rsb, csb),
                out_ptr.get().add(i * m * n),
                parts,
            )
        }
    };
    if parts == 1 && batch > 1 && batch * macs >= PAR_MACS {
        (0..batch).into_par_iter().for_each(|i| product(i, 1));
    } else {
        (0..batch).for_each(|i| product(i, parts));
    }
    out
}

/// [`matmul`] with the GEMM chosen by the caller: our kernel with `isa` (for types
/// that have one), or matrixmultiply (`None`).
pub fn matmul_with<T: Gemm>(a: &[T], la: &Layout, b: &[T], lb: &Layout, isa: Option<Isa>) -> Vec<T> {
    let r = la.rank();
    let (m, k, n) = (la.shape()[r - 2], la.shape()[r - 1], lb.shape()[r - 1]);
    let batch_shape = &la.shape()[..r - 2];
    let batch: usize = batch_shape.iter().product();
    if let Some(isa) = isa {
        if T::HAS_OWN && isa_supported(isa) && batch * m * n * k > 0 {
            return matmul_own(a, la, b, lb, isa);
        }
    }
    if batch * m * n == 0 || k == 0 {
        return pool::take_zeroed(batch * m * n);
    }
    // every element is written by exactly one GEMM with beta = 0
    let mut out = pool::take::<T>(batch * m * n);
    let (rsa, csa) = (la.strides()[r - 2] as isize, la.strides()[r - 1] as isize);
    let (rsb, csb) = (lb.strides()[r - 2] as isize, lb.strides()[r - 1] as isize);
    let (a_offs, b_offs) = (batch_offsets(la, batch_shape), batch_offsets(lb, batch_shape));
    let macs = m * n * k;
    let threads = rayon::current_num_threads();
    let parts = parts_per_product(batch, macs, threads);
    let by_rows = m >= n;
    let len = if by_rows { m } else { n };
    // block boundaries on multiples of 16 rows/columns (the micro-kernels' tiles)
    let step = len.div_ceil(parts).next_multiple_of(16).min(len);
    let parts = len.div_ceil(step);
    let out_ptr = OutPtr(out.as_mut_ptr());
    // Task `t` computes block `t % parts` of product `t / parts`.
    let task = |t: usize| {
        let (i, p) = (t / parts, t % parts);
        let (lo, hi) = (p * step, ((p + 1) * step).min(len));
        // SAFETY: `a_offs[i]`/`b_offs[i]` are the start of product i in the validated
        // layouts, so every element addressed by (m, k, rsa, csa) and (k, n, rsb,
        // csb) lies inside `a` and `b`; the block [lo, hi) of rows (or columns)
        // keeps those bounds. The output block is inside `out` (length batch·m·n,
        // dense m×n per product) and disjoint from every other task's block, and
        // `out` does not alias `a` or `b` (a fresh buffer).
        unsafe {
            let c = out_ptr.get().add(i * m * n);
            let (pa, pb) = (a.as_ptr().add(a_offs[i]), b.as_ptr().add(b_offs[i]));
            if by_rows {
                let pa = pa.offset(lo as isize * rsa);
                T::gemm(hi - lo, k, n, pa, rsa, csa, pb, rsb, csb, c.add(lo * n), n as isize, 1)
            } else {
                let pb = pb.offset(lo as isize * csb);
                T::gemm(m, k, hi - lo, pa, rsa, csa, pb, rsb, csb, c.add(lo), n as isize, 1)
            }
        }
    };
    let tasks = batch * parts;
    if tasks > 1 && batch * macs >= PAR_MACS {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Naive reference over explicit strided layouts.
    fn reference(a: &[f64], la: &Layout, b: &[f64], lb: &Layout) -> Vec<f64> {
        let r = la.rank();
        let (m, k, n) = (la.shape()[r - 2], la.shape()[r - 1], lb.shape()[r - 1]);
        let batch: usize = la.shape()[..r - 2].iter().product();
        let ai: Vec<usize> = la.indices().collect();
        let bi: Vec<usize> = lb.indices().collect();
        let mut out = vec![0.0; batch * m * n];
        for t in 0..batch {
            for i in 0..m {
                for j in 0..n {
                    let mut s = 0.0;
                    for p in 0..k {
                        s += a[ai[t * m * k + i * k + p]] * b[bi[t * k * n + p * n + j]];
                    }
                    out[t * m * n + i * n + j] = s;
                }
            }
        }
        out
    }

    fn data(n: usize, seed: usize) -> Vec<f64> {
        (0..n).map(|i| (((i + seed) * 7919) % 61) as f64 - 30.0).collect()
    }

    fn check(la: Layout, lb: Layout) {
        let a = data(la.storage_extent(), 1);
        let b = data(lb.storage_extent(), 2);
        let want = reference(&a, &la, &b, &lb);
        assert_eq!(matmul(&a, &la, &b, &lb), want, "{la:?} {lb:?}");
        let a32: Vec<f32> = a.iter().map(|&v| v as f32).collect();
        let b32: Vec<f32> = b.iter().map(|&v| v as f32).collect();
        // matrixmultiply, then our kernel with every ISA this CPU has
        let isas = [None, Some(Isa::Avx512), Some(Isa::Avx2)];
        for isa in isas.into_iter().filter(|i| match i {
            Some(x) => isa_supported(*x),
            None => true,
        }) {
            let got: Vec<f64> = matmul_with(&a32, &la, &b32, &lb, isa)
                .iter()
                .map(|&v| v as f64)
                .collect();
            assert_eq!(got, want, "f32 {isa:?} {la:?} {lb:?}");
        }
        assert_eq!(
            matmul_with(&a, &la, &b, &lb, Some(Isa::Avx2)),
            want,
            "f64 via own_gemm {la:?} {lb:?}"
        );
    }

    /// Our kernel's register tiles (12×32, 6×16), K blocks (320) and task grid
    /// against the naive product: sizes around every tile and block edge, each
    /// operand dense, transposed or with a gap between rows/columns.
    #[test]
    fn own_kernel_tails_strides_and_transposes() {
        // `[r, c]` viewed from storage: dense, transposed, or strided (every other column)
        let view = |r: usize, c: usize, kind: usize| match kind {
            0 => Layout::contiguous(&[r, c]),
            1 => Layout::new(&[r, c], &[1, r], 0),
            _ => Layout::new(&[r, c], &[2 * c + 1, 2], 3),
        };
        for &(m, k, n) in &[
            (1, 1, 1),
            (5, 3, 7),
            (12, 17, 32),
            (13, 33, 33),
            (25, 130, 47),
            (7, 321, 65),
            (37, 700, 20),
        ] {
            for ka in 0..3 {
                for kb in 0..3 {
                    check(view(m, k, ka), view(k, n, kb));
                }
            }
        }
        // row-major A read in place: rows with a gap (stride > k), and a row stride of
        // 1024 values, which takes the packed path instead
        check(Layout::new(&[37, 50], &[53, 1], 2), Layout::contiguous(&[50, 70]));
        check(Layout::new(&[25, 40], &[1024, 1], 0), Layout::contiguous(&[40, 33]));
        // split over rows (m ≥ parts·MR) and over columns (few rows, many panels)
        check(Layout::contiguous(&[389, 96]), Layout::new(&[96, 161], &[1, 96], 0));
        check(Layout::new(&[10, 640], &[1, 10], 0), Layout::contiguous(&[640, 400]));
        // batched, with a broadcast lhs
        check(
            Layout::new(&[3, 30, 20], &[0, 20, 1], 0),
            Layout::contiguous(&[3, 20, 50]),
        );
    }

    /// `own::gemm`'s `alpha` and output row stride (the attention kernel's calls):
    /// `c = alpha·a·b` exactly (alpha a power of two), the gap between rows untouched,
    /// over tile and K-block edges, with A row-major (read in place) and transposed.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn own_gemm_alpha_and_row_stride() {
        for isa in [Isa::Avx512, Isa::Avx2].into_iter().filter(|&i| isa_supported(i)) {
            for &(m, k, n) in &[(1, 1, 1), (13, 33, 33), (64, 32, 128), (25, 530, 47)] {
                for a_t in [false, true] {
                    let la = if a_t {
                        Layout::new(&[m, k], &[1, m], 0)
                    } else {
                        Layout::contiguous(&[m, k])
                    };
                    let lb = Layout::contiguous(&[k, n]);
                    let (a, b) = (data(la.storage_extent(), 3), data(lb.storage_extent(), 4));
                    let want = reference(&a, &la, &b, &lb);
                    let (a32, b32): (Vec<f32>, Vec<f32>) = (
                        a.iter().map(|&v| v as f32).collect(),
                        b.iter().map(|&v| v as f32).collect(),
                    );
                    let ldc = n + 3;
                    let mut c = vec![7.0f32; m * ldc];
                    let op = |ptr, rs: usize, cs: usize| own::Operand {
                        ptr,
                        rs: rs as isize,
                        cs: cs as isize,
                    };
                    let (rsa, csa) = (la.strides()[0], la.strides()[1]);
                    // SAFETY: the operands are the m×k and k×n matrices of `a32`/`b32`,
                    // `c` holds m rows of ldc ≥ n values, and `isa` is supported.
                    unsafe {
                        own::gemm(
                            isa,
                            m,
                            k,
                            n,
                            op(a32.as_ptr(), rsa, csa),
                            op(b32.as_ptr(), n, 1),
                            c.as_mut_ptr(),
                            ldc,
                            0.5,
                            2,
                        )
                    };
                    for i in 0..m {
                        for j in 0..ldc {
                            let got = c[i * ldc + j] as f64;
                            let exp = if j < n { 0.5 * want[i * n + j] } else { 7.0 };
                            assert_eq!(got, exp, "{isa:?} {m}x{k}x{n} a_t={a_t} [{i},{j}]");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn small_dense_transposed_and_broadcast() {
        check(Layout::contiguous(&[3, 4]), Layout::contiguous(&[4, 5]));
        // aᵀ: [4,3] stored, viewed [3,4]
        check(Layout::new(&[3, 4], &[1, 3], 0), Layout::contiguous(&[4, 5]));
        // bᵀ with an offset
        check(Layout::contiguous(&[3, 4]), Layout::new(&[4, 5], &[1, 4], 2));
        // batch with a broadcast rhs (stride 0)
        check(Layout::contiguous(&[2, 3, 4]), Layout::new(&[2, 4, 5], &[0, 5, 1], 0));
        // k = 0 gives zeros, empty m gives nothing
        let z = matmul::<f64>(&[], &Layout::contiguous(&[2, 0]), &[], &Layout::contiguous(&[0, 3]));
        assert_eq!(z, vec![0.0; 6]);
        assert!(matmul::<f64>(
            &[],
            &Layout::contiguous(&[0, 2]),
            &[0.0; 6],
            &Layout::contiguous(&[2, 3])
        )
        .is_empty());
    }

    #[test]
    fn large_products_take_the_split_and_batch_paths() {
        // rows split (m ≥ n), columns split with a transposed lhs (n > m), odd sizes
        check(Layout::contiguous(&[301, 67]), Layout::contiguous(&[67, 129]));
        check(Layout::new(&[67, 300], &[1, 67], 0), Layout::contiguous(&[300, 161]));
        check(
            Layout::contiguous(&[37, 45, 33]),
            Layout::new(&[37, 33, 41], &[33 * 41, 1, 33], 0),
        );
        // a batch of 2 large products (fewer products than threads on big machines)
        check(Layout::contiguous(&[2, 130, 90]), Layout::contiguous(&[2, 90, 110]));
    }

    #[test]
    fn split_policy() {
        assert_eq!(parts_per_product(64, 1 << 19, 2), 1);
        assert_eq!(parts_per_product(1, 1 << 16, 2), 1);
        assert_eq!(parts_per_product(3, 1 << 24, 16), 16);
        if !cfg!(feature = "mm-threading") {
            assert_eq!(parts_per_product(1, 1 << 24, 2), 8);
            assert_eq!(parts_per_product(1, 3 << 20, 2), 3);
        }
    }
}
