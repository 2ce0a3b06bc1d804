//! Inference folding (`unigrad_nn::fold`) on the device under test: the folded LM
//! reproduces the eval-mode model's logits after a few training steps (so running
//! statistics, γ and β are non-trivial), for every norm kind, in f32 (1e-5) and f64
//! (1e-12), and removes exactly the norm ops that are a per-channel affine at inference.

use unigrad_core::{manual_seed, no_grad, DType, Device, Result, Tensor};
use unigrad_nn::fold::{fold_for_inference, fold_into_linear, FoldedLm};
use unigrad_nn::norm::{Norm, NormConfig, PnConfig, PowerNorm, UnConfig};
use unigrad_nn::{
    decay_groups, Adam, AdamConfig, Linear, LmConfig, Module, NormKind, Optimizer, PositionKind, TransformerLm,
};

const B: usize = 4;
const T: usize = 8;
const V: usize = 13;

fn small_cfg(norm: NormConfig) -> LmConfig {
    LmConfig {
        vocab: V,
        d_model: 16,
        heads: 2,
        d_ff: 32,
        layers: 2,
        max_seq: T,
        norm,
        // larger than the reference's 0.02 so that logits are O(1) and an absolute
        // tolerance means something
        init_std: 0.3,
        ..LmConfig::reference(NormKind::LayerNorm)
    }
}

fn batch(dev: &Device, seed: u64) -> (Tensor, Tensor) {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((s >> 33) % V as u64) as i64
    };
    let v: Vec<i64> = (0..B * (T + 1)).map(|_| next()).collect();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for r in 0..B {
        let row = &v[r * (T + 1)..(r + 1) * (T + 1)];
        x.extend_from_slice(&row[..T]);
        y.extend_from_slice(&row[1..]);
    }
    (
        Tensor::from_vec(x, &[B, T], dev).unwrap(),
        Tensor::from_vec(y, &[B, T], dev).unwrap(),
    )
}

/// A model trained for `steps` AdamW steps, then put in eval mode.
fn trained(dev: &Device, cfg: LmConfig, dtype: DType, steps: usize) -> TransformerLm {
    manual_seed(7);
    let mut m = TransformerLm::new(cfg, dtype, dev).unwrap();
    let mut opt = Adam::new(decay_groups(m.named_params(), 0.01), AdamConfig::adamw(1e-2)).unwrap();
    for s in 0..steps {
        let (x, y) = batch(dev, s as u64);
        opt.zero_grad();
        let loss = m.loss(&x, &y).unwrap();
        assert!(loss.to_scalar().unwrap().is_finite());
        loss.backward().unwrap();
        opt.step().unwrap();
    }
    m.eval();
    m
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> (f64, f64) {
    let (a, b) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
    assert_eq!(a.len(), b.len());
    let d = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    let scale = a.iter().map(|x| x.abs()).fold(0.0, f64::max);
    (d, scale)
}

/// The largest deviation of any norm buffer / parameter from its initial value, to show
/// that the statistics the fold uses are not the trivial initial ones.
fn stats_moved(m: &TransformerLm) -> f64 {
    let mut worst: f64 = 0.0;
    let mut check = |n: &Norm| match n {
        Norm::Unified(u) => {
            let rho = u.state().running_var.to_vec_f64().unwrap();
            worst = worst.max(rho.iter().map(|r| (r - 1.0).abs()).fold(0.0, f64::max));
        }
        Norm::Batch(bn) => {
            let rv = bn.running_var.get().to_vec_f64().unwrap();
            let rm = bn.running_mean.get().to_vec_f64().unwrap();
            worst = worst.max(rv.iter().map(|r| (r - 1.0).abs()).fold(0.0, f64::max));
            worst = worst.max(rm.iter().map(|r| r.abs()).fold(0.0, f64::max));
        }
        Norm::Power(p) => {
            let phi = p.state().running_phi.to_vec_f64().unwrap();
            worst = worst.max(phi.iter().map(|r| (r - 1.0).abs()).fold(0.0, f64::max));
        }
        _ => {}
    };
    for b in &m.blocks {
        check(&b.norm1);
        check(&b.norm2);
    }
    check(m.norm_f.as_ref().unwrap());
    worst
}

fn check_kind(dev: &Device, norm: NormConfig, dtype: DType, tol: f64) -> FoldedLm {
    let m = trained(dev, small_cfg(norm), dtype, 4);
    let folded = fold_for_inference(&m).unwrap();
    let (x, _) = batch(dev, 99);
    let want = no_grad(|| m.forward(&x, None)).unwrap();
    let got = folded.forward(&x, None).unwrap();
    let (d, scale) = max_abs_diff(&want, &got);
    println!(
        "{:?} {dtype}: max |folded - eval| = {d:.3e} (max |logit| {scale:.3})",
        norm.kind
    );
    assert!(
        d <= tol,
        "{:?} {dtype}: folded logits differ by {d:e} (tolerance {tol:e})",
        norm.kind
    );
    assert!(
        scale > 0.5,
        "logits too small ({scale}) for the absolute tolerance to be meaningful"
    );
    if norm.kind.uses_batch_statistics() {
        let moved = stats_moved(&m);
        assert!(moved > 1e-2, "{:?}: statistics barely moved ({moved})", norm.kind);
    }
    folded
}

/// The folded LM reproduces the eval-mode logits in f32 (1e-5) for every norm kind.
pub fn folded_matches_eval_f32_for_every_norm(dev: &Device) -> Result<()> {
    for kind in [NormKind::Unified, NormKind::BatchNorm, NormKind::PowerNorm] {
        let f = check_kind(dev, kind.into(), DType::F32, 1e-5);
        assert_eq!(f.sites().len(), 5);
    }
    // LayerNorm / RMSNorm stay: the "fold" only re-packs the model, still exact
    for kind in [NormKind::LayerNorm, NormKind::RmsNorm] {
        check_kind(dev, kind.into(), DType::F32, 1e-5);
    }
    Ok(())
}

/// ... and in f64 (1e-12).
pub fn folded_matches_eval_f64_for_every_norm(dev: &Device) -> Result<()> {
    for kind in [
        NormKind::Unified,
        NormKind::BatchNorm,
        NormKind::PowerNorm,
        NormKind::LayerNorm,
    ] {
        check_kind(dev, kind.into(), DType::F64, 1e-12);
    }
    Ok(())
}

/// UN past warm-up with outlier filtration, and PowerNorm with groups, fold exactly.
pub fn un_past_warmup_with_filtration_and_pn_groups_fold_exactly(dev: &Device) -> Result<()> {
    // UN after warm-up (smoothed statistic, outlier test active), PN after warm-up with 4
    // groups: other code paths produce the running statistics
    let mut un: NormConfig = NormKind::Unified.into();
    un.un = UnConfig {
        warmup_iters: 2,
        outlier_filtration: true,
        ..UnConfig::default()
    }
    .with_window(2);
    check_kind(dev, un, DType::F64, 1e-12);
    let mut pn: NormConfig = NormKind::PowerNorm.into();
    pn.pn.warmup_iters = 2;
    pn.pn.group_num = 4;
    let f = check_kind(dev, pn, DType::F64, 1e-12);
    assert!(f.sites().iter().all(|s| s.kept_op == "group_scale"));
    Ok(())
}

/// Exactly the norms that are a per-channel affine at inference are removed, at the expected sites.
pub fn fold_removes_exactly_the_affine_norms(dev: &Device) -> Result<()> {
    let expect = [
        (NormKind::Unified, 5, "none"),
        (NormKind::BatchNorm, 5, "none"),
        (NormKind::PowerNorm, 0, "group_scale"),
        (NormKind::LayerNorm, 0, "layer_norm"),
        (NormKind::RmsNorm, 0, "rms_norm"),
    ];
    for (kind, removed, kept) in expect {
        manual_seed(1);
        let mut m = TransformerLm::new(small_cfg(kind.into()), DType::F32, dev).unwrap();
        m.eval();
        let f = fold_for_inference(&m).unwrap();
        assert_eq!(f.removed_norms(), removed, "{kind}");
        let into: Vec<&str> = f.sites().iter().map(|s| s.into.as_str()).collect();
        assert_eq!(
            into,
            [
                "blocks.0.attn.qkv",
                "blocks.0.ff1",
                "blocks.1.attn.qkv",
                "blocks.1.ff1",
                "head"
            ]
        );
        assert!(f.sites().iter().all(|s| s.kept_op == kept && s.kind == kind));
        // names: the norm parameters are gone exactly when the norm op is gone
        let names: Vec<String> = f.named_params().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names.iter().any(|n| n.contains("norm")),
            kept.ends_with("_norm"),
            "{kind}: {names:?}"
        );
        assert!(names.contains(&"blocks.1.attn.qkv.weight".to_string()));
        assert!(f.named_params().iter().all(|(_, t)| !t.is_grad_leaf()));
    }
    Ok(())
}

/// LayerNorm Scaling, sinusoidal positions, bias-free Linears and padding masks fold exactly.
pub fn ln_scaling_sinusoids_no_bias_and_padding_fold_exactly(dev: &Device) -> Result<()> {
    let mut cfg = small_cfg(NormKind::Unified.into());
    cfg.ln_scaling = true;
    cfg.positions = PositionKind::Sinusoidal;
    cfg.bias = false;
    let m = trained(dev, cfg, DType::F64, 3);
    let f = fold_for_inference(&m).unwrap();
    // UN's shift β became a bias where the Linear had none
    assert!(f.blocks[0].attn.qkv.as_ref().unwrap().bias.is_some());
    assert!(f.blocks[0].attn.proj.bias.is_none());
    let (x, _) = batch(dev, 5);
    let mut pad = vec![0.0; B * T];
    pad[T - 2..T].iter_mut().for_each(|p| *p = 1.0);
    pad[2 * T - 1] = 1.0;
    let mask = Tensor::from_vec(pad, &[B, T], dev)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let want = no_grad(|| m.forward(&x, Some(&mask))).unwrap();
    let got = f.forward(&x, Some(&mask)).unwrap();
    let (d, _) = max_abs_diff(&want, &got);
    assert!(d <= 1e-12, "{d:e}");
    // the mask matters (so the comparison above exercised it)
    let unmasked = f.forward(&x, None).unwrap();
    assert!(max_abs_diff(&got, &unmasked).0 > 1e-6);
    // LayerNorm Scaling in front of a LayerNorm that stays folds too
    let mut cfg = small_cfg(NormKind::LayerNorm.into());
    cfg.ln_scaling = true;
    let m = trained(dev, cfg, DType::F64, 2);
    let f = fold_for_inference(&m).unwrap();
    let want = no_grad(|| m.forward(&x, None)).unwrap();
    assert!(max_abs_diff(&want, &f.forward(&x, None).unwrap()).0 <= 1e-12);
    Ok(())
}

/// The folded model is a snapshot: later training of the source does not change it.
pub fn folded_model_is_a_snapshot(dev: &Device) -> Result<()> {
    let m = trained(dev, small_cfg(NormKind::Unified.into()), DType::F64, 2);
    let f = fold_for_inference(&m).unwrap();
    let (x, y) = batch(dev, 3);
    let before = f.forward(&x, None).unwrap();
    // more training changes the source model (parameters and running statistics) ...
    let mut m = m;
    m.train();
    let mut opt = Adam::new(decay_groups(m.named_params(), 0.0), AdamConfig::adamw(1e-2)).unwrap();
    let loss = m.loss(&x, &y).unwrap();
    loss.backward().unwrap();
    opt.step().unwrap();
    m.eval();
    // ... but not the folded copy, which therefore no longer matches it
    let after = f.forward(&x, None).unwrap();
    assert_eq!(before.to_vec_f64().unwrap(), after.to_vec_f64().unwrap());
    let now = no_grad(|| m.forward(&x, None)).unwrap();
    assert!(max_abs_diff(&now, &after).0 > 1e-4);
    assert!(max_abs_diff(&now, &fold_for_inference(&m).unwrap().forward(&x, None).unwrap()).0 <= 1e-12);
    Ok(())
}

/// Post-norm models and models in training mode are refused with an error.
pub fn post_norm_and_training_mode_are_refused(dev: &Device) -> Result<()> {
    manual_seed(0);
    let mut cfg = small_cfg(NormKind::Unified.into());
    cfg.pre_norm = false;
    let mut post = TransformerLm::new(cfg, DType::F32, dev).unwrap();
    post.eval();
    let e = fold_for_inference(&post).unwrap_err().to_string();
    assert!(e.contains("post-norm"), "{e}");
    let pre = TransformerLm::new(small_cfg(NormKind::BatchNorm.into()), DType::F32, dev).unwrap();
    let e = fold_for_inference(&pre).unwrap_err().to_string();
    assert!(e.contains("eval"), "{e}");
    Ok(())
}

/// `fold_into_linear` computes `W·diag(a)` and `b + W·s`, and checks its operands.
pub fn fold_into_linear_is_w_diag_a_and_b_plus_w_s(dev: &Device) -> Result<()> {
    let d = dev.clone();
    let w = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, -1.0, 0.5, 4.0], &[2, 3], &d).unwrap();
    let b = Tensor::from_vec(vec![0.25f64, -0.5], &[2], &d).unwrap();
    let lin = Linear::from_tensors(w, Some(b)).unwrap();
    let (a, s) = ([2.0, -1.0, 0.5], [1.0, 0.0, -2.0]);
    let f = fold_into_linear(&lin, &a, &s).unwrap();
    assert_eq!(f.weight.to_vec::<f64>().unwrap(), [2.0, -2.0, 1.5, -2.0, -0.5, 2.0]);
    // b + W s = [0.25 + 1 - 6, -0.5 - 1 - 8]
    assert_eq!(f.bias.unwrap().to_vec::<f64>().unwrap(), [-4.75, -9.5]);
    let e = fold_into_linear(&lin, &a[..2], &s[..2]).unwrap_err().to_string();
    assert!(e.contains("[2, 3]"), "{e}");
    // no bias and zero shift: still no bias
    let nb = Linear::from_tensors(Tensor::ones(&[2, 3], DType::F32, &d).unwrap(), None).unwrap();
    assert!(fold_into_linear(&nb, &a, &[0.0; 3]).unwrap().bias.is_none());
    Ok(())
}

/// PowerNorm in eval mode is its group scaling followed by the per-channel affine.
pub fn power_norm_eval_is_group_scale_then_affine(dev: &Device) -> Result<()> {
    // the decomposition the fold relies on, checked on the layer itself
    manual_seed(3);
    let d = dev.clone();
    let cfg = PnConfig {
        group_num: 2,
        warmup_iters: 1,
        ..PnConfig::default()
    };
    let mut pn = PowerNorm::new(4, cfg, DType::F64, &d).unwrap();
    let x = Tensor::randn(&[2, 3, 4], DType::F64, &d).unwrap();
    pn.forward(&x, None).unwrap();
    pn.forward(&x.mul_scalar(2.0).unwrap(), None).unwrap();
    pn.eval();
    let norm = Norm::Power(pn);
    let aff = unigrad_nn::fold::eval_affine(&norm, 4, 1.0).unwrap();
    let u = aff.pre.forward(&x).unwrap().to_vec_f64().unwrap();
    let want = norm.forward(&x, None).unwrap().to_vec_f64().unwrap();
    for (i, (u, w)) in u.iter().zip(&want).enumerate() {
        let c = i % 4;
        assert!((u * aff.scale[c] + aff.shift[c] - w).abs() < 1e-13);
    }
    Ok(())
}

/// The padding mask reaches every batch-statistics norm of the LM: padded ids change no statistic.
pub fn un_and_pn_models_keep_padding_out_of_their_statistics(dev: &Device) -> Result<()> {
    // the padding mask reaches every UN / PowerNorm of the LM: changing the ids at padded
    // positions changes none of the statistics a training forward writes
    for kind in [NormKind::Unified, NormKind::PowerNorm, NormKind::BatchNorm] {
        let (x, _) = batch(dev, 11);
        let mut pad = vec![0.0; B * T];
        pad[T - 3..T].iter_mut().for_each(|p| *p = 1.0);
        pad[3 * T - 1] = 1.0;
        let mask = Tensor::from_vec(pad.clone(), &[B, T], dev).unwrap();
        let mut alt = x.to_vec::<i64>().unwrap();
        for (i, p) in pad.iter().enumerate() {
            if *p == 1.0 {
                alt[i] = (alt[i] + 5) % V as i64;
            }
        }
        let alt = Tensor::from_vec(alt, &[B, T], dev).unwrap();
        let stats = |ids: &Tensor, mask: Option<&Tensor>| {
            manual_seed(4);
            let m = TransformerLm::new(small_cfg(kind.into()), DType::F64, dev).unwrap();
            m.forward(ids, mask).unwrap();
            let mut v = Vec::new();
            for (name, b) in m.named_buffers() {
                if !name.ends_with("ema_gz") && !name.ends_with("buffer_gz") {
                    v.extend(b.get().to_vec_f64().unwrap());
                }
            }
            v
        };
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(a, b)| (a - b).abs() <= 1e-12 * (1.0 + a.abs()));
        let (with_a, with_b) = (stats(&x, Some(&mask)), stats(&alt, Some(&mask)));
        assert!(close(&with_a, &with_b), "{kind}: padded ids leaked into the statistics");
        // without the mask they do change (so the check above can fail)
        assert!(!close(&stats(&x, None), &stats(&alt, None)), "{kind}");
    }
    Ok(())
}
