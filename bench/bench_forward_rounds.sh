#!/usr/bin/env bash
# The calibration forward against PyTorch CPU in interleaved rounds (issue #18): per round, per
# thread count and per precision, one run each of bench_forward BEFORE (an older build, to
# compare commits), bench_forward AFTER and bench/bench_forward_torch.py (batch 1, the same ids),
# one after the other, so that a change in the machine's load hits every contender alike.
# Prints one line per run (round, threads, precision, contender, tokens/s, load average before
# the run) and, per (threads, precision), each contender's best tokens/s and the ratios.
# Not part of the tests.
# Usage: bench/bench_forward_rounds.sh MODEL_DIR BEFORE_BENCH AFTER_BENCH PYTHON
#          [ROUNDS=2] [SAMPLES=8] [SEQ_LEN=512] [THREADS="2 1"] [PRECISIONS="bf16 f32"]
# MODEL_DIR: e.g. the 135M model of bench/bench_calibrate.sh (`qtool tiny-model model-135m
# --hidden 768 --intermediate 2048 --layers 12 --heads 12 --kv-heads 4 --vocab 32000`).
# PYTHON: an interpreter with torch and transformers. BEFORE_BENCH may be "-" to skip it.
set -euo pipefail
M=$(realpath "$1"); B=$2; A=$(realpath "$3"); PY=$4
ROUNDS=${5:-2}; N=${6:-8}; L=${7:-512}; THREADS=${8:-"2 1"}; PRECS=${9:-"bf16 f32"}
[ "$B" != "-" ] && B=$(realpath "$B")
TORCH=$(realpath "$(dirname "$0")/bench_forward_torch.py")
W=$(mktemp -d /tmp/qtool-forward-rounds.XXXXXX)
trap 'rm -rf "$W"' EXIT
cd "$W"
export OMP_WAIT_POLICY=passive  # what the qtool CLI sets (tools/main.cpp)
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cpus; $(date -u +%FT%TZ); $N x $L tokens"
load() { cut -d' ' -f1 /proc/loadavg; }
tps() { sed -n 's/.*"tokens_per_s": \([0-9.]*\).*/\1/p'; }
for r in $(seq "$ROUNDS"); do
  for t in $THREADS; do
    for p in $PRECS; do
      tp=$([ "$p" = bf16 ] && echo bfloat16 || echo float32)
      # AFTER first: it writes the ids file the others read (the same seeded ids every time).
      l=$(load); v=$("$A" "$M" "$N" "$L" "$t" "$p" | tps); echo "round $r threads $t $p after $v load $l"
      if [ "$B" != "-" ]; then l=$(load); v=$("$B" "$M" "$N" "$L" "$t" "$p" | tps); echo "round $r threads $t $p before $v load $l"; fi
      l=$(load); v=$("$PY" "$TORCH" "$M" "$N" "$L" "$t" bench_forward_ids.bin 1 "$tp" 2>/dev/null | tps)
      echo "round $r threads $t $p pytorch $v load $l"
    done
  done
done | tee runs.txt
echo "load at the end: $(load)"
python3 - runs.txt <<'EOF'
import sys, collections
best = collections.defaultdict(float)
for line in open(sys.argv[1]):
    f = line.split()
    best[(f[3], f[4], f[5])] = max(best[(f[3], f[4], f[5])], float(f[6]))
for (t, p) in sorted({(k[0], k[1]) for k in best}, reverse=True):
    a, b, y = best[(t, p, "after")], best.get((t, p, "before")), best[(t, p, "pytorch")]
    s = f"threads {t} {p}: best tok/s after {a:.1f}"
    if b: s += f", before {b:.1f} (after/before {a / b:.2f}x)"
    s += f", pytorch {y:.1f} (after/pytorch {a / y:.2f}x"
    if b: s += f", before/pytorch {b / y:.2f}x"
    print(s + ")")
EOF
