//! Autograd semantics: accumulation and `zero_grad`, `no_grad`, `detach`,
//! `backward_with`, the errors of misused backward, graph release, anomaly mode,
//! the public custom-op API, dropout masks, seeded RNG, and that the suite's
//! gradcheck tolerances do catch a slightly wrong gradient.

use crate::util::{assert_close, check_grad, randn, same_storage, tight, uniform, Tol};
use std::slice::from_ref;
use unigrad_core::custom::{apply, CustomOp};
use unigrad_core::gradcheck::gradcheck;
use unigrad_core::{manual_seed, no_grad, DType, Device, Error, Generator, NoGradGuard, Result, Rng, Tensor};

fn exact() -> Tol {
    Tol {
        rtol: 1e-14,
        atol: 1e-14,
    }
}

/// Gradients accumulate over two backward calls until `zero_grad`; `set_grad`
/// replaces them; a leaf used twice in one op gets both contributions.
pub fn accumulation(dev: &Device) -> Result<()> {
    let x = randn(dev, &[2, 3])?.requires_grad();
    let xv = x.to_vec_f64()?;
    let twice: Vec<f64> = xv.iter().map(|v| 2.0 * v).collect();
    assert!(x.grad().is_none(), "no gradient before any backward");
    x.mul(&x)?.sum_all()?.backward()?;
    assert_close(
        "first backward",
        &x.grad().expect("grad").to_vec_f64()?,
        &twice,
        exact(),
    );
    x.mul(&x)?.sum_all()?.backward()?;
    let four: Vec<f64> = xv.iter().map(|v| 4.0 * v).collect();
    assert_close("accumulated", &x.grad().expect("grad").to_vec_f64()?, &four, exact());
    x.zero_grad();
    assert!(x.grad().is_none(), "zero_grad clears");
    x.sum_all()?.backward()?;
    assert_eq!(x.grad().expect("grad").to_vec_f64()?, vec![1.0; 6]);
    x.set_grad(Some(Tensor::full(&[2, 3], 0.5, DType::F64, dev)?))?;
    x.sum_all()?.backward()?;
    assert_eq!(x.grad().expect("grad").to_vec_f64()?, vec![1.5; 6]);
    x.set_grad(None)?;
    assert!(x.grad().is_none());
    // a leaf as the root of backward
    let s = Tensor::scalar(3.0, DType::F64, dev)?.requires_grad();
    s.backward()?;
    assert_eq!(s.grad().expect("grad").to_scalar()?, 1.0);
    // gradients keep the leaf's dtype (f32 leaf through an f64 computation)
    let h = Tensor::randn(&[3], DType::F32, dev)?.requires_grad();
    h.to_dtype(DType::F64)?.mul_scalar(3.0)?.sum_all()?.backward()?;
    let g = h.grad().expect("grad");
    assert_eq!(g.dtype(), DType::F32);
    assert_eq!(g.to_vec_f64()?, vec![3.0; 3]);
    Ok(())
}

/// A diamond graph (one intermediate used by several consumers) and a leaf reached
/// through views: gradients from all paths add up.
pub fn shared_subgraphs(dev: &Device) -> Result<()> {
    let x = randn(dev, &[3, 4])?.requires_grad();
    let y = x.exp()?;
    let z = y.mul(&y)?.add(&y)?.add(&y.t()?.t()?)?.sum_all()?;
    z.backward()?;
    let want: Vec<f64> = x
        .to_vec_f64()?
        .iter()
        .map(|v| 2.0 * (2.0 * v).exp() + 2.0 * v.exp())
        .collect();
    assert_close(
        "diamond",
        &x.grad().expect("grad").to_vec_f64()?,
        &want,
        Tol {
            rtol: 1e-13,
            atol: 1e-13,
        },
    );
    // max with ties splits the gradient evenly between the tied elements
    let m = Tensor::from_f64s(&[1.0, 3.0, 3.0, 2.0, 5.0, 5.0, 5.0, 0.0], &[2, 4], DType::F64, dev)?.requires_grad();
    m.max(&[1], false)?.sum_all()?.backward()?;
    let g = m.grad().expect("grad").to_vec_f64()?;
    assert_close(
        "max ties",
        &g,
        &[0.0, 0.5, 0.5, 0.0, 1. / 3., 1. / 3., 1. / 3., 0.0],
        exact(),
    );
    Ok(())
}

/// Long chains of ops: dropping a 100,000-op graph that backward never consumed
/// does not overflow the stack (regression: the recursive drop aborted the process),
/// and backward through such a chain is iterative too.
pub fn long_chains(dev: &Device) -> Result<()> {
    let n = 100_000;
    let w = Tensor::scalar(0.5, DType::F64, dev)?.requires_grad();
    let mut t = w.clone();
    for _ in 0..n {
        t = t.add_scalar(1e-6)?;
    }
    assert!((t.to_scalar()? - (0.5 + 1e-6 * n as f64)).abs() < 1e-9);
    drop(t); // never backpropagated: the whole graph is released here
    let mut t = w.mul_scalar(1.0)?;
    for _ in 0..n {
        t = t.add(&w)?;
    }
    t.backward()?;
    assert_eq!(w.grad().expect("grad").to_scalar()?, n as f64 + 1.0);
    Ok(())
}

/// `no_grad` (closure and guard, nested) produces untracked tensors whose backward
/// is an error; `detach` shares storage and stops gradients.
pub fn no_grad_and_detach(dev: &Device) -> Result<()> {
    let x = randn(dev, &[2, 2])?.requires_grad();
    assert!(x.tracks_grad() && x.is_grad_leaf());
    let y = no_grad(|| x.mul_scalar(2.0)?.exp())?;
    assert!(!y.tracks_grad(), "no_grad result is untracked");
    assert!(matches!(
        y.sum_all()?.backward(),
        Err(Error::InvalidArgument { op: "backward", .. })
    ));
    {
        let _g = NoGradGuard::new();
        let _inner = NoGradGuard::new();
        assert!(!unigrad_core::is_grad_enabled());
        drop(_inner);
        assert!(!unigrad_core::is_grad_enabled(), "nested guard keeps recording off");
        assert!(!x.add(&x)?.tracks_grad());
    }
    assert!(unigrad_core::is_grad_enabled());
    assert!(x.add(&x)?.tracks_grad(), "recording resumes after the guard");
    // ops on untracked inputs are untracked
    assert!(!randn(dev, &[2])?.exp()?.tracks_grad());
    // detach
    let d = x.detach();
    assert!(!d.tracks_grad() && !d.is_grad_leaf());
    assert!(same_storage(&d, &x), "detach shares storage");
    x.mul(&x.detach())?.sum_all()?.backward()?;
    assert_eq!(
        x.grad().expect("grad").to_vec_f64()?,
        x.to_vec_f64()?,
        "no gradient through detach"
    );
    Ok(())
}

/// `backward_with` on a non-scalar output; `backward` on a non-scalar without an
/// upstream gradient is `BackwardNonScalar`; a released graph is `GraphReleased`.
pub fn backward_errors(dev: &Device) -> Result<()> {
    let x = randn(dev, &[2, 3])?.requires_grad();
    let y = x.mul_scalar(3.0)?.t()?;
    let g = randn(dev, &[3, 2])?;
    y.backward_with(&g)?;
    let want: Vec<f64> = g.t()?.to_vec_f64()?.iter().map(|v| 3.0 * v).collect();
    assert_close("backward_with", &x.grad().expect("grad").to_vec_f64()?, &want, exact());
    // wrong upstream shape / dtype
    let y = x.mul_scalar(3.0)?;
    match y.backward_with(&randn(dev, &[3, 2])?) {
        Err(Error::ShapeMismatch {
            op: "backward_with",
            lhs,
            rhs,
        }) => {
            assert_eq!((lhs, rhs), (vec![2, 3], vec![3, 2]))
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    let g32 = Tensor::ones(&[2, 3], DType::F32, dev)?;
    assert!(matches!(
        y.backward_with(&g32),
        Err(Error::DTypeMismatch {
            op: "backward_with",
            ..
        })
    ));
    // non-scalar without gradient
    match y.backward() {
        Err(Error::BackwardNonScalar { shape }) => assert_eq!(shape, vec![2, 3]),
        other => panic!("expected BackwardNonScalar, got {other:?}"),
    }
    // a second backward through the same graph
    let x = randn(dev, &[3])?.requires_grad();
    let h = x.exp()?;
    let loss = h.sum_all()?;
    loss.backward()?;
    match loss.backward() {
        Err(e @ Error::GraphReleased { .. }) => assert!(e.to_string().contains("recompute"), "{e}"),
        other => panic!("expected GraphReleased, got {other:?}"),
    }
    // a new loss reusing an intermediate whose graph was consumed
    match h.mul_scalar(2.0)?.sum_all()?.backward() {
        Err(Error::GraphReleased { op }) => assert_eq!(op, "exp"),
        other => panic!("expected GraphReleased from exp, got {other:?}"),
    }
    // the gradient of the successful backward is intact
    assert_close(
        "after release",
        &x.grad().expect("grad").to_vec_f64()?,
        &h.to_vec_f64()?,
        exact(),
    );
    Ok(())
}

/// Restores anomaly mode to off even when an assertion fails.
struct AnomalyOn;

impl AnomalyOn {
    fn new() -> AnomalyOn {
        unigrad_core::set_anomaly_detection(true);
        AnomalyOn
    }
}

impl Drop for AnomalyOn {
    fn drop(&mut self) {
        unigrad_core::set_anomaly_detection(false);
    }
}

/// Anomaly mode names the first op whose forward output (log of a negative) or
/// backward gradient (sqrt at 0: infinite slope) is not finite. Off, the same
/// computations silently produce NaN / Inf. Runs exclusively: the switch is
/// process-wide.
pub fn anomaly_mode(dev: &Device) -> Result<()> {
    let x = Tensor::from_f64s(&[1.0, -1.0, 2.0], &[3], DType::F64, dev)?.requires_grad();
    let quiet = x.mul_scalar(2.0)?.log()?.exp()?;
    assert!(
        quiet.to_vec_f64()?[1].is_nan(),
        "without anomaly mode NaN passes silently"
    );
    let z = Tensor::from_f64s(&[0.0, 4.0], &[2], DType::F64, dev)?.requires_grad();
    z.sqrt()?.sum_all()?.backward()?;
    assert!(z.grad().expect("grad").to_vec_f64()?[0].is_infinite());
    z.zero_grad();
    {
        let _on = AnomalyOn::new();
        assert!(unigrad_core::anomaly_detection());
        // forward: the affine op is fine, the log of a negative is named (and stops
        // the computation before exp would propagate the NaN)
        match x.mul_scalar(2.0)?.log().and_then(|t| t.exp()) {
            Err(Error::Anomaly { op, phase, detail }) => {
                assert_eq!((op.as_str(), phase), ("log", "forward"), "{detail}");
            }
            other => panic!("expected a forward anomaly in log, got {other:?}"),
        }
        // backward: sqrt at 0 is finite forward, infinite slope backward
        let loss = z.sqrt()?.mul_scalar(2.0)?.sum_all()?;
        match loss.backward() {
            Err(e @ Error::Anomaly { .. }) => {
                let Error::Anomaly { op, phase, .. } = &e else {
                    unreachable!()
                };
                assert_eq!((op.as_str(), *phase), ("sqrt", "backward"), "{e}");
                assert!(e.to_string().contains("sqrt"), "{e}");
            }
            other => panic!("expected a backward anomaly in sqrt, got {other:?}"),
        }
        // a clean computation is unaffected
        let w = randn(dev, &[3])?.requires_grad();
        w.exp()?.sum_all()?.backward()?;
        assert!(w.grad().is_some());
    }
    assert!(!unigrad_core::anomaly_detection());
    Ok(())
}

/// `y = x³` with a hand-written backward (the custom-op API's doc example).
struct Cube {
    x: Option<Tensor>,
    /// Multiplies the gradient: 1 for the correct op, else a deliberately wrong one.
    error: f64,
}

impl CustomOp for Cube {
    fn name(&self) -> String {
        "cube".into()
    }
    fn forward(&mut self, inputs: &[Tensor]) -> Result<Tensor> {
        self.x = Some(inputs[0].clone());
        inputs[0].powf(3.0)
    }
    fn backward(self: Box<Self>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = self.x.expect("forward ran");
        Ok(vec![Some(g.mul(&x.sqr()?.mul_scalar(3.0 * self.error)?)?)])
    }
}

/// `y = a·softplus(x) + b` over broadcasting `a`, `b`, with the gradient of the
/// constant-like input `bias_ids` (not differentiable) returned as `None`.
struct ScaledSoftplus {
    saved: Option<(Tensor, Tensor)>,
}

impl CustomOp for ScaledSoftplus {
    fn name(&self) -> String {
        "scaled_softplus".into()
    }
    fn forward(&mut self, inputs: &[Tensor]) -> Result<Tensor> {
        let (x, a, b) = (&inputs[0], &inputs[1], &inputs[2]);
        self.saved = Some((x.clone(), a.clone()));
        // softplus(x) = ln(1 + e^x)
        x.exp()?.add_scalar(1.0)?.log()?.mul(a)?.add(b)
    }
    fn backward(self: Box<Self>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (x, a) = self.saved.expect("forward ran");
        let sp = x.exp()?.add_scalar(1.0)?.log()?;
        let gx = g.mul(&a)?.mul(&x.sigmoid()?)?;
        let ga = g.mul(&sp)?.sum_to(a.shape())?;
        Ok(vec![Some(gx), Some(ga), None])
    }
}

/// Returns the wrong number of gradients.
struct BadArity;

impl CustomOp for BadArity {
    fn name(&self) -> String {
        "bad_arity".into()
    }
    fn forward(&mut self, inputs: &[Tensor]) -> Result<Tensor> {
        inputs[0].exp()
    }
    fn backward(self: Box<Self>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.clone()), None])
    }
}

/// Returns a gradient of the wrong shape.
struct BadShape;

impl CustomOp for BadShape {
    fn name(&self) -> String {
        "bad_shape".into()
    }
    fn forward(&mut self, inputs: &[Tensor]) -> Result<Tensor> {
        inputs[0].sum(&[0], false)
    }
    fn backward(self: Box<Self>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.clone())])
    }
}

/// Custom ops through the public API pass gradcheck (one and several inputs, a
/// `None` gradient, use inside a larger graph); malformed backwards are errors
/// naming the op.
pub fn custom_ops(dev: &Device) -> Result<()> {
    check_grad("custom cube", &[randn(dev, &[3, 4])?], |xs| {
        apply(Cube { x: None, error: 1.0 }, &[&xs[0]])
    })?;
    check_grad(
        "custom cube in a graph",
        &[randn(dev, &[3, 4])?, randn(dev, &[4, 2])?],
        |xs| {
            apply(Cube { x: None, error: 1.0 }, &[&xs[0].t()?])?
                .tanh()?
                .t()?
                .matmul(&xs[1])
        },
    )?;
    let no_grad_input = randn(dev, &[4])?;
    check_grad(
        "custom scaled_softplus",
        &[randn(dev, &[3, 4])?, uniform(dev, &[4], 0.5, 2.0)?],
        |xs| apply(ScaledSoftplus { saved: None }, &[&xs[0], &xs[1], &no_grad_input]),
    )?;
    // the custom node is recorded under its name
    let x = randn(dev, &[3])?.requires_grad();
    let y = apply(Cube { x: None, error: 1.0 }, &[&x])?;
    assert!(y.tracks_grad());
    assert!(format!("{y:?}").contains("op=cube"), "{y:?}");
    // outside a grad context nothing is recorded
    assert!(!apply(Cube { x: None, error: 1.0 }, &[&randn(dev, &[2])?])?.tracks_grad());
    // malformed backwards
    let x = randn(dev, &[2, 3])?.requires_grad();
    let e = apply(BadArity, &[&x])?.sum_all()?.backward().expect_err("arity");
    assert!(e.to_string().contains("bad_arity"), "{e}");
    let e = apply(BadShape, &[&x])?.sum_all()?.backward().expect_err("shape");
    assert!(
        e.to_string().contains("bad_shape") && e.to_string().contains("[2, 3]"),
        "{e}"
    );
    Ok(())
}

/// The suite's tolerances are tight: a gradient wrong by 0.1 % fails gradcheck.
pub fn gradcheck_catches_wrong_gradient(dev: &Device) -> Result<()> {
    let x = uniform(dev, &[3, 4], 0.5, 1.5)?;
    for error in [1.001, 0.999, -1.0] {
        let report = gradcheck(|xs| apply(Cube { x: None, error }, &[&xs[0]]), from_ref(&x), &tight())?;
        assert!(!report.passed(), "gradient scaled by {error} must fail: {report:?}");
    }
    let report = gradcheck(|xs| apply(Cube { x: None, error: 1.0 }, &[&xs[0]]), &[x], &tight())?;
    assert!(report.passed(), "{report:?}");
    Ok(())
}

/// Dropout: the gradient equals the mask scaled by `1/(1−p)` exactly where the
/// output is non-zero; the kept fraction is close to `1−p`; the same seed gives the
/// same mask; eval mode and `p = 0` are the identity (no copy).
pub fn dropout(dev: &Device) -> Result<()> {
    let p = 0.3;
    let scale = 1.0 / (1.0 - p);
    let x = uniform(dev, &[50, 40], 0.5, 1.5)?.requires_grad();
    manual_seed(77);
    let y = x.dropout(p, true)?;
    y.backward_with(&Tensor::ones(&[50, 40], DType::F64, dev)?)?;
    let (yv, xv) = (y.to_vec_f64()?, x.to_vec_f64()?);
    let g = x.grad().expect("grad").to_vec_f64()?;
    let mut kept = 0usize;
    for i in 0..yv.len() {
        if yv[i] == 0.0 {
            assert_eq!(g[i], 0.0, "dropped element {i} has zero gradient");
        } else {
            kept += 1;
            assert!((g[i] - scale).abs() < 1e-12, "kept element {i}: gradient {}", g[i]);
            assert!((yv[i] - xv[i] * scale).abs() < 1e-12, "kept element {i} is scaled");
        }
    }
    let frac = kept as f64 / yv.len() as f64;
    assert!((frac - (1.0 - p)).abs() < 0.03, "kept fraction {frac}");
    // seeded determinism
    manual_seed(77);
    let y2 = x.detach().dropout(p, true)?;
    assert_eq!(y2.to_vec_f64()?, yv, "same seed, same mask");
    let y3 = x.detach().dropout(p, true)?;
    assert_ne!(y3.to_vec_f64()?, yv, "the generator advances");
    // identity cases share storage
    assert!(same_storage(&x.dropout(p, false)?, &x));
    assert!(same_storage(&x.dropout(0.0, true)?, &x));
    Ok(())
}

/// Seeded RNG: same seed, same tensors (also across devices: numbers are drawn on
/// the host); different seeds differ; uniform and bernoulli respect their ranges.
pub fn rng_determinism(dev: &Device) -> Result<()> {
    let cpu = unigrad_cpu::cpu();
    manual_seed(2024);
    let a = Tensor::randn(&[5, 7], DType::F64, dev)?;
    let u = Tensor::rand_uniform(&[100], -2.0, 3.0, DType::F32, dev)?;
    let b = Tensor::bernoulli(&[1000], 0.25, DType::F64, dev)?;
    manual_seed(2024);
    let a2 = Tensor::randn(&[5, 7], DType::F64, &cpu)?;
    let u2 = Tensor::rand_uniform(&[100], -2.0, 3.0, DType::F32, &cpu)?;
    let b2 = Tensor::bernoulli(&[1000], 0.25, DType::F64, &cpu)?;
    assert_eq!(a.to_vec_f64()?, a2.to_vec_f64()?);
    assert_eq!(u.to_vec_f64()?, u2.to_vec_f64()?);
    assert_eq!(b.to_vec_f64()?, b2.to_vec_f64()?);
    manual_seed(2025);
    assert_ne!(Tensor::randn(&[5, 7], DType::F64, dev)?.to_vec_f64()?, a.to_vec_f64()?);
    assert!(u.to_vec_f64()?.iter().all(|&v| (-2.0..=3.0).contains(&v)));
    let bv = b.to_vec_f64()?;
    assert!(bv.iter().all(|&v| v == 0.0 || v == 1.0));
    let ones = bv.iter().sum::<f64>() / 1000.0;
    assert!((ones - 0.25).abs() < 0.05, "bernoulli mean {ones}");
    // explicit generators: the same seed gives the same tensors on another thread and
    // device, and a generator advances
    let mut g = Generator::new(11);
    let e1 = Tensor::randn_with(&[4, 3], DType::F64, dev, &mut g)?.to_vec_f64()?;
    let e2 = Tensor::rand_uniform_with(&[6], -1.0, 1.0, DType::F64, dev, &mut g)?.to_vec_f64()?;
    let e3 = Tensor::bernoulli_with(&[50], 0.5, DType::F64, dev, &mut g)?.to_vec_f64()?;
    let (f1, f2, f3) = std::thread::spawn(move || -> Result<_> {
        let cpu = unigrad_cpu::cpu();
        let mut g = Generator::new(11);
        Ok((
            Tensor::randn_with(&[4, 3], DType::F64, &cpu, &mut g)?.to_vec_f64()?,
            Tensor::rand_uniform_with(&[6], -1.0, 1.0, DType::F64, &cpu, &mut g)?.to_vec_f64()?,
            Tensor::bernoulli_with(&[50], 0.5, DType::F64, &cpu, &mut g)?.to_vec_f64()?,
        ))
    })
    .join()
    .expect("thread")?;
    assert_eq!((&e1, &e2, &e3), (&f1, &f2, &f3));
    assert_ne!(Tensor::randn_with(&[4, 3], DType::F64, dev, &mut g)?.to_vec_f64()?, e1);
    // the generator itself is reproducible and roughly standard normal
    let (mut r1, mut r2) = (Rng::new(5), Rng::new(5));
    let s1: Vec<u64> = (0..8).map(|_| r1.next_u64()).collect();
    let s2: Vec<u64> = (0..8).map(|_| r2.next_u64()).collect();
    assert_eq!(s1, s2);
    let n: Vec<f64> = (0..20000).map(|_| r1.normal()).collect();
    let mean = n.iter().sum::<f64>() / n.len() as f64;
    let var = n.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n.len() as f64;
    assert!(
        mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
        "normal: mean {mean} var {var}"
    );
    assert!((0..1000).all(|_| r1.below(7) < 7));
    Ok(())
}

/// `to_device` to and from the CPU keeps values, and the gradient moves back; on
/// the CPU itself it is the identity.
pub fn device_moves(dev: &Device) -> Result<()> {
    let cpu = unigrad_cpu::cpu();
    let x = randn(dev, &[3, 4])?.requires_grad();
    let on_cpu = x.t()?.to_device(&cpu)?;
    assert!(on_cpu.device().same(&cpu));
    assert_eq!(on_cpu.to_vec_f64()?, x.t()?.to_vec_f64()?);
    on_cpu.mul_scalar(2.0)?.sum_all()?.backward()?;
    let g = x.grad().expect("grad");
    assert!(g.device().same(dev), "gradient lives on the leaf's device");
    assert_eq!(g.to_vec_f64()?, vec![2.0; 12]);
    let back = Tensor::ones(&[2], DType::F32, &cpu)?.to_device(dev)?;
    assert!(back.device().same(dev));
    assert_eq!(back.to_vec_f64()?, vec![1.0; 2]);
    Ok(())
}
