#!/usr/bin/env bash
# The sweep behind docs/throughput.svg.
set -e
out=${1:-docs/bench-sweep.jsonl}
: > "$out"
for shape in "1 1" "2 2" "4 4" "8 8" "8 16"; do
  set -- $shape
  node dist/tools/bench.js --connections $1 --depth $2 --seconds 5 --compare redis --json 2>/dev/null >> "$out"
  node dist/tools/bench.js --connections $1 --depth $2 --seconds 5 --mix 0:1 --preload 10000 --compare redis --json 2>/dev/null >> "$out"
done
