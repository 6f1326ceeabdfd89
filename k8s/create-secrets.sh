#!/usr/bin/env bash
# Creates the Secrets AuditFlow needs in a namespace, with random passwords, for the
# Kustomize install (and for the Helm chart with secrets.generate=false):
#
#   auditflow-mqtt      agent-password  the agents' MQTT password (every node logs in with
#                                       its node name and this password)
#                       credentials     the broker's `node:password` lines, one per node
#   auditflow-rabbitmq  broker-password      RabbitMQ's `auditflow-broker` user
#                       aggregator-password  RabbitMQ's `auditflow-aggregator` user
#                                       (each with rights to its own queues only; RabbitMQ
#                                       creates them from these keys at every start)
#   auditflow-postgres  password        PostgreSQL's `auditflow` role (owns the database,
#                                       no superuser), which the aggregator uses
#                       admin-password  PostgreSQL's superuser `postgres` (no process uses it)
#   auditflow-redis     password        Redis's password
#   auditflow-api       admin-token     the aggregator API's admin token
#                       tokens          AUDITFLOW_API_TOKENS (`admin:TOKEN:admin`; add
#                                       `name:token:role` entries for more users)
#                       github-secret   the GitHub webhook secret (set the same in GitHub)
#                       gitlab-token    the GitLab webhook secret token
#
# Usage: k8s/create-secrets.sh NAMESPACE [NODE...]
#   NODE...  the nodes the broker admits; default: every node of the cluster (kubectl get nodes)
#
# Idempotent: existing passwords are kept (PostgreSQL keeps the passwords it was initialised
# with in its volume); a key missing from an existing Secret (after an upgrade) is added.
# Run it again after adding a node: it rewrites the broker's node list and restarts the
# broker so that it reads it.
# Needs kubectl with access to the cluster; nothing is written to disk but a private
# temporary directory that is removed on exit.
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 NAMESPACE [NODE...]" >&2
  exit 64
fi
ns=$1
shift

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 700 "$tmp"

# 32 letters and digits: URL-safe, as the passwords go into AMQP_URL, DATABASE_URL and REDIS_URL.
random_password() {
  local p=""
  while [ ${#p} -lt 32 ]; do p+=$(head -c 64 /dev/urandom | LC_ALL=C tr -dc 'A-Za-z0-9'); done
  printf '%s' "${p:0:32}"
}

# The decoded value of a key of an existing Secret, or nothing.
existing() { # secret key
  kubectl -n "$ns" get secret "$1" -o go-template="{{ index .data \"$2\" | base64decode }}" 2>/dev/null || true
}

kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns"

# passwords SECRET KEY...: the Secret holds a password under each key; the existing ones are
# kept, missing ones are generated.
passwords() {
  local name=$1 key value args=() added=()
  shift
  for key in "$@"; do
    value=$(existing "$name" "$key")
    if [ -z "$value" ]; then
      value=$(random_password)
      added+=("$key")
    fi
    printf '%s' "$value" >"$tmp/$name.$key"
    args+=("--from-file=$key=$tmp/$name.$key")
  done
  if [ ${#added[@]} = 0 ]; then
    echo "secret $name exists: kept"
    return
  fi
  if ! kubectl -n "$ns" get secret "$name" >/dev/null 2>&1; then
    kubectl -n "$ns" create secret generic "$name" "${args[@]}" >/dev/null
    echo "secret $name created"
    return
  fi
  kubectl -n "$ns" create secret generic "$name" "${args[@]}" --dry-run=client -o yaml |
    kubectl apply -f - >/dev/null
  echo "secret $name: added ${added[*]}"
}

passwords auditflow-rabbitmq broker-password aggregator-password
passwords auditflow-postgres password admin-password
passwords auditflow-redis password

if kubectl -n "$ns" get secret auditflow-api >/dev/null 2>&1; then
  echo "secret auditflow-api exists: kept"
else
  admin_token=$(random_password)
  printf '%s' "$admin_token" >"$tmp/admin-token"
  printf 'admin:%s:admin' "$admin_token" >"$tmp/tokens"
  random_password >"$tmp/github-secret"
  random_password >"$tmp/gitlab-token"
  kubectl -n "$ns" create secret generic auditflow-api \
    --from-file=admin-token="$tmp/admin-token" --from-file=tokens="$tmp/tokens" \
    --from-file=github-secret="$tmp/github-secret" --from-file=gitlab-token="$tmp/gitlab-token" >/dev/null
  echo "secret auditflow-api created (admin token: kubectl -n $ns get secret auditflow-api -o jsonpath='{.data.admin-token}' | base64 -d)"
fi

agent_password=$(existing auditflow-mqtt agent-password)
[ -n "$agent_password" ] || agent_password=$(random_password)
printf '%s' "$agent_password" >"$tmp/agent-password"
if [ $# -gt 0 ]; then
  nodes=("$@")
else
  mapfile -t nodes < <(kubectl get nodes -o go-template='{{ range .items }}{{ .metadata.name }}{{ "\n" }}{{ end }}')
fi
if [ ${#nodes[@]} = 0 ]; then
  echo "no nodes given and none found in the cluster" >&2
  exit 1
fi
mapfile -t nodes < <(printf '%s\n' "${nodes[@]}" | sort -u)
: >"$tmp/credentials"
for node in "${nodes[@]}"; do
  printf '%s:%s\n' "$node" "$agent_password" >>"$tmp/credentials"
done
before=$(existing auditflow-mqtt credentials | sha256sum)
kubectl -n "$ns" create secret generic auditflow-mqtt \
  --from-file=agent-password="$tmp/agent-password" --from-file=credentials="$tmp/credentials" \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null
echo "secret auditflow-mqtt: the broker admits $(printf '%s ' "${nodes[@]}")"
if [ "$before" != "$(sha256sum <"$tmp/credentials")" ] &&
  kubectl -n "$ns" get deployment auditflow-broker >/dev/null 2>&1; then
  kubectl -n "$ns" rollout restart deployment/auditflow-broker
fi
