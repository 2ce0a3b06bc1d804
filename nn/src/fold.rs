//! Inference folding: remove the norms that are a per-channel affine at inference by
//! folding them into the Linear layer that consumes their output.
//!
//! # Why
//!
//! At inference, BatchNorm, Unified Normalization and the channel part of PowerNorm
//! normalise with *stored* statistics, so each of them is `y = a ⊙ x + s` with fixed
//! per-channel `a`, `s`:
//!
//! | norm | `a` | `s` | op left in the graph |
//! | --- | --- | --- | --- |
//! | UN | `γ / sqrt(ρ + ε)` | `β` | none |
//! | BatchNorm | `γ / sqrt(σ²_run + ε)` | `β − μ_run · a` | none |
//! | PowerNorm | `γ / sqrt(φ + ε)` | `β` | its per-token group scaling |
//! | LayerNorm, RMSNorm | — (per-token statistics) | — | the whole norm |
//!
//! In a pre-norm block the norm's output feeds exactly one Linear (`attn.qkv`, `ff1`, and
//! for the final norm the LM `head`), so `W·(a ⊙ x + s) + b = (W·diag(a))·x + (b + W·s)`:
//! the folded layer has `W' = W·diag(a)` (column `j` of `W` scaled by `a_j`) and
//! `b' = b + W·s`, and the norm op disappears. This is the inference speed-up Unified
//! Normalization is designed for (Yang et al. 2022 report ~31% over LayerNorm on a GPU).
//! LayerNorm Scaling's `1/√l` factor is one more per-channel scale and folds the same way
//! (also in front of a LayerNorm that stays).
//!
//! Post-norm blocks are refused with an error: there the norm's output is also the
//! residual stream (`x = Norm(x + f(x))`), which no Linear consumes alone, so the norm
//! cannot be removed.
//!
//! The fold is computed on the host in f64 from the model's current parameters and
//! buffers, and the result is a snapshot ([`FoldedLm`]): it holds detached copies of every
//! tensor, records no gradients, and later training of the source model does not change
//! it.

use crate::attention::{attention_bias, MultiHeadAttention};
use crate::embedding::{Embedding, LearnedPositions, Positions};
use crate::linear::Linear;
use crate::models::{ln_scale, LmConfig, TransformerLm};
use crate::module::{join, Module, ParamVisitor};
use crate::norm::power::group_scale;
use crate::norm::{LayerNorm, Norm, NormKind, RmsNorm};
use crate::transformer::FeedForward;
use unigrad_core::{no_grad, DType, Error, Result, Tensor};

const OP: &str = "fold_for_inference";

/// What remains of a norm site after folding: the part applied to the Linear's input.
#[derive(Clone, Debug)]
pub enum InputOp {
    /// Nothing: the norm was folded away entirely (UN, BatchNorm).
    Identity,
    /// A LayerNorm that stays (per-token statistics are not a fixed affine).
    LayerNorm(LayerNorm),
    /// An RMSNorm that stays.
    RmsNorm(RmsNorm),
    /// PowerNorm's per-token group scaling with this many groups; its per-channel part
    /// is folded.
    GroupScale(usize),
}

impl InputOp {
    /// Apply the op to `x [.., C]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            InputOp::Identity => Ok(x.clone()),
            InputOp::LayerNorm(n) => n.forward(x),
            InputOp::RmsNorm(n) => n.forward(x),
            InputOp::GroupScale(g) => group_scale(x, *g),
        }
    }

    /// True when the norm op was removed.
    pub fn is_identity(&self) -> bool {
        matches!(self, InputOp::Identity)
    }

    /// A short name for reports: `none`, `layer_norm`, `rms_norm`, `group_scale`.
    pub fn name(&self) -> &'static str {
        match self {
            InputOp::Identity => "none",
            InputOp::LayerNorm(_) => "layer_norm",
            InputOp::RmsNorm(_) => "rms_norm",
            InputOp::GroupScale(_) => "group_scale",
        }
    }
}

/// A norm in eval mode written as `pre` followed by the per-channel affine
/// `scale ⊙ · + shift` (host f64 values, one per channel).
#[derive(Clone, Debug)]
pub struct EvalAffine {
    /// The op that stays in front of the affine.
    pub pre: InputOp,
    /// Per-channel scale `a`.
    pub scale: Vec<f64>,
    /// Per-channel shift `s`.
    pub shift: Vec<f64>,
}

fn host(t: &Tensor) -> Result<Vec<f64>> {
    t.to_vec_f64()
}

/// A copy sharing no gradient leaf and no trace site with `n`.
fn detached_ln(n: &LayerNorm) -> LayerNorm {
    let mut c = n.clone();
    c.weight = n.weight.as_ref().map(|t| t.detach());
    c.bias = n.bias.as_ref().map(|t| t.detach());
    c.set_trace(None);
    c
}

/// The eval-mode computation of a norm over `channels` features as [`EvalAffine`], times an
/// extra factor `factor` on its output (LayerNorm Scaling; 1 otherwise). LayerNorm and
/// RMSNorm stay whole (`scale = factor`, `shift = 0`). BatchNorm, UN and PowerNorm must be
/// in eval mode: the fold reproduces what they compute at inference.
pub fn eval_affine(norm: &Norm, channels: usize, factor: f64) -> Result<EvalAffine> {
    let training = match norm {
        Norm::Batch(n) => n.is_training(),
        Norm::Unified(n) => n.is_training(),
        Norm::Power(n) => n.is_training(),
        Norm::Layer(_) | Norm::Rms(_) => false,
    };
    if training {
        return Err(Error::invalid(
            OP,
            format!(
                "the {} norm is in training mode; call model.eval() first (folding reproduces inference)",
                norm.kind()
            ),
        ));
    }
    let (pre, scale, shift) = match norm {
        Norm::Layer(n) => (
            InputOp::LayerNorm(detached_ln(n)),
            vec![1.0; channels],
            vec![0.0; channels],
        ),
        Norm::Rms(n) => {
            let kept = RmsNorm {
                weight: n.weight.detach(),
                eps: n.eps,
            };
            (InputOp::RmsNorm(kept), vec![1.0; channels], vec![0.0; channels])
        }
        Norm::Batch(n) => {
            let (g, b) = (host(&n.weight)?, host(&n.bias)?);
            let (rm, rv) = (host(&n.running_mean.get())?, host(&n.running_var.get())?);
            let a: Vec<f64> = g.iter().zip(&rv).map(|(g, v)| g / (v + n.eps).sqrt()).collect();
            let s = b.iter().zip(&rm).zip(&a).map(|((b, m), a)| b - m * a).collect();
            (InputOp::Identity, a, s)
        }
        Norm::Unified(n) => {
            let eps = n.config().eps;
            let (g, rho) = (host(n.weight())?, host(&n.state().running_var)?);
            let a = g.iter().zip(&rho).map(|(g, r)| g / (r + eps).sqrt()).collect();
            (InputOp::Identity, a, host(n.bias())?)
        }
        Norm::Power(n) => {
            let eps = n.config().eps;
            let (g, phi) = (host(n.weight())?, host(&n.state().running_phi)?);
            let a = g.iter().zip(&phi).map(|(g, p)| g / (p + eps).sqrt()).collect();
            (InputOp::GroupScale(n.config().group_num), a, host(n.bias())?)
        }
    };
    if scale.len() != channels || shift.len() != channels {
        return Err(Error::invalid(
            OP,
            format!(
                "the {} norm has {} channels, expected {channels}",
                norm.kind(),
                scale.len()
            ),
        ));
    }
    Ok(EvalAffine {
        pre,
        scale: scale.iter().map(|a| a * factor).collect(),
        shift: shift.iter().map(|s| s * factor).collect(),
    })
}

/// A Linear computing `lin(scale ⊙ x + shift)`: `W' = W·diag(scale)`, `b' = b + W·shift`,
/// computed in f64 and stored in the layer's dtype on its device. The result holds no
/// gradient leaves. A bias is created when `lin` has none and `shift` is not all zero.
pub fn fold_into_linear(lin: &Linear, scale: &[f64], shift: &[f64]) -> Result<Linear> {
    let (out, inp) = (lin.out_features(), lin.in_features());
    if scale.len() != inp || shift.len() != inp {
        return Err(Error::invalid(
            "fold_into_linear",
            format!(
                "a Linear with weight {:?} needs {inp} scales and shifts, got {} and {}",
                lin.weight.shape(),
                scale.len(),
                shift.len()
            ),
        ));
    }
    let w = host(&lin.weight)?;
    let mut w2 = vec![0.0; out * inp];
    let mut b2 = match &lin.bias {
        Some(b) => host(b)?,
        None => vec![0.0; out],
    };
    for o in 0..out {
        let row = &w[o * inp..(o + 1) * inp];
        let mut acc = 0.0;
        for j in 0..inp {
            w2[o * inp + j] = row[j] * scale[j];
            acc += row[j] * shift[j];
        }
        b2[o] += acc;
    }
    let (dtype, dev) = (lin.weight.dtype(), lin.weight.device());
    let weight = Tensor::from_f64s(&w2, &[out, inp], dtype, dev)?;
    let bias = if lin.bias.is_some() || shift.iter().any(|&s| s != 0.0) {
        Some(Tensor::from_f64s(&b2, &[out], dtype, dev)?)
    } else {
        None
    };
    Ok(Linear { weight, bias })
}

fn detached_linear(l: &Linear) -> Linear {
    Linear {
        weight: l.weight.detach(),
        bias: l.bias.as_ref().map(|b| b.detach()),
    }
}

/// What happened to one norm site.
#[derive(Clone, Debug, PartialEq)]
pub struct FoldSite {
    /// The norm's name in the source model (`blocks.0.norm1`, `norm_f`).
    pub norm: String,
    /// Its kind.
    pub kind: NormKind,
    /// The Linear it was folded into (`blocks.0.attn.qkv`, `blocks.0.ff1`, `head`).
    pub into: String,
    /// The op still applied in front of that Linear (`none` when the norm was removed).
    pub kept_op: &'static str,
}

/// One pre-norm block after folding: `x + attn(pre_attn(x))`, then `x + ff(pre_ff(x))`,
/// where `attn.qkv` and `ff.ff1` carry the folded affines.
#[derive(Clone, Debug)]
pub struct FoldedBlock {
    /// What remains of `norm1`.
    pub pre_attn: InputOp,
    /// Self-attention (eval mode) with the folded `qkv`.
    pub attn: MultiHeadAttention,
    /// What remains of `norm2`.
    pub pre_ff: InputOp,
    /// Feed-forward sublayer (eval mode) with the folded `ff1`.
    pub ff: FeedForward,
}

/// An inference-only copy of a pre-norm [`TransformerLm`] with its foldable norms folded
/// into the neighbouring Linear layers. Its logits equal the eval-mode model's up to
/// rounding. See the module docs.
#[derive(Clone, Debug)]
pub struct FoldedLm {
    /// Token embedding.
    pub tok: Embedding,
    /// Positions.
    pub pos: Positions,
    /// The blocks.
    pub blocks: Vec<FoldedBlock>,
    /// What remains of the final norm.
    pub pre_head: InputOp,
    /// The output projection with the final norm folded in.
    pub head: Linear,
    sites: Vec<FoldSite>,
    cfg: LmConfig,
}

/// Fold `model` (pre-norm, norms in eval mode) for inference. Errors for post-norm models
/// (their norms feed the residual stream and cannot be removed) and for batch-statistics
/// norms still in training mode.
pub fn fold_for_inference(model: &TransformerLm) -> Result<FoldedLm> {
    let cfg = *model.config();
    if !cfg.pre_norm {
        return Err(Error::invalid(
            OP,
            "post-norm blocks cannot be folded: each norm's output is also the residual stream \
             (x = Norm(x + f(x))), not the input of one Linear; use the model as it is",
        ));
    }
    let norm_f = model
        .norm_f
        .as_ref()
        .ok_or_else(|| Error::invalid(OP, "a pre-norm model without a final norm"))?;
    let mut sites = Vec::new();
    let mut fold_site = |norm: &Norm, name: String, factor: f64, lin: &Linear, into: String| -> Result<_> {
        let aff = eval_affine(norm, lin.in_features(), factor)?;
        let folded = fold_into_linear(lin, &aff.scale, &aff.shift)?;
        sites.push(FoldSite {
            norm: name,
            kind: norm.kind(),
            into,
            kept_op: aff.pre.name(),
        });
        Ok((aff.pre, folded))
    };
    let mut blocks = Vec::with_capacity(model.blocks.len());
    for (i, blk) in model.blocks.iter().enumerate() {
        let p = format!("blocks.{i}");
        let s = ln_scale(cfg.ln_scaling, i);
        let qkv = blk
            .attn
            .qkv
            .as_ref()
            .ok_or_else(|| Error::invalid(OP, format!("{p}.attn has no fused qkv projection")))?;
        let (pre_attn, qkv) = fold_site(&blk.norm1, join(&p, "norm1"), s, qkv, join(&p, "attn.qkv"))?;
        let (pre_ff, ff1) = fold_site(&blk.norm2, join(&p, "norm2"), s, &blk.ff.ff1, join(&p, "ff1"))?;
        let mut attn = blk.attn.clone();
        attn.qkv = Some(qkv);
        attn.proj = detached_linear(&blk.attn.proj);
        attn.set_train(false);
        let mut ff = blk.ff.clone();
        ff.ff1 = ff1;
        ff.ff2 = detached_linear(&blk.ff.ff2);
        ff.set_train(false);
        blocks.push(FoldedBlock {
            pre_attn,
            attn,
            pre_ff,
            ff,
        });
    }
    let (pre_head, head) = fold_site(norm_f, "norm_f".into(), 1.0, &model.head, "head".into())?;
    let pos = match &model.pos {
        Positions::Learned(p) => Positions::Learned(LearnedPositions {
            weight: p.weight.detach(),
        }),
        other => other.clone(),
    };
    Ok(FoldedLm {
        tok: Embedding {
            weight: model.tok.weight.detach(),
            padding_idx: model.tok.padding_idx,
        },
        pos,
        blocks,
        pre_head,
        head,
        sites,
        cfg,
    })
}

impl FoldedLm {
    /// The source model's configuration.
    pub fn config(&self) -> &LmConfig {
        &self.cfg
    }

    /// Every norm site and what became of it, in model order.
    pub fn sites(&self) -> &[FoldSite] {
        &self.sites
    }

    /// Number of norm ops removed from the graph entirely.
    pub fn removed_norms(&self) -> usize {
        self.sites.iter().filter(|s| s.kept_op == "none").count()
    }

    /// The model's dtype.
    pub fn dtype(&self) -> DType {
        self.head.weight.dtype()
    }

    /// Logits `[B, T, vocab]` for ids `[B, T]`, as the eval-mode source model computes
    /// them. `pad_mask` (`[B, T]`, 1 = pad) hides padded keys from attention (the eval
    /// norms ignore it, as in the source model). Records no gradients.
    pub fn forward(&self, ids: &Tensor, pad_mask: Option<&Tensor>) -> Result<Tensor> {
        if ids.rank() != 2 {
            return Err(Error::invalid(
                "FoldedLm",
                format!("ids must be [B, T], got shape {:?}", ids.shape()),
            ));
        }
        let t = ids.shape()[1];
        if t > self.cfg.max_seq {
            return Err(Error::invalid(
                "FoldedLm",
                format!("sequence of {t} tokens exceeds max_seq {}", self.cfg.max_seq),
            ));
        }
        no_grad(|| {
            let mut x = self.tok.forward(ids)?.add(&self.pos.forward(0, t)?)?;
            let bias = attention_bias(true, pad_mask, t, t, x.dtype(), x.device())?;
            for blk in &self.blocks {
                let h = blk.pre_attn.forward(&x)?;
                x = x.add(&blk.attn.forward_self(&h, bias.as_ref())?)?;
                let h = blk.pre_ff.forward(&x)?;
                x = x.add(&blk.ff.forward(&h)?)?;
            }
            self.head.forward(&self.pre_head.forward(&x)?)
        })
    }
}

impl Module for FoldedLm {
    /// The folded tensors under the source model's names (norm parameters are gone, a
    /// kept LayerNorm/RMSNorm keeps its own). They are not gradient leaves.
    fn visit_params(&self, prefix: &str, f: &mut ParamVisitor<'_>) {
        self.tok.visit_params(&join(prefix, "tok"), f);
        self.pos.visit_params(&join(prefix, "pos"), f);
        let visit_op = |op: &InputOp, name: &str, f: &mut ParamVisitor<'_>| match op {
            InputOp::LayerNorm(n) => n.visit_params(name, f),
            InputOp::RmsNorm(n) => n.visit_params(name, f),
            InputOp::Identity | InputOp::GroupScale(_) => {}
        };
        for (i, b) in self.blocks.iter().enumerate() {
            let p = join(prefix, &format!("blocks.{i}"));
            visit_op(&b.pre_attn, &join(&p, "norm1"), f);
            b.attn.visit_params(&join(&p, "attn"), f);
            visit_op(&b.pre_ff, &join(&p, "norm2"), f);
            b.ff.visit_params(&p, f);
        }
        visit_op(&self.pre_head, &join(prefix, "norm_f"), f);
        self.head.visit_params(&join(prefix, "head"), f);
    }
}
