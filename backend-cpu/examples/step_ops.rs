//! Per-op timings of the pieces of the reference training step (activations
//! [16,128,128] f32, FFN [16,128,512], the Linear GEMM shapes),
//! for finding slow paths (broadcasting, column sums). Not a benchmark of record.
//!
//! ```sh
//! cargo run --release -p unigrad-cpu --example step_ops
//! ```

use std::hint::black_box;
use std::time::Instant;
use unigrad_core::{DType, Tensor};
use unigrad_cpu::cpu;

fn time(name: &str, f: impl Fn() -> Tensor) {
    for _ in 0..3 {
        black_box(f());
    }
    let mut best = f64::MAX;
    for _ in 0..20 {
        let t = Instant::now();
        black_box(f());
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("{name:32} {:8.1} us", best * 1e6);
}

fn main() {
    let dev = cpu();
    let x = Tensor::randn(&[16, 128, 128], DType::F32, &dev).unwrap();
    let y = Tensor::randn(&[16, 128, 128], DType::F32, &dev).unwrap();
    let m = Tensor::randn(&[16, 128, 1], DType::F32, &dev).unwrap();
    let w = Tensor::randn(&[128], DType::F32, &dev).unwrap();
    let h = Tensor::randn(&[16, 128, 512], DType::F32, &dev).unwrap();
    time("copy (affine 1,0)", || x.affine(1.0, 0.0).unwrap());
    time("add same shape", || x.add(&y).unwrap());
    time("sub [..,1] broadcast", || x.sub(&m).unwrap());
    time("mul [C] broadcast", || x.mul(&w).unwrap());
    time("sum rows (axes 0,1)", || x.sum(&[0, 1], false).unwrap());
    time("mean last keepdim", || x.mean(&[-1], true).unwrap());
    time("gelu [16,128,512]", || h.gelu().unwrap());
    time("sqr", || x.sqr().unwrap());
    let h2 = h.reshape(&[2048, 512]).unwrap();
    time("column sum [2048,512] -> [512]", || h2.sum(&[0], false).unwrap());
    time("gelu grad [16,128,512]", || {
        h.gelu().unwrap() // stand-in for the derivative map: same shape, similar cost
    });
    time("mul [16,128,512]", || h.mul(&h).unwrap());
    let p4 = Tensor::randn(&[16, 4, 128, 128], DType::F32, &dev).unwrap();
    time("softmax [16,4,128,128]", || p4.softmax(-1).unwrap());
    let qkv = Tensor::randn(&[16, 128, 3, 4, 32], DType::F32, &dev).unwrap();
    time("permute copy [16,4,128,32]", || {
        qkv.narrow(2, 0, 1)
            .unwrap()
            .squeeze(2)
            .unwrap()
            .permute(&[0, 2, 1, 3])
            .unwrap()
            .contiguous()
            .unwrap()
    });
    // the GEMM shapes of the reference training step (tokens 2048, d 128, ffn 512)
    let a = Tensor::randn(&[2048, 128], DType::F32, &dev).unwrap();
    let w1 = Tensor::randn(&[512, 128], DType::F32, &dev).unwrap();
    let hh = Tensor::randn(&[2048, 512], DType::F32, &dev).unwrap();
    let gflops = |ms: f64, flop: f64| flop / ms / 1e6;
    for (name, f, flop) in [
        (
            "x·W1ᵀ [2048,128]x[128,512]",
            Box::new(|| a.matmul(&w1.t().unwrap()).unwrap()) as Box<dyn Fn() -> Tensor>,
            2.0 * 2048.0 * 128.0 * 512.0,
        ),
        (
            "h·W1 [2048,512]x[512,128]",
            Box::new(|| hh.matmul(&w1).unwrap()),
            2.0 * 2048.0 * 128.0 * 512.0,
        ),
        (
            "hᵀ·x [512,2048]x[2048,128]",
            Box::new(|| hh.t().unwrap().matmul(&a).unwrap()),
            2.0 * 2048.0 * 128.0 * 512.0,
        ),
    ] {
        let t = std::time::Instant::now();
        for _ in 0..20 {
            black_box(f());
        }
        let ms = t.elapsed().as_secs_f64() * 1e3 / 20.0;
        println!("{name:32} {:8.1} us  {:6.1} GFLOP/s", ms * 1e3, gflops(ms, flop));
    }
}
