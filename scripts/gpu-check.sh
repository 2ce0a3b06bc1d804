#!/usr/bin/env bash
# gpu-check.sh: one prepared GPU check for unigrad-cuda.
#
# Here (no GPU, no CUDA toolkit needed) it builds everything the GPU machine needs
# into the git-ignored gpu-bin/ (kept under 48 MiB):
#   * stripped release test binaries: unigrad-cuda's lib tests and tests/gpu.rs, and
#     the shared suite instantiated for CUDA (unigrad-tests, tests/cuda.rs: the op
#     groups and the nn checks — module gradchecks, UN/PowerNorm, fixture replay,
#     folding, tracing), plus gpu-bin/run-all.sh (scripts/cuda/collect-test-bins.sh).
#     The replay reads tests/data/fixtures/ from the working tree on the GPU machine
#     (run-all.sh runs each binary in its package directory with CARGO_MANIFEST_DIR set;
#     UNIGRAD_FIXTURES_DIR overrides);
#   * gpu-bin/matmul_bench (backend-cuda/examples/matmul_bench.rs);
#   * gpu-bin/bench_step, when some workspace package has an example or binary of
#     that name (built with that package's `cuda` feature if it has one; its
#     arguments on the GPU come from $BENCH_STEP_ARGS, default `--device cuda`);
#   * gpu-bin/run-gpu-check.sh (scripts/cuda/run-gpu-check.sh), the runner.
# Then it starts every test binary once against the stub driver as a smoke test
# (they must print SKIPPED and pass); --no-smoke skips that.
#
#   scripts/gpu-check.sh                # from anywhere in the repository
#   # then, on the GPU machine, from the repository root (carry gpu-bin/):
#   bash gpu-bin/run-gpu-check.sh
#
# Environment: CARGO_TARGET_DIR as usual; CUDA_STUB_DIR (default
# ~/.cache/libcuda-stub); BENCH_STEP_ARGS.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=$root/gpu-bin
smoke=1
[[ ${1:-} == --no-smoke ]] && smoke=0
log() { printf 'gpu-check.sh: %s\n' "$*" >&2; }
grep -qx '/gpu-bin' .gitignore || log "WARNING: /gpu-bin is not in .gitignore"

stub=$(bash scripts/cuda/make-libcuda-stub.sh "${CUDA_STUB_DIR:-$HOME/.cache/libcuda-stub}")
export CUDA_LIBRARY_PATH=$stub
if nvcc=$(bash scripts/cuda/install-nvcc.sh 2>/dev/null); then
  export NVCC=$nvcc CUDA_PTX_STRICT=1 # a stale committed PTX fails the build
else
  log "WARNING: nvcc could not be installed; building from the committed PTX unchecked"
fi

log "test binaries"
bash scripts/cuda/collect-test-bins.sh "$out" -p unigrad-cuda -p unigrad-tests \
  --features unigrad-cuda/cuda,unigrad-tests/cuda --lib --test gpu --test cuda

# Build one example or binary in release and copy it, stripped, to gpu-bin/NAME.
build_tool() { # NAME PACKAGE KIND(example|bin) [cargo args...]
  local name=$1 pkg=$2 kind=$3 exe
  shift 3
  exe=$(cargo build --release -p "$pkg" "--$kind" "$name" "$@" --message-format=json |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])' | tail -n 1)
  [[ -n $exe ]] || { log "no executable for $name"; return 1; }
  cp "$exe" "$out/$name"
  strip --strip-all "$out/$name"
}

log "matmul_bench"
build_tool matmul_bench unigrad-cuda example --features cuda

# bench_step: found by name, wherever the lead puts it.
found=$(cargo metadata --no-deps --format-version 1 | python3 -c 'import json, sys
for p in json.load(sys.stdin)["packages"]:
    for t in p["targets"]:
        if t["name"] == "bench_step" and t["kind"][0] in ("example", "bin"):
            print(p["name"], t["kind"][0], "cuda" in p["features"])
            sys.exit()')
if [[ -n $found ]]; then
  read -r pkg kind has_cuda <<<"$found"
  log "bench_step ($kind of $pkg)"
  features=()
  [[ $has_cuda == True ]] && features=(--features "$pkg/cuda")
  if build_tool bench_step "$pkg" "$kind" "${features[@]}"; then
    printf '%s\n' "${BENCH_STEP_ARGS:---device cuda}" >"$out/bench_step.args"
  else
    log "WARNING: bench_step did not build; the runner will say so"
  fi
else
  log "no bench_step target in the workspace yet; the runner will print 'bench_step not built'"
fi

cp scripts/cuda/run-gpu-check.sh "$out/run-gpu-check.sh"
chmod +x "$out/run-gpu-check.sh"

total=$(du -sb "$out" | cut -f1)
log "gpu-bin: $((total / 1024)) KiB"
((total < 48 * 1024 * 1024)) || { log "ERROR: gpu-bin is over 48 MiB"; exit 1; }
newest=$(objdump -T "$out"/* 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1 || true)
log "binaries need ${newest:-an unknown glibc} or newer on the GPU machine"

if ((smoke)); then
  log "smoke test against the stub (every GPU test must say SKIPPED and pass)"
  LD_LIBRARY_PATH=$stub/lib64 CUDA_REQUIRE_GPU=0 bash "$out/run-all.sh" -q >/dev/null
  log "smoke test passed"
fi
log "ready: carry gpu-bin/ and run 'bash gpu-bin/run-gpu-check.sh' from the repository root on the GPU machine"
