#!/usr/bin/env bash
# Configures and builds qtool into build/ (Release-with-debug-info).
# Usage: scripts/build.sh [--target T]... [CMAKE_ARGS...]   (no --target: everything, tests included;
# CMAKE_ARGS are used when build/ is first configured)
set -euo pipefail
cd "$(dirname "$0")/.."
GEN=(); command -v ninja >/dev/null && GEN=(-G Ninja)
TARGETS=(); CMAKE_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --target) TARGETS+=(--target "$2"); shift 2 ;;
    *) CMAKE_ARGS+=("$1"); shift ;;
  esac
done
if [ ! -f build/CMakeCache.txt ]; then cmake -S . -B build "${GEN[@]}" "${CMAKE_ARGS[@]}" >/dev/null; fi
cmake --build build -j"$(nproc)" "${TARGETS[@]}"
