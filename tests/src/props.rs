//! Property test: random shapes, axes and broadcasting partners thrown at every public
//! op of [`Tensor`].
//!
//! Why: the hand-written suites test the shapes someone thought of. Shape bugs live in
//! the corners (rank 0, size-0 and size-1 dimensions, negative and out-of-range axes,
//! partners that almost broadcast), and a panic there takes down a training run instead
//! of returning an error. Each case draws ranks 0–4 and dimensions 0–5 from its own
//! seeded generator ([`Rng`], reproducible, no dependency), predicts the result with
//! independent shape rules written here ([`broadcast`], [`reduce`], [`matmul`], the
//! view rules in [`plan`]) and checks that
//!
//! 1. the op does not panic (each case runs under `catch_unwind`);
//! 2. it returns an error exactly when the rules say the input is invalid, and otherwise
//!    a result of the predicted shape and the operands' dtype;
//! 3. after a valid forward of a differentiable op, `sum_all().backward()` succeeds and
//!    every float leaf gets a gradient of its own shape and dtype.
//!
//! Leaves are f32 or f64, and a rank ≥ 2 operand is sometimes a transposed
//! (non-contiguous) view of its leaf. Index operands hold in-range indices most of the
//! time and an out-of-range one (negative or too large) otherwise.

use crate::diff::{apply, panic_message, BINARY_OPS, COMPARE_OPS, UNARY_OPS};
use serde_json::{json, Value};
use std::panic::{catch_unwind, AssertUnwindSafe};
use unigrad_core::{DType, Device, Result, Tensor};

/// Number of random cases per run.
pub const CASES: usize = 5000;

/// A small seeded generator (SplitMix64): reproducible cases with no dependency.
pub struct Rng(u64);

impl Rng {
    /// A generator with the given seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Uniform in `lo..=hi` (`lo <= hi`).
    pub fn range(&mut self, lo: isize, hi: isize) -> isize {
        lo + self.below((hi - lo + 1) as usize) as isize
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    /// A dimension in 0–5, small sizes favoured (0: 10 %, 1: 20 %).
    pub fn dim(&mut self) -> usize {
        match self.below(10) {
            0 => 0,
            1 | 2 => 1,
            _ => 2 + self.below(4),
        }
    }
    /// A shape of the given rank.
    pub fn shape_of(&mut self, rank: usize) -> Vec<usize> {
        (0..rank).map(|_| self.dim()).collect()
    }
    /// A shape of rank 0–4.
    pub fn shape(&mut self) -> Vec<usize> {
        let r = self.below(5);
        self.shape_of(r)
    }
    /// A broadcasting partner of `s`: the same shape, a suffix with some dimensions set
    /// to 1, a longer shape that `s` broadcasts to, or an unrelated shape.
    pub fn partner(&mut self, s: &[usize]) -> Vec<usize> {
        match self.below(5) {
            0 => s.to_vec(),
            1 | 2 => {
                let drop = self.below(s.len() + 1);
                s[drop..]
                    .iter()
                    .map(|&d| if self.chance(0.4) { 1 } else { d })
                    .collect()
            }
            3 => {
                let extra = self.below(5 - s.len().min(4));
                let mut out = self.shape_of(extra);
                out.extend(s.iter().map(|&d| if d != 1 && self.chance(0.3) { 1 } else { d }));
                out
            }
            _ => self.shape(),
        }
    }
    /// An axis in `-rank-1..=rank` (one out of range on each side).
    pub fn axis(&mut self, rank: usize) -> isize {
        self.range(-(rank as isize) - 1, rank as isize)
    }
}

/// NumPy broadcasting of two shapes, `None` when they do not broadcast.
pub fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let at = |s: &[usize], i: usize| if i + s.len() >= r { s[i + s.len() - r] } else { 1 };
    (0..r)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// `axis` in `0..rank`, or `None` when out of range.
pub fn norm_axis(axis: isize, rank: usize) -> Option<usize> {
    let a = if axis < 0 { axis + rank as isize } else { axis };
    (0..rank as isize).contains(&a).then_some(a as usize)
}

/// The axes a reduction over `axes` reduces (every axis for `[]`), or `None` for an
/// out-of-range or repeated axis.
pub fn reduced_axes(axes: &[isize], rank: usize) -> Option<Vec<usize>> {
    if axes.is_empty() {
        return Some((0..rank).collect());
    }
    let mut out = Vec::new();
    for &a in axes {
        let n = norm_axis(a, rank)?;
        if out.contains(&n) {
            return None;
        }
        out.push(n);
    }
    Some(out)
}

/// Shape of a reduction of `s` over `axes`, or `None` when the axes are invalid.
pub fn reduce(s: &[usize], axes: &[isize], keepdim: bool) -> Option<Vec<usize>> {
    let ax = reduced_axes(axes, s.len())?;
    Some(
        s.iter()
            .enumerate()
            .filter_map(|(i, &d)| match (ax.contains(&i), keepdim) {
                (false, _) => Some(d),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect(),
    )
}

/// Shape of `a · b` (both rank ≥ 2, inner sizes equal, batch dimensions broadcast).
pub fn matmul(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let (ra, rb) = (a.len(), b.len());
    if ra < 2 || rb < 2 || a[ra - 1] != b[rb - 2] {
        return None;
    }
    let mut out = broadcast(&a[..ra - 2], &b[..rb - 2])?;
    out.extend([a[ra - 2], b[rb - 1]]);
    Some(out)
}

/// One operand of a case.
#[derive(Clone, Debug)]
pub enum Operand {
    /// A float leaf of this (operand) shape; `true`: made a transposed view of a leaf.
    Float(Vec<usize>, bool),
    /// A float operand that takes no gradient (a condition or mask).
    Plain(Vec<usize>),
    /// An i64 operand with these values.
    Ids(Vec<usize>, Vec<i64>),
}

type OpFn = Box<dyn Fn(&[Tensor]) -> Result<Tensor>>;

/// One random case: the op call, its operands, and the predicted result.
pub struct Plan {
    /// The call as text, for failure reports.
    pub call: String,
    /// Operands, in order.
    pub operands: Vec<Operand>,
    /// Predicted result shape; `None`: the op must return an error.
    pub expect: Option<Vec<usize>>,
    /// Whether the result is differentiable (false for comparisons).
    pub differentiable: bool,
    run: OpFn,
}

/// Indices of `shape` for an axis of `size`: in range, or (15 %) with one out of range.
/// Returns the values and whether all are in range.
fn ids_in(rng: &mut Rng, shape: &[usize], size: usize) -> (Vec<i64>, bool) {
    let bad = rng.chance(0.15);
    let n: usize = shape.iter().product();
    let mut v: Vec<i64> = (0..n)
        .map(|_| if size == 0 { 0 } else { rng.below(size) as i64 })
        .collect();
    let mut in_range = size > 0 || n == 0;
    if bad && n > 0 {
        let k = rng.below(n);
        v[k] = if rng.chance(0.5) {
            -1 - rng.below(3) as i64
        } else {
            (size + rng.below(3)) as i64
        };
        in_range = false;
    }
    (v, in_range)
}

/// Every op family the property test draws from (a family uniformly, then an op of it).
pub const FAMILIES: &[&str] = &[
    "unary",
    "binary",
    "compare",
    "where_cond",
    "masked_fill",
    "reduce",
    "var",
    "sum_all",
    "sum_to",
    "broadcast_as",
    "matmul",
    "reshape",
    "reshape_infer",
    "flatten",
    "permute",
    "transpose",
    "t",
    "narrow",
    "unsqueeze",
    "squeeze",
    "cat",
    "stack",
    "index_select",
    "embedding",
    "gather",
    "scatter_add",
    "softmax",
    "cross_entropy",
    "layer_norm",
    "rms_norm",
];

/// The families of issue 17's ops (sort, cumsum, masked_select), drawn by
/// [`random_ops_of`] from their own seed so that [`FAMILIES`]' draw stays as it was.
pub const OPS_FAMILIES: &[&str] = &["sort", "cumsum", "masked_select"];

fn unary_plan(op: &'static str, s: Vec<usize>, other: DType, rng: &mut Rng) -> Plan {
    let p = [0.0, 0.3, 1.0, -0.1][rng.below(4)];
    let dropout = op == "dropout";
    let expect = if dropout && !(0.0..1.0).contains(&p) {
        None
    } else {
        Some(s.clone())
    };
    let call = if dropout {
        format!("dropout(p = {p}, train = true)")
    } else {
        op.to_string()
    };
    let args = if dropout {
        json!({ "p": p, "train": true })
    } else {
        json!({ "p": 2.5, "a": 2.0, "b": -1.0, "c": 1.5, "lo": -0.5, "hi": 0.5 })
    };
    let run: OpFn = if op == "to_dtype" {
        Box::new(move |x| x[0].to_dtype(other))
    } else {
        Box::new(move |x| apply(op, &args, x))
    };
    Plan {
        call,
        operands: vec![Operand::Float(s, rng.chance(0.3))],
        expect,
        differentiable: true,
        run,
    }
}

/// Draw one random case of one of `families`; `other` is the float dtype that
/// `to_dtype` converts to.
pub fn plan(rng: &mut Rng, other: DType, families: &[&str]) -> Plan {
    let s = rng.shape();
    let r = s.len();
    let nc = rng.chance(0.3);
    let family = families[rng.below(families.len())];
    let f = |shape: &[usize], nc: bool| Operand::Float(shape.to_vec(), nc);
    let mk = |call: String, operands: Vec<Operand>, expect: Option<Vec<usize>>, run: OpFn| Plan {
        call,
        operands,
        expect,
        differentiable: true,
        run,
    };
    match family {
        "unary" => {
            let k = rng.below(UNARY_OPS.len() + 1);
            unary_plan(UNARY_OPS.get(k).copied().unwrap_or("to_dtype"), s, other, rng)
        }
        "binary" => {
            let op = BINARY_OPS[rng.below(BINARY_OPS.len())];
            let b = rng.partner(&s);
            let (a, b) = if rng.chance(0.5) { (s, b) } else { (b, s) };
            let run: OpFn = Box::new(move |x| apply(op, &Value::Null, x));
            mk(
                op.into(),
                vec![f(&a, nc), f(&b, rng.chance(0.3))],
                broadcast(&a, &b),
                run,
            )
        }
        "compare" => {
            let op = COMPARE_OPS[rng.below(COMPARE_OPS.len())];
            let b = rng.partner(&s);
            let scalar = op.ends_with("_scalar");
            let expect = if scalar { Some(s.clone()) } else { broadcast(&s, &b) };
            let mut operands = vec![f(&s, nc)];
            if !scalar {
                operands.push(f(&b, false));
            }
            let run: OpFn = Box::new(move |x| apply(op, &json!({ "c": 0.0 }), x));
            Plan {
                differentiable: false,
                ..mk(op.into(), operands, expect, run)
            }
        }
        "where_cond" => {
            let (c, b) = (rng.partner(&s), rng.partner(&s));
            let expect = broadcast(&c, &s).and_then(|cs| broadcast(&cs, &b));
            let ops = vec![Operand::Plain(c), f(&s, nc), f(&b, false)];
            mk(
                "where_cond".into(),
                ops,
                expect,
                Box::new(|x| x[0].where_cond(&x[1], &x[2])),
            )
        }
        "masked_fill" => {
            // the mask and self broadcast together (as PyTorch's out-of-place masked_fill)
            let m = rng.partner(&s);
            let expect = broadcast(&s, &m);
            let ops = vec![f(&s, nc), Operand::Plain(m)];
            mk(
                "masked_fill".into(),
                ops,
                expect,
                Box::new(|x| x[0].masked_fill(&x[1], -1e9)),
            )
        }
        "reduce" | "var" => {
            let n_axes = rng.below(r + 2);
            let mut axes: Vec<isize> = (0..n_axes)
                .map(|_| {
                    if r == 0 {
                        rng.axis(0)
                    } else {
                        rng.range(-(r as isize), r as isize - 1)
                    }
                })
                .collect();
            if rng.chance(0.1) {
                axes.push(rng.axis(r));
            }
            let keepdim = rng.chance(0.5);
            let mut expect = reduce(&s, &axes, keepdim);
            let reduced: Option<Vec<usize>> = reduced_axes(&axes, r).map(|ax| ax.iter().map(|&a| s[a]).collect());
            let op = if family == "var" {
                "var"
            } else {
                ["sum", "mean", "max", "min"][rng.below(4)]
            };
            let unbiased = rng.chance(0.5);
            if let Some(red) = &reduced {
                let n: usize = red.iter().product();
                if (op == "max" || op == "min") && red.contains(&0) {
                    expect = None; // no extremum of an empty set
                }
                if op == "var" && n <= usize::from(unbiased) {
                    expect = None; // n (or n − 1) = 0: no variance
                }
            }
            let extra = if op == "var" {
                format!(", unbiased = {unbiased}")
            } else {
                String::new()
            };
            let call = format!("{op}(axes = {axes:?}, keepdim = {keepdim}{extra})");
            let ax = axes.clone();
            let run: OpFn = Box::new(move |x| match op {
                "sum" => x[0].sum(&ax, keepdim),
                "mean" => x[0].mean(&ax, keepdim),
                "max" => x[0].max(&ax, keepdim),
                "min" => x[0].min(&ax, keepdim),
                _ => x[0].var(&ax, keepdim, unbiased),
            });
            Plan {
                ..mk(call, vec![f(&s, nc)], expect, run)
            }
        }
        "sum_all" => {
            let mean = rng.chance(0.5);
            let run: OpFn = Box::new(move |x| if mean { x[0].mean_all() } else { x[0].sum_all() });
            mk(
                if mean { "mean_all" } else { "sum_all" }.into(),
                vec![f(&s, nc)],
                Some(vec![]),
                run,
            )
        }
        "sum_to" => {
            let t = rng.partner(&s);
            let ok = t.len() <= r && broadcast(&t, &s).as_deref() == Some(&s[..]);
            let tt = t.clone();
            let run: OpFn = Box::new(move |x| x[0].sum_to(&tt));
            mk(format!("sum_to({t:?})"), vec![f(&s, nc)], ok.then_some(t), run)
        }
        "broadcast_as" => {
            let t = rng.partner(&s);
            let ok = t.len() >= r && broadcast(&s, &t).as_deref() == Some(&t[..]);
            let tt = t.clone();
            let run: OpFn = Box::new(move |x| x[0].broadcast_as(&tt));
            mk(format!("broadcast_as({t:?})"), vec![f(&s, nc)], ok.then_some(t), run)
        }
        "matmul" => {
            let b = if r >= 1 && rng.chance(0.7) {
                let mut b = rng.partner(&s[..r.saturating_sub(2)]);
                b.extend([s[r - 1], rng.dim()]);
                b
            } else {
                rng.shape()
            };
            let (a, b) = if rng.chance(0.1) { (b, s) } else { (s, b) };
            let expect = matmul(&a, &b);
            let ops = vec![f(&a, nc), f(&b, rng.chance(0.3))];
            mk("matmul".into(), ops, expect, Box::new(|x| x[0].matmul(&x[1])))
        }
        "reshape" => {
            let mut t = if rng.chance(0.6) {
                let mut t = s.clone();
                for i in (1..t.len()).rev() {
                    t.swap(i, rng.below(i + 1));
                }
                if rng.chance(0.5) {
                    let at = rng.below(t.len() + 1);
                    t.insert(at, 1);
                }
                t
            } else {
                rng.shape()
            };
            if rng.chance(0.2) && t.len() >= 2 {
                let d = t.remove(0);
                t[0] *= d; // merge two dimensions
            }
            let n: usize = s.iter().product();
            let ok = t.iter().product::<usize>() == n;
            let tt = t.clone();
            let run: OpFn = Box::new(move |x| x[0].reshape(&tt));
            mk(format!("reshape({t:?})"), vec![f(&s, nc)], ok.then_some(t), run)
        }
        "reshape_infer" => {
            let mut t: Vec<isize> = s.iter().map(|&d| d as isize).collect();
            for _ in 0..rng.below(3) {
                if !t.is_empty() {
                    let k = rng.below(t.len());
                    t[k] = -1;
                }
            }
            if rng.chance(0.2) {
                t.push(rng.dim() as isize);
            }
            let n: usize = s.iter().product();
            let holes = t.iter().filter(|&&d| d < 0).count();
            let known: usize = t.iter().filter(|&&d| d >= 0).map(|&d| d as usize).product();
            // one `-1` is inferred; none with known size 0, or a size that does not divide
            let expect = match holes {
                0 => (known == n).then(|| t.iter().map(|&d| d as usize).collect()),
                1 if known != 0 && n.is_multiple_of(known) => {
                    Some(t.iter().map(|&d| if d < 0 { n / known } else { d as usize }).collect())
                }
                _ => None,
            };
            let tt = t.clone();
            let run: OpFn = Box::new(move |x| x[0].reshape_infer(&tt));
            mk(format!("reshape_infer({t:?})"), vec![f(&s, nc)], expect, run)
        }
        "flatten" => {
            let (a, b) = (rng.axis(r), rng.axis(r));
            let expect = if r == 0 {
                Some(vec![1])
            } else {
                match (norm_axis(a, r), norm_axis(b, r)) {
                    (Some(i), Some(j)) if i <= j => {
                        let mut out = s[..i].to_vec();
                        out.push(s[i..=j].iter().product());
                        out.extend_from_slice(&s[j + 1..]);
                        Some(out)
                    }
                    _ => None,
                }
            };
            let run: OpFn = Box::new(move |x| x[0].flatten(a, b));
            mk(format!("flatten({a}, {b})"), vec![f(&s, nc)], expect, run)
        }
        "permute" => {
            let mut p: Vec<usize> = (0..r).collect();
            for i in (1..r).rev() {
                p.swap(i, rng.below(i + 1));
            }
            if rng.chance(0.25) {
                match rng.below(3) {
                    0 => p.push(r),
                    1 => {
                        p.pop();
                    }
                    _ if r > 1 => p[0] = p[1],
                    _ => p.push(0),
                }
            }
            let mut seen = vec![false; r];
            let ok = p.len() == r && p.iter().all(|&i| i < r && !std::mem::replace(&mut seen[i], true));
            let expect = ok.then(|| p.iter().map(|&i| s[i]).collect());
            let pp = p.clone();
            let run: OpFn = Box::new(move |x| x[0].permute(&pp));
            mk(format!("permute({p:?})"), vec![f(&s, nc)], expect, run)
        }
        "transpose" | "t" => {
            let (a, b) = if family == "t" {
                (-2, -1)
            } else {
                (rng.axis(r), rng.axis(r))
            };
            let expect = match (norm_axis(a, r), norm_axis(b, r)) {
                (Some(i), Some(j)) => {
                    let mut out = s.clone();
                    out.swap(i, j);
                    Some(out)
                }
                _ => None,
            };
            let run: OpFn = if family == "t" {
                Box::new(|x| x[0].t())
            } else {
                Box::new(move |x| x[0].transpose(a, b))
            };
            mk(format!("{family}({a}, {b})"), vec![f(&s, nc)], expect, run)
        }
        "narrow" => {
            let d = rng.axis(r);
            let size = norm_axis(d, r).map_or(3, |i| s[i]);
            let start = if rng.chance(0.1) {
                usize::MAX - rng.below(3)
            } else {
                rng.below(size + 2)
            };
            let len = rng.below(size + 2);
            let expect = norm_axis(d, r).and_then(|i| {
                let end = start.checked_add(len)?;
                (end <= s[i]).then(|| {
                    let mut out = s.clone();
                    out[i] = len;
                    out
                })
            });
            let run: OpFn = Box::new(move |x| x[0].narrow(d, start, len));
            mk(format!("narrow({d}, {start}, {len})"), vec![f(&s, nc)], expect, run)
        }
        "unsqueeze" => {
            let d = rng.range(-(r as isize) - 2, r as isize + 1);
            let at = if d < 0 { d + r as isize + 1 } else { d };
            let expect = (0..=r as isize).contains(&at).then(|| {
                let mut out = s.clone();
                out.insert(at as usize, 1);
                out
            });
            let run: OpFn = Box::new(move |x| x[0].unsqueeze(d));
            mk(format!("unsqueeze({d})"), vec![f(&s, nc)], expect, run)
        }
        "squeeze" => {
            let d = rng.axis(r);
            let expect = norm_axis(d, r).filter(|&i| s[i] == 1).map(|i| {
                let mut out = s.clone();
                out.remove(i);
                out
            });
            let run: OpFn = Box::new(move |x| x[0].squeeze(d));
            mk(format!("squeeze({d})"), vec![f(&s, nc)], expect, run)
        }
        "cat" | "stack" => {
            let n = 1 + rng.below(3);
            let stack = family == "stack";
            let d = if stack {
                rng.range(-(r as isize) - 2, r as isize + 1)
            } else {
                rng.axis(r)
            };
            let shapes: Vec<Vec<usize>> = (0..n)
                .map(|k| {
                    if k == 0 || rng.chance(0.8) {
                        let mut t = s.clone();
                        if let (false, Some(i)) = (stack, norm_axis(d, r)) {
                            t[i] = rng.dim();
                        }
                        t
                    } else {
                        rng.partner(&s)
                    }
                })
                .collect();
            let expect = if stack {
                let at = if d < 0 { d + r as isize + 1 } else { d };
                let same = shapes.iter().all(|t| *t == shapes[0]);
                (same && (0..=r as isize).contains(&at)).then(|| {
                    let mut out = s.clone();
                    out.insert(at as usize, n);
                    out
                })
            } else {
                norm_axis(d, r).and_then(|i| {
                    let same = shapes.iter().all(|t| {
                        t.len() == r && t.iter().zip(&shapes[0]).enumerate().all(|(j, (a, b))| j == i || a == b)
                    });
                    same.then(|| {
                        let mut out = shapes[0].clone();
                        out[i] = shapes.iter().map(|t| t[i]).sum();
                        out
                    })
                })
            };
            let ops = shapes.iter().map(|t| f(t, rng.chance(0.3))).collect();
            let run: OpFn = Box::new(move |x| {
                let refs: Vec<&Tensor> = x.iter().collect();
                if stack {
                    Tensor::stack(&refs, d)
                } else {
                    Tensor::cat(&refs, d)
                }
            });
            mk(format!("{family}({shapes:?}, {d})"), ops, expect, run)
        }
        "index_select" => {
            let d = rng.axis(r);
            let size = norm_axis(d, r).map_or(3, |i| s[i]);
            let ir = rng.below(3);
            let ishape = rng.shape_of(ir);
            let (v, in_range) = ids_in(rng, &ishape, size);
            let expect = norm_axis(d, r).filter(|_| in_range).map(|i| {
                let mut out = s.clone();
                out[i] = v.len();
                out
            });
            let ops = vec![f(&s, nc), Operand::Ids(ishape, v)];
            let run: OpFn = Box::new(move |x| x[0].index_select(d, &x[1]));
            mk(format!("index_select({d})"), ops, expect, run)
        }
        "embedding" => {
            let table = if rng.chance(0.8) { rng.shape_of(2) } else { s };
            let ir = rng.below(3);
            let ishape = rng.shape_of(ir);
            let vocab = table.first().copied().unwrap_or(3);
            let (v, in_range) = ids_in(rng, &ishape, vocab);
            let expect = (table.len() == 2 && in_range).then(|| {
                let mut out = ishape.clone();
                out.push(table[1]);
                out
            });
            let ops = vec![f(&table, nc), Operand::Ids(ishape, v)];
            mk("embedding".into(), ops, expect, Box::new(|x| x[0].embedding(&x[1])))
        }
        "gather" | "scatter_add" => {
            let d = rng.axis(r);
            let size = norm_axis(d, r).map_or(3, |i| s[i]);
            let ishape = if rng.chance(0.85) {
                let mut t = s.clone();
                if let Some(i) = norm_axis(d, r) {
                    t[i] = rng.dim();
                }
                t
            } else {
                rng.partner(&s)
            };
            let (v, in_range) = ids_in(rng, &ishape, size);
            let src = if rng.chance(0.9) {
                ishape.clone()
            } else {
                rng.partner(&ishape)
            };
            // unigrad's rule: the indices equal `self` in every dimension but `dim`
            let fits = norm_axis(d, r).is_some_and(|i| {
                ishape.len() == r && ishape.iter().zip(&s).enumerate().all(|(j, (a, b))| j == i || a == b)
            });
            if family == "gather" {
                let expect = (fits && in_range).then(|| ishape.clone());
                let ops = vec![f(&s, nc), Operand::Ids(ishape, v)];
                let run: OpFn = Box::new(move |x| x[0].gather(d, &x[1]));
                mk(format!("gather({d})"), ops, expect, run)
            } else {
                let expect = (fits && in_range && src == ishape).then(|| s.clone());
                let ops = vec![f(&s, nc), Operand::Ids(ishape, v), f(&src, false)];
                let run: OpFn = Box::new(move |x| x[0].scatter_add(d, &x[1], &x[2]));
                mk(format!("scatter_add({d})"), ops, expect, run)
            }
        }
        "softmax" => {
            let d = rng.axis(r);
            let log = rng.chance(0.5);
            let run: OpFn = Box::new(move |x| if log { x[0].log_softmax(d) } else { x[0].softmax(d) });
            let name = if log { "log_softmax" } else { "softmax" };
            mk(
                format!("{name}({d})"),
                vec![f(&s, nc)],
                norm_axis(d, r).map(|_| s.clone()),
                run,
            )
        }
        "cross_entropy" => {
            let logits = if rng.chance(0.8) { rng.shape_of(2) } else { s };
            let n = if rng.chance(0.9) {
                logits.first().copied().unwrap_or(2)
            } else {
                rng.dim()
            };
            let tshape = if rng.chance(0.9) { vec![n] } else { rng.shape() };
            let c = logits.get(1).copied().unwrap_or(3);
            let (mut v, _) = ids_in(rng, &tshape, c);
            let ignore = rng.chance(0.5).then_some(-100i64);
            if let (Some(ig), false) = (ignore, v.is_empty()) {
                if rng.chance(0.5) {
                    let k = rng.below(v.len());
                    v[k] = ig;
                }
            }
            let in_range = v.iter().all(|&t| Some(t) == ignore || (0..c as i64).contains(&t));
            let smoothing = [0.0, 0.1, 1.0, 1.5, -0.1][rng.below(5)];
            let ok = logits.len() == 2
                && tshape.len() == 1
                && tshape[0] == logits[0]
                && in_range
                && (0.0..=1.0).contains(&smoothing);
            let ops = vec![f(&logits, nc), Operand::Ids(tshape, v)];
            let run: OpFn = Box::new(move |x| x[0].cross_entropy(&x[1], ignore, smoothing));
            let call = format!("cross_entropy(ignore = {ignore:?}, smoothing = {smoothing})");
            mk(call, ops, ok.then(Vec::new), run)
        }
        "sort" => {
            // argmax / argmin / argsort (i64 results, compared as the operands' dtype),
            // sort and topk (their values, differentiable)
            let d = rng.axis(r);
            let ax = norm_axis(d, r);
            let keepdim = rng.chance(0.5);
            let k = rng.below(4);
            let desc = rng.chance(0.5);
            let which = rng.below(5);
            let index_plan = |call: String, expect: Option<Vec<usize>>, run: OpFn| Plan {
                differentiable: false,
                ..mk(call, vec![f(&s, nc)], expect, run)
            };
            match which {
                0 | 1 => {
                    let max = which == 0;
                    let expect = ax.filter(|&i| s[i] > 0).map(|i| {
                        let mut out = s.clone();
                        if keepdim {
                            out[i] = 1;
                        } else {
                            out.remove(i);
                        }
                        out
                    });
                    let run: OpFn = Box::new(move |x| {
                        let i = if max {
                            x[0].argmax(d, keepdim)?
                        } else {
                            x[0].argmin(d, keepdim)?
                        };
                        i.to_dtype(x[0].dtype())
                    });
                    let name = if max { "argmax" } else { "argmin" };
                    index_plan(format!("{name}({d}, keepdim = {keepdim})"), expect, run)
                }
                2 => {
                    let run: OpFn = Box::new(move |x| x[0].argsort(d, desc)?.to_dtype(x[0].dtype()));
                    index_plan(format!("argsort({d}, {desc})"), ax.map(|_| s.clone()), run)
                }
                3 => {
                    let run: OpFn = Box::new(move |x| Ok(x[0].sort(d, desc)?.0));
                    mk(
                        format!("sort({d}, {desc})"),
                        vec![f(&s, nc)],
                        ax.map(|_| s.clone()),
                        run,
                    )
                }
                _ => {
                    let expect = ax.filter(|&i| k <= s[i]).map(|i| {
                        let mut out = s.clone();
                        out[i] = k;
                        out
                    });
                    let run: OpFn = Box::new(move |x| Ok(x[0].topk(k, d, desc, true)?.0));
                    mk(format!("topk({k}, {d}, {desc})"), vec![f(&s, nc)], expect, run)
                }
            }
        }
        "cumsum" => {
            let d = rng.axis(r);
            let run: OpFn = Box::new(move |x| x[0].cumsum(d));
            mk(
                format!("cumsum({d})"),
                vec![f(&s, nc)],
                norm_axis(d, r).map(|_| s.clone()),
                run,
            )
        }
        "masked_select" => {
            // a random normal mask: non-zero everywhere, so everything is selected
            let m = rng.partner(&s);
            let expect = broadcast(&s, &m).map(|b| vec![b.iter().product()]);
            let ops = vec![f(&s, nc), Operand::Plain(m)];
            mk(
                "masked_select".into(),
                ops,
                expect,
                Box::new(|x| x[0].masked_select(&x[1])),
            )
        }
        _ => {
            // layer_norm / rms_norm: weight and bias are [C] for C the last dimension
            let rms = family == "rms_norm";
            let c = s.last().copied();
            let pshape = |rng: &mut Rng| {
                if rng.chance(0.85) {
                    c.map_or_else(|| vec![rng.dim()], |c| vec![c])
                } else {
                    rng.shape()
                }
            };
            let w = rng.chance(0.6).then(|| pshape(rng));
            let b = (!rms && rng.chance(0.6)).then(|| pshape(rng));
            let eps = if rng.chance(0.1) { -1.0 } else { 1e-5 };
            let fits = |p: &Option<Vec<usize>>| p.as_ref().is_none_or(|p| c.is_some_and(|c| *p == [c]));
            let ok = r >= 1 && fits(&w) && fits(&b) && eps >= 0.0;
            let mut ops = vec![f(&s, nc)];
            ops.extend(w.iter().map(|p| f(p, false)));
            ops.extend(b.iter().map(|p| f(p, false)));
            let (hw, hb) = (w.is_some(), b.is_some());
            let run: OpFn = Box::new(move |x| {
                let wt = hw.then(|| &x[1]);
                let bt = hb.then(|| &x[1 + usize::from(hw)]);
                if rms {
                    x[0].rms_norm(wt, eps)
                } else {
                    x[0].layer_norm(wt, bt, eps)
                }
            });
            mk(
                format!("{family}(weight {w:?}, bias {b:?}, eps {eps})"),
                ops,
                ok.then_some(s),
                run,
            )
        }
    }
}

/// Make an operand: `(the grad leaf, if any; the tensor the op sees)`.
fn make(op: &Operand, dtype: DType, dev: &Device) -> Result<(Option<Tensor>, Tensor)> {
    Ok(match op {
        Operand::Float(shape, nc) => {
            let view = *nc && shape.len() >= 2;
            let mut leaf_shape = shape.clone();
            if view {
                let r = shape.len();
                leaf_shape.swap(r - 2, r - 1);
            }
            let leaf = Tensor::randn(&leaf_shape, dtype, dev)?.requires_grad();
            let x = if view { leaf.transpose(-2, -1)? } else { leaf.clone() };
            (Some(leaf), x)
        }
        Operand::Plain(shape) => (None, Tensor::randn(shape, dtype, dev)?),
        Operand::Ids(shape, v) => (None, Tensor::from_vec(v.clone(), shape, dev)?),
    })
}

/// Run one case: `Ok(None)` when it behaves as predicted, `Ok(Some(report))` otherwise.
pub fn check(p: &Plan, dtype: DType, dev: &Device) -> Result<Option<String>> {
    let made: Vec<(Option<Tensor>, Tensor)> = p.operands.iter().map(|o| make(o, dtype, dev)).collect::<Result<_>>()?;
    let xs: Vec<Tensor> = made.iter().map(|(_, x)| x.clone()).collect();
    let shapes: Vec<&[usize]> = xs.iter().map(Tensor::shape).collect();
    let what = format!("{} on {dtype} operands of shapes {shapes:?}", p.call);
    let run = || -> Result<Option<String>> {
        let out = match ((p.run)(&xs), &p.expect) {
            (Err(_), None) => return Ok(None),
            (Err(e), Some(want)) => return Ok(Some(format!("error `{e}`, predicted shape {want:?}"))),
            (Ok(out), None) => return Ok(Some(format!("returned shape {:?}, predicted an error", out.shape()))),
            (Ok(out), Some(want)) => {
                if out.shape() != want.as_slice() {
                    return Ok(Some(format!("returned shape {:?}, predicted {want:?}", out.shape())));
                }
                out
            }
        };
        let want_dtype = if p.call == "to_dtype" { out.dtype() } else { dtype };
        if out.dtype() != want_dtype {
            return Ok(Some(format!("returned dtype {}, operands are {dtype}", out.dtype())));
        }
        if !p.differentiable {
            return Ok(None);
        }
        if let Err(e) = out.sum_all().and_then(|l| l.backward()) {
            return Ok(Some(format!("backward failed: {e}")));
        }
        for (k, (leaf, _)) in made.iter().enumerate() {
            let Some(leaf) = leaf else { continue };
            match leaf.grad() {
                None => return Ok(Some(format!("operand {k} got no gradient"))),
                Some(g) if g.shape() != leaf.shape() || g.dtype() != leaf.dtype() => {
                    return Ok(Some(format!(
                        "operand {k} (leaf {:?} {}) got a gradient of shape {:?} {}",
                        leaf.shape(),
                        leaf.dtype(),
                        g.shape(),
                        g.dtype()
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(None)
    };
    Ok(match catch_unwind(AssertUnwindSafe(run)) {
        Ok(Ok(None)) => None,
        Ok(Ok(Some(m))) => Some(format!("{what}: {m}")),
        Ok(Err(e)) => Some(format!("{what}: test error {e}")),
        Err(payload) => Some(format!("{what}: PANIC {}", panic_message(&*payload))),
    })
}

/// [`CASES`] random cases on `dev` (fixed seed): no panic, errors and shapes as the
/// rules predict, gradients shaped and typed like their leaves. The draw must be
/// balanced: more than half the cases valid and more than a tenth invalid.
pub fn random_ops(dev: &Device) -> Result<()> {
    random_ops_of(dev, 0x1616_2026, FAMILIES)
}

/// [`random_ops`] over `families` from generator seed `seed`.
pub fn random_ops_of(dev: &Device, seed: u64, families: &[&str]) -> Result<()> {
    let mut rng = Rng::new(seed);
    let mut failures = Vec::new();
    let mut ops = std::collections::BTreeSet::<String>::new();
    let (mut ok, mut errors) = (0, 0);
    for _ in 0..CASES {
        let (dtype, other) = if rng.chance(0.5) {
            (DType::F32, DType::F64)
        } else {
            (DType::F64, DType::F32)
        };
        let p = plan(&mut rng, other, families);
        ops.insert(p.call.split('(').next().unwrap_or("").to_string());
        if p.expect.is_some() {
            ok += 1;
        } else {
            errors += 1;
        }
        if let Some(f) = check(&p, dtype, dev)? {
            failures.push(f);
        }
    }
    eprintln!(
        "props: {CASES} cases ({ok} predicted valid, {errors} predicted errors), {} ops",
        ops.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {CASES} random cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        errors > CASES / 10 && ok > CASES / 2,
        "{ok} valid and {errors} invalid cases: the generator is lopsided"
    );
    Ok(())
}

/// The checks are not vacuous: a wrong predicted shape, an unpredicted error, a missed
/// error and a panicking op are each reported, and a correct plan passes.
pub fn checks_catch_wrong_behaviour(dev: &Device) -> Result<()> {
    let plan = |expect: Option<Vec<usize>>, run: OpFn| Plan {
        call: "test".into(),
        operands: vec![Operand::Float(vec![2, 3], true)],
        expect,
        differentiable: true,
        run,
    };
    let sum1 = || -> OpFn { Box::new(|x| x[0].sum(&[1], false)) };
    assert_eq!(check(&plan(Some(vec![2]), sum1()), DType::F64, dev)?, None);
    let wrong = [
        plan(Some(vec![3]), sum1()),
        plan(None, sum1()),
        plan(Some(vec![2]), Box::new(|x| x[0].sum(&[2], false))),
        plan(Some(vec![2]), Box::new(|_| panic!("deliberate panic"))),
    ];
    for (k, p) in wrong.iter().enumerate() {
        let report = check(p, DType::F32, dev)?;
        assert!(report.is_some(), "wrong plan {k} passed");
    }
    Ok(())
}
