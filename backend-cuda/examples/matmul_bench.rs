//! f32 matmul throughput of the CUDA backend: `C = A · B` for square n × n matrices.
//!
//! ```text
//! matmul_bench [N ...]          # default: 1024 4096 8192
//! ```
//! Prints one JSON object per size (`{"n":1024,"gflops":...,"ms":...}`) on stdout,
//! for `scripts/gpu-check.sh` to tabulate against `torch.matmul` (TF32 off).
//! Time is measured around `iters` back-to-back products followed by one
//! `synchronize()`, after warm-up runs (first-launch JIT and allocator misses excluded).

use std::time::Instant;
use unigrad_core::{DType, HostData, Layout};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sizes: Vec<usize> = match std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<Vec<_>, _>>()?
    {
        v if v.is_empty() => vec![1024, 4096, 8192],
        v => v,
    };
    if let Err(why) = unigrad_cuda::is_available() {
        return Err(format!("no GPU: {why}").into());
    }
    let dev = unigrad_cuda::cuda(0)?;
    if let Some(info) = unigrad_cuda::device_info(&dev) {
        eprintln!(
            "matmul_bench: {} ({}), driver CUDA {}",
            info.product, info.name, info.driver_cuda_version
        );
    }
    let g = dev.backend();
    for n in sizes {
        // Deterministic values in [-1, 1); their exact distribution does not matter.
        let vals: Vec<f32> = (0..n * n)
            .map(|i| ((i.wrapping_mul(2_654_435_761) >> 7) % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let a = g.from_host(&HostData::F32(vals.clone()))?;
        let b = g.from_host(&HostData::F32(vals))?;
        let l = Layout::contiguous(&[n, n]);
        let flop = 2.0 * (n as f64).powi(3);
        for _ in 0..2 {
            drop(g.matmul(&*a, &l, &*b, &l)?);
        }
        g.synchronize()?;
        // Enough iterations for ~0.5 s at 20 TFLOP/s, at least 3.
        let iters = ((1e13 / flop) as usize).clamp(3, 200);
        let t = Instant::now();
        for _ in 0..iters {
            drop(g.matmul(&*a, &l, &*b, &l)?);
        }
        g.synchronize()?;
        let secs = t.elapsed().as_secs_f64() / iters as f64;
        println!(
            "{{\"n\":{n},\"dtype\":\"{}\",\"iters\":{iters},\"ms\":{:.4},\"gflops\":{:.1}}}",
            DType::F32,
            secs * 1e3,
            flop / secs / 1e9
        );
    }
    Ok(())
}
