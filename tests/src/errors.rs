//! Bad inputs return errors that name the op and the operands' shapes or dtypes —
//! never a panic. Each check matches the exact [`Error`] variant and fields and
//! that the message a user sees mentions the op.

use crate::util::{ids, randn};
use unigrad_core::custom::{apply, CustomOp};
use unigrad_core::gradcheck::{gradcheck, GradcheckOptions};
use unigrad_core::{DType, Device, Error, Result, Tensor};

/// The op name an error reports, if it carries one.
pub(crate) fn op_of(e: &Error) -> Option<String> {
    match e {
        Error::ShapeMismatch { op, .. }
        | Error::DTypeMismatch { op, .. }
        | Error::UnsupportedDType { op, .. }
        | Error::DeviceMismatch { op, .. }
        | Error::InvalidAxis { op, .. }
        | Error::IndexOutOfRange { op, .. }
        | Error::InvalidArgument { op, .. } => Some(op.to_string()),
        Error::GraphReleased { op } | Error::Anomaly { op, .. } => Some(op.clone()),
        Error::BackwardNonScalar { .. } => Some("backward".into()),
        Error::Backend { .. } => None,
    }
}

/// Unwrap an expected error and check that it names `op` in its variant and its
/// message; and, for every string in `mentions`, that the message contains it.
pub(crate) fn expect_err<T: std::fmt::Debug>(what: &str, r: Result<T>, op: &str, mentions: &[&str]) -> Error {
    let e = match r {
        Ok(v) => panic!("{what}: expected an error from {op}, got {v:?}"),
        Err(e) => e,
    };
    assert_eq!(op_of(&e).as_deref(), Some(op), "{what}: wrong op in {e:?}");
    let msg = e.to_string();
    assert!(msg.contains(op), "{what}: message {msg:?} does not name {op}");
    for m in mentions {
        assert!(msg.contains(m), "{what}: message {msg:?} does not mention {m}");
    }
    e
}

/// Incompatible shapes in broadcasting ops, matmul, cat, reshape, where,
/// broadcast_as, gather, scatter_add and cross-entropy.
pub fn shape_errors(dev: &Device) -> Result<()> {
    let a = randn(dev, &[2, 3])?;
    let b = randn(dev, &[4])?;
    let e = expect_err("add", a.add(&b), "add", &["[2, 3]", "[4]"]);
    assert!(matches!(e, Error::ShapeMismatch { ref lhs, ref rhs, .. } if lhs == &[2, 3] && rhs == &[4]));
    expect_err("sub", a.sub(&randn(dev, &[3, 2])?), "sub", &["[2, 3]", "[3, 2]"]);
    expect_err("mul", a.mul(&b), "mul", &[]);
    expect_err("div", a.div(&b), "div", &[]);
    expect_err("maximum", a.maximum(&b), "maximum", &[]);
    expect_err("lt", a.lt(&b), "lt", &[]);
    // matmul: inner dims, rank < 2, batch dims
    let e = expect_err(
        "matmul inner",
        a.matmul(&randn(dev, &[4, 5])?),
        "matmul",
        &["[2, 3]", "[4, 5]"],
    );
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    expect_err(
        "matmul rank 1",
        a.matmul(&randn(dev, &[3])?),
        "matmul",
        &["rank below 2", "unsupported", "[2, 3]", "[3]"],
    );
    expect_err(
        "matmul rank 1 lhs",
        randn(dev, &[3])?.matmul(&randn(dev, &[3, 4])?),
        "matmul",
        &["rank below 2", "[3]", "[3, 4]"],
    );
    expect_err(
        "matmul rank 0",
        Tensor::scalar(1.0, DType::F64, dev)?.matmul(&a),
        "matmul",
        &[],
    );
    expect_err(
        "matmul batch",
        randn(dev, &[2, 2, 3])?.matmul(&randn(dev, &[3, 3, 4])?),
        "matmul",
        &["[2]", "[3]"],
    );
    // cat: other dims differ, ranks differ, nothing to cat
    let e = expect_err(
        "cat",
        Tensor::cat(&[&a, &randn(dev, &[2, 4])?], 0),
        "cat",
        &["[2, 3]", "[2, 4]"],
    );
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    expect_err("cat rank", Tensor::cat(&[&a, &b], 0), "cat", &[]);
    expect_err("cat none", Tensor::cat(&[], 0), "cat", &[]);
    expect_err(
        "stack",
        Tensor::stack(&[&a, &a.t()?], 0),
        "stack",
        &["[2, 3]", "[3, 2]"],
    );
    expect_err("stack none", Tensor::stack(&[], 0), "stack", &[]);
    expect_err("stack axis", Tensor::stack(&[&a, &a], 3), "stack", &[]);
    // reshape to a wrong element count
    let e = expect_err("reshape", a.reshape(&[4, 2]), "reshape", &["[2, 3]", "[4, 2]"]);
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    expect_err("reshape_infer", a.reshape_infer(&[4, -1]), "reshape_infer", &["[2, 3]"]);
    expect_err(
        "reshape_infer two holes",
        a.reshape_infer(&[-1, -1]),
        "reshape_infer",
        &[],
    );
    expect_err(
        "broadcast_as",
        a.broadcast_as(&[3, 3]),
        "broadcast_as",
        &["[2, 3]", "[3, 3]"],
    );
    expect_err("broadcast_as rank", a.broadcast_as(&[3]), "broadcast_as", &[]);
    expect_err("where_cond", a.gt_scalar(0.0)?.where_cond(&a, &b), "where_cond", &[]);
    expect_err(
        "masked_fill",
        a.masked_fill(&b.gt_scalar(0.0)?, 0.0),
        "masked_fill",
        &["[4]"],
    );
    expect_err("sum_to", a.sum_to(&[4]), "sum_to", &["[2, 3]", "[4]"]);
    expect_err(
        "gather",
        a.gather(1, &ids(dev, &[0, 1], &[1, 2])?),
        "gather",
        &["[2, 3]", "[1, 2]"],
    );
    expect_err("gather rank", a.gather(1, &ids(dev, &[0, 1], &[2])?), "gather", &[]);
    expect_err(
        "scatter_add",
        a.scatter_add(1, &ids(dev, &[0, 1], &[2, 1])?, &randn(dev, &[2, 2])?),
        "scatter_add",
        &[],
    );
    let t = ids(dev, &[0, 1, 2], &[3])?;
    expect_err(
        "cross_entropy rows",
        a.cross_entropy(&t, None, 0.0),
        "cross_entropy",
        &["[2, 3]", "[3]"],
    );
    expect_err(
        "cross_entropy rank",
        b.cross_entropy(&t, None, 0.0),
        "cross_entropy",
        &[],
    );
    expect_err("embedding table", b.embedding(&t), "embedding", &["[4]"]);
    expect_err(
        "from_vec",
        Tensor::from_vec(vec![1.0f64; 5], &[2, 3], dev),
        "from_vec",
        &["5", "[2, 3]"],
    );
    Ok(())
}

/// Mixed float dtypes, and i64 tensors fed to arithmetic.
pub fn dtype_errors(dev: &Device) -> Result<()> {
    let a = randn(dev, &[2, 3])?;
    let f = Tensor::ones(&[2, 3], DType::F32, dev)?;
    let e = expect_err("add f64+f32", a.add(&f), "add", &["f64", "f32"]);
    assert!(matches!(
        e,
        Error::DTypeMismatch {
            lhs: DType::F64,
            rhs: DType::F32,
            ..
        }
    ));
    expect_err("matmul f64·f32", a.matmul(&f.t()?), "matmul", &["f64", "f32"]);
    expect_err("cat f64,f32", Tensor::cat(&[&a, &f], 0), "cat", &["f64", "f32"]);
    expect_err(
        "where f32 cond",
        f.gt_scalar(0.0)?.where_cond(&a, &a),
        "where_cond",
        &[],
    );
    expect_err(
        "scatter_add src",
        a.scatter_add(0, &ids(dev, &[0; 6], &[2, 3])?, &f),
        "scatter_add",
        &[],
    );
    expect_err("to_vec", a.to_vec::<f32>(), "to_vec", &["f64", "f32"]);
    // i64 into arithmetic
    let i = ids(dev, &[1, 2, 3, 4, 5, 6], &[2, 3])?;
    let un: [(&str, Result<Tensor>); 9] = [
        ("add", i.add(&i)),
        ("mul", i.mul(&i)),
        ("exp", i.exp()),
        ("relu", i.relu()),
        ("sum", i.sum(&[0], false)),
        ("max", i.max(&[0], false)),
        ("softmax", i.softmax(-1)),
        ("matmul", i.matmul(&i.t()?)),
        ("clamp", i.clamp(0.0, 1.0)),
    ];
    for (op, r) in un {
        let e = expect_err(&format!("i64 {op}"), r, op, &["i64", "[2, 3]"]);
        assert!(matches!(e, Error::UnsupportedDType { dtype: DType::I64, .. }), "{e:?}");
    }
    expect_err("i64 mul_scalar", i.mul_scalar(2.0), "mul_scalar", &["i64"]);
    // i64 compares with integers only (issue 17: comparisons on i64 are allowed)
    expect_err("i64 eq_scalar", i.eq_scalar(2.5), "eq_scalar", &["i64", "2.5"]);
    expect_err("i64 log_softmax", i.log_softmax(0), "log_softmax", &["i64"]);
    expect_err("i64 dropout", i.dropout(0.5, true), "dropout", &["i64"]);
    expect_err(
        "i64 logits",
        i.cross_entropy(&ids(dev, &[0, 1], &[2])?, None, 0.0),
        "cross_entropy",
        &[],
    );
    expect_err(
        "i64 table",
        i.index_select(0, &ids(dev, &[0], &[1])?),
        "index_select",
        &[],
    );
    // float ids
    expect_err("f64 ids", a.index_select(0, &a), "index_select", &["i64", "f64"]);
    expect_err("f64 gather ids", a.gather(0, &a), "gather", &["i64"]);
    expect_err(
        "f64 targets",
        a.cross_entropy(&randn(dev, &[2])?, None, 0.0),
        "cross_entropy",
        &["i64"],
    );
    expect_err(
        "f64 embedding ids",
        randn(dev, &[4, 2])?.embedding(&a),
        "embedding",
        &["i64"],
    );
    // gradcheck insists on f64
    let r = gradcheck(|xs| xs[0].exp(), &[f], &GradcheckOptions::default());
    expect_err("gradcheck f32", r, "gradcheck", &["f32"]);
    Ok(())
}

/// Axes out of range (positive and negative), duplicated axes, squeezing a
/// non-unit dim, bad permutations, flatten ranges.
pub fn axis_errors(dev: &Device) -> Result<()> {
    let a = randn(dev, &[2, 3])?;
    let e = expect_err("sum axis 2", a.sum(&[2], false), "sum", &["2", "[2, 3]"]);
    assert!(matches!(e, Error::InvalidAxis { axis: 2, .. }));
    let e = expect_err("sum axis -3", a.sum(&[-3], true), "sum", &["-3"]);
    assert!(matches!(e, Error::InvalidAxis { axis: -3, .. }));
    expect_err("sum twice", a.sum(&[0, -2], false), "sum", &["[2, 3]"]);
    expect_err("mean", a.mean(&[5], false), "mean", &[]);
    expect_err("var", a.var(&[2], false, true), "var", &[]);
    expect_err("max", a.max(&[9], false), "max", &[]);
    expect_err("min", a.min(&[-9], false), "min", &[]);
    expect_err("softmax", a.softmax(2), "softmax", &["[2, 3]"]);
    expect_err("log_softmax", a.log_softmax(-3), "log_softmax", &[]);
    expect_err(
        "softmax rank 0",
        Tensor::scalar(1.0, DType::F64, dev)?.softmax(0),
        "softmax",
        &[],
    );
    expect_err("transpose", a.transpose(0, 2), "transpose", &[]);
    expect_err("narrow axis", a.narrow(3, 0, 1), "narrow", &[]);
    expect_err("unsqueeze", a.unsqueeze(3), "unsqueeze", &["[2, 3]"]);
    expect_err("unsqueeze neg", a.unsqueeze(-4), "unsqueeze", &[]);
    expect_err("squeeze axis", a.squeeze(2), "squeeze", &[]);
    expect_err("squeeze non-1", a.squeeze(0), "squeeze", &["[2, 3]"]);
    expect_err("permute dup", a.permute(&[0, 0]), "permute", &["[2, 3]"]);
    expect_err("permute len", a.permute(&[1, 0, 2]), "permute", &[]);
    expect_err("flatten", a.flatten(1, 0), "flatten", &[]);
    expect_err("flatten axis", a.flatten(0, 4), "flatten", &[]);
    expect_err("cat axis", Tensor::cat(&[&a, &a], 2), "cat", &[]);
    expect_err(
        "index_select axis",
        a.index_select(2, &ids(dev, &[0], &[1])?),
        "index_select",
        &[],
    );
    expect_err("gather axis", a.gather(-3, &ids(dev, &[0; 6], &[2, 3])?), "gather", &[]);
    expect_err("dim", a.dim(2), "dim", &[]);
    Ok(())
}

/// Indices out of range (too large and negative) in index_select, embedding,
/// gather, scatter_add and cross-entropy targets; narrow past the end (including
/// a start so large that `start + len` overflows).
pub fn index_errors(dev: &Device) -> Result<()> {
    let a = randn(dev, &[4, 3])?;
    let e = expect_err(
        "index_select",
        a.index_select(0, &ids(dev, &[1, 4], &[2])?),
        "index_select",
        &["4", "[4, 3]"],
    );
    assert!(matches!(e, Error::IndexOutOfRange { index: 4, size: 4, .. }));
    let e = expect_err(
        "index_select neg",
        a.index_select(1, &ids(dev, &[-1], &[1])?),
        "index_select",
        &["-1"],
    );
    assert!(matches!(e, Error::IndexOutOfRange { index: -1, size: 3, .. }));
    let e = expect_err(
        "embedding",
        a.embedding(&ids(dev, &[0, 7, 1], &[3])?),
        "embedding",
        &["7", "[4, 3]"],
    );
    assert!(matches!(e, Error::IndexOutOfRange { index: 7, size: 4, .. }));
    let e = expect_err(
        "gather",
        a.gather(1, &ids(dev, &[0, 3, 0, 0], &[4, 1])?),
        "gather",
        &["3", "[4, 3]"],
    );
    assert!(matches!(e, Error::IndexOutOfRange { index: 3, size: 3, .. }));
    expect_err(
        "gather neg",
        a.gather(0, &ids(dev, &[-2, 0, 0], &[1, 3])?),
        "gather",
        &["-2"],
    );
    expect_err(
        "scatter_add",
        a.scatter_add(0, &ids(dev, &[0, 9, 0], &[1, 3])?, &randn(dev, &[1, 3])?),
        "scatter_add",
        &["9"],
    );
    let t = ids(dev, &[0, 3, 1, 2], &[4])?;
    let e = expect_err(
        "cross_entropy",
        a.cross_entropy(&t, None, 0.0),
        "cross_entropy",
        &["3", "[4, 3]"],
    );
    assert!(matches!(e, Error::IndexOutOfRange { index: 3, size: 3, .. }));
    expect_err(
        "cross_entropy neg",
        a.cross_entropy(&ids(dev, &[0, -1, 1, 2], &[4])?, None, 0.0),
        "cross_entropy",
        &["-1"],
    );
    // the ignore index is exempt, other negatives are not
    a.cross_entropy(&ids(dev, &[0, -100, 1, 2], &[4])?, Some(-100), 0.0)?;
    expect_err(
        "cross_entropy other neg",
        a.cross_entropy(&ids(dev, &[0, -5, 1, 2], &[4])?, Some(-100), 0.0),
        "cross_entropy",
        &["-5"],
    );
    // narrow past the end
    let e = expect_err("narrow", a.narrow(0, 3, 2), "narrow", &["[4, 3]"]);
    assert!(matches!(e, Error::IndexOutOfRange { size: 4, .. }));
    expect_err("narrow start", a.narrow(1, 4, 0), "narrow", &[]);
    expect_err("narrow overflow", a.narrow(1, usize::MAX, 2), "narrow", &["[4, 3]"]);
    // the failed ops did not corrupt anything: the tensor still reads back
    assert_eq!(a.to_vec_f64()?.len(), 12);
    Ok(())
}

/// Other invalid arguments: probabilities, label smoothing, variance of one
/// element, reductions over empty axes, `to_scalar` of many elements, `set_grad`
/// and `assign` misuse, and a device mismatch when the device is not the CPU.
pub fn argument_errors(dev: &Device) -> Result<()> {
    let a = randn(dev, &[2, 3])?;
    expect_err("dropout p=1", a.dropout(1.0, true), "dropout", &["1"]);
    expect_err("dropout p<0", a.dropout(-0.1, false), "dropout", &[]);
    expect_err(
        "bernoulli",
        Tensor::bernoulli(&[2], 1.5, DType::F64, dev),
        "bernoulli",
        &["1.5"],
    );
    let t = ids(dev, &[0, 1], &[2])?;
    expect_err(
        "label_smoothing",
        a.cross_entropy(&t, None, 1.5),
        "cross_entropy",
        &["1.5"],
    );
    expect_err(
        "var of one",
        a.narrow(0, 0, 1)?.var(&[0], false, true),
        "var",
        &["[1, 3]"],
    );
    expect_err(
        "max empty",
        Tensor::zeros(&[0, 2], DType::F64, dev)?.max(&[0], false),
        "max",
        &["[0, 2]"],
    );
    expect_err("to_scalar", a.to_scalar(), "to_scalar", &["[2, 3]"]);
    expect_err("set_grad non-leaf", a.exp()?.set_grad(None), "set_grad", &["[2, 3]"]);
    let p = a.clone().requires_grad();
    expect_err(
        "set_grad shape",
        p.set_grad(Some(randn(dev, &[3, 2])?)),
        "set_grad",
        &["[3, 2]"],
    );
    expect_err("assign shape", p.assign(&randn(dev, &[3])?), "assign", &["[3]"]);
    expect_err(
        "assign view",
        p.t()?.assign(&randn(dev, &[3, 2])?),
        "assign",
        &["[3, 2]"],
    );
    expect_err("backward untracked", a.sum_all()?.backward(), "backward", &["[]"]);
    expect_err("backward non-scalar", p.exp()?.backward(), "backward", &["[2, 3]"]);
    let cpu = unigrad_cpu::cpu();
    if !dev.same(&cpu) {
        let c = randn(&cpu, &[2, 3])?;
        let e = expect_err("device", a.add(&c), "add", &["cpu"]);
        assert!(matches!(e, Error::DeviceMismatch { .. }));
        expect_err("device matmul", a.matmul(&c.t()?), "matmul", &["cpu"]);
        expect_err(
            "device ids",
            a.index_select(0, &ids(&cpu, &[0], &[1])?),
            "index_select",
            &["cpu"],
        );
    }
    Ok(())
}

const BIG: usize = 1 << 33;

/// Shapes whose element count overflows `usize` are errors naming the op and the
/// shape as passed, from every constructor and every op that makes a new shape
/// (they used to wrap: `zeros([2^33, 2^33])` had 0 elements and a reshape of 4
/// elements to `[2^63 + 2, 2]` succeeded). Zero-size operands keep the inputs
/// small while the shape an op makes overflows.
pub fn shape_overflow(dev: &Device) -> Result<()> {
    let f = DType::F64;
    let huge = [BIG, BIG];
    let shown = "[8589934592, 8589934592]";
    expect_err("zeros", Tensor::zeros(&huge, f, dev), "zeros", &[shown, "overflows"]);
    // no element, but the strides of the other dims overflow
    expect_err(
        "zeros empty",
        Tensor::zeros(&[0, 1 << 40, 1 << 40], f, dev),
        "zeros",
        &["[0, "],
    );
    expect_err("full", Tensor::full(&huge, 1.0, f, dev), "full", &[shown]);
    expect_err("ones", Tensor::ones(&huge, f, dev), "full", &[shown]);
    expect_err("randn", Tensor::randn(&huge, f, dev), "randn", &[shown]);
    expect_err(
        "rand_uniform",
        Tensor::rand_uniform(&huge, 0.0, 1.0, f, dev),
        "rand_uniform",
        &[shown],
    );
    expect_err(
        "bernoulli",
        Tensor::bernoulli(&huge, 0.5, f, dev),
        "bernoulli",
        &[shown],
    );
    expect_err(
        "from_vec",
        Tensor::from_vec(Vec::<f64>::new(), &huge, dev),
        "from_vec",
        &[shown],
    );
    expect_err(
        "from_f64s",
        Tensor::from_f64s(&[], &huge, f, dev),
        "from_f64s",
        &[shown],
    );
    // sizes that fit usize but no memory: an error, not an abort
    let e = Tensor::zeros(&[1 << 50], DType::F32, dev).expect_err("zeros of 4 PB");
    assert!(matches!(e, Error::Backend { .. }), "zeros of 4 PB: {e:?}");
    expect_err("full 8 PB", Tensor::full(&[1 << 50], 0.0, f, dev), "full", &[]);
    // views and copies
    let a = randn(dev, &[4])?;
    let e = expect_err(
        "reshape wraps to 4",
        a.reshape(&[(1 << 63) + 2, 2]),
        "reshape",
        &["9223372036854775810"],
    );
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
    expect_err(
        "reshape_infer",
        a.reshape_infer(&[-1, 1 << 62, 8]),
        "reshape_infer",
        &[],
    );
    let one = randn(dev, &[1])?;
    expect_err("broadcast_as", one.broadcast_as(&huge), "broadcast_as", &[shown]);
    let z = Tensor::zeros(&[0, 1 << 62, 2], f, dev)?;
    expect_err(
        "cat",
        Tensor::cat(&[&z, &z, &z], 2),
        "cat",
        &["[0, 4611686018427387904, 6]"],
    );
    expect_err("stack", Tensor::stack(&[&z, &z, &z, &z], 0), "stack", &[]);
    let wide = Tensor::zeros(&[0, usize::MAX], f, dev)?;
    expect_err("cat sum", Tensor::cat(&[&wide, &wide], 1), "cat", &[]);
    // broadcasting ops: [2^40, 1, 0] with [1, 2^40, 0]
    let (p, q) = (
        Tensor::zeros(&[1 << 40, 1, 0], f, dev)?,
        Tensor::zeros(&[1, 1 << 40, 0], f, dev)?,
    );
    expect_err(
        "add",
        p.add(&q),
        "add",
        &[
            "[1099511627776, 1, 0]",
            "[1, 1099511627776, 0]",
            "[1099511627776, 1099511627776, 0]",
        ],
    );
    expect_err("maximum", p.maximum(&q), "maximum", &[]);
    expect_err("where_cond", p.where_cond(&q, &p), "where_cond", &[]);
    // matmul: batch dims [2^40, 1] and [1, 2^40]
    let (m1, m2) = (
        Tensor::zeros(&[1 << 40, 1, 1, 0], f, dev)?,
        Tensor::zeros(&[1, 1 << 40, 0, 1], f, dev)?,
    );
    expect_err("matmul", m1.matmul(&m2), "matmul", &[]);
    // index ops: 16 ids into dim 0 of [1, 0, 2^61] make [16, 0, 2^61]
    let src = Tensor::zeros(&[1, 0, 1 << 61], f, dev)?;
    expect_err(
        "index_select",
        src.index_select(0, &ids(dev, &[0; 16], &[16])?),
        "index_select",
        &["[16, 0, 2305843009213693952]"],
    );
    let table = randn(dev, &[1, 16])?;
    let many = Tensor::zeros(&[0, 1 << 60], DType::I64, dev)?;
    expect_err("embedding", table.embedding(&many), "embedding", &[]);
    // shapes that fit are still fine at the edge
    Tensor::zeros(&[0, 1 << 62, 3], f, dev)?.reshape(&[1 << 62, 0, 3])?;
    Ok(())
}

/// Views that describe more elements than memory holds (a broadcast scalar stores
/// one) are fine as views, but an op that would materialise them returns the
/// backend's allocation error instead of aborting the process.
pub fn huge_outputs(dev: &Device) -> Result<()> {
    let one = Tensor::scalar(1.0, DType::F64, dev)?.reshape(&[1, 1])?;
    let wide = one.broadcast_as(&[1, 1 << 48])?; // 2 PB as f64
    let (col, row) = (one.broadcast_as(&[1 << 24, 1])?, one.broadcast_as(&[1, 1 << 24])?);
    let cases: [(&str, Result<Tensor>); 7] = [
        ("exp", wide.exp()),
        ("add", col.add(&row)),
        ("where_cond", col.where_cond(&row, &col)),
        ("matmul", col.matmul(&row)),
        ("to_dtype", wide.to_dtype(DType::F32)),
        ("softmax", wide.softmax(-1)),
        ("contiguous", wide.contiguous()),
    ];
    for (what, r) in cases {
        match r {
            Err(Error::Backend { .. }) => {}
            other => panic!("{what}: expected an allocation error, got {other:?}"),
        }
    }
    assert!(matches!(wide.to_vec_f64(), Err(Error::Backend { .. })));
    // reductions of such a view need no large output
    assert_eq!(
        one.broadcast_as(&[1 << 10, 1 << 10])?.sum_all()?.to_scalar()?,
        (1u64 << 20) as f64
    );
    Ok(())
}

/// A start near `usize::MAX` is reported as passed, never wrapped to "index -1".
pub fn narrow_huge_start(dev: &Device) -> Result<()> {
    let a = randn(dev, &[4, 3])?;
    for start in [usize::MAX, usize::MAX - 1, 1 << 63] {
        let e = expect_err(
            "narrow",
            a.narrow(0, start, 1),
            "narrow",
            &[&start.to_string(), "[4, 3]"],
        );
        assert!(!e.to_string().contains("-1"), "{e}");
    }
    Ok(())
}

/// y = x cast to i64: a custom op with an integer output.
struct ToIndex;

impl CustomOp for ToIndex {
    fn name(&self) -> String {
        "to_index".into()
    }
    fn forward(&mut self, inputs: &[Tensor]) -> Result<Tensor> {
        inputs[0].to_dtype(DType::I64)
    }
    fn backward(self: Box<Self>, _: &Tensor) -> Result<Vec<Option<Tensor>>> {
        panic!("the backward of an op with an i64 output must never run");
    }
}

/// Only floating-point tensors take part in autograd, as in PyTorch: an i64 tensor
/// cannot become a grad leaf (`try_requires_grad` says why, `requires_grad` leaves
/// it untracked), and a custom op's i64 output is not recorded.
pub fn non_float_grad(dev: &Device) -> Result<()> {
    let i = ids(dev, &[1, 2, 3], &[3])?;
    let e = expect_err(
        "try_requires_grad",
        i.clone().try_requires_grad(),
        "requires_grad",
        &["i64", "[3]"],
    );
    assert!(matches!(e, Error::UnsupportedDType { .. }), "{e:?}");
    let leaf = i.requires_grad();
    assert!(!leaf.tracks_grad() && !leaf.is_grad_leaf() && leaf.grad().is_none());
    assert_eq!(leaf.to_vec::<i64>()?, vec![1, 2, 3]);
    // floats still become leaves through both entry points
    assert!(randn(dev, &[2])?.try_requires_grad()?.is_grad_leaf());
    let x = randn(dev, &[3])?.requires_grad();
    assert!(x.is_grad_leaf());
    let y = apply(ToIndex, &[&x])?;
    assert_eq!(y.dtype(), DType::I64);
    assert!(!y.tracks_grad(), "an i64 custom-op output was recorded");
    expect_err("backward of i64", y.backward_with(&y), "backward", &["track"]);
    assert!(x.grad().is_none());
    Ok(())
}
