#!/usr/bin/env bash
# Calibration benchmark (not part of the tests). In one run, on a ~135M-parameter Llama-shaped
# BF16 model (hidden 768, intermediate 2048, 12 layers, 12/4 heads, vocab 32000):
#   0. the packed GEMM alone per layer shape, and the measured f32 FMA peak of the machine;
#   1. qtool's forward pass over SAMPLES x SEQ random token ids with the absmax observer
#      (bench_forward, with the CLI's default OMP_WAIT_POLICY=passive), tokens/s and GFLOP/s;
#   2. PyTorch CPU (transformers, f32, forward pre-hooks recording Linear input absmax) on the
#      same model and token ids;
#   3. end-to-end `qtool quantize --scheme fp8-static --num-samples SAMPLES --seq-len SEQ`.
# Usage: bench/bench_calibrate.sh [WORKDIR] [SAMPLES] [SEQ]
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/qtool-bench-calib}; N=${2:-128}; L=${3:-512}
mkdir -p "$WORK"
cmake -S . -B build-release -G Ninja -DCMAKE_BUILD_TYPE=Release -DQTOOL_TESTS=OFF -DQTOOL_BENCHMARKS=ON >/dev/null
cmake --build build-release --target qtool bench_forward bench_gemm_f32 >/dev/null
Q=$PWD/build-release/tools/qtool
M=$WORK/model-135m
[ -f "$M/config.json" ] || $Q tiny-model "$M" --hidden 768 --intermediate 2048 --layers 12 --heads 12 --kv-heads 4 --vocab 32000
# The GEMM alone per layer shape, and the machine's measured f32 FMA peak (last line).
build-release/bench/bench_gemm_f32 "$L" "$(nproc)" 20 | tee "$WORK/qtool_gemm.json"
B=$PWD/build-release/bench/bench_forward; (cd "$WORK" && OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive} "$B" "$M" "$N" "$L" "$(nproc)") | tee "$WORK/qtool_forward.json"
# PyTorch at batch 1 (its fastest here) and 8; compare against the faster.
for b in 1 8; do
  python3 bench/bench_forward_torch.py "$M" "$N" "$L" "$(nproc)" "$WORK/bench_forward_ids.bin" $b
done | tee "$WORK/torch_forward.json"
# End to end: calibration text large enough for N x L tokens (generated, deterministic).
python3 - "$WORK/calib.txt" <<'PY'
import random, sys
random.seed(7)
words = ("the of and to in a is that for it as was with be by on not he this are or his from at which "
         "but have an they you were her all she there would their we him been has when who will more no if "
         "out so said what up its about into than them can only other new some could time these two may then "
         "do first any my now such like our over man me even most made after also did many before must "
         "through back years where much your way well down should because each just those people").split()
with open(sys.argv[1], "w") as f:
    for d in range(4000):
        f.write(" ".join(random.choice(words) for _ in range(random.randint(80, 400))).capitalize() + ".\n\n")
PY
rm -rf "$WORK/out-fp8-static"
python3 bench/peak_anon.py --label qtool-fp8-static -- "$Q" -q quantize "$M" -o "$WORK/out-fp8-static" --scheme fp8-static \
  --dataset "$WORK/calib.txt" --num-samples "$N" --seq-len "$L" --no-hash | tee "$WORK/e2e.json"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
