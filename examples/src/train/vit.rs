//! A small Vision Transformer on the bundled Fashion-MNIST subset.
//!
//! 28×28 grayscale images are cut into 7×7 patches (16 tokens plus a class token), run
//! through nn's [`Vit`] (pre-norm blocks, the chosen norm at every norm site, UN with the
//! outlier filtration the UN authors recommend for vision), and classified from the class
//! token. Training: AdamW, linear warmup + cosine decay, optional random horizontal flips,
//! batches reshuffled every epoch from the seed. The metric is top-1 accuracy on the 2,000
//! test images in eval mode (batch-statistics norms use their running statistics).

use super::{
    adam_resumed, eval_due, norm_config, save_state, tail_mean, update, warmup_cosine, with_un, Curve, Reporter,
    TaskKind, TrainError, TrainResult,
};
use crate::data::mnist::{load_fashion_mnist, ImageSet, NUM_CLASSES};
use crate::rng::Rng;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;
use unigrad::nn::norm::trace::Tracer;
use unigrad::nn::norm::UnConfig;
use unigrad::prelude::*;

/// Fashion-MNIST pixel mean (on `[0, 1]` pixels), used to standardise inputs.
pub const PIXEL_MEAN: f32 = 0.286;
/// Fashion-MNIST pixel standard deviation.
pub const PIXEL_STD: f32 = 0.353;

/// Options of [`train_vit`]; `Default` is the `vit` example's default run.
#[derive(Clone, Debug)]
pub struct VitOptions {
    /// Folder with `fashion-mnist/`.
    pub data_dir: PathBuf,
    /// Normalization.
    pub norm: NormKind,
    /// Pre-norm blocks (default) or post-norm.
    pub pre_norm: bool,
    /// Patch side (must divide 28).
    pub patch: usize,
    /// Model width.
    pub d_model: usize,
    /// Attention heads.
    pub heads: usize,
    /// Feed-forward width.
    pub d_ff: usize,
    /// Blocks.
    pub layers: usize,
    /// Dropout.
    pub dropout: f64,
    /// Images per batch.
    pub batch: usize,
    /// Total updates.
    pub steps: u64,
    /// Peak learning rate.
    pub lr: f64,
    /// Warmup updates.
    pub warmup: u64,
    /// AdamW weight decay on weight matrices.
    pub weight_decay: f64,
    /// Label smoothing.
    pub label_smoothing: f64,
    /// Gradient clipping (0: off).
    pub clip: f64,
    /// Random horizontal flips of training images.
    pub flip: bool,
    /// UN / PowerNorm warmup as a fraction of `steps`.
    pub norm_warmup_frac: f64,
    /// UN hyperparameters other than the warm-up (window, momentum, outlier filtration,
    /// calibrated backward) in place of [`norm_config`]'s; `None` keeps them. The
    /// `norm_scaling` study switches UN's mechanisms off one at a time with it.
    pub un: Option<UnConfig>,
    /// Record the norm statistics of the site named `.0` (`blocks.0.norm1`) into `.1`
    /// while training, tagged with the 1-based update (`norm_scaling --lag-run`).
    pub trace: Option<(String, Tracer)>,
    /// Use only the first N training images (None: all 8,000).
    pub max_train: Option<usize>,
    /// Use only the first N test images (None: all 2,000).
    pub max_test: Option<usize>,
    /// Report test accuracy every N steps (0: only at the end).
    pub eval_every: u64,
    /// Seed.
    pub seed: u64,
    /// Save model and optimizer here at every evaluation and at the end.
    pub checkpoint: Option<PathBuf>,
    /// Resume from a checkpoint.
    pub resume: Option<PathBuf>,
    /// Training curve as CSV.
    pub csv: Option<PathBuf>,
    /// No progress bar or log lines.
    pub quiet: bool,
    /// Progress-bar label.
    pub label: String,
}

impl Default for VitOptions {
    fn default() -> Self {
        VitOptions {
            data_dir: crate::data_dir(),
            norm: NormKind::LayerNorm,
            pre_norm: true,
            patch: 7,
            d_model: 64,
            heads: 4,
            d_ff: 128,
            layers: 4,
            dropout: 0.0,
            batch: 128,
            steps: 600,
            lr: 2e-3,
            warmup: 60,
            weight_decay: 0.05,
            label_smoothing: 0.0,
            clip: 1.0,
            flip: true,
            norm_warmup_frac: 0.1,
            un: None,
            trace: None,
            max_train: None,
            max_test: None,
            eval_every: 200,
            seed: 1,
            checkpoint: None,
            resume: None,
            csv: None,
            quiet: false,
            label: "vit".into(),
        }
    }
}

impl VitOptions {
    /// A tiny run for smoke tests.
    pub fn quick() -> Self {
        VitOptions {
            d_model: 32,
            heads: 2,
            d_ff: 64,
            layers: 1,
            batch: 32,
            steps: 20,
            warmup: 5,
            max_train: Some(1000),
            max_test: Some(200),
            eval_every: 0,
            ..VitOptions::default()
        }
    }

    /// The model configuration of these options.
    pub fn model_config(&self) -> VitConfig {
        VitConfig {
            image_size: 28,
            patch: self.patch,
            channels: 1,
            classes: NUM_CLASSES,
            d_model: self.d_model,
            heads: self.heads,
            d_ff: self.d_ff,
            layers: self.layers,
            norm: with_un(
                norm_config(self.norm, TaskKind::Vision, self.steps, Some(self.norm_warmup_frac)),
                self.un,
            ),
            pre_norm: self.pre_norm,
            dropout: self.dropout,
            ln_scaling: false,
        }
    }
}

/// Metrics of one ViT run.
#[derive(Clone, Debug, Serialize)]
pub struct VitResult {
    /// Norm short name.
    pub norm: String,
    /// Total updates.
    pub steps: u64,
    /// Updates done in this process.
    pub steps_this_run: u64,
    /// Parameters.
    pub params: usize,
    /// Mean training loss of the last 50 updates.
    pub train_loss: f64,
    /// Top-1 test accuracy in percent.
    pub test_acc: f64,
    /// Test images.
    pub test_images: usize,
    /// Training images per second.
    pub images_per_s: f64,
    /// Seconds in training updates.
    pub train_s: f64,
    /// Device name.
    pub device: String,
    /// Seed.
    pub seed: u64,
    /// Wall-clock seconds.
    pub wall_s: f64,
}

fn config_string(c: &VitConfig) -> String {
    format!(
        "vit patch={} d_model={} heads={} d_ff={} layers={} norm={} pre_norm={}",
        c.patch, c.d_model, c.heads, c.d_ff, c.layers, c.norm.kind, c.pre_norm
    )
}

/// Images `idx` of `set` as a standardised `[B, 1, 28, 28]` tensor and their labels,
/// flipping each horizontally with probability ½ when `rng` is given.
fn make_batch(set: &ImageSet, idx: &[usize], rng: Option<&mut Rng>, dev: &Device) -> TrainResult<(Tensor, Tensor)> {
    let (h, w) = (set.rows, set.cols);
    let mut px = Vec::with_capacity(idx.len() * h * w);
    let mut labels = Vec::with_capacity(idx.len());
    let mut rng = rng;
    for &i in idx {
        let img = set
            .image(i)
            .ok_or_else(|| TrainError::Invalid(format!("image {i} out of range")))?;
        let flip = rng.as_deref_mut().is_some_and(|r| r.next_f64() < 0.5);
        for r in 0..h {
            for c in 0..w {
                let v = if flip { img[r * w + (w - 1 - c)] } else { img[r * w + c] };
                px.push((v - PIXEL_MEAN) / PIXEL_STD);
            }
        }
        labels.push(set.labels[i] as i64);
    }
    Ok((
        Tensor::from_vec(px, &[idx.len(), 1, h, w], dev)?,
        Tensor::from_vec(labels, &[idx.len()], dev)?,
    ))
}

/// Top-1 accuracy (percent) of `model` on `set`, eval mode.
pub fn accuracy(model: &mut Vit, set: &ImageSet, dev: &Device) -> TrainResult<f64> {
    model.eval();
    let r = no_grad(|| -> TrainResult<f64> {
        let mut correct = 0usize;
        let all: Vec<usize> = (0..set.len()).collect();
        for chunk in all.chunks(250) {
            let (x, _) = make_batch(set, chunk, None, dev)?;
            let logits = model.forward(&x)?.to_dtype(DType::F32)?.to_vec::<f32>()?;
            for (k, &i) in chunk.iter().enumerate() {
                let row = &logits[k * NUM_CLASSES..(k + 1) * NUM_CLASSES];
                let pred = row
                    .iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |(bi, bv), (j, &v)| if v > bv { (j, v) } else { (bi, bv) },
                    )
                    .0;
                correct += usize::from(pred == set.labels[i] as usize);
            }
        }
        Ok(100.0 * correct as f64 / set.len().max(1) as f64)
    });
    model.train();
    r
}

fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    Rng::new(seed ^ (epoch.wrapping_add(1)).wrapping_mul(0xd1b5_4a32_d192_ed03)).permutation(n)
}

/// Train the ViT and measure test accuracy.
pub fn train_vit(o: &VitOptions, dev: &Device) -> TrainResult<VitResult> {
    let t_all = Instant::now();
    if o.batch == 0 {
        return Err(TrainError::Invalid("batch must be >= 1".into()));
    }
    let (mut train, mut test) = load_fashion_mnist(&o.data_dir.join("fashion-mnist"))?;
    if let Some(m) = o.max_train {
        train = train.subset(&(0..m.min(train.len())).collect::<Vec<_>>())?;
    }
    if let Some(m) = o.max_test {
        test = test.subset(&(0..m.min(test.len())).collect::<Vec<_>>())?;
    }
    if train.len() < o.batch {
        return Err(TrainError::Invalid(format!(
            "{} training images are fewer than one batch of {}",
            train.len(),
            o.batch
        )));
    }
    manual_seed(o.seed);
    let cfg = o.model_config();
    let mut model = Vit::new(cfg, DType::F32, dev)?;
    if let Some((site, tracer)) = &o.trace {
        model.visit_norms_mut("", &mut |name, n| {
            if name == site {
                n.set_trace(Some(tracer.site(name)));
            }
        });
    }
    let sched = warmup_cosine(o.lr, o.warmup, o.steps, 0.01)?;
    let cfg_str = config_string(&cfg);
    let (mut opt, start) = adam_resumed(
        &model,
        AdamConfig::adamw(o.lr),
        o.weight_decay,
        o.resume.as_deref(),
        &cfg_str,
    )?;
    manual_seed(o.seed.wrapping_add(start));
    let per_epoch = (train.len() / o.batch) as u64; // drop the last partial batch
    let mut flip_rng = Rng::new(o.seed.wrapping_add(start).wrapping_mul(31).wrapping_add(7));
    let rep = Reporter::new(o.steps, &o.label, o.quiet);
    rep.log(format!(
        "vit: {} params ({cfg_str}) on {dev}; {} train / {} test images, {per_epoch} steps per epoch",
        model.param_count(),
        train.len(),
        test.len()
    ));
    let mut curve = Curve::create(o.csv.as_deref(), "test_acc", &[])?;
    rep.bar().set_position(start);
    let (mut losses, mut train_s) = (Vec::new(), 0.0f64);
    let mut order = epoch_order(train.len(), o.seed, start / per_epoch);
    model.train();
    for step in start..o.steps {
        let (epoch, k) = (step / per_epoch, (step % per_epoch) as usize);
        if k == 0 && step != start {
            order = epoch_order(train.len(), o.seed, epoch);
        }
        let idx = &order[k * o.batch..(k + 1) * o.batch];
        let t0 = Instant::now();
        let (x, y) = make_batch(&train, idx, o.flip.then_some(&mut flip_rng), dev)?;
        let lr = sched.lr_at(step);
        let done = step + 1;
        if let Some((_, tracer)) = &o.trace {
            tracer.set_step(done);
        }
        let loss = cross_entropy(&model.forward(&x)?, &y, None, o.label_smoothing)?;
        let lv = update(&mut opt, &loss, lr, o.clip, done)?;
        train_s += t0.elapsed().as_secs_f64();
        losses.push(lv);
        rep.bar().set_message(format!("loss {lv:.3}"));
        rep.bar().inc(1);
        let mut acc = None;
        if eval_due(o.eval_every, done, o.steps) {
            let a = accuracy(&mut model, &test, dev)?;
            rep.log(format!(
                "step {done} (epoch {:.1}): train loss {:.3}, test acc {a:.2}%, lr {lr:.2e}",
                done as f64 / per_epoch as f64,
                tail_mean(&losses, 50)
            ));
            acc = Some(a);
            if let Some(p) = &o.checkpoint {
                save_state(&model, &opt, p, &cfg_str, done)?;
            }
        }
        curve.row(done, lv, acc, lr, &[])?;
    }
    rep.finish();
    if let Some(p) = &o.checkpoint {
        save_state(&model, &opt, p, &cfg_str, o.steps)?;
        rep.log(format!("checkpoint: {} (+ .opt)", p.display()));
    }
    curve.finish(&rep)?;
    let test_acc = accuracy(&mut model, &test, dev)?;
    rep.log(format!("test accuracy {test_acc:.2}% on {} images", test.len()));
    let trained = o.steps.saturating_sub(start);
    Ok(VitResult {
        norm: o.norm.short_name().into(),
        steps: o.steps,
        steps_this_run: trained,
        params: model.param_count(),
        train_loss: tail_mean(&losses, 50),
        test_acc,
        test_images: test.len(),
        images_per_s: (trained as usize * o.batch) as f64 / train_s.max(1e-9),
        train_s,
        device: dev.name(),
        seed: o.seed,
        wall_s: t_all.elapsed().as_secs_f64(),
    })
}
