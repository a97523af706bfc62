#!/usr/bin/env bash
# Measures two (or more) builds of `crosswire serve` side by side in one run: for each round,
# each build in turn serves on a fresh port (pinned to one core, `--threads 1`) while
# `crosswire-bench` (pinned to the other core) runs the chosen scenarios against it. Prints,
# per scenario and build, the server CPU per delivery or ack (idle: server bytes per
# connection) of every round and their mean.
#
#   scripts/bench-compare.sh ROUNDS OUTDIR label=DIR [label=DIR ...]
#
# DIR holds a release `crosswire` binary, e.g. a worktree of the previous commit:
#
#   git worktree add /tmp/base HEAD~1 && (cd /tmp/base && cargo build --release -p crosswire-cli)
#   cargo build --release -p crosswire-cli -p crosswire-bench
#   scripts/bench-compare.sh 4 /tmp/cmp base=/tmp/base/target/release new=target/release
#
# Environment:
#   SCENARIOS  space-separated, of burst echo fanout idle (default: "burst echo")
#   IDLE_N     connections of the idle scenario (default 10000)
#   BENCH      the crosswire-bench binary (default: target/release/crosswire-bench)
#
# Everything runs on 127.0.0.1 and every scenario is bounded by a timeout. The JSON reports
# stay in OUTDIR (`crosswire-bench table OUTDIR/*.json` prints them as a table).
set -euo pipefail

if [[ $# -lt 3 ]]; then
  sed -n '2,14p' "$0" >&2
  exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS=$1
OUT=$2
shift 2
BENCH="${BENCH:-$ROOT/target/release/crosswire-bench}"
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

pin_server=()
pin_bench=()
if command -v taskset >/dev/null && [[ "$(nproc)" -ge 2 ]]; then
  pin_server=(taskset -c 1)
  pin_bench=(taskset -c 0)
fi

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

args_of() {
  case $1 in
    burst) echo "--messages 2000 --receivers 1000" ;;
    echo) echo "--clients 100 --in-flight 4 --duration 8s" ;;
    fanout) echo "--receivers 1000 --rate 200 --size 100 --duration 10s" ;;
    idle) echo "--connections ${IDLE_N:-10000}" ;;
    *) echo "unknown scenario $1" >&2; return 1 ;;
  esac
}

for round in $(seq 1 "$ROUNDS"); do
  for spec in "$@"; do
    label=${spec%%=*}
    dir=${spec#*=}
    port=""
    for _ in $(seq 1 50); do
      candidate=$((20000 + RANDOM % 20000))
      if ! port_in_use "$candidate"; then port=$candidate; break; fi
    done
    [[ -n "$port" ]] || { echo "no free port found" >&2; exit 1; }
    "${pin_server[@]}" "$dir/crosswire" serve --port "$port" --threads 1 >"$OUT/$label.$round.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 50); do port_in_use "$port" && break; sleep 0.1; done
    for scenario in ${SCENARIOS:-burst echo}; do
      # shellcheck disable=SC2046
      timeout 180 "${pin_bench[@]}" "$BENCH" "$scenario" --url "ws://127.0.0.1:$port" \
        $(args_of "$scenario") --server-pid "$pid" \
        --json-out "$OUT/$scenario.$label.$round.json" >/dev/null 2>&1 ||
        echo "$scenario against $label (round $round) failed" >&2
    done
    kill "$pid"
    wait "$pid" 2>/dev/null || true
  done
done

python3 - "$OUT" <<'PY'
import collections, glob, json, sys
rows = collections.defaultdict(list)
for path in sorted(glob.glob(sys.argv[1] + "/*.json")):
    scenario, label, _round, _ = path.rsplit("/", 1)[-1].split(".")
    report = json.load(open(path))
    # idle: server bytes per connection; the others: server CPU µs per delivery or ack
    value = report["results"].get("server_bytes_per_connection", report["server"]["cpu_us_per_op"])
    rows[(scenario, label)].append(value)
for (scenario, label), values in sorted(rows.items()):
    mean = sum(values) / len(values)
    print(f"{scenario:7} {label:10} mean {mean:7.3f}  rounds " + " ".join(f"{v:.3f}" for v in values))
PY
