//! Training loops of the example programs, as library code.
//!
//! `translate`, `vit` and `paper_table` share these loops: the two single-task examples are
//! thin command-line front ends over [`translate::train_translate`] and [`vit::train_vit`],
//! and `paper_table` calls the same functions in-process once per normalization (plus
//! [`lm::train_lm`] for the byte-level language model), so every number in the table comes
//! from exactly the code a user can run on its own The `norm_scaling` study calls them the same way
//! for every norm, run length and seed. Each loop takes a plain options struct
//! (with `Default` = the example's defaults and a `quick()` preset for smoke tests) and
//! returns a serialisable result struct that the programs print as one JSON line.
//!
//! What lives here:
//!
//! * [`TrainError`]: one error type over tensor, data and I/O failures.
//! * [`Reporter`]: a progress bar that hides itself with `--quiet` or when stderr is not a
//!   terminal, plus log lines that respect `--quiet`.
//! * [`norm_config`]: the per-task norm hyperparameters (UN / PowerNorm warmup scaled to
//!   the run length, UN outlier filtration for vision as the UN authors recommend).
//! * Checkpoint helpers ([`save_state`], [`load_state`]): model + optimizer + metadata
//!   through `unigrad::nn::checkpoint` (safetensors), for `--checkpoint` / `--resume`. A
//!   resumed run restores parameters, norm buffers (running statistics, UN/PowerNorm state)
//!   and optimizer moments, and replays the data order to the saved step; the dropout and
//!   augmentation streams are re-seeded from `seed + step`, so it continues the same run
//!   but is not bit-identical to an uninterrupted one.
//! * [`beam`]: batched beam search and greedy decoding, independent of the model.
//! * [`speed`]: side-by-side timing (rotating rounds, wall and CPU-time medians).

pub mod beam;
pub mod lm;
pub mod speed;
pub mod translate;
pub mod vit;

use crate::csv::CsvWriter;
use indicatif::{ProgressBar, ProgressDrawTarget};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use unigrad::nn::checkpoint;
use unigrad::prelude::*;

/// Everything that can stop a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A tensor operation, model or checkpoint call failed.
    #[error(transparent)]
    Tensor(#[from] unigrad::core::Error),
    /// Reading or preparing a dataset failed.
    #[error(transparent)]
    Data(#[from] crate::Error),
    /// Writing an output file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Bad options or an inconsistent resume.
    #[error("{0}")]
    Invalid(String),
    /// The loss became NaN or infinite.
    #[error("training diverged at step {step}: loss {loss}")]
    Diverged {
        /// The step (1-based) whose loss was not finite.
        step: u64,
        /// The loss value.
        loss: f64,
    },
}

/// Shorthand for results of this module.
pub type TrainResult<T> = std::result::Result<T, TrainError>;

impl TrainError {
    /// An [`TrainError::Io`] for `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> TrainError {
        TrainError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

/// Progress bar plus log lines for one training run.
///
/// The bar draws on stderr only when stderr is a terminal and the run is not quiet; log lines
/// go to stderr (through the bar, so they do not tear it) unless quiet. Stdout stays free
/// for the final JSON line.
pub struct Reporter {
    bar: ProgressBar,
    quiet: bool,
}

impl Reporter {
    /// A reporter over `total` steps labelled `label`; `quiet` hides bar and log lines.
    pub fn new(total: u64, label: &str, quiet: bool) -> Reporter {
        let bar = crate::cli::progress_bar(total, label);
        if quiet {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        Reporter { bar, quiet }
    }

    /// The underlying bar (to set the position or the message).
    pub fn bar(&self) -> &ProgressBar {
        &self.bar
    }

    /// Print one log line on stderr (nothing when quiet).
    pub fn log(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            if self.bar.is_hidden() {
                eprintln!("{}", msg.as_ref());
            } else {
                self.bar.println(msg.as_ref());
            }
        }
    }

    /// Remove the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Reporter {
    /// A run that ends early (an error, a diverged loss) removes its bar too.
    fn drop(&mut self) {
        self.finish();
    }
}

/// Which kind of task a norm is configured for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskKind {
    /// Language (LM, translation): UN outlier filtration off, as the UN authors suggest.
    Language,
    /// Vision (ViT): UN outlier filtration on, as the UN authors suggest.
    Vision,
}

/// The norm configuration the examples use for `kind` in a run of `steps` updates.
///
/// UN and PowerNorm switch from per-batch statistics to their smoothed / running ones after
/// `warmup_iters` training iterations (reference defaults 4,000 and 10,000, sized for runs of
/// 50k+ updates). The miniature runs here are far shorter, so the warmup is the fraction
/// `warmup_frac` of the run (at least 1 iteration), counted in norm forward calls = steps.
/// `None` keeps the reference defaults. Everything else is the reference default.
pub fn norm_config(kind: NormKind, task: TaskKind, steps: u64, warmup_frac: Option<f64>) -> NormConfig {
    let mut cfg: NormConfig = kind.into();
    if let Some(f) = warmup_frac {
        let w = ((steps as f64 * f.max(0.0)).round() as u64).max(1);
        cfg.un.warmup_iters = w;
        cfg.pn.warmup_iters = w;
    }
    cfg.un.outlier_filtration = task == TaskKind::Vision;
    cfg
}

/// `cfg` with its UN hyperparameters replaced by `un`, keeping the warm-up that
/// [`norm_config`] scaled to the run (`None`: `cfg` unchanged). The options' `un` field.
pub fn with_un(mut cfg: NormConfig, un: Option<unigrad::nn::norm::UnConfig>) -> NormConfig {
    if let Some(u) = un {
        cfg.un = unigrad::nn::norm::UnConfig {
            warmup_iters: cfg.un.warmup_iters,
            ..u
        };
    }
    cfg
}

/// Path of the optimizer file next to a model checkpoint: `<path>.opt`.
pub fn opt_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".opt");
    PathBuf::from(s)
}

/// Metadata key holding the model configuration string of a checkpoint.
pub const META_CONFIG: &str = "config";
/// Metadata key holding the number of updates done when the checkpoint was written.
pub const META_STEP: &str = "step";

/// Save `model` to `path` and `opt` to `<path>.opt` (both atomic safetensors files), with
/// the configuration string and the step in the metadata.
pub fn save_state<M: Module + ?Sized, O: Optimizer + ?Sized>(
    model: &M,
    opt: &O,
    path: &Path,
    config: &str,
    step: u64,
) -> TrainResult<()> {
    let meta: HashMap<String, String> = [
        (META_CONFIG.to_string(), config.to_string()),
        (META_STEP.to_string(), step.to_string()),
    ]
    .into();
    checkpoint::save_with_metadata(model, path, &meta)?;
    checkpoint::save_optimizer(opt, opt_path(path), &meta)?;
    Ok(())
}

/// Restore `model` from `path` and `opt` from `<path>.opt` after checking that the file was
/// written for the same configuration string. Returns the step stored in the file.
pub fn load_state<M: Module + ?Sized, O: Optimizer + ?Sized>(
    model: &M,
    opt: &mut O,
    path: &Path,
    config: &str,
) -> TrainResult<u64> {
    let sd = checkpoint::load_tensors(path)?;
    if let Some(saved) = sd.metadata.get(META_CONFIG) {
        if saved != config {
            return Err(TrainError::Invalid(format!(
                "{}: saved with `{saved}`, but this run is `{config}`",
                path.display()
            )));
        }
    }
    checkpoint::apply_state(model, &sd, true)?;
    checkpoint::load_optimizer(opt, opt_path(path))?;
    let step = match sd.metadata.get(META_STEP) {
        Some(s) => s
            .parse::<u64>()
            .map_err(|e| TrainError::Invalid(format!("{}: bad step `{s}`: {e}", path.display())))?,
        None => opt.steps(),
    };
    Ok(step)
}

/// The optimizer every trainer uses — Adam(W) over `model`'s parameters with no decay on
/// norms and biases (`decay_groups`) — restored from `resume` when given (the checkpoint
/// must have been written for `config`). Returns it with the step to continue from.
pub fn adam_resumed<M: Module + ?Sized>(
    model: &M,
    cfg: AdamConfig,
    weight_decay: f64,
    resume: Option<&Path>,
    config: &str,
) -> TrainResult<(Adam, u64)> {
    let mut opt = Adam::new(decay_groups(model.named_params(), weight_decay), cfg)?;
    let start = match resume {
        Some(r) => load_state(model, &mut opt, r, config)?,
        None => 0,
    };
    Ok((opt, start))
}

/// Linear warmup over `warmup` updates (at most `steps`), then cosine decay from `lr` to
/// `lr * min_ratio` at update `steps`: the schedule of the LM and ViT recipes, validated.
pub fn warmup_cosine(lr: f64, warmup: u64, steps: u64, min_ratio: f64) -> TrainResult<LrSchedule> {
    let sched = LrSchedule::WarmupCosine {
        lr,
        warmup: warmup.min(steps),
        total: steps,
        min_lr: lr * min_ratio,
    };
    sched.validate()?;
    Ok(sched)
}

/// One optimizer update from `loss`, the step every training loop takes: set the learning
/// rate to `lr`, clear the gradients, backpropagate, clip the global gradient norm to `clip`
/// (0: no clipping), step. Returns the loss value; a value that is not finite ends the run
/// with [`TrainError::Diverged`] naming update `done` (1-based).
pub fn update<O: Optimizer + ?Sized>(opt: &mut O, loss: &Tensor, lr: f64, clip: f64, done: u64) -> TrainResult<f64> {
    opt.set_lr(lr)?;
    opt.zero_grad();
    loss.backward()?;
    if clip > 0.0 {
        clip_grad_norm(&opt.params(), clip)?;
    }
    opt.step()?;
    let lv = loss.to_scalar()?;
    if !lv.is_finite() {
        return Err(TrainError::Diverged { step: done, loss: lv });
    }
    Ok(lv)
}

/// The training curve of a run as CSV (`--csv`): one row per update with the step, the
/// training loss, the periodic evaluation (empty between evaluations), the learning rate
/// and any extra columns. Without a path every call does nothing.
pub struct Curve(Option<CsvWriter>);

impl Curve {
    /// A curve written to `path` (`None`: no file) with the columns
    /// `step, train_loss, <eval>, lr, <extra...>`.
    pub fn create(path: Option<&Path>, eval: &str, extra: &[&str]) -> TrainResult<Curve> {
        let mut cols = vec!["step", "train_loss", eval, "lr"];
        cols.extend_from_slice(extra);
        Ok(Curve(path.map(|p| CsvWriter::create(p, &cols)).transpose()?))
    }

    /// Append the row of update `done` (1-based); `extra` fills the extra columns.
    pub fn row(&mut self, done: u64, loss: f64, eval: Option<f64>, lr: f64, extra: &[String]) -> TrainResult<()> {
        if let Some(w) = self.0.as_mut() {
            let eval = eval.map(|v| v.to_string()).unwrap_or_default();
            let mut row = vec![done.to_string(), loss.to_string(), eval, lr.to_string()];
            row.extend_from_slice(extra);
            w.write_row(row)?;
        }
        Ok(())
    }

    /// Close the file (it appears atomically) and log where it went.
    pub fn finish(self, rep: &Reporter) -> TrainResult<()> {
        if let Some(w) = self.0 {
            rep.log(format!("training curve: {}", w.finish()?.display()));
        }
        Ok(())
    }
}

/// Whether a run of `total` updates with periodic evaluation every `every` updates (0: none)
/// evaluates after update `done`; the final evaluation after the last update is separate.
pub fn eval_due(every: u64, done: u64, total: u64) -> bool {
    every > 0 && done % every == 0 && done < total
}

/// Mean of the last `n` values (NaN when empty): the smoothed training loss the programs
/// report.
pub fn tail_mean(values: &[f64], n: usize) -> f64 {
    let tail = &values[values.len().saturating_sub(n)..];
    if tail.is_empty() {
        f64::NAN
    } else {
        tail.iter().sum::<f64>() / tail.len() as f64
    }
}

/// Token ids as an i64 tensor of `shape`.
pub fn ids_tensor(ids: &[u32], shape: &[usize], dev: &Device) -> TrainResult<Tensor> {
    Ok(Tensor::from_vec(
        ids.iter().map(|&x| x as i64).collect::<Vec<i64>>(),
        shape,
        dev,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norm_config_scales_warmup() {
        let c = norm_config(NormKind::Unified, TaskKind::Vision, 1000, Some(0.1));
        assert_eq!(c.un.warmup_iters, 100);
        assert_eq!(c.pn.warmup_iters, 100);
        assert!(c.un.outlier_filtration);
        let c = norm_config(NormKind::Unified, TaskKind::Language, 3, Some(0.1));
        assert_eq!(c.un.warmup_iters, 1);
        assert!(!c.un.outlier_filtration);
        let d = norm_config(NormKind::PowerNorm, TaskKind::Language, 3, None);
        assert_eq!(d.pn.warmup_iters, NormConfig::from(NormKind::PowerNorm).pn.warmup_iters);
    }

    #[test]
    fn eval_cadence() {
        let due: Vec<u64> = (1..=10).filter(|&d| eval_due(3, d, 9)).collect();
        assert_eq!(due, vec![3, 6]);
        assert!(!(1..=10).any(|d| eval_due(0, d, 10)));
    }

    #[test]
    fn curve_rows() {
        let path = std::env::temp_dir().join(format!("unigrad-curve-{}.csv", std::process::id()));
        let mut c = Curve::create(Some(&path), "val", &["tps"]).unwrap();
        c.row(1, 2.5, None, 0.1, &["7.0".into()]).unwrap();
        c.row(2, 2.0, Some(1.5), 0.05, &["8.0".into()]).unwrap();
        assert!(c.row(3, 2.0, None, 0.05, &[]).is_err(), "a row must fill every column");
        c.finish(&Reporter::new(1, "t", true)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "step,train_loss,val,lr,tps\n1,2.5,,0.1,7.0\n2,2,1.5,0.05,8.0\n");
        std::fs::remove_file(&path).ok();
        let mut none = Curve::create(None, "val", &[]).unwrap();
        none.row(1, 1.0, None, 0.1, &[]).unwrap();
    }

    #[test]
    fn update_reports_divergence() {
        let dev = unigrad::cpu::cpu();
        let w = Tensor::from_vec(vec![1.0f32, 2.0], &[2], &dev).unwrap().requires_grad();
        let mut opt = Sgd::new(
            vec![unigrad::nn::ParamGroup::new(vec![("w".into(), w.clone())], 0.0)],
            0.1,
            0.0,
            false,
        )
        .unwrap();
        let lv = update(&mut opt, &w.sqr().unwrap().sum_all().unwrap(), 0.1, 0.0, 1).unwrap();
        assert_eq!(lv, 5.0);
        // SGD without momentum: w - lr * 2w
        for (got, want) in w.to_vec::<f32>().unwrap().into_iter().zip([0.8f32, 1.6]) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        let inf = w.mul_scalar(f64::INFINITY).unwrap().sum_all().unwrap();
        match update(&mut opt, &inf, 0.1, 1.0, 2) {
            Err(TrainError::Diverged { step: 2, loss }) => assert!(loss.is_infinite()),
            other => panic!("expected divergence at update 2, got {other:?}"),
        }
    }

    #[test]
    fn tail_mean_and_opt_path() {
        assert_eq!(tail_mean(&[1.0, 2.0, 3.0, 5.0], 2), 4.0);
        assert!(tail_mean(&[], 3).is_nan());
        assert_eq!(
            opt_path(Path::new("a/m.safetensors")),
            PathBuf::from("a/m.safetensors.opt")
        );
    }
}
