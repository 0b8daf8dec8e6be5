#!/usr/bin/env bash
# Threads on a busy host (issue #17): the default thread setup against -j1, -j2 and libgomp's
# spinning wait policy, with other work running on the machine. Not part of the tests.
#
# For each workload, REPS interleaved runs of:
#   default   qtool as shipped (OMP_WAIT_POLICY unset: qtool sets passive and re-executes itself)
#   spin      OMP_WAIT_POLICY=active (what libgomp does by default when spinning is allowed)
#   j1, j2    -j 1 / -j 2 with the shipped wait policy
# Workloads: calibrated quantize (fp8-static, built-in text) and verify (--no-bench) of the
# bundled tiny model, and data-free fp8-dynamic quantize of a 1-layer 4096-wide model.
# --hog N starts N busy loops (`yes > /dev/null`) for the duration, as the "other work".
# Prints one line per run (workload, mode, seconds, load average) and the median per mode.
# Usage: bench/bench_threads.sh [--hog N] [REPS] [QTOOL]
set -euo pipefail
cd "$(dirname "$0")/.."
HOG=0
[ "${1:-}" = "--hog" ] && { HOG=$2; shift 2; }
REPS=${1:-3}
Q=$(realpath "${2:-build/tools/qtool}")
W=$(mktemp -d /tmp/qtool-bench-threads.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
"$Q" -q tiny-model "$W/tiny"
"$Q" -q tiny-model "$W/wide" --hidden 4096 --intermediate 14336 --layers 1 --heads 32 --kv-heads 8 --vocab 32000
"$Q" -q quantize "$W/tiny" -o "$W/fp8" --scheme fp8-dynamic --no-hash
for ((i = 0; i < HOG; i++)); do yes > /dev/null & pids+=($!); done
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cpus; hogs: $HOG; qtool: $Q"
run() {  # workload mode -> seconds
  local wl=$1 mode=$2 env=() j=()
  case $mode in spin) env=(OMP_WAIT_POLICY=active) ;; j1) j=(-j 1) ;; j2) j=(-j 2) ;; esac
  rm -rf "$W/out"
  local t0 t1
  t0=$(date +%s.%N)
  local rc=0
  case $wl in
    calibrate) env "${env[@]}" "$Q" -q quantize "$W/tiny" -o "$W/out" --scheme fp8-static --no-hash "${j[@]}" || rc=$? ;;
    verify) env "${env[@]}" "$Q" -q verify "$W/fp8" --reference "$W/tiny" --no-bench --min-top1 0 "${j[@]}" > /dev/null || rc=$? ;;
    quantize) env "${env[@]}" "$Q" -q quantize "$W/wide" -o "$W/out" --scheme fp8-dynamic --no-hash "${j[@]}" || rc=$? ;;
  esac
  t1=$(date +%s.%N)
  [ "$rc" = 0 ] || { echo "bench_threads: $wl $mode failed with exit status $rc" >&2; exit 1; }
  echo "$t1 - $t0" | bc
}
for wl in calibrate verify quantize; do
  declare -A times=()
  for ((r = 0; r < REPS; r++)); do
    for mode in default spin j1 j2; do
      s=$(run $wl $mode) || exit 1
      times[$mode]+="$s "
      echo "$wl $mode ${s}s load $(cut -d' ' -f1 /proc/loadavg)"
    done
  done
  for mode in default spin j1 j2; do
    med=$(echo ${times[$mode]} | tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    echo "median $wl $mode ${med}s"
  done
  unset times
done
