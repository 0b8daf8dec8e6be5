#!/usr/bin/env bash
# Configures and builds qtool into build/ (Release-with-debug-info). Extra args go to cmake.
set -euo pipefail
cd "$(dirname "$0")/.."
GEN=(); command -v ninja >/dev/null && GEN=(-G Ninja)
if [ ! -f build/CMakeCache.txt ]; then cmake -S . -B build "${GEN[@]}" "$@" >/dev/null; fi
cmake --build build -j"$(nproc)"
