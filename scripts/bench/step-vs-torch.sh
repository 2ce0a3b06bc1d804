#!/usr/bin/env bash
# Side-by-side training-step timing: unigrad `bench_step` vs the PyTorch reference
# (bench/transformer_ref.py), alternating ours/torch for each norm so that both see the same
# machine state. Prints one TSV row per run (ratio = ours / PyTorch median).
#
#   scripts/bench/step-vs-torch.sh [PYTHON] [ROUNDS] [THREADS] [NORMS...] [--d-model N] [--layers N] [--seq N] [--batch N] [--steps N] [--warmup N]
#
# The size flags (defaults: the reference workload) and the timed / warm-up step counts
# (defaults 30 / 5; fewer keep the large sizes short) go to both programs unchanged.
# PYTHON is an interpreter with torch installed (a throwaway venv; torch is never a project
# dependency). Build first: cargo build --release -p unigrad-examples --example bench_step
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${1:-python3}; rounds=${2:-3}; threads=${3:-2}; shift $(( $# < 3 ? $# : 3 ))
norms=(); size=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --d-model|--layers|--seq|--batch|--steps|--warmup) [[ $# -ge 2 ]] || { echo "$1 needs a value" >&2; exit 2; }; size+=("$1" "$2"); shift 2 ;;
    --*) echo "unknown flag $1" >&2; exit 2 ;;
    *) norms+=("$1"); shift ;;
  esac
done
[[ ${#norms[@]} -eq 0 ]] && norms=(ln bn rms un)
ours=target/release/examples/bench_step
[[ -x $ours ]] || { echo "build $ours first" >&2; exit 1; }
field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])['$1'])"; }
echo -e "norm\tround\tours_ms\ttorch_ms\tratio\tours_rss_mib\ttorch_rss_mib"
for n in "${norms[@]}"; do
  for r in $(seq 1 "$rounds"); do
    o=$("$ours" --norm "$n" --threads "$threads" "${size[@]}" 2>/dev/null)
    t=$("$py" bench/transformer_ref.py train --norm "$n" --threads "$threads" "${size[@]}" 2>/dev/null)
    om=$(field median_ms <<<"$o"); tm=$(field median_ms <<<"$t")
    orss=$(field peak_rss_mib <<<"$o"); trss=$(field peak_rss_mib <<<"$t")
    ratio=$(python3 -c "print(f'{$om/$tm:.3f}')")
    echo -e "$n\t$r\t$om\t$tm\t$ratio\t$orss\t$trss"
  done
done
