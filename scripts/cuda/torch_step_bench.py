#!/usr/bin/env python3
"""One training step of bench/transformer_ref.py's model on the GPU: the PyTorch
reference for unigrad's `bench_step` example run on CUDA.

transformer_ref.py itself times on the CPU; this wrapper imports its model, loss
and batches unchanged, moves them to cuda:0 (TF32 off, as unigrad computes in plain
f32) and times forward + backward + AdamW with a device synchronisation per step.

  python3 scripts/cuda/torch_step_bench.py [--norm ln] [--steps 30] [--warmup 5]

Last stdout line: JSON with median_ms etc. Exits 3 when torch or a GPU is missing.
"""
import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--norm", default="ln")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    a = ap.parse_args()
    try:
        import torch
        import transformer_ref as ref
    except ImportError as e:
        print(f"torch_step_bench: {e}", file=sys.stderr)
        return 3
    if not torch.cuda.is_available():
        print("torch_step_bench: torch sees no CUDA device", file=sys.stderr)
        return 3
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    dev = torch.device("cuda:0")
    model = ref.TransformerLM(a.norm).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=ref.LR)
    batches = [(x.to(dev), y.to(dev)) for x, y in ref.random_batches(8, seed=1)]
    model.train()
    times, losses = [], []
    for i in range(a.warmup + a.steps):
        x, y = batches[i % len(batches)]
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = ref.lm_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        torch.cuda.synchronize()
        if i >= a.warmup:
            times.append((time.perf_counter() - t0) * 1e3)
        losses.append(loss.item())
    res = dict(cmd="train", device=torch.cuda.get_device_name(dev), norm=a.norm, impl="torch",
               loss_first=losses[0], loss_last=losses[-1], median_ms=statistics.median(times),
               min_ms=min(times), max_ms=max(times), n=len(times))
    print(f"torch_step_bench: median {res['median_ms']:.2f} ms/step on {res['device']}", file=sys.stderr)
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
