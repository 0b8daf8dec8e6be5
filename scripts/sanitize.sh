#!/usr/bin/env bash
# Builds qtool and the test suite with AddressSanitizer + UndefinedBehaviorSanitizer into
# build-asan/ (separate from build/; -DQTOOL_SANITIZE=ON, CUDA off) and runs the tests there.
#
#   scripts/sanitize.sh                 # every C++ test (slow: the suite runs ~3-5x slower)
#   TARGETS="test_output_folder test_input_file" scripts/sanitize.sh 'Output|Input'
#                                       # only these test programs built, the matching tests run (ctest -R)
#
# ASAN_OPTIONS / UBSAN_OPTIONS below make every finding fatal with a stack trace; a finding fails
# its test. detect_leaks stays on. Exit status: ctest's.
set -euo pipefail
cd "$(dirname "$0")/.."
FILTER=${1:-}
GEN=(); command -v ninja >/dev/null && GEN=(-G Ninja)
LAUNCH=(); command -v ccache >/dev/null && LAUNCH=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
if [ ! -f build-asan/CMakeCache.txt ]; then
  cmake -S . -B build-asan "${GEN[@]}" "${LAUNCH[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQTOOL_SANITIZE=ON \
    -DQTOOL_CUDA=OFF -DQTOOL_TESTS=ON >/dev/null
fi
JOBS=${JOBS:-2}
if [ -n "$FILTER" ] && [ -n "${TARGETS:-}" ]; then
  # shellcheck disable=SC2086
  nice cmake --build build-asan -j"$JOBS" --target qtool $TARGETS
else
  nice cmake --build build-asan -j"$JOBS"
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
cd build-asan
if [ -n "$FILTER" ]; then
  ctest -j"$JOBS" --output-on-failure -R "$FILTER"
else
  ctest -j"$JOBS" --output-on-failure
fi
