//! The fused override points of the backend trait (softmax, row moments, LayerNorm /
//! RMSNorm forward and backward, the Adam update) against the composed defaults a
//! backend gets when it does not override them.
//!
//! [`Composed`] wraps a device's backend and forwards only the required primitives,
//! so calling a provided method on it runs core's default body — on the same device.
//! Every backend's fused kernels are therefore compared with the primitive
//! composition they replace (f64 to 1e-12, f32 to 1e-5 relative), which also keeps
//! the defaults themselves tested although the CPU backend never uses them.
//!
//! [`core_entry_points`] checks the tensor-level entry points that reach these
//! kernels (`unigrad_core::ops::{softmax, norm, optim}`): they reject bad operands
//! with errors naming the op before any kernel runs, and return what the device
//! method returns.

use unigrad_core::{
    AdamStep, Backend, BackendStorage, BinaryOp, BoxStorage, DType, Device, Error, HostData, Layout, ReduceOp, Result,
    UnaryOp,
};

/// A backend that runs `inner`'s primitives and core's composed defaults for every
/// fused method.
#[derive(Debug)]
pub struct Composed<'a>(pub &'a dyn Backend);

impl Backend for Composed<'_> {
    fn name(&self) -> String {
        format!("composed({})", self.0.name())
    }
    fn zeros(&self, len: usize, dtype: DType) -> Result<BoxStorage> {
        self.0.zeros(len, dtype)
    }
    fn from_host(&self, data: &HostData) -> Result<BoxStorage> {
        self.0.from_host(data)
    }
    fn to_host(&self, src: &dyn BackendStorage, layout: &Layout) -> Result<HostData> {
        self.0.to_host(src, layout)
    }
    fn copy_strided(&self, s: &dyn BackendStorage, sl: &Layout, d: &mut dyn BackendStorage, dl: &Layout) -> Result<()> {
        self.0.copy_strided(s, sl, d, dl)
    }
    fn cast(&self, src: &dyn BackendStorage, layout: &Layout, dtype: DType) -> Result<BoxStorage> {
        self.0.cast(src, layout, dtype)
    }
    fn unary(&self, op: UnaryOp, src: &dyn BackendStorage, layout: &Layout) -> Result<BoxStorage> {
        self.0.unary(op, src, layout)
    }
    fn binary(
        &self,
        op: BinaryOp,
        a: &dyn BackendStorage,
        al: &Layout,
        b: &dyn BackendStorage,
        bl: &Layout,
    ) -> Result<BoxStorage> {
        self.0.binary(op, a, al, b, bl)
    }
    fn where_cond(
        &self,
        c: &dyn BackendStorage,
        cl: &Layout,
        a: &dyn BackendStorage,
        al: &Layout,
        b: &dyn BackendStorage,
        bl: &Layout,
    ) -> Result<BoxStorage> {
        self.0.where_cond(c, cl, a, al, b, bl)
    }
    fn reduce(&self, op: ReduceOp, src: &dyn BackendStorage, layout: &Layout, axes: &[usize]) -> Result<BoxStorage> {
        self.0.reduce(op, src, layout, axes)
    }
    fn matmul(&self, a: &dyn BackendStorage, al: &Layout, b: &dyn BackendStorage, bl: &Layout) -> Result<BoxStorage> {
        self.0.matmul(a, al, b, bl)
    }
    fn index_select(
        &self,
        s: &dyn BackendStorage,
        sl: &Layout,
        ids: &dyn BackendStorage,
        il: &Layout,
        dim: usize,
    ) -> Result<BoxStorage> {
        self.0.index_select(s, sl, ids, il, dim)
    }
    fn index_add(
        &self,
        d: &mut dyn BackendStorage,
        shape: &[usize],
        dim: usize,
        ids: &dyn BackendStorage,
        il: &Layout,
        s: &dyn BackendStorage,
        sl: &Layout,
    ) -> Result<()> {
        self.0.index_add(d, shape, dim, ids, il, s, sl)
    }
    fn gather(
        &self,
        s: &dyn BackendStorage,
        sl: &Layout,
        ids: &dyn BackendStorage,
        il: &Layout,
        dim: usize,
    ) -> Result<BoxStorage> {
        self.0.gather(s, sl, ids, il, dim)
    }
    fn scatter_add(
        &self,
        d: &mut dyn BackendStorage,
        shape: &[usize],
        dim: usize,
        ids: &dyn BackendStorage,
        il: &Layout,
        s: &dyn BackendStorage,
        sl: &Layout,
    ) -> Result<()> {
        self.0.scatter_add(d, shape, dim, ids, il, s, sl)
    }
    fn synchronize(&self) -> Result<()> {
        self.0.synchronize()
    }
}

/// Random dense storage of `len` elements (normal, times `scale`, plus `shift`).
fn rand(dev: &Device, len: usize, dtype: DType, scale: f64, shift: f64) -> Result<BoxStorage> {
    let t = unigrad_core::Tensor::randn(&[len], DType::F64, dev)?;
    let v: Vec<f64> = t.to_vec_f64()?.iter().map(|x| x * scale + shift).collect();
    let host = match dtype {
        DType::F32 => HostData::F32(v.iter().map(|&x| x as f32).collect()),
        _ => HostData::F64(v),
    };
    dev.backend().from_host(&host)
}

/// Compare two storages elementwise (relative to max(1, |want|)).
pub(crate) fn close(
    what: &str,
    b: &dyn Backend,
    got: &dyn BackendStorage,
    want: &dyn BackendStorage,
    tol: f64,
) -> Result<()> {
    let l = Layout::contiguous(&[want.len()]);
    if got.len() != want.len() {
        return Err(Error::invalid(
            "fused",
            format!("{what}: {} vs {} elements", got.len(), want.len()),
        ));
    }
    let (g, w) = (b.to_host(got, &l)?.to_f64(), b.to_host(want, &l)?.to_f64());
    let worst = g
        .iter()
        .zip(&w)
        .map(|(a, b)| {
            if a.is_nan() != b.is_nan() {
                f64::INFINITY
            } else {
                (a - b).abs() / b.abs().max(1.0)
            }
        })
        .fold(0.0, f64::max);
    if worst > tol {
        return Err(Error::invalid(
            "fused",
            format!("{what}: fused and composed differ by {worst:e} (tol {tol:e})"),
        ));
    }
    Ok(())
}

/// The comparison tolerance of [`close`] for results computed in `dtype`.
pub(crate) fn tol(dtype: DType) -> f64 {
    if dtype == DType::F64 {
        1e-12
    } else {
        1e-5
    }
}

/// Softmax, log-softmax, their backward passes and row moments: fused vs composed.
pub fn softmax_and_moments(dev: &Device) -> Result<()> {
    let (b, c) = (dev.backend(), Composed(dev.backend()));
    for dtype in [DType::F64, DType::F32] {
        for (rows, n) in [(3, 7), (64, 128), (5, 1), (2, 300)] {
            let l = Layout::contiguous(&[rows, n]);
            let x = rand(dev, rows * n, dtype, 3.0, 0.5)?;
            let dy = rand(dev, rows * n, dtype, 1.0, 0.0)?;
            let tag = |op: &str| format!("{op} [{rows},{n}] {dtype:?}");
            close(
                &tag("softmax"),
                b,
                &*b.softmax_last(&*x, &l)?,
                &*c.softmax_last(&*x, &l)?,
                tol(dtype),
            )?;
            let ls = b.log_softmax_last(&*x, &l)?;
            close(&tag("log_softmax"), b, &*ls, &*c.log_softmax_last(&*x, &l)?, tol(dtype))?;
            let y = b.softmax_last(&*x, &l)?;
            let (g1, g2) = (
                b.softmax_last_backward(&*y, &*dy, &[rows, n])?,
                c.softmax_last_backward(&*y, &*dy, &[rows, n])?,
            );
            close(&tag("softmax_backward"), b, &*g1, &*g2, tol(dtype))?;
            let (g1, g2) = (
                b.log_softmax_last_backward(&*ls, &*dy, &[rows, n])?,
                c.log_softmax_last_backward(&*ls, &*dy, &[rows, n])?,
            );
            close(&tag("log_softmax_backward"), b, &*g1, &*g2, tol(dtype))?;
            let ((m1, v1), (m2, v2)) = (b.moments_last(&*x, &l)?, c.moments_last(&*x, &l)?);
            close(&tag("moments mean"), b, &*m1, &*m2, tol(dtype))?;
            close(&tag("moments var"), b, &*v1, &*v2, tol(dtype))?;
        }
    }
    Ok(())
}

/// LayerNorm and RMSNorm, with and without affine parameters, forward and backward.
pub fn layer_norm(dev: &Device) -> Result<()> {
    let (b, c) = (dev.backend(), Composed(dev.backend()));
    for dtype in [DType::F64, DType::F32] {
        for (rows, n) in [(3, 7), (256, 128), (1, 1), (130, 33), (3, 0)] {
            let x = rand(dev, rows * n, dtype, 2.0, 1.5)?;
            let dy = rand(dev, rows * n, dtype, 1.0, 0.0)?;
            let w = rand(dev, n, dtype, 0.5, 1.0)?;
            let bias = rand(dev, n, dtype, 0.5, 0.0)?;
            for rms in [false, true] {
                for affine in [false, true] {
                    let tag = |what: &str| format!("{what} rms={rms} affine={affine} [{rows},{n}] {dtype:?}");
                    let (wo, bo) = if affine {
                        (Some(&*w), (!rms).then_some(&*bias))
                    } else {
                        (None, None)
                    };
                    let (y1, m1, r1) = b.norm_last(&*x, rows, n, wo, bo, 1e-5, rms)?;
                    let (y2, m2, r2) = c.norm_last(&*x, rows, n, wo, bo, 1e-5, rms)?;
                    close(&tag("norm y"), b, &*y1, &*y2, tol(dtype))?;
                    close(&tag("norm mean"), b, &*m1, &*m2, tol(dtype))?;
                    close(&tag("norm rstd"), b, &*r1, &*r2, tol(dtype))?;
                    let (dx1, dw1, db1) = b.norm_last_backward(&*x, &*m1, &*r1, wo, &*dy, rows, n, rms)?;
                    let (dx2, dw2, db2) = c.norm_last_backward(&*x, &*m1, &*r1, wo, &*dy, rows, n, rms)?;
                    close(&tag("norm dx"), b, &*dx1, &*dx2, tol(dtype))?;
                    // column sums over up to 256 rows: allow the summation-order difference
                    let sum_tol = tol(dtype) * 10.0;
                    match (dw1, dw2, affine) {
                        (Some(p), Some(q), true) => close(&tag("norm dw"), b, &*p, &*q, sum_tol)?,
                        (None, None, false) => {}
                        _ => return Err(Error::invalid("fused", tag("dγ present in only one of the two"))),
                    }
                    match (db1, db2, affine && !rms) {
                        (Some(p), Some(q), true) => close(&tag("norm db"), b, &*p, &*q, sum_tol)?,
                        (None, None, false) => {}
                        _ => return Err(Error::invalid("fused", tag("dβ present in only one of the two"))),
                    }
                }
            }
        }
    }
    Ok(())
}

/// The Adam / AdamW update: first and later steps, L2 and decoupled decay, lr 0.
pub fn adam_update(dev: &Device) -> Result<()> {
    let (b, c) = (dev.backend(), Composed(dev.backend()));
    for dtype in [DType::F64, DType::F32] {
        for len in [1usize, 37, 70_000] {
            let p = rand(dev, len, dtype, 1.0, 0.0)?;
            let g = rand(dev, len, dtype, 0.1, 0.0)?;
            let m = rand(dev, len, dtype, 0.01, 0.0)?;
            let v = b.unary(
                UnaryOp::Sqr,
                &*rand(dev, len, dtype, 0.01, 0.0)?,
                &Layout::contiguous(&[len]),
            )?;
            for (decoupled, wd, lr, first) in [
                (true, 0.1, 1e-3, true),
                (true, 0.1, 1e-3, false),
                (false, 0.01, 3e-4, false),
                (true, 0.0, 0.0, false),
            ] {
                let h = AdamStep::at_step(if first { 1 } else { 7 }, lr, (0.9, 0.999), 1e-8, wd, decoupled);
                let (ms, vs) = if first { (None, None) } else { (Some(&*m), Some(&*v)) };
                let (p1, m1, v1) = b.adam_update(&*p, &*g, ms, vs, len, &h)?;
                let (p2, m2, v2) = c.adam_update(&*p, &*g, ms, vs, len, &h)?;
                let tag = |what: &str| format!("adam {what} len={len} {h:?} first={first} {dtype:?}");
                close(&tag("p"), b, &*p1, &*p2, tol(dtype))?;
                close(&tag("m"), b, &*m1, &*m2, tol(dtype))?;
                close(&tag("v"), b, &*v1, &*v2, tol(dtype))?;
            }
        }
    }
    Ok(())
}

/// The core entry points of the fused kernels: operand errors name the op and the
/// offending shapes or dtypes, and valid calls return what the device methods return.
pub fn core_entry_points(dev: &Device) -> Result<()> {
    use unigrad_core::ops::norm::{moments_last, norm_last, norm_last_backward};
    use unigrad_core::ops::optim::adam_update as adam;
    use unigrad_core::ops::softmax::softmax_last_backward;
    use unigrad_core::Tensor;
    let expect = |what: &str, r: Result<()>, op: &str, needle: &str| -> Result<()> {
        match r {
            Err(e) if e.to_string().contains(op) && e.to_string().contains(needle) => Ok(()),
            Err(e) => Err(Error::invalid(
                "fused",
                format!("{what}: error {e} does not name {op} / {needle}"),
            )),
            Ok(()) => Err(Error::invalid("fused", format!("{what}: accepted"))),
        }
    };
    let x = Tensor::randn(&[4, 6], DType::F32, dev)?;
    let w = Tensor::ones(&[6], DType::F32, dev)?;
    let w5 = Tensor::ones(&[5], DType::F32, dev)?;
    let w64 = Tensor::ones(&[6], DType::F64, dev)?;
    // norm forward
    let (y, mean, rstd) = norm_last(&x, Some(&w), None, 1e-5, false)?;
    if mean.shape() != [4, 1] || rstd.shape() != [4, 1] || y.shape() != [4, 6] {
        return Err(Error::invalid("fused", "norm_last returned the wrong shapes"));
    }
    let layer = |r: Result<Tensor>| r.map(|_| ());
    expect(
        "weight [5]",
        layer(x.layer_norm(Some(&w5), None, 1e-5)),
        "layer_norm",
        "[5]",
    )?;
    expect("f64 weight", layer(x.rms_norm(Some(&w64), 1e-5)), "rms_norm", "f64")?;
    expect(
        "f64 bias",
        layer(x.layer_norm(None, Some(&w64), 1e-5)),
        "layer_norm",
        "f64",
    )?;
    let s = Tensor::scalar(1.0, DType::F32, dev)?;
    expect("rank 0", layer(s.layer_norm(None, None, 1e-5)), "layer_norm", "rank")?;
    expect(
        "negative eps",
        layer(x.layer_norm(None, None, -1.0)),
        "layer_norm",
        "eps",
    )?;
    let ids = Tensor::from_vec(vec![1i64, 2, 3], &[3], dev)?;
    expect("i64 input", layer(ids.rms_norm(None, 1e-5)), "rms_norm", "i64")?;
    expect("moments rank 0", moments_last(&s).map(|_| ()), "moments_last", "rank")?;
    // norm backward
    let short = mean.narrow(0, 0, 3)?;
    let bw = |m: &Tensor, dy: &Tensor| norm_last_backward(&x, m, &rstd, Some(&w), dy, false).map(|_| ());
    expect("short statistics", bw(&short, &y), "layer_norm_backward", "[3, 1]")?;
    let dy5 = Tensor::ones(&[4, 5], DType::F32, dev)?;
    expect("dy [4, 5]", bw(&mean, &dy5), "layer_norm_backward", "[4, 5]")?;
    let dy64 = Tensor::ones(&[4, 6], DType::F64, dev)?;
    expect("f64 dy", bw(&mean, &dy64), "layer_norm_backward", "f64")?;
    // softmax backward
    let sb = |dy: &Tensor| softmax_last_backward(&y, dy).map(|_| ());
    expect("softmax dy [4, 5]", sb(&dy5), "softmax_last_backward", "[4, 5]")?;
    expect("softmax f64 dy", sb(&dy64), "softmax_last_backward", "f64")?;
    // Adam: every operand must match the parameter
    let h = AdamStep::at_step(1, 1e-3, (0.9, 0.999), 1e-8, 0.0, true);
    let a = |g: &Tensor, m: Option<&Tensor>, h: &AdamStep| adam(&x, g, m, None, h).map(|_| ());
    expect("adam grad [6]", a(&w, None, &h), "adam_update", "[6]")?;
    expect("adam m [6]", a(&x, Some(&w), &h), "adam_update", "[6]")?;
    let x64 = x.to_dtype(DType::F64)?;
    expect("adam f64 grad", a(&x64, None, &h), "adam_update", "f64")?;
    let bad = AdamStep {
        bias_correction1: 0.0,
        ..h
    };
    expect("adam bias correction 0", a(&x, None, &bad), "adam_update", "bias")?;
    let (np, nm, nv) = adam(&x, &x, None, None, &h)?;
    let (bp, bm, bv) = dev.backend().adam_update(
        &*x.contiguous()?.storage(),
        &*x.contiguous()?.storage(),
        None,
        None,
        24,
        &h,
    )?;
    for (what, t, s) in [("p", np, bp), ("m", nm, bm), ("v", nv, bv)] {
        if t.shape() != [4, 6] {
            return Err(Error::invalid("fused", format!("adam {what}: shape {:?}", t.shape())));
        }
        close(
            &format!("adam_update {what} vs the device method"),
            dev.backend(),
            &*t.contiguous()?.storage(),
            &*s,
            0.0,
        )?;
    }
    Ok(())
}
