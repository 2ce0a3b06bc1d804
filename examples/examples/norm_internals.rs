//! What the normalization layers see while a small byte-level LM trains on Shakespeare:
//! statistics and their fluctuation per layer and step, loss curves, and what an outlier
//! batch does to BatchNorm's running statistics compared with UN and its outlier filter.
//!
//! ```sh
//! cargo run --release -p unigrad-examples --example norm_internals -- [--steps 300] [--out runs/norm_internals]
//! cargo run --release -p unigrad-examples --example norm_internals -- --help   # every flag and its default
//! ```
//!
//! # Part A: clean runs
//!
//! The same model (default: d_model 64, 4 heads, FFN 256, 2 pre-norm layers, learned
//! positions, batch 16 × 64 bytes, AdamW lr 2e-3), the same initial weights and the same
//! batches, once per norm: LayerNorm, BatchNorm, PowerNorm and UN. A
//! [`Tracer`](unigrad::nn::norm::trace::Tracer) attached to every norm records the batch,
//! smoothed and running statistics, UN's `r`, skips and gradient statistics, PowerNorm's
//! `q`, `running_phi` and `ema_gz`, and LayerNorm's per-token statistics; the validation
//! loss is measured every `--eval-every` steps with the tracer paused.
//!
//! Short-run settings (the references' defaults assume tens of thousands of steps): UN's
//! `warmup_iters` is `--un-warmup` (default 50, reference 4000) with window 4 and outlier
//! filtration off (the authors' NLP setting); PowerNorm's `warmup_iters` is `--pn-warmup`
//! (default 50, reference 10000). UN's gradient scale `r` is exactly 1 until iteration
//! `max(1000, warmup_iters)` (hard-wired in the reference), so in runs shorter than 1000
//! steps its trace is constant 1.
//!
//! # Part B: outlier batches
//!
//! BatchNorm, UN without and UN with outlier filtration (`outlier_filtration = true`,
//! same warm-up, so the filter is active from step `--un-warmup` on) train on the same
//! batches, except that at steps `--outlier-start`, `+ --outlier-every`, ... (none in the
//! last 10 steps) the batch is an *outlier*: the token-embedding table is multiplied by
//! `--outlier-scale` (default 10) for that batch's forward and backward and restored before
//! the optimizer step, so every input vector of that batch is that much larger (a corrupted
//! feature scale; the positional embeddings are not scaled). Measured
//! per outlier, averaged: the training-loss spike on the outlier batch, the excess loss of
//! the next 3 batches, the validation loss (eval mode, i.e. with the running statistics)
//! right after the outlier and 10 steps later compared with right before it, the jump of
//! the first norm's running statistic, and UN's skip counts (at outlier steps and at
//! other steps). Note that the reference UN updates `running_var` on skipped steps too:
//! the filter protects the forward window and the gradient statistics, not the running
//! statistic.
//!
//! Output (default `runs/norm_internals/`, git-ignored): `trace_<run>.csv` (every traced
//! record), `loss_<run>.csv`, SVG plots, a table on stderr and one JSON line last on stdout.
//! While a run trains, a progress bar (loss, steps/s, ETA) shows on stderr when stderr is a
//! terminal. `--device` (cpu, cuda, cuda:N; default cpu) picks where the models train.

use clap::Parser;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use unigrad::nn::norm::trace::{Stat, Tracer};
use unigrad::nn::norm::Traceable;
use unigrad::nn::norm::UnConfig;
use unigrad::prelude::*;
use unigrad_examples::cli::{main_with, CommonArgs};
use unigrad_examples::csv::CsvWriter;
use unigrad_examples::data::text::{eval_batches, Batch, BatchSampler, ByteCorpus};
use unigrad_examples::plot::LineChart;

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Trace what LayerNorm, BatchNorm, PowerNorm and UN see while a small byte-level LM trains.
#[derive(Parser, Clone, Debug)]
#[command(version, long_about = None)]
struct Opts {
    /// Training steps per run.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    steps: u64,
    /// Sequences per batch.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Context length in bytes.
    #[arg(long, default_value_t = 64)]
    seq: usize,
    /// Model width.
    #[arg(long, default_value_t = 64)]
    d_model: usize,
    /// Attention heads (must divide --d-model).
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Feed-forward width.
    #[arg(long, default_value_t = 256)]
    d_ff: usize,
    /// Number of Transformer blocks.
    #[arg(long, default_value_t = 2, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    layers: usize,
    /// Learning rate (AdamW).
    #[arg(long, default_value = "2e-3")]
    lr: f64,
    /// Validation loss every N steps (and at the end).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    eval_every: u64,
    /// Validation windows of --seq bytes per validation (a fixed prefix of the validation split).
    #[arg(long, default_value_t = 64, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    val_windows: usize,
    /// UN warm-up iterations (reference 4000).
    #[arg(long, default_value_t = 50)]
    un_warmup: u64,
    /// PowerNorm warm-up iterations (reference 10000).
    #[arg(long, default_value_t = 50)]
    pn_warmup: u64,
    /// First outlier step (outlier runs).
    #[arg(long, default_value_t = 100)]
    outlier_start: u64,
    /// Steps between outliers.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    outlier_every: u64,
    /// Factor on the token-embedding table for an outlier batch.
    #[arg(long, default_value_t = 10.0)]
    outlier_scale: f64,
    /// Seed for the weights and the batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder for the CSV traces and SVG plots.
    #[arg(long, default_value = "runs/norm_internals")]
    out: PathBuf,
    /// Skip part A (the clean runs).
    #[arg(long)]
    skip_clean: bool,
    /// Skip part B (the outlier runs).
    #[arg(long)]
    skip_outlier: bool,
    #[command(flatten)]
    common: CommonArgs,
}

/// One training run's configuration.
#[derive(Clone, Debug)]
struct RunCfg {
    label: &'static str,
    norm: NormConfig,
    outliers: bool,
}

/// What a run produced.
struct RunOut {
    label: &'static str,
    kind: NormKind,
    train: Vec<f64>,
    val: Vec<(u64, f64)>,
    tracer: Tracer,
    outlier_steps: Vec<u64>,
    /// Per outlier: validation loss right before, right after, 10 steps after.
    val_around: Vec<(f64, f64, f64)>,
    secs: f64,
}

fn to_ids(v: &[u32], b: usize, t: usize, dev: &Device) -> Res<Tensor> {
    Ok(Tensor::from_vec(v.iter().map(|&x| x as i64).collect(), &[b, t], dev)?)
}

fn eval_loss(model: &mut TransformerLm, tracer: &Tracer, val: &[(Tensor, Tensor)]) -> Res<f64> {
    model.eval();
    tracer.pause();
    let mut total = 0.0;
    for (x, y) in val {
        total += no_grad(|| model.loss(x, y))?.to_scalar()?;
    }
    tracer.resume();
    model.train();
    Ok(total / val.len() as f64)
}

fn lm_config(o: &Opts, norm: NormConfig) -> LmConfig {
    LmConfig {
        vocab: 256,
        d_model: o.d_model,
        heads: o.heads,
        d_ff: o.d_ff,
        layers: o.layers,
        max_seq: o.seq,
        norm,
        ..LmConfig::reference(NormKind::LayerNorm)
    }
}

/// Outlier steps: `start`, `start + every`, ..., leaving the last 10 steps clean so that
/// every outlier has its "10 steps later" measurement and the final losses are not taken
/// right after one.
fn is_outlier(o: &Opts, s: u64) -> bool {
    s >= o.outlier_start && (s - o.outlier_start) % o.outlier_every == 0 && s + 10 <= o.steps
}

/// One training run; `bar` labels its progress bar (drawn on stderr when it is a terminal).
fn train_run(
    o: &Opts,
    corpus: &ByteCorpus,
    val: &[(Tensor, Tensor)],
    rc: &RunCfg,
    dev: &Device,
    bar: &str,
) -> Res<RunOut> {
    manual_seed(o.seed);
    let mut model = TransformerLm::new(lm_config(o, rc.norm), DType::F32, dev)?;
    let tracer = Tracer::new();
    model.enable_trace(&tracer);
    let mut opt = Adam::new(decay_groups(model.named_params(), 0.01), AdamConfig::adamw(o.lr))?;
    let mut sampler = BatchSampler::new(&corpus.train, o.batch, o.seq, o.seed + 1)?;
    let pb = unigrad_examples::cli::progress_bar(o.steps, bar);
    let (mut train, mut vals) = (Vec::new(), Vec::new());
    let (mut outlier_steps, mut val_around) = (Vec::new(), Vec::new());
    let mut pending: Vec<(usize, u64)> = Vec::new(); // (index into val_around, step to measure at)
    let t0 = Instant::now();
    for s in 1..=o.steps {
        tracer.set_step(s);
        let b: Batch = sampler.sample();
        let x = to_ids(&b.inputs, b.batch_size, b.seq_len, dev)?;
        let y = to_ids(&b.targets, b.batch_size, b.seq_len, dev)?;
        let outlier = rc.outliers && is_outlier(o, s);
        let mut before = f64::NAN;
        let tok = model.tok.weight.clone();
        let saved = tok.detach();
        if outlier {
            before = eval_loss(&mut model, &tracer, val)?;
            no_grad(|| tok.assign(&saved.mul_scalar(o.outlier_scale)?))?;
        }
        opt.zero_grad();
        let loss = model.loss(&x, &y)?;
        loss.backward()?;
        if outlier {
            no_grad(|| tok.assign(&saved))?;
        }
        opt.step()?;
        let l = loss.to_scalar()?;
        train.push(l);
        unigrad_examples::cli::set_loss(&pb, l);
        pb.inc(1);
        if outlier {
            let after = eval_loss(&mut model, &tracer, val)?;
            outlier_steps.push(s);
            val_around.push((before, after, f64::NAN));
            pending.push((val_around.len() - 1, s + 10));
        }
        if let Some(pos) = pending.iter().position(|&(_, at)| at == s) {
            let (idx, _) = pending.remove(pos);
            val_around[idx].2 = eval_loss(&mut model, &tracer, val)?;
        }
        if s % o.eval_every == 0 || s == o.steps {
            vals.push((s, eval_loss(&mut model, &tracer, val)?));
        }
    }
    pb.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    let last_val = vals.last().map(|v| v.1).unwrap_or(f64::NAN);
    eprintln!(
        "{:<16} {} steps in {secs:6.1} s: train loss {:.3} -> {:.3}, val loss {last_val:.3}",
        rc.label,
        o.steps,
        train[0],
        train.last().copied().unwrap_or(f64::NAN)
    );
    Ok(RunOut {
        label: rc.label,
        kind: rc.norm.kind,
        train,
        val: vals,
        tracer,
        outlier_steps,
        val_around,
        secs,
    })
}

fn ema(v: &[f64], beta: f64) -> Vec<(f64, f64)> {
    let mut m = f64::NAN;
    v.iter()
        .enumerate()
        .map(|(i, &x)| {
            m = if m.is_nan() { x } else { beta * m + (1.0 - beta) * x };
            ((i + 1) as f64, m)
        })
        .collect()
}

fn pts(s: Vec<(u64, f64)>) -> Vec<(f64, f64)> {
    s.into_iter().map(|(x, y)| (x as f64, y)).collect()
}

fn mean(v: &[f64]) -> f64 {
    let f: Vec<f64> = v.iter().cloned().filter(|x| x.is_finite()).collect();
    if f.is_empty() {
        f64::NAN
    } else {
        f.iter().sum::<f64>() / f.len() as f64
    }
}

fn write_loss_csv(dir: &Path, r: &RunOut) -> Res<PathBuf> {
    let mut w = CsvWriter::create(
        dir.join(format!("loss_{}.csv", r.label)),
        &["step", "train_loss", "val_loss", "outlier"],
    )?;
    let val: BTreeMap<u64, f64> = r.val.iter().cloned().collect();
    for (i, l) in r.train.iter().enumerate() {
        let s = i as u64 + 1;
        let v = val.get(&s).map(|v| v.to_string()).unwrap_or_default();
        let out = if r.outlier_steps.contains(&s) { "1" } else { "0" };
        w.write_row([s.to_string(), l.to_string(), v, out.to_string()])?;
    }
    Ok(w.finish()?)
}

/// Per-step mean of `quantity` at `layer`.
fn stat_series(r: &RunOut, layer: &str, quantity: &str) -> Vec<(f64, f64)> {
    pts(r.tracer.series(layer, quantity, Stat::Mean))
}

/// The value of a per-step series at `step` (the last record of that step).
fn at(series: &[(f64, f64)], step: u64) -> f64 {
    series
        .iter()
        .rev()
        .find(|(s, _)| *s == step as f64)
        .map(|p| p.1)
        .unwrap_or(f64::NAN)
}

struct Saver {
    dir: PathBuf,
    files: Vec<String>,
}

impl Saver {
    fn chart(&mut self, name: &str, chart: LineChart) -> Res<()> {
        chart.save(self.dir.join(name))?;
        self.files.push(name.to_string());
        Ok(())
    }
}

fn clean_plots(sv: &mut Saver, runs: &[RunOut], o: &Opts) -> Res<serde_json::Value> {
    let first = "blocks.0.norm1";
    let last = format!("blocks.{}.norm2", o.layers - 1);
    let mut c = LineChart::new("Training loss (EMA 0.9), clean runs", "step", "loss (nats)");
    for r in runs {
        c = c.with_series(r.label, ema(&r.train, 0.9));
    }
    sv.chart("loss_train.svg", c)?;
    let mut c = LineChart::new("Validation loss (eval mode), clean runs", "step", "loss (nats)");
    for r in runs {
        c = c.with_series(r.label, pts(r.val.clone()));
    }
    sv.chart("loss_val.svg", c)?;

    let mut fl = LineChart::new(
        "Fluctuation |batch stat / running stat - 1| (mean over channels)",
        "step",
        "relative deviation",
    )
    .with_log_y(true);
    let mut summary = serde_json::Map::new();
    for r in runs {
        let mut info = serde_json::json!({
            "final_val_loss": r.val.last().map(|v| v.1),
            "final_train_loss_ema": ema(&r.train, 0.9).last().map(|p| p.1),
            "seconds": r.secs,
        });
        match r.kind {
            NormKind::BatchNorm | NormKind::PowerNorm | NormKind::Unified => {
                for layer in [first, last.as_str()] {
                    let f = stat_series(r, layer, "fluctuation");
                    info[format!("mean_fluctuation_{layer}")] = mean(&f.iter().map(|p| p.1).collect::<Vec<_>>()).into();
                    fl = fl.with_series(format!("{} {layer}", r.label), f);
                }
                let title = match r.kind {
                    NormKind::BatchNorm => "BatchNorm: batch variance vs running variance (mean over channels)",
                    NormKind::PowerNorm => "PowerNorm: batch quadratic mean q vs running_phi (mean over channels)",
                    _ => "UN: batch, smoothed (used) and running statistic (mean over channels)",
                };
                let mut c = LineChart::new(title, "step", "statistic").with_log_y(true);
                for layer in [first, last.as_str()] {
                    c = c
                        .with_series(format!("batch {layer}"), stat_series(r, layer, "batch_stat"))
                        .with_series(format!("running {layer}"), stat_series(r, layer, "running_stat"));
                    if r.kind == NormKind::Unified {
                        c = c.with_series(format!("used (smoothed) {layer}"), stat_series(r, layer, "used_stat"));
                    }
                }
                sv.chart(&format!("stats_{}.svg", r.label), c)?;
            }
            NormKind::LayerNorm => {
                let mut c = LineChart::new(
                    "LayerNorm: per-token variance, mean and spread over tokens",
                    "step",
                    "variance",
                )
                .with_log_y(true);
                for layer in [first, last.as_str()] {
                    c = c
                        .with_series(format!("mean over tokens {layer}"), stat_series(r, layer, "token_var"))
                        .with_series(
                            format!("std over tokens {layer}"),
                            pts(r.tracer.series(layer, "token_var", Stat::Std)),
                        );
                }
                sv.chart("stats_ln.svg", c)?;
            }
            NormKind::RmsNorm => {}
        }
        if r.kind == NormKind::Unified {
            let mut c = LineChart::new(
                "UN backward: gradient statistic h and its EMA (mean over channels)",
                "step",
                "value",
            );
            for layer in [first, last.as_str()] {
                c = c
                    .with_series(format!("h {layer}"), stat_series(r, layer, "grad_stat"))
                    .with_series(format!("ema_gz {layer}"), stat_series(r, layer, "ema_gz"));
            }
            sv.chart("un_grad_stats.svg", c)?;
        }
        if r.kind == NormKind::PowerNorm {
            let mut c = LineChart::new(
                "PowerNorm backward: running sum ema_gz (mean over channels)",
                "step",
                "value",
            );
            for layer in [first, last.as_str()] {
                c = c.with_series(format!("ema_gz {layer}"), stat_series(r, layer, "ema_gz"));
            }
            sv.chart("pn_grad_stats.svg", c)?;
        }
        summary.insert(r.label.to_string(), info);
    }
    sv.chart("fluctuation.svg", fl)?;
    Ok(serde_json::Value::Object(summary))
}

/// Outlier metrics of one run, printed as a table row and returned as JSON.
fn outlier_metrics(r: &RunOut, o: &Opts) -> serde_json::Value {
    let layer = "blocks.0.norm1";
    let running = stat_series(r, layer, "running_stat");
    let (mut spike, mut after3, mut rs_jump) = (Vec::new(), Vec::new(), Vec::new());
    for &s in &r.outlier_steps {
        let i = (s - 1) as usize;
        let base = mean(&r.train[i.saturating_sub(5)..i]);
        spike.push(r.train[i] - base);
        let end = (i + 4).min(r.train.len());
        after3.push(mean(&r.train[(i + 1).min(end)..end]) - base);
        rs_jump.push((at(&running, s) / at(&running, s - 1)).ln().abs());
    }
    let val_jump: Vec<f64> = r.val_around.iter().map(|v| v.1 - v.0).collect();
    let val_10: Vec<f64> = r.val_around.iter().map(|v| v.2 - v.0).collect();
    // UN skips: records of the counted-skip flag at every traced layer
    let mut skips_at = 0usize;
    let mut skips_other = 0usize;
    for rec in r.tracer.records() {
        if rec.quantity == "skip" && rec.mean > 0.5 {
            if r.outlier_steps.contains(&rec.step) {
                skips_at += 1;
            } else {
                skips_other += 1;
            }
        }
    }
    let layers = 2 * o.layers + 1;
    serde_json::json!({
        "outliers": r.outlier_steps.len(),
        "train_loss_spike": mean(&spike),
        "excess_loss_next3": mean(&after3),
        "val_loss_jump_after": mean(&val_jump),
        "val_loss_jump_after10": mean(&val_10),
        "running_stat_log_jump_first_norm": mean(&rs_jump),
        "un_skips_at_outlier_steps": if r.kind == NormKind::Unified { Some(skips_at) } else { None },
        "un_skips_possible_at_outlier_steps": if r.kind == NormKind::Unified { Some(layers * r.outlier_steps.len()) } else { None },
        "un_skips_other_steps": if r.kind == NormKind::Unified { Some(skips_other) } else { None },
        "final_val_loss": r.val.last().map(|v| v.1),
    })
}

fn outlier_plots(sv: &mut Saver, runs: &[RunOut], clean: &[RunOut]) -> Res<()> {
    let layer = "blocks.0.norm1";
    let mut c = LineChart::new(
        "Training loss with outlier batches (outlier steps: see loss_<run>.csv)",
        "step",
        "loss (nats)",
    );
    for r in runs {
        c = c.with_series(
            r.label,
            r.train.iter().enumerate().map(|(i, &l)| ((i + 1) as f64, l)).collect(),
        );
    }
    sv.chart("outlier_loss.svg", c)?;
    let mut c = LineChart::new(
        "Running statistic of blocks.0.norm1 with outlier batches (mean over channels)",
        "step",
        "running statistic",
    )
    .with_log_y(true);
    for r in runs {
        c = c.with_series(r.label, stat_series(r, layer, "running_stat"));
    }
    sv.chart("outlier_running_stat.svg", c)?;
    let mut c = LineChart::new(
        "Validation loss (eval mode) with outlier batches",
        "step",
        "loss (nats)",
    );
    for r in runs
        .iter()
        .chain(clean.iter().filter(|c| c.kind != NormKind::LayerNorm))
    {
        let name = if r.outlier_steps.is_empty() {
            format!("{} (clean)", r.label)
        } else {
            r.label.to_string()
        };
        c = c.with_series(name, pts(r.val.clone()));
    }
    sv.chart("outlier_val_loss.svg", c)?;
    if let Some(r) = runs.iter().find(|r| r.label == "un_filter") {
        let c = LineChart::new(
            "UN with outlier filtration, blocks.0.norm1: batch vs used statistic, skips",
            "step",
            "statistic (skip: 1)",
        )
        .with_log_y(true)
        .with_series("batch_stat", stat_series(r, layer, "batch_stat"))
        .with_series("used_stat", stat_series(r, layer, "used_stat"))
        .with_series("window_gm", stat_series(r, layer, "window_gm"))
        .with_series("running_stat", stat_series(r, layer, "running_stat"));
        sv.chart("outlier_un_filter_stats.svg", c)?;
    }
    // skips per step, summed over the traced layers, with the outlier steps marked
    let mut c = LineChart::new("UN outlier filter: layers that skipped, per step", "step", "layers");
    for r in runs.iter().filter(|r| r.kind == NormKind::Unified) {
        let mut per_step: BTreeMap<u64, f64> = (1..=r.train.len() as u64).map(|s| (s, 0.0)).collect();
        for rec in r.tracer.records().iter().filter(|rec| rec.quantity == "skip") {
            *per_step.entry(rec.step).or_default() += rec.mean;
        }
        c = c.with_series(format!("{} skips", r.label), pts(per_step.into_iter().collect()));
    }
    if let Some(r) = runs.first() {
        let marks = (1..=r.train.len() as u64)
            .map(|s| (s as f64, if r.outlier_steps.contains(&s) { 1.0 } else { 0.0 }))
            .collect();
        c = c.with_series("outlier batch (1)", marks);
    }
    sv.chart("outlier_un_skips.svg", c)?;
    Ok(())
}

fn main() {
    main_with("norm_internals", || run(Opts::parse()));
}

fn run(o: Opts) -> Res<()> {
    let dev = o.common.setup(None)?;
    let corpus = ByteCorpus::shakespeare(&unigrad_examples::data_dir())?;
    let val: Vec<(Tensor, Tensor)> = eval_batches(&corpus.val, o.batch, o.seq, Some(o.val_windows))?
        .iter()
        .map(|b| -> Res<_> {
            Ok((
                to_ids(&b.inputs, b.batch_size, b.seq_len, &dev)?,
                to_ids(&b.targets, b.batch_size, b.seq_len, &dev)?,
            ))
        })
        .collect::<Res<_>>()?;
    std::fs::create_dir_all(&o.out)?;
    let un_cfg = |filter: bool| -> NormConfig {
        let mut c: NormConfig = NormKind::Unified.into();
        c.un = UnConfig {
            warmup_iters: o.un_warmup,
            outlier_filtration: filter,
            ..UnConfig::default()
        }
        .with_window(4);
        c
    };
    let mut pn: NormConfig = NormKind::PowerNorm.into();
    pn.pn.warmup_iters = o.pn_warmup;
    eprintln!(
        "model d_model {} heads {} d_ff {} layers {}, batch {}x{}, {} steps, AdamW lr {}; UN window 4 warm-up {}, PN warm-up {}; on {}",
        o.d_model, o.heads, o.d_ff, o.layers, o.batch, o.seq, o.steps, o.lr, o.un_warmup, o.pn_warmup, dev.name()
    );
    // one progress bar per training run, labelled "[k/n] run"
    let n_runs = if o.skip_clean { 0 } else { 4 } + if o.skip_outlier { 0 } else { 3 };
    let mut run_no = 0;
    let mut bar_label = |label: &str| {
        run_no += 1;
        format!("[{run_no}/{n_runs}] {label}")
    };
    let mut sv = Saver {
        dir: o.out.clone(),
        files: Vec::new(),
    };

    let mut clean = Vec::new();
    let mut clean_summary = serde_json::Value::Null;
    if !o.skip_clean {
        let cfgs = [
            RunCfg {
                label: "ln",
                norm: NormKind::LayerNorm.into(),
                outliers: false,
            },
            RunCfg {
                label: "bn",
                norm: NormKind::BatchNorm.into(),
                outliers: false,
            },
            RunCfg {
                label: "pn",
                norm: pn,
                outliers: false,
            },
            RunCfg {
                label: "un",
                norm: un_cfg(false),
                outliers: false,
            },
        ];
        for rc in &cfgs {
            let r = train_run(&o, &corpus, &val, rc, &dev, &bar_label(rc.label))?;
            r.tracer.write_csv(o.out.join(format!("trace_{}.csv", r.label)))?;
            write_loss_csv(&o.out, &r)?;
            sv.files.push(format!("trace_{}.csv", r.label));
            sv.files.push(format!("loss_{}.csv", r.label));
            clean.push(r);
        }
        clean_summary = clean_plots(&mut sv, &clean, &o)?;
    }

    let mut outlier_summary = serde_json::Map::new();
    if !o.skip_outlier {
        let cfgs = [
            RunCfg {
                label: "bn_outliers",
                norm: NormKind::BatchNorm.into(),
                outliers: true,
            },
            RunCfg {
                label: "un_outliers",
                norm: un_cfg(false),
                outliers: true,
            },
            RunCfg {
                label: "un_filter",
                norm: un_cfg(true),
                outliers: true,
            },
        ];
        let mut runs = Vec::new();
        for rc in &cfgs {
            let r = train_run(&o, &corpus, &val, rc, &dev, &bar_label(rc.label))?;
            r.tracer.write_csv(o.out.join(format!("trace_{}.csv", r.label)))?;
            write_loss_csv(&o.out, &r)?;
            sv.files.push(format!("trace_{}.csv", r.label));
            sv.files.push(format!("loss_{}.csv", r.label));
            runs.push(r);
        }
        outlier_plots(&mut sv, &runs, &clean)?;
        eprintln!(
            "\noutlier batches: token embeddings x{} at steps {:?}",
            o.outlier_scale, runs[0].outlier_steps
        );
        eprintln!(
            "{:<12} {:>10} {:>11} {:>10} {:>12} {:>13} {:>14} {:>10}",
            "run",
            "loss spike",
            "next-3 exc",
            "val jump",
            "val jump+10",
            "run-stat jump",
            "UN skips o/oth",
            "final val"
        );
        for r in &runs {
            let m = outlier_metrics(r, &o);
            let f = |k: &str| m[k].as_f64().unwrap_or(f64::NAN);
            let skips = match (
                m["un_skips_at_outlier_steps"].as_u64(),
                m["un_skips_other_steps"].as_u64(),
            ) {
                (Some(a), Some(b)) => format!("{a}/{} {b}", m["un_skips_possible_at_outlier_steps"]),
                _ => "-".to_string(),
            };
            eprintln!(
                "{:<12} {:>10.3} {:>11.3} {:>10.3} {:>12.3} {:>12.2}x {:>14} {:>10.3}",
                r.label,
                f("train_loss_spike"),
                f("excess_loss_next3"),
                f("val_loss_jump_after"),
                f("val_loss_jump_after10"),
                f("running_stat_log_jump_first_norm").exp(),
                skips,
                f("final_val_loss")
            );
            outlier_summary.insert(r.label.to_string(), m);
        }
        eprintln!(
            "(loss spike: training loss on the outlier batch minus the mean of the 5 before; next-3 exc: mean excess of \
             the 3 batches after; val jump: eval-mode validation loss right after / 10 steps after the outlier minus \
             right before; run-stat jump: factor by which blocks.0.norm1's running statistic (mean over channels) \
             changed in the outlier step; UN skips: counted skips at outlier steps (of layers x outliers) and at other steps)"
        );
    }

    eprintln!("wrote {} files to {}", sv.files.len(), o.out.display());
    let json = serde_json::json!({
        "example": "norm_internals",
        "device": dev.name(),
        "steps": o.steps,
        "model": {"d_model": o.d_model, "heads": o.heads, "d_ff": o.d_ff, "layers": o.layers},
        "batch": o.batch, "seq": o.seq, "lr": o.lr,
        "un": {"window": 4, "warmup_iters": o.un_warmup},
        "pn": {"warmup_iters": o.pn_warmup},
        "outlier": {"start": o.outlier_start, "every": o.outlier_every, "scale": o.outlier_scale,
                    "kind": "token embedding table multiplied by scale for one batch"},
        "clean": clean_summary,
        "outlier_runs": serde_json::Value::Object(outlier_summary),
        "out_dir": o.out.display().to_string(),
        "files": sv.files,
    });
    unigrad_examples::cli::print_json_line(&json)?;
    Ok(())
}
