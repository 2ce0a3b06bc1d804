//! Checkpoint dtypes: files saved by PyTorch in f32, f64, f16 and bf16
//! (`scripts/torch-ckpt/gen.py`, data in `tests/data/torch_ckpt/`) load into the
//! reference LM with the casts reported and give PyTorch's logits; `save_as` writes
//! F16/BF16 with correct rounding at the edges (subnormals, max, overflow, inf, NaN).

mod common;

use unigrad_core::{DType, HostData};
use unigrad_nn::checkpoint::{self, FileDType, HostTensor, StateDict};
use unigrad_nn::{Linear, Module, NormKind, TransformerLm};

fn data(file: &str) -> String {
    format!("{}/tests/data/torch_ckpt/{file}", env!("CARGO_MANIFEST_DIR"))
}

fn lm(dtype: DType) -> TransformerLm {
    let cfg = common::mini_lm_config(NormKind::LayerNorm);
    let mut m = TransformerLm::new(cfg, dtype, &unigrad_cpu::cpu()).unwrap();
    m.eval();
    m
}

/// Load `model_<name>.safetensors` into a `dtype` model and return the largest
/// |ours - PyTorch| over the logits (PyTorch's computed in f64 from the file's values).
fn worst_logit_error(name: &str, dtype: DType, stored: &str) -> f64 {
    let m = lm(dtype);
    let rep = checkpoint::load(&m, data(&format!("model_{name}.safetensors"))).unwrap();
    assert!(rep.is_clean(), "{rep}");
    let n_tensors = checkpoint::state_tensors(&m).len();
    if stored == dtype.to_string() {
        assert!(rep.casts.is_empty(), "{rep}");
    } else {
        // every tensor of the LM is floating, so every one is cast and says so
        assert_eq!(rep.casts.len(), n_tensors, "{rep}");
        let want = format!(": file {stored} -> module {dtype}");
        assert!(rep.casts.iter().all(|c| c.ends_with(&want)), "{rep}");
        assert!(rep.to_string().contains("cast: "), "{rep}");
    }
    for (n, t) in checkpoint::state_tensors(&m) {
        assert_eq!(t.dtype(), dtype, "{n}");
    }
    let r = checkpoint::load_tensors(data("ref.safetensors")).unwrap();
    let dev = unigrad_cpu::cpu();
    let ids = r.tensors["ids"].to_tensor(&dev).unwrap();
    let got = m.forward(&ids, None).unwrap().to_vec_f64().unwrap();
    let want = r.tensors[&format!("logits_{name}")].data.to_f64();
    assert_eq!(got.len(), want.len());
    got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)
}

// Tolerances. The F32, F16 and BF16 files hold values that f32 represents exactly, so
// loading them into an f32 model loses nothing and the only error is our f32
// arithmetic against PyTorch's f64 reference: logits of size ~1 after two layers, a few
// dozen roundings of 6e-8 each, hence 2e-6 (the bound of nn/tests/torch_lm.rs). The F64
// file into an f32 model also rounds every weight once (relative 6e-8), which the same
// bound covers. The F64 file into an f64 model: f64 arithmetic, hence 1e-12.
const F32_TOL: f64 = 2e-6;

#[test]
fn pytorch_f32_file_matches() {
    let e = worst_logit_error("f32", DType::F32, "f32");
    assert!(e <= F32_TOL, "{e:e}");
}

#[test]
fn pytorch_f64_file_matches_in_f32_and_f64_models() {
    let e = worst_logit_error("f64", DType::F32, "f64");
    assert!(e <= F32_TOL, "f64 file, f32 model: {e:e}");
    let e = worst_logit_error("f64", DType::F64, "f64");
    assert!(e <= 1e-12, "f64 file, f64 model: {e:e}");
}

#[test]
fn pytorch_f16_file_matches() {
    let e = worst_logit_error("f16", DType::F32, "f16");
    assert!(e <= F32_TOL, "{e:e}");
}

#[test]
fn pytorch_bf16_file_matches() {
    let e = worst_logit_error("bf16", DType::F32, "bf16");
    assert!(e <= F32_TOL, "{e:e}");
}

#[test]
fn the_half_references_differ_from_the_f32_one_by_more_than_the_tolerance() {
    // so the half tests above could not pass by loading the f32 values
    let r = checkpoint::load_tensors(data("ref.safetensors")).unwrap();
    let f32_ref = r.tensors["logits_f32"].data.to_f64();
    for name in ["f16", "bf16"] {
        let d = r.tensors[&format!("logits_{name}")].data.to_f64();
        let gap = d.iter().zip(&f32_ref).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(gap > 10.0 * F32_TOL, "{name}: {gap:e}");
    }
}

fn column(values: &[f32], dtype: DType) -> Linear {
    let dev = unigrad_cpu::cpu();
    let l = Linear::new(1, values.len(), false, dtype, &dev).unwrap();
    let mut sd = StateDict::default();
    sd.tensors.insert(
        "weight".into(),
        HostTensor {
            shape: vec![values.len(), 1],
            data: HostData::F32(values.to_vec()),
            stored: FileDType::F32,
        },
    );
    checkpoint::apply_state(&l, &sd, true).unwrap();
    l
}

fn same(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g.is_nan() && w.is_nan()) || g.to_bits() == w.to_bits();
        assert!(ok, "[{i}]: got {g:e}, want {w:e}");
    }
}

/// Save `values` as `to`, read the file back: its dtype, its values, and a load into an
/// f32 and an f64 model (reported casts, values unchanged by the widening).
fn round_trip(values: &[f32], to: FileDType, want: &[f32]) {
    let dir = std::env::temp_dir().join(format!("unigrad-ckpt-half-{}-{to}", std::process::id()));
    let path = dir.join("w.safetensors");
    checkpoint::save_as(&column(values, DType::F32), &path, to).unwrap();
    let sd = checkpoint::load_tensors(&path).unwrap();
    let w = &sd.tensors["weight"];
    assert_eq!(w.stored, to);
    let got: Vec<f32> = w.data.to_f64().iter().map(|&x| x as f32).collect();
    same(&got, want);
    for dtype in [DType::F32, DType::F64] {
        let l = Linear::new(1, values.len(), false, dtype, &unigrad_cpu::cpu()).unwrap();
        let rep = checkpoint::load(&l, &path).unwrap();
        let cast = if to.to_string() == dtype.to_string() {
            vec![]
        } else {
            vec![format!("weight: file {to} -> module {dtype}")]
        };
        assert_eq!(rep.casts, cast);
        let got: Vec<f32> = l.weight.to_vec_f64().unwrap().iter().map(|&x| x as f32).collect();
        same(&got, want);
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn f16_edges_round_trip() {
    let sub = 2f32.powi(-24); // smallest f16 subnormal
    let values = [
        1.0,
        -0.0,
        65504.0,
        70000.0,
        sub,
        3.0 * sub,
        0.4 * sub,
        0.6 * sub,
        2f32.powi(-14),
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1.0 + 2f32.powi(-11),
        1.0 + 3.0 * 2f32.powi(-11),
    ];
    let want = [
        1.0,
        -0.0,
        65504.0,
        f32::INFINITY,
        sub,
        3.0 * sub,
        0.0,
        sub,
        2f32.powi(-14),
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1.0,
        1.0 + 2.0 * 2f32.powi(-10),
    ];
    round_trip(&values, FileDType::F16, &want);
}

#[test]
fn bf16_edges_round_trip() {
    let max = f32::from_bits(0x7f7f_0000); // largest finite bf16
    let sub = f32::from_bits(1 << 16); // smallest bf16 subnormal, 2^-133
    let values = [
        1.0,
        -0.0,
        max,
        f32::MAX,
        sub,
        3.0 * sub,
        0.4 * sub,
        1e-45,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1.0 + 2f32.powi(-8),
        1.0 + 3.0 * 2f32.powi(-8),
    ];
    let want = [
        1.0,
        -0.0,
        max,
        f32::INFINITY,
        sub,
        3.0 * sub,
        0.0,
        0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1.0,
        1.0 + 2.0 * 2f32.powi(-7),
    ];
    round_trip(&values, FileDType::BF16, &want);
}

#[test]
fn save_as_f64_and_f32_and_refusals() {
    let values = [1.5f32, -2.25, f32::MIN_POSITIVE];
    round_trip(&values, FileDType::F64, &values);
    // f32 into an f32 model is no cast: check directly
    let dir = std::env::temp_dir().join(format!("unigrad-ckpt-f32-{}", std::process::id()));
    let path = dir.join("w.safetensors");
    let l = column(&values, DType::F32);
    checkpoint::save_as(&l, &path, FileDType::F32).unwrap();
    let rep = checkpoint::load(&l, &path).unwrap();
    assert!(rep.is_clean() && rep.casts.is_empty(), "{rep}");
    let e = checkpoint::save_as(&l, &path, FileDType::I64).unwrap_err().to_string();
    assert!(e.contains("not i64"), "{e}");
    // a float file never loads into an integer slot, nor the reverse
    let emb = unigrad_nn::Embedding::new(3, 1, None, DType::F32, &unigrad_cpu::cpu()).unwrap();
    let mut sd = StateDict::default();
    sd.tensors.insert(
        "weight".into(),
        HostTensor {
            shape: vec![3, 1],
            data: HostData::I64(vec![1, 2, 3]),
            stored: FileDType::I64,
        },
    );
    let e = checkpoint::apply_state(&emb, &sd, true).unwrap_err().to_string();
    assert!(e.contains("weight: file [3, 1] i64 vs module [3, 1] f32"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
