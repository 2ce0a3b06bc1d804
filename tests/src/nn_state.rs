//! State that one bad batch or one bad call must not corrupt for good (issue 16): the
//! running statistics and counters of BatchNorm, PowerNorm and UN under a batch of padding
//! only, padding masks with values other than 0 and 1, and the optimizers' per-parameter
//! step counts (Adam's bias correction) through steps without gradients and checkpoints.
//!
//! Each check compares the whole state (every buffer, every counter) before and after,
//! then goes on to an eval forward and a checkpoint round trip, because a NaN that enters
//! a running statistic shows up only there.

use std::path::PathBuf;
use unigrad_core::{DType, Device, Result, Rng, Tensor};
use unigrad_nn::checkpoint::{load, load_optimizer, save, save_optimizer};
use unigrad_nn::norm::{Norm, NormConfig, NormKind, PnConfig, UnConfig};
use unigrad_nn::{Adam, AdamConfig, Module, Optimizer, ParamGroup, Sgd};

const F64: DType = DType::F64;
const B: usize = 2;
const N: usize = 3;
const C: usize = 4;

fn seeded(dev: &Device, shape: &[usize], seed: u64) -> Tensor {
    let mut r = Rng::new(seed);
    let v: Vec<f64> = (0..shape.iter().product()).map(|_| r.normal()).collect();
    Tensor::from_f64s(&v, shape, F64, dev).unwrap()
}

/// A folder for this test's files, unique per process, device and test.
fn scratch(dev: &Device, test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "unigrad-nn-state-{}-{}-{test}",
        std::process::id(),
        dev.name().replace([':', ' ', '/'], "_")
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Every buffer of `m` by name, as f64 values.
fn buffers(m: &impl Module) -> Vec<(String, Vec<f64>)> {
    m.named_buffers()
        .into_iter()
        .map(|(n, b)| (n, b.get().to_vec_f64().unwrap()))
        .collect()
}

fn assert_finite(what: &str, v: &[f64]) {
    assert!(v.iter().all(|x| x.is_finite()), "{what} is not finite: {v:?}");
}

/// The norm of `kind` with settings that reach its interesting paths within a few steps
/// (UN: short warm-up, window 2, outlier filtration; PowerNorm: warm-up 2, 2 groups).
fn norm(kind: NormKind, dev: &Device) -> Norm {
    let mut cfg = NormConfig::from(kind);
    cfg.un = UnConfig {
        warmup_iters: 2,
        outlier_filtration: true,
        ..UnConfig::default().with_window(2)
    };
    cfg.pn = PnConfig {
        warmup_iters: 2,
        group_num: 2,
        ..PnConfig::default()
    };
    Norm::new(&cfg, C, F64, dev).unwrap()
}

/// Train `kind` for three ordinary steps, then one step whose mask marks every token as
/// padding (with a backward through it); the state must not change at all, the output and
/// gradients must be finite, and eval and a checkpoint round trip see the old statistics.
fn all_padding_changes_nothing(kind: NormKind, dev: &Device) -> Result<()> {
    let n = norm(kind, dev);
    let partial = Tensor::from_f64s(&[0., 0., 1., 0., 0., 0.], &[B, N], F64, dev)?;
    for step in 0..3 {
        let x = seeded(dev, &[B, N, C], 10 + step).requires_grad();
        let y = n.forward(&x, Some(&partial))?;
        y.mul(&seeded(dev, &[B, N, C], 20 + step))?.sum_all()?.backward()?;
    }
    let before = buffers(&n);
    for (name, v) in &before {
        assert_finite(name, v);
    }

    let all_pad = Tensor::ones(&[B, N], F64, dev)?;
    let x = seeded(dev, &[B, N, C], 30).requires_grad();
    let y = n.forward(&x, Some(&all_pad))?;
    assert_eq!(y.shape(), &[B, N, C]);
    assert_finite(&format!("{kind} output on an all-padding batch"), &y.to_vec_f64()?);
    y.mul(&seeded(dev, &[B, N, C], 31))?.sum_all()?.backward()?;
    let gx = x.grad().expect("the skipped step still passes gradients");
    assert_finite(
        &format!("{kind} input gradient on an all-padding batch"),
        &gx.to_vec_f64()?,
    );
    assert_eq!(buffers(&n), before, "{kind}: an all-padding batch changed the state");

    // Eval sees the same statistics: its output equals the skipped step's output.
    let mut n = n;
    n.set_train(false);
    let ye = n.forward(&x, None)?;
    assert_eq!(
        ye.to_vec_f64()?,
        y.to_vec_f64()?,
        "{kind}: the skipped step is the eval forward"
    );
    assert_eq!(buffers(&n), before);

    // A checkpoint carries the old statistics, all finite.
    let d = scratch(dev, &format!("all-padding-{kind}"));
    let path = d.join("norm.safetensors");
    save(&n, &path)?;
    let fresh = norm(kind, dev);
    load(&fresh, &path)?;
    assert_eq!(
        buffers(&fresh),
        before,
        "{kind}: checkpoint of the state after the skip"
    );
    std::fs::remove_dir_all(&d).ok();

    // Training goes on from where it was: the next step changes the state again.
    n.set_train(true);
    n.forward(&seeded(dev, &[B, N, C], 40), Some(&partial))?;
    let after = buffers(&n);
    assert_ne!(
        after, before,
        "{kind}: a normal step after the skip must update the state"
    );
    for (name, v) in &after {
        assert_finite(name, v);
    }
    Ok(())
}

/// UN: an all-padding training batch is skipped (no NaN in `running_var`, no counter moves).
pub fn un_all_padding_batch_changes_no_state(dev: &Device) -> Result<()> {
    all_padding_changes_nothing(NormKind::Unified, dev)
}

/// PowerNorm: an all-padding training batch is skipped (no NaN in `running_phi`).
pub fn pn_all_padding_batch_changes_no_state(dev: &Device) -> Result<()> {
    all_padding_changes_nothing(NormKind::PowerNorm, dev)
}

/// BatchNorm: an all-padding training batch is skipped (was an error); fewer than 2 valid
/// tokens otherwise is still an error.
pub fn bn_all_padding_batch_changes_no_state(dev: &Device) -> Result<()> {
    all_padding_changes_nothing(NormKind::BatchNorm, dev)?;
    let n = norm(NormKind::BatchNorm, dev);
    let one = Tensor::from_f64s(&[1., 1., 1., 1., 0., 1.], &[B, N], F64, dev)?;
    let e = n
        .forward(&seeded(dev, &[B, N, C], 1), Some(&one))
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least 2 valid tokens"), "{e}");
    // an empty input is no all-padding batch: it is refused with or without a mask
    let empty = Tensor::zeros(&[B, 0, C], F64, dev)?;
    let e = n
        .forward(&empty, Some(&Tensor::zeros(&[B, 0], F64, dev)?))
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least 2 valid tokens"), "{e}");
    assert!(n.forward(&empty, None).is_err());
    assert_eq!(buffers(&n), buffers(&norm(NormKind::BatchNorm, dev)));
    Ok(())
}

/// A mask value other than 0 or 1 (2, −1, 0.5, NaN; f64, f32 or i64) is an error naming the
/// value, its position and the layer, in training and eval mode, and changes no state.
pub fn masks_hold_only_zero_and_one(dev: &Device) -> Result<()> {
    let x = seeded(dev, &[B, N, C], 1);
    let f64_mask = |bad: f64| Tensor::from_f64s(&[0., 0., 1., 0., bad, 1.], &[B, N], F64, dev).unwrap();
    let cases = [
        (f64_mask(2.0), "2"),
        (f64_mask(-1.0), "-1"),
        (f64_mask(0.5), "0.5"),
        (f64_mask(f64::NAN), "NaN"),
        (f64_mask(2.0).to_dtype(DType::F32)?, "2"),
        (Tensor::from_vec(vec![0i64, 0, 1, 0, 2, 1], &[B, N], dev)?, "2"),
    ];
    for kind in [NormKind::BatchNorm, NormKind::PowerNorm, NormKind::Unified] {
        let op = match kind {
            NormKind::BatchNorm => "BatchNorm",
            NormKind::PowerNorm => "PowerNorm",
            _ => "UnifiedNorm",
        };
        for train in [true, false] {
            let mut n = norm(kind, dev);
            n.set_train(train);
            let before = buffers(&n);
            for (mask, shown) in &cases {
                let e = n.forward(&x, Some(mask)).unwrap_err().to_string();
                assert!(e.contains(op), "{kind}: {e}");
                assert!(e.contains(&format!("found {shown} at [1, 1]")), "{kind}: {e}");
            }
            assert_eq!(buffers(&n), before, "{kind}: a rejected mask changed the state");
            // 0/1 masks of every dtype are fine
            for ok in [
                f64_mask(0.0),
                f64_mask(1.0).to_dtype(DType::F32)?,
                f64_mask(0.0).to_dtype(DType::I64)?,
            ] {
                n.forward(&x, Some(&ok))?;
            }
        }
    }
    Ok(())
}

/// The mask check remembers the last mask it accepted, but an `assign` of new values to
/// that very tensor is checked again.
pub fn mask_check_sees_assigned_values(dev: &Device) -> Result<()> {
    let x = seeded(dev, &[B, N, C], 1);
    let mask = Tensor::from_f64s(&[0., 0., 1., 0., 0., 1.], &[B, N], F64, dev)?;
    let n = norm(NormKind::Unified, dev);
    n.forward(&x, Some(&mask))?;
    n.forward(&x, Some(&mask))?;
    mask.assign(&Tensor::from_f64s(&[0., 0., 1., 0., 3., 1.], &[B, N], F64, dev)?)?;
    let e = n.forward(&x, Some(&mask)).unwrap_err().to_string();
    assert!(e.contains("found 3 at [1, 1]"), "{e}");
    n.forward(&x, None)?;
    // and an all-padding value assigned later is seen as such (the step is skipped)
    let bn = norm(NormKind::BatchNorm, dev);
    let m2 = Tensor::from_f64s(&[0., 0., 1., 0., 0., 1.], &[B, N], F64, dev)?;
    bn.forward(&x, Some(&m2))?;
    let before = buffers(&bn);
    m2.assign(&Tensor::ones(&[B, N], F64, dev)?)?;
    bn.forward(&x, Some(&m2))?;
    assert_eq!(buffers(&bn), before);
    Ok(())
}

/// One parameter on `dev` with the given values.
fn param(dev: &Device, v: &[f64]) -> Tensor {
    Tensor::from_f64s(v, &[v.len()], F64, dev).unwrap().requires_grad()
}

/// Parameters `a` and `b` by those names.
fn named(a: &Tensor, b: &Tensor) -> Vec<(String, Tensor)> {
    vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())]
}

/// Per-parameter step counts `a: na`, `b: nb`, as [`unigrad_nn::optim::OptimizerState`] lists them.
fn counts(na: u64, nb: u64) -> Vec<(String, u64)> {
    vec![("a".to_string(), na), ("b".to_string(), nb)]
}

/// Give `p` the gradient of `Σ p²·k` (a different gradient each step).
fn grad_of(p: &Tensor, k: f64) -> Result<()> {
    p.sqr()?.mul_scalar(k)?.sum_all()?.backward()
}

/// Adam and AdamW count updates per parameter, as PyTorch does: a `step` in which a
/// parameter has no gradient does not advance its bias correction, and neither does a
/// `step` with no gradient at all.
pub fn adam_counts_steps_per_parameter(dev: &Device) -> Result<()> {
    for cfg in [AdamConfig::adam(0.1), AdamConfig::adamw(0.1)] {
        let (a, b) = (param(dev, &[1.0, -2.0]), param(dev, &[0.5, 3.0]));
        let group = named(&a, &b);
        let mut opt = Adam::new(vec![ParamGroup::new(group, 0.01)], cfg)?;
        // b alone, with the same two gradients b sees below
        let b_ref = param(dev, &[0.5, 3.0]);
        let mut opt_ref = Adam::new(vec![ParamGroup::new(vec![("b".into(), b_ref.clone())], 0.01)], cfg)?;

        opt.step()?; // no gradient anywhere
        grad_of(&a, 1.0)?;
        grad_of(&b, 1.0)?;
        opt.step()?;
        opt.zero_grad();
        grad_of(&a, 2.0)?; // b gets no gradient this time
        opt.step()?;
        opt.zero_grad();
        grad_of(&a, 3.0)?;
        grad_of(&b, 3.0)?;
        opt.step()?;

        grad_of(&b_ref, 1.0)?;
        opt_ref.step()?;
        opt_ref.zero_grad();
        grad_of(&b_ref, 3.0)?;
        opt_ref.step()?;

        assert_eq!(b.to_vec_f64()?, b_ref.to_vec_f64()?, "{cfg:?}: b's updates 1 and 2");
        assert_eq!(opt.steps(), 4);
        assert_eq!(opt.state().param_steps, counts(3, 2));
    }
    Ok(())
}

/// SGD counts updates per parameter too (its update does not use them, but the state and
/// the checkpoint carry them like Adam's).
pub fn sgd_counts_steps_per_parameter(dev: &Device) -> Result<()> {
    let (a, b) = (param(dev, &[1.0]), param(dev, &[2.0]));
    let group = named(&a, &b);
    let mut opt = Sgd::new(vec![ParamGroup::new(group, 0.0)], 0.1, 0.9, false)?;
    grad_of(&a, 1.0)?;
    opt.step()?;
    opt.step()?;
    grad_of(&b, 1.0)?;
    opt.step()?;
    assert_eq!(opt.steps(), 3);
    assert_eq!(opt.state().param_steps, counts(3, 1));
    Ok(())
}

/// Per-parameter counts survive a checkpoint: the resumed optimizer makes exactly the
/// updates the original makes.
pub fn optimizer_checkpoint_keeps_per_parameter_steps(dev: &Device) -> Result<()> {
    let d = scratch(dev, "optimizer-steps");
    let path = d.join("opt.safetensors");
    let make =
        |a: &Tensor, b: &Tensor| Adam::new(vec![ParamGroup::new(named(a, b), 0.0)], AdamConfig::adamw(0.05)).unwrap();
    let (a, b) = (param(dev, &[1.0, 2.0]), param(dev, &[-1.0]));
    let mut opt = make(&a, &b);
    for k in 1..=3 {
        opt.zero_grad();
        grad_of(&a, k as f64)?;
        if k == 2 {
            grad_of(&b, 1.0)?;
        }
        opt.step()?;
    }
    save_optimizer(&opt, &path, &Default::default())?;
    let (a2, b2) = (param(dev, &a.to_vec_f64()?), param(dev, &b.to_vec_f64()?));
    let mut resumed = make(&a2, &b2);
    load_optimizer(&mut resumed, &path)?;
    assert_eq!(resumed.state().param_steps, opt.state().param_steps);
    assert_eq!(resumed.state().param_steps, counts(3, 1));
    assert_eq!(resumed.steps(), 3);
    for (o, (pa, pb)) in [(&mut opt, (&a, &b)), (&mut resumed, (&a2, &b2))] {
        o.zero_grad();
        grad_of(pa, 0.5)?;
        grad_of(pb, 0.5)?;
        o.step()?;
    }
    assert_eq!(a.to_vec_f64()?, a2.to_vec_f64()?);
    assert_eq!(b.to_vec_f64()?, b2.to_vec_f64()?);
    std::fs::remove_dir_all(&d).ok();
    Ok(())
}
