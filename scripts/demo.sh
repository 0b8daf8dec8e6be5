#!/usr/bin/env bash
# The main job on the embedded default: build qtool, write the bundled tiny model, quantize it
# to FP8 (dynamic per-token activations, per-channel weights), inspect the result and verify it
# against the original (exit status 1 if a verification gate fails).
# Usage: scripts/demo.sh [SCHEME] [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
SCHEME=${1:-fp8-dynamic}
WORK=${2:-${TMPDIR:-/tmp}/qtool-demo}
scripts/bootstrap.sh
scripts/build.sh
Q=build/tools/qtool
rm -rf "$WORK" && mkdir -p "$WORK"
$Q tiny-model "$WORK/tiny"
$Q quantize "$WORK/tiny" -o "$WORK/tiny-$SCHEME" --scheme "$SCHEME"
$Q inspect "$WORK/tiny-$SCHEME" --scales
$Q verify "$WORK/tiny-$SCHEME" --reference "$WORK/tiny"
