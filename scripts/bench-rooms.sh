#!/usr/bin/env bash
# One broker channel per namespace against one per room (`--room-channels`), side by side in
# one run, over NATS and over a Redis Cluster (3 masters + 3 replicas).
#
#   scripts/bench-rooms.sh [ROUNDS] [OUTDIR]
#
# Four `crosswire serve --threads 1` nodes share core 1; four rooms, room k's receivers all
# on node k (so with one channel per namespace every node hears every room's messages, with
# one per room only its own). Four `crosswire-bench fanout` runs at once on core 0, run k
# publishing from node 1 to room k on node k. Per layout it reports the envelopes each node
# received per message published (read from /metrics), the nodes' CPU per delivery (all four
# together, from /proc), p99 latency (the worst of the four runs) and losses. Rounds
# interleave the two layouts. Needs a release build:
#
#   cargo build --release -p crosswire-cli -p crosswire-bench
#
# Environment: RECEIVERS (per room, default 25), RATE (msg/s per room, default 250),
# DURATION (default 8s), BROKERS (default "nats redis-cluster").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source-path=SCRIPTDIR disable=SC1091 # followed with shellcheck -x
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/release"
ROUNDS="${1:-3}"
OUT="${2:-$(mktemp -d -t crosswire-rooms.XXXXXX)}"
RECEIVERS="${RECEIVERS:-25}"
RATE="${RATE:-250}"
DURATION="${DURATION:-8s}"
mkdir -p "$OUT"
[[ -x "$BIN/crosswire" && -x "$BIN/crosswire-bench" ]] ||
  { echo "build first: cargo build --release -p crosswire-cli -p crosswire-bench" >&2; exit 2; }
NATS_SERVER=$(command -v nats-server || echo /usr/sbin/nats-server)

pids=()
dirs=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for d in "${dirs[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT

# Ports below the kernel's ephemeral range (32768 and up), where the clients' own ports would
# collide: 20000 … 22699, with port + 10000 free too (a Redis Cluster server's bus).
rooms_port() { free_port_in 2700 10000; }
envelopes() {
  curl -s "http://127.0.0.1:$1/metrics" | awk '/^crosswire_envelopes_received_total /{print $2}'
}

pin_nodes=()
pin_bench=()
if command -v taskset >/dev/null && [[ "$(nproc)" -ge 2 ]]; then
  pin_nodes=(taskset -c 1)
  pin_bench=(taskset -c 0)
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- brokers ---
nats_port=$(rooms_port)
"$NATS_SERVER" -a 127.0.0.1 -p "$nats_port" >"$OUT/nats.log" 2>&1 &
pids+=($!)
wait_port "$nats_port" "" 10

cluster_ports=()
for _ in 1 2 3 4 5 6; do
  p=$(rooms_port)
  d=$(mktemp -d -t crosswire-rc.XXXXXX)
  dirs+=("$d")
  redis-server --dir "$d" --port "$p" --bind 127.0.0.1 --cluster-enabled yes \
    --cluster-config-file nodes.conf --cluster-node-timeout 1000 --repl-ping-replica-period 1 \
    --save "" --appendonly no >"$d/log" 2>&1 &
  pids+=($!)
  cluster_ports+=("$p")
done
for p in "${cluster_ports[@]}"; do wait_port "$p" "" 10; done
timeout 60 redis-cli --cluster create $(printf '127.0.0.1:%s ' "${cluster_ports[@]}") \
  --cluster-replicas 1 --cluster-yes >"$OUT/cluster-create.log" 2>&1
for _ in $(seq 1 300); do
  ranges=$(redis-cli -p "${cluster_ports[0]}" cluster shards 2>/dev/null | grep -c '^slots$' || true)
  replicas=$(for p in "${cluster_ports[@]}"; do redis-cli -p "$p" info replication; done |
    grep -c 'master_link_status:up' || true)
  [[ "$ranges" -ge 3 && "$replicas" -ge 3 ]] && break
  sleep 0.1
done
cluster_seed="redis://127.0.0.1:${cluster_ports[0]}"

broker_args() {
  case $1 in
    nats) echo "--nats nats://127.0.0.1:$nats_port" ;;
    redis-cluster) echo "--redis-cluster $cluster_seed" ;;
  esac
}

# --- one run: four nodes, four rooms ---
run_once() { # broker layout round
  local broker=$1 layout=$2 round=$3 tag="$1.$2.$3"
  local extra=()
  [[ $layout == rooms ]] && extra=(--room-channels)
  local ports=() npids=()
  read -ra bargs <<<"$(broker_args "$broker")"
  for k in 1 2 3 4; do
    local port
    port=$(rooms_port)
    "${pin_nodes[@]}" "$BIN/crosswire" serve --threads 1 --name "n$k" --port "$port" \
      "${bargs[@]}" "${extra[@]}" >"$OUT/$tag.n$k.log" 2>&1 &
    npids+=($!)
    pids+=($!)
    ports+=("$port")
  done
  for port in "${ports[@]}"; do wait_port "$port" "" 10; done
  for _ in $(seq 1 200); do
    all=1
    for port in "${ports[@]}"; do
      curl -s "http://127.0.0.1:$port/healthz" | grep -q '"n4"' || all=0
    done
    [[ $all == 1 ]] && break
    sleep 0.1
  done
  local env_before=() cpu_before=()
  for k in 0 1 2 3; do
    env_before+=("$(envelopes "${ports[$k]}")")
    cpu_before+=("$(proc_ticks "${npids[$k]}")")
  done
  local bench=()
  for k in 0 1 2 3; do
    timeout 120 "${pin_bench[@]}" "$BIN/crosswire-bench" fanout \
      --url "ws://127.0.0.1:${ports[0]}" --urls "ws://127.0.0.1:${ports[$k]}" \
      --room "room$k" --receivers "$RECEIVERS" --rate "$RATE" --size 100 \
      --duration "$DURATION" --drain-timeout 5s --threads 1 \
      --json-out "$OUT/$tag.room$k.json" >"$OUT/$tag.room$k.txt" 2>&1 &
    bench+=($!)
  done
  for b in "${bench[@]}"; do wait "$b" || echo "a bench run of $tag failed: see $OUT/$tag.room*.txt" >&2; done
  local env_after=() cpu_after=()
  for k in 0 1 2 3; do
    env_after+=("$(envelopes "${ports[$k]}")")
    cpu_after+=("$(proc_ticks "${npids[$k]}")")
  done
  {
    echo "{\"broker\": \"$broker\", \"layout\": \"$layout\", \"round\": $round, \"nodes\": ["
    for k in 0 1 2 3; do
      [[ $k -gt 0 ]] && echo ","
      echo "{\"envelopes\": $(( ${env_after[$k]%.*} - ${env_before[$k]%.*} )), \"cpu_ticks\": $(( ${cpu_after[$k]} - ${cpu_before[$k]} ))}"
    done
    echo "]}"
  } >"$OUT/$tag.nodes.json"
  for p in "${npids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${npids[@]}"; do wait "$p" 2>/dev/null || true; done
}

for broker in ${BROKERS:-nats redis-cluster}; do
  for round in $(seq 1 "$ROUNDS"); do
    for layout in namespace rooms; do
      echo "$broker, $layout channels, round $round" >&2
      run_once "$broker" "$layout" "$round"
    done
  done
done

python3 - "$OUT" "$RECEIVERS" "$RATE" "$DURATION" <<'PY' | tee "$OUT/rooms.md"
import collections, glob, json, os, sys
out, receivers, rate, duration = sys.argv[1:]
tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
rows = collections.defaultdict(list)
for path in sorted(glob.glob(out + "/*.nodes.json")):
    nodes = json.load(open(path))
    tag = path.rsplit("/", 1)[-1][: -len(".nodes.json")]
    runs = [json.load(open(p)) for p in sorted(glob.glob(f"{out}/{tag}.room*.json"))]
    sent = sum(r["results"]["sent"] for r in runs)
    delivered = sum(r["results"]["delivered"] for r in runs)
    lost = sum(r["results"]["lost"] for r in runs)
    dup = sum(r["results"]["duplicates"] for r in runs)
    p99 = max(r["latency"]["p99_us"] for r in runs) / 1000
    envelopes = [n["envelopes"] for n in nodes["nodes"]]
    cpu_us = sum(n["cpu_ticks"] for n in nodes["nodes"]) * tick_us
    rows[(nodes["broker"], nodes["layout"])].append(dict(
        env_per_msg=sum(envelopes) / max(sent, 1), cpu=cpu_us / max(delivered, 1),
        p99=p99, lost=lost, dup=dup, sent=sent, runs=len(runs)))

mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")
print(f"4 nodes, 4 rooms × {receivers} receivers (room k on node k), {rate} msg/s per room "
      f"× 100 B for {duration}, publisher on node 1; means over rounds\n")
print("| broker | channels | envelopes received per message (all nodes) | node CPU per delivery | worst p99 | lost / dup | rounds |")
print("|---|---|---|---|---|---|---|")
for (broker, layout), rs in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1] != "namespace")):
    cpus = " / ".join(f"{r['cpu']:.2f}" for r in rs)
    print(f"| {broker} | {layout} | {mean([r['env_per_msg'] for r in rs]):.2f} "
          f"| {mean([r['cpu'] for r in rs]):.2f} µs ({cpus}) | {mean([r['p99'] for r in rs]):.1f} ms "
          f"| {sum(r['lost'] for r in rs)} / {sum(r['dup'] for r in rs)} | {len(rs)} |")
print()
for broker in sorted({b for b, _ in rows}):
    ns, rm = rows.get((broker, "namespace")), rows.get((broker, "rooms"))
    if ns and rm:
        print(f"- {broker}: rooms / namespace — envelopes {mean([r['env_per_msg'] for r in rm]) / mean([r['env_per_msg'] for r in ns]):.2f}×, "
              f"node CPU per delivery {mean([r['cpu'] for r in rm]) / mean([r['cpu'] for r in ns]):.2f}×")
PY
echo "reports in $OUT" >&2
