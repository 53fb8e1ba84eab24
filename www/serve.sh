#!/usr/bin/env bash
# Builds the wasm core (small release build) and serves the app on http://127.0.0.1:8080/.
# Usage: www/serve.sh [--port N] [--host H]     (SDWEB_WASM_PROFILE=dev for a quicker build)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v node >/dev/null || { echo "node is missing: apt-get install nodejs (Node 18+)" >&2; exit 1; }
./www/build-wasm.sh "${SDWEB_WASM_PROFILE:-wasm-release}"
exec node tools/server.mjs "$@"
