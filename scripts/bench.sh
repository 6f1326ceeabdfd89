#!/usr/bin/env bash
# The project's benchmark entry point.
#
#   scripts/bench.sh agent [SECONDS]
#
# agent: runs the release agent's synthetic source at 1k, 10k and 100k events/s into the local
# RabbitMQ over AMQP (spool with fsync on, publisher confirms), each for SECONDS (default 10),
# and prints achieved rate, peak RSS and CPU. Its last line is
#   agent: rate=<events/s> rss_mb=<x> cpu_pct_per_1k=<y>
# for the 10k row. Brings up RabbitMQ like the test command does.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
what=${1:-}
seconds=${2:-10}

bench_agent() {
  # shellcheck source=scripts/services.sh
  source scripts/services.sh
  svc_rabbitmq >/dev/null
  cargo build --quiet --profile release-agent -p agent
  local bin="$ROOT/target/release-agent/auditflow-agent"
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  local hz
  hz=$(getconf CLK_TCK)
  printf '| target events/s | achieved events/s | peak RSS MB | CPU %% of one core | CPU %% per 1k events/s |\n'
  printf '|---:|---:|---:|---:|---:|\n'
  local last=""
  for rate in 1000 10000 100000; do
    local limit=$((rate * seconds)) queue="auditflow.bench.$rate.$$"
    rm -rf "$tmp/spool"
    cat >"$tmp/agent.toml" <<TOML
node_id = "bench-node"
[http]
listen = "127.0.0.1:0"
[spool]
dir = "$tmp/spool"
[transport]
kind = "amqp"
amqp_url = "$AMQP_URL"
amqp_queue = "$queue"
amqp_heartbeat_queue = "$queue.hb"
[synthetic]
enabled = true
rate_per_sec = $rate.0
limit = $limit
TOML
    local start end pid rss=0 ticks=0 line
    start=$(date +%s.%N)
    RUST_LOG=warn "$bin" --config "$tmp/agent.toml" 2>"$tmp/agent.log" &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
      if line=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null) && [ -n "$line" ]; then rss=$line; fi
      if line=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null) && [ -n "$line" ]; then ticks=$line; fi
      sleep 0.2
    done
    wait "$pid" || { cat "$tmp/agent.log"; echo "agent failed at $rate events/s"; return 1; }
    end=$(date +%s.%N)
    local row
    row=$(awk -v n="$limit" -v s="$start" -v e="$end" -v rss="$rss" -v t="$ticks" -v hz="$hz" -v r="$rate" 'BEGIN {
      wall = e - s; achieved = n / wall; cpu = 100 * t / hz / wall;
      printf "%d %.0f %.1f %.1f %.2f", r, achieved, rss / 1024, cpu, cpu / (achieved / 1000) }')
    read -r r achieved rss_mb cpu per1k <<<"$row"
    printf '| %s | %s | %s | %s | %s |\n' "$r" "$achieved" "$rss_mb" "$cpu" "$per1k"
    [ "$rate" = 10000 ] && last="agent: rate=$achieved rss_mb=$rss_mb cpu_pct_per_1k=$per1k"
    svc_rabbitmqctl delete_queue -p auditflow_test "$queue" >/dev/null 2>&1 || true
    svc_rabbitmqctl delete_queue -p auditflow_test "$queue.hb" >/dev/null 2>&1 || true
  done
  echo
  echo "(wall time includes start-up and the final acknowledgements; CPU from /proc/PID/stat, RSS is VmHWM)"
  echo "$last"
}

case "$what" in
  agent) bench_agent ;;
  *) echo "usage: scripts/bench.sh agent [SECONDS]" >&2; exit 64 ;;
esac
