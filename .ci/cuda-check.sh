#!/usr/bin/env bash
# CUDA checks that need no GPU, called by .ci/run (about 3-4 minutes on 2 cores):
#  1. a stub libcuda.so.1 so the `cuda` feature links (scripts/cuda/make-libcuda-stub.sh);
#  2. the pinned nvcc 13.0 from PyPI: build.rs then recompiles every kernel, fails on a
#     stale committed PTX (CUDA_PTX_STRICT=1) and assembles it with ptxas for sm_80 and
#     sm_90. If PyPI is unreachable: a warning, and the committed PTX is used unchecked;
#  3. clippy -D warnings on unigrad-cuda with the feature (the rest of the workspace is
#     linted by .ci/run's own clippy step);
#  4. their tests against the stub: host-side unit tests (dry-run launches check every
#     kernel call against its PTX signature) run for real, GPU tests print SKIPPED;
#  5. tests/gpu.rs again on the CPU kernel emulator (feature `emulator`,
#     UNIGRAD_CUDA_EMULATOR=1): the CUDA C kernels compiled for the host run every
#     cross-check against the CPU backend, so kernel logic is tested without a GPU;
#     then the shared suite's `fused` group there, every fused kernel (softmax, norm,
#     Adam) against core's composed default, and its `higher_order` group
#     (gradgradcheck) minus its slowest tables there (matmul, reductions, softmax,
#     norms, fused attention, the nn layers: 1-2 emulated minutes each).
#     CUDA_EMU_HIGHER_ORDER=all runs the whole group (≈ 13 min on 2 busy cores;
#     passed in full on 2026-12-07), CUDA_EMU_SHARED_SUITE=1 the whole shared suite;
#  6. ptxas -arch=sm_80 / sm_90 on every committed .ptx file.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

stub=$(bash scripts/cuda/make-libcuda-stub.sh "$work/libcuda-stub")
export CUDA_LIBRARY_PATH=$stub
ptxas=
if nvcc=$(bash scripts/cuda/install-nvcc.sh "${CUDA_PIP_PREFIX:-$HOME/.local/cuda-pip}"); then
  export NVCC=$nvcc CUDA_PTX_STRICT=1
  ptxas=$(dirname "$nvcc")/ptxas
else
  echo "WARNING: nvcc could not be installed (PyPI unreachable?); using the committed PTX unchecked"
fi

echo "== clippy, cuda and emulator features"
cargo clippy --locked --no-deps -p unigrad-cuda --features cuda --all-targets -- -D warnings
cargo clippy --locked --no-deps -p unigrad-cuda --features emulator --all-targets -- -D warnings
# `emulator` implies `cuda`, so one build serves both runs below.
tests=(--locked -p unigrad-cuda -p unigrad-tests --features unigrad-cuda/emulator,unigrad-tests/cuda
  --lib --test gpu --test cuda)
echo "== tests against the stub driver (GPU tests print SKIPPED)"
LD_LIBRARY_PATH=$stub/lib64 cargo test "${tests[@]}"
echo "== GPU tests on the CPU kernel emulator"
UNIGRAD_CUDA_EMULATOR=1 LD_LIBRARY_PATH=$stub/lib64 cargo test --locked -p unigrad-cuda --features emulator \
  --lib --test gpu
# The whole shared suite also passes on the emulator, but takes minutes (its
# 1,000-step training test above all): opt in with CUDA_EMU_SHARED_SUITE=1. By
# default only its `fused` group and most of `higher_order` run there (the binary is
# built above); the skipped second-order tables run the same primitives as the kept ones.
emu_skip=()
if [[ ${CUDA_EMU_HIGHER_ORDER:-} != all ]]; then
  for t in matmul reductions softmax norms fused_attention nn_ gradient_penalty_transformer_block; do
    emu_skip+=(--skip "higher_order::$t")
  done
fi
if [[ ${CUDA_EMU_SHARED_SUITE:-0} == 1 ]]; then
  echo "== the shared suite on the CPU kernel emulator"
  UNIGRAD_CUDA_EMULATOR=1 LD_LIBRARY_PATH=$stub/lib64 cargo test "${tests[@]}"
else
  echo "== the shared suite's fused and higher_order groups on the CPU kernel emulator"
  UNIGRAD_CUDA_EMULATOR=1 LD_LIBRARY_PATH=$stub/lib64 cargo test --locked -p unigrad-cuda -p unigrad-tests \
    --features unigrad-cuda/emulator,unigrad-tests/cuda --test cuda -- fused higher_order "${emu_skip[@]}"
fi

if [[ -n $ptxas ]]; then
  echo "== ptxas sm_80 / sm_90 on the committed PTX"
  for ptx in backend-cuda/kernels/*.ptx; do
    for arch in sm_80 sm_90; do
      "$ptxas" -arch="$arch" "$ptx" -o /dev/null
    done
    echo "ok $ptx ($(wc -c <"$ptx") bytes, $(grep -m1 '^\.version' "$ptx"))"
  done
fi
