#!/usr/bin/env bash
# Issue #18's whole measurement on the machine it runs on, in one command: which CPU this is,
# the bf16 GEMM of each back end (own vdpbf16ps kernel, oneDNN) and the f32 GEMM against PyTorch's
# on the same shapes, then the calibration forward of both bf16 back ends and f32 against PyTorch
# bf16 and f32 in interleaved rounds, and PyTorch's batch sizes (its fastest setting is what
# qtool must beat). Everything it prints is meant for bench/RESULTS.md, with the CPU named.
# Written for a session that lands on an AMX Xeon (the AMX number of issue #18 has been measured
# nowhere yet); it runs on any x86-64 CPU. Not part of the tests. ~10 minutes on 2 cores.
# Usage: bench/bench_forward_cpu.sh BUILD_DIR PYTHON [ROUNDS=2] [SAMPLES=8] [SEQ_LEN=512]
#   BUILD_DIR: a Release build with -DQTOOL_BENCHMARKS=ON (tools/qtool, bench/bench_forward,
#   bench/bench_gemm_f32); PYTHON: an interpreter with torch and transformers.
set -euo pipefail
BUILD=$(realpath "$1"); PY=$2; ROUNDS=${3:-2}; N=${4:-8}; L=${5:-512}
HERE=$(realpath "$(dirname "$0")")
QTOOL=$BUILD/tools/qtool; FWD=$BUILD/bench/bench_forward; GEMM=$BUILD/bench/bench_gemm_f32
for b in "$QTOOL" "$FWD" "$GEMM"; do [ -x "$b" ] || { echo "missing $b (build with -DQTOOL_BENCHMARKS=ON)" >&2; exit 2; }; done
W=$(mktemp -d /tmp/qtool-forward-cpu.XXXXXX)
trap 'rm -rf "$W"' EXIT
export OMP_WAIT_POLICY=passive  # what the qtool CLI sets (tools/main.cpp)

echo "== machine ($(date -u +%FT%TZ))"
lscpu | grep -E '^(Model name|Vendor ID|CPU family|Model|Stepping|CPU\(s\)|Thread\(s\) per core|L2 cache|L3 cache):' || true
echo "flags: $(grep -m1 -o -w -E 'avx2|fma|avx512f|avx512bw|avx512vl|avx512_bf16|avx512_vnni|amx_tile|amx_bf16|amx_int8' /proc/cpuinfo | tr '\n' ' ')"
"$QTOOL" --version
"$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, "threads", torch.get_num_threads())'
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"

# The bf16 back end qtool picks here by default, and the other one (forced), as two commands.
default_isa=$("$QTOOL" --version | sed -n 's/.*bf16 GEMM: \([^)]*\)).*/\1/p')
case "$default_isa" in onednn*) other=own ;; *) other=onednn ;; esac
printf '#!/bin/sh\nQTOOL_BF16_GEMM=%s exec %s "$@"\n' "$other" "$FWD" > "$W/fwd_other.sh"
chmod +x "$W/fwd_other.sh"
other_isa=$(QTOOL_BF16_GEMM=$other "$QTOOL" --version | sed -n 's/.*bf16 GEMM: \([^)]*\)).*/\1/p')
# (Without oneDNN in the build or a CPU it runs on, QTOOL_BF16_GEMM=onednn falls back to the own
# kernel: then both names below are the same and so are the two contenders.)
echo "bf16 GEMM by default: $default_isa; the other back end in the rounds ('before'): $other = $other_isa"

echo "== GEMM alone: one 512-token sample's Linears of the 135M model, 1 thread, best of 5"
layer() { grep '"shape": "layer"'; }
for r in $(seq "$ROUNDS"); do
  echo "round $r bf16 default: $("$GEMM" 512 1 5 768 2048 256 bf16 | layer)"
  echo "round $r bf16 $other: $(QTOOL_BF16_GEMM=$other "$GEMM" 512 1 5 768 2048 256 bf16 | layer)"
  echo "round $r bf16 pytorch: $("$PY" "$HERE/bench_gemm_torch.py" 512 1 5 768 2048 256 bfloat16 | layer)"
  echo "round $r f32 qtool: $("$GEMM" 512 1 5 768 2048 256 f32 | layer)"
  echo "round $r f32 pytorch: $("$PY" "$HERE/bench_gemm_torch.py" 512 1 5 768 2048 256 float32 | layer)"
done

echo "== the 135M Llama-shaped model"
M=$W/model-135m
"$QTOOL" tiny-model "$M" --hidden 768 --intermediate 2048 --layers 12 --heads 12 --kv-heads 4 --vocab 32000 >/dev/null

echo "== forward rounds: 'after' = default back end, 'before' = QTOOL_BF16_GEMM=$other (f32 rows: the same binary twice)"
"$HERE/bench_forward_rounds.sh" "$M" "$W/fwd_other.sh" "$FWD" "$PY" "$ROUNDS" "$N" "$L" "2 1" "bf16 f32"

echo "== PyTorch's batch size (its fastest setting), 2 threads, against qtool's default in the same round"
cd "$W"
tps() { sed -n 's/.*"tokens_per_s": \([0-9.]*\).*/\1/p'; }
for r in $(seq "$ROUNDS"); do
  for p in bf16 f32; do
    tp=$([ "$p" = bf16 ] && echo bfloat16 || echo float32)
    line="round $r $p: qtool $("$FWD" "$M" "$N" "$L" 2 "$p" | tps)"  # writes the ids file
    for b in 1 8 16; do
      line+=", pytorch batch $b $("$PY" "$HERE/bench_forward_torch.py" "$M" "$N" "$L" 2 bench_forward_ids.bin "$b" "$tp" 2>/dev/null | tps)"
    done
    echo "$line (load $(cut -d' ' -f1 /proc/loadavg))"
  done
done
