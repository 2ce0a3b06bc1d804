#!/usr/bin/env python3
"""Write the differential-test cases of unigrad against PyTorch.

Run offline, with any PyTorch that has ``torch.nn.functional.rms_norm`` (2.4 or later),
numpy and safetensors, from the repository root:

    python scripts/torch-diff/gen_cases.py            # writes tests/data/torch_diff.safetensors

The committed file was made with PyTorch 2.15.0 (CPU), numpy 2.4.6, safetensors 0.8.0;
the versions are recorded in the file's metadata (``generator``). The output is
deterministic for a given PyTorch version (numpy ``default_rng(16)``): the same tensors and
metadata, though the order of the entries in the file header may change from run to run.

The file is read by ``tests/src/diff.rs`` (the ``diff`` group of the shared suite), which
replays every case on every backend. Layout of the file:

- metadata ``cases``: a JSON list, one object per case::

      {"name": "add_bcast", "op": "add", "args": {...},
       "inputs": [{"name": "add_bcast.in0", "dtype": "f64", "view": [1, 0], "grad": true}, ...],
       "out": "add_bcast.out", "r": "add_bcast.r" | null,
       "grads": ["add_bcast.grad0", null, ...]}

  ``op`` names the unigrad op (the Rust replay maps it to the Tensor method of that
  name; ``args`` holds its parameters under the Rust argument names: ``axes``,
  ``keepdim``, ``dim``, ``p``, ``lo``/``hi``, ...).
- tensor ``<input name>``: the *leaf* data, f64 or i64. When ``view`` is a permutation
  the op's operand is ``leaf.permute(view)`` (a non-contiguous view) on both sides, and
  the recorded gradient is that of the leaf. ``view`` null: the leaf itself.
- ``<case>.out``: the forward output in f64 (comparisons as 1.0/0.0, as unigrad gives).
- ``<case>.r``: the weights ``R`` (same shape as the output, f64), and ``<case>.gradK``
  the gradient of ``sum(out * R)`` with respect to leaf ``K`` (zeros when PyTorch gives
  None for a differentiable input). Ops with a non-float output (comparisons) and
  non-differentiable inputs (indices, conditions, masks) have ``null`` there.
"""

import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
import safetensors
from safetensors.torch import save_file

torch.set_default_dtype(torch.float64)
RNG = np.random.default_rng(16)
NAN, INF = math.nan, math.inf

# Values at kinks, ties, NaN, ±inf, signed zero and large magnitudes.
SPECIAL = [-INF, -1e300, -1e15, -2.0, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 2.0, 1e15, 1e300, INF, NAN]
POSITIVE = [0.0, 1e-300, 1e-8, 0.5, 1.0, 4.0, 1e15, 1e300, INF, NAN]


def rand(*shape, lo=-2.0, hi=2.0):
    return RNG.uniform(lo, hi, size=shape)


def t64(a):
    return torch.tensor(np.asarray(a, dtype=np.float64))


def ids(a):
    return torch.tensor(np.asarray(a, dtype=np.int64))


# --- the ops, keyed by the unigrad op name -------------------------------------------

def reduce_axes(x, axes):
    # unigrad follows PyTorch: `axes = []` reduces every dimension
    return tuple(range(x.dim())) if len(axes) == 0 else tuple(axes)


def cross_entropy(x, t, a):
    ii = a.get("ignore_index")
    return F.cross_entropy(x, t, ignore_index=-100 if ii is None else ii,
                           label_smoothing=a.get("label_smoothing", 0.0))


OPS = {
    "neg": lambda xs, a: -xs[0],
    "exp": lambda xs, a: torch.exp(xs[0]),
    "log": lambda xs, a: torch.log(xs[0]),
    "sqrt": lambda xs, a: torch.sqrt(xs[0]),
    "rsqrt": lambda xs, a: torch.rsqrt(xs[0]),
    "abs": lambda xs, a: torch.abs(xs[0]),
    "relu": lambda xs, a: torch.relu(xs[0]),
    "tanh": lambda xs, a: torch.tanh(xs[0]),
    "sigmoid": lambda xs, a: torch.sigmoid(xs[0]),
    "gelu": lambda xs, a: F.gelu(xs[0]),
    "gelu_tanh": lambda xs, a: F.gelu(xs[0], approximate="tanh"),
    "sqr": lambda xs, a: torch.square(xs[0]),
    "recip": lambda xs, a: torch.reciprocal(xs[0]),
    "powf": lambda xs, a: torch.pow(xs[0], a["p"]),
    "affine": lambda xs, a: xs[0] * a["a"] + a["b"],
    "add_scalar": lambda xs, a: xs[0] + a["c"],
    "mul_scalar": lambda xs, a: xs[0] * a["c"],
    "sub_scalar": lambda xs, a: xs[0] - a["c"],
    "div_scalar": lambda xs, a: xs[0] / a["c"],
    "clamp": lambda xs, a: torch.clamp(xs[0], a["lo"], a["hi"]),
    "add": lambda xs, a: xs[0] + xs[1],
    "sub": lambda xs, a: xs[0] - xs[1],
    "mul": lambda xs, a: xs[0] * xs[1],
    "div": lambda xs, a: xs[0] / xs[1],
    "maximum": lambda xs, a: torch.maximum(xs[0], xs[1]),
    "minimum": lambda xs, a: torch.minimum(xs[0], xs[1]),
    "eq": lambda xs, a: xs[0] == xs[1],
    "ne": lambda xs, a: xs[0] != xs[1],
    "lt": lambda xs, a: xs[0] < xs[1],
    "le": lambda xs, a: xs[0] <= xs[1],
    "gt": lambda xs, a: xs[0] > xs[1],
    "ge": lambda xs, a: xs[0] >= xs[1],
    "eq_scalar": lambda xs, a: xs[0] == a["c"],
    "lt_scalar": lambda xs, a: xs[0] < a["c"],
    "le_scalar": lambda xs, a: xs[0] <= a["c"],
    "gt_scalar": lambda xs, a: xs[0] > a["c"],
    "ge_scalar": lambda xs, a: xs[0] >= a["c"],
    "where_cond": lambda xs, a: torch.where(xs[0] != 0, xs[1], xs[2]),
    "masked_fill": lambda xs, a: xs[0].masked_fill(xs[1] != 0, a["value"]),
    "dropout": lambda xs, a: F.dropout(xs[0], a["p"], training=False),
    "sum": lambda xs, a: torch.sum(xs[0], reduce_axes(xs[0], a["axes"]), keepdim=a["keepdim"]),
    "sum_all": lambda xs, a: torch.sum(xs[0]),
    "mean": lambda xs, a: torch.mean(xs[0], reduce_axes(xs[0], a["axes"]), keepdim=a["keepdim"]),
    "mean_all": lambda xs, a: torch.mean(xs[0]),
    "var": lambda xs, a: torch.var(xs[0], reduce_axes(xs[0], a["axes"]), keepdim=a["keepdim"],
                                   correction=1 if a["unbiased"] else 0),
    "max": lambda xs, a: torch.amax(xs[0], reduce_axes(xs[0], a["axes"]), keepdim=a["keepdim"]),
    "min": lambda xs, a: torch.amin(xs[0], reduce_axes(xs[0], a["axes"]), keepdim=a["keepdim"]),
    "sum_to": lambda xs, a: xs[0].sum_to_size(a["shape"]),
    "matmul": lambda xs, a: torch.matmul(xs[0], xs[1]),
    "reshape": lambda xs, a: xs[0].reshape(a["shape"]),
    "reshape_infer": lambda xs, a: xs[0].reshape(a["shape"]),
    "flatten": lambda xs, a: torch.flatten(xs[0], a["start"], a["end"]),
    "permute": lambda xs, a: xs[0].permute(a["perm"]),
    "transpose": lambda xs, a: xs[0].transpose(a["d0"], a["d1"]),
    "t": lambda xs, a: xs[0].transpose(-2, -1),
    "narrow": lambda xs, a: xs[0].narrow(a["dim"], a["start"], a["len"]),
    "unsqueeze": lambda xs, a: xs[0].unsqueeze(a["dim"]),
    "squeeze": lambda xs, a: xs[0].squeeze(a["dim"]),
    "broadcast_as": lambda xs, a: xs[0].expand(a["shape"]),
    "contiguous": lambda xs, a: xs[0].contiguous(),
    "cat": lambda xs, a: torch.cat(xs, a["dim"]),
    "stack": lambda xs, a: torch.stack(xs, a["dim"]),
    "to_dtype_f32": lambda xs, a: xs[0].to(torch.float32).to(torch.float64),
    "index_select": lambda xs, a: torch.index_select(xs[0], a["dim"], xs[1]),
    "embedding": lambda xs, a: F.embedding(xs[1], xs[0]),
    "gather": lambda xs, a: torch.gather(xs[0], a["dim"], xs[1]),
    "scatter_add": lambda xs, a: torch.scatter_add(xs[0], a["dim"], xs[1], xs[2]),
    "softmax": lambda xs, a: torch.softmax(xs[0], a["dim"]),
    "log_softmax": lambda xs, a: torch.log_softmax(xs[0], a["dim"]),
    "cross_entropy": lambda xs, a: cross_entropy(xs[0], xs[1], a),
    "layer_norm": lambda xs, a: F.layer_norm(
        xs[0], [xs[0].shape[-1]],
        xs[1] if a["weight"] else None,
        xs[1 + a["weight"]] if a["bias"] else None, a["eps"]),
    "rms_norm": lambda xs, a: F.rms_norm(xs[0], [xs[0].shape[-1]], xs[1] if a["weight"] else None, a["eps"]),
}

CASES = []
TENSORS = {}


def encode(v):
    """JSON has no NaN or infinity: non-finite floats become the strings "nan", "inf", "-inf"."""
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {k: encode(x) for k, x in v.items()}
    if isinstance(v, list):
        return [encode(x) for x in v]
    return v


def case(name, op, inputs, args=None, views=None, nograd=()):
    """Record one case. `inputs`: leaf tensors (float or int64). `views[k]`: permutation
    applied to leaf k before the op. `nograd`: indices of float inputs that are not
    differentiated (conditions, masks)."""
    assert name not in {c["name"] for c in CASES}, name
    args = args or {}
    views = views or {}
    leaves, xs, meta = [], [], []
    for k, leaf in enumerate(inputs):
        is_float = leaf.dtype == torch.float64
        g = is_float and k not in nograd
        leaf = leaf.detach().clone().requires_grad_(g)
        x = leaf.permute(views[k]) if k in views else leaf
        leaves.append(leaf)
        xs.append(x)
        key = f"{name}.in{k}"
        TENSORS[key] = leaf.detach().clone().contiguous()
        meta.append({"name": key, "dtype": "f64" if is_float else "i64",
                     "view": views.get(k), "grad": g})
    out = OPS[op](xs, args)
    rec = {"name": name, "op": op, "args": encode(args), "inputs": meta,
           "out": f"{name}.out", "r": None, "grads": [None] * len(inputs)}
    TENSORS[rec["out"]] = out.detach().to(torch.float64).clone().contiguous()
    if out.dtype == torch.float64 and any(m["grad"] for m in meta):
        r = t64(RNG.uniform(-1.5, 1.5, size=tuple(out.shape)).round(3))
        (out * r).sum().backward()
        rec["r"] = f"{name}.r"
        TENSORS[rec["r"]] = r
        for k, leaf in enumerate(leaves):
            if meta[k]["grad"]:
                g = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
                rec["grads"][k] = f"{name}.grad{k}"
                TENSORS[rec["grads"][k]] = g.detach().clone().contiguous()
    CASES.append(rec)


def build():
    # ---- unary maps: random (non-contiguous), special values, empty --------------
    domain = {"log": (0.1, 3.0), "sqrt": (0.1, 3.0), "rsqrt": (0.1, 3.0), "recip": (0.3, 3.0)}
    for op in ["neg", "exp", "log", "sqrt", "rsqrt", "abs", "relu", "tanh", "sigmoid",
               "gelu", "gelu_tanh", "sqr", "recip"]:
        lo, hi = domain.get(op, (-3.0, 3.0))
        case(f"{op}_rand_noncontig", op, [t64(rand(4, 3, lo=lo, hi=hi))], views={0: [1, 0]})
        case(f"{op}_special", op, [t64(SPECIAL)])
        if op in domain:
            case(f"{op}_special_pos", op, [t64(POSITIVE)])
        case(f"{op}_empty", op, [t64(np.zeros((0, 3)))])
        case(f"{op}_scalar", op, [t64(rand(lo=lo, hi=hi))])
    for p in [2.0, 3.0, 0.5, -1.5, 0.0, 1.0]:
        tag = str(p).replace(".", "_").replace("-", "m")
        case(f"powf_{tag}_rand", "powf", [t64(rand(2, 3, lo=0.2, hi=2.0))], {"p": p})
        case(f"powf_{tag}_special", "powf", [t64(POSITIVE + [-1.0, -2.0, -INF])], {"p": p})
    case("affine_rand", "affine", [t64(rand(2, 3))], {"a": -1.5, "b": 0.25})
    case("affine_special", "affine", [t64(SPECIAL)], {"a": 2.0, "b": -1.0})
    for op, c in [("add_scalar", 1.25), ("mul_scalar", -3.0), ("sub_scalar", 0.5), ("div_scalar", 4.0)]:
        case(f"{op}_rand_noncontig", op, [t64(rand(3, 2))], {"c": c}, views={0: [1, 0]})
        case(f"{op}_special", op, [t64(SPECIAL)], {"c": c})
    case("mul_scalar_inf", "mul_scalar", [t64([0.0, 1.0, -1.0])], {"c": INF})
    case("div_scalar_zero", "div_scalar", [t64([0.0, 1.0, -1.0])], {"c": 0.0})
    case("clamp_rand", "clamp", [t64(rand(3, 4))], {"lo": -0.5, "hi": 0.75})
    case("clamp_special", "clamp", [t64(SPECIAL)], {"lo": -1.0, "hi": 1.0})
    case("clamp_kinks", "clamp", [t64([-1.0, -0.5, 0.0, 0.75, 1.0])], {"lo": -0.5, "hi": 0.75})
    case("clamp_lo_eq_hi", "clamp", [t64([-1.0, 0.5, 2.0])], {"lo": 0.5, "hi": 0.5})
    case("dropout_eval", "dropout", [t64(rand(2, 3))], {"p": 0.5, "train": False})

    # ---- binary maps with broadcasting --------------------------------------------
    for op in ["add", "sub", "mul", "div", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge"]:
        case(f"{op}_same", op, [t64(rand(2, 3)), t64(rand(2, 3))])
        case(f"{op}_bcast_noncontig", op, [t64(rand(4, 3, 2)), t64(rand(3, 1))], views={0: [2, 1, 0]})
        case(f"{op}_bcast_both", op, [t64(rand(2, 1, 4)), t64(rand(3, 1))])
        case(f"{op}_scalar_rank0", op, [t64(rand(2, 3)), t64(rand())])
        case(f"{op}_empty", op, [t64(np.zeros((0, 3))), t64(rand(1, 3))])
        a = np.array(SPECIAL)
        sa, sb = np.repeat(a, len(a)), np.tile(a, len(a))
        if op in ("maximum", "minimum"):
            # ties have their own case (unigrad sends a tie's gradient to `a`, PyTorch halves it)
            keep = ~(sa == sb)
            sa, sb = sa[keep], sb[keep]
        case(f"{op}_special", op, [t64(sa), t64(sb)])
        case(f"{op}_ties", op, [t64([1.0, -2.0, 0.0, 3.5]), t64([1.0, -2.0, -0.0, 3.5])])
    for op, c in [("eq_scalar", 0.5), ("lt_scalar", 0.5), ("le_scalar", 0.5), ("gt_scalar", 0.5),
                  ("ge_scalar", 0.5)]:
        case(f"{op}_special", op, [t64(SPECIAL)], {"c": c})
    case("eq_scalar_nan", "eq_scalar", [t64(SPECIAL)], {"c": NAN})
    case("where_cond_bcast", "where_cond",
         [t64([[1.0], [0.0], [NAN]]), t64(rand(4, 3, 2)), t64(rand(4))], views={1: [2, 1, 0]}, nograd=(0,))
    case("where_cond_special", "where_cond", [t64([1.0, 0.0, -0.0, -1.0]), t64([NAN, INF, 1.0, 2.0]),
                                             t64([3.0, NAN, -INF, 4.0])], nograd=(0,))
    case("masked_fill_bcast", "masked_fill", [t64(rand(2, 3)), t64([0.0, 1.0, 0.0])], {"value": 7.5},
         nograd=(1,))
    case("masked_fill_neg_inf", "masked_fill", [t64(rand(3, 2)), t64([[1.0], [0.0], [2.0]])],
         {"value": -INF}, nograd=(1,))

    # ---- reductions -----------------------------------------------------------------
    x = rand(4, 3, 2)
    for op in ["sum", "mean", "max", "min"]:
        for axes in [[0], [-1], [0, 2], [1, 0], [0, 1, 2]]:
            for keepdim in [False, True]:
                tag = "_".join(str(a).replace("-", "m") for a in axes)
                case(f"{op}_ax{tag}_{'keep' if keepdim else 'drop'}", op, [t64(x)],
                     {"axes": axes, "keepdim": keepdim}, views={0: [2, 1, 0]})
        case(f"{op}_axes_empty", op, [t64(rand(2, 3))], {"axes": [], "keepdim": False})
        case(f"{op}_axes_empty_keep", op, [t64(rand(2, 3))], {"axes": [], "keepdim": True})
        case(f"{op}_rank0", op, [t64(rand())], {"axes": [], "keepdim": False})
        case(f"{op}_special", op, [t64([[1.0, NAN, 2.0], [INF, 1.0, -1.0], [-INF, INF, 0.0],
                                        [1e300, 1e300, -1e300]])], {"axes": [1], "keepdim": False})
        case(f"{op}_size1", op, [t64(rand(3, 1, 2))], {"axes": [1], "keepdim": False})
    for op in ["sum", "mean"]:
        case(f"{op}_empty_axis", op, [t64(np.zeros((2, 0, 3)))], {"axes": [1], "keepdim": False})
        case(f"{op}_empty_other_axis", op, [t64(np.zeros((2, 0, 3)))], {"axes": [2], "keepdim": True})
    for op in ["max", "min"]:
        case(f"{op}_ties", op, [t64([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0]])], {"axes": [1], "keepdim": False})
        case(f"{op}_ties_all", op, [t64([[1.0, 3.0], [3.0, -4.0]])], {"axes": [0, 1], "keepdim": True})
        case(f"{op}_empty_other_axis", op, [t64(np.zeros((0, 3)))], {"axes": [1], "keepdim": False})
    case("sum_all_noncontig", "sum_all", [t64(rand(3, 4))], views={0: [1, 0]})
    case("sum_all_empty", "sum_all", [t64(np.zeros((0, 4)))])
    case("sum_all_big", "sum_all", [t64([1e300, 1e300, -1e300, 1e-300])])
    case("mean_all_rand", "mean_all", [t64(rand(2, 5))])
    case("mean_all_empty", "mean_all", [t64(np.zeros((3, 0)))])
    for unbiased in [False, True]:
        u = "unbiased" if unbiased else "biased"
        case(f"var_{u}_ax1", "var", [t64(rand(3, 4))], {"axes": [1], "keepdim": False, "unbiased": unbiased})
        case(f"var_{u}_ax02_keep", "var", [t64(rand(4, 3, 2))], {"axes": [0, 2], "keepdim": True,
                                                                  "unbiased": unbiased}, views={0: [2, 1, 0]})
        case(f"var_{u}_all", "var", [t64(rand(2, 3))], {"axes": [], "keepdim": False, "unbiased": unbiased})
        case(f"var_{u}_big", "var", [t64([[1e15 + 1, 1e15 - 1, 1e15]])], {"axes": [1], "keepdim": False,
                                                                        "unbiased": unbiased})
    case("sum_to_rows", "sum_to", [t64(rand(2, 3, 4))], {"shape": [3, 1]})
    case("sum_to_scalar_like", "sum_to", [t64(rand(2, 3))], {"shape": [1]})
    case("sum_to_noncontig", "sum_to", [t64(rand(4, 3))], {"shape": [4]}, views={0: [1, 0]})

    # ---- matmul ---------------------------------------------------------------------
    case("matmul_2d", "matmul", [t64(rand(3, 4)), t64(rand(4, 5))])
    case("matmul_transposed", "matmul", [t64(rand(4, 3)), t64(rand(5, 4))], views={0: [1, 0], 1: [1, 0]})
    case("matmul_batched", "matmul", [t64(rand(2, 3, 4)), t64(rand(2, 4, 5))])
    case("matmul_bcast_batch", "matmul", [t64(rand(2, 1, 3, 4)), t64(rand(3, 4, 2))])
    case("matmul_3d_2d", "matmul", [t64(rand(2, 3, 4)), t64(rand(4, 5))])
    case("matmul_3d_2d_noncontig", "matmul", [t64(rand(4, 2, 3)), t64(rand(4, 5))], views={0: [1, 2, 0]})
    case("matmul_2d_3d", "matmul", [t64(rand(3, 4)), t64(rand(2, 4, 5))])
    case("matmul_k0", "matmul", [t64(np.zeros((3, 0))), t64(np.zeros((0, 2)))])
    case("matmul_m0", "matmul", [t64(np.zeros((2, 0, 4))), t64(rand(4, 3))])
    case("matmul_batch0", "matmul", [t64(np.zeros((0, 2, 3))), t64(rand(3, 2))])
    case("matmul_size1", "matmul", [t64(rand(1, 1)), t64(rand(1, 3))])
    case("matmul_big", "matmul", [t64(rand(2, 3) * 1e150), t64(rand(3, 2) * 1e150)])
    case("matmul_special", "matmul", [t64([[1.0, INF], [0.0, 1.0]]), t64([[1.0, 2.0], [NAN, 0.0]])])

    # ---- views, cat, stack, dtype ---------------------------------------------------
    case("reshape_noncontig", "reshape", [t64(rand(4, 3))], {"shape": [2, 6]}, views={0: [1, 0]})
    case("reshape_to_rank0", "reshape", [t64(rand(1, 1))], {"shape": []})
    case("reshape_empty", "reshape", [t64(np.zeros((0, 4)))], {"shape": [2, 0, 2]})
    case("reshape_infer", "reshape_infer", [t64(rand(2, 6))], {"shape": [3, -1]})
    case("flatten_mid", "flatten", [t64(rand(2, 3, 4, 2))], {"start": 1, "end": 2}, views={0: [0, 2, 1, 3]})
    case("flatten_all", "flatten", [t64(rand(2, 3))], {"start": 0, "end": -1})
    case("permute_3d", "permute", [t64(rand(2, 3, 4))], {"perm": [2, 0, 1]})
    case("transpose_neg", "transpose", [t64(rand(2, 3, 4))], {"d0": -1, "d1": 0})
    case("t_batched", "t", [t64(rand(2, 3, 4))])
    case("narrow_mid", "narrow", [t64(rand(5, 3))], {"dim": 1, "start": 1, "len": 3}, views={0: [1, 0]})
    case("narrow_empty", "narrow", [t64(rand(2, 5))], {"dim": -1, "start": 5, "len": 0})
    case("unsqueeze_end", "unsqueeze", [t64(rand(2, 3))], {"dim": -1})
    case("unsqueeze_rank0", "unsqueeze", [t64(rand())], {"dim": 0})
    case("squeeze_mid", "squeeze", [t64(rand(2, 1, 3))], {"dim": 1})
    case("broadcast_as_expand", "broadcast_as", [t64(rand(3, 1))], {"shape": [2, 3, 4]})
    case("broadcast_as_empty", "broadcast_as", [t64(rand(1, 3))], {"shape": [0, 3]})
    case("contiguous_noncontig", "contiguous", [t64(rand(4, 3, 2))], views={0: [2, 0, 1]})
    case("cat_dim1", "cat", [t64(rand(2, 3)), t64(np.zeros((2, 0))), t64(rand(3, 2))], {"dim": 1},
         views={2: [1, 0]})
    case("cat_dim0_neg", "cat", [t64(rand(1, 2, 2)), t64(rand(3, 2, 2))], {"dim": -3})
    case("cat_one", "cat", [t64(rand(2, 2))], {"dim": 0})
    case("stack_dim_last", "stack", [t64(rand(2, 3)), t64(rand(3, 2))], {"dim": 2}, views={1: [1, 0]})
    case("stack_dim0", "stack", [t64(rand(3)), t64(rand(3)), t64(rand(3))], {"dim": 0})
    case("stack_empty", "stack", [t64(np.zeros((0, 2))), t64(np.zeros((0, 2)))], {"dim": 1})
    case("to_dtype_f32_roundtrip", "to_dtype_f32", [t64([0.1, 1.0 / 3.0, 1e300, -1e-300, INF, NAN, 16777217.0])])

    # ---- indexing -------------------------------------------------------------------
    case("index_select_dim0_repeat", "index_select", [t64(rand(4, 3)), ids([3, 0, 3, 1, 3])], {"dim": 0})
    case("index_select_dim1_noncontig", "index_select", [t64(rand(3, 4)), ids([2, 2, 0])], {"dim": -1},
         views={0: [1, 0]})
    case("index_select_empty", "index_select", [t64(rand(4, 3)), ids(np.zeros(0))], {"dim": 0})
    case("embedding_2d_ids", "embedding", [t64(rand(5, 3)), ids([[0, 4, 4], [1, 0, 4]])])
    case("embedding_rank0_ids", "embedding", [t64(rand(5, 3)), ids(2)])
    case("gather_dim1", "gather", [t64(rand(3, 4)), ids([[0, 3, 3], [1, 1, 1], [2, 0, 3]])], {"dim": 1})
    case("gather_dim0_noncontig", "gather", [t64(rand(4, 3)), ids([[2, 0, 1, 1], [2, 2, 1, 0]])], {"dim": 0},
         views={0: [1, 0]})
    case("scatter_add_dim0", "scatter_add",
         [t64(rand(3, 2)), ids([[0, 2], [0, 2], [1, 0], [0, 0]]), t64(rand(4, 2))], {"dim": 0})
    case("scatter_add_dim1", "scatter_add", [t64(rand(2, 4)), ids([[3, 3, 0], [1, 2, 1]]), t64(rand(2, 3))],
         {"dim": -1})

    # ---- softmax family ---------------------------------------------------------------
    for op in ["softmax", "log_softmax"]:
        case(f"{op}_last", op, [t64(rand(3, 5))], {"dim": -1})
        case(f"{op}_dim0_noncontig", op, [t64(rand(4, 3, 2))], {"dim": 0}, views={0: [1, 2, 0]})
        case(f"{op}_size1", op, [t64(rand(3, 1))], {"dim": 1})
        case(f"{op}_neg_inf", op, [t64([[0.0, -INF, 1.0], [-INF, -INF, 2.0]])], {"dim": -1})
        case(f"{op}_large", op, [t64([[1e15, 1e15 + 2.0, 1e15 - 3.0], [-1e15, -1e15 + 1, -1e15 + 0.5]])],
             {"dim": -1})
        case(f"{op}_logits_100", op, [t64([[100.0, 80.0, 60.0, 0.0]])], {"dim": -1})
        case(f"{op}_nan", op, [t64([[0.0, NAN, 1.0], [1.0, 2.0, 3.0]])], {"dim": -1})
        case(f"{op}_all_neg_inf", op, [t64([[-INF, -INF], [0.0, 1.0]])], {"dim": -1})
        case(f"{op}_empty_rows", op, [t64(np.zeros((0, 3)))], {"dim": -1})
    tg = ids([1, 0, 3, 3, 2])
    logits = rand(5, 4) * 3
    ce = lambda n, a, x=logits, t=tg: case(n, "cross_entropy", [t64(x), t], a)
    ce("cross_entropy_plain", {"ignore_index": None, "label_smoothing": 0.0})
    ce("cross_entropy_ignore", {"ignore_index": 3, "label_smoothing": 0.0})
    ce("cross_entropy_smooth", {"ignore_index": None, "label_smoothing": 0.1})
    ce("cross_entropy_ignore_smooth", {"ignore_index": 3, "label_smoothing": 0.25})
    ce("cross_entropy_ignore_negative", {"ignore_index": -1, "label_smoothing": 0.0},
       t=ids([1, -1, 3, -1, 2]))
    ce("cross_entropy_large", {"ignore_index": None, "label_smoothing": 0.1},
       x=np.array([[1e15, 1e15 + 2.0, 1e15 - 3.0, 1e15]] * 5))
    ce("cross_entropy_all_ignored", {"ignore_index": 3, "label_smoothing": 0.0}, t=ids([3, 3, 3, 3, 3]))
    case("cross_entropy_one_class", "cross_entropy", [t64(rand(3, 1)), ids([0, 0, 0])],
         {"ignore_index": None, "label_smoothing": 0.2})

    # ---- fused norms ------------------------------------------------------------------
    for w in [False, True]:
        for b in [False, True]:
            ins = [t64(rand(2, 3, 5))] + ([t64(rand(5))] if w else []) + ([t64(rand(5))] if b else [])
            case(f"layer_norm_w{int(w)}_b{int(b)}", "layer_norm", ins, {"weight": w, "bias": b, "eps": 1e-5})
        ins = [t64(rand(2, 3, 5))] + ([t64(rand(5))] if w else [])
        case(f"rms_norm_w{int(w)}", "rms_norm", ins, {"weight": w, "eps": 1e-6})
    case("layer_norm_noncontig", "layer_norm", [t64(rand(5, 3)), t64(rand(5)), t64(rand(5))],
         {"weight": True, "bias": True, "eps": 1e-5}, views={0: [1, 0]})
    case("layer_norm_constant_row", "layer_norm", [t64([[2.0, 2.0, 2.0], [1.0, 2.0, 3.0]])],
         {"weight": False, "bias": False, "eps": 1e-5})
    case("layer_norm_width1", "layer_norm", [t64(rand(3, 1))], {"weight": False, "bias": False, "eps": 1e-5})
    case("layer_norm_eps0", "layer_norm", [t64(rand(2, 4))], {"weight": False, "bias": False, "eps": 0.0})
    case("layer_norm_big_offset", "layer_norm", [t64(rand(2, 4) + 1e4)], {"weight": False, "bias": False,
                                                                           "eps": 1e-5})
    case("rms_norm_zero_row", "rms_norm", [t64([[0.0, 0.0, 0.0], [1.0, -2.0, 3.0]])], {"weight": False,
                                                                                       "eps": 1e-6})
    case("rms_norm_noncontig", "rms_norm", [t64(rand(4, 2)), t64(rand(4))], {"weight": True, "eps": 1e-6},
         views={0: [1, 0]})


def main():
    build()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = os.path.join(root, "tests", "data", "torch_diff.safetensors")
    gen = {"script": "scripts/torch-diff/gen_cases.py", "torch": torch.__version__,
           "numpy": np.__version__, "safetensors": safetensors.__version__,
           "python": sys.version.split()[0]}
    meta = {"cases": json.dumps(CASES, separators=(",", ":"), allow_nan=False), "generator": json.dumps(gen)}
    save_file(TENSORS, out, metadata=meta)
    ops = sorted({c["op"] for c in CASES})
    print(f"{len(CASES)} cases, {len(ops)} ops, {len(TENSORS)} tensors, "
          f"{os.path.getsize(out)} bytes -> {out}")


if __name__ == "__main__":
    main()
