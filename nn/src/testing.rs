//! Device-generic checks of the nn layers: f64 gradient checks against finite
//! differences and forward checks against naive host references.
//!
//! Each check is a `pub fn(&Device) -> Result<()>` that returns an error describing
//! the failure, so any test suite can run it on any backend (`nn/tests/cpu.rs` runs
//! them on the CPU; the shared suite instantiates them per device). [`CHECKS`] lists
//! them all by name.

use crate::attention::{attention_bias, Init, MultiHeadAttention};
use crate::embedding::Embedding;
use crate::linear::Linear;
use crate::module::Module;
use crate::norm::{BatchNorm, LayerNorm, Norm, NormKind, RmsNorm};
use crate::transformer::{EncoderLayer, FeedForward, LayerConfig};
use unigrad_core::gradcheck::{gradcheck, GradcheckOptions, GradcheckReport};
use unigrad_core::{manual_seed, no_grad, DType, Device, Error, Result, Tensor};

const F64: DType = DType::F64;

/// A device-generic check.
pub type Check = fn(&Device) -> Result<()>;

/// Every check with its name.
pub const CHECKS: &[(&str, Check)] = &[
    ("gradcheck_linear", gradcheck_linear),
    ("gradcheck_embedding", gradcheck_embedding),
    ("gradcheck_layer_norm", gradcheck_layer_norm),
    ("gradcheck_rms_norm", gradcheck_rms_norm),
    ("gradcheck_batch_norm", gradcheck_batch_norm),
    ("gradcheck_batch_norm_masked", gradcheck_batch_norm_masked),
    ("gradcheck_self_attention_masks", gradcheck_self_attention_masks),
    ("gradcheck_cross_attention", gradcheck_cross_attention),
    ("gradcheck_feed_forward", gradcheck_feed_forward),
    ("gradcheck_block_pre_norm", gradcheck_block_pre_norm),
    ("gradcheck_block_post_norm", gradcheck_block_post_norm),
    ("layer_norm_matches_naive", layer_norm_matches_naive),
    ("batch_norm_matches_naive", batch_norm_matches_naive),
    ("attention_matches_naive", attention_matches_naive),
];

fn fail(what: &str, msg: String) -> Error {
    Error::invalid("nn check", format!("{what}: {msg}"))
}

fn expect_pass(what: &str, rep: GradcheckReport) -> Result<()> {
    if rep.passed() {
        Ok(())
    } else {
        Err(fail(what, format!("gradcheck failed: {:?}", rep.inputs)))
    }
}

fn randn(shape: &[usize], dev: &Device) -> Result<Tensor> {
    Tensor::randn(shape, F64, dev)
}

fn opts() -> GradcheckOptions {
    GradcheckOptions {
        eps: 1e-6,
        atol: 1e-7,
        rtol: 1e-6,
    }
}

fn close(what: &str, got: &[f64], want: &[f64], tol: f64) -> Result<()> {
    if got.len() != want.len() {
        return Err(fail(what, format!("{} values vs {} expected", got.len(), want.len())));
    }
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        let ok = (a - b).abs() <= tol * (1.0 + b.abs());
        if !ok {
            return Err(fail(what, format!("element {i}: got {a}, expected {b}")));
        }
    }
    Ok(())
}

/// Linear with and without bias, on a rank-3 input.
pub fn gradcheck_linear(dev: &Device) -> Result<()> {
    manual_seed(1);
    let (x, w, b) = (randn(&[2, 3, 4], dev)?, randn(&[5, 4], dev)?, randn(&[5], dev)?);
    let rep = gradcheck(
        |xs| {
            Linear {
                weight: xs[1].clone(),
                bias: Some(xs[2].clone()),
            }
            .forward(&xs[0])
        },
        &[x.clone(), w.clone(), b],
        &opts(),
    )?;
    expect_pass("linear with bias", rep)?;
    let rep = gradcheck(
        |xs| {
            Linear {
                weight: xs[1].clone(),
                bias: None,
            }
            .forward(&xs[0])
        },
        &[x, w],
        &opts(),
    )?;
    expect_pass("linear without bias", rep)
}

/// Embedding lookup with repeated ids and a padding row that must get no gradient.
pub fn gradcheck_embedding(dev: &Device) -> Result<()> {
    manual_seed(2);
    let table = randn(&[6, 3], dev)?;
    let ids = Tensor::from_vec(vec![1i64, 0, 4, 1, 5, 0], &[2, 3], dev)?;
    let rep = gradcheck(
        |xs| {
            Embedding {
                weight: xs[0].clone(),
                padding_idx: None,
            }
            .forward(&ids)
        },
        std::slice::from_ref(&table),
        &opts(),
    )?;
    expect_pass("embedding", rep)?;
    let w = table.requires_grad();
    let e = Embedding {
        weight: w.clone(),
        padding_idx: Some(0),
    };
    let out = e.forward(&ids)?;
    let ref_rows = w.to_vec_f64()?;
    let got = out.to_vec_f64()?;
    close("embedding padding forward", &got[3..6], &ref_rows[0..3], 0.0)?;
    out.sum_all()?.backward()?;
    let g = w
        .grad()
        .ok_or_else(|| fail("embedding", "no gradient".into()))?
        .to_vec_f64()?;
    // row 0 (padding) gets nothing; row 1 appears twice; row 4 and 5 once
    let want = [
        0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0., 0., 0., 0., 0., 0., 1., 1., 1., 1., 1., 1.,
    ];
    close("embedding padding gradient", &g, &want, 0.0)
}

/// LayerNorm (affine and plain) over the last dim.
pub fn gradcheck_layer_norm(dev: &Device) -> Result<()> {
    manual_seed(3);
    let x = randn(&[2, 3, 5], dev)?.mul_scalar(2.0)?.add_scalar(0.5)?;
    let (w, b) = (randn(&[5], dev)?, randn(&[5], dev)?);
    let base = LayerNorm::new(5, F64, dev)?;
    let rep = gradcheck(
        |xs| {
            let mut ln = base.clone();
            ln.weight = Some(xs[1].clone());
            ln.bias = Some(xs[2].clone());
            ln.forward(&xs[0])
        },
        &[x.clone(), w, b],
        &opts(),
    )?;
    expect_pass("layer norm", rep)?;
    let plain = LayerNorm::with_options(5, 1e-5, false, F64, dev)?;
    let rep = gradcheck(|xs| plain.forward(&xs[0]), &[x], &opts())?;
    expect_pass("layer norm without affine", rep)
}

/// RMSNorm over the last dim.
pub fn gradcheck_rms_norm(dev: &Device) -> Result<()> {
    manual_seed(4);
    let (x, w) = (randn(&[3, 4, 6], dev)?, randn(&[6], dev)?);
    let base = RmsNorm::new(6, F64, dev)?;
    let rep = gradcheck(
        |xs| {
            let mut n = base.clone();
            n.weight = xs[1].clone();
            n.forward(&xs[0])
        },
        &[x, w],
        &opts(),
    )?;
    expect_pass("rms norm", rep)
}

fn bn_check(dev: &Device, mask: Option<&Tensor>, what: &str) -> Result<()> {
    let x = randn(&[2, 4, 3], dev)?.mul_scalar(1.5)?.add_scalar(-0.3)?;
    let (w, b) = (randn(&[3], dev)?, randn(&[3], dev)?);
    let base = BatchNorm::new(3, F64, dev)?;
    let rep = gradcheck(
        |xs| {
            let mut bn = base.clone();
            bn.weight = xs[1].clone();
            bn.bias = xs[2].clone();
            bn.forward(&xs[0], mask)
        },
        &[x, w, b],
        &opts(),
    )?;
    expect_pass(what, rep)
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
    let x = randn(&[2, 3, 4], dev)?;
    let pad = Tensor::from_f64s(&[0., 0., 1., 0., 0., 0.], &[2, 3], F64, dev)?;
    let bias = attention_bias(true, Some(&pad), 3, 3, F64, dev)?;
    let qkv = base.qkv.clone().ok_or_else(|| fail("attention", "no qkv".into()))?;
    let inputs = [
        x,
        qkv.weight.detach(),
        qkv.bias.clone().map(|b| b.detach()).unwrap_or(randn(&[12], dev)?),
        base.proj.weight.detach(),
    ];
    let rep = gradcheck(
        |xs| {
            let mut a = base.clone();
            a.qkv = Some(Linear {
                weight: xs[1].clone(),
                bias: Some(xs[2].clone()),
            });
            a.proj.weight = xs[3].clone();
            a.forward_self(&xs[0], bias.as_ref())
        },
        &inputs,
        &opts(),
    )?;
    expect_pass("self-attention with causal and padding masks", rep)?;
    // without any mask too
    let rep = gradcheck(|xs| base.forward_self(&xs[0], None), &inputs[..1], &opts())?;
    expect_pass("self-attention without masks", rep)
}

/// Cross-attention with a key-padding mask over the memory.
pub fn gradcheck_cross_attention(dev: &Device) -> Result<()> {
    manual_seed(8);
    let base = attn_layer(dev, true)?;
    let (x, mem) = (randn(&[2, 2, 4], dev)?, randn(&[2, 3, 4], dev)?);
    let pad = Tensor::from_f64s(&[0., 1., 1., 0., 0., 0.], &[2, 3], F64, dev)?;
    let bias = attention_bias(false, Some(&pad), 2, 3, F64, dev)?;
    let kv_w = base
        .kv
        .as_ref()
        .ok_or_else(|| fail("attention", "no kv".into()))?
        .weight
        .detach();
    let rep = gradcheck(
        |xs| {
            let mut a = base.clone();
            if let Some(kv) = a.kv.as_mut() {
                kv.weight = xs[2].clone();
            }
            a.forward_cross(&xs[0], &xs[1], bias.as_ref())
        },
        &[x, mem, kv_w],
        &opts(),
    )?;
    expect_pass("cross-attention with key padding", rep)
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
    let x = randn(&[2, 3, 4], dev)?;
    let b1 = randn(&[6], dev)?;
    let inputs = [
        x.clone(),
        base.ff1.weight.detach(),
        base.ff2.weight.detach(),
        b1,
        randn(&[4], dev)?,
    ];
    let rep = gradcheck(
        |xs| {
            let mut f = base.clone();
            f.ff1.weight = xs[1].clone();
            f.ff2.weight = xs[2].clone();
            f.ff1.bias = Some(xs[3].clone());
            f.ff2.bias = Some(xs[4].clone());
            f.forward(&xs[0])
        },
        &inputs,
        &opts(),
    )?;
    expect_pass("feed-forward", rep)?;
    let fused = base.forward(&x)?.to_vec_f64()?;
    let plain = base.ff2.forward(&base.ff1.forward(&x)?.gelu()?)?.to_vec_f64()?;
    close("feed-forward fused vs unfused", &fused, &plain, 1e-14)
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
    let x = randn(&[2, 3, 4], dev)?;
    let pad = Tensor::from_f64s(&[0., 0., 0., 0., 0., 1.], &[2, 3], F64, dev)?;
    let bias = attention_bias(true, Some(&pad), 3, 3, F64, dev)?;
    let named = layer.named_params();
    let pick = |n: &str| -> Result<Tensor> {
        named
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, t)| t.detach())
            .ok_or_else(|| fail(what, format!("no parameter {n}")))
    };
    let inputs = [x, pick("attn.qkv.weight")?, pick("ff1.weight")?, pick("norm2.weight")?];
    let rep = gradcheck(
        |xs| {
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
                Norm::Unified(_) | Norm::Power(_) => return Err(fail(what, "not used with UN or PN".into())),
            }
            l.forward(&xs[0], bias.as_ref(), Some(&pad))
        },
        &inputs,
        &GradcheckOptions {
            atol: 1e-6,
            rtol: 1e-5,
            ..opts()
        },
    )?;
    expect_pass(what, rep)
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
    let x = randn(&[r, c], dev)?.mul_scalar(3.0)?.add_scalar(10.0)?;
    let mut ln = LayerNorm::new(c, F64, dev)?;
    ln.weight = Some(randn(&[c], dev)?);
    ln.bias = Some(randn(&[c], dev)?);
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
    close("layer norm forward", &got, &want, 1e-12)?;
    // f32 path agrees with the f64 one
    let ln32 = LayerNorm::new(c, DType::F32, dev)?;
    let got32 = ln32.forward(&x.to_dtype(DType::F32)?)?.to_vec_f64()?;
    let ln64 = LayerNorm::new(c, F64, dev)?;
    close("layer norm f32", &got32, &ln64.forward(&x)?.to_vec_f64()?, 1e-4)
}

/// BatchNorm train forward (with a mask), running statistics and eval forward against
/// host formulas.
pub fn batch_norm_matches_naive(dev: &Device) -> Result<()> {
    manual_seed(12);
    let (b, n, c) = (2, 3, 2);
    let x = randn(&[b, n, c], dev)?;
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
    close("batch norm train forward", &got, &want, 1e-12)?;
    close("running mean", &bn.running_mean.get().to_vec_f64()?, &rm, 1e-12)?;
    close("running var", &bn.running_var.get().to_vec_f64()?, &rv, 1e-12)?;
    if bn.num_batches_tracked.get().to_vec::<i64>()? != [1] {
        return Err(fail("batch norm", "num_batches_tracked is not 1".into()));
    }
    bn.eval();
    let got = bn.forward(&x, None)?.to_vec_f64()?;
    let want: Vec<f64> = xv
        .iter()
        .enumerate()
        .map(|(i, &v)| (v - rm[i % c]) / (rv[i % c] + 1e-5).sqrt())
        .collect();
    close("batch norm eval forward", &got, &want, 1e-12)?;
    close(
        "eval leaves running mean",
        &bn.running_mean.get().to_vec_f64()?,
        &rm,
        0.0,
    )
}

/// Self-attention forward (causal + key padding) against a per-head host loop.
pub fn attention_matches_naive(dev: &Device) -> Result<()> {
    manual_seed(13);
    let (b, t, c, h) = (2, 4, 6, 3);
    let hd = c / h;
    let a = MultiHeadAttention::new_self(c, h, true, 0.0, Init::Normal(0.3), F64, dev)?;
    let x = randn(&[b, t, c], dev)?;
    let padv = [0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0];
    let pad = Tensor::from_f64s(&padv, &[b, t], F64, dev)?;
    let bias = attention_bias(true, Some(&pad), t, t, F64, dev)?;
    let got = a.forward_self(&x, bias.as_ref())?.to_vec_f64()?;
    let qkv = a.qkv.as_ref().ok_or_else(|| fail("attention", "no qkv".into()))?;
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
    close("attention forward", &got, &want, 1e-10)
}
