//! The nn layers on the device under test: f64 gradient checks of every module against
//! central differences, and forward checks against naive host references.
//!
//! Layers are composed of core ops, but several run as custom ops with hand-written
//! backwards (BatchNorm, the feed-forward sublayer, the fused LayerNorm) or combine masks
//! in ways no single op test covers (attention with causal and padding masks, whole
//! pre-/post-norm blocks). Each check seeds the RNG itself, so its inputs are the same
//! on every backend.

use crate::util::{assert_close, check_grad, check_grad_with, randn, tight, Tol};
use unigrad_core::gradcheck::GradcheckOptions;
use unigrad_core::{manual_seed, no_grad, DType, Device, Error, Result, Tensor};
use unigrad_nn::attention::{attention_bias, Init, MultiHeadAttention};
use unigrad_nn::{
    BatchNorm, Embedding, EncoderLayer, FeedForward, LayerConfig, LayerNorm, Linear, Module, Norm, NormKind, RmsNorm,
};

const F64: DType = DType::F64;

fn missing(what: &str, msg: &str) -> Error {
    Error::invalid("nn check", format!("{what}: {msg}"))
}

/// `|got − want| ≤ tol·(1 + |want|)` elementwise.
fn close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_close(what, got, want, Tol { rtol: tol, atol: tol });
}

/// Linear with and without bias, on a rank-3 input.
pub fn gradcheck_linear(dev: &Device) -> Result<()> {
    manual_seed(1);
    let (x, w, b) = (randn(dev, &[2, 3, 4])?, randn(dev, &[5, 4])?, randn(dev, &[5])?);
    check_grad("linear with bias", &[x.clone(), w.clone(), b], |xs| {
        Linear {
            weight: xs[1].clone(),
            bias: Some(xs[2].clone()),
        }
        .forward(&xs[0])
    })?;
    check_grad("linear without bias", &[x, w], |xs| {
        Linear {
            weight: xs[1].clone(),
            bias: None,
        }
        .forward(&xs[0])
    })
}

/// Embedding lookup with repeated ids and a padding row that must get no gradient.
pub fn gradcheck_embedding(dev: &Device) -> Result<()> {
    manual_seed(2);
    let table = randn(dev, &[6, 3])?;
    let ids = Tensor::from_vec(vec![1i64, 0, 4, 1, 5, 0], &[2, 3], dev)?;
    check_grad("embedding", std::slice::from_ref(&table), |xs| {
        Embedding {
            weight: xs[0].clone(),
            padding_idx: None,
        }
        .forward(&ids)
    })?;
    let w = table.requires_grad();
    let e = Embedding {
        weight: w.clone(),
        padding_idx: Some(0),
    };
    let out = e.forward(&ids)?;
    let ref_rows = w.to_vec_f64()?;
    let got = out.to_vec_f64()?;
    close("embedding padding forward", &got[3..6], &ref_rows[0..3], 0.0);
    out.sum_all()?.backward()?;
    let g = w
        .grad()
        .ok_or_else(|| missing("embedding", "no gradient"))?
        .to_vec_f64()?;
    // row 0 (padding) gets nothing; row 1 appears twice; row 4 and 5 once
    let want = [
        0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0., 0., 0., 0., 0., 0., 1., 1., 1., 1., 1., 1.,
    ];
    close("embedding padding gradient", &g, &want, 0.0);
    Ok(())
}

/// LayerNorm (affine and plain) over the last dim.
pub fn gradcheck_layer_norm(dev: &Device) -> Result<()> {
    manual_seed(3);
    let x = randn(dev, &[2, 3, 5])?.mul_scalar(2.0)?.add_scalar(0.5)?;
    let (w, b) = (randn(dev, &[5])?, randn(dev, &[5])?);
    let base = LayerNorm::new(5, F64, dev)?;
    check_grad("layer norm", &[x.clone(), w, b], |xs| {
        let mut ln = base.clone();
        ln.weight = Some(xs[1].clone());
        ln.bias = Some(xs[2].clone());
        ln.forward(&xs[0])
    })?;
    let plain = LayerNorm::with_options(5, 1e-5, false, F64, dev)?;
    check_grad("layer norm without affine", &[x], |xs| plain.forward(&xs[0]))
}

/// RMSNorm over the last dim.
pub fn gradcheck_rms_norm(dev: &Device) -> Result<()> {
    manual_seed(4);
    let (x, w) = (randn(dev, &[3, 4, 6])?, randn(dev, &[6])?);
    let base = RmsNorm::new(6, F64, dev)?;
    check_grad("rms norm", &[x, w], |xs| {
        let mut n = base.clone();
        n.weight = xs[1].clone();
        n.forward(&xs[0])
    })
}

fn bn_check(dev: &Device, mask: Option<&Tensor>, what: &str) -> Result<()> {
    let x = randn(dev, &[2, 4, 3])?.mul_scalar(1.5)?.add_scalar(-0.3)?;
    let (w, b) = (randn(dev, &[3])?, randn(dev, &[3])?);
    let base = BatchNorm::new(3, F64, dev)?;
    check_grad(what, &[x, w, b], |xs| {
        let mut bn = base.clone();
        bn.weight = xs[1].clone();
        bn.bias = xs[2].clone();
        bn.forward(&xs[0], mask)
    })
}

/// BatchNorm over tokens in training mode, statistics over all tokens.
pub fn gradcheck_batch_norm(dev: &Device) -> Result<()> {
    manual_seed(5);
    bn_check(dev, None, "batch norm")
}

/// BatchNorm over tokens in training mode with a padding mask.
pub fn gradcheck_batch_norm_masked(dev: &Device) -> Result<()> {
    manual_seed(6);
    let mask = Tensor::from_f64s(&[0., 0., 1., 1., 0., 0., 0., 1.], &[2, 4], F64, dev)?;
    bn_check(dev, Some(&mask), "batch norm with padding mask")
}

fn attn_layer(dev: &Device, cross: bool) -> Result<MultiHeadAttention> {
    if cross {
        MultiHeadAttention::new_cross(4, 2, true, 0.0, Init::Normal(0.5), F64, dev)
    } else {
        MultiHeadAttention::new_self(4, 2, true, 0.0, Init::Normal(0.5), F64, dev)
    }
}

/// Self-attention with a causal mask and a key-padding mask together, gradients for
/// the input and both projections.
pub fn gradcheck_self_attention_masks(dev: &Device) -> Result<()> {
    manual_seed(7);
    let base = attn_layer(dev, false)?;
    let x = randn(dev, &[2, 3, 4])?;
    let pad = Tensor::from_f64s(&[0., 0., 1., 0., 0., 0.], &[2, 3], F64, dev)?;
    let bias = attention_bias(true, Some(&pad), 3, 3, F64, dev)?;
    let qkv = base.qkv.clone().ok_or_else(|| missing("attention", "no qkv"))?;
    let inputs = [
        x,
        qkv.weight.detach(),
        qkv.bias.clone().map(|b| b.detach()).unwrap_or(randn(dev, &[12])?),
        base.proj.weight.detach(),
    ];
    check_grad("self-attention with causal and padding masks", &inputs, |xs| {
        let mut a = base.clone();
        a.qkv = Some(Linear {
            weight: xs[1].clone(),
            bias: Some(xs[2].clone()),
        });
        a.proj.weight = xs[3].clone();
        a.forward_self(&xs[0], bias.as_ref())
    })?;
    // without any mask too
    check_grad("self-attention without masks", &inputs[..1], |xs| {
        base.forward_self(&xs[0], None)
    })
}

/// Cross-attention with a key-padding mask over the memory.
pub fn gradcheck_cross_attention(dev: &Device) -> Result<()> {
    manual_seed(8);
    let base = attn_layer(dev, true)?;
    let (x, mem) = (randn(dev, &[2, 2, 4])?, randn(dev, &[2, 3, 4])?);
    let pad = Tensor::from_f64s(&[0., 1., 1., 0., 0., 0.], &[2, 3], F64, dev)?;
    let bias = attention_bias(false, Some(&pad), 2, 3, F64, dev)?;
    let kv_w = base
        .kv
        .as_ref()
        .ok_or_else(|| missing("attention", "no kv"))?
        .weight
        .detach();
    check_grad("cross-attention with key padding", &[x, mem, kv_w], |xs| {
        let mut a = base.clone();
        if let Some(kv) = a.kv.as_mut() {
            kv.weight = xs[2].clone();
        }
        a.forward_cross(&xs[0], &xs[1], bias.as_ref())
    })
}

/// The fused feed-forward op (GELU recomputed in backward) against finite differences
/// and, in value, against the unfused Linear → GELU → Linear chain.
pub fn gradcheck_feed_forward(dev: &Device) -> Result<()> {
    manual_seed(14);
    let cfg = LayerConfig {
        d_model: 4,
        heads: 2,
        d_ff: 6,
        dropout: 0.0,
        norm: NormKind::LayerNorm.into(),
        pre_norm: true,
        bias: true,
        ln_scale: 1.0,
        init: Init::Normal(0.5),
    };
    let base = FeedForward::new(&cfg, F64, dev)?;
    let x = randn(dev, &[2, 3, 4])?;
    let b1 = randn(dev, &[6])?;
    let inputs = [
        x.clone(),
        base.ff1.weight.detach(),
        base.ff2.weight.detach(),
        b1,
        randn(dev, &[4])?,
    ];
    check_grad("feed-forward", &inputs, |xs| {
        let mut f = base.clone();
        f.ff1.weight = xs[1].clone();
        f.ff2.weight = xs[2].clone();
        f.ff1.bias = Some(xs[3].clone());
        f.ff2.bias = Some(xs[4].clone());
        f.forward(&xs[0])
    })?;
    let fused = base.forward(&x)?.to_vec_f64()?;
    let plain = base.ff2.forward(&base.ff1.forward(&x)?.gelu()?)?.to_vec_f64()?;
    close("feed-forward fused vs unfused", &fused, &plain, 1e-14);
    Ok(())
}

fn block_check(dev: &Device, pre_norm: bool, norm: NormKind, what: &str) -> Result<()> {
    let cfg = LayerConfig {
        d_model: 4,
        heads: 2,
        d_ff: 6,
        dropout: 0.0,
        norm: norm.into(),
        pre_norm,
        bias: true,
        ln_scale: if pre_norm { 0.5f64.sqrt() } else { 1.0 },
        init: Init::Normal(0.4),
    };
    let layer = EncoderLayer::new(&cfg, F64, dev)?;
    let x = randn(dev, &[2, 3, 4])?;
    let pad = Tensor::from_f64s(&[0., 0., 0., 0., 0., 1.], &[2, 3], F64, dev)?;
    let bias = attention_bias(true, Some(&pad), 3, 3, F64, dev)?;
    let named = layer.named_params();
    let pick = |n: &str| -> Result<Tensor> {
        named
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, t)| t.detach())
            .ok_or_else(|| missing(what, &format!("no parameter {n}")))
    };
    let inputs = [x, pick("attn.qkv.weight")?, pick("ff1.weight")?, pick("norm2.weight")?];
    let opts = GradcheckOptions {
        atol: 1e-6,
        rtol: 1e-5,
        ..tight()
    };
    check_grad_with(what, &inputs, &opts, |xs| {
        let mut l = EncoderLayer::new(&cfg, F64, dev)?;
        for (n, p) in l.named_params() {
            if let Some((_, src)) = named.iter().find(|(k, _)| *k == n) {
                no_grad(|| p.assign(src))?;
            }
        }
        if let Some(qkv) = l.attn.qkv.as_mut() {
            qkv.weight = xs[1].clone();
        }
        l.ff.ff1.weight = xs[2].clone();
        match &mut l.norm2 {
            Norm::Layer(n) => n.weight = Some(xs[3].clone()),
            Norm::Batch(n) => n.weight = xs[3].clone(),
            Norm::Rms(n) => n.weight = xs[3].clone(),
            Norm::Unified(_) | Norm::Power(_) => return Err(missing(what, "not used with UN or PN")),
        }
        l.forward(&xs[0], bias.as_ref(), Some(&pad))
    })
}

/// A pre-norm Transformer block (LayerNorm, with LayerNorm Scaling) and a pre-norm
/// BatchNorm block with padding, each with causal and padding masks.
pub fn gradcheck_block_pre_norm(dev: &Device) -> Result<()> {
    manual_seed(9);
    block_check(dev, true, NormKind::LayerNorm, "pre-norm block (LayerNorm)")?;
    block_check(dev, true, NormKind::BatchNorm, "pre-norm block (BatchNorm, masked)")
}

/// A post-norm Transformer block (LayerNorm and RMSNorm).
pub fn gradcheck_block_post_norm(dev: &Device) -> Result<()> {
    manual_seed(10);
    block_check(dev, false, NormKind::LayerNorm, "post-norm block (LayerNorm)")?;
    block_check(dev, false, NormKind::RmsNorm, "post-norm block (RMSNorm)")
}

/// LayerNorm forward against a two-pass host computation.
pub fn layer_norm_matches_naive(dev: &Device) -> Result<()> {
    manual_seed(11);
    let (r, c) = (7, 9);
    let x = randn(dev, &[r, c])?.mul_scalar(3.0)?.add_scalar(10.0)?;
    let mut ln = LayerNorm::new(c, F64, dev)?;
    ln.weight = Some(randn(dev, &[c])?);
    ln.bias = Some(randn(dev, &[c])?);
    let got = ln.forward(&x)?.to_vec_f64()?;
    let (xv, w, b) = (
        x.to_vec_f64()?,
        ln.weight
            .as_ref()
            .map(|t| t.to_vec_f64())
            .transpose()?
            .unwrap_or_default(),
        ln.bias
            .as_ref()
            .map(|t| t.to_vec_f64())
            .transpose()?
            .unwrap_or_default(),
    );
    let mut want = vec![0.0; r * c];
    for i in 0..r {
        let row = &xv[i * c..(i + 1) * c];
        let m = row.iter().sum::<f64>() / c as f64;
        let v = row.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / c as f64;
        for j in 0..c {
            want[i * c + j] = (row[j] - m) / (v + 1e-5).sqrt() * w[j] + b[j];
        }
    }
    close("layer norm forward", &got, &want, 1e-12);
    // f32 path agrees with the f64 one
    let ln32 = LayerNorm::new(c, DType::F32, dev)?;
    let got32 = ln32.forward(&x.to_dtype(DType::F32)?)?.to_vec_f64()?;
    let ln64 = LayerNorm::new(c, F64, dev)?;
    close("layer norm f32", &got32, &ln64.forward(&x)?.to_vec_f64()?, 1e-4);
    Ok(())
}

/// BatchNorm train forward (with a mask), running statistics and eval forward against
/// host formulas.
pub fn batch_norm_matches_naive(dev: &Device) -> Result<()> {
    manual_seed(12);
    let (b, n, c) = (2, 3, 2);
    let x = randn(dev, &[b, n, c])?;
    let maskv = [0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
    let mask = Tensor::from_f64s(&maskv, &[b, n], F64, dev)?;
    let mut bn = BatchNorm::new(c, F64, dev)?;
    let got = bn.forward(&x, Some(&mask))?.to_vec_f64()?;
    let xv = x.to_vec_f64()?;
    let valid: Vec<usize> = (0..b * n).filter(|&t| maskv[t] == 0.0).collect();
    let cnt = valid.len() as f64;
    let mut want = vec![0.0; b * n * c];
    let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
    for ch in 0..c {
        let m = valid.iter().map(|&t| xv[t * c + ch]).sum::<f64>() / cnt;
        let v = valid.iter().map(|&t| (xv[t * c + ch] - m).powi(2)).sum::<f64>() / cnt;
        for t in 0..b * n {
            want[t * c + ch] = (xv[t * c + ch] - m) / (v + 1e-5).sqrt();
        }
        rm[ch] = 0.9 * 0.0 + 0.1 * m;
        rv[ch] = 0.9 * 1.0 + 0.1 * v * cnt / (cnt - 1.0);
    }
    close("batch norm train forward", &got, &want, 1e-12);
    close("running mean", &bn.running_mean.get().to_vec_f64()?, &rm, 1e-12);
    close("running var", &bn.running_var.get().to_vec_f64()?, &rv, 1e-12);
    if bn.num_batches_tracked.get().to_vec::<i64>()? != [1] {
        return Err(missing("batch norm", "num_batches_tracked is not 1"));
    }
    bn.eval();
    let got = bn.forward(&x, None)?.to_vec_f64()?;
    let want: Vec<f64> = xv
        .iter()
        .enumerate()
        .map(|(i, &v)| (v - rm[i % c]) / (rv[i % c] + 1e-5).sqrt())
        .collect();
    close("batch norm eval forward", &got, &want, 1e-12);
    close(
        "eval leaves running mean",
        &bn.running_mean.get().to_vec_f64()?,
        &rm,
        0.0,
    );
    Ok(())
}

/// Self-attention forward (causal + key padding) against a per-head host loop.
pub fn attention_matches_naive(dev: &Device) -> Result<()> {
    manual_seed(13);
    let (b, t, c, h) = (2, 4, 6, 3);
    let hd = c / h;
    let a = MultiHeadAttention::new_self(c, h, true, 0.0, Init::Normal(0.3), F64, dev)?;
    let x = randn(dev, &[b, t, c])?;
    let padv = [0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0];
    let pad = Tensor::from_f64s(&padv, &[b, t], F64, dev)?;
    let bias = attention_bias(true, Some(&pad), t, t, F64, dev)?;
    let got = a.forward_self(&x, bias.as_ref())?.to_vec_f64()?;
    let qkv = a.qkv.as_ref().ok_or_else(|| missing("attention", "no qkv"))?;
    let lin = |l: &Linear, inp: &[f64], rows: usize| -> Result<Vec<f64>> {
        let (w, bb) = (
            l.weight.to_vec_f64()?,
            l.bias.as_ref().map(|t| t.to_vec_f64()).transpose()?,
        );
        let (o, i) = (l.out_features(), l.in_features());
        let mut y = vec![0.0; rows * o];
        for r in 0..rows {
            for oo in 0..o {
                let mut s = bb.as_ref().map(|v| v[oo]).unwrap_or(0.0);
                for ii in 0..i {
                    s += inp[r * i + ii] * w[oo * i + ii];
                }
                y[r * o + oo] = s;
            }
        }
        Ok(y)
    };
    let p = lin(qkv, &x.to_vec_f64()?, b * t)?;
    let mut merged = vec![0.0; b * t * c];
    for bi in 0..b {
        for hi in 0..h {
            for i in 0..t {
                let q = |j: usize, blk: usize, d: usize| p[(bi * t + j) * 3 * c + blk * c + hi * hd + d];
                let allowed: Vec<usize> = (0..t).filter(|&j| j <= i && padv[bi * t + j] == 0.0).collect();
                let scores: Vec<f64> = allowed
                    .iter()
                    .map(|&j| (0..hd).map(|d| q(i, 0, d) * q(j, 1, d)).sum::<f64>() / (hd as f64).sqrt())
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for d in 0..hd {
                    merged[(bi * t + i) * c + hi * hd + d] =
                        allowed.iter().zip(&e).map(|(&j, w)| w / z * q(j, 2, d)).sum::<f64>();
                }
            }
        }
    }
    let want = lin(&a.proj, &merged, b * t)?;
    close("attention forward", &got, &want, 1e-10);
    Ok(())
}
