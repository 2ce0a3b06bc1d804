//! Forward values against the naive references in [`crate::reference`], in f64
//! (round-off tolerance) and f32 (a few ulps), on dense and strided operands,
//! scalars, size-1 and zero-size dims, and sizes large enough to take the
//! backends' parallel paths.

use crate::reference::{scalar, Nd};
use crate::util::{assert_close, assert_nd, ids, rand_ids, same_storage, signed_away, Tol, View, VIEWS};
use unigrad_core::{DType, Device, Result, Tensor};

const FLOATS: [DType; 2] = [DType::F64, DType::F32];

/// Input domains for elementwise ops.
#[derive(Clone, Copy, Debug)]
enum Domain {
    /// Standard normal.
    Normal,
    /// `[0.5, 2)`: log, sqrt, rsqrt, fractional powers.
    Positive,
    /// `|x| ∈ [0.1, 2)`: abs, relu, recip.
    AwayFromZero,
}

fn gen(dev: &Device, shape: &[usize], d: Domain, dtype: DType) -> Result<Tensor> {
    let t = match d {
        Domain::Normal => crate::util::randn(dev, shape)?,
        Domain::Positive => crate::util::uniform(dev, shape, 0.5, 2.0)?,
        Domain::AwayFromZero => signed_away(dev, shape, 0.1, 2.0)?,
    };
    t.to_dtype(dtype)
}

type UnaryCase = (&'static str, fn(&Tensor) -> Result<Tensor>, fn(f64) -> f64, Domain);

fn unary_cases() -> Vec<UnaryCase> {
    vec![
        ("neg", |t| t.neg(), |x| -x, Domain::Normal),
        ("exp", |t| t.exp(), f64::exp, Domain::Normal),
        ("log", |t| t.log(), f64::ln, Domain::Positive),
        ("sqrt", |t| t.sqrt(), f64::sqrt, Domain::Positive),
        ("rsqrt", |t| t.rsqrt(), |x| 1.0 / x.sqrt(), Domain::Positive),
        ("abs", |t| t.abs(), f64::abs, Domain::AwayFromZero),
        ("relu", |t| t.relu(), |x| x.max(0.0), Domain::AwayFromZero),
        ("gelu", |t| t.gelu(), scalar::gelu, Domain::Normal),
        ("gelu_tanh", |t| t.gelu_tanh(), scalar::gelu_tanh, Domain::Normal),
        ("tanh", |t| t.tanh(), f64::tanh, Domain::Normal),
        ("sigmoid", |t| t.sigmoid(), scalar::sigmoid, Domain::Normal),
        ("sqr", |t| t.sqr(), |x| x * x, Domain::Normal),
        ("recip", |t| t.recip(), |x| 1.0 / x, Domain::AwayFromZero),
        ("powf(3)", |t| t.powf(3.0), |x| x.powf(3.0), Domain::Normal),
        ("powf(-1.5)", |t| t.powf(-1.5), |x| x.powf(-1.5), Domain::Positive),
        ("powf(0.3)", |t| t.powf(0.3), |x| x.powf(0.3), Domain::Positive),
        ("affine", |t| t.affine(1.5, -0.25), |x| 1.5 * x - 0.25, Domain::Normal),
        ("add_scalar", |t| t.add_scalar(0.75), |x| x + 0.75, Domain::Normal),
        ("sub_scalar", |t| t.sub_scalar(0.75), |x| x - 0.75, Domain::Normal),
        ("mul_scalar", |t| t.mul_scalar(-2.5), |x| x * -2.5, Domain::Normal),
        ("div_scalar", |t| t.div_scalar(4.0), |x| x / 4.0, Domain::Normal),
        ("clamp", |t| t.clamp(-0.5, 0.7), |x| x.clamp(-0.5, 0.7), Domain::Normal),
    ]
}

/// Every unary map on every layout (dense, transposed, narrowed, permuted, stride-0
/// broadcast), on a scalar and on a zero-size tensor, in f64 and f32.
pub fn unary_ops(dev: &Device) -> Result<()> {
    let shapes: [&[usize]; 4] = [&[2, 3, 4], &[7], &[], &[3, 0, 2]];
    for dtype in FLOATS {
        let tol = Tol::for_dtype(dtype);
        for (name, op, f, dom) in unary_cases() {
            for shape in shapes {
                for view in VIEWS {
                    let x = view.make(shape, |s| gen(dev, s, dom, dtype))?;
                    let want = Nd::of(&x)?.map(f);
                    let got = op(&x)?;
                    assert_eq!(got.dtype(), dtype, "{name}: dtype");
                    assert_nd(&format!("{name} {dtype} {shape:?} {view:?}"), &got, &want, tol)?;
                }
            }
            // a stride-0 (broadcast) operand
            let x = gen(dev, &[3, 1], dom, dtype)?.broadcast_as(&[2, 3, 4])?;
            assert_nd(&format!("{name} broadcast"), &op(&x)?, &Nd::of(&x)?.map(f), tol)?;
        }
    }
    Ok(())
}

type BinaryCase = (
    &'static str,
    fn(&Tensor, &Tensor) -> Result<Tensor>,
    fn(f64, f64) -> f64,
);

fn bool_f(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

fn arithmetic_cases() -> Vec<BinaryCase> {
    vec![
        ("add", |a, b| a.add(b), |a, b| a + b),
        ("sub", |a, b| a.sub(b), |a, b| a - b),
        ("mul", |a, b| a.mul(b), |a, b| a * b),
        ("div", |a, b| a.div(b), |a, b| a / b),
        ("maximum", |a, b| a.maximum(b), f64::max),
        ("minimum", |a, b| a.minimum(b), f64::min),
    ]
}

fn comparison_cases() -> Vec<BinaryCase> {
    vec![
        ("eq", |a, b| a.eq(b), |a, b| bool_f(a == b)),
        ("ne", |a, b| a.ne(b), |a, b| bool_f(a != b)),
        ("lt", |a, b| a.lt(b), |a, b| bool_f(a < b)),
        ("le", |a, b| a.le(b), |a, b| bool_f(a <= b)),
        ("gt", |a, b| a.gt(b), |a, b| bool_f(a > b)),
        ("ge", |a, b| a.ge(b), |a, b| bool_f(a >= b)),
    ]
}

/// Shape pairs covering equal shapes, trailing broadcast, rank mismatch both ways,
/// size-1 dims on both sides, rank-0 operands and zero-size dims.
pub const BROADCAST_PAIRS: [(&[usize], &[usize]); 11] = [
    (&[2, 3], &[2, 3]),
    (&[2, 3], &[3]),
    (&[3], &[2, 3]),
    (&[2, 1, 4], &[3, 1]),
    (&[4, 1], &[1, 5]),
    (&[], &[2, 3]),
    (&[2, 3], &[]),
    (&[], &[]),
    (&[1], &[4]),
    (&[2, 3, 1, 2], &[3, 4, 1]),
    (&[2, 0, 3], &[3]),
];

/// Broadcasting arithmetic and comparisons on every shape pair and layout, f64 and f32.
pub fn binary_broadcast(dev: &Device) -> Result<()> {
    for dtype in FLOATS {
        let tol = Tol::for_dtype(dtype);
        for (sa, sb) in BROADCAST_PAIRS {
            for (va, vb) in [
                (View::Contig, View::Contig),
                (View::Transposed, View::Narrowed),
                (View::Narrowed, View::Reversed),
            ] {
                let a = va.make(sa, |s| gen(dev, s, Domain::Normal, dtype))?;
                let b = vb.make(sb, |s| gen(dev, s, Domain::AwayFromZero, dtype))?;
                let (na, nb) = (Nd::of(&a)?, Nd::of(&b)?);
                for (name, op, f) in arithmetic_cases() {
                    let want = na.zip(&nb, f).expect("pairs are compatible");
                    assert_nd(
                        &format!("{name} {dtype} {sa:?} {sb:?} {va:?}/{vb:?}"),
                        &op(&a, &b)?,
                        &want,
                        tol,
                    )?;
                }
                // comparisons need ties: values from {-1, 0, 1}
                let a = va.make(sa, |s| small_ints(dev, s, dtype))?;
                let b = vb.make(sb, |s| small_ints(dev, s, dtype))?;
                let (na, nb) = (Nd::of(&a)?, Nd::of(&b)?);
                for (name, op, f) in comparison_cases() {
                    let want = na.zip(&nb, f).expect("pairs are compatible");
                    let got = op(&a, &b)?;
                    assert_eq!(got.dtype(), dtype, "{name}: comparison keeps the operands' dtype");
                    assert_nd(&format!("{name} {dtype} {sa:?} {sb:?}"), &got, &want, tol)?;
                }
            }
        }
    }
    Ok(())
}

fn small_ints(dev: &Device, shape: &[usize], dtype: DType) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = unigrad_core::rng::with_rng(|r| (0..n).map(|_| r.below(3) as f64 - 1.0).collect());
    Tensor::from_f64s(&v, shape, dtype, dev)
}

/// Comparisons with a scalar, `where_cond` with broadcasting of all three operands,
/// and `masked_fill`.
pub fn select_ops(dev: &Device) -> Result<()> {
    for dtype in FLOATS {
        let tol = Tol::for_dtype(dtype);
        let x = small_ints(dev, &[3, 4], dtype)?;
        let nx = Nd::of(&x)?;
        type ScalarCmp = (&'static str, Tensor, fn(f64) -> bool);
        let scalar_cmp: [ScalarCmp; 5] = [
            ("eq_scalar", x.eq_scalar(0.0)?, |v| v == 0.0),
            ("lt_scalar", x.lt_scalar(0.0)?, |v| v < 0.0),
            ("le_scalar", x.le_scalar(0.0)?, |v| v <= 0.0),
            ("gt_scalar", x.gt_scalar(0.0)?, |v| v > 0.0),
            ("ge_scalar", x.ge_scalar(0.0)?, |v| v >= 0.0),
        ];
        for (name, got, f) in scalar_cmp {
            assert_nd(name, &got, &nx.map(|v| bool_f(f(v))), tol)?;
        }
        // where: cond [3, 1], a [4], b [2, 1, 1] -> [2, 3, 4]
        let cond = small_ints(dev, &[3, 1], dtype)?.gt_scalar(0.0)?;
        let a = gen(dev, &[4], Domain::Normal, dtype)?;
        let b = View::Transposed.make(&[2, 1, 1], |s| gen(dev, s, Domain::Normal, dtype))?;
        let (nc, na, nb) = (Nd::of(&cond)?, Nd::of(&a)?, Nd::of(&b)?);
        let shape = [2, 3, 4];
        let want = Nd::new(
            &shape,
            (0..24)
                .map(|i| {
                    let idx = crate::reference::unravel(i, &shape);
                    if nc.at(&[idx[1], 0]) != 0.0 {
                        na.at(&[idx[2]])
                    } else {
                        nb.at(&[idx[0], 0, 0])
                    }
                })
                .collect(),
        );
        assert_nd("where_cond", &cond.where_cond(&a, &b)?, &want, tol)?;
        // masked_fill with a broadcast mask, on a transposed input
        let x = View::Transposed.make(&[3, 4], |s| gen(dev, s, Domain::Normal, dtype))?;
        let mask = small_ints(dev, &[4], dtype)?.ne(&Tensor::scalar(0.0, dtype, dev)?)?;
        let nm = Nd::of(&mask)?;
        let want = Nd::of(&x)?
            .zip(&nm, |v, m| if m != 0.0 { -7.5 } else { v })
            .expect("broadcasts");
        assert_nd("masked_fill", &x.masked_fill(&mask, -7.5)?, &want, tol)?;
        // masked_fill with -inf, as attention masks do
        let got = x.masked_fill(&mask, f64::NEG_INFINITY)?.to_vec_f64()?;
        let want = Nd::of(&x)?
            .zip(&nm, |v, m| if m != 0.0 { f64::NEG_INFINITY } else { v })
            .expect("broadcasts");
        assert_close("masked_fill(-inf)", &got, &want.data, tol);
    }
    Ok(())
}

fn axes_usize(axes: &[isize], rank: usize) -> Vec<usize> {
    axes.iter()
        .map(|&a| {
            if a < 0 {
                (a + rank as isize) as usize
            } else {
                a as usize
            }
        })
        .collect()
}

/// sum / mean / max / min / var over one or several axes (negative included),
/// keepdim on and off, on every layout; plus `sum_all`, `mean_all` and `sum_to`.
pub fn reductions(dev: &Device) -> Result<()> {
    let axis_sets: [&[isize]; 7] = [&[0], &[1], &[2], &[-1], &[0, 2], &[-1, 0], &[0, 1, 2]];
    let shape = [3, 4, 5];
    for dtype in FLOATS {
        let tol = Tol::for_dtype(dtype).times(4.0);
        for view in VIEWS {
            let x = view.make(&shape, |s| gen(dev, s, Domain::Normal, dtype))?;
            let nx = Nd::of(&x)?;
            for axes in axis_sets {
                let ax = axes_usize(axes, 3);
                for keepdim in [false, true] {
                    let what = |op: &str| format!("{op} {dtype} {view:?} axes {axes:?} keepdim {keepdim}");
                    assert_nd(&what("sum"), &x.sum(axes, keepdim)?, &nx.sum(&ax, keepdim), tol)?;
                    assert_nd(&what("mean"), &x.mean(axes, keepdim)?, &nx.mean(&ax, keepdim), tol)?;
                    assert_nd(&what("max"), &x.max(axes, keepdim)?, &nx.max(&ax, keepdim), tol)?;
                    assert_nd(&what("min"), &x.min(axes, keepdim)?, &nx.min(&ax, keepdim), tol)?;
                    for unbiased in [false, true] {
                        let got = x.var(axes, keepdim, unbiased)?;
                        assert_nd(&what("var"), &got, &nx.var(&ax, keepdim, unbiased), tol)?;
                    }
                }
            }
            let all = nx.sum(&[0, 1, 2], false);
            assert_nd("sum_all", &x.sum_all()?, &all, tol)?;
            assert_nd("mean_all", &x.mean_all()?, &all.map(|s| s / 60.0), tol)?;
            // sum_to: the adjoint of broadcasting
            assert_nd(
                "sum_to [4,1]",
                &x.sum_to(&[4, 1])?,
                &nx.sum(&[0, 2], true).reshape(&[4, 1]),
                tol,
            )?;
            assert_nd("sum_to [5]", &x.sum_to(&[5])?, &nx.sum(&[0, 1], false), tol)?;
        }
        // rank 0
        let s = Tensor::scalar(2.5, dtype, dev)?;
        assert_eq!(s.sum_all()?.to_scalar()?, 2.5);
        assert_eq!(s.max(&[], false)?.to_scalar()?, 2.5);
    }
    Ok(())
}

/// Matmul against the triple loop: plain, vector-like, batched, broadcast batch
/// dims on either side, transposed and narrowed operands, `k = 0`, empty `m`, and
/// sizes large enough for blocked and batch-parallel paths.
pub fn matmul(dev: &Device) -> Result<()> {
    let cases: [(&[usize], &[usize]); 11] = [
        (&[3, 4], &[4, 5]),
        (&[1, 4], &[4, 1]),
        (&[4, 1], &[1, 3]),
        (&[2, 3, 4], &[2, 4, 5]),
        (&[2, 1, 3, 4], &[3, 4, 2]),
        (&[3, 4], &[2, 4, 5]),
        (&[5, 2, 3], &[3, 2]),
        (&[3, 0], &[0, 4]),
        (&[0, 3], &[3, 2]),
        (&[33, 65], &[65, 17]),
        (&[4, 32, 48], &[4, 48, 64]),
    ];
    for dtype in FLOATS {
        for (sa, sb) in cases {
            let k = sa[sa.len() - 1].max(1) as f64;
            let tol = Tol::for_dtype(dtype).times(k);
            for (va, vb) in [
                (View::Contig, View::Contig),
                (View::Transposed, View::Contig),
                (View::Contig, View::Transposed),
                (View::Transposed, View::Transposed),
                (View::Narrowed, View::Reversed),
            ] {
                let a = va.make(sa, |s| gen(dev, s, Domain::Normal, dtype))?;
                let b = vb.make(sb, |s| gen(dev, s, Domain::Normal, dtype))?;
                let want = Nd::of(&a)?.matmul(&Nd::of(&b)?);
                assert_nd(
                    &format!("matmul {dtype} {sa:?}x{sb:?} {va:?}/{vb:?}"),
                    &a.matmul(&b)?,
                    &want,
                    tol,
                )?;
            }
        }
        // a broadcast (stride-0) batch operand
        let a = gen(dev, &[3, 4], Domain::Normal, dtype)?.broadcast_as(&[2, 3, 4])?;
        let b = gen(dev, &[2, 4, 2], Domain::Normal, dtype)?;
        let want = Nd::of(&a)?.matmul(&Nd::of(&b)?);
        assert_nd(
            "matmul broadcast operand",
            &a.matmul(&b)?,
            &want,
            Tol::for_dtype(dtype).times(4.0),
        )?;
    }
    Ok(())
}

/// Values after every shape op, on dense and strided inputs.
pub fn shape_ops(dev: &Device) -> Result<()> {
    for dtype in FLOATS {
        let tol = Tol::for_dtype(dtype);
        for view in VIEWS {
            let x = view.make(&[2, 3, 4], |s| gen(dev, s, Domain::Normal, dtype))?;
            let nx = Nd::of(&x)?;
            let what = |op: &str| format!("{op} {dtype} {view:?}");
            assert_nd(&what("reshape"), &x.reshape(&[6, 4])?, &nx.reshape(&[6, 4]), tol)?;
            assert_nd(
                &what("reshape_infer"),
                &x.reshape_infer(&[4, -1])?,
                &nx.reshape(&[4, 6]),
                tol,
            )?;
            assert_nd(&what("flatten"), &x.flatten(1, 2)?, &nx.reshape(&[2, 12]), tol)?;
            assert_nd(&what("flatten all"), &x.flatten(0, -1)?, &nx.reshape(&[24]), tol)?;
            assert_nd(&what("permute"), &x.permute(&[2, 0, 1])?, &nx.permute(&[2, 0, 1]), tol)?;
            assert_nd(&what("transpose"), &x.transpose(0, -1)?, &nx.transpose(0, 2), tol)?;
            assert_nd(&what("t"), &x.t()?, &nx.transpose(1, 2), tol)?;
            assert_nd(&what("narrow"), &x.narrow(1, 1, 2)?, &nx.narrow(1, 1, 2), tol)?;
            assert_nd(&what("narrow empty"), &x.narrow(2, 4, 0)?, &nx.narrow(2, 4, 0), tol)?;
            assert_nd(&what("contiguous"), &x.contiguous()?, &nx, tol)?;
            assert_nd(&what("unsqueeze"), &x.unsqueeze(1)?, &nx.reshape(&[2, 1, 3, 4]), tol)?;
            assert_nd(
                &what("unsqueeze end"),
                &x.unsqueeze(-1)?,
                &nx.reshape(&[2, 3, 4, 1]),
                tol,
            )?;
            let u = x.unsqueeze(0)?;
            assert_nd(&what("squeeze"), &u.squeeze(0)?, &nx, tol)?;
            let y = view.make(&[2, 1, 4], |s| gen(dev, s, Domain::Normal, dtype))?;
            let ny = Nd::of(&y)?;
            assert_nd(&what("squeeze mid"), &y.squeeze(1)?, &ny.reshape(&[2, 4]), tol)?;
            assert_nd(
                &what("broadcast_as"),
                &y.broadcast_as(&[3, 2, 5, 4])?,
                &ny.broadcast_to(&[3, 2, 5, 4]),
                tol,
            )?;
            // reshape of a broadcast view copies correctly
            let bz = y.broadcast_as(&[2, 3, 4])?;
            assert_nd(
                &what("reshape of broadcast"),
                &bz.reshape(&[6, 4])?,
                &ny.broadcast_to(&[2, 3, 4]).reshape(&[6, 4]),
                tol,
            )?;
            // cat / stack with mixed layouts
            let z = gen(dev, &[2, 5, 4], Domain::Normal, dtype)?;
            let nz = Nd::of(&z)?;
            let w = x.narrow(1, 0, 1)?;
            let nw = nx.narrow(1, 0, 1);
            assert_nd(
                &what("cat 1"),
                &Tensor::cat(&[&x, &z, &w], 1)?,
                &Nd::cat(&[&nx, &nz, &nw], 1),
                tol,
            )?;
            assert_nd(
                &what("cat -1"),
                &Tensor::cat(&[&x, &x], -1)?,
                &Nd::cat(&[&nx, &nx], 2),
                tol,
            )?;
            let empty = x.narrow(0, 0, 0)?;
            assert_nd(&what("cat with empty"), &Tensor::cat(&[&empty, &x], 0)?, &nx, tol)?;
            let st = Tensor::stack(&[&x, &x.neg()?], 1)?;
            let nneg = nx.map(|v| -v);
            let want = Nd::cat(&[&nx.reshape(&[2, 1, 3, 4]), &nneg.reshape(&[2, 1, 3, 4])], 1);
            assert_nd(&what("stack 1"), &st, &want, tol)?;
            let st = Tensor::stack(&[&x, &x], -1)?;
            let want = Nd::cat(&[&nx.reshape(&[2, 3, 4, 1]), &nx.reshape(&[2, 3, 4, 1])], 3);
            assert_nd(&what("stack -1"), &st, &want, tol)?;
        }
        // rank 0 <-> rank 1
        let s = Tensor::scalar(3.0, dtype, dev)?;
        assert_eq!(s.reshape(&[1, 1])?.shape(), &[1, 1]);
        assert_eq!(s.flatten(0, 0)?.shape(), &[1]);
        assert_eq!(s.unsqueeze(0)?.to_vec_f64()?, vec![3.0]);
        assert_eq!(s.broadcast_as(&[2, 2])?.to_vec_f64()?, vec![3.0; 4]);
        assert_eq!(Tensor::stack(&[&s, &s], 0)?.shape(), &[2]);
    }
    Ok(())
}

/// index_select on each dim with repeated ids and strided sources and ids,
/// embedding with multi-dim ids, gather and scatter_add against references.
pub fn indexing(dev: &Device) -> Result<()> {
    for dtype in FLOATS {
        let tol = Tol::for_dtype(dtype);
        for view in VIEWS {
            let x = view.make(&[4, 3, 5], |s| gen(dev, s, Domain::Normal, dtype))?;
            let nx = Nd::of(&x)?;
            for dim in 0..3 {
                let size = nx.shape[dim];
                let idv: Vec<i64> = vec![size as i64 - 1, 0, 1, 0, size as i64 - 1, 1];
                let id = ids(dev, &idv, &[6])?;
                let got = x.index_select(dim as isize, &id)?;
                assert_nd(
                    &format!("index_select {dtype} {view:?} dim {dim}"),
                    &got,
                    &nx.index_select(dim, &idv),
                    tol,
                )?;
            }
            // strided ids: a transposed [3, 2] id matrix, flattened in logical order
            let id = ids(dev, &[0, 1, 2, 3, 3, 0], &[2, 3])?.t()?;
            let flat: Vec<i64> = id.to_vec::<i64>()?;
            assert_eq!(flat, vec![0, 3, 1, 3, 2, 0]);
            assert_nd(
                "index_select strided ids",
                &x.index_select(0, &id)?,
                &nx.index_select(0, &flat),
                tol,
            )?;
            // no ids at all
            let none = Tensor::from_vec(Vec::<i64>::new(), &[0], dev)?;
            assert_eq!(x.index_select(1, &none)?.shape(), &[4, 0, 5]);
        }
        // embedding: [vocab, dim] table, [2, 3] ids
        let table = gen(dev, &[7, 4], Domain::Normal, dtype)?;
        let idv = [6i64, 0, 3, 3, 1, 6];
        let got = table.embedding(&ids(dev, &idv, &[2, 3])?)?;
        let want = Nd::of(&table)?.index_select(0, &idv).reshape(&[2, 3, 4]);
        assert_nd("embedding", &got, &want, tol)?;
        // gather along each dim, including more ids than the source has entries
        for view in VIEWS {
            let x = view.make(&[3, 5], |s| gen(dev, s, Domain::Normal, dtype))?;
            let nx = Nd::of(&x)?;
            let id1 = rand_ids(dev, &[3, 7], 5)?;
            let v1 = id1.to_vec::<i64>()?;
            assert_nd("gather dim 1", &x.gather(1, &id1)?, &nx.gather(1, &v1, &[3, 7]), tol)?;
            let id0 = rand_ids(dev, &[2, 5], 3)?;
            let v0 = id0.to_vec::<i64>()?;
            assert_nd("gather dim 0", &x.gather(0, &id0)?, &nx.gather(0, &v0, &[2, 5]), tol)?;
            let id_t = rand_ids(dev, &[7, 3], 5)?.t()?;
            let vt = id_t.to_vec::<i64>()?;
            assert_nd(
                "gather strided ids",
                &x.gather(-1, &id_t)?,
                &nx.gather(1, &vt, &[3, 7]),
                tol,
            )?;
            // scatter_add is gather's adjoint: repeated ids accumulate
            let src = gen(dev, &[3, 7], Domain::Normal, dtype)?;
            let want = nx.scatter_add(1, &v1, &Nd::of(&src)?);
            assert_nd("scatter_add dim 1", &x.scatter_add(1, &id1, &src)?, &want, tol)?;
            let src0 = View::Transposed.make(&[2, 5], |s| gen(dev, s, Domain::Normal, dtype))?;
            let want = nx.scatter_add(0, &v0, &Nd::of(&src0)?);
            assert_nd("scatter_add dim 0", &x.scatter_add(0, &id0, &src0)?, &want, tol)?;
        }
    }
    Ok(())
}

/// softmax and log_softmax along every axis of strided inputs, with logits large
/// enough that an unshifted exp would overflow.
pub fn softmax(dev: &Device) -> Result<()> {
    for dtype in FLOATS {
        let tol = Tol::for_dtype(dtype).times(4.0);
        for view in VIEWS {
            let x = view.make(&[3, 4, 5], |s| gen(dev, s, Domain::Normal, dtype))?;
            let nx = Nd::of(&x)?;
            for dim in [0isize, 1, 2, -1, -3] {
                let d = axes_usize(&[dim], 3)[0];
                let what = format!("{dtype} {view:?} dim {dim}");
                let p = x.softmax(dim)?;
                assert_nd(&format!("softmax {what}"), &p, &nx.softmax(d), tol)?;
                assert_nd(
                    &format!("log_softmax {what}"),
                    &x.log_softmax(dim)?,
                    &nx.log_softmax(d),
                    tol,
                )?;
                // rows sum to one
                let ones = p.sum(&[dim], false)?.to_vec_f64()?;
                assert_close("softmax sums", &ones, &vec![1.0; ones.len()], tol);
            }
        }
        // stability: logits around ±1000 (exp overflows without the max shift)
        let x = gen(dev, &[4, 6], Domain::Normal, dtype)?
            .mul_scalar(3.0)?
            .add_scalar(1000.0)?;
        let nx = Nd::of(&x)?;
        let p = x.softmax(-1)?;
        assert_nd("softmax large", &p, &nx.softmax(1), tol)?;
        let lp = x.neg()?.log_softmax(0)?;
        assert_nd(
            "log_softmax large",
            &lp,
            &nx.map(|v| -v).log_softmax(0),
            tol.times(1000.0),
        )?;
        // masked (-inf) entries get probability 0
        let mask = Tensor::from_f64s(&[0.0, 1.0, 0.0, 1.0, 1.0, 0.0], &[6], dtype, dev)?;
        let pm = x.masked_fill(&mask, f64::NEG_INFINITY)?.softmax(-1)?;
        let want = nx
            .zip(&Nd::of(&mask)?, |v, m| if m != 0.0 { f64::NEG_INFINITY } else { v })
            .expect("broadcasts")
            .softmax(1);
        assert_nd("softmax with -inf", &pm, &want, tol)?;
        // a single class and a size-1 axis
        let one = gen(dev, &[3, 1], Domain::Normal, dtype)?;
        assert_eq!(one.softmax(-1)?.to_vec_f64()?, vec![1.0; 3]);
        assert_eq!(one.log_softmax(-1)?.to_vec_f64()?, vec![0.0; 3]);
    }
    Ok(())
}

/// Cross-entropy against the reference: plain, `ignore_index`, label smoothing,
/// both, strided logits, every row ignored.
pub fn cross_entropy(dev: &Device) -> Result<()> {
    for dtype in FLOATS {
        let tol = Tol::for_dtype(dtype).times(10.0);
        for view in [View::Contig, View::Transposed, View::Narrowed] {
            let logits = view
                .make(&[6, 5], |s| gen(dev, s, Domain::Normal, dtype))?
                .mul_scalar(2.0)?;
            let nl = Nd::of(&logits)?;
            for (tv, ignore, eps) in [
                (vec![4i64, 0, -100, 2, 4, -100], Some(-100), 0.0),
                (vec![4, 0, -100, 2, 4, -100], Some(-100), 0.1),
                (vec![4, 0, -100, 2, 4, -100], Some(-100), 1.0),
                (vec![4, 0, 1, 2, 4, 3], Some(4), 0.25),
                (vec![3, 3, 3, 3, 3, 3], Some(-1), 0.5),
            ] {
                let t = ids(dev, &tv, &[6])?;
                let got = logits.cross_entropy(&t, ignore, eps)?;
                assert_eq!(got.shape(), &[] as &[usize]);
                let want = nl.cross_entropy(&tv, ignore, eps);
                assert_close(
                    &format!("cross_entropy {dtype} {view:?} {ignore:?} {eps}"),
                    &[got.to_scalar()?],
                    &[want],
                    tol,
                );
            }
            let tv = vec![1i64, 0, 3, 2, 4, 4];
            let t = ids(dev, &tv, &[6])?;
            let got = logits.cross_entropy(&t, None, 0.0)?.to_scalar()?;
            assert_close("cross_entropy plain", &[got], &[nl.cross_entropy(&tv, None, 0.0)], tol);
            // every row ignored: 0, not NaN
            let t = ids(dev, &[-1; 6], &[6])?;
            assert_eq!(logits.cross_entropy(&t, Some(-1), 0.1)?.to_scalar()?, 0.0);
        }
    }
    Ok(())
}

/// Dtype casts: f64 → f32 rounds, f32 → f64 is exact, f64 → i64 truncates,
/// i64 → float converts; strided sources.
pub fn to_dtype(dev: &Device) -> Result<()> {
    let x = View::Transposed
        .make(&[3, 4], |s| crate::util::randn(dev, s))?
        .mul_scalar(10.0)?;
    let nx = Nd::of(&x)?;
    let f = x.to_dtype(DType::F32)?;
    assert_eq!(f.dtype(), DType::F32);
    assert_close(
        "f64->f32",
        &f.to_vec_f64()?,
        &nx.map(|v| v as f32 as f64).data,
        Tol { rtol: 0.0, atol: 0.0 },
    );
    let back = f.to_dtype(DType::F64)?;
    assert_eq!(back.to_vec_f64()?, f.to_vec_f64()?);
    let i = x.to_dtype(DType::I64)?;
    assert_eq!(i.dtype(), DType::I64);
    assert_eq!(
        i.to_vec::<i64>()?,
        nx.data.iter().map(|&v| v as i64).collect::<Vec<_>>()
    );
    let g = i.to_dtype(DType::F32)?;
    assert_eq!(
        g.to_vec_f64()?,
        nx.data.iter().map(|&v| v as i64 as f64).collect::<Vec<_>>()
    );
    assert!(
        same_storage(&x, &x.to_dtype(DType::F64)?),
        "to_dtype to the same dtype is free"
    );
    Ok(())
}

/// Sizes over the CPU backend's parallel threshold (2^15 elements) for
/// elementwise, broadcast, reductions (trailing and general paths), softmax.
pub fn large_tensors(dev: &Device) -> Result<()> {
    for dtype in FLOATS {
        let tol = Tol::for_dtype(dtype).times(20.0);
        let x = gen(dev, &[64, 600], Domain::Normal, dtype)?;
        let b = gen(dev, &[600], Domain::Normal, dtype)?;
        let (nx, nb) = (Nd::of(&x)?, Nd::of(&b)?);
        assert_nd("large add", &x.add(&b)?, &nx.zip(&nb, |a, b| a + b).expect("bc"), tol)?;
        assert_nd("large tanh", &x.tanh()?, &nx.map(f64::tanh), tol)?;
        let xt = x.t()?;
        assert_nd(
            "large transposed mul",
            &xt.mul(&xt)?,
            &nx.transpose(0, 1).map(|v| v * v),
            tol,
        )?;
        let big = Tol::for_dtype(dtype).times(600.0);
        assert_nd("large sum -1", &x.sum(&[-1], false)?, &nx.sum(&[1], false), big)?;
        assert_nd("large sum 0", &x.sum(&[0], true)?, &nx.sum(&[0], true), big)?;
        assert_nd("large max -1", &x.max(&[-1], false)?, &nx.max(&[1], false), tol)?;
        assert_nd("large min 0", &x.min(&[0], false)?, &nx.min(&[0], false), tol)?;
        assert_nd(
            "large sum of transposed",
            &xt.sum(&[-1], false)?,
            &nx.sum(&[0], false),
            big,
        )?;
        assert_nd("large softmax", &x.softmax(-1)?, &nx.softmax(1), tol)?;
        assert_nd("large log_softmax 0", &x.log_softmax(0)?, &nx.log_softmax(0), tol)?;
        let s = x.sum_all()?.to_scalar()?;
        assert_close("large sum_all", &[s], &[nx.data.iter().sum()], big.times(60.0));
        // one long strided row (a column of a [40000, 2] matrix): kernels that split a
        // single row into chunks must step through it with its stride
        let col = gen(dev, &[40000, 2], Domain::Normal, dtype)?
            .narrow(1, 1, 1)?
            .squeeze(1)?;
        let nc = Nd::of(&col)?;
        assert_nd("strided row exp", &col.exp()?, &nc.map(f64::exp), tol)?;
        assert_nd("strided row mul", &col.mul(&col.neg()?)?, &nc.map(|v| -v * v), tol)?;
        let dense = gen(dev, &[40000], Domain::Normal, dtype)?;
        let nd = Nd::of(&dense)?;
        assert_nd(
            "strided row add",
            &dense.add(&col)?,
            &nd.zip(&nc, |a, b| a + b).expect("same shape"),
            tol,
        )?;
        let total = col.sum_all()?.to_scalar()?;
        assert_close("strided row sum", &[total], &[nc.data.iter().sum()], big.times(60.0));
        assert_nd(
            "strided row contiguous",
            &col.contiguous()?,
            &nc,
            Tol { rtol: 0.0, atol: 0.0 },
        )?;
    }
    Ok(())
}

/// `layer_norm` and `rms_norm` against the naive formula (mean, biased variance,
/// `(x − μ)/√(σ² + ε)·γ + β`), on every layout, with and without affine parameters,
/// and `moments_last` against the reference mean and variance.
pub fn norms(dev: &Device) -> Result<()> {
    use unigrad_core::ops::norm::moments_last;
    let shape = [3, 4, 37];
    let last = 2;
    for dtype in FLOATS {
        let tol = Tol::for_dtype(dtype).times(4.0);
        let w = gen(dev, &[37], Domain::Positive, dtype)?;
        let b = gen(dev, &[37], Domain::Normal, dtype)?;
        let (nw, nb) = (Nd::of(&w)?, Nd::of(&b)?);
        for view in VIEWS {
            let x = view.make(&shape, |s| gen(dev, s, Domain::Normal, dtype))?;
            let nx = Nd::of(&x)?;
            let what = format!("{dtype} {view:?}");
            let (mu, var) = (nx.mean(&[last], true), nx.var(&[last], true, false));
            let ms = nx.map(|v| v * v).mean(&[last], true);
            let scale = |xhat: Nd, w: Option<&Nd>, b: Option<&Nd>| {
                let y = match w {
                    Some(w) => xhat.zip(w, |a, g| a * g).expect("broadcasts"),
                    None => xhat,
                };
                match b {
                    Some(b) => y.zip(b, |a, c| a + c).expect("broadcasts"),
                    None => y,
                }
            };
            let centred = nx.zip(&mu, |a, m| a - m).expect("broadcasts");
            let ln = centred.zip(&var, |c, v| c / (v + 1e-5).sqrt()).expect("broadcasts");
            let rms = nx.zip(&ms, |a, s| a / (s + 1e-5).sqrt()).expect("broadcasts");
            for (wo, bo) in [(None, None), (Some(&w), None), (None, Some(&b)), (Some(&w), Some(&b))] {
                let want = scale(ln.clone(), wo.map(|_| &nw), bo.map(|_| &nb));
                let tag = format!("layer_norm {what} w={} b={}", wo.is_some(), bo.is_some());
                assert_nd(&tag, &x.layer_norm(wo, bo, 1e-5)?, &want, tol)?;
            }
            assert_nd(&format!("rms_norm {what}"), &x.rms_norm(None, 1e-5)?, &rms, tol)?;
            let want = scale(rms, Some(&nw), None);
            assert_nd(&format!("rms_norm w {what}"), &x.rms_norm(Some(&w), 1e-5)?, &want, tol)?;
            let (m, v) = moments_last(&x)?;
            assert_nd(&format!("moments mean {what}"), &m, &mu, tol)?;
            assert_nd(&format!("moments var {what}"), &v, &var, tol)?;
        }
        // a row of one element normalises to β; large offsets stay stable
        let one = gen(dev, &[5, 1], Domain::Normal, dtype)?;
        let b1 = Tensor::from_f64s(&[0.25], &[1], dtype, dev)?;
        assert_eq!(one.layer_norm(None, Some(&b1), 1e-5)?.to_vec_f64()?, vec![0.25; 5]);
        let big = gen(dev, &[4, 64], Domain::Normal, dtype)?.add_scalar(1000.0)?;
        let nbig = Nd::of(&big)?;
        let want = nbig
            .zip(&nbig.mean(&[1], true), |a, m| a - m)
            .expect("broadcasts")
            .zip(&nbig.var(&[1], true, false), |c, v| c / (v + 1e-5).sqrt())
            .expect("broadcasts");
        // centring cancels the offset: round-off of |1000|·ε on values of size 1
        let big_tol = tol.times(1000.0);
        assert_nd(
            "layer_norm offset 1000",
            &big.layer_norm(None, None, 1e-5)?,
            &want,
            big_tol,
        )?;
    }
    Ok(())
}
