#!/usr/bin/env bash
# Data-free quantize to the microscaling schemes (nvfp4a16, mxfp4a16, mxfp8) against a plain copy
# of the same bytes, with fp8-dynamic as the reference scheme (issue 16). Not part of the tests.
#
# Generates a Llama-shaped BF16 checkpoint with `qtool tiny-model` (8b-8l: Llama-3-8B widths with
# 8 of the 32 layers, 5.6 GB in 2 shards, every tensor shape of the 8B model; 8b: all 32 layers,
# 16 GB; small: hidden 2048, 16 layers, ~3 GB), then measures in three interleaved rounds, each
# contender with a warm page cache and ending with `sync`:
#   cp of the shard files; qtool quantize --scheme S --no-hash for S in nvfp4a16 mxfp4a16 mxfp8
#   fp8-dynamic.
# Usage: bench/bench_fp4.sh [WORKDIR] [8b-8l|8b|small] [QTOOL] [BASE_QTOOL]
# With BASE_QTOOL (an older build), its runs of the three microscale schemes are interleaved too
# (labels ending in -base), to measure a change in the same run; BASE_ROUNDS=N (default 3) keeps
# them to the first N rounds when the old build is slow.
# SCHEMES="nvfp4a16 ..." replaces the three microscale schemes; ISAS="avx512 avx2 scalar" runs each
# scheme once per instruction-set cap (QTOOL_ISA, libquant/cpu_isa.h; labels S@ISA, and the base
# build's runs too, or only those in BASE_ISAS), to compare the row kernels' paths on one machine;
# NO_REF=1 skips fp8-dynamic.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/qtool-bench-fp4}
SIZE=${2:-8b-8l}
Q=${3:-$PWD/build/tools/qtool}
BASE=${4:-}
BASE_ROUNDS=${BASE_ROUNDS:-3}
mkdir -p "$WORK"
. bench/llama_shapes.sh
llama_shape_dims "$SIZE"
M=$WORK/model-$SIZE
[ -f "$M/config.json" ] || $Q tiny-model "$M" "${DIMS[@]}"
du -sb "$M"/*.safetensors | awk '{s+=$1} END {printf "input bytes: %.0f\n", s}'
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
warm() { cat "$M"/*.safetensors > /dev/null; }
SCHEMES=${SCHEMES:-nvfp4a16 mxfp4a16 mxfp8}
ISAS=${ISAS:-}
run() {  # label qtool scheme [isa]
  warm; rm -rf "$WORK/out"
  local env=""
  [ -z "${4:-}" ] || env="QTOOL_ISA=$4 "
  python3 bench/peak_anon.py --label "$1" -- sh -c "$env$2 -q quantize $M -o $WORK/out --scheme $3 --no-hash && sync"
  rm -rf "$WORK/out"
}
for round in 1 2 3; do
  warm; rm -rf "$WORK/copy" && mkdir -p "$WORK/copy"
  python3 bench/peak_anon.py --label copy -- sh -c "cp $M/*.safetensors $WORK/copy/ && sync"
  rm -rf "$WORK/copy"
  for s in $SCHEMES; do
    for isa in ${ISAS:-default}; do
      [ "$isa" != default ] || isa=""
      tag=$s${isa:+@$isa}
      run "$tag" "$Q" "$s" "$isa"
      case " ${BASE_ISAS:-${isa:-default}} " in *" ${isa:-default} "*) ;; *) continue ;; esac
      [ -z "$BASE" ] || [ "$round" -gt "$BASE_ROUNDS" ] || run "$tag-base" "$BASE" "$s" "$isa"
    done
  done
  [ -n "${NO_REF:-}" ] || run fp8-dynamic "$Q" fp8-dynamic
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB"
