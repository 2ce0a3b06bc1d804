//! Multi-head attention (Vaswani et al. 2017): self-attention with one fused QKV
//! projection, cross-attention with a query projection and a fused key/value one.
//!
//! # Masks
//!
//! Masks are one *additive* bias `[B or 1, 1, Tq, Tk]` built once per forward by
//! [`attention_bias`] from a causal flag and a key-padding mask (`[B, Tk]`, 1 = pad), and
//! shared by every layer. Masked scores get [`MASK_VALUE`], a large finite negative
//! number rather than `-inf`: a row whose keys are all masked then yields a finite
//! (uniform) distribution instead of NaN.
//!
//! # Why one custom op
//!
//! The attention core (split heads, scaled scores, bias, softmax, weighted sum, merge
//! heads) is a single custom op over the *packed* projections: its inputs are the
//! fused `qkv` output (or `q` and the fused `kv`), the heads are strided views of it, and
//! the backward writes the gradient of the packed tensor in one pass. Recording the
//! same computation op by op would split `qkv` with three narrows whose backward
//! materialises three zero-padded copies and adds them.
//!
//! Without attention dropout (evaluation, or `dropout = 0` as in the reference
//! workload) the core is core's fused attention
//! ([`AttentionSpec`](unigrad_core::ops::attention::AttentionSpec)): one backend call
//! per direction over all (batch, head) blocks, no `[B, H, T, T]` tensors kept, and
//! the output already in token order so merging the heads is free. With attention
//! dropout the probabilities are materialised (the dropout mask needs them) and the
//! softmax runs as the backend's fused kernel in both directions.

use crate::dropout::Dropout;
use crate::linear::Linear;
use crate::module::{join, Module, ParamVisitor};
use unigrad_core::autograd::{is_grad_enabled, record};
use unigrad_core::custom::{apply, CustomOp};
use unigrad_core::ops::attention::AttentionSpec;
use unigrad_core::ops::softmax::softmax_last_backward;
use unigrad_core::{in_op, DType, Device, Error, Result, Tensor};

/// The name errors from inside the layer report (see [`unigrad_core::Error::in_op`]).
const MHA: &str = "MultiHeadAttention";

/// Added to masked attention scores (finite so fully masked rows stay finite).
pub const MASK_VALUE: f64 = -1e9;

/// How a model initialises its Linear and Embedding weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// PyTorch's layer defaults (uniform `±1/√in` for Linear).
    Default,
    /// Weights `N(0, std²)`, biases zero (GPT-2 style; the reference workload uses 0.02).
    Normal(f64),
}

impl Init {
    /// A Linear layer initialised this way.
    pub fn linear(self, inp: usize, out: usize, bias: bool, dtype: DType, dev: &Device) -> Result<Linear> {
        match self {
            Init::Default => Linear::new(inp, out, bias, dtype, dev),
            Init::Normal(std) => Linear::new_normal(inp, out, bias, std, dtype, dev),
        }
    }
}

/// The additive attention bias for `tq` queries and `tk` keys: [`MASK_VALUE`] where
/// query `i` may not see key `j` (causal: `j > i + tk − tq`; padding:
/// `key_padding[b, j] = 1`), 0 elsewhere. Shape `[B, 1, tq, tk]` with both masks,
/// `[1, 1, tq, tk]` with the causal one only, `[B, 1, 1, tk]` with padding only (it
/// broadcasts over the queries); `None` when nothing is masked.
pub fn attention_bias(
    causal: bool,
    key_padding: Option<&Tensor>,
    tq: usize,
    tk: usize,
    dtype: DType,
    dev: &Device,
) -> Result<Option<Tensor>> {
    let causal_bias = if causal {
        if tq > tk {
            return Err(Error::invalid(
                "attention_bias",
                format!("causal masking needs at least as many keys as queries, got tq={tq}, tk={tk}"),
            ));
        }
        let shift = tk - tq;
        let mut v = vec![0.0; tq * tk];
        for i in 0..tq {
            for j in (i + shift + 1)..tk {
                v[i * tk + j] = MASK_VALUE;
            }
        }
        Some(Tensor::from_f64s(&v, &[1, 1, tq, tk], dtype, dev)?)
    } else {
        None
    };
    let pad_bias = match key_padding {
        Some(m) => {
            if m.rank() != 2 || m.shape()[1] != tk {
                return Err(Error::invalid(
                    "attention_bias",
                    format!("key padding mask must be [B, {tk}], got shape {:?}", m.shape()),
                ));
            }
            let b = m.shape()[0];
            Some(m.to_dtype(dtype)?.mul_scalar(MASK_VALUE)?.reshape(&[b, 1, 1, tk])?)
        }
        None => None,
    };
    Ok(match (causal_bias, pad_bias) {
        (Some(c), Some(p)) => Some(c.add(&p)?),
        (Some(c), None) => Some(c),
        (None, Some(p)) => Some(p),
        (None, None) => None,
    })
}

/// True when `bias` is exactly the causal bias [`attention_bias`] builds without a
/// padding mask for `tq` queries: `[1, 1, tq, tk]`, [`MASK_VALUE`] where `j > i + tk − tq`, 0 elsewhere.
/// Such a bias then runs as the fused op's causal flag, which skips the masked keys'
/// products instead of adding −10⁹ to them; the result is the same, since every row
/// sees at least its own key and `exp(−10⁹ − max)` is exactly 0. Costs one host read
/// of `tq·tk` values.
fn is_causal_bias(bias: &Tensor, tq: usize) -> Result<bool> {
    let s = bias.shape();
    if s.len() != 4 || s[0] != 1 || s[1] != 1 || s[2] != tq || tq > s[3] {
        return Ok(false);
    }
    let tk = s[3];
    let shift = tk - tq;
    let v = bias.to_vec_f64()?;
    Ok(v.iter().enumerate().all(|(idx, &x)| {
        let (i, j) = (idx / tk, idx % tk);
        if j > i + shift {
            x == MASK_VALUE
        } else {
            x == 0.0
        }
    }))
}

/// Where the query, key and value heads live among the op's inputs.
#[derive(Clone, Copy, Debug)]
enum Packing {
    /// One input `[B, T, 3C]`: q, k, v are its three column blocks.
    SelfQkv,
    /// Inputs `[B, Tq, C]` (q) and `[B, Tk, 2C]` (k, v).
    CrossQKv,
}

/// `[B, T, n·C]` → block `idx` as `[B, H, T, hd]` (a strided view).
fn head_view(t: &Tensor, idx: usize, n: usize, heads: usize) -> Result<Tensor> {
    let (b, len, width) = (t.shape()[0], t.shape()[1], t.shape()[2]);
    let hd = width / n / heads;
    t.reshape(&[b, len, n, heads, hd])?
        .narrow(2, idx, 1)?
        .squeeze(2)?
        .permute(&[0, 2, 1, 3])
}

impl Packing {
    /// The query, key and value heads `[B, H, T, hd]` as strided views of the inputs.
    fn heads(self, inputs: &[Tensor], heads: usize) -> Result<(Tensor, Tensor, Tensor)> {
        Ok(match self {
            Packing::SelfQkv => (
                head_view(&inputs[0], 0, 3, heads)?,
                head_view(&inputs[0], 1, 3, heads)?,
                head_view(&inputs[0], 2, 3, heads)?,
            ),
            Packing::CrossQKv => (
                head_view(&inputs[0], 0, 1, heads)?,
                head_view(&inputs[1], 0, 2, heads)?,
                head_view(&inputs[1], 1, 2, heads)?,
            ),
        })
    }

    /// The gradients of the packed inputs from those of the heads (`[B, H, T, hd]`):
    /// back to token order and stacked in one copy per input.
    fn pack(self, gq: &Tensor, gk: &Tensor, gv: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (b, h, tq, hd) = (gq.shape()[0], gq.shape()[1], gq.shape()[2], gq.shape()[3]);
        let tk = gk.shape()[2];
        // [B, H, T, hd] → [B, T, H, hd] views, stacked on a new axis 2 in one copy
        let to_tokens = |t: &Tensor| t.permute(&[0, 2, 1, 3]);
        match self {
            Packing::SelfQkv => {
                let parts = [to_tokens(gq)?, to_tokens(gk)?, to_tokens(gv)?];
                let packed = Tensor::stack(&[&parts[0], &parts[1], &parts[2]], 2)?;
                Ok(vec![Some(packed.reshape(&[b, tq, 3 * h * hd])?)])
            }
            Packing::CrossQKv => {
                let gq = to_tokens(gq)?.reshape(&[b, tq, h * hd])?;
                let (gk, gv) = (to_tokens(gk)?, to_tokens(gv)?);
                let packed = Tensor::stack(&[&gk, &gv], 2)?.reshape(&[b, tk, 2 * h * hd])?;
                Ok(vec![Some(gq), Some(packed)])
            }
        }
    }
}

/// The attention core without dropout on core's fused attention op, recorded over
/// the packed inputs (see the module docs). A `create_graph` backward (recording on)
/// computes the gradients with recorded ops from the attached inputs, so they are
/// differentiable; otherwise the backend's fused backward runs.
fn fused_core(packing: Packing, heads: usize, spec: AttentionSpec, inputs: &[&Tensor]) -> Result<Tensor> {
    let _p = crate::profile::scope("attention.fwd", Some(inputs[0].device()));
    let detached: Vec<Tensor> = inputs.iter().map(|t| t.detach()).collect();
    let (q, k, v) = packing.heads(&detached, heads)?;
    let (o, lse) = spec.forward(&q, &k, &v)?;
    let (b, tq, width) = (o.shape()[0], o.shape()[2], heads * o.shape()[3]);
    // `o` is a view of token-major storage: this is a view too
    let y = o.permute(&[0, 2, 1, 3])?.reshape(&[b, tq, width])?;
    let attached: Vec<Tensor> = inputs.iter().map(|t| (*t).clone()).collect();
    record(
        "attention",
        y,
        inputs,
        Box::new(move |g| {
            let _p = crate::profile::scope("attention.bwd", Some(g.device()));
            let go = g.reshape(&[b, tq, heads, width / heads])?.permute(&[0, 2, 1, 3])?;
            let (gq, gk, gv) = if is_grad_enabled() {
                let (q, k, v) = packing.heads(&attached, heads)?;
                spec.grads_composed(&q, &k, &v, &go)?
            } else {
                spec.backward(&q, &k, &v, &lse, &go)?
            };
            packing.pack(&gq, &gk, &gv)
        }),
    )
}

struct AttnOp {
    packing: Packing,
    heads: usize,
    scale: f64,
    bias: Option<Tensor>,
    dropout: f64,
    /// `(q, k, v, probabilities, dropout keep-mask / (1 − p))`; q, k, v are views of the
    /// op's inputs, which the graph keeps alive anyway.
    saved: Option<(Tensor, Tensor, Tensor, Tensor, Option<Tensor>)>,
}

impl CustomOp for AttnOp {
    fn name(&self) -> String {
        "attention".into()
    }

    fn forward(&mut self, inputs: &[Tensor]) -> Result<Tensor> {
        let _p = crate::profile::scope("attention.fwd", Some(inputs[0].device()));
        let h = self.heads;
        let (q, k, v) = self.packing.heads(inputs, h)?;
        let (b, tq, hd) = (q.shape()[0], q.shape()[2], q.shape()[3]);
        let p = self.probs(&q, &k)?;
        let keep = if self.dropout > 0.0 {
            Some(
                Tensor::bernoulli(p.shape(), 1.0 - self.dropout, p.dtype(), p.device())?
                    .mul_scalar(1.0 / (1.0 - self.dropout))?,
            )
        } else {
            None
        };
        let pd = match &keep {
            Some(m) => p.mul(m)?,
            None => p.clone(),
        };
        let o = pd.matmul(&v)?;
        self.saved = Some((q, k, v, p, keep));
        o.permute(&[0, 2, 1, 3])?.reshape(&[b, tq, h * hd])
    }

    fn backward(self: Box<Self>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let _p = crate::profile::scope("attention.bwd", Some(g.device()));
        let (q, k, v, p, keep) = self.saved.as_ref().ok_or_else(|| crate::not_run("attention"))?;
        self.grads(q, k, v, p, keep.as_ref(), g, false)
    }

    /// The same gradient in recorded ops on the attached inputs, with the
    /// probabilities recomputed from them and the forward's dropout mask (a constant),
    /// so gradients of gradients (`create_graph`) go through attention with dropout.
    fn differentiable_backward(&self, inputs: &[Tensor], g: &Tensor) -> Option<Result<Vec<Option<Tensor>>>> {
        let keep = match self.saved.as_ref() {
            Some(saved) => saved.4.as_ref(),
            None => return Some(Err(crate::not_run("attention"))),
        };
        Some(self.packing.heads(inputs, self.heads).and_then(|(q, k, v)| {
            let p = self.probs(&q, &k)?;
            self.grads(&q, &k, &v, &p, keep, g, true)
        }))
    }
}

impl AttnOp {
    /// The attention probabilities `softmax(scale·q·kᵀ + bias)` of heads `[B, H, T, hd]`.
    fn probs(&self, q: &Tensor, k: &Tensor) -> Result<Tensor> {
        // scaling q (Tq·hd values) is cheaper than scaling the scores (Tq·Tk)
        let mut s = q.mul_scalar(self.scale)?.matmul(&k.transpose(-1, -2)?)?;
        if let Some(bias) = &self.bias {
            s = s.add(bias)?;
        }
        s.softmax(-1)
    }

    /// The packed inputs' gradients from the heads, the probabilities `p`, the dropout
    /// mask and the output gradient `g`. `composed`: the softmax backward in recorded
    /// ops (differentiable) instead of the one-call backend kernel.
    #[allow(clippy::too_many_arguments)]
    fn grads(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        p: &Tensor,
        keep: Option<&Tensor>,
        g: &Tensor,
        composed: bool,
    ) -> Result<Vec<Option<Tensor>>> {
        let (b, h, tq, hd) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
        let go = g.reshape(&[b, tq, h, hd])?.permute(&[0, 2, 1, 3])?;
        let pd = match keep {
            Some(m) => p.mul(m)?,
            None => p.clone(),
        };
        let gv = pd.transpose(-1, -2)?.matmul(&go)?;
        let mut gp = go.matmul(&v.transpose(-1, -2)?)?;
        if let Some(m) = keep {
            gp = gp.mul(m)?;
        }
        let gs = if composed {
            p.mul(&gp.sub(&gp.mul(p)?.sum(&[-1], true)?)?)?
        } else {
            softmax_last_backward(p, &gp)?
        };
        let gq = gs.matmul(k)?.mul_scalar(self.scale)?;
        let gk = gs.transpose(-1, -2)?.matmul(q)?.mul_scalar(self.scale)?;
        self.packing.pack(&gq, &gk, &gv)
    }
}

/// Multi-head attention with PyTorch-style projections.
///
/// Self-attention parameters: `qkv` (`[3C, C]`, rows ordered q, k, v) and `proj`.
/// Cross-attention parameters: `q` (`[C, C]`), `kv` (`[2C, C]`, rows k then v) and `proj`.
#[derive(Clone, Debug)]
pub struct MultiHeadAttention {
    /// Fused query/key/value projection (self-attention).
    pub qkv: Option<Linear>,
    /// Query projection (cross-attention).
    pub q: Option<Linear>,
    /// Fused key/value projection (cross-attention).
    pub kv: Option<Linear>,
    /// Output projection.
    pub proj: Linear,
    heads: usize,
    attn_drop: f64,
    resid_drop: Dropout,
    train: bool,
}

fn check_heads(d_model: usize, heads: usize) -> Result<()> {
    if heads == 0 || d_model % heads != 0 {
        return Err(Error::invalid(
            MHA,
            format!("d_model {d_model} is not divisible by {heads} heads"),
        ));
    }
    Ok(())
}

impl MultiHeadAttention {
    /// Self-attention over `d_model` features with `heads` heads. `dropout` applies to
    /// the attention probabilities and to the output.
    pub fn new_self(
        d_model: usize,
        heads: usize,
        bias: bool,
        dropout: f64,
        init: Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Self> {
        check_heads(d_model, heads)?;
        Ok(MultiHeadAttention {
            qkv: Some(init.linear(d_model, 3 * d_model, bias, dtype, dev)?),
            q: None,
            kv: None,
            proj: init.linear(d_model, d_model, bias, dtype, dev)?,
            heads,
            attn_drop: dropout,
            resid_drop: Dropout::new(dropout)?,
            train: true,
        })
    }

    /// Cross-attention: queries from the decoder, keys and values from `memory`.
    pub fn new_cross(
        d_model: usize,
        heads: usize,
        bias: bool,
        dropout: f64,
        init: Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Self> {
        check_heads(d_model, heads)?;
        Ok(MultiHeadAttention {
            qkv: None,
            q: Some(init.linear(d_model, d_model, bias, dtype, dev)?),
            kv: Some(init.linear(d_model, 2 * d_model, bias, dtype, dev)?),
            proj: init.linear(d_model, d_model, bias, dtype, dev)?,
            heads,
            attn_drop: dropout,
            resid_drop: Dropout::new(dropout)?,
            train: true,
        })
    }

    /// Number of heads.
    pub fn heads(&self) -> usize {
        self.heads
    }

    fn core(&self, packing: Packing, inputs: &[&Tensor], bias: Option<&Tensor>) -> Result<Tensor> {
        let d = self.proj.in_features();
        let hd = d / self.heads;
        let scale = 1.0 / (hd as f64).sqrt();
        let dropout = if self.train { self.attn_drop } else { 0.0 };
        let y = if dropout > 0.0 {
            let op = AttnOp {
                packing,
                heads: self.heads,
                scale,
                bias: bias.cloned(),
                dropout,
                saved: None,
            };
            apply(op, inputs)?
        } else {
            let spec = match bias {
                Some(m) if is_causal_bias(m, inputs[0].shape()[1])? => AttentionSpec::new(scale, true),
                _ => AttentionSpec::new(scale, false).with_bias(bias),
            };
            fused_core(packing, self.heads, spec, inputs)?
        };
        self.resid_drop.forward(&self.proj.forward(&y)?)
    }

    /// Self-attention of `x [B, T, C]` with an additive `bias` from [`attention_bias`].
    /// Errors from the projections and the attention inside name
    /// `MultiHeadAttention`.
    pub fn forward_self(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        in_op(MHA, || self.self_attention(x, bias))
    }

    fn self_attention(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let qkv = self
            .qkv
            .as_ref()
            .ok_or_else(|| Error::invalid(MHA, "forward_self on a cross-attention layer"))?;
        check_tokens(x, qkv.in_features())?;
        check_bias(bias, x.shape()[0], x.shape()[1], x.shape()[1])?;
        let packed = qkv.forward(x)?;
        self.core(Packing::SelfQkv, &[&packed], bias)
    }

    /// Attention of queries `x [B, Tq, C]` over `memory [B, Tk, C]`. Errors from the
    /// projections and the attention inside name `MultiHeadAttention`.
    pub fn forward_cross(&self, x: &Tensor, memory: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        in_op(MHA, || self.cross_attention(x, memory, bias))
    }

    fn cross_attention(&self, x: &Tensor, memory: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let (Some(q), Some(kv)) = (&self.q, &self.kv) else {
            return Err(Error::invalid(MHA, "forward_cross on a self-attention layer"));
        };
        check_tokens(x, q.in_features())?;
        check_tokens(memory, kv.in_features())?;
        if memory.shape()[0] != x.shape()[0] {
            return Err(Error::ShapeMismatch {
                op: MHA,
                lhs: x.shape().to_vec(),
                rhs: memory.shape().to_vec(),
            });
        }
        check_bias(bias, x.shape()[0], x.shape()[1], memory.shape()[1])?;
        let (qp, kvp) = (q.forward(x)?, kv.forward(memory)?);
        self.core(Packing::CrossQKv, &[&qp, &kvp], bias)
    }
}

fn check_tokens(x: &Tensor, c: usize) -> Result<()> {
    if x.rank() != 3 || x.shape()[2] != c {
        return Err(Error::invalid(
            MHA,
            format!("input must be [B, T, {c}], got shape {:?}", x.shape()),
        ));
    }
    Ok(())
}

fn check_bias(bias: Option<&Tensor>, b: usize, tq: usize, tk: usize) -> Result<()> {
    if let Some(m) = bias {
        let s = m.shape();
        let ok = s.len() == 4 && (s[0] == 1 || s[0] == b) && s[1] == 1 && (s[2] == tq || s[2] == 1) && s[3] == tk;
        if !ok {
            return Err(Error::invalid(
                MHA,
                format!("attention bias must be [1 or {b}, 1, {tq} or 1, {tk}], got shape {s:?}"),
            ));
        }
    }
    Ok(())
}

impl Module for MultiHeadAttention {
    fn visit_params(&self, prefix: &str, f: &mut ParamVisitor<'_>) {
        if let Some(l) = &self.qkv {
            l.visit_params(&join(prefix, "qkv"), f);
        }
        if let Some(l) = &self.q {
            l.visit_params(&join(prefix, "q"), f);
        }
        if let Some(l) = &self.kv {
            l.visit_params(&join(prefix, "kv"), f);
        }
        self.proj.visit_params(&join(prefix, "proj"), f);
    }

    fn set_train(&mut self, train: bool) {
        self.train = train;
        self.resid_drop.set_train(train);
    }
}
