#!/usr/bin/env bash
# The GPU benchmark on a machine with a GPU (Vulkan), Python 3.11+ and torch: unpacks the sdweb
# binary that tests/gpu/pack.sh put in .gpu/, installs the carried wheels (diffusers; with
# SDWEB_GPU_PYTHON at pack time transformers too) into a venv over the system's packages when
# diffusers is missing (pip takes the rest from the system), and runs bench.py
# (results: the table on stdout, JSON in $OUT or the work folder). Arguments go to bench.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
PACK=${SDWEB_GPU_PACK:-.gpu}
WORK=${SDWEB_GPU_WORK:-/tmp/sdweb-gpubench}
RESULTS=${OUT:-$WORK}
mkdir -p "$WORK" "$RESULTS"
BIN=$WORK/sdweb
if [ ! -x "$BIN" ]; then
  xz -dc "$PACK/sdweb.xz" > "$BIN.partial" && chmod +x "$BIN.partial" && mv "$BIN.partial" "$BIN"
fi
PY=${PYTHON:-python3}
if ! "$PY" -c "import diffusers, transformers" 2>/dev/null; then
  "$PY" -m venv --system-site-packages "$WORK/venv"
  "$WORK/venv/bin/pip" install -q --no-index --find-links "$PACK/wheels" diffusers transformers
  PY=$WORK/venv/bin/python
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
"$BIN" --version
exec "$PY" tests/gpu/bench.py --sdweb "$BIN" --work "$WORK" --json "$RESULTS/results.json" "$@"
