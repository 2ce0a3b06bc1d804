//! An encoder-decoder Transformer for translation (Vaswani et al. 2017).
//!
//! Source tokens → `src_tok` (+ positions) → `encoder.{i}` → `enc_norm` (pre-norm)
//! = memory; target prefix → `tgt_tok` (+ positions) → `decoder.{i}` (causal
//! self-attention, cross-attention over the memory) → `dec_norm` (pre-norm) → `head`.
//! Padding masks (`[B, S]` / `[B, T]`, 1 = pad) keep padded keys out of attention and
//! padded tokens out of batch-statistics norms.

use super::Layers;
use crate::attention::{attention_bias, Init};
use crate::dropout::Dropout;
use crate::embedding::{Embedding, PositionKind, Positions};
use crate::linear::Linear;
use crate::module::{join, BufferVisitor, Module, NormVisitor, ParamVisitor};
use crate::norm::{Norm, NormConfig};
use crate::transformer::{DecoderLayer, EncoderLayer, LayerConfig};
use unigrad_core::{no_grad, DType, Device, Error, Result, Tensor};

/// Hyperparameters of [`Seq2Seq`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Seq2SeqConfig {
    /// Source vocabulary size.
    pub src_vocab: usize,
    /// Target vocabulary size.
    pub tgt_vocab: usize,
    /// Model width.
    pub d_model: usize,
    /// Attention heads.
    pub heads: usize,
    /// Feed-forward width.
    pub d_ff: usize,
    /// Encoder layers.
    pub enc_layers: usize,
    /// Decoder layers.
    pub dec_layers: usize,
    /// Longest source or target sequence.
    pub max_len: usize,
    /// Norm at every norm site.
    pub norm: NormConfig,
    /// Pre-norm layers with final norms, or post-norm layers.
    pub pre_norm: bool,
    /// Learned or sinusoidal positions.
    pub positions: PositionKind,
    /// Dropout.
    pub dropout: f64,
    /// LayerNorm Scaling (pre-norm only).
    pub ln_scaling: bool,
    /// Padding token id: its embedding row gets no gradient.
    pub pad_id: Option<usize>,
    /// Multiply embeddings by `√d_model` (as Vaswani et al. with sinusoids).
    pub scale_embeddings: bool,
}

/// Encoder-decoder Transformer. See the module docs.
#[derive(Debug)]
pub struct Seq2Seq {
    /// Source embedding.
    pub src_tok: Embedding,
    /// Target embedding.
    pub tgt_tok: Embedding,
    /// Positions, shared by encoder and decoder.
    pub pos: Positions,
    /// Encoder layers.
    pub encoder: Vec<EncoderLayer>,
    /// Decoder layers.
    pub decoder: Vec<DecoderLayer>,
    /// Final encoder norm (pre-norm).
    pub enc_norm: Option<Norm>,
    /// Final decoder norm (pre-norm).
    pub dec_norm: Option<Norm>,
    /// Output projection to the target vocabulary.
    pub head: Linear,
    drop: Dropout,
    cfg: Seq2SeqConfig,
}

impl Seq2Seq {
    /// Build with PyTorch-default Linear initialisation and `N(0, 1/d_model)` embeddings.
    pub fn new(cfg: Seq2SeqConfig, dtype: DType, dev: &Device) -> Result<Seq2Seq> {
        if cfg.enc_layers == 0 || cfg.dec_layers == 0 {
            return Err(Error::invalid(
                "Seq2Seq",
                "needs at least one encoder and one decoder layer",
            ));
        }
        let layers = Layers {
            template: LayerConfig {
                d_model: cfg.d_model,
                heads: cfg.heads,
                d_ff: cfg.d_ff,
                dropout: cfg.dropout,
                norm: cfg.norm,
                pre_norm: cfg.pre_norm,
                bias: true,
                ln_scale: 1.0,
                init: Init::Default,
            },
            ln_scaling: cfg.ln_scaling,
        };
        layers.check("Seq2Seq")?;
        let std = (cfg.d_model as f64).powf(-0.5);
        Ok(Seq2Seq {
            src_tok: Embedding::new_normal(cfg.src_vocab, cfg.d_model, cfg.pad_id, std, dtype, dev)?,
            tgt_tok: Embedding::new_normal(cfg.tgt_vocab, cfg.d_model, cfg.pad_id, std, dtype, dev)?,
            pos: Positions::new(cfg.positions, cfg.max_len, cfg.d_model, std, dtype, dev)?,
            encoder: layers.encoders(cfg.enc_layers, dtype, dev)?,
            decoder: layers.decoders(cfg.dec_layers, dtype, dev)?,
            enc_norm: layers.final_norm(dtype, dev)?,
            dec_norm: layers.final_norm(dtype, dev)?,
            head: Linear::new(cfg.d_model, cfg.tgt_vocab, true, dtype, dev)?,
            drop: Dropout::new(cfg.dropout)?,
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Seq2SeqConfig {
        &self.cfg
    }

    fn embed(&self, table: &Embedding, ids: &Tensor) -> Result<Tensor> {
        if ids.rank() != 2 || ids.shape()[1] > self.cfg.max_len {
            return Err(Error::invalid(
                "Seq2Seq",
                format!(
                    "ids must be [B, T] with T <= {}, got shape {:?}",
                    self.cfg.max_len,
                    ids.shape()
                ),
            ));
        }
        let mut x = table.forward(ids)?;
        if self.cfg.scale_embeddings {
            x = x.mul_scalar((self.cfg.d_model as f64).sqrt())?;
        }
        self.drop.forward(&x.add(&self.pos.forward(0, ids.shape()[1])?)?)
    }

    /// Encode `src [B, S]` (i64) into the memory `[B, S, C]`.
    pub fn encode(&self, src: &Tensor, src_pad: Option<&Tensor>) -> Result<Tensor> {
        let mut x = self.embed(&self.src_tok, src)?;
        let s = src.shape()[1];
        let bias = attention_bias(false, src_pad, s, s, x.dtype(), x.device())?;
        for l in &self.encoder {
            x = l.forward(&x, bias.as_ref(), src_pad)?;
        }
        match &self.enc_norm {
            Some(n) => n.forward(&x, src_pad),
            None => Ok(x),
        }
    }

    /// Logits `[B, T, tgt_vocab]` for the target prefix `tgt [B, T]` given the memory.
    pub fn decode(
        &self,
        tgt: &Tensor,
        memory: &Tensor,
        src_pad: Option<&Tensor>,
        tgt_pad: Option<&Tensor>,
    ) -> Result<Tensor> {
        let mut x = self.embed(&self.tgt_tok, tgt)?;
        let (t, s) = (tgt.shape()[1], memory.shape()[1]);
        let self_bias = attention_bias(true, tgt_pad, t, t, x.dtype(), x.device())?;
        let cross_bias = attention_bias(false, src_pad, t, s, x.dtype(), x.device())?;
        for l in &self.decoder {
            x = l.forward(&x, memory, self_bias.as_ref(), cross_bias.as_ref(), tgt_pad)?;
        }
        if let Some(n) = &self.dec_norm {
            x = n.forward(&x, tgt_pad)?;
        }
        self.head.forward(&x)
    }

    /// Teacher-forced logits: `decode(tgt_in, encode(src))`.
    pub fn forward(
        &self,
        src: &Tensor,
        tgt_in: &Tensor,
        src_pad: Option<&Tensor>,
        tgt_pad: Option<&Tensor>,
    ) -> Result<Tensor> {
        let memory = self.encode(src, src_pad)?;
        self.decode(tgt_in, &memory, src_pad, tgt_pad)
    }

    /// Greedy decoding of a batch: starts every row with `bos`, stops a row at `eos`
    /// (kept) or after `max_len` tokens. Returns the generated ids without `bos`. Put the
    /// model in eval mode first.
    pub fn greedy(
        &self,
        src: &Tensor,
        src_pad: Option<&Tensor>,
        bos: i64,
        eos: i64,
        max_len: usize,
    ) -> Result<Vec<Vec<i64>>> {
        no_grad(|| {
            let b = src.shape()[0];
            let memory = self.encode(src, src_pad)?;
            let dev = memory.device().clone();
            let max_len = max_len.min(self.cfg.max_len);
            let mut seqs: Vec<Vec<i64>> = vec![vec![bos]; b];
            let mut done = vec![false; b];
            for _ in 0..max_len {
                let t = seqs[0].len();
                let flat: Vec<i64> = seqs.iter().flatten().copied().collect();
                let ids = Tensor::from_vec(flat, &[b, t], &dev)?;
                let logits = self.decode(&ids, &memory, src_pad, None)?;
                let last = logits.narrow(1, t - 1, 1)?.to_vec_f64()?;
                let v = self.cfg.tgt_vocab;
                for (i, seq) in seqs.iter_mut().enumerate() {
                    let row = &last[i * v..(i + 1) * v];
                    let next = if done[i] { eos } else { super::lm::argmax(row) as i64 };
                    done[i] |= next == eos;
                    seq.push(next);
                }
                if done.iter().all(|&d| d) || t + 1 >= self.cfg.max_len {
                    break;
                }
            }
            Ok(seqs
                .into_iter()
                .map(|s| {
                    let mut s = s[1..].to_vec();
                    if let Some(p) = s.iter().position(|&x| x == eos) {
                        s.truncate(p + 1);
                    }
                    s
                })
                .collect())
        })
    }
}

impl Module for Seq2Seq {
    fn visit_params(&self, prefix: &str, f: &mut ParamVisitor<'_>) {
        self.src_tok.visit_params(&join(prefix, "src_tok"), f);
        self.tgt_tok.visit_params(&join(prefix, "tgt_tok"), f);
        self.pos.visit_params(&join(prefix, "pos"), f);
        for (i, l) in self.encoder.iter().enumerate() {
            l.visit_params(&join(prefix, &format!("encoder.{i}")), f);
        }
        for (i, l) in self.decoder.iter().enumerate() {
            l.visit_params(&join(prefix, &format!("decoder.{i}")), f);
        }
        if let Some(n) = &self.enc_norm {
            n.visit_params(&join(prefix, "enc_norm"), f);
        }
        if let Some(n) = &self.dec_norm {
            n.visit_params(&join(prefix, "dec_norm"), f);
        }
        self.head.visit_params(&join(prefix, "head"), f);
    }

    fn visit_buffers(&self, prefix: &str, f: &mut BufferVisitor<'_>) {
        for (i, l) in self.encoder.iter().enumerate() {
            l.visit_buffers(&join(prefix, &format!("encoder.{i}")), f);
        }
        for (i, l) in self.decoder.iter().enumerate() {
            l.visit_buffers(&join(prefix, &format!("decoder.{i}")), f);
        }
        if let Some(n) = &self.enc_norm {
            n.visit_buffers(&join(prefix, "enc_norm"), f);
        }
        if let Some(n) = &self.dec_norm {
            n.visit_buffers(&join(prefix, "dec_norm"), f);
        }
    }

    fn visit_norms_mut(&mut self, prefix: &str, f: &mut NormVisitor<'_>) {
        for (i, l) in self.encoder.iter_mut().enumerate() {
            l.visit_norms_mut(&join(prefix, &format!("encoder.{i}")), f);
        }
        for (i, l) in self.decoder.iter_mut().enumerate() {
            l.visit_norms_mut(&join(prefix, &format!("decoder.{i}")), f);
        }
        if let Some(n) = &mut self.enc_norm {
            f(&join(prefix, "enc_norm"), n);
        }
        if let Some(n) = &mut self.dec_norm {
            f(&join(prefix, "dec_norm"), n);
        }
    }

    fn set_train(&mut self, train: bool) {
        self.drop.set_train(train);
        self.encoder.iter_mut().for_each(|l| l.set_train(train));
        self.decoder.iter_mut().for_each(|l| l.set_train(train));
        if let Some(n) = &mut self.enc_norm {
            n.set_train(train);
        }
        if let Some(n) = &mut self.dec_norm {
            n.set_train(train);
        }
    }
}
