"""The manifest-launch test: proves that the manifests and the binaries agree.

For each AuditFlow workload in WORKLOADS that is marked `launch`, the real binary
($AUDITFLOW_BIN_DIR, default target/debug) is started the way the rendered manifest starts
its container: its command (mapped to the binary of that name) and args, exactly the
environment the container gets (secretKeyRef from test values, fieldRef from the downward
API, $(VAR) expanded as the kubelet does), its ConfigMap and Secret volumes written to a
temporary directory, as the pod's user with no_new_privs. Only what cannot exist outside a
cluster is mapped, and each mapping is checked rather than trusted:
* a listen address of the container (`0.0.0.0:9100`) → 127.0.0.1 and a free port; the
  manifest must declare every port the configuration listens on, and the reverse;
* a URL naming a Service of the manifests → the launched workload behind it (Service port →
  targetPort → containerPort → its free port) or, for RabbitMQ, PostgreSQL and Redis, the
  test server scripts/services.sh started, after checking that the URL's user and password
  are the ones the manifests give that server;
* a path under a volume mount → the same path under the temporary directory;
* a directory that holds only mount points in the container (`/host` of the agent's
  `/host/etc`, `/host/var/log`, … as its sources.files.host_root) → a directory of links to
  those mounts, so that paths under it reach the same volumes.
* a URL naming a host outside the manifests (a notification receiver on the Internet or in
  another namespace: a name with a dot whose first label is no Service of the manifests, so a
  misspelt Service still fails) → the same URL on 127.0.0.1 at a port nothing listens on, so
  that a delivery could not leave this machine;
* what the install creates beside the manifests (k8s/create-secrets.sh; the notification
  channels' Secret, which the user creates): the Secrets, with test values (a key the
  configuration reads as a URL, url_file, holds a URL of the kind above; one it reads as CA
  certificates, ca_file, the test CA), and the ConfigMap auditflow-cluster-jwks, with the key
  set of a test service-account issuer (an EC P-256 key made with openssl for the run)
  standing in for the cluster's;
* a projected service-account token → a token that issuer signs the way the kubelet asks the
  API server to (audience and lifetime from the projection, `sub` the pod's ServiceAccount in
  its namespace, the claim kubernetes.io.node.name the node), issued for k3s's issuer;
* the broker's TLS certificate (Secret auditflow-broker-tls) and the agents' CA (ConfigMap
  auditflow-broker-ca), which the chart's own CA or k8s/create-secrets.sh make at install
  time → a CA and a certificate made with openssl for the run, with the names the chart and
  create-secrets.sh give it (auditflow-broker, .<namespace>, .svc, .svc.cluster.local) plus
  127.0.0.1, the address an mqtts:// URL is mapped to; the URL's own host must be one of
  those names.
Then its liveness and readiness probes are called at the declared paths and ports, and any
workload-specific check runs (the broker must answer TLS with the mounted certificate when its
configuration says so; the agent must log in to the broker with its pod's token, which the
broker verifies against the key set it mounts, over TLS trusting the mounted CA only; no
password is shared).

Workloads not marked `launch` (none today) are not started, and the output says so; their
configuration and environment are still checked with the binary's `check-config`. Adding a
workload is one line in WORKLOADS.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import string
import subprocess
import tempfile
import time
import urllib.error
import uuid
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from render import ROOT, Obj, ident

NODE_NAME = "launch-test-node"
START_TIMEOUT = 30.0
# The issuer of k3s's service-account tokens: what the test's tokens say, so that a broker
# configured for another issuer refuses them.
CLUSTER_ISSUER = "https://kubernetes.default.svc.cluster.local"
# The manifests' default namespace (the chart's default release namespace; the base sets none).
DEFAULT_NAMESPACE = "auditflow"


@dataclass
class Workload:
    kind: str
    name: str
    # Start the binary and call its probes; otherwise only `check-config`.
    launch: bool
    # Printed when not launched.
    reason: str = ""
    # Extra check once the probes pass: (context, running process) -> problem or None.
    check: Callable[["Context", "Running"], str | None] | None = None


def _agent_logged_in(ctx: "Context", me: "Running") -> str | None:
    """The agent logged in to the broker over MQTT (over TLS, trusting the mounted CA only,
    when its URL is mqtts://) as its node with its pod's projected service-account token,
    which the broker verified against the cluster's key set:
    `auditflow_agent_upstream_connected 1`."""
    deadline = time.monotonic() + 20
    last = ""
    while time.monotonic() < deadline:
        last = _get(me.url_for_port("http", "/metrics"))[1]
        if re.search(r"^auditflow_agent_upstream_connected 1$", last, re.M):
            return None
        time.sleep(0.5)
    return "the agent did not log in to the broker within 20 s (auditflow_agent_upstream_connected != 1)"


def _broker_tls(ctx: "Context", me: "Running") -> str | None:
    """With tls_cert in its configuration, the broker answers TLS 1.2+ on its MQTT port with the
    mounted certificate, which verifies for the name auditflow-broker against the test CA."""
    if me.config_file is None or 'tls_cert = "' not in me.config_file.read_text():
        return None
    context = ssl.create_default_context(cafile=str(ctx.tls().ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        with socket.create_connection(("127.0.0.1", me.local_port("mqtt")), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="auditflow-broker") as tls:
                version = tls.version()
    except (OSError, ssl.SSLError) as e:
        return f"no TLS handshake with the broker's MQTT port for the name auditflow-broker: {e}"
    me.note = f"MQTT over {version}, certificate verified for auditflow-broker"
    return None


# Start order matters: a workload's peers must be running before it.
WORKLOADS = [
    Workload("Deployment", "auditflow-broker", launch=True, check=_broker_tls),
    Workload("DaemonSet", "auditflow-agent", launch=True, check=_agent_logged_in),
    Workload("Deployment", "auditflow-aggregator", launch=True),
    Workload("Deployment", "auditflow-dashboard", launch=True),
]

# Images we do not build: nothing to launch here (no container runtime); their probes are
# exec/tcp checks of the images' own tools, validated only as manifests.
THIRD_PARTY = {"auditflow-postgres", "auditflow-rabbitmq", "auditflow-redis"}

# The services scripts/services.sh runs, by URL scheme: the env var it exports, the env vars
# of the server's container holding each (user, password) it creates for a client (a URL
# must carry one of these pairs: each component its own user), and the database.
BACKING = {
    "amqp": ("AMQP_URL", "auditflow-rabbitmq",
             [("AUDITFLOW_BROKER_USER", "AUDITFLOW_BROKER_PASSWORD"),
              ("AUDITFLOW_AGGREGATOR_USER", "AUDITFLOW_AGGREGATOR_PASSWORD")], None),
    "postgres": ("DATABASE_URL", "auditflow-postgres", [("AUDITFLOW_USER", "AUDITFLOW_PASSWORD")], "POSTGRES_DB"),
    "redis": ("REDIS_URL", "auditflow-redis", [(None, "REDIS_PASSWORD")], None),
}

URL = re.compile(
    r"^(?P<scheme>[a-z][a-z0-9+.-]*)://(?:(?P<user>[^:@/]*)(?::(?P<pw>[^@/]*))?@)?"
    r"(?P<host>[^:/@]+)(?::(?P<port>\d+))?(?P<rest>/.*)?$"
)
LISTEN = re.compile(r"^(?:0\.0\.0\.0|127\.0\.0\.1|\[::\]|localhost)?:(\d+)$")


class LaunchError(Exception):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return 0, str(e)


@dataclass
class Running:
    workload: Workload
    proc: subprocess.Popen
    ports: dict[int, int]  # containerPort -> local port
    named: dict[str, int]  # port name -> containerPort
    log: Path
    # The configuration file as written for this run (the workload checks read it).
    config_file: Path | None = None
    # What a workload check found, printed with the probes.
    note: str = ""

    def local_port(self, port: int | str) -> int:
        container_port = self.named[port] if isinstance(port, str) else port
        if container_port not in self.ports:
            raise LaunchError(f"{self.workload.name} has no port {port}")
        return self.ports[container_port]

    def url_for_port(self, port: int | str, path: str) -> str:
        return f"http://127.0.0.1:{self.local_port(port)}{path}"

    def tail(self, n: int = 8) -> str:
        try:
            return "\n".join(line[:300] for line in self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TestIssuer:
    """A service-account issuer for the run: an EC P-256 key (openssl), its JWKS, and ES256
    tokens with the claims the API server puts in a projected token."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.key = directory / "issuer-key.pem"
        subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(self.key)],
                       check=True, capture_output=True)
        der = subprocess.run(["openssl", "ec", "-in", str(self.key), "-pubout", "-outform", "DER"],
                             check=True, capture_output=True).stdout
        point = der[-65:]  # SubjectPublicKeyInfo ends with the uncompressed point 04 || x || y
        if point[0] != 4:
            raise LaunchError("openssl gave no uncompressed P-256 point")
        self.kid = _b64url(point[1:9])
        self.jwks = json.dumps({"keys": [{"use": "sig", "kty": "EC", "kid": self.kid, "crv": "P-256", "alg": "ES256",
                                          "x": _b64url(point[1:33]), "y": _b64url(point[33:])}]})

    def token(self, *, audience: str, seconds: int, namespace: str, service_account: str, node: str) -> str:
        now = int(time.time())
        header = {"alg": "ES256", "kid": self.kid}
        claims = {
            "aud": [audience], "exp": now + seconds, "iat": now, "nbf": now, "iss": CLUSTER_ISSUER,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": {
                "namespace": namespace,
                "node": {"name": node, "uid": str(uuid.uuid4())},
                "pod": {"name": "launch-test-pod", "uid": str(uuid.uuid4())},
                "serviceaccount": {"name": service_account, "uid": str(uuid.uuid4())},
            },
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
        }
        signing_input = ".".join(_b64url(json.dumps(p, separators=(",", ":")).encode()) for p in (header, claims))
        der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)], input=signing_input.encode(),
                             check=True, capture_output=True).stdout
        # DER SEQUENCE { INTEGER r, INTEGER s } -> the 64 bytes r || s that JWS wants.
        r_len = der[3]
        r = int.from_bytes(der[4:4 + r_len], "big")
        s = int.from_bytes(der[6 + r_len:6 + r_len + der[5 + r_len]], "big")
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


# The names the broker's certificate holds (templates/tls.yaml, k8s/create-secrets.sh), in the
# manifests' default namespace.
TLS_NAMES = ("auditflow-broker", f"auditflow-broker.{DEFAULT_NAMESPACE}", f"auditflow-broker.{DEFAULT_NAMESPACE}.svc",
             f"auditflow-broker.{DEFAULT_NAMESPACE}.svc.cluster.local")


class TestTls:
    """The broker's certificate for the run: an EC P-256 CA and a certificate it signs for
    TLS_NAMES and 127.0.0.1 (openssl)."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_file = directory / "ca.crt"
        ca_key, key, csr, cert = (directory / n for n in ("ca.key", "tls.key", "tls.csr", "tls.crt"))
        ext = directory / "ext.cnf"
        sans = ",".join([*(f"DNS:{n}" for n in TLS_NAMES), "IP:127.0.0.1"])
        ext.write_text(f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
        for argv in (
            ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(ca_key)],
            ["req", "-x509", "-new", "-key", str(ca_key), "-subj", "/CN=auditflow-launch-test-ca", "-days", "2",
             "-out", str(self.ca_file)],
            ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key)],
            ["req", "-new", "-key", str(key), "-subj", "/CN=auditflow-broker", "-out", str(csr)],
            ["x509", "-req", "-in", str(csr), "-CA", str(self.ca_file), "-CAkey", str(ca_key), "-CAcreateserial",
             "-days", "2", "-extfile", str(ext), "-out", str(cert)],
        ):
            subprocess.run(["openssl", *argv], check=True, capture_output=True)
        # PKCS#8, as cert-manager and Helm's genSignedCert write keys too.
        pkcs8 = subprocess.run(["openssl", "pkcs8", "-topk8", "-nocrypt", "-in", str(key)],
                               check=True, capture_output=True, text=True).stdout
        self.files = {"tls.crt": cert.read_text(), "tls.key": pkcs8, "ca.crt": self.ca_file.read_text()}


@dataclass
class Context:
    objects: list[Obj]
    tmp: Path
    bin_dir: Path
    as_root: bool
    secret_values: dict[tuple[str, str], str] = field(default_factory=dict)
    running: dict[str, Running] = field(default_factory=dict)
    issuer: TestIssuer | None = None
    tls_files: TestTls | None = None

    def tls(self) -> TestTls:
        if self.tls_files is None:
            self.tls_files = TestTls(self.tmp / "tls")
        return self.tls_files

    def cluster_issuer(self) -> TestIssuer:
        if self.issuer is None:
            self.issuer = TestIssuer(self.tmp / "issuer")
        return self.issuer

    def secret(self, name: str, key: str) -> str:
        """Test values for the Secrets the install creates (k8s/create-secrets.sh makes the
        same keys: the broker's credentials hold the off-cluster agents' hashed lines only,
        here one for a node that is not NODE_NAME; the agent in the cluster needs none)."""
        if (name, key) == ("auditflow-mqtt", "credentials"):
            digest = hashlib.sha256(self.secret("test", "off-cluster-password").encode()).hexdigest()
            return f"off-cluster-test-node:sha256:{digest}\n"
        if name == "auditflow-broker-tls" and key in ("tls.crt", "tls.key", "ca.crt"):
            return self.tls().files[key]
        if (name, key) == ("auditflow-api", "tokens"):
            return f"admin:{self.secret('auditflow-api', 'admin-token')}:admin"
        if (name, key) not in self.secret_values:
            alphabet = string.ascii_letters + string.digits
            self.secret_values[(name, key)] = "".join(secrets.choice(alphabet) for _ in range(24))
        return self.secret_values[(name, key)]

    def find(self, kind: str, name: str) -> Obj | None:
        return next((o for o in self.objects if o["kind"] == kind and o["metadata"]["name"] == name), None)

    def configmap(self, name: str) -> Obj:
        if name == "auditflow-cluster-jwks" and self.find("ConfigMap", name) is None:
            # Made at install time from the cluster's /openid/v1/jwks (k8s/create-secrets.sh).
            return {"kind": "ConfigMap", "metadata": {"name": name}, "data": {"jwks.json": self.cluster_issuer().jwks}}
        if name == "auditflow-broker-ca" and self.find("ConfigMap", name) is None:
            # Made at install time with the broker's certificate (k8s/create-secrets.sh).
            return {"kind": "ConfigMap", "metadata": {"name": name}, "data": {"ca.crt": self.tls().files["ca.crt"]}}
        obj = self.find("ConfigMap", name)
        if obj is None:
            raise LaunchError(f"ConfigMap {name} is not in the manifests")
        return obj

    def workload_of_service(self, svc: Obj) -> Obj | None:
        selector = svc["spec"].get("selector") or {}
        for o in self.objects:
            if o["kind"] in ("Deployment", "DaemonSet", "StatefulSet"):
                labels = o["spec"]["template"]["metadata"].get("labels", {})
                if selector and all(labels.get(k) == v for k, v in selector.items()):
                    return o
        return None


def outside_receiver(scheme: str, rest: str = "/auditflow-launch-test") -> str:
    """A notification receiver's URL for the run: this machine, at a port nothing listens on."""
    return f"{scheme}://127.0.0.1:{_free_port()}{rest}"


def _expand(value: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion; $$ escapes."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)


def container_env(ctx: Context, container: Obj, namespace: str = DEFAULT_NAMESPACE) -> dict[str, str]:
    env: dict[str, str] = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = _expand(str(e["value"]), env)
            continue
        source = e.get("valueFrom", {})
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[e["name"]] = ctx.secret(ref["name"], ref["key"])
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[e["name"]] = ctx.configmap(ref["name"])["data"][ref["key"]]
        elif "fieldRef" in source:
            env[e["name"]] = {
                "spec.nodeName": NODE_NAME,
                "metadata.name": "launch-test-pod",
                "metadata.namespace": namespace,
                "status.podIP": "127.0.0.1",
            }[source["fieldRef"]["fieldPath"]]
        else:
            raise LaunchError(f"env {e['name']}: unsupported source {source}")
    if container.get("envFrom"):
        raise LaunchError("envFrom is not supported by the launch test")
    return env


@dataclass
class Prepared:
    workload: Workload
    argv: list[str]
    env: dict[str, str]
    ports: dict[int, int]
    named: dict[str, int]
    container: Obj
    uid: int | None
    gid: int | None
    groups: list[int]
    root: Path
    config_file: Path | None = None


class Mapper:
    """Maps what only exists in a cluster onto this machine, checking as it goes."""

    def __init__(self, ctx: Context, workload: Workload, container: Obj, mounts: dict[str, Path],
                 ports: dict[int, int], view: Path):
        self.ctx = ctx
        self.workload = workload
        self.container = container
        self.mounts = mounts
        self.ports = ports
        self.view = view
        self.listened: set[int] = set()

    def path(self, value: str) -> str:
        for mount in sorted(self.mounts, key=len, reverse=True):
            if value == mount or value.startswith(mount.rstrip("/") + "/"):
                return str(self.mounts[mount]) + value[len(mount):]
        # A parent of mount points (the images are FROM scratch: nothing else is there).
        parent = value.rstrip("/") + "/"
        if value != "/" and any(mount.startswith(parent) for mount in self.mounts):
            return str(self.view) + value.rstrip("/")
        return value

    def listen(self, value: str) -> str:
        m = LISTEN.match(value)
        assert m
        port = int(m.group(1))
        if port not in self.ports:
            raise LaunchError(f"the configuration listens on {value}, a port the manifest does not declare "
                              f"(containerPorts {sorted(self.ports)})")
        self.listened.add(port)
        return f"127.0.0.1:{self.ports[port]}"

    def url(self, value: str) -> str:
        m = URL.match(value)
        if not m:
            return value
        host, scheme = m.group("host"), m.group("scheme")
        if host in ("kubernetes.default.svc", "kubernetes.default.svc.cluster.local") and not m.group("port"):
            return value  # the service-account issuer: a name the tokens carry, not an address
        svc = self.ctx.find("Service", host)
        if svc is None and scheme in ("http", "https") and "." in host \
                and self.ctx.find("Service", host.split(".")[0]) is None:
            return outside_receiver(scheme, m.group("rest") or "")
        if svc is None:
            raise LaunchError(f"{value!r} names {host}, which is not a Service of the manifests")
        if scheme == "mqtts" and host not in TLS_NAMES:
            raise LaunchError(f"{value!r}: the broker's certificate does not name {host} (it names {', '.join(TLS_NAMES)})")
        port = int(m.group("port") or {"http": 80, "https": 443, "mqtt": 1883, "mqtts": 8883, "amqp": 5672,
                                       "postgres": 5432, "redis": 6379}.get(scheme, 0))
        svc_port = next((p for p in svc["spec"]["ports"] if p["port"] == port), None)
        if svc_port is None:
            raise LaunchError(f"{value!r}: Service {host} has no port {port}")
        target = self.ctx.workload_of_service(svc)
        if target is None:
            raise LaunchError(f"{value!r}: Service {host} selects no workload")
        name = target["metadata"]["name"]
        if name in THIRD_PARTY:
            return self.backing(value, m, target)
        running = self.ctx.running.get(name)
        target_port = svc_port.get("targetPort", port)
        if running is None:
            if self.workload.launch:
                started_before = [w.name for w in WORKLOADS[:WORKLOADS.index(self.workload)] if w.launch]
                if name in started_before:
                    raise LaunchError(f"{value!r} needs {name}, which did not start")
                raise LaunchError(f"{value!r} needs {name}, which is not running: list it before "
                                  f"{self.workload.name} in WORKLOADS and launch it")
            local = _free_port()  # check-config only: nothing listens there
        else:
            local = running.local_port(target_port)
        userinfo = f"{m.group('user')}:{m.group('pw')}@" if m.group("pw") is not None else (
            f"{m.group('user')}@" if m.group("user") else "")
        return f"{scheme}://{userinfo}127.0.0.1:{local}{m.group('rest') or ''}"

    def backing(self, value: str, m: re.Match, server: Obj) -> str:
        scheme = m.group("scheme")
        if scheme not in BACKING:
            raise LaunchError(f"{value!r}: no test server for scheme {scheme}")
        env_name, server_name, accounts, db_var = BACKING[scheme]
        if server["metadata"]["name"] != server_name:
            raise LaunchError(f"{value!r} points at {server['metadata']['name']}, expected {server_name}")
        server_env = container_env(self.ctx, server["spec"]["template"]["spec"]["containers"][0])
        users = {server_env.get(u): p for u, p in accounts}
        if m.group("user") not in users and not (None in users and not m.group("user")):
            raise LaunchError(f"{value!r}: user {m.group('user')!r}, but {server_name} creates only "
                              f"{sorted(u for u in users if u)!r} ({', '.join(u for u, _ in accounts if u)})")
        pw_var = users[m.group("user") if m.group("user") in users else None]
        if m.group("pw") != server_env.get(pw_var):
            raise LaunchError(f"the password in {self.container['name']}'s {scheme} URL is not the one "
                              f"{server_name} is given for that user ({pw_var}): they come from different "
                              "Secrets or keys")
        if db_var and (m.group("rest") or "").lstrip("/") != server_env.get(db_var):
            raise LaunchError(f"{value!r}: database {m.group('rest')!r}, but {server_name} creates "
                              f"{server_env.get(db_var)!r}")
        real = os.environ.get(env_name)
        if not real:
            raise LaunchError(f"{env_name} is not set: the test {server_name.removeprefix('auditflow-')} "
                              "server is not running (source scripts/services.sh && services_up)")
        return real

    def string(self, value: str) -> str:
        if LISTEN.match(value):
            return self.listen(value)
        if URL.match(value):
            return self.url(value)
        if value.startswith("/"):
            return self.path(value)
        return value


def prepare(ctx: Context, workload: Workload, obj: Obj, root: Path) -> Prepared:
    spec = obj["spec"]["template"]["spec"]
    containers = spec["containers"]
    if len(containers) != 1 or spec.get("initContainers"):
        raise LaunchError("the launch test handles pods of exactly one container")
    container = containers[0]
    namespace = obj["metadata"].get("namespace") or DEFAULT_NAMESPACE
    pod_sc = spec.get("securityContext") or {}
    uid = (container.get("securityContext") or {}).get("runAsUser", pod_sc.get("runAsUser"))
    gid = pod_sc.get("runAsGroup", uid)
    groups = [g for g in [pod_sc.get("fsGroup"), *(pod_sc.get("supplementalGroups") or [])] if g is not None]
    ports = {p["containerPort"]: _free_port() for p in container.get("ports", [])}
    named = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}

    # Volumes: written or created under root/volumes, owned as fsGroup would make them.
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts: dict[str, Path] = {}
    secret_files: set[Path] = set()
    for vm in container.get("volumeMounts", []):
        vol = volumes[vm["name"]]
        where = root / "volumes" / vm["name"]
        where.mkdir(parents=True, exist_ok=True)
        files: dict[str, str] = {}
        if "configMap" in vol:
            data = ctx.configmap(vol["configMap"]["name"]).get("data", {})
            items = vol["configMap"].get("items") or [{"key": k, "path": k} for k in data]
            files = {i["path"]: data[i["key"]] for i in items}
        elif "secret" in vol:
            name = vol["secret"]["secretName"]
            items = vol["secret"].get("items")
            if not items:
                raise LaunchError(f"secret volume {vm['name']}: list its items, so the test knows the keys")
            files = {i["path"]: ctx.secret(name, i["key"]) for i in items}
            secret_files.update(where / i["path"] for i in items)
        elif "projected" in vol:
            for source in vol["projected"]["sources"]:
                token = source.get("serviceAccountToken")
                if token is None:
                    raise LaunchError(f"projected volume {vm['name']}: only serviceAccountToken sources are supported")
                files[token["path"]] = ctx.cluster_issuer().token(
                    audience=token.get("audience", CLUSTER_ISSUER), seconds=token.get("expirationSeconds", 3600),
                    namespace=namespace, service_account=spec.get("serviceAccountName", "default"), node=NODE_NAME)
        elif not ("emptyDir" in vol or "hostPath" in vol):
            raise LaunchError(f"volume {vm['name']}: unsupported type")
        for rel, text in files.items():
            (where / rel).parent.mkdir(parents=True, exist_ok=True)
            (where / rel).write_text(text)
        target = where / vm["subPath"] if vm.get("subPath") else where
        mounts[vm["mountPath"]] = target
        if ctx.as_root and uid is not None:
            for p in [where, *where.rglob("*")]:
                os.chown(p, uid, gid if gid is not None else uid)

    # The container's directories above its mounts: links to the volumes (see Mapper.path).
    view = root / "container-view"
    for mount_path in sorted(mounts, key=len):
        rel = Path(mount_path.strip("/"))
        if rel == Path(".") or any((view / q).is_symlink() for q in [rel, *rel.parents]):
            continue  # "/", or inside a mount already linked
        link = view / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(mounts[mount_path])
    mapper = Mapper(ctx, workload, container, mounts, ports, view)
    # The binary's configuration file (--config): its strings are mapped; other mounted
    # files (rules, credentials) are data and stay as they are.
    args = container.get("args", [])
    config = next((args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--config", "-c")), None)
    if config is None:
        raise LaunchError("the container passes no --config file")
    path = Path(mapper.path(config))
    if not path.is_file():
        raise LaunchError(f"--config {config}: no such file in the container's volumes")
    text = path.read_text()
    text = re.sub(r'"([^"\\\n]*)"', lambda m: json.dumps(mapper.string(m.group(1))), text)
    path.write_text(text)
    # Secret keys the configuration reads as a URL or as CA certificates: a random string
    # would not do.
    for key, file in re.findall(r'^\s*(url_file|ca_file)\s*=\s*"([^"]*)"', text, re.M):
        if Path(file) in secret_files:
            Path(file).write_text(outside_receiver("https") + "\n" if key == "url_file" else ctx.tls().files["ca.crt"])
    missing = sorted(set(ports) - mapper.listened)
    if missing:
        raise LaunchError(f"the manifest declares port(s) {missing}, but the configuration does not listen "
                          "on them (state every listen address in the ConfigMap)")

    env = {k: mapper.string(v) if (URL.match(v) or v.startswith("/")) else v
           for k, v in container_env(ctx, container, namespace).items()}
    command = container.get("command")
    if not command:
        raise LaunchError("the container states no command; the launch test needs it to pick the binary")
    binary = Path(command[0]).name
    source = ctx.bin_dir / binary
    if not source.exists():
        raise LaunchError(f"{source} does not exist: build the workspace first (cargo build)")
    # A private copy: another build may replace the original while this runs.
    copy = root / "bin" / binary
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, copy)
    argv = [str(copy), *(mapper.path(_expand(a, env)) for a in command[1:] + container.get("args", []))]
    return Prepared(workload, argv, env, ports, named, container, uid, gid, groups, root, path)


def _as_user(p: Prepared, argv: list[str], as_root: bool) -> list[str]:
    """Runs as the pod's user and groups, with no_new_privs (allowPrivilegeEscalation: false)."""
    if not as_root or p.uid is None:
        return argv
    groups = ["--groups", ",".join(map(str, p.groups))] if p.groups else ["--clear-groups"]
    gid = p.gid if p.gid is not None else p.uid
    return ["setpriv", f"--reuid={p.uid}", f"--regid={gid}", *groups, "--no-new-privs", "--", *argv]


def start(ctx: Context, p: Prepared) -> Running:
    log = p.root / "output.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(_as_user(p, p.argv, ctx.as_root), env=p.env, cwd=p.root,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Running(p.workload, proc, p.ports, p.named, log, p.config_file)


def probe(run: Running, container: Obj) -> list[str]:
    """Calls the liveness and readiness probes until both pass (kubelet: 200–399)."""
    results = []
    for kind in ("livenessProbe", "readinessProbe"):
        spec = container.get(kind)
        if spec is None:
            raise LaunchError(f"no {kind}")
        http = spec.get("httpGet")
        if http is None:
            raise LaunchError(f"{kind} is not an httpGet probe; the launch test calls only HTTP probes")
        if http.get("scheme", "HTTP") != "HTTP":
            raise LaunchError(f"{kind}: scheme {http['scheme']} not supported")
        url = run.url_for_port(http["port"], http["path"])
        deadline = time.monotonic() + START_TIMEOUT
        status, body = 0, ""
        while time.monotonic() < deadline:
            if run.proc.poll() is not None:
                raise LaunchError(f"exited with status {run.proc.returncode} before its {kind} passed")
            status, body = _get(url)
            if 200 <= status < 400:
                break
            time.sleep(0.3)
        else:
            raise LaunchError(f"{kind} GET {http['path']} on port {http['port']}: "
                              f"HTTP {status or 'no answer'} {body.strip()[:120]!r} after {START_TIMEOUT:.0f} s")
        results.append(f"{kind[:-5]} GET {http['path']} :{http['port']} -> {status}")
    return results


def stop(run: Running) -> str | None:
    if run.proc.poll() is None:
        os.killpg(run.proc.pid, signal.SIGTERM)
        try:
            run.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(run.proc.pid, signal.SIGKILL)
            run.proc.wait()
            return "did not stop within 15 s of SIGTERM"
    if run.proc.returncode != 0:
        return f"exited with status {run.proc.returncode} after SIGTERM"
    return None


def signature(ctx: Context, obj: Obj) -> str:
    """What the binary sees: container spec (but resources) and the ConfigMaps it mounts."""
    spec = obj["spec"]["template"]["spec"]
    container = {k: v for k, v in spec["containers"][0].items() if k != "resources"}
    # ConfigMaps of the manifests only: the install's (the cluster's key set) differ every run.
    configs = [ctx.configmap(v["configMap"]["name"]).get("data") for v in spec.get("volumes", [])
               if "configMap" in v and ctx.find("ConfigMap", v["configMap"]["name"]) is not None]
    return json.dumps([container, configs, spec.get("securityContext")], sort_keys=True)


def run_render(label: str, objects: list[Obj], bin_dir: Path, seen: set[str]) -> tuple[int, list[str]]:
    """Launches the workloads of one render. Returns (failures, launched names)."""
    failures = 0
    launched: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix=f"auditflow-launch-{label}-"))
    os.chmod(tmp, 0o755)
    ctx = Context(objects, tmp, bin_dir, os.geteuid() == 0)
    ours = {(o["kind"], o["metadata"]["name"]) for o in objects if o["kind"] in ("Deployment", "DaemonSet", "StatefulSet")}
    listed = {(w.kind, w.name) for w in WORKLOADS}
    for kind, name in sorted(ours - listed):
        if name not in THIRD_PARTY:
            failures += 1
            print(f"FAIL {label}: {kind}/{name} is neither in WORKLOADS nor third-party: add it to k8s/tests/launch.py")
    present = [(w, ctx.find(w.kind, w.name)) for w in WORKLOADS]
    for w, obj in present:
        if obj is None:
            failures += 1
            print(f"FAIL {label}: {w.kind}/{w.name} is not rendered")
    present = [(w, obj) for w, obj in present if obj is not None]
    sigs = {w.name: signature(ctx, obj) + str(w.launch) for w, obj in present}
    if all(sig in seen for sig in sigs.values()):
        print(f"ok   {label}: the same containers and configuration as a render above; not launched again")
        shutil.rmtree(tmp, ignore_errors=True)
        return failures, launched
    try:
        for w, obj in present:
            sig = sigs[w.name]
            repeat = sig in seen
            seen.add(sig)
            root = tmp / w.name
            root.mkdir()
            os.chmod(root, 0o755)
            try:
                prepared = prepare(ctx, w, obj, root)
                if not w.launch:
                    if repeat:
                        continue
                    argv = list(prepared.argv)
                    if argv[-1] != "run":
                        raise LaunchError(f"args end with {argv[-1]!r}, expected the `run` subcommand")
                    argv[-1] = "check-config"
                    out = subprocess.run(_as_user(prepared, argv, ctx.as_root), env=prepared.env, cwd=root,
                                         capture_output=True, text=True, timeout=30)
                    if out.returncode != 0:
                        raise LaunchError(f"check-config exited {out.returncode}: {(out.stdout + out.stderr).strip()}")
                    print(f"NOT LAUNCHED {label} {w.kind}/{w.name}: {w.reason}; "
                          f"check-config with the manifest's config and environment: ok")
                    continue
                run = start(ctx, prepared)
                ctx.running[w.name] = run
                results = probe(run, prepared.container)
                if w.check:
                    problem = w.check(ctx, run)
                    if problem:
                        raise LaunchError(problem)
                    results.append(run.note or " ".join((w.check.__doc__ or "check ok").split()))
                launched.append(w.name)
                user = f"uid {prepared.uid}" if ctx.as_root and prepared.uid is not None else "this user"
                if repeat:
                    print(f"ok   {label} {w.kind}/{w.name}: the same container as above, launched again "
                          "beside its changed peers; probes pass")
                else:
                    print(f"ok   {label} {w.kind}/{w.name}: launched as {user}, " + "; ".join(results))
            except (LaunchError, subprocess.TimeoutExpired) as e:
                failures += 1
                print(f"FAIL {label} {w.kind}/{w.name}: {e}")
                running = ctx.running.get(w.name)
                if running:
                    print("  last output:\n    " + running.tail().replace("\n", "\n    "))
    finally:
        for name in reversed(list(ctx.running)):
            problem = stop(ctx.running[name])
            if problem:
                failures += 1
                print(f"FAIL {label} {name}: {problem}")
                print("  last output:\n    " + ctx.running[name].tail().replace("\n", "\n    "))
        if not failures:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"  (files and logs kept in {tmp})")
    return failures, launched


def main(renders: dict[str, list[Obj]]) -> int:
    bin_dir = Path(os.environ.get("AUDITFLOW_BIN_DIR", ROOT / "target" / "debug"))
    failures = 0
    seen: set[str] = set()
    launched_any: set[str] = set()
    # The Kustomize renders: the chart renders the same objects (the agree step).
    for label in sorted(renders):
        if not label.startswith("kustomize-"):
            continue
        f, launched = run_render(label, renders[label], bin_dir, seen)
        failures += f
        launched_any.update(launched)
    print(f"launch-tested (started, probed, stopped): {', '.join(sorted(launched_any)) or 'none'}")
    print("not launch-tested: " + ", ".join(
        [f"{w.name} ({w.reason})" for w in WORKLOADS if not w.launch]
        + [f"{n} (third-party image)" for n in sorted(THIRD_PARTY)]))
    return failures
