//! A small byte-level language model on Shakespeare, for the LM column of `paper_table`.
//!
//! The `train_lm` example (owned by the nn crate's authors) is the full-featured LM
//! program; this is the same recipe as a library function so `paper_table` can run it
//! in-process for every norm: nn's [`TransformerLm`] (pre-norm by default, learned
//! positions, untied head), AdamW with linear warmup and cosine decay, gradient clipping,
//! random training windows from the first 90% of the text, and validation bits per byte on
//! fixed windows of the last 10% (eval mode, so the batch-statistics norms use their
//! running statistics).

use super::{
    adam_resumed, ids_tensor, norm_config, save_state, tail_mean, update, warmup_cosine, with_un, Reporter, TaskKind,
    TrainResult,
};
use crate::data::text::{eval_batches, Batch, BatchSampler, ByteCorpus};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;
use unigrad::nn::loss::nats_to_bits;
use unigrad::nn::norm::UnConfig;
use unigrad::prelude::*;

/// Options of [`train_lm`]; `Default` is `paper_table`'s LM setting.
#[derive(Clone, Debug)]
pub struct LmOptions {
    /// Folder with `shakespeare/shakespeare.txt`.
    pub data_dir: PathBuf,
    /// Normalization.
    pub norm: NormKind,
    /// Pre-norm blocks (default) or post-norm.
    pub pre_norm: bool,
    /// Model width.
    pub d_model: usize,
    /// Blocks.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Feed-forward width.
    pub d_ff: usize,
    /// Context length in bytes.
    pub seq: usize,
    /// Sequences per batch.
    pub batch: usize,
    /// Total updates.
    pub steps: u64,
    /// Peak learning rate.
    pub lr: f64,
    /// Warmup updates.
    pub warmup: u64,
    /// AdamW weight decay on weight matrices.
    pub weight_decay: f64,
    /// Gradient clipping (0: off).
    pub clip: f64,
    /// UN / PowerNorm warmup as a fraction of `steps`.
    pub norm_warmup_frac: f64,
    /// UN hyperparameters other than the warm-up in place of [`norm_config`]'s (`None`:
    /// keep them), as in [`super::vit::VitOptions::un`].
    pub un: Option<UnConfig>,
    /// Validation windows of `seq` bytes (None: the whole validation split).
    pub eval_windows: Option<usize>,
    /// Seed.
    pub seed: u64,
    /// Save model and optimizer here at the end.
    pub checkpoint: Option<PathBuf>,
    /// Resume from a checkpoint.
    pub resume: Option<PathBuf>,
    /// No progress bar or log lines.
    pub quiet: bool,
    /// Progress-bar label.
    pub label: String,
}

impl Default for LmOptions {
    fn default() -> Self {
        LmOptions {
            data_dir: crate::data_dir(),
            norm: NormKind::LayerNorm,
            pre_norm: true,
            d_model: 128,
            layers: 2,
            heads: 4,
            d_ff: 512,
            seq: 64,
            batch: 16,
            steps: 800,
            lr: 2e-3,
            warmup: 80,
            weight_decay: 0.1,
            clip: 1.0,
            norm_warmup_frac: 0.1,
            un: None,
            eval_windows: Some(512),
            seed: 1,
            checkpoint: None,
            resume: None,
            quiet: false,
            label: "lm".into(),
        }
    }
}

impl LmOptions {
    /// A tiny run for smoke tests.
    pub fn quick() -> Self {
        LmOptions {
            d_model: 32,
            layers: 1,
            heads: 2,
            d_ff: 64,
            seq: 32,
            batch: 8,
            steps: 20,
            warmup: 5,
            eval_windows: Some(32),
            ..LmOptions::default()
        }
    }

    /// The model configuration of these options.
    pub fn model_config(&self) -> LmConfig {
        let mut cfg = LmConfig::reference(self.norm);
        cfg.d_model = self.d_model;
        cfg.layers = self.layers;
        cfg.heads = self.heads;
        cfg.d_ff = self.d_ff;
        cfg.max_seq = self.seq;
        cfg.pre_norm = self.pre_norm;
        cfg.norm = with_un(
            norm_config(self.norm, TaskKind::Language, self.steps, Some(self.norm_warmup_frac)),
            self.un,
        );
        cfg
    }
}

/// Metrics of one LM run.
#[derive(Clone, Debug, Serialize)]
pub struct LmResult {
    /// Norm short name.
    pub norm: String,
    /// Total updates.
    pub steps: u64,
    /// Parameters.
    pub params: usize,
    /// Mean training loss of the last 50 updates, bits per byte.
    pub train_bpb: f64,
    /// Validation cross-entropy, bits per byte.
    pub val_bpb: f64,
    /// The unigram baseline on the same validation text, bits per byte.
    pub unigram_bpb: f64,
    /// Training tokens per second.
    pub tokens_per_s: f64,
    /// Seconds in training updates.
    pub train_s: f64,
    /// Wall-clock seconds.
    pub wall_s: f64,
}

fn config_string(c: &LmConfig) -> String {
    format!(
        "lm d_model={} heads={} d_ff={} layers={} max_seq={} norm={} pre_norm={}",
        c.d_model, c.heads, c.d_ff, c.layers, c.max_seq, c.norm.kind, c.pre_norm
    )
}

fn evaluate(model: &mut TransformerLm, batches: &[Batch], dev: &Device) -> TrainResult<f64> {
    model.eval();
    let r = no_grad(|| -> TrainResult<f64> {
        let (mut total, mut count) = (0.0, 0usize);
        for b in batches {
            let x = ids_tensor(&b.inputs, &[b.batch_size, b.seq_len], dev)?;
            let y = ids_tensor(&b.targets, &[b.batch_size, b.seq_len], dev)?;
            let n = b.batch_size * b.seq_len;
            total += model.loss(&x, &y)?.to_scalar()? * n as f64;
            count += n;
        }
        Ok(nats_to_bits(total / count.max(1) as f64))
    });
    model.train();
    r
}

/// Train the byte-level LM and measure validation bits per byte. Returns the metrics and
/// the trained model (in eval mode), which `paper_table` folds and times.
pub fn train_lm(o: &LmOptions, dev: &Device) -> TrainResult<(LmResult, TransformerLm)> {
    let t_all = Instant::now();
    let corpus = ByteCorpus::shakespeare(&o.data_dir)?;
    manual_seed(o.seed);
    let cfg = o.model_config();
    let mut model = TransformerLm::new(cfg, DType::F32, dev)?;
    let sched = warmup_cosine(o.lr, o.warmup, o.steps, 0.1)?;
    let cfg_str = config_string(&cfg);
    let (mut opt, start) = adam_resumed(
        &model,
        AdamConfig::adamw(o.lr),
        o.weight_decay,
        o.resume.as_deref(),
        &cfg_str,
    )?;
    let mut sampler = BatchSampler::new(&corpus.train, o.batch, o.seq, o.seed)?;
    for _ in 0..start {
        sampler.sample();
    }
    let val = eval_batches(&corpus.val, 32, o.seq, o.eval_windows)?;
    let rep = Reporter::new(o.steps, &o.label, o.quiet);
    rep.bar().set_position(start);
    let (mut losses, mut train_s) = (Vec::new(), 0.0f64);
    model.train();
    for step in start..o.steps {
        let b = sampler.sample();
        let t0 = Instant::now();
        let x = ids_tensor(&b.inputs, &[o.batch, o.seq], dev)?;
        let y = ids_tensor(&b.targets, &[o.batch, o.seq], dev)?;
        let lv = update(&mut opt, &model.loss(&x, &y)?, sched.lr_at(step), o.clip, step + 1)?;
        train_s += t0.elapsed().as_secs_f64();
        losses.push(nats_to_bits(lv));
        rep.bar().set_message(format!("{:.3} bpb", nats_to_bits(lv)));
        rep.bar().inc(1);
    }
    rep.finish();
    if let Some(p) = &o.checkpoint {
        save_state(&model, &opt, p, &cfg_str, o.steps)?;
    }
    let val_bpb = evaluate(&mut model, &val, dev)?;
    let val_bytes: Vec<u8> = val.iter().flat_map(|b| b.targets.iter().map(|&t| t as u8)).collect();
    let trained = o.steps.saturating_sub(start);
    model.eval();
    let result = LmResult {
        norm: o.norm.short_name().into(),
        steps: o.steps,
        params: model.param_count(),
        train_bpb: tail_mean(&losses, 50),
        val_bpb,
        unigram_bpb: crate::data::text::unigram_bpb(&corpus.train, &val_bytes),
        tokens_per_s: (trained as usize * o.batch * o.seq) as f64 / train_s.max(1e-9),
        train_s,
        wall_s: t_all.elapsed().as_secs_f64(),
    };
    Ok((result, model))
}
