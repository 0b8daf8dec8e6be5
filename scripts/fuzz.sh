#!/usr/bin/env bash
# Builds the libFuzzer targets with clang + ASan/UBSan into build-fuzz/ (separate from build/)
# and runs the safetensors header fuzzer for a bounded time.
# Usage: scripts/fuzz.sh [SECONDS]      (default 60; the corpus grows in build-fuzz/corpus/)
# Exit status: 0 if no crash was found; libFuzzer's non-zero status (and a crash-* file in
# build-fuzz/) otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not found (apt-get install clang)"; exit 1; }
GEN=(); command -v ninja >/dev/null && GEN=(-G Ninja)
if [ ! -f build-fuzz/CMakeCache.txt ]; then
  cmake -S . -B build-fuzz "${GEN[@]}" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS="-fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined" \
    -DQTOOL_FUZZERS=ON -DQTOOL_TESTS=OFF -DQTOOL_OPENMP=OFF -DQTOOL_CUDA=OFF >/dev/null
fi
cmake --build build-fuzz -j2 --target fuzz_safetensors_header

# Seed corpus, written here (no binary files in the repository): the empty file, a one-tensor
# file with metadata, a zero-size + scalar file, a bad-offsets file and an LFS pointer.
SEEDS=build-fuzz/seeds; CORPUS=build-fuzz/corpus
mkdir -p "$SEEDS" "$CORPUS"
seed() {  # seed NAME HEADER DATA: writes u64 LE len(HEADER), HEADER, DATA
  local n=${#2}
  printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x\\x00\\x00\\x00\\x00' $((n & 255)) $((n >> 8 & 255)) $((n >> 16 & 255)) $((n >> 24 & 255)))" >"$SEEDS/$1"
  printf '%s%s' "$2" "$3" >>"$SEEDS/$1"
}
seed empty '{}      ' ''
seed one '{"__metadata__":{"format":"pt"},"w":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]}}' '01234567'
seed zero '{"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"s":{"dtype":"I64","shape":[],"data_offsets":[0,8]}}' 'abcdefgh'
seed gap '{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"F4","shape":[4],"data_offsets":[4,6]}}' '123456'
printf 'version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n' >"$SEEDS/lfs"

ASAN_OPTIONS=detect_leaks=1 build-fuzz/tests/fuzz/fuzz_safetensors_header \
  -max_total_time="$SECS" -max_len=4096 -rss_limit_mb=2048 -print_final_stats=1 \
  -dict=tests/fuzz/safetensors.dict -artifact_prefix=build-fuzz/ "$CORPUS" "$SEEDS"
