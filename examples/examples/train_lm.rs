//! Train a byte-level decoder-only Transformer language model on Shakespeare.
//!
//! ```sh
//! cargo run --release -p unigrad-examples --example train_lm             # defaults: a few minutes on 2 cores
//! cargo run --release -p unigrad-examples --example train_lm -- --norm un --steps 3000 --csv lm.csv
//! cargo run --release -p unigrad-examples --example train_lm -- --checkpoint lm.safetensors
//! cargo run --release -p unigrad-examples --example train_lm -- --resume lm.safetensors --steps 3000
//! ```
//!
//! Every byte is a token (vocabulary 256), so the validation cross-entropy in bits per
//! byte compares directly with the unigram baseline (a model that ignores context,
//! ≈4.6 bpb on this text). The model is the reference workload's (`LmConfig`): pre-norm
//! blocks, learned positions, untied head, with the norm chosen by `--norm`. Training
//! uses AdamW (no decay on biases and norm parameters), linear warmup + cosine decay
//! and gradient clipping. Progress shows on stderr; the last stdout line is one JSON
//! object with the results.

use clap::Parser;
use std::time::Instant;
use unigrad::nn::loss::nats_to_bits;
use unigrad::prelude::*;
use unigrad_examples::cli::{main_with, print_json_line, AnyResult, CommonArgs, RunArgs};
use unigrad_examples::data::text::{decode_bytes, eval_batches, Batch, BatchSampler, ByteCorpus};
use unigrad_examples::train::{
    adam_resumed, eval_due, norm_config, opt_path, save_state, tail_mean, update, warmup_cosine, Curve, Reporter,
    TaskKind,
};

/// Train a byte-level Transformer LM on the bundled Shakespeare text.
#[derive(Parser, Debug)]
#[command(version, long_about = None)]
struct Args {
    /// Normalization at every norm site: ln, rms, bn, pn or un.
    #[arg(long, default_value = "ln")]
    norm: String,
    /// Model width.
    #[arg(long, default_value_t = 128)]
    d_model: usize,
    /// Number of Transformer blocks.
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// Attention heads (must divide --d-model).
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Feed-forward width (default 4 × d_model).
    #[arg(long)]
    d_ff: Option<usize>,
    /// Context length in bytes.
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// Training steps (total, including steps done before a --resume).
    #[arg(long, default_value_t = 1200)]
    steps: u64,
    /// Sequences per batch.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Linear warmup steps before the cosine decay.
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    /// AdamW weight decay on weight matrices.
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f64,
    /// Gradient-norm clipping threshold (0 disables).
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    /// Dropout.
    #[arg(long, default_value_t = 0.0)]
    dropout: f64,
    /// LayerNorm Scaling (pre-norm outputs of block l scaled by 1/sqrt(l)).
    #[arg(long)]
    ln_scaling: bool,
    /// Post-norm blocks instead of pre-norm.
    #[arg(long)]
    post_norm: bool,
    /// Warmup of UN / PowerNorm (iterations on batch statistics before the smoothed ones
    /// are used) as a fraction of --steps; their reference defaults (4,000 / 10,000
    /// iterations) are sized for far longer runs.
    #[arg(long, default_value_t = 0.1)]
    norm_warmup_frac: f64,
    /// Random seed (initialisation, batches, sampling).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    run: RunArgs,
    /// Validate every N steps (0: only at the end).
    #[arg(long, default_value_t = 250)]
    eval_every: u64,
    /// Validation windows for the periodic evaluations (the final one uses the whole
    /// validation split).
    #[arg(long, default_value_t = 128)]
    eval_windows: usize,
    /// Bytes to sample at the end.
    #[arg(long, default_value_t = 300)]
    sample_len: usize,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    /// Prompt for the sample.
    #[arg(long, default_value = "ROMEO:")]
    prompt: String,
}

fn main() {
    main_with("train_lm", || run(Args::parse()));
}

fn to_ids(v: &[u32], b: usize, t: usize, dev: &Device) -> Result<Tensor> {
    Tensor::from_vec(v.iter().map(|&x| x as i64).collect(), &[b, t], dev)
}

/// Mean validation cross-entropy in bits per byte over `batches` (eval mode, no grad).
fn evaluate(model: &mut TransformerLm, batches: &[Batch], dev: &Device) -> Result<f64> {
    model.eval();
    let result = no_grad(|| {
        let (mut total, mut count) = (0.0, 0usize);
        for b in batches {
            let x = to_ids(&b.inputs, b.batch_size, b.seq_len, dev)?;
            let y = to_ids(&b.targets, b.batch_size, b.seq_len, dev)?;
            let n = b.batch_size * b.seq_len;
            total += model.loss(&x, &y)?.to_scalar()? * n as f64;
            count += n;
        }
        Ok(nats_to_bits(total / count.max(1) as f64))
    });
    model.train();
    result
}

fn config_string(cfg: &LmConfig) -> String {
    format!(
        "train_lm vocab={} d_model={} heads={} d_ff={} layers={} max_seq={} norm={} pre_norm={} ln_scaling={}",
        cfg.vocab,
        cfg.d_model,
        cfg.heads,
        cfg.d_ff,
        cfg.layers,
        cfg.max_seq,
        cfg.norm.kind,
        cfg.pre_norm,
        cfg.ln_scaling
    )
}

fn run(a: Args) -> AnyResult<()> {
    let dev = a.common.setup(None)?;
    let kind: NormKind = a.norm.parse()?;
    manual_seed(a.seed);

    let corpus = ByteCorpus::shakespeare(&unigrad_examples::data_dir())?;
    let unigram = corpus.unigram_bpb();
    let mut cfg = LmConfig::reference(kind);
    cfg.d_model = a.d_model;
    cfg.layers = a.layers;
    cfg.heads = a.heads;
    cfg.d_ff = a.d_ff.unwrap_or(4 * a.d_model);
    cfg.max_seq = a.seq;
    cfg.dropout = a.dropout;
    cfg.ln_scaling = a.ln_scaling;
    cfg.pre_norm = !a.post_norm;
    cfg.norm = norm_config(kind, TaskKind::Language, a.steps, Some(a.norm_warmup_frac));
    let mut model = TransformerLm::new(cfg, DType::F32, &dev)?;
    let sched = warmup_cosine(a.lr, a.warmup, a.steps, 0.1)?;

    let cfg_str = config_string(&cfg);
    let (mut opt, start) = adam_resumed(
        &model,
        AdamConfig::adamw(a.lr),
        a.weight_decay,
        a.run.resume.as_deref(),
        &cfg_str,
    )?;

    let mut sampler = BatchSampler::new(&corpus.train, a.batch, a.seq, a.seed)?;
    for _ in 0..start {
        sampler.sample(); // replay the batch stream so a resumed run sees the same data
    }
    let quick_val = eval_batches(&corpus.val, a.batch, a.seq, Some(a.eval_windows))?;
    let full_val = eval_batches(&corpus.val, a.batch, a.seq, None)?;
    let mut curve = Curve::create(a.run.csv.as_deref(), "val_bpb", &["tokens_per_s"])?;

    let rep = Reporter::new(a.steps, &format!("train_lm --norm {kind}"), a.run.quiet);
    let pb = rep.bar();
    pb.set_position(start);
    let log = |msg: String| rep.log(msg);
    log(format!(
        "model: {} parameters, {} on {}, unigram baseline {unigram:.3} bpb; train {} bytes, validation {} bytes",
        model.param_count(),
        config_string(&cfg),
        dev,
        corpus.train.len(),
        corpus.val.len()
    ));

    let tokens_per_step = (a.batch * a.seq) as f64;
    let mut losses: Vec<f64> = Vec::new();
    let mut train_time = 0.0f64;
    let mut last_val = f64::NAN;
    let t_all = Instant::now();
    for step in start..a.steps {
        let batch = sampler.sample();
        let t0 = Instant::now();
        let x = to_ids(&batch.inputs, a.batch, a.seq, &dev)?;
        let y = to_ids(&batch.targets, a.batch, a.seq, &dev)?;
        let lr = sched.lr_at(step);
        let done = step + 1;
        let lv = update(&mut opt, &model.loss(&x, &y)?, lr, a.clip, done)?;
        train_time += t0.elapsed().as_secs_f64();
        losses.push(lv);
        let tps = tokens_per_step * (done - start) as f64 / train_time;
        pb.set_message(format!("loss {lv:.4} | {tps:.0} tok/s"));
        pb.inc(1);
        let mut val = None;
        if eval_due(a.eval_every, done, a.steps) {
            let v = evaluate(&mut model, &quick_val, &dev)?;
            log(format!(
                "step {done}: train loss {lv:.4} ({:.3} bpb), val {v:.3} bpb ({} windows), lr {lr:.2e}",
                nats_to_bits(lv),
                a.eval_windows
            ));
            val = Some(v);
            if let Some(p) = &a.run.checkpoint {
                save_state(&model, &opt, p, &cfg_str, done)?;
            }
        }
        curve.row(done, lv, val, lr, &[format!("{tps:.1}")])?;
    }
    rep.finish();

    let final_val = evaluate(&mut model, &full_val, &dev)?;
    last_val = if final_val.is_finite() { final_val } else { last_val };
    curve.finish(&rep)?;
    if let Some(p) = &a.run.checkpoint {
        save_state(&model, &opt, p, &cfg_str, a.steps)?;
        log(format!(
            "checkpoint written to {} (+ {})",
            p.display(),
            opt_path(p).display()
        ));
    }
    model.eval();
    let prompt: Vec<i64> = a.prompt.bytes().map(i64::from).collect();
    let prompt = if prompt.is_empty() { vec![b'\n' as i64] } else { prompt };
    let out = model.generate(&prompt, a.sample_len, a.temperature, a.seed)?;
    let sample = decode_bytes(&out.iter().map(|&t| t as u32).collect::<Vec<_>>());
    if !a.run.quiet {
        println!(
            "--- sample (temperature {}, seed {}) ---\n{sample}\n---",
            a.temperature, a.seed
        );
    }
    let trained = a.steps.saturating_sub(start);
    let train_loss = tail_mean(&losses, 50);
    print_json_line(&serde_json::json!({
        "steps": a.steps,
        "steps_this_run": trained,
        "train_loss": train_loss,
        "val_bpb": last_val,
        "unigram_bpb": unigram,
        "tokens_per_s": if train_time > 0.0 { tokens_per_step * trained as f64 / train_time } else { 0.0 },
        "norm": kind.short_name(),
        "params": model.param_count(),
        "device": dev.name(),
        "seed": a.seed,
        "wall_s": t_all.elapsed().as_secs_f64(),
        "sample": sample,
    }))?;
    Ok(())
}
