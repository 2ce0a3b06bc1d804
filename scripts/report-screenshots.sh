#!/usr/bin/env bash
# Render the norm_internals teaching report in headless Chromium, as a reader sees it, and
# save one PNG per section (plus the page top with the contents) for checking and for the
# README. Not part of CI: it needs a browser (Debian: apt-get install -y chromium).
#
#   scripts/report-screenshots.sh [REPORT.html] [OUT_DIR]
#
# REPORT.html defaults to a fresh report built with the example's defaults (about 3 min on 2
# cores); OUT_DIR defaults to docs/report. Each shot is the page at WIDTH px (default 1000)
# with every other part of the page hidden, cut to the section's rendered height, which is
# measured in the same browser first. The browser runs with a throwaway profile and no
# network features, so the screenshots also show that the page needs nothing from outside.
# Set CHROMIUM to pick the browser binary. When pngquant is installed the PNGs are reduced to
# a 256-colour palette (a third of the size; the charts and text stay sharp).
set -euo pipefail
cd "$(dirname "$0")/.."

report="${1:-}"
out="${2:-docs/report}"
width="${WIDTH:-1000}"
browser="${CHROMIUM:-}"
if [ -z "$browser" ]; then
  for b in chromium chromium-browser google-chrome; do
    if command -v "$b" >/dev/null; then
      browser="$b"
      break
    fi
  done
fi
if [ -z "$browser" ]; then
  echo "no Chromium found; install Debian's package: apt-get update && apt-get install -y chromium" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [ -z "$report" ]; then
  report="$work/report.html"
  cargo run --release -p unigrad-examples --example norm_internals -- \
    --report "$report" --out "$work/runs" >/dev/null
fi
[ -f "$report" ] || { echo "no report at $report" >&2; exit 1; }

# browser FLAGS...: run headless Chromium with a fresh profile and nothing that talks to
# the network (running as root needs --no-sandbox).
browser_run() {
  local profile
  profile="$(mktemp -d "$work/profile.XXXX")"
  "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --disable-extensions --hide-scrollbars --force-device-scale-factor=1 \
    --user-data-dir="$profile" "$@" 2>"$work/browser.err"
}

# inject FILE STYLE SCRIPT: a copy of the report with extra CSS in <head> and extra JS at
# the end of <body>.
inject() {
  python3 - "$report" "$1" "$2" "$3" <<'PY'
import sys
src, dst, style, script = sys.argv[1:]
html = open(src, encoding="utf-8").read()
html = html.replace("</head>", f"<style>{style}</style></head>", 1)
html = html.replace("</body>", f"<script>{script}</script></body>", 1)
open(dst, "w", encoding="utf-8").write(html)
PY
}

# 1. measure the rendered height of the top part and of every section at this width
inject "$work/measure.html" "" "
var h = ['top:' + Math.ceil(document.querySelector('nav.toc').getBoundingClientRect().bottom)];
document.querySelectorAll('main > section').forEach(function (s) {
  h.push(s.id + ':' + Math.ceil(s.getBoundingClientRect().height));
});
document.body.setAttribute('data-heights', h.join(','));"
heights="$(browser_run --window-size="$width,900" --dump-dom "file://$work/measure.html" |
  grep -o 'data-heights="[^"]*"' | sed 's/data-heights="//; s/"$//')"
if [ -z "$heights" ]; then
  echo "could not measure the report in $browser:" >&2
  cat "$work/browser.err" >&2
  exit 1
fi

# 2. one screenshot per part: everything else hidden, window cut to the part's height
mkdir -p "$out"
n=0
IFS=',' read -ra parts <<<"$heights"
for part in "${parts[@]}"; do
  id="${part%%:*}"
  h="${part##*:}"
  if [ "$id" = top ]; then
    style="main > section, main > footer, .buttons { display: none !important; }"
    h=$((h + 24))
  else
    style="main > :not(section#$id) { display: none !important; } section#$id > h2 { margin-top: 0; }"
    h=$((h + 40))
  fi
  inject "$work/$id.html" "$style" ""
  file="$out/$(printf '%02d' "$n")-$id.png"
  browser_run --window-size="$width,$h" --screenshot="$file" "file://$work/$id.html" >/dev/null
  [ -s "$file" ] || { echo "no screenshot for $id:" >&2; cat "$work/browser.err" >&2; exit 1; }
  if command -v pngquant >/dev/null; then
    pngquant --force --skip-if-larger --strip --output "$file" 256 -- "$file" || true
  fi
  echo "$file (${width}x$h)"
  n=$((n + 1))
done
