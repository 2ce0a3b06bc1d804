//! Gradient checks of every differentiable op in f64 (central differences,
//! `|a − n| ≤ 1e-7 + 1e-6·|n|`), on dense and strided operands (transposed,
//! narrowed, permuted, stride-0 broadcast), broadcasting shape pairs, size-1 dims,
//! rank-0 tensors and seeded random shapes.
//!
//! Strided operands are views applied inside the checked function (gradcheck's
//! leaves are dense), so each case also checks the view op's backward. Inputs stay
//! clear of kinks and domain edges: see [`crate::util`].

use crate::forward::BROADCAST_PAIRS;
use crate::util::{
    check_grad, check_grad_with, distinct, ids, rand_ids, rand_shape, randn, signed_away, uniform, View,
};
use crate::util::{tight, VIEWS};
use std::slice::from_ref;
use unigrad_core::gradcheck::GradcheckOptions;
use unigrad_core::{rng, DType, Device, Result, Tensor};

type Op = fn(&Tensor) -> Result<Tensor>;

#[derive(Clone, Copy)]
enum Dom {
    Normal,
    Positive,
    Away,
}

fn draw(dev: &Device, shape: &[usize], d: Dom) -> Result<Tensor> {
    match d {
        Dom::Normal => randn(dev, shape),
        Dom::Positive => uniform(dev, shape, 0.5, 2.0),
        Dom::Away => signed_away(dev, shape, 0.1, 2.0),
    }
}

fn unary_table() -> Vec<(&'static str, Op, Dom)> {
    vec![
        ("neg", |t| t.neg(), Dom::Normal),
        ("exp", |t| t.exp(), Dom::Normal),
        ("log", |t| t.log(), Dom::Positive),
        ("sqrt", |t| t.sqrt(), Dom::Positive),
        ("rsqrt", |t| t.rsqrt(), Dom::Positive),
        ("abs", |t| t.abs(), Dom::Away),
        ("relu", |t| t.relu(), Dom::Away),
        ("gelu", |t| t.gelu(), Dom::Normal),
        ("gelu_tanh", |t| t.gelu_tanh(), Dom::Normal),
        ("tanh", |t| t.tanh(), Dom::Normal),
        ("sigmoid", |t| t.sigmoid(), Dom::Normal),
        ("sqr", |t| t.sqr(), Dom::Normal),
        ("recip", |t| t.recip(), Dom::Away),
        ("powf(3)", |t| t.powf(3.0), Dom::Normal),
        ("powf(2.5)", |t| t.powf(2.5), Dom::Positive),
        ("powf(-1.5)", |t| t.powf(-1.5), Dom::Positive),
        ("affine", |t| t.affine(-1.5, 0.25), Dom::Normal),
        ("add_scalar", |t| t.add_scalar(0.5), Dom::Normal),
        ("sub_scalar", |t| t.sub_scalar(0.5), Dom::Normal),
        ("mul_scalar", |t| t.mul_scalar(3.0), Dom::Normal),
        ("div_scalar", |t| t.div_scalar(3.0), Dom::Normal),
        ("clamp", |t| t.clamp(-0.5, 0.7), Dom::Away),
    ]
}

/// Every unary map (incl. scalar forms, clamp, both GELUs) on every layout, on a
/// rank-0 input and on a stride-0 broadcast input.
pub fn unary(dev: &Device) -> Result<()> {
    let shape = [2, 3, 4];
    for (name, op, dom) in unary_table() {
        for view in VIEWS {
            let leaf = draw(dev, &view.leaf_shape(&shape), dom)?;
            check_grad(&format!("{name} {view:?}"), &[leaf], |xs| {
                op(&view.apply(&xs[0], &shape)?)
            })?;
        }
        check_grad(&format!("{name} rank 0"), &[draw(dev, &[], dom)?], |xs| op(&xs[0]))?;
        let leaf = draw(dev, &[3, 1], dom)?;
        check_grad(&format!("{name} broadcast input"), &[leaf], |xs| {
            op(&xs[0].broadcast_as(&[2, 3, 4])?)
        })?;
    }
    // clamp where every element is clamped on one side or the other (gradient 0)
    let leaf = signed_away(dev, &[3, 4], 1.0, 2.0)?;
    check_grad("clamp saturated", &[leaf], |xs| xs[0].clamp(-0.5, 0.7))?;
    Ok(())
}

type BinOp = fn(&Tensor, &Tensor) -> Result<Tensor>;

fn binary_table() -> Vec<(&'static str, BinOp)> {
    vec![
        ("add", |a, b| a.add(b)),
        ("sub", |a, b| a.sub(b)),
        ("mul", |a, b| a.mul(b)),
        ("div", |a, b| a.div(b)),
        ("maximum", |a, b| a.maximum(b)),
        ("minimum", |a, b| a.minimum(b)),
    ]
}

/// add / sub / mul / div / maximum / minimum on every broadcasting shape pair
/// (rank mismatch, size-1 dims on both sides, rank 0) with dense and strided
/// operands, and with the same tensor as both operands.
pub fn binary(dev: &Device) -> Result<()> {
    let views = [
        (View::Contig, View::Contig),
        (View::Transposed, View::Narrowed),
        (View::Reversed, View::Transposed),
    ];
    for (name, op) in binary_table() {
        for (sa, sb) in BROADCAST_PAIRS {
            if sa.contains(&0) || sb.contains(&0) {
                continue; // nothing to check numerically; zero-size backward is in `views`
            }
            for (va, vb) in views {
                let a = randn(dev, &va.leaf_shape(sa))?;
                // divisor away from zero; maximum/minimum ties are measure-zero for normals
                let b = signed_away(dev, &vb.leaf_shape(sb), 0.5, 2.0)?;
                check_grad(&format!("{name} {sa:?} {sb:?} {va:?}/{vb:?}"), &[a, b], |xs| {
                    op(&va.apply(&xs[0], sa)?, &vb.apply(&xs[1], sb)?)
                })?;
            }
        }
        let x = signed_away(dev, &[3, 4], 0.5, 2.0)?;
        check_grad(&format!("{name} x,x"), &[x], |xs| op(&xs[0], &xs[0]))?;
    }
    // maximum/minimum route each gradient to one side: values well separated
    let a = distinct(dev, &[4, 5], 0.1)?;
    let b = distinct(dev, &[4, 5], 0.1)?.add_scalar(0.05)?;
    check_grad("maximum separated", &[a.clone(), b.clone()], |xs| xs[0].maximum(&xs[1]))?;
    check_grad("minimum separated", &[a, b], |xs| xs[0].minimum(&xs[1]))?;
    Ok(())
}

/// Random shapes (seeded): a random-rank operand, a broadcast partner with random
/// dims set to 1 and leading dims dropped, through a chain of binary, unary and
/// reduction ops.
pub fn random_shapes(dev: &Device) -> Result<()> {
    for case in 0..12 {
        let rank = 1 + case % 4;
        let sa = rand_shape(rank, 4);
        let drop = rng::with_rng(|r| r.below(rank as u64 + 1) as usize);
        let sb: Vec<usize> = sa[drop..]
            .iter()
            .map(|&d| if rng::with_rng(|r| r.uniform() < 0.4) { 1 } else { d })
            .collect();
        let axis = rng::with_rng(|r| r.below(rank as u64) as isize) - rank as isize;
        let keep = case % 2 == 0;
        let a = randn(dev, &sa)?;
        let b = uniform(dev, &sb, 0.5, 2.0)?;
        check_grad(&format!("random {sa:?} {sb:?} axis {axis}"), &[a, b], |xs| {
            let (x, y) = (&xs[0], &xs[1]);
            let z = x.mul(y)?.sub(&y.log()?)?.tanh()?.div(y)?;
            z.sum(&[axis], keep)?.add(&z.mean(&[axis], true)?.sum(&[axis], keep)?)
        })?;
        // the swapped order (smaller operand first)
        let a = randn(dev, &sb)?;
        let b = randn(dev, &sa)?;
        check_grad(&format!("random swapped {sb:?} {sa:?}"), &[a, b], |xs| {
            xs[0].sub(&xs[1])?.sigmoid()?.max(&[axis], keep)
        })?;
    }
    Ok(())
}

/// sum / mean / max / min / var (biased and unbiased) over single, several,
/// negative and all axes, keepdim on and off, dense and strided inputs.
pub fn reductions(dev: &Device) -> Result<()> {
    let axis_sets: [&[isize]; 7] = [&[0], &[1], &[-1], &[0, 2], &[2, 0], &[-2, -1], &[0, 1, 2]];
    let shape = [3, 4, 5];
    for view in [View::Contig, View::Narrowed, View::Reversed] {
        for axes in axis_sets {
            for keep in [false, true] {
                let tag = format!("{view:?} axes {axes:?} keepdim {keep}");
                let leaf = randn(dev, &view.leaf_shape(&shape))?;
                check_grad(&format!("sum {tag}"), from_ref(&leaf), |xs| {
                    view.apply(&xs[0], &shape)?.sum(axes, keep)
                })?;
                check_grad(&format!("mean {tag}"), from_ref(&leaf), |xs| {
                    view.apply(&xs[0], &shape)?.mean(axes, keep)
                })?;
                check_grad(&format!("var unbiased {tag}"), from_ref(&leaf), |xs| {
                    view.apply(&xs[0], &shape)?.var(axes, keep, true)
                })?;
                check_grad(&format!("var biased {tag}"), &[leaf], |xs| {
                    view.apply(&xs[0], &shape)?.var(axes, keep, false)
                })?;
                let leaf = distinct(dev, &view.leaf_shape(&shape), 0.05)?;
                check_grad(&format!("max {tag}"), from_ref(&leaf), |xs| {
                    view.apply(&xs[0], &shape)?.max(axes, keep)
                })?;
                check_grad(&format!("min {tag}"), &[leaf], |xs| {
                    view.apply(&xs[0], &shape)?.min(axes, keep)
                })?;
            }
        }
    }
    let x = randn(dev, &[2, 3])?;
    check_grad("sum_all", from_ref(&x), |xs| xs[0].sum_all())?;
    check_grad("mean_all", from_ref(&x), |xs| xs[0].mean_all())?;
    check_grad("sum_to", &[randn(dev, &[2, 3, 4])?], |xs| xs[0].sum_to(&[3, 1]))?;
    check_grad("sum rank 0", &[randn(dev, &[])?], |xs| xs[0].sum_all())?;
    Ok(())
}

/// Matmul: plain, batched, broadcast batch dims on either side, size-1 dims,
/// transposed / narrowed / permuted operands, a stride-0 batch operand, and the
/// transposed-weight pattern `x·Wᵀ` of linear layers.
pub fn matmul(dev: &Device) -> Result<()> {
    let cases: [(&[usize], &[usize]); 7] = [
        (&[3, 4], &[4, 5]),
        (&[1, 4], &[4, 1]),
        (&[2, 3, 4], &[2, 4, 5]),
        (&[2, 1, 3, 4], &[3, 4, 2]),
        (&[3, 4], &[2, 4, 5]),
        (&[2, 2, 3], &[3, 2]),
        (&[3, 1], &[1, 4]),
    ];
    let views = [
        (View::Contig, View::Contig),
        (View::Transposed, View::Contig),
        (View::Contig, View::Transposed),
        (View::Transposed, View::Transposed),
        (View::Narrowed, View::Reversed),
    ];
    for (sa, sb) in cases {
        for (va, vb) in views {
            let a = randn(dev, &va.leaf_shape(sa))?;
            let b = randn(dev, &vb.leaf_shape(sb))?;
            check_grad(&format!("matmul {sa:?}x{sb:?} {va:?}/{vb:?}"), &[a, b], |xs| {
                va.apply(&xs[0], sa)?.matmul(&vb.apply(&xs[1], sb)?)
            })?;
        }
    }
    let a = randn(dev, &[3, 4])?;
    let b = randn(dev, &[2, 4, 2])?;
    check_grad("matmul stride-0 batch", &[a, b], |xs| {
        xs[0].broadcast_as(&[2, 3, 4])?.matmul(&xs[1])
    })?;
    let x = randn(dev, &[2, 3, 4])?;
    let w = randn(dev, &[5, 4])?;
    check_grad("linear x·Wᵀ", &[x, w], |xs| xs[0].matmul(&xs[1].t()?))?;
    let x = randn(dev, &[3, 3])?;
    check_grad("matmul x·x", &[x], |xs| xs[0].matmul(&xs[0])?.matmul(&xs[0].t()?))?;
    Ok(())
}

/// Every shape op's backward: reshape (view and copy), reshape_infer, flatten,
/// permute, transpose, t, narrow, squeeze, unsqueeze, broadcast_as, contiguous,
/// cat (mixed layouts, several dims) and stack.
pub fn shape_ops(dev: &Device) -> Result<()> {
    let shape = [2, 3, 4];
    for view in VIEWS {
        let leaf = randn(dev, &view.leaf_shape(&shape))?;
        let v = |t: &Tensor| view.apply(t, &shape);
        let one = [leaf.clone()];
        let tag = format!("{view:?}");
        check_grad(&format!("reshape {tag}"), &one, |xs| v(&xs[0])?.reshape(&[4, 6]))?;
        check_grad(&format!("reshape_infer {tag}"), &one, |xs| {
            v(&xs[0])?.reshape_infer(&[-1, 2])
        })?;
        check_grad(&format!("flatten {tag}"), &one, |xs| v(&xs[0])?.flatten(0, 1))?;
        check_grad(&format!("permute {tag}"), &one, |xs| v(&xs[0])?.permute(&[1, 2, 0]))?;
        check_grad(&format!("transpose {tag}"), &one, |xs| v(&xs[0])?.transpose(0, 2))?;
        check_grad(&format!("t {tag}"), &one, |xs| v(&xs[0])?.t())?;
        check_grad(&format!("narrow {tag}"), &one, |xs| v(&xs[0])?.narrow(2, 1, 2))?;
        check_grad(&format!("narrow twice {tag}"), &one, |xs| {
            v(&xs[0])?.narrow(0, 1, 1)?.narrow(-1, 0, 3)
        })?;
        check_grad(&format!("unsqueeze {tag}"), &one, |xs| v(&xs[0])?.unsqueeze(1))?;
        check_grad(&format!("unsqueeze-squeeze {tag}"), &one, |xs| {
            v(&xs[0])?.unsqueeze(-1)?.mul_scalar(2.0)?.squeeze(-1)
        })?;
        check_grad(&format!("contiguous {tag}"), &one, |xs| v(&xs[0])?.contiguous())?;
        check_grad(&format!("cat {tag}"), &[leaf.clone(), randn(dev, &[2, 3, 2])?], |xs| {
            let a = v(&xs[0])?;
            Tensor::cat(&[&a, &xs[1], &a.narrow(2, 1, 1)?], -1)
        })?;
        check_grad(
            &format!("cat dim 0 {tag}"),
            &[leaf.clone(), randn(dev, &[1, 3, 4])?],
            |xs| Tensor::cat(&[&xs[1], &v(&xs[0])?], 0),
        )?;
        check_grad(&format!("stack {tag}"), &[leaf.clone(), randn(dev, &shape)?], |xs| {
            Tensor::stack(&[&v(&xs[0])?, &xs[1], &xs[1]], 1)
        })?;
        check_grad(&format!("stack -1 {tag}"), &[leaf], |xs| {
            let a = v(&xs[0])?;
            Tensor::stack(&[&a, &a.exp()?], -1)
        })?;
    }
    let y = randn(dev, &[2, 1, 4])?;
    check_grad("squeeze", from_ref(&y), |xs| xs[0].squeeze(1))?;
    check_grad("broadcast_as", from_ref(&y), |xs| xs[0].broadcast_as(&[3, 2, 5, 4]))?;
    check_grad("broadcast_as then reshape (copy)", &[y], |xs| {
        xs[0].broadcast_as(&[2, 3, 4])?.reshape(&[6, 4])
    })?;
    check_grad("rank 0 reshape", &[randn(dev, &[])?], |xs| {
        xs[0].reshape(&[1, 1])?.broadcast_as(&[2, 3])
    })?;
    Ok(())
}

/// index_select (each dim, repeated ids, strided source), embedding, gather and
/// scatter_add (both inputs), where_cond (both branches, broadcasting), masked_fill.
pub fn indexing(dev: &Device) -> Result<()> {
    let shape = [4, 3, 5];
    for view in [View::Contig, View::Reversed] {
        for dim in 0..3usize {
            let size = shape[dim] as i64;
            let id = ids(dev, &[size - 1, 0, 1, 0, size - 1, 1, 1], &[7])?;
            let leaf = randn(dev, &view.leaf_shape(&shape))?;
            check_grad(&format!("index_select {view:?} dim {dim}"), &[leaf], |xs| {
                view.apply(&xs[0], &shape)?.index_select(dim as isize, &id)
            })?;
        }
    }
    let table = randn(dev, &[6, 3])?;
    let id = ids(dev, &[5, 0, 2, 2, 5, 1, 0, 5], &[2, 4])?;
    check_grad("embedding", from_ref(&table), |xs| xs[0].embedding(&id))?;
    check_grad("embedding strided ids", &[table], |xs| xs[0].embedding(&id.t()?))?;
    for view in [View::Contig, View::Transposed] {
        let s = [3, 5];
        let leaf = randn(dev, &view.leaf_shape(&s))?;
        let id1 = rand_ids(dev, &[3, 8], 5)?;
        check_grad(&format!("gather dim 1 {view:?}"), from_ref(&leaf), |xs| {
            view.apply(&xs[0], &s)?.gather(1, &id1)
        })?;
        let id0 = rand_ids(dev, &[6, 5], 3)?;
        check_grad(&format!("gather dim 0 {view:?}"), from_ref(&leaf), |xs| {
            view.apply(&xs[0], &s)?.gather(0, &id0)
        })?;
        let src = randn(dev, &[3, 8])?;
        check_grad(&format!("scatter_add {view:?}"), &[leaf, src], |xs| {
            view.apply(&xs[0], &s)?.scatter_add(1, &id1, &xs[1])
        })?;
    }
    // where_cond: cond [3, 1], a [4], b [2, 1, 1]; both branches take gradients
    let cond = Tensor::from_f64s(&[1.0, 0.0, 1.0], &[3, 1], DType::F64, dev)?;
    check_grad(
        "where_cond broadcast",
        &[randn(dev, &[4])?, randn(dev, &[2, 1, 1])?],
        |xs| cond.where_cond(&xs[0], &xs[1]),
    )?;
    let c2 = uniform(dev, &[3, 4], -1.0, 1.0)?.lt_scalar(0.0)?;
    let c2_data = c2.to_vec_f64()?;
    assert!(c2_data.contains(&1.0) && c2_data.contains(&0.0), "both branches used");
    check_grad(
        "where_cond same shape",
        &[randn(dev, &[3, 4])?, randn(dev, &[4, 3])?],
        |xs| c2.where_cond(&xs[0].exp()?, &xs[1].t()?),
    )?;
    let mask = Tensor::from_f64s(&[1.0, 0.0, 0.0, 1.0], &[4], DType::F64, dev)?;
    check_grad("masked_fill", &[randn(dev, &[3, 4])?], |xs| {
        xs[0].masked_fill(&mask, -3.0)
    })?;
    check_grad("masked_fill -inf then softmax", &[randn(dev, &[3, 4])?], |xs| {
        xs[0].masked_fill(&mask, f64::NEG_INFINITY)?.softmax(-1)
    })?;
    Ok(())
}

/// softmax and log_softmax along every axis of dense and strided inputs.
pub fn softmax(dev: &Device) -> Result<()> {
    let shape = [3, 4, 5];
    for view in [View::Contig, View::Transposed, View::Reversed] {
        for dim in [0isize, 1, 2, -1] {
            let leaf = randn(dev, &view.leaf_shape(&shape))?;
            check_grad(&format!("softmax {view:?} dim {dim}"), from_ref(&leaf), |xs| {
                view.apply(&xs[0], &shape)?.softmax(dim)
            })?;
            check_grad(&format!("log_softmax {view:?} dim {dim}"), &[leaf], |xs| {
                view.apply(&xs[0], &shape)?.log_softmax(dim)
            })?;
        }
    }
    check_grad("softmax 1 class", &[randn(dev, &[3, 1])?], |xs| {
        xs[0].softmax(-1)?.mul(&xs[0])
    })?;
    Ok(())
}

/// Cross-entropy: plain, ignore_index, label smoothing, both, strided logits, and
/// logits produced by a matmul (the LM-head pattern).
pub fn cross_entropy(dev: &Device) -> Result<()> {
    let targets = ids(dev, &[2, 0, -100, 4, 4, 1], &[6])?;
    let plain = ids(dev, &[2, 0, 3, 4, 4, 1], &[6])?;
    for view in [View::Contig, View::Transposed, View::Narrowed] {
        let s = [6, 5];
        let leaf = randn(dev, &view.leaf_shape(&s))?;
        for (t, ignore, eps) in [
            (&plain, None, 0.0),
            (&targets, Some(-100), 0.0),
            (&plain, None, 0.1),
            (&targets, Some(-100), 0.2),
            (&plain, Some(4), 1.0),
        ] {
            check_grad(
                &format!("cross_entropy {view:?} {ignore:?} {eps}"),
                from_ref(&leaf),
                |xs| view.apply(&xs[0], &s)?.cross_entropy(t, ignore, eps),
            )?;
        }
    }
    let h = randn(dev, &[6, 3])?;
    let w = randn(dev, &[5, 3])?;
    check_grad("cross_entropy of x·Wᵀ", &[h, w], |xs| {
        xs[0].matmul(&xs[1].t()?)?.cross_entropy(&targets, Some(-100), 0.1)
    })?;
    Ok(())
}

/// Dropout with the RNG reseeded inside the checked function (so every evaluation
/// draws the same mask): the gradient is the mask scaled by `1/(1−p)`.
pub fn dropout(dev: &Device) -> Result<()> {
    for p in [0.1, 0.5, 0.9] {
        check_grad(&format!("dropout p={p}"), &[randn(dev, &[4, 6])?], |xs| {
            unigrad_core::manual_seed(1234);
            xs[0].dropout(p, true)
        })?;
        check_grad(&format!("dropout p={p} transposed"), &[randn(dev, &[6, 4])?], |xs| {
            unigrad_core::manual_seed(99);
            xs[0].t()?.dropout(p, true)?.tanh()
        })?;
    }
    check_grad("dropout eval", &[randn(dev, &[4, 6])?], |xs| xs[0].dropout(0.5, false))?;
    Ok(())
}

/// to_dtype round trips. Inputs are multiples of 2⁻¹⁰ in [−1, 1) and the step is
/// 2⁻⁴, so every perturbed value is exact in f32 and the finite difference of the
/// quadratic below is exact; only the f32 rounding of the gradient on its way back
/// remains, well inside `rtol = 1e-6`.
pub fn to_dtype(dev: &Device) -> Result<()> {
    let v: Vec<f64> = rng::with_rng(|r| (0..12).map(|_| (r.below(2048) as f64 - 1024.0) / 1024.0).collect());
    let x = Tensor::from_f64s(&v, &[3, 4], DType::F64, dev)?;
    let opts = GradcheckOptions {
        eps: 1.0 / 16.0,
        ..tight()
    };
    check_grad_with("to_dtype f64→f32→f64", from_ref(&x), &opts, |xs| {
        xs[0]
            .to_dtype(DType::F32)?
            .mul_scalar(0.5)?
            .to_dtype(DType::F64)?
            .mul(&xs[0])
    })?;
    check_grad_with("to_dtype transposed", &[x], &opts, |xs| {
        xs[0].t()?.to_dtype(DType::F32)?.sqr()?.to_dtype(DType::F64)
    })?;
    Ok(())
}

/// Compositions as models use them: a LayerNorm written with ops, scaled
/// dot-product attention with a causal mask, and an MLP block with a residual.
pub fn compositions(dev: &Device) -> Result<()> {
    check_grad("layernorm by ops", &[randn(dev, &[3, 6])?, randn(dev, &[6])?], |xs| {
        let x = &xs[0];
        let mu = x.mean(&[-1], true)?;
        let var = x.var(&[-1], true, false)?;
        x.sub(&mu)?.mul(&var.add_scalar(1e-5)?.rsqrt()?)?.mul(&xs[1])
    })?;
    let causal = Tensor::from_f64s(
        &[0., 1., 1., 1., 0., 0., 1., 1., 0., 0., 0., 1., 0., 0., 0., 0.],
        &[4, 4],
        DType::F64,
        dev,
    )?;
    check_grad(
        "attention",
        &[
            randn(dev, &[2, 4, 3])?,
            randn(dev, &[2, 4, 3])?,
            randn(dev, &[2, 4, 3])?,
        ],
        |xs| {
            let s = xs[0].matmul(&xs[1].transpose(-1, -2)?)?.mul_scalar(1.0 / 3f64.sqrt())?;
            s.masked_fill(&causal, f64::NEG_INFINITY)?.softmax(-1)?.matmul(&xs[2])
        },
    )?;
    check_grad(
        "mlp block",
        &[
            randn(dev, &[5, 4])?,
            randn(dev, &[8, 4])?,
            randn(dev, &[8])?,
            randn(dev, &[4, 8])?,
        ],
        |xs| {
            let h = xs[0].matmul(&xs[1].t()?)?.add(&xs[2])?.gelu()?;
            xs[0].add(&h.matmul(&xs[3].t()?)?)
        },
    )?;
    Ok(())
}

/// The fused norm ops (`layer_norm`, `rms_norm`) on dense and strided inputs, with
/// every combination of affine parameters (weight and bias, weight only, bias only,
/// neither), against finite differences of the whole op.
pub fn norms(dev: &Device) -> Result<()> {
    let shape = [3, 4, 6];
    for view in [View::Contig, View::Transposed, View::Narrowed, View::Reversed] {
        let leaf = randn(dev, &view.leaf_shape(&shape))?;
        let w = uniform(dev, &[6], 0.5, 1.5)?;
        let b = randn(dev, &[6])?;
        let x = |xs: &[Tensor]| view.apply(&xs[0], &shape);
        check_grad(
            &format!("layer_norm w b {view:?}"),
            &[leaf.clone(), w.clone(), b.clone()],
            |xs| x(xs)?.layer_norm(Some(&xs[1]), Some(&xs[2]), 1e-5),
        )?;
        check_grad(&format!("layer_norm w {view:?}"), &[leaf.clone(), w.clone()], |xs| {
            x(xs)?.layer_norm(Some(&xs[1]), None, 1e-5)
        })?;
        check_grad(&format!("layer_norm b {view:?}"), &[leaf.clone(), b], |xs| {
            x(xs)?.layer_norm(None, Some(&xs[1]), 1e-5)
        })?;
        check_grad(&format!("layer_norm {view:?}"), from_ref(&leaf), |xs| {
            x(xs)?.layer_norm(None, None, 1e-5)
        })?;
        check_grad(&format!("rms_norm w {view:?}"), &[leaf.clone(), w], |xs| {
            x(xs)?.rms_norm(Some(&xs[1]), 1e-5)
        })?;
        check_grad(&format!("rms_norm {view:?}"), &[leaf], |xs| x(xs)?.rms_norm(None, 0.1))?;
    }
    // rank 1, and a norm whose output feeds another op
    check_grad("layer_norm rank 1", &[randn(dev, &[7])?], |xs| {
        xs[0].layer_norm(None, None, 1e-5)
    })?;
    check_grad("rms_norm then tanh", &[randn(dev, &[5, 4])?, randn(dev, &[4])?], |xs| {
        xs[0].rms_norm(Some(&xs[1]), 1e-5)?.tanh()
    })?;
    Ok(())
}
