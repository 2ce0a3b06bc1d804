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
run norm_internals --quick --report "$tmp/report.html" --out "$tmp/norm_report"

run norm_scaling --quick --quiet --un-ablation --lag-run 16 --out "$tmp/norm_scaling"
run norm_scaling --quick --quiet --resume --out "$tmp/norm_scaling"

# check_norm_scaling DIR: the scaling study's runs.csv parses with one ok row per run (the
# --resume call above must have added none), and every SVG it wrote parses as XML.
check_norm_scaling() {
  if [ ! -f examples/examples/norm_scaling.rs ]; then
    return 0
  fi
  if python3 - "$1" <<'PY'; then
import csv
import math
import sys
import xml.dom.minidom
from pathlib import Path

d = Path(sys.argv[1])
rows = list(csv.DictReader(open(d / "runs.csv", encoding="utf-8")))
problems = []
keys = [(r["task"], r["variant"], r["norm"], r["length"], r["seed"], r["settings"]) for r in rows]
if len(set(keys)) != len(keys):
    problems.append("runs.csv repeats a run (--resume did not skip it)")
# quick ladder: 2 tasks x 2 lengths x 4 norms, ablation: 7 ViT + 6 LM variants at length 16
if len(rows) != 29:
    problems.append(f"runs.csv has {len(rows)} rows, expected 29")
for r in rows:
    if r["status"] != "ok" or not math.isfinite(float(r["quality"])):
        problems.append(f"run {r['task']} {r['norm']} {r['length']} {r['variant']}: {r['status']} {r['quality']}")
for name in ["quality_vit.svg", "quality_lm.svg", "lag_vit_16.svg"]:
    doc = xml.dom.minidom.parse(str(d / name))
    if not doc.getElementsByTagName("polyline"):
        problems.append(f"{name} has no line")
lag = list(csv.DictReader(open(d / "lag_vit_16.csv", encoding="utf-8")))
if len(lag) != 16 or not all(r["bn_running_var"] and r["un_batch_qm"] for r in lag):
    problems.append("lag_vit_16.csv does not hold BN and UN statistics for each of the 16 steps")
if "UN − LN" not in (d / "summary.md").read_text(encoding="utf-8"):
    problems.append("summary.md has no gap column")
if problems:
    print("\n".join(problems[:20]))
    sys.exit(1)
print(f"norm_scaling ok: {len(rows)} runs, plots and summary parse")
PY
    echo "ok   norm_scaling outputs check"
  else
    echo "FAIL norm_scaling outputs check ($1)"
    failures=$((failures + 1))
  fi
}
check_norm_scaling "$tmp/norm_scaling"

# check_report FILE: the teaching report parses as HTML, holds every section (each with an
# inline chart and a caption, section 6 with the parameters) and references nothing outside
# itself: no http(s): anywhere, no src/href other than #anchors and data: URIs, no CSS url()
# or @import, no <link>, <iframe>, <object>, <embed> or <img> pointing elsewhere.
check_report() {
  if [ ! -f examples/examples/norm_internals.rs ]; then
    return 0
  fi
  if python3 - "$1" <<'PY'; then
import re
import sys
from html.parser import HTMLParser

SECTIONS = ["family", "statistics", "outliers", "calibration", "folding", "parameters"]
WITH_CHART = ["family", "statistics", "outliers", "calibration", "folding"]


class Check(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.sections, self.current, self.problems = [], None, []
        self.svgs, self.captions, self.tables = {}, {}, {}
        self.stack = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag not in ("br", "meta", "img", "input", "hr", "link", "source"):
            self.stack.append(tag)
        if tag == "section":
            self.current = a.get("id")
            self.sections.append(self.current)
        if self.current:
            for kind, store in (("svg", self.svgs), ("figcaption", self.captions), ("table", self.tables)):
                if tag == kind:
                    store[self.current] = store.get(self.current, 0) + 1
        for name, value in attrs:
            if name in ("src", "href", "xlink:href", "action", "srcset", "poster", "data"):
                v = (value or "").strip()
                if not (v.startswith("#") or v.startswith("data:")):
                    self.problems.append(f"<{tag} {name}={v!r}> points outside the file")
        if tag in ("link", "iframe", "object", "embed", "base"):
            self.problems.append(f"<{tag}> element")

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag == "section":
            self.current = None
        if tag in self.stack:
            while self.stack and self.stack.pop() != tag:
                pass


path = sys.argv[1]
text = open(path, encoding="utf-8").read()
p = Check()
p.feed(text)
p.close()
problems = list(p.problems)
if not text.lstrip().lower().startswith("<!doctype html>"):
    problems.append("no <!DOCTYPE html>")
for pat in (r"https?:", r"url\(\s*[\x22\x27]?(?!data:|#)", r"@import"):
    for m in re.finditer(pat, text, re.IGNORECASE):
        problems.append(f"external reference {text[m.start():m.start() + 50]!r}")
if p.sections != SECTIONS:
    problems.append(f"sections {p.sections}, expected {SECTIONS}")
for s in WITH_CHART:
    if not p.svgs.get(s) or not p.captions.get(s):
        problems.append(f"section {s}: {p.svgs.get(s, 0)} charts, {p.captions.get(s, 0)} captions")
if not p.tables.get("parameters"):
    problems.append("section parameters has no table")
if "n/a" in text.split('id="folding"')[-1].split("</section>")[0]:
    problems.append("section folding has a missing number")
if problems:
    print("\n".join(problems[:20]))
    sys.exit(1)
print(f"report ok: {len(text)} bytes, sections {', '.join(p.sections)}")
PY
    echo "ok   norm_internals report check"
  else
    echo "FAIL norm_internals report check ($1)"
    failures=$((failures + 1))
  fi
}
check_report "$tmp/report.html"

echo "examples smoke: $ran runs, $failures failed, $((SECONDS - t_all)) s"
[ "$failures" -eq 0 ]
