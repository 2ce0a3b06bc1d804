//! A decoder-only (GPT-style) Transformer language model.
//!
//! `tok` embedding + positions → `blocks.{i}` (causal [`EncoderLayer`]s) → `norm_f`
//! (pre-norm only) → untied `head`. With [`LmConfig::reference`] this is exactly the
//! reference PyTorch workload (`bench/transformer_ref.py`), parameter names included
//! (`tok.weight`, `pos.weight`, `blocks.0.attn.qkv.weight`, ..., `head.bias`): 875,520
//! parameters with LayerNorm.

use super::Layers;
use crate::attention::{attention_bias, Init};
use crate::dropout::Dropout;
use crate::embedding::{Embedding, PositionKind, Positions};
use crate::linear::Linear;
use crate::module::{join, BufferVisitor, Module, NormVisitor, ParamVisitor};
use crate::norm::{Norm, NormConfig, NormKind};
use crate::transformer::{EncoderLayer, LayerConfig};
use unigrad_core::{no_grad, DType, Device, Error, Result, Rng, Tensor};

/// Hyperparameters of [`TransformerLm`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LmConfig {
    /// Vocabulary size.
    pub vocab: usize,
    /// Model width.
    pub d_model: usize,
    /// Attention heads.
    pub heads: usize,
    /// Feed-forward width.
    pub d_ff: usize,
    /// Number of blocks.
    pub layers: usize,
    /// Longest sequence (size of the position table).
    pub max_seq: usize,
    /// Norm at every norm site.
    pub norm: NormConfig,
    /// Pre-norm blocks and a final norm (`true`) or post-norm blocks.
    pub pre_norm: bool,
    /// Learned or sinusoidal positions.
    pub positions: PositionKind,
    /// Dropout on embeddings, attention and sublayer outputs.
    pub dropout: f64,
    /// LayerNorm Scaling: pre-norm outputs of block `l` scaled by `1/√l`.
    pub ln_scaling: bool,
    /// Biases in every Linear.
    pub bias: bool,
    /// Standard deviation of the `N(0, std²)` weight initialisation.
    pub init_std: f64,
}

impl LmConfig {
    /// The reference workload: vocab 256, width 128, 4 heads, FFN 512, 4 pre-norm
    /// layers, 128 learned positions, biases, no dropout, init std 0.02.
    pub fn reference(norm: NormKind) -> LmConfig {
        LmConfig {
            vocab: 256,
            d_model: 128,
            heads: 4,
            d_ff: 512,
            layers: 4,
            max_seq: 128,
            norm: norm.into(),
            pre_norm: true,
            positions: PositionKind::Learned,
            dropout: 0.0,
            ln_scaling: false,
            bias: true,
            init_std: 0.02,
        }
    }

    fn layers(&self) -> Layers {
        Layers {
            template: LayerConfig {
                d_model: self.d_model,
                heads: self.heads,
                d_ff: self.d_ff,
                dropout: self.dropout,
                norm: self.norm,
                pre_norm: self.pre_norm,
                bias: self.bias,
                ln_scale: 1.0,
                init: Init::Normal(self.init_std),
            },
            ln_scaling: self.ln_scaling,
        }
    }
}

/// Decoder-only Transformer LM. See the module docs.
#[derive(Debug)]
pub struct TransformerLm {
    /// Token embedding `[vocab, C]`.
    pub tok: Embedding,
    /// Positions (`pos.weight` when learned).
    pub pos: Positions,
    /// The blocks.
    pub blocks: Vec<EncoderLayer>,
    /// Final norm (pre-norm models only).
    pub norm_f: Option<Norm>,
    /// Output projection `[vocab, C]` (not tied to `tok`).
    pub head: Linear,
    drop: Dropout,
    cfg: LmConfig,
}

impl TransformerLm {
    /// Build with `N(0, init_std²)` weights and zero biases.
    pub fn new(cfg: LmConfig, dtype: DType, dev: &Device) -> Result<TransformerLm> {
        if cfg.layers == 0 || cfg.vocab == 0 || cfg.max_seq == 0 {
            return Err(Error::invalid(
                "TransformerLm",
                "layers, vocab and max_seq must be positive",
            ));
        }
        let layers = cfg.layers();
        layers.check("TransformerLm")?;
        let std = cfg.init_std;
        Ok(TransformerLm {
            tok: Embedding::new_normal(cfg.vocab, cfg.d_model, None, std, dtype, dev)?,
            pos: Positions::new(cfg.positions, cfg.max_seq, cfg.d_model, std, dtype, dev)?,
            blocks: layers.encoders(cfg.layers, dtype, dev)?,
            norm_f: layers.final_norm(dtype, dev)?,
            head: Linear::new_normal(cfg.d_model, cfg.vocab, cfg.bias, std, dtype, dev)?,
            drop: Dropout::new(cfg.dropout)?,
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LmConfig {
        &self.cfg
    }

    /// Logits `[B, T, vocab]` for token ids `[B, T]` (i64). `pad_mask` (`[B, T]`, 1 =
    /// pad, model dtype) hides padded keys from attention and padded tokens from
    /// batch-statistics norms.
    pub fn forward(&self, ids: &Tensor, pad_mask: Option<&Tensor>) -> Result<Tensor> {
        if ids.rank() != 2 {
            return Err(Error::invalid(
                "TransformerLm",
                format!("ids must be [B, T], got shape {:?}", ids.shape()),
            ));
        }
        let t = ids.shape()[1];
        if t > self.cfg.max_seq {
            return Err(Error::invalid(
                "TransformerLm",
                format!("sequence of {t} tokens exceeds max_seq {}", self.cfg.max_seq),
            ));
        }
        let x = self.tok.forward(ids)?.add(&self.pos.forward(0, t)?)?;
        let mut x = self.drop.forward(&x)?;
        let bias = attention_bias(true, pad_mask, t, t, x.dtype(), x.device())?;
        for blk in &self.blocks {
            x = blk.forward(&x, bias.as_ref(), pad_mask)?;
        }
        if let Some(n) = &self.norm_f {
            x = n.forward(&x, pad_mask)?;
        }
        self.head.forward(&x)
    }

    /// Mean next-token cross-entropy (nats) of `forward(ids)` against `targets [B, T]`.
    pub fn loss(&self, ids: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let logits = self.forward(ids, None)?;
        crate::loss::cross_entropy(&logits, targets, None, 0.0)
    }

    /// Continue `prompt` by `n` tokens: greedy when `temperature` is 0, else sampling
    /// from `softmax(logits / temperature)` with a generator seeded by `seed`. The
    /// context is the last `max_seq` tokens. Runs without recording gradients; put the
    /// model in eval mode first.
    pub fn generate(&self, prompt: &[i64], n: usize, temperature: f64, seed: u64) -> Result<Vec<i64>> {
        if prompt.is_empty() {
            return Err(Error::invalid("generate", "the prompt must hold at least one token"));
        }
        let dev = self.head.weight.device().clone();
        let mut rng = Rng::new(seed);
        let mut out = prompt.to_vec();
        no_grad(|| {
            for _ in 0..n {
                let start = out.len().saturating_sub(self.cfg.max_seq);
                let ctx = &out[start..];
                let ids = Tensor::from_vec(ctx.to_vec(), &[1, ctx.len()], &dev)?;
                let logits = self.forward(&ids, None)?;
                let last = logits.narrow(1, ctx.len() - 1, 1)?.to_vec_f64()?;
                out.push(pick(&last, temperature, &mut rng) as i64);
            }
            Ok(out)
        })
    }
}

/// Index of the largest value (the first one on ties; 0 for an empty slice).
pub fn argmax(values: &[f64]) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, &v) in values.iter().enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0
}

/// Greedy (`temperature == 0`) or temperature sampling from one row of logits.
pub fn pick(logits: &[f64], temperature: f64, rng: &mut Rng) -> usize {
    let argmax = || argmax(logits);
    if temperature <= 0.0 {
        return argmax();
    }
    let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = logits.iter().map(|&l| ((l - m) / temperature).exp()).collect();
    let total: f64 = w.iter().sum();
    let mut r = rng.uniform() * total;
    for (i, &wi) in w.iter().enumerate() {
        r -= wi;
        if r <= 0.0 {
            return i;
        }
    }
    argmax()
}

impl Module for TransformerLm {
    fn visit_params(&self, prefix: &str, f: &mut ParamVisitor<'_>) {
        self.tok.visit_params(&join(prefix, "tok"), f);
        self.pos.visit_params(&join(prefix, "pos"), f);
        for (i, b) in self.blocks.iter().enumerate() {
            b.visit_params(&join(prefix, &format!("blocks.{i}")), f);
        }
        if let Some(n) = &self.norm_f {
            n.visit_params(&join(prefix, "norm_f"), f);
        }
        self.head.visit_params(&join(prefix, "head"), f);
    }

    fn visit_buffers(&self, prefix: &str, f: &mut BufferVisitor<'_>) {
        for (i, b) in self.blocks.iter().enumerate() {
            b.visit_buffers(&join(prefix, &format!("blocks.{i}")), f);
        }
        if let Some(n) = &self.norm_f {
            n.visit_buffers(&join(prefix, "norm_f"), f);
        }
    }

    fn visit_norms_mut(&mut self, prefix: &str, f: &mut NormVisitor<'_>) {
        for (i, b) in self.blocks.iter_mut().enumerate() {
            b.visit_norms_mut(&join(prefix, &format!("blocks.{i}")), f);
        }
        if let Some(n) = &mut self.norm_f {
            f(&join(prefix, "norm_f"), n);
        }
    }

    fn set_train(&mut self, train: bool) {
        self.drop.set_train(train);
        for b in &mut self.blocks {
            b.set_train(train);
        }
        if let Some(n) = &mut self.norm_f {
            n.set_train(train);
        }
    }
}
