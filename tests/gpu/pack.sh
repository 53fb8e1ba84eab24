#!/usr/bin/env bash
# Prepares what the GPU benchmark needs on a machine without internet, in .gpu/ (git-ignored,
# under 64 MiB): the stripped, xz-compressed release binary of sdweb (built here, on a CPU
# machine) and the wheels of diffusers, transformers and their dependencies for CPython
# 3.10-3.13 on x86-64 Linux (torch and numpy are expected on the GPU machine). Then run
# tests/gpu/run.sh there, carrying .gpu/.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .gpu/wheels
cargo build --release -p sdweb --bin sdweb
strip -o .gpu/sdweb target/release/sdweb
xz -9 -T0 -f .gpu/sdweb
PY=${PYTHON:-python3}
for version in 3.10 3.11 3.12 3.13; do
  "$PY" -m pip download -q --dest .gpu/wheels --only-binary=:all: --python-version "$version" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    diffusers transformers
done
# torch ships numpy's role on the GPU machine; its wheels would be 60 MB here.
rm -f .gpu/wheels/numpy-*.whl
du -sh .gpu .gpu/sdweb.xz .gpu/wheels
