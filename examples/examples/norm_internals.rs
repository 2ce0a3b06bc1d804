//! What the normalization layers see while a small byte-level LM trains on Shakespeare:
//! statistics and their fluctuation per layer and step, loss curves, and what an outlier
//! batch does to BatchNorm's running statistics compared with UN and its outlier filter.
//!
//! ```sh
//! cargo run --release -p unigrad-examples --example norm_internals -- [--steps 300] [--out runs/norm_internals]
//! cargo run --release -p unigrad-examples --example norm_internals -- --help   # every flag and its default
//! cargo run --release -p unigrad-examples --example norm_internals -- --report report.html   # one HTML page for a lecture
//! ```
//!
//! With `--report FILE` the program also runs parts C and D below and writes one
//! self-contained HTML page (inline SVG charts, inline style with a print layout, no
//! external resources; built with [`unigrad_examples::report`]) that tells the story in
//! order: the norm family, statistics per layer, outliers, gradient calibration, folding,
//! and the parameters used. `--quick` shrinks the model and the runs to seconds (for CI);
//! flags typed on the command line still win over the preset.
//!
//! # Part A: clean runs
//!
//! The same model (default: d_model 64, 4 heads, FFN 256, 2 pre-norm layers, learned
//! positions, batch 16 × 64 bytes, AdamW lr 2e-3), the same initial weights and the same
//! batches, once per norm: LayerNorm, RMSNorm, BatchNorm, PowerNorm and UN. A
//! [`Tracer`](unigrad::nn::norm::trace::Tracer) attached to every norm records the batch,
//! smoothed and running statistics, UN's `r`, skips and gradient statistics, PowerNorm's
//! `q`, `running_phi` and `ema_gz`, and LayerNorm's per-token statistics (RMSNorm records
//! nothing, its run gives the loss curves only), and, through a gradient hook on each
//! norm's output (`Tracer::set_gradients`), the gradient reaching it (`grad_output.svg`:
//! its largest magnitude per step); the validation
//! loss is measured every `--eval-every` steps with the tracer paused.
//!
//! Short-run settings (the references' defaults assume tens of thousands of steps): UN's
//! `warmup_iters` is `--un-warmup` (default 50, reference 4000) with window `--un-window`
//! (default 4), momentum `--un-momentum` (default 0.9) and outlier filtration `--un-filter`
//! (default off, the authors' NLP setting); PowerNorm's `warmup_iters` is `--pn-warmup`
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
//! # Part C: gradient calibration (with `--report`)
//!
//! On the trained UN model, `blocks.0.norm1` takes one more batch twice from the same state
//! (snapshot and restore): once with UN's calibrated backward and once with the exact
//! gradient of the same forward (`UnConfig::calibrated_backward = false`), both fed the
//! upstream gradient the rest of the model sends back for that batch. The per-channel
//! relative difference of the input gradients is plotted.
//!
//! # Part D: folding (with `--report`)
//!
//! The trained BatchNorm and UN models are folded (`unigrad::nn::fold::fold_for_inference`)
//! and compared with themselves in eval mode on the validation windows (largest logit
//! difference) and timed against the unfolded models and the LayerNorm model, interleaved
//! over `--fold-rounds` rounds.
//!
//! Output (default `runs/norm_internals/`, git-ignored): `trace_<run>.csv` (every traced
//! record), `loss_<run>.csv`, SVG plots, a table on stderr and one JSON line last on stdout.
//! While a run trains, a progress bar (loss, steps/s, ETA) shows on stderr when stderr is a
//! terminal. `--device` (cpu, cuda, cuda:N; default cpu) picks where the models train.

use clap::Parser;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;
use unigrad::nn::attention::attention_bias;
use unigrad::nn::fold::fold_for_inference;
use unigrad::nn::norm::trace::{Stat, Tracer};
use unigrad::nn::norm::Traceable;
use unigrad::nn::norm::{UnConfig, UnifiedNorm};
use unigrad::prelude::*;
use unigrad_examples::cli::{main_with, CommonArgs, Parsed};
use unigrad_examples::csv::CsvWriter;
use unigrad_examples::data::text::{eval_batches, Batch, BatchSampler, ByteCorpus};
use unigrad_examples::plot::{BarChart, Chart, LineChart};
use unigrad_examples::report::{Report, Section};
use unigrad_examples::train::speed::time_interleaved;

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
    /// UN window (forward and backward rows; reference 4).
    #[arg(long, default_value_t = 4, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    un_window: usize,
    /// UN momentum of running_var and ema_gz (reference 0.9).
    #[arg(long, default_value_t = 0.9)]
    un_momentum: f64,
    /// UN outlier filtration in the clean UN run (the outlier runs compare off and on).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, value_name = "BOOL")]
    un_filter: bool,
    /// Timed rounds of the folded/unfolded eval forwards (report).
    #[arg(long, default_value_t = 20, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    fold_rounds: usize,
    /// Also run parts C and D and write one self-contained HTML report to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Tiny model and short runs (seconds; for CI). Flags typed on the command line win.
    #[arg(long)]
    quick: bool,
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

impl Opts {
    /// `--quick`: a tiny model and short runs, except for the flags typed on the command
    /// line (`given`).
    fn apply_quick(&mut self, given: impl Fn(&str) -> bool) {
        macro_rules! preset {
            ($($f:ident = $v:expr),* $(,)?) => { $(if !given(stringify!($f)) { self.$f = $v; })* };
        }
        preset!(
            steps = 40,
            batch = 4,
            seq = 32,
            d_model = 32,
            heads = 2,
            d_ff = 64,
            layers = 1,
            eval_every = 10,
            val_windows = 4,
            un_warmup = 5,
            pn_warmup = 5,
            outlier_start = 15,
            outlier_every = 10,
            fold_rounds = 3,
        );
    }

    /// The UN configuration of the runs: window, warm-up, momentum and filtration.
    fn un_config(&self, filter: bool) -> NormConfig {
        let mut c: NormConfig = NormKind::Unified.into();
        c.un = UnConfig {
            warmup_iters: self.un_warmup,
            outlier_filtration: filter,
            momentum: self.un_momentum,
            ..UnConfig::default()
        }
        .with_window(self.un_window);
        c
    }
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
    /// The trained model (in training mode).
    model: TransformerLm,
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
    // the gradient reaching each norm's output, read by a hook at every backward
    tracer.set_gradients(true);
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
        model,
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

/// Per step, the largest |gradient| that reached `layer`'s output (`grad_output`, a hook).
fn grad_series(r: &RunOut, layer: &str) -> Vec<(f64, f64)> {
    r.tracer
        .records()
        .iter()
        .filter(|t| t.layer == layer && t.quantity == "grad_output")
        .map(|t| (t.step as f64, t.abs_max()))
        .collect()
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

/// Writes the charts and remembers them (by file name) for the report.
struct Saver {
    dir: PathBuf,
    files: Vec<String>,
    charts: BTreeMap<String, LineChart>,
}

impl Saver {
    fn chart(&mut self, name: &str, chart: LineChart) -> Res<()> {
        chart.save(self.dir.join(name))?;
        self.files.push(name.to_string());
        self.charts.insert(name.to_string(), chart);
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
    let mut gc = LineChart::new(
        "Largest |gradient| reaching the norm's output, clean runs",
        "step",
        "max |dL/dy|",
    )
    .with_log_y(true);
    for r in runs.iter().filter(|r| r.kind != NormKind::RmsNorm) {
        for layer in [first, last.as_str()] {
            gc = gc.with_series(format!("{} {layer}", r.label), grad_series(r, layer));
        }
    }
    sv.chart("grad_output.svg", gc)?;
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
    // skips per step, summed over the traced layers, drawn over a marker of the outlier
    // steps as tall as the number of layers (so the skips stay visible in front of it)
    let mut c = LineChart::new("UN outlier filter: layers that skipped, per step", "step", "layers");
    let un_runs: Vec<&RunOut> = runs.iter().filter(|r| r.kind == NormKind::Unified).collect();
    if let (Some(r), Some(u)) = (runs.first(), un_runs.first()) {
        let layers = u.tracer.layers().len() as f64;
        let marks = (1..=r.train.len() as u64)
            .map(|s| (s as f64, if r.outlier_steps.contains(&s) { layers } else { 0.0 }))
            .collect();
        c = c.with_series(format!("outlier batch (all {layers} layers)"), marks);
    }
    for r in un_runs {
        let mut per_step: BTreeMap<u64, f64> = (1..=r.train.len() as u64).map(|s| (s, 0.0)).collect();
        for rec in r.tracer.records().iter().filter(|rec| rec.quantity == "skip") {
            *per_step.entry(rec.step).or_default() += rec.mean;
        }
        c = c.with_series(format!("{} skips", r.label), pts(per_step.into_iter().collect()));
    }
    sv.chart("outlier_un_skips.svg", c)?;
    Ok(())
}

fn main() {
    main_with("norm_internals", || {
        let parsed = Parsed::<Opts>::from_env()?;
        let mut o = parsed.args.clone();
        if o.quick {
            o.apply_quick(|id| parsed.given(id));
        }
        run(o)
    });
}

fn run(o: Opts) -> Res<()> {
    let t_start = Instant::now();
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
    let mut pn: NormConfig = NormKind::PowerNorm.into();
    pn.pn.warmup_iters = o.pn_warmup;
    eprintln!(
        "model d_model {} heads {} d_ff {} layers {}, batch {}x{}, {} steps, AdamW lr {}; UN window {} warm-up {} momentum {} filter {}, PN warm-up {}; on {}",
        o.d_model, o.heads, o.d_ff, o.layers, o.batch, o.seq, o.steps, o.lr, o.un_window, o.un_warmup, o.un_momentum,
        o.un_filter, o.pn_warmup, dev.name()
    );
    // one progress bar per training run, labelled "[k/n] run"
    let n_runs = if o.skip_clean { 0 } else { 5 } + if o.skip_outlier { 0 } else { 3 };
    let mut run_no = 0;
    let mut bar_label = |label: &str| {
        run_no += 1;
        format!("[{run_no}/{n_runs}] {label}")
    };
    let mut sv = Saver {
        dir: o.out.clone(),
        files: Vec::new(),
        charts: BTreeMap::new(),
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
                label: "rms",
                norm: NormKind::RmsNorm.into(),
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
                norm: o.un_config(o.un_filter),
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
    let mut runs = Vec::new();
    if !o.skip_outlier {
        let cfgs = [
            RunCfg {
                label: "bn_outliers",
                norm: NormKind::BatchNorm.into(),
                outliers: true,
            },
            RunCfg {
                label: "un_outliers",
                norm: o.un_config(false),
                outliers: true,
            },
            RunCfg {
                label: "un_filter",
                norm: o.un_config(true),
                outliers: true,
            },
        ];
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

    let mut report_json = serde_json::Value::Null;
    if let Some(path) = &o.report {
        let parts = ReportParts {
            fold: fold_study(&mut clean, &val, &o)?,
            calib: calibration(&mut clean, &corpus, &o, &dev)?,
        };
        let report = build_report(&o, &clean, &runs, &parts, &sv, &dev, t_start.elapsed().as_secs_f64());
        report.save(path)?;
        eprintln!("wrote the report to {}", path.display());
        report_json = serde_json::json!({
            "path": path.display().to_string(),
            "sections": report.sections.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
            "fold": parts.fold.as_ref().map(FoldOut::to_json),
            "calibration": parts.calib.as_ref().map(CalibOut::to_json),
        });
    }

    eprintln!("wrote {} files to {}", sv.files.len(), o.out.display());
    let json = serde_json::json!({
        "example": "norm_internals",
        "device": dev.name(),
        "steps": o.steps,
        "model": {"d_model": o.d_model, "heads": o.heads, "d_ff": o.d_ff, "layers": o.layers},
        "batch": o.batch, "seq": o.seq, "lr": o.lr,
        "un": {"window": o.un_window, "warmup_iters": o.un_warmup, "momentum": o.un_momentum, "filter_clean_run": o.un_filter},
        "pn": {"warmup_iters": o.pn_warmup},
        "outlier": {"start": o.outlier_start, "every": o.outlier_every, "scale": o.outlier_scale,
                    "kind": "token embedding table multiplied by scale for one batch"},
        "clean": clean_summary,
        "outlier_runs": serde_json::Value::Object(outlier_summary),
        "out_dir": o.out.display().to_string(),
        "files": sv.files,
        "report": report_json,
        "seconds": t_start.elapsed().as_secs_f64(),
    });
    unigrad_examples::cli::print_json_line(&json)?;
    Ok(())
}

// ----- part D: folding ---------------------------------------------------------------------

/// One folded model: what folding removed and what it changed.
struct FoldRow {
    label: &'static str,
    sites: usize,
    removed: usize,
    max_logit_diff: f64,
    plain_ms: f64,
    folded_ms: f64,
    plain_cpu_ms: Option<f64>,
    folded_cpu_ms: Option<f64>,
}

/// Part D's results.
struct FoldOut {
    rows: Vec<FoldRow>,
    /// Median eval forward of the LayerNorm model (ms), when part A trained one.
    ln_ms: Option<f64>,
    batch: (usize, usize),
    rounds: usize,
}

impl FoldOut {
    fn to_json(&self) -> serde_json::Value {
        let rows: Vec<_> = self
            .rows
            .iter()
            .map(|r| {
                serde_json::json!({"model": r.label, "norm_sites": r.sites, "removed": r.removed,
                    "max_logit_diff": r.max_logit_diff, "plain_ms": r.plain_ms, "folded_ms": r.folded_ms,
                    "plain_cpu_ms": r.plain_cpu_ms, "folded_cpu_ms": r.folded_cpu_ms})
            })
            .collect();
        serde_json::json!({"rows": rows, "ln_ms": self.ln_ms, "batch": [self.batch.0, self.batch.1], "rounds": self.rounds})
    }
}

/// Fold the clean BatchNorm and UN models, compare their logits with the unfolded eval-mode
/// models on every validation window, and time the eval forwards side by side (with the
/// LayerNorm model as the reference). The models are back in training mode afterwards.
fn fold_study(clean: &mut [RunOut], val: &[(Tensor, Tensor)], o: &Opts) -> Res<Option<FoldOut>> {
    let Some((x, _)) = val.first() else { return Ok(None) };
    for r in clean.iter_mut() {
        r.model.eval();
    }
    // the borrows of the eval-mode models end with this block
    let out = {
        let mut folded = Vec::new();
        for r in clean
            .iter()
            .filter(|r| matches!(r.kind, NormKind::BatchNorm | NormKind::Unified))
        {
            let f = fold_for_inference(&r.model)?;
            let mut diff = 0.0f64;
            for (xv, _) in val {
                let a = no_grad(|| r.model.forward(xv, None))?.to_vec_f64()?;
                let b = f.forward(xv, None)?.to_vec_f64()?;
                diff = a.iter().zip(&b).fold(diff, |d, (p, q)| d.max((p - q).abs()));
            }
            folded.push((r, f, diff));
        }
        let ln = clean.iter().find(|r| r.kind == NormKind::LayerNorm);
        type Forward<'a> = Box<dyn Fn() -> unigrad::prelude::Result<Tensor> + 'a>;
        let mut variants: Vec<Forward<'_>> = Vec::new();
        if let Some(ln) = ln {
            variants.push(Box::new(move || no_grad(|| ln.model.forward(x, None))));
        }
        for (r, f, _) in &folded {
            variants.push(Box::new(move || no_grad(|| r.model.forward(x, None))));
            variants.push(Box::new(move || f.forward(x, None)));
        }
        let times = if variants.is_empty() {
            Vec::new()
        } else {
            time_interleaved(&variants, 2, o.fold_rounds)?
        };
        let off = usize::from(ln.is_some());
        let ms = |i: usize| times[i].wall_s * 1e3;
        let cpu_ms = |i: usize| times[i].cpu_s.map(|c| c * 1e3);
        let rows = folded
            .iter()
            .enumerate()
            .map(|(k, (r, f, diff))| FoldRow {
                label: r.label,
                sites: f.sites().len(),
                removed: f.removed_norms(),
                max_logit_diff: *diff,
                plain_ms: ms(off + 2 * k),
                folded_ms: ms(off + 2 * k + 1),
                plain_cpu_ms: cpu_ms(off + 2 * k),
                folded_cpu_ms: cpu_ms(off + 2 * k + 1),
            })
            .collect::<Vec<_>>();
        FoldOut {
            ln_ms: ln.map(|_| ms(0)),
            rows,
            batch: (x.shape()[0], x.shape()[1]),
            rounds: o.fold_rounds,
        }
    };
    for r in clean.iter_mut() {
        r.model.train();
    }
    Ok((!out.rows.is_empty()).then_some(out))
}

// ----- part C: gradient calibration --------------------------------------------------------

/// Part C's results: UN's calibrated input gradient against the exact one, per channel.
struct CalibOut {
    layer: &'static str,
    iteration: u64,
    smoothed: bool,
    skipped: bool,
    r_mean: f64,
    /// Per channel `‖g_cal − g_exact‖ / ‖g_exact‖` over the batch's positions.
    rel_per_channel: Vec<f64>,
    rel_total: f64,
    cosine: f64,
    /// Largest `|y_cal − y_exact|`: the two forwards are the same computation.
    forward_diff: f64,
    /// Largest `|∂γ_cal − ∂γ_exact|` relative to the largest `|∂γ_exact|`.
    dgamma_rel: f64,
}

impl CalibOut {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"layer": self.layer, "iteration": self.iteration, "smoothed": self.smoothed,
            "skipped": self.skipped, "r_mean": self.r_mean, "rel_total": self.rel_total, "cosine": self.cosine,
            "rel_per_channel_median": median(&self.rel_per_channel),
            "rel_per_channel_max": self.rel_per_channel.iter().cloned().fold(f64::NAN, f64::max),
            "forward_diff": self.forward_diff, "dgamma_rel": self.dgamma_rel})
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().cloned().filter(|x| x.is_finite()).collect();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => 0.5 * (s[n / 2 - 1] + s[n / 2]),
    }
}

/// On the trained UN model, run one more batch through `blocks.0.norm1` twice from the same
/// state: with the calibrated backward (the layer itself) and with the exact gradient of
/// the same forward (a twin with `calibrated_backward = false`), both receiving the upstream
/// gradient that the rest of the model sends back for this batch.
fn calibration(clean: &mut [RunOut], corpus: &ByteCorpus, o: &Opts, dev: &Device) -> Res<Option<CalibOut>> {
    let Some(run) = clean.iter_mut().find(|r| r.kind == NormKind::Unified) else {
        return Ok(None);
    };
    let model = &mut run.model;
    model.train();
    model.disable_trace();
    let b = BatchSampler::new(&corpus.train, o.batch, o.seq, o.seed + 101)?.sample();
    let ids = to_ids(&b.inputs, b.batch_size, b.seq_len, dev)?;
    let targets = to_ids(&b.targets, b.batch_size, b.seq_len, dev)?;
    let Norm::Unified(un) = &model.blocks[0].norm1 else {
        return Ok(None);
    };
    let snap = un.state();
    let t = b.seq_len;
    let x0 = no_grad(|| model.tok.forward(&ids)?.add(&model.pos.forward(0, t)?))?;

    // The upstream gradient ∂loss/∂y of norm1's output: the rest of the pre-norm model
    // (LayerNorm Scaling is off, so block 0 is x + attn(y), then x + ff(norm2(x))).
    let y = un.forward(&x0, None)?.detach().requires_grad();
    let step = un.last_step().ok_or("UN recorded no step")?;
    un.set_state(&snap)?;
    let bias = attention_bias(true, None, t, t, x0.dtype(), x0.device())?;
    let blk = &model.blocks[0];
    let mut x = x0.add(&blk.attn.forward_self(&y, bias.as_ref())?)?;
    x = x.add(&blk.ff.forward(&blk.norm2.forward(&x, None)?)?)?;
    for blk in &model.blocks[1..] {
        x = blk.forward(&x, bias.as_ref(), None)?;
    }
    if let Some(n) = &model.norm_f {
        x = n.forward(&x, None)?;
    }
    cross_entropy(&model.head.forward(&x)?, &targets, None, 0.0)?.backward()?;
    let up = y.grad().ok_or("no upstream gradient reached norm1's output")?;

    // input, output and γ gradients of one layer on x0 from the snapshot state
    let grads = |layer: &UnifiedNorm| -> Res<(Vec<f64>, Vec<f64>, Vec<f64>)> {
        layer.set_state(&snap)?;
        let xl = x0.detach().requires_grad();
        let w = un.weight().detach().requires_grad();
        let yl = layer.forward_with_params(&xl, &w, &un.bias().detach(), None)?;
        yl.mul(&up)?.sum_all()?.backward()?;
        let gx = xl.grad().ok_or("no input gradient")?.to_vec_f64()?;
        let gw = w.grad().ok_or("no weight gradient")?.to_vec_f64()?;
        Ok((yl.to_vec_f64()?, gx, gw))
    };
    let exact_cfg = UnConfig {
        calibrated_backward: false,
        ..*un.config()
    };
    let c = un.channels();
    let exact = UnifiedNorm::new(c, exact_cfg, x0.dtype(), x0.device())?;
    let (ya, ga, wa) = grads(un)?;
    let (yb, gb, wb) = grads(&exact)?;
    un.set_state(&snap)?;

    let (mut num, mut den) = (vec![0.0; c], vec![0.0; c]);
    let (mut dot, mut na, mut nb) = (0.0, 0.0, 0.0);
    for (i, (a, e)) in ga.iter().zip(&gb).enumerate() {
        num[i % c] += (a - e) * (a - e);
        den[i % c] += e * e;
        dot += a * e;
        na += a * a;
        nb += e * e;
    }
    let max_abs = |v: &[f64]| v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let diff = |a: &[f64], b: &[f64]| a.iter().zip(b).fold(0.0f64, |m, (p, q)| m.max((p - q).abs()));
    Ok(Some(CalibOut {
        layer: "blocks.0.norm1",
        iteration: step.iteration,
        smoothed: step.smoothed,
        skipped: step.skipped,
        r_mean: mean(&step.r.to_vec_f64()?),
        rel_per_channel: num.iter().zip(&den).map(|(n, d)| (n / d).sqrt()).collect(),
        rel_total: (num.iter().sum::<f64>() / den.iter().sum::<f64>()).sqrt(),
        cosine: dot / (na.sqrt() * nb.sqrt()),
        forward_diff: diff(&ya, &yb),
        dgamma_rel: diff(&wa, &wb) / max_abs(&wb),
    }))
}

// ----- the report --------------------------------------------------------------------------

/// Parts C and D, run only for the report.
struct ReportParts {
    fold: Option<FoldOut>,
    calib: Option<CalibOut>,
}

/// The norm family: name, what it normalizes over, what inference needs, where it lives.
const FAMILY: [[&str; 4]; 5] = [
    [
        "LayerNorm",
        "each token, over its C channels",
        "on-the-fly: μ and σ² of every token at inference too (not foldable)",
        "nn/src/norm/layer.rs: LayerNorm::forward → core Tensor::layer_norm",
    ],
    [
        "RMSNorm",
        "each token, over its C channels (no centring, no β)",
        "on-the-fly: one root mean square per token (not foldable)",
        "nn/src/norm/layer.rs: RmsNorm::forward → core Tensor::rms_norm",
    ],
    [
        "BatchNorm",
        "each channel, over all B·N tokens of the batch",
        "stored running mean and variance: a fixed affine that folds into the next Linear",
        "nn/src/norm/batch.rs: BatchNorm::forward (custom op BatchNormOp)",
    ],
    [
        "PowerNorm",
        "each channel, over the batch's tokens, after a per-token group scaling",
        "stored φ: the channel part folds, the per-token group scaling stays",
        "nn/src/norm/power.rs: PowerNorm::forward_with_params (custom op PnOp)",
    ],
    [
        "UN",
        "each channel, over the batch's valid tokens, smoothed over a window of F batches",
        "stored ρ: a fixed affine that folds into the next Linear",
        "nn/src/norm/unified.rs: un_forward (steps F1–F10), UnOp::backward (B1–B8); nn/src/fold.rs: eval_affine",
    ],
];

/// The forwards in training, one block per norm (t: a token, c: a channel; means over the
/// index written under them; γ, β: learned per channel; ε = 1e-5).
const EQUATIONS: &str = "\
LayerNorm  μ[t]  = mean_c x[t,c]           σ²[t] = mean_c (x[t,c] − μ[t])²
           y[t,c] = γ[c] · (x[t,c] − μ[t]) / √(σ²[t] + ε) + β[c]

RMSNorm    y[t,c] = γ[c] · x[t,c] / √(mean_c x[t,c]² + ε)

BatchNorm  μ[c]  = mean_t x[t,c]           σ²[c] = mean_t (x[t,c] − μ[c])²      (t: all B·N tokens)
           y[t,c] = γ[c] · (x[t,c] − μ[c]) / √(σ²[c] + ε) + β[c]
           running ← 0.9 · running + 0.1 · batch         inference: y uses the running μ, σ²

PowerNorm  u[t]  = x[t] / RMS of its channel group          (per token)
           q[c]  = mean_t u[t,c]²           s = q during warm-up, else s = φ
           y[t,c] = γ[c] · u[t,c] / √(s[c] + ε) + β[c]      φ ← α · φ + (1 − α) · q

UN         q[c]  = mean_t x[t,c]²           window row (i mod F) ← q
           v[c]  = q[c] during warm-up or on a skipped step,
                   else (Π_j Q[j,c])^(1/F)    (geometric mean of the window)
           y[t,c] = γ[c] · x[t,c] / √(v[c] + ε) + β[c]      ρ ← μ · ρ + (1 − μ) · v
           inference: y[t,c] = γ[c] · x[t,c] / √(ρ[c] + ε) + β[c]";

fn f3(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "n/a".to_string()
    }
}

/// `x` in scientific notation with two decimals.
fn sci(x: f64) -> String {
    if x == 0.0 {
        "0".to_string()
    } else if x.is_finite() {
        format!("{x:.2e}")
    } else {
        "n/a".to_string()
    }
}

fn chart<'a>(sv: &'a Saver, name: &str) -> Option<&'a LineChart> {
    sv.charts.get(name)
}

/// Adds `name`'s chart with `caption` (or says it was not drawn in this run).
fn fig(sec: Section, sv: &Saver, name: &str, caption: &str) -> Section {
    match chart(sv, name) {
        Some(c) => sec.figure(c, caption),
        None => sec.para(&format!("({name} was not drawn in this run.)")),
    }
}

/// Extra charts (behind "more plots") that exist in this run.
fn extras(sec: Section, sv: &Saver, summary: &str, names: &[(&str, &str)]) -> Section {
    let found: Vec<(&dyn Chart, &str)> = names
        .iter()
        .filter_map(|(n, cap)| chart(sv, n).map(|c| (c as &dyn Chart, *cap)))
        .collect();
    sec.extra_figures(summary, &found)
}

fn val_of(r: &RunOut) -> f64 {
    r.val.last().map(|v| v.1).unwrap_or(f64::NAN)
}

/// Mean over steps `> from` of `|stat(s) / running(s − 1) − 1|` (channel means).
fn rel_dev(r: &RunOut, layer: &str, quantity: &str, from: u64) -> f64 {
    let (q, run) = (stat_series(r, layer, quantity), stat_series(r, layer, "running_stat"));
    let v: Vec<f64> = q
        .iter()
        .filter(|(s, _)| *s > from as f64 + 1.0)
        .map(|&(s, x)| (x / at(&run, s as u64 - 1) - 1.0).abs())
        .collect();
    mean(&v)
}

/// Steps at which any layer of `r` counted an outlier-filter skip.
fn skip_steps(r: &RunOut) -> Vec<u64> {
    let mut s: Vec<u64> = r
        .tracer
        .records()
        .iter()
        .filter(|rec| rec.quantity == "skip" && rec.mean > 0.5)
        .map(|rec| rec.step)
        .collect();
    s.dedup();
    s
}

fn list(v: &[u64]) -> String {
    const SHOWN: usize = 12;
    let mut s = v
        .iter()
        .take(SHOWN)
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if v.len() > SHOWN {
        let _ = write!(s, ", … ({} in all)", v.len());
    }
    if v.is_empty() {
        s = "none".into();
    }
    s
}

fn family_section(o: &Opts, clean: &[RunOut], sv: &Saver) -> Section {
    let rows: Vec<Vec<String>> = FAMILY
        .iter()
        .map(|r| r.iter().map(|c| c.to_string()).collect())
        .collect();
    let mut sec = Section::new("family", "1. The norm family side by side")
        .para(&format!(
            "Every norm fills the same slot of the same model: a byte-level Transformer language model on \
             Shakespeare with {} pre-norm block{} (d_model {}, {} heads, FFN {}), trained for {} steps on batches of \
             {} × {} bytes, with the same initial weights and the same batches for every norm. The activations \
             x have shape [B, N, C]: batch, tokens, channels.",
            o.layers,
            if o.layers == 1 { "" } else { "s" },
            o.d_model,
            o.heads,
            o.d_ff,
            o.steps,
            o.batch,
            o.seq
        ))
        .table(
            &[
                "norm",
                "normalizes over",
                "what inference needs",
                "where in this repository",
            ],
            &rows,
        )
        .html(format!(
            "<p>The forward in training (t: a token, c: a channel; γ, β learned per channel; ε = 1e-5):</p>\
             <pre class=\"eqs\">{}</pre>",
            unigrad_examples::report::escape(EQUATIONS)
        ));
    if clean.is_empty() {
        return sec.para("The clean runs were skipped (--skip-clean), so there is no loss curve in this report.");
    }
    let finals: Vec<String> = clean.iter().map(|r| format!("{} {}", r.label, f3(val_of(r)))).collect();
    let best = clean.iter().min_by(|a, b| val_of(a).total_cmp(&val_of(b)));
    let worst = clean.iter().max_by(|a, b| val_of(a).total_cmp(&val_of(b)));
    let (best, worst) = (
        best.map(|r| r.label).unwrap_or("-"),
        worst.map(|r| r.label).unwrap_or("-"),
    );
    sec = fig(
        sec,
        sv,
        "loss_val.svg",
        &format!(
            "Validation loss (nats per byte) every {} steps, measured in eval mode — the batch-statistics norms \
             (BN, PowerNorm, UN) then divide by their stored statistics, exactly what a deployed model does. Final \
             values: {}. Lowest here: {best}; highest: {worst}. Compare the per-token norms (ln, rms) with the \
             foldable ones (bn, pn, un): any gap is what an offline statistic costs in this short run.",
            o.eval_every,
            finals.join(", ")
        ),
    );
    extras(
        sec,
        sv,
        "More plots: training loss",
        &[(
            "loss_train.svg",
            "Training loss (EMA 0.9) of the same runs, in training mode (batch statistics where the norm uses them).",
        )],
    )
}

fn stats_section(o: &Opts, clean: &[RunOut], sv: &Saver) -> Section {
    let first = "blocks.0.norm1";
    let last = format!("blocks.{}.norm2", o.layers - 1);
    let mut sec = Section::new("statistics", "2. Statistics during training, per layer").para(
        "BatchNorm, PowerNorm and UN divide by a statistic of the whole batch in training but by a stored \
         (running) statistic at inference. How far the batch statistic strays from the running one is the \
         train/inference mismatch; UN's answer is to smooth the statistic over a window of past batches. Every \
         curve below is the mean over channels, traced at the first and the last norm of the model.",
    );
    let Some(un) = clean.iter().find(|r| r.kind == NormKind::Unified) else {
        return sec.para("The clean runs were skipped (--skip-clean): no statistics were traced.");
    };
    let fl = |r: &RunOut, layer: &str| {
        mean(
            &stat_series(r, layer, "fluctuation")
                .iter()
                .map(|p| p.1)
                .collect::<Vec<_>>(),
        )
    };
    let batch_dev = rel_dev(un, first, "batch_stat", o.un_warmup);
    let used_dev = rel_dev(un, first, "used_stat", o.un_warmup);
    sec = fig(
        sec,
        sv,
        "stats_un.svg",
        &format!(
            "UN at {first} and {last}: the batch statistic q (quadratic mean), the statistic the forward divided by \
             (q until warm-up ends at step {}, then the geometric mean over the last {} batches) and the running \
             statistic ρ that inference uses. Look at the distance between the batch (or used) curve and ρ: after \
             warm-up, at {first}, the batch statistic was on average {} away from the previous step's ρ (relative), \
             the used one {} (ratios of channel means) — smoothing over {} batches {}.",
            o.un_warmup,
            o.un_window,
            f3(batch_dev),
            f3(used_dev),
            o.un_window,
            if used_dev < 0.995 * batch_dev {
                format!("cut that distance by {:.0}%", 100.0 * (1.0 - used_dev / batch_dev))
            } else {
                "did not reduce it noticeably in this run".to_string()
            }
        ),
    );
    let per: Vec<String> = clean
        .iter()
        .filter(|r| r.kind.uses_batch_statistics())
        .map(|r| {
            format!(
                "{} {} at {first}, {} at {last}",
                r.label,
                f3(fl(r, first)),
                f3(fl(r, &last))
            )
        })
        .collect();
    sec = fig(
        sec,
        sv,
        "fluctuation.svg",
        &format!(
            "Fluctuation of the batch statistic around the running one, |batch / running − 1| per channel, averaged \
             over channels (log scale). Mean over the run: {}. A large value means the model trains on a \
             normalization it will not see at inference; the spikes are batches unlike their predecessors.",
            per.join("; ")
        ),
    );
    extras(
        sec,
        sv,
        "More plots: BatchNorm, PowerNorm, LayerNorm statistics and the gradient statistics",
        &[
            ("stats_bn.svg", "BatchNorm: batch variance and running variance (momentum 0.1) per layer."),
            ("stats_pn.svg", "PowerNorm: batch quadratic mean q and running φ per layer."),
            (
                "stats_ln.svg",
                "LayerNorm: each token's variance over channels, averaged over tokens, and its spread over tokens — what LayerNorm recomputes for every token at inference.",
            ),
            (
                "un_grad_stats.svg",
                "UN's backward: the batch's gradient statistic h and the EMA ema_gz that the calibrated backward subtracts instead (section 4).",
            ),
            ("pn_grad_stats.svg", "PowerNorm's backward: its running sum ema_gz."),
            (
                "grad_output.svg",
                "The largest |gradient| reaching each norm's output per step, at the first and the last norm (log scale): read by a gradient hook on the output (Tracer::set_gradients), not by the norm's code.",
            ),
        ],
    )
}

fn outlier_section(o: &Opts, runs: &[RunOut], sv: &Saver) -> Section {
    let mut sec = Section::new("outliers", "3. Outliers: one batch far off scale");
    let Some(first) = runs.first() else {
        return sec.para("The outlier runs were skipped (--skip-outlier).");
    };
    let steps = &first.outlier_steps;
    sec = sec.para(&format!(
        "Three models train on the same batches — BatchNorm, UN without and UN with outlier filtration — except that \
         at steps {} the token-embedding table is multiplied by {} for that batch's forward and backward (restored \
         before the optimizer step), so every input vector of that batch is {}× larger. UN's filter is active from \
         step {} (its warm-up); it compares the window's arithmetic and geometric means and, when they disagree by \
         more than the window's spread, treats the step as a skip: the window keeps ρ instead of the outlier's \
         statistic and the forward uses the batch's own statistic.",
        list(steps),
        o.outlier_scale,
        o.outlier_scale,
        o.un_warmup
    ));
    let m: BTreeMap<&str, serde_json::Value> = runs.iter().map(|r| (r.label, outlier_metrics(r, o))).collect();
    let g = |run: &str, k: &str| m.get(run).and_then(|v| v[k].as_f64()).unwrap_or(f64::NAN);
    let jump = |run: &str| f3(g(run, "running_stat_log_jump_first_norm").exp());
    // one metric of the three runs, "bn / un / un with filter"
    let three = |key: &str| {
        let v: Vec<String> = ["bn_outliers", "un_outliers", "un_filter"]
            .iter()
            .map(|r| f3(g(r, key)))
            .collect();
        v.join(" / ")
    };
    sec = fig(
        sec,
        sv,
        "outlier_running_stat.svg",
        &format!(
            "Running statistic of blocks.0.norm1 (mean over channels, log scale). At each outlier step it jumped by a \
             factor of {} on average for BatchNorm, {} for UN without the filter and {} with it, and then decays over \
             tens of steps: until it has, inference divides by a statistic the outlier inflated. Without the filter UN \
             feeds ρ the window's geometric mean, which takes only the F-th root of the outlier's factor; a step the \
             filter skips normalizes by the outlier's own statistic, and ρ absorbs that (the reference updates ρ on \
             skipped steps too: the filter protects the window, not ρ).",
            jump("bn_outliers"),
            jump("un_outliers"),
            jump("un_filter")
        ),
    );
    if let Some(f) = runs.iter().find(|r| r.label == "un_filter") {
        let fired = skip_steps(f);
        let at_outliers = fired.iter().filter(|s| steps.contains(s)).count();
        let mm = &m["un_filter"];
        sec = fig(
            sec,
            sv,
            "outlier_un_skips.svg",
            &format!(
                "How many norm layers skipped at each step, in front of a marker of the outlier batches. The filter fired at \
                 steps {}: {} of the {} outlier steps, plus {} other steps; counted per layer, {} of {} possible \
                 layer skips at outlier steps and {} at other steps.",
                list(&fired),
                at_outliers,
                steps.len(),
                fired.len() - at_outliers,
                mm["un_skips_at_outlier_steps"],
                mm["un_skips_possible_at_outlier_steps"],
                mm["un_skips_other_steps"]
            ),
        );
    }
    sec = fig(
        sec,
        sv,
        "outlier_loss.svg",
        &format!(
            "Training loss of every step. On an outlier batch the loss rose by {} (BN / UN / UN with filter) over \
             the 5 steps before; the 3 batches after stayed {} above that level. Right after an outlier the \
             validation loss (eval mode) changed by {}, and 10 steps later by {}.",
            three("train_loss_spike"),
            three("excess_loss_next3"),
            three("val_loss_jump_after"),
            three("val_loss_jump_after10"),
        ),
    );
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let k = |key: &str| f3(g(r.label, key));
            vec![
                r.label.to_string(),
                k("train_loss_spike"),
                k("excess_loss_next3"),
                k("val_loss_jump_after"),
                k("val_loss_jump_after10"),
                jump(r.label),
                k("final_val_loss"),
            ]
        })
        .collect();
    sec = sec.table(
        &[
            "run",
            "loss spike",
            "excess, next 3",
            "val jump after",
            "val jump +10",
            "running-stat jump ×",
            "final val loss",
        ],
        &rows,
    );
    extras(
        sec,
        sv,
        "More plots: UN's window with the filter, validation loss",
        &[
            (
                "outlier_un_filter_stats.svg",
                "UN with the filter at blocks.0.norm1: batch statistic, used statistic, the window's geometric mean and ρ.",
            ),
            (
                "outlier_val_loss.svg",
                "Validation loss (eval mode) of the outlier runs and of the clean runs of the same norms.",
            ),
        ],
    )
}

fn calibration_section(o: &Opts, c: Option<&CalibOut>) -> Section {
    let mut sec = Section::new(
        "calibration",
        "4. Gradient calibration: UN's backward against the exact gradient",
    )
    .para(
        "UN's backward is deliberately not the derivative of its forward. With g = δ ⊙ γ ⊙ r (δ the upstream \
             gradient, r the ratio of the used to the running statistic, exactly 1 before iteration max(1000, \
             warm-up)) and z = x / √(v + ε), it computes the batch's correction statistic h = mean over positions of \
             g ⊙ z, stores h in a window of K batches, feeds the window's mean into an EMA e ← μ·e + (1 − μ)·mean, and \
             returns ∂x = (g − e ⊙ z) / √(v + ε). The exact gradient would subtract the batch's own h (times \
             v / (F·q) when the forward was smoothed).",
    )
    .para(
        "What it is for: the paper's abstract (Yang et al. 2022) says UN \"strives to boost performance by \
             calibrating the activation and gradient statistics with a tailored fluctuation smoothing strategy\" — \
             the forward smooths the activation statistic over a window, and the backward smooths the gradient \
             statistic the same way (window, then EMA), so that neither follows every batch-to-batch fluctuation; \
             after iteration max(1000, warm-up) the clamped ratio r also rescales the gradient. The price is a \
             gradient that is not the forward's; the exact variant (UnConfig::calibrated_backward = false) exists \
             to measure the difference.",
    )
    .html(
        "<p>Where: <code>nn/src/norm/unified.rs</code> — <code>UnOp::backward</code> (steps B1–B8) and \
             <code>un_forward</code>, which the exact variant differentiates with autograd; \
             <code>tests/data/fixtures/ALGORITHMS.md</code> §1.6 derives the exact gradient and when the two agree; \
             <code>tests/src/nn_norms.rs</code> (<code>un_exact_…</code>) checks the exact variant against finite \
             differences and the cases where they coincide.</p>",
    );
    let Some(c) = c else {
        return sec.para("No UN model was trained in this run (--skip-clean), so there is no measurement.");
    };
    let pts: Vec<(f64, f64)> = c
        .rel_per_channel
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as f64, v))
        .collect();
    let chart = LineChart::new(
        format!("UN {}: calibrated vs exact input gradient, per channel", c.layer),
        "channel",
        "‖g_cal − g_exact‖ / ‖g_exact‖",
    )
    .with_log_y(true)
    .with_series("relative difference", pts);
    let max = c.rel_per_channel.iter().cloned().fold(f64::NAN, f64::max);
    sec = sec.figure(
        &chart,
        &format!(
            "One batch after training, at {}'s iteration {} ({} statistic, r = {} on average, filter {}): per channel, \
             the distance between the calibrated and the exact input gradient over all {} × {} positions, relative to \
             the exact one. Median {}, largest {}; over the whole tensor {}, cosine similarity {:.5}. Both came from \
             the same forward (largest output difference {}), and ∂γ differs by {} relative{}.",
            c.layer,
            c.iteration,
            if c.smoothed { "smoothed" } else { "batch" },
            f3(c.r_mean),
            if c.skipped { "fired" } else { "quiet" },
            o.batch,
            o.seq,
            sci(median(&c.rel_per_channel)),
            sci(max),
            sci(c.rel_total),
            c.cosine,
            sci(c.forward_diff),
            sci(c.dgamma_rel),
            if c.r_mean == 1.0 && c.dgamma_rel == 0.0 {
                " (r = 1 on this step, which makes ∂γ exact)"
            } else {
                ""
            }
        ),
    );
    sec
}

fn folding_section(f: Option<&FoldOut>, dev: &Device) -> Section {
    let mut sec = Section::new("folding", "5. Folding: the norm disappears into the Linear layer").para(
        "At inference BatchNorm and UN are a fixed per-channel affine a ⊙ x + s (UN: a = γ / √(ρ + ε), s = β). In a \
         pre-norm block the norm's output feeds exactly one Linear, so W·(a ⊙ x + s) + b = (W·diag(a))·x + (b + W·s): \
         the Linear absorbs the norm and the norm op is removed (nn/src/fold.rs, fold_for_inference). LayerNorm and \
         RMSNorm cannot fold: their statistics belong to each token.",
    );
    let Some(f) = f else {
        return sec.para("No BatchNorm or UN model was trained in this run (--skip-clean), so nothing was folded.");
    };
    let mut bars = BarChart::new(
        format!(
            "Eval forward of one {}×{} batch, median of {} rounds",
            f.batch.0, f.batch.1, f.rounds
        ),
        "milliseconds (wall clock)",
    );
    if let Some(ln) = f.ln_ms {
        bars = bars.with_bar("ln", ln);
    }
    for r in &f.rows {
        bars = bars
            .with_bar(format!("{} unfolded", r.label), r.plain_ms)
            .with_bar(format!("{} folded", r.label), r.folded_ms);
    }
    let parts: Vec<String> = f
        .rows
        .iter()
        .map(|r| {
            format!(
                "{}: {} of {} norm ops removed, largest logit difference {}, folded/unfolded time {}",
                r.label,
                r.removed,
                r.sites,
                sci(r.max_logit_diff),
                f3(r.folded_ms / r.plain_ms)
            )
        })
        .collect();
    let best = f
        .rows
        .iter()
        .map(|r| r.folded_ms / r.plain_ms)
        .fold(f64::INFINITY, f64::min);
    let verdict = if best < 0.95 {
        format!(
            "Folding saved up to {:.0}% of the eval time here.",
            100.0 * (1.0 - best)
        )
    } else {
        "The time saved is within a few percent here: on a CPU a fused norm is a small part of a forward, and \
         timings on a shared machine move by that much (the paper's ≈31% was measured on a GPU)."
            .to_string()
    };
    sec = sec.figure(
        &bars,
        &format!(
            "The same trained models before and after folding, timed interleaved on {} in this run. {}. The logits \
             agree to float rounding. {verdict}",
            dev.name(),
            parts.join("; ")
        ),
    );
    let ratio_ln = |ms: f64| f.ln_ms.map(|l| f3(l / ms)).unwrap_or_else(|| "n/a".into());
    let rows: Vec<Vec<String>> = f
        .rows
        .iter()
        .map(|r| {
            let cpu = match (r.plain_cpu_ms, r.folded_cpu_ms) {
                (Some(a), Some(b)) => f3(b / a),
                _ => "n/a".into(),
            };
            vec![
                r.label.to_string(),
                format!("{} → {}", r.sites, r.sites - r.removed),
                sci(r.max_logit_diff),
                format!("{:.2} → {:.2}", r.plain_ms, r.folded_ms),
                f3(r.folded_ms / r.plain_ms),
                cpu,
                ratio_ln(r.folded_ms),
            ]
        })
        .collect();
    sec.table(
        &[
            "model",
            "norm ops",
            "largest |Δ logit|",
            "eval ms (median)",
            "folded / unfolded",
            "same, CPU time",
            "speed-up vs ln",
        ],
        &rows,
    )
}

/// The reproducing command line, a few flags per line.
fn command_line(o: &Opts) -> String {
    let report = o.report.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    [
        "cargo run --release -p unigrad-examples --example norm_internals --".to_string(),
        format!(
            "--report {report} --seed {} --steps {} --batch {} --seq {} --lr {}",
            o.seed, o.steps, o.batch, o.seq, o.lr
        ),
        format!(
            "--d-model {} --heads {} --d-ff {} --layers {}",
            o.d_model, o.heads, o.d_ff, o.layers
        ),
        format!(
            "--eval-every {} --val-windows {} --fold-rounds {}",
            o.eval_every, o.val_windows, o.fold_rounds
        ),
        format!(
            "--un-window {} --un-warmup {} --un-momentum {} --un-filter {} --pn-warmup {}",
            o.un_window, o.un_warmup, o.un_momentum, o.un_filter, o.pn_warmup
        ),
        format!(
            "--outlier-start {} --outlier-every {} --outlier-scale {}",
            o.outlier_start, o.outlier_every, o.outlier_scale
        ),
    ]
    .join(" \\\n    ")
}

fn parameters_section(o: &Opts, dev: &Device, secs: f64) -> Section {
    let row = |flag: &str, value: String, what: &str| vec![flag.to_string(), value, what.to_string()];
    let vary = vec![
        row("--un-window", o.un_window.to_string(), "UN's window F = K: batches the forward statistic and the backward's gradient statistic are smoothed over (1 turns smoothing off)"),
        row("--un-warmup", o.un_warmup.to_string(), "UN steps with the batch statistic before smoothing and filtering start (reference 4000)"),
        row("--un-momentum", o.un_momentum.to_string(), "μ of UN's running statistic ρ and gradient EMA e (old·μ + new·(1 − μ))"),
        row("--un-filter", o.un_filter.to_string(), "outlier filtration in the clean UN run (sections 1, 2, 4, 5); section 3 always compares off and on"),
        row("--outlier-scale", o.outlier_scale.to_string(), "factor on the token embeddings of an outlier batch"),
        row("--outlier-start / --outlier-every", format!("{} / {}", o.outlier_start, o.outlier_every), "first outlier step, steps between outliers"),
        row("--pn-warmup", o.pn_warmup.to_string(), "PowerNorm steps with the batch statistic"),
        row("--steps", o.steps.to_string(), "training steps per run"),
        row("--batch / --seq", format!("{} / {}", o.batch, o.seq), "sequences per batch, bytes per sequence"),
        row("--d-model / --heads / --d-ff / --layers", format!("{} / {} / {} / {}", o.d_model, o.heads, o.d_ff, o.layers), "model size"),
        row("--lr", o.lr.to_string(), "AdamW learning rate"),
        row("--eval-every / --val-windows", format!("{} / {}", o.eval_every, o.val_windows), "validation interval and size"),
        row("--fold-rounds", o.fold_rounds.to_string(), "timed rounds of the folding comparison"),
        row("--seed", o.seed.to_string(), "weights and batch order"),
    ];
    Section::new("parameters", "6. Parameters to vary")
        .para(
            "Every number in this report was measured in the run that wrote it. A teacher can rerun with other values \
             (the flags below; --help lists them all) and watch the plots change — e.g. --un-window 1 removes UN's \
             smoothing, --un-filter true turns the outlier filter on in the clean run, --outlier-scale 100 makes the \
             outliers harsher. --quick shrinks everything to seconds; typed flags still win.",
        )
        .table(&["flag", "value used", "what it changes"], &vary)
        .html(format!(
            "<p>This run, to reproduce it:</p><pre>{}</pre>",
            unigrad_examples::report::escape(&command_line(o))
        ))
        .para(&format!(
            "Run on {} with {} CPU worker threads{}; {:.1} s from the start of the program to writing this page.",
            dev.name(),
            rayon::current_num_threads(),
            if o.quick { " (--quick)" } else { "" },
            secs
        ))
}

fn build_report(
    o: &Opts,
    clean: &[RunOut],
    runs: &[RunOut],
    parts: &ReportParts,
    sv: &Saver,
    dev: &Device,
    secs: f64,
) -> Report {
    Report::new("Normalization internals: LayerNorm, RMSNorm, BatchNorm, PowerNorm and UN")
        .intro(
            "What the normalization layers of a small Transformer see while it trains, what an outlier batch does to \
             them, how Unified Normalization's gradient differs from the exact one, and what folding a norm into the \
             next Linear layer buys. Written by the unigrad example norm_internals; every number comes from the run \
             that wrote this page (section 6 lists its settings).",
        )
        .section(family_section(o, clean, sv))
        .section(stats_section(o, clean, sv))
        .section(outlier_section(o, runs, sv))
        .section(calibration_section(o, parts.calib.as_ref()))
        .section(folding_section(parts.fold.as_ref(), dev))
        .section(parameters_section(o, dev, secs))
        .footer("unigrad · examples/examples/norm_internals.rs · self-contained: no network, no external files.")
}
