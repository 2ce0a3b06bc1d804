#!/usr/bin/env python3
"""Regenerate nn/tests/data/torch_ckpt/: one small reference LM saved by PyTorch in
each floating dtype, for nn/tests/torch_ckpt.rs (checkpoint dtype casts on load).

The model is a miniature of the reference LM (bench/transformer_ref.py, LayerNorm,
sizes shrunk as in nn/tests/data/torch_lm/make_fixture.py), built with seed 0.
Files written:
  model_{f32,f64,f16,bf16}.safetensors   its state_dict cast to that dtype by PyTorch
                                          (`safetensors.torch.save_file`)
  ref.safetensors                         ids: a [2, 8] int64 batch;
                                          logits_<dtype>: eval-mode logits of the model
                                          whose weights are exactly that file's values,
                                          computed in float64 (the reference)
Because each reference is computed in f64 from the file's own (rounded) values, a
loader that reproduces those values exactly differs from it only by its own arithmetic.

Usage: /tmp/venv-torch/bin/python scripts/torch-ckpt/gen.py   (needs torch, safetensors)
"""
import os
import sys

import torch
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OUT = os.path.join(ROOT, "nn", "tests", "data", "torch_ckpt")
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.argv = [sys.argv[0]]
import transformer_ref as R  # noqa: E402

R.VOCAB, R.D_MODEL, R.N_HEADS, R.D_FF, R.N_LAYERS, R.SEQ = 16, 8, 2, 16, 2, 8
DTYPES = {"f32": torch.float32, "f64": torch.float64, "f16": torch.float16, "bf16": torch.bfloat16}

os.makedirs(OUT, exist_ok=True)
torch.manual_seed(0)
model = R.TransformerLM("ln")
model.eval()
state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
g = torch.Generator().manual_seed(1)
ids = torch.randint(0, R.VOCAB, (2, R.SEQ), generator=g)
ref = {"ids": ids}
for name, dt in DTYPES.items():
    cast = {k: v.to(dt).contiguous() for k, v in state.items()}
    save_file(cast, os.path.join(OUT, f"model_{name}.safetensors"))
    m64 = R.TransformerLM("ln").double()
    m64.load_state_dict({k: v.to(torch.float64) for k, v in cast.items()})
    m64.eval()
    with torch.no_grad():
        ref[f"logits_{name}"] = m64(ids).contiguous()
save_file(ref, os.path.join(OUT, "ref.safetensors"))
print("wrote", sorted(os.listdir(OUT)))
