//! Higher-order gradients: every first-order gradcheck table of [`gradcheck_ops`]
//! re-run through `gradgradcheck` (second derivatives and the derivative with respect
//! to the upstream gradient, same tight tolerances, f64), and the semantics of
//! `create_graph` / `grad`: `grad` leaves `.grad` alone, a released graph refuses a
//! second backward, a Hessian-vector product of a quadratic form is exactly `A·v`, a
//! gradient penalty on a tiny MLP matches finite differences, and an op that is not
//! twice differentiable errors at the second backward.
//!
//! The re-run uses [`second_order`]: inside it the suite's `check_grad` runs
//! `gradgradcheck` on each case instead of `gradcheck`, so every op and layout of the
//! first-order tables is covered without a second copy of them (and with the inputs
//! this group's own seed draws).

use crate::attention;
use crate::gradcheck_ops;
use crate::nn_modules;
use crate::ops_extra;
use crate::util::{assert_close, check_grad, randn, second_order, Tol};
use unigrad_core::autograd::{self, grad, BackwardOptions};
use unigrad_core::custom::{apply, CustomOp};
use unigrad_core::{manual_seed, DType, Device, Error, Result, Tensor};
use unigrad_nn::attention::{attention_bias, Init, MultiHeadAttention};
use unigrad_nn::{BatchNorm, EncoderLayer, LayerConfig, Module, NormKind};

/// Unary maps, second order (kinks: relu, abs, clamp give 0, which is checked too).
pub fn unary(dev: &Device) -> Result<()> {
    second_order(|| gradcheck_ops::unary(dev))
}

/// Broadcasting binary ops, second order.
pub fn binary(dev: &Device) -> Result<()> {
    second_order(|| gradcheck_ops::binary(dev))
}

/// Random shapes, axes and broadcasting partners, second order.
pub fn random_shapes(dev: &Device) -> Result<()> {
    second_order(|| gradcheck_ops::random_shapes(dev))
}

/// Reductions, second order.
pub fn reductions(dev: &Device) -> Result<()> {
    second_order(|| gradcheck_ops::reductions(dev))
}

/// Matrix products, second order.
pub fn matmul(dev: &Device) -> Result<()> {
    second_order(|| gradcheck_ops::matmul(dev))
}

/// Views, copies, cat and stack, second order.
pub fn shape_ops(dev: &Device) -> Result<()> {
    second_order(|| gradcheck_ops::shape_ops(dev))
}

/// index_select, embedding, gather, scatter_add, where and masked_fill, second order.
pub fn indexing(dev: &Device) -> Result<()> {
    second_order(|| gradcheck_ops::indexing(dev))
}

/// Fused softmax / log-softmax (through their composed backward), second order.
pub fn softmax(dev: &Device) -> Result<()> {
    second_order(|| gradcheck_ops::softmax(dev))
}

/// Cross-entropy, second order.
pub fn cross_entropy(dev: &Device) -> Result<()> {
    second_order(|| gradcheck_ops::cross_entropy(dev))
}

/// Dropout, second order.
pub fn dropout(dev: &Device) -> Result<()> {
    second_order(|| gradcheck_ops::dropout(dev))
}

/// Casts, second order.
pub fn to_dtype(dev: &Device) -> Result<()> {
    second_order(|| gradcheck_ops::to_dtype(dev))
}

/// Composed expressions, second order.
pub fn compositions(dev: &Device) -> Result<()> {
    second_order(|| gradcheck_ops::compositions(dev))
}

/// Fused layer_norm / rms_norm (through their composed backward), second order.
pub fn norms(dev: &Device) -> Result<()> {
    second_order(|| gradcheck_ops::norms(dev))?;
    second_order(|| nn_modules::gradcheck_layer_norm(dev))?;
    second_order(|| nn_modules::gradcheck_rms_norm(dev))
}

/// nn's `Linear` (a custom op with a differentiable backward), second order.
pub fn nn_linear(dev: &Device) -> Result<()> {
    second_order(|| nn_modules::gradcheck_linear(dev))
}

/// The ops issue 17 added (sort and topk values, cumsum, masked_select, `where` on an
/// i64 condition), second order: their backwards are recorded gathers, scatters and
/// reversed cumsums, so they are twice differentiable.
pub fn new_ops(dev: &Device) -> Result<()> {
    second_order(|| ops_extra::sort_argsort_topk(dev))?;
    second_order(|| ops_extra::cumsum(dev))?;
    second_order(|| ops_extra::masked_select(dev))?;
    second_order(|| ops_extra::i64_comparisons_and_where(dev))
}

/// The fused attention op (issue 18), second order: under `create_graph` its backward
/// recomputes the probabilities with recorded ops, so its gradient is differentiable.
pub fn fused_attention(dev: &Device) -> Result<()> {
    second_order(|| attention::gradcheck_fused(dev))
}

/// nn's attention (self-attention with causal and padding masks, cross-attention),
/// second order: the fused core's `create_graph` backward is in recorded ops.
pub fn nn_attention(dev: &Device) -> Result<()> {
    second_order(|| nn_modules::gradcheck_self_attention_masks(dev))?;
    second_order(|| nn_modules::gradcheck_cross_attention(dev))
}

/// Attention with dropout (nn's `AttnOp` custom op), second order: its differentiable
/// backward recomputes the probabilities from the attached inputs and reuses the
/// forward's dropout mask. The RNG is re-seeded in every evaluation, so each one draws
/// the same masks and the function is deterministic for the finite differences.
pub fn nn_attention_dropout(dev: &Device) -> Result<()> {
    manual_seed(31);
    let layer = MultiHeadAttention::new_self(4, 2, true, 0.3, Init::Normal(0.5), DType::F64, dev)?;
    let x = randn(dev, &[2, 3, 4])?;
    let bias = attention_bias(true, None, 3, 3, DType::F64, dev)?;
    let qkv_w = layer
        .qkv
        .as_ref()
        .map(|l| l.weight.detach())
        .ok_or_else(|| Error::invalid("nn_attention_dropout", "self-attention layer without qkv"))?;
    let f = |xs: &[Tensor]| -> Result<Tensor> {
        manual_seed(32);
        let mut a = layer.clone();
        if let Some(qkv) = a.qkv.as_mut() {
            qkv.weight = xs[1].clone();
        }
        a.forward_self(&xs[0], bias.as_ref())
    };
    // the masks are really drawn: the output differs from the dropout-free layer's
    let mut plain = layer.clone();
    plain.set_train(false);
    let (with, without) = (f(&[x.clone(), qkv_w.clone()])?, plain.forward_self(&x, bias.as_ref())?);
    assert!(
        with.sub(&without)?.abs()?.sum_all()?.to_vec_f64()?[0] > 1e-3,
        "attention dropout drew no mask"
    );
    second_order(|| check_grad("self-attention with dropout", &[x, qkv_w], f))
}

/// nn's fused feed-forward (custom op with a differentiable backward) and whole
/// pre-/post-norm Transformer blocks (LayerNorm, BatchNorm with padding, RMSNorm),
/// second order.
pub fn nn_feed_forward_and_blocks(dev: &Device) -> Result<()> {
    second_order(|| nn_modules::gradcheck_feed_forward(dev))?;
    second_order(|| nn_modules::gradcheck_block_pre_norm(dev))?;
    second_order(|| nn_modules::gradcheck_block_post_norm(dev))
}

/// BatchNorm second order: training mode with batch statistics (custom op with a
/// differentiable backward), with and without a padding mask, and eval mode with the
/// running statistics.
pub fn nn_batch_norm(dev: &Device) -> Result<()> {
    second_order(|| nn_modules::gradcheck_batch_norm(dev))?;
    second_order(|| nn_modules::gradcheck_batch_norm_masked(dev))?;
    manual_seed(33);
    let mut base = BatchNorm::new(3, DType::F64, dev)?;
    base.running_mean.set(randn(dev, &[3])?);
    base.running_var.set(randn(dev, &[3])?.sqr()?.add_scalar(0.5)?);
    base.set_train(false);
    let inputs = [randn(dev, &[2, 4, 3])?, randn(dev, &[3])?, randn(dev, &[3])?];
    second_order(|| {
        check_grad("batch norm (eval)", &inputs, |xs| {
            let mut bn = base.clone();
            bn.weight = xs[1].clone();
            bn.bias = xs[2].clone();
            bn.forward(&xs[0], None)
        })
    })
}

/// nn's `Embedding`, second order.
pub fn nn_embedding(dev: &Device) -> Result<()> {
    second_order(|| nn_modules::gradcheck_embedding(dev))
}

/// A gradient penalty `‖∂(Σ block(x))/∂x‖²` through a tiny pre-norm Transformer block
/// (attention with a causal mask, feed-forward, LayerNorm or BatchNorm), differentiated
/// with respect to the attention and feed-forward weights and checked against finite
/// differences.
pub fn gradient_penalty_transformer_block(dev: &Device) -> Result<()> {
    for (seed, norm) in [(34, NormKind::LayerNorm), (35, NormKind::BatchNorm)] {
        manual_seed(seed);
        let cfg = LayerConfig {
            d_model: 4,
            heads: 2,
            d_ff: 6,
            dropout: 0.0,
            norm: norm.into(),
            pre_norm: true,
            bias: true,
            ln_scale: 1.0,
            init: Init::Normal(0.4),
        };
        // the same seed builds the same layer each time
        let build = || -> Result<EncoderLayer> {
            manual_seed(seed);
            EncoderLayer::new(&cfg, DType::F64, dev)
        };
        let layer = build()?;
        let x = randn(dev, &[2, 3, 4])?;
        let bias = attention_bias(true, None, 3, 3, DType::F64, dev)?;
        let qkv_w =
            layer.attn.qkv.as_ref().map(|l| l.weight.detach()).ok_or_else(|| {
                Error::invalid("gradient_penalty_transformer_block", "self-attention layer without qkv")
            })?;
        let weights = [qkv_w, layer.ff.ff1.weight.detach(), layer.ff.ff2.weight.detach()];
        let penalty = |ws: &[Tensor]| -> Result<Tensor> {
            // gradcheck's numeric side runs under no_grad; the inner gradient needs a graph
            autograd::enable_grad(|| {
                let mut l = build()?;
                if let Some(qkv) = l.attn.qkv.as_mut() {
                    qkv.weight = ws[0].clone();
                }
                l.ff.ff1.weight = ws[1].clone();
                l.ff.ff2.weight = ws[2].clone();
                let xi = x.detach().requires_grad();
                let out = l.forward(&xi, bias.as_ref(), None)?.sum_all()?;
                let gx = grad(&[&out], &[&out.ones_like()?], &[&xi], true)?[0]
                    .clone()
                    .ok_or_else(|| Error::invalid("gradient_penalty_transformer_block", "no gradient for x"))?;
                gx.sqr()?.sum_all()
            })
        };
        check_grad(
            &format!("gradient penalty through a {norm:?} Transformer block"),
            &weights,
            penalty,
        )?;
    }
    Ok(())
}

/// `grad` returns the gradients of leaves and intermediates without touching any
/// leaf's `.grad`; `y = exp(exp(a))` differentiated twice through `create_graph`
/// gives the analytic second derivative (its graph is needed again, so it is kept).
pub fn grad_semantics(dev: &Device) -> Result<()> {
    let a = Tensor::from_f64s(&[0.3, -0.7, 1.1], &[3], DType::F64, dev)?.requires_grad();
    let x = a.exp()?;
    let y = x.exp()?;
    let s = y.sum_all()?;
    let one = s.ones_like()?;
    let g = grad(&[&s], &[&one], &[&a, &x], true)?;
    assert!(a.grad().is_none(), "grad must not accumulate into leaves");
    let (ga, gx) = (g[0].clone().expect("a"), g[1].clone().expect("x"));
    let av = [0.3f64, -0.7, 1.1];
    // dy/dx = e^x, dy/da = e^x·e^a
    let want_gx: Vec<f64> = av.iter().map(|v| v.exp().exp()).collect();
    let want_ga: Vec<f64> = av.iter().map(|v| v.exp().exp() * v.exp()).collect();
    assert_close("d/dx", &gx.to_vec_f64()?, &want_gx, Tol::for_dtype(DType::F64));
    assert_close("d/da", &ga.to_vec_f64()?, &want_ga, Tol::for_dtype(DType::F64));
    // d²/da² of sum exp(exp(a)) = e^(e^a)·e^a·(e^a + 1)
    let h = grad(&[&ga.sum_all()?], &[&one], &[&a], false)?[0]
        .clone()
        .expect("second derivative");
    let want_h: Vec<f64> = av.iter().map(|v| v.exp().exp() * v.exp() * (v.exp() + 1.0)).collect();
    assert_close("d²/da²", &h.to_vec_f64()?, &want_h, Tol::for_dtype(DType::F64));
    assert!(a.grad().is_none(), "grad must not accumulate into leaves");
    assert!(!h.tracks_grad(), "without create_graph the result has no history");
    // an input no output depends on gets None
    let lone = Tensor::ones(&[2], DType::F64, dev)?.requires_grad();
    let s2 = a.sqr()?.sum_all()?;
    let r = grad(&[&s2], &[&one], &[&lone, &a], false)?;
    assert!(r[0].is_none() && r[1].is_some());
    // backward_with_options(create_graph) accumulates a differentiable .grad
    let s3 = a.powf(3.0)?.sum_all()?;
    s3.backward_with_options(None, BackwardOptions::create_graph())?;
    let g1 = a.grad().expect("grad");
    assert!(g1.tracks_grad(), "create_graph leaves a gradient with history");
    a.zero_grad();
    g1.sum_all()?.backward()?;
    // d/da Σ 3a² = 6a
    let want: Vec<f64> = av.iter().map(|v| 6.0 * v).collect();
    assert_close(
        "6a",
        &a.grad().expect("grad").to_vec_f64()?,
        &want,
        Tol::for_dtype(DType::F64),
    );
    Ok(())
}

fn from(t: &Tensor) -> &[Tensor] {
    std::slice::from_ref(t)
}

/// A plain backward releases the graph: a second backward through it is
/// `GraphReleased`; `retain_graph` keeps it for a second pass that accumulates again.
pub fn released_graph_errors(dev: &Device) -> Result<()> {
    let a = randn(dev, &[4])?.requires_grad();
    let y = a.exp()?.sum_all()?;
    y.backward()?;
    match y.backward() {
        Err(Error::GraphReleased { .. }) => {}
        other => panic!("second backward of a released graph: {other:?}"),
    }
    // and the gradient of a first-order gradient: the graph of that pass was not recorded
    let b = randn(dev, &[4])?.requires_grad();
    let z = b.exp()?.sum_all()?;
    let g = grad(&[&z], &[&z.ones_like()?], &[&b], false)?[0].clone().expect("g");
    assert!(!g.tracks_grad());
    assert!(
        g.sum_all()?.backward().is_err(),
        "a gradient without create_graph has no history"
    );
    // retain_graph: two passes, twice the gradient
    let c = randn(dev, &[4])?.requires_grad();
    let w = c.sqr()?.sum_all()?;
    w.backward_with_options(None, BackwardOptions::retain_graph())?;
    w.backward()?;
    let want: Vec<f64> = c.to_vec_f64()?.iter().map(|v| 4.0 * v).collect();
    assert_close(
        "2·2c",
        &c.grad().expect("grad").to_vec_f64()?,
        &want,
        Tol::for_dtype(DType::F64),
    );
    Ok(())
}

/// Hessian-vector product of `f(x) = ½ xᵀAx` (A symmetric) equals `A·v` exactly.
pub fn hvp_quadratic_form(dev: &Device) -> Result<()> {
    let n = 5;
    let m = randn(dev, &[n, n])?;
    let a = m.add(&m.t()?)?.contiguous()?; // symmetric
    let x = randn(dev, &[n, 1])?.requires_grad();
    let v = randn(dev, &[n, 1])?;
    let f = x.t()?.matmul(&a)?.matmul(&x)?.mul_scalar(0.5)?.sum_all()?;
    let g = grad(&[&f], &[&f.ones_like()?], &[&x], true)?[0].clone().expect("g");
    let gv = g.mul(&v)?.sum_all()?;
    let hv = grad(&[&gv], &[&gv.ones_like()?], &[&x], false)?[0].clone().expect("hv");
    let want = a.matmul(&v)?.to_vec_f64()?;
    assert_close("H·v", &hv.to_vec_f64()?, &want, Tol::for_dtype(DType::F64));
    Ok(())
}

/// Gradient penalty `‖∂L/∂x‖²` of a tiny tanh MLP, differentiated with respect to the
/// weights, against central differences of the penalty.
pub fn gradient_penalty_mlp(dev: &Device) -> Result<()> {
    let x = randn(dev, &[4, 3])?;
    let w1 = randn(dev, &[3, 5])?.mul_scalar(0.5)?;
    let w2 = randn(dev, &[5, 2])?.mul_scalar(0.5)?;
    let penalty = |ws: &[Tensor]| -> Result<Tensor> {
        // gradcheck's numeric side runs under no_grad; the inner gradient needs a graph
        autograd::enable_grad(|| {
            let xi = x.detach().requires_grad();
            let out = xi.matmul(&ws[0])?.tanh()?.matmul(&ws[1])?.gelu()?.sum_all()?;
            let gx = grad(&[&out], &[&out.ones_like()?], &[&xi], true)?[0]
                .clone()
                .expect("gx");
            gx.sqr()?.sum_all()
        })
    };
    check_grad("gradient penalty of a tanh/gelu MLP", &[w1, w2], penalty)
}

/// A custom op without `differentiable_backward` is first-order only: its gradient is
/// right, and a second backward through it is an error naming it; with
/// `differentiable_backward` the second derivative is exact.
pub fn custom_op_second_order(dev: &Device) -> Result<()> {
    /// `x³`, the derivative `3x²` saved by the forward (detached state)
    struct Cube {
        slope: Option<Tensor>,
        differentiable: bool,
    }
    impl CustomOp for Cube {
        fn name(&self) -> String {
            "cube".into()
        }
        fn forward(&mut self, inputs: &[Tensor]) -> Result<Tensor> {
            let x2 = inputs[0].sqr()?;
            self.slope = Some(x2.mul_scalar(3.0)?);
            x2.mul(&inputs[0])
        }
        fn backward(self: Box<Self>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
            Ok(vec![Some(g.mul(&self.slope.expect("forward ran"))?)])
        }
        fn differentiable_backward(&self, inputs: &[Tensor], g: &Tensor) -> Option<Result<Vec<Option<Tensor>>>> {
            if !self.differentiable {
                return None;
            }
            Some((|| Ok(vec![Some(g.mul(&inputs[0].sqr()?.mul_scalar(3.0)?)?)]))())
        }
    }
    let xs = [0.5f64, -1.25, 2.0];
    for differentiable in [false, true] {
        let a = Tensor::from_f64s(&xs, &[3], DType::F64, dev)?.requires_grad();
        let y = apply(
            Cube {
                slope: None,
                differentiable,
            },
            &[&a],
        )?
        .sum_all()?;
        let g = grad(&[&y], &[&y.ones_like()?], &[&a], true)?[0].clone().expect("g");
        let want: Vec<f64> = xs.iter().map(|v| 3.0 * v * v).collect();
        assert_close("cube'", &g.to_vec_f64()?, &want, Tol::for_dtype(DType::F64));
        let second = grad(&[&g.sum_all()?], &[&y.ones_like()?], &[&a], false);
        if differentiable {
            let h = second?[0].clone().expect("h");
            let want: Vec<f64> = xs.iter().map(|v| 6.0 * v).collect();
            assert_close("cube''", &h.to_vec_f64()?, &want, Tol::for_dtype(DType::F64));
        } else {
            let e = second.expect_err("a first-order-only custom op must refuse a second backward");
            let msg = e.to_string();
            assert!(
                msg.contains("cube") && msg.contains("not twice differentiable"),
                "error names the op: {msg}"
            );
        }
    }
    // recording stays as it was after a create_graph pass
    assert!(autograd::is_grad_enabled());
    let off = autograd::no_grad(|| -> Result<bool> {
        let a = randn(dev, &[2])?.requires_grad();
        let s = autograd::enable_grad(|| a.sqr()?.sum_all())?;
        grad(&[&s], &[&s.ones_like()?], &[&a], true)?;
        Ok(autograd::is_grad_enabled())
    })?;
    assert!(!off, "grad(create_graph) restores no_grad afterwards");
    Ok(())
}

/// `gradgradcheck` fails on a custom op whose first derivative is right but whose
/// recorded backward has a wrong derivative of its own (the check can fail): the
/// gradient of `x²` is `g·d(x)` with `d(x) = 2x` computed by an inner op whose
/// backward claims `2.002` instead of `2`.
pub fn gradgradcheck_catches_wrong_second_derivative(dev: &Device) -> Result<()> {
    struct Double;
    impl CustomOp for Double {
        fn name(&self) -> String {
            "double".into()
        }
        fn forward(&mut self, inputs: &[Tensor]) -> Result<Tensor> {
            inputs[0].mul_scalar(2.0)
        }
        fn backward(self: Box<Self>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
            Ok(vec![Some(g.mul_scalar(2.002)?)]) // wrong by 0.1 %
        }
    }
    struct Square;
    impl CustomOp for Square {
        fn name(&self) -> String {
            "square".into()
        }
        fn forward(&mut self, inputs: &[Tensor]) -> Result<Tensor> {
            inputs[0].sqr()
        }
        fn backward(self: Box<Self>, _g: &Tensor) -> Result<Vec<Option<Tensor>>> {
            unreachable!("gradgradcheck runs the recorded backward only")
        }
        fn differentiable_backward(&self, inputs: &[Tensor], g: &Tensor) -> Option<Result<Vec<Option<Tensor>>>> {
            Some(apply(Double, &[&inputs[0]]).and_then(|d| Ok(vec![Some(g.mul(&d)?)])))
        }
    }
    let x = randn(dev, &[3])?;
    let opts = crate::util::tight();
    let rep = unigrad_core::gradcheck::gradgradcheck(|xs| apply(Square, &[&xs[0]]), from(&x), &opts)?;
    assert!(
        !rep.inputs[0].passed,
        "gradgradcheck must catch a wrong second derivative: {rep:?}"
    );
    assert!(
        rep.inputs[1].passed,
        "the derivative with respect to the upstream gradient is right: {rep:?}"
    );
    Ok(())
}
