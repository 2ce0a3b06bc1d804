//! One-run table of the CPU backend's overhead ratios (the comparisons of
//! `benches/ops.rs`, printed compactly):
//!
//! ```sh
//! cargo run --release -p unigrad-cpu --example bench_report
//! ```
//!
//! Two clocks, because the machines this runs on are often shared:
//! - **1-thread CPU time**: the variant runs inside a 1-thread rayon pool and is timed
//!   with the thread's own CPU clock (`CLOCK_THREAD_CPUTIME_ID`, user + system, so
//!   page faults count). Being descheduled by other processes does not inflate it:
//!   these ratios are the robust measure of per-core efficiency.
//! - **2-thread wall time**: what a user sees with both cores; meaningful only on an
//!   otherwise idle machine.
//!
//! Every row times its variants interleaved (round-robin, one call each per round)
//! and keeps each variant's best round, so slow drifts hit all variants alike.

use rayon::ThreadPool;
use std::hint::black_box;
use std::time::Instant;
use unigrad_core::{DType, Tensor};
use unigrad_cpu::simd::{self, Level};
use unigrad_cpu::{cpu, pool, CpuStorage};

/// CPU time of the calling thread, in seconds.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// A variant timed by the wall clock on the calling thread (rayon may use all threads).
fn wall<'a>(mut f: impl FnMut() + 'a) -> Box<dyn FnMut() -> f64 + 'a> {
    Box::new(move || {
        let s = Instant::now();
        f();
        s.elapsed().as_secs_f64()
    })
}

/// A variant run inside the 1-thread pool, timed by that thread's CPU clock.
fn cpu1<'a>(one: &'a ThreadPool, mut f: impl FnMut() + Send + 'a) -> Box<dyn FnMut() -> f64 + 'a> {
    Box::new(move || {
        one.install(|| {
            let s = thread_cpu();
            f();
            thread_cpu() - s
        })
    })
}

/// Best seconds of each variant over interleaved rounds (after two warm-up calls each,
/// which also fill the buffer pool).
fn race(rounds: usize, fs: &mut [Box<dyn FnMut() -> f64 + '_>]) -> Vec<f64> {
    for f in fs.iter_mut() {
        f();
        f();
    }
    let mut best = vec![f64::INFINITY; fs.len()];
    for _ in 0..rounds {
        for (i, f) in fs.iter_mut().enumerate() {
            best[i] = best[i].min(f());
        }
    }
    best
}

/// Rounds so that one row takes about `budget` seconds.
fn rounds_for(fs: &mut [Box<dyn FnMut() -> f64 + '_>], budget: f64) -> usize {
    let per_round: f64 = fs.iter_mut().map(|f| f()).sum();
    ((budget / per_round) as usize).clamp(5, 300)
}

fn run(fs: &mut [Box<dyn FnMut() -> f64 + '_>], budget: f64) -> Vec<f64> {
    let r = rounds_for(fs, budget);
    race(r, fs)
}

fn f32_storage(t: &Tensor) -> Vec<f32> {
    t.to_vec::<f32>().unwrap()
}

/// One direct `sgemm` call per batch matrix on the tensors' own storage.
fn gemm_raw(a: &Tensor, b: &Tensor, c: &mut [f32]) {
    let (sa, sb) = (a.shape(), b.shape());
    let r = sa.len();
    let (m, k, n) = (sa[r - 2], sa[r - 1], sb[r - 1]);
    let batch: usize = sa[..r - 2].iter().product();
    let (sta, stb) = (a.storage(), b.storage());
    let x = match sta.as_any().downcast_ref::<CpuStorage>() {
        Some(CpuStorage::F32(v)) => v,
        _ => panic!("f32 cpu tensor expected"),
    };
    let y = match stb.as_any().downcast_ref::<CpuStorage>() {
        Some(CpuStorage::F32(v)) => v,
        _ => panic!("f32 cpu tensor expected"),
    };
    assert!(x.len() >= batch * m * k && y.len() >= batch * k * n && c.len() >= batch * m * n);
    for i in 0..batch {
        // SAFETY: dense operands and output, sizes checked above.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                x.as_ptr().add(i * m * k),
                k as isize,
                1,
                y.as_ptr().add(i * k * n),
                n as isize,
                1,
                0.0,
                c.as_mut_ptr().add(i * m * n),
                n as isize,
                1,
            )
        }
    }
}

fn matmul_section(one: &ThreadPool) {
    let dev = cpu();
    println!("## matmul f32: Tensor::matmul vs direct matrixmultiply::sgemm on the same buffers");
    println!("   (raw/api > 1: the API is faster; 1-thread columns compare pure overhead)");
    println!(
        "{:<24} {:>12} {:>12} {:>12} {:>11} {:>11}",
        "shape", "raw 1t ms", "api 1t ms", "api 2t ms", "raw/api 1t", "raw/api 2t"
    );
    let shapes: Vec<(&str, Vec<usize>, Vec<usize>)> = vec![
        ("128^3", vec![128, 128], vec![128, 128]),
        ("256^3", vec![256, 256], vec![256, 256]),
        ("512^3", vec![512, 512], vec![512, 512]),
        ("1024^3", vec![1024, 1024], vec![1024, 1024]),
        ("2048^3", vec![2048, 2048], vec![2048, 2048]),
        ("[2048,128]x[128,512]", vec![2048, 128], vec![128, 512]),
        ("[64,128,32]x[64,32,128]", vec![64, 128, 32], vec![64, 32, 128]),
    ];
    for (name, sa, sb) in shapes {
        let a = Tensor::randn(&sa, DType::F32, &dev).unwrap();
        let b = Tensor::randn(&sb, DType::F32, &dev).unwrap();
        let mut c1 = vec![0.0f32; a.numel() / sa[sa.len() - 1] * sb[sb.len() - 1]];
        let mut c2 = c1.clone();
        let mut fs = [
            cpu1(one, || gemm_raw(&a, &b, &mut c1)),
            cpu1(one, || {
                black_box(a.matmul(&b).unwrap());
            }),
            wall(|| gemm_raw(&a, &b, &mut c2)),
            wall(|| {
                black_box(a.matmul(&b).unwrap());
            }),
        ];
        let t = run(&mut fs, 4.0);
        println!(
            "{:<24} {:>12.3} {:>12.3} {:>12.3} {:>11.3} {:>11.3}",
            name,
            t[0] * 1e3,
            t[1] * 1e3,
            t[3] * 1e3,
            t[0] / t[1],
            t[2] / t[3]
        );
    }
}

fn elementwise_section(one: &ThreadPool) {
    let dev = cpu();
    println!("\n## elementwise f32: op time / time of copy_from_slice of the output's bytes");
    println!(
        "{:<5} {:>10} {:>7} {:>7} {:>7} {:>7} | {:>10} {:>7} {:>7} {:>7}",
        "n", "copy 1t ms", "add", "mul", "exp", "gelu", "copy 2t ms", "add", "mul", "exp"
    );
    for n in [1usize << 20, 1 << 22, 1 << 24] {
        let a = Tensor::randn(&[n], DType::F32, &dev).unwrap();
        let b = Tensor::randn(&[n], DType::F32, &dev).unwrap();
        let src = f32_storage(&a);
        let mut dst = vec![0.0f32; n];
        let mut dst2 = vec![0.0f32; n];
        let mut fs = [
            cpu1(one, || {
                dst.copy_from_slice(&src);
                black_box(&dst);
            }),
            cpu1(one, || {
                black_box(a.add(&b).unwrap());
            }),
            cpu1(one, || {
                black_box(a.mul(&b).unwrap());
            }),
            cpu1(one, || {
                black_box(a.exp().unwrap());
            }),
            cpu1(one, || {
                black_box(a.gelu().unwrap());
            }),
            wall(|| {
                dst2.copy_from_slice(&src);
                black_box(&dst2);
            }),
            wall(|| {
                black_box(a.add(&b).unwrap());
            }),
            wall(|| {
                black_box(a.mul(&b).unwrap());
            }),
            wall(|| {
                black_box(a.exp().unwrap());
            }),
        ];
        let t = run(&mut fs, 3.0);
        println!(
            "{:<5} {:>10.3} {:>7.2} {:>7.2} {:>7.2} {:>7.2} | {:>10.3} {:>7.2} {:>7.2} {:>7.2}",
            format!("{}M", n >> 20),
            t[0] * 1e3,
            t[1] / t[0],
            t[2] / t[0],
            t[3] / t[0],
            t[4] / t[0],
            t[5] * 1e3,
            t[6] / t[5],
            t[7] / t[5],
            t[8] / t[5]
        );
    }
}

fn rows_section(one: &ThreadPool) {
    let dev = cpu();
    println!("\n## rows of [4096, 1024] f32: op time / time of copying the input's bytes");
    let x = Tensor::randn(&[4096, 1024], DType::F32, &dev).unwrap();
    let src = f32_storage(&x);
    let mut dst = vec![0.0f32; src.len()];
    let mut dst2 = vec![0.0f32; src.len()];
    let mut fs = [
        cpu1(one, || {
            dst.copy_from_slice(&src);
            black_box(&dst);
        }),
        cpu1(one, || {
            black_box(x.softmax(-1).unwrap());
        }),
        cpu1(one, || {
            black_box(x.sum(&[-1], false).unwrap());
        }),
        cpu1(one, || {
            black_box(x.sum(&[0], false).unwrap());
        }),
        wall(|| {
            dst2.copy_from_slice(&src);
            black_box(&dst2);
        }),
        wall(|| {
            black_box(x.softmax(-1).unwrap());
        }),
        wall(|| {
            black_box(x.sum(&[-1], false).unwrap());
        }),
        wall(|| {
            black_box(x.sum(&[0], false).unwrap());
        }),
    ];
    let t = run(&mut fs, 3.0);
    println!(
        "{:<12} {:>12} {:>10} {:>12} {:>10}",
        "", "1t ms", "/ copy", "2t ms", "/ copy"
    );
    for (i, name) in ["copy", "softmax(-1)", "sum(-1)", "sum(0)"].iter().enumerate() {
        println!(
            "{:<12} {:>12.3} {:>10.2} {:>12.3} {:>10.2}",
            name,
            t[i] * 1e3,
            t[i] / t[0],
            t[i + 4] * 1e3,
            t[i + 4] / t[4]
        );
    }
}

fn pool_section(one: &ThreadPool) {
    let dev = cpu();
    println!("\n## buffer pool: 1-thread CPU time (user + system) with the pool on / off");
    println!("   (each setting in its own block: switching the pool off empties it)");
    let limit = pool::limit_bytes();
    let x = Tensor::randn(&[2048, 128], DType::F32, &dev).unwrap();
    let w1 = Tensor::randn(&[128, 512], DType::F32, &dev).unwrap().requires_grad();
    let w2 = Tensor::randn(&[512, 128], DType::F32, &dev).unwrap().requires_grad();
    let a = Tensor::randn(&[1 << 22], DType::F32, &dev).unwrap();
    let b = Tensor::randn(&[1 << 22], DType::F32, &dev).unwrap();
    let mut rows = Vec::new();
    for lim in [limit, 0, limit] {
        pool::set_limit_bytes(lim);
        let mut fs = [
            cpu1(one, || {
                black_box(a.add(&b).unwrap());
            }),
            cpu1(one, || {
                let s = a.add(&b).unwrap();
                let p = s.mul(&a).unwrap();
                black_box(p.exp().unwrap());
            }),
            cpu1(one, || {
                // an MLP training step: the Transformer's FFN shapes
                let h = x.matmul(&w1).unwrap().gelu().unwrap();
                let y = h.matmul(&w2).unwrap();
                y.sqr().unwrap().mean_all().unwrap().backward().unwrap();
                w1.zero_grad();
                w2.zero_grad();
            }),
        ];
        rows.push(run(&mut fs, 3.0));
    }
    pool::set_limit_bytes(limit);
    let on = |i: usize| rows[0][i].min(rows[2][i]);
    println!(
        "{:<34} {:>10} {:>10} {:>14}",
        "", "pool ms", "no pool ms", "no pool/pool"
    );
    for (i, name) in ["add 4M", "add → mul → exp chain 4M", "MLP step fwd+bwd [2048,128]→512"]
        .iter()
        .enumerate()
    {
        println!(
            "{:<34} {:>10.3} {:>10.3} {:>14.2}",
            name,
            on(i) * 1e3,
            rows[1][i] * 1e3,
            rows[1][i] / on(i)
        );
    }
}

fn simd_section(one: &ThreadPool) {
    let dev = cpu();
    println!("\n## SIMD level: 1-thread CPU time relative to the detected level");
    println!("   (Scalar = baseline x86-64 build, SSE2; 'std' = a plain loop calling std's f32 functions)");
    let levels: Vec<Level> = [Level::Scalar, Level::Avx2, Level::Avx512]
        .into_iter()
        .filter(|&l| l <= simd::detected())
        .collect();
    for n in [1usize << 18, 1 << 22] {
        let a = Tensor::randn(&[n], DType::F32, &dev).unwrap();
        let b = Tensor::randn(&[n], DType::F32, &dev).unwrap();
        let av = f32_storage(&a);
        type OpFn = fn(&Tensor, &Tensor) -> Tensor;
        type StdFn = fn(f32) -> f32;
        let ops: [(&str, OpFn, Option<StdFn>); 5] = [
            ("exp", |a, _| a.exp().unwrap(), Some(f32::exp)),
            ("gelu", |a, _| a.gelu().unwrap(), None),
            ("tanh", |a, _| a.tanh().unwrap(), Some(f32::tanh)),
            (
                "softmax",
                |a, _| a.reshape(&[a.numel() / 256, 256]).unwrap().softmax(-1).unwrap(),
                None,
            ),
            ("add", |a, b| a.add(b).unwrap(), None),
        ];
        for (name, op, std_fn) in ops {
            let mut fs: Vec<Box<dyn FnMut() -> f64 + '_>> = levels
                .iter()
                .map(|&l| {
                    let (a, b) = (a.clone(), b.clone());
                    cpu1(one, move || {
                        simd::set_max_level(Some(l));
                        black_box(op(&a, &b));
                        simd::set_max_level(None);
                    })
                })
                .collect();
            if let Some(g) = std_fn {
                let av = &av;
                fs.push(cpu1(one, move || {
                    black_box(av.iter().map(|&v| g(v)).collect::<Vec<f32>>());
                }));
            }
            let t = run(&mut fs, 2.0);
            let best = t[levels.len() - 1];
            let mut cells: Vec<String> = levels
                .iter()
                .zip(&t)
                .map(|(l, x)| format!("{l:?} {:.3} ms ({:.2}x)", x * 1e3, x / best))
                .collect();
            if std_fn.is_some() {
                let x = t[levels.len()];
                cells.push(format!("std {:.3} ms ({:.2}x)", x * 1e3, x / best));
            }
            println!("{:<5} {name:<8} {}", format!("{}K", n >> 10), cells.join("  "));
        }
    }
}

fn main() {
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("pool");
    println!(
        "unigrad-cpu bench report: {} rayon threads, SIMD level {:?}, pool limit {} MiB\n",
        rayon::current_num_threads(),
        simd::level(),
        pool::limit_bytes() >> 20
    );
    let only: Vec<String> = std::env::args().skip(1).collect();
    let want = |s: &str| only.is_empty() || only.iter().any(|o| o == s);
    if want("matmul") {
        matmul_section(&one);
    }
    if want("elementwise") {
        elementwise_section(&one);
    }
    if want("rows") {
        rows_section(&one);
    }
    if want("pool") {
        pool_section(&one);
    }
    if want("simd") {
        simd_section(&one);
    }
}
