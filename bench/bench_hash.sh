#!/usr/bin/env bash
# Provenance hashing cost (issue #17): `qtool quantize --scheme fp8-dynamic` with its default
# sha256 of every input shard, against the same run with --no-hash and against `cat` of the same
# bytes to one file + `sync` (a durable copy). Not part of the tests.
#
# Generates a ~1.2 GB BF16 Llama-shaped checkpoint (hidden 2048, intermediate 8192, 8 layers,
# vocab 32000), reads it once (warm page cache for everyone), then REPS interleaved rounds of the
# three contenders; each ends with `sync`. Prints every run and the medians, and the ratio the
# issue targets: default quantize / (cat + sync) <= 1.3.
# Usage: bench/bench_hash.sh [REPS] [QTOOL] [WORKDIR] [SIZE] [BASE_QTOOL]
# SIZE: 1g (the default above) or a shape of bench/llama_shapes.sh (small, 8b-8l, 8b; for 8b the
# cat baseline copies one shard at a time, see below).
# With BASE_QTOOL (an older build), its two quantize runs are interleaved too (labels "base"), to
# measure a change in the same rounds. The load average is printed before and after each round.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-3}
Q=$(realpath "${2:-build/tools/qtool}")
W=${3:-$(mktemp -d /tmp/qtool-bench-hash.XXXXXX)}
mkdir -p "$W"
trap 'rm -rf "$W/out" "$W/copy.bin"' EXIT
SIZE=${4:-1g}
if [ "$SIZE" = 1g ]; then
  DIMS=(--hidden 2048 --intermediate 8192 --layers 8 --heads 16 --kv-heads 4 --vocab 32000)
else
  . bench/llama_shapes.sh
  llama_shape_dims "$SIZE"
fi
M=$W/model-$SIZE
[ -f "$M/config.json" ] || "$Q" -q tiny-model "$M" "${DIMS[@]}"
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cpus; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
du -cb "$M"/*.safetensors | tail -1 | awk '{printf "input bytes: %.0f\n", $1}'
cat "$M"/*.safetensors > /dev/null
t() { local t0 t1; t0=$(date +%s.%N); "$@"; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
declare -A runs=()
BASE=${5:-}
[ -n "$BASE" ] && BASE=$(realpath "$BASE")
for ((r = 0; r < REPS; r++)); do
  echo "round $((r + 1)), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  if [ "$SIZE" = 8b ]; then
    # 16 GB: the disk may not hold the input and a whole copy of it beside each other, so the
    # durable copy is made one shard at a time (each shard copied, synced, then deleted untimed).
    s=0
    for f in "$M"/*.safetensors; do
      s=$(echo "$s + $(t sh -c "cat '$f' > $W/copy.bin && sync")" | bc); rm -f "$W/copy.bin"
    done
  else
    s=$(t sh -c "cat $M/*.safetensors > $W/copy.bin && sync"); rm -f "$W/copy.bin"
  fi
  runs[cat]+="$s "
  echo "cat+sync ${s}s"
  rm -rf "$W/out"; s=$(t sh -c "'$Q' -q quantize '$M' -o '$W/out' --scheme fp8-dynamic && sync"); runs[hash]+="$s "
  echo "quantize (default, sha256) ${s}s"
  rm -rf "$W/out"; s=$(t sh -c "'$Q' -q quantize '$M' -o '$W/out' --scheme fp8-dynamic --no-hash && sync"); runs[nohash]+="$s "
  echo "quantize --no-hash ${s}s"
  if [ -n "$BASE" ]; then
    rm -rf "$W/out"; s=$(t sh -c "'$BASE' -q quantize '$M' -o '$W/out' --scheme fp8-dynamic && sync"); runs[bhash]+="$s "
    echo "base quantize (default, sha256) ${s}s"
    rm -rf "$W/out"; s=$(t sh -c "'$BASE' -q quantize '$M' -o '$W/out' --scheme fp8-dynamic --no-hash && sync"); runs[bnohash]+="$s "
    echo "base quantize --no-hash ${s}s"
  fi
  rm -rf "$W/out"
  echo "round $((r + 1)), load after: $(cut -d' ' -f1-3 /proc/loadavg)"
done
med() { echo "$1" | tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
c=$(med "${runs[cat]}"); h=$(med "${runs[hash]}"); n=$(med "${runs[nohash]}")
echo "median cat+sync ${c}s, quantize ${h}s, quantize --no-hash ${n}s"
if [ -n "$BASE" ]; then
  bh=$(med "${runs[bhash]}"); bn=$(med "${runs[bnohash]}")
  echo "base: median quantize ${bh}s, --no-hash ${bn}s; ratios to cat $(echo "scale=2; $bh / $c" | bc), $(echo "scale=2; $bn / $c" | bc)"
fi
echo "ratio quantize/cat: $(echo "scale=2; $h / $c" | bc), --no-hash/cat: $(echo "scale=2; $n / $c" | bc); load after: $(cut -d' ' -f1-3 /proc/loadavg)"
