//! Transformer building blocks: the feed-forward sublayer and encoder / decoder layers
//! in pre-norm and post-norm form, with any norm from [`crate::norm`].
//!
//! * Post-norm (Vaswani et al. 2017): `x = Norm(x + Sublayer(x))`.
//! * Pre-norm (GPT-2, Xiong et al. 2020): `x = x + Sublayer(Norm(x))`.
//!
//! *LayerNorm Scaling* (Sun et al. 2025, "The Curse of Depth in Large Language
//! Models") multiplies each pre-norm output of layer `l` (1-based) by `1/√l`, which
//! keeps the variance of deep pre-norm stacks from growing with depth. It is a
//! [`LayerConfig::ln_scale`] factor set by the models from their layer index.
//!
//! Parameter names follow the reference PyTorch model: `norm1`, `attn.qkv`,
//! `attn.proj`, `norm2`, `ff1`, `ff2` (decoder layers: `self_attn`, `cross_attn`,
//! `norm3`).

use crate::attention::{Init, MultiHeadAttention};
use crate::dropout::Dropout;
use crate::linear::Linear;
use crate::module::{join, BufferVisitor, Module, ParamVisitor};
use crate::norm::{Norm, NormConfig};
use unigrad_core::custom::{apply, CustomOp};
use unigrad_core::ops::elementwise::{gelu_erf_grad, unary};
use unigrad_core::{DType, Device, Error, Result, ResultExt, Tensor, UnaryOp};

/// Shape of one Transformer layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerConfig {
    /// Model width `C`.
    pub d_model: usize,
    /// Attention heads (must divide `d_model`).
    pub heads: usize,
    /// Hidden width of the feed-forward sublayer.
    pub d_ff: usize,
    /// Dropout on attention probabilities and sublayer outputs.
    pub dropout: f64,
    /// The norm used at every norm site.
    pub norm: NormConfig,
    /// Pre-norm (`true`) or post-norm residual blocks.
    pub pre_norm: bool,
    /// Biases in every Linear.
    pub bias: bool,
    /// Factor applied to each pre-norm output (`1/√l` for LayerNorm Scaling, else 1).
    pub ln_scale: f64,
    /// Weight initialisation.
    pub init: Init,
}

impl LayerConfig {
    /// Check the combination of settings.
    pub fn validate(&self) -> Result<()> {
        if self.d_model == 0 || self.d_ff == 0 {
            return Err(Error::invalid("LayerConfig", "d_model and d_ff must be positive"));
        }
        if self.heads == 0 || self.d_model % self.heads != 0 {
            return Err(Error::invalid(
                "LayerConfig",
                format!("d_model {} is not divisible by {} heads", self.d_model, self.heads),
            ));
        }
        if !self.pre_norm && self.ln_scale != 1.0 {
            return Err(Error::invalid(
                "LayerConfig",
                "LayerNorm Scaling applies to pre-norm layers only",
            ));
        }
        Ok(())
    }
}

/// Position-wise feed-forward sublayer `ff2(dropout(GELU(ff1(x))))` (exact erf GELU).
///
/// Without active dropout the sublayer runs as one custom op that keeps only the
/// pre-activation `ff1(x)` for the backward and recomputes the GELU there: the graph
/// then holds one `[tokens, d_ff]` tensor per layer instead of two, the largest
/// activation-memory saving available in a Transformer block, for one extra
/// elementwise pass.
#[derive(Clone, Debug)]
pub struct FeedForward {
    /// `C → d_ff`.
    pub ff1: Linear,
    /// `d_ff → C`.
    pub ff2: Linear,
    drop: Dropout,
}

impl FeedForward {
    /// Build from a layer config.
    pub fn new(cfg: &LayerConfig, dtype: DType, dev: &Device) -> Result<FeedForward> {
        Ok(FeedForward {
            ff1: cfg.init.linear(cfg.d_model, cfg.d_ff, cfg.bias, dtype, dev)?,
            ff2: cfg.init.linear(cfg.d_ff, cfg.d_model, cfg.bias, dtype, dev)?,
            drop: Dropout::new(cfg.dropout)?,
        })
    }

    /// `[.., C] → [.., C]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.drop.is_active() || self.ff1.bias.is_some() != self.ff2.bias.is_some() {
            let h = self.drop.forward(&self.ff1.forward(x)?.gelu()?)?;
            return self.drop.forward(&self.ff2.forward(&h)?);
        }
        let c = self.ff1.in_features();
        if x.rank() == 0 || x.shape()[x.rank() - 1] != c {
            return Err(Error::ShapeMismatch {
                op: "FeedForward",
                lhs: x.shape().to_vec(),
                rhs: self.ff1.weight.shape().to_vec(),
            });
        }
        let op = FfnOp {
            need_x: x.tracks_grad(),
            has_bias: self.ff1.bias.is_some(),
            saved: None,
        };
        match (&self.ff1.bias, &self.ff2.bias) {
            (Some(b1), Some(b2)) => apply(op, &[x, &self.ff1.weight, &self.ff2.weight, b1, b2]),
            _ => apply(op, &[x, &self.ff1.weight, &self.ff2.weight]),
        }
        .in_op("FeedForward")
    }
}

/// `y = W₂·GELU(W₁x + b₁) + b₂` over rows; inputs `[x, W₁, W₂]` or `[x, W₁, W₂, b₁, b₂]`.
struct FfnOp {
    need_x: bool,
    has_bias: bool,
    /// `(x as [rows, C], pre-activation h, W₁, W₂, input shape)`.
    saved: Option<(Tensor, Tensor, Tensor, Tensor, Vec<usize>)>,
}

impl CustomOp for FfnOp {
    fn name(&self) -> String {
        "feed_forward".into()
    }

    fn forward(&mut self, inputs: &[Tensor]) -> Result<Tensor> {
        let _p = crate::profile::scope("ffn.fwd", Some(inputs[0].device()));
        let (x, w1, w2) = (&inputs[0], &inputs[1], &inputs[2]);
        let (x2, h) = pre_activation(inputs)?;
        let mut y = h.gelu()?.matmul(&w2.t()?)?;
        if let Some(b2) = inputs.get(4) {
            y = y.add(b2)?;
        }
        self.saved = Some((x2, h, w1.clone(), w2.clone(), x.shape().to_vec()));
        y.reshape(x.shape())
    }

    fn backward(self: Box<Self>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let _p = crate::profile::scope("ffn.bwd", Some(g.device()));
        let (x2, h, w1, w2, in_shape) = self.saved.as_ref().ok_or_else(|| crate::not_run("feed_forward"))?;
        let dgelu = unary(h, UnaryOp::GeluErfGrad)?;
        self.grads(x2, h, &dgelu, w1, w2, in_shape, g)
    }

    /// The same formulas in recorded ops on the attached inputs, with the
    /// pre-activation recomputed from them and GELU's derivative as a recorded op, so
    /// gradients of gradients (`create_graph`) go through `FeedForward`.
    fn differentiable_backward(&self, inputs: &[Tensor], g: &Tensor) -> Option<Result<Vec<Option<Tensor>>>> {
        Some(pre_activation(inputs).and_then(|(x2, h)| {
            let dgelu = gelu_erf_grad(&h)?;
            self.grads(&x2, &h, &dgelu, &inputs[1], &inputs[2], inputs[0].shape(), g)
        }))
    }
}

/// `(x as [rows, C], W₁x + b₁)` from the op's inputs.
fn pre_activation(inputs: &[Tensor]) -> Result<(Tensor, Tensor)> {
    let (x, w1) = (&inputs[0], &inputs[1]);
    let c = w1.shape()[1];
    let x2 = x.reshape(&[x.numel() / c.max(1), c])?;
    let mut h = x2.matmul(&w1.t()?)?;
    if let Some(b1) = inputs.get(3) {
        h = h.add(b1)?;
    }
    Ok((x2, h))
}

impl FfnOp {
    /// `(dx, dW₁, dW₂[, db₁, db₂])` from `x [rows, C]`, the pre-activation `h`, GELU's
    /// derivative at `h`, the weights, `x`'s shape and the output gradient `g`.
    #[allow(clippy::too_many_arguments)]
    fn grads(
        &self,
        x2: &Tensor,
        h: &Tensor,
        dgelu: &Tensor,
        w1: &Tensor,
        w2: &Tensor,
        in_shape: &[usize],
        g: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let g2 = g.reshape(&[x2.shape()[0], w2.shape()[0]])?;
        let a = h.gelu()?; // recomputed instead of kept alive since the forward
        let gw2 = g2.t()?.matmul(&a)?;
        drop(a);
        let gh = g2.matmul(w2)?.mul(dgelu)?;
        let gw1 = gh.t()?.matmul(x2)?;
        let gx = if self.need_x {
            Some(gh.matmul(w1)?.reshape(in_shape)?)
        } else {
            None
        };
        let mut grads = vec![gx, Some(gw1), Some(gw2)];
        if self.has_bias {
            grads.push(Some(gh.sum(&[0], false)?));
            grads.push(Some(g2.sum(&[0], false)?));
        }
        Ok(grads)
    }
}

impl Module for FeedForward {
    /// Visits `ff1` and `ff2` directly under `prefix` (the layer's own prefix).
    fn visit_params(&self, prefix: &str, f: &mut ParamVisitor<'_>) {
        self.ff1.visit_params(&join(prefix, "ff1"), f);
        self.ff2.visit_params(&join(prefix, "ff2"), f);
    }

    fn set_train(&mut self, train: bool) {
        self.drop.set_train(train);
    }
}

fn scaled(x: Tensor, s: f64) -> Result<Tensor> {
    if s == 1.0 {
        Ok(x)
    } else {
        x.mul_scalar(s)
    }
}

/// Self-attention + feed-forward: a Transformer encoder layer, and with a causal bias
/// the block of a decoder-only language model.
#[derive(Debug)]
pub struct EncoderLayer {
    /// Norm before (pre-norm) or after (post-norm) the attention sublayer.
    pub norm1: Norm,
    /// Self-attention.
    pub attn: MultiHeadAttention,
    /// Norm of the feed-forward sublayer.
    pub norm2: Norm,
    /// Feed-forward sublayer (`ff1`, `ff2`).
    pub ff: FeedForward,
    pre_norm: bool,
    ln_scale: f64,
}

impl EncoderLayer {
    /// Build from a layer config.
    pub fn new(cfg: &LayerConfig, dtype: DType, dev: &Device) -> Result<EncoderLayer> {
        cfg.validate()?;
        Ok(EncoderLayer {
            norm1: Norm::new(&cfg.norm, cfg.d_model, dtype, dev)?,
            attn: MultiHeadAttention::new_self(cfg.d_model, cfg.heads, cfg.bias, cfg.dropout, cfg.init, dtype, dev)?,
            norm2: Norm::new(&cfg.norm, cfg.d_model, dtype, dev)?,
            ff: FeedForward::new(cfg, dtype, dev)?,
            pre_norm: cfg.pre_norm,
            ln_scale: cfg.ln_scale,
        })
    }

    /// `x [B, T, C]`; `attn_bias` from [`crate::attention::attention_bias`]; `pad_mask`
    /// (`[B, T]`, 1 = pad) for the norms.
    pub fn forward(&self, x: &Tensor, attn_bias: Option<&Tensor>, pad_mask: Option<&Tensor>) -> Result<Tensor> {
        if self.pre_norm {
            let h = scaled(self.norm1.forward(x, pad_mask)?, self.ln_scale)?;
            let x = x.add(&self.attn.forward_self(&h, attn_bias)?)?;
            let h = scaled(self.norm2.forward(&x, pad_mask)?, self.ln_scale)?;
            x.add(&self.ff.forward(&h)?)
        } else {
            let x = self
                .norm1
                .forward(&x.add(&self.attn.forward_self(x, attn_bias)?)?, pad_mask)?;
            self.norm2.forward(&x.add(&self.ff.forward(&x)?)?, pad_mask)
        }
    }
}

impl Module for EncoderLayer {
    fn visit_params(&self, prefix: &str, f: &mut ParamVisitor<'_>) {
        self.norm1.visit_params(&join(prefix, "norm1"), f);
        self.attn.visit_params(&join(prefix, "attn"), f);
        self.norm2.visit_params(&join(prefix, "norm2"), f);
        self.ff.visit_params(prefix, f);
    }

    fn visit_buffers(&self, prefix: &str, f: &mut BufferVisitor<'_>) {
        self.norm1.visit_buffers(&join(prefix, "norm1"), f);
        self.norm2.visit_buffers(&join(prefix, "norm2"), f);
    }

    fn visit_norms_mut(&mut self, prefix: &str, f: &mut crate::module::NormVisitor<'_>) {
        f(&join(prefix, "norm1"), &mut self.norm1);
        f(&join(prefix, "norm2"), &mut self.norm2);
    }

    fn set_train(&mut self, train: bool) {
        self.norm1.set_train(train);
        self.attn.set_train(train);
        self.norm2.set_train(train);
        self.ff.set_train(train);
    }
}

/// Causal self-attention + cross-attention over the encoder output + feed-forward.
#[derive(Debug)]
pub struct DecoderLayer {
    /// Norm of the self-attention sublayer.
    pub norm1: Norm,
    /// Causal self-attention.
    pub self_attn: MultiHeadAttention,
    /// Norm of the cross-attention sublayer.
    pub norm2: Norm,
    /// Attention over the encoder output.
    pub cross_attn: MultiHeadAttention,
    /// Norm of the feed-forward sublayer.
    pub norm3: Norm,
    /// Feed-forward sublayer (`ff1`, `ff2`).
    pub ff: FeedForward,
    pre_norm: bool,
    ln_scale: f64,
}

impl DecoderLayer {
    /// Build from a layer config.
    pub fn new(cfg: &LayerConfig, dtype: DType, dev: &Device) -> Result<DecoderLayer> {
        cfg.validate()?;
        let (d, h) = (cfg.d_model, cfg.heads);
        Ok(DecoderLayer {
            norm1: Norm::new(&cfg.norm, d, dtype, dev)?,
            self_attn: MultiHeadAttention::new_self(d, h, cfg.bias, cfg.dropout, cfg.init, dtype, dev)?,
            norm2: Norm::new(&cfg.norm, d, dtype, dev)?,
            cross_attn: MultiHeadAttention::new_cross(d, h, cfg.bias, cfg.dropout, cfg.init, dtype, dev)?,
            norm3: Norm::new(&cfg.norm, d, dtype, dev)?,
            ff: FeedForward::new(cfg, dtype, dev)?,
            pre_norm: cfg.pre_norm,
            ln_scale: cfg.ln_scale,
        })
    }

    /// `x [B, T, C]` attends causally to itself (`self_bias`) and to `memory [B, S, C]`
    /// (`cross_bias`, usually the source padding); `pad_mask` (`[B, T]`) for the norms.
    pub fn forward(
        &self,
        x: &Tensor,
        memory: &Tensor,
        self_bias: Option<&Tensor>,
        cross_bias: Option<&Tensor>,
        pad_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        if self.pre_norm {
            let s = self.ln_scale;
            let h = scaled(self.norm1.forward(x, pad_mask)?, s)?;
            let x = x.add(&self.self_attn.forward_self(&h, self_bias)?)?;
            let h = scaled(self.norm2.forward(&x, pad_mask)?, s)?;
            let x = x.add(&self.cross_attn.forward_cross(&h, memory, cross_bias)?)?;
            let h = scaled(self.norm3.forward(&x, pad_mask)?, s)?;
            x.add(&self.ff.forward(&h)?)
        } else {
            let x = self
                .norm1
                .forward(&x.add(&self.self_attn.forward_self(x, self_bias)?)?, pad_mask)?;
            let x = self.norm2.forward(
                &x.add(&self.cross_attn.forward_cross(&x, memory, cross_bias)?)?,
                pad_mask,
            )?;
            self.norm3.forward(&x.add(&self.ff.forward(&x)?)?, pad_mask)
        }
    }
}

impl Module for DecoderLayer {
    fn visit_params(&self, prefix: &str, f: &mut ParamVisitor<'_>) {
        self.norm1.visit_params(&join(prefix, "norm1"), f);
        self.self_attn.visit_params(&join(prefix, "self_attn"), f);
        self.norm2.visit_params(&join(prefix, "norm2"), f);
        self.cross_attn.visit_params(&join(prefix, "cross_attn"), f);
        self.norm3.visit_params(&join(prefix, "norm3"), f);
        self.ff.visit_params(prefix, f);
    }

    fn visit_buffers(&self, prefix: &str, f: &mut BufferVisitor<'_>) {
        self.norm1.visit_buffers(&join(prefix, "norm1"), f);
        self.norm2.visit_buffers(&join(prefix, "norm2"), f);
        self.norm3.visit_buffers(&join(prefix, "norm3"), f);
    }

    fn visit_norms_mut(&mut self, prefix: &str, f: &mut crate::module::NormVisitor<'_>) {
        f(&join(prefix, "norm1"), &mut self.norm1);
        f(&join(prefix, "norm2"), &mut self.norm2);
        f(&join(prefix, "norm3"), &mut self.norm3);
    }

    fn set_train(&mut self, train: bool) {
        self.norm1.set_train(train);
        self.self_attn.set_train(train);
        self.norm2.set_train(train);
        self.cross_attn.set_train(train);
        self.norm3.set_train(train);
        self.ff.set_train(train);
    }
}
