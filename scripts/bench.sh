#!/usr/bin/env bash
# The project's benchmark entry point.
#
#   scripts/bench.sh agent [SECONDS]
#   scripts/bench.sh broker [SECONDS]
#   scripts/bench.sh detect [SECONDS]
#   scripts/bench.sh parse [LINES]
#
# agent: runs the release agent's synthetic source at 1k, 10k and 100k events/s into the local
# RabbitMQ over AMQP (spool with fsync on, publisher confirms), each for SECONDS (default 10),
# and prints achieved rate, peak RSS and CPU. Its last line is
#   agent: rate=<events/s> rss_mb=<x> cpu_pct_per_1k=<y>
# for the 10k row. Brings up RabbitMQ like the test command does.
# detect: rule-evaluation throughput of the aggregator on one thread, the legacy event mix
# against the shipped rule pack, with in-memory state and with the local Redis, SECONDS each
# (default 10). Its last line is
#   detect: memory_events_per_s=<n> redis_events_per_s=<m>
# parse: the auth parser on one core over a mixed corpus of every family in
# tests/fixtures/auth, LINES lines (default 2,000,000), in memory (agent/examples/bench_parse.rs),
#   parse: lines_per_s=<n> events_per_s=<m>
# then the journal source's files reader over a real journal file of the same corpus
# (JOURNAL_ENTRIES, default 200,000, written by systemd-journal-remote, installed when missing):
#   journal: entries_per_s=<n> events_per_s=<m>
# e2e [SECONDS] [AGENTS] [RATE]: the whole pipeline as release processes on this machine, the
# cluster profile (agents → broker → RabbitMQ → aggregator with Redis and PostgreSQL) and then
# the embedded profile (agents → aggregator with its in-process broker and SQLite): AGENTS
# agents (default 2) at RATE events/s each (default 101000: together just above the 200,000
# the cluster profile must sustain, so a run shows whether it keeps up at the target; at
# 2 x 100000 it could never show more than 200,000) for SECONDS (default 20), with
# latency probes (see aggregator/examples/bench_e2e.rs). Prints a table per profile; the last
# two lines are
#   e2e: profile=cluster events_per_s=<n> p99_ms=<x>
#   e2e: profile=embedded events_per_s=<n> p99_ms=<x>
# faults: the fault matrix (aggregator/tests/faults.rs, docs/faults.md) on release binaries,
# FAULTS_EVENTS events per scenario (default 1,000,000) at FAULTS_RATE events/s per agent
# (default 10,000), the network cut FAULTS_CUT_S long (default 600), one row per scenario;
# the last line is
#   faults: scenarios=<n> events=<n> lost=<n> duplicate_alerts=<n> missed_alerts=<n>
# store [ALERTS] [FIRINGS]: the alert store at scale (aggregator/examples/bench_store.rs):
# PostgreSQL and SQLite filled with ALERTS alerts (default 1,000,000) and FIRINGS firings
# (default 10,000,000) over 90 days and 200 nodes, then the API timed from a client. Per
# backend a table and the line
#   store: <backend> list_p99_ms=<x> search_p99_ms=<y> stats_p99_ms=<z> detail_p99_ms=<d> db_mb=<n>
# legacy [EVENTS]: the legacy path (aggregator/examples/bench_legacy.rs): EVENTS legacy events
# (default 200,000) of each stream (the legacy generator's mix; failed logins only) pre-queued
# on audit_events, drained by the release aggregator with RabbitMQ, Redis and PostgreSQL until
# every firing is committed; then RabbitMQ's own rate for the queue (a consumer that only
# acknowledges). The last line is
#   legacy: mixed_events_per_s=<n> failures_events_per_s=<m>
# archive [NODES] [RATE] [DAYS]: the event archive (aggregator/examples/bench_archive.rs):
# PostgreSQL and SQLite filled with DAYS (default 7) of NODES nodes (default 50) at RATE
# events/s each (default 1), then the searches timed. Per backend a table and the line
#   archive: <backend> events=<n> bytes_per_event=<b> ... node_day_scan_p99_ms=<x> ... db_mb=<m>
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
what=${1:-}
seconds=${2:-10}

machine_line() {
  echo "(machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(. /etc/os-release && echo "$PRETTY_NAME"); everything on this one machine)"
}

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

# broker: two release agents push synthetic events as fast as their generators allow (150k
# events/s each) through one release broker into RabbitMQ; prints envelopes/s and events/s
# through the broker (confirmed by RabbitMQ), and the broker's CPU and peak RSS. Last line:
#   broker: events_per_s=<n> rss_mb=<x>
bench_broker() {
  # shellcheck source=scripts/services.sh
  source scripts/services.sh
  svc_rabbitmq >/dev/null
  cargo build --quiet --release -p broker
  cargo build --quiet --profile release-agent -p agent
  local tmp vhost="auditflow_bench_$$"
  tmp=$(mktemp -d)
  svc_rabbitmqctl add_vhost "$vhost" >/dev/null
  svc_rabbitmqctl set_permissions -p "$vhost" auditflow '.*' '.*' '.*' >/dev/null
  local url="${AMQP_URL%/*}/$vhost"
  trap 'rm -rf "$tmp"; svc_rabbitmqctl delete_vhost "$vhost" >/dev/null 2>&1 || true' RETURN
  local per_agent=$((150000 * seconds)) mqtt=18990 http=19990
  printf 'bench-1:bench-password-one\nbench-2:bench-password-two\n' >"$tmp/credentials"
  cat >"$tmp/broker.toml" <<TOML
[mqtt]
listen = "127.0.0.1:$mqtt"
credentials_file = "$tmp/credentials"
[http]
listen = "127.0.0.1:$http"
[amqp]
url = "$url"
TOML
  RUST_LOG=error "$ROOT/target/release/auditflow-broker" --config "$tmp/broker.toml" 2>"$tmp/broker.log" &
  local broker=$!
  for _ in $(seq 50); do curl -sf "127.0.0.1:$http/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
  local agents=() i
  local start
  start=$(date +%s.%N)
  for i in 1 2; do
    cat >"$tmp/agent$i.toml" <<TOML
node_id = "bench-$i"
[http]
listen = "127.0.0.1:0"
[spool]
dir = "$tmp/spool$i"
[transport]
kind = "mqtt"
mqtt_url = "mqtt://127.0.0.1:$mqtt"
mqtt_password = "$([ $i = 1 ] && echo bench-password-one || echo bench-password-two)"
[synthetic]
enabled = true
rate_per_sec = 150000.0
limit = $per_agent
TOML
    RUST_LOG=error "$ROOT/target/release-agent/auditflow-agent" --config "$tmp/agent$i.toml" 2>"$tmp/agent$i.log" &
    agents+=($!)
  done
  local hz rss=0 ticks=0 line
  hz=$(getconf CLK_TCK)
  local t0
  t0=$(awk '{print $14 + $15}' "/proc/$broker/stat")
  while kill -0 "${agents[0]}" 2>/dev/null || kill -0 "${agents[1]}" 2>/dev/null; do
    line=$(awk '/^VmHWM:/ {print $2}' "/proc/$broker/status" 2>/dev/null) && [ -n "$line" ] && rss=$line
    line=$(awk '{print $14 + $15}' "/proc/$broker/stat" 2>/dev/null) && [ -n "$line" ] && ticks=$line
    sleep 0.2
  done
  local end
  end=$(date +%s.%N)
  local metrics
  metrics=$(curl -s "127.0.0.1:$http/metrics")
  kill "$broker" 2>/dev/null || true
  wait "$broker" 2>/dev/null || true
  for i in "${agents[@]}"; do wait "$i" || { cat "$tmp"/agent*.log; return 1; }; done
  local events envelopes
  events=$(awk '/^auditflow_broker_events_out_total/ {print $2}' <<<"$metrics")
  envelopes=$(awk '/^auditflow_broker_envelopes_out_total/ {print $2}' <<<"$metrics")
  awk -v ev="$events" -v en="$envelopes" -v s="$start" -v e="$end" -v rss="$rss" -v t="$ticks" -v t0="$t0" -v hz="$hz" 'BEGIN {
    wall = e - s; cpu = 100 * (t - t0) / hz / wall;
    printf "| envelopes/s | events/s | broker CPU %% of one core | broker peak RSS MB |\n|---:|---:|---:|---:|\n";
    printf "| %.0f | %.0f | %.1f | %.1f |\n\n", en / wall, ev / wall, cpu, rss / 1024;
    printf "(%d events in %d envelopes from 2 agents in %.1f s, confirmed by RabbitMQ; the agents share the 2 cores)\n", ev, en, wall;
    printf "broker: events_per_s=%.0f rss_mb=%.1f\n", ev / wall, rss / 1024 }'
}

bench_detect() {
  # shellcheck source=scripts/services.sh
  source scripts/services.sh
  svc_redis >/dev/null
  cargo build --quiet --release -p aggregator --example bench_detect
  "$ROOT/target/release/examples/bench_detect" "$seconds"
}

bench_e2e() {
  local seconds=${2:-20} agents=${3:-2} rate=${4:-101000}
  # shellcheck source=scripts/services.sh
  source scripts/services.sh
  services_up >/dev/null
  cargo build --quiet --release -p broker -p aggregator -p auditflow --bins --example bench_e2e
  cargo build --quiet --profile release-agent -p agent
  local bench="$ROOT/target/release/examples/bench_e2e" lines=()
  for profile in cluster embedded; do
    local out
    # A 5 s warm-up first, not counted: the first run after the binaries were rebuilt has a
    # long latency tail that later runs do not have (docs/benchmarks.md, method).
    "$bench" "$profile" "$ROOT/target/release" "$ROOT/target/release-agent" "$agents" "$rate" 5 >/dev/null
    out=$("$bench" "$profile" "$ROOT/target/release" "$ROOT/target/release-agent" "$agents" "$rate" "$seconds")
    echo "$out"
    lines+=("$(tail -n 1 <<<"$out")")
  done
  echo
  machine_line
  printf '%s\n' "${lines[@]}"
}

# fleet [SECONDS] [AGENTS] [RATE]: the cluster profile with AGENTS (1000) simulated agents as
# tasks of one process (agent/examples/agent_fleet.rs), RATE (100) events/s each, for SECONDS
# (60): the broker's and the aggregator's CPU and RSS, and the probes' p99.
bench_fleet() {
  local seconds=${1:-60} agents=${2:-1000} rate=${3:-100}
  # shellcheck source=scripts/services.sh
  source scripts/services.sh
  services_up >/dev/null
  cargo build --quiet --release -p broker -p aggregator --bins --example bench_e2e
  cargo build --quiet --profile release-agent -p agent --example agent_fleet
  # A socket, a listener and spool files per agent, in the fleet and in the broker.
  ulimit -n "$(ulimit -Hn)"
  local out
  out=$(E2E_FLEET=1 "$ROOT/target/release/examples/bench_e2e" cluster "$ROOT/target/release" \
    "$ROOT/target/release-agent" "$agents" "$rate" "$seconds")
  echo "$out"
  echo
  machine_line
  tail -n 1 <<<"$out"
}

bench_parse() {
  # shellcheck source=scripts/services.sh
  source "$ROOT/scripts/services.sh"
  svc_journal_tools
  cargo build --quiet --release -p agent --example bench_parse
  "$ROOT/target/release/examples/bench_parse" "${1:-2000000}" "${JOURNAL_ENTRIES:-200000}"
}

bench_faults() {
  # shellcheck source=scripts/services.sh
  source scripts/services.sh
  services_up >/dev/null
  svc_fault_tools >/dev/null
  cargo build --quiet --release --workspace --bins
  FAULTS_EVENTS="${FAULTS_EVENTS:-1000000}" FAULTS_RATE="${FAULTS_RATE:-10000}" \
    FAULTS_PROBES="${FAULTS_PROBES:-100}" FAULTS_CUT_S="${FAULTS_CUT_S:-600}" \
    FAULTS_DISK_KB="${FAULTS_DISK_KB:-4096}" \
    cargo test --quiet --release -p aggregator --test faults -- --nocapture 2>&1 |
    grep -E '^(\||\(|faults:|test result)|MISSED|DUPLICATE|UNEXPECTED|panicked'
  machine_line
}

# Runs an example once per store backend (its first argument), prints each run's output, then
# the machine and every run's last line together.
per_backend() { # example args-after-the-backend...
  local example=$1 lines=() backend out
  shift
  for backend in postgres sqlite; do
    out=$("$ROOT/target/release/examples/$example" "$backend" "$@")
    echo "$out"
    lines+=("$(tail -n 1 <<<"$out")")
  done
  echo
  machine_line
  printf '%s\n' "${lines[@]}"
}

bench_store() {
  local alerts=${1:-1000000} firings=${2:-10000000}
  # shellcheck source=scripts/services.sh
  source scripts/services.sh
  services_up >/dev/null
  cargo build --quiet --release -p aggregator -p auditflow --bins --example bench_store
  per_backend bench_store "$ROOT/target/release" "$alerts" "$firings"
}

bench_archive() {
  # shellcheck source=scripts/services.sh
  source scripts/services.sh
  services_up >/dev/null
  cargo build --quiet --release -p aggregator --example bench_archive
  per_backend bench_archive "${1:-50}" "${2:-1}" "${3:-7}"
}

bench_legacy() {
  # shellcheck source=scripts/services.sh
  source scripts/services.sh
  services_up >/dev/null
  cargo build --quiet --release -p aggregator --bins --example bench_legacy
  local out
  out=$("$ROOT/target/release/examples/bench_legacy" "$ROOT/target/release" "${1:-200000}")
  echo "$out"
  echo
  machine_line
  tail -n 1 <<<"$out"
}

case "$what" in
  agent) bench_agent ;;
  parse) bench_parse "${2:-}" ;;
  broker) bench_broker ;;
  detect) bench_detect ;;
  e2e) bench_e2e "$@" ;;  # its own defaults: 20 s, 2 agents, 101000 events/s each
  faults) bench_faults ;;
  store) bench_store "${2:-}" "${3:-}" ;;
  fleet) bench_fleet "${2:-}" "${3:-}" "${4:-}" ;;
  legacy) bench_legacy "${2:-}" ;;
  archive) bench_archive "${2:-}" "${3:-}" "${4:-}" ;;
  *) echo "usage: scripts/bench.sh agent|broker|detect|parse|e2e|faults|store|fleet|legacy [SECONDS|LINES]" >&2; exit 64 ;;
esac
