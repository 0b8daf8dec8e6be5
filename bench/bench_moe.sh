#!/usr/bin/env bash
# Mixture-of-experts benchmarks (issue 14), not part of the tests. A Qwen3-30B-A3B-shaped BF16
# checkpoint from `qtool tiny-model --arch qwen3_moe` with the real widths (hidden 2048, 128
# experts of moe_intermediate 768, top-8, 32 query / 4 kv heads of head_dim 128, vocab 151936)
# but fewer layers (the 48-layer model is 61 GB; LAYERS=4 is ~6.2 GB, CAL_LAYERS=2 ~3.7 GB):
#   A. data-free `quantize --scheme fp8-dynamic` of the LAYERS-layer model against `cp` of the
#      same shard files, each followed by `sync`, warm page cache, 3 interleaved rounds
#      (as bench/bench_like.sh);
#   B. on the CAL_LAYERS-layer model, per round: qtool's calibration forward (bench_forward: the
#      fp8-static observer pass, N x L seeded random token ids) in both --moe-calibration
#      policies, PyTorch/transformers CPU f32 running the forward of the same checkpoint on the
#      same ids (bench/bench_forward_torch.py), and end-to-end `quantize --scheme fp8-static` in
#      both policies on generated text of N x L tokens. All at THREADS threads (default: nproc).
# Every line is one JSON object from bench/peak_anon.py (wall seconds, peak RssAnon) or from the
# program. The generated checkpoints are deleted at the end.
# Usage: bench/bench_moe.sh [WORKDIR] [LAYERS] [CAL_LAYERS] [QTOOL] [BENCH_FORWARD]
#        env: N (samples, 4), L (tokens per sample, 256), THREADS, PY (python with torch +
#        transformers, /work/venvs/moe-tf/bin/python), ROUNDS_B (2)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/qtool-bench-moe}; LAYERS=${2:-4}; CAL_LAYERS=${3:-2}
Q=${4:-$PWD/build/tools/qtool}; BF=${5:-$PWD/build/bench/bench_forward}
N=${N:-4}; L=${L:-256}; THREADS=${THREADS:-$(nproc)}; PY=${PY:-/work/venvs/moe-tf/bin/python}; ROUNDS_B=${ROUNDS_B:-2}
WIDTHS=(--arch qwen3_moe --hidden 2048 --intermediate 6144 --moe-intermediate 768 --experts 128 --experts-per-token 8
        --heads 32 --kv-heads 4 --head-dim 128 --vocab 151936)
mkdir -p "$WORK"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; threads $THREADS"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

# --- A. data-free fp8-dynamic vs cp ---
M=$WORK/model-${LAYERS}l
[ -f "$M/config.json" ] || $Q -q tiny-model "$M" "${WIDTHS[@]}" --layers "$LAYERS" --shards 2
du -sb "$M"/*.safetensors | awk '{s+=$1} END {printf "A input bytes: %.0f\n", s}'
warm() { cat "$M"/*.safetensors > /dev/null; }
for round in 1 2 3; do
  warm; rm -rf "$WORK/copy" && mkdir -p "$WORK/copy"
  python3 bench/peak_anon.py --label copy -- sh -c "cp $M/*.safetensors $WORK/copy/ && sync"
  rm -rf "$WORK/copy"
  warm; rm -rf "$WORK/out"
  python3 bench/peak_anon.py --label fp8-dynamic -- sh -c "$Q -q quantize $M -o $WORK/out --scheme fp8-dynamic --no-hash -j $THREADS && sync"
  [ "$round" = 3 ] && du -sb "$WORK/out"/*.safetensors | awk '{s+=$1} END {printf "A output bytes: %.0f\n", s}'
  rm -rf "$WORK/out"
done
rm -rf "$M"
echo "load after A: $(cut -d' ' -f1-3 /proc/loadavg)"

# --- B. calibration forward, both policies, against transformers ---
M=$WORK/model-${CAL_LAYERS}l
[ -f "$M/config.json" ] || $Q -q tiny-model "$M" "${WIDTHS[@]}" --layers "$CAL_LAYERS"
python3 - "$WORK/calib.txt" <<'PY'
import random, sys
random.seed(7)
words = ("the of and to in a is that for it as was with be by on not he this are or his from at which "
         "but have an they you were her all she there would their we him been has when who will more no if "
         "out so said what up its about into than them can only other new some could time these two may then").split()
with open(sys.argv[1], "w") as f:
    for d in range(400):
        f.write(" ".join(random.choice(words) for _ in range(random.randint(300, 600))).capitalize() + ".\n\n")
PY
cd "$WORK"  # bench_forward writes bench_forward_ids.bin here; the PyTorch run reads it
B=$OLDPWD/bench
for round in $(seq "$ROUNDS_B"); do
  for pol in all routed; do
    python3 "$B/peak_anon.py" --label "qtool-forward-$pol" -- "$BF" "$M" "$N" "$L" "$THREADS" f32 "$pol"
  done
  python3 "$B/peak_anon.py" --label torch-forward -- "$PY" "$B/bench_forward_torch.py" "$M" "$N" "$L" "$THREADS" bench_forward_ids.bin 1
  for pol in all routed; do
    rm -rf out-st
    python3 "$B/peak_anon.py" --label "qtool-quantize-fp8-static-$pol" -- "$Q" -q quantize "$M" -o out-st --scheme fp8-static \
      --moe-calibration "$pol" --moe-min-tokens 1 --dataset calib.txt --num-samples "$N" --seq-len "$L" --no-hash -j "$THREADS" || true
  done
  rm -rf out-st
done
rm -rf "$M" "$WORK/calib.txt"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
