//! Gradient checks of Unified Normalization and PowerNorm (ALGORITHMS.md §1.6 and §2.6 in
//! `tests/data/fixtures/`), plus their state handling and input checks.
//!
//! UN's calibrated backward equals the exact gradient only in specific situations (no
//! padding, and `r = 1`, `v = q`, `d = g − h ⊙ z`: every skipped step, every step with a
//! forward window of 1, and `μ = 0` inside warm-up). There the standard gradcheck passes;
//! elsewhere it must fail — the calibration is deliberate. The exact variant
//! (`calibrated_backward: false`) passes everywhere. PowerNorm's backward is never exact;
//! the checks show the predicted difference and check the group-scaling chain rule.
//!
//! Every training forward advances the layer's state, so each gradcheck closure restores a
//! snapshot before running the forward. Inputs come from fixed seeds, so they are the same
//! on every backend.

use unigrad_core::gradcheck::{gradcheck, GradcheckOptions, GradcheckReport};
use unigrad_core::{no_grad, DType, Device, Result, Rng, Tensor};
use unigrad_nn::norm::power::{group_scale, PnConfig, PowerNorm};
use unigrad_nn::norm::unified::{UnConfig, UnState, UnifiedNorm};
use unigrad_nn::Module;

const F64: DType = DType::F64;

fn seeded(dev: &Device, shape: &[usize], seed: u64, scale: f64) -> Tensor {
    let mut r = Rng::new(seed);
    let n = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| scale * r.normal()).collect();
    Tensor::from_f64s(&v, shape, F64, dev).unwrap()
}

fn seeded_uniform(dev: &Device, shape: &[usize], seed: u64, lo: f64, hi: f64) -> Tensor {
    let mut r = Rng::new(seed);
    let n = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| lo + (hi - lo) * r.uniform()).collect();
    Tensor::from_f64s(&v, shape, F64, dev).unwrap()
}

/// Right-padding mask `[B, N]` (1 = pad) with the given valid lengths.
fn right_mask(dev: &Device, lens: &[usize], n: usize) -> Tensor {
    let v: Vec<f64> = lens
        .iter()
        .flat_map(|&l| (0..n).map(move |j| if j < l { 0.0 } else { 1.0 }))
        .collect();
    Tensor::from_f64s(&v, &[lens.len(), n], F64, dev).unwrap()
}

fn un(dev: &Device, cfg: UnConfig, c: usize) -> UnifiedNorm {
    UnifiedNorm::new(c, cfg, F64, dev).unwrap()
}

fn opts() -> GradcheckOptions {
    GradcheckOptions::default()
}

const B: usize = 3;
const N: usize = 4;
const C: usize = 5;

/// Inputs `[x, γ, β]` for a gradcheck.
fn inputs(dev: &Device, seed: u64, x_scale: f64) -> Vec<Tensor> {
    vec![
        seeded(dev, &[B, N, C], seed, x_scale),
        seeded_uniform(dev, &[C], seed + 1, 0.5, 1.5),
        seeded(dev, &[C], seed + 2, 0.3),
    ]
}

/// Run `steps` training steps (forward + calibrated backward) on random data.
fn advance(dev: &Device, norm: &UnifiedNorm, steps: usize, seed: u64) {
    for s in 0..steps {
        let x = seeded(dev, &[B, N, C], seed + 100 * s as u64, 1.0);
        let gy = seeded(dev, &[B, N, C], seed + 100 * s as u64 + 7, 1.0);
        let y = norm.forward(&x.requires_grad(), None).unwrap();
        y.backward_with(&gy).unwrap();
    }
    norm.zero_grad();
}

fn with_iters(dev: &Device, s: &UnState, iters: i64) -> UnState {
    UnState {
        iters: Tensor::from_vec(vec![iters], &[1], dev).unwrap(),
        ..s.clone()
    }
}

/// Gradcheck of a training step `forward(x, γ, β)` from a fixed state: `restore` puts the
/// state back before every forward and once at the end.
fn check_from_state(
    restore: impl Fn() -> Result<()>,
    forward: impl Fn(&[Tensor]) -> Result<Tensor>,
    xs: &[Tensor],
) -> GradcheckReport {
    let f = |t: &[Tensor]| -> Result<Tensor> {
        restore()?;
        forward(t)
    };
    let rep = gradcheck(f, xs, &opts()).unwrap();
    restore().unwrap();
    rep
}

/// Gradcheck of UN's training step from its current state.
fn un_check(norm: &UnifiedNorm, xs: &[Tensor], mask: Option<&Tensor>) -> GradcheckReport {
    let snap = norm.state();
    let f = |t: &[Tensor]| norm.forward_with_params(&t[0], &t[1], &t[2], mask);
    check_from_state(|| norm.set_state(&snap), f, xs)
}

fn errs(rep: &GradcheckReport) -> String {
    let e: Vec<String> = rep.inputs.iter().map(|r| format!("{:.1e}", r.max_abs_err)).collect();
    e.join(" / ")
}

fn assert_pass(rep: &GradcheckReport, what: &str) {
    println!("{what}: passes, max |analytic − numeric| (x / γ / β) {}", errs(rep));
    assert!(rep.passed(), "{what}: gradcheck should pass: {rep:?}");
}

/// The calibrated backward differs in x by more than `min_err` (so the difference is
/// the design, not noise); γ and β may or may not differ (`gamma_exact`).
fn assert_x_differs(rep: &GradcheckReport, min_err: f64, gamma_exact: bool, what: &str) {
    println!("{what}: differs, max |analytic − numeric| (x / γ / β) {}", errs(rep));
    assert!(!rep.inputs[0].passed, "{what}: x gradient should differ: {rep:?}");
    assert!(
        rep.inputs[0].max_abs_err > min_err,
        "{what}: x gradient differs by only {}",
        rep.inputs[0].max_abs_err
    );
    assert_eq!(rep.inputs[1].passed, gamma_exact, "{what}: γ gradient: {rep:?}");
    assert!(rep.inputs[2].passed, "{what}: β gradient is always exact: {rep:?}");
}

fn mu0_warmup() -> UnConfig {
    UnConfig {
        momentum: 0.0,
        warmup_iters: 5000,
        ..UnConfig::default()
    }
}

// ----- UN: where the calibrated backward is exact ---------------------------------------

/// With momentum 0 inside warm-up the calibrated backward is exact at the first step.
pub fn un_exact_mu0_in_warmup_first_step(dev: &Device) -> Result<()> {
    let norm = un(dev, mu0_warmup(), C);
    let rep = un_check(&norm, &inputs(dev, 1, 1.0), None);
    assert_pass(&rep, "μ=0, warm-up, i=1");
    assert_eq!(norm.last_step().unwrap().iteration, 1);
    Ok(())
}

/// ... and at later warm-up steps, also past iteration 1000 inside a long warm-up (`r` stays 1).
pub fn un_exact_mu0_in_warmup_later_steps(dev: &Device) -> Result<()> {
    let norm = un(dev, mu0_warmup(), C);
    advance(dev, &norm, 5, 10);
    assert_pass(&un_check(&norm, &inputs(dev, 2, 1.0), None), "μ=0, warm-up, i=6");
    assert_eq!(norm.last_step().unwrap().iteration, 6);
    // Past iteration 1000 but still inside a long warm-up (W = 5000): r stays 1.
    norm.set_state(&with_iters(dev, &norm.state(), 1200)).unwrap();
    assert_pass(&un_check(&norm, &inputs(dev, 3, 1.0), None), "μ=0, warm-up, i=1201");
    let step = norm.last_step().unwrap();
    assert_eq!(step.iteration, 1201);
    assert!(!step.smoothed);
    Ok(())
}

/// A forward window of 1 makes every step an uncounted skip: exact for any momentum.
pub fn un_exact_window1_any_momentum(dev: &Device) -> Result<()> {
    let cfg = UnConfig {
        warmup_iters: 3,
        ..UnConfig::default().with_window(1)
    };
    let norm = un(dev, cfg, C);
    advance(dev, &norm, 6, 20);
    norm.set_state(&with_iters(dev, &norm.state(), 1005)).unwrap();
    assert_pass(&un_check(&norm, &inputs(dev, 4, 1.0), None), "window 1, μ=0.9, i=1006");
    let step = norm.last_step().unwrap();
    assert!(
        step.treated_as_skip && !step.skipped,
        "window 1 behaves as an uncounted skip"
    );

    let norm = un(dev, UnConfig::default().with_window((1, 3)), C);
    advance(dev, &norm, 4, 30);
    assert_pass(&un_check(&norm, &inputs(dev, 5, 1.0), None), "window (1, 3), μ=0.9");
    Ok(())
}

fn filtering() -> UnConfig {
    UnConfig {
        warmup_iters: 8,
        outlier_filtration: true,
        ..UnConfig::default()
    }
}

/// The base batch of the "settled" runs.
fn base_x(dev: &Device) -> Tensor {
    seeded(dev, &[B, N, C], 40, 1.0)
}

/// Bring a layer past iteration 1000 with a settled buffer: 12 steps on the base batch
/// with small scale changes (so the outlier filter stays quiet), then the counter is set
/// to 1005. The next call is iteration 1006, where r may differ from 1.
fn settle(dev: &Device, norm: &UnifiedNorm) {
    for s in 0..12u64 {
        let x = base_x(dev).mul_scalar(1.0 + 0.02 * ((s % 3) as f64 - 1.0)).unwrap();
        let y = norm.forward(&x.requires_grad(), None).unwrap();
        y.backward_with(&seeded(dev, &[B, N, C], 41 + s, 1.0)).unwrap();
    }
    norm.zero_grad();
    assert_eq!(norm.skip_count().unwrap(), 0);
    norm.set_state(&with_iters(dev, &norm.state(), 1005)).unwrap();
}

/// `[x, γ, β]` with x the base batch times `scale`.
fn settled_inputs(dev: &Device, scale: f64) -> Vec<Tensor> {
    let mut xs = inputs(dev, 12, 1.0);
    xs[0] = base_x(dev).mul_scalar(scale).unwrap();
    xs
}

fn settled_filtering_layer(dev: &Device) -> UnifiedNorm {
    let norm = un(dev, filtering(), C);
    settle(dev, &norm);
    norm
}

/// A step the outlier filter skips is exact, and a real step counts the skip.
pub fn un_exact_on_skipped_outlier_step(dev: &Device) -> Result<()> {
    let norm = settled_filtering_layer(dev);
    let skips = norm.skip_count().unwrap();
    let rep = un_check(&norm, &settled_inputs(dev, 50.0), None);
    let step = norm.last_step().unwrap();
    assert!(step.skipped, "the x50 batch must be filtered");
    assert_eq!(step.iteration, 1006);
    assert_pass(&rep, "outlier-skipped step, μ=0.9, i=1006");
    // un_check restored the snapshot; one real step counts the skip.
    norm.forward(&settled_inputs(dev, 50.0)[0], None).unwrap();
    assert_eq!(norm.skip_count().unwrap(), skips + 1);
    Ok(())
}

// ----- UN: where it deliberately differs ----------------------------------------------

/// Momentum inside warm-up: the x gradient deliberately differs (γ and β are exact).
pub fn un_differs_with_momentum_in_warmup(dev: &Device) -> Result<()> {
    let norm = un(
        dev,
        UnConfig {
            warmup_iters: 5000,
            ..UnConfig::default()
        },
        C,
    );
    assert_x_differs(&un_check(&norm, &inputs(dev, 7, 1.0), None), 1e-2, true, "μ=0.9, i=1");
    advance(dev, &norm, 5, 50);
    assert_x_differs(&un_check(&norm, &inputs(dev, 8, 1.0), None), 1e-2, true, "μ=0.9, i=6");
    Ok(())
}

/// Padding: the backward averages over all positions, so the x gradient differs.
pub fn un_differs_with_padding(dev: &Device) -> Result<()> {
    let mask = right_mask(dev, &[4, 2, 3], N);
    let norm = un(dev, mu0_warmup(), C);
    assert_x_differs(
        &un_check(&norm, &inputs(dev, 9, 1.0), Some(&mask)),
        1e-2,
        true,
        "μ=0 with mask",
    );
    let norm = un(
        dev,
        UnConfig {
            warmup_iters: 3,
            ..UnConfig::default().with_window(1)
        },
        C,
    );
    assert_x_differs(
        &un_check(&norm, &inputs(dev, 10, 1.0), Some(&mask)),
        1e-2,
        true,
        "window 1 with mask",
    );
    Ok(())
}

/// The window-smoothed statistic: the x gradient differs.
pub fn un_differs_with_smoothing(dev: &Device) -> Result<()> {
    let cfg = UnConfig {
        momentum: 0.0,
        warmup_iters: 3,
        ..UnConfig::default()
    };
    let norm = un(dev, cfg, C);
    advance(dev, &norm, 10, 60);
    let rep = un_check(&norm, &inputs(dev, 11, 1.0), None);
    let step = norm.last_step().unwrap();
    assert!(step.smoothed && step.iteration == 11);
    assert_x_differs(&rep, 1e-2, true, "μ=0, smoothing active, i=11");
    Ok(())
}

/// A normal step after iteration 1000 (`r ≠ 1`): the x and γ gradients differ.
pub fn un_differs_on_normal_step_after_1000(dev: &Device) -> Result<()> {
    let norm = settled_filtering_layer(dev);
    let rep = un_check(&norm, &settled_inputs(dev, 1.1), None);
    let step = norm.last_step().unwrap();
    assert!(!step.treated_as_skip && step.smoothed);
    let r = step.r.to_vec_f64().unwrap();
    assert!(r.iter().any(|&v| (v - 1.0).abs() > 1e-3), "r = {r:?}");
    // r scales the γ gradient too, so γ differs as well.
    assert_x_differs(&rep, 1e-2, false, "normal step, i=1006");
    Ok(())
}

/// `r_clamp` (an ablation switch): `None` leaves `r` raw, other bounds clamp it there,
/// `Some((1, 1))` fixes it at 1, and the default is the reference's [0.2, 5]. The gradient
/// follows `r`: with `r` fixed at 1 the x gradient changes. Bad bounds are rejected.
pub fn un_r_clamp_switch(dev: &Device) -> Result<()> {
    let step_with = |r_clamp: Option<(f64, f64)>| {
        let norm = un(dev, UnConfig { r_clamp, ..filtering() }, C);
        settle(dev, &norm);
        let x = settled_inputs(dev, 1.1)[0].clone().requires_grad();
        let y = norm.forward(&x, None).unwrap();
        y.backward_with(&seeded(dev, &[B, N, C], 98, 1.0)).unwrap();
        let step = norm.last_step().unwrap();
        assert!(!step.treated_as_skip && step.smoothed && step.iteration == 1006);
        (step.r.to_vec_f64().unwrap(), x.grad().unwrap().to_vec_f64().unwrap())
    };
    let (raw, _) = step_with(None);
    let (lo, hi) = raw.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    assert!(hi - lo > 1e-3, "the settled step must give distinct r values: {raw:?}");
    // the reference bounds: r = clamp(raw, 0.2, 5)
    let (r_def, g_def) = step_with(UnConfig::default().r_clamp);
    assert_eq!(UnConfig::default().r_clamp, Some((0.2, 5.0)));
    for (a, b) in r_def.iter().zip(&raw) {
        assert!((a - b.clamp(0.2, 5.0)).abs() <= 1e-12, "default clamp: {a} vs {b}");
    }
    // bounds inside the range of the raw values clamp some of them
    let (a, b) = (lo + (hi - lo) / 3.0, hi - (hi - lo) / 3.0);
    let (r_mid, _) = step_with(Some((a, b)));
    for (got, v) in r_mid.iter().zip(&raw) {
        assert!(
            (got - v.clamp(a, b)).abs() <= 1e-12,
            "clamp to [{a}, {b}]: {got} vs {v}"
        );
    }
    assert!(r_mid.iter().zip(&raw).any(|(g, v)| (g - v).abs() > 1e-6));
    // r off: every r is 1, and the x gradient differs from the default's
    let (r_off, g_off) = step_with(Some((1.0, 1.0)));
    assert!(r_off.iter().all(|&v| v == 1.0), "r off: {r_off:?}");
    let diff = g_off.iter().zip(&g_def).map(|(u, v)| (u - v).abs()).fold(0.0, f64::max);
    assert!(diff > 1e-4, "r must scale the x gradient (max diff {diff})");
    for bad in [(0.0, 1.0), (2.0, 1.0), (f64::NAN, 1.0), (0.5, f64::INFINITY)] {
        let cfg = UnConfig {
            r_clamp: Some(bad),
            ..UnConfig::default()
        };
        let Err(err) = UnifiedNorm::new(C, cfg, F64, dev) else {
            panic!("r_clamp {bad:?} must be rejected")
        };
        assert!(err.to_string().contains("r_clamp"), "{err}");
    }
    Ok(())
}

// ----- UN: the exact variant -------------------------------------------------------------

fn exact(cfg: UnConfig) -> UnConfig {
    UnConfig {
        calibrated_backward: false,
        ..cfg
    }
}

/// The exact variant (`calibrated_backward: false`) passes the gradcheck in every regime.
pub fn un_exact_variant_passes_everywhere(dev: &Device) -> Result<()> {
    let mask = right_mask(dev, &[4, 2, 3], N);
    // momentum inside warm-up, with and without padding
    let norm = un(
        dev,
        exact(UnConfig {
            warmup_iters: 5000,
            ..UnConfig::default()
        }),
        C,
    );
    assert_pass(&un_check(&norm, &inputs(dev, 13, 1.0), None), "exact: μ=0.9, i=1");
    assert_pass(&un_check(&norm, &inputs(dev, 14, 1.0), Some(&mask)), "exact: mask");
    // smoothing active (v is the geometric mean, which depends on q), with a mask
    let norm = un(
        dev,
        exact(UnConfig {
            warmup_iters: 3,
            ..UnConfig::default()
        }),
        C,
    );
    advance(dev, &norm, 10, 70);
    let rep = un_check(&norm, &inputs(dev, 15, 1.0), Some(&mask));
    assert!(norm.last_step().unwrap().smoothed);
    assert_pass(&rep, "exact: smoothing + mask");
    // past 1000 with filtering: a normal step (r != 1) and a skipped one
    let norm = un(dev, exact(filtering()), C);
    settle(dev, &norm);
    assert_pass(
        &un_check(&norm, &settled_inputs(dev, 1.1), None),
        "exact: normal step after 1000",
    );
    let step = norm.last_step().unwrap();
    assert!(!step.treated_as_skip && step.smoothed);
    assert!(step.r.to_vec_f64().unwrap().iter().any(|&v| (v - 1.0).abs() > 1e-3));
    assert_pass(
        &un_check(&norm, &settled_inputs(dev, 50.0), None),
        "exact: skipped step",
    );
    assert!(norm.last_step().unwrap().skipped);
    Ok(())
}

/// The two variants share the forward: same outputs and same forward-side state over a
/// run that passes warm-up, smoothing, a filtered outlier and iteration 1000.
pub fn un_exact_variant_has_the_same_forward(dev: &Device) -> Result<()> {
    let base = UnConfig {
        warmup_iters: 4,
        outlier_filtration: true,
        ..UnConfig::default().with_window((3, 5))
    };
    let cal = un(dev, base, C);
    let ex = un(dev, exact(base), C);
    let mask = right_mask(dev, &[4, 3, 4], N);
    for step in 0..14u64 {
        if step == 10 {
            for n in [&cal, &ex] {
                n.set_state(&with_iters(dev, &n.state(), 1000)).unwrap();
            }
        }
        let scale = if step == 8 || step == 12 { 40.0 } else { 1.0 };
        let x = seeded(dev, &[B, N, C], 500 + step, scale);
        let gy = seeded(dev, &[B, N, C], 600 + step, 1.0);
        let m = (step % 2 == 0).then_some(&mask);
        let yc = cal.forward(&x.clone().requires_grad(), m).unwrap();
        let ye = ex.forward(&x.requires_grad(), m).unwrap();
        yc.backward_with(&gy).unwrap();
        ye.backward_with(&gy).unwrap();
        assert_eq!(yc.to_vec_f64().unwrap(), ye.to_vec_f64().unwrap(), "y at step {step}");
        let (sc, se) = (cal.state(), ex.state());
        for (a, b) in [(&sc.running_var, &se.running_var), (&sc.buffer_x2, &se.buffer_x2)] {
            assert_eq!(a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap(), "state at step {step}");
        }
        assert_eq!(cal.skip_count().unwrap(), ex.skip_count().unwrap());
        assert_eq!(cal.iterations().unwrap(), ex.iterations().unwrap());
        // The exact variant never touches the backward-side buffers.
        assert!(se.ema_gz.to_vec_f64().unwrap().iter().all(|&v| v == 0.0));
    }
    assert!(cal.skip_count().unwrap() >= 1, "the run exercised a filtered outlier");
    Ok(())
}

/// Where the calibrated backward is exact, it agrees with the exact variant's autograd
/// gradient to rounding (a tighter check than finite differences).
pub fn un_calibrated_equals_autograd_where_exact(dev: &Device) -> Result<()> {
    let run = |cfg: UnConfig, warm: usize, iters: Option<i64>, xs: &[Tensor]| -> Vec<Vec<f64>> {
        let norm = un(dev, cfg, C);
        if cfg.outlier_filtration {
            settle(dev, &norm);
        } else {
            advance(dev, &norm, warm, 80);
        }
        if let Some(i) = iters {
            norm.set_state(&with_iters(dev, &norm.state(), i)).unwrap();
        }
        let (x, w, b) = (
            xs[0].clone().requires_grad(),
            xs[1].clone().requires_grad(),
            xs[2].clone().requires_grad(),
        );
        let y = norm.forward_with_params(&x, &w, &b, None).unwrap();
        y.backward_with(&seeded(dev, &[B, N, C], 99, 1.0)).unwrap();
        let step = norm.last_step().unwrap();
        assert!(step.treated_as_skip || !step.smoothed);
        assert_eq!(
            step.skipped, cfg.outlier_filtration,
            "the filtering setting is a filtered step"
        );
        [x, w, b]
            .iter()
            .map(|t| t.grad().unwrap().to_vec_f64().unwrap())
            .collect()
    };
    let settings: [(UnConfig, usize, Option<i64>); 3] = [
        (mu0_warmup(), 3, None),
        (UnConfig::default().with_window(1), 3, Some(1500)),
        (filtering(), 0, None), // settled, then an outlier batch that is skipped
    ];
    for (k, (cfg, warm, iters)) in settings.into_iter().enumerate() {
        let xs = if cfg.outlier_filtration {
            settled_inputs(dev, 50.0)
        } else {
            inputs(dev, 20 + k as u64, 1.0)
        };
        let a = run(cfg, warm, iters, &xs);
        let b = run(exact(cfg), warm, iters, &xs);
        for (ga, gb) in a.iter().zip(&b) {
            for (u, v) in ga.iter().zip(gb) {
                assert!((u - v).abs() <= 1e-12 * (1.0 + v.abs()), "setting {k}: {u} vs {v}");
            }
        }
    }
    Ok(())
}

// ----- UN: state handling ----------------------------------------------------------------

/// Buffer names, backward-side updates, a counter written from outside, `reset_iterations`, and eval mode.
pub fn un_state_names_reset_and_backward_updates(dev: &Device) -> Result<()> {
    let mut norm = un(dev, UnConfig::default(), C);
    let names: Vec<String> = norm.named_buffers().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "running_var",
            "ema_gz",
            "iters",
            "buffer_x2",
            "buffer_gz",
            "skip_counter"
        ]
    );
    let params: Vec<String> = norm.named_params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(params, ["weight", "bias"]);

    // The forward alone leaves the backward-side buffers alone; the backward updates them
    // in the module's own buffers.
    let x = seeded(dev, &[B, N, C], 1, 1.0).requires_grad();
    let y = norm.forward(&x, None).unwrap();
    assert!(norm.state().ema_gz.to_vec_f64().unwrap().iter().all(|&v| v == 0.0));
    y.backward_with(&seeded(dev, &[B, N, C], 2, 1.0)).unwrap();
    let (_, ema) = norm.named_buffers().into_iter().find(|(n, _)| n == "ema_gz").unwrap();
    assert!(ema.get().to_vec_f64().unwrap().iter().any(|&v| v != 0.0));
    assert_eq!(norm.iterations().unwrap(), 1);

    // A counter written through the buffer (as a checkpoint load does) is picked up.
    let (_, it) = norm.named_buffers().into_iter().find(|(n, _)| n == "iters").unwrap();
    it.set(Tensor::from_vec(vec![41i64], &[1], dev).unwrap());
    assert_eq!(norm.iterations().unwrap(), 41);
    norm.forward(&seeded(dev, &[B, N, C], 3, 1.0), None).unwrap();
    assert_eq!(norm.last_step().unwrap().iteration, 42);

    // reset_iterations starts a new warm-up; the statistics are kept.
    let rv = norm.state().running_var.to_vec_f64().unwrap();
    norm.reset_iterations().unwrap();
    assert_eq!(norm.iterations().unwrap(), 0);
    assert_eq!(norm.state().running_var.to_vec_f64().unwrap(), rv);
    norm.forward(&seeded(dev, &[B, N, C], 4, 1.0), None).unwrap();
    assert_eq!(norm.last_step().unwrap().iteration, 1);

    // Eval mode changes nothing and ignores the mask.
    norm.set_train(false);
    let before = norm.state();
    let x = seeded(dev, &[B, N, C], 5, 1.0);
    let a = norm.forward(&x, None).unwrap().to_vec_f64().unwrap();
    let b = norm
        .forward(&x, Some(&right_mask(dev, &[1, 2, 3], N)))
        .unwrap()
        .to_vec_f64()
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(norm.iterations().unwrap(), 1);
    assert_eq!(
        norm.state().running_var.to_vec_f64().unwrap(),
        before.running_var.to_vec_f64().unwrap()
    );
    Ok(())
}

/// A training forward under `no_grad` advances the counter but leaves the backward state alone.
pub fn un_training_forward_under_no_grad_skips_the_backward_state(dev: &Device) -> Result<()> {
    let norm = un(dev, UnConfig::default(), C);
    let y = no_grad(|| norm.forward(&seeded(dev, &[B, N, C], 1, 1.0).requires_grad(), None)).unwrap();
    assert!(!y.tracks_grad());
    assert_eq!(norm.iterations().unwrap(), 1);
    assert!(norm.state().ema_gz.to_vec_f64().unwrap().iter().all(|&v| v == 0.0));
    Ok(())
}

/// Bad inputs, masks, states and configs are errors, and rejected calls do not advance the counter.
pub fn un_rejects_bad_input(dev: &Device) -> Result<()> {
    let norm = un(dev, UnConfig::default(), C);
    let e = norm.forward(&seeded(dev, &[B, N, C + 1], 1, 1.0), None).unwrap_err();
    assert!(e.to_string().contains("UnifiedNorm"), "{e}");
    assert!(norm
        .forward(&seeded(dev, &[B, N, C], 1, 1.0), Some(&right_mask(dev, &[1, 2], N)))
        .is_err());
    let f32x = seeded(dev, &[B, N, C], 1, 1.0).to_dtype(DType::F32).unwrap();
    assert!(norm.forward(&f32x, None).is_err());
    assert!(norm
        .set_state(&UnState {
            buffer_x2: Tensor::zeros(&[3, C], F64, dev).unwrap(),
            ..norm.state()
        })
        .is_err());
    assert!(UnifiedNorm::new(C, UnConfig::default().with_window(0), F64, dev).is_err());
    assert!(UnifiedNorm::new(
        C,
        UnConfig {
            momentum: 1.5,
            ..UnConfig::default()
        },
        F64,
        dev
    )
    .is_err());
    assert!(UnifiedNorm::new(C, UnConfig::default(), DType::I64, dev).is_err());
    // Rejected calls do not advance the counter.
    assert_eq!(norm.iterations().unwrap(), 0);
    Ok(())
}

/// An `[N, C]` input takes an `[N]` mask and equals the `[1, N, C]` batch with a `[1, N]` mask.
pub fn un_two_dimensional_input_takes_a_sequence_mask(dev: &Device) -> Result<()> {
    let norm = un(dev, mu0_warmup(), C);
    let x = seeded(dev, &[N, C], 1, 1.0);
    let m1 = Tensor::from_f64s(&[0.0, 0.0, 1.0, 1.0], &[N], F64, dev).unwrap();
    let y1 = norm.forward(&x, Some(&m1)).unwrap();
    assert_eq!(y1.shape(), &[N, C]);
    // same as the [1, N, C] batch with a [1, N] mask, and an i64 mask works too
    let norm2 = un(dev, mu0_warmup(), C);
    let m2 = Tensor::from_vec(vec![0i64, 0, 1, 1], &[1, N], dev).unwrap();
    let y2 = norm2.forward(&x.unsqueeze(0).unwrap(), Some(&m2)).unwrap();
    assert_eq!(y1.to_vec_f64().unwrap(), y2.to_vec_f64().unwrap());
    Ok(())
}

// ----- PowerNorm ------------------------------------------------------------------------

fn pn(dev: &Device, cfg: PnConfig, c: usize) -> PowerNorm {
    PowerNorm::new(c, cfg, F64, dev).unwrap()
}

/// Gradcheck of PowerNorm's training step from its current state.
fn pn_check(norm: &PowerNorm, xs: &[Tensor], mask: Option<&Tensor>) -> GradcheckReport {
    let snap = norm.state();
    let f = |t: &[Tensor]| norm.forward_with_params(&t[0], &t[1], &t[2], mask);
    check_from_state(|| norm.set_state(&snap), f, xs)
}

/// The group scaling in front of PowerNorm is differentiated exactly by autograd.
pub fn group_scaling_chain_rule_is_exact(dev: &Device) -> Result<()> {
    for groups in [1, 2, 3] {
        let f = |t: &[Tensor]| group_scale(&t[0], groups);
        let rep = gradcheck(f, &[seeded(dev, &[2, 3, 6], 5 + groups as u64, 1.0)], &opts()).unwrap();
        assert_pass(&rep, &format!("group_scale, {groups} groups"));
    }
    assert!(group_scale(&seeded(dev, &[2, 5], 1, 1.0), 2).is_err());
    Ok(())
}

/// `GroupScale`'s vector-Jacobian product: ∂x for a given ∂u (P-B6), through autograd.
fn gs_vjp(x: &Tensor, groups: usize, gu: &Tensor) -> Vec<f64> {
    let leaf = x.detach().requires_grad();
    group_scale(&leaf, groups).unwrap().backward_with(gu).unwrap();
    leaf.grad().unwrap().to_vec_f64().unwrap()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// Batch quadratic mean of `u` over valid tokens, `[C]` (test-side reimplementation).
fn batch_q(u: &Tensor, mask: Option<&Tensor>) -> Tensor {
    let u2 = u.sqr().unwrap();
    match mask {
        None => u2.mean(&[0, 1], false).unwrap(),
        Some(m) => {
            let valid = m.eq_scalar(0.0).unwrap().unsqueeze(-1).unwrap();
            u2.mul(&valid)
                .unwrap()
                .sum(&[0, 1], false)
                .unwrap()
                .div(&valid.sum_all().unwrap())
                .unwrap()
        }
    }
}

/// PowerNorm's first step: the x gradient differs exactly as predicted (the dependence on `q` is ignored).
pub fn pn_first_step_ignores_the_statistic_gradient(dev: &Device) -> Result<()> {
    let cfg = PnConfig {
        warmup_iters: 5,
        group_num: 2,
        ..PnConfig::default()
    };
    let mask = right_mask(dev, &[4, 3, 2], N);
    let c = 6;
    let xs = vec![
        seeded(dev, &[B, N, c], 31, 1.0),
        seeded_uniform(dev, &[c], 32, 0.5, 1.5),
        seeded(dev, &[c], 33, 0.3),
    ];
    for m in [None, Some(&mask)] {
        // gradcheck: x differs (the forward's dependence on q is ignored), γ and β are exact.
        let norm = pn(dev, cfg, c);
        let rep = pn_check(&norm, &xs, m);
        assert_x_differs(&rep, 1e-2, true, "PowerNorm, first step");

        // The difference is exactly the predicted one: with e = 0, d = g and
        // ∂x = GS-VJP(γ·δ / sqrt(q + ε)).
        let x = xs[0].clone().requires_grad();
        let gy = seeded(dev, &[B, N, c], 34, 1.0);
        let y = norm.forward_with_params(&x, &xs[1], &xs[2], m).unwrap();
        y.backward_with(&gy).unwrap();
        let got = x.grad().unwrap().to_vec_f64().unwrap();
        let u = group_scale(&xs[0], 2).unwrap();
        let s = batch_q(&u, m).add_scalar(cfg.eps).unwrap().sqrt().unwrap();
        let gu = gy.mul(&xs[1]).unwrap().div(&s).unwrap();
        let want = gs_vjp(&xs[0], 2, &gu);
        assert!(max_diff(&got, &want) < 1e-12, "{}", max_diff(&got, &want));
        // and the plain (autograd) forward with the batch statistic passes gradcheck
        let plain = |t: &[Tensor]| -> Result<Tensor> {
            let u = group_scale(&t[0], 2)?;
            let s = batch_q(&u, m).add_scalar(cfg.eps)?.sqrt()?;
            t[1].mul(&u.div(&s)?)?.add(&t[2])
        };
        assert_pass(
            &gradcheck(plain, &xs, &opts()).unwrap(),
            "plain batch-statistic forward",
        );
    }
    Ok(())
}

/// PowerNorm after warm-up: the forward divides by `sqrt(φ + ε)`, the backward by `sqrt(q + ε)`.
pub fn pn_after_warmup_divides_by_the_batch_statistic(dev: &Device) -> Result<()> {
    // α_b = 1 switches the ema_gz correction off, isolating the other difference: after
    // warm-up the forward divides by sqrt(φ + ε), the backward by sqrt(q + ε).
    let cfg = PnConfig {
        warmup_iters: 3,
        alpha_bkw: 1.0,
        ..PnConfig::default()
    };
    let c = 6;
    let mut norm = pn(dev, cfg, c);
    for s in 0..5u64 {
        let x = seeded(dev, &[B, N, c], 40 + s, 1.0).requires_grad();
        norm.forward(&x, None)
            .unwrap()
            .backward_with(&seeded(dev, &[B, N, c], 50 + s, 1.0))
            .unwrap();
    }
    // A batch twice the usual scale, so that its q and the running φ differ clearly.
    let xs = vec![
        seeded(dev, &[B, N, c], 60, 2.0),
        seeded_uniform(dev, &[c], 61, 0.5, 1.5),
        seeded(dev, &[c], 62, 0.3),
    ];
    let rep = pn_check(&norm, &xs, None);
    assert!(!rep.inputs[0].passed && rep.inputs[0].max_abs_err > 1e-3, "{rep:?}");
    assert!(rep.inputs[1].passed && rep.inputs[2].passed, "{rep:?}");

    let snap = norm.state();
    let phi = snap.running_phi.reshape(&[c]).unwrap();
    let gy = seeded(dev, &[B, N, c], 63, 1.0);
    let g = gy.mul(&xs[1]).unwrap();
    // PowerNorm's gradient: GS-VJP(γ·δ / sqrt(q + ε)).
    let x = xs[0].clone().requires_grad();
    norm.forward_with_params(&x, &xs[1], &xs[2], None)
        .unwrap()
        .backward_with(&gy)
        .unwrap();
    let got = x.grad().unwrap().to_vec_f64().unwrap();
    let sq = batch_q(&group_scale(&xs[0], 1).unwrap(), None)
        .add_scalar(cfg.eps)
        .unwrap()
        .sqrt()
        .unwrap();
    let want_pn = gs_vjp(&xs[0], 1, &g.div(&sq).unwrap());
    assert!(max_diff(&got, &want_pn) < 1e-12);
    // The exact gradient: GS-VJP(γ·δ / sqrt(φ + ε)) with φ from before the step, which is
    // what autograd through the eval forward (same formula, same φ) gives.
    norm.set_state(&snap).unwrap();
    norm.set_train(false);
    let xe = xs[0].clone().requires_grad();
    norm.forward_with_params(&xe, &xs[1], &xs[2], None)
        .unwrap()
        .backward_with(&gy)
        .unwrap();
    let exact = xe.grad().unwrap().to_vec_f64().unwrap();
    let sphi = phi.add_scalar(cfg.eps).unwrap().sqrt().unwrap();
    let want_exact = gs_vjp(&xs[0], 1, &g.div(&sphi).unwrap());
    assert!(max_diff(&exact, &want_exact) < 1e-12);
    println!(
        "PowerNorm after warm-up, α_b = 1: max |PN − exact| in ∂x {:.2e}",
        max_diff(&got, &exact)
    );
    assert!(max_diff(&got, &exact) > 1e-3, "the two differ by the q/φ ratio");
    // The training forward output equals the eval formula here (i > W uses φ).
    norm.set_state(&snap).unwrap();
    let ye = norm.forward(&xs[0], None).unwrap().to_vec_f64().unwrap();
    norm.set_train(true);
    let yt = norm.forward(&xs[0], None).unwrap().to_vec_f64().unwrap();
    assert!(max_diff(&ye, &yt) < 1e-12);
    Ok(())
}

/// PowerNorm's buffer names, shapes, input checks and counter.
pub fn pn_state_names_and_validation(dev: &Device) -> Result<()> {
    let norm = pn(dev, PnConfig::default(), 6);
    let names: Vec<String> = norm.named_buffers().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["running_phi", "ema_gz", "iters"]);
    assert_eq!(norm.state().running_phi.shape(), &[1, 6, 1, 1]);
    assert!(PowerNorm::new(
        6,
        PnConfig {
            group_num: 4,
            ..PnConfig::default()
        },
        F64,
        dev
    )
    .is_err());
    assert!(norm.forward(&seeded(dev, &[2, 3, 5], 1, 1.0), None).is_err());
    assert!(norm
        .forward(&seeded(dev, &[2, 3, 6], 1, 1.0), Some(&right_mask(dev, &[1, 2, 3], 3)))
        .is_err());
    assert_eq!(norm.iterations().unwrap(), 0);
    let y = norm.forward(&seeded(dev, &[3, 6], 1, 1.0), None).unwrap();
    assert_eq!(y.shape(), &[3, 6]);
    assert_eq!(norm.iterations().unwrap(), 1);
    norm.reset_iterations().unwrap();
    assert_eq!(norm.iterations().unwrap(), 0);
    Ok(())
}
