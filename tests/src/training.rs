//! End to end: a small MLP trained for 1,000 steps learns, and its memory stays
//! flat — each backward releases its graph, so nothing accumulates step over step.
//!
//! Two independent leak checks: (1) exact — after every step no storage of a
//! parameter or of the input batch is referenced by anything but its own tensor
//! (a leaked graph would hold `Arc`s to them); (2) coarse — the process's resident
//! set (`/proc/self/statm`, Linux only) grows by less than a small bound between
//! step 100 and step 1,000. Runs exclusively so that other tests' allocations do
//! not disturb the RSS reading.

use std::sync::Arc;
use unigrad_core::{no_grad, rng, DType, Device, Result, Tensor};

/// Resident set size in bytes from `/proc/self/statm` (second field, in pages of
/// 4 KiB on the Linux targets we run on), or `None` where unavailable.
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Three Gaussian blobs in 2-D, 32 points each, as (inputs `[96, 2]`, labels `[96]`).
fn blobs(dev: &Device, dtype: DType) -> Result<(Tensor, Tensor)> {
    let centers = [(-2.0, 0.0), (2.0, 0.0), (0.0, 2.5)];
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    rng::with_rng(|r| {
        for (c, &(cx, cy)) in centers.iter().enumerate() {
            for _ in 0..32 {
                xs.push(cx + 0.6 * r.normal());
                xs.push(cy + 0.6 * r.normal());
                ys.push(c as i64);
            }
        }
    });
    Ok((
        Tensor::from_f64s(&xs, &[96, 2], dtype, dev)?,
        Tensor::from_vec(ys, &[96], dev)?,
    ))
}

/// 1,000 SGD steps of a 2-32-32-3 MLP (GELU, ReLU, dropout, cross-entropy with
/// label smoothing) in f32: the loss falls, accuracy is high, and memory is flat.
pub fn mlp_memory_flat(dev: &Device) -> Result<()> {
    let dtype = DType::F32;
    let (x, y) = blobs(dev, dtype)?;
    let init = |shape: &[usize], fan_in: usize| -> Result<Tensor> {
        Ok(Tensor::randn(shape, dtype, dev)?
            .mul_scalar((1.0 / fan_in as f64).sqrt())?
            .requires_grad())
    };
    let params = [
        init(&[2, 32], 2)?,
        Tensor::zeros(&[32], dtype, dev)?.requires_grad(),
        init(&[32, 32], 32)?,
        Tensor::zeros(&[32], dtype, dev)?.requires_grad(),
        init(&[3, 32], 32)?, // used transposed, as linear layers store it
        Tensor::zeros(&[3], dtype, dev)?.requires_grad(),
    ];
    let x_refs = Arc::strong_count(&x.storage());
    let forward = |train: bool| -> Result<Tensor> {
        let h = x.matmul(&params[0])?.add(&params[1])?.gelu()?;
        let h = h.matmul(&params[2])?.add(&params[3])?.relu()?.dropout(0.1, train)?;
        h.matmul(&params[4].t()?)?.add(&params[5])
    };
    let lr = 0.2;
    let mut first_loss = None;
    let mut rss_after_warmup = None;
    let mut last_loss = 0.0;
    for step in 0..1000 {
        let loss = forward(true)?.cross_entropy(&y, None, 0.05)?;
        loss.backward()?;
        last_loss = loss.to_scalar()?;
        first_loss.get_or_insert(last_loss);
        no_grad(|| -> Result<()> {
            for p in &params {
                let g = p.grad().expect("every parameter takes part in the loss");
                p.assign(&p.sub(&g.mul_scalar(lr)?)?)?;
                p.zero_grad();
            }
            Ok(())
        })?;
        drop(loss);
        // exact: only the tensor itself (plus the temporary `storage()` handle) holds each storage
        for (i, p) in params.iter().enumerate() {
            assert_eq!(
                Arc::strong_count(&p.storage()),
                2,
                "step {step}: parameter {i} storage is still referenced"
            );
        }
        assert_eq!(
            Arc::strong_count(&x.storage()),
            x_refs,
            "step {step}: the input is still referenced"
        );
        if step == 100 {
            rss_after_warmup = rss_bytes();
        }
    }
    let first = first_loss.expect("ran");
    assert!(last_loss < 0.5 * first, "loss {first} -> {last_loss}");
    // accuracy in eval mode
    let logits = no_grad(|| forward(false))?;
    let pred = logits.to_vec_f64()?;
    let labels = y.to_vec::<i64>()?;
    let correct = labels
        .iter()
        .enumerate()
        .filter(|&(i, &t)| {
            let row = &pred[3 * i..3 * i + 3];
            let arg = (0..3).max_by(|&a, &b| row[a].total_cmp(&row[b])).expect("3 classes");
            arg as i64 == t
        })
        .count();
    assert!(correct >= 85, "accuracy {correct}/96");
    if let (Some(before), Some(after)) = (rss_after_warmup, rss_bytes()) {
        let growth = after.saturating_sub(before);
        println!("mlp_memory_flat: RSS {before} -> {after} bytes (+{growth}) over 900 steps");
        assert!(growth < 8 << 20, "RSS grew by {growth} bytes over 900 steps");
    }
    Ok(())
}
