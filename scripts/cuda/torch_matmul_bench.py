#!/usr/bin/env python3
"""f32 GEMM throughput of torch.matmul on the GPU, TF32 off: the reference for
unigrad-cuda's `matmul_bench` example (same sizes, same timing method).

  python3 scripts/cuda/torch_matmul_bench.py [N ...]     # default 1024 4096 8192

Prints one JSON object per size: {"n": 1024, "gflops": ..., "ms": ..., "impl": "torch"}.
Exits 3 (with a message on stderr) when torch or a CUDA device is missing.
"""
import json
import sys
import time


def main() -> int:
    sizes = [int(a) for a in sys.argv[1:]] or [1024, 4096, 8192]
    try:
        import torch
    except ImportError as e:
        print(f"torch_matmul_bench: torch is not installed ({e})", file=sys.stderr)
        return 3
    if not torch.cuda.is_available():
        print("torch_matmul_bench: torch sees no CUDA device", file=sys.stderr)
        return 3
    # Plain f32 FMA GEMM, as unigrad computes it: no TF32 tensor cores.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if hasattr(torch, "set_float32_matmul_precision"):
        torch.set_float32_matmul_precision("highest")
    dev = torch.device("cuda:0")
    print(f"torch_matmul_bench: torch {torch.__version__}, {torch.cuda.get_device_name(dev)}", file=sys.stderr)
    for n in sizes:
        a = torch.rand(n, n, device=dev, dtype=torch.float32) * 2 - 1
        b = torch.rand(n, n, device=dev, dtype=torch.float32) * 2 - 1
        flop = 2.0 * n ** 3
        for _ in range(2):
            torch.matmul(a, b)
        torch.cuda.synchronize()
        iters = max(3, min(200, int(1e13 / flop)))
        t = time.perf_counter()
        for _ in range(iters):
            torch.matmul(a, b)
        torch.cuda.synchronize()
        secs = (time.perf_counter() - t) / iters
        print(json.dumps({"n": n, "dtype": "f32", "iters": iters, "ms": round(secs * 1e3, 4),
                          "gflops": round(flop / secs / 1e9, 1), "impl": "torch"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
