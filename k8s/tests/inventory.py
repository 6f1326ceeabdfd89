"""The Ansible inventory example and the chart agree on how agents outside the cluster reach
the broker (ansible/inventory/example): the chart is rendered with the values that inventory
gives the auditflow_platform role (values-<environment>.yaml, then
auditflow_platform_helm_values), and the agent configuration the auditflow_agent role would
write for its hosts ([transport] mqtt_url and mqtt_ca_file) must be served by that render:
* an mqtts:// URL, and the broker listens with TLS;
* the URL's port is the exposed Service's (NodePort: its nodePort; LoadBalancer: its port);
* the URL's host is a name or address the broker's certificate holds (the chart's own
  certificate, read with openssl), and, for a NodePort, the address of a k3s node;
* the role is given the CA (auditflow_agent_mqtt_ca_pem), so that it writes mqtt_ca_file, and
  the chart publishes that CA (ConfigMap auditflow-broker-ca);
* the broker's NetworkPolicy admits every auditflow_agents host's address on the TLS port.

The inventory's YAML is read as data: the URL and the values must be literal there (a
Jinja expression is not evaluated; the CA's lookup only has to be set). The role's template
is checked to still write mqtt_url from auditflow_agent_mqtt_url, and mqtt_ca_file when a CA
is given, which is all of it this check relies on. A copy of the inventory with the port
moved is checked too and must fail, so that the check is known to bite.
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import re
import subprocess
from typing import Any
from urllib.parse import urlsplit

import yaml

import render
from render import CHART, ROOT, ChartCase, Obj, ident

INVENTORY = ROOT / "ansible" / "inventory" / "example"
AGENT_TEMPLATE = ROOT / "ansible" / "roles" / "auditflow_agent" / "templates" / "agent.toml.j2"
PLATFORM_DEFAULTS = ROOT / "ansible" / "roles" / "auditflow_platform" / "defaults" / "main.yml"


def load_inventory() -> dict[str, Any]:
    hosts = yaml.safe_load((INVENTORY / "hosts.yml").read_text())
    group_vars = yaml.safe_load((INVENTORY / "group_vars" / "all" / "main.yml").read_text())
    return {"hosts": hosts, "vars": group_vars}


def _group_hosts(node: dict[str, Any], group: str, inside: bool = False) -> dict[str, dict[str, Any]]:
    """Hosts of `group` (with its children) in an Ansible YAML inventory tree."""
    found: dict[str, dict[str, Any]] = {}
    for name, child in (node.get("children") or {}).items():
        child = child or {}
        hit = inside or name == group
        if hit:
            found.update({h: (v or {}) for h, v in (child.get("hosts") or {}).items()})
        found.update(_group_hosts(child, group, hit))
    return found


def _address(host: str, hostvars: dict[str, Any]) -> str:
    return str(hostvars.get("ansible_host", host))


def agent_config(inv: dict[str, Any]) -> dict[str, str | None]:
    """[transport] mqtt_url and mqtt_ca_file as the auditflow_agent role writes them."""
    template = AGENT_TEMPLATE.read_text()
    if "mqtt_url = {{ auditflow_agent_mqtt_url | to_json }}" not in template or not re.search(
            r"\{% if auditflow_agent_mqtt_ca_pem \| length > 0 %\}\s*mqtt_ca_file = ", template):
        raise ValueError(f"{AGENT_TEMPLATE.relative_to(ROOT)} no longer writes mqtt_url and mqtt_ca_file "
                         "the way this check assumes: update k8s/tests/inventory.py")
    v = inv["vars"]
    ca_pem = str(v.get("auditflow_agent_mqtt_ca_pem") or "")
    return {"mqtt_url": str(v.get("auditflow_agent_mqtt_url", "")),
            "mqtt_ca_file": "/etc/auditflow/mqtt-ca.pem" if ca_pem else None}


def chart_case(inv: dict[str, Any]) -> tuple[ChartCase, dict[str, Any]]:
    """The chart render the platform role would install: its values files, then
    auditflow_platform_helm_values, in the namespace auditflow-<environment>."""
    v = inv["vars"]
    if v.get("auditflow_platform_method") != "helm":
        raise ValueError("the example inventory deploys with kustomize: this check renders the chart the helm "
                         "method installs; expose the broker in an overlay and check it instead")
    defaults = yaml.safe_load(PLATFORM_DEFAULTS.read_text())
    env = v.get("auditflow_platform_environment", defaults["auditflow_platform_environment"])
    if v.get("auditflow_platform_helm_values_files") is not None:
        raise ValueError("auditflow_platform_helm_values_files set in the example: teach this check to read them")
    namespace = v.get("auditflow_platform_namespace") or f"auditflow-{env}"
    case = ChartCase("inventory-example", (CHART / f"values-{env}.yaml",), namespace)
    return case, copy.deepcopy(v.get("auditflow_platform_helm_values") or {})


def _sans(cert_pem: str) -> set[str]:
    out = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName"], input=cert_pem,
                         capture_output=True, text=True, check=False).stdout
    names = set()
    for item in re.split(r",\s*", out.split("\n", 1)[-1].strip()):
        if item.startswith("DNS:"):
            names.add(item[4:])
        elif item.startswith("IP Address:"):
            names.add(str(ipaddress.ip_address(item[11:])))
    return names


def problems_of(inv: dict[str, Any]) -> tuple[list[str], str]:
    """What does not agree, and a one-line summary of what was compared."""
    conf = agent_config(inv)
    case, values = chart_case(inv)
    objects = render.helm_template(case, extra=values)
    by_id: dict[str, Obj] = {ident(o): o for o in objects}
    problems = []
    url = urlsplit(conf["mqtt_url"] or "")
    host, port = url.hostname or "", url.port
    if url.scheme != "mqtts":
        problems.append(f"auditflow_agent_mqtt_url {conf['mqtt_url']!r} is not mqtts://: the broker is exposed over TLS only")
    broker_toml = by_id["ConfigMap/auditflow-broker-config"]["data"]["broker.toml"]
    if 'tls_cert = "' not in broker_toml:
        problems.append("the chart's broker does not listen with TLS (tls.enabled)")
    svc = by_id.get("Service/auditflow-broker-external")
    if svc is None:
        problems.append("the chart exposes no broker port outside the cluster (broker.expose.type)")
    else:
        svc_port = svc["spec"]["ports"][0]
        served = svc_port.get("nodePort") if svc["spec"]["type"] == "NodePort" else svc_port["port"]
        if port != served:
            problems.append(f"auditflow_agent_mqtt_url port {port}, but the chart's {svc['spec']['type']} "
                            f"Service auditflow-broker-external serves {served}")
    cluster = _group_hosts(inv["hosts"]["all"], "k3s_cluster")
    if svc is not None and svc["spec"]["type"] == "NodePort" and host not in {
            _address(h, hv) for h, hv in cluster.items()} | set(cluster):
        problems.append(f"NodePort: the URL's host {host} is none of the k3s nodes' addresses")
    tls = by_id.get("Secret/auditflow-broker-tls")
    if tls is None:
        problems.append("the chart renders no broker certificate to check (cert-manager or secrets.generate=false)")
    else:
        sans = _sans(base64.b64decode(tls["data"]["tls.crt"]).decode())
        if host not in sans:
            problems.append(f"the broker's certificate does not name {host} (tls.extraDnsNames/extraIpAddresses); "
                            f"it names {', '.join(sorted(sans))}")
    if conf["mqtt_ca_file"] is None:
        problems.append("auditflow_agent_mqtt_ca_pem is empty: the agents would trust the system's roots, "
                        "not the chart's CA (ConfigMap auditflow-broker-ca)")
    if "ConfigMap/auditflow-broker-ca" not in by_id:
        problems.append("the chart publishes no CA for the agents (ConfigMap auditflow-broker-ca)")
    policy = by_id.get("NetworkPolicy/auditflow-broker")
    cidrs = [ipaddress.ip_network(f["ipBlock"]["cidr"]) for rule in (policy or {}).get("spec", {}).get("ingress", [])
             if any(p.get("port") == 8883 for p in rule.get("ports", []))
             for f in rule.get("from", []) if "ipBlock" in f]
    outside = _group_hosts(inv["hosts"]["all"], "auditflow_agents")
    for name, hv in sorted(outside.items()):
        try:
            addr = ipaddress.ip_address(_address(name, hv))
        except ValueError:
            problems.append(f"{name}: ansible_host {_address(name, hv)!r} is not an address; the check needs one")
            continue
        if not any(addr in net for net in cidrs):
            problems.append(f"{name} ({addr}) is not admitted by the broker's NetworkPolicy on 8883 "
                            f"(broker.expose.from: {[str(c) for c in cidrs]})")
    summary = (f"{conf['mqtt_url']} with mqtt_ca_file = {conf['mqtt_ca_file']} for {', '.join(sorted(outside))}; "
               f"chart {case.values_files[0].name} + auditflow_platform_helm_values in {case.namespace}")
    return problems, summary


def check() -> int:
    inv = load_inventory()
    try:
        problems, summary = problems_of(inv)
    except ValueError as e:
        print(f"FAIL inventory example: {e}")
        return 1
    failures = 0
    if problems:
        failures += 1
        print("FAIL the Ansible inventory example and the chart disagree on the broker:")
        for p in problems:
            print(f"  {p}")
    else:
        print(f"ok   inventory example: {summary}: served (TLS, port, certificate name, CA, NetworkPolicy)")
    # The check must bite: the same inventory with the port moved by one fails.
    moved = copy.deepcopy(inv)
    url = urlsplit(moved["vars"]["auditflow_agent_mqtt_url"])
    moved["vars"]["auditflow_agent_mqtt_url"] = url._replace(netloc=f"{url.hostname}:{(url.port or 0) + 1}").geturl()
    if not problems_of(moved)[0]:
        failures += 1
        print("FAIL inventory example: a URL on another port passed the check")
    else:
        print("ok   inventory example: the same with the URL's port moved by one is refused")
    return failures
