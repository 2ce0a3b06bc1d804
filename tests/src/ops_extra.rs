//! The ops researchers reach for (issue 17, requirement 3): argmax / argmin, sort /
//! argsort / topk, cumsum, masked_select, i64 comparisons and `where`, arange with a
//! step and one_hot. Forward results are checked against naive references written
//! here (one element at a time, a selection scan instead of a sort); the
//! differentiable ones are gradient-checked in f64 with the suite's tolerances;
//! bad input must give errors naming the op. Conventions checked are PyTorch's:
//! ties go to the first index, NaN counts as the largest value in sorts and wins
//! argmax and argmin, sorts are stable, one_hot gives i64. The hand-picked edge
//! cases (NaN and ties in argmax / argmin / argsort / topk, topk's gradient, the
//! arange lengths) were read off PyTorch 2.15.

use crate::errors::expect_err;
use crate::reference::{ravel, unravel};
use crate::util::{check_grad, distinct, ids, randn};
use std::slice::from_ref;
use unigrad_core::{DType, Device, Result, Tensor};

const NAN: f64 = f64::NAN;

/// Small integer-valued data (many ties) of `shape` in `dtype`, with a NaN at
/// `nan_at` when given.
fn tied(dev: &Device, shape: &[usize], dtype: DType, nan_at: Option<usize>) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|i| match nan_at {
            Some(k) if k == i => NAN,
            _ => ((i * 7 + 3) % 5) as f64 - 2.0,
        })
        .collect();
    Tensor::from_f64s(&v, shape, dtype, dev)
}

/// `a` ranks strictly before `b` in an ascending (or descending) sort with NaN
/// above every number; equal values do not.
fn before(a: f64, b: f64, descending: bool) -> bool {
    let (lo, hi) = if descending { (b, a) } else { (a, b) };
    match (lo.is_nan(), hi.is_nan()) {
        (false, false) => lo < hi,
        (false, true) => true,
        _ => false,
    }
}

/// Reference stable argsort of every line along `axis`: repeatedly pick the first
/// remaining element that no other remaining element ranks before.
fn argsort_ref(x: &[f64], shape: &[usize], axis: usize, descending: bool) -> Vec<i64> {
    let mut out = vec![0i64; x.len()];
    for flat in 0..x.len() {
        let idx = unravel(flat, shape);
        if idx[axis] != 0 {
            continue;
        }
        let at = |j: usize| {
            let mut k = idx.clone();
            k[axis] = j;
            x[ravel(&k, shape)]
        };
        let n = shape[axis];
        let mut left: Vec<usize> = (0..n).collect();
        for pos in 0..n {
            let pick = (0..left.len())
                .find(|&c| !left.iter().any(|&o| before(at(o), at(left[c]), descending)))
                .expect("a total preorder has a minimum");
            let mut k = idx.clone();
            k[axis] = pos;
            out[ravel(&k, shape)] = left.remove(pick) as i64;
        }
    }
    out
}

/// Reference argmax (`max`) / argmin of each line along `axis` (keepdim shape).
fn arg_ref(x: &[f64], shape: &[usize], axis: usize, max: bool) -> Vec<i64> {
    // the first element of a descending (ascending) stable sort, except that a NaN
    // wins argmin as well
    let order = argsort_ref(x, shape, axis, max);
    let mut out_shape = shape.to_vec();
    out_shape[axis] = 1;
    let mut out = vec![0i64; x.len() / shape[axis].max(1)];
    for (o, slot) in out.iter_mut().enumerate() {
        let idx = unravel(o, &out_shape);
        let line: Vec<f64> = (0..shape[axis])
            .map(|j| {
                let mut k = idx.clone();
                k[axis] = j;
                x[ravel(&k, shape)]
            })
            .collect();
        *slot = match line.iter().position(|v| v.is_nan()) {
            Some(p) => p as i64,
            None => order[ravel(&idx, shape)],
        };
    }
    out
}

/// Values of `x` taken along `axis` at `ids` (`ids` has the output's shape).
fn take_ref(x: &[f64], shape: &[usize], axis: usize, ids: &[i64], ids_shape: &[usize]) -> Vec<f64> {
    (0..ids.len())
        .map(|f| {
            let mut k = unravel(f, ids_shape);
            k[axis] = ids[f] as usize;
            x[ravel(&k, shape)]
        })
        .collect()
}

/// `got == want`, NaN equal to NaN.
fn same(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    let ok = got.iter().zip(want).all(|(g, w)| g == w || (g.is_nan() && w.is_nan()));
    assert!(ok, "{what}: got {got:?}, want {want:?}");
}

/// argmax / argmin along every axis, keepdim or not, of f32, f64 (with ties and a
/// NaN) and i64 data, dense and transposed; errors for a bad axis, an empty axis
/// and a rank-0 input's axis 1.
pub fn argmax_argmin(dev: &Device) -> Result<()> {
    let shape = [3, 4, 5];
    for (dtype, nan) in [
        (DType::F64, None),
        (DType::F32, Some(17)),
        (DType::F64, Some(0)),
        (DType::I64, None),
    ] {
        let t = tied(dev, &shape, dtype, nan)?;
        for (name, view) in [("dense", t.clone()), ("transposed", t.transpose(0, 2)?)] {
            let vs = view.shape().to_vec();
            let x = view.to_vec_f64()?;
            for axis in 0..3 {
                for max in [true, false] {
                    let got = if max {
                        view.argmax(axis as isize, true)?
                    } else {
                        view.argmin(axis as isize, true)?
                    };
                    let mut ks = vs.clone();
                    ks[axis] = 1;
                    assert_eq!(got.dtype(), DType::I64);
                    assert_eq!(got.shape(), &ks[..]);
                    let want = arg_ref(&x, &vs, axis, max);
                    assert_eq!(
                        got.to_vec::<i64>()?,
                        want,
                        "{dtype} {name} nan {nan:?} axis {axis} max {max}"
                    );
                    let flat = if max {
                        view.argmax(axis as isize - 3, false)?
                    } else {
                        view.argmin(axis as isize - 3, false)?
                    };
                    let mut squeezed = vs.clone();
                    squeezed.remove(axis);
                    assert_eq!(flat.shape(), &squeezed[..]);
                    assert_eq!(flat.to_vec::<i64>()?, want);
                }
            }
        }
    }
    // ties: the first index; NaN wins both (PyTorch)
    let v = Tensor::from_f64s(&[1.0, 3.0, 3.0, 0.0, 0.0], &[5], DType::F64, dev)?;
    assert_eq!(v.argmax(0, false)?.to_vec::<i64>()?, vec![1]);
    assert_eq!(v.argmin(0, false)?.to_vec::<i64>()?, vec![3]);
    let v = Tensor::from_f64s(&[1.0, NAN, 9.0, NAN], &[4], DType::F64, dev)?;
    assert_eq!(v.argmax(0, false)?.to_vec::<i64>()?, vec![1]);
    assert_eq!(v.argmin(0, false)?.to_vec::<i64>()?, vec![1]);
    let t = tied(dev, &shape, DType::F64, None)?;
    expect_err("argmax axis 3", t.argmax(3, false), "argmax", &["3"]);
    expect_err("argmin axis -4", t.argmin(-4, false), "argmin", &["-4"]);
    let empty = Tensor::zeros(&[2, 0], DType::F32, dev)?;
    expect_err("argmax empty axis", empty.argmax(1, false), "argmax", &["empty"]);
    assert_eq!(empty.argmax(0, false)?.shape(), &[0]);
    expect_err(
        "argmin rank 0",
        Tensor::scalar(1.0, DType::F64, dev)?.argmin(0, true),
        "argmin",
        &[],
    );
    Ok(())
}

/// sort / argsort / topk against the reference stable sort on tied data with NaN,
/// along every axis, both directions, dense and transposed, f32 / f64 / i64; f64
/// gradient checks of sort's and topk's values (distinct inputs), on a strided
/// input too; errors for k too large and a bad axis.
pub fn sort_argsort_topk(dev: &Device) -> Result<()> {
    let shape = [3, 4, 5];
    for (dtype, nan) in [(DType::F64, Some(6)), (DType::F32, None), (DType::I64, None)] {
        let t = tied(dev, &shape, dtype, nan)?;
        for (name, view) in [("dense", t.clone()), ("transposed", t.transpose(1, 2)?)] {
            let vs = view.shape().to_vec();
            let x = view.to_vec_f64()?;
            for axis in 0..3 {
                for desc in [false, true] {
                    let what = format!("{dtype} {name} axis {axis} descending {desc}");
                    let want = argsort_ref(&x, &vs, axis, desc);
                    let ids = view.argsort(axis as isize, desc)?;
                    assert_eq!(ids.dtype(), DType::I64);
                    assert_eq!(ids.to_vec::<i64>()?, want, "argsort {what}");
                    let (vals, ids) = view.sort(axis as isize - 3, desc)?;
                    assert_eq!(ids.to_vec::<i64>()?, want, "sort {what}");
                    assert_eq!(vals.dtype(), dtype);
                    same(
                        &format!("sort values {what}"),
                        &vals.to_vec_f64()?,
                        &take_ref(&x, &vs, axis, &want, &vs),
                    );
                    for k in [0, 1, vs[axis]] {
                        let (tv, ti) = view.topk(k, axis as isize, desc, true)?;
                        let mut ks = vs.clone();
                        ks[axis] = k;
                        assert_eq!(ti.shape(), &ks[..]);
                        // the first k of the stable sort (largest first when `desc`)
                        let wi: Vec<i64> = (0..ks.iter().product())
                            .map(|f| {
                                let idx = unravel(f, &ks);
                                want[ravel(&idx, &vs)]
                            })
                            .collect();
                        assert_eq!(ti.to_vec::<i64>()?, wi, "topk k {k} {what}");
                        same(
                            &format!("topk values k {k} {what}"),
                            &tv.to_vec_f64()?,
                            &take_ref(&x, &vs, axis, &wi, &ks),
                        );
                    }
                }
            }
        }
    }
    // stability on ties, NaN last ascending and first descending (PyTorch, stable=True)
    let v = Tensor::from_f64s(&[2.0, NAN, 1.0, 2.0, 1.0], &[5], DType::F64, dev)?;
    assert_eq!(v.argsort(0, false)?.to_vec::<i64>()?, vec![2, 4, 0, 3, 1]);
    assert_eq!(v.argsort(0, true)?.to_vec::<i64>()?, vec![1, 0, 3, 2, 4]);
    let (tv, ti) = v.topk(2, 0, false, false)?;
    assert_eq!(ti.to_vec::<i64>()?, vec![2, 4]);
    assert_eq!(tv.to_vec_f64()?, vec![1.0, 1.0]);

    // gradients through the values: distinct inputs, so differences never reorder
    let x = distinct(dev, &[3, 5], 0.1)?;
    check_grad("sort values", from_ref(&x), |xs| xs[0].sort(1, false).map(|p| p.0))?;
    check_grad("sort values descending axis 0", from_ref(&x), |xs| {
        xs[0].sort(0, true).map(|p| p.0)
    })?;
    check_grad("topk values", from_ref(&x), |xs| {
        xs[0].topk(2, 1, true, true).map(|p| p.0)
    })?;
    check_grad("topk smallest, transposed", from_ref(&x), |xs| {
        xs[0].t()?.topk(2, 1, false, true).map(|p| p.0)
    })?;
    // the gradient lands where the values came from
    let leaf = Tensor::from_f64s(&[0.5, 3.0, -1.0, 2.0], &[4], DType::F64, dev)?.requires_grad();
    let (top, _) = leaf.topk(2, 0, true, true)?;
    top.backward_with(&Tensor::from_f64s(&[10.0, 20.0], &[2], DType::F64, dev)?)?;
    assert_eq!(
        leaf.grad().expect("in the graph").to_vec_f64()?,
        vec![0.0, 10.0, 0.0, 20.0]
    );

    let t = randn(dev, &[2, 3])?;
    expect_err("topk k > size", t.topk(4, 1, true, true), "topk", &["4", "3"]);
    expect_err("sort bad axis", t.sort(2, false), "sort", &["2"]);
    expect_err("argsort bad axis", t.argsort(-3, false), "argsort", &["-3"]);
    Ok(())
}

/// cumsum along every axis of dense and strided f32 / f64 / i64 input against a
/// naive running sum; f64 gradient checks (the backward is a reversed cumsum);
/// an error for a bad axis.
pub fn cumsum(dev: &Device) -> Result<()> {
    let shape = [3, 4, 5];
    for dtype in [DType::F64, DType::F32, DType::I64] {
        let t = tied(dev, &shape, dtype, None)?;
        for (name, view) in [("dense", t.clone()), ("permuted", t.permute(&[2, 0, 1])?)] {
            let vs = view.shape().to_vec();
            let x = view.to_vec_f64()?;
            for axis in 0..3 {
                let want: Vec<f64> = (0..x.len())
                    .map(|f| {
                        let idx = unravel(f, &vs);
                        (0..=idx[axis])
                            .map(|j| {
                                let mut k = idx.clone();
                                k[axis] = j;
                                x[ravel(&k, &vs)]
                            })
                            .sum()
                    })
                    .collect();
                let got = view.cumsum(axis as isize)?;
                assert_eq!(got.dtype(), dtype);
                assert_eq!(got.shape(), &vs[..]);
                same(&format!("cumsum {dtype} {name} axis {axis}"), &got.to_vec_f64()?, &want);
            }
        }
    }
    let x = randn(dev, &[3, 4, 2])?;
    for axis in [0, 1, -1] {
        check_grad(&format!("cumsum axis {axis}"), from_ref(&x), |xs| xs[0].cumsum(axis))?;
    }
    check_grad("cumsum transposed", from_ref(&x), |xs| xs[0].transpose(0, 1)?.cumsum(1))?;
    check_grad("cumsum twice", from_ref(&x), |xs| xs[0].cumsum(1)?.cumsum(1)?.sqr())?;
    expect_err("cumsum bad axis", x.cumsum(3), "cumsum", &["3"]);
    expect_err(
        "cumsum rank 0",
        Tensor::scalar(1.0, DType::F64, dev)?.cumsum(0),
        "cumsum",
        &[],
    );
    Ok(())
}

/// masked_select with a float, an i64 and a broadcast mask against a row-major
/// scan; its gradient (f64) lands on the selected positions; an empty selection;
/// errors for incompatible shapes and an i64 input.
pub fn masked_select(dev: &Device) -> Result<()> {
    let x = randn(dev, &[3, 4])?;
    let xv = x.to_vec_f64()?;
    let mask_v: Vec<i64> = (0..12).map(|i| i64::from(i % 3 == 1 || i == 11)).collect();
    let want: Vec<f64> = xv
        .iter()
        .zip(&mask_v)
        .filter(|(_, &m)| m != 0)
        .map(|(v, _)| *v)
        .collect();
    let m64 = Tensor::from_vec(mask_v.clone(), &[3, 4], dev)?;
    let mf = m64.to_dtype(DType::F64)?;
    for (name, mask) in [("i64 mask", &m64), ("float mask", &mf)] {
        let got = x.masked_select(mask)?;
        assert_eq!(got.shape(), &[want.len()], "{name}");
        assert_eq!(got.to_vec_f64()?, want, "{name}");
    }
    // a [4] mask broadcast over the rows
    let row = Tensor::from_vec(vec![0i64, 1, 1, 0], &[4], dev)?;
    let want: Vec<f64> = (0..12).filter(|i| i % 4 == 1 || i % 4 == 2).map(|i| xv[i]).collect();
    assert_eq!(x.masked_select(&row)?.to_vec_f64()?, want);
    assert_eq!(x.masked_select(&row.zeros_like()?)?.shape(), &[0]);
    check_grad("masked_select", from_ref(&x), |xs| xs[0].masked_select(&m64)?.sqr())?;
    check_grad("masked_select broadcast mask", from_ref(&x), |xs| {
        xs[0].masked_select(&row)?.sqr()
    })?;
    let bad = Tensor::from_vec(vec![1i64, 0, 1], &[3], dev)?;
    expect_err(
        "masked_select shapes",
        x.masked_select(&bad),
        "masked_select",
        &["[3, 4]", "[3]"],
    );
    expect_err(
        "masked_select i64 input",
        m64.masked_select(&m64),
        "masked_select",
        &["i64"],
    );
    Ok(())
}

/// Comparisons of i64 tensors (broadcasting, all six, the scalar forms) against
/// the plain comparisons, giving i64 1/0 as float comparisons give 1/0 in their
/// dtype; `where_cond` with an i64 condition over float values (with its gradient)
/// and over i64 values, and `masked_fill` with an i64 mask; errors for mixed
/// dtypes (a float condition must have the values' dtype) and a non-integer scalar.
pub fn i64_comparisons_and_where(dev: &Device) -> Result<()> {
    let av: Vec<i64> = vec![-3, 0, 2, 7, 7, i64::MAX, i64::MIN, 5];
    let bv: Vec<i64> = vec![7, 0, -3, i64::MAX];
    let a = ids(dev, &av, &[2, 1, 4])?;
    let b = ids(dev, &bv, &[4])?;
    type Cmp = fn(&Tensor, &Tensor) -> Result<Tensor>;
    type Plain = fn(&i64, &i64) -> bool;
    let ops: [(&str, Cmp, Plain); 6] = [
        ("eq", |x, y| x.eq(y), i64::eq),
        ("ne", |x, y| x.ne(y), i64::ne),
        ("lt", |x, y| x.lt(y), i64::lt),
        ("le", |x, y| x.le(y), i64::le),
        ("gt", |x, y| x.gt(y), i64::gt),
        ("ge", |x, y| x.ge(y), i64::ge),
    ];
    for (name, op, f) in ops {
        let got = op(&a, &b)?;
        assert_eq!(got.dtype(), DType::I64, "{name}");
        assert_eq!(got.shape(), &[2, 1, 4], "{name}");
        let want: Vec<i64> = (0..8).map(|i| i64::from(f(&av[i], &bv[i % 4]))).collect();
        assert_eq!(got.to_vec::<i64>()?, want, "{name}");
        // the transposed operand: [4] against [4, 1] broadcasts to [4, 4]
        let got = op(&b, &b.reshape(&[4, 1])?)?;
        let want: Vec<i64> = (0..16).map(|i| i64::from(f(&bv[i % 4], &bv[i / 4]))).collect();
        assert_eq!(got.to_vec::<i64>()?, want, "{name} broadcast");
    }
    type CmpS = fn(&Tensor, f64) -> Result<Tensor>;
    let scalar_ops: [(&str, CmpS, Plain); 6] = [
        ("eq_scalar", |x, c| x.eq_scalar(c), i64::eq),
        ("ne_scalar", |x, c| x.ne_scalar(c), i64::ne),
        ("lt_scalar", |x, c| x.lt_scalar(c), i64::lt),
        ("le_scalar", |x, c| x.le_scalar(c), i64::le),
        ("gt_scalar", |x, c| x.gt_scalar(c), i64::gt),
        ("ge_scalar", |x, c| x.ge_scalar(c), i64::ge),
    ];
    for (name, op, f) in scalar_ops {
        let got = op(&a, 7.0)?;
        assert_eq!(got.dtype(), DType::I64, "{name}");
        let want: Vec<i64> = av.iter().map(|v| i64::from(f(v, &7))).collect();
        assert_eq!(got.to_vec::<i64>()?, want, "{name}");
        expect_err(name, op(&a, 2.5), name, &["2.5"]);
        expect_err(name, op(&a, f64::NAN), name, &["NaN"]);
    }
    // float comparisons keep giving 1/0 in their own dtype
    let f = Tensor::from_f64s(&[1.0, 2.0], &[2], DType::F32, dev)?;
    assert_eq!(f.ne_scalar(2.0)?.dtype(), DType::F32);
    assert_eq!(f.ne_scalar(2.0)?.to_vec_f64()?, vec![1.0, 0.0]);
    expect_err("eq i64 vs f32", a.eq(&f), "eq", &["i64", "f32"]);
    expect_err("lt f32 vs i64", f.lt(&a), "lt", &["f32", "i64"]);

    // where with an i64 condition: float values (with gradients) and i64 values
    let cond = a.gt_scalar(0.0)?; // [2, 1, 4]
    let cv: Vec<i64> = av.iter().map(|&v| i64::from(v > 0)).collect();
    let x = randn(dev, &[2, 3, 4])?;
    let y = randn(dev, &[4])?;
    let (xv, yv) = (x.to_vec_f64()?, y.to_vec_f64()?);
    let got = cond.where_cond(&x, &y)?;
    let want: Vec<f64> = (0..24)
        .map(|i| {
            if cv[(i / 12) * 4 + i % 4] != 0 {
                xv[i]
            } else {
                yv[i % 4]
            }
        })
        .collect();
    assert_eq!(got.to_vec_f64()?, want);
    check_grad("where_cond i64 condition", &[x.clone(), y.clone()], |xs| {
        cond.where_cond(&xs[0], &xs[1])?.sqr()
    })?;
    let got = cond.where_cond(&a, &b.reshape(&[1, 1, 4])?)?;
    assert_eq!(got.dtype(), DType::I64);
    let want: Vec<i64> = (0..8).map(|i| if cv[i] != 0 { av[i] } else { bv[i % 4] }).collect();
    assert_eq!(got.to_vec::<i64>()?, want);
    // masked_fill with an i64 mask; a float condition must match the values' dtype
    let fc = Tensor::from_f64s(&[0.0, -0.5, NAN, 1.0], &[4], DType::F64, dev)?;
    let zero = b.zeros_like()?;
    expect_err(
        "where_cond f64 cond, i64 values",
        fc.where_cond(&b, &zero),
        "where_cond",
        &["f64", "i64"],
    );
    let filled = y.masked_fill(&b.eq_scalar(0.0)?, -1.0)?.to_vec_f64()?;
    assert_eq!(filled, vec![yv[0], -1.0, yv[2], yv[3]]);
    expect_err(
        "where_cond mixed values",
        cond.where_cond(&a, &y),
        "where_cond",
        &["i64", "f64"],
    );
    Ok(())
}

/// `arange_step` in i64 and floats, negative and fractional steps, against
/// `start + i·step`; its errors; one_hot against a reference (i64 output) and its
/// errors for out-of-range ids and non-i64 input.
pub fn arange_and_one_hot(dev: &Device) -> Result<()> {
    let cases: [(f64, f64, f64, DType, Vec<f64>); 6] = [
        (0.0, 5.0, 1.0, DType::I64, vec![0.0, 1.0, 2.0, 3.0, 4.0]),
        (2.0, -7.0, -3.0, DType::I64, vec![2.0, -1.0, -4.0]),
        (0.0, 1.0, 0.25, DType::F64, vec![0.0, 0.25, 0.5, 0.75]),
        (1.0, 2.0, 0.3, DType::F32, vec![1.0, 1.3, 1.6, 1.9]),
        (3.0, 3.0, 1.0, DType::F64, vec![]),
        (-1.5, 1.0, 1.0, DType::F64, vec![-1.5, -0.5, 0.5]),
    ];
    for (start, end, step, dtype, want) in cases {
        let t = Tensor::arange_step(start, end, step, dtype, dev)?;
        assert_eq!(t.dtype(), dtype);
        assert_eq!(t.shape(), &[want.len()], "arange_step({start}, {end}, {step})");
        let want: Vec<f64> = match dtype {
            DType::F32 => want.iter().map(|&v| v as f32 as f64).collect(),
            _ => want,
        };
        assert_eq!(t.to_vec_f64()?, want, "arange_step({start}, {end}, {step}) {dtype}");
    }
    let op = "arange_step";
    expect_err(
        "zero step",
        Tensor::arange_step(0.0, 3.0, 0.0, DType::I64, dev),
        op,
        &["step 0"],
    );
    expect_err(
        "wrong sign",
        Tensor::arange_step(0.0, 3.0, -1.0, DType::I64, dev),
        op,
        &["-1"],
    );
    expect_err(
        "infinite end",
        Tensor::arange_step(0.0, f64::INFINITY, 1.0, DType::F64, dev),
        op,
        &["inf"],
    );

    let labels: Vec<i64> = vec![2, 0, 3, 3, 1, 0];
    let t = ids(dev, &labels, &[2, 3])?;
    let oh = t.one_hot(4)?;
    assert_eq!(oh.dtype(), DType::I64);
    assert_eq!(oh.shape(), &[2, 3, 4]);
    let want: Vec<i64> = (0..24).map(|i| i64::from(labels[i / 4] == (i % 4) as i64)).collect();
    assert_eq!(oh.to_vec::<i64>()?, want);
    // a strided view of the ids
    let tt = t.t()?.one_hot(4)?;
    let want: Vec<i64> = (0..24)
        .map(|i| {
            let (r, c, k) = (i / 8, (i / 4) % 2, i % 4);
            i64::from(labels[c * 3 + r] == k as i64)
        })
        .collect();
    assert_eq!(tt.to_vec::<i64>()?, want);
    expect_err("one_hot id too large", t.one_hot(3), "one_hot", &["3"]);
    expect_err(
        "one_hot negative id",
        ids(dev, &[0, -1], &[2])?.one_hot(5),
        "one_hot",
        &["-1"],
    );
    let f = Tensor::from_f64s(&[0.0, 1.0], &[2], DType::F32, dev)?;
    expect_err("one_hot float ids", f.one_hot(2), "one_hot", &["f32"]);
    Ok(())
}

/// The property test of [`crate::props`] over these ops' families (sort, cumsum,
/// masked_select): random shapes (rank 0, size-0 axes), axes in and out of range, k
/// beyond the axis, broadcasting masks; no panic, errors exactly where predicted,
/// gradients shaped like their leaves.
pub fn random_shapes(dev: &Device) -> Result<()> {
    crate::props::random_ops_of(dev, 0x0017_0003, crate::props::OPS_FAMILIES)
}
