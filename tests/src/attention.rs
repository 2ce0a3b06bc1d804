//! The attention family: the fused op `Tensor::attention` against a naive host
//! reference, its f64 gradients by central differences, the device's fused kernels
//! against the composed defaults of the backend trait (see [`crate::fused`]), the
//! differentiable gradient formula (what a `create_graph` backward runs) against the
//! fused backward, and the errors of bad operands.

use crate::fused::{close, tol, Composed};
use crate::util::{assert_close, check_grad, randn, Tol};
use unigrad_core::backend::AttentionArgs;
use unigrad_core::ops::attention::AttentionSpec;
use unigrad_core::{Backend, DType, Device, Result, Tensor};

/// `(B, H, Tq, Tk, D, Dv)`.
type Dims = (usize, usize, usize, usize, usize, usize);

/// Query/key/value leaves: q is a permuted view of a token-major `[B, Tq, H, D]`
/// leaf (as the heads of a projection arrive), k and v are dense `[B, H, T, X]`.
fn operands(dev: &Device, (b, h, tq, tk, d, dv): Dims) -> Result<[Tensor; 3]> {
    Ok([
        randn(dev, &[b, tq, h, d])?,
        randn(dev, &[b, h, tk, d])?,
        randn(dev, &[b, h, tk, dv])?,
    ])
}

fn heads(q_tokens: &Tensor) -> Result<Tensor> {
    q_tokens.permute(&[0, 2, 1, 3])
}

/// A padding-style bias `[B, 1, 1, Tk]`: −30 on the last key of batch 0, else small
/// values.
fn pad_bias(dev: &Device, b: usize, tk: usize) -> Result<Tensor> {
    let v: Vec<f64> = (0..b * tk)
        .map(|i| if i == tk - 1 { -30.0 } else { 0.1 * (i % 3) as f64 })
        .collect();
    Tensor::from_f64s(&v, &[b, 1, 1, tk], DType::F64, dev)
}

/// Naive attention on the host in f64, `[B, H, Tq, Dv]` row-major.
fn naive(q: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>, scale: f64, causal: bool) -> Result<Vec<f64>> {
    let (b, h, tq, d) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let (tk, dv) = (k.shape()[2], v.shape()[3]);
    let qv = q.to_vec_f64()?;
    let (kv, vv) = (k.to_vec_f64()?, v.to_vec_f64()?);
    let bv = match bias {
        Some(t) => Some(t.broadcast_as(&[b, h, tq, tk])?.to_vec_f64()?),
        None => None,
    };
    let mut out = vec![0.0; b * h * tq * dv];
    for bh in 0..b * h {
        for i in 0..tq {
            let mut s = vec![f64::NEG_INFINITY; tk];
            for (j, sj) in s.iter_mut().enumerate() {
                if causal && j > i + tk - tq {
                    continue;
                }
                let dot: f64 = (0..d)
                    .map(|c| qv[(bh * tq + i) * d + c] * kv[(bh * tk + j) * d + c])
                    .sum();
                *sj = dot * scale + bv.as_ref().map_or(0.0, |bv| bv[(bh * tq + i) * tk + j]);
            }
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for c in 0..dv {
                out[(bh * tq + i) * dv + c] = (0..tk).map(|j| e[j] / z * vv[(bh * tk + j) * dv + c]).sum();
            }
        }
    }
    Ok(out)
}

/// Shapes covering odd sizes, cross attention (Tq < Tk, where the causal limit
/// shifts) and more queries than one tile of the CPU kernel.
const SHAPES: [Dims; 5] = [
    (2, 3, 5, 5, 3, 4),
    (1, 2, 3, 7, 5, 3),
    (2, 1, 1, 4, 2, 2),
    (1, 2, 67, 67, 3, 5),
    (1, 1, 33, 70, 4, 3),
];

/// The fused forward against the naive reference, f64 and f32, causal and not, with
/// and without a bias.
pub fn forward_matches_naive(dev: &Device) -> Result<()> {
    for dims in SHAPES {
        let [qt, k, v] = operands(dev, dims)?;
        let q = heads(&qt)?;
        let bias = pad_bias(dev, dims.0, dims.3)?;
        for causal in [false, true] {
            for bias in [None, Some(&bias)] {
                let scale = 1.0 / (dims.4 as f64).sqrt();
                let want = naive(&q, &k, &v, bias, scale, causal)?;
                for dtype in [DType::F64, DType::F32] {
                    let c = |t: &Tensor| t.to_dtype(dtype);
                    let b = bias.map(c).transpose()?;
                    let got = c(&q)?.attention(&c(&k)?, &c(&v)?, b.as_ref(), scale, causal)?;
                    assert_eq!(got.shape(), &[dims.0, dims.1, dims.2, dims.5]);
                    let what = format!("attention {dims:?} causal {causal} bias {} {dtype:?}", bias.is_some());
                    assert_close(&what, &got.to_vec_f64()?, &want, Tol::for_dtype(dtype).times(10.0));
                }
            }
        }
    }
    Ok(())
}

/// f64 gradients of the fused op by central differences (q a strided view), causal
/// and not, with and without a bias.
pub fn gradcheck_fused(dev: &Device) -> Result<()> {
    for dims in SHAPES {
        if dims.2 * dims.3 > 400 {
            continue; // the long shapes are covered by the comparisons below
        }
        let [qt, k, v] = operands(dev, dims)?;
        let bias = pad_bias(dev, dims.0, dims.3)?;
        for causal in [false, true] {
            for bias in [None, Some(&bias)] {
                let name = format!("attention {dims:?} causal {causal} bias {}", bias.is_some());
                check_grad(&name, &[qt.clone(), k.clone(), v.clone()], |xs| {
                    heads(&xs[0])?.attention(&xs[1], &xs[2], bias, 0.7, causal)
                })?;
            }
        }
    }
    // across a tile boundary of the CPU kernel (Tq > 64) with few elements
    let [qt, k, v] = operands(dev, (1, 1, 70, 70, 2, 1))?;
    check_grad("attention 70 queries causal", &[qt, k, v], |xs| {
        heads(&xs[0])?.attention(&xs[1], &xs[2], None, 1.3, true)
    })
}

/// The device's fused kernels against the trait's composed defaults, f32 and f64,
/// forward (output and log-sum-exp) and backward, on strided operands.
pub fn fused_vs_composed(dev: &Device) -> Result<()> {
    let (b, c) = (dev.backend(), Composed(dev.backend()));
    for dims in [(2, 3, 5, 5, 3, 4), (1, 2, 33, 70, 8, 5), (2, 4, 64, 64, 32, 32)] {
        for dtype in [DType::F64, DType::F32] {
            let [qt, k, v] = operands(dev, dims)?;
            let (qt, k, v) = (qt.to_dtype(dtype)?, k.to_dtype(dtype)?, v.to_dtype(dtype)?);
            let q = heads(&qt)?;
            let dout = randn(dev, &[dims.0, dims.2, dims.1, dims.5])?.to_dtype(dtype)?;
            let dout = heads(&dout)?;
            let bias = pad_bias(dev, dims.0, dims.3)?.to_dtype(dtype)?;
            let bias_l = bias
                .layout()
                .broadcast_to(&[dims.0, dims.1, dims.2, dims.3])
                .expect("broadcasts");
            let (sq, sk, sv, sb, sd) = (q.storage(), k.storage(), v.storage(), bias.storage(), dout.storage());
            for causal in [false, true] {
                for with_bias in [false, true] {
                    let args = AttentionArgs {
                        q: (&*sq, q.layout()),
                        k: (&*sk, k.layout()),
                        v: (&*sv, v.layout()),
                        bias: with_bias.then_some((&*sb, &bias_l)),
                        scale: 0.4,
                        causal,
                    };
                    let tag = |what: &str| format!("{what} {dims:?} causal {causal} bias {with_bias} {dtype:?}");
                    let ((o1, l1), (o2, l2)) = (b.attention(&args)?, c.attention(&args)?);
                    close(&tag("attention out"), b, &*o1, &*o2, tol(dtype))?;
                    close(&tag("attention lse"), b, &*l1, &*l2, tol(dtype))?;
                    let (g1, g2) = (
                        b.attention_backward(&args, &*l1, &*sd, dout.layout())?,
                        c.attention_backward(&args, &*l2, &*sd, dout.layout())?,
                    );
                    close(&tag("attention dq"), b, &*g1.0, &*g2.0, tol(dtype))?;
                    close(&tag("attention dk"), b, &*g1.1, &*g2.1, tol(dtype))?;
                    close(&tag("attention dv"), b, &*g1.2, &*g2.2, tol(dtype))?;
                }
            }
        }
    }
    Ok(())
}

/// The recorded gradient formula a `create_graph` backward runs equals the fused
/// backward, and the composed forward equals the fused one (f64).
pub fn composed_formulas_match_the_fused_op(dev: &Device) -> Result<()> {
    for dims in SHAPES {
        let [qt, k, v] = operands(dev, dims)?;
        let q = heads(&qt)?;
        let dout = randn(dev, &[dims.0, dims.1, dims.2, dims.5])?;
        let bias = pad_bias(dev, dims.0, dims.3)?;
        for causal in [false, true] {
            let spec = AttentionSpec::new(0.6, causal).with_bias(Some(&bias));
            let (o, lse) = spec.forward(&q, &k, &v)?;
            let tol = Tol::for_dtype(DType::F64).times(10.0);
            let what = format!("{dims:?} causal {causal}");
            assert_close(
                &format!("composed forward {what}"),
                &spec.composed(&q, &k, &v)?.to_vec_f64()?,
                &o.to_vec_f64()?,
                tol,
            );
            let fused = spec.backward(&q, &k, &v, &lse, &dout)?;
            let composed = spec.grads_composed(&q, &k, &v, &dout)?;
            for (name, f, c) in [
                ("dq", &fused.0, &composed.0),
                ("dk", &fused.1, &composed.1),
                ("dv", &fused.2, &composed.2),
            ] {
                assert_close(&format!("{name} {what}"), &c.to_vec_f64()?, &f.to_vec_f64()?, tol);
            }
        }
    }
    Ok(())
}

/// Bad operands are errors naming `attention`, raised before any kernel runs.
pub fn attention_errors(dev: &Device) -> Result<()> {
    let t = |s: &[usize]| randn(dev, s);
    let (q, k, v) = (t(&[1, 2, 3, 4])?, t(&[1, 2, 5, 4])?, t(&[1, 2, 5, 6])?);
    let bad = |r: Result<Tensor>, what: &str| {
        let e = r.expect_err(what).to_string();
        assert!(e.contains("attention"), "{what}: {e}");
    };
    bad(q.attention(&t(&[1, 2, 5, 3])?, &v, None, 1.0, false), "key width");
    bad(q.attention(&k, &t(&[1, 2, 4, 6])?, None, 1.0, false), "value length");
    bad(q.attention(&t(&[2, 2, 5, 4])?, &v, None, 1.0, false), "batch");
    bad(t(&[2, 3, 4])?.attention(&k, &v, None, 1.0, false), "rank");
    bad(
        t(&[1, 2, 6, 4])?.attention(&k, &v, None, 1.0, true),
        "causal with more queries than keys",
    );
    bad(
        q.attention(&t(&[1, 2, 0, 4])?, &t(&[1, 2, 0, 6])?, None, 1.0, false),
        "no keys",
    );
    bad(q.attention(&k, &v, Some(&t(&[1, 1, 2, 5])?), 1.0, false), "bias shape");
    bad(
        q.attention(&k, &v, Some(&t(&[1, 1, 1, 5])?.requires_grad()), 1.0, false),
        "bias with a gradient",
    );
    bad(q.attention(&k.to_dtype(DType::F32)?, &v, None, 1.0, false), "dtype");
    bad(q.attention(&k, &v, None, f64::NAN, false), "scale");
    bad(
        t(&[1, 2, 3, 4])?
            .to_dtype(DType::I64)?
            .attention(&k, &v, None, 1.0, false),
        "integer operands",
    );
    Ok(())
}

/// `MultiHeadAttention` runs a bias that is exactly `attention_bias`'s causal mask as
/// the fused op's causal flag (skipping the masked products): the output and every
/// gradient equal those of the same mask given with an all-zero padding mask (which
/// takes the general bias path), f64, across the CPU kernel's query tiles.
pub fn mha_causal_bias_runs_as_the_causal_flag(dev: &Device) -> Result<()> {
    use unigrad_nn::attention::{attention_bias, Init, MultiHeadAttention};
    let (b, t, c) = (2, 67, 8);
    let mha = MultiHeadAttention::new_self(c, 2, true, 0.0, Init::Normal(0.3), DType::F64, dev)?;
    let causal = attention_bias(true, None, t, t, DType::F64, dev)?;
    let no_pad = Tensor::zeros(&[b, t], DType::F64, dev)?;
    let general = attention_bias(true, Some(&no_pad), t, t, DType::F64, dev)?;
    assert_eq!(general.as_ref().map(|g| g.shape().to_vec()), Some(vec![b, 1, t, t]));
    let x0 = randn(dev, &[b, t, c])?;
    let mut outs = Vec::new();
    for bias in [&causal, &general] {
        let x = x0.clone().requires_grad();
        let y = mha.forward_self(&x, bias.as_ref())?;
        y.mul(&y)?.sum_all()?.backward()?;
        let gx = x.grad().expect("x takes part").to_vec_f64()?;
        outs.push((y.to_vec_f64()?, gx));
    }
    let tol = Tol::for_dtype(DType::F64).times(10.0);
    assert_close("causal-flag output", &outs[0].0, &outs[1].0, tol);
    assert_close("causal-flag input gradient", &outs[0].1, &outs[1].1, tol);
    Ok(())
}
