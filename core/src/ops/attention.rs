//! The attention family: fused scaled-dot-product attention,
//! `softmax(scale·Q·Kᵀ + bias + causal mask)·V` over `[B, H, T, D]` heads, as one
//! differentiable op.
//!
//! Why fused: composed op by op, attention materialises the `[B, H, Tq, Tk]` scores
//! and probabilities, reads them back in the backward, and launches a parallel region
//! per op. Here each direction is one backend call ([`Backend::attention`],
//! [`Backend::attention_backward`]) that works per (batch, head) block: the forward
//! keeps only the log-sum-exp of each score row, and the backward recomputes the
//! probabilities from it (the flash-attention scheme, Dao et al. 2022). A causal mask
//! is a flag, so a backend can skip the masked half of the products.
//!
//! Layouts: the output and the gradients come back as `[B, H, T, X]` views of
//! *token-major* `[B, T, H, X]` storage, so merging the heads (`permute` to
//! `[B, T, H, X]` and `reshape` to `[B, T, H·X]`) is free, and the operands may be
//! any strided views (the heads of one packed QKV projection need no copy).
//!
//! Higher-order gradients: when the backward runs with recording on (a `create_graph`
//! backward), the gradients are computed with recorded tensor ops from the attached
//! operands ([`AttentionSpec::grads_composed`]), so they are differentiable; otherwise
//! the fused backend kernel runs.
//!
//! [`Backend::attention`]: crate::Backend::attention
//! [`Backend::attention_backward`]: crate::Backend::attention_backward

use super::check_float;
use super::view::dense;
use crate::autograd::{is_grad_enabled, record};
use crate::backend::AttentionArgs;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::tensor::{check_same_kind, Tensor};

const OP: &str = "attention";

/// The constants of one attention call: an optional additive score bias, the score
/// scale and the causal flag.
#[derive(Clone, Debug)]
pub struct AttentionSpec {
    /// Additive bias broadcastable to `[B, H, Tq, Tk]` (a padding mask as large
    /// negative values, say). It is a constant: a bias that tracks gradients is an
    /// error.
    pub bias: Option<Tensor>,
    /// Factor applied to `Q·Kᵀ` (usually `1/√D`).
    pub scale: f64,
    /// Query `i` sees keys `j ≤ i + Tk − Tq` only.
    pub causal: bool,
}

impl AttentionSpec {
    /// Attention with `scale` and the causal flag, without a bias.
    pub fn new(scale: f64, causal: bool) -> AttentionSpec {
        AttentionSpec {
            bias: None,
            scale,
            causal,
        }
    }

    /// The same spec with an additive score bias.
    pub fn with_bias(mut self, bias: Option<&Tensor>) -> AttentionSpec {
        self.bias = bias.cloned();
        self
    }

    /// Check `q [B, H, Tq, D]`, `k [B, H, Tk, D]`, `v [B, H, Tk, Dv]` and the bias;
    /// returns the bias layout broadcast to `[B, H, Tq, Tk]`.
    fn check(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Option<Layout>> {
        check_float(OP, q)?;
        check_same_kind(OP, q, k)?;
        check_same_kind(OP, q, v)?;
        let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
        let shapes = || format!("q {qs:?}, k {ks:?}, v {vs:?}");
        if qs.len() != 4 || ks.len() != 4 || vs.len() != 4 {
            return Err(Error::invalid(
                OP,
                format!("q, k, v must be [B, H, T, D] (rank 4), got {}", shapes()),
            ));
        }
        if ks[..2] != qs[..2] || vs[..2] != qs[..2] || ks[3] != qs[3] || vs[2] != ks[2] {
            return Err(Error::invalid(
                OP,
                format!(
                    "expected q [B, H, Tq, D], k [B, H, Tk, D], v [B, H, Tk, Dv], got {}",
                    shapes()
                ),
            ));
        }
        let (tq, tk) = (qs[2], ks[2]);
        if tk == 0 {
            return Err(Error::invalid(OP, format!("needs at least one key, got {}", shapes())));
        }
        if self.causal && tq > tk {
            return Err(Error::invalid(
                OP,
                format!("causal masking needs at least as many keys as queries, got tq={tq}, tk={tk}"),
            ));
        }
        if !self.scale.is_finite() {
            return Err(Error::invalid(OP, format!("scale {} is not finite", self.scale)));
        }
        let Some(bias) = &self.bias else { return Ok(None) };
        check_same_kind(OP, q, bias)?;
        if bias.tracks_grad() {
            return Err(Error::invalid(
                OP,
                format!(
                    "the bias (shape {:?}) is a constant and takes no gradient; detach it",
                    bias.shape()
                ),
            ));
        }
        let full = [qs[0], qs[1], tq, tk];
        match bias.layout().broadcast_to(&full) {
            Some(l) if bias.rank() <= 4 => Ok(Some(l)),
            _ => Err(Error::invalid(
                OP,
                format!("bias of shape {:?} does not broadcast to {full:?}", bias.shape()),
            )),
        }
    }

    /// Check the operands, then run `f` on them as backend arguments.
    fn with_args<R>(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        f: impl FnOnce(&AttentionArgs<'_>) -> Result<R>,
    ) -> Result<R> {
        let bias_l = self.check(q, k, v)?;
        let (sq, sk, sv) = (q.storage(), k.storage(), v.storage());
        let sb = self.bias.as_ref().map(|b| b.storage());
        f(&AttentionArgs {
            q: (&*sq, q.layout()),
            k: (&*sk, k.layout()),
            v: (&*sv, v.layout()),
            bias: sb.as_deref().zip(bias_l.as_ref()),
            scale: self.scale,
            causal: self.causal,
        })
    }

    /// The fused forward without recording: `(O, lse)`, `O` `[B, H, Tq, Dv]` (a view of
    /// token-major storage) and `lse` dense `[B, H, Tq]`, the log-sum-exp of each
    /// masked score row.
    pub fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let dev = q.device();
        self.with_args(q, k, v, |args| {
            let (nb, h, tq, _, _, dv) = args.dims();
            let (o, lse) = dev.backend().attention(args)?;
            let o = Tensor::from_storage(o, token_major(nb, h, tq, dv)?, dev.clone());
            Ok((o, Tensor::from_backend_storage(lse, &[nb, h, tq], dev)?))
        })
    }

    /// The fused backward without recording: `(dQ, dK, dV)` from the forward's operands,
    /// its `lse` and the output gradient `dout` (`[B, H, Tq, Dv]`, any strides), each a
    /// `[B, H, T, X]` view of token-major storage.
    pub fn backward(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        lse: &Tensor,
        dout: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        const BWD: &str = "attention_backward";
        let dev = q.device();
        self.with_args(q, k, v, |args| {
            let (nb, h, tq, tk, d, dv) = args.dims();
            if lse.shape() != [nb, h, tq] || dout.shape() != [nb, h, tq, dv] {
                return Err(Error::invalid(
                    BWD,
                    format!(
                        "expected lse {:?} and dout {:?}, got {:?} and {:?}",
                        [nb, h, tq],
                        [nb, h, tq, dv],
                        lse.shape(),
                        dout.shape()
                    ),
                ));
            }
            check_same_kind(BWD, q, lse)?;
            check_same_kind(BWD, q, dout)?;
            let lse = dense(&lse.detach())?;
            let (sl, sd) = (lse.storage(), dout.storage());
            let (gq, gk, gv) = dev.backend().attention_backward(args, &*sl, &*sd, dout.layout())?;
            let wrap =
                |s, t, x| -> Result<Tensor> { Ok(Tensor::from_storage(s, token_major(nb, h, t, x)?, dev.clone())) };
            Ok((wrap(gq, tq, d)?, wrap(gk, tk, d)?, wrap(gv, tk, dv)?))
        })
    }

    /// The masked, scaled scores `scale·Q·Kᵀ + bias` (−∞ past each query's causal
    /// limit) with recorded ops.
    fn scores(&self, q: &Tensor, k: &Tensor) -> Result<Tensor> {
        let mut s = q.matmul(&k.transpose(-1, -2)?)?.mul_scalar(self.scale)?;
        if let Some(b) = &self.bias {
            s = s.add(b)?;
        }
        if self.causal {
            let (tq, tk) = (q.shape()[2], k.shape()[2]);
            let shift = tk - tq;
            let m: Vec<f64> = (0..tq * tk)
                .map(|i| if i % tk > i / tk + shift { 1.0 } else { 0.0 })
                .collect();
            let mask = Tensor::from_f64s(&m, &[tq, tk], q.dtype(), q.device())?;
            s = s.masked_fill(&mask, f64::NEG_INFINITY)?;
        }
        Ok(s)
    }

    /// The same attention composed of recorded tensor ops (matmul, add, masked_fill,
    /// softmax, matmul): the reference the fused op is tested against, and
    /// differentiable to any order.
    pub fn composed(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        self.check(q, k, v)?;
        self.scores(q, k)?.softmax(-1)?.matmul(v)
    }

    /// The gradients `(dQ, dK, dV)` for the output gradient `dout`, computed with
    /// recorded tensor ops from the operands (pass them attached), so they are
    /// differentiable: `P = softmax(scores)`, `dV = Pᵀ·dO`, `dP = dO·Vᵀ`,
    /// `dS = P ⊙ (dP − rowsum(dP ⊙ P))`, `dQ = scale·dS·K`, `dK = scale·dSᵀ·Q`.
    pub fn grads_composed(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        dout: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        self.check(q, k, v)?;
        let p = self.scores(q, k)?.softmax(-1)?;
        let gv = p.transpose(-1, -2)?.matmul(dout)?;
        let gp = dout.matmul(&v.transpose(-1, -2)?)?;
        let gs = p.mul(&gp.sub(&gp.mul(&p)?.sum(&[-1], true)?)?)?;
        let gq = gs.matmul(k)?.mul_scalar(self.scale)?;
        let gk = gs.transpose(-1, -2)?.matmul(q)?.mul_scalar(self.scale)?;
        Ok((gq, gk, gv))
    }

    /// The recorded fused op: `softmax(scale·Q·Kᵀ + bias + mask)·V`, `[B, H, Tq, Dv]`.
    pub fn apply(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let (o, lse) = self.forward(&q.detach(), &k.detach(), &v.detach())?;
        let spec = self.clone();
        // attached operands: a create_graph backward differentiates through them
        let (qa, ka, va) = (q.clone(), k.clone(), v.clone());
        record(
            OP,
            o,
            &[q, k, v],
            Box::new(move |g| {
                let (gq, gk, gv) = if is_grad_enabled() {
                    spec.grads_composed(&qa, &ka, &va, g)?
                } else {
                    spec.backward(&qa.detach(), &ka.detach(), &va.detach(), &lse, g)?
                };
                Ok(vec![Some(gq), Some(gk), Some(gv)])
            }),
        )
    }
}

/// `[B, H, T, X]` layout of dense token-major `[B, T, H, X]` storage.
fn token_major(b: usize, h: usize, t: usize, x: usize) -> Result<Layout> {
    Layout::contiguous(&[b, t, h, x]).permute(&[0, 2, 1, 3])
}

impl Tensor {
    /// Scaled-dot-product attention of queries `self [B, H, Tq, D]` over keys
    /// `k [B, H, Tk, D]` and values `v [B, H, Tk, Dv]`:
    /// `softmax(scale·Q·Kᵀ + bias + causal mask)·V`, `[B, H, Tq, Dv]`. `bias`
    /// broadcasts to `[B, H, Tq, Tk]` and takes no gradient. One fused backend call per
    /// direction; see the [module docs](crate::ops::attention).
    pub fn attention(&self, k: &Tensor, v: &Tensor, bias: Option<&Tensor>, scale: f64, causal: bool) -> Result<Tensor> {
        AttentionSpec::new(scale, causal).with_bias(bias).apply(self, k, v)
    }
}
