//! Does UN close its gap to LayerNorm as training grows? A ladder of run lengths spaced ×4
//! apart, training LayerNorm, BatchNorm, UN and PowerNorm on the shipped ViT task and the
//! byte-level LM with two seeds each (issue 15).
//!
//! The one documented command for the full study (results land in `docs/norm-scaling/`):
//!
//! ```sh
//! cargo run --release -p unigrad-examples --example norm_scaling -- --resume --un-ablation --lag-run 9600
//! ```
//!
//! Expected wall time on an idle 2-core machine: about 5 hours. The study trains
//! 235,200 ViT steps (ladder 2 seeds × 4 norms × (600 + 2,400 + 9,600), ablation 2 seeds ×
//! 7 UN variants × 9,600) and 144,000 LM steps (ladder 2 × 4 × (400 + 1,600 + 6,400),
//! ablation 2 × 6 × 6,400); the lag run re-uses the first seed's BN and UN ViT runs of its
//! length. Measured per run: the 9,600-step ViT runs took 289–333 s on an idle machine
//! (about 0.03 s a step) and 2,400-step ones 83–127 s; the 1,600-step LM runs took
//! 110–200 s on a machine that other jobs shared (0.07–0.12 s a step). The ladder alone
//! (no ablation) is about 2–3 hours. The study does not have to
//! run in one go: every finished run is appended to `runs.csv` at once and `--resume`
//! skips the runs already there with the same settings, so the ladder continues across
//! sessions. Runs go short to long (then by task, seed, variant, norm), so a partial CSV
//! already holds whole rungs. One rung alone: `--task vit --lengths 600`.
//!
//! ```sh
//! cargo run --release -p unigrad-examples --example norm_scaling -- --quick --out /tmp/ns   # CI smoke test, seconds
//! cargo run --release -p unigrad-examples --example norm_scaling -- --task vit --lengths 600 --resume
//! ```
//!
//! # What is held fixed
//!
//! At a given length every norm trains the same model (the `vit` and `paper_table` ViT:
//! d=64, 4 layers, batch 128, Fashion-MNIST 8k/2k; the `paper_table` LM: d=128, 2 layers,
//! 16 × 64 bytes), from the same seed, with the same batches, optimizer (AdamW) and
//! learning-rate schedule. The schedule scales with the run: linear warm-up over 10% of it
//! (the recipes' 60/600 and 80/800), then cosine decay to the end. The training loops are
//! `unigrad_examples::train::{vit, lm}`, the code behind the `vit` example and
//! `paper_table`.
//!
//! The ladders: ViT 600 (the `vit` / `paper_table` run), 2,400 and 9,600 updates; LM 400,
//! 1,600 and 6,400, ×4 apart like the ViT's and bracketing `paper_table`'s 800-step LM
//! run. The LM's longest rung reads 6,400 × 16 × 64 ≈ 6.6 M bytes, about 6.5 passes over
//! the ~1 MB training split: beyond that this small model would mostly measure
//! overfitting.
//!
//! UN's and PowerNorm's warm-up (the iterations before they switch from the batch
//! statistic to their smoothed / running one) is a fixed fraction of each run, the
//! fraction of the paper's setting: the reference code's defaults are 4,000 iterations
//! (UN) and 10,000 (PowerNorm), sized for IWSLT14 runs of about 50,000 updates (the
//! docs of `unigrad_examples::train::norm_config`: "sized for runs of 50k+ updates"), so
//! UN warms up for 4,000 / 50,000 = 8% of the run and PowerNorm for 10,000 / 50,000 = 20%
//! (the repository's earlier runs used 10% for both). UN's other
//! hyperparameters are the reference defaults (window 4, momentum 0.9), with outlier
//! filtration on for the ViT and off for the LM as the UN authors recommend. Note that UN's
//! gradient scale `r` stays exactly 1 until iteration `max(1000, warm-up)` (hard-wired in
//! the reference, not scaled), so it is inactive in runs of 1,000 steps or fewer.
//!
//! Quality: ViT top-1 test accuracy (%) on the 2,000 test images; LM validation bits per
//! byte on 512 fixed windows. Both in eval mode, so the batch-statistics norms use their
//! running statistics, as a deployed model would.
//!
//! # Outputs (in `--out`, default `docs/norm-scaling/`)
//!
//! * `runs.csv`: one row per run, appended as each run ends: task, variant, norm, length,
//!   seed, LR warm-up, norm warm-up iterations, metric name, final quality, final train
//!   loss (mean of the last 50 updates; bits per byte for the LM), wall seconds, UN
//!   switches (outlier-filter skips summed over the model's UN layers: steps where a layer
//!   fell back from its smoothed statistic to the batch statistic), status (`ok` or
//!   `diverged at step N`) and a hash of every other setting (a run is skipped by
//!   `--resume` only when this matches).
//! * `quality_<task>.svg`: final quality against run length (log x), one line per norm
//!   through the seed means, each seed a dot.
//! * `lag_vit_<N>.svg` and `.csv` (with `--lag-run N`): over the first seed's ViT runs of N steps,
//!   BatchNorm's batch variance and running variance and UN's batch quadratic mean, the
//!   statistic it divides by (window-smoothed after warm-up) and its running statistic, per
//!   step at one norm site (`--lag-site`, default `blocks.0.norm1`), showing how far the
//!   statistics inference uses trail the batch's.
//! * `summary.md`: the mean quality per task, length and norm, the gap of each norm to
//!   LayerNorm, and the ablation table.
//! * With `--un-ablation`: UN runs with one mechanism switched off at a time, at
//!   `--ablation-length` (default: each task's longest length), in `runs.csv` with their
//!   `variant`. `UnConfig` has switches for the windows, the calibrated backward and the
//!   filter, and the reference's quirks tie some mechanisms together, so each variant
//!   removes what its description says (ALGORITHMS.md §1 next to the fixtures):
//!   - `fwd_window_1`: forward window 1. With a one-row window the reference treats every
//!     step as an internal skip, so the forward divides by the batch statistic, the
//!     backward corrects with the batch's own gradient statistic instead of its EMA, and
//!     `r` is 1: forward smoothing and backward EMA both off.
//!   - `whole_warmup`: the run never leaves UN's warm-up: the batch statistic forward, but
//!     the backward still corrects with the EMA of the per-batch gradient statistics; the
//!     filter and `r` never act. Against `fwd_window_1` it isolates the backward EMA;
//!     against `full` it measures forward smoothing, filter and `r` together.
//!   - `bwd_window_1`: backward window 1: the calibrated gradient statistic of the current
//!     batch alone, still averaged by the EMA.
//!   - `exact_backward`: the calibrated backward off: the exact gradient of the same
//!     (smoothed) forward, so neither the backward EMA nor `r` acts.
//!   - `no_filter` (ViT only; the LM runs without filtration): outlier filtration off.
//!   - `no_r_clamp`: the backward's gradient scale `r` unclamped (`UnConfig::r_clamp`
//!     `None`; the reference clamps it to [0.2, 5]).
//!   - `r_off`: `r` fixed at 1 (`r_clamp` `Some((1, 1))`), the rest of the calibrated
//!     backward kept. `r` is exactly 1 anyway in runs of at most 1,000 steps, so both `r`
//!     variants only mean something in longer runs.
//!
//! The last stdout line is one JSON object (every run of this invocation, the gaps, the
//! files written).

use clap::Parser;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;
use unigrad::nn::checkpoint;
use unigrad::nn::norm::trace::{Stat, Tracer};
use unigrad::nn::norm::UnConfig;
use unigrad::prelude::*;
use unigrad_examples::cli::{main_with, print_json_line, AnyResult, CommonArgs};
use unigrad_examples::csv::{append_row, read_records};
use unigrad_examples::plot::LineChart;
use unigrad_examples::train::lm::{train_lm, LmOptions};
use unigrad_examples::train::vit::{train_vit, VitOptions};
use unigrad_examples::train::{norm_config, TaskKind, TrainError};

/// UN's warm-up as a fraction of the run: the reference default of 4,000 iterations over
/// an IWSLT14 run of about 50,000 updates.
const UN_WARMUP_FRAC: f64 = 0.08;
/// PowerNorm's warm-up fraction: its reference default of 10,000 over the same run.
const PN_WARMUP_FRAC: f64 = 0.20;
/// The learning-rate warm-up as a fraction of the run (the ViT and LM recipes').
const LR_WARMUP_FRAC: f64 = 0.1;
/// Where the warm-up fractions come from, as written into the outputs.
const WARMUP_SOURCE: &str = "reference defaults (UN warmup_iters 4000, PowerNorm 10000) over an IWSLT14 run of ~50,000 updates: UN 8%, PowerNorm 20% of each run";

/// Columns of `runs.csv`.
const HEADER: [&str; 14] = [
    "task",
    "variant",
    "norm",
    "length",
    "seed",
    "lr_warmup",
    "norm_warmup_iters",
    "metric",
    "quality",
    "train_loss",
    "wall_s",
    "un_switches",
    "status",
    "settings",
];

/// Train LN, BN, UN and PowerNorm on a ladder of run lengths and record how their final
/// quality scales (see the program docs).
#[derive(Parser, Debug)]
#[command(version, long_about = None)]
struct Args {
    /// Tiny models, lengths 4 and 16 and one seed (smoke test, seconds).
    #[arg(long)]
    quick: bool,
    /// Which task: vit, lm or both.
    #[arg(long, default_value = "both")]
    task: String,
    /// Run lengths in updates, comma-separated (default: ViT 600,2400,9600; LM
    /// 400,1600,6400; --quick: 4,16). Applies to every task chosen.
    #[arg(long, value_delimiter = ',')]
    lengths: Option<Vec<u64>>,
    /// Norms, comma-separated, from ln, bn, un, pn.
    #[arg(long, default_value = "ln,bn,un,pn", value_delimiter = ',')]
    norms: Vec<String>,
    /// Seeds, comma-separated (default 1,2; --quick: 1).
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<u64>>,
    /// Output folder (runs.csv, SVGs, summary.md).
    #[arg(long, default_value = "docs/norm-scaling")]
    out: PathBuf,
    /// Continue the study in --out: skip runs already in runs.csv with the same settings.
    /// Without it an existing, non-empty runs.csv is an error.
    #[arg(long)]
    resume: bool,
    /// Only the ablation and lag runs, not the ladder.
    #[arg(long)]
    no_ladder: bool,
    /// Trace BN's and UN's statistics over the first seed's ViT runs of this many steps.
    #[arg(long)]
    lag_run: Option<u64>,
    /// The norm site the lag run traces.
    #[arg(long, default_value = "blocks.0.norm1")]
    lag_site: String,
    /// Also run UN with one mechanism switched off at a time.
    #[arg(long)]
    un_ablation: bool,
    /// Length of the ablation runs (default: each task's longest length).
    #[arg(long)]
    ablation_length: Option<u64>,
    /// No progress bars or log lines; stdout has only the JSON line.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    common: CommonArgs,
}

fn main() {
    main_with("norm_scaling", || run(Args::parse()));
}

/// A task of the study.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Task {
    Vit,
    Lm,
}

impl Task {
    fn name(self) -> &'static str {
        match self {
            Task::Vit => "vit",
            Task::Lm => "lm",
        }
    }

    fn parse(s: &str) -> AnyResult<Task> {
        match s {
            "vit" => Ok(Task::Vit),
            "lm" => Ok(Task::Lm),
            _ => Err(format!("unknown task `{s}`; expected vit, lm or both").into()),
        }
    }

    fn kind(self) -> TaskKind {
        match self {
            Task::Vit => TaskKind::Vision,
            Task::Lm => TaskKind::Language,
        }
    }

    /// The quality metric's CSV name and axis label, and whether higher is better.
    fn metric(self) -> (&'static str, &'static str, bool) {
        match self {
            Task::Vit => ("test_acc", "ViT test accuracy (%)", true),
            Task::Lm => ("val_bpb", "LM validation bits per byte", false),
        }
    }

    fn default_lengths(self, quick: bool) -> Vec<u64> {
        match (quick, self) {
            (true, _) => vec![4, 16],
            (false, Task::Vit) => vec![600, 2400, 9600],
            (false, Task::Lm) => vec![400, 1600, 6400],
        }
    }
}

/// UN with all its mechanisms, or with one switched off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Variant {
    Full,
    FwdWindow1,
    BwdWindow1,
    ExactBackward,
    WholeWarmup,
    NoFilter,
    NoRClamp,
    ROff,
}

impl Variant {
    const ABLATIONS: [Variant; 7] = [
        Variant::FwdWindow1,
        Variant::BwdWindow1,
        Variant::ExactBackward,
        Variant::WholeWarmup,
        Variant::NoFilter,
        Variant::NoRClamp,
        Variant::ROff,
    ];

    fn name(self) -> &'static str {
        match self {
            Variant::Full => "full",
            Variant::FwdWindow1 => "fwd_window_1",
            Variant::BwdWindow1 => "bwd_window_1",
            Variant::ExactBackward => "exact_backward",
            Variant::WholeWarmup => "whole_warmup",
            Variant::NoFilter => "no_filter",
            Variant::NoRClamp => "no_r_clamp",
            Variant::ROff => "r_off",
        }
    }

    /// Whether the variant changes anything on `task` (the LM has no outlier filtration).
    fn applies(self, task: Task) -> bool {
        !(self == Variant::NoFilter && task == Task::Lm)
    }

    /// UN's / PowerNorm's warm-up as a fraction of the run: the paper's fraction, or twice
    /// the run for `whole_warmup`, so the run never leaves the warm-up.
    fn warmup_frac(self, norm: NormKind) -> f64 {
        match self {
            Variant::WholeWarmup => 2.0,
            _ => norm_warmup_frac(norm),
        }
    }

    /// UN's configuration with this mechanism off (`None`: the task's default).
    fn un(self, task: Task) -> Option<UnConfig> {
        let base = norm_config(NormKind::Unified, task.kind(), 1, None).un;
        match self {
            Variant::Full | Variant::WholeWarmup => None,
            Variant::FwdWindow1 => Some(base.with_window((1, base.window.bwd))),
            Variant::BwdWindow1 => Some(base.with_window((base.window.fwd, 1))),
            Variant::ExactBackward => Some(UnConfig {
                calibrated_backward: false,
                ..base
            }),
            Variant::NoFilter => Some(UnConfig {
                outlier_filtration: false,
                ..base
            }),
            Variant::NoRClamp => Some(UnConfig { r_clamp: None, ..base }),
            Variant::ROff => Some(UnConfig {
                r_clamp: Some((1.0, 1.0)),
                ..base
            }),
        }
    }
}

/// One run of the study.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Spec {
    length: u64,
    task: Task,
    seed: u64,
    variant: Variant,
    /// Index into [`NORMS`] (`NormKind` has no order).
    norm_rank: usize,
}

/// The training options of one run.
enum Opts {
    Vit(Box<VitOptions>),
    Lm(Box<LmOptions>),
}

/// The norms of the study, in table order.
const NORMS: [NormKind; 4] = [
    NormKind::LayerNorm,
    NormKind::BatchNorm,
    NormKind::Unified,
    NormKind::PowerNorm,
];

fn norm_rank(n: NormKind) -> usize {
    NORMS.iter().position(|&k| k == n).unwrap_or(NORMS.len())
}

fn lr_warmup(length: u64) -> u64 {
    ((length as f64 * LR_WARMUP_FRAC).round() as u64).max(1)
}

fn norm_warmup_frac(n: NormKind) -> f64 {
    if n == NormKind::PowerNorm {
        PN_WARMUP_FRAC
    } else {
        UN_WARMUP_FRAC
    }
}

/// 64-bit FNV-1a: a hash that stays the same across Rust releases, for the settings column.
fn fnv1a(s: &str) -> String {
    let h = s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{h:016x}")
}

impl Spec {
    fn norm(&self) -> NormKind {
        NORMS[self.norm_rank]
    }

    fn options(&self, quick: bool, quiet: bool) -> Opts {
        let label = format!(
            "{} {} {} steps seed {} {}",
            self.task.name(),
            self.norm().short_name(),
            self.length,
            self.seed,
            self.variant.name()
        );
        // The same fields on both tasks' option structs.
        macro_rules! options {
            ($ty:ident { $($f:ident: $v:expr),* }) => {{
                let base = if quick { $ty::quick() } else { $ty::default() };
                Box::new($ty {
                    norm: self.norm(),
                    steps: self.length,
                    warmup: lr_warmup(self.length),
                    norm_warmup_frac: self.variant.warmup_frac(self.norm()),
                    un: self.variant.un(self.task),
                    seed: self.seed,
                    quiet,
                    label,
                    $($f: $v,)*
                    ..base
                })
            }};
        }
        match self.task {
            Task::Vit => Opts::Vit(options!(VitOptions { eval_every: 0 })),
            Task::Lm => Opts::Lm(options!(LmOptions {})),
        }
    }

    /// UN's / PowerNorm's warm-up iterations in this run (0 for the other norms).
    fn norm_warmup_iters(&self, o: &Opts) -> u64 {
        let cfg = match o {
            Opts::Vit(v) => v.model_config().norm,
            Opts::Lm(l) => l.model_config().norm,
        };
        match self.norm() {
            NormKind::Unified => cfg.un.warmup_iters,
            NormKind::PowerNorm => cfg.pn.warmup_iters,
            _ => 0,
        }
    }

    /// The `settings` column: a hash of every option that is not in the other key columns
    /// and changes the result (labels, quietness, paths and tracing left out).
    fn settings(o: &Opts) -> String {
        let text = match o {
            Opts::Vit(v) => {
                let mut k = (**v).clone();
                (k.label, k.quiet, k.data_dir, k.trace) = (String::new(), false, PathBuf::new(), None);
                format!("{k:?}")
            }
            Opts::Lm(l) => {
                let mut k = (**l).clone();
                (k.label, k.quiet, k.data_dir) = (String::new(), false, PathBuf::new());
                format!("{k:?}")
            }
        };
        fnv1a(&text)
    }

    /// The resume key: the identifying columns of a CSV row.
    fn key(&self, settings: &str) -> String {
        format!(
            "{}|{}|{}|{}|{}|{settings}",
            self.task.name(),
            self.variant.name(),
            self.norm().short_name(),
            self.length,
            self.seed
        )
    }
}

fn row_key(r: &BTreeMap<String, String>) -> String {
    let f = |k: &str| r.get(k).map(String::as_str).unwrap_or("");
    format!(
        "{}|{}|{}|{}|{}|{}",
        f("task"),
        f("variant"),
        f("norm"),
        f("length"),
        f("seed"),
        f("settings")
    )
}

/// What one run measured.
struct Outcome {
    quality: f64,
    train_loss: f64,
    wall_s: f64,
    un_switches: u64,
    status: String,
}

/// Outlier-filter skips summed over every UN layer of the checkpoint at `path`.
fn un_switches(path: &Path, dev: &Device) -> AnyResult<u64> {
    let sd = checkpoint::load_tensors(path)?;
    let mut n = 0.0;
    for (name, t) in &sd.tensors {
        if name.ends_with("skip_counter") {
            n += t.to_tensor(dev)?.to_vec_f64()?.iter().sum::<f64>();
        }
    }
    Ok(n as u64)
}

/// Train one run. UN runs write a temporary checkpoint to read their skip counters from.
fn train(spec: &Spec, mut o: Opts, tmp: &Path, dev: &Device) -> AnyResult<Outcome> {
    let t0 = Instant::now();
    let ckpt = (spec.norm() == NormKind::Unified).then(|| tmp.join("un-run.safetensors"));
    let r = match &mut o {
        Opts::Vit(v) => {
            v.checkpoint = ckpt.clone();
            train_vit(v, dev).map(|r| (r.test_acc, r.train_loss))
        }
        Opts::Lm(l) => {
            l.checkpoint = ckpt.clone();
            train_lm(l, dev).map(|(r, _)| (r.val_bpb, r.train_bpb))
        }
    };
    let (quality, train_loss, status) = match r {
        Ok((q, l)) => (q, l, "ok".to_string()),
        Err(TrainError::Diverged { step, .. }) => (f64::NAN, f64::NAN, format!("diverged at step {step}")),
        Err(e) => return Err(e.into()),
    };
    let mut switches = 0;
    if let Some(p) = ckpt.filter(|p| p.exists()) {
        switches = un_switches(&p, dev)?;
        std::fs::remove_file(&p)?;
        let _ = std::fs::remove_file(unigrad_examples::train::opt_path(&p));
    }
    Ok(Outcome {
        quality,
        train_loss,
        wall_s: t0.elapsed().as_secs_f64(),
        un_switches: switches,
        status,
    })
}

/// The quantities of the lag plot, per norm: (trace quantity, CSV column, legend).
const LAG_SERIES: [(NormKind, &str, &str, &str); 5] = [
    (NormKind::BatchNorm, "batch_stat", "bn_batch_var", "BN batch variance"),
    (
        NormKind::BatchNorm,
        "running_stat",
        "bn_running_var",
        "BN running variance",
    ),
    (
        NormKind::Unified,
        "batch_stat",
        "un_batch_qm",
        "UN batch quadratic mean",
    ),
    (
        NormKind::Unified,
        "used_stat",
        "un_used_qm",
        "UN statistic used (smoothed)",
    ),
    (
        NormKind::Unified,
        "running_stat",
        "un_running_qm",
        "UN running statistic",
    ),
];

/// Per step, the first value of `quantity` at `site` (channel mean).
fn per_step(t: &Tracer, site: &str, quantity: &str) -> BTreeMap<u64, f64> {
    let mut m = BTreeMap::new();
    for (s, v) in t.series(site, quantity, Stat::Mean) {
        m.entry(s).or_insert(v);
    }
    m
}

/// Write the lag CSV and SVG from the traces; returns the mean fluctuation
/// `|batch / running − 1|` of BN and UN over the second half of the run.
fn lag_outputs(tracers: &BTreeMap<usize, Tracer>, site: &str, steps: u64, out: &Path) -> AnyResult<Value> {
    let tr = |n: NormKind| tracers.get(&norm_rank(n));
    let cols: Vec<BTreeMap<u64, f64>> = LAG_SERIES
        .iter()
        .map(|(n, q, _, _)| tr(*n).map(|t| per_step(t, site, q)).unwrap_or_default())
        .collect();
    if cols.iter().all(BTreeMap::is_empty) {
        return Err(format!("the lag run recorded nothing at site `{site}`; see --lag-site").into());
    }
    let csv_path = out.join(format!("lag_vit_{steps}.csv"));
    let mut text = String::from("step");
    for (_, _, c, _) in LAG_SERIES {
        text.push(',');
        text.push_str(c);
    }
    text.push('\n');
    for step in 1..=steps {
        text.push_str(&step.to_string());
        for c in &cols {
            text.push(',');
            if let Some(v) = c.get(&step) {
                text.push_str(&v.to_string());
            }
        }
        text.push('\n');
    }
    std::fs::write(&csv_path, text)?;
    let stride = (steps / 600).max(1);
    let mut chart = LineChart::new(
        format!("Statistic lag at {site}, ViT, {steps} steps (first seed)"),
        "training step",
        "channel mean of the statistic",
    )
    .with_log_y(true);
    for ((_, _, _, legend), c) in LAG_SERIES.iter().zip(&cols) {
        let pts = c
            .iter()
            .filter(|(s, _)| *s % stride == 0 || **s == 1)
            .map(|(s, v)| (*s as f64, *v))
            .collect();
        chart = chart.with_series(*legend, pts);
    }
    let svg_path = out.join(format!("lag_vit_{steps}.svg"));
    chart.save(&svg_path)?;
    let fluct = |n: NormKind| {
        tr(n).map(|t| {
            let v: Vec<f64> = per_step(t, site, "fluctuation")
                .into_iter()
                .filter(|(s, _)| *s > steps / 2)
                .map(|(_, v)| v)
                .collect();
            v.iter().sum::<f64>() / v.len().max(1) as f64
        })
    };
    Ok(json!({
        "csv": csv_path.display().to_string(),
        "svg": svg_path.display().to_string(),
        "site": site,
        "steps": steps,
        "bn_mean_fluctuation_second_half": fluct(NormKind::BatchNorm),
        "un_mean_fluctuation_second_half": fluct(NormKind::Unified),
    }))
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// `(task, variant, norm, length)`: the runs that differ only in their seed.
type RunGroup = (String, String, String, u64);

/// The quality plots and `summary.md` from every ok row of `runs.csv` (every task in it,
/// not only this invocation's); returns the gaps.
fn summarize(rows: &[BTreeMap<String, String>], out: &Path) -> AnyResult<(Value, Vec<String>)> {
    // (task, variant, norm, length) -> qualities over seeds
    let mut by: BTreeMap<RunGroup, Vec<(u64, f64)>> = BTreeMap::new();
    for r in rows {
        let q: f64 = r["quality"].parse().unwrap_or(f64::NAN);
        if r["status"] != "ok" || !q.is_finite() {
            continue;
        }
        let length = r["length"].parse::<u64>()?;
        let seed = r["seed"].parse::<u64>()?;
        by.entry((r["task"].clone(), r["variant"].clone(), r["norm"].clone(), length))
            .or_default()
            .push((seed, q));
    }
    let norms = ["ln", "bn", "un", "pn"];
    let mut md = String::from("# Norm scaling study (issue 15)\n\n");
    let _ = writeln!(
        md,
        "Generated by `examples/examples/norm_scaling.rs` from `runs.csv`. UN/PowerNorm warm-up: {WARMUP_SOURCE}. Mean over seeds (n = seeds).\n"
    );
    let mut gaps = serde_json::Map::new();
    let mut files = Vec::new();
    for task in [Task::Vit, Task::Lm] {
        let t = task.name();
        let (metric, label, higher) = task.metric();
        let lengths: BTreeSet<u64> = by.keys().filter(|k| k.0 == t && k.1 == "full").map(|k| k.3).collect();
        if lengths.is_empty() {
            continue;
        }
        let mut chart = LineChart::new(
            format!("{label} against run length (lines: seed means; dots: seeds)"),
            "run length (updates)",
            label,
        )
        .with_log_x(true);
        let _ = writeln!(
            md,
            "## {t}: {metric} ({})\n",
            if higher { "higher is better" } else { "lower is better" }
        );
        md.push_str("| length | LN | BN | UN | PN | BN − LN | UN − LN | PN − LN |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        for (i, n) in norms.iter().enumerate() {
            let mut line = Vec::new();
            let mut dots = Vec::new();
            for &l in &lengths {
                if let Some(v) = by.get(&(t.into(), "full".into(), n.to_string(), l)) {
                    let qs: Vec<f64> = v.iter().map(|p| p.1).collect();
                    line.push((l as f64, mean(&qs)));
                    dots.extend(qs.iter().map(|&q| (l as f64, q)));
                }
            }
            chart = chart.with_series(n.to_uppercase(), line).with_dots(i, dots);
        }
        let mut task_gaps = serde_json::Map::new();
        for &l in &lengths {
            let m = |n: &str| {
                by.get(&(t.into(), "full".into(), n.into(), l))
                    .map(|v| (mean(&v.iter().map(|p| p.1).collect::<Vec<_>>()), v.len()))
            };
            let cell = |n: &str| m(n).map_or("–".into(), |(q, c)| format!("{q:.3} (n={c})"));
            let gap = |n: &str| match (m(n), m("ln")) {
                (Some((a, _)), Some((b, _))) => Some(a - b),
                _ => None,
            };
            let gcell = |n: &str| gap(n).map_or("–".into(), |g| format!("{g:+.3}"));
            let _ = writeln!(
                md,
                "| {l} | {} | {} | {} | {} | {} | {} | {} |",
                cell("ln"),
                cell("bn"),
                cell("un"),
                cell("pn"),
                gcell("bn"),
                gcell("un"),
                gcell("pn")
            );
            task_gaps.insert(
                l.to_string(),
                json!({ "bn_minus_ln": gap("bn"), "un_minus_ln": gap("un"), "pn_minus_ln": gap("pn") }),
            );
        }
        gaps.insert(t.into(), Value::Object(task_gaps));
        let svg = out.join(format!("quality_{t}.svg"));
        chart.save(&svg)?;
        files.push(svg.display().to_string());
        // ablation table: every UN variant at every length where one ran
        let abl: Vec<_> = by
            .iter()
            .filter(|(k, _)| k.0 == t && k.2 == "un" && k.1 != "full")
            .collect();
        if !abl.is_empty() {
            md.push_str("\nUN ablation (one mechanism off; Δ against full UN at the same length and seeds):\n\n| length | variant | quality | Δ vs full UN |\n| ---: | --- | ---: | ---: |\n");
            for ((_, v, _, l), qs) in abl {
                let full = by.get(&(t.into(), "full".into(), "un".into(), *l));
                let q = mean(&qs.iter().map(|p| p.1).collect::<Vec<_>>());
                let d = full.and_then(|f| {
                    let paired: Vec<f64> = qs
                        .iter()
                        .filter_map(|(s, q)| f.iter().find(|p| p.0 == *s).map(|p| q - p.1))
                        .collect();
                    (!paired.is_empty()).then(|| mean(&paired))
                });
                let _ = writeln!(
                    md,
                    "| {l} | {v} | {q:.3} (n={}) | {} |",
                    qs.len(),
                    d.map_or("–".into(), |d| format!("{d:+.3}"))
                );
            }
        }
        md.push('\n');
    }
    let path = out.join("summary.md");
    std::fs::write(&path, md)?;
    files.push(path.display().to_string());
    Ok((Value::Object(gaps), files))
}

fn run(a: Args) -> AnyResult<()> {
    let dev = a.common.setup(None)?;
    let t_all = Instant::now();
    let tasks: Vec<Task> = match a.task.as_str() {
        "both" => vec![Task::Vit, Task::Lm],
        t => vec![Task::parse(t)?],
    };
    let norms: Vec<NormKind> = a.norms.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
    if let Some(n) = norms.iter().find(|n| norm_rank(**n) >= NORMS.len()) {
        return Err(format!("norm `{n}` is not in the study; expected ln, bn, un or pn").into());
    }
    let seeds = a.seeds.clone().unwrap_or(if a.quick { vec![1] } else { vec![1, 2] });
    if seeds.is_empty() {
        return Err("--seeds is empty".into());
    }
    let lengths = |t: Task| a.lengths.clone().unwrap_or_else(|| t.default_lengths(a.quick));
    if tasks.iter().flat_map(|&t| lengths(t)).any(|l| l == 0) {
        return Err("run lengths must be at least 1".into());
    }
    let spec = |task, variant, norm, length, seed| Spec {
        length,
        task,
        seed,
        variant,
        norm_rank: norm_rank(norm),
    };

    // ---- the runs, short to long ----
    let mut specs = BTreeSet::new();
    for &t in &tasks {
        if !a.no_ladder {
            for l in lengths(t) {
                for &s in &seeds {
                    for &n in &norms {
                        specs.insert(spec(t, Variant::Full, n, l, s));
                    }
                }
            }
        }
        if a.un_ablation {
            let l = a
                .ablation_length
                .unwrap_or_else(|| lengths(t).into_iter().max().unwrap_or(1));
            for &s in &seeds {
                specs.insert(spec(t, Variant::Full, NormKind::Unified, l, s));
                for v in Variant::ABLATIONS.into_iter().filter(|v| v.applies(t)) {
                    specs.insert(spec(t, v, NormKind::Unified, l, s));
                }
            }
        }
    }
    // with --resume, lag outputs already written are kept and their runs not traced again
    let lag_csv = a.lag_run.map(|l| a.out.join(format!("lag_vit_{l}.csv")));
    let lag_kept = a.resume && lag_csv.as_ref().is_some_and(|p| p.exists());
    let lag: Vec<Spec> = match a.lag_run {
        Some(0) => return Err("--lag-run needs at least 1 step".into()),
        Some(_) if lag_kept => Vec::new(),
        Some(l) if tasks.contains(&Task::Vit) => [NormKind::BatchNorm, NormKind::Unified]
            .into_iter()
            .map(|n| spec(Task::Vit, Variant::Full, n, l, seeds[0]))
            .collect(),
        Some(_) => return Err("--lag-run traces the ViT; use --task vit or both".into()),
        None => Vec::new(),
    };
    if let Some(Opts::Vit(o)) = lag.first().map(|s| s.options(a.quick, true)) {
        // a wrong site name must fail now, not after hours of training
        let mut sites = Vec::new();
        Vit::new(o.model_config(), DType::F32, &dev)?.visit_norms_mut("", &mut |name, _| sites.push(name.to_string()));
        if !sites.contains(&a.lag_site) {
            return Err(format!(
                "--lag-site `{}` is not a norm site of the ViT; it has {}",
                a.lag_site,
                sites.join(", ")
            )
            .into());
        }
    }
    specs.extend(lag.iter().copied());

    // ---- what runs.csv already holds ----
    std::fs::create_dir_all(&a.out)?;
    let csv_path = a.out.join("runs.csv");
    let existing = read_records(&csv_path)?;
    if !existing.is_empty() && !a.resume {
        return Err(format!(
            "{} already holds {} runs: pass --resume to continue the study, or choose another --out",
            csv_path.display(),
            existing.len()
        )
        .into());
    }
    let done: BTreeSet<String> = existing.iter().map(row_key).collect();
    let tmp = std::env::temp_dir().join(format!("unigrad-norm-scaling-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let mut tracers: BTreeMap<usize, Tracer> = BTreeMap::new();
    let (mut ran, mut skipped) = (Vec::new(), 0usize);
    let mut lag_v = Value::Null;
    let total = specs.len();
    for (i, s) in specs.iter().enumerate() {
        let mut o = s.options(a.quick, a.quiet);
        let settings = Spec::settings(&o);
        let key = s.key(&settings);
        let traced = lag.contains(s);
        if done.contains(&key) && !traced {
            skipped += 1;
            continue;
        }
        if traced {
            let t = Tracer::new();
            if let Opts::Vit(v) = &mut o {
                v.trace = Some((a.lag_site.clone(), t.clone()));
            }
            tracers.insert(s.norm_rank, t);
        }
        let warm = s.norm_warmup_iters(&o);
        let r = train(s, o, &tmp, &dev)?;
        if !a.quiet {
            eprintln!(
                "[{}/{total}] {} {} {} steps seed {} {}: {} {:.4} ({:.1} s){}",
                i + 1,
                s.task.name(),
                s.norm().short_name(),
                s.length,
                s.seed,
                s.variant.name(),
                s.task.metric().0,
                r.quality,
                r.wall_s,
                if done.contains(&key) {
                    ", trained again to trace it for the lag plot"
                } else {
                    ""
                }
            );
        }
        let row = json!({
            "task": s.task.name(), "variant": s.variant.name(), "norm": s.norm().short_name(),
            "length": s.length, "seed": s.seed, "quality": r.quality, "train_loss": r.train_loss,
            "wall_s": r.wall_s, "un_switches": r.un_switches, "status": r.status,
        });
        if !done.contains(&key) {
            let fields = [
                s.task.name().to_string(),
                s.variant.name().into(),
                s.norm().short_name().into(),
                s.length.to_string(),
                s.seed.to_string(),
                lr_warmup(s.length).to_string(),
                warm.to_string(),
                s.task.metric().0.into(),
                r.quality.to_string(),
                r.train_loss.to_string(),
                format!("{:.2}", r.wall_s),
                r.un_switches.to_string(),
                r.status,
                settings,
            ];
            append_row(&csv_path, &HEADER, &fields)?;
        }
        ran.push(row);
        // the lag outputs as soon as both traced runs are done (an interruption later keeps them)
        if let (true, Some(l)) = (traced, a.lag_run) {
            if lag.iter().all(|s| tracers.contains_key(&s.norm_rank)) {
                lag_v = lag_outputs(&tracers, &a.lag_site, l, &a.out)?;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    if let (true, Some(p)) = (lag_kept, &lag_csv) {
        lag_v = json!({ "csv": p.display().to_string(), "kept_from_earlier_run": true });
    }
    let rows = read_records(&csv_path)?;
    let (gaps, mut files) = summarize(&rows, &a.out)?;
    files.insert(0, csv_path.display().to_string());
    if !a.quiet {
        eprintln!(
            "{} runs ({skipped} already in {}); files: {}",
            ran.len(),
            csv_path.display(),
            files.join(", ")
        );
    }
    print_json_line(&json!({
        "runs": ran,
        "skipped": skipped,
        "csv_rows": rows.len(),
        "gaps_vs_ln": gaps,
        "lag": lag_v,
        "un_warmup_frac": UN_WARMUP_FRAC,
        "pn_warmup_frac": PN_WARMUP_FRAC,
        "lr_warmup_frac": LR_WARMUP_FRAC,
        "warmup_source": WARMUP_SOURCE,
        "files": files,
        "quick": a.quick,
        "device": dev.name(),
        "wall_s": t_all.elapsed().as_secs_f64(),
    }))?;
    Ok(())
}
