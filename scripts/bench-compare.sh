#!/usr/bin/env bash
# Measures two (or more) builds of `crosswire serve` side by side in one run: for each round,
# each build in turn serves on a fresh port (pinned to one core, `--threads 1`) while
# `crosswire-bench` (pinned to the other core) runs the chosen scenarios against it. Prints,
# per scenario and build, the server CPU per delivery or ack (idle: server bytes per
# connection) of every round and their mean, then the bytes the clients read per delivery or
# ack and, when the server compressed anything, what permessage-deflate made of it.
#
#   scripts/bench-compare.sh ROUNDS OUTDIR label=DIR [label=DIR ...]
#
# DIR holds a release `crosswire` binary, e.g. a worktree of the previous commit:
#
#   git worktree add /tmp/base HEAD~1 && (cd /tmp/base && cargo build --release -p crosswire-cli)
#   cargo build --release -p crosswire-cli -p crosswire-bench
#   scripts/bench-compare.sh 4 /tmp/cmp base=/tmp/base/target/release new=target/release
#
# A label (letters, digits, `_`) may also stand for a configuration of the same build: give
# it extra flags in SERVER_ARGS_<label> (for `crosswire serve`) and BENCH_ARGS_<label> (for
# `crosswire-bench`). When the server flags contain --tls-cert, the bench connects with
# wss://. TLS and permessage-deflate against plain WebSockets, in one run:
#
#   target/release/crosswire-bench gen-certs /tmp/certs
#   SERVER_ARGS_tls="--tls-cert /tmp/certs/server.pem --tls-key /tmp/certs/server.key" \
#   BENCH_ARGS_tls="--ca-file /tmp/certs/ca.pem" \
#   SERVER_ARGS_deflate="--permessage-deflate" BENCH_ARGS_deflate="--permessage-deflate" \
#   scripts/bench-compare.sh 3 /tmp/cmp plain=target/release tls=target/release deflate=target/release
#
# Environment:
#   SCENARIOS   space-separated, of burst echo fanout idle (default: "burst echo")
#   IDLE_N      connections of the idle scenario (default 10000)
#   BURST_ARGS, ECHO_ARGS, FANOUT_ARGS, IDLE_ARGS
#               replace a scenario's load flags for every label (defaults below, in args_of),
#               e.g. FANOUT_ARGS="--receivers 1000 --rate 200 --size 1000 --duration 10s"
#   SERVER_ARGS, BENCH_ARGS
#               extra flags for every label (e.g. BENCH_ARGS="--padding words")
#   SERVER_ARGS_<label>, BENCH_ARGS_<label>
#               extra flags for one label, after the ones above
#   BENCH       the crosswire-bench binary (default: target/release/crosswire-bench)
# Flag lists are split on whitespace (no quoting: paths with spaces are not supported).
#
# Everything runs on 127.0.0.1 and every scenario is bounded by a timeout. The JSON reports
# stay in OUTDIR (`crosswire-bench table OUTDIR/*.json` prints them as a table), the server
# logs too (`<label>.<round>.log`).
set -euo pipefail

if [[ $# -lt 3 ]]; then
  sed -n '2,43p' "$0" >&2
  exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source-path=SCRIPTDIR disable=SC1091 # followed with shellcheck -x
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROUNDS=$1
OUT=$2
shift 2
BENCH="${BENCH:-$ROOT/target/release/crosswire-bench}"
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

for spec in "$@"; do
  label=${spec%%=*}
  if [[ "$spec" != *=* || ! "$label" =~ ^[A-Za-z0-9_]+$ ]]; then
    echo "bad build spec '$spec': expected label=DIR, the label of letters, digits and _" >&2
    exit 2
  fi
done

pin_server=()
pin_bench=()
if command -v taskset >/dev/null && [[ "$(nproc)" -ge 2 ]]; then
  pin_server=(taskset -c 1)
  pin_bench=(taskset -c 0)
fi

args_of() {
  case $1 in
    burst) echo "${BURST_ARGS:---messages 2000 --receivers 1000}" ;;
    echo) echo "${ECHO_ARGS:---clients 100 --in-flight 4 --duration 8s}" ;;
    fanout) echo "${FANOUT_ARGS:---receivers 1000 --rate 200 --size 100 --duration 10s}" ;;
    idle) echo "${IDLE_ARGS:---connections ${IDLE_N:-10000}}" ;;
    *) echo "unknown scenario $1" >&2; return 1 ;;
  esac
}

# The value of the variable named $1, or nothing.
var_of() { printf '%s' "${!1:-}"; }

for round in $(seq 1 "$ROUNDS"); do
  for spec in "$@"; do
    label=${spec%%=*}
    dir=${spec#*=}
    read -ra server_args <<<"${SERVER_ARGS:-} $(var_of "SERVER_ARGS_$label")"
    read -ra bench_args <<<"${BENCH_ARGS:-} $(var_of "BENCH_ARGS_$label")"
    scheme=ws
    [[ " ${server_args[*]} " == *" --tls-cert "* ]] && scheme=wss
    port=$(free_port)
    "${pin_server[@]}" "$dir/crosswire" serve --port "$port" --threads 1 "${server_args[@]}" \
      >"$OUT/$label.$round.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 50); do port_in_use "$port" && break; sleep 0.1; done
    for scenario in ${SCENARIOS:-burst echo}; do
      read -ra load <<<"$(args_of "$scenario")"
      timeout 180 "${pin_bench[@]}" "$BENCH" "$scenario" --url "$scheme://127.0.0.1:$port" \
        "${load[@]}" "${bench_args[@]}" --server-pid "$pid" \
        --json-out "$OUT/$scenario.$label.$round.json" >"$OUT/$scenario.$label.$round.txt" 2>&1 ||
        echo "$scenario against $label (round $round) failed: see $OUT/$scenario.$label.$round.txt" >&2
    done
    kill "$pid"
    wait "$pid" 2>/dev/null || true
  done
done

python3 - "$OUT" "$@" <<'PY'
import collections, glob, json, sys
out, specs = sys.argv[1], sys.argv[2:]
order = {spec.split("=", 1)[0]: i for i, spec in enumerate(specs)}
rows = collections.defaultdict(list)
for path in sorted(glob.glob(out + "/*.json")):
    scenario, label, _round, _ = path.rsplit("/", 1)[-1].split(".")
    if label not in order:
        continue  # a report of an earlier run with other labels
    rows[(scenario, label)].append(json.load(open(path)))

def mean(values):
    return sum(values) / len(values) if values else float("nan")

for (scenario, label), reports in sorted(rows.items(), key=lambda kv: (kv[0][0], order[kv[0][1]])):
    # idle: server bytes per connection; the others: server CPU µs per delivery or ack
    values = [r["results"].get("server_bytes_per_connection", (r.get("server") or {}).get("cpu_us_per_op")) for r in reports]
    values = [v for v in values if v is not None]
    line = f"{scenario:7} {label:10} mean {mean(values):7.3f}  rounds " + " ".join(f"{v:.3f}" for v in values)
    wire = [r["results"]["wire"]["read_per_op"] for r in reports if (r["results"].get("wire") or {}).get("read_per_op")]
    if wire:
        line += f"  | clients read {mean(wire):.1f} B/op"
    written = [r["results"]["wire"]["written_per_op"] for r in reports if (r["results"].get("wire") or {}).get("written_per_op")]
    if written:
        line += f", wrote {mean(written):.1f} B/op"
    stats = [r["results"].get("server_stats") or {} for r in reports]
    bytes_in = sum(s.get("compressed_bytes_in", 0) for s in stats)
    if bytes_in:
        bytes_out = sum(s.get("compressed_bytes_out", 0) for s in stats)
        messages = sum(s.get("compressed_messages", 0) for s in stats)
        line += f" | deflate: {messages} messages, {bytes_in} -> {bytes_out} B ({100 * bytes_out / bytes_in:.1f}%)"
    print(line)
PY
