#!/usr/bin/env bash
# The whole default test suite: bootstrap (Debian packages + the Python tier's pip packages),
# build, every C++ test with ctest, then the Python tier (real clients reading what qtool
# writes: safetensors, compressed-tensors, transformers, gguf). Under ~10 minutes on 2 cores
# once the packages are installed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --python
scripts/build.sh
(cd build && ctest --output-on-failure -j"$(nproc)")
python3 scripts/skip_summary.py build   # ctest says only "(Skipped)"; this prints each reason
# QTOOL_STRICT=1: a qtool command that fails inside the Python tier is a failure, not a skip.
QTOOL_STRICT=1 QTOOL_BINARY="$PWD/build/tools/qtool" QTOOL_ST_ROUNDTRIP="$PWD/build/tests/qtool_st_roundtrip" \
  python3 -m pytest -q -rs tests/python   # -rs: every skip with its reason
