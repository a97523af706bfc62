#!/usr/bin/env bash
# How crosswire scales, measured in one run and drawn:
#
#   (a) nodes:      fan-out at a fixed load on 1, 2 and 4 nodes over each broker (Redis,
#                   Redis Cluster of 3 masters + 3 replicas, NATS), and 1 node without one;
#   (b) receivers:  one node, no broker, fan-out to 100 … 10,000 receivers at a fixed rate;
#   (c) throughput: per broker, 2 nodes, the publish rate doubled step by step until p99
#                   passes 50 ms or a message is lost (then one step halfway back);
#   (d) idle:       19,000 idle connections to one node from 19 source addresses
#                   (127.0.0.2 … 127.0.0.20), and from 127.0.0.1 alone for comparison.
#
#   cargo build --release -p crosswire-cli -p crosswire-bench
#   scripts/bench-scale.sh [OUTDIR]
#
# Everything is started here on 127.0.0.1 and stopped on exit: one redis-server, a Redis
# Cluster (six redis-servers in temp dirs), one nats-server, and the `crosswire serve
# --threads 1` nodes of each step. On a machine of two or more cores the nodes and brokers
# share core 1 and `crosswire-bench` has core 0 (taskset), so 2 and 4 nodes share one core.
# Writes into OUTDIR (default: a temp dir) one JSON report per run (`<part>.<tag>.json`, the
# bench's stdout in `.txt`, broker CPU in `.broker.json`), `machine.json`, `summary.md`
# (markdown tables), `section.md` (the text for docs/BENCHMARKS.md), PNG copies of the
# charts, and the charts themselves as docs/scale-*.svg (scripts/charts.py, with matplotlib
# from a venv in target/bench-venv, made here if missing).
#
# Environment:
#   PARTS          which parts to run, of "a b c d" (default all)
#   QUIET_WAIT     seconds to wait before each run for other programs to drop below 30% of
#                  a core (default 10; 0 skips)
#   A_RECEIVERS, A_RATE, A_DURATION      (a) load: default 1000 receivers, 200 msg/s, 10s
#   B_RECEIVERS, B_RATE, B_DURATION      (b) default "100 300 1000 3000 10000", 20 msg/s, 10s
#   C_RECEIVERS, C_RATES, C_DURATION, C_P99_MS
#                  (c) receivers per node (default 10), rates (default "500 1000 2000 4000
#                  8000 16000 32000 64000"), 5s per step, the p99 limit (default 50)
#   D_CONNECTIONS, D_SOURCES             (d) default 19000, "127.0.0.2-20"
#   NO_CHARTS=1    write the summary only (no venv, no charts)
# Every step is bounded by a timeout.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source-path=SCRIPTDIR disable=SC1091 # followed with shellcheck -x
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/release"
BENCH="$BIN/crosswire-bench"
OUT="${1:-$(mktemp -d -t crosswire-scale.XXXXXX)}"
OUT="$(mkdir -p "$OUT" && cd "$OUT" && pwd)"
PARTS="${PARTS:-a b c d}"
QUIET_WAIT="${QUIET_WAIT:-10}"
A_RECEIVERS="${A_RECEIVERS:-1000}" A_RATE="${A_RATE:-200}" A_DURATION="${A_DURATION:-10s}"
B_RECEIVERS="${B_RECEIVERS:-100 300 1000 3000 10000}" B_RATE="${B_RATE:-20}"
B_DURATION="${B_DURATION:-10s}"
C_RECEIVERS="${C_RECEIVERS:-10}" C_RATES="${C_RATES:-500 1000 2000 4000 8000 16000 32000 64000}"
C_DURATION="${C_DURATION:-5s}" C_P99_MS="${C_P99_MS:-50}"
D_CONNECTIONS="${D_CONNECTIONS:-19000}" D_SOURCES="${D_SOURCES:-127.0.0.2-20}"
[[ -x "$BIN/crosswire" && -x "$BENCH" ]] ||
  { echo "build first: cargo build --release -p crosswire-cli -p crosswire-bench" >&2; exit 2; }
NATS_SERVER=$(command -v nats-server || echo /usr/sbin/nats-server)
for tool in redis-server redis-cli curl python3 "$NATS_SERVER"; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done
STARTED=$(date +%s)
log() { echo "[$(( $(date +%s) - STARTED ))s] $*" >&2; }

# The idle part holds 19,000 sockets in each of two processes: the hard limit is the most.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

pids=()
dirs=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  for d in "${dirs[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pin_server=()
pin_bench=()
PINNING="not pinned (fewer than 2 cores or no taskset)"
if command -v taskset >/dev/null && [[ "$(nproc)" -ge 2 ]]; then
  pin_server=(taskset -c 1)
  pin_bench=(taskset -c 0)
  PINNING="nodes and brokers on core 1, crosswire-bench on core 0"
fi

# Starts a server (pinned with the nodes) on a free port whose +10000 is free too (Redis
# Cluster's bus port), the word {port} of its command standing for it, and waits (15 s at
# most) until it listens; retries on another port when it exits first (another program may
# take the port in between). Sets SPAWNED_PID and SPAWNED_PORT.
spawn_server() { # log command...
  local logf=$1 try port
  shift
  for try in 1 2 3; do
    port=$(free_port_in 20000 10000)
    "${pin_server[@]}" "${@//\{port\}/$port}" >"$logf" 2>&1 &
    SPAWNED_PID=$!
    SPAWNED_PORT=$port
    pids+=("$SPAWNED_PID")
    if wait_port "$port" "$SPAWNED_PID" 15; then return 0; fi
    kill "$SPAWNED_PID" 2>/dev/null || true
    log "$1 did not listen on $port (try $try): $(tail -n 2 "$logf" | tr '\n' ' ')"
  done
  return 1
}
# --- machine ---
{
  python3 - "$(nproc)" "$PINNING" "$(ulimit -Hn)" \
    "$(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')" \
    "$("$NATS_SERVER" --version 2>&1 | sed 's/.*v//')" \
    "$(rustc --version 2>/dev/null || echo unknown)" <<'PY'
import json, os, platform, sys, time
cores, pinning, nofile, redis, nats, rustc = sys.argv[1:]
model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
mem_kb = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
osname = next((l.split("=", 1)[1].strip().strip('"') for l in open("/etc/os-release") if l.startswith("PRETTY_NAME=")), "Linux")
print(json.dumps({
    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cores": int(cores),
    "cpu": model, "arch": platform.machine(), "mem_gib": round(mem_kb / 1048576),
    "os": osname, "kernel": platform.release(), "rustc": rustc, "redis": redis,
    "nats": nats, "nofile_hard": int(nofile), "pinning": pinning,
}, indent=1))
PY
} >"$OUT/machine.json"
log "output in $OUT ($PINNING)"

# --- brokers ---
spawn_server "$OUT/redis.log" redis-server --port '{port}' --bind 127.0.0.1 --save "" --appendonly no
REDIS_PIDS=("$SPAWNED_PID")
REDIS_PORT=$SPAWNED_PORT

spawn_server "$OUT/nats.log" "$NATS_SERVER" -a 127.0.0.1 -p '{port}'
NATS_PIDS=("$SPAWNED_PID")
NATS_PORT=$SPAWNED_PORT

CLUSTER_PORTS=()
CLUSTER_PIDS=()
for k in 1 2 3 4 5 6; do
  d=$(mktemp -d -t crosswire-scale-rc.XXXXXX)
  dirs+=("$d")
  # --repl-ping-replica-period 1: otherwise replicas show in CLUSTER SLOTS only after ~10 s.
  spawn_server "$OUT/cluster-$k.log" redis-server --port '{port}' --bind 127.0.0.1 --dir "$d" \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
    --repl-ping-replica-period 1 --save "" --appendonly no
  CLUSTER_PIDS+=("$SPAWNED_PID")
  CLUSTER_PORTS+=("$SPAWNED_PORT")
done
# shellcheck disable=SC2046 # one argument per server
timeout 60 redis-cli --cluster create $(printf '127.0.0.1:%s ' "${CLUSTER_PORTS[@]}") \
  --cluster-replicas 1 --cluster-yes >"$OUT/cluster-create.log" 2>&1 ||
  { echo "redis-cli --cluster create failed: see $OUT/cluster-create.log" >&2; exit 1; }
# Ready when CLUSTER SLOTS shows 3 ranges, each with a master and a replica: an entry is
# [first slot, last slot, master, replica...].
cluster_ready() {
  redis-cli -p "${CLUSTER_PORTS[0]}" --json cluster slots 2>/dev/null | python3 -c '
import json, sys
try:
    ranges = json.load(sys.stdin)
except Exception:
    sys.exit(1)
ok = len(ranges) == 3 and all(len(r) >= 4 for r in ranges)
sys.exit(0 if ok else 1)'
}
ready=0
for _ in $(seq 1 300); do
  if cluster_ready; then ready=1; break; fi
  sleep 0.1
done
((ready)) || { echo "Redis Cluster not ready (3 ranges with a replica each) after 30 s" >&2; exit 1; }
CLUSTER_SEED="redis://127.0.0.1:${CLUSTER_PORTS[0]}"
log "brokers up: redis :$REDIS_PORT, nats :$NATS_PORT, cluster :${CLUSTER_PORTS[*]}"

broker_args() {
  case $1 in
    none) ;;
    redis) echo "--redis redis://127.0.0.1:$REDIS_PORT" ;;
    redis-cluster) echo "--redis-cluster $CLUSTER_SEED" ;;
    nats) echo "--nats nats://127.0.0.1:$NATS_PORT" ;;
  esac
}
broker_pids() {
  case $1 in
    none) ;;
    redis) echo "${REDIS_PIDS[*]}" ;;
    redis-cluster) echo "${CLUSTER_PIDS[*]}" ;;
    nats) echo "${NATS_PIDS[*]}" ;;
  esac
}

# --- nodes ---
NODE_PIDS=()
NODE_PORTS=()
start_nodes() { # broker count tag
  local broker=$1 count=$2 tag=$3 k port
  read -ra bargs <<<"$(broker_args "$broker")"
  NODE_PIDS=()
  NODE_PORTS=()
  for k in $(seq 1 "$count"); do
    spawn_server "$OUT/$tag.n$k.log" "$BIN/crosswire" serve --threads 1 --name "n$k" \
      --port '{port}' "${bargs[@]}"
    NODE_PIDS+=("$SPAWNED_PID")
    NODE_PORTS+=("$SPAWNED_PORT")
  done
  # Every node sees all `count` nodes (and a healthy broker) in /healthz.
  local all
  for _ in $(seq 1 200); do
    all=1
    for port in "${NODE_PORTS[@]}"; do
      curl -s -m 2 "http://127.0.0.1:$port/healthz" | python3 -c '
import json, sys
h = json.load(sys.stdin)
ok = len(h.get("nodes") or [h.get("node")]) >= int(sys.argv[1])
ok = ok and (h.get("broker") is None or h["broker"].get("healthy", True))
sys.exit(0 if ok else 1)' "$count" 2>/dev/null || all=0
    done
    [[ $all == 1 ]] && return 0
    sleep 0.1
  done
  echo "nodes of $tag did not all see each other within 20 s" >&2
  return 1
}
stop_nodes() {
  local p
  for p in "${NODE_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${NODE_PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  NODE_PIDS=()
  NODE_PORTS=()
}
node_urls() {
  local IFS=,
  local urls=()
  for port in "${NODE_PORTS[@]}"; do urls+=("ws://127.0.0.1:$port"); done
  echo "${urls[*]}"
}

# Runs one crosswire-bench scenario against the running nodes: `run_bench TAG BROKER
# SCENARIO ARGS...`; writes TAG.json (report), TAG.txt (stdout) and TAG.broker.json (the
# broker processes' CPU over the bench's run). Returns the bench's status.
run_bench() {
  local tag=$1 broker=$2 scenario=$3
  shift 3
  local spids=() p b0 b1 t0 t1 rc=0
  for p in "${NODE_PIDS[@]}"; do spids+=(--server-pid "$p"); done
  read -ra bp <<<"$(broker_pids "$broker")"
  wait_quiet "$QUIET_WAIT" || log "machine still busy after ${QUIET_WAIT}s; the report says how busy"
  b0=$(proc_ticks "${bp[@]}") || true # a broker that is gone counts 0
  t0=$(date +%s.%N)
  timeout 180 "${pin_bench[@]}" "$BENCH" "$scenario" --url "ws://127.0.0.1:${NODE_PORTS[0]}" \
    --urls "$(node_urls)" "$@" "${spids[@]}" --json-out "$OUT/$tag.json" >"$OUT/$tag.txt" 2>&1 || rc=$?
  b1=$(proc_ticks "${bp[@]}") || true
  t1=$(date +%s.%N)
  echo "{\"broker\": \"$broker\", \"broker_processes\": ${#bp[@]}, \"cpu_ticks\": $((b1 - b0)), \"ticks_per_sec\": $(getconf CLK_TCK), \"secs\": $(python3 -c "print(round($t1 - $t0, 3))"), \"nodes\": ${#NODE_PIDS[@]}}" \
    >"$OUT/$tag.broker.json"
  if ((rc != 0)); then
    log "$tag failed (status $rc): see $OUT/$tag.txt"
    rm -f "$OUT/$tag.json"
  fi
  return "$rc"
}

# Prints the verdict on a throughput step's report: "fail <why>" (p99 over the limit or a
# delivery lost: at the rate sent, so at the target too), "pass" (within both, and at least
# 90% of the target rate sent), "generator <why>" (short of the rate with the generator's
# core saturated), or "short <why>" (short of the rate with the generator below 90% of its
# core: a publisher delayed by other programs; the step is repeated).
judge() { # report target_rate
  python3 - "$1" "$2" "$C_P99_MS" <<'PY'
import json, sys
path, target, limit = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
try:
    r = json.load(open(path))
except (OSError, ValueError):
    print("fail no report"); sys.exit()
res, lat = r["results"], r["latency"] or {}
sent_rate = res["sent"] / max(res["send_secs"], 1e-9)
p99 = lat.get("p99_us", 0) / 1000
why = []
if res["lost"] or res["disconnected"] or res.get("send_error"):
    why.append(f"lost {res['lost']}, disconnected {res['disconnected']}")
if p99 > limit:
    why.append(f"p99 {p99:.1f} ms")
if why:
    print("fail " + "; ".join(why) + f" (sent {sent_rate:.0f}/s)")
elif sent_rate >= 0.9 * target:
    print("pass")
elif ((r.get("client") or {}).get("cpu_pct") or 0) >= 90:
    print(f"generator saturated: sent {sent_rate:.0f}/s of {target:.0f}/s")
else:
    print(f"short: sent {sent_rate:.0f}/s of {target:.0f}/s, generator below 90% of its core")
PY
}

has_part() { [[ " $PARTS " == *" $1 "* ]]; }

# --- (a) nodes × brokers ---
if has_part a; then
  for broker in none redis redis-cluster nats; do
    counts="1 2 4"
    [[ $broker == none ]] && counts=1
    for n in $counts; do
      tag="a.$broker.$n"
      log "(a) $broker, $n node(s): $A_RECEIVERS receivers × $A_RATE msg/s × 100 B, $A_DURATION"
      start_nodes "$broker" "$n" "$tag"
      run_bench "$tag" "$broker" fanout --receivers "$A_RECEIVERS" --rate "$A_RATE" --size 100 \
        --duration "$A_DURATION" --drain-timeout 5s || true
      stop_nodes
    done
  done
fi

# --- (b) receivers on one node ---
if has_part b; then
  for r in $B_RECEIVERS; do
    tag="b.none.$r"
    log "(b) one node, $r receivers × $B_RATE msg/s, $B_DURATION"
    start_nodes none 1 "$tag"
    run_bench "$tag" none fanout --receivers "$r" --rate "$B_RATE" --size 100 \
      --duration "$B_DURATION" --drain-timeout 10s || true
    stop_nodes
  done
fi

# --- (c) broker throughput on two nodes ---
# One step: fresh nodes (an overloaded step leaves nothing behind), RATE msg/s for C_DURATION.
VERDICT=""
throughput_step() { # broker rate; sets VERDICT
  local tag="c.$1.$2" try f
  for try in 1 2 3; do
    log "(c) $1, 2 nodes, $((2 * C_RECEIVERS)) receivers, $2 msg/s for $C_DURATION (try $try)"
    start_nodes "$1" 2 "$tag"
    run_bench "$tag" "$1" fanout --receivers $((2 * C_RECEIVERS)) --rate "$2" --size 100 \
      --duration "$C_DURATION" --drain-timeout 5s || true
    stop_nodes
    VERDICT=$(judge "$OUT/$tag.json" "$2")
    echo "$VERDICT" >"$OUT/$tag.verdict"
    log "    $VERDICT"
    [[ $VERDICT == short* && $try -lt 3 ]] || break
    # Keep the short try aside (out of the summary) and repeat the step.
    mkdir -p "$OUT/retried"
    for f in "$OUT/$tag".*; do mv "$f" "$OUT/retried/$(basename "$f").try$try"; done
  done
}
if has_part c; then
  for broker in redis redis-cluster nats; do
    last_pass=""
    first_fail=""
    for rate in $C_RATES; do
      throughput_step "$broker" "$rate"
      if [[ $VERDICT == pass ]]; then last_pass=$rate; else first_fail=$rate; break; fi
    done
    # One step halfway between the last rate that passed and the first that failed (not when
    # the generator was what could not keep up).
    if [[ -n $last_pass && -n $first_fail && $VERDICT == fail* ]]; then
      throughput_step "$broker" $(( (last_pass + first_fail) / 2 ))
    fi
  done
fi

# --- (d) idle connections from several source addresses ---
if has_part d; then
  tag="d.none.$D_CONNECTIONS"
  log "(d) one node, $D_CONNECTIONS idle connections from $D_SOURCES"
  start_nodes none 1 "$tag"
  run_bench "$tag" none idle --connections "$D_CONNECTIONS" --source-addrs "$D_SOURCES" \
    --hold 3s || true
  stop_nodes
  # The same from the one default source address (127.0.0.1), for comparison.
  tag="d.one.$D_CONNECTIONS"
  log "(d) one node, $D_CONNECTIONS idle connections from 127.0.0.1 only"
  start_nodes none 1 "$tag"
  run_bench "$tag" none idle --connections "$D_CONNECTIONS" --hold 3s || true
  stop_nodes
fi

log "runs done; summarising"
ELAPSED=$(( $(date +%s) - STARTED ))
PY=python3
if [[ "${NO_CHARTS:-0}" != 1 ]]; then
  VENV="$TARGET/bench-venv"
  if ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
    log "installing matplotlib into $VENV"
    { timeout 120 python3 -m venv "$VENV" && timeout 300 "$VENV/bin/pip" install -q matplotlib; } \
      >"$OUT/venv.log" 2>&1 || log "could not install matplotlib (see $OUT/venv.log): summary only"
  fi
  "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null && PY="$VENV/bin/python"
fi
chart_args=()
[[ $PY == python3 ]] && chart_args=(--no-charts)
timeout 300 "$PY" "$ROOT/scripts/charts.py" "$OUT" --docs "$ROOT/docs" --elapsed "$ELAPSED" \
  --command "scripts/bench-scale.sh $OUT" "${chart_args[@]}"
log "summary: $OUT/summary.md, section for docs/BENCHMARKS.md: $OUT/section.md"
