#!/usr/bin/env bash
# The whole default test suite: bootstrap, build, run every C++ test with ctest, then the
# Python tier (real clients reading what qtool writes). Under ~10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --python
scripts/build.sh
(cd build && ctest --output-on-failure -j"$(nproc)")
if [ -d tests/python ] && ls tests/python/test_*.py >/dev/null 2>&1; then
  QTOOL_BINARY="$PWD/build/tools/qtool" QTOOL_ST_ROUNDTRIP="$PWD/build/tests/qtool_st_roundtrip" \
    python3 -m pytest -q tests/python
fi
