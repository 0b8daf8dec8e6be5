#!/usr/bin/env bash
# GPU check and throughput of `qtool verify --device cuda` (issue #6), in two halves:
#
#   bench/bench_gpu.sh bundle
#       On the development machine (nvcc 13 + cuBLASLt headers, no GPU needed): builds qtool and
#       the GPU tests with CUDA into build-gpu/cmake/ (Release; every qtool binary is baseline x86-64 with run-time
#       AVX2 dispatch, so it runs on any x86-64 CPU; ~6 min on 2 cores), then packs build-gpu/bundle/: the stripped binaries
#       and every shared library they need except glibc's (spdlog, fmt, ICU, PCRE2, zstd, gomp;
#       libstdc++/libgcc in lib/fallback/, used only if the GPU machine's are too old). cudart is
#       linked statically; libcublasLt.so.13 is not carried (540 MB): qtool dlopens the GPU
#       machine's own (CUDA toolkit or the nvidia-cublas wheel). About 45 MB.
#
#   bench/bench_gpu.sh run [all|tests|accuracy|bench]
#       On the GPU machine (H100/H200, driver 580, no package registry, no build dependencies
#       needed), from the repository root with build-gpu/bundle carried along. With the device tool:
#         run(command="bench/bench_gpu.sh run", carry=["build-gpu/bundle"], timeout_s=600)
#       Writes to $OUT (default ./gpu-out): env.txt (GPU, clocks, power limit, driver, versions),
#       test_gpu_cuda.txt, verify_<scheme>.json for fp8-dynamic, fp8-static, fp8-block and
#       int8-dynamic checkpoints of a one-layer model with Llama-3-8B shapes (hidden 4096,
#       intermediate 14336, 32 heads, 8 KV heads: q/o 4096x4096, k/v 1024x4096, gate/up
#       14336x4096, down 4096x14336), plus the fused shapes 6144x4096 (qkv) and 28672x4096
#       (gate_up) in the throughput table; prints the accuracy summary, the throughput table and
#       the targets last. "tests" / "accuracy" / "bench" run one part (if `all` exceeds the
#       10-minute limit of one device call).
#
# Nothing here has been run on a GPU yet (see bench/RESULTS.md, "GPU").
set -euo pipefail
cd "$(dirname "$0")/.."
B=build-gpu/bundle
mode=${1:-}

bundle() {
  local gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
  # A separate build folder (Release, CUDA required); the code is baseline x86-64 with run-time
  # dispatch, so the GPU machine's CPU needs no particular extension.
  local D=build-gpu/cmake
  cmake -S . -B "$D" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DQTOOL_CUDA=ON >/dev/null
  cmake --build "$D" -j"${JOBS:-2}" --target qtool test_gpu_cuda test_gpu_plan
  rm -rf "$B"
  mkdir -p "$B/lib/fallback"
  strip -o "$B/qtool" "$D/tools/qtool"
  strip -o "$B/test_gpu_cuda" "$D/tests/test_gpu_cuda"
  strip -o "$B/test_gpu_plan" "$D/tests/test_gpu_plan"
  for lib in $(ldd "$D/tools/qtool" "$D/tests/test_gpu_cuda" | awk '/=>/ {print $3}' | sort -u); do
    case $(basename "$lib") in
      libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*) ;;
      libstdc++.so*|libgcc_s.so*) cp -L "$lib" "$B/lib/fallback/" ;;
      *) cp -L "$lib" "$B/lib/" ;;
    esac
  done
  git rev-parse HEAD > "$B/COMMIT" 2>/dev/null || true
  du -sh "$B"
  echo "bundle ready: carry build-gpu/bundle and run 'bench/bench_gpu.sh run' on the GPU machine"
}

run() {
  local part=${1:-all}
  [ -x "$B/qtool" ] || { echo "no $B/qtool: run 'bench/bench_gpu.sh bundle' first and carry $B" >&2; exit 2; }
  OUT=${OUT:-$PWD/gpu-out}
  mkdir -p "$OUT"
  export LD_LIBRARY_PATH="$PWD/$B/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  if ! "$B/qtool" --version >/dev/null 2>&1; then
    export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$PWD/$B/lib/fallback"
  fi
  # cuBLASLt: the loader's search path first, else the toolkit's or PyTorch's wheel copy.
  if [ -z "${QTOOL_CUBLASLT:-}" ]; then
    for f in /usr/local/cuda/lib64/libcublasLt.so.13 /usr/local/cuda/targets/x86_64-linux/lib/libcublasLt.so.13 \
             $(find /usr /opt -name 'libcublasLt.so.13' 2>/dev/null | head -3); do
      [ -f "$f" ] && { export QTOOL_CUBLASLT=$f; break; }
    done
  fi
  Q="$PWD/$B/qtool"
  {
    date -u
    echo "bundle commit: $(cat "$B/COMMIT" 2>/dev/null || echo unknown)"
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.limit,power.draw,temperature.gpu \
      --format=csv 2>&1 || true
    nvcc --version 2>&1 | tail -1 || true
    echo "QTOOL_CUBLASLT=${QTOOL_CUBLASLT:-}"
    "$Q" --version
  } > "$OUT/env.txt" 2>&1
  cat "$OUT/env.txt"

  if [ "$part" = all ] || [ "$part" = tests ]; then
    "$B/test_gpu_plan" > "$OUT/test_gpu_plan.txt" 2>&1 || { tail -30 "$OUT/test_gpu_plan.txt"; echo "test_gpu_plan FAILED"; }
    "$B/test_gpu_cuda" > "$OUT/test_gpu_cuda.txt" 2>&1 || echo "test_gpu_cuda FAILED (see $OUT/test_gpu_cuda.txt)"
    grep -E '^\[  (PASSED|FAILED|SKIPPED) |FAILED  \]|Failure' "$OUT/test_gpu_cuda.txt" | head -40 || true
  fi

  W=${WORK:-/tmp/qtool-gpu}
  mkdir -p "$W"
  if [ "$part" != tests ] && [ ! -f "$W/l3/config.json" ]; then
    "$Q" -q tiny-model "$W/l3" --hidden 4096 --intermediate 14336 --layers 1 --heads 32 --kv-heads 8 --vocab 2048
  fi
  schemes=(fp8-dynamic fp8-static fp8-block int8-dynamic)
  if [ "$part" = all ] || [ "$part" = accuracy ]; then
    for s in "${schemes[@]}"; do
      calib=(); [ "$s" = fp8-static ] && calib=(--num-samples 8 --seq-len 128)  # a few seconds on 16 cores
      [ -f "$W/$s/config.json" ] || "$Q" -q quantize "$W/l3" -o "$W/$s" --scheme "$s" "${calib[@]}"
      "$Q" verify "$W/$s" --device cuda --json > "$OUT/verify_$s.json" 2> "$OUT/verify_$s.log" ||
        echo "verify --device cuda $s: exit $? (see $OUT/verify_$s.log)"
    done
  fi
  if [ "$part" = all ] || [ "$part" = bench ]; then
    [ -f "$W/fp8-dynamic/config.json" ] || "$Q" -q quantize "$W/l3" -o "$W/fp8-dynamic" --scheme fp8-dynamic
    "$Q" verify "$W/fp8-dynamic" --device cuda --bench --bench-shape 6144x4096 --bench-shape 28672x4096 --json \
      > "$OUT/bench_fp8-dynamic.json" 2> "$OUT/bench_fp8-dynamic.log" || echo "bench: exit $? (see $OUT/bench_fp8-dynamic.log)"
  fi
  python3 - "$OUT" <<'PY'
import json, os, sys, glob
out = sys.argv[1]
for f in sorted(glob.glob(os.path.join(out, "verify_*.json"))) + sorted(glob.glob(os.path.join(out, "bench_*.json"))):
    try:
        j = json.load(open(f))
    except Exception as e:
        print(f"{os.path.basename(f)}: unreadable ({e})"); continue
    print(f"== {os.path.basename(f)}: pass={j['pass']} device={j['device']['name']} cuBLASLt={j['device']['cublaslt_version']}")
    for a in j["accuracy"]:
        print(f"  {a['kernel']:<23} {a['mode']:<20} {a['module']:<32} ok={a['ok']!s:<5} exact={a['bit_exact']!s:<5} "
              f"relL2={a['rel_l2']} bound={a['max_bound_ratio']} {a['error']}")
    for x in j["failures"][:10]:
        print("  FAIL", x)
    for b in j["bench"]:
        tf = f"{b['tflops']:.1f}" if b["tflops"] else "-"
        sp = f"{b['speedup_bf16']:.2f}" if b["speedup_bf16"] else "-"
        print(f"  {b['N']:>6} {b['K']:>6} {b['M']:>5} {b['kernel']:<23} {b['variant']:<13} {tf:>8} TF {sp:>5}x {b['error'][:60]}")
    for t in j["targets"]:
        print(f"  target {t['name']}: measured={t['measured']} met={t['met']} value={t['value']} {t['detail']}")
PY
}

case "$mode" in
  bundle) bundle ;;
  run) shift; run "${1:-all}" ;;
  *) sed -n '2,30p' "$0"; exit 2 ;;
esac
