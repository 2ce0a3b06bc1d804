//! Dry-run unit tests of every family's launches: on a driverless backend every op
//! is planned and "launched", so kernel names, argument counts and argument sizes are
//! checked against the PTX signatures, and the validation paths run, all without a
//! GPU (the CPU kernel emulator and `tests/gpu.rs` then check what the kernels
//! compute). One test per family, each headed by the file whose launches it runs.

use crate::backend::CudaBackend;
use unigrad_core::backend::{AdamStep, Backend, BackendStorage, BinaryOp, BoxStorage, ReduceOp, UnaryOp};
use unigrad_core::dtype::{DType, HostData};
use unigrad_core::layout::Layout;

/// A backend whose launches only check their arguments.
fn backend() -> CudaBackend {
    CudaBackend::without_driver(crate::driver::Mode::DryRun, 0)
}

/// `n` zeros of `dtype` on `b`.
fn put(b: &CudaBackend, n: usize, dtype: DType) -> BoxStorage {
    b.from_host(&HostData::from_f64(vec![0.0; n], dtype)).unwrap()
}

/// A transposed (reversed-axes) view of logical shape `shape`.
fn transposed(shape: &[usize]) -> Layout {
    let r = shape.len();
    let rev: Vec<usize> = shape.iter().rev().copied().collect();
    Layout::contiguous(&rev)
        .permute(&(0..r).rev().collect::<Vec<_>>())
        .unwrap()
}

#[test]
fn the_cache_serves_repeated_sizes() {
    let b = backend();
    let before = b.gpu().memory_stats();
    for _ in 0..10 {
        let x = put(&b, 1000, DType::F32);
        drop(b.unary(UnaryOp::Exp, &*x, &Layout::contiguous(&[1000])).unwrap());
    }
    let after = b.gpu().memory_stats();
    assert_eq!(after.driver_allocs - before.driver_allocs, 2, "{after:?}");
    assert_eq!(after.reuses - before.reuses, 18);
    b.gpu().empty_cache().unwrap();
    assert_eq!(b.gpu().memory_stats().cached_bytes, 0);
}

// elementwise: `src/ops/elementwise.rs`

#[test]
fn every_elementwise_kernel_matches_its_call_site() {
    let b = backend();
    let shape = [4usize, 5, 6];
    let dense = Layout::contiguous(&shape);
    let bcast = Layout::contiguous(&[4, 1, 6]).broadcast_to(&shape).unwrap();
    for dtype in [DType::F32, DType::F64] {
        let x = put(&b, 120, dtype);
        for op in [
            UnaryOp::Neg,
            UnaryOp::GeluTanhGrad,
            UnaryOp::Affine(2.0, 1.0),
            UnaryOp::Powf(0.5),
            UnaryOp::MinScalar(1.0),
        ] {
            b.unary(op, &*x, &dense).unwrap();
            b.unary(op, &*x, &transposed(&shape)).unwrap();
        }
        for op in [BinaryOp::Add, BinaryOp::Ge] {
            b.binary(op, &*x, &dense, &*x, &bcast).unwrap();
        }
        for cond in [DType::F32, DType::F64, DType::I64] {
            let c = put(&b, 120, cond);
            b.where_cond(&*c, &bcast, &*x, &dense, &*x, &transposed(&shape))
                .unwrap();
        }
    }
    // Out-of-bounds views are rejected before any launch.
    let f = put(&b, 6, DType::F32);
    assert!(b.unary(UnaryOp::Exp, &*f, &Layout::new(&[2, 3], &[3, 1], 1)).is_err());
}

// reduce: `src/ops/reduce.rs`

#[test]
fn reductions_match_their_call_sites() {
    let b = backend();
    for dtype in [DType::F32, DType::F64] {
        for (shape, axes) in [
            (&[4usize, 50, 6][..], &[1usize][..]),
            (&[4, 50, 6], &[0, 2]),
            (&[3, 70_000], &[1]),
            (&[70_000, 3], &[0]),
            (&[1000, 1000], &[0, 1]),
            (&[], &[]),
        ] {
            let n = shape.iter().product();
            let x = put(&b, n, dtype);
            for op in [ReduceOp::Sum, ReduceOp::Max] {
                b.reduce(op, &*x, &Layout::contiguous(shape), axes).unwrap();
            }
        }
    }
    let x = put(&b, 0, DType::F32);
    assert!(b
        .reduce(ReduceOp::Max, &*x, &Layout::contiguous(&[3, 0]), &[1])
        .is_err());
    b.reduce(ReduceOp::Sum, &*x, &Layout::contiguous(&[3, 0]), &[1])
        .unwrap();
}

// matmul: `src/ops/matmul.rs`

#[test]
fn every_gemm_variant_matches_its_call_site() {
    let b = backend();
    for dtype in [DType::F32, DType::F64] {
        for (batch, m, k, n) in [
            (1usize, 2048usize, 32usize, 2048usize),
            (3, 17, 33, 9),
            (2, 0, 3, 4),
            (2, 3, 0, 4),
        ] {
            let a = put(&b, batch * m * k, dtype);
            let w = put(&b, k * n, dtype);
            let ll = Layout::contiguous(&[batch, m, k]);
            let rl = Layout::contiguous(&[k, n]).broadcast_to(&[batch, k, n]).unwrap();
            for wide in [false, true] {
                b.set_wide_gemm(wide);
                let c = b.matmul(&*a, &ll, &*w, &rl).unwrap();
                assert_eq!(c.len(), batch * m * n);
            }
            b.set_wide_gemm(false);
        }
    }
    let a = put(&b, 6, DType::F32);
    assert!(b
        .matmul(&*a, &Layout::contiguous(&[2, 3]), &*a, &Layout::contiguous(&[2, 3]))
        .is_err());
}

// view: `src/ops/view.rs`

#[test]
fn every_view_kernel_matches_its_call_site() {
    let b = backend();
    let shape = [4usize, 5, 6];
    let dense = Layout::contiguous(&shape);
    for from in [DType::F32, DType::F64, DType::I64] {
        let x = put(&b, 120, from);
        for to in [DType::F32, DType::F64, DType::I64] {
            assert_eq!(b.cast(&*x, &transposed(&shape), to).unwrap().dtype(), to);
        }
        let mut y = put(&b, 120, from);
        b.copy_strided(&*x, &transposed(&shape), &mut *y, &dense).unwrap();
        b.copy_strided(&*x, &dense, &mut *y, &dense).unwrap();
        b.to_host(&*x, &transposed(&shape)).unwrap();
        b.zeros(7, from).unwrap();
    }
}

// index: `src/ops/index.rs`

#[test]
fn index_kernels_match_their_call_sites() {
    let b = backend();
    let shape = [6usize, 5, 4];
    let ids = put(&b, 6, DType::I64);
    let il = transposed(&[3, 2]);
    for dtype in [DType::F32, DType::F64, DType::I64] {
        let src = put(&b, 120, dtype);
        for dim in 0..3 {
            let mut out = shape.to_vec();
            out[dim] = 6;
            b.index_select(&*src, &transposed(&shape), &*ids, &il, dim).unwrap();
            let mut gshape = shape.to_vec();
            gshape[dim] = 3;
            let gn = gshape.iter().product();
            let gids = put(&b, gn, DType::I64);
            let gl = Layout::contiguous(&gshape);
            b.gather(&*src, &transposed(&shape), &*gids, &gl, dim).unwrap();
            if dtype == DType::I64 {
                assert!(b
                    .index_add(
                        &mut *put(&b, 120, dtype),
                        &shape,
                        dim,
                        &*ids,
                        &il,
                        &*src,
                        &Layout::contiguous(&out)
                    )
                    .is_err());
                continue;
            }
            let add = put(&b, out.iter().product(), dtype);
            let mut dst = put(&b, 120, dtype);
            b.index_add(&mut *dst, &shape, dim, &*ids, &il, &*add, &Layout::contiguous(&out))
                .unwrap();
            let sadd = put(&b, gn, dtype);
            b.scatter_add(&mut *dst, &shape, dim, &*gids, &gl, &*sadd, &gl).unwrap();
        }
    }
    // Float ids are rejected before any launch.
    let f = put(&b, 6, DType::F32);
    assert!(b
        .index_select(&*f, &Layout::contiguous(&[6]), &*f, &Layout::contiguous(&[6]), 0)
        .is_err());
}

// softmax: `src/ops/softmax.rs`

#[test]
fn softmax_kernels_match_their_call_sites() {
    let b = backend();
    for dtype in [DType::F32, DType::F64] {
        // Warp rows, block rows, a scalar.
        for shape in [&[4usize, 7][..], &[2, 3000], &[]] {
            let n = shape.iter().product();
            let x = put(&b, n, dtype);
            let l = transposed(shape);
            b.softmax_last(&*x, &l).unwrap();
            b.log_softmax_last(&*x, &l).unwrap();
            b.softmax_last_backward(&*x, &*x, shape).unwrap();
            b.log_softmax_last_backward(&*x, &*x, shape).unwrap();
        }
    }
}

// norm: `src/ops/norm.rs`

#[test]
fn norm_kernels_match_their_call_sites() {
    let b = backend();
    for dtype in [DType::F32, DType::F64] {
        for shape in [&[4usize, 7][..], &[2, 3000], &[]] {
            let n = shape.iter().product();
            let x = put(&b, n, dtype);
            b.moments_last(&*x, &transposed(shape)).unwrap();
        }
        // Warp rows, block rows, one chunk and many chunks of column sums, empty.
        for (rows, n) in [(4usize, 7usize), (2, 3000), (3000, 64), (0, 5), (3, 0)] {
            let (x, dy, w, bias) = (
                put(&b, rows * n, dtype),
                put(&b, rows * n, dtype),
                put(&b, n, dtype),
                put(&b, n, dtype),
            );
            for rms in [false, true] {
                let (_, mean, rstd) = b.norm_last(&*x, rows, n, None, None, 1e-5, rms).unwrap();
                let (y, ..) = b.norm_last(&*x, rows, n, Some(&*w), Some(&*bias), 1e-5, rms).unwrap();
                assert_eq!(y.len(), rows * n);
                let (dx, dw, db) = b
                    .norm_last_backward(&*x, &*mean, &*rstd, Some(&*w), &*dy, rows, n, rms)
                    .unwrap();
                assert_eq!((dx.len(), dw.unwrap().len(), db.is_some()), (rows * n, n, !rms));
                let (_, dw, db) = b
                    .norm_last_backward(&*x, &*mean, &*rstd, None, &*dy, rows, n, rms)
                    .unwrap();
                assert!(dw.is_none() && db.is_none());
            }
        }
    }
    // Rejected before any launch: storage shorter than the sizes, a weight of
    // another dtype, integer input, and sizes whose product overflows.
    let (x, short_w, w64, ints) = (
        put(&b, 10, DType::F32),
        put(&b, 3, DType::F32),
        put(&b, 5, DType::F64),
        put(&b, 10, DType::I64),
    );
    type Case<'a> = (
        &'a str,
        &'a dyn BackendStorage,
        [usize; 2],
        Option<&'a dyn BackendStorage>,
    );
    let forward_cases: [Case; 5] = [
        ("x too short", &*x, [4, 5], None),
        ("weight too short", &*x, [2, 5], Some(&*short_w)),
        ("weight of another dtype", &*x, [2, 5], Some(&*w64)),
        ("integer input", &*ints, [2, 5], None),
        ("rows · n overflows", &*x, [usize::MAX, 2], None),
    ];
    for (what, x, [rows, n], w) in forward_cases {
        assert!(b.norm_last(x, rows, n, w, None, 1e-5, false).is_err(), "{what}");
    }
    let (_, m, r) = b.norm_last(&*x, 2, 5, None, None, 1e-5, false).unwrap();
    for (what, rows, w) in [
        ("statistics too short", 3, None),
        ("weight too short", 2, Some(&*short_w)),
    ] {
        assert!(
            b.norm_last_backward(&*x, &*m, &*r, w, &*x, rows, 5, true).is_err(),
            "{what}"
        );
    }
}

// optim: `src/ops/optim.rs`

#[test]
fn adam_kernels_match_their_call_sites() {
    let b = backend();
    let h = AdamStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.1,
        decoupled: true,
        bias_correction1: 0.1,
        bias_correction2: 0.001,
    };
    for dtype in [DType::F32, DType::F64] {
        for len in [0usize, 1, 70_000] {
            let (p, g, m) = (put(&b, len, dtype), put(&b, len, dtype), put(&b, len, dtype));
            b.adam_update(&*p, &*g, None, None, len, &h).unwrap();
            let (np, nm, nv) = b.adam_update(&*p, &*g, Some(&*m), Some(&*m), len, &h).unwrap();
            assert_eq!([np.len(), nm.len(), nv.len()], [len; 3]);
        }
    }
    // Short storage, mixed dtypes and integer parameters are errors.
    let (x, w) = (put(&b, 10, DType::F32), put(&b, 3, DType::F32));
    assert!(b.adam_update(&*x, &*w, None, None, 10, &h).is_err());
    assert!(b.adam_update(&*x, &*x, Some(&*w), None, 10, &h).is_err());
    let z = put(&b, 10, DType::F64);
    assert!(b.adam_update(&*x, &*z, None, None, 10, &h).is_err());
    let i = put(&b, 10, DType::I64);
    assert!(b.adam_update(&*i, &*i, None, None, 10, &h).is_err());
}

// sort and scan: `src/ops/sort.rs`, `src/ops/scan.rs`; i64 comparisons: `src/ops/elementwise.rs`

#[test]
fn sort_scan_and_i64_compare_match_their_call_sites() {
    let b = backend();
    let shape = [4usize, 5, 6];
    for dtype in [DType::F32, DType::F64, DType::I64] {
        let x = put(&b, 120, dtype);
        for layout in [Layout::contiguous(&shape), transposed(&shape)] {
            for axis in 0..3 {
                for op in [ReduceOp::Max, ReduceOp::Min] {
                    b.arg_reduce(op, &*x, &layout, axis).unwrap();
                }
                for flag in [false, true] {
                    b.argsort(&*x, &layout, axis, flag).unwrap();
                    b.cumsum(&*x, &layout, axis, flag).unwrap();
                }
            }
        }
    }
    let ids = put(&b, 120, DType::I64);
    let dense = Layout::contiguous(&shape);
    for op in [
        BinaryOp::Eq,
        BinaryOp::Ne,
        BinaryOp::Lt,
        BinaryOp::Le,
        BinaryOp::Gt,
        BinaryOp::Ge,
    ] {
        b.binary(op, &*ids, &dense, &*ids, &transposed(&shape)).unwrap();
    }
    // i64 arithmetic, an empty arg-reduced axis, a sum "arg-reduction" and an axis
    // past the rank are errors
    assert!(b.binary(BinaryOp::Add, &*ids, &dense, &*ids, &dense).is_err());
    let empty = put(&b, 0, DType::F32);
    assert!(b
        .arg_reduce(ReduceOp::Max, &*empty, &Layout::contiguous(&[3, 0]), 1)
        .is_err());
    assert!(b.arg_reduce(ReduceOp::Sum, &*ids, &dense, 1).is_err());
    assert!(b.cumsum(&*ids, &dense, 3, false).is_err());
    b.argsort(&*empty, &Layout::contiguous(&[3, 0]), 1, false).unwrap();
}
