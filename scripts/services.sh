# Brings up RabbitMQ, PostgreSQL and Redis on 127.0.0.1 for the tests and exports AMQP_URL,
# DATABASE_URL and REDIS_URL. Sourced by scripts/test.sh; also usable alone:
#   source scripts/services.sh && services_up
#
# For each service: running → use it; installed but stopped → start it; absent → install it
# from Debian packages (apt-get) and start it. Idempotent. It does not rely on systemd (CI
# machines and containers often have none): servers are started directly as their own users.
# The test credentials are random per run and exist only on loopback.

svc_log() { printf '[services] %s\n' "$*"; }

svc_have_port() { # host port
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && exec 3>&- 3<&-
}

svc_wait_port() { # name port seconds
  local i
  for ((i = 0; i < $3 * 5; i++)); do
    svc_have_port 127.0.0.1 "$2" && return 0
    sleep 0.2
  done
  svc_log "$1 did not open 127.0.0.1:$2 within $3 s"
  return 1
}

SVC_APT_UPDATED=0
svc_apt_install() { # packages...
  if [ "$(id -u)" != 0 ]; then
    svc_log "need root to install $* (run as root or install them yourself)"
    return 1
  fi
  if [ "$SVC_APT_UPDATED" = 0 ]; then
    svc_log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    SVC_APT_UPDATED=1
  fi
  svc_log "installing $* from Debian packages"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# A random password per service, made once per checkout and kept (mode 600) under
# target/services: stable across calls, so a second run of the suite (or a check script
# sourcing this file) does not lock out one that is already running.
# The test services are the machine's, shared by every checkout on it (a CI clone next to a
# working copy, say), so their passwords are kept per machine and user, not per checkout: a
# second checkout must not change the password the first one's tests are using.
svc_password() { # name
  local dir file
  dir="${XDG_STATE_HOME:-$HOME/.local/state}/auditflow-test-services"
  file="$dir/$1.password"
  if ! [ -s "$file" ]; then
    mkdir -p "$dir"
    (umask 077 && head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 20 >"$file")
  fi
  cat "$file"
}

# --- PostgreSQL ------------------------------------------------------------------------
svc_postgres() {
  if ! command -v pg_ctlcluster >/dev/null || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    svc_apt_install postgresql postgresql-client
  fi
  local ver
  ver=$(ls /usr/lib/postgresql | sort -V | tail -n1)
  if ! pg_lsclusters -h | awk -v v="$ver" '$1 == v' | grep -q .; then
    svc_log "creating PostgreSQL $ver cluster main"
    pg_createcluster "$ver" main >/dev/null
  fi
  local cluster port
  cluster=$(pg_lsclusters -h | awk -v v="$ver" '$1 == v {print $2; exit}')
  port=$(pg_lsclusters -h | awk -v v="$ver" '$1 == v {print $3; exit}')
  if pg_lsclusters -h | awk -v v="$ver" '$1 == v {print $4; exit}' | grep -q online; then
    svc_log "PostgreSQL $ver/$cluster already running on port $port"
  else
    svc_log "starting PostgreSQL $ver/$cluster on port $port"
    pg_ctlcluster "$ver" "$cluster" start
  fi
  svc_wait_port PostgreSQL "$port" 30
  local pw
  pw=$(svc_password postgres)
  su postgres -c "psql -q -p $port -v ON_ERROR_STOP=1" >/dev/null <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'auditflow') THEN
    CREATE ROLE auditflow LOGIN;
  END IF;
END \$\$;
ALTER ROLE auditflow WITH LOGIN CREATEDB PASSWORD '$pw';
SQL
  if ! su postgres -c "psql -p $port -tAc \"SELECT 1 FROM pg_database WHERE datname = 'auditflow_test'\"" | grep -q 1; then
    svc_log "creating database auditflow_test"
    su postgres -c "createdb -p $port -O auditflow auditflow_test"
  fi
  export DATABASE_URL="postgres://auditflow:$pw@127.0.0.1:$port/auditflow_test"
}

# --- Redis -----------------------------------------------------------------------------
svc_redis() {
  if command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
    svc_log "Redis already running on 6379"
  else
    command -v redis-server >/dev/null || svc_apt_install redis-server redis-tools
    svc_log "starting Redis on 127.0.0.1:6379"
    mkdir -p /var/lib/redis /var/log/redis
    chown redis:redis /var/lib/redis /var/log/redis 2>/dev/null || true
    local as=()
    id redis >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && as=(runuser -u redis --)
    "${as[@]}" redis-server --bind 127.0.0.1 --port 6379 --daemonize yes \
      --dir /var/lib/redis --logfile /var/log/redis/auditflow-test.log --save '' --appendonly no
    svc_wait_port Redis 6379 30
  fi
  export REDIS_URL="redis://127.0.0.1:6379/0"
}

# --- RabbitMQ --------------------------------------------------------------------------
svc_rabbitmqctl() { timeout 60 rabbitmqctl -q "$@"; }

svc_rabbitmq() {
  # A node name that resolves everywhere; the Debian default (rabbit@$(hostname)) fails on
  # hosts whose name does not resolve.
  export RABBITMQ_NODENAME="${RABBITMQ_NODENAME:-rabbit@localhost}"
  if svc_have_port 127.0.0.1 5672; then
    svc_log "RabbitMQ already listening on 5672"
    if ! command -v rabbitmqctl >/dev/null || ! svc_rabbitmqctl status >/dev/null 2>&1; then
      # Someone else's RabbitMQ we cannot administer: use its loopback guest account.
      svc_log "cannot administer it with rabbitmqctl; using guest@/"
      export AMQP_URL="amqp://guest:guest@127.0.0.1:5672/%2f"
      return 0
    fi
  else
    command -v rabbitmq-server >/dev/null || svc_apt_install rabbitmq-server
    svc_log "starting RabbitMQ ($RABBITMQ_NODENAME) on 127.0.0.1:5672"
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    mkdir -p /var/log/rabbitmq /var/lib/rabbitmq
    chown rabbitmq:rabbitmq /var/log/rabbitmq /var/lib/rabbitmq 2>/dev/null || true
    rabbitmq-server -detached >/dev/null 2>&1 || rabbitmq-server -detached
    local i
    for ((i = 0; i < 60; i++)); do
      svc_rabbitmqctl await_startup --timeout 10 >/dev/null 2>&1 && break
      sleep 2
    done
    svc_wait_port RabbitMQ 5672 60
  fi
  local pw
  pw=$(svc_password rabbitmq)
  svc_rabbitmqctl add_vhost auditflow_test >/dev/null 2>&1 || true
  if svc_rabbitmqctl list_users | awk '{print $1}' | grep -qx auditflow; then
    svc_rabbitmqctl change_password auditflow "$pw" >/dev/null
  else
    svc_rabbitmqctl add_user auditflow "$pw" >/dev/null
  fi
  svc_rabbitmqctl set_permissions -p auditflow_test auditflow '.*' '.*' '.*' >/dev/null
  export AMQP_URL="amqp://auditflow:$pw@127.0.0.1:5672/auditflow_test"
}

# Headless chromium and chromedriver for the dashboard's browser tests (Debian's packages).
svc_browser() {
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    svc_apt_install chromium chromium-driver
  fi
  svc_log "browser: $(chromium --version 2>/dev/null | head -n 1), $(chromedriver --version 2>/dev/null | cut -d' ' -f1-2)"
}

# The agent's journal source is tested against real journal files, which Debian's
# systemd-journal-remote writes from export-format input (journalctl reads them).
svc_journal_tools() {
  if ! [ -x /lib/systemd/systemd-journal-remote ] && ! [ -x /usr/lib/systemd/systemd-journal-remote ]; then
    svc_apt_install systemd-journal-remote
  fi
  command -v journalctl >/dev/null || svc_apt_install systemd
  svc_log "journal: $(journalctl --version | head -n 1), systemd-journal-remote"
}

# The fault matrix (aggregator/tests/faults.rs) steps one agent's clock with libfaketime,
# restarts a Redis of its own (redis-server) and PostgreSQL (pg_ctlcluster), and mounts a
# small tmpfs for a spool (root).
svc_fault_tools() {
  compgen -G '/usr/lib/*/faketime/libfaketime.so.1' >/dev/null || svc_apt_install libfaketime
  command -v redis-server >/dev/null || svc_apt_install redis-server
  command -v pg_ctlcluster >/dev/null || svc_apt_install postgresql-common
  if [ "$(id -u)" != 0 ]; then
    svc_log "the fault matrix mounts a tmpfs for its disk-full scenario and needs root"
    return 1
  fi
  svc_log "faults: $(compgen -G '/usr/lib/*/faketime/libfaketime.so.1' | head -n 1)"
}

# The notifier's e-mail is tested against a real SMTP server with STARTTLS and AUTH: aiosmtpd
# (PyPI, pinned) in its own venv under target/tools, run by aggregator/tests/smtpd.py.
# Exports AIOSMTPD_PYTHON, the venv's python.
svc_smtp_tools() {
  local root venv pin=aiosmtpd==1.4.6
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  venv="$root/target/tools/smtpd-venv"
  if ! [ -x "$venv/bin/python" ] || ! grep -qx "$pin" "$venv/pin" 2>/dev/null; then
    python3 -c 'import venv, ensurepip' 2>/dev/null || svc_apt_install python3-venv
    rm -rf "$venv"
    python3 -m venv "$venv" &&
      "$venv/bin/pip" install -q --disable-pip-version-check "$pin" &&
      echo "$pin" >"$venv/pin" || { svc_log "cannot install $pin"; return 1; }
  fi
  export AIOSMTPD_PYTHON="$venv/bin/python"
  svc_log "smtp: $("$AIOSMTPD_PYTHON" -c 'import aiosmtpd; print("aiosmtpd", aiosmtpd.__version__)')"
}

services_up() {
  svc_postgres
  svc_redis
  svc_rabbitmq
  svc_log "DATABASE_URL=${DATABASE_URL//:*@/:***@}"
  svc_log "REDIS_URL=$REDIS_URL"
  svc_log "AMQP_URL=${AMQP_URL//:*@/:***@}"
}
