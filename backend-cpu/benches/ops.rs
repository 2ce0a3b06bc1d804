//! Criterion benchmarks of the CPU backend through the `Tensor` API, each beside a
//! baseline on the same buffers, so the report reads as ratios:
//!
//! - `matmul/*`: our `Tensor::matmul` (all threads, and inside a 1-thread rayon pool)
//!   vs one direct `matrixmultiply` call on the same storage;
//! - `elementwise/*`, `softmax`, `sum_axis`: our op vs `copy_from_slice` of the
//!   output's bytes (what a memory-bound op cannot beat);
//! - `simd/*`: the same op with the SIMD level capped (scalar / AVX2 / AVX-512);
//! - `pool/*`: an op with the buffer pool on and off.
//!
//! Kept short (10 flat samples, ~1 s per benchmark) so `cargo bench -p unigrad-cpu`
//! finishes in a few minutes on two cores. `examples/bench_report.rs` prints the
//! same comparisons as one table of ratios.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use std::hint::black_box;
use std::time::Duration;
use unigrad_core::{DType, Tensor};
use unigrad_cpu::simd::{self, Level};
use unigrad_cpu::{cpu, pool, CpuStorage};

fn f32_data(t: &Tensor) -> Vec<f32> {
    t.to_vec::<f32>().expect("f32 tensor")
}

/// Run `f` with the storage slice of a dense f32 or f64 tensor.
fn with_storage<R>(t: &Tensor, f: impl FnOnce(&CpuStorage) -> R) -> R {
    let st = t.storage();
    let cs = st.as_any().downcast_ref::<CpuStorage>().expect("cpu storage");
    f(cs)
}

/// An output buffer for the direct GEMM call, of the operands' dtype.
enum Scratch {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

fn raw_gemm(a: &Tensor, b: &Tensor, out: &mut Scratch) {
    // a [.., m, k], b [.., k, n], both dense; out holds batch·m·n elements
    let (sa, sb) = (a.shape(), b.shape());
    let r = sa.len();
    let (m, k, n) = (sa[r - 2], sa[r - 1], sb[r - 1]);
    let batch: usize = sa[..r - 2].iter().product();
    with_storage(a, |x| {
        with_storage(b, |y| match (x, y, out) {
            (CpuStorage::F32(x), CpuStorage::F32(y), Scratch::F32(c)) => {
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
            (CpuStorage::F64(x), CpuStorage::F64(y), Scratch::F64(c)) => {
                assert!(x.len() >= batch * m * k && y.len() >= batch * k * n && c.len() >= batch * m * n);
                for i in 0..batch {
                    // SAFETY: dense operands and output, sizes checked above.
                    unsafe {
                        matrixmultiply::dgemm(
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
            _ => panic!("operand and scratch dtypes differ"),
        })
    })
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(900));
    g
}

fn matmul_benches(c: &mut Criterion) {
    let dev = cpu();
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("pool");
    for dtype in [DType::F32, DType::F64] {
        let mut g = group(c, &format!("matmul_{dtype}"));
        let mut shapes: Vec<(String, Vec<usize>, Vec<usize>)> = [128, 256, 512, 1024, 2048]
            .iter()
            .map(|&n| (n.to_string(), vec![n, n], vec![n, n]))
            .collect();
        if dtype == DType::F32 {
            shapes.push(("2048x128x512".into(), vec![2048, 128], vec![128, 512]));
            shapes.push(("64x128x32x128".into(), vec![64, 128, 32], vec![64, 32, 128]));
        }
        for (name, sa, sb) in shapes {
            let a = Tensor::randn(&sa, dtype, &dev).unwrap();
            let b = Tensor::randn(&sb, dtype, &dev).unwrap();
            let out_elems = a.numel() / sa[sa.len() - 1] * sb[sb.len() - 1];
            let mut buf = match dtype {
                DType::F32 => Scratch::F32(vec![0.0; out_elems]),
                _ => Scratch::F64(vec![0.0; out_elems]),
            };
            g.bench_function(BenchmarkId::new("api", &name), |bch| {
                bch.iter(|| black_box(a.matmul(&b).unwrap()))
            });
            g.bench_function(BenchmarkId::new("api_1thread", &name), |bch| {
                one.install(|| bch.iter(|| black_box(a.matmul(&b).unwrap())))
            });
            g.bench_function(BenchmarkId::new("raw_matrixmultiply", &name), |bch| {
                bch.iter(|| raw_gemm(&a, &b, &mut buf))
            });
        }
        g.finish();
    }
}

fn elementwise_benches(c: &mut Criterion) {
    let dev = cpu();
    let mut g = group(c, "elementwise_f32");
    for n in [1 << 20, 1 << 22, 1 << 24] {
        let label = format!("{}M", n >> 20);
        let a = Tensor::randn(&[n], DType::F32, &dev).unwrap();
        let b = Tensor::randn(&[n], DType::F32, &dev).unwrap();
        let src = f32_data(&a);
        let mut dst = vec![0.0f32; n];
        g.bench_function(BenchmarkId::new("add", &label), |bch| {
            bch.iter(|| black_box(a.add(&b).unwrap()))
        });
        g.bench_function(BenchmarkId::new("mul", &label), |bch| {
            bch.iter(|| black_box(a.mul(&b).unwrap()))
        });
        g.bench_function(BenchmarkId::new("exp", &label), |bch| {
            bch.iter(|| black_box(a.exp().unwrap()))
        });
        g.bench_function(BenchmarkId::new("copy_same_bytes", &label), |bch| {
            bch.iter(|| {
                dst.copy_from_slice(&src);
                black_box(&dst);
            })
        });
    }
    g.finish();
}

fn row_benches(c: &mut Criterion) {
    let dev = cpu();
    let mut g = group(c, "rows_f32_4096x1024");
    let x = Tensor::randn(&[4096, 1024], DType::F32, &dev).unwrap();
    let src = f32_data(&x);
    let mut dst = vec![0.0f32; src.len()];
    g.bench_function("softmax_last", |bch| bch.iter(|| black_box(x.softmax(-1).unwrap())));
    g.bench_function("sum_axis_last", |bch| {
        bch.iter(|| black_box(x.sum(&[-1], false).unwrap()))
    });
    g.bench_function("sum_axis_first", |bch| {
        bch.iter(|| black_box(x.sum(&[0], false).unwrap()))
    });
    g.bench_function("copy_same_bytes", |bch| {
        bch.iter(|| {
            dst.copy_from_slice(&src);
            black_box(&dst);
        })
    });
    g.finish();
}

fn simd_benches(c: &mut Criterion) {
    let dev = cpu();
    let mut g = group(c, "simd_levels_f32_4M");
    let a = Tensor::randn(&[1 << 22], DType::F32, &dev).unwrap();
    let b = Tensor::randn(&[1 << 22], DType::F32, &dev).unwrap();
    for lvl in [Level::Scalar, Level::Avx2, Level::Avx512] {
        if simd::detected() < lvl {
            continue;
        }
        let name = format!("{lvl:?}");
        simd::set_max_level(Some(lvl));
        g.bench_function(BenchmarkId::new("exp", &name), |bch| {
            bch.iter(|| black_box(a.exp().unwrap()))
        });
        g.bench_function(BenchmarkId::new("gelu", &name), |bch| {
            bch.iter(|| black_box(a.gelu().unwrap()))
        });
        g.bench_function(BenchmarkId::new("add", &name), |bch| {
            bch.iter(|| black_box(a.add(&b).unwrap()))
        });
    }
    simd::set_max_level(None);
    g.finish();
}

fn pool_benches(c: &mut Criterion) {
    let dev = cpu();
    let mut g = group(c, "pool_f32_4M");
    let a = Tensor::randn(&[1 << 22], DType::F32, &dev).unwrap();
    let b = Tensor::randn(&[1 << 22], DType::F32, &dev).unwrap();
    let limit = pool::limit_bytes();
    for (name, lim) in [("pooled", limit), ("no_pool", 0)] {
        pool::set_limit_bytes(lim);
        g.bench_function(BenchmarkId::new("add", name), |bch| {
            bch.iter(|| black_box(a.add(&b).unwrap()))
        });
        g.bench_function(BenchmarkId::new("add_mul_exp_chain", name), |bch| {
            bch.iter(|| black_box(a.add(&b).unwrap().mul(&a).unwrap().exp().unwrap()))
        });
    }
    pool::set_limit_bytes(limit);
    g.finish();
}

criterion_group!(
    benches,
    matmul_benches,
    elementwise_benches,
    row_benches,
    simd_benches,
    pool_benches
);
criterion_main!(benches);
