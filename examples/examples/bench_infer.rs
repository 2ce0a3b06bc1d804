//! Eval-forward timing of the reference LM with LayerNorm, UN unfolded and UN folded into
//! the neighbouring Linear layers (`unigrad::nn::fold`), plus where the time goes.
//!
//! ```sh
//! cargo run --release -p unigrad-examples --example bench_infer -- [--threads 2] [--iters 30] [--warmup 5]
//! cargo run --release -p unigrad-examples --features cuda --example bench_infer -- --device cuda
//! ```
//!
//! The model is `LmConfig::reference` (vocab 256, d_model 128, 4 heads, FFN 512, 4 pre-norm
//! layers, learned positions), batch 16 × 128, f32 (`--d-model`, `--layers`, `--seq` and
//! `--batch` resize it like the reference script's flags), on `--device` (default the CPU;
//! `--threads` sizes the CPU worker pool). The UN model gets
//! non-trivial eval statistics the way the PyTorch reference (`transformer_ref.py infer`)
//! sets them (γ ~ 1 + 0.2·N(0,1), β ~ 0.2·N(0,1), running_var ~ 0.25 + 2·U(0,1)), and the
//! folded logits are checked against the unfolded ones before timing.
//!
//! Timing: warm-up rounds, then `iters` rounds; each round runs one forward of every
//! variant, rotating the order, so slow drifts of the machine hit all alike. Reported:
//! each variant's median, the ratios of the medians, and the median of the per-round
//! ratios. The folded UN model has no norm op at all, so it is also "the forward with the
//! norms replaced by identity" (same shapes, same Linear layers); `ln − un_folded` is
//! therefore what the `2·layers + 1` LayerNorms (9 at the reference size) cost inside the forward. A breakdown times the pieces
//! of the forward one at a time on the same shapes (norm sites, each Linear, attention
//! core, GELU, residual adds, embedding). Every timed call ends with a device
//! synchronization, so asynchronous backends (CUDA) are timed to completion.
//!
//! The last line on stdout is one JSON object with every number.

use clap::Parser;
use std::time::Instant;
use unigrad::nn::fold::fold_for_inference;
use unigrad::nn::init;
use unigrad::prelude::*;
use unigrad_examples::cli::{main_with, AnyResult, CommonArgs, SizeArgs};

/// Time the eval forward of the reference LM with LayerNorm, UN, and UN folded into the Linears.
#[derive(Parser, Debug)]
#[command(version, long_about = None)]
struct Args {
    /// Timed rounds (one forward of every variant per round).
    #[arg(long, default_value_t = 30, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    iters: usize,
    /// Untimed warm-up rounds.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Timed calls per piece in the breakdown of the forward.
    #[arg(long, default_value_t = 50, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    parts_iters: usize,
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    size: SizeArgs,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

/// Milliseconds of one call.
fn time_ms<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let t0 = Instant::now();
    let out = f();
    (t0.elapsed().as_secs_f64() * 1e3, out)
}

/// Median ms of `iters` calls of `f` after 3 warm-up calls.
fn bench(iters: usize, mut f: impl FnMut() -> AnyResult<()>) -> AnyResult<f64> {
    for _ in 0..3 {
        f()?;
    }
    let mut ms = Vec::with_capacity(iters);
    for _ in 0..iters {
        let (t, r) = time_ms(&mut f);
        r?;
        ms.push(t);
    }
    Ok(median(&ms))
}

/// Give UN's eval statistics and affine the reference's random, non-trivial values.
fn randomize_un(model: &TransformerLm, dev: &Device) -> AnyResult<()> {
    let mut norms: Vec<&Norm> = Vec::new();
    for b in &model.blocks {
        norms.push(&b.norm1);
        norms.push(&b.norm2);
    }
    norms.extend(model.norm_f.as_ref());
    for n in norms {
        let Norm::Unified(u) = n else { continue };
        let c = u.channels();
        init::reinit(u.weight(), &Tensor::randn(&[c], DType::F32, dev)?.affine(0.2, 1.0)?)?;
        init::reinit(u.bias(), &Tensor::randn(&[c], DType::F32, dev)?.mul_scalar(0.2)?)?;
        let mut st = u.state();
        st.running_var = Tensor::rand_uniform(&[c], 0.25, 2.25, DType::F32, dev)?;
        u.set_state(&st)?;
    }
    Ok(())
}

fn main() {
    main_with("bench_infer", || run(Args::parse()));
}

fn run(a: Args) -> AnyResult<()> {
    let Args {
        iters,
        warmup,
        parts_iters,
        common,
        size,
    } = a;
    let (batch, seq, c) = (size.batch, size.seq, size.d_model);
    let threads = common.threads_or(2);
    let dev = common.setup(Some(threads))?;
    // waits for queued work on asynchronous devices (a no-op on the CPU)
    let sync = || dev.backend().synchronize();

    manual_seed(0);
    let mut ln = TransformerLm::new(size.config(NormKind::LayerNorm)?, DType::F32, &dev)?;
    ln.eval();
    manual_seed(0);
    let mut un = TransformerLm::new(size.config(NormKind::Unified)?, DType::F32, &dev)?;
    manual_seed(123);
    randomize_un(&un, &dev)?;
    un.eval();
    let folded = fold_for_inference(&un)?;

    manual_seed(2);
    let ids = Tensor::rand_uniform(&[batch, seq], 0.0, 256.0, DType::F32, &dev)?
        .to_vec_f64()?
        .iter()
        .map(|&v| (v as i64).min(255))
        .collect::<Vec<_>>();
    let ids = Tensor::from_vec(ids, &[batch, seq], &dev)?;

    // fold check
    let want = no_grad(|| un.forward(&ids, None))?.to_vec_f64()?;
    let got = folded.forward(&ids, None)?.to_vec_f64()?;
    let diff = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    let scale = want.iter().map(|a| a.abs()).fold(0.0, f64::max);
    eprintln!(
        "fold un: max |logits_folded - logits_unfolded| = {diff:.2e} (max |logit| {scale:.3}); {} of {} norm ops removed",
        folded.removed_norms(),
        folded.sites().len()
    );
    if diff > 1e-4 * scale.max(1.0) {
        return Err(format!("fold check failed: {diff:e}").into());
    }

    // interleaved rounds
    let names = ["ln", "un_unfolded", "un_folded"];
    let forward = |k: usize| -> AnyResult<()> {
        let out = match k {
            0 => no_grad(|| ln.forward(&ids, None))?,
            1 => no_grad(|| un.forward(&ids, None))?,
            _ => folded.forward(&ids, None)?,
        };
        sync()?;
        std::hint::black_box(out);
        Ok(())
    };
    for _ in 0..warmup {
        for k in 0..names.len() {
            forward(k)?;
        }
    }
    let mut times = vec![Vec::with_capacity(iters); names.len()];
    for i in 0..iters {
        for j in 0..names.len() {
            let k = (i + j) % names.len();
            let (t, r) = time_ms(|| forward(k));
            r?;
            times[k].push(t);
        }
    }
    let med: Vec<f64> = times.iter().map(|t| median(t)).collect();
    let dev_name = dev.name();
    let mins: Vec<f64> = times
        .iter()
        .map(|t| t.iter().cloned().fold(f64::INFINITY, f64::min))
        .collect();
    let round_ratio = |k: usize| median(&times[k].iter().zip(&times[0]).map(|(a, b)| a / b).collect::<Vec<_>>());
    for (k, n) in names.iter().enumerate() {
        eprintln!(
            "infer {n:<12} {dev_name} threads={threads}: median {:8.3} ms (min {:8.3}, max {:8.3}) per {batch}x{seq} forward; median per-round ratio to ln {:.3}",
            med[k],
            mins[k],
            times[k].iter().cloned().fold(0.0, f64::max),
            round_ratio(k)
        );
    }

    // where the time goes: the pieces of one forward, each timed alone on its real shape
    let x = no_grad(|| Tensor::randn(&[batch, seq, c], DType::F32, &dev))?;
    let h = no_grad(|| Tensor::randn(&[batch, seq, 4 * c], DType::F32, &dev))?;
    let blk = &ln.blocks[0];
    let ublk = &un.blocks[0];
    let bias = unigrad::nn::attention_bias(true, None, seq, seq, DType::F32, &dev)?;
    let qkv = blk.attn.qkv.as_ref().ok_or("no qkv")?;
    let p = |f: &mut dyn FnMut() -> Result<Tensor>| -> AnyResult<f64> {
        bench(parts_iters, || {
            let out = no_grad(&mut *f)?;
            sync()?;
            std::hint::black_box(out);
            Ok(())
        })
    };
    let ln_site = p(&mut || blk.norm1.forward(&x, None))?;
    let un_site = p(&mut || ublk.norm1.forward(&x, None))?;
    let t_qkv = p(&mut || qkv.forward(&x))?;
    let t_proj = p(&mut || blk.attn.proj.forward(&x))?;
    let t_ff1 = p(&mut || blk.ff.ff1.forward(&x))?;
    let t_ff2 = p(&mut || blk.ff.ff2.forward(&h))?;
    let t_head = p(&mut || ln.head.forward(&x))?;
    let t_attn = p(&mut || blk.attn.forward_self(&x, bias.as_ref()))?;
    let t_gelu = p(&mut || h.gelu())?;
    let t_add = p(&mut || x.add(&x))?;
    let t_embed = p(&mut || {
        let pos = ln.pos.forward(0, seq)?;
        ln.tok.forward(&ids)?.add(&pos)
    })?;
    let layers = size.layers as f64;
    let linears = layers * (t_qkv + t_proj + t_ff1 + t_ff2) + t_head;
    let attn_core = layers * (t_attn - t_qkv - t_proj).max(0.0);
    let norms_ln = (2.0 * layers + 1.0) * ln_site;
    let rest = layers * (t_gelu + 2.0 * t_add) + t_embed;
    let sum_ln = linears + attn_core + norms_ln + rest;
    eprintln!(
        "one norm site [{batch},{seq},{c}] eval: ln {ln_site:.3} ms, un (unfolded) {un_site:.3} ms; \
         linear qkv {t_qkv:.3}, proj {t_proj:.3}, ff1 {t_ff1:.3}, ff2 {t_ff2:.3}, head {t_head:.3}; \
         attention incl. qkv+proj {t_attn:.3}; gelu {t_gelu:.3}; add {t_add:.3}; embedding {t_embed:.3}"
    );
    eprintln!(
        "LN forward by parts: linears {linears:.2} ms ({:.0}%), attention core {attn_core:.2} ({:.0}%), \
         {} norms {norms_ln:.2} ({:.0}%), gelu+adds+embedding {rest:.2} ({:.0}%); sum {sum_ln:.2} vs measured {:.2}",
        100.0 * linears / sum_ln,
        100.0 * attn_core / sum_ln,
        2 * size.layers + 1,
        100.0 * norms_ln / sum_ln,
        100.0 * rest / sum_ln,
        med[0]
    );
    eprintln!(
        "norm cost inside the forward (ln - un_folded, i.e. LN vs identity norms): {:.2} ms = {:.1}% of the LN forward",
        med[0] - med[2],
        100.0 * (med[0] - med[2]) / med[0]
    );

    let json = serde_json::json!({
        "bench": "infer",
        "device": dev_name,
        "dtype": "f32",
        "threads": threads,
        "batch": batch,
        "seq": seq,
        "d_model": c,
        "layers": size.layers,
        "rounds": iters,
        "warmup": warmup,
        "fold_max_abs_logit_diff": diff,
        "norm_ops_removed": folded.removed_norms(),
        "median_ms": {"ln": med[0], "un_unfolded": med[1], "un_folded": med[2]},
        "min_ms": {"ln": mins[0], "un_unfolded": mins[1], "un_folded": mins[2]},
        "ratio": {
            "un_folded/ln": med[2] / med[0],
            "un_unfolded/ln": med[1] / med[0],
            "un_folded/un_unfolded": med[2] / med[1],
        },
        "median_round_ratio_to_ln": {"un_unfolded": round_ratio(1), "un_folded": round_ratio(2)},
        "norm_cost_ms": med[0] - med[2],
        "norm_site_ms": {"ln": ln_site, "un_unfolded": un_site},
        "parts_ms": {
            "linears": linears, "attention_core": attn_core, "norms_ln": norms_ln,
            "gelu_adds_embedding": rest, "sum": sum_ln,
            "qkv": t_qkv, "proj": t_proj, "ff1": t_ff1, "ff2": t_ff2, "head": t_head,
            "attention_incl_qkv_proj": t_attn, "gelu": t_gelu, "add": t_add, "embedding": t_embed,
        },
    });
    unigrad_examples::cli::print_json_line(&json)?;
    Ok(())
}
