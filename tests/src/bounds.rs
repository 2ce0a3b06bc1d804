//! Defence in depth: every `Backend` method that hands a layout (or a size) to a
//! kernel rejects one that reaches past its storage, with an error instead of an
//! out-of-bounds read or write, a segfault in the GEMM, or a panic.
//!
//! Core never builds such layouts, so these tests call the trait methods directly
//! with crafted ones: a view one element too long, an offset that pushes the last
//! element out, a stride too large, and sizes that overflow `usize`. One test per
//! kernel family (elementwise, reduce, matmul, view/copy, index, softmax, norm,
//! optim). Each also makes the same call with a layout that fits, so a check that
//! rejected everything would fail too. One more test keeps core's side of the
//! contract: the softmax backward hands the fused kernel dense storage even when the
//! upstream gradient is a view at an offset.

use unigrad_core::{
    AdamStep, Backend, BinaryOp, BoxStorage, DType, Device, HostData, Layout, ReduceOp, Result, Tensor, UnaryOp,
};

/// Storage of `n` f64 values `0, 1, ..` on the device.
fn store(b: &dyn Backend, n: usize) -> Result<BoxStorage> {
    b.from_host(&HostData::F64((0..n).map(|i| i as f64).collect()))
}

/// Storage of `n` i64 zeros (valid indices for any non-empty dim).
fn index_store(b: &dyn Backend, n: usize) -> Result<BoxStorage> {
    b.from_host(&HostData::I64(vec![0; n]))
}

/// Layouts over a storage of 6 elements that each reach past it (or, the last one,
/// stay inside it with an element count that overflows `usize`).
fn too_far() -> Vec<Layout> {
    vec![
        Layout::contiguous(&[7]),                     // one element too many
        Layout::new(&[2, 3], &[3, 1], 1),             // the offset pushes the last one out
        Layout::new(&[2, 3], &[4, 1], 0),             // a row stride too large
        Layout::new(&[3, 2], &[1, 4], 0),             // transposed, a column stride too large
        Layout::new(&[6], &[1], usize::MAX),          // offset alone overflows
        Layout::new(&[usize::MAX, 2], &[1, 1], 0),    // sizes overflow usize
        Layout::new(&[1 << 40, 1 << 40], &[0, 0], 0), // in bounds, but 2^80 elements
    ]
}

/// Unwrap an expected error from a crafted call, checking it is about the storage.
fn rejected<T>(what: &str, l: &Layout, r: Result<T>) {
    match r {
        Ok(_) => panic!("{what}: layout {l:?} over 6 elements was accepted"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("storage"),
                "{what}: {l:?}: message {msg:?} does not mention the storage"
            );
        }
    }
}

/// unary, binary and where_cond, with the bad layout on each operand in turn.
pub fn elementwise(dev: &Device) -> Result<()> {
    let b = dev.backend();
    let s = store(b, 6)?;
    let ok = Layout::contiguous(&[2, 3]);
    b.unary(UnaryOp::Neg, &*s, &ok)?;
    b.binary(BinaryOp::Add, &*s, &ok, &*s, &ok)?;
    b.where_cond(&*s, &ok, &*s, &ok, &*s, &ok)?;
    for l in too_far() {
        rejected("unary", &l, b.unary(UnaryOp::Exp, &*s, &l));
        let like = Layout::contiguous(l.shape());
        if let Some(n) = like.reach() {
            // a partner of the same shape that fits, so only the crafted side fails
            let big = store(b, n)?;
            rejected("binary lhs", &l, b.binary(BinaryOp::Mul, &*s, &l, &*big, &like));
            rejected("binary rhs", &l, b.binary(BinaryOp::Sub, &*big, &like, &*s, &l));
            rejected("where_cond cond", &l, b.where_cond(&*s, &l, &*big, &like, &*big, &like));
            rejected("where_cond a", &l, b.where_cond(&*big, &like, &*s, &l, &*big, &like));
            rejected("where_cond b", &l, b.where_cond(&*big, &like, &*big, &like, &*s, &l));
        } else {
            rejected("binary", &l, b.binary(BinaryOp::Add, &*s, &l, &*s, &l));
            rejected("where_cond", &l, b.where_cond(&*s, &l, &*s, &l, &*s, &l));
        }
    }
    Ok(())
}

/// reduce over every axis set of the crafted layouts.
pub fn reduce(dev: &Device) -> Result<()> {
    let b = dev.backend();
    let s = store(b, 6)?;
    b.reduce(ReduceOp::Sum, &*s, &Layout::contiguous(&[2, 3]), &[1])?;
    for l in too_far() {
        for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min] {
            rejected(
                "reduce all",
                &l,
                b.reduce(op, &*s, &l, &(0..l.rank()).collect::<Vec<_>>()),
            );
            rejected("reduce first", &l, b.reduce(op, &*s, &l, &[0]));
        }
    }
    Ok(())
}

/// matmul with either operand out of its storage (through the offset, a row
/// stride or a transposed view), and with shapes that disagree with each other.
pub fn matmul(dev: &Device) -> Result<()> {
    let b = dev.backend();
    let (a6, b6) = (store(b, 6)?, store(b, 6)?);
    let la = Layout::contiguous(&[2, 3]);
    let lb = Layout::contiguous(&[3, 2]);
    b.matmul(&*a6, &la, &*b6, &lb)?;
    let bad_lhs = [
        Layout::new(&[2, 3], &[3, 1], 1),
        Layout::new(&[2, 3], &[4, 1], 0),
        Layout::new(&[2, 3], &[1, 3], 0),
        Layout::new(&[2, 3], &[usize::MAX, 1], 0),
    ];
    for l in &bad_lhs {
        rejected("matmul lhs", l, b.matmul(&*a6, l, &*b6, &lb));
    }
    let bad_rhs = [
        Layout::new(&[3, 2], &[2, 1], 1),
        Layout::new(&[3, 2], &[1, 4], 0),
        Layout::new(&[3, 2], &[3, 1], 0),
    ];
    for l in &bad_rhs {
        rejected("matmul rhs", l, b.matmul(&*a6, &la, &*b6, l));
    }
    // a batch whose second product lies past the end
    let lab = Layout::contiguous(&[2, 2, 3]);
    rejected(
        "matmul batch",
        &lab,
        b.matmul(&*a6, &lab, &*b6, &Layout::new(&[2, 3, 2], &[0, 2, 1], 0)),
    );
    // shapes the GEMM would trust: inner sizes, ranks and batch dims that disagree
    let k2 = Layout::contiguous(&[2, 2]);
    assert!(b.matmul(&*a6, &la, &*b6, &k2).is_err(), "inner sizes 3 and 2");
    assert!(b.matmul(&*a6, &Layout::contiguous(&[6]), &*b6, &lb).is_err(), "rank 1");
    let b12 = store(b, 12)?;
    let batch3 = Layout::contiguous(&[3, 2, 2]);
    assert!(
        b.matmul(&*b12, &Layout::contiguous(&[2, 2, 3]), &*b12, &batch3)
            .is_err(),
        "batch 2 and 3"
    );
    Ok(())
}

/// to_host, cast and copy_strided (source and destination).
pub fn view_copy(dev: &Device) -> Result<()> {
    let b = dev.backend();
    let s = store(b, 6)?;
    let ok = Layout::contiguous(&[2, 3]);
    b.to_host(&*s, &ok)?;
    b.cast(&*s, &ok, DType::F32)?;
    let mut d = store(b, 6)?;
    b.copy_strided(&*s, &ok, &mut *d, &ok)?;
    for l in too_far() {
        rejected("to_host", &l, b.to_host(&*s, &l));
        rejected("cast", &l, b.cast(&*s, &l, DType::F32));
        rejected("cast f64", &l, b.cast(&*s, &l, DType::F64));
        if let Some(n) = Layout::contiguous(l.shape()).reach() {
            // a partner of the same shape that fits, so only the crafted side fails
            let big = store(b, n)?;
            let like = Layout::contiguous(l.shape());
            let mut dst = store(b, n)?;
            rejected("copy src", &l, b.copy_strided(&*s, &l, &mut *dst, &like));
            let mut d6 = store(b, 6)?;
            rejected("copy dst", &l, b.copy_strided(&*big, &like, &mut *d6, &l));
            // the refused copy wrote nothing
            assert_eq!(b.to_host(&*d6, &ok)?, HostData::F64((0..6).map(f64::from).collect()));
        }
    }
    Ok(())
}

/// index_select, gather (source and indices out of their storage), index_add and
/// scatter_add (a destination shape larger than the destination, a source out of
/// its storage).
pub fn index(dev: &Device) -> Result<()> {
    let b = dev.backend();
    let s = store(b, 6)?;
    let ok = Layout::contiguous(&[2, 3]);
    let ids2 = index_store(b, 2)?;
    let il = Layout::contiguous(&[2]);
    b.index_select(&*s, &ok, &*ids2, &il, 0)?;
    let ids6 = index_store(b, 6)?;
    b.gather(&*s, &ok, &*ids6, &ok, 1)?;
    for l in too_far() {
        if l.rank() == 2 {
            rejected("index_select src", &l, b.index_select(&*s, &l, &*ids2, &il, 0));
            rejected("gather src", &l, b.gather(&*s, &l, &*ids6, &ok, 0));
        }
        rejected("index_select ids", &l, b.index_select(&*s, &ok, &*ids6, &l, 0));
        if l.shape() == [2, 3] {
            rejected("gather ids", &l, b.gather(&*s, &ok, &*ids6, &l, 0));
        }
    }
    // adjoints: write into a destination of 6 elements
    let src = store(b, 6)?;
    let mut dst = store(b, 6)?;
    b.index_add(&mut *dst, &[2, 3], 0, &*ids2, &il, &*src, &ok)?;
    b.scatter_add(&mut *dst, &[2, 3], 1, &*ids6, &ok, &*src, &ok)?;
    let before = b.to_host(&*dst, &ok)?;
    let mut small = store(b, 6)?;
    assert!(
        b.index_add(&mut *small, &[3, 3], 0, &*ids2, &il, &*src, &ok).is_err(),
        "index_add dst [3, 3]"
    );
    assert!(
        b.scatter_add(
            &mut *small,
            &[3, 3],
            1,
            &*index_store(b, 9)?,
            &Layout::contiguous(&[3, 3]),
            &*store(b, 9)?,
            &Layout::contiguous(&[3, 3])
        )
        .is_err(),
        "scatter_add dst [3, 3]"
    );
    let il_far = Layout::new(&[2], &[1], 1);
    rejected(
        "index_add ids",
        &il_far,
        b.index_add(&mut *dst, &[2, 3], 0, &*ids2, &il_far, &*src, &ok),
    );
    for l in too_far().iter().filter(|l| l.shape() == [2, 3]) {
        rejected(
            "index_add src",
            l,
            b.index_add(&mut *dst, &[2, 3], 0, &*ids2, &il, &*src, l),
        );
        rejected(
            "scatter_add src",
            l,
            b.scatter_add(&mut *dst, &[2, 3], 1, &*ids6, &ok, &*src, l),
        );
        rejected(
            "scatter_add ids",
            l,
            b.scatter_add(&mut *dst, &[2, 3], 1, &*ids6, l, &*src, &ok),
        );
    }
    // the refused calls changed nothing
    assert_eq!(b.to_host(&*dst, &ok)?, before);
    assert_eq!(b.to_host(&*small, &ok)?, HostData::F64((0..6).map(f64::from).collect()));
    Ok(())
}

/// softmax / log-softmax forward over crafted views, and their backward with a
/// shape larger than the dense operands.
pub fn softmax(dev: &Device) -> Result<()> {
    let b = dev.backend();
    let s = store(b, 6)?;
    let ok = Layout::contiguous(&[2, 3]);
    let y = b.softmax_last(&*s, &ok)?;
    b.softmax_last_backward(&*y, &*s, &[2, 3])?;
    for l in too_far() {
        rejected("softmax_last", &l, b.softmax_last(&*s, &l));
        rejected("log_softmax_last", &l, b.log_softmax_last(&*s, &l));
    }
    let s8 = store(b, 8)?;
    for shape in [&[2, 4][..], &[7], &[3, 3]] {
        assert!(
            b.softmax_last_backward(&*y, &*s8, shape).is_err(),
            "softmax backward y {shape:?}"
        );
        assert!(
            b.softmax_last_backward(&*s8, &*y, shape).is_err(),
            "softmax backward dy {shape:?}"
        );
        assert!(
            b.log_softmax_last_backward(&*y, &*s8, shape).is_err(),
            "log_softmax backward {shape:?}"
        );
    }
    Ok(())
}

/// The softmax backward passes dense storage to the fused kernel: an upstream
/// gradient that is a dense view at an offset (here the second half of `cat`'s
/// gradient) is copied first, so the kernel neither reads the wrong rows nor fails
/// the storage check. Checked against the same softmax without the `cat`.
pub fn softmax_backward_of_an_offset_view(dev: &Device) -> Result<()> {
    let r = Tensor::randn(&[4, 3], DType::F64, dev)?;
    for log in [false, true] {
        let run = |through_cat: bool| -> Result<Vec<f64>> {
            let x = Tensor::from_f64s(&[0.1, -0.4, 0.7, 1.2, 0.3, -0.9], &[2, 3], DType::F64, dev)?.requires_grad();
            let y = if log { x.log_softmax(-1)? } else { x.softmax(-1)? };
            let loss = if through_cat {
                let z = Tensor::zeros(&[2, 3], DType::F64, dev)?;
                Tensor::cat(&[&z, &y], 0)?.mul(&r)?.sum_all()?
            } else {
                y.mul(&r.narrow(0, 2, 2)?)?.sum_all()?
            };
            loss.backward()?;
            x.grad().expect("x takes part").to_vec_f64()
        };
        let (got, want) = (run(true)?, run(false)?);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-12, "log={log}: {got:?} vs {want:?}");
        }
    }
    Ok(())
}

/// moments over crafted views; LayerNorm / RMSNorm forward and backward with sizes
/// beyond the input, the statistics or the weight, including `rows · n` overflowing.
pub fn norm(dev: &Device) -> Result<()> {
    let b = dev.backend();
    let x = store(b, 6)?;
    let w3 = store(b, 3)?;
    b.moments_last(&*x, &Layout::contiguous(&[2, 3]))?;
    for l in too_far() {
        rejected("moments_last", &l, b.moments_last(&*x, &l));
    }
    let (_, mean, rstd) = b.norm_last(&*x, 2, 3, Some(&*w3), Some(&*w3), 1e-5, false)?;
    b.norm_last_backward(&*x, &*mean, &*rstd, Some(&*w3), &*x, 2, 3, false)?;
    let w2 = store(b, 2)?;
    for (rows, n) in [(3, 3), (1, 7), (usize::MAX, 2), (2, usize::MAX / 2 + 1)] {
        for rms in [false, true] {
            assert!(
                b.norm_last(&*x, rows, n, None, None, 1e-5, rms).is_err(),
                "norm_last [{rows}, {n}]"
            );
            assert!(
                b.norm_last_backward(&*x, &*mean, &*rstd, None, &*x, rows, n, rms)
                    .is_err(),
                "norm_last_backward [{rows}, {n}]"
            );
        }
    }
    // operands shorter than the (valid) sizes: weight, bias, dy, the statistics
    assert!(
        b.norm_last(&*x, 2, 3, Some(&*w2), None, 1e-5, false).is_err(),
        "weight of 2"
    );
    assert!(
        b.norm_last(&*x, 2, 3, None, Some(&*w2), 1e-5, false).is_err(),
        "bias of 2"
    );
    let one = store(b, 1)?;
    assert!(
        b.norm_last_backward(&*x, &*one, &*rstd, None, &*x, 2, 3, false)
            .is_err(),
        "mean of 1"
    );
    assert!(
        b.norm_last_backward(&*x, &*mean, &*one, None, &*x, 2, 3, true).is_err(),
        "rstd of 1"
    );
    assert!(
        b.norm_last_backward(&*x, &*mean, &*rstd, Some(&*w2), &*x, 2, 3, false)
            .is_err(),
        "weight of 2"
    );
    assert!(
        b.norm_last_backward(&*x, &*mean, &*rstd, None, &*w3, 2, 3, false)
            .is_err(),
        "dy of 3"
    );
    Ok(())
}

/// The Adam update with a length beyond any of its operands.
pub fn optim(dev: &Device) -> Result<()> {
    let b = dev.backend();
    let (p, g, m, v) = (store(b, 6)?, store(b, 6)?, store(b, 6)?, store(b, 6)?);
    let h = AdamStep::at_step(1, 1e-3, (0.9, 0.999), 1e-8, 0.0, false);
    b.adam_update(&*p, &*g, Some(&*m), Some(&*v), 6, &h)?;
    let short = store(b, 5)?;
    for len in [7, usize::MAX] {
        assert!(b.adam_update(&*p, &*g, None, None, len, &h).is_err(), "len {len}");
    }
    assert!(b.adam_update(&*short, &*g, None, None, 6, &h).is_err(), "param of 5");
    assert!(b.adam_update(&*p, &*short, None, None, 6, &h).is_err(), "grad of 5");
    assert!(
        b.adam_update(&*p, &*g, Some(&*short), Some(&*v), 6, &h).is_err(),
        "m of 5"
    );
    assert!(
        b.adam_update(&*p, &*g, Some(&*m), Some(&*short), 6, &h).is_err(),
        "v of 5"
    );
    // the inputs are untouched (the update returns fresh storage)
    assert_eq!(
        b.to_host(&*p, &Layout::contiguous(&[6]))?,
        HostData::F64((0..6).map(f64::from).collect())
    );
    Ok(())
}
