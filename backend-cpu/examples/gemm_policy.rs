//! Measures how to spread GEMM work over the cores for the Transformer's shapes.
//!
//! Calls `matrixmultiply::sgemm` directly (no unigrad code) under three policies:
//! `single` (one call on the calling thread), `split` (the output cut into one block
//! of rows or columns per rayon thread, one call per block) and, for batched products,
//! `batch` (rayon over the batch, one single-threaded call per matrix). Build it once
//! plain and once with `--features mm-threading` (matrixmultiply's own thread pool):
//! with the feature, `single` is matrixmultiply's threaded path.
//!
//! ```sh
//! cargo run --release -p unigrad-cpu --example gemm_policy
//! cargo run --release -p unigrad-cpu --example gemm_policy --features mm-threading
//! ```
//! The conclusions are recorded in `src/kernels/matmul.rs`.

use rayon::prelude::*;
use std::time::Instant;

/// One strided operand: rows, cols, row stride, col stride.
#[derive(Clone, Copy)]
struct Op {
    rs: usize,
    cs: usize,
}

struct Case {
    name: &'static str,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    a: Op,
    b: Op,
}

fn dense(cols: usize) -> Op {
    Op { rs: cols, cs: 1 }
}

/// An `[r, c]` operand that is the transpose of a row-major `[c, r]` matrix: `rs = 1, cs = r`.
fn transposed(r: usize) -> Op {
    Op { rs: 1, cs: r }
}

/// # Safety
/// `a`, `b` must cover the strided `m×k`, `k×n` operands and `c` an `m×n` block
/// with row stride `rsc`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm(m: usize, k: usize, n: usize, a: *const f32, ao: Op, b: *const f32, bo: Op, c: *mut f32, rsc: usize) {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a,
            ao.rs as isize,
            ao.cs as isize,
            b,
            bo.rs as isize,
            bo.cs as isize,
            0.0,
            c,
            rsc as isize,
            1,
        )
    }
}

#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);
// SAFETY: used only to hand disjoint output blocks to rayon tasks.
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    fn get(self) -> *mut T {
        self.0
    }
}

fn single(case: &Case, a: &[f32], b: &[f32], c: &mut [f32]) {
    let (m, k, n) = (case.m, case.k, case.n);
    for i in 0..case.batch {
        // SAFETY: batch i of a dense-batched buffer; offsets within bounds.
        unsafe {
            gemm(
                m,
                k,
                n,
                a.as_ptr().add(i * m * k),
                case.a,
                b.as_ptr().add(i * k * n),
                case.b,
                c.as_mut_ptr().add(i * m * n),
                n,
            )
        }
    }
}

fn split(case: &Case, a: &[f32], b: &[f32], c: &mut [f32], parts: usize) {
    let (m, k, n) = (case.m, case.k, case.n);
    let cp = SendPtr(c.as_mut_ptr());
    let (ap, bp) = (a.as_ptr() as usize, b.as_ptr() as usize);
    let by_rows = m >= n;
    let len = if by_rows { m } else { n };
    let step = len.div_ceil(parts);
    (0..case.batch * parts).into_par_iter().for_each(|t| {
        let (i, p) = (t / parts, t % parts);
        let lo = p * step;
        let hi = ((p + 1) * step).min(len);
        if lo >= hi {
            return;
        }
        let (a0, b0) = (ap as *const f32, bp as *const f32);
        // SAFETY: each task writes its own disjoint block of rows (or columns) of
        // matrix i of `c`; the operand blocks lie inside `a` and `b`.
        unsafe {
            let (a0, b0, c0) = (a0.add(i * m * k), b0.add(i * k * n), cp.get().add(i * m * n));
            if by_rows {
                gemm(
                    hi - lo,
                    k,
                    n,
                    a0.add(lo * case.a.rs),
                    case.a,
                    b0,
                    case.b,
                    c0.add(lo * n),
                    n,
                )
            } else {
                gemm(m, k, hi - lo, a0, case.a, b0.add(lo * case.b.cs), case.b, c0.add(lo), n)
            }
        }
    });
}

fn batch(case: &Case, a: &[f32], b: &[f32], c: &mut [f32]) {
    let (m, k, n) = (case.m, case.k, case.n);
    c.par_chunks_mut(m * n).enumerate().for_each(|(i, c)| {
        // SAFETY: batch i; offsets within bounds.
        unsafe {
            gemm(
                m,
                k,
                n,
                a.as_ptr().add(i * m * k),
                case.a,
                b.as_ptr().add(i * k * n),
                case.b,
                c.as_mut_ptr(),
                n,
            )
        }
    });
}

/// Best time of each policy, run round-robin (one call each per round) so that
/// other load on the machine disturbs all of them alike.
fn race(fs: &mut [&mut dyn FnMut()]) -> Vec<f64> {
    for f in fs.iter_mut() {
        f();
        f();
    }
    let mut best = vec![f64::INFINITY; fs.len()];
    let start = Instant::now();
    let mut rounds = 0;
    while rounds < 20 || (start.elapsed().as_secs_f64() < 1.5 && rounds < 400) {
        for (i, f) in fs.iter_mut().enumerate() {
            let t = Instant::now();
            f();
            best[i] = best[i].min(t.elapsed().as_secs_f64());
        }
        rounds += 1;
    }
    best
}

fn main() {
    let threads = rayon::current_num_threads();
    let feature = if cfg!(feature = "mm-threading") {
        "matrixmultiply threading ON"
    } else {
        "matrixmultiply threading off"
    };
    println!("{feature}; rayon threads {threads}; GFLOP/s (best of interleaved rounds)");
    let cases = [
        Case {
            name: "[2048,128]x[128,512]",
            batch: 1,
            m: 2048,
            k: 128,
            n: 512,
            a: dense(128),
            b: dense(512),
        },
        Case {
            name: "[2048,512]x[512,128]",
            batch: 1,
            m: 2048,
            k: 512,
            n: 128,
            a: dense(512),
            b: dense(128),
        },
        Case {
            name: "[2048,128]x[128,384]",
            batch: 1,
            m: 2048,
            k: 128,
            n: 384,
            a: dense(128),
            b: dense(384),
        },
        // backward: dX = dY·Wᵀ (W stored [k_out, n_in] → transposed operand)
        Case {
            name: "dX [2048,512]x[128,512]^T",
            batch: 1,
            m: 2048,
            k: 512,
            n: 128,
            a: dense(512),
            b: transposed(512),
        },
        Case {
            name: "dX [2048,128]x[512,128]^T",
            batch: 1,
            m: 2048,
            k: 128,
            n: 512,
            a: dense(128),
            b: transposed(128),
        },
        // backward: dW = Xᵀ·dY with X [2048,128]
        Case {
            name: "dW [2048,128]^T x[2048,512]",
            batch: 1,
            m: 128,
            k: 2048,
            n: 512,
            a: transposed(128),
            b: dense(512),
        },
        Case {
            name: "dW [2048,512]^T x[2048,128]",
            batch: 1,
            m: 512,
            k: 2048,
            n: 128,
            a: transposed(512),
            b: dense(128),
        },
        Case {
            name: "1024^3",
            batch: 1,
            m: 1024,
            k: 1024,
            n: 1024,
            a: dense(1024),
            b: dense(1024),
        },
        Case {
            name: "256^3",
            batch: 1,
            m: 256,
            k: 256,
            n: 256,
            a: dense(256),
            b: dense(256),
        },
        // attention: Q·Kᵀ, P·V and their backward variants, batch 16·4 heads
        Case {
            name: "att [64,128,32]x[64,32,128]",
            batch: 64,
            m: 128,
            k: 32,
            n: 128,
            a: dense(32),
            b: dense(128),
        },
        Case {
            name: "att QK^T (K^T strided)",
            batch: 64,
            m: 128,
            k: 32,
            n: 128,
            a: dense(32),
            b: transposed(32),
        },
        Case {
            name: "att [64,128,128]x[64,128,32]",
            batch: 64,
            m: 128,
            k: 128,
            n: 32,
            a: dense(128),
            b: dense(32),
        },
        Case {
            name: "att P^T·dO (P^T strided)",
            batch: 64,
            m: 128,
            k: 128,
            n: 32,
            a: transposed(128),
            b: dense(32),
        },
    ];
    println!("{:<30} {:>9} {:>9} {:>9}", "shape", "single", "split", "batch");
    for c in &cases {
        let a: Vec<f32> = (0..c.batch * c.m * c.k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..c.batch * c.k * c.n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut out = vec![0.0f32; c.batch * c.m * c.n];
        let flop = 2.0 * (c.batch * c.m * c.k * c.n) as f64 * 1e-9;
        let mut out2 = out.clone();
        let mut out3 = out.clone();
        let mut p1 = || single(c, &a, &b, &mut out);
        let mut p2 = || split(c, &a, &b, &mut out2, threads);
        let mut p3 = || batch(c, &a, &b, &mut out3);
        let t = if c.batch > 1 {
            race(&mut [&mut p1, &mut p2, &mut p3])
        } else {
            race(&mut [&mut p1, &mut p2])
        };
        let (t1, t2) = (t[0], t[1]);
        let t3 = match t.get(2) {
            Some(t3) => format!("{:9.1}", flop / t3),
            None => format!("{:>9}", "-"),
        };
        println!("{:<30} {:9.1} {:9.1} {}", c.name, flop / t1, flop / t2, t3);
    }
}
