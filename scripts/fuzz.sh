#!/usr/bin/env bash
# Builds the libFuzzer targets with clang + ASan/UBSan into build-fuzz/ (separate from build/)
# and runs each asked-for target for a bounded time (not part of ctest).
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#   SECONDS per target (default 60); TARGET among: safetensors gguf config tokenizer dataset stats
#   (default: all). Corpora grow in build-fuzz/corpus-TARGET/; seeds come from testdata/ and from
#   small files written here (no binary files in the repository).
# JOBS=N: parallel compile jobs for the instrumented build (default 2; ccache is used when present).
# Exit status: 0 if no target found a crash; otherwise 1 (crash-* files in build-fuzz/).
# Works with Debian 12's clang 14 (tests/fuzz/README.md records runs and findings).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(safetensors gguf config tokenizer dataset stats)
command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not found (apt-get install clang)"; exit 1; }
GEN=(); command -v ninja >/dev/null && GEN=(-G Ninja)
LAUNCH=(); command -v ccache >/dev/null && LAUNCH=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
if [ ! -f build-fuzz/CMakeCache.txt ]; then
  cmake -S . -B build-fuzz "${GEN[@]}" "${LAUNCH[@]}" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS="-fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined" \
    -DQTOOL_FUZZERS=ON -DQTOOL_TESTS=OFF -DQTOOL_OPENMP=OFF -DQTOOL_CUDA=OFF >/dev/null
fi
bin() {
  case $1 in
    safetensors) echo fuzz_safetensors_header ;; gguf) echo fuzz_gguf ;; config) echo fuzz_config_json ;;
    tokenizer) echo fuzz_tokenizer_json ;; dataset) echo fuzz_dataset ;; stats) echo fuzz_stats_file ;;
    *) echo "fuzz.sh: unknown target '$1'" >&2; exit 2 ;;
  esac
}
BINS=(); for t in "${TARGETS[@]}"; do BINS+=("$(bin "$t")"); done
nice cmake --build build-fuzz -j"${JOBS:-2}" --target "${BINS[@]}"

# ---- seeds ---------------------------------------------------------------------------------
S=build-fuzz/seeds
rm -rf "$S"; mkdir -p "$S"/{safetensors,gguf,config,tokenizer,dataset,stats}
st_seed() {  # st_seed NAME HEADER DATA: writes u64 LE len(HEADER), HEADER, DATA
  local n=${#2}
  printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x\\x00\\x00\\x00\\x00' $((n & 255)) $((n >> 8 & 255)) $((n >> 16 & 255)) $((n >> 24 & 255)))" >"$S/safetensors/$1"
  printf '%s%s' "$2" "$3" >>"$S/safetensors/$1"
}
st_seed empty '{}      ' ''
st_seed one '{"__metadata__":{"format":"pt"},"w":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]}}' '01234567'
st_seed zero '{"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"s":{"dtype":"I64","shape":[],"data_offsets":[0,8]}}' 'abcdefgh'
st_seed gap '{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"F4","shape":[4],"data_offsets":[4,6]}}' '123456'
printf 'version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n' >"$S/safetensors/lfs"
cp testdata/gguf/*.gguf testdata/convert/*.gguf "$S/gguf/"
for d in testdata/forward/*/; do cp "$d/config.json" "$S/config/$(basename "$d").json"; done
# A tiny model's tokenizer.json and config.json, when a qtool is built.
if [ -x build/tools/qtool ]; then
  T=build-fuzz/tiny; rm -rf "$T"
  build/tools/qtool tiny-model "$T" >/dev/null
  cp "$T/tokenizer.json" "$S/tokenizer/tiny.json"; cp "$T/config.json" "$S/config/tiny.json"
fi
printf '{"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]},"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"use_regex":true}}' >"$S/tokenizer/min.json"
# Datasets: first byte picks the reader (0 txt, 1 jsonl, 2 txt.zst, 3 jsonl.zst).
printf '\x00first doc\n\nsecond doc\n' >"$S/dataset/txt"
printf '\x01{"text": "hello"}\n{"messages": [{"role": "user", "content": "hi"}]}\n' >"$S/dataset/jsonl"
{ printf '\x02'; head -c 2000 testdata/tokenizers/corpus.txt | zstd -q -c; } >"$S/dataset/txtzst" 2>/dev/null || true
# Statistics files (JSON; the target compresses it unless the first byte is 0).
printf '\x01{"format":"qtool-activation-stats","version":1,"model_fingerprint":"f","observer":"static_minmax","data":{"source":"built-in","sha256":"ab","num_samples":4,"seq_len":32,"tokens":128,"seed":0},"input_absmax":{"m.q_proj":3.25},"k_absmax":{"m":1.5},"v_absmax":{"m":0.5},"channel_min":{"n":[-1,0]},"channel_max":{"n":[2,0.5]}}' >"$S/stats/good"
printf '\x00not zstd' >"$S/stats/raw"

rc=0
for t in "${TARGETS[@]}"; do
  b=$(bin "$t"); C=build-fuzz/corpus-$t; mkdir -p "$C"
  DICT=(); [ "$t" = safetensors ] && DICT=(-dict=tests/fuzz/safetensors.dict)
  MAXLEN=65536; [ "$t" = gguf ] && MAXLEN=262144
  echo "== $t ($b, ${SECS}s)"
  ASAN_OPTIONS=detect_leaks=1 "build-fuzz/tests/fuzz/$b" -max_total_time="$SECS" -max_len="$MAXLEN" \
    -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 "${DICT[@]}" -artifact_prefix="build-fuzz/$t-" \
    "$C" "$S/$t" || rc=1
done
exit $rc
