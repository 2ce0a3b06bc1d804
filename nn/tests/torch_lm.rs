//! Cross-check against PyTorch: a miniature of the reference LM (`bench/transformer_ref.py`)
//! saved by PyTorch (`tests/data/torch_lm/make_fixture.py`) loads into `TransformerLm`
//! under the same names, gives the same logits and loss, and one AdamW step lands on the
//! same parameters and BatchNorm running statistics.

mod common;

use std::collections::BTreeMap;
use unigrad_core::{DType, Tensor};
use unigrad_nn::checkpoint::{self, StateDict};
use unigrad_nn::{Adam, AdamConfig, Module, NormKind, Optimizer, ParamGroup, TransformerLm};

fn fixture(norm: &str) -> StateDict {
    let path = format!(
        "{}/tests/data/torch_lm/torch_lm_{norm}.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    checkpoint::load_tensors(path).unwrap()
}

fn with_prefix(sd: &StateDict, prefix: &str) -> StateDict {
    StateDict {
        tensors: sd
            .tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), v.clone())))
            .collect::<BTreeMap<_, _>>(),
        metadata: Default::default(),
    }
}

fn get(sd: &StateDict, name: &str) -> Tensor {
    sd.tensors[name].to_tensor(&unigrad_cpu::cpu()).unwrap()
}

fn assert_close(what: &str, got: &[f64], want: &[f64], atol: f64) {
    assert_eq!(got.len(), want.len(), "{what}");
    let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(worst <= atol, "{what}: max |ours - torch| = {worst:e} > {atol:e}");
}

fn check(norm: &str, kind: NormKind) {
    let dev = unigrad_cpu::cpu();
    let sd = fixture(norm);
    let cfg = common::mini_lm_config(kind);
    let mut m = TransformerLm::new(cfg, DType::F32, &dev).unwrap();
    let rep = checkpoint::apply_state(&m, &with_prefix(&sd, "init."), true).unwrap();
    assert!(rep.is_clean(), "{rep}");
    let (ids, targets) = (get(&sd, "ids"), get(&sd, "targets"));
    let logits = m.forward(&ids, None).unwrap();
    assert_close(
        &format!("{norm} train logits"),
        &logits.to_vec_f64().unwrap(),
        &get(&sd, "logits_train").to_vec_f64().unwrap(),
        2e-6,
    );
    let loss = unigrad_nn::cross_entropy(&logits, &targets, None, 0.0).unwrap();
    assert_close(
        &format!("{norm} loss"),
        &[loss.to_scalar().unwrap()],
        &get(&sd, "loss").to_vec_f64().unwrap(),
        2e-6,
    );
    // torch.optim.AdamW(lr=1e-2) defaults: weight decay 0.01 on every parameter
    let mut opt = Adam::new(vec![ParamGroup::new(m.named_params(), 0.01)], AdamConfig::adamw(1e-2)).unwrap();
    opt.zero_grad();
    loss.backward().unwrap();
    opt.step().unwrap();
    let stepped = with_prefix(&sd, "step.");
    for (name, t) in checkpoint::state_tensors(&m) {
        let want = stepped
            .tensors
            .get(&name)
            .unwrap_or_else(|| panic!("{name} not in the fixture"));
        let (mut got, mut want) = (t.to_vec_f64().unwrap(), want.data.to_f64());
        // Some entries have an exact gradient of 0 by invariance, so both frameworks hold
        // rounding noise (~1e-9) there, and AdamW's first step, lr·g/(|g| + eps), turns
        // noise that small into a move of up to lr in a noise-given direction. Skip them:
        // * the key bias: it adds the same q·b to every score of a row, which softmax ignores;
        // * with BatchNorm, every bias that adds a constant to all tokens of the residual
        //   stream (value bias, proj and ff2 biases): each later norm subtracts the batch
        //   mean over tokens, so the loss cannot see it.
        let d = cfg.d_model;
        let skip = if name.ends_with("attn.qkv.bias") {
            if kind == NormKind::BatchNorm {
                d..3 * d
            } else {
                d..2 * d
            }
        } else if kind == NormKind::BatchNorm && (name.ends_with("attn.proj.bias") || name.ends_with("ff2.bias")) {
            0..got.len()
        } else {
            0..0
        };
        got.drain(skip.clone());
        want.drain(skip);
        assert_close(&format!("{norm} after one AdamW step: {name}"), &got, &want, 2e-5);
    }
    // eval mode (BatchNorm on running statistics) from exactly PyTorch's stepped state,
    // so the noise-driven entries skipped above cannot matter
    checkpoint::apply_state(&m, &stepped, true).unwrap();
    m.eval();
    assert_close(
        &format!("{norm} eval logits after the step"),
        &m.forward(&ids, None).unwrap().to_vec_f64().unwrap(),
        &get(&sd, "logits_eval").to_vec_f64().unwrap(),
        2e-6,
    );
}

#[test]
fn layernorm_lm_matches_pytorch() {
    check("ln", NormKind::LayerNorm);
}

#[test]
fn batchnorm_lm_matches_pytorch() {
    check("bn", NormKind::BatchNorm);
}
