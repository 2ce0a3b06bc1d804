#!/usr/bin/env bash
# run-gpu-check.sh: the GPU-machine half of scripts/gpu-check.sh. Copied into gpu-bin/
# by that script; run it from the repository root on the GPU machine:
#
#   bash gpu-bin/run-gpu-check.sh 2>&1 | tee gpu-check.log
#
# Needs only the NVIDIA driver (R580+ for the embedded PTX 9.0), bash and
# coreutils; python3 with torch is optional (the torch columns say why they are
# empty). Stays within about 7 minutes: every step has its own time limit.
#  1. every prebuilt test binary, CUDA_REQUIRE_GPU=1 (a missing GPU fails);
#  2. f32 matmul GFLOP/s at 1024/4096/8192: gpu-bin/matmul_bench vs torch.matmul (TF32 off);
#  3. one training step of the reference transformer: gpu-bin/bench_step vs
#     scripts/cuda/torch_step_bench.py (bench/transformer_ref.py's model on cuda:0);
#  4. a short table, last.
# Exit status: non-zero when a test binary failed (benchmarks never fail the run).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
export CUDA_REQUIRE_GPU=1 RUST_BACKTRACE=${RUST_BACKTRACE:-1}
case ${LD_LIBRARY_PATH:-} in *libcuda-stub*) echo "WARNING: LD_LIBRARY_PATH points at the build stub; unsetting it"; unset LD_LIBRARY_PATH ;; esac
sizes=${MATMUL_SIZES:-1024 4096 8192}
py=$(command -v python3 || true)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$SECONDS

section() { printf '\n======== %s (t=%ds)\n' "$*" "$((SECONDS - start))"; }
last_json() { grep -E '^\{' "$1" | tail -n 1; }

section "GPU"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader
else
  echo "nvidia-smi not found"
fi

section "1. tests (CUDA_REQUIRE_GPU=1)"
tests_rc=0
timeout -k 10 "${TEST_TIMEOUT_S:-210}" bash "$here/run-all.sh" 2>&1 | tee "$work/tests.log"
tests_rc=${PIPESTATUS[0]}
[[ $tests_rc == 124 ]] && echo "== tests: TIMED OUT"
passed=$(grep -Eo '[0-9]+ passed' "$work/tests.log" | awk '{s += $1} END {print s + 0}')
failed=$(grep -Eo '[0-9]+ failed' "$work/tests.log" | awk '{s += $1} END {print s + 0}')
skipped=$(grep -c '^SKIPPED' "$work/tests.log")

section "2. f32 matmul: unigrad-cuda vs torch.matmul (TF32 off)"
if [[ -x $here/matmul_bench ]]; then
  # shellcheck disable=SC2086
  timeout -k 5 60 "$here/matmul_bench" $sizes | tee "$work/ours.json"
else
  echo "matmul_bench not built"
fi
if [[ -n $py ]]; then
  # shellcheck disable=SC2086
  timeout -k 5 60 "$py" scripts/cuda/torch_matmul_bench.py $sizes | tee "$work/torch.json"
else
  echo "python3 not found: no torch numbers"
fi

section "3. training step: bench_step vs PyTorch"
if [[ -x $here/bench_step ]]; then
  args=$(cat "$here/bench_step.args" 2>/dev/null || echo "--device cuda")
  echo "+ gpu-bin/bench_step $args"
  # shellcheck disable=SC2086
  timeout -k 5 60 "$here/bench_step" $args | tee "$work/step_ours.log"
else
  echo "bench_step not built"
fi
if [[ -n $py ]]; then
  timeout -k 5 60 "$py" scripts/cuda/torch_step_bench.py | tee "$work/step_torch.log"
fi

section "summary"
echo "tests: exit $tests_rc; $passed passed, $failed failed, $skipped skipped"
if [[ -n $py ]]; then
  "$py" - "$work" "$sizes" <<'PY'
import json, os, sys
work, sizes = sys.argv[1], [int(s) for s in sys.argv[2].split()]
def rows(name):
    out = {}
    try:
        for line in open(os.path.join(work, name)):
            if line.startswith("{"):
                d = json.loads(line)
                out[d["n"]] = d
    except (OSError, ValueError, KeyError):
        pass
    return out
def last(name):
    try:
        lines = [l for l in open(os.path.join(work, name)) if l.startswith("{")]
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None
ours, ref = rows("ours.json"), rows("torch.json")
print(f"{'':<16}{'unigrad':>16}{'torch':>16}{'ratio':>8}   (ratio > 1: unigrad faster)")
print(f"{'f32 matmul':<16}{'GFLOP/s':>16}{'GFLOP/s':>16}")
for n in sizes:
    a, b = ours.get(n, {}).get("gflops"), ref.get(n, {}).get("gflops")
    ratio = f"{a / b:.2f}" if a and b else "-"
    print(f"{n:<16}{a if a is not None else '-':>16}{b if b is not None else '-':>16}{ratio:>8}")
s_ours, s_ref = last("step_ours.log"), last("step_torch.log")
ms = lambda d: (d or {}).get("median_ms")
a, b = ms(s_ours), ms(s_ref)
fmt = lambda v: f"{v:.2f}" if isinstance(v, (int, float)) else "-"
print(f"{'train step ms':<16}{fmt(a):>16}{fmt(b):>16}{(f'{b / a:.2f}' if a and b else '-'):>8}")
PY
else
  echo "(no python3: see the raw lines above)"
fi
echo "total ${SECONDS}s"
exit "$tests_rc"
