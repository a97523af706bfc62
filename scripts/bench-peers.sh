#!/usr/bin/env bash
# crosswire against the servers a user would pick instead — Socket.IO 4.8 (Node.js, with
# @socket.io/redis-adapter) and socketioxide (Rust, with socketioxide-redis) — on identical
# loads in one run, and the ratios peer / crosswire in a markdown table (OUTDIR/peers.md).
#
#   scripts/bench-peers.sh [ROUNDS [OUTDIR]]       # default 3 rounds, target/bench-peers/run-<time>
#
# It installs the peers itself, under target/bench-peers/ (never committed): the Socket.IO app
# scripts/peers/socketio/server.js with `npm install socket.io@4.8 @socket.io/redis-adapter@8
# redis@4`, and the socketioxide app scripts/peers/socketioxide (its own Cargo workspace),
# built with --release. Both define the relay's events with the relay's semantics (`join`
# with an ack, `room` {room, data} → `msg` to the room's members on every node, `echo` with
# an ack); crosswire-bench drives them with `--protocol socketio` (Socket.IO v5 over
# Engine.IO v4, WebSocket only) and crosswire with its own protocol, the same scenarios,
# message sizes, stamps and measurements.
#
# Each round starts every server in turn (interleaved: crosswire, Socket.IO, socketioxide), a
# fresh process for every scenario, on one core (`taskset -c $SERVER_CPU`: crosswire with
# --threads 1, socketioxide on a current-thread runtime, Node.js being single-threaded anyway)
# with crosswire-bench on the other core (`taskset -c $BENCH_CPU`), as scripts/bench-compare.sh
# does, and runs:
#
#   fanout   1,000 receivers × 200 msg/s × 100 B for 10 s, one node
#   burst    2,000 messages → 1,000 receivers × 100 B, one node
#   echo     100 clients × 4 in flight × 32 B for 8 s, one node
#   idle     $IDLE_N connections (default 5,000) held 2 s, one node: server memory each
#   cluster  the fan-out over 2 nodes and one redis-server (started here, on the servers'
#            core): receivers split over both nodes, publisher on node 1; CPU of both nodes
#
# Environment:
#   SERVERS      which servers, in turn (default "crosswire socketio socketioxide")
#   SCENARIOS    which scenarios (default "fanout burst echo idle cluster")
#   IDLE_N       connections of the idle scenario (default 5000)
#   FANOUT_ARGS, BURST_ARGS, ECHO_ARGS, IDLE_ARGS
#                replace a scenario's load flags (the cluster scenario uses FANOUT_ARGS)
#   SERVER_CPU, BENCH_CPU
#                the cores of the servers (and redis-server) and of the bench (default 1, 0)
#   QUIET_WAIT   seconds to wait, before each scenario, for other programs to use less than
#                30% of a core (default 5; 0 to skip); reports say how busy the machine was
#   NO_BUILD=1   do not run `cargo build --release -p crosswire-cli -p crosswire-bench`
#   NO_INSTALL=1 reuse the peers already installed under target/bench-peers
#
# Everything runs on 127.0.0.1, every scenario is bounded by a timeout, and every process
# started here (servers, redis-server) is killed on exit. The JSON reports, server logs and
# peers.md stay in OUTDIR (`crosswire-bench table OUTDIR/*.json` prints the reports too).
set -euo pipefail

if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
  sed -n '2,45p' "$0"
  exit 0
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source-path=SCRIPTDIR disable=SC1091 # followed with shellcheck -x
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
COMMAND="scripts/bench-peers.sh $*"
for var in SERVERS SCENARIOS IDLE_N FANOUT_ARGS BURST_ARGS ECHO_ARGS IDLE_ARGS SERVER_CPU BENCH_CPU \
  QUIET_WAIT NO_BUILD NO_INSTALL; do
  [[ -n "${!var:-}" ]] && COMMAND="$var=\"${!var}\" $COMMAND"
done
ROUNDS=${1:-3}
STARTED=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${2:-$ROOT/target/bench-peers/run-$STARTED}
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
WORK="$ROOT/target/bench-peers"
BENCH="$TARGET/release/crosswire-bench"
CROSSWIRE="$TARGET/release/crosswire"
SERVERS=${SERVERS:-crosswire socketio socketioxide}
SCENARIOS=${SCENARIOS:-fanout burst echo idle cluster}
SERVER_CPU=${SERVER_CPU:-1}
BENCH_CPU=${BENCH_CPU:-0}
mkdir -p "$OUT" "$WORK"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
T0=$(date +%s)

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Stops the processes given (started here) and forgets them.
stop() {
  local pid keep=() p
  for pid in "$@"; do
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  for p in "${PIDS[@]}"; do
    [[ " $* " == *" $p "* ]] || keep+=("$p")
  done
  PIDS=("${keep[@]}")
}

pin_server=()
pin_bench=()
if command -v taskset >/dev/null && [[ "$(nproc)" -ge 2 ]]; then
  pin_server=(taskset -c "$SERVER_CPU")
  pin_bench=(taskset -c "$BENCH_CPU")
else
  log "warning: no taskset or a single core: servers and bench are not pinned"
fi

# --- build and install ------------------------------------------------------------------

if [[ "${NO_BUILD:-0}" != 1 ]]; then
  log "building crosswire and crosswire-bench (release)"
  timeout 1200 cargo build --release -q -p crosswire-cli -p crosswire-bench
fi
[[ -x "$CROSSWIRE" && -x "$BENCH" ]] || { echo "no $CROSSWIRE or $BENCH" >&2; exit 1; }

if [[ " $SERVERS " == *" socketio "* ]]; then
  command -v node >/dev/null || { echo "socketio needs node (Node.js 18 or later)" >&2; exit 1; }
  if [[ "${NO_INSTALL:-0}" != 1 || ! -d "$WORK/socketio/node_modules/socket.io" ]]; then
    log "installing Socket.IO 4.8 into $WORK/socketio"
    mkdir -p "$WORK/socketio"
    cp scripts/peers/socketio/server.js scripts/peers/socketio/package.json "$WORK/socketio/"
    (cd "$WORK/socketio" && timeout 600 npm install --no-audit --no-fund --loglevel=error \
      socket.io@4.8 @socket.io/redis-adapter@8 redis@4 >&2)
  fi
fi
if [[ " $SERVERS " == *" socketioxide "* ]]; then
  if [[ "${NO_INSTALL:-0}" != 1 || ! -x "$WORK/socketioxide/target/release/socketioxide-peer" ]]; then
    log "building the socketioxide peer in $WORK/socketioxide"
    mkdir -p "$WORK/socketioxide"
    cp scripts/peers/socketioxide/Cargo.toml "$WORK/socketioxide/"
    cp -r scripts/peers/socketioxide/src "$WORK/socketioxide/"
    # Its own target dir: not crosswire's (CARGO_TARGET_DIR would share it).
    (cd "$WORK/socketioxide" && CARGO_TARGET_DIR="$WORK/socketioxide/target" timeout 1800 \
      cargo build --release -q)
  fi
fi

# Versions of what was installed, for the report.
versions() {
  local v
  echo "rustc: $(rustc --version 2>/dev/null || echo '?')"
  echo "crosswire: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  if [[ -d "$WORK/socketio/node_modules" ]]; then
    for pkg in socket.io engine.io ws @socket.io/redis-adapter redis; do
      v=$(node -p "require('$WORK/socketio/node_modules/$pkg/package.json').version" 2>/dev/null || echo '?')
      echo "npm $pkg: $v"
    done
    echo "node: $(node --version)"
  fi
  if [[ -f "$WORK/socketioxide/Cargo.lock" ]]; then
    for crate in socketioxide engineioxide socketioxide-redis redis axum tokio; do
      v=$(awk -v c="$crate" '$0 == "name = \"" c "\"" { getline; gsub(/version = |"/, ""); print; exit }' \
        "$WORK/socketioxide/Cargo.lock")
      echo "crate $crate: ${v:-?}"
    done
  fi
  echo "redis-server: $(redis-server --version 2>/dev/null | sed -n 's/.* v=\([^ ]*\).*/\1/p')"
}
versions >"$OUT/versions.txt"
{
  echo "nproc: $(nproc)"
  lscpu 2>/dev/null | grep -E '^(Model name|CPU family|Model|Hypervisor vendor):' | sed 's/  */ /g'
  echo "memory: $(free -g 2>/dev/null | awk '/^Mem:/ {print $2 " GiB"}')"
  echo "kernel: $(uname -sr)"
  echo "os: $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")"
} >"$OUT/machine.txt"

# --- servers -----------------------------------------------------------------------------

# Starts server $1 on port $2 (Redis URL $3, node name $4 for a cluster); sets STARTED_PID.
start_server() {
  local kind=$1 port=$2 redis=${3:-} name=${4:-} log_file=$5
  case $kind in
    crosswire)
      local extra=()
      [[ -n "$redis" ]] && extra=(--redis "$redis" --name "$name")
      "${pin_server[@]}" "$CROSSWIRE" serve --port "$port" --threads 1 "${extra[@]}" \
        >"$log_file" 2>&1 &
      ;;
    socketio)
      PORT=$port REDIS_URL=$redis "${pin_server[@]}" node "$WORK/socketio/server.js" \
        >"$log_file" 2>&1 &
      ;;
    socketioxide)
      PORT=$port REDIS_URL=$redis "${pin_server[@]}" \
        "$WORK/socketioxide/target/release/socketioxide-peer" >"$log_file" 2>&1 &
      ;;
    *) echo "unknown server $kind" >&2; return 1 ;;
  esac
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
  if ! wait_port "$port" "$STARTED_PID"; then
    echo "$kind did not listen on $port; its log ($log_file):" >&2
    tail -20 "$log_file" >&2
    return 1
  fi
}

protocol_of() { [[ $1 == crosswire ]] && echo crosswire || echo socketio; }

args_of() {
  case $1 in
    fanout | cluster) echo "${FANOUT_ARGS:---receivers 1000 --rate 200 --size 100 --duration 10s}" ;;
    burst) echo "${BURST_ARGS:---messages 2000 --receivers 1000 --size 100}" ;;
    echo) echo "${ECHO_ARGS:---clients 100 --in-flight 4 --size 32 --duration 8s}" ;;
    idle) echo "${IDLE_ARGS:---connections ${IDLE_N:-5000}}" ;;
    *) echo "unknown scenario $1" >&2; return 1 ;;
  esac
}

FAILURES="$OUT/failures.txt"
: >"$FAILURES"

# Runs scenario $1 against server $2 in round $3 with the bench's remaining arguments.
run_bench() {
  local scenario=$1 server=$2 round=$3 mode
  shift 3
  mode=$scenario
  [[ $scenario == cluster ]] && mode=fanout
  read -ra load <<<"$(args_of "$scenario")"
  wait_quiet "${QUIET_WAIT:-5}" || true # the reports say how busy the machine was
  log "round $round: $scenario against $server"
  if ! timeout 240 "${pin_bench[@]}" "$BENCH" "$mode" --protocol "$(protocol_of "$server")" \
    "${load[@]}" "$@" --json-out "$OUT/$scenario.$server.$round.json" \
    >"$OUT/$scenario.$server.$round.txt" 2>&1; then
    echo "$scenario against $server (round $round) failed: $(tail -1 "$OUT/$scenario.$server.$round.txt")" |
      tee -a "$FAILURES" >&2
    rm -f "$OUT/$scenario.$server.$round.json"
  fi
}

REDIS_PID=""
REDIS_URL=""
if [[ " $SCENARIOS " == *" cluster "* ]]; then
  command -v redis-server >/dev/null || { echo "the cluster scenario needs redis-server" >&2; exit 1; }
  rport=$(free_port)
  "${pin_server[@]}" redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no \
    >"$OUT/redis.log" 2>&1 &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  wait_port "$rport" "$REDIS_PID" || { echo "redis-server did not start" >&2; exit 1; }
  REDIS_URL="redis://127.0.0.1:$rport"
fi

single=()
for s in $SCENARIOS; do [[ $s == cluster ]] || single+=("$s"); done

for round in $(seq 1 "$ROUNDS"); do
  for server in $SERVERS; do
    # A fresh server for every scenario: what one scenario leaves in the heap (a burst's
    # queues, say) would otherwise be the next one's RSS, and hide the idle connections' cost.
    for scenario in "${single[@]}"; do
      port=$(free_port)
      start_server "$server" "$port" "" "" "$OUT/$server.$scenario.$round.log" || {
        echo "$server ($scenario, round $round) did not start" >>"$FAILURES"
        continue
      }
      pid=$STARTED_PID
      run_bench "$scenario" "$server" "$round" --url "ws://127.0.0.1:$port" --server-pid "$pid"
      stop "$pid"
    done
    if [[ -n "$REDIS_URL" ]]; then
      p1=$(free_port)
      start_server "$server" "$p1" "$REDIS_URL" "${server}-1" "$OUT/$server.$round.node1.log" || {
        echo "$server node 1 (round $round) did not start" >>"$FAILURES"
        continue
      }
      n1=$STARTED_PID
      p2=$(free_port)
      [[ $p2 == "$p1" ]] && p2=$(free_port)
      start_server "$server" "$p2" "$REDIS_URL" "${server}-2" "$OUT/$server.$round.node2.log" || {
        echo "$server node 2 (round $round) did not start" >>"$FAILURES"
        stop "$n1"
        continue
      }
      n2=$STARTED_PID
      sleep 0.5 # the adapters' subscriptions
      r0=$(proc_ticks "$REDIS_PID") || true
      run_bench cluster "$server" "$round" --url "ws://127.0.0.1:$p1" \
        --urls "ws://127.0.0.1:$p1,ws://127.0.0.1:$p2" --server-pid "$n1" --server-pid "$n2"
      echo "$(($(proc_ticks "$REDIS_PID") - r0)) $(getconf CLK_TCK)" >"$OUT/cluster.$server.$round.redis"
      stop "$n1" "$n2"
    fi
  done
done

T1=$(date +%s)
ELAPSED=$((T1 - T0))
log "all rounds done in ${ELAPSED}s; writing $OUT/peers.md"

# --- the report --------------------------------------------------------------------------

python3 - "$OUT" "$ROUNDS" "$ELAPSED" "$COMMAND" "$STARTED" "$SERVER_CPU" "$BENCH_CPU" \
  "$SERVERS" "$SCENARIOS" <<'PY' >"$OUT/peers.md"
import glob, json, os, statistics, sys

out, rounds, elapsed, command, started, server_cpu, bench_cpu, servers, scenarios = sys.argv[1:]
servers, scenarios = servers.split(), scenarios.split()
NAMES = {"crosswire": "crosswire", "socketio": "Socket.IO", "socketioxide": "socketioxide"}

def read(path):
    try:
        return open(path).read().strip()
    except OSError:
        return ""

reports = {}
for path in glob.glob(os.path.join(out, "*.json")):
    scenario, server, rnd, _ = os.path.basename(path).split(".")
    reports.setdefault((scenario, server), []).append((int(rnd), json.load(open(path))))
for v in reports.values():
    v.sort(key=lambda x: x[0])

def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None

def runs(scenario, server):
    return [r for _, r in reports.get((scenario, server), [])]

def cpu(r):
    return (r.get("server") or {}).get("cpu_us_per_op")

def lat(r, key):
    l = r.get("latency") or {}
    return l.get(key) / 1000 if l.get(key) is not None else None

def rss_mib(r):
    s = r.get("server") or {}
    return s["rss_after_kb"] / 1024 if "rss_after_kb" in s else None

def other(r):
    return (r.get("machine") or {}).get("other_pct")

def per_conn(r):
    return r["results"].get("server_bytes_per_connection")

def redis_us_per_msg(server, scenario="cluster"):
    values = []
    for rnd, r in reports.get((scenario, server), []):
        text = read(os.path.join(out, f"cluster.{server}.{rnd}.redis"))
        if not text:
            continue
        ticks, hz = map(int, text.split())
        sent = r["results"].get("sent") or 0
        if sent:
            values.append(ticks * 1e6 / hz / sent)
    return mean(values)

def fmt(v, digits=2, unit=""):
    if v is None:
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.0f}{unit}"
    return f"{v:.{digits}f}{unit}"

def ratio(peer, base):
    if peer is None or base in (None, 0):
        return "–"
    return f"**{peer / base:.2f}×**"

def loss(rs):
    sent = sum(r["results"].get("sent", 0) for r in rs)
    skipped = sum(r["results"].get("skipped_ticks", 0) for r in rs)
    lost = sum(r["results"].get("lost", 0) for r in rs)
    expected = sum(r["results"].get("expected", 0) for r in rs)
    dup = sum(r["results"].get("duplicates", 0) for r in rs)
    disc = sum(r["results"].get("disconnected", 0) for r in rs)
    pct = 100 * lost / expected if expected else 0
    sent_cell = f"{sent:,} sent" + (f" ({skipped:,} ticks skipped)" if skipped else "")
    return f"{sent_cell}; {lost:,} of {expected:,} ({pct:.2f}%) / {dup} / {disc}"

# metric: (label, function of one report, unit, digits)
METRICS = {
    "fanout": [("server CPU per delivery", cpu, " µs", 3), ("latency p50", lambda r: lat(r, "p50_us"), " ms", 2),
               ("latency p99", lambda r: lat(r, "p99_us"), " ms", 2), ("server RSS", rss_mib, " MiB", 1)],
    "burst": [("server CPU per delivery", cpu, " µs", 3), ("time to deliver all", lambda r: r["results"].get("total_secs"), " s", 2),
              ("latency p50", lambda r: lat(r, "p50_us"), " ms", 1), ("latency p99", lambda r: lat(r, "p99_us"), " ms", 1),
              ("server RSS", rss_mib, " MiB", 1)],
    "echo": [("server CPU per ack", cpu, " µs", 3), ("acks/s", lambda r: r["results"].get("acks_per_sec"), "", 0),
             ("latency p50", lambda r: lat(r, "p50_us"), " ms", 2), ("latency p99", lambda r: lat(r, "p99_us"), " ms", 2),
             ("server RSS", rss_mib, " MiB", 1)],
    "idle": [("server memory per connection", lambda r: per_conn(r) / 1024 if per_conn(r) is not None else None, " KiB", 2),
             ("server RSS", rss_mib, " MiB", 1)],
    "cluster": [("nodes' CPU per delivery", cpu, " µs", 3), ("latency p50", lambda r: lat(r, "p50_us"), " ms", 2),
                ("latency p99", lambda r: lat(r, "p99_us"), " ms", 2), ("nodes' RSS", rss_mib, " MiB", 1)],
}
LOADS = {}
for scenario in scenarios:
    for server in servers:
        rs = runs(scenario, server)
        if rs:
            LOADS[scenario] = rs[0]["row"]["load"]
            break
TITLES = {"fanout": "fan-out, one node", "burst": "burst, one node", "echo": "echo, one node",
          "idle": "idle, one node", "cluster": "fan-out, 2 nodes + Redis"}

peers = [s for s in servers if s != "crosswire"]
machine = read(os.path.join(out, "machine.txt")).splitlines()
versions = read(os.path.join(out, "versions.txt")).splitlines()
others = [other(r) for v in reports.values() for _, r in v if other(r) is not None]

print("# crosswire and the peers a user would pick instead, side by side\n")
print(f"Run {started} (UTC), {int(elapsed) // 60} min {int(elapsed) % 60} s, {rounds} interleaved rounds "
      f"(each round: {', '.join(NAMES.get(s, s) for s in servers)} in turn).\n")
print("```sh\n" + command.strip() + "\n```\n")
print("**Machine:** " + "; ".join(machine) + ".\n")
print("**Software:** " + "; ".join(versions) + ".\n")
print(f"**Pinning:** every server (both nodes and redis-server in the cluster) on core {server_cpu}, "
      f"crosswire-bench on core {bench_cpu} (`taskset`); crosswire `serve --threads 1`, socketioxide on a "
      "current-thread tokio runtime, Node.js single-threaded. Peers driven with `crosswire-bench --protocol "
      "socketio` (Socket.IO v5 / Engine.IO v4, WebSocket only), crosswire with its own protocol: same "
      "scenarios, message sizes, stamps and measurement.\n")
if others:
    busy = sum(1 for o in others if o > 30)
    print(f"**How busy the machine was:** other programs used {min(others):.0f}–{max(others):.0f}% of a core "
          f"(mean {mean(others):.0f}%) during the {len(others)} measured windows; {busy} of them above 30% "
          "(marked ⚠ below).\n")
failures = read(os.path.join(out, "failures.txt"))
if failures:
    print("**Failed runs:**\n")
    for line in failures.splitlines():
        print(f"- {line}")
    print()

print("## Ratios, peer / crosswire (mean of the rounds; below 1 is better than crosswire for "
      "CPU, latency and memory, above 1 better for acks/s)\n")
head = "| scenario | metric | " + " | ".join(NAMES.get(s, s) for s in servers)
head += "".join(f" | {NAMES.get(p, p)} / crosswire" for p in peers) + " |"
print(head)
print("|" + "---|" * (2 + len(servers) + len(peers)))
for scenario in scenarios:
    for label, f, unit, digits in METRICS.get(scenario, []):
        values = {s: mean([f(r) for r in runs(scenario, s)]) for s in servers}
        row = f"| {TITLES.get(scenario, scenario)} | {label} | "
        row += " | ".join(fmt(values[s], digits, unit) for s in servers)
        row += "".join(f" | {ratio(values[p], values.get('crosswire'))}" for p in peers) + " |"
        print(row)
    if scenario == "cluster":
        values = {s: redis_us_per_msg(s) for s in servers}
        row = f"| {TITLES['cluster']} | redis-server CPU per message | "
        row += " | ".join(fmt(values[s], 1, " µs") for s in servers)
        row += "".join(f" | {ratio(values[p], values.get('crosswire'))}" for p in peers) + " |"
        print(row)
print()

print("## Per round\n")
print("| scenario (load) | server | CPU per op, per round | p50 / p99 per round | messages sent; lost of expected (%) / dup / disconnected, all rounds | server RSS | other programs |")
print("|---|---|---|---|---|---|---|")
for scenario in scenarios:
    for server in servers:
        rs = runs(scenario, server)
        name = NAMES.get(server, server)
        load = f"{TITLES.get(scenario, scenario)} ({LOADS.get(scenario, '')})"
        if not rs:
            print(f"| {load} | {name} | failed | – | – | – | – |")
            continue
        if scenario == "idle":
            cpu_cell = ", ".join(fmt(per_conn(r) / 1024 if per_conn(r) is not None else None, 2, " KiB/conn") for r in rs)
            lat_cell = "–"
            bad = sum(r["results"].get("failed", 0) + r["results"].get("dropped", 0) for r in rs)
            connected = sum(r["results"].get("connected", 0) for r in rs)
            loss_cell = f"{connected:,} connected, {bad} failed or dropped"
        elif scenario == "echo":
            cpu_cell = ", ".join(fmt(cpu(r), 3, " µs") for r in rs)
            lat_cell = ", ".join(f"{fmt(lat(r, 'p50_us'))} / {fmt(lat(r, 'p99_us'))}" for r in rs) + " ms"
            failed = sum(r["results"].get("failed_clients", 0) for r in rs)
            loss_cell = f"{sum(r['results'].get('acks', 0) for r in rs):,} acks, {failed} clients failed"
        else:
            cpu_cell = ", ".join(fmt(cpu(r), 3, " µs") for r in rs)
            lat_cell = ", ".join(f"{fmt(lat(r, 'p50_us'))} / {fmt(lat(r, 'p99_us'))}" for r in rs) + " ms"
            loss_cell = loss(rs)
        rss_cell = ", ".join(fmt(rss_mib(r), 1, " MiB") for r in rs)
        other_cell = ", ".join(("⚠ " if (other(r) or 0) > 30 else "") + fmt(other(r), 0, "%") for r in rs)
        print(f"| {load} | {name} | {cpu_cell} | {lat_cell} | {loss_cell} | {rss_cell} | {other_cell} |")
print()
print("CPU per op is the server's CPU time (utime + stime from /proc, 10 ms ticks, all its threads; "
      "both nodes in the cluster) over the measured window divided by the deliveries (fan-out, burst) or "
      "acks (echo); latency is from the send stamp to the receiver's read; RSS is at the end of the "
      "window (both nodes in the cluster); idle is the RSS growth per connection held. Redis CPU per "
      "message is redis-server's CPU over the whole cluster run (the 1,000 connects and joins "
      "included) divided by the messages sent. Every scenario runs on a freshly started server. A delivery "
      "still missing 10 s after the last send (or 3 s after the last delivery) counts as lost; the "
      "publisher skips the ticks it is late for (when the server reads its messages slowly, say), so "
      "the expected deliveries are those of the messages really sent. socketioxide runs with "
      "`max_buffer_size` 32,768 packets per socket (its default of 128 drops most of a burst; "
      "crosswire queues up to 4 MiB per socket) and socketioxide-redis with `stream_buffer` 32,768 "
      "(its default of 1,024 drops whole messages from Redis once a node lags), Socket.IO with its "
      "defaults (no per-socket limit).")
PY
cat "$OUT/peers.md"
echo
echo "reports, logs and peers.md in $OUT"
