#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine: installs what the tests need when it
# is missing (redis-server and redis-cli, nats-server, nginx, the Autobahn runner kosoku in a venv; Node.js and npm;
# Chromium and the npm dev dependencies of the JavaScript tests), then checks formatting,
# lints, docs, and runs the whole suite: the Rust tests (the Autobahn TestSuite in the
# background beside the others), the JavaScript client's tests and the browser test of the
# demo page.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to install packages: $*" >&2; return 1; fi
}

apt_install() {
  if ! command -v apt-get >/dev/null; then
    echo "apt-get not found: install $* by hand" >&2
    return 1
  fi
  if [ -z "${APT_UPDATED:-}" ]; then
    as_root apt-get update -qq
    APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# redis-cli (Debian's redis-tools, a dependency of redis-server) makes the Redis Cluster the
# tests start (3 masters, 3 replicas: redis-server in cluster mode).
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "== installing redis-server and redis-cli"
  apt_install redis-server redis-tools
fi
# Debian's nats-server lives in /usr/sbin; the NATS tests start their own processes.
if ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then
  echo "== installing nats-server"
  apt_install nats-server
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    as_root systemctl disable --now nats-server >/dev/null 2>&1 || true
  fi
fi
# The tests start their own redis-server processes on free ports; never the system service.
# nginx: Debian's binary is /usr/sbin/nginx, not on an unprivileged user's PATH.
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  echo "== installing nginx"
  apt_install nginx
  # Under systemd the package starts (and enables) the system service on port 80; the tests
  # never use it, so it is stopped and disabled again.
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    as_root systemctl disable --now nginx >/dev/null 2>&1 || true
  fi
fi
# The reverse-proxy test starts its own nginx process on a free port; never the system service.

# The Autobahn TestSuite (RFC 6455 conformance, examples/autobahn-echo/tests/autobahn.rs, run
# by `cargo test` below): its case files are driven by kosoku (PyPI) from a venv of its own,
# reused while it has this version. A venv given in AUTOBAHN_VENV is used as it is.
KOSOKU_VERSION=0.1.0
if [ -z "${AUTOBAHN_VENV:-}" ]; then
  autobahn_venv="${CARGO_TARGET_DIR:-target}/autobahn-venv"
  if [ "$("$autobahn_venv/bin/python" -c \
    'import importlib.metadata as m; print(m.version("kosoku"))' 2>/dev/null)" != "$KOSOKU_VERSION" ]; then
    echo "== installing kosoku $KOSOKU_VERSION in $autobahn_venv"
    command -v python3 >/dev/null || apt_install python3
    rm -rf "$autobahn_venv"
    # Debian's python3 makes venvs (with pip) only with python3-venv installed.
    if ! python3 -m venv "$autobahn_venv" >/dev/null 2>&1; then
      rm -rf "$autobahn_venv"
      apt_install python3-venv
      python3 -m venv "$autobahn_venv"
    fi
    "$autobahn_venv/bin/pip" install --quiet --disable-pip-version-check "kosoku==$KOSOKU_VERSION"
  fi
  AUTOBAHN_VENV="$(realpath "$autobahn_venv")"
  export AUTOBAHN_VENV
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

echo "== cargo test"
# Everything is built first, so that the two runs below never wait on each other's build.
cargo test --workspace --locked --no-run
# The Autobahn TestSuite (examples/autobahn-echo, about 4.5 minutes) is bound by its runner's
# own work, about one core of two: it runs in the background, in a process group of its own,
# beside the rest of the suite, and its result is reported at the end.
autobahn_log="$(mktemp)"
# (`--workspace --test autobahn`, not `-p autobahn-echo`: the same features as the build above,
# so nothing is compiled again; `--nocapture` shows its summary table.)
setsid cargo test --workspace --locked --test autobahn -- --nocapture >"$autobahn_log" 2>&1 &
autobahn_pid=$!
trap 'kill -- -"$autobahn_pid" 2>/dev/null || true; rm -f "$autobahn_log"' EXIT
# --no-fail-fast: one failing test binary does not hide the results of the others.
cargo test --workspace --exclude autobahn-echo --locked --no-fail-fast

# The JavaScript tests need Node.js and the `crosswire` binary, which `cargo test` has just
# built (built here when it is missing, e.g. with a different CARGO_TARGET_DIR layout).
if ! command -v node >/dev/null; then
  echo "== installing nodejs, npm"
  apt_install nodejs npm
fi
crosswire_bin="${CARGO_TARGET_DIR:-target}/debug/crosswire"
if [ -z "${CROSSWIRE_BIN:-}" ] && [ ! -x "$crosswire_bin" ]; then
  echo "== cargo build -p crosswire-cli"
  cargo build -p crosswire-cli --locked
fi
export CROSSWIRE_BIN="${CROSSWIRE_BIN:-$(realpath "$crosswire_bin")}"

echo "== JavaScript client tests (clients/js)"
clients/js/test.sh

# Installs Debian's chromium and playwright-core when missing.
echo "== browser tests of the demo page and the admin dashboard (clients/browser-test)"
clients/browser-test/test.sh

echo "== Autobahn TestSuite (examples/autobahn-echo, started with cargo test)"
autobahn_status=0
wait "$autobahn_pid" || autobahn_status=$?
cat "$autobahn_log"
if [ "$autobahn_status" -ne 0 ]; then
  echo "the Autobahn TestSuite failed (exit $autobahn_status)" >&2
  exit 1
fi

echo "== all tests passed"
