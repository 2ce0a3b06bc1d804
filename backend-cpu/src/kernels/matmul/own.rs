//! Our own f32 GEMM for x86-64 with AVX-512F (or AVX2 + FMA), chosen at run time.
//!
//! Why it exists next to matrixmultiply: the rayon split in the parent module calls
//! matrixmultiply once per block, and each call packs the shared operand again, so a
//! Linear product packed its weight once per block (eight times with two threads).
//! Here one product packs its right operand once, in a layout every task reads, and
//! each task packs only its own rows of the left operand. matrixmultiply stays the
//! general path (f64, CPUs without these features) and the reference the tests use.
//!
//! Blocking (Goto/BLIS scheme, row-major C):
//! - B (`k×n`) becomes panels of `NR` columns over all of K: `[panel][k][NR]`, the
//!   columns past `n` zero;
//! - per task and K block, A becomes micro-panels of `MR` rows: `[panel][kc][MR]`,
//!   the rows past the task's end zero. A row-major A skips this: the micro-kernel
//!   broadcasts from its `MR` rows in place (a last, partial panel is still packed).
//!   Packing cost a scalar gather per element, about 9% of the training step in a
//!   `perf` profile, for no gain: on the step's shapes the `MR` rows of a K block fit
//!   in L1 just as the packed copy does;
//! - the micro-kernel keeps an `MR×NR` tile of C in registers (AVX-512: 12×32 in 24
//!   zmm registers; AVX2: 6×16 in 12 ymm registers), broadcasting A from its
//!   micro-panel (L1) and streaming the B panel (L2).
//!
//! K is cut into blocks of at most `KC_MAX` (512); an AVX-512 A micro-panel (at most
//! 12·512·4 bytes = 24 KiB) is packed right before its tiles run, so it is still in
//! the 32 KiB L1 while B streams past it from L2. Every K of the step's Linear
//! products up to 512 is one block: in one side-by-side run on the step's shapes
//! (1 thread, CPU clock, shared machine), K = 384 and 512 ran at 69 GFLOP/s as two
//! blocks and at 80–86 as one.

use crate::pool;
use rayon::prelude::*;
use std::arch::x86_64::*;
use std::cell::RefCell;

use super::Isa;

/// Largest K block.
const KC_MAX: usize = 512;

/// The ISA our kernels can use on this CPU, best first.
pub fn detect() -> Option<Isa> {
    [Isa::Avx512, Isa::Avx2].into_iter().find(|&isa| supports(isa))
}

/// Whether the CPU has `isa`'s features.
pub fn supports(isa: Isa) -> bool {
    match isa {
        Isa::Avx512 => is_x86_feature_detected!("avx512f"),
        Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
    }
}

/// One operand: its first element and its row and column strides (elements).
#[derive(Clone, Copy)]
pub struct Operand {
    /// Element `[0, 0]`.
    pub ptr: *const f32,
    /// Row stride.
    pub rs: isize,
    /// Column stride.
    pub cs: isize,
}

// SAFETY: an `Operand` is only read, by tasks of the product whose caller keeps the
// data alive and unmodified for the duration of `gemm`.
unsafe impl Send for Operand {}
// SAFETY: as above.
unsafe impl Sync for Operand {}

impl Operand {
    /// Element `[i, j]`.
    ///
    /// # Safety
    /// `[i, j]` must be inside the operand.
    #[inline(always)]
    unsafe fn at(self, i: usize, j: usize) -> f32 {
        // SAFETY: the caller keeps `[i, j]` inside the operand.
        unsafe { *self.ptr.offset(i as isize * self.rs + j as isize * self.cs) }
    }
}

/// The output shared by tasks that write disjoint tiles: its first element, row
/// stride, and the factor `alpha` every product value is scaled by.
#[derive(Clone, Copy)]
struct Out {
    ptr: *mut f32,
    ldc: usize,
    alpha: f32,
}
impl Out {
    /// Element `[i, j]` of the output (a method, so closures capture the whole
    /// `Out`, which is `Sync`, rather than its raw pointer field).
    ///
    /// # Safety
    /// `[i, j]` must be inside the output.
    unsafe fn at(&self, i: usize, j: usize) -> *mut f32 {
        // SAFETY: the caller keeps `[i, j]` inside the output.
        unsafe { self.ptr.add(i * self.ldc + j) }
    }
}

// SAFETY: tasks write disjoint tiles (see `run`), and the buffer outlives the loop.
unsafe impl Send for Out {}
// SAFETY: as above.
unsafe impl Sync for Out {}

/// A register-tile micro-kernel.
trait Kernel {
    /// Rows of the tile.
    const MR: usize;
    /// Columns of the tile.
    const NR: usize;
    /// [`pack_a`] with this kernel's `MR`.
    ///
    /// # Safety
    /// As [`pack_a`].
    unsafe fn pack_a(a: Operand, r0: usize, r1: usize, pc: usize, kc: usize, dst: &mut [f32]);
    /// `c[i·ldc + j] (+)= alpha·Σ_p A(i, p)·b[p·NR + j]` over the full `MR×NR` tile,
    /// adding to `c` when `acc`, overwriting it otherwise. `A(i, p)` is `a[p·MR + i]` (a packed
    /// micro-panel) or, when `DIRECT`, `a[i·lda + p]` (MR rows of a row-major A read in
    /// place). Both orders do the same arithmetic, so the results are bit-identical.
    ///
    /// # Safety
    /// The CPU has the kernel's features; `a` addresses those `kc·MR` values, `b` holds
    /// `kc·NR`, and `c` addresses an `MR×NR` tile with row stride `ldc` nobody else
    /// touches.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const DIRECT: bool>(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        alpha: f32,
        acc: bool,
    );
}

/// AVX-512F, 12×32.
struct Avx512;
/// AVX2 + FMA, 6×16.
struct Avx2;

impl Kernel for Avx512 {
    const MR: usize = 12;
    unsafe fn pack_a(a: Operand, r0: usize, r1: usize, pc: usize, kc: usize, dst: &mut [f32]) {
        // SAFETY: forwarded contract.
        unsafe { pack_a::<12>(a, r0, r1, pc, kc, dst) }
    }
    const NR: usize = 32;
    unsafe fn tile<const DIRECT: bool>(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        alpha: f32,
        acc: bool,
    ) {
        // SAFETY: forwarded contract (features detected by `detect`).
        unsafe { tile_avx512::<DIRECT>(kc, a, lda, b, c, ldc, alpha, acc) }
    }
}

impl Kernel for Avx2 {
    const MR: usize = 6;
    unsafe fn pack_a(a: Operand, r0: usize, r1: usize, pc: usize, kc: usize, dst: &mut [f32]) {
        // SAFETY: forwarded contract.
        unsafe { pack_a::<6>(a, r0, r1, pc, kc, dst) }
    }
    const NR: usize = 16;
    unsafe fn tile<const DIRECT: bool>(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        alpha: f32,
        acc: bool,
    ) {
        // SAFETY: forwarded contract (features detected by `detect`).
        unsafe { tile_avx2::<DIRECT>(kc, a, lda, b, c, ldc, alpha, acc) }
    }
}

/// See [`Kernel::tile`] (12×32).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512<const DIRECT: bool>(
    kc: usize,
    mut a: *const f32,
    lda: usize,
    mut b: *const f32,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    acc: bool,
) {
    let (rs, ks) = if DIRECT { (lda, 1) } else { (1, 12) };
    let mut lo = [_mm512_setzero_ps(); 12];
    let mut hi = [_mm512_setzero_ps(); 12];
    for _ in 0..kc {
        // SAFETY: `a` advances by one packed column (MR values) or one value of each of
        // the MR rows per step, `b` by NR values, kc steps, inside what the caller
        // guarantees.
        unsafe {
            let b0 = _mm512_loadu_ps(b);
            let b1 = _mm512_loadu_ps(b.add(16));
            for i in 0..12 {
                let ai = _mm512_set1_ps(*a.add(i * rs));
                lo[i] = _mm512_fmadd_ps(ai, b0, lo[i]);
                hi[i] = _mm512_fmadd_ps(ai, b1, hi[i]);
            }
            a = a.add(ks);
            b = b.add(32);
        }
    }
    for i in 0..12 {
        // SAFETY: row i of the caller's tile, 32 values.
        unsafe {
            let r = c.add(i * ldc);
            let (mut x, mut y) = (lo[i], hi[i]);
            if alpha != 1.0 {
                let s = _mm512_set1_ps(alpha);
                (x, y) = (_mm512_mul_ps(x, s), _mm512_mul_ps(y, s));
            }
            if acc {
                x = _mm512_add_ps(x, _mm512_loadu_ps(r));
                y = _mm512_add_ps(y, _mm512_loadu_ps(r.add(16)));
            }
            _mm512_storeu_ps(r, x);
            _mm512_storeu_ps(r.add(16), y);
        }
    }
}

/// See [`Kernel::tile`] (6×16).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2<const DIRECT: bool>(
    kc: usize,
    mut a: *const f32,
    lda: usize,
    mut b: *const f32,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    acc: bool,
) {
    let (rs, ks) = if DIRECT { (lda, 1) } else { (1, 6) };
    let mut lo = [_mm256_setzero_ps(); 6];
    let mut hi = [_mm256_setzero_ps(); 6];
    for _ in 0..kc {
        // SAFETY: as in `tile_avx512`, with MR = 6 and NR = 16.
        unsafe {
            let b0 = _mm256_loadu_ps(b);
            let b1 = _mm256_loadu_ps(b.add(8));
            for i in 0..6 {
                let ai = _mm256_set1_ps(*a.add(i * rs));
                lo[i] = _mm256_fmadd_ps(ai, b0, lo[i]);
                hi[i] = _mm256_fmadd_ps(ai, b1, hi[i]);
            }
            a = a.add(ks);
            b = b.add(16);
        }
    }
    for i in 0..6 {
        // SAFETY: row i of the caller's tile, 16 values.
        unsafe {
            let r = c.add(i * ldc);
            let (mut x, mut y) = (lo[i], hi[i]);
            if alpha != 1.0 {
                let s = _mm256_set1_ps(alpha);
                (x, y) = (_mm256_mul_ps(x, s), _mm256_mul_ps(y, s));
            }
            if acc {
                x = _mm256_add_ps(x, _mm256_loadu_ps(r));
                y = _mm256_add_ps(y, _mm256_loadu_ps(r.add(8)));
            }
            _mm256_storeu_ps(r, x);
            _mm256_storeu_ps(r.add(8), y);
        }
    }
}

/// Packs columns `[j0, j0 + nr)` of B (all `k` rows) into `dst` (`k·nr` values,
/// `dst[p·nr + j] = B[p, j0 + j]`, zero past `n`).
///
/// # Safety
/// `b` addresses a `k×n` matrix.
unsafe fn pack_b_panel(b: Operand, k: usize, n: usize, j0: usize, nr: usize, dst: &mut [f32]) {
    let w = nr.min(n - j0);
    if w < nr {
        dst.fill(0.0);
    }
    if b.cs == 1 {
        for (p, row) in dst.chunks_exact_mut(nr).enumerate().take(k) {
            // SAFETY: row p, columns [j0, j0 + w) are inside B and contiguous.
            let src = unsafe { std::slice::from_raw_parts(b.ptr.offset(p as isize * b.rs).add(j0), w) };
            row[..w].copy_from_slice(src);
        }
    } else {
        let mut j = 0;
        if b.rs == 1 && is_x86_feature_detected!("avx") {
            // A transposed B (`Wᵀ` of a Linear, `Kᵀ` in attention): each column is a
            // contiguous run of k values; 8 columns × 8 rows at a time are transposed
            // in registers instead of moved one value at a time.
            while j + 8 <= w {
                // SAFETY: columns [j0 + j, j0 + j + 8) ⊂ [0, n) and all k rows are inside
                // B, whose columns are contiguous (`b.rs == 1`); `dst` holds k·nr values
                // and j + 8 ≤ nr; AVX was detected.
                unsafe { pack_b_columns8(b, k, j0 + j, &mut dst[j..], nr) };
                j += 8;
            }
        }
        for j in j..w {
            for p in 0..k {
                // SAFETY: [p, j0 + j] is inside B (p < k, j0 + j < n).
                dst[p * nr + j] = unsafe { b.at(p, j0 + j) };
            }
        }
    }
}

/// Columns `[c0, c0 + 8)` of a B with contiguous columns (`b.rs == 1`) into
/// `dst[p·nr + j]` for `j < 8`, all `k` rows: 8×8 blocks transposed in AVX registers,
/// the last `k mod 8` rows one value at a time.
///
/// # Safety
/// The CPU has AVX; the columns are inside B with `b.rs == 1`; `dst` holds at least
/// `(k − 1)·nr + 8` values.
#[target_feature(enable = "avx")]
unsafe fn pack_b_columns8(b: Operand, k: usize, c0: usize, dst: &mut [f32], nr: usize) {
    assert!(k == 0 || dst.len() >= (k - 1) * nr + 8);
    // SAFETY: column c0 + i starts at b.ptr + (c0 + i)·cs and holds k contiguous
    // values; the writes stay inside `dst` by the assert above.
    unsafe {
        let col = |i: usize| b.ptr.offset((c0 + i) as isize * b.cs);
        let out = dst.as_mut_ptr();
        let mut p = 0;
        while p + 8 <= k {
            let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(col(i).add(p)));
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            let rows = [
                _mm256_permute2f128_ps::<0x20>(u0, u4),
                _mm256_permute2f128_ps::<0x20>(u1, u5),
                _mm256_permute2f128_ps::<0x20>(u2, u6),
                _mm256_permute2f128_ps::<0x20>(u3, u7),
                _mm256_permute2f128_ps::<0x31>(u0, u4),
                _mm256_permute2f128_ps::<0x31>(u1, u5),
                _mm256_permute2f128_ps::<0x31>(u2, u6),
                _mm256_permute2f128_ps::<0x31>(u3, u7),
            ];
            for (q, v) in rows.into_iter().enumerate() {
                _mm256_storeu_ps(out.add((p + q) * nr), v);
            }
            p += 8;
        }
        for p in p..k {
            for i in 0..8 {
                *out.add(p * nr + i) = *col(i).add(p);
            }
        }
    }
}

/// Packs rows `[r0, r1)` and columns `[pc, pc + kc)` of A into micro-panels of `mr`
/// rows (`dst[ip·kc·mr + p·mr + i] = A[r0 + ip·mr + i, pc + p]`, zero past `r1`).
///
/// # Safety
/// The rows and columns are inside A; `dst` holds `⌈(r1 − r0)/mr⌉·kc·mr` values.
/// `MR` is a constant so the copies compile to a few vector moves, not `memcpy` calls.
unsafe fn pack_a<const MR: usize>(a: Operand, r0: usize, r1: usize, pc: usize, kc: usize, dst: &mut [f32]) {
    let mr = MR;
    let rows = r1 - r0;
    if !rows.is_multiple_of(mr) {
        let last = dst.len() - kc * mr;
        dst[last..].fill(0.0);
    }
    if a.rs == 1 {
        // Column-contiguous A (a transposed operand): column pc + p of all the panels
        // is one contiguous run, read whole.
        for p in 0..kc {
            // SAFETY: column pc + p, rows [r0, r1) are inside A and contiguous.
            let src = unsafe { std::slice::from_raw_parts(a.ptr.offset((pc + p) as isize * a.cs).add(r0), rows) };
            let mut runs = src.chunks_exact(MR);
            for (ip, run) in runs.by_ref().enumerate() {
                let at = ip * kc * MR + p * MR;
                dst[at..at + MR].copy_from_slice(run);
            }
            let rest = runs.remainder();
            if !rest.is_empty() {
                let at = (rows / MR) * kc * MR + p * MR;
                dst[at..at + rest.len()].copy_from_slice(rest);
            }
        }
    } else {
        for (ip, panel) in dst.chunks_exact_mut(kc * mr).enumerate() {
            let row = r0 + ip * mr;
            for i in 0..mr.min(r1 - row) {
                for p in 0..kc {
                    // SAFETY: [row + i, pc + p] is inside A.
                    panel[p * mr + i] = unsafe { a.at(row + i, pc + p) };
                }
            }
        }
    }
}

thread_local! {
    /// Each thread's A packing buffer, reused across products.
    static A_PACK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `c = alpha·a·b` for one `m×k · k×n` product into the row-major `c` (rows `ldc`
/// apart, unit column stride; overwritten, never read first), cut into `parts` tasks
/// on rayon when `parts > 1`.
///
/// # Safety
/// The CPU has `isa`'s features (as returned by [`detect`]); `a` and `b` address
/// `m×k` and `k×n` matrices that stay unmodified during the call; `c` addresses
/// `m` rows of `n` values, `ldc ≥ n` apart, and overlaps neither. `m, k, n > 0`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(
    isa: Isa,
    m: usize,
    k: usize,
    n: usize,
    a: Operand,
    b: Operand,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    parts: usize,
) {
    let c = Out { ptr: c, ldc, alpha };
    // SAFETY: forwarded contract; each kernel matches its detected ISA.
    unsafe {
        match isa {
            Isa::Avx512 => run::<Avx512>(m, k, n, a, b, c, parts),
            Isa::Avx2 => run::<Avx2>(m, k, n, a, b, c, parts),
        }
    }
}

/// [`gemm`] with the kernel `K`.
///
/// # Safety
/// As [`gemm`].
unsafe fn run<K: Kernel>(m: usize, k: usize, n: usize, a: Operand, b: Operand, out: Out, parts: usize) {
    let (mr, nr) = (K::MR, K::NR);
    let (mp, np) = (m.div_ceil(mr), n.div_ceil(nr));
    // B packed once for the whole product.
    let mut bp = pool::take::<f32>(np * k * nr);
    let pack = |(j, dst): (usize, &mut [f32])| {
        // SAFETY: `b` is k×n (caller), panel j starts at column j·nr < n.
        unsafe { pack_b_panel(b, k, n, j * nr, nr, dst) }
    };
    if parts > 1 && np > 1 {
        bp.par_chunks_exact_mut(k * nr).enumerate().for_each(pack);
    } else {
        bp.chunks_exact_mut(k * nr).enumerate().for_each(pack);
    }
    let kblocks = k.div_ceil(KC_MAX);
    let kc_step = k.div_ceil(kblocks);
    // Tasks: a grid of row blocks (whole micro-panels) × column blocks (whole panels);
    // columns are only split when there are fewer row micro-panels than parts.
    let row_parts = parts.clamp(1, mp);
    let rstep = mp.div_ceil(row_parts);
    let row_parts = mp.div_ceil(rstep);
    let col_parts = parts.div_ceil(row_parts).clamp(1, np);
    let cstep = np.div_ceil(col_parts);
    let col_parts = np.div_ceil(cstep);
    // A row-major A (unit column stride) is read in place by the micro-kernel, one
    // full micro-panel of MR rows at a time, with no packing; only a last, partial
    // panel is packed (rows past `m` must not be read). Exception: a row stride that
    // is a multiple of 1024 values (4 KiB) puts the MR rows of a block in the same L1
    // sets, so their reuse across the column panels would miss; such an A is packed.
    let direct = a.cs == 1 && a.rs > 0 && a.rs % 1024 != 0;
    // Micro-panels packed together: one for a row-major A (each is read row by row);
    // four for a column-contiguous A, so each of its columns is read in runs of 48
    // (AVX-512) or 24 values instead of 12 or 6 (whole cache lines rather than parts).
    let group = if a.rs == 1 { 4 } else { 1 };
    let bp_ref: &[f32] = &bp;
    // The tiles of one micro-panel (rows [row, row + h), A block `pa`) against the
    // column panels [j0, j1), K rows [pc, pc + kc).
    let panel_tiles = |pa: *const f32,
                       lda: usize,
                       direct: bool,
                       row: usize,
                       pc: usize,
                       kc: usize,
                       j0: usize,
                       j1: usize,
                       tmp: &mut [f32; 12 * 32]| {
        let h = mr.min(m - row);
        for jp in j0..j1 {
            let col = jp * nr;
            let w = nr.min(n - col);
            let pb = bp_ref[jp * k * nr + pc * nr..].as_ptr();
            // SAFETY: `pa` addresses the micro-panel's kc·mr values of A (packed, or in
            // place when `direct`, which the callers only pass for full panels) and
            // `pb` kc·nr packed values (panel jp, rows [pc, pc + kc)); the tile
            // [row, row + h) × [col, col + w) is inside the m×n output and belongs to
            // this task alone (rows `out.ldc` apart); a full tile is written in place, a partial one through
            // `tmp` (mr·nr ≤ 12·32 values).
            unsafe {
                let dst = out.at(row, col);
                let tile = |c: *mut f32, ldc: usize, acc: bool| {
                    if direct {
                        K::tile::<true>(kc, pa, lda, pb, c, ldc, out.alpha, acc)
                    } else {
                        K::tile::<false>(kc, pa, 0, pb, c, ldc, out.alpha, acc)
                    }
                };
                if h == mr && w == nr {
                    tile(dst, out.ldc, pc > 0);
                } else {
                    tile(tmp.as_mut_ptr(), nr, false);
                    for i in 0..h {
                        let d = std::slice::from_raw_parts_mut(dst.add(i * out.ldc), w);
                        let s = &tmp[i * nr..i * nr + w];
                        if pc > 0 {
                            d.iter_mut().zip(s).for_each(|(d, s)| *d += s);
                        } else {
                            d.copy_from_slice(s);
                        }
                    }
                }
            }
        }
    };
    let task = move |t: usize| {
        let (rb, cb) = (t / col_parts, t % col_parts);
        let (i0, i1) = (rb * rstep, ((rb + 1) * rstep).min(mp));
        let (j0, j1) = (cb * cstep, ((cb + 1) * cstep).min(np));
        let (r0, r1) = (i0 * mr, (i1 * mr).min(m));
        A_PACK.with(|buf| {
            let mut buf = buf.borrow_mut();
            if buf.len() < group * kc_step * mr {
                buf.resize(group * kc_step * mr, 0.0);
            }
            let mut tmp = [0f32; 12 * 32];
            for pc in (0..k).step_by(kc_step) {
                let kc = kc_step.min(k - pc);
                for row0 in (r0..r1).step_by(group * mr) {
                    let end = (row0 + group * mr).min(r1);
                    if direct && end - row0 == mr {
                        // SAFETY: rows [row0, row0 + mr) and columns [pc, pc + kc) are
                        // inside A, whose rows are contiguous (`a.cs == 1`).
                        let pa = unsafe { a.ptr.offset(row0 as isize * a.rs).add(pc) };
                        panel_tiles(pa, a.rs as usize, true, row0, pc, kc, j0, j1, &mut tmp);
                        continue;
                    }
                    let ap = &mut buf[..(end - row0).div_ceil(mr) * kc * mr];
                    // A few micro-panels at a time, used right away while they are
                    // in L1/L2 (a whole block of rows packed first would stream
                    // through L2 and beyond). SAFETY: rows [row0, end) ⊂ [0, m),
                    // columns [pc, pc + kc) ⊂ [0, k); `ap` has the size `pack_a` needs.
                    unsafe { K::pack_a(a, row0, end, pc, kc, ap) };
                    for (ip, row) in (row0..end).step_by(mr).enumerate() {
                        let pa = ap[ip * kc * mr..].as_ptr();
                        panel_tiles(pa, 0, false, row, pc, kc, j0, j1, &mut tmp);
                    }
                }
            }
        });
    };
    let tasks = row_parts * col_parts;
    if tasks > 1 {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        task(0);
    }
    pool::give(bp);
}
