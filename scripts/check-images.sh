#!/usr/bin/env bash
# The arm64 build and the images, run for real (the test command's "images" stage):
#
# 1. scripts/build-images.sh builds every binary for amd64 and arm64 and every image, and
#    prints the size table;
# 2. the same inputs give the same digests: the agent's images are built again and their
#    index digest compared;
# 3. the arm64 agent binary runs under qemu-user (Debian's qemu-user-static): --version,
#    then a finite synthetic run into the local RabbitMQ over AMQP, which exits only once
#    RabbitMQ confirmed every event; the envelopes are then counted in the queue;
# 4. the amd64 aggregator image runs under podman against the local RabbitMQ, Redis and
#    PostgreSQL and answers /readyz and the API;
# 5. the arm64 agent image runs under podman through qemu's binfmt handler, answers /healthz
#    and delivers to RabbitMQ.
#
# podman runs with a private configuration under target/images (runc, the cgroupfs manager,
# capped nofile/nproc limits, host network, vfs storage of its own: images come from the
# OCI archives, as a user would load them); nothing in /etc
# is changed. Registering qemu's binfmt handler for aarch64 is kernel state, as the
# qemu-user-static package does on a machine with systemd running.
#
# Needs AMQP_URL, DATABASE_URL, REDIS_URL and rabbitmqctl (scripts/services.sh, sourced by scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT="$ROOT/target/images"
: "${AMQP_URL:?AMQP_URL is not set: run through scripts/test.sh (RabbitMQ is required)}"
: "${DATABASE_URL:?DATABASE_URL is not set: run through scripts/test.sh}" "${REDIS_URL:?REDIS_URL is not set: run through scripts/test.sh}"

log() { echo "[check-images] $*"; }
fail() { echo "[check-images] FAILED: $*" >&2; exit 1; }

need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v curl >/dev/null || need+=(curl)
command -v file >/dev/null || need+=(file)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]} (Debian packages)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null; }
fi

# 1. Build.
bash scripts/build-images.sh | tee "$OUT.log"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)

# 2. Reproducible: the agent again, from the same binaries, gives the same index digest.
first=$(grep '^index auditflow-agent:' "$OUT.log" | cut -d' ' -f3)
again=$(BINARIES=agent bash scripts/build-images.sh 2>&1 | grep '^index auditflow-agent:' | cut -d' ' -f3)
[ -n "$first" ] && [ "$first" = "$again" ] || fail "rebuilding the agent's images gave $again, not $first"
log "reproducible: auditflow-agent index $first twice"

# A queue of our own on the test vhost, removed at the end.
vhost=${AMQP_URL##*/}
vhost=${vhost//%2f//}
queue="auditflow.test.images.$$"
cleanup() {
  podman_ rm -f af-check-aggregator af-check-agent >/dev/null 2>&1 || true
  timeout 60 rabbitmqctl -q delete_queue -p "$vhost" "$queue" >/dev/null 2>&1 || true
  timeout 60 rabbitmqctl -q delete_queue -p "$vhost" "$queue.hb" >/dev/null 2>&1 || true
}
trap cleanup EXIT

queue_messages() {
  timeout 60 rabbitmqctl -q list_queues -p "$vhost" name messages | awk -v q="$queue" '$1 == q { print $2 }'
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

agent_config() { # http_port spool_dir limit rate
  cat <<TOML
node_id = "qemu-arm64"
[http]
listen = "127.0.0.1:$1"
[spool]
dir = "$2"
fsync = false
[batch]
max_age_ms = 100
[transport]
kind = "amqp"
amqp_url = "$AMQP_URL"
amqp_queue = "$queue"
amqp_heartbeat_queue = "$queue.hb"
[synthetic]
enabled = true
rate_per_sec = $4.0
limit = $3
TOML
}

# 3. The arm64 agent under qemu-user.
agent_profile=release-agent
[ -z "${CHECK_BUILD:-}" ] || agent_profile=release # scripts/build-images.sh, CHECK_BUILD
agent_bin="$ROOT/target/aarch64-unknown-linux-musl/$agent_profile/auditflow-agent"
file "$agent_bin" 2>/dev/null | grep -q 'ARM aarch64.*statically linked' || fail "$agent_bin is not a static arm64 binary"
version=$(qemu-aarch64-static "$agent_bin" --version)
[ "$version" = "auditflow-agent $VERSION" ] || fail "qemu: --version printed '$version'"
work=$(mktemp -d)
agent_config "$(free_port)" "$work/spool" 2000 4000 >"$work/agent.toml"
timeout 120 qemu-aarch64-static "$agent_bin" --config "$work/agent.toml" >/dev/null 2>"$work/agent.log" ||
  { tail -n 20 "$work/agent.log"; fail "the arm64 agent under qemu failed"; }
grep -q '"acked":2000' "$work/agent.log" || { tail -n 5 "$work/agent.log"; fail "the arm64 agent did not have 2000 events acknowledged"; }
messages=$(queue_messages)
[ "${messages:-0}" -gt 0 ] || fail "no envelopes in $queue"
log "qemu-user: $version; 2000 synthetic events confirmed by RabbitMQ, $messages envelopes in $queue"

# podman with a private configuration.
mkdir -p "$OUT/podman"
cat >"$OUT/podman/containers.conf" <<CONF
[containers]
netns = "host"
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
log_driver = "k8s-file"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
cat >"$OUT/podman/storage.conf" <<CONF
[storage]
driver = "vfs"
graphroot = "$OUT/podman/storage"
runroot = "$OUT/podman/run"
CONF
podman_() { CONTAINERS_CONF="$OUT/podman/containers.conf" CONTAINERS_STORAGE_CONF="$OUT/podman/storage.conf" podman "$@"; }

wait_http() { # url seconds container
  local i
  for ((i = 0; i < $2 * 5; i++)); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    podman_ container exists "$3" || { podman_ logs "$3" 2>&1 | tail -n 20 || true; return 1; }
    sleep 0.2
  done
  podman_ logs "$3" 2>&1 | tail -n 20 || true
  return 1
}

# 4. The amd64 aggregator image, the cluster service it ships as: against this machine's
#    RabbitMQ, Redis and PostgreSQL (host network), ready when it reaches all three.
port=$(free_port)
mport=$(free_port)
podman_ run -d --name af-check-aggregator --arch amd64 -e AMQP_URL -e DATABASE_URL -e REDIS_URL \
  -e AUDITFLOW_API_TOKENS="check:check-images-token-0123456789:viewer" \
  "oci-archive:$OUT/auditflow-aggregator.oci.tar" --listen "127.0.0.1:$port" \
  --metrics-listen "127.0.0.1:$mport" >/dev/null
wait_http "http://127.0.0.1:$port/readyz" 60 af-check-aggregator || fail "the aggregator image did not become ready"
curl -fsS -o /dev/null -H "Authorization: Bearer check-images-token-0123456789" \
  "http://127.0.0.1:$port/api/v1/alerts?limit=1" || fail "the aggregator image's API did not answer"
user=$(podman_ inspect -f '{{.Config.User}}' af-check-aggregator)
podman_ rm -f af-check-aggregator >/dev/null
log "podman: the amd64 aggregator image reached RabbitMQ, Redis and PostgreSQL and answered the API (user $user)"

# 5. The arm64 agent image, through qemu's binfmt handler.
if ! [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  # The F flag opens the interpreter now, so it also works inside containers.
  cat /usr/lib/binfmt.d/qemu-aarch64.conf >/proc/sys/fs/binfmt_misc/register
fi
port=$(free_port)
agent_config "$port" /spool 0 200 >"$work/image-agent.toml"
before=$(queue_messages)
podman_ run -d --name af-check-agent --arch arm64 -v "$work/image-agent.toml:/config/agent.toml:ro" \
  --tmpfs /spool:rw,mode=1777 \
  "oci-archive:$OUT/auditflow-agent.oci.tar" --config /config/agent.toml >/dev/null
wait_http "http://127.0.0.1:$port/healthz" 60 af-check-agent || fail "the arm64 agent image did not answer /healthz"
for ((i = 0; i < 100; i++)); do
  acked=$(curl -fsS "http://127.0.0.1:$port/metrics" | awk '$1 == "auditflow_agent_acked_events_total" { print $2 }')
  [ "${acked:-0}" -gt 0 ] && break
  sleep 0.2
done
[ "${acked:-0}" -gt 0 ] || fail "the arm64 agent image delivered nothing"
podman_ rm -f af-check-agent >/dev/null
after=$(queue_messages)
log "podman + qemu: the arm64 agent image answered /healthz, $acked events acknowledged by RabbitMQ (queue $before → $after envelopes)"
rm -rf "$work"
tail -n 1 "$OUT.log"
