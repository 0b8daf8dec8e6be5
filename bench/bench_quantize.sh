#!/usr/bin/env bash
# Quantization throughput benchmark (issue: qtool quantize performance). Not part of the tests.
#
# Generates a Llama-3-8B-shaped BF16 checkpoint (hidden 4096, intermediate 14336, 32 layers,
# 32/8 heads, vocab 128256: ~16 GB, 4 shards like the real one), then in the same run measures
#   1. the time to copy the same bytes (cp of the shard files),
#   2. qtool quantize --scheme fp8-dynamic (wall time, GB/s, peak RssAnon),
#   3. llama.cpp's llama-quantize Q8_0 on a BF16 GGUF of the same tensors (built from the
#      llama.cpp sources inside the llama-cpp-python sdist from PyPI; never committed).
# Usage: bench/bench_quantize.sh [WORKDIR] [small]   ("small": a 1B-shaped model for a quick run)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/qtool-bench}
SIZE=${2:-8b}
mkdir -p "$WORK"
scripts/bootstrap.sh >/dev/null
cmake -S . -B build-release -G Ninja -DCMAKE_BUILD_TYPE=Release -DQTOOL_TESTS=OFF >/dev/null
cmake --build build-release --target qtool >/dev/null
Q=$PWD/build-release/tools/qtool
. bench/llama_shapes.sh
llama_shape_dims "$SIZE"
M=$WORK/model-$SIZE
[ -f "$M/config.json" ] || $Q tiny-model "$M" "${DIMS[@]}"
du -sb "$M"/*.safetensors | awk '{s+=$1} END {printf "input bytes: %d\n", s}'

# Warm the page cache equally for every contender: read the input once.
cat "$M"/*.safetensors > /dev/null

rm -rf "$WORK/copy" && mkdir -p "$WORK/copy"
python3 bench/peak_anon.py --label copy -- sh -c "cp $M/*.safetensors $WORK/copy/ && sync" | tee "$WORK/copy.json"
rm -rf "$WORK/copy"

rm -rf "$WORK/out-fp8"
python3 bench/peak_anon.py --label qtool-fp8-dynamic -- sh -c "$Q -q quantize $M -o $WORK/out-fp8 --scheme fp8-dynamic --no-hash && sync" | tee "$WORK/qtool.json"
rm -rf "$WORK/out-fp8"

# llama.cpp's quantizer, built from the llama-cpp-python sdist (PyPI).
LC=$WORK/llama.cpp
if [ ! -x "$LC/build/bin/llama-quantize" ]; then
  python3 -m pip download -q --no-deps --no-binary :all: llama-cpp-python -d "$WORK/sdist"
  rm -rf "$WORK/sdist-x" && mkdir -p "$WORK/sdist-x" && tar -xzf "$WORK"/sdist/llama_cpp_python-*.tar.gz -C "$WORK/sdist-x"
  rm -rf "$LC" && mv "$WORK"/sdist-x/*/vendor/llama.cpp "$LC"
  cmake -S "$LC" -B "$LC/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF >/dev/null
  cmake --build "$LC/build" --target llama-quantize >/dev/null
fi
python3 -m pip install -q gguf
[ -f "$WORK/model-$SIZE-bf16.gguf" ] || python3 bench/st_to_gguf.py "$M" "$WORK/model-$SIZE-bf16.gguf"
cat "$WORK/model-$SIZE-bf16.gguf" > /dev/null
rm -f "$WORK/q8.gguf"
python3 bench/peak_anon.py --label llama-quantize-Q8_0 -- sh -c "$LC/build/bin/llama-quantize $WORK/model-$SIZE-bf16.gguf $WORK/q8.gguf Q8_0 $(nproc) >/dev/null 2>&1 && sync" | tee "$WORK/llamacpp.json"
rm -f "$WORK/q8.gguf"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB"
