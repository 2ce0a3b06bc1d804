//! GPU tests for the CUDA backend: every `Backend` method cross-checked against the
//! CPU backend on random inputs, over dense, transposed, offset and broadcast views.
//!
//! Each GPU test first probes the driver. Without a usable GPU (no driver, the build
//! stub, no device) it writes `SKIPPED <test>: <reason>` to the real stderr (which
//! libtest does not capture) and passes; with `CUDA_REQUIRE_GPU=1` it fails instead,
//! which is how the GPU machine runs them (`gpu-bin/run-gpu-check.sh`).
//! A few tests need no GPU (the embedded PTX, the probe's diagnosis) and always run.
//!
//! All GPU tests live in this one file so that one prebuilt binary carries them to
//! the GPU machine (`scripts/gpu-check.sh`).
#![cfg(feature = "cuda")]

use std::io::Write;
use unigrad_core::{
    Backend, BackendStorage, BinaryOp, BoxStorage, DType, Device, Error, HostData, Layout, ReduceOp, UnaryOp,
};

// ---------------------------------------------------------------------------------
// Probe and skip
// ---------------------------------------------------------------------------------

fn require_gpu() -> bool {
    std::env::var_os("CUDA_REQUIRE_GPU").is_some_and(|v| v != "0" && !v.is_empty())
}

/// The GPU, or `None` after saying why the test is skipped.
fn gpu_or_skip(test: &str) -> Option<Device> {
    match unigrad_cuda::is_available() {
        Ok(()) => Some(unigrad_cuda::cuda(0).unwrap_or_else(|e| panic!("a GPU answers but cuda(0) failed: {e}"))),
        Err(why) => {
            if require_gpu() {
                panic!("CUDA_REQUIRE_GPU is set but {why}");
            }
            let line = format!("\nSKIPPED {test}: {why}\n");
            let _ = std::io::stderr().write_all(line.as_bytes());
            None
        }
    }
}

// ---------------------------------------------------------------------------------
// Random data and views
// ---------------------------------------------------------------------------------

/// xorshift64*: deterministic test data without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn data(&mut self, n: usize, dtype: DType, lo: f64, hi: f64) -> HostData {
        HostData::from_f64((0..n).map(|_| self.uniform(lo, hi)).collect(), dtype)
    }
}

/// A storage's host data plus a view of it with the logical shape under test.
struct Case {
    name: String,
    data: HostData,
    layout: Layout,
}

/// Dense, transposed, offset (narrowed) and broadcast views of logical `shape`.
fn views(rng: &mut Rng, shape: &[usize], dtype: DType, lo: f64, hi: f64) -> Vec<Case> {
    let n: usize = shape.iter().product();
    let rank = shape.len();
    let mut cases = vec![Case {
        name: format!("dense {shape:?}"),
        data: rng.data(n, dtype, lo, hi),
        layout: Layout::contiguous(shape),
    }];
    if rank >= 2 {
        // Storage laid out with the dims reversed; permuting back gives `shape`.
        let rev: Vec<usize> = shape.iter().rev().copied().collect();
        let perm: Vec<usize> = (0..rank).rev().collect();
        cases.push(Case {
            name: format!("transposed {shape:?}"),
            data: rng.data(n, dtype, lo, hi),
            layout: Layout::contiguous(&rev).permute(&perm).unwrap(),
        });
    }
    if rank >= 1 {
        let mut big = shape.to_vec();
        big[0] += 3;
        cases.push(Case {
            name: format!("narrowed {shape:?}"),
            data: rng.data(big.iter().product(), dtype, lo, hi),
            layout: Layout::contiguous(&big).narrow(0, 2, shape[0]),
        });
        let mut one = shape.to_vec();
        one[rank / 2] = 1;
        cases.push(Case {
            name: format!("broadcast {one:?} -> {shape:?}"),
            data: rng.data(one.iter().product(), dtype, lo, hi),
            layout: Layout::contiguous(&one).broadcast_to(shape).unwrap(),
        });
    }
    cases
}

// ---------------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Tol {
    atol: f64,
    rtol: f64,
}

impl Tol {
    fn of(dtype: DType, f32_tol: (f64, f64), f64_tol: (f64, f64)) -> Tol {
        let (atol, rtol) = if dtype == DType::F32 { f32_tol } else { f64_tol };
        Tol { atol, rtol }
    }
    fn exact() -> Tol {
        Tol { atol: 0.0, rtol: 0.0 }
    }
}

fn assert_close(what: &str, got: &HostData, want: &HostData, tol: Tol) {
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtype");
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let (HostData::I64(g), HostData::I64(w)) = (got, want) {
        assert_eq!(g, w, "{what}");
        return;
    }
    let (g, w) = (got.to_f64(), want.to_f64());
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
        let ok = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= tol.atol + tol.rtol * b.abs();
        if !ok {
            let excess = (a - b).abs() - tol.atol - tol.rtol * b.abs();
            if worst.map_or(true, |(_, e)| excess > e) {
                worst = Some((i, excess));
            }
        }
    }
    if let Some((i, _)) = worst {
        let bad = g
            .iter()
            .zip(&w)
            .filter(|(a, b)| {
                !((a.is_nan() && b.is_nan()) || a == b || (*a - *b).abs() <= tol.atol + tol.rtol * b.abs())
            })
            .count();
        panic!(
            "{what}: {bad} of {} elements differ; worst at {i}: cuda {} vs cpu {} (tolerance {tol:?})",
            g.len(),
            g[i],
            w[i]
        );
    }
}

/// The CPU reference device and the GPU under test.
struct Rig {
    cpu: Device,
    gpu: Device,
}

impl Rig {
    fn new(test: &str) -> Option<Rig> {
        Some(Rig {
            gpu: gpu_or_skip(test)?,
            cpu: unigrad_cpu::cpu(),
        })
    }
    fn c(&self) -> &dyn Backend {
        self.cpu.backend()
    }
    fn g(&self) -> &dyn Backend {
        self.gpu.backend()
    }
    /// Upload to both devices.
    fn put(&self, data: &HostData) -> (BoxStorage, BoxStorage) {
        (self.c().from_host(data).unwrap(), self.g().from_host(data).unwrap())
    }
    /// Compare dense outputs of logical `shape`.
    fn same(&self, what: &str, cpu: &dyn BackendStorage, gpu: &dyn BackendStorage, shape: &[usize], tol: Tol) {
        let l = Layout::contiguous(shape);
        let want = self.c().to_host(cpu, &l).unwrap();
        let got = self.g().to_host(gpu, &l).unwrap();
        assert_close(what, &got, &want, tol);
    }
}

const FLOATS: [DType; 2] = [DType::F32, DType::F64];

// ---------------------------------------------------------------------------------
// Tests that need no GPU
// ---------------------------------------------------------------------------------

/// Every kernel name the backend launches, by module.
fn expected_kernels() -> Vec<(&'static str, Vec<String>)> {
    let f = ["f32", "f64"];
    let all = ["f32", "f64", "i64"];
    let b = ["b4", "b8"];
    let mut elementwise: Vec<String> = f
        .iter()
        .flat_map(|t| [format!("unary_{t}"), format!("binary_{t}")])
        .collect();
    elementwise.push("compare_i64".to_owned());
    elementwise.extend(all.iter().flat_map(|c| b.iter().map(move |v| format!("where_{c}_{v}"))));
    let mut view: Vec<String> = b.iter().map(|v| format!("copy_{v}")).collect();
    view.extend(
        all.iter()
            .flat_map(|s| all.iter().map(move |d| format!("cast_{s}_{d}"))),
    );
    let mut index = vec!["check_ids".to_owned()];
    index.extend(
        b.iter()
            .flat_map(|v| [format!("index_select_{v}"), format!("gather_{v}")]),
    );
    index.extend(
        f.iter()
            .flat_map(|t| [format!("index_add_{t}"), format!("scatter_add_{t}")]),
    );
    vec![
        ("elementwise", elementwise),
        ("view", view),
        ("index", index),
        ("reduce", f.iter().map(|t| format!("reduce_{t}")).collect()),
        (
            "matmul",
            [
                "matmul_f32_t128",
                "matmul_f32_t64",
                "matmul_f64_t64",
                "matmul_f32_big",
                "matmul_f64_big",
            ]
            .map(String::from)
            .to_vec(),
        ),
        (
            "softmax",
            f.iter()
                .flat_map(|t| [format!("softmax_fwd_{t}"), format!("softmax_bwd_{t}")])
                .collect(),
        ),
        (
            "norm",
            f.iter()
                .flat_map(|t| {
                    [
                        format!("moments_{t}"),
                        format!("norm_fwd_{t}"),
                        format!("norm_bwd_{t}"),
                        format!("norm_bwd_cols_{t}"),
                    ]
                })
                .collect(),
        ),
        ("optim", f.iter().map(|t| format!("adam_{t}")).collect()),
        (
            "sort",
            all.iter()
                .flat_map(|t| [format!("arg_reduce_{t}"), format!("argsort_{t}")])
                .collect(),
        ),
        ("scan", all.iter().map(|t| format!("cumsum_{t}")).collect()),
    ]
}

#[test]
fn embedded_ptx_has_every_kernel_for_a_cuda_13_driver() {
    use unigrad_cuda::ptx::{entry_names, ptx_directive, MODULES};
    for (module, names) in expected_kernels() {
        let ptx = MODULES
            .iter()
            .find(|(m, _)| *m == module)
            .unwrap_or_else(|| panic!("module {module}"))
            .1;
        // nvcc 13.0 writes .version 9.0, the newest an R580 (CUDA 13.0) driver loads.
        assert_eq!(ptx_directive(ptx, ".version"), Some(".version 9.0"), "{module}");
        assert_eq!(ptx_directive(ptx, ".target"), Some(".target sm_75"), "{module}");
        let entries = entry_names(ptx);
        for name in &names {
            assert!(
                entries.contains(&name.as_str()),
                "{module}.ptx lacks kernel {name} (has {entries:?})"
            );
        }
        assert_eq!(
            entries.len(),
            names.len(),
            "{module}.ptx has kernels the tests do not know: {entries:?}"
        );
    }
}

#[test]
fn probe_and_constructor_explain_a_missing_gpu() {
    match unigrad_cuda::is_available() {
        Ok(()) => {
            let dev = unigrad_cuda::cuda(0).expect("cuda(0)");
            assert_eq!(dev.name(), "cuda:0");
            let info = unigrad_cuda::device_info(&dev).expect("device_info");
            assert!(info.sm_count > 0 && info.compute_capability >= (7, 5), "{info:?}");
            let _ = std::io::stderr().write_all(format!("\nGPU: {info:?}\n").as_bytes());
        }
        Err(why) => {
            let err = unigrad_cuda::cuda(0).expect_err("no usable GPU, yet cuda(0) succeeded");
            let Error::Backend { device, msg } = &err else {
                panic!("expected Error::Backend, got {err:?}");
            };
            assert_eq!(device, "cuda:0");
            assert!(msg.contains("CUDA_ERROR_"), "the driver's error name is missing: {msg}");
            if why.contains("stub") {
                assert!(msg.contains("CUDA_ERROR_STUB_LIBRARY"), "{msg}");
                assert!(why.contains("34"), "{why}");
            }
            // A non-CUDA device is not ours.
            assert!(unigrad_cuda::memory_stats(&unigrad_cpu::cpu()).is_none());
        }
    }
}

// ---------------------------------------------------------------------------------
// Cross-checks against the CPU backend
// ---------------------------------------------------------------------------------

#[test]
fn host_round_trips_and_zeros() {
    let Some(rig) = Rig::new("host_round_trips_and_zeros") else {
        return;
    };
    let mut rng = Rng::new(1);
    for dtype in [DType::F32, DType::F64, DType::I64] {
        for n in [0usize, 1, 7, 1000, 65_537] {
            let data = rng.data(n, dtype, -1e3, 1e3);
            let s = rig.g().from_host(&data).unwrap();
            assert_eq!((s.len(), s.dtype()), (n, dtype));
            assert_eq!(rig.g().to_host(&*s, &Layout::contiguous(&[n])).unwrap(), data);
        }
        let z = rig.g().zeros(1234, dtype).unwrap();
        assert_eq!(
            rig.g().to_host(&*z, &Layout::contiguous(&[1234])).unwrap(),
            HostData::from_f64(vec![0.0; 1234], dtype)
        );
        // Strided reads: every view kind.
        for case in views(&mut rng, &[5, 6, 7], dtype, -100.0, 100.0) {
            let (c, g) = rig.put(&case.data);
            let want = rig.c().to_host(&*c, &case.layout).unwrap();
            let got = rig.g().to_host(&*g, &case.layout).unwrap();
            assert_close(&format!("to_host {dtype} {}", case.name), &got, &want, Tol::exact());
        }
    }
}

#[test]
fn unary_matches_cpu() {
    let Some(rig) = Rig::new("unary_matches_cpu") else {
        return;
    };
    let mut rng = Rng::new(2);
    let ops = [
        UnaryOp::Neg,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Abs,
        UnaryOp::Relu,
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::GeluErf,
        UnaryOp::GeluTanh,
        UnaryOp::GeluErfGrad,
        UnaryOp::GeluTanhGrad,
        UnaryOp::Step,
        UnaryOp::Sign,
        UnaryOp::Sqr,
        UnaryOp::Recip,
        UnaryOp::Affine(-1.5, 0.25),
        UnaryOp::Powf(2.0),
        UnaryOp::Powf(1.7),
        UnaryOp::Powf(-0.5),
        UnaryOp::MaxScalar(0.1),
        UnaryOp::MinScalar(-0.2),
    ];
    for dtype in FLOATS {
        for op in ops {
            // Positive inputs where the op needs them.
            let positive = matches!(op, UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Powf(_));
            let (lo, hi) = if positive { (0.05, 4.0) } else { (-4.0, 4.0) };
            for shape in [&[4usize, 33, 5][..], &[1000][..], &[]] {
                for case in views(&mut rng, shape, dtype, lo, hi) {
                    let (c, g) = rig.put(&case.data);
                    let want = rig.c().unary(op, &*c, &case.layout).unwrap();
                    let got = rig.g().unary(op, &*g, &case.layout).unwrap();
                    let tol = Tol::of(dtype, (1e-6, 1e-5), (1e-14, 1e-12));
                    rig.same(
                        &format!("unary {op:?} {dtype} {}", case.name),
                        &*want,
                        &*got,
                        shape,
                        tol,
                    );
                }
            }
        }
    }
}

#[test]
fn binary_matches_cpu() {
    let Some(rig) = Rig::new("binary_matches_cpu") else {
        return;
    };
    let mut rng = Rng::new(3);
    let ops = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Min,
        BinaryOp::Eq,
        BinaryOp::Ne,
        BinaryOp::Lt,
        BinaryOp::Le,
        BinaryOp::Gt,
        BinaryOp::Ge,
    ];
    let shape = [6usize, 1, 35];
    let full = [6usize, 4, 35];
    for dtype in FLOATS {
        for op in ops {
            // Few distinct values, so comparisons see ties.
            let quantize =
                |d: HostData| HostData::from_f64(d.to_f64().iter().map(|v| (v * 2.0).round() / 2.0).collect(), dtype);
            let lhs = views(&mut rng, &full, dtype, -3.0, 3.0);
            let rhs = views(&mut rng, &full, dtype, 0.5, 3.0);
            for (a, b) in lhs.iter().zip(rhs.iter().rev()) {
                let (ad, bd) = (quantize(a.data.clone()), quantize(b.data.clone()));
                let (ca, ga) = rig.put(&ad);
                let (cb, gb) = rig.put(&bd);
                let want = rig.c().binary(op, &*ca, &a.layout, &*cb, &b.layout).unwrap();
                let got = rig.g().binary(op, &*ga, &a.layout, &*gb, &b.layout).unwrap();
                let tol = Tol::of(dtype, (0.0, 1e-7), (0.0, 1e-16));
                rig.same(
                    &format!("binary {op:?} {dtype} {} with {}", a.name, b.name),
                    &*want,
                    &*got,
                    &full,
                    tol,
                );
            }
            // Broadcasting a [6, 1, 35] operand against a dense one.
            let small = rng.data(shape.iter().product(), dtype, -3.0, 3.0);
            let dense = rng.data(full.iter().product(), dtype, -3.0, 3.0);
            let bl = Layout::contiguous(&shape).broadcast_to(&full).unwrap();
            let (cs, gs) = rig.put(&small);
            let (cd, gd) = rig.put(&dense);
            let dl = Layout::contiguous(&full);
            let want = rig.c().binary(op, &*cd, &dl, &*cs, &bl).unwrap();
            let got = rig.g().binary(op, &*gd, &dl, &*gs, &bl).unwrap();
            rig.same(
                &format!("binary {op:?} {dtype} broadcast"),
                &*want,
                &*got,
                &full,
                Tol::of(dtype, (0.0, 1e-7), (0.0, 1e-16)),
            );
        }
    }
}

#[test]
fn where_and_cast_match_cpu() {
    let Some(rig) = Rig::new("where_and_cast_match_cpu") else {
        return;
    };
    let mut rng = Rng::new(4);
    let shape = [7usize, 9, 3];
    for cond_dtype in [DType::F32, DType::F64, DType::I64] {
        for dtype in FLOATS {
            let conds = views(&mut rng, &shape, cond_dtype, -1.0, 2.0); // I64 truncates to -0, 0, 1
            let xs = views(&mut rng, &shape, dtype, -5.0, 5.0);
            let ys = views(&mut rng, &shape, dtype, -5.0, 5.0);
            for ((c, x), y) in conds.iter().zip(&xs).zip(ys.iter().rev()) {
                let (cc, gc) = rig.put(&c.data);
                let (cx, gx) = rig.put(&x.data);
                let (cy, gy) = rig.put(&y.data);
                let want = rig.c().where_cond(&*cc, &c.layout, &*cx, &x.layout, &*cy, &y.layout);
                let got = rig
                    .g()
                    .where_cond(&*gc, &c.layout, &*gx, &x.layout, &*gy, &y.layout)
                    .unwrap();
                match want {
                    Ok(want) => rig.same(
                        &format!("where {cond_dtype}->{dtype} {}", c.name),
                        &*want,
                        &*got,
                        &shape,
                        Tol::exact(),
                    ),
                    // The CPU backend may only take a cond of the values' dtype; the GPU
                    // result is then checked against a same-dtype cond.
                    Err(_) => {
                        let cd = HostData::from_f64(c.data.to_f64(), dtype);
                        let cc = rig.c().from_host(&cd).unwrap();
                        let want = rig
                            .c()
                            .where_cond(&*cc, &c.layout, &*cx, &x.layout, &*cy, &y.layout)
                            .unwrap();
                        rig.same(
                            &format!("where {cond_dtype}->{dtype} {}", c.name),
                            &*want,
                            &*got,
                            &shape,
                            Tol::exact(),
                        );
                    }
                }
            }
        }
    }
    for from in [DType::F32, DType::F64, DType::I64] {
        for to in [DType::F32, DType::F64, DType::I64] {
            for case in views(&mut rng, &shape, from, -1e6, 1e6) {
                let (c, g) = rig.put(&case.data);
                let want = rig.c().cast(&*c, &case.layout, to).unwrap();
                let got = rig.g().cast(&*g, &case.layout, to).unwrap();
                assert_eq!(got.dtype(), to);
                rig.same(
                    &format!("cast {from}->{to} {}", case.name),
                    &*want,
                    &*got,
                    &shape,
                    Tol::exact(),
                );
            }
        }
    }
    // Saturation and NaN in float -> i64, as Rust's `as`.
    let special = HostData::F64(vec![f64::NAN, 1e300, -1e300, -2.7, 2.7, 9.3e18]);
    let (c, g) = rig.put(&special);
    let l = Layout::contiguous(&[6]);
    let want = rig.c().cast(&*c, &l, DType::I64).unwrap();
    let got = rig.g().cast(&*g, &l, DType::I64).unwrap();
    rig.same("cast special f64->i64", &*want, &*got, &[6], Tol::exact());
}

#[test]
fn copy_strided_matches_cpu() {
    let Some(rig) = Rig::new("copy_strided_matches_cpu") else {
        return;
    };
    let mut rng = Rng::new(5);
    let shape = [5usize, 8, 3];
    for dtype in [DType::F32, DType::F64, DType::I64] {
        for src in views(&mut rng, &shape, dtype, -9.0, 9.0) {
            // Destinations: dense, and a transposed window into a bigger buffer.
            let dense = Layout::contiguous(&shape);
            let window = Layout::contiguous(&[3, 10, 7])
                .narrow(1, 1, 8)
                .narrow(2, 2, 5)
                .permute(&[2, 1, 0])
                .unwrap();
            for (dname, dl, dlen) in [("dense", dense, 120usize), ("window", window, 210)] {
                let init = rng.data(dlen, dtype, 100.0, 200.0);
                let (cs, gs) = rig.put(&src.data);
                let (mut cd, mut gd) = rig.put(&init);
                rig.c().copy_strided(&*cs, &src.layout, &mut *cd, &dl).unwrap();
                rig.g().copy_strided(&*gs, &src.layout, &mut *gd, &dl).unwrap();
                rig.same(
                    &format!("copy {dtype} {} -> {dname}", src.name),
                    &*cd,
                    &*gd,
                    &[dlen],
                    Tol::exact(),
                );
            }
        }
    }
}

#[test]
fn reduce_matches_cpu() {
    let Some(rig) = Rig::new("reduce_matches_cpu") else {
        return;
    };
    let mut rng = Rng::new(6);
    let cases: &[(&[usize], &[usize])] = &[
        (&[4, 50, 6], &[1]),
        (&[4, 50, 6], &[0, 2]),
        (&[4, 50, 6], &[2]),
        (&[4, 50, 6], &[0, 1, 2]),
        (&[4, 50, 6], &[]),
        (&[3, 70_000], &[1]),     // few long rows: split into partials
        (&[70_000, 3], &[0]),     // column sums: adjacent outputs per warp, split
        (&[1000, 1000], &[0, 1]), // everything, split
        (&[7], &[0]),
        (&[], &[]),
    ];
    for dtype in FLOATS {
        for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min] {
            for &(shape, axes) in cases {
                let mut out_shape = shape.to_vec();
                for &a in axes {
                    out_shape[a] = 1;
                }
                let n_red: usize = axes.iter().map(|&a| shape[a]).product();
                for case in views(&mut rng, shape, dtype, -1.0, 1.0) {
                    if case.name.starts_with("broadcast") && shape.iter().product::<usize>() > 100_000 {
                        continue; // same paths as dense, only slower on the CPU
                    }
                    let (c, g) = rig.put(&case.data);
                    let want = rig.c().reduce(op, &*c, &case.layout, axes).unwrap();
                    let got = rig.g().reduce(op, &*g, &case.layout, axes).unwrap();
                    let tol = Tol::of(dtype, (2e-7 * n_red as f64, 1e-5), (1e-15 * n_red as f64, 1e-13));
                    rig.same(
                        &format!("reduce {op:?} {dtype} axes {axes:?} of {}", case.name),
                        &*want,
                        &*got,
                        &out_shape,
                        tol,
                    );
                }
            }
        }
        // Empty reduced axes: sum is 0, max/min are errors (core's contract; checked
        // directly, not against the CPU backend).
        let g = rig.g().from_host(&HostData::from_f64(vec![], dtype)).unwrap();
        let l = Layout::contiguous(&[3, 0]);
        let got = rig.g().reduce(ReduceOp::Sum, &*g, &l, &[1]).unwrap();
        let zeros = HostData::from_f64(vec![0.0; 3], dtype);
        assert_eq!(rig.g().to_host(&*got, &Layout::contiguous(&[3, 1])).unwrap(), zeros);
        assert!(rig.g().reduce(ReduceOp::Max, &*g, &l, &[1]).is_err());
    }
}

#[test]
fn matmul_matches_cpu() {
    let Some(rig) = Rig::new("matmul_matches_cpu") else {
        return;
    };
    let mut rng = Rng::new(7);
    // (batch, m, k, n)
    let shapes: &[(&[usize], usize, usize, usize)] = &[
        (&[], 1, 1, 1),
        (&[], 17, 33, 9),
        (&[], 128, 128, 128),
        (&[], 130, 257, 70),
        (&[3], 64, 40, 96),
        (&[2, 3], 31, 16, 45),
        (&[], 2048, 32, 2048), // enough tiles for the 128 x 128 kernel on any GPU
        (&[4], 1, 300, 1),
    ];
    for dtype in FLOATS {
        for &(batch, m, k, n) in shapes {
            let mut ls: Vec<usize> = batch.to_vec();
            ls.extend([m, k]);
            let mut rs: Vec<usize> = batch.to_vec();
            rs.extend([k, n]);
            let mut os: Vec<usize> = batch.to_vec();
            os.extend([m, n]);
            let r = ls.len();
            // lhs: dense or transposed (k contiguous or m contiguous); rhs likewise,
            // or one matrix broadcast over the batch (batch stride 0).
            let transposed = |shape: &[usize]| {
                let mut t = shape.to_vec();
                t.swap(r - 1, r - 2);
                let mut perm: Vec<usize> = (0..r).collect();
                perm.swap(r - 1, r - 2);
                Layout::contiguous(&t).permute(&perm).unwrap()
            };
            let lhs_layouts = [Layout::contiguous(&ls), transposed(&ls)];
            let mut rhs_layouts = vec![Layout::contiguous(&rs), transposed(&rs)];
            if !batch.is_empty() {
                rhs_layouts.push(Layout::contiguous(&[k, n]).broadcast_to(&rs).unwrap());
            }
            let big = m * n > 1_000_000;
            for (li, ll) in lhs_layouts.iter().enumerate() {
                for (ri, rl) in rhs_layouts.iter().enumerate() {
                    if big && li + ri > 1 {
                        continue; // the big case only for two layouts: CPU time
                    }
                    let a = rng.data(ll.storage_extent(), dtype, -1.0, 1.0);
                    let b = rng.data(rl.storage_extent(), dtype, -1.0, 1.0);
                    let (ca, ga) = rig.put(&a);
                    let (cb, gb) = rig.put(&b);
                    let want = rig.c().matmul(&*ca, ll, &*cb, rl).unwrap();
                    let got = rig.g().matmul(&*ga, ll, &*gb, rl).unwrap();
                    let tol = Tol::of(dtype, (2e-6 * k as f64, 1e-5), (1e-14 * k as f64, 1e-12));
                    let what = format!("matmul {dtype} {batch:?} {m}x{k}x{n} lhs#{li} rhs#{ri}");
                    rig.same(&what, &*want, &*got, &os, tol);
                }
            }
        }
        // k = 0 gives zeros; an empty output is fine.
        let (ca, ga) = rig.put(&HostData::from_f64(vec![], dtype));
        let want = rig
            .c()
            .matmul(&*ca, &Layout::contiguous(&[3, 0]), &*ca, &Layout::contiguous(&[0, 4]))
            .unwrap();
        let got = rig
            .g()
            .matmul(&*ga, &Layout::contiguous(&[3, 0]), &*ga, &Layout::contiguous(&[0, 4]))
            .unwrap();
        rig.same("matmul k=0", &*want, &*got, &[3, 4], Tol::exact());
    }
    // The 64-bit-index kernels, forced on ordinary sizes.
    unigrad_cuda::set_wide_gemm(&rig.gpu, true);
    for dtype in FLOATS {
        let (ll, rl) = (
            Layout::contiguous(&[2, 70, 50]),
            Layout::contiguous(&[50, 90]).broadcast_to(&[2, 50, 90]).unwrap(),
        );
        let a = rng.data(ll.storage_extent(), dtype, -1.0, 1.0);
        let b = rng.data(rl.storage_extent(), dtype, -1.0, 1.0);
        let (ca, ga) = rig.put(&a);
        let (cb, gb) = rig.put(&b);
        let want = rig.c().matmul(&*ca, &ll, &*cb, &rl).unwrap();
        let got = rig.g().matmul(&*ga, &ll, &*gb, &rl).unwrap();
        rig.same(
            &format!("matmul wide {dtype}"),
            &*want,
            &*got,
            &[2, 70, 90],
            Tol::of(dtype, (1e-4, 1e-5), (1e-12, 1e-12)),
        );
    }
    unigrad_cuda::set_wide_gemm(&rig.gpu, false);
}

#[test]
fn softmax_and_moments_match_cpu() {
    let Some(rig) = Rig::new("softmax_and_moments_match_cpu") else {
        return;
    };
    let mut rng = Rng::new(8);
    // Short rows (a warp per row) and long ones (a block per row).
    for shape in [
        &[4usize, 7][..],
        &[3, 5, 33][..],
        &[2, 3000][..],
        &[1000][..],
        &[64, 1][..],
    ] {
        for dtype in FLOATS {
            let tol = Tol::of(dtype, (2e-6, 2e-5), (1e-14, 1e-12));
            for case in views(&mut rng, shape, dtype, -6.0, 6.0) {
                let (c, g) = rig.put(&case.data);
                let what = format!("{dtype} {}", case.name);
                let (want, got) = (
                    rig.c().softmax_last(&*c, &case.layout).unwrap(),
                    rig.g().softmax_last(&*g, &case.layout).unwrap(),
                );
                rig.same(&format!("softmax {what}"), &*want, &*got, shape, tol);
                let (lwant, lgot) = (
                    rig.c().log_softmax_last(&*c, &case.layout).unwrap(),
                    rig.g().log_softmax_last(&*g, &case.layout).unwrap(),
                );
                rig.same(&format!("log_softmax {what}"), &*lwant, &*lgot, shape, tol);

                // Backward passes on dense y (from the CPU, so both get equal inputs).
                let dy = rng.data(case.layout.numel(), dtype, -1.0, 1.0);
                let (cdy, gdy) = rig.put(&dy);
                let yh = rig.c().to_host(&*want, &Layout::contiguous(shape)).unwrap();
                let (cy, gy) = rig.put(&yh);
                let want = rig.c().softmax_last_backward(&*cy, &*cdy, shape).unwrap();
                let got = rig.g().softmax_last_backward(&*gy, &*gdy, shape).unwrap();
                rig.same(&format!("softmax backward {what}"), &*want, &*got, shape, tol);
                let lyh = rig.c().to_host(&*lwant, &Layout::contiguous(shape)).unwrap();
                let (cly, gly) = rig.put(&lyh);
                let want = rig.c().log_softmax_last_backward(&*cly, &*cdy, shape).unwrap();
                let got = rig.g().log_softmax_last_backward(&*gly, &*gdy, shape).unwrap();
                rig.same(&format!("log_softmax backward {what}"), &*want, &*got, shape, tol);

                let mut stat = shape.to_vec();
                *stat.last_mut().unwrap() = 1;
                let (cm, cv) = rig.c().moments_last(&*c, &case.layout).unwrap();
                let (gm, gv) = rig.g().moments_last(&*g, &case.layout).unwrap();
                rig.same(&format!("mean {what}"), &*cm, &*gm, &stat, tol);
                rig.same(&format!("var {what}"), &*cv, &*gv, &stat, tol);
            }
        }
    }
    // Masked rows (-inf), as causal attention produces.
    let x = HostData::F32(vec![
        0.5,
        f32::NEG_INFINITY,
        1.0,
        f32::NEG_INFINITY,
        f32::NEG_INFINITY,
        2.0,
    ]);
    let (c, g) = rig.put(&x);
    let l = Layout::contiguous(&[2, 3]);
    let want = rig.c().softmax_last(&*c, &l).unwrap();
    let got = rig.g().softmax_last(&*g, &l).unwrap();
    rig.same(
        "softmax with -inf",
        &*want,
        &*got,
        &[2, 3],
        Tol::of(DType::F32, (1e-7, 1e-6), (0.0, 0.0)),
    );
}

#[test]
fn norm_matches_cpu() {
    let Some(rig) = Rig::new("norm_matches_cpu") else {
        return;
    };
    let mut rng = Rng::new(12);
    // Warp rows, block rows (> 1024 columns), many row chunks in the column sums, an
    // empty row and no rows.
    for (rows, n) in [(4usize, 7usize), (3, 3000), (600, 40), (5, 1), (3, 0), (0, 4)] {
        for dtype in FLOATS {
            let tol = Tol::of(dtype, (2e-6, 2e-5), (1e-13, 1e-12));
            let grad_tol = Tol::of(dtype, (2e-5, 2e-4), (1e-12, 1e-11));
            let (cx, gx) = rig.put(&rng.data(rows * n, dtype, -2.0, 3.0));
            let (cdy, gdy) = rig.put(&rng.data(rows * n, dtype, -1.0, 1.0));
            let (cw, gw) = rig.put(&rng.data(n, dtype, 0.5, 1.5));
            let (cb, gb) = rig.put(&rng.data(n, dtype, -0.5, 0.5));
            for rms in [false, true] {
                for affine in [false, true] {
                    let what = format!("{dtype} [{rows}, {n}] rms={rms} affine={affine}");
                    let (cwo, gwo) = if affine { (Some(&*cw), Some(&*gw)) } else { (None, None) };
                    let (cbo, gbo) = if affine && !rms {
                        (Some(&*cb), Some(&*gb))
                    } else {
                        (None, None)
                    };
                    let (cy, cm, cr) = rig.c().norm_last(&*cx, rows, n, cwo, cbo, 1e-5, rms).unwrap();
                    let (gy, gm, gr) = rig.g().norm_last(&*gx, rows, n, gwo, gbo, 1e-5, rms).unwrap();
                    rig.same(&format!("norm y {what}"), &*cy, &*gy, &[rows, n], tol);
                    rig.same(&format!("norm mean {what}"), &*cm, &*gm, &[rows], tol);
                    rig.same(&format!("norm rstd {what}"), &*cr, &*gr, &[rows], tol);
                    // The backward from the CPU's statistics, so both get equal inputs.
                    let stats = |s: &dyn BackendStorage| rig.c().to_host(s, &Layout::contiguous(&[rows])).unwrap();
                    let ((_, gm), (_, gr)) = (rig.put(&stats(&*cm)), rig.put(&stats(&*cr)));
                    let (cdx, cdw, cdb) = rig
                        .c()
                        .norm_last_backward(&*cx, &*cm, &*cr, cwo, &*cdy, rows, n, rms)
                        .unwrap();
                    let (gdx, gdw, gdb) = rig
                        .g()
                        .norm_last_backward(&*gx, &*gm, &*gr, gwo, &*gdy, rows, n, rms)
                        .unwrap();
                    rig.same(&format!("norm dx {what}"), &*cdx, &*gdx, &[rows, n], grad_tol);
                    assert_eq!((cdw.is_some(), cdb.is_some()), (gdw.is_some(), gdb.is_some()), "{what}");
                    for (name, c, g) in [("dw", cdw, gdw), ("db", cdb, gdb)] {
                        if let (Some(c), Some(g)) = (c, g) {
                            rig.same(&format!("norm {name} {what}"), &*c, &*g, &[n], grad_tol);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn adam_matches_cpu() {
    let Some(rig) = Rig::new("adam_matches_cpu") else {
        return;
    };
    let mut rng = Rng::new(13);
    for len in [1usize, 37, 70_000] {
        for dtype in FLOATS {
            let tol = Tol::of(dtype, (1e-6, 1e-5), (1e-14, 1e-12));
            let (cp, gp) = rig.put(&rng.data(len, dtype, -1.0, 1.0));
            let (cg, gg) = rig.put(&rng.data(len, dtype, -0.1, 0.1));
            let (cm, gm) = rig.put(&rng.data(len, dtype, -0.01, 0.01));
            let (cv, gv) = rig.put(&rng.data(len, dtype, 0.0, 1e-4));
            for (decoupled, weight_decay, lr, t) in [
                (true, 0.1, 1e-3, 1),
                (true, 0.1, 1e-3, 7),
                (false, 0.01, 3e-4, 7),
                (true, 0.0, 0.0, 7),
            ] {
                let h = unigrad_core::AdamStep {
                    lr,
                    beta1: 0.9,
                    beta2: 0.999,
                    eps: 1e-8,
                    weight_decay,
                    decoupled,
                    bias_correction1: 1.0 - 0.9f64.powi(t),
                    bias_correction2: 1.0 - 0.999f64.powi(t),
                };
                let first = t == 1;
                let (cmo, cvo) = if first { (None, None) } else { (Some(&*cm), Some(&*cv)) };
                let (gmo, gvo) = if first { (None, None) } else { (Some(&*gm), Some(&*gv)) };
                let want = rig.c().adam_update(&*cp, &*cg, cmo, cvo, len, &h).unwrap();
                let got = rig.g().adam_update(&*gp, &*gg, gmo, gvo, len, &h).unwrap();
                let what = format!("{dtype} len={len} {h:?}");
                rig.same(&format!("adam p {what}"), &*want.0, &*got.0, &[len], tol);
                rig.same(&format!("adam m {what}"), &*want.1, &*got.1, &[len], tol);
                rig.same(&format!("adam v {what}"), &*want.2, &*got.2, &[len], tol);
            }
        }
    }
}

#[test]
fn index_ops_match_cpu() {
    let Some(rig) = Rig::new("index_ops_match_cpu") else {
        return;
    };
    let mut rng = Rng::new(9);
    let shape = [6usize, 5, 4];
    for dtype in [DType::F32, DType::F64, DType::I64] {
        for dim in 0..3 {
            let size = shape[dim];
            for src in views(&mut rng, &shape, dtype, -9.0, 9.0) {
                // index_select with repeated ids from a 2-D, transposed id tensor.
                let ids: Vec<i64> = (0..6).map(|_| rng.below(size) as i64).collect();
                let il = Layout::contiguous(&[3, 2]).permute(&[1, 0]).unwrap();
                let (ci, gi) = rig.put(&HostData::I64(ids.clone()));
                let (cs, gs) = rig.put(&src.data);
                let want = rig.c().index_select(&*cs, &src.layout, &*ci, &il, dim).unwrap();
                let got = rig.g().index_select(&*gs, &src.layout, &*gi, &il, dim).unwrap();
                let mut out_shape = shape.to_vec();
                out_shape[dim] = 6;
                rig.same(
                    &format!("index_select {dtype} dim {dim} {}", src.name),
                    &*want,
                    &*got,
                    &out_shape,
                    Tol::exact(),
                );

                // gather: ids shaped like the output, same as src off `dim`.
                let mut gshape = shape.to_vec();
                gshape[dim] = 3;
                let gn: usize = gshape.iter().product();
                let gids: Vec<i64> = (0..gn).map(|_| rng.below(size) as i64).collect();
                let gl = Layout::contiguous(&gshape);
                let (cgi, ggi) = rig.put(&HostData::I64(gids));
                let want = rig.c().gather(&*cs, &src.layout, &*cgi, &gl, dim).unwrap();
                let got = rig.g().gather(&*gs, &src.layout, &*ggi, &gl, dim).unwrap();
                rig.same(
                    &format!("gather {dtype} dim {dim} {}", src.name),
                    &*want,
                    &*got,
                    &gshape,
                    Tol::exact(),
                );

                if dtype == DType::I64 {
                    continue; // the accumulating ops are float-only
                }
                // index_add / scatter_add into a dense dst, accumulating repeats.
                let tol = Tol::of(dtype, (1e-5, 1e-6), (1e-13, 1e-14));
                let n_dst: usize = shape.iter().product();
                let init = rng.data(n_dst, dtype, -1.0, 1.0);
                let add_src = rng.data(out_shape.iter().product(), dtype, -1.0, 1.0);
                let asl = Layout::contiguous(&out_shape);
                let (cas, gas) = rig.put(&add_src);
                let (mut cd, mut gd) = rig.put(&init);
                rig.c()
                    .index_add(&mut *cd, &shape, dim, &*ci, &il, &*cas, &asl)
                    .unwrap();
                rig.g()
                    .index_add(&mut *gd, &shape, dim, &*gi, &il, &*gas, &asl)
                    .unwrap();
                rig.same(&format!("index_add {dtype} dim {dim}"), &*cd, &*gd, &shape, tol);

                let (mut cd, mut gd) = rig.put(&init);
                let ssrc = rng.data(gn, dtype, -1.0, 1.0);
                // A transposed src view of the gather shape.
                let rev: Vec<usize> = gshape.iter().rev().copied().collect();
                let sl = Layout::contiguous(&rev).permute(&[2, 1, 0]).unwrap();
                let (css, gss) = rig.put(&ssrc);
                rig.c()
                    .scatter_add(&mut *cd, &shape, dim, &*cgi, &gl, &*css, &sl)
                    .unwrap();
                rig.g()
                    .scatter_add(&mut *gd, &shape, dim, &*ggi, &gl, &*gss, &sl)
                    .unwrap();
                rig.same(&format!("scatter_add {dtype} dim {dim}"), &*cd, &*gd, &shape, tol);
            }
        }
    }
}

/// Rounded values (many ties) with a NaN at element 5 for floats.
fn tied(d: &HostData) -> HostData {
    let float = d.dtype() != DType::I64;
    let v = d
        .to_f64()
        .iter()
        .enumerate()
        .map(|(i, x)| if float && i == 5 { f64::NAN } else { (x * 3.0).round() })
        .collect();
    HostData::from_f64(v, d.dtype())
}

#[test]
fn sort_scan_and_i64_compare_match_cpu() {
    let Some(rig) = Rig::new("sort_scan_and_i64_compare_match_cpu") else {
        return;
    };
    let mut rng = Rng::new(11);
    for dtype in [DType::F32, DType::F64, DType::I64] {
        for shape in [&[4usize, 50, 6][..], &[7], &[3, 300]] {
            for case in views(&mut rng, shape, dtype, -2.0, 2.0) {
                let data = tied(&case.data);
                let (c, g) = rig.put(&data);
                let l = &case.layout;
                for axis in 0..shape.len() {
                    let what = format!("{dtype} axis {axis} of {}", case.name);
                    let mut kept = shape.to_vec();
                    kept[axis] = 1;
                    for op in [ReduceOp::Max, ReduceOp::Min] {
                        let want = rig.c().arg_reduce(op, &*c, l, axis).unwrap();
                        let got = rig.g().arg_reduce(op, &*g, l, axis).unwrap();
                        rig.same(&format!("arg_reduce {op:?} {what}"), &*want, &*got, &kept, Tol::exact());
                    }
                    for flag in [false, true] {
                        let want = rig.c().argsort(&*c, l, axis, flag).unwrap();
                        let got = rig.g().argsort(&*g, l, axis, flag).unwrap();
                        rig.same(
                            &format!("argsort desc {flag} {what}"),
                            &*want,
                            &*got,
                            shape,
                            Tol::exact(),
                        );
                        // integer-valued data: every partial sum is exact in both orders
                        let want = rig.c().cumsum(&*c, l, axis, flag).unwrap();
                        let got = rig.g().cumsum(&*g, l, axis, flag).unwrap();
                        rig.same(&format!("cumsum rev {flag} {what}"), &*want, &*got, shape, Tol::exact());
                    }
                }
            }
        }
    }
    // i64 comparisons, with a broadcast operand
    let shape = [4usize, 50, 6];
    for case in views(&mut rng, &shape, DType::I64, -3.0, 3.0) {
        let other = rng.data(300, DType::I64, -3.0, 3.0);
        let ol = Layout::contiguous(&[50, 6]).broadcast_to(&shape).unwrap();
        let (c, g) = rig.put(&case.data);
        let (co, go) = rig.put(&other);
        for op in [
            BinaryOp::Eq,
            BinaryOp::Ne,
            BinaryOp::Lt,
            BinaryOp::Le,
            BinaryOp::Gt,
            BinaryOp::Ge,
        ] {
            let want = rig.c().binary(op, &*c, &case.layout, &*co, &ol).unwrap();
            let got = rig.g().binary(op, &*g, &case.layout, &*go, &ol).unwrap();
            rig.same(
                &format!("i64 {op:?} of {}", case.name),
                &*want,
                &*got,
                &shape,
                Tol::exact(),
            );
        }
    }
}

#[test]
fn out_of_range_ids_are_errors_and_leave_dst_untouched() {
    let Some(rig) = Rig::new("out_of_range_ids_are_errors_and_leave_dst_untouched") else {
        return;
    };
    let g = rig.g();
    let shape = [4usize, 3];
    let data = HostData::F32((0..12).map(|v| v as f32).collect());
    let src = g.from_host(&data).unwrap();
    let l = Layout::contiguous(&shape);
    for bad in [4i64, -1, i64::MAX] {
        let ids = g.from_host(&HostData::I64(vec![0, bad, 2])).unwrap();
        let il = Layout::contiguous(&[3]);
        let is_oob = |r: Result<(), Error>, what: &str| match r {
            Err(Error::IndexOutOfRange { index, size, .. }) => {
                assert_eq!((index, size), (bad, 4), "{what}");
            }
            other => panic!("{what}: expected IndexOutOfRange for id {bad}, got {other:?}"),
        };
        is_oob(g.index_select(&*src, &l, &*ids, &il, 0).map(|_| ()), "index_select");
        let mut dst = g.from_host(&data).unwrap();
        let add = g.from_host(&HostData::F32(vec![1.0; 9])).unwrap();
        is_oob(
            g.index_add(&mut *dst, &shape, 0, &*ids, &il, &*add, &Layout::contiguous(&[3, 3])),
            "index_add",
        );
        assert_eq!(
            g.to_host(&*dst, &l).unwrap(),
            data,
            "index_add must not touch dst on error"
        );

        let gids = g.from_host(&HostData::I64(vec![0, 1, 2, bad, 0, 0])).unwrap();
        let gl = Layout::contiguous(&[2, 3]);
        is_oob(g.gather(&*src, &l, &*gids, &gl, 0).map(|_| ()), "gather");
        let sadd = g.from_host(&HostData::F32(vec![1.0; 6])).unwrap();
        is_oob(
            g.scatter_add(&mut *dst, &shape, 0, &*gids, &gl, &*sadd, &gl),
            "scatter_add",
        );
        assert_eq!(
            g.to_host(&*dst, &l).unwrap(),
            data,
            "scatter_add must not touch dst on error"
        );
    }
    // The device is still healthy.
    g.synchronize().unwrap();
    let twice = g.binary(BinaryOp::Add, &*src, &l, &*src, &l).unwrap();
    assert_eq!(g.to_host(&*twice, &l).unwrap().to_f64()[11], 22.0);
}

#[test]
fn invalid_operands_are_errors_not_faults() {
    let Some(rig) = Rig::new("invalid_operands_are_errors_not_faults") else {
        return;
    };
    let g = rig.g();
    let x = g.from_host(&HostData::F32(vec![1.0; 6])).unwrap();
    // A view reaching past the storage.
    let too_far = Layout::new(&[2, 3], &[3, 1], 1);
    assert!(matches!(
        g.unary(UnaryOp::Exp, &*x, &too_far),
        Err(Error::InvalidArgument { .. })
    ));
    // Storage from another device.
    let cpu_x = rig.c().from_host(&HostData::F32(vec![1.0; 6])).unwrap();
    let l = Layout::contiguous(&[6]);
    assert!(matches!(
        g.unary(UnaryOp::Exp, &*cpu_x, &l),
        Err(Error::DeviceMismatch { .. })
    ));
    // Arithmetic on indices.
    let i = g.from_host(&HostData::I64(vec![1; 6])).unwrap();
    assert!(matches!(
        g.unary(UnaryOp::Exp, &*i, &l),
        Err(Error::UnsupportedDType { .. })
    ));
    assert!(matches!(
        g.binary(BinaryOp::Add, &*x, &l, &*i, &l),
        Err(Error::DTypeMismatch { .. })
    ));
    // Shape mismatch in matmul.
    let m = Layout::contiguous(&[2, 3]);
    assert!(matches!(g.matmul(&*x, &m, &*x, &m), Err(Error::ShapeMismatch { .. })));
}

#[test]
fn allocator_serves_a_steady_loop_from_its_cache() {
    let Some(rig) = Rig::new("allocator_serves_a_steady_loop_from_its_cache") else {
        return;
    };
    let g = rig.g();
    let mut rng = Rng::new(10);
    let data = rng.data(64 * 256, DType::F32, -1.0, 1.0);
    let l = Layout::contiguous(&[64, 256]);
    let w = g.from_host(&rng.data(256 * 128, DType::F32, -1.0, 1.0)).unwrap();
    let wl = Layout::contiguous(&[256, 128]);
    let step = || {
        let x = g.from_host(&data).unwrap();
        let h = g.matmul(&*x, &l, &*w, &wl).unwrap();
        let hl = Layout::contiguous(&[64, 128]);
        let a = g.unary(UnaryOp::GeluErf, &*h, &hl).unwrap();
        let p = g.softmax_last(&*a, &hl).unwrap();
        let s = g.reduce(ReduceOp::Sum, &*p, &hl, &[0, 1]).unwrap();
        g.to_host(&*s, &Layout::contiguous(&[1, 1])).unwrap().to_f64()[0]
    };
    for _ in 0..3 {
        step();
    }
    let before = unigrad_cuda::memory_stats(&rig.gpu).expect("stats of a cuda device");
    for _ in 0..20 {
        let total = step();
        assert!((total - 64.0).abs() < 1e-3, "softmax rows sum to 1: {total}");
    }
    let after = unigrad_cuda::memory_stats(&rig.gpu).unwrap();
    // Other tests share the device and may allocate concurrently, so allow a little.
    assert!(
        after.reuses >= before.reuses + 20 * 5,
        "the loop should be served from the cache: before {before:?}, after {after:?}"
    );
    unigrad_cuda::empty_cache(&rig.gpu).unwrap();
}

#[test]
fn concurrent_threads_share_one_device() {
    let Some(rig) = Rig::new("concurrent_threads_share_one_device") else {
        return;
    };
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let gpu = rig.gpu.clone();
            scope.spawn(move || {
                let g = gpu.backend();
                let n = 10_000 + t as usize;
                let x = g.from_host(&HostData::F64((0..n).map(|i| i as f64).collect())).unwrap();
                let l = Layout::contiguous(&[n]);
                for _ in 0..20 {
                    let s = g.reduce(ReduceOp::Sum, &*x, &l, &[0]).unwrap();
                    let got = g.to_host(&*s, &Layout::contiguous(&[1])).unwrap().to_f64()[0];
                    assert_eq!(got, (n * (n - 1) / 2) as f64);
                }
            });
        }
    });
}
