//! Where rayon starts to pay off: each op at growing sizes, run on the calling thread
//! (`set_par_threshold(usize::MAX)`) and on rayon (`set_par_threshold(0)`),
//! interleaved round by round. Prints seq/par time ratios (> 1: parallel wins);
//! `strided::PAR_THRESHOLD` is set where the ratios cross 1.
//!
//! ```sh
//! cargo run --release -p unigrad-cpu --example par_threshold
//! ```

use std::hint::black_box;
use std::time::Instant;
use unigrad_core::{DType, Tensor};
use unigrad_cpu::cpu;
use unigrad_cpu::strided::{set_par_threshold, PAR_THRESHOLD};

fn main() {
    let dev = cpu();
    println!(
        "rayon threads {}; ratio = sequential / parallel time (best of interleaved rounds)",
        rayon::current_num_threads()
    );
    type Op = fn(&Tensor, &Tensor) -> Tensor;
    let ops: [(&str, Op); 6] = [
        ("add", |a, b| a.add(b).unwrap()),
        ("add [r,256]+[256]", |a, b| {
            let n = a.numel();
            a.reshape(&[n / 256, 256])
                .unwrap()
                .add(&b.narrow(0, 0, 256).unwrap())
                .unwrap()
        }),
        ("exp", |a, _| a.exp().unwrap()),
        ("gelu", |a, _| a.gelu().unwrap()),
        ("sum(-1) rows of 256", |a, _| {
            a.reshape(&[a.numel() / 256, 256]).unwrap().sum(&[-1], false).unwrap()
        }),
        ("softmax rows of 256", |a, _| {
            a.reshape(&[a.numel() / 256, 256]).unwrap().softmax(-1).unwrap()
        }),
    ];
    let sizes = [
        1usize << 12,
        1 << 13,
        1 << 14,
        1 << 15,
        1 << 16,
        1 << 17,
        1 << 18,
        1 << 20,
    ];
    print!("{:<22}", "op \\ elements");
    for n in sizes {
        print!("{:>8}", format!("{}K", n >> 10));
    }
    println!();
    for (name, op) in ops {
        print!("{name:<22}");
        for n in sizes {
            let a = Tensor::randn(&[n], DType::F32, &dev).unwrap();
            let b = Tensor::randn(&[n], DType::F32, &dev).unwrap();
            let rounds = (2_000_000 / n).clamp(20, 2000);
            let (mut seq, mut par) = (f64::INFINITY, f64::INFINITY);
            for r in 0..rounds + 5 {
                for (parallel, best) in [(false, &mut seq), (true, &mut par)] {
                    set_par_threshold(if parallel { 0 } else { usize::MAX });
                    let s = Instant::now();
                    black_box(op(&a, &b));
                    let t = s.elapsed().as_secs_f64();
                    if r >= 5 {
                        *best = best.min(t);
                    }
                }
            }
            print!("{:>8.2}", seq / par);
        }
        println!();
    }
    set_par_threshold(PAR_THRESHOLD);
}
