//! One-run table of the CPU backend's overhead ratios (the same comparisons as
//! `benches/ops.rs`, printed compactly):
//!
//! ```sh
//! cargo run --release -p unigrad-cpu --example bench_report
//! ```
//!
//! Every row times its variants *interleaved* (round-robin, one call each per
//! round) and reports the best and the median round of each: other processes on the
//! machine then disturb all variants alike, and the ratios stay meaningful even
//! when absolute times move.

use std::hint::black_box;
use std::time::Instant;
use unigrad_core::{DType, Tensor};
use unigrad_cpu::simd::{self, Level};
use unigrad_cpu::{cpu, pool, CpuStorage};

/// Best and median seconds of each closure, run round-robin.
fn race(rounds: usize, fs: &mut [&mut dyn FnMut()]) -> Vec<(f64, f64)> {
    for f in fs.iter_mut() {
        f(); // warm up (and fill the buffer pool)
        f();
    }
    let mut t: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); fs.len()];
    for _ in 0..rounds {
        for (i, f) in fs.iter_mut().enumerate() {
            let s = Instant::now();
            f();
            t[i].push(s.elapsed().as_secs_f64());
        }
    }
    t.into_iter()
        .map(|mut v| {
            v.sort_by(|a, b| a.total_cmp(b));
            (v[0], v[v.len() / 2])
        })
        .collect()
}

fn rounds_for(secs_per_call: f64) -> usize {
    ((1.5 / secs_per_call) as usize).clamp(5, 200)
}

fn estimate(f: &mut dyn FnMut()) -> f64 {
    let s = Instant::now();
    f();
    s.elapsed().as_secs_f64()
}

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

fn main() {
    let dev = cpu();
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("pool");
    println!(
        "unigrad-cpu bench report: {} rayon threads, SIMD level {:?}, pool limit {} MiB",
        rayon::current_num_threads(),
        simd::level(),
        pool::limit_bytes() >> 20
    );
    println!("times are best / median of interleaved rounds; ratios use the best\n");

    println!("## matmul f32: Tensor::matmul vs one direct matrixmultiply::sgemm call");
    println!(
        "{:<22} {:>10} {:>12} {:>12} {:>14} {:>12}",
        "shape", "raw ms", "api 1thr ms", "api ms", "raw/api_1thr", "raw/api"
    );
    let shapes: Vec<(&str, Vec<usize>, Vec<usize>)> = vec![
        ("128^3", vec![128, 128], vec![128, 128]),
        ("256^3", vec![256, 256], vec![256, 256]),
        ("512^3", vec![512, 512], vec![512, 512]),
        ("1024^3", vec![1024, 1024], vec![1024, 1024]),
        ("2048^3", vec![2048, 2048], vec![2048, 2048]),
        ("[2048,128]x[128,512]", vec![2048, 128], vec![128, 512]),
        ("[64,128,32]x[.,32,128]", vec![64, 128, 32], vec![64, 32, 128]),
    ];
    for (name, sa, sb) in shapes {
        let a = Tensor::randn(&sa, DType::F32, &dev).unwrap();
        let b = Tensor::randn(&sb, DType::F32, &dev).unwrap();
        let mut c = vec![0.0f32; a.numel() / sa[sa.len() - 1] * sb[sb.len() - 1]];
        let mut raw = || gemm_raw(&a, &b, &mut c);
        let mut api1 = || {
            one.install(|| black_box(a.matmul(&b).unwrap()));
        };
        let mut api = || {
            black_box(a.matmul(&b).unwrap());
        };
        let rounds = rounds_for(estimate(&mut raw)).min(40);
        let t = race(rounds, &mut [&mut raw, &mut api1, &mut api]);
        println!(
            "{:<22} {:>10.3} {:>12.3} {:>12.3} {:>14.3} {:>12.3}",
            name,
            t[0].0 * 1e3,
            t[1].0 * 1e3,
            t[2].0 * 1e3,
            t[0].0 / t[1].0,
            t[0].0 / t[2].0
        );
    }

    println!("\n## elementwise f32 vs copy_from_slice of the output's bytes (op time / copy time)");
    println!(
        "{:<6} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "n", "copy ms", "add", "mul", "exp", "gelu"
    );
    for n in [1usize << 20, 1 << 22, 1 << 24] {
        let a = Tensor::randn(&[n], DType::F32, &dev).unwrap();
        let b = Tensor::randn(&[n], DType::F32, &dev).unwrap();
        let src = a.to_vec::<f32>().unwrap();
        let mut dst = vec![0.0f32; n];
        let mut copy = || {
            dst.copy_from_slice(&src);
            black_box(&dst);
        };
        let mut add = || {
            black_box(a.add(&b).unwrap());
        };
        let mut mul = || {
            black_box(a.mul(&b).unwrap());
        };
        let mut exp = || {
            black_box(a.exp().unwrap());
        };
        let mut gelu = || {
            black_box(a.gelu().unwrap());
        };
        let rounds = rounds_for(estimate(&mut add) * 5.0);
        let t = race(rounds, &mut [&mut copy, &mut add, &mut mul, &mut exp, &mut gelu]);
        println!(
            "{:<6} {:>10.3} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            format!("{}M", n >> 20),
            t[0].0 * 1e3,
            t[1].0 / t[0].0,
            t[2].0 / t[0].0,
            t[3].0 / t[0].0,
            t[4].0 / t[0].0
        );
    }

    println!("\n## buffer pool: op time / copy time, pool on and off (each raced against copy)");
    println!(
        "{:<6} {:>12} {:>12} {:>14} {:>14}",
        "n", "add pooled", "add no pool", "chain pooled", "chain no pool"
    );
    for n in [1usize << 18, 1 << 20, 1 << 22] {
        let a = Tensor::randn(&[n], DType::F32, &dev).unwrap();
        let b = Tensor::randn(&[n], DType::F32, &dev).unwrap();
        let src = a.to_vec::<f32>().unwrap();
        let mut dst = vec![0.0f32; n];
        let limit = pool::limit_bytes();
        let mut cells = Vec::new();
        for lim in [limit, 0] {
            pool::set_limit_bytes(lim);
            let mut copy = || {
                dst.copy_from_slice(&src);
                black_box(&dst);
            };
            let mut add = || {
                black_box(a.add(&b).unwrap());
            };
            // a small forward-like chain: 3 outputs alive at once, then dropped
            let mut chain = || {
                let x = a.add(&b).unwrap();
                let y = x.mul(&a).unwrap();
                black_box(y.exp().unwrap());
            };
            let rounds = rounds_for(estimate(&mut chain) * 3.0);
            let t = race(rounds, &mut [&mut copy, &mut add, &mut chain]);
            cells.push((t[1].0 / t[0].0, t[2].0 / t[0].0));
        }
        pool::set_limit_bytes(limit);
        println!(
            "{:<6} {:>12.2} {:>12.2} {:>14.2} {:>14.2}",
            format!("{}K", n >> 10),
            cells[0].0,
            cells[1].0,
            cells[0].1,
            cells[1].1
        );
    }

    println!("\n## MLP training step (x[2048,128]·W1[128,512] → gelu → ·W2[512,128] → mean(y²), backward)");
    {
        let x = Tensor::randn(&[2048, 128], DType::F32, &dev).unwrap();
        let w1 = Tensor::randn(&[128, 512], DType::F32, &dev).unwrap().requires_grad();
        let w2 = Tensor::randn(&[512, 128], DType::F32, &dev).unwrap().requires_grad();
        let step = || {
            let h = x.matmul(&w1).unwrap().gelu().unwrap();
            let y = h.matmul(&w2).unwrap();
            let loss = y.sqr().unwrap().mean_all().unwrap();
            loss.backward().unwrap();
            w1.zero_grad();
            w2.zero_grad();
        };
        let limit = pool::limit_bytes();
        let mut res = Vec::new();
        // pool on, off, on again: three separate blocks (switching evicts the pool)
        for lim in [limit, 0, limit] {
            pool::set_limit_bytes(lim);
            let mut f = step;
            let t = race(rounds_for(estimate(&mut f) * 2.0).min(60), &mut [&mut f]);
            res.push(t[0]);
        }
        pool::set_limit_bytes(limit);
        println!(
            "pooled {:.2} ms (median {:.2}), no pool {:.2} ms (median {:.2}), pooled again {:.2} ms (median {:.2}); \
             no-pool / pooled = {:.2} (best), {:.2} (median)",
            res[0].0 * 1e3,
            res[0].1 * 1e3,
            res[1].0 * 1e3,
            res[1].1 * 1e3,
            res[2].0 * 1e3,
            res[2].1 * 1e3,
            res[1].0 / res[0].0.min(res[2].0),
            res[1].1 / res[0].1.min(res[2].1)
        );
    }

    println!("\n## rows of [4096, 1024] f32 vs copy of the input's bytes (op time / copy time)");
    {
        let x = Tensor::randn(&[4096, 1024], DType::F32, &dev).unwrap();
        let src = x.to_vec::<f32>().unwrap();
        let mut dst = vec![0.0f32; src.len()];
        let mut copy = || {
            dst.copy_from_slice(&src);
            black_box(&dst);
        };
        let mut softmax = || {
            black_box(x.softmax(-1).unwrap());
        };
        let mut sum_last = || {
            black_box(x.sum(&[-1], false).unwrap());
        };
        let mut sum_first = || {
            black_box(x.sum(&[0], false).unwrap());
        };
        let rounds = rounds_for(estimate(&mut softmax) * 4.0);
        let t = race(rounds, &mut [&mut copy, &mut softmax, &mut sum_last, &mut sum_first]);
        println!("copy {:.3} ms", t[0].0 * 1e3);
        for (i, name) in ["softmax(-1)", "sum(-1)", "sum(0)"].iter().enumerate() {
            println!(
                "{:<12} {:>8.3} ms  ratio {:>6.2}",
                name,
                t[i + 1].0 * 1e3,
                t[i + 1].0 / t[0].0
            );
        }
    }

    println!("\n## SIMD level, f32 over 4M elements (time relative to AVX-512; 1 thread, 256K-element cache-resident inputs too)");
    for (label, n) in [("4M", 1usize << 22), ("256K", 1 << 18)] {
        let a = Tensor::randn(&[n], DType::F32, &dev).unwrap();
        let b = Tensor::randn(&[n], DType::F32, &dev).unwrap();
        let levels: Vec<Level> = [Level::Scalar, Level::Avx2, Level::Avx512]
            .into_iter()
            .filter(|&l| l <= simd::detected())
            .collect();
        type OpFn = fn(&Tensor, &Tensor) -> Tensor;
        let ops: [(&str, OpFn); 5] = [
            ("exp", |a, _| a.exp().unwrap()),
            ("gelu", |a, _| a.gelu().unwrap()),
            ("tanh", |a, _| a.tanh().unwrap()),
            ("softmax", |a, _| {
                a.reshape(&[a.numel() / 256, 256]).unwrap().softmax(-1).unwrap()
            }),
            ("add", |a, b| a.add(b).unwrap()),
        ];
        for (name, op) in ops {
            let mut fs: Vec<Box<dyn FnMut()>> = levels
                .iter()
                .map(|&l| {
                    let (a, b) = (a.clone(), b.clone());
                    let one = &one;
                    Box::new(move || {
                        simd::set_max_level(Some(l));
                        one.install(|| black_box(op(&a, &b)));
                    }) as Box<dyn FnMut()>
                })
                .collect();
            let est = estimate(&mut *fs[0]);
            let mut refs: Vec<&mut dyn FnMut()> = fs.iter_mut().map(|f| &mut **f as &mut dyn FnMut()).collect();
            let t = race(rounds_for(est * 3.0), &mut refs);
            simd::set_max_level(None);
            let last = t.last().unwrap().0;
            let cells: Vec<String> = levels
                .iter()
                .zip(&t)
                .map(|(l, x)| format!("{l:?} {:.3} ms ({:.2}x)", x.0 * 1e3, x.0 / last))
                .collect();
            println!("{label:<5} {name:<8} {}", cells.join("  "));
        }
    }
}
