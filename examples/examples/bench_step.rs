//! Time one full training step of the reference workload.
//!
//! ```sh
//! cargo run --release -p unigrad-examples --example bench_step -- --norm ln --threads 2
//! ```
//!
//! The workload is the PyTorch reference's (`transformer_ref.py train`): byte-level
//! decoder-only LM, vocab 256, d_model 128, 4 heads, FFN 512 (GELU), 4 pre-norm layers,
//! learned positions, untied head with biases (875,520 parameters with LayerNorm),
//! batch 16 × 128 random tokens, f32, cross-entropy, AdamW (lr 3e-4); `--d-model`,
//! `--layers`, `--seq` and `--batch` resize it as the reference script's flags of the
//! same names do (FFN 4×, heads d_model/32). One step is
//! forward + backward + AdamW update, timed after `--warmup` untimed steps. The last
//! stdout line is one JSON object:
//! `{"norm", "threads", "median_ms", "min_ms", "peak_rss_mib", ...}` where peak RSS is
//! the process's high-water mark (`VmHWM` in `/proc/self/status`).

use clap::Parser;
use std::time::Instant;
use unigrad::core::Rng;
use unigrad::nn::{profile, ParamGroup};
use unigrad::prelude::*;
use unigrad_examples::cli::{main_with, print_json_line, AnyResult, CommonArgs, SizeArgs};

/// Time training steps of the reference Transformer LM.
#[derive(Parser, Debug)]
#[command(version, long_about = None)]
struct Args {
    /// Normalization: ln, bn, rms, un or pn.
    #[arg(long, default_value = "ln")]
    norm: String,
    /// Timed steps.
    #[arg(long, default_value_t = 30)]
    steps: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    size: SizeArgs,
    /// Seed for the weights and the random batches.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// The process's peak resident set size in MiB (`VmHWM`), if the platform reports it.
fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// User + system CPU seconds of this process so far (all threads), from
/// `/proc/self/stat`; less sensitive than wall time to other processes on the machine.
fn cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // fields after the parenthesised command name; utime and stime are fields 14 and 15
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

fn main() {
    main_with("bench_step", || run(Args::parse()));
}

fn run(a: Args) -> AnyResult<()> {
    let threads = a.common.threads_or(2);
    let dev = a.common.setup(Some(threads))?;
    let kind: NormKind = a.norm.parse()?;
    let cfg = a.size.config(kind)?;
    let (batch, seq) = (a.size.batch, a.size.seq);
    manual_seed(a.seed);
    let model = TransformerLm::new(cfg, DType::F32, &dev)?;
    let params = model.param_count();
    let mut opt = Adam::new(
        vec![ParamGroup::new(model.named_params(), 0.01)],
        AdamConfig::adamw(3e-4),
    )?;
    // 8 random batches, cycled (as the reference does)
    let mut rng = Rng::new(a.seed + 1);
    let batches = (0..8)
        .map(|_| {
            let d: Vec<i64> = (0..batch * (seq + 1)).map(|_| rng.below(256) as i64).collect();
            let mut x = Vec::with_capacity(batch * seq);
            let mut y = Vec::with_capacity(batch * seq);
            for r in 0..batch {
                let row = &d[r * (seq + 1)..(r + 1) * (seq + 1)];
                x.extend_from_slice(&row[..seq]);
                y.extend_from_slice(&row[1..]);
            }
            Ok((
                Tensor::from_vec(x, &[batch, seq], &dev)?,
                Tensor::from_vec(y, &[batch, seq], &dev)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut times = Vec::with_capacity(a.steps);
    let mut losses = Vec::new();
    let mut first_ms = 0.0;
    let mut cpu0 = None;
    for i in 0..a.warmup + a.steps {
        let (x, y) = &batches[i % batches.len()];
        if i == a.warmup {
            profile::reset();
            cpu0 = cpu_seconds();
        }
        let t0 = Instant::now();
        let loss = {
            let _p = profile::scope("step.forward", Some(&dev));
            model.loss(x, y)?
        };
        opt.zero_grad();
        {
            let _p = profile::scope("step.backward", Some(&dev));
            loss.backward()?;
        }
        opt.step()?;
        let lv = loss.to_scalar()?; // also waits for asynchronous devices
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        if i == 0 {
            first_ms = ms;
        }
        if i >= a.warmup {
            times.push(ms);
        }
        losses.push(lv);
    }
    if times.is_empty() {
        return Err("--steps must be at least 1".into());
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = if sorted.len() % 2 == 1 {
        sorted[sorted.len() / 2]
    } else {
        0.5 * (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2])
    };
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let cpu_ms = match (cpu0, cpu_seconds()) {
        (Some(a0), Some(a1)) => Some((a1 - a0) * 1e3 / times.len() as f64),
        _ => None,
    };
    if profile::enabled() {
        eprintln!(
            "time per step by scope (UNIGRAD_PROFILE; scopes nest: linear/attention/norm lie inside forward/backward):"
        );
        for (name, ms, calls) in profile::report() {
            eprintln!(
                "  {name:<18} {:>9.2} ms/step  ({} calls/step)",
                ms / times.len() as f64,
                calls as usize / times.len()
            );
        }
    }
    let rss = peak_rss_mib();
    eprintln!(
        "bench_step norm={kind} threads={}: median {median:.2} ms/step (min {:.2}, max {:.2}, n={}), first step {first_ms:.0} ms, peak RSS {}",
        threads,
        sorted[0],
        sorted[sorted.len() - 1],
        times.len(),
        rss.map(|r| format!("{r:.0} MiB")).unwrap_or_else(|| "n/a".into())
    );
    print_json_line(&serde_json::json!({
        "norm": kind.short_name(),
        "threads": threads,
        "d_model": cfg.d_model,
        "layers": cfg.layers,
        "seq": seq,
        "batch": batch,
        "median_ms": median,
        "min_ms": sorted[0],
        "max_ms": sorted[sorted.len() - 1],
        "mean_ms": mean,
        "n": times.len(),
        "first_step_ms": first_ms,
        "params": params,
        "loss_first": losses.first(),
        "loss_last": losses.last(),
        "device": dev.name(),
        "peak_rss_mib": rss,
        "cpu_ms_per_step": cpu_ms,
    }))?;
    Ok(())
}
