#!/usr/bin/env bash
# Runs the JavaScript client's tests: installs the dev dependencies (esbuild, ws) when missing,
# builds dist/, makes sure the `crosswire` binary exists, then runs `node --test`.
# The relay tests start ../../target/debug/crosswire (override with CROSSWIRE_BIN).
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v node >/dev/null; then
  echo "node not found: install Node.js 18 or later" >&2
  exit 1
fi

if [ ! -d node_modules/esbuild ] || [ ! -d node_modules/ws ]; then
  echo "== npm ci (clients/js)"
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
fi

echo "== build clients/js"
node build.mjs

if [ -z "${CROSSWIRE_BIN:-}" ] && [ ! -x ../../target/debug/crosswire ]; then
  echo "== cargo build -p crosswire-cli"
  (cd ../.. && cargo build -p crosswire-cli)
fi

echo "== node --test (clients/js)"
node --test test/*.test.mjs
