#!/usr/bin/env bash
# Runs the end-to-end tests of the demo page and then of the admin dashboard in headless
# Chromium: installs Debian's chromium package when /usr/bin/chromium is missing, the npm dev
# dependencies (playwright-core, ws) when node_modules lacks them, builds the `crosswire` binary
# when it is missing, then runs `node --test` on each. Each test starts its own redis-server
# and two `crosswire serve` nodes on free ports. Screenshots: <repo>/test-artifacts/.
set -euo pipefail
cd "$(dirname "$0")"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to install packages: $*" >&2; return 1; fi
}

if [ -z "${CHROMIUM_BIN:-}" ] && [ ! -x /usr/bin/chromium ]; then
  echo "== installing chromium (Debian package)"
  if ! command -v apt-get >/dev/null; then
    echo "apt-get not found: install Chromium by hand and set CHROMIUM_BIN" >&2
    exit 1
  fi
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

if ! command -v redis-server >/dev/null; then
  echo "redis-server not found: install it (scripts/test.sh does)" >&2
  exit 1
fi

if ! command -v node >/dev/null; then
  echo "node not found: install Node.js 20 or later" >&2
  exit 1
fi

if [ ! -d node_modules/playwright-core ] || [ ! -d node_modules/ws ]; then
  echo "== npm ci (clients/browser-test)"
  npm ci --no-audit --no-fund
fi

if [ -z "${CROSSWIRE_BIN:-}" ] && [ ! -x ../../target/debug/crosswire ]; then
  echo "== cargo build -p crosswire-cli"
  (cd ../.. && cargo build -p crosswire-cli)
fi

echo "== node --test (clients/browser-test)"
node --test demo.test.mjs
echo "== node --test admin.test.mjs (clients/browser-test)"
node --test admin.test.mjs
