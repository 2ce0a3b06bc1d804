//! Differential test against PyTorch: every op with a PyTorch counterpart, forward and
//! gradients, replayed from cases PyTorch computed in f64.
//!
//! Why: gradient checks by finite differences cannot see a convention (the gradient at a
//! kink, NaN propagation, empty reductions) and the naive reference code of
//! [`forward`](crate::forward) shares our own conventions. Agreeing with PyTorch
//! value-for-value, specials included, is what a user porting a model relies on.
//!
//! The cases live in one committed file, `tests/data/torch_diff.safetensors`, written
//! offline by `scripts/torch-diff/gen_cases.py` (its docstring gives the layout and the
//! PyTorch version that made it); PyTorch is not needed at test time. Each case names a
//! unigrad op, its arguments and its inputs (f64 or i64 leaves, each optionally viewed
//! through a permutation so the op sees a non-contiguous operand), the forward output,
//! weights `R` and the gradient of `sum(out · R)` for every differentiable leaf. The
//! inputs cover broadcasting, non-contiguous views, size-0 and size-1 dimensions, and
//! values at kinks, ties, NaN, ±inf and large magnitudes.
//!
//! Comparison per element: NaN must meet NaN, an infinity the same infinity, anything
//! else `|got − want| ≤ 1e-10 · max(1, |want|)`; shapes must be equal. A case that
//! panics or returns an error fails like a mismatch.
//!
//! Cases that do not match are listed, by name and with the reason, in
//! [`KNOWN_DIFFERENCES`] (differences found by this test and not yet fixed, or kept
//! on purpose). A listed case that *passes* fails the test too, so the list cannot go
//! stale.

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use unigrad_core::{DType, Device, Error, Result, Tensor};

const OP: &str = "torch diff";

/// Relative tolerance of the comparison (with an absolute floor of the same size).
pub const TOL: f64 = 1e-10;

/// Differences that unigrad keeps on purpose (documented on the op), and differences
/// this test found that no branch fixes yet; each entry says which and why.
pub const KNOWN_DIFFERENCES: &[(&str, &str)] = &[
    (
        "maximum_ties",
        "deliberate: a tie's gradient goes to `a` (documented on `maximum`); PyTorch gives each half",
    ),
    (
        "minimum_ties",
        "deliberate: a tie's gradient goes to `a` (documented on `minimum`); PyTorch gives each half",
    ),
    (
        "cross_entropy_all_ignored",
        "deliberate: with every target ignored the loss is 0 (documented on `cross_entropy`); PyTorch gives NaN",
    ),
    (
        "powf_0_5_special",
        "finding: powf(-inf, 0.5) is +inf (C `pow`), gradient 0; PyTorch gives NaN and NaN (it takes sqrt)",
    ),
];

/// The committed cases: `data/torch_diff.safetensors` in this crate's directory, taken
/// from `$CARGO_MANIFEST_DIR` at run time (as [`nn_replay`](crate::nn_replay) does),
/// else at build time.
pub fn data_path() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("data/torch_diff.safetensors")
}

fn err(msg: impl Into<String>) -> Error {
    Error::invalid(OP, msg)
}

/// One leaf input of a case.
#[derive(Clone, Debug)]
pub struct Input {
    /// Tensor name in the file.
    pub name: String,
    /// True for an i64 leaf (indices, targets), false for f64.
    pub int: bool,
    /// Permutation applied to the leaf before the op (a non-contiguous view).
    pub view: Option<Vec<usize>>,
    /// Whether the leaf requires a gradient.
    pub grad: bool,
}

/// One case of the file.
#[derive(Clone, Debug)]
pub struct Case {
    /// Unique case name.
    pub name: String,
    /// The unigrad op (see [`apply`]).
    pub op: String,
    /// The op's parameters.
    pub args: Value,
    /// Leaves, in the op's operand order.
    pub inputs: Vec<Input>,
    /// Name of the expected output.
    pub out: String,
    /// Name of `R`, when the output is differentiated.
    pub r: Option<String>,
    /// Names of the expected leaf gradients (`None` for non-differentiable leaves).
    pub grads: Vec<Option<String>>,
}

/// The file, decoded once: its tensors, generator record and cases.
pub struct CaseFile {
    tensors: BTreeMap<String, (Vec<f64>, Vec<usize>)>,
    /// The metadata's `generator` entry (script and versions that made the file).
    pub generator: Option<String>,
    /// The cases, in file order.
    pub cases: Vec<Case>,
}

fn s(v: &Value, k: &str) -> Result<String> {
    v.get(k)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| err(format!("case entry lacks string `{k}`: {v}")))
}

fn opt_s(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

impl CaseFile {
    /// Read and parse the committed file ([`data_path`]).
    pub fn load() -> Result<CaseFile> {
        let path = data_path();
        let bytes = std::fs::read(&path).map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
        CaseFile::parse(bytes)
    }

    /// Parse the bytes of a case file.
    pub fn parse(bytes: Vec<u8>) -> Result<CaseFile> {
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| err(format!("bad safetensors: {e}")))?;
        let cases_json = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("cases"))
            .ok_or_else(|| err("no `cases` entry in the metadata"))?;
        let list: Value = serde_json::from_str(cases_json).map_err(|e| err(format!("bad `cases` JSON: {e}")))?;
        let list = list.as_array().ok_or_else(|| err("`cases` is not a list"))?;
        let mut cases = Vec::with_capacity(list.len());
        for c in list {
            let inputs = c
                .get("inputs")
                .and_then(Value::as_array)
                .ok_or_else(|| err(format!("case lacks `inputs`: {c}")))?
                .iter()
                .map(|i| {
                    Ok(Input {
                        name: s(i, "name")?,
                        int: s(i, "dtype")? == "i64",
                        view: i
                            .get("view")
                            .and_then(Value::as_array)
                            .map(|p| p.iter().map(|d| d.as_u64().unwrap_or(u64::MAX) as usize).collect()),
                        grad: i.get("grad").and_then(Value::as_bool).unwrap_or(false),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let grads = c
                .get("grads")
                .and_then(Value::as_array)
                .ok_or_else(|| err(format!("case lacks `grads`: {c}")))?
                .iter()
                .map(opt_s)
                .collect();
            cases.push(Case {
                name: s(c, "name")?,
                op: s(c, "op")?,
                args: c.get("args").cloned().unwrap_or(Value::Null),
                inputs,
                out: s(c, "out")?,
                r: c.get("r").and_then(opt_s),
                grads,
            });
        }
        let generator = meta.metadata().as_ref().and_then(|m| m.get("generator")).cloned();
        let st = SafeTensors::deserialize(&bytes).map_err(|e| err(format!("bad safetensors: {e}")))?;
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(name, v)| Ok((name.clone(), (decode(&name, &v)?, v.shape().to_vec()))))
            .collect::<Result<_>>()?;
        Ok(CaseFile {
            tensors,
            generator,
            cases,
        })
    }

    /// A tensor of the file as `(f64 values, shape)` (i64 converted).
    pub fn values(&self, name: &str) -> Result<(Vec<f64>, Vec<usize>)> {
        self.tensors
            .get(name)
            .cloned()
            .ok_or_else(|| err(format!("no tensor {name} in the case file")))
    }

    fn leaf(&self, input: &Input, dev: &Device) -> Result<Tensor> {
        let (v, shape) = self.values(&input.name)?;
        let t = if input.int {
            Tensor::from_vec(v.iter().map(|&x| x as i64).collect::<Vec<i64>>(), &shape, dev)?
        } else {
            Tensor::from_f64s(&v, &shape, DType::F64, dev)?
        };
        Ok(if input.grad { t.requires_grad() } else { t })
    }
}

/// The values of a stored f64 or i64 tensor, as f64.
fn decode(name: &str, v: &safetensors::tensor::TensorView<'_>) -> Result<Vec<f64>> {
    let data = v.data();
    Ok(match v.dtype() {
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
        Dtype::I64 => data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f64)
            .collect(),
        d => return Err(err(format!("tensor {name} has dtype {d:?}, expected F64 or I64"))),
    })
}

fn arg<'a>(a: &'a Value, k: &str) -> Result<&'a Value> {
    a.get(k).ok_or_else(|| err(format!("missing argument `{k}` in {a}")))
}
fn f(a: &Value, k: &str) -> Result<f64> {
    let v = arg(a, k)?;
    // JSON has no NaN or infinity: the generator writes them as strings
    match v.as_str() {
        Some("nan") => Ok(f64::NAN),
        Some("inf") => Ok(f64::INFINITY),
        Some("-inf") => Ok(f64::NEG_INFINITY),
        _ => v
            .as_f64()
            .ok_or_else(|| err(format!("argument `{k}` = {v} is not a number"))),
    }
}
fn i(a: &Value, k: &str) -> Result<isize> {
    arg(a, k)?
        .as_i64()
        .map(|v| v as isize)
        .ok_or_else(|| err(format!("argument `{k}` is not an integer")))
}
fn u(a: &Value, k: &str) -> Result<usize> {
    arg(a, k)?
        .as_u64()
        .map(|v| v as usize)
        .ok_or_else(|| err(format!("argument `{k}` is not a size")))
}
fn b(a: &Value, k: &str) -> Result<bool> {
    arg(a, k)?
        .as_bool()
        .ok_or_else(|| err(format!("argument `{k}` is not a bool")))
}
fn list(a: &Value, k: &str) -> Result<Vec<i64>> {
    arg(a, k)?
        .as_array()
        .and_then(|l| l.iter().map(Value::as_i64).collect())
        .ok_or_else(|| err(format!("argument `{k}` is not a list of integers")))
}
fn axes(a: &Value) -> Result<Vec<isize>> {
    Ok(list(a, "axes")?.into_iter().map(|v| v as isize).collect())
}
fn sizes(a: &Value, k: &str) -> Result<Vec<usize>> {
    Ok(list(a, k)?.into_iter().map(|v| v as usize).collect())
}

/// Unary maps and their scalar forms (one float operand), as [`apply`] names them.
#[rustfmt::skip]
pub const UNARY_OPS: &[&str] = &[
    "neg", "exp", "log", "sqrt", "rsqrt", "abs", "relu", "tanh", "sigmoid", "gelu", "gelu_tanh", "sqr", "recip",
    "powf", "affine", "add_scalar", "mul_scalar", "sub_scalar", "div_scalar", "clamp", "dropout", "contiguous",
];
/// Differentiable binary maps with broadcasting.
pub const BINARY_OPS: &[&str] = &["add", "sub", "mul", "div", "maximum", "minimum"];
/// Comparisons (1/0 results, no gradient): tensor-tensor with broadcasting, then scalar.
#[rustfmt::skip]
pub const COMPARE_OPS: &[&str] = &[
    "eq", "ne", "lt", "le", "gt", "ge", "eq_scalar", "lt_scalar", "le_scalar", "gt_scalar", "ge_scalar",
];
/// The other ops [`apply`] knows.
#[rustfmt::skip]
pub const OTHER_OPS: &[&str] = &[
    "where_cond", "masked_fill", "sum", "sum_all", "mean", "mean_all", "var", "max", "min", "sum_to", "matmul",
    "reshape", "reshape_infer", "flatten", "permute", "transpose", "t", "narrow", "unsqueeze", "squeeze",
    "broadcast_as", "cat", "stack", "to_dtype_f32", "index_select", "embedding", "gather", "scatter_add",
    "softmax", "log_softmax", "cross_entropy", "layer_norm", "rms_norm",
];
/// Every op name [`apply`] knows, by group.
pub const OPS: &[&[&str]] = &[UNARY_OPS, BINARY_OPS, COMPARE_OPS, OTHER_OPS];

/// Apply the unigrad op `op` with arguments `a` to the operands `x`.
pub fn apply(op: &str, a: &Value, x: &[Tensor]) -> Result<Tensor> {
    let x0 = x.first().ok_or_else(|| err(format!("{op}: no operands")))?;
    let at = |k: usize| x.get(k).ok_or_else(|| err(format!("{op}: operand {k} missing")));
    match op {
        "neg" => x0.neg(),
        "exp" => x0.exp(),
        "log" => x0.log(),
        "sqrt" => x0.sqrt(),
        "rsqrt" => x0.rsqrt(),
        "abs" => x0.abs(),
        "relu" => x0.relu(),
        "tanh" => x0.tanh(),
        "sigmoid" => x0.sigmoid(),
        "gelu" => x0.gelu(),
        "gelu_tanh" => x0.gelu_tanh(),
        "sqr" => x0.sqr(),
        "recip" => x0.recip(),
        "powf" => x0.powf(f(a, "p")?),
        "affine" => x0.affine(f(a, "a")?, f(a, "b")?),
        "add_scalar" => x0.add_scalar(f(a, "c")?),
        "mul_scalar" => x0.mul_scalar(f(a, "c")?),
        "sub_scalar" => x0.sub_scalar(f(a, "c")?),
        "div_scalar" => x0.div_scalar(f(a, "c")?),
        "clamp" => x0.clamp(f(a, "lo")?, f(a, "hi")?),
        "dropout" => x0.dropout(f(a, "p")?, b(a, "train")?),
        "add" => x0.add(at(1)?),
        "sub" => x0.sub(at(1)?),
        "mul" => x0.mul(at(1)?),
        "div" => x0.div(at(1)?),
        "maximum" => x0.maximum(at(1)?),
        "minimum" => x0.minimum(at(1)?),
        "eq" => x0.eq(at(1)?),
        "ne" => x0.ne(at(1)?),
        "lt" => x0.lt(at(1)?),
        "le" => x0.le(at(1)?),
        "gt" => x0.gt(at(1)?),
        "ge" => x0.ge(at(1)?),
        "eq_scalar" => x0.eq_scalar(f(a, "c")?),
        "lt_scalar" => x0.lt_scalar(f(a, "c")?),
        "le_scalar" => x0.le_scalar(f(a, "c")?),
        "gt_scalar" => x0.gt_scalar(f(a, "c")?),
        "ge_scalar" => x0.ge_scalar(f(a, "c")?),
        "where_cond" => x0.where_cond(at(1)?, at(2)?),
        "masked_fill" => x0.masked_fill(at(1)?, f(a, "value")?),
        "sum" => x0.sum(&axes(a)?, b(a, "keepdim")?),
        "sum_all" => x0.sum_all(),
        "mean" => x0.mean(&axes(a)?, b(a, "keepdim")?),
        "mean_all" => x0.mean_all(),
        "var" => x0.var(&axes(a)?, b(a, "keepdim")?, b(a, "unbiased")?),
        "max" => x0.max(&axes(a)?, b(a, "keepdim")?),
        "min" => x0.min(&axes(a)?, b(a, "keepdim")?),
        "sum_to" => x0.sum_to(&sizes(a, "shape")?),
        "matmul" => x0.matmul(at(1)?),
        "reshape" => x0.reshape(&sizes(a, "shape")?),
        "reshape_infer" => x0.reshape_infer(&list(a, "shape")?.into_iter().map(|v| v as isize).collect::<Vec<_>>()),
        "flatten" => x0.flatten(i(a, "start")?, i(a, "end")?),
        "permute" => x0.permute(&sizes(a, "perm")?),
        "transpose" => x0.transpose(i(a, "d0")?, i(a, "d1")?),
        "t" => x0.t(),
        "narrow" => x0.narrow(i(a, "dim")?, u(a, "start")?, u(a, "len")?),
        "unsqueeze" => x0.unsqueeze(i(a, "dim")?),
        "squeeze" => x0.squeeze(i(a, "dim")?),
        "broadcast_as" => x0.broadcast_as(&sizes(a, "shape")?),
        "contiguous" => x0.contiguous(),
        "cat" => Tensor::cat(&x.iter().collect::<Vec<_>>(), i(a, "dim")?),
        "stack" => Tensor::stack(&x.iter().collect::<Vec<_>>(), i(a, "dim")?),
        "to_dtype_f32" => x0.to_dtype(DType::F32)?.to_dtype(DType::F64),
        "index_select" => x0.index_select(i(a, "dim")?, at(1)?),
        "embedding" => x0.embedding(at(1)?),
        "gather" => x0.gather(i(a, "dim")?, at(1)?),
        "scatter_add" => x0.scatter_add(i(a, "dim")?, at(1)?, at(2)?),
        "softmax" => x0.softmax(i(a, "dim")?),
        "log_softmax" => x0.log_softmax(i(a, "dim")?),
        "cross_entropy" => x0.cross_entropy(at(1)?, arg(a, "ignore_index")?.as_i64(), f(a, "label_smoothing")?),
        "layer_norm" => {
            let w = if b(a, "weight")? { Some(at(1)?) } else { None };
            let bias = if b(a, "bias")? {
                Some(at(1 + usize::from(w.is_some()))?)
            } else {
                None
            };
            x0.layer_norm(w, bias, f(a, "eps")?)
        }
        "rms_norm" => {
            let w = if b(a, "weight")? { Some(at(1)?) } else { None };
            x0.rms_norm(w, f(a, "eps")?)
        }
        _ => Err(err(format!("unknown op `{op}` in the case file"))),
    }
}

/// Compare `got` with `want` elementwise (see the module doc); `None` when they agree,
/// else a description of the first few differing elements.
pub fn compare(what: &str, got: (&[f64], &[usize]), want: (&[f64], &[usize])) -> Option<String> {
    if got.1 != want.1 {
        return Some(format!("{what}: shape {:?}, PyTorch {:?}", got.1, want.1));
    }
    let bad: Vec<String> = got
        .0
        .iter()
        .zip(want.0)
        .enumerate()
        .filter(|(_, (&g, &w))| {
            let ok = if w.is_nan() || g.is_nan() {
                w.is_nan() && g.is_nan()
            } else if w.is_infinite() || g.is_infinite() {
                g == w
            } else {
                (g - w).abs() <= TOL * w.abs().max(1.0)
            };
            !ok
        })
        .map(|(k, (g, w))| format!("[{k}] ours {g:e}, PyTorch {w:e}"))
        .collect();
    if bad.is_empty() {
        None
    } else {
        let n = bad.len();
        let shown: Vec<&str> = bad.iter().take(4).map(String::as_str).collect();
        Some(format!("{what}: {n} element(s) differ: {}", shown.join("; ")))
    }
}

fn host(t: &Tensor) -> Result<(Vec<f64>, Vec<usize>)> {
    Ok((t.to_vec_f64()?, t.shape().to_vec()))
}

/// Replay one case on `dev`: `Ok(None)` when forward and every gradient agree with
/// PyTorch, `Ok(Some(report))` on a mismatch or an op error. `Err` only for a broken
/// case file.
pub fn replay_case(file: &CaseFile, case: &Case, dev: &Device) -> Result<Option<String>> {
    let leaves: Vec<Tensor> = case.inputs.iter().map(|i| file.leaf(i, dev)).collect::<Result<_>>()?;
    let run = || -> Result<Vec<String>> {
        let operands: Vec<Tensor> = leaves
            .iter()
            .zip(&case.inputs)
            .map(|(l, i)| match &i.view {
                Some(p) => l.permute(p),
                None => Ok(l.clone()),
            })
            .collect::<Result<_>>()?;
        let out = apply(&case.op, &case.args, &operands)?;
        let mut bad = Vec::new();
        bad.extend(compare(
            "forward",
            host(&out)?.as_ref_pair(),
            file.values(&case.out)?.as_ref_pair(),
        ));
        if let Some(r) = &case.r {
            let (rv, rs) = file.values(r)?;
            let r = Tensor::from_f64s(&rv, &rs, DType::F64, dev)?;
            out.mul(&r)?.sum_all()?.backward()?;
            for (k, (leaf, want)) in leaves.iter().zip(&case.grads).enumerate() {
                let Some(want) = want else { continue };
                let got = match leaf.grad() {
                    Some(g) => host(&g)?,
                    None => (vec![0.0; leaf.numel()], leaf.shape().to_vec()),
                };
                bad.extend(compare(
                    &format!("grad of input {k}"),
                    got.as_ref_pair(),
                    file.values(want)?.as_ref_pair(),
                ));
            }
        }
        Ok(bad)
    };
    Ok(match catch_unwind(AssertUnwindSafe(run)) {
        Ok(Ok(bad)) if bad.is_empty() => None,
        Ok(Ok(bad)) => Some(bad.join(" | ")),
        Ok(Err(e)) => Some(format!("error: {e}")),
        Err(p) => Some(format!("PANIC: {}", panic_message(&*p))),
    })
}

/// The message of a caught panic (`"(non-string payload)"` when it has none).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("(non-string payload)")
}

trait AsRefPair {
    fn as_ref_pair(&self) -> (&[f64], &[usize]);
}
impl AsRefPair for (Vec<f64>, Vec<usize>) {
    fn as_ref_pair(&self) -> (&[f64], &[usize]) {
        (&self.0, &self.1)
    }
}

/// Every case of the file on `dev`: all agree with PyTorch except those listed in
/// [`KNOWN_DIFFERENCES`], and every listed case still differs.
pub fn torch_cases(dev: &Device) -> Result<()> {
    let file = CaseFile::load()?;
    let listed: BTreeMap<&str, &str> = KNOWN_DIFFERENCES.iter().copied().collect();
    let mut unexpected = Vec::new();
    let mut stale = Vec::new();
    let mut expected = 0;
    for case in &file.cases {
        match (replay_case(&file, case, dev)?, listed.get(case.name.as_str())) {
            (None, None) => {}
            (None, Some(_)) => stale.push(case.name.clone()),
            (Some(_), Some(_)) => expected += 1,
            (Some(report), None) => unexpected.push(format!("{} ({}): {report}", case.name, case.op)),
        }
    }
    let names: BTreeSet<&str> = file.cases.iter().map(|c| c.name.as_str()).collect();
    let unknown: Vec<&str> = listed.keys().copied().filter(|n| !names.contains(n)).collect();
    eprintln!(
        "torch diff: {} cases, {} agree, {expected} listed differences",
        file.cases.len(),
        file.cases.len() - expected - unexpected.len()
    );
    assert!(unknown.is_empty(), "allow-listed cases not in the file: {unknown:?}");
    assert!(
        stale.is_empty(),
        "allow-listed cases now agree with PyTorch; remove them from the lists: {stale:?}"
    );
    assert!(
        unexpected.is_empty(),
        "{} case(s) differ from PyTorch:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
    Ok(())
}

/// The file covers every op the replay knows, holds only known ops, is under 2 MB and
/// names its generator.
pub fn coverage(_dev: &Device) -> Result<()> {
    let file = CaseFile::load()?;
    let used: BTreeSet<&str> = file.cases.iter().map(|c| c.op.as_str()).collect();
    let known: BTreeSet<&str> = OPS.iter().flat_map(|g| g.iter().copied()).collect();
    let missing: Vec<&&str> = known.difference(&used).collect();
    let extra: Vec<&&str> = used.difference(&known).collect();
    assert!(missing.is_empty(), "ops without a case: {missing:?}");
    assert!(extra.is_empty(), "cases of unknown ops: {extra:?}");
    let bytes = std::fs::metadata(data_path()).map_err(|e| err(e.to_string()))?.len();
    assert!(bytes < 2_000_000, "the case file has {bytes} bytes; keep it under 2 MB");
    let gen = file.generator.as_ref();
    assert!(
        gen.is_some_and(|g| g.contains("\"torch\"")),
        "the file does not name the PyTorch that made it"
    );
    eprintln!(
        "torch diff: {} ops in {} cases, {bytes} bytes",
        used.len(),
        file.cases.len()
    );
    Ok(())
}

/// The comparison is not vacuous: a wrong value, a NaN against a number, the wrong
/// infinity, a shape difference and a 1e-9 relative error are each caught, and an
/// exact copy and a 1e-11 relative error pass.
pub fn comparison_catches_differences(_dev: &Device) -> Result<()> {
    let want = [1.0, f64::NAN, f64::INFINITY, -1e15, 0.0];
    let s = [5usize];
    assert!(compare("x", (&want, &s), (&want, &s)).is_none());
    let close = [1.0 + 1e-11, f64::NAN, f64::INFINITY, -1e15 * (1.0 + 1e-11), 1e-11];
    assert!(compare("x", (&close, &s), (&want, &s)).is_none());
    for (k, v) in [
        (0, 1.0 + 1e-9),
        (1, 0.0),
        (2, f64::NEG_INFINITY),
        (2, 1e308),
        (3, -1e15 * (1.0 + 1e-9)),
        (4, f64::NAN),
    ] {
        let mut got = want;
        got[k] = v;
        assert!(
            compare("x", (&got, &s), (&want, &s)).is_some(),
            "element {k} = {v} passed"
        );
    }
    assert!(compare("x", (&want, &[5, 1]), (&want, &s)).is_some());
    Ok(())
}

/// The replay is not vacuous: `matmul_batched` passes as committed, and fails once its
/// forward output, or the gradient of either operand, is off by 1e-8 in one element.
pub fn replay_catches_a_wrong_case(dev: &Device) -> Result<()> {
    let mut file = CaseFile::load()?;
    let case = file
        .cases
        .iter()
        .find(|c| c.name == "matmul_batched")
        .cloned()
        .ok_or_else(|| err("case matmul_batched is missing"))?;
    assert_eq!(replay_case(&file, &case, dev)?, None);
    let mut targets = vec![case.out.clone()];
    targets.extend(case.grads.iter().flatten().cloned());
    assert_eq!(targets.len(), 3, "matmul_batched records an output and two gradients");
    for name in targets {
        let saved = file.values(&name)?;
        let mut wrong = saved.clone();
        wrong.0[0] += 1e-8 * wrong.0[0].abs().max(1.0);
        file.tensors.insert(name.clone(), wrong);
        assert!(
            replay_case(&file, &case, dev)?.is_some(),
            "a wrong {name} passed the replay"
        );
        file.tensors.insert(name, saved);
    }
    Ok(())
}
