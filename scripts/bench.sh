#!/usr/bin/env bash
# Benchmarks a single crosswire node on loopback with crosswire-bench and prints a markdown
# table of the results.
#
#   scripts/bench.sh                 # build, start `crosswire serve`, run all four scenarios
#   BENCH_QUICK=1 scripts/bench.sh   # a much smaller load (smoke test, ~15 s)
#
# Environment:
#   BENCH_SERVER_CMD  command that starts the server under test, `{port}` is replaced by the
#                     port (default: "<target>/release/crosswire serve --port {port}")
#   BENCH_OUT         directory for the JSON reports and the server log (default: a temp dir)
#   BENCH_NO_BUILD=1  skip `cargo build --release`
#   CARGO_TARGET_DIR  cargo's target directory (default: ./target)
#   BENCH_QUIET_WAIT  seconds to wait, before each scenario, for the machine to be idle
#                     (other programs below 30% of a core); default 60, 0 to skip
#
# Everything runs on 127.0.0.1, every step is bounded by a timeout, and the server started
# here is stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source-path=SCRIPTDIR disable=SC1091 # followed with shellcheck -x
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BENCH="$TARGET/release/crosswire-bench"
OUT="${BENCH_OUT:-$(mktemp -d -t crosswire-bench.XXXXXX)}"
mkdir -p "$OUT"

if [[ "${BENCH_QUICK:-0}" == 1 ]]; then
  FANOUT=(--receivers 100 --rate 100 --size 100 --duration 2s)
  BURST=(--messages 200 --receivers 100)
  ECHO=(--clients 10 --in-flight 4 --duration 2s)
  IDLE=(--connections 500)
else
  FANOUT=(--receivers 1000 --rate 200 --size 100 --duration 10s)
  BURST=(--messages 2000 --receivers 1000)
  ECHO=(--clients 100 --in-flight 4 --duration 10s)
  IDLE=(--connections 10000)
fi

if [[ "${BENCH_NO_BUILD:-0}" != 1 ]]; then
  echo "building (release)..." >&2
  if [[ -z "${BENCH_SERVER_CMD:-}" ]]; then
    timeout 1200 cargo build --release -q -p crosswire-cli -p crosswire-bench
  else
    timeout 1200 cargo build --release -q -p crosswire-bench
  fi
fi

# Both processes need many file descriptors for the idle scenario (10,000 sockets each side).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

PORT=$(free_port)

placeholder="{port}"
SERVER_CMD="${BENCH_SERVER_CMD:-$TARGET/release/crosswire serve --port $placeholder}"
SERVER_CMD="${SERVER_CMD//"$placeholder"/$PORT}"
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT INT TERM

echo "starting: $SERVER_CMD" >&2
# shellcheck disable=SC2086 # the command is meant to be split into words
$SERVER_CMD >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 300); do
  port_in_use "$PORT" && break
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "server exited; log:" >&2; cat "$OUT/server.log" >&2; exit 1; }
  sleep 0.1
done
port_in_use "$PORT" || { echo "server did not listen on $PORT within 30 s" >&2; exit 1; }

URL="ws://127.0.0.1:$PORT"
COMMON=(--url "$URL" --server-pid "$SERVER_PID")
run() {
  local name=$1 quiet=${BENCH_QUIET_WAIT:-60}; shift
  echo >&2
  wait_quiet "$quiet" || echo "warning: machine still busy after ${quiet}s; results may be disturbed" >&2
  if ! timeout 180 "$BENCH" "$@" "${COMMON[@]}" --json-out "$OUT/$name.json"; then
    echo "scenario $name failed" >&2
    rm -f "$OUT/$name.json"
  fi
}

run fanout fanout "${FANOUT[@]}"
run burst burst "${BURST[@]}"
run echo echo "${ECHO[@]}"
run idle idle "${IDLE[@]}"

echo
echo "crosswire single node, loopback, $(nproc) cores; reports in $OUT"
echo
reports=()
for name in fanout burst echo idle; do
  [[ -f "$OUT/$name.json" ]] && reports+=("$OUT/$name.json")
done
if ((${#reports[@]} > 0)); then
  "$BENCH" table "${reports[@]}"
  echo
  echo "CPU figures are percent of one core; \"other load\" is CPU used by programs other than"
  echo "the server and the generator during the window (high values mean disturbed results)."
else
  echo "no scenario produced a report" >&2
  exit 1
fi
