#!/usr/bin/env bash
# Smoke test of every example program: build them once in release, run each for a few
# steps with tiny settings, and check that its last stdout line is one JSON object.
# Examples that do not exist (yet) are skipped with a message. Budget: a few minutes on
# 2 cores after the build. Honors CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

echo "== cargo build --release -p unigrad-examples --examples"
cargo build --release -p unigrad-examples --examples

target="${CARGO_TARGET_DIR:-target}"
bin="$target/release/examples"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
failures=0
ran=0

# run NAME ARGS...: run example NAME (if its source exists) and check its last line.
run() {
  local name="$1"
  shift
  if [ ! -f "examples/examples/$name.rs" ]; then
    echo "-- $name: examples/examples/$name.rs not present, skipped"
    return 0
  fi
  local out="$tmp/$name.$ran.out" err="$tmp/$name.$ran.err"
  ran=$((ran + 1))
  local t0=$SECONDS
  local rc=0
  timeout 300 "$bin/$name" "$@" >"$out" 2>"$err" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "FAIL $name $*: exit status $rc after $((SECONDS - t0)) s; stderr tail:"
    tail -n 20 "$err"
    failures=$((failures + 1))
    return 0
  fi
  if ! python3 -c 'import json,sys; json.loads(sys.stdin.readlines()[-1])' <"$out"; then
    echo "FAIL $name $*: the last stdout line is not JSON:"
    tail -n 3 "$out"
    failures=$((failures + 1))
    return 0
  fi
  echo "ok   $name $* ($((SECONDS - t0)) s)"
}

t_all=$SECONDS
run train_lm --steps 6 --batch 4 --seq 32 --d-model 32 --layers 1 --heads 2 --warmup 2 \
  --eval-every 3 --eval-windows 4 --sample-len 16 --quiet --checkpoint "$tmp/lm.safetensors"
run train_lm --steps 8 --batch 4 --seq 32 --d-model 32 --layers 1 --heads 2 --warmup 2 \
  --eval-every 0 --sample-len 16 --quiet --resume "$tmp/lm.safetensors"
run bench_step --steps 2 --warmup 1
run translate --quick --quiet --steps 10 --checkpoint "$tmp/mt.safetensors"
run translate --quick --quiet --steps 14 --resume "$tmp/mt.safetensors" --beam 3
run translate --quick --quiet --norm un --pre-norm --beam 0
run vit --quick --quiet --steps 10 --checkpoint "$tmp/vit.safetensors"
run vit --quick --quiet --steps 14 --resume "$tmp/vit.safetensors" --norm ln
run vit --quick --quiet --norm bn
run paper_table --quick --quiet --out "$tmp/paper_table.md" --checkpoint "$tmp/pt"
run bench_infer --iters 2 --warmup 1 --parts-iters 2
run norm_internals --steps 20 --batch 4 --seq 32 --eval-every 10 --val-windows 4 --un-warmup 5 \
  --pn-warmup 5 --outlier-start 10 --outlier-every 5 --out "$tmp/norm_internals"

echo "examples smoke: $ran runs, $failures failed, $((SECONDS - t_all)) s"
[ "$failures" -eq 0 ]
