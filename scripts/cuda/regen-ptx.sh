#!/usr/bin/env bash
# regen-ptx.sh: regenerates the committed PTX of unigrad-cuda from its CUDA C kernels
# with the pinned nvcc 13.0 (installed by install-nvcc.sh if needed), then assembles
# every file with ptxas for sm_80 and sm_90 and prints the sizes.
#
#   scripts/cuda/regen-ptx.sh            # from anywhere inside the repository
#   NVCC=/path/to/nvcc scripts/cuda/regen-ptx.sh
#
# The flags must stay identical to NVCC_FLAGS in backend-cuda/build.rs, which
# compares its own output with these files (CUDA_PTX_STRICT=1 turns a mismatch into
# a build error).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
nvcc=${NVCC:-$(bash "$root/scripts/cuda/install-nvcc.sh")}
ptxas=$(dirname "$nvcc")/ptxas
cd "$root/backend-cuda/kernels"
for cu in *.cu; do
  ptx=${cu%.cu}.ptx
  "$nvcc" -ptx -arch=compute_75 -std=c++17 "$cu" -o "$ptx"
  for arch in sm_80 sm_90; do
    "$ptxas" -arch="$arch" "$ptx" -o /dev/null
  done
  printf '%-18s %8d bytes  %s  %d entries\n' "$ptx" "$(wc -c <"$ptx")" \
    "$(grep -m1 '^\.version' "$ptx")" "$(grep -c '^\.visible \.entry' "$ptx")"
done
