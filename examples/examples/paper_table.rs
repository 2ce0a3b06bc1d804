//! Reproduce the shape of the UN paper's main table in miniature: one model per
//! normalization on three tasks, plus the inference speed of the folded norms.
//!
//! ```sh
//! cargo run --release -p unigrad-examples --example paper_table             # ≤ 30 min on 2 cores
//! cargo run --release -p unigrad-examples --example paper_table -- --quick  # smoke test, < 2 min
//! cargo run --release -p unigrad-examples --example paper_table -- --norms ln,un --tasks mt
//! cargo run --release -p unigrad-examples --example paper_table -- --checkpoint runs/pt --resume
//! ```
//!
//! Rows: LayerNorm, BatchNorm, PowerNorm, UN, and RMSNorm as an extra row. Columns:
//! whether the norm is "offline" at inference (a fixed per-channel affine that folds into
//! the next Linear), validation bits per byte of a byte-level LM on Shakespeare, test BLEU
//! of a German→English Transformer (beam search; greedy in parentheses), test accuracy of
//! a ViT on Fashion-MNIST, and the eval-forward speedup over LayerNorm of the LM with its
//! norms folded by `unigrad::nn::fold` (measured side by side, interleaved, median).
//! Every run uses the same seed and the training loops of `unigrad_examples::train`,
//! which the `translate` and `vit` examples also run. The table goes to stdout and to
//! `--out` (default `runs/paper_table.md`); the last stdout line is one JSON object with
//! every metric.

use clap::Parser;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;
use unigrad::nn::fold::fold_for_inference;
use unigrad::prelude::*;
use unigrad_examples::cli::{main_with, print_json_line, AnyResult, CommonArgs};
use unigrad_examples::train::lm::{train_lm, LmOptions};
use unigrad_examples::train::speed::{count_subnormal, time_interleaved, Timing};
use unigrad_examples::train::translate::{train_translate, TranslateOptions};
use unigrad_examples::train::vit::{train_vit, VitOptions};
use unigrad_examples::train::TrainError;

/// Train one model per normalization on three tasks and print the paper-style table.
#[derive(Parser, Debug)]
#[command(version, long_about = None)]
struct Args {
    /// Tiny models and a few steps per run (smoke test, under 2 minutes on 2 cores).
    #[arg(long)]
    quick: bool,
    /// Norms (rows), comma-separated, from ln, bn, pn, un, rms.
    #[arg(long, default_value = "ln,bn,pn,un,rms", value_delimiter = ',')]
    norms: Vec<String>,
    /// Tasks (columns), comma-separated, from lm, mt, vit.
    #[arg(long, default_value = "lm,mt,vit", value_delimiter = ',')]
    tasks: Vec<String>,
    /// Override the LM training steps.
    #[arg(long)]
    lm_steps: Option<u64>,
    /// Override the translation training steps.
    #[arg(long)]
    mt_steps: Option<u64>,
    /// Override the ViT training steps.
    #[arg(long)]
    vit_steps: Option<u64>,
    /// Beam size of the translation column (0: greedy only).
    #[arg(long)]
    beam: Option<usize>,
    /// Timed rounds of the inference-speed measurement.
    #[arg(long)]
    speed_rounds: Option<usize>,
    /// Seed of every run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[command(flatten)]
    common: CommonArgs,
    /// Folder for per-run checkpoints (`<task>-<norm>.safetensors`) and metrics
    /// (`<task>-<norm>.json`).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Reuse the metrics of runs already finished in --checkpoint with the same settings
    /// (an interrupted table continues where it stopped).
    #[arg(long, requires = "checkpoint")]
    resume: bool,
    /// Where to write the markdown table.
    #[arg(long, default_value = "runs/paper_table.md")]
    out: PathBuf,
    /// No progress bars or log lines; stdout has the table and the JSON line.
    #[arg(long)]
    quiet: bool,
}

/// One timed eval forward.
type Forward<'a> = Box<dyn Fn() -> Result<Tensor> + 'a>;

/// The options of a run as a string, without the fields that do not change its result
/// (progress label, quietness): a saved run is reused only when this matches.
macro_rules! settings_of {
    ($o:expr) => {{
        let mut k = $o.clone();
        k.label.clear();
        k.quiet = false;
        format!("{k:?}")
    }};
}

fn to_json<T: serde::Serialize>(r: T) -> Result<Value, TrainError> {
    serde_json::to_value(r).map_err(|e| TrainError::Invalid(e.to_string()))
}

fn main() {
    main_with("paper_table", || run(Args::parse()));
}

/// Display name of a row.
fn method(kind: NormKind) -> &'static str {
    match kind {
        NormKind::LayerNorm => "LayerNorm",
        NormKind::BatchNorm => "BatchNorm",
        NormKind::PowerNorm => "PowerNorm",
        NormKind::Unified => "UN",
        NormKind::RmsNorm => "RMSNorm (extra)",
    }
}

/// Whether the norm is a fixed per-channel affine at inference (foldable, "offline").
fn offline(kind: NormKind) -> bool {
    kind.uses_batch_statistics()
}

/// Runs one task for one norm, or reuses its saved metrics. A diverged run is a result
/// (`{"diverged": ...}`), not an error, so the table still fills.
struct Runner<'a> {
    dir: Option<&'a Path>,
    resume: bool,
    quiet: bool,
}

impl Runner<'_> {
    fn run<F>(&self, task: &str, norm: NormKind, settings: &str, f: F) -> AnyResult<Value>
    where
        F: FnOnce(Option<PathBuf>) -> Result<Value, TrainError>,
    {
        let stem = format!("{task}-{}", norm.short_name());
        let json_path = self.dir.map(|d| d.join(format!("{stem}.json")));
        if let (true, Some(p)) = (self.resume, &json_path) {
            if let Ok(text) = std::fs::read_to_string(p) {
                let saved: Value = serde_json::from_str(&text)?;
                if saved.get("settings").and_then(Value::as_str) == Some(settings) {
                    if !self.quiet {
                        eprintln!("{stem}: reusing {}", p.display());
                    }
                    return Ok(saved["metrics"].clone());
                }
            }
        }
        let ckpt = self.dir.map(|d| d.join(format!("{stem}.safetensors")));
        let metrics = match f(ckpt) {
            Ok(v) => v,
            Err(TrainError::Diverged { step, loss }) => json!({ "diverged": { "step": step, "loss": loss } }),
            Err(e) => return Err(e.into()),
        };
        if let Some(p) = &json_path {
            if let Some(d) = p.parent() {
                std::fs::create_dir_all(d)?;
            }
            let doc = json!({ "settings": settings, "metrics": metrics });
            std::fs::write(p, serde_json::to_string_pretty(&doc)?)?;
        }
        Ok(metrics)
    }
}

/// Eval-forward time of every trained LM, plain and folded, on one fixed batch, timed
/// side by side (`unigrad_examples::train::speed`).
fn speed(lms: &[(NormKind, TransformerLm)], batch: usize, rounds: usize, dev: &Device) -> AnyResult<Value> {
    let Some((_, first)) = lms.first() else {
        return Ok(Value::Null);
    };
    let seq = first.config().max_seq;
    let ids: Vec<i64> = (0..batch * seq).map(|i| ((i * 7919) % 251) as i64).collect();
    let x = Tensor::from_vec(ids, &[batch, seq], dev)?;
    let mut folded = Vec::new();
    for (kind, m) in lms {
        let f = fold_for_inference(m)?;
        // the folded model must compute the same logits
        let (a, b) = no_grad(|| -> Result<_> { Ok((m.forward(&x, None)?, f.forward(&x, None)?)) })?;
        let diff = a
            .to_vec_f64()?
            .iter()
            .zip(b.to_vec_f64()?)
            .fold(0.0f64, |d, (p, q)| d.max((p - q).abs()));
        let subnormal = count_subnormal(&f.parameters())?;
        folded.push((*kind, f, diff, subnormal, m));
    }
    let mut names = Vec::new();
    let mut variants: Vec<Forward<'_>> = Vec::new();
    for (kind, f, _, _, m) in &folded {
        let xs = &x;
        names.push(format!("{}_plain", kind.short_name()));
        variants.push(Box::new(move || no_grad(|| m.forward(xs, None))));
        names.push(format!("{}_folded", kind.short_name()));
        variants.push(Box::new(move || f.forward(xs, None)));
    }
    let times = time_interleaved(&variants, 2, rounds)?;
    let t = |name: String| names.iter().position(|n| *n == name).map(|i| times[i]);
    // the deployable model: folded where the norm is offline, the plain model otherwise
    let deployed = |kind: NormKind| {
        let s = kind.short_name();
        t(format!("{s}_{}", if offline(kind) { "folded" } else { "plain" }))
    };
    let base = deployed(NormKind::LayerNorm);
    let ratio = |num: Option<f64>, den: Option<f64>| match (num, den) {
        (Some(a), Some(b)) if b > 0.0 => json!(a / b),
        _ => Value::Null,
    };
    let mut out = serde_json::Map::new();
    for (kind, f, diff, subnormal, _) in &folded {
        let s = kind.short_name();
        let (plain, fold, dep) = (t(format!("{s}_plain")), t(format!("{s}_folded")), deployed(*kind));
        let ms = |x: Option<Timing>| x.map(|x| x.wall_s * 1e3);
        let cpu_ms = |x: Option<Timing>| x.and_then(|x| x.cpu_s).map(|c| c * 1e3);
        out.insert(
            s.into(),
            json!({
                "plain_ms": ms(plain),
                "folded_ms": ms(fold),
                "plain_cpu_ms": cpu_ms(plain),
                "folded_cpu_ms": cpu_ms(fold),
                "deployed": if offline(*kind) { "folded" } else { "plain" },
                "speedup_vs_ln": ratio(ms(base), ms(dep)),
                "cpu_speedup_vs_ln": ratio(cpu_ms(base), cpu_ms(dep)),
                "norms_removed": f.removed_norms(),
                "norm_sites": f.sites().len(),
                "max_abs_logit_diff": diff,
                "subnormal_folded_params": subnormal,
            }),
        );
    }
    Ok(json!({ "batch": batch, "seq": seq, "rounds": rounds, "per_norm": out }))
}

fn fmt_metric(v: &Value, key: &str, digits: usize) -> String {
    if let Some(d) = v.get("diverged") {
        return format!("diverged (step {})", d["step"]);
    }
    match v.get(key).and_then(Value::as_f64) {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "–".into(),
    }
}

fn run(a: Args) -> AnyResult<()> {
    let dev = a.common.setup(None)?;
    let t_all = Instant::now();
    let norms: Vec<NormKind> = a.norms.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
    for t in &a.tasks {
        if !["lm", "mt", "vit"].contains(&t.as_str()) {
            return Err(format!("unknown task `{t}`; expected lm, mt or vit").into());
        }
    }
    let has = |t: &str| a.tasks.iter().any(|x| x == t);
    let runner = Runner {
        dir: a.checkpoint.as_deref(),
        resume: a.resume,
        quiet: a.quiet,
    };

    let (mut lm_o, mut mt_o, mut vit_o) = if a.quick {
        (LmOptions::quick(), TranslateOptions::quick(), VitOptions::quick())
    } else {
        (LmOptions::default(), TranslateOptions::default(), VitOptions::default())
    };
    if let Some(s) = a.lm_steps {
        lm_o.steps = s;
    }
    if let Some(s) = a.mt_steps {
        mt_o.steps = s;
    }
    if let Some(s) = a.vit_steps {
        vit_o.steps = s;
    }
    if let Some(b) = a.beam {
        mt_o.beam = b;
    }
    for o in [&mut lm_o.quiet, &mut mt_o.quiet, &mut vit_o.quiet] {
        *o = a.quiet;
    }
    lm_o.seed = a.seed;
    mt_o.seed = a.seed;
    vit_o.seed = a.seed;
    mt_o.show = 0;
    vit_o.eval_every = 0;
    mt_o.eval_every = 0;
    let speed_rounds = a.speed_rounds.unwrap_or(if a.quick { 3 } else { 15 });

    let total = norms.len() * a.tasks.len();
    let mut done = 0;
    let mut label = |task: &str, n: NormKind| {
        done += 1;
        format!("[{done}/{total}] {task} {n}")
    };
    let mut results: serde_json::Map<String, Value> = serde_json::Map::new();
    let mut lms = Vec::new();
    let mut lm_rows = serde_json::Map::new();
    if has("lm") {
        for &n in &norms {
            let mut o = lm_o.clone();
            o.norm = n;
            o.label = label("lm", n);
            let settings = settings_of!(o);
            let mut model = None;
            let v = runner.run("lm", n, &settings, |ckpt| {
                o.checkpoint = ckpt;
                let (r, m) = train_lm(&o, &dev)?;
                model = Some(m);
                to_json(r)
            })?;
            if let Some(m) = model {
                lms.push((n, m));
            } else if let Some(p) = a
                .checkpoint
                .as_ref()
                .map(|d| d.join(format!("lm-{}.safetensors", n.short_name())))
            {
                // reused metrics: reload the saved model for the speed measurement
                let m = TransformerLm::new(o.model_config(), DType::F32, &dev)?;
                if unigrad::nn::checkpoint::load(&m, &p).is_ok() {
                    let mut m = m;
                    Module::eval(&mut m);
                    lms.push((n, m));
                }
            }
            lm_rows.insert(n.short_name().into(), v);
        }
        results.insert("lm".into(), Value::Object(lm_rows.clone()));
    }
    let mut mt_rows = serde_json::Map::new();
    if has("mt") {
        for &n in &norms {
            let mut o = mt_o.clone();
            o.norm = n;
            o.label = label("translate", n);
            let settings = settings_of!(o);
            let v = runner.run("mt", n, &settings, |ckpt| {
                o.checkpoint = ckpt;
                let r = train_translate(&o, &dev)?;
                to_json(r)
            })?;
            mt_rows.insert(n.short_name().into(), v);
        }
        results.insert("translate".into(), Value::Object(mt_rows.clone()));
    }
    let mut vit_rows = serde_json::Map::new();
    if has("vit") {
        for &n in &norms {
            let mut o = vit_o.clone();
            o.norm = n;
            o.label = label("vit", n);
            let settings = settings_of!(o);
            let v = runner.run("vit", n, &settings, |ckpt| {
                o.checkpoint = ckpt;
                let r = train_vit(&o, &dev)?;
                to_json(r)
            })?;
            vit_rows.insert(n.short_name().into(), v);
        }
        results.insert("vit".into(), Value::Object(vit_rows.clone()));
    }
    let speed_v = if lms.iter().any(|(k, _)| *k == NormKind::LayerNorm) {
        if !a.quiet {
            eprintln!("timing eval forwards ({speed_rounds} rounds)...");
        }
        speed(&lms, if a.quick { 4 } else { 32 }, speed_rounds, &dev)?
    } else {
        Value::Null
    };
    results.insert("speed".into(), speed_v.clone());

    // ---- the table ----
    let beam = mt_o.beam;
    let mut md = String::new();
    md.push_str(&format!(
        "| Method | Offline at inference? | LM val bpb ↓ | Translation BLEU ↑ (beam {beam}; greedy) | ViT acc % ↑ | Inference speedup vs LN |\n"
    ));
    md.push_str("| --- | :---: | ---: | ---: | ---: | ---: |\n");
    for &n in &norms {
        let s = n.short_name();
        let lm = lm_rows
            .get(s)
            .map(|v| fmt_metric(v, "val_bpb", 3))
            .unwrap_or("–".into());
        let mt = mt_rows
            .get(s)
            .map(|v| {
                let g = fmt_metric(v, "bleu_greedy", 2);
                if v.get("diverged").is_some() || beam == 0 {
                    g
                } else {
                    format!("{} ({g})", fmt_metric(v, "bleu_beam", 2))
                }
            })
            .unwrap_or("–".into());
        let vit = vit_rows
            .get(s)
            .map(|v| fmt_metric(v, "test_acc", 2))
            .unwrap_or("–".into());
        let sp = match speed_v["per_norm"].get(s) {
            Some(v) => match (v["speedup_vs_ln"].as_f64(), v["cpu_speedup_vs_ln"].as_f64()) {
                (Some(w), Some(c)) => format!("{w:.2}× (CPU {c:.2}×)"),
                (Some(w), None) => format!("{w:.2}×"),
                _ => "–".into(),
            },
            None => "–".into(),
        };
        md.push_str(&format!(
            "| {} | {} | {lm} | {mt} | {vit} | {sp} |\n",
            method(n),
            if offline(n) { "✓" } else { "✗" }
        ));
    }
    let mut notes = vec![
        format!(
            "LM: byte-level Transformer on Shakespeare, d={} L={} seq={} batch={} steps={} (pre-norm); validation bits per byte on {} windows.",
            lm_o.d_model,
            lm_o.layers,
            lm_o.seq,
            lm_o.batch,
            lm_o.steps,
            lm_o.eval_windows.map_or("all".into(), |w| w.to_string())
        ),
        format!(
            "Translation: Ding de→en pairs ≤ {} bytes, joint BPE {} learned on train, {}-norm Seq2Seq d={} {}+{} layers, batch {} sentences, {} steps, label smoothing {}, inverse-sqrt LR (peak {}, warmup {}); test BLEU-4 (13a) on {} test pairs.",
            mt_o.max_bytes,
            mt_o.vocab,
            if mt_o.pre_norm { "pre" } else { "post" },
            mt_o.d_model,
            mt_o.enc_layers,
            mt_o.dec_layers,
            mt_o.batch,
            mt_o.steps,
            mt_o.label_smoothing,
            mt_o.lr,
            mt_o.warmup,
            mt_o.max_test.map_or("all".into(), |m| format!("the first {m}"))
        ),
        format!(
            "ViT: Fashion-MNIST subset (8k train / 2k test), 7×7 patches, d={} L={}, batch {}, {} steps; UN with outlier filtration (vision).",
            vit_o.d_model, vit_o.layers, vit_o.batch, vit_o.steps
        ),
        format!(
            "UN/PowerNorm warmup: {:.0}% of each run's steps (the reference defaults, 4k/10k iterations, exceed these runs). Seed {} for every run.",
            100.0 * lm_o.norm_warmup_frac,
            a.seed
        ),
    ];
    if !speed_v.is_null() {
        notes.push(format!(
            "Speed: median eval forward of each trained LM on a {}×{} batch, {} interleaved rounds on {}; offline norms are timed after `unigrad::nn::fold::fold_for_inference` (BN and UN removed, PowerNorm keeps its per-token group scaling), LN/RMSNorm as they are. Speedup = LN time / time of the row's deployed model, from wall-clock medians and (in parentheses) from process-CPU-time medians, which discount time spent waiting for a core on a loaded machine.",
            speed_v["batch"], speed_v["seq"], speed_v["rounds"], dev
        ));
    }
    if a.quick {
        notes.push("--quick: tiny models and a few steps; the numbers only show that everything runs.".into());
    }
    md.push('\n');
    for n in &notes {
        md.push_str(&format!("- {n}\n"));
    }
    println!("{md}");
    if let Some(d) = a.out.parent() {
        if !d.as_os_str().is_empty() {
            std::fs::create_dir_all(d)?;
        }
    }
    std::fs::write(&a.out, &md)?;
    if !a.quiet {
        eprintln!("table written to {}", a.out.display());
    }
    results.insert("table_path".into(), json!(a.out.display().to_string()));
    results.insert("quick".into(), json!(a.quick));
    results.insert("device".into(), json!(dev.name()));
    results.insert("seed".into(), json!(a.seed));
    results.insert("wall_s".into(), json!(t_all.elapsed().as_secs_f64()));
    print_json_line(&Value::Object(results))?;
    Ok(())
}
