#!/usr/bin/env python3
"""Regenerate torch_lm_{ln,bn}.safetensors: a miniature of the reference PyTorch LM
(bench/transformer_ref.py, sizes shrunk), saved by PyTorch, for nn/tests/torch_lm.rs.

Each file holds, under prefixes:
  init.*   the model's state_dict right after construction (seed 0)
  ids, targets                 a [2, 8] batch (int64)
  logits_train                 forward in train mode (BatchNorm uses batch statistics)
  loss                         cross-entropy of logits_train, shape [1]
  step.*   the state_dict after loss.backward() and one AdamW step (lr 1e-2, torch defaults:
           betas (0.9, 0.999), eps 1e-8, weight_decay 0.01 on every parameter)
  logits_eval                  forward of the stepped model in eval mode
The BatchNorm model is saved with the reference's `normX.bn.` wrapper names replaced by
`normX.` (a plain BatchNorm1d at that position).

Usage: python make_fixture.py   (needs torch and safetensors; run from anywhere)
"""
import os
import sys

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "..", "bench"))
sys.argv = [sys.argv[0]]
import transformer_ref as R  # noqa: E402

R.VOCAB, R.D_MODEL, R.N_HEADS, R.D_FF, R.N_LAYERS, R.SEQ = 16, 8, 2, 16, 2, 8

for norm in ("ln", "bn"):
    torch.manual_seed(0)
    m = R.TransformerLM(norm)
    fix = lambda sd: {k.replace(".bn.", "."): v.detach().clone().contiguous() for k, v in sd.items()}
    out = {f"init.{k}": v for k, v in fix(m.state_dict()).items()}
    g = torch.Generator().manual_seed(1)
    data = torch.randint(0, R.VOCAB, (2, R.SEQ + 1), generator=g)
    ids, targets = data[:, :-1].contiguous(), data[:, 1:].contiguous()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    m.train()
    logits = m(ids)
    loss = R.lm_loss(logits, targets)
    opt.zero_grad()
    loss.backward()
    opt.step()
    out.update({f"step.{k}": v for k, v in fix(m.state_dict()).items()})
    m.eval()
    with torch.no_grad():
        out["logits_eval"] = m(ids).contiguous()
    out.update(ids=ids, targets=targets, logits_train=logits.detach().contiguous(), loss=loss.detach().reshape(1))
    save_file(out, os.path.join(HERE, f"torch_lm_{norm}.safetensors"))
    print(norm, "loss", loss.item())
