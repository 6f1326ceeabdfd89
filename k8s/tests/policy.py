"""The policy check over every rendered object (our own checker: checkov's Kubernetes
checks need its policy download or a large offline bundle, and these rules are few).

Rules, for every container of every pod template (Deployment, DaemonSet, StatefulSet, Pod):
  requests and limits for cpu and memory; liveness and readiness probes; runAsNonRoot;
  allowPrivilegeEscalation false; privileged false; capabilities: drop ALL, add nothing;
  seccomp RuntimeDefault; readOnlyRootFilesystem; an image with a pinned tag (not latest);
  no hostNetwork/hostPID/hostIPC, no hostPort; no hostPath volume (see the exception);
  a dedicated ServiceAccount without an API token.
Secrets: no Secret object in a Kustomize render (they are created at install time); the
  chart's generated Secrets are random (two renders differ in every value), but for the
  broker's off-cluster credentials, which are the values' `node:sha256:<hex>` lines (a
  plaintext password there fails the render); no password, token or key in an env `value`,
  in a URL's user info or in a ConfigMap (a `*_file` key naming a path is where one is read).
Service-account tokens: only the agent projects one, for the broker's audience (never the API
  server's), valid an hour at most, mounted read-only.
Notifications: the aggregator's egress beyond its RabbitMQ, PostgreSQL and Redis ports is what
  its [[notify.channels]] need: every port a channel's url, smtp or PagerDuty's Events API
  implies is open, and no other port but at most one per channel whose URL is in a Secret
  (url_file: the configuration cannot show it); without channels, nothing. No Slack or Discord
  webhook URL in the configuration: the URL is the secret.
Plus: NodePort only for the dashboard on 30080, and NodePort or LoadBalancer for the broker's
  MQTT port only through auditflow-broker-external, only over TLS, only from the CIDRs the
  broker's NetworkPolicy names; no RBAC bindings (nothing needs the API); every workload is
  selected by a NetworkPolicy and the namespace has a default deny.
MQTT over TLS (tls.enabled): the broker listens with a certificate and key from the Secret
  auditflow-broker-tls, the agents connect with mqtts:// and trust the CA of the ConfigMap
  auditflow-broker-ca only, and no pod but the broker names the broker's Secret. The chart's
  own CA and certificate are random in every render, the certificate chains to the CA in
  that ConfigMap and holds the Service's names (openssl).

THE EXCEPTION (written, narrow): the agent DaemonSet `auditflow-agent` may mount hostPath
volumes, because collecting a node's audit trail means reading the node's files. Only the
paths in AGENT_READ_ONLY_HOST_PATHS, each mounted readOnly: true, plus exactly one writable
hostPath, its spool at AGENT_SPOOL (the spool must survive pod restarts and reboots,
design.md §4). Every other rule above still applies to the agent. No other object may use
hostPath. Adding a watched directory means adding it here, in review.
The exception's own limits: each read-only path is a directory (hostPath type Directory or
DirectoryOrCreate), never a single file, because a file mount keeps the inode it was given and
the watched files are replaced by rename (logrotate; shadow's tools; visudo; editors), so the
agent would silently see no change; /etc is the only directory that holds passwd, group,
shadow and sudoers, hence on the list; /run/log/journal is the volatile journal (the
persistent one comes with /var/log). And the agent's supplementalGroups hold neither root
(0) nor shadow (42): it compares /etc/shadow by metadata, it does not read password hashes.

Exception for `helm test` pods (annotation helm.sh/hook: test): they run once to completion,
so liveness/readiness probes do not apply to them; all other rules do.
"""

from __future__ import annotations

import base64
import re
import subprocess
import tempfile
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import render
from render import Obj, ident

AGENT = ("DaemonSet", "auditflow-agent")
AGENT_READ_ONLY_HOST_PATHS = {"/var/log", "/etc", "/var/lib/rancher/k3s/server/logs", "/run/log/journal"}
AGENT_SPOOL = "/var/lib/auditflow/spool"
AGENT_HOST_PATH_TYPES = {"Directory", "DirectoryOrCreate"}
AGENT_FORBIDDEN_GROUPS = {0: "root", 42: "shadow"}

SENSITIVE_NAME = re.compile(r"PASS|SECRET|TOKEN|KEY|CREDENTIAL|COOKIE", re.I)
URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:([^@\s/]+)@", re.I)
CONFIG_SECRET = re.compile(r"^\s*([\w.-]*(?:password|passwd|secret|token|api_key)\w*)\s*[=:]\s*\"?([^\s\"#]+)", re.I | re.M)
# The agents' only projected service-account token: for the broker, never for the API server
# (whose audiences are its issuer URL or "api"), and short-lived.
AGENT_TOKEN_AUDIENCE_FORBIDDEN = re.compile(r"^(https?://|api$|kubernetes)", re.I)
AGENT_TOKEN_MAX_SECONDS = 3600


def _sc(spec: Obj, container: Obj, key: str) -> Any:
    """A security setting: the container's, else the pod's."""
    value = (container.get("securityContext") or {}).get(key)
    if value is None:
        value = (spec.get("securityContext") or {}).get(key)
    return value


def check_pod(obj: Obj, spec: Obj, problems: list[str]) -> None:
    name = ident(obj)
    is_test = (obj["metadata"].get("annotations") or {}).get("helm.sh/hook") == "test"
    is_agent = (obj["kind"], obj["metadata"]["name"]) == AGENT
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            problems.append(f"{name}: {flag} is set")
    if spec.get("automountServiceAccountToken") is not False:
        problems.append(f"{name}: automountServiceAccountToken must be false")
    if spec.get("serviceAccountName") in (None, "", "default"):
        problems.append(f"{name}: needs its own ServiceAccount")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for vol in volumes.values():
        for source in (vol.get("projected") or {}).get("sources", []):
            token = source.get("serviceAccountToken")
            if token is None:
                continue
            audience = token.get("audience", "")
            if not is_agent:
                problems.append(f"{name}: volume {vol['name']} projects a service-account token (only the agent has one, for the broker)")
            elif not audience or AGENT_TOKEN_AUDIENCE_FORBIDDEN.match(audience):
                problems.append(f"{name}: volume {vol['name']}: the token's audience {audience!r} would let it reach the API server")
            elif token.get("expirationSeconds", 3600) > AGENT_TOKEN_MAX_SECONDS:
                problems.append(f"{name}: volume {vol['name']}: token valid for more than {AGENT_TOKEN_MAX_SECONDS} s")
    for container in spec.get("initContainers", []) + spec.get("containers", []):
        c = f"{name} container {container['name']}"
        res = container.get("resources") or {}
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if not (res.get(kind) or {}).get(r):
                    problems.append(f"{c}: no {kind}.{r}")
        if not is_test and container in spec.get("containers", []):
            for probe in ("livenessProbe", "readinessProbe"):
                if probe not in container:
                    problems.append(f"{c}: no {probe}")
        if _sc(spec, container, "runAsNonRoot") is not True:
            problems.append(f"{c}: runAsNonRoot is not true")
        if _sc(spec, container, "runAsUser") == 0:
            problems.append(f"{c}: runs as uid 0")
        csc = container.get("securityContext") or {}
        if csc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{c}: allowPrivilegeEscalation is not false")
        if csc.get("privileged"):
            problems.append(f"{c}: privileged")
        if csc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{c}: readOnlyRootFilesystem is not true")
        caps = csc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{c}: capabilities not dropped (drop: [ALL])")
        if caps.get("add"):
            problems.append(f"{c}: adds capabilities {caps['add']}")
        seccomp = (csc.get("seccompProfile") or (spec.get("securityContext") or {}).get("seccompProfile") or {})
        if seccomp.get("type") != "RuntimeDefault":
            problems.append(f"{c}: seccompProfile is not RuntimeDefault")
        image = container.get("image", "")
        tag = image.rsplit("/", 1)[-1].partition(":")[2] if "@" not in image else "digest"
        if not tag or tag == "latest":
            problems.append(f"{c}: image {image!r} has no pinned tag")
        for port in container.get("ports", []):
            if port.get("hostPort"):
                problems.append(f"{c}: hostPort {port['hostPort']}")
        for env in container.get("env", []):
            if "value" in env and SENSITIVE_NAME.search(env["name"]) and env["value"]:
                problems.append(f"{c}: env {env['name']} has a literal value; use a secretKeyRef")
            m = URL_WITH_PASSWORD.search(str(env.get("value", "")))
            if m and not re.fullmatch(r"\$\([A-Z0-9_]+\)", m.group(1)):
                problems.append(f"{c}: env {env['name']} has a password in a URL; refer to a secret env var as $(VAR)")
        # hostPath: only the agent, only the listed paths, read-only but for the spool.
        for mount in container.get("volumeMounts", []):
            vol = volumes.get(mount["name"], {})
            if "projected" in vol and mount.get("readOnly") is not True:
                problems.append(f"{c}: projected volume {mount['name']} must be mounted readOnly")
            if "hostPath" not in vol:
                continue
            path = vol["hostPath"]["path"]
            if not is_agent:
                problems.append(f"{c}: hostPath {path} (only the agent may mount host paths)")
            elif path == AGENT_SPOOL:
                if mount.get("readOnly"):
                    problems.append(f"{c}: the spool must be writable")
            elif path not in AGENT_READ_ONLY_HOST_PATHS:
                problems.append(f"{c}: hostPath {path} is not in the agent's exception list")
            elif mount.get("readOnly") is not True:
                problems.append(f"{c}: hostPath {path} must be mounted readOnly")
            elif vol["hostPath"].get("type") not in AGENT_HOST_PATH_TYPES:
                problems.append(f"{c}: hostPath {path} must be a directory (type Directory or DirectoryOrCreate): "
                                "a file mount does not follow a file replaced by rename")
    if is_agent:
        for group in (spec.get("securityContext") or {}).get("supplementalGroups") or []:
            if group in AGENT_FORBIDDEN_GROUPS:
                problems.append(f"{name}: supplementalGroups has {group} ({AGENT_FORBIDDEN_GROUPS[group]})")
        writable = [v["hostPath"]["path"] for v in volumes.values()
                    if "hostPath" in v and v["hostPath"]["path"] not in AGENT_READ_ONLY_HOST_PATHS]
        if writable != [AGENT_SPOOL]:
            problems.append(f"{name}: writable hostPaths {writable}, expected only {AGENT_SPOOL}")


def _selected(selector: Obj, labels: dict[str, str]) -> bool:
    match = selector.get("matchLabels") or {}
    return all(labels.get(k) == v for k, v in match.items()) and not selector.get("matchExpressions")


def check_render(label: str, objects: list[Obj]) -> list[str]:
    problems: list[str] = []
    kustomize = label.startswith("kustomize-")
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    for obj in objects:
        name = ident(obj)
        spec = render.pod_spec(obj)
        if spec is not None:
            check_pod(obj, spec, problems)
            labels = (obj["spec"].get("template", {}).get("metadata", {}).get("labels")
                      if obj["kind"] != "Pod" else obj["metadata"].get("labels")) or {}
            if policies and not any(_selected(p["spec"]["podSelector"], labels) and p["metadata"]["name"] != "auditflow-default-deny"
                                    and p["metadata"]["name"] != "auditflow-allow-dns" for p in policies):
                problems.append(f"{name}: no NetworkPolicy of its own selects it")
        kind = obj["kind"]
        if kind == "Secret" and kustomize:
            problems.append(f"{name}: a Secret in the Kustomize files (create them at install time)")
        if kind in ("RoleBinding", "ClusterRoleBinding", "Role", "ClusterRole"):
            problems.append(f"{name}: RBAC object, but no AuditFlow process uses the Kubernetes API")
        if kind == "Service" and obj["spec"].get("type") in ("NodePort", "LoadBalancer"):
            ports = [p.get("nodePort") for p in obj["spec"]["ports"]]
            if obj["metadata"]["name"] == "auditflow-broker-external":
                problems.extend(f"{name}: {p}" for p in _broker_exposure(obj, objects))
            elif obj["metadata"]["name"] != "auditflow-dashboard" or ports != [30080]:
                problems.append(f"{name}: exposed outside the cluster ({obj['spec']['type']} {ports})")
        if kind == "ConfigMap":
            for key, text in (obj.get("data") or {}).items():
                for m in CONFIG_SECRET.finditer(text):
                    if m.group(1).endswith("_file") and m.group(2).startswith("/"):
                        continue  # where a secret is read from, not a secret
                    problems.append(f"{name}: {key} sets {m.group(1)} to a value; secrets come from Secrets")
                for m in URL_WITH_PASSWORD.finditer(text):
                    problems.append(f"{name}: {key} has a URL with a password")
    problems.extend(_mqtt_tls(objects))
    problems.extend(_notify_egress(objects))
    if policies and not any(p["metadata"]["name"] == "auditflow-default-deny" and
                            set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"} for p in policies):
        problems.append("no default-deny NetworkPolicy for ingress and egress")
    if not policies:
        problems.append("no NetworkPolicy at all")
    return problems


def _find(objects: list[Obj], kind: str, name: str) -> Obj | None:
    return next((o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name), None)


def _broker_toml(objects: list[Obj]) -> str:
    cm = next((o for o in objects if o["kind"] == "ConfigMap"
               and o["metadata"]["name"].startswith("auditflow-broker-config")), None)
    return (cm or {}).get("data", {}).get("broker.toml", "")


def _broker_exposure(svc: Obj, objects: list[Obj]) -> list[str]:
    """The broker's external Service: the TLS port only, the broker listening with TLS, and a
    NetworkPolicy rule that admits named CIDRs (never everyone) on that port."""
    problems = []
    ports = svc["spec"]["ports"]
    if [p["port"] for p in ports] != [8883]:
        problems.append(f"exposes ports {[p['port'] for p in ports]}, not the MQTT-over-TLS port 8883 only")
    if 'tls_cert = "' not in _broker_toml(objects):
        problems.append("exposes the broker, which does not listen with TLS")
    policy = _find(objects, "NetworkPolicy", "auditflow-broker")
    if policy is not None:
        blocks = [f["ipBlock"]["cidr"] for rule in policy["spec"].get("ingress", [])
                  if any(p.get("port") == 8883 for p in rule.get("ports", []))
                  for f in rule.get("from", []) if "ipBlock" in f]
        if not blocks:
            problems.append("the broker's NetworkPolicy admits no address range from outside on 8883")
        if "0.0.0.0/0" in blocks or "::/0" in blocks:
            problems.append("the broker's NetworkPolicy admits everyone on 8883")
    return problems


def _mqtt_tls(objects: list[Obj]) -> list[str]:
    """With TLS on (the broker's [mqtt] has tls_cert), broker and agents agree on it."""
    broker = _find(objects, "Deployment", "auditflow-broker")
    agent = _find(objects, "DaemonSet", "auditflow-agent")
    toml = _broker_toml(objects)
    if broker is None or agent is None or not toml:
        return []
    problems = []
    tls = 'tls_cert = "' in toml
    agent_env = {e["name"]: e.get("value") for e in agent["spec"]["template"]["spec"]["containers"][0].get("env", [])}
    url = agent_env.get("AUDITFLOW_MQTT_URL", "")
    if tls != url.startswith("mqtts://"):
        problems.append(f"DaemonSet/auditflow-agent: AUDITFLOW_MQTT_URL {url!r}, but the broker "
                        f"{'listens with' if tls else 'has no'} TLS")
    if tls and not agent_env.get("AUDITFLOW_MQTT_CA_FILE"):
        problems.append("DaemonSet/auditflow-agent: mqtts:// without AUDITFLOW_MQTT_CA_FILE would trust the system's roots")
    for obj in objects:
        spec = render.pod_spec(obj)
        if spec is None or obj is broker:
            continue
        for vol in spec.get("volumes", []):
            if (vol.get("secret") or {}).get("secretName") in ("auditflow-broker-tls", "auditflow-tls-ca"):
                problems.append(f"{ident(obj)}: mounts the Secret {vol['secret']['secretName']} (a private key); "
                                "only the broker may")
    return problems


# Where a channel connects when its configuration names no URL (the aggregator's default for
# pagerduty), and the port of a URL that names none.
PAGERDUTY_EVENTS = "https://events.pagerduty.com/v2/enqueue"
SCHEME_PORTS = {"https": 443, "http": 80}
# The aggregator's services, whose ports its NetworkPolicy opens besides the notifications'.
SERVICE_URL_ENV = ("AMQP_URL", "DATABASE_URL", "REDIS_URL")


def _notify_egress(objects: list[Obj]) -> list[str]:
    """The aggregator's egress beyond its services is exactly what its notification channels
    need (see the module's docstring)."""
    cm = next((o for o in objects if o["kind"] == "ConfigMap"
               and o["metadata"]["name"].startswith("auditflow-aggregator-config")), None)
    deployment = _find(objects, "Deployment", "auditflow-aggregator")
    policy = _find(objects, "NetworkPolicy", "auditflow-aggregator")
    if cm is None or deployment is None or policy is None:
        return []
    try:
        config = tomllib.loads(cm["data"]["aggregator.toml"])
    except (KeyError, tomllib.TOMLDecodeError) as e:
        return [f"ConfigMap/auditflow-aggregator-config: no valid aggregator.toml: {e}"]
    channels = config.get("notify", {}).get("channels", [])
    env = deployment["spec"]["template"]["spec"]["containers"][0].get("env", [])
    service_ports = set()
    for e in env:
        m = re.search(r"://[^/]*:(\d+)(?:/|$)", str(e.get("value", ""))) if e["name"] in SERVICE_URL_ENV else None
        if m:
            service_ports.add(int(m.group(1)))
    problems = []
    opened: set[int] = set()
    for rule in policy["spec"].get("egress", []):
        if not rule.get("ports"):
            problems.append("NetworkPolicy/auditflow-aggregator: an egress rule without ports opens every port")
        opened.update(p["port"] for p in rule.get("ports", []) if p.get("port") not in service_ports)
    needed: dict[int, list[str]] = {}
    url_in_secret = []
    for ch in channels:
        name, kind = ch.get("name"), ch.get("kind")
        if kind in ("slack", "discord") and ch.get("url"):
            problems.append(f"ConfigMap/auditflow-aggregator-config: channel {name}: a {kind} webhook URL in a "
                            "ConfigMap; the URL is the secret (url_file, a key of a Secret)")
        if kind == "email":
            port_text = str(ch.get("smtp", "")).rpartition(":")[2]
            port = int(port_text) if port_text.isdigit() else 0
        elif ch.get("url_file"):
            url_in_secret.append(name)
            continue
        else:
            url = urlsplit(ch.get("url") or (PAGERDUTY_EVENTS if kind == "pagerduty" else ""))
            port = url.port or SCHEME_PORTS.get(url.scheme, 0)
        needed.setdefault(port, []).append(name)
    for port, names in sorted(needed.items()):
        if port not in opened:
            problems.append(f"NetworkPolicy/auditflow-aggregator: the channel(s) {', '.join(names)} need TCP {port}, "
                            "which it does not open")
    extra = sorted(opened - set(needed))
    if len(extra) > len(url_in_secret):
        problems.append(f"NetworkPolicy/auditflow-aggregator: opens TCP {extra} besides its services, more than its "
                        f"notification channels need ({len(url_in_secret)} of them read their URL from a Secret)")
    return problems


def _openssl(args: list[str], data: str) -> str:
    out = subprocess.run(["openssl", *args], input=data, capture_output=True, text=True, check=False)
    return out.stdout + out.stderr


def check_generated_tls() -> list[str]:
    """The chart's own CA and broker certificate (tls.enabled, no cert-manager): random in
    every render, the agents' CA ConfigMap is the CA, the certificate chains to it and holds the
    Service's names; none rendered with secrets.generate=false."""
    case = next(c for c in render.CHART_CASES if c.label == "chart-default")
    first, second = ({ident(o): o for o in render.helm_template(case)} for _ in range(2))
    problems = []
    tls, ca_secret = first.get("Secret/auditflow-broker-tls"), first.get("Secret/auditflow-tls-ca")
    ca_map = first.get("ConfigMap/auditflow-broker-ca")
    if tls is None or ca_secret is None or ca_map is None:
        return ["chart-default rendered no auditflow-broker-tls, auditflow-tls-ca or auditflow-broker-ca"]
    for key in ("tls.key", "tls.crt"):
        if tls["data"][key] == second["Secret/auditflow-broker-tls"]["data"][key]:
            problems.append(f"Secret/auditflow-broker-tls: {key} is the same in two renders: not generated")
    ca = base64.b64decode(tls["data"]["ca.crt"]).decode()
    if ca.strip() != ca_map["data"]["ca.crt"].strip() or ca != base64.b64decode(ca_secret["data"]["tls.crt"]).decode():
        problems.append("the agents' CA (ConfigMap auditflow-broker-ca) is not the CA of the broker's certificate")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "ca.pem").write_text(ca)
        leaf = base64.b64decode(tls["data"]["tls.crt"]).decode()
        verify = _openssl(["verify", "-CAfile", str(Path(tmp) / "ca.pem"), "-purpose", "sslserver"], leaf)
        if ": OK" not in verify:
            problems.append(f"the broker's certificate does not verify against the CA: {verify.strip()}")
        text = _openssl(["x509", "-noout", "-ext", "subjectAltName"], leaf)
        for host in ("auditflow-broker", f"auditflow-broker.{case.namespace}.svc"):
            if f"DNS:{host}" not in text:
                problems.append(f"the broker's certificate does not name {host}: {text.strip()}")
    without = render.helm_template(case, extra={"secrets": {"generate": False}})
    problems.extend(f"{ident(o)}: rendered although secrets.generate=false" for o in without
                    if ident(o) in ("Secret/auditflow-broker-tls", "Secret/auditflow-tls-ca", "ConfigMap/auditflow-broker-ca"))
    return problems


# The one generated key that is not random: the off-cluster agents' hashed lines, from values.
OFF_CLUSTER_CREDENTIALS = ("Secret/auditflow-mqtt", "credentials")


def check_generated_secrets() -> list[str]:
    """The chart's Secrets are random at install time: two renders share no value, and none
    is empty. The broker's credentials are the values' `node:sha256:<hex>` lines, exactly, and
    a line holding a password fails the render."""
    case = next(c for c in render.CHART_CASES if c.label == "chart-external-services")
    first, second = (
        {ident(o): o for o in render.helm_template(case) if o["kind"] == "Secret"} for _ in range(2)
    )
    problems = []
    if not first:
        problems.append("secrets.generate=true rendered no Secret")
    lines = render.load_values(case.values_files)["broker"]["offClusterCredentials"]
    for key, obj in first.items():
        for data_key, value in (obj.get("data") or {}).items():
            if (key, data_key) == OFF_CLUSTER_CREDENTIALS:
                got = base64.b64decode(value).decode()
                if got.split() != lines:
                    problems.append(f"{key}: {data_key} is {got!r}, not broker.offClusterCredentials")
                continue
            if not value:
                problems.append(f"{key}: {data_key} is empty")
            elif value == second[key]["data"][data_key]:
                problems.append(f"{key}: {data_key} is the same in two renders: not generated")
    try:
        render.helm_template(case, extra={"broker": {"offClusterCredentials": ["pi9:a-plaintext-password-here"]}})
        problems.append("broker.offClusterCredentials with a plaintext password rendered")
    except Exception as e:  # helm_python.HelmError; its message must not repeat the password
        if "plaintext-password" in str(e) or "node:sha256" not in str(e):
            problems.append(f"a plaintext broker.offClusterCredentials line failed with an unhelpful or leaking message: {e}")
    without = render.helm_template(case, extra={"secrets": {"generate": False}})
    problems.extend(f"{ident(o)}: rendered although secrets.generate=false" for o in without if o["kind"] == "Secret")
    return problems


def check(renders: dict[str, list[Obj]]) -> int:
    failures = 0
    for label, objects in renders.items():
        problems = check_render(label, objects)
        pods = sum(1 for o in objects if render.pod_spec(o) is not None)
        if problems:
            failures += 1
            print(f"FAIL {label}: {len(problems)} problems")
            for p in problems:
                print(f"  {p}")
        else:
            print(f"ok   {label}: {len(objects)} objects, {pods} pod templates")
    problems = check_generated_secrets()
    if problems:
        failures += 1
        print("FAIL generated secrets:")
        for p in problems:
            print(f"  {p}")
    else:
        print("ok   generated secrets: random in every render, none with secrets.generate=false")
    problems = check_generated_tls()
    if problems:
        failures += 1
        print("FAIL the chart's broker certificate:")
        for p in problems:
            print(f"  {p}")
    else:
        print("ok   the chart's broker certificate: random in every render, signed by the CA the agents "
              "trust, names the broker's Service; none with secrets.generate=false")
    print(f"exception in force: hostPath only for {AGENT[0]}/{AGENT[1]}: read-only directories "
          f"{', '.join(sorted(AGENT_READ_ONLY_HOST_PATHS))}; writable {AGENT_SPOOL} (spool); "
          f"no supplementalGroups {sorted(AGENT_FORBIDDEN_GROUPS)}")
    return failures
