//! Per-op timings of the pieces of the reference training step (activations
//! [16,128,128] f32, FFN [16,128,512], the Linear GEMM shapes),
//! for finding slow paths (broadcasting, column sums), then every GEMM of the step
//! with our own kernel and with matrixmultiply side by side. Not a benchmark of record.
//!
//! ```sh
//! cargo run --release -p unigrad-cpu --example step_ops
//! ```

use std::hint::black_box;
use std::time::Instant;
use unigrad_core::{DType, Tensor};
use unigrad_cpu::cpu;
use unigrad_cpu::kernels::matmul::{f32_gemm, set_own_gemm};

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
    gemm_shapes(&dev);
}

/// Seconds on the process's CPU clock (all threads).
fn cpu_clock() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Best time in µs of `f` over `iters` calls: wall time, or with `STEP_OPS_CPU_TIME=1`
/// the process's CPU time (with `RAYON_NUM_THREADS=1` the kernel's own time, much
/// less sensitive than wall time to other jobs on a shared machine).
fn best_us(iters: usize, f: &dyn Fn() -> Tensor) -> f64 {
    let cpu = std::env::var("STEP_OPS_CPU_TIME").is_ok_and(|v| v == "1");
    let mut best = f64::MAX;
    for _ in 0..iters {
        let (w, c) = (Instant::now(), if cpu { cpu_clock() } else { 0.0 });
        black_box(f());
        let dt = if cpu {
            cpu_clock() - c
        } else {
            w.elapsed().as_secs_f64()
        };
        best = best.min(dt);
    }
    best * 1e6
}

/// Every product of the reference training step (tokens 2048, d 128, FFN 512, 4
/// heads of 32, vocab 256), ours against matrixmultiply in alternating rounds, and
/// the step-weighted rate of each (total FLOP of the step's products over their
/// total time).
fn gemm_shapes(dev: &unigrad_core::Device) {
    let r = |s: &[usize]| Tensor::randn(s, DType::F32, dev).unwrap();
    let t = |x: &Tensor| x.t().unwrap();
    let tl = |x: &Tensor| x.transpose(-1, -2).unwrap();
    type Case = (String, Box<dyn Fn() -> Tensor>, f64, f64);
    let mut cases: Vec<Case> = Vec::new();
    // Linear layers: (in, out, uses per step)
    for (name, i, o, uses) in [
        ("qkv", 128, 384, 4.0),
        ("proj", 128, 128, 4.0),
        ("ff1", 128, 512, 4.0),
        ("ff2", 512, 128, 4.0),
        ("head", 128, 256, 1.0),
    ] {
        let (x, w, g) = (r(&[2048, i]), r(&[o, i]), r(&[2048, o]));
        let flop = 2.0 * 2048.0 * i as f64 * o as f64;
        let (x1, w1) = (x.clone(), w.clone());
        cases.push((
            format!("{name} x·Wᵀ [2048,{i}]x[{i},{o}]"),
            Box::new(move || x1.matmul(&t(&w1)).unwrap()),
            flop,
            uses,
        ));
        let (g1, w1) = (g.clone(), w.clone());
        cases.push((
            format!("{name} g·W [2048,{o}]x[{o},{i}]"),
            Box::new(move || g1.matmul(&w1).unwrap()),
            flop,
            uses,
        ));
        cases.push((
            format!("{name} gᵀ·x [{o},2048]x[2048,{i}]"),
            Box::new(move || t(&g).matmul(&x).unwrap()),
            flop,
            uses,
        ));
    }
    // attention per (batch, head): q·kᵀ, p·v and the backward's p-grad and q/k/v grads
    let (q, k, p) = (r(&[64, 128, 32]), r(&[64, 128, 32]), r(&[64, 128, 128]));
    let flop = 2.0 * 64.0 * 128.0 * 128.0 * 32.0;
    let (q1, k1) = (q.clone(), k.clone());
    cases.push((
        "attn q·kᵀ [64,128,32]x[64,32,128]".into(),
        Box::new(move || q1.matmul(&tl(&k1)).unwrap()),
        flop,
        4.0,
    ));
    let (p1, k1) = (p.clone(), k.clone());
    cases.push((
        "attn p·v [64,128,128]x[64,128,32]".into(),
        Box::new(move || p1.matmul(&k1).unwrap()),
        flop,
        8.0,
    ));
    let (q1, k1) = (q.clone(), k.clone());
    cases.push((
        "attn g·vᵀ [64,128,32]x[64,32,128]".into(),
        Box::new(move || q1.matmul(&tl(&k1)).unwrap()),
        flop,
        4.0,
    ));
    cases.push((
        "attn pᵀ·g [64,128,128]x[64,128,32]".into(),
        Box::new(move || tl(&p).matmul(&q).unwrap()),
        flop,
        8.0,
    ));
    println!(
        "{:44} {:>9} {:>8} {:>9} {:>8} {:>6}",
        "product (2 paths, best of 4×5 alternating)", "ours us", "GFLOP/s", "mm us", "GFLOP/s", "ratio"
    );
    let (mut tot_flop, mut tot_ours, mut tot_mm) = (0.0, 0.0, 0.0);
    for (name, f, flop, uses) in &cases {
        let (mut ours, mut mm) = (f64::MAX, f64::MAX);
        for on in [true, false] {
            set_own_gemm(on);
            best_us(2, f.as_ref());
        }
        for _ in 0..4 {
            set_own_gemm(true);
            ours = ours.min(best_us(5, f.as_ref()));
            set_own_gemm(false);
            mm = mm.min(best_us(5, f.as_ref()));
        }
        let rate = |us: f64| flop / us / 1e3;
        println!(
            "{name:44} {ours:9.1} {:8.1} {mm:9.1} {:8.1} {:6.2}",
            rate(ours),
            rate(mm),
            ours / mm
        );
        tot_flop += flop * uses;
        tot_ours += ours * uses;
        tot_mm += mm * uses;
    }
    set_own_gemm(true);
    println!(
        "step-weighted: ours {:.1} GFLOP/s ({:.2} ms/step), matrixmultiply {:.1} GFLOP/s ({:.2} ms/step); own kernel: {:?}",
        tot_flop / tot_ours / 1e3,
        tot_ours / 1e3,
        tot_flop / tot_mm / 1e3,
        tot_mm / 1e3,
        f32_gemm()
    );
}
