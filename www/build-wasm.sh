#!/usr/bin/env bash
# Builds the wasm core into www/pkg/ (wasm-bindgen, ES module for the worker).
# Usage: www/build-wasm.sh [cargo-profile]   (default wasm-release: small; tests use dev: quick)
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-wasm-release}"
want="$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')"
have="$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)"
if [ "$have" != "$want" ]; then
  echo "installing wasm-bindgen-cli $want (the version in Cargo.lock)" >&2
  cargo install wasm-bindgen-cli --version "$want"
fi
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true
cargo rustc --target wasm32-unknown-unknown -p sdweb --lib --crate-type cdylib --profile "$profile"
dir="$profile"; [ "$profile" = dev ] && dir=debug
wasm-bindgen --target web --no-typescript --out-dir www/pkg \
  "${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/$dir/sdweb.wasm"
ls -l www/pkg >&2
