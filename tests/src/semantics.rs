//! Edge-case semantics against PyTorch 2.15 (issue 16): values and gradients at
//! kinks, ties, NaN and empty or all-axes reductions, log-softmax precision with
//! large logits, and errors from inside composed ops that name the op the user
//! called. The expected values and gradients at kinks, ties, NaN and in reductions
//! were read off PyTorch 2.15 in f64, log-softmax is checked against an f64
//! reference; where unigrad deliberately differs (ties of `maximum` / `minimum` go
//! to `a`), the test pins unigrad's documented choice.

use crate::errors::{expect_err, op_of};
use unigrad_core::{DType, Device, Result, Tensor};
use unigrad_nn::attention::{Init, MultiHeadAttention};
use unigrad_nn::{Embedding, LayerNorm, LearnedPositions, Linear, RmsNorm, SinusoidalPositions};

const NAN: f64 = f64::NAN;

/// `got == want` element by element, NaN equal to NaN.
fn assert_same(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            g == w || (g.is_nan() && w.is_nan()),
            "{what}: got {got:?}, want {want:?}"
        );
    }
}

/// An f64 leaf that requires grad.
fn leaf(dev: &Device, v: &[f64]) -> Result<Tensor> {
    Ok(Tensor::from_f64s(v, &[v.len()], DType::F64, dev)?.requires_grad())
}

/// Forward values of `f(x)` and the gradient of `sum(f(x))` (upstream all ones).
fn value_and_grad(dev: &Device, v: &[f64], f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<(Vec<f64>, Vec<f64>)> {
    let x = leaf(dev, v)?;
    let y = f(&x)?;
    y.backward_with(&y.ones_like()?)?;
    let g = x.grad().expect("x takes part").to_vec_f64()?;
    Ok((y.to_vec_f64()?, g))
}

/// `(x − m) − ln Σ exp(x − m)` per row in f64, exact in `x − m` for the inputs used.
fn log_softmax_ref(x: &[f64], n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for r in x.chunks(n) {
        let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let ls = r.iter().map(|&v| (v - m).exp()).sum::<f64>().ln();
        out.extend(r.iter().map(|&v| (v - m) - ls));
    }
    out
}

/// Log-softmax and cross-entropy keep small log-probabilities exact with large
/// logits: f64 logits near 1e15 (the old `x − (max + ln Σ)` was off by 1e-2) and f32
/// logits near 50 and 100 (off by up to 4e-6 there; PyTorch: about 1e-7).
pub fn log_softmax_large_logits(dev: &Device) -> Result<()> {
    // f64 near 1e15: the ulp there is 0.125, so x − max is exact
    let n = 5;
    let x: Vec<f64> = [0.0, 1.0, 2.5, -3.0, 0.375, 7.0, 7.25, -1.0, 2.0, 4.125]
        .iter()
        .enumerate()
        .map(|(i, d)| if i < n { 1e15 + d } else { -1e15 + d })
        .collect();
    let want = log_softmax_ref(&x, n);
    let t = Tensor::from_f64s(&x, &[2, n], DType::F64, dev)?;
    let got = t.log_softmax(-1)?.to_vec_f64()?;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= 1e-13, "f64 log_softmax [{i}]: {g} vs {w}");
    }
    // the same along a non-last axis (the permuted path)
    let got = t.t()?.log_softmax(0)?.t()?.contiguous()?.to_vec_f64()?;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= 1e-13, "f64 log_softmax dim 0 [{i}]: {g} vs {w}");
    }
    // cross-entropy is built on it: targets 3 and 0
    let targets = Tensor::from_vec(vec![3i64, 0], &[2], dev)?;
    let ce = t.cross_entropy(&targets, None, 0.0)?.to_scalar()?;
    let want_ce = -(want[3] + want[n]) / 2.0;
    assert!((ce - want_ce).abs() <= 1e-13, "f64 cross_entropy: {ce} vs {want_ce}");

    // f32 near 50 and 100: the f64 reference of the same f32 inputs
    for (base, rows) in [(50.0f64, 4usize), (100.0, 4)] {
        let n = 37;
        let x32: Vec<f32> = (0..rows * n)
            .map(|i| (base + ((i * 7919) % 1013) as f64 * 0.0123 - 6.0) as f32)
            .collect();
        let x64: Vec<f64> = x32.iter().map(|&v| v as f64).collect();
        let want = log_softmax_ref(&x64, n);
        let t = Tensor::from_f64s(&x64, &[rows, n], DType::F32, dev)?;
        let got = t.log_softmax(-1)?.to_vec_f64()?;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            // a few f32 ulps of the result itself, not of the logits
            let tol = 4.0 * f32::EPSILON as f64 * w.abs().max(1.0);
            assert!((g - w).abs() <= tol, "f32 log_softmax at {base} [{i}]: {g} vs {w}");
        }
    }
    Ok(())
}

/// `relu(NaN)` is NaN and passes the gradient (PyTorch: `threshold_backward` masks
/// only `x ≤ 0`); 0 at the kink.
pub fn relu_propagates_nan(dev: &Device) -> Result<()> {
    let (y, g) = value_and_grad(dev, &[NAN, -1.0, 0.0, 2.0, -0.0], |x| x.relu())?;
    assert_same("relu", &y, &[NAN, 0.0, 0.0, 2.0, 0.0]);
    assert_same("relu grad", &g, &[1.0, 0.0, 0.0, 1.0, 0.0]);
    // f32 too (the other kernel instantiation)
    let x = Tensor::from_f64s(&[NAN, -1.0, 3.0], &[3], DType::F32, dev)?;
    assert_same("relu f32", &x.relu()?.to_vec_f64()?, &[NAN, 0.0, 3.0]);
    Ok(())
}

/// `x^0` has gradient 0 everywhere, 0 and NaN included (PyTorch), not `0·0⁻¹`.
pub fn powf_zero_exponent(dev: &Device) -> Result<()> {
    let (y, g) = value_and_grad(dev, &[0.0, 2.0, -1.5, NAN], |x| x.powf(0.0))?;
    assert_same("powf 0", &y, &[1.0, 1.0, 1.0, 1.0]);
    assert_same("powf 0 grad", &g, &[0.0, 0.0, 0.0, 0.0]);
    // the neighbours keep PyTorch's values at 0
    let (_, g) = value_and_grad(dev, &[0.0], |x| x.powf(2.0))?;
    assert_same("powf 2 grad at 0", &g, &[0.0]);
    let (_, g) = value_and_grad(dev, &[0.0], |x| x.powf(1.0))?;
    assert_same("powf 1 grad at 0", &g, &[1.0]);
    Ok(())
}

/// `clamp`'s gradient passes only strictly inside `(lo, hi)` (PyTorch 2.15): 0 at
/// exactly `lo` and `hi`, outside, at NaN, and everywhere when `lo ≥ hi`.
pub fn clamp_kinks(dev: &Device) -> Result<()> {
    let (y, g) = value_and_grad(dev, &[-1.0, 1.0, 0.5, -2.0, 2.0, NAN], |x| x.clamp(-1.0, 1.0))?;
    assert_same("clamp", &y, &[-1.0, 1.0, 0.5, -1.0, 1.0, NAN]);
    assert_same("clamp grad", &g, &[0.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
    let (y, g) = value_and_grad(dev, &[1.0, 1.5, 2.0, 3.0, 0.0], |x| x.clamp(2.0, 1.0))?;
    assert_same("clamp lo > hi", &y, &[1.0; 5]);
    assert_same("clamp lo > hi grad", &g, &[0.0; 5]);
    let (_, g) = value_and_grad(dev, &[1.0, 0.5], |x| x.clamp(1.0, 1.0))?;
    assert_same("clamp lo = hi grad", &g, &[0.0, 0.0]);
    Ok(())
}

/// `maximum` / `minimum` with a NaN operand: NaN, and the gradient reaches both
/// operands in full (PyTorch). Ties go to `a` (documented difference: PyTorch
/// halves).
pub fn extremum_nan_and_ties(dev: &Device) -> Result<()> {
    let av = [NAN, 1.0, 1.0, NAN, 2.0, 0.0];
    let bv = [1.0, NAN, 1.0, NAN, 1.0, 3.0];
    type Bin = fn(&Tensor, &Tensor) -> Result<Tensor>;
    /// Values, gradient of `a`, gradient of `b`.
    type Want = [[f64; 6]; 3];
    let cases: [(&str, Bin, Want); 2] = [
        (
            "maximum",
            |a, b| a.maximum(b),
            [
                [NAN, NAN, 1.0, NAN, 2.0, 3.0],
                [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
                [1.0, 1.0, 0.0, 1.0, 0.0, 1.0],
            ],
        ),
        (
            "minimum",
            |a, b| a.minimum(b),
            [
                [NAN, NAN, 1.0, NAN, 1.0, 0.0],
                [1.0, 1.0, 1.0, 1.0, 0.0, 1.0],
                [1.0, 1.0, 0.0, 1.0, 1.0, 0.0],
            ],
        ),
    ];
    for (name, f, [want_y, want_ga, want_gb]) in cases {
        let (a, b) = (leaf(dev, &av)?, leaf(dev, &bv)?);
        let y = f(&a, &b)?;
        y.backward_with(&y.ones_like()?)?;
        assert_same(name, &y.to_vec_f64()?, &want_y);
        assert_same(&format!("{name} grad a"), &a.grad().expect("a").to_vec_f64()?, &want_ga);
        assert_same(&format!("{name} grad b"), &b.grad().expect("b").to_vec_f64()?, &want_gb);
    }
    Ok(())
}

/// The mean over an empty axis and `mean_all` of an empty tensor are NaN (0/0, as
/// in PyTorch); the sum stays 0.
pub fn empty_mean_is_nan(dev: &Device) -> Result<()> {
    let e = Tensor::zeros(&[0, 3], DType::F64, dev)?;
    assert_same("mean_all empty", &[e.mean_all()?.to_scalar()?], &[NAN]);
    let m = e.mean(&[0], false)?;
    assert_eq!(m.shape(), &[3]);
    assert_same("mean axis 0 of [0, 3]", &m.to_vec_f64()?, &[NAN; 3]);
    let m = e.mean(&[1], true)?;
    assert_eq!(m.shape(), &[0, 1]);
    assert_same("sum axis 0 of [0, 3]", &e.sum(&[0], false)?.to_vec_f64()?, &[0.0; 3]);
    let e32 = Tensor::zeros(&[0], DType::F32, dev)?;
    assert_same("mean_all empty f32", &[e32.mean_all()?.to_scalar()?], &[NAN]);
    // the backward of an empty mean is an empty gradient, not an error
    let x = Tensor::zeros(&[0, 3], DType::F64, dev)?.requires_grad();
    x.mean(&[0], false)?.sum_all()?.backward()?;
    assert_eq!(x.grad().expect("x").shape(), &[0, 3]);
    Ok(())
}

/// `axes = []` reduces every dimension (PyTorch's `dim=[]`), for every reduction
/// taking `axes`, with and without keepdim, and the gradient flows to every element.
pub fn empty_axes_reduce_all(dev: &Device) -> Result<()> {
    let v = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
    let x = Tensor::from_f64s(&v, &[2, 3], DType::F64, dev)?;
    let all = |t: Result<Tensor>, want: f64, keep: bool| -> Result<()> {
        let t = t?;
        assert_eq!(
            t.shape(),
            if keep { &[1usize, 1][..] } else { &[][..] },
            "keepdim {keep}"
        );
        assert!((t.to_vec_f64()?[0] - want).abs() < 1e-12, "{want} vs {t:?}");
        Ok(())
    };
    for keep in [false, true] {
        all(x.sum(&[], keep), 15.0, keep)?;
        all(x.mean(&[], keep), 2.5, keep)?;
        all(x.max(&[], keep), 5.0, keep)?;
        all(x.min(&[], keep), 0.0, keep)?;
        all(x.var(&[], keep, true), 3.5, keep)?;
        all(x.var(&[], keep, false), 35.0 / 12.0, keep)?;
    }
    let (y, g) = value_and_grad(dev, &v, |x| x.reshape(&[2, 3])?.mean(&[], false))?;
    assert_same("mean [] value", &y, &[2.5]);
    assert_same("mean [] grad", &g, &[1.0 / 6.0; 6]);
    let (_, g) = value_and_grad(dev, &v, |x| x.reshape(&[2, 3])?.max(&[], true))?;
    assert_same("max [] grad", &g, &[0.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
    // rank 0: all of no axes is itself
    let s = Tensor::scalar(2.5, DType::F64, dev)?;
    assert_eq!(s.sum(&[], false)?.to_scalar()?, 2.5);
    // an empty tensor has no maximum, whichever way the axes are given
    let e = Tensor::zeros(&[0, 2], DType::F64, dev)?;
    assert_eq!(op_of(&e.max(&[], false).unwrap_err()).as_deref(), Some("max"));
    Ok(())
}

/// Errors from inside composed ops name the op the user called, not the
/// primitive it is built from.
pub fn composed_errors_name_the_called_op(dev: &Device) -> Result<()> {
    let x64 = Tensor::ones(&[4, 3], DType::F64, dev)?;
    // Linear with f32 weights on an f64 input: not `matmul`
    let lin = Linear::new(3, 2, true, DType::F32, dev)?;
    expect_err("Linear f64 input", lin.forward(&x64), "Linear", &["f64", "f32"]);
    let lin = Linear::new(3, 2, false, DType::F32, dev)?;
    expect_err("Linear no bias", lin.forward(&x64), "Linear", &["f64", "f32"]);
    // masked_fill: not `where_cond`, for shapes and dtypes
    let bad_mask = Tensor::ones(&[5], DType::F64, dev)?;
    expect_err(
        "masked_fill shape",
        x64.masked_fill(&bad_mask, 0.0),
        "masked_fill",
        &["[5]", "[4, 3]"],
    );
    let f32_mask = Tensor::ones(&[4, 3], DType::F32, dev)?;
    expect_err(
        "masked_fill dtype",
        x64.masked_fill(&f32_mask, 0.0),
        "masked_fill",
        &["f32"],
    );
    // scalar arithmetic: not `affine`
    let i = Tensor::from_vec(vec![1i64, 2, 3], &[3], dev)?;
    expect_err("add_scalar i64", i.add_scalar(1.0), "add_scalar", &["i64"]);
    expect_err("sub_scalar i64", i.sub_scalar(1.0), "sub_scalar", &["i64"]);
    expect_err("mul_scalar i64", i.mul_scalar(2.0), "mul_scalar", &["i64"]);
    expect_err("div_scalar i64", i.div_scalar(2.0), "div_scalar", &["i64"]);
    // reductions built on `sum`
    expect_err("mean i64", i.mean(&[0], false), "mean", &["i64"]);
    expect_err("mean_all i64", i.mean_all(), "mean_all", &["i64"]);
    expect_err("sum_all i64", i.sum_all(), "sum_all", &["i64"]);
    expect_err("var i64", i.var(&[0], false, false), "var", &["i64"]);
    // nn layers built on Linear, index_select and custom ops
    let mha = MultiHeadAttention::new_self(4, 2, true, 0.0, Init::Default, DType::F64, dev)?;
    let x32 = Tensor::ones(&[1, 2, 4], DType::F32, dev)?;
    expect_err(
        "attention f32 input",
        mha.forward_self(&x32, None),
        "MultiHeadAttention",
        &["f32"],
    );
    let emb = Embedding::new(5, 3, None, DType::F64, dev)?;
    let out_of_range = Tensor::from_vec(vec![7i64], &[1], dev)?;
    expect_err("Embedding id", emb.forward(&out_of_range), "Embedding", &["7"]);
    // norm layers built on core's layer_norm / rms_norm: a dtype clash names the layer
    let ln = LayerNorm::new(4, DType::F64, dev)?;
    expect_err("LayerNorm f32 input", ln.forward(&x32), "LayerNorm", &["f32"]);
    let rms = RmsNorm::new(4, DType::F64, dev)?;
    expect_err("RmsNorm f32 input", rms.forward(&x32), "RmsNorm", &["f32"]);
    // positions: a range past the table (or past usize) names the table, never `narrow`
    let pos = LearnedPositions::new(4, 2, 0.02, DType::F64, dev)?;
    expect_err("LearnedPositions range", pos.forward(3, 2), "LearnedPositions", &["3"]);
    expect_err(
        "LearnedPositions overflow",
        pos.forward(usize::MAX, 2),
        "LearnedPositions",
        &[],
    );
    let sin = SinusoidalPositions::new(4, 2, DType::F64, dev)?;
    expect_err(
        "SinusoidalPositions overflow",
        sin.forward(usize::MAX, 2),
        "SinusoidalPositions",
        &[],
    );
    Ok(())
}

/// Cross-entropy over zero classes (logits `[N, 0]`) where every target is ignored
/// (with and without label smoothing, and `N = 0`) is the all-ignored result: loss 0
/// with a zero gradient of the logits' shape, as with classes; a target that is not
/// ignored is still out of range.
pub fn cross_entropy_zero_classes_all_ignored(dev: &Device) -> Result<()> {
    for (n, smoothing) in [(1usize, 1.0), (3, 0.0), (2, 0.4), (0, 1.0)] {
        let logits = Tensor::zeros(&[n, 0], DType::F64, dev)?.requires_grad();
        let targets = Tensor::from_vec(vec![-100i64; n], &[n], dev)?;
        let loss = logits.cross_entropy(&targets, Some(-100), smoothing)?;
        assert_eq!(loss.shape(), &[] as &[usize], "n = {n}: the loss is a scalar");
        assert_eq!(loss.to_vec_f64()?, vec![0.0], "n = {n}, smoothing {smoothing}");
        loss.backward()?;
        let g = logits.grad().expect("the all-ignored loss keeps its graph");
        assert_eq!(g.shape(), &[n, 0]);
    }
    // the same as with classes: every target ignored gives 0 there too
    let logits = Tensor::from_f64s(&[0.3, -1.0, 2.0], &[1, 3], DType::F64, dev)?;
    let t = Tensor::from_vec(vec![-100i64], &[1], dev)?;
    assert_eq!(logits.cross_entropy(&t, Some(-100), 1.0)?.to_vec_f64()?, vec![0.0]);
    let empty = Tensor::zeros(&[1, 0], DType::F64, dev)?;
    let kept = Tensor::from_vec(vec![0i64], &[1], dev)?;
    expect_err(
        "cross_entropy over zero classes with a kept target",
        empty.cross_entropy(&kept, Some(-100), 1.0),
        "cross_entropy",
        &["out of range"],
    );
    Ok(())
}
