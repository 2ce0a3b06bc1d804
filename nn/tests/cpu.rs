//! CPU-only tests of models, optimizers and checkpoints. The device-generic nn checks
//! (module gradchecks, UN/PowerNorm, fixture replay, folding, tracing) are in the shared
//! suite (`tests/src/nn_*.rs`), run on every backend.

use std::collections::HashMap;
use unigrad_core::{no_grad, with_generator, DType, Device, Generator, Tensor};
use unigrad_nn::checkpoint::{self, load, load_optimizer, load_with, save, save_optimizer};
use unigrad_nn::{
    clip_grad_norm, decay_groups, Adam, AdamConfig, LmConfig, Module, NormKind, Optimizer, ParamGroup, PositionKind,
    Seq2Seq, Seq2SeqConfig, Sgd, TransformerLm, Vit, VitConfig,
};

fn dev() -> Device {
    unigrad_cpu::cpu()
}

/// Builds with its own seeded generator: tests run in parallel threads, and the
/// process-wide one is shared by them.
fn tiny_lm(norm: NormKind) -> TransformerLm {
    let cfg = LmConfig {
        vocab: 11,
        d_model: 8,
        heads: 2,
        d_ff: 16,
        layers: 2,
        max_seq: 6,
        ..LmConfig::reference(norm)
    };
    with_generator(&mut Generator::new(0), || TransformerLm::new(cfg, DType::F32, &dev())).unwrap()
}

#[test]
fn reference_lm_has_875520_parameters_and_torch_names() {
    let m = TransformerLm::new(LmConfig::reference(NormKind::LayerNorm), DType::F32, &dev()).unwrap();
    assert_eq!(m.param_count(), 875_520);
    let names: Vec<String> = m.named_params().into_iter().map(|(n, _)| n).collect();
    for n in [
        "tok.weight",
        "pos.weight",
        "blocks.0.norm1.weight",
        "blocks.0.norm1.bias",
        "blocks.0.attn.qkv.weight",
        "blocks.0.attn.qkv.bias",
        "blocks.0.attn.proj.weight",
        "blocks.0.norm2.bias",
        "blocks.3.ff1.weight",
        "blocks.3.ff2.bias",
        "norm_f.weight",
        "head.weight",
        "head.bias",
    ] {
        assert!(names.iter().any(|x| x == n), "missing {n} in {names:?}");
    }
    assert_eq!(names.len(), 2 + 4 * 12 + 2 + 2);
    let bn = TransformerLm::new(LmConfig::reference(NormKind::BatchNorm), DType::F32, &dev()).unwrap();
    let bufs: Vec<String> = bn.named_buffers().into_iter().map(|(n, _)| n).collect();
    assert!(bufs.contains(&"blocks.0.norm1.running_mean".to_string()));
    assert!(bufs.contains(&"norm_f.num_batches_tracked".to_string()));
    assert_eq!(bufs.len(), 9 * 3);
}

fn ids(v: &[i64], b: usize, t: usize) -> Tensor {
    Tensor::from_vec(v.to_vec(), &[b, t], &dev()).unwrap()
}

#[test]
fn lm_overfits_a_tiny_batch_with_each_norm() {
    for norm in [NormKind::LayerNorm, NormKind::RmsNorm, NormKind::BatchNorm] {
        let m = tiny_lm(norm);
        let x = ids(&[1, 2, 3, 4, 5, 6, 2, 3, 4, 5, 6, 7], 2, 6);
        let y = ids(&[2, 3, 4, 5, 6, 7, 3, 4, 5, 6, 7, 8], 2, 6);
        let mut opt = Adam::new(decay_groups(m.named_params(), 0.01), AdamConfig::adamw(1e-2)).unwrap();
        let first = m.loss(&x, &y).unwrap().to_scalar().unwrap();
        let mut last = first;
        for _ in 0..60 {
            opt.zero_grad();
            let loss = m.loss(&x, &y).unwrap();
            loss.backward().unwrap();
            opt.step().unwrap();
            last = loss.to_scalar().unwrap();
        }
        assert!(last < 0.3 * first, "{norm}: loss {first} -> {last}");
    }
}

#[test]
fn causal_lm_output_does_not_see_the_future() {
    let mut m = tiny_lm(NormKind::LayerNorm);
    m.eval();
    let a = m
        .forward(&ids(&[1, 2, 3, 4], 1, 4), None)
        .unwrap()
        .to_vec_f64()
        .unwrap();
    let b = m
        .forward(&ids(&[1, 2, 3, 9], 1, 4), None)
        .unwrap()
        .to_vec_f64()
        .unwrap();
    assert_eq!(a[..3 * 11], b[..3 * 11]);
    assert_ne!(a[3 * 11..], b[3 * 11..]);
}

#[test]
fn lm_with_sinusoids_postnorm_and_ln_scaling() {
    let mut cfg = tiny_lm(NormKind::LayerNorm).config().to_owned();
    cfg.positions = PositionKind::Sinusoidal;
    cfg.ln_scaling = true;
    let m = TransformerLm::new(cfg, DType::F32, &dev()).unwrap();
    assert!(!m.named_params().iter().any(|(n, _)| n.starts_with("pos")));
    let loss = m.loss(&ids(&[1, 2, 3], 1, 3), &ids(&[2, 3, 4], 1, 3)).unwrap();
    loss.backward().unwrap();
    cfg.pre_norm = false;
    assert!(
        TransformerLm::new(cfg, DType::F32, &dev()).is_err(),
        "ln scaling needs pre-norm"
    );
    cfg.ln_scaling = false;
    let post = TransformerLm::new(cfg, DType::F32, &dev()).unwrap();
    assert!(post.norm_f.is_none());
    post.loss(&ids(&[1, 2, 3], 1, 3), &ids(&[2, 3, 4], 1, 3)).unwrap();
}

#[test]
fn generate_is_deterministic_and_greedy_matches_argmax() {
    let mut m = tiny_lm(NormKind::LayerNorm);
    m.eval();
    let a = m.generate(&[1, 2], 10, 0.8, 7).unwrap();
    let b = m.generate(&[1, 2], 10, 0.8, 7).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.len(), 12);
    let g = m.generate(&[1, 2], 1, 0.0, 0).unwrap();
    let logits = m.forward(&ids(&[1, 2], 1, 2), None).unwrap().to_vec_f64().unwrap();
    let last = &logits[11..22];
    let best = (0..11).max_by(|&i, &j| last[i].total_cmp(&last[j])).unwrap();
    assert_eq!(g[2], best as i64);
}

#[test]
fn batchnorm_eval_uses_running_stats_and_padding_is_ignored() {
    let m = tiny_lm(NormKind::BatchNorm);
    let pad = Tensor::from_f64s(&[0., 0., 0., 1., 1., 1.], &[1, 6], DType::F32, &dev()).unwrap();
    let a = m
        .forward(&ids(&[1, 2, 3, 4, 5, 6], 1, 6), Some(&pad))
        .unwrap()
        .to_vec_f64()
        .unwrap();
    let b = m
        .forward(&ids(&[1, 2, 3, 9, 9, 9], 1, 6), Some(&pad))
        .unwrap()
        .to_vec_f64()
        .unwrap();
    // valid positions are unaffected by what sits in the padding
    for i in 0..3 * 11 {
        assert!((a[i] - b[i]).abs() < 1e-5, "{i}: {} vs {}", a[i], b[i]);
    }
}

#[test]
fn seq2seq_trains_and_decodes() {
    // its own generator: the process-wide one is shared by the parallel tests
    with_generator(&mut Generator::new(3), seq2seq_trains_and_decodes_body);
}

fn seq2seq_trains_and_decodes_body() {
    let cfg = Seq2SeqConfig {
        src_vocab: 9,
        tgt_vocab: 9,
        d_model: 8,
        heads: 2,
        d_ff: 16,
        enc_layers: 1,
        dec_layers: 1,
        max_len: 8,
        norm: NormKind::LayerNorm.into(),
        pre_norm: true,
        positions: PositionKind::Sinusoidal,
        dropout: 0.0,
        ln_scaling: false,
        pad_id: Some(0),
        scale_embeddings: true,
    };
    let m = Seq2Seq::new(cfg, DType::F32, &dev()).unwrap();
    let names: Vec<String> = m.named_params().into_iter().map(|(n, _)| n).collect();
    assert!(
        names.contains(&"decoder.0.cross_attn.kv.weight".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"encoder.0.attn.qkv.weight".to_string()));
    // copy task: target = source, BOS = 1, EOS = 2
    let src = ids(&[3, 4, 5, 6, 7, 8, 0, 0], 2, 4);
    let src_pad = Tensor::from_f64s(&[0., 0., 0., 0., 0., 0., 1., 1.], &[2, 4], DType::F32, &dev()).unwrap();
    let tin = ids(&[1, 3, 4, 5, 6, 1, 7, 8, 2, 0], 2, 5);
    let tout = ids(&[3, 4, 5, 6, 2, 7, 8, 2, 0, 0], 2, 5);
    let tpad = Tensor::from_f64s(&[0., 0., 0., 0., 0., 0., 0., 0., 1., 1.], &[2, 5], DType::F32, &dev()).unwrap();
    let mut opt = Adam::new(vec![ParamGroup::new(m.named_params(), 0.0)], AdamConfig::adam(3e-2)).unwrap();
    for _ in 0..150 {
        opt.zero_grad();
        let logits = m.forward(&src, &tin, Some(&src_pad), Some(&tpad)).unwrap();
        let loss = unigrad_nn::cross_entropy(&logits, &tout, Some(0), 0.1).unwrap();
        loss.backward().unwrap();
        clip_grad_norm(&opt.params(), 1.0).unwrap();
        opt.step().unwrap();
    }
    let out = m.greedy(&src, Some(&src_pad), 1, 2, 6).unwrap();
    assert_eq!(out[0], vec![3, 4, 5, 6, 2]);
    assert_eq!(out[1], vec![7, 8, 2]);
    // the padding row of the embeddings never moved from zero
    let row0 = m.src_tok.weight.narrow(0, 0, 1).unwrap().to_vec_f64().unwrap();
    assert!(row0.iter().all(|&v| v == 0.0));
}

#[test]
fn vit_forward_backward_and_names() {
    // its own generator: the process-wide one is shared by the parallel tests
    with_generator(&mut Generator::new(4), vit_forward_backward_and_names_body);
}

fn vit_forward_backward_and_names_body() {
    let cfg = VitConfig {
        image_size: 8,
        patch: 4,
        channels: 1,
        classes: 3,
        d_model: 8,
        heads: 2,
        d_ff: 16,
        layers: 2,
        norm: NormKind::BatchNorm.into(),
        pre_norm: true,
        dropout: 0.1,
        ln_scaling: true,
    };
    let m = Vit::new(cfg, DType::F32, &dev()).unwrap();
    let names: Vec<String> = m.named_params().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"patch_embed.proj.weight".to_string()));
    let shape = m
        .named_params()
        .into_iter()
        .find(|(n, _)| n == "patch_embed.proj.weight")
        .unwrap()
        .1
        .shape()
        .to_vec();
    assert_eq!(shape, [8, 1, 4, 4]);
    let x = Tensor::randn(&[3, 1, 8, 8], DType::F32, &dev()).unwrap();
    let logits = m.forward(&x).unwrap();
    assert_eq!(logits.shape(), [3, 3]);
    let y = Tensor::from_vec(vec![0i64, 1, 2], &[3], &dev()).unwrap();
    unigrad_nn::cross_entropy(&logits, &y, None, 0.0)
        .unwrap()
        .backward()
        .unwrap();
    for (n, p) in m.named_params() {
        assert!(p.grad().is_some(), "{n} got no gradient");
    }
}

#[test]
fn sgd_nesterov_matches_pytorch_formula() {
    let p = Tensor::from_f64s(&[1.0, -2.0], &[2], DType::F64, &dev())
        .unwrap()
        .requires_grad();
    let mut opt = Sgd::new(
        vec![ParamGroup::new(vec![("p".into(), p.clone())], 0.1)],
        0.5,
        0.9,
        true,
    )
    .unwrap();
    // loss = sum(p²): grad 2p
    let (mut pv, mut buf) = (vec![1.0f64, -2.0], vec![0.0f64; 2]);
    for step in 0..3 {
        opt.zero_grad();
        p.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        opt.step().unwrap();
        for i in 0..2 {
            let g = 2.0 * pv[i] + 0.1 * pv[i];
            buf[i] = if step == 0 { g } else { 0.9 * buf[i] + g };
            pv[i] -= 0.5 * (g + 0.9 * buf[i]);
        }
    }
    let got = p.to_vec_f64().unwrap();
    for i in 0..2 {
        assert!((got[i] - pv[i]).abs() < 1e-12, "{got:?} vs {pv:?}");
    }
}

#[test]
fn adamw_matches_pytorch_formula_with_groups() {
    let w = Tensor::from_f64s(&[0.5, -1.5, 2.0, 0.1], &[2, 2], DType::F64, &dev())
        .unwrap()
        .requires_grad();
    let b = Tensor::from_f64s(&[0.3, -0.2], &[2], DType::F64, &dev())
        .unwrap()
        .requires_grad();
    let groups = decay_groups(vec![("w".into(), w.clone()), ("b".into(), b.clone())], 0.1);
    assert_eq!(groups[0].params.len(), 1);
    let mut opt = Adam::new(groups, AdamConfig::adamw(0.05)).unwrap();
    let (lr, b1, b2, eps, wd) = (0.05f64, 0.9f64, 0.999f64, 1e-8, 0.1);
    let mut ref_p: Vec<Vec<f64>> = vec![w.to_vec_f64().unwrap(), b.to_vec_f64().unwrap()];
    let mut m = vec![vec![0.0; 4], vec![0.0; 2]];
    let mut v = m.clone();
    for t in 1..=4 {
        opt.zero_grad();
        // loss = sum(w³) + sum(b²)
        w.powf(3.0)
            .unwrap()
            .sum_all()
            .unwrap()
            .add(&b.sqr().unwrap().sum_all().unwrap())
            .unwrap()
            .backward()
            .unwrap();
        opt.step().unwrap();
        for (k, decay) in [(0usize, wd), (1, 0.0)] {
            for i in 0..ref_p[k].len() {
                let x = ref_p[k][i];
                let g = if k == 0 { 3.0 * x * x } else { 2.0 * x };
                let x = x * (1.0 - lr * decay);
                m[k][i] = b1 * m[k][i] + (1.0 - b1) * g;
                v[k][i] = b2 * v[k][i] + (1.0 - b2) * g * g;
                let mh = m[k][i] / (1.0 - b1.powi(t));
                let vh = v[k][i] / (1.0 - b2.powi(t));
                ref_p[k][i] = x - lr * mh / (vh.sqrt() + eps);
            }
        }
    }
    for (got, want) in [
        (w.to_vec_f64().unwrap(), &ref_p[0]),
        (b.to_vec_f64().unwrap(), &ref_p[1]),
    ] {
        for (a, e) in got.iter().zip(want.iter()) {
            assert!((a - e).abs() < 1e-12, "{got:?} vs {want:?}");
        }
    }
}

#[test]
fn clip_grad_norm_scales_to_max() {
    let a = Tensor::from_f64s(&[3.0], &[1], DType::F64, &dev())
        .unwrap()
        .requires_grad();
    let b = Tensor::from_f64s(&[4.0], &[1], DType::F64, &dev())
        .unwrap()
        .requires_grad();
    a.mul(&a)
        .unwrap()
        .mul_scalar(0.5)
        .unwrap()
        .add(&b.mul(&b).unwrap().mul_scalar(0.5).unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let n = clip_grad_norm(&[a.clone(), b.clone()], 1.0).unwrap();
    assert!((n - 5.0).abs() < 1e-12);
    let (ga, gb) = (
        a.grad().unwrap().to_scalar().unwrap(),
        b.grad().unwrap().to_scalar().unwrap(),
    );
    assert!((ga.hypot(gb) - 1.0).abs() < 1e-6);
    assert!((ga / gb - 0.75).abs() < 1e-12);
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("unigrad-nn-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn values(m: &TransformerLm) -> Vec<(String, Vec<f64>)> {
    checkpoint::state_tensors(m)
        .into_iter()
        .map(|(n, t)| (n, t.to_vec_f64().unwrap()))
        .collect()
}

#[test]
fn checkpoint_round_trip_with_buffers() {
    let d = tmpdir("rt");
    let path = d.join("m.safetensors");
    let a = tiny_lm(NormKind::BatchNorm);
    // move running statistics off their initial values
    a.forward(&ids(&[1, 2, 3, 4], 1, 4), None).unwrap();
    save(&a, &path).unwrap();
    let cfg = *a.config();
    let b = with_generator(&mut Generator::new(99), || TransformerLm::new(cfg, DType::F32, &dev())).unwrap();
    assert_ne!(values(&a), values(&b));
    let rep = load(&b, &path).unwrap();
    assert!(rep.is_clean(), "{rep}");
    assert_eq!(values(&a), values(&b));
    // the file is a plain safetensors file with the same names
    let sd = checkpoint::load_tensors(&path).unwrap();
    assert!(sd.tensors.contains_key("blocks.1.norm2.running_var"));
    assert!(sd.tensors.contains_key("blocks.0.norm1.num_batches_tracked"));
    assert!(!d
        .read_dir()
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().contains("tmp")));
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn checkpoint_mismatches_are_reported_by_name_and_change_nothing() {
    let d = tmpdir("mm");
    let path = d.join("ln.safetensors");
    let ln = tiny_lm(NormKind::LayerNorm);
    save(&ln, &path).unwrap();
    // BatchNorm model: same params, plus buffers the file lacks
    let bn = tiny_lm(NormKind::BatchNorm);
    let before = values(&bn);
    let e = load(&bn, &path).unwrap_err().to_string();
    assert!(
        e.contains("missing") && e.contains("blocks.0.norm1.running_mean"),
        "{e}"
    );
    assert_eq!(before, values(&bn));
    // non-strict load tolerates the missing buffers
    let rep = load_with(&bn, &path, false).unwrap();
    assert_eq!(rep.missing.len(), 5 * 3); // 2 blocks × 2 norms + final norm, 3 buffers each
                                          // RMS model: norm biases are unexpected
    let rms = tiny_lm(NormKind::RmsNorm);
    let e = load(&rms, &path).unwrap_err().to_string();
    assert!(e.contains("unexpected") && e.contains("norm_f.bias"), "{e}");
    // shape mismatch: a wider model
    let mut cfg = *ln.config();
    cfg.d_ff = 32;
    let wide = TransformerLm::new(cfg, DType::F32, &dev()).unwrap();
    let before = values(&wide);
    let e = load_with(&wide, &path, false).unwrap_err().to_string();
    assert!(
        e.contains("blocks.0.ff1.weight: file [16, 8] f32 vs module [32, 8] f32"),
        "{e}"
    );
    assert_eq!(before, values(&wide));
    // a floating dtype difference is a cast, as in PyTorch's load_state_dict, and is
    // reported for every tensor (f32 values widen exactly to f64)
    let cfg = *ln.config();
    let m64 = TransformerLm::new(cfg, DType::F64, &dev()).unwrap();
    let rep = load(&m64, &path).unwrap();
    assert_eq!(rep.casts.len(), values(&ln).len(), "{rep}");
    assert!(
        rep.casts.contains(&"tok.weight: file f32 -> module f64".to_string()),
        "{rep}"
    );
    assert_eq!(values(&m64), values(&ln));
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn truncated_and_corrupted_checkpoints_are_clear_errors() {
    let d = tmpdir("bad");
    let path = d.join("m.safetensors");
    let m = tiny_lm(NormKind::LayerNorm);
    save(&m, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let before = values(&m);
    // truncated
    let cut = d.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    let e = load(&m, &cut).unwrap_err().to_string();
    assert!(e.contains("truncated or corrupted"), "{e}");
    // header garbage
    let mut hdr = bytes.clone();
    hdr[12] = b'#';
    let bad = d.join("hdr.safetensors");
    std::fs::write(&bad, &hdr).unwrap();
    assert!(load(&m, &bad)
        .unwrap_err()
        .to_string()
        .contains("truncated or corrupted"));
    // flipped data byte: caught by the checksum
    let mut flip = bytes.clone();
    let n = flip.len();
    flip[n - 3] ^= 0x40;
    let bad = d.join("flip.safetensors");
    std::fs::write(&bad, &flip).unwrap();
    let e = load(&m, &bad).unwrap_err().to_string();
    assert!(e.contains("checksum"), "{e}");
    // tiny and missing files
    std::fs::write(&bad, b"abc").unwrap();
    assert!(load(&m, &bad).is_err());
    assert!(load(&m, d.join("nope.safetensors"))
        .unwrap_err()
        .to_string()
        .contains("nope.safetensors"));
    assert_eq!(before, values(&m));
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn optimizer_state_round_trip_resumes_identically() {
    let d = tmpdir("opt");
    let x = ids(&[1, 2, 3, 4, 5, 6], 1, 6);
    let y = ids(&[2, 3, 4, 5, 6, 7], 1, 6);
    let train = |m: &TransformerLm, opt: &mut Adam, n: usize| {
        for _ in 0..n {
            opt.zero_grad();
            m.loss(&x, &y).unwrap().backward().unwrap();
            opt.step().unwrap();
        }
    };
    let a = tiny_lm(NormKind::LayerNorm);
    let mut oa = Adam::new(decay_groups(a.named_params(), 0.1), AdamConfig::adamw(1e-2)).unwrap();
    train(&a, &mut oa, 3);
    save(&a, d.join("m.safetensors")).unwrap();
    let meta: HashMap<String, String> = [("epoch".to_string(), "1".to_string())].into();
    save_optimizer(&oa, d.join("o.safetensors"), &meta).unwrap();
    train(&a, &mut oa, 2);
    // resume into fresh objects
    let b = with_generator(&mut Generator::new(42), || {
        TransformerLm::new(*a.config(), DType::F32, &dev())
    })
    .unwrap();
    let mut ob = Adam::new(decay_groups(b.named_params(), 0.1), AdamConfig::adamw(1e-2)).unwrap();
    load(&b, d.join("m.safetensors")).unwrap();
    let got = load_optimizer(&mut ob, d.join("o.safetensors")).unwrap();
    assert_eq!(got.get("epoch").map(String::as_str), Some("1"));
    assert_eq!(ob.steps(), 3);
    train(&b, &mut ob, 2);
    assert_eq!(values(&a), values(&b));
    // wrong optimizer kind
    let mut sgd = Sgd::new(vec![ParamGroup::new(b.named_params(), 0.0)], 0.1, 0.9, false).unwrap();
    assert!(load_optimizer(&mut sgd, d.join("o.safetensors"))
        .unwrap_err()
        .to_string()
        .contains("adamw"));
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn train_eval_switch_reaches_every_layer() {
    let mut m = tiny_lm(NormKind::BatchNorm);
    let before = values(&m);
    m.eval();
    no_grad(|| m.forward(&ids(&[1, 2, 3], 1, 3), None).unwrap());
    assert_eq!(before, values(&m), "eval forward must not touch running statistics");
    m.train();
    m.forward(&ids(&[1, 2, 3], 1, 3), None).unwrap();
    assert_ne!(before, values(&m));
}

#[test]
fn adam_with_zero_lr_keeps_the_parameters_then_steps_normally() {
    let d = dev();
    let p = Tensor::randn(&[3, 4], DType::F64, &d).unwrap().requires_grad();
    let before = p.to_vec_f64().unwrap();
    p.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let cfg = AdamConfig::adam(0.0);
    let mut opt = Adam::new(vec![ParamGroup::new(vec![("p".into(), p.clone())], 0.0)], cfg).unwrap();
    opt.step().unwrap();
    assert_eq!(p.to_vec_f64().unwrap(), before);
    assert_eq!(opt.steps(), 1);
    // the next step with a learning rate moves p by about lr (Adam's first steps are ≈ lr·sign)
    opt.set_lr(0.01).unwrap();
    opt.step().unwrap();
    let after = p.to_vec_f64().unwrap();
    for (a, b) in after.iter().zip(&before) {
        assert!((a - b).abs() > 1e-3 && (a - b).abs() < 0.02, "{a} vs {b}");
    }
}

fn one_param(v: &[f32]) -> (String, Tensor) {
    let t = Tensor::from_vec(v.to_vec(), &[v.len()], &dev())
        .unwrap()
        .requires_grad();
    ("w".to_string(), t)
}

/// The error text of `r`, which must be an error.
fn err_text<T: std::fmt::Debug>(r: unigrad_core::Result<T>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn optimizers_reject_bad_hyperparameters_naming_the_optimizer_and_value() {
    let group = |wd: f64| vec![ParamGroup::new(vec![one_param(&[1.0])], wd)];
    for (lr, shown) in [(f64::NAN, "NaN"), (-0.1, "-0.1"), (f64::INFINITY, "inf")] {
        let e = err_text(Sgd::new(group(0.0), lr, 0.0, false));
        assert!(
            e.contains("Sgd") && e.contains(&format!("learning rate {shown}")),
            "{e}"
        );
        let e = err_text(Adam::new(group(0.0), AdamConfig::adam(lr)));
        assert!(
            e.starts_with("Adam:") && e.contains(&format!("learning rate {shown}")),
            "{e}"
        );
        let e = err_text(Adam::new(group(0.0), AdamConfig::adamw(lr)));
        assert!(
            e.starts_with("AdamW:") && e.contains(&format!("learning rate {shown}")),
            "{e}"
        );
    }
    for (wd, shown) in [(-0.01, "-0.01"), (f64::NAN, "NaN"), (f64::INFINITY, "inf")] {
        let e = err_text(Adam::new(group(wd), AdamConfig::adamw(1e-3)));
        assert!(
            e.contains("AdamW") && e.contains(&format!("weight decay {shown}")),
            "{e}"
        );
        let e = err_text(Sgd::new(group(wd), 0.1, 0.0, false));
        assert!(e.contains("Sgd") && e.contains(&format!("weight decay {shown}")), "{e}");
    }
    let adam = |f: fn(&mut AdamConfig)| {
        let mut c = AdamConfig::adam(1e-3);
        f(&mut c);
        err_text(Adam::new(group(0.0), c))
    };
    for (e, want) in [
        (adam(|c| c.beta1 = 1.0), "beta1 1 is not in [0, 1)"),
        (adam(|c| c.beta1 = -0.1), "beta1 -0.1 is not in [0, 1)"),
        (adam(|c| c.beta2 = 1.0), "beta2 1 is not in [0, 1)"),
        (adam(|c| c.beta2 = f64::NAN), "beta2 NaN is not in [0, 1)"),
        (adam(|c| c.eps = -1e-8), "eps -0.00000001 must be finite and >= 0"),
        (adam(|c| c.eps = f64::INFINITY), "eps inf must be finite and >= 0"),
        (adam(|c| c.eps = f64::NAN), "eps NaN must be finite and >= 0"),
    ] {
        assert!(e.starts_with("Adam:") && e.contains(want), "{e} (want {want})");
    }
}

#[test]
fn set_lr_and_loaded_state_refuse_a_bad_rate_and_keep_the_old_one() {
    let (name, w) = one_param(&[1.0, 2.0]);
    let mut adam = Adam::new(
        vec![ParamGroup::new(vec![(name.clone(), w.clone())], 0.0)],
        AdamConfig::adamw(0.1),
    )
    .unwrap();
    let mut sgd = Sgd::new(vec![ParamGroup::new(vec![(name, w.clone())], 0.0)], 0.1, 0.0, false).unwrap();
    for bad in [f64::NAN, -1.0, f64::NEG_INFINITY] {
        let e = err_text(adam.set_lr(bad));
        assert!(
            e.starts_with("AdamW::set_lr") && e.contains(&format!("learning rate {bad}")),
            "{e}"
        );
        assert_eq!(adam.lr(), 0.1);
        let e = err_text(sgd.set_lr(bad));
        assert!(
            e.starts_with("Sgd::set_lr") && e.contains(&format!("learning rate {bad}")),
            "{e}"
        );
        assert_eq!(sgd.lr(), 0.1);
    }
    // one step after the refused rate leaves the weights finite
    w.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    adam.step().unwrap();
    assert!(w.to_vec::<f32>().unwrap().iter().all(|v| v.is_finite()));
    // a state with a bad rate is refused, and nothing changes
    let mut st = adam.state();
    st.lr = f64::NAN;
    let e = err_text(adam.load_state(&st));
    assert!(e.contains("learning rate NaN"), "{e}");
    assert_eq!(adam.lr(), 0.1);
    assert_eq!(adam.state().param_steps, vec![("w".to_string(), 1)]);
}

#[test]
fn schedules_refuse_bad_rates() {
    use unigrad_nn::schedule::LrSchedule;
    let cases = [
        (LrSchedule::Constant { lr: f64::NAN }, "lr NaN"),
        (
            LrSchedule::WarmupCosine {
                lr: -1.0,
                warmup: 1,
                total: 2,
                min_lr: 0.0,
            },
            "lr -1",
        ),
        (
            LrSchedule::WarmupCosine {
                lr: 1.0,
                warmup: 1,
                total: 2,
                min_lr: f64::INFINITY,
            },
            "min_lr inf",
        ),
        (
            LrSchedule::InverseSqrt {
                lr: 1.0,
                warmup: 10,
                warmup_init_lr: -1e-7,
            },
            "warmup_init_lr -0.0000001",
        ),
    ];
    for (s, want) in cases {
        let e = err_text(s.validate());
        assert!(e.starts_with("LrSchedule") && e.contains(want), "{e} (want {want})");
    }
}

#[test]
fn optimizer_state_rejects_inconsistent_step_counts() {
    let (name, w) = one_param(&[1.0, 2.0]);
    let mut adam = Adam::new(
        vec![ParamGroup::new(vec![(name, w.clone())], 0.0)],
        AdamConfig::adam(0.1),
    )
    .unwrap();
    w.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    adam.step().unwrap();
    let good = adam.state();
    let mut st = good.clone();
    st.param_steps = vec![("nope".into(), 1), ("w".into(), 1)];
    assert!(err_text(adam.load_state(&st)).contains("`nope` names no parameter"));
    st.param_steps = Vec::new();
    assert!(err_text(adam.load_state(&st)).contains("`w` has saved moments but a step count of 0"));
    st.param_steps = vec![("w".into(), 1), ("w".into(), 2)];
    assert!(err_text(adam.load_state(&st)).contains("two step counts for `w`"));
    assert_eq!(adam.state().param_steps, good.param_steps);
}

#[test]
fn optimizer_files_without_per_parameter_steps_still_load() {
    let d = tmpdir("legacy-opt");
    let (name, w) = one_param(&[1.0, 2.0]);
    let (_, frozen) = one_param(&[3.0]);
    let groups = || {
        vec![ParamGroup::new(
            vec![(name.clone(), w.clone()), ("frozen".into(), frozen.clone())],
            0.0,
        )]
    };
    let mut adam = Adam::new(groups(), AdamConfig::adam(0.1)).unwrap();
    w.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    adam.step().unwrap();
    // the layout of a file written before per-parameter counts: one shared `unigrad.step`
    let st = adam.state();
    let meta: HashMap<String, String> = [
        (checkpoint::OPTIMIZER_KEY.to_string(), "adam".to_string()),
        ("unigrad.step".to_string(), "5".to_string()),
        ("unigrad.lr".to_string(), "1e-1".to_string()),
    ]
    .into();
    let old = d.join("old.safetensors");
    checkpoint::save_tensors(&old, &st.tensors, &meta).unwrap();
    let mut again = Adam::new(groups(), AdamConfig::adam(0.1)).unwrap();
    load_optimizer(&mut again, &old).unwrap();
    assert_eq!(again.steps(), 5);
    assert_eq!(again.state().param_steps, vec![("w".to_string(), 5)]);
    // a file of an unknown later format is refused by name
    let mut newer = meta.clone();
    newer.insert(checkpoint::OPTIMIZER_FORMAT_KEY.to_string(), "3".to_string());
    let future = d.join("future.safetensors");
    checkpoint::save_tensors(&future, &st.tensors, &newer).unwrap();
    assert!(err_text(load_optimizer(&mut again, &future)).contains("unknown optimizer file format `3`"));
    // the current format round-trips the counts
    let cur = d.join("cur.safetensors");
    save_optimizer(&adam, &cur, &HashMap::new()).unwrap();
    let mut third = Adam::new(groups(), AdamConfig::adam(0.1)).unwrap();
    load_optimizer(&mut third, &cur).unwrap();
    assert_eq!(third.state().param_steps, vec![("w".to_string(), 1)]);
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn checkpoint_path_errors_name_the_path_given() {
    let m = tiny_lm(NormKind::LayerNorm);
    let e = err_text(save(&m, ""));
    assert!(e.contains("empty (\"\")") && e.contains("write"), "{e}");
    let e = err_text(load(&m, ""));
    assert!(e.contains("empty (\"\")") && e.contains("read"), "{e}");
    let (name, w) = one_param(&[1.0]);
    let mut sgd = Sgd::new(vec![ParamGroup::new(vec![(name, w)], 0.0)], 0.1, 0.0, false).unwrap();
    assert!(err_text(save_optimizer(&sgd, "", &HashMap::new())).contains("empty (\"\")"));
    assert!(err_text(load_optimizer(&mut sgd, "")).contains("empty (\"\")"));
    let d = tmpdir("paths");
    let up = d.join("..");
    let e = err_text(save(&m, &up));
    assert!(
        e.contains(&format!("{:?} names no file", up.display().to_string())),
        "{e}"
    );
    let missing = d.join("nope.safetensors");
    let e = err_text(load(&m, &missing));
    assert!(e.contains(&format!("{:?}: read", missing.display().to_string())), "{e}");
    std::fs::remove_dir_all(&d).ok();
}
