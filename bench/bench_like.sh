#!/usr/bin/env bash
# `qtool quantize NEW --like QUANT` against a plain copy of the same bytes (issue 20: re-quantizing
# inside a training loop must cost about what copying does; target <= 1.3x). Not part of the tests.
#
# Generates a Llama-shaped BF16 checkpoint with `qtool tiny-model` (8b: Llama-3-8B shapes, 16 GB;
# 8b-8l: the same widths with 8 of the 32 layers, 5.6 GB, every tensor shape of the 8B model;
# small: hidden 2048, 16 layers, vocab 128256, ~3 GB), makes QUANT from it once (fp8-static +
# FP8 KV cache, statistics from a one-sample calibration), then measures with a warm page cache,
# each ending with `sync`:
#   1. cp of the shard files,
#   2. qtool quantize --scheme fp8-static --kv-cache fp8 --stats (the plain quantize, same recipe),
#   3. qtool quantize --like QUANT (with the drift report: QUANT's codes are read as well),
#   4. qtool quantize --like QUANT --no-drift.
# Usage: bench/bench_like.sh [WORKDIR] [8b|8b-8l|small] [QTOOL] [BASE_QTOOL]
# With BASE_QTOOL (an older build), its --like runs are interleaved too (labels like-base,
# like-no-drift-base), to measure a change in the same run. ROUNDS (environment, default 3): how
# many interleaved rounds; the load average is printed before and after each.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/qtool-bench-like}
SIZE=${2:-small}
Q=${3:-$PWD/build/tools/qtool}
BASE=${4:-}
mkdir -p "$WORK"
. bench/llama_shapes.sh
llama_shape_dims "$SIZE"
M=$WORK/model-$SIZE
[ -f "$M/config.json" ] || $Q tiny-model "$M" "${DIMS[@]}"
[ -f "$WORK/quant-$SIZE/config.json" ] || $Q -q quantize "$M" -o "$WORK/quant-$SIZE" --scheme fp8-static --kv-cache fp8 \
    --num-samples 1 --seq-len 16 --save-stats "$WORK/stats-$SIZE-all.zst" --no-hash
du -sb "$M"/*.safetensors | awk '{s+=$1} END {printf "input bytes: %.0f\n", s}'
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
warm() { cat "$M"/*.safetensors "$WORK/quant-$SIZE"/*.safetensors > /dev/null; }
for ((round = 1; round <= ${ROUNDS:-3}; round++)); do
  echo "round $round, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  warm; rm -rf "$WORK/copy" && mkdir -p "$WORK/copy"
  python3 bench/peak_anon.py --label copy -- sh -c "cp $M/*.safetensors $WORK/copy/ && sync"
  rm -rf "$WORK/copy"
  warm; rm -rf "$WORK/out"
  python3 bench/peak_anon.py --label quantize-stats -- sh -c "$Q -q quantize $M -o $WORK/out --scheme fp8-static --kv-cache fp8 --stats $WORK/stats-$SIZE-all.zst --no-hash && sync"
  warm; rm -rf "$WORK/out"
  python3 bench/peak_anon.py --label like -- sh -c "$Q -q quantize $M -o $WORK/out --like $WORK/quant-$SIZE --no-hash && sync"
  warm; rm -rf "$WORK/out"
  python3 bench/peak_anon.py --label like-no-drift -- sh -c "$Q -q quantize $M -o $WORK/out --like $WORK/quant-$SIZE --no-hash --no-drift && sync"
  rm -rf "$WORK/out"
  if [ -n "$BASE" ]; then
    warm; python3 bench/peak_anon.py --label like-base -- sh -c "$BASE -q quantize $M -o $WORK/out --like $WORK/quant-$SIZE --no-hash && sync"
    rm -rf "$WORK/out"
    warm; python3 bench/peak_anon.py --label like-no-drift-base -- sh -c "$BASE -q quantize $M -o $WORK/out --like $WORK/quant-$SIZE --no-hash --no-drift && sync"
    rm -rf "$WORK/out"
  fi
  echo "round $round, load after: $(cut -d' ' -f1-3 /proc/loadavg)"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB"
