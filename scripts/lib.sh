# shellcheck shell=bash
# Helpers shared by the benchmark scripts (bench.sh, bench-compare.sh, bench-peers.sh,
# bench-rooms.sh, bench-scale.sh): ports on 127.0.0.1 and CPU ticks from /proc. Sourced, not
# run:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# It only defines functions: no options are set (the caller's `set -euo pipefail` stays as it
# is), no variables and nothing is started. Functions that can fail return a status for the
# caller to act on (or `|| true`); none exits.

# port_in_use PORT: succeeds when something on 127.0.0.1 accepts a connection on PORT.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port: prints a random port of 20000 … 39999 that nothing on 127.0.0.1 listens on.
# Fails, saying so, after 100 tries.
free_port() { free_port_in 20000; }

# free_port_in SPAN [ALSO]: the same, of 20000 … 20000+SPAN-1, and with ALSO, port+ALSO must
# be free too (a Redis Cluster server also needs its port + 10000, the cluster bus).
free_port_in() {
  local span=$1 also=${2:-} candidate
  for _ in $(seq 1 100); do
    candidate=$((20000 + RANDOM % span))
    if ! port_in_use "$candidate" && { [[ -z $also ]] || ! port_in_use $((candidate + also)); }; then
      echo "$candidate"; return 0
    fi
  done
  echo "no free port found" >&2
  return 1
}

# wait_port PORT [PID] [SECONDS]: waits (SECONDS at most, default 30) until something listens
# on PORT; with a PID (may be empty), fails as soon as that process has exited. Says why it
# failed on stderr.
wait_port() {
  local port=$1 pid=${2:-} secs=${3:-30}
  for _ in $(seq 1 $((secs * 10))); do
    port_in_use "$port" && return 0
    if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
      echo "process $pid exited before listening on $port" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "nothing listens on $port after $secs s" >&2
  return 1
}

# cpu_ticks: prints the busy and the total clock ticks of all cores, from /proc/stat.
cpu_ticks() {
  local _cpu user nice system idle iowait irq softirq steal _rest
  read -r _cpu user nice system idle iowait irq softirq steal _rest </proc/stat
  echo "$((user + nice + system + irq + softirq + steal)) $((user + nice + system + idle + iowait + irq + softirq + steal))"
}

# wait_quiet SECONDS: waits, SECONDS at most (0: not at all), until the programs running use
# less than 30% of one core over one second. Fails when the machine is still that busy after
# SECONDS (>0), for the caller to warn.
wait_quiet() {
  local limit=$1 waited=0 b0 t0 b1 t1 cores
  cores=$(nproc)
  while ((waited < limit)); do
    read -r b0 t0 < <(cpu_ticks)
    sleep 1
    read -r b1 t1 < <(cpu_ticks)
    # busy share of all cores, in percent of one core
    if ((t1 > t0 && (b1 - b0) * 100 * cores / (t1 - t0) < 30)); then return 0; fi
    waited=$((waited + 1))
  done
  ((limit == 0))
}

# proc_ticks PID...: prints the CPU time (utime + stime) of the processes together, in clock
# ticks. A process that is gone counts 0 and makes it fail (after printing the sum).
proc_ticks() {
  local sum=0 rc=0 p stat f
  for p in "$@"; do
    if ! { stat=$(<"/proc/$p/stat"); } 2>/dev/null; then
      rc=1
      continue
    fi
    stat=${stat##*) } # the fields after the command name, which may hold spaces
    read -ra f <<<"$stat"
    sum=$((sum + f[11] + f[12]))
  done
  echo "$sum"
  return "$rc"
}
