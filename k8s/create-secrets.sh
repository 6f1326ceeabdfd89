#!/usr/bin/env bash
# Creates the Secrets AuditFlow needs in a namespace, with random passwords, for the
# Kustomize install (and for the Helm chart with secrets.generate=false), and the cluster's
# service-account keys for the broker (both installs):
#
#   auditflow-mqtt      credentials     the broker's lines for agents OUTSIDE the cluster
#                                       (Ansible role, Pi image): `node:sha256:<hex>`, the
#                                       SHA-256 of each node's own password. The agents in
#                                       the cluster need none: each pod logs in with its own
#                                       service-account token (below).
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
#   auditflow-tls-ca    tls.crt, tls.key  the CA that signs the broker's certificate (mounted
#                                       by no pod; kept, so that agents keep trusting it)
#   auditflow-broker-tls  tls.crt, tls.key, ca.crt  the broker's certificate for MQTT over
#                                       TLS: auditflow-broker, .NAMESPACE, .NAMESPACE.svc,
#                                       .NAMESPACE.svc.cluster.local and the names and addresses
#                                       in AUDITFLOW_BROKER_TLS_NAMES (comma-separated, for
#                                       agents outside the cluster); 825 days. Kept when it
#                                       exists: delete it and run again to re-issue it.
#   ConfigMap auditflow-broker-ca  ca.crt  the CA's certificate, which the agents trust
#   ConfigMap auditflow-cluster-jwks  jwks.json  the cluster's public service-account keys
#                                       (kubectl get --raw /openid/v1/jwks), against which the
#                                       broker checks the agent pods' tokens. The script prints
#                                       the cluster's issuer: the broker's
#                                       [mqtt.kubernetes] issuer (chart:
#                                       broker.kubernetesAuth.issuer) must be the same.
#
# Usage: k8s/create-secrets.sh [--jwks-only] NAMESPACE [NODE:sha256:HEX...]
#   NODE:sha256:HEX...  the off-cluster agents' lines; they replace the broker's list. None:
#                       the list in the cluster is kept (you manage it, e.g. with kubectl edit).
#                       A line with a password instead of its hash is refused.
#   --jwks-only         only (re)write the ConfigMap auditflow-cluster-jwks: for the Helm
#                       chart, which makes the Secrets itself, and after the cluster's signing
#                       key changed (the broker re-reads it; no restart).
#
# Idempotent: existing passwords are kept (PostgreSQL keeps the passwords it was initialised
# with in its volume); a key missing from an existing Secret (after an upgrade) is added.
# Upgrading from the shared agents' password: the key agent-password and every credentials
# line holding that password are removed, so that no node can log in as another with it.
# When the broker's list changes, the broker is restarted so that it reads it.
# Needs kubectl with access to the cluster; nothing is written to disk but a private
# temporary directory that is removed on exit.
set -euo pipefail

jwks_only=false
if [ "${1:-}" = --jwks-only ]; then
  jwks_only=true
  shift
fi
if [ $# -lt 1 ]; then
  echo "usage: $0 [--jwks-only] NAMESPACE [NODE:sha256:HEX...]" >&2
  exit 64
fi
ns=$1
shift
for line in "$@"; do
  if ! [[ $line =~ ^[A-Za-z0-9][A-Za-z0-9._-]*:sha256:[0-9a-f]{64}$ ]]; then
    # Name the node only: the rest may be a password.
    echo "the line for ${line%%:*} is not NODE:sha256:<64 lowercase hex> (the SHA-256 of the node's password, never the password)" >&2
    exit 64
  fi
done

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

# The cluster's service-account keys, for the broker to check the agents' tokens offline.
kubectl get --raw /openid/v1/jwks >"$tmp/jwks.json"
if ! grep -q '"keys"' "$tmp/jwks.json"; then
  echo "kubectl get --raw /openid/v1/jwks returned no key set" >&2
  exit 1
fi
kubectl -n "$ns" create configmap auditflow-cluster-jwks --from-file=jwks.json="$tmp/jwks.json" \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null
issuer=$(kubectl get --raw /.well-known/openid-configuration | sed -n 's/.*"issuer": *"\([^"]*\)".*/\1/p')
echo "configmap auditflow-cluster-jwks: the cluster's service-account keys (issuer ${issuer:-unknown})"
if [ "$issuer" != https://kubernetes.default.svc.cluster.local ]; then
  echo "note: the issuer is not k3s's default: set broker.kubernetesAuth.issuer=$issuer (chart), or issuer in the overlay's broker.toml (Kustomize)"
fi
if $jwks_only; then
  exit 0
fi

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

# The broker's TLS certificate, from a CA of our own (EC P-256, openssl). The CA's key goes
# into its own Secret, which no pod mounts; the agents get the CA's certificate from a
# ConfigMap, so that no pod on every node names a Secret holding a private key.
if kubectl -n "$ns" get secret auditflow-tls-ca >/dev/null 2>&1; then
  existing auditflow-tls-ca tls.crt >"$tmp/ca.crt"
  existing auditflow-tls-ca tls.key >"$tmp/ca.key"
  echo "secret auditflow-tls-ca exists: kept"
else
  openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out "$tmp/ca.key"
  openssl req -x509 -new -key "$tmp/ca.key" -subj /CN=auditflow-broker-ca -days 3650 -out "$tmp/ca.crt" 2>/dev/null
  kubectl -n "$ns" create secret tls auditflow-tls-ca --cert="$tmp/ca.crt" --key="$tmp/ca.key" >/dev/null
  echo "secret auditflow-tls-ca created (a new CA: agents outside the cluster need its certificate)"
fi
if kubectl -n "$ns" get secret auditflow-broker-tls >/dev/null 2>&1; then
  echo "secret auditflow-broker-tls exists: kept (delete it and run again to re-issue it)"
else
  sans="DNS:auditflow-broker,DNS:auditflow-broker.$ns,DNS:auditflow-broker.$ns.svc,DNS:auditflow-broker.$ns.svc.cluster.local"
  IFS=, read -r -a extra <<<"${AUDITFLOW_BROKER_TLS_NAMES:-}"
  for name in "${extra[@]}"; do
    if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then sans+=",IP:$name"; elif [ -n "$name" ]; then sans+=",DNS:$name"; fi
  done
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$sans" >"$tmp/ext.cnf"
  openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out "$tmp/tls.key"
  openssl req -new -key "$tmp/tls.key" -subj /CN=auditflow-broker -out "$tmp/tls.csr" 2>/dev/null
  openssl x509 -req -in "$tmp/tls.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" -CAcreateserial \
    -days 825 -extfile "$tmp/ext.cnf" -out "$tmp/tls.crt" 2>/dev/null
  kubectl -n "$ns" create secret generic auditflow-broker-tls --type=kubernetes.io/tls \
    --from-file=tls.crt="$tmp/tls.crt" --from-file=tls.key="$tmp/tls.key" --from-file=ca.crt="$tmp/ca.crt" >/dev/null
  echo "secret auditflow-broker-tls created for ${sans//DNS:/}"
fi
kubectl -n "$ns" create configmap auditflow-broker-ca --from-file=ca.crt="$tmp/ca.crt" \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null
echo "configmap auditflow-broker-ca: the CA the agents trust"

# The off-cluster agents' lines: the arguments, or the list the cluster holds. Lines holding
# the old shared agents' password are dropped: any node knew it.
shared=$(existing auditflow-mqtt agent-password)
if [ $# -gt 0 ]; then
  printf '%s\n' "$@" | sort -u >"$tmp/credentials"
else
  existing auditflow-mqtt credentials >"$tmp/credentials"
fi
if [ -n "$shared" ]; then
  SHARED=$shared awk 'BEGIN { pw = ENVIRON["SHARED"] }
    { i = index($0, ":"); if (i && substr($0, i + 1) == pw) next; print }' \
    "$tmp/credentials" >"$tmp/credentials.kept"
  mv "$tmp/credentials.kept" "$tmp/credentials"
fi
before=$(existing auditflow-mqtt credentials | sha256sum)
kubectl -n "$ns" create secret generic auditflow-mqtt --from-file=credentials="$tmp/credentials" \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null
if [ -n "$(existing auditflow-mqtt agent-password)" ]; then
  kubectl -n "$ns" patch secret auditflow-mqtt --type=json \
    -p '[{"op": "remove", "path": "/data/agent-password"}]' >/dev/null
  echo "secret auditflow-mqtt: removed the shared agents' password (agents in the cluster use their own tokens)"
fi
echo "secret auditflow-mqtt: the broker admits off the cluster: $(grep -o '^[^:]*' "$tmp/credentials" | tr '\n' ' ')"
if [ "$before" != "$(sha256sum <"$tmp/credentials")" ] &&
  kubectl -n "$ns" get deployment auditflow-broker >/dev/null 2>&1; then
  kubectl -n "$ns" rollout restart deployment/auditflow-broker
fi
