//! Statistics tracing (`unigrad_nn::norm::trace`) on the device under test: what each norm
//! records, checked against direct computations and the layers' own state; naming, step
//! tagging, pausing, detaching and CSV export through a model (the LM, Seq2Seq and ViT all
//! reach their norms through `Module::visit_norms_mut`); that tracing changes no result; and
//! the gradient statistics taken through hooks (`grad_output` at norm sites, `Tracer::watch`
//! on any intermediate, `Tracer::watch_params` on every parameter of a module).

use unigrad_core::{manual_seed, DType, Device, Result, Tensor};
use unigrad_nn::norm::trace::{Stat, TraceRecord, Tracer, CSV_HEADER};
use unigrad_nn::norm::{BatchNorm, LayerNorm, Norm, PnConfig, PowerNorm, UnConfig, UnifiedNorm};
use unigrad_nn::{
    LmConfig, Module, NormKind, PositionKind, Seq2Seq, Seq2SeqConfig, Traceable, TransformerLm, Vit, VitConfig,
};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * (1.0 + a.abs().max(b.abs()))
}

fn find<'a>(recs: &'a [TraceRecord], step: u64, quantity: &str) -> &'a TraceRecord {
    recs.iter()
        .find(|r| r.step == step && r.quantity == quantity)
        .unwrap_or_else(|| panic!("no {quantity} record at step {step}: {recs:?}"))
}

fn summary(v: &[f64]) -> (f64, f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    (mean, min, max)
}

fn check_summary(r: &TraceRecord, v: &[f64]) {
    let (mean, min, max) = summary(v);
    assert!(
        close(r.mean, mean) && close(r.min, min) && close(r.max, max),
        "{}: recorded ({}, {}, {}) vs direct ({mean}, {min}, {max})",
        r.quantity,
        r.mean,
        r.min,
        r.max
    );
    assert_eq!(r.count, v.len());
}

/// Per-channel mean of x² over the tokens of `[B, N, C]` (host).
fn quad_mean(x: &[f64], c: usize) -> Vec<f64> {
    let rows = x.len() / c;
    (0..c)
        .map(|j| (0..rows).map(|i| x[i * c + j] * x[i * c + j]).sum::<f64>() / rows as f64)
        .collect()
}

/// UN's records, step by step, equal direct computations and the layer's state, through an outlier skip.
pub fn un_records_match_the_layer_state(dev: &Device) -> Result<()> {
    manual_seed(1);
    let d = dev.clone();
    let cfg = UnConfig {
        warmup_iters: 3,
        outlier_filtration: true,
        ..UnConfig::default()
    }
    .with_window(2);
    let mut un = UnifiedNorm::new(3, cfg, DType::F64, &d).unwrap();
    let tracer = Tracer::new();
    un.set_trace(Some(tracer.site("un0")));
    let mut rho_before = vec![1.0; 3];
    for step in 1..=6u64 {
        tracer.set_step(step);
        // step 6 is a 100x outlier batch: the filter (active from iteration 3) must fire
        let scale = if step == 6 { 100.0 } else { 1.0 };
        let x = Tensor::randn(&[2, 4, 3], DType::F64, &d)
            .unwrap()
            .mul_scalar(scale)
            .unwrap();
        let skips_before = un.skip_count().unwrap();
        let y = un.forward(&x, None).unwrap();
        y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let recs = tracer.records();
        let q = quad_mean(&x.to_vec_f64().unwrap(), 3);
        check_summary(find(&recs, step, "batch_stat"), &q);
        let st = un.state();
        let rho = st.running_var.to_vec_f64().unwrap();
        check_summary(find(&recs, step, "running_stat"), &rho);
        let last = un.last_step().unwrap();
        check_summary(find(&recs, step, "used_stat"), &last.var.to_vec_f64().unwrap());
        check_summary(find(&recs, step, "r"), &last.r.to_vec_f64().unwrap());
        let fl: Vec<f64> = q.iter().zip(&rho_before).map(|(q, r)| (q / r - 1.0).abs()).collect();
        check_summary(find(&recs, step, "fluctuation"), &fl);
        let skipped = un.skip_count().unwrap() > skips_before;
        assert_eq!(find(&recs, step, "skip").mean, if skipped { 1.0 } else { 0.0 });
        assert_eq!(
            find(&recs, step, "smoothed").mean,
            if last.smoothed { 1.0 } else { 0.0 }
        );
        // the backward's records: ema_gz equals the buffer after the step
        check_summary(find(&recs, step, "ema_gz"), &st.ema_gz.to_vec_f64().unwrap());
        assert_eq!(find(&recs, step, "grad_stat").count, 3);
        assert_eq!(find(&recs, step, "grad_stat_used").count, 3);
        // window geometric mean from the buffer after the write
        let qb = st.buffer_x2.to_vec_f64().unwrap();
        let gm: Vec<f64> = (0..3).map(|j| (qb[j] * qb[3 + j]).sqrt()).collect();
        check_summary(find(&recs, step, "window_gm"), &gm);
        rho_before = rho;
        if step == 6 {
            assert!(skipped, "a 100x batch after warm-up must be filtered");
        }
    }
    assert!(tracer.records().iter().all(|r| r.layer == "un0" && r.norm == "un"));
    // 12 quantities per step: 9 forward + 3 backward
    assert_eq!(tracer.len(), 6 * 12);
    Ok(())
}

/// BatchNorm records its masked batch statistics and running statistics; eval records nothing.
pub fn bn_records_batch_and_running_statistics(dev: &Device) -> Result<()> {
    manual_seed(2);
    let d = dev.clone();
    let mut bn = BatchNorm::new(4, DType::F64, &d).unwrap();
    let tracer = Tracer::new();
    bn.set_trace(Some(tracer.site("bn")));
    let x = Tensor::randn(&[3, 5, 4], DType::F64, &d)
        .unwrap()
        .affine(2.0, 0.5)
        .unwrap();
    let mut pad = vec![0.0; 15];
    pad[4] = 1.0;
    pad[13] = 1.0;
    let mask = Tensor::from_vec(pad.clone(), &[3, 5], &d).unwrap();
    tracer.set_step(7);
    bn.forward(&x, Some(&mask)).unwrap();
    let recs = tracer.records();
    let xv = x.to_vec_f64().unwrap();
    let valid: Vec<usize> = (0..15).filter(|&i| pad[i] == 0.0).collect();
    let n = valid.len() as f64;
    let mean: Vec<f64> = (0..4)
        .map(|c| valid.iter().map(|&i| xv[i * 4 + c]).sum::<f64>() / n)
        .collect();
    let var: Vec<f64> = (0..4)
        .map(|c| valid.iter().map(|&i| (xv[i * 4 + c] - mean[c]).powi(2)).sum::<f64>() / n)
        .collect();
    check_summary(find(&recs, 7, "batch_mean"), &mean);
    check_summary(find(&recs, 7, "batch_stat"), &var);
    check_summary(
        find(&recs, 7, "running_mean"),
        &bn.running_mean.get().to_vec_f64().unwrap(),
    );
    check_summary(
        find(&recs, 7, "running_stat"),
        &bn.running_var.get().to_vec_f64().unwrap(),
    );
    let fl: Vec<f64> = var.iter().map(|v| (v / 1.0 - 1.0).abs()).collect();
    check_summary(find(&recs, 7, "fluctuation"), &fl);
    assert_eq!(recs.len(), 5);
    // eval mode records nothing (it reads no batch statistics)
    bn.set_train(false);
    bn.forward(&x, None).unwrap();
    assert_eq!(tracer.len(), 5);
    Ok(())
}

/// PowerNorm records `q`, `running_phi`, `ema_gz` and which statistic the forward used.
pub fn pn_records_q_phi_and_ema_gz(dev: &Device) -> Result<()> {
    manual_seed(3);
    let d = dev.clone();
    let cfg = PnConfig {
        warmup_iters: 2,
        ..PnConfig::default()
    };
    let mut pn = PowerNorm::new(4, cfg, DType::F64, &d).unwrap();
    let tracer = Tracer::new();
    pn.set_trace(Some(tracer.site("pn")));
    for step in 1..=3u64 {
        tracer.set_step(step);
        let x = Tensor::randn(&[2, 3, 4], DType::F64, &d).unwrap();
        let y = pn.forward(&x, None).unwrap();
        y.sum_all().unwrap().backward().unwrap();
        let recs = tracer.records();
        let last = pn.last_step().unwrap();
        check_summary(find(&recs, step, "batch_stat"), &last.var.to_vec_f64().unwrap());
        let st = pn.state();
        check_summary(find(&recs, step, "running_stat"), &st.running_phi.to_vec_f64().unwrap());
        check_summary(find(&recs, step, "ema_gz"), &st.ema_gz.to_vec_f64().unwrap());
        assert_eq!(
            find(&recs, step, "used_batch_stat").mean,
            if step <= 2 { 1.0 } else { 0.0 }
        );
        assert_eq!(find(&recs, step, "grad_stat").count, 4);
    }
    Ok(())
}

/// LayerNorm records per-token means and variances; a paused tracer records nothing.
pub fn ln_records_per_token_statistics(dev: &Device) -> Result<()> {
    manual_seed(4);
    let d = dev.clone();
    let mut ln = LayerNorm::new(5, DType::F64, &d).unwrap();
    let tracer = Tracer::new();
    ln.set_trace(Some(tracer.site("ln")));
    let x = Tensor::randn(&[2, 3, 5], DType::F64, &d).unwrap();
    ln.forward(&x).unwrap();
    let xv = x.to_vec_f64().unwrap();
    let means: Vec<f64> = xv.chunks(5).map(|r| r.iter().sum::<f64>() / 5.0).collect();
    let vars: Vec<f64> = xv
        .chunks(5)
        .zip(&means)
        .map(|(r, m)| r.iter().map(|v| (v - m).powi(2)).sum::<f64>() / 5.0)
        .collect();
    let recs = tracer.records();
    check_summary(find(&recs, 0, "token_mean"), &means);
    let r = find(&recs, 0, "token_var");
    check_summary(r, &vars);
    let (m, _, _) = summary(&vars);
    let std = (vars.iter().map(|v| (v - m).powi(2)).sum::<f64>() / 6.0).sqrt();
    assert!(close(r.std, std));
    // paused: nothing
    tracer.pause();
    ln.forward(&x).unwrap();
    assert_eq!(tracer.len(), 2);
    Ok(())
}

fn small_lm(dev: &Device, norm: NormKind) -> TransformerLm {
    manual_seed(5);
    let cfg = LmConfig {
        vocab: 11,
        d_model: 8,
        heads: 2,
        d_ff: 16,
        layers: 2,
        max_seq: 6,
        ..LmConfig::reference(norm)
    };
    TransformerLm::new(cfg, DType::F32, dev).unwrap()
}

fn ids(dev: &Device, seed: i64) -> (Tensor, Tensor) {
    let x: Vec<i64> = (0..12).map(|i| (i * 7 + seed) % 11).collect();
    let y: Vec<i64> = (0..12).map(|i| (i * 5 + seed + 1) % 11).collect();
    (
        Tensor::from_vec(x, &[2, 6], dev).unwrap(),
        Tensor::from_vec(y, &[2, 6], dev).unwrap(),
    )
}

/// Tracing a whole LM: site names, step tags, pause, detach and CSV export, for every traced norm kind.
pub fn model_tracing_names_steps_pauses_detaches_and_exports(dev: &Device) -> Result<()> {
    for kind in [
        NormKind::LayerNorm,
        NormKind::BatchNorm,
        NormKind::PowerNorm,
        NormKind::Unified,
    ] {
        let mut m = small_lm(dev, kind);
        let tracer = Tracer::new();
        m.enable_trace(&tracer);
        for s in 1..=3u64 {
            tracer.set_step(s);
            let (x, y) = ids(dev, s as i64);
            m.loss(&x, &y).unwrap().backward().unwrap();
        }
        assert_eq!(
            tracer.layers(),
            [
                "blocks.0.norm1",
                "blocks.0.norm2",
                "blocks.1.norm1",
                "blocks.1.norm2",
                "norm_f"
            ],
            "{kind}"
        );
        let q = match kind {
            NormKind::LayerNorm => "token_var",
            _ => "running_stat",
        };
        let series = tracer.series("blocks.1.norm2", q, Stat::Mean);
        assert_eq!(series.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2, 3], "{kind}");
        let n = tracer.len();
        // eval forwards of batch-statistics norms record nothing; a paused tracer nothing at all
        tracer.pause();
        m.eval();
        m.forward(&ids(dev, 9).0, None).unwrap();
        m.train();
        m.loss(&ids(dev, 9).0, &ids(dev, 9).1).unwrap().backward().unwrap();
        assert_eq!(tracer.len(), n, "{kind}: paused tracer recorded");
        tracer.resume();
        m.disable_trace();
        m.loss(&ids(dev, 9).0, &ids(dev, 9).1).unwrap().backward().unwrap();
        assert_eq!(tracer.len(), n, "{kind}: detached layers recorded");
        // CSV: header + one line per record, parseable numbers
        let csv = tracer.to_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(lines.len(), n + 1);
        let fields: Vec<&str> = lines[1].split(',').collect();
        assert_eq!(fields.len(), 9);
        assert_eq!(fields[0], "1");
        assert!(fields[4].parse::<f64>().unwrap().is_finite());
        let path = std::env::temp_dir().join(format!("unigrad_trace_{}_{kind}.csv", std::process::id()));
        tracer.write_csv(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), csv);
        std::fs::remove_file(&path).unwrap();
    }
    Ok(())
}

/// Losses, gradients and buffers are the same with and without tracing (gradient hooks included).
pub fn tracing_changes_no_result(dev: &Device) -> Result<()> {
    for kind in [
        NormKind::LayerNorm,
        NormKind::BatchNorm,
        NormKind::PowerNorm,
        NormKind::Unified,
    ] {
        let run = |trace: bool| {
            let mut m = small_lm(dev, kind);
            let tracer = Tracer::new();
            if trace {
                m.enable_trace(&tracer);
                // gradient records come from hooks, which must not change a gradient either
                tracer.set_gradients(true);
            }
            let mut out = Vec::new();
            for s in 0..3 {
                let (x, y) = ids(dev, s);
                let loss = m.loss(&x, &y).unwrap();
                loss.backward().unwrap();
                out.push(loss.to_scalar().unwrap());
            }
            for (_, p) in m.named_params() {
                out.extend(p.grad().unwrap().to_vec_f64().unwrap());
            }
            for (_, b) in m.named_buffers() {
                out.extend(b.get().to_vec_f64().unwrap());
            }
            (out, tracer.len())
        };
        let (plain, n0) = run(false);
        let (traced, n1) = run(true);
        assert_eq!(n0, 0);
        assert!(n1 > 0);
        assert_eq!(plain, traced, "{kind}");
    }
    Ok(())
}

/// RMSNorm sites record nothing.
pub fn rms_norm_is_not_traced(dev: &Device) -> Result<()> {
    let mut m = small_lm(dev, NormKind::RmsNorm);
    let tracer = Tracer::new();
    m.enable_trace(&tracer);
    m.loss(&ids(dev, 1).0, &ids(dev, 1).1).unwrap().backward().unwrap();
    assert!(tracer.is_empty());
    assert!(matches!(m.blocks[0].norm1, Norm::Rms(_)));
    Ok(())
}

/// The records of one traced training step of `model`, then `disable_trace`: the site
/// names in order of first appearance, and that a detached model records nothing more.
fn traced_layers<M: Module>(model: &mut M, step: impl Fn(&M) -> Result<()>) -> Result<Vec<String>> {
    let tracer = Tracer::new();
    model.enable_trace(&tracer);
    tracer.set_step(1);
    step(model)?;
    let layers = tracer.layers();
    assert!(tracer.records().iter().all(|r| r.step == 1));
    let n = tracer.len();
    model.disable_trace();
    step(model)?;
    assert_eq!(tracer.len(), n, "a detached model recorded");
    Ok(layers)
}

/// Seq2Seq is traced at every encoder, decoder and final norm, named like its parameters.
pub fn seq2seq_is_traced(dev: &Device) -> Result<()> {
    manual_seed(6);
    let cfg = Seq2SeqConfig {
        src_vocab: 9,
        tgt_vocab: 9,
        d_model: 8,
        heads: 2,
        d_ff: 16,
        enc_layers: 1,
        dec_layers: 1,
        max_len: 8,
        norm: NormKind::Unified.into(),
        pre_norm: true,
        positions: PositionKind::Sinusoidal,
        dropout: 0.0,
        ln_scaling: false,
        pad_id: Some(0),
        scale_embeddings: true,
    };
    let mut m = Seq2Seq::new(cfg, DType::F32, dev)?;
    let src = Tensor::from_vec(vec![3i64, 4, 5, 6, 7, 8, 0, 0], &[2, 4], dev)?;
    let tgt = Tensor::from_vec(vec![1i64, 3, 4, 5, 1, 7, 8, 2], &[2, 4], dev)?;
    let layers = traced_layers(&mut m, |m| {
        let logits = m.forward(&src, &tgt, None, None)?;
        logits.sqr()?.mean_all()?.backward()
    })?;
    assert_eq!(
        layers,
        [
            "encoder.0.norm1",
            "encoder.0.norm2",
            "enc_norm",
            "decoder.0.norm1",
            "decoder.0.norm2",
            "decoder.0.norm3",
            "dec_norm"
        ]
    );
    Ok(())
}

/// ViT is traced at every block norm and its final norm.
pub fn vit_is_traced(dev: &Device) -> Result<()> {
    manual_seed(7);
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
        dropout: 0.0,
        ln_scaling: false,
    };
    let mut m = Vit::new(cfg, DType::F32, dev)?;
    let x = Tensor::randn(&[3, 1, 8, 8], DType::F32, dev)?;
    let layers = traced_layers(&mut m, |m| m.forward(&x)?.sqr()?.mean_all()?.backward())?;
    assert_eq!(
        layers,
        [
            "blocks.0.norm1",
            "blocks.0.norm2",
            "blocks.1.norm1",
            "blocks.1.norm2",
            "norm"
        ]
    );
    Ok(())
}

/// `check_summary` plus the population standard deviation.
fn check_full_summary(r: &TraceRecord, v: &[f64]) {
    check_summary(r, v);
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt();
    assert!(
        close(r.std, std),
        "{}: recorded std {} vs direct {std}",
        r.quantity,
        r.std
    );
    let abs_max = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    assert!(
        close(r.abs_max(), abs_max),
        "{}: abs_max {} vs {abs_max}",
        r.quantity,
        r.abs_max()
    );
}

/// With `Tracer::set_gradients`, every traced norm kind records `grad_output` through a
/// hook on its output: once per backward, tagged with the step current at backward time,
/// equal to the gradient reaching the output (read back with `retain_grad`); without it,
/// no gradient record is taken.
pub fn norm_sites_record_output_gradients_through_hooks(dev: &Device) -> Result<()> {
    manual_seed(3);
    let d = dev.clone();
    let norms: Vec<(&str, Norm)> = vec![
        ("ln", Norm::Layer(LayerNorm::new(4, DType::F64, &d)?)),
        ("bn", Norm::Batch(BatchNorm::new(4, DType::F64, &d)?)),
        (
            "pn",
            Norm::Power(PowerNorm::new(4, PnConfig::default(), DType::F64, &d)?),
        ),
        (
            "un",
            Norm::Unified(UnifiedNorm::new(4, UnConfig::default(), DType::F64, &d)?),
        ),
    ];
    for (kind, mut norm) in norms {
        let tracer = Tracer::new();
        norm.set_trace(Some(tracer.site("n")));
        for gradients in [false, true] {
            tracer.clear();
            tracer.set_gradients(gradients);
            assert_eq!(tracer.traces_gradients(), gradients);
            tracer.set_step(1);
            let x = Tensor::randn(&[2, 3, 4], DType::F64, &d)?.requires_grad();
            let c = Tensor::randn(&[2, 3, 4], DType::F64, &d)?;
            let y = norm.forward(&x, None)?;
            y.retain_grad()?;
            tracer.set_step(2);
            // d loss / d y = c + 2y
            y.mul(&c)?.sum_all()?.add(&y.sqr()?.sum_all()?)?.backward()?;
            let g = y.grad().expect("retained").to_vec_f64()?;
            let want: Vec<f64> = c
                .to_vec_f64()?
                .iter()
                .zip(y.to_vec_f64()?)
                .map(|(c, y)| c + 2.0 * y)
                .collect();
            assert!(
                g.iter().zip(&want).all(|(a, b)| close(*a, *b)),
                "{kind}: retained gradient"
            );
            let recs: Vec<TraceRecord> = tracer
                .records()
                .into_iter()
                .filter(|r| r.quantity == "grad_output")
                .collect();
            if !gradients {
                assert!(recs.is_empty(), "{kind}: gradient records while off");
                continue;
            }
            assert_eq!(recs.len(), 1, "{kind}: one record per backward");
            assert_eq!((recs[0].step, recs[0].norm, recs[0].layer.as_str()), (2, kind, "n"));
            check_full_summary(&recs[0], &g);
        }
    }
    Ok(())
}

/// `Tracer::watch` traces any intermediate (its values now, its gradient at backward) and
/// `watch_params` every parameter's gradient of any module, through hooks: the records equal
/// the values, the retained gradient and `grad()`; one record per parameter per backward
/// (also for a parameter used twice); pausing records nothing; removed handles stop.
pub fn any_tensor_and_parameters_are_traced_through_hooks(dev: &Device) -> Result<()> {
    manual_seed(4);
    let tracer = Tracer::new();
    let x = Tensor::randn(&[3, 4], DType::F64, dev)?.requires_grad();
    let w = Tensor::randn(&[4, 2], DType::F64, dev)?.requires_grad();
    let h = x.matmul(&w)?.tanh()?;
    h.retain_grad()?;
    tracer.set_step(5);
    let handle = tracer.watch("scores", &h)?.expect("h tracks gradients");
    h.sqr()?.sum_all()?.add(&h.sum_all()?)?.backward()?;
    let recs = tracer.records();
    assert!(recs
        .iter()
        .all(|r| r.layer == "scores" && r.norm == "tensor" && r.step == 5));
    check_full_summary(find(&recs, 5, "value"), &h.to_vec_f64()?);
    check_full_summary(find(&recs, 5, "grad"), &h.grad().expect("retained").to_vec_f64()?);
    assert!(handle.remove());
    // an untracked tensor: values only, no hook
    let e = unigrad_core::no_grad(|| x.exp())?;
    assert!(tracer.watch("e", &e)?.is_none());
    assert_eq!(tracer.series("e", "value", Stat::Max).len(), 1);
    // paused: nothing is read, no hook registered
    tracer.pause();
    assert!(tracer.watch("paused", &x.exp()?)?.is_none());
    tracer.resume();
    assert!(tracer.series("paused", "value", Stat::Mean).is_empty());

    // every parameter of a model, through leaf hooks
    let m = small_lm(dev, NormKind::LayerNorm);
    let tracer = Tracer::new();
    let handles = tracer.watch_params(&m)?;
    let params = m.named_params();
    assert_eq!(handles.len(), params.len());
    tracer.set_step(1);
    m.zero_grad();
    let (xi, yi) = ids(dev, 1);
    m.loss(&xi, &yi)?.backward()?;
    let recs = tracer.records();
    assert_eq!(recs.len(), params.len(), "one record per parameter per backward");
    for (name, p) in &params {
        let r = recs
            .iter()
            .find(|r| &r.layer == name)
            .unwrap_or_else(|| panic!("no record for {name}"));
        assert_eq!((r.norm, r.quantity), ("param", "grad"));
        check_full_summary(r, &p.grad().expect("grad").to_vec_f64()?);
    }
    tracer.pause();
    m.loss(&xi, &yi)?.backward()?;
    assert_eq!(tracer.len(), params.len(), "paused hooks record nothing");
    tracer.resume();
    for h in handles {
        assert!(h.remove());
    }
    m.loss(&xi, &yi)?.backward()?;
    assert_eq!(tracer.len(), params.len(), "removed hooks record nothing");
    Ok(())
}
