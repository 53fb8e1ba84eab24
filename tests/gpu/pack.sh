#!/usr/bin/env bash
# Prepares what the GPU benchmark needs on a machine without internet, in .gpu/ (git-ignored):
# the stripped, xz-compressed release binary of sdweb (built here, on a CPU machine) and the
# diffusers wheel (pure Python, CPython 3.11+), the one package a PyTorch machine usually
# lacks: 9 + 6 MB. For a machine without transformers either, SDWEB_GPU_PYTHON=3.12 (its
# Python version) adds transformers and every dependency except numpy for that version
# (43 MB for 3.12). Then carry .gpu/ and run tests/gpu/run.sh there.
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .gpu && mkdir -p .gpu/wheels
cargo build --release -p sdweb --bin sdweb
strip -o .gpu/sdweb target/release/sdweb
xz -9 -T0 -f .gpu/sdweb
PY=${PYTHON:-python3}
# The versions the fixtures were made with (tests/fixtures/reference).
PINS=(diffusers==0.42.1 transformers==5.24.0)
if [ -n "${SDWEB_GPU_PYTHON:-}" ]; then
  "$PY" -m pip download -q --dest .gpu/wheels --only-binary=:all: --python-version "$SDWEB_GPU_PYTHON" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 "${PINS[@]}"
  rm -f .gpu/wheels/numpy-*.whl   # torch's machines have numpy (60 MB here)
else
  "$PY" -m pip download -q --dest .gpu/wheels --no-deps --only-binary=:all: "${PINS[0]}"
fi
du -sh .gpu .gpu/sdweb.xz .gpu/wheels
