"""One source of truth: the Helm chart. The Kustomize base is generated from the chart's
default rendering (`generate`), as is each overlay's broker.toml (the broker's configuration
names the agents' ServiceAccount in the overlay's namespace) and the notify component's
aggregator.toml (the chart's [[notify.channels]] for k8s/tests/values-notify.yaml), and every
overlay must render the same objects as the chart
with the matching values file (`check`): same images, commands, environment, ports, probes,
resources, volumes, selectors, policies — compared whole, not field by field.

What may differ, and is normalised away before comparing:
* metadata.namespace (Helm sets the release namespace, the overlays their own);
* the labels helm.sh/chart and app.kubernetes.io/managed-by (Helm's bookkeeping);
* the pod annotation checksum/config (Helm's way to roll pods on a config change; the
  Kustomize files get the same effect from configMapGenerator's name hashes);
* the hash suffix of generated ConfigMap names, wherever they are referred to;
* Namespace objects (only the overlays create their namespace; Helm uses --create-namespace);
* Helm hooks (helm test), which have no Kustomize counterpart.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import render
from render import CHART_CASES, K8S, Obj, ident

HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")
GENERATED_HEADER = (
    "# GENERATED from the Helm chart k8s/charts/auditflow by `k8s/tests/k8scheck.py generate`.\n"
    "# Do not edit: change the chart (values.yaml or templates) and regenerate; the check in\n"
    "# scripts/check-k8s.sh fails while this file and the chart disagree.\n"
)


def _strip_labels(meta: Obj) -> None:
    labels = meta.get("labels")
    if labels:
        for key in HELM_ONLY_LABELS:
            labels.pop(key, None)
    annotations = meta.get("annotations")
    if annotations is not None:
        for key in [k for k in annotations if k.startswith("checksum/")]:
            del annotations[key]
        if not annotations:
            del meta["annotations"]


def normalize(objects: list[Obj]) -> dict[str, Obj]:
    """Objects keyed by kind/name with the differences listed above removed."""
    objs = [copy.deepcopy(o) for o in objects if o.get("kind") != "Namespace"]
    objs = [o for o in objs if "helm.sh/hook" not in o["metadata"].get("annotations", {})]
    # Generated ConfigMaps: name-<10 characters of hash>.
    renames: dict[str, str] = {}
    for o in objs:
        if o["kind"] == "ConfigMap":
            m = re.fullmatch(r"(.+)-[a-z0-9]{10}", o["metadata"]["name"])
            if m and m.group(1).startswith("auditflow-"):
                renames[o["metadata"]["name"]] = m.group(1)
    out: dict[str, Obj] = {}
    for o in objs:
        text = json.dumps(o)
        for hashed, plain in renames.items():
            text = text.replace(f'"{hashed}"', f'"{plain}"')
        o = json.loads(text)
        meta = o["metadata"]
        meta.pop("namespace", None)
        _strip_labels(meta)
        template = o.get("spec", {}).get("template") if isinstance(o.get("spec"), dict) else None
        if isinstance(template, dict) and "metadata" in template:
            _strip_labels(template["metadata"])
        for claim in (o.get("spec", {}) or {}).get("volumeClaimTemplates", []) if isinstance(o.get("spec"), dict) else []:
            _strip_labels(claim.get("metadata", {}))
        out[ident(o)] = o
    return out


def diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Differences between two JSON-like values, as 'path: a != b' lines."""
    if isinstance(a, dict) and isinstance(b, dict):
        lines = []
        for key in sorted(set(a) | set(b), key=str):
            p = f"{path}.{key}"
            if key not in a:
                lines.append(f"{p}: only in the Kustomize render: {json.dumps(b[key])[:120]}")
            elif key not in b:
                lines.append(f"{p}: only in the chart render: {json.dumps(a[key])[:120]}")
            else:
                lines.extend(diff(a[key], b[key], p))
        return lines
    if (isinstance(a, list) and isinstance(b, list) and a and b
            and all(isinstance(x, dict) and "name" in x for x in a + b)
            and [x["name"] for x in a] != [x["name"] for x in b]):
        named_a = {x["name"]: x for x in a}
        named_b = {x["name"]: x for x in b}
        lines = [f"{path}: names in order: chart {[x['name'] for x in a]} != kustomize {[x['name'] for x in b]}"]
        return lines + diff(named_a, named_b, path)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [line for i, (x, y) in enumerate(zip(a, b)) for line in diff(x, y, f"{path}[{i}]")]
    if a != b:
        return [f"{path}: chart {json.dumps(a)[:120]} != kustomize {json.dumps(b)[:120]}"]
    return []


def workload_summary(obj: Obj) -> str:
    spec = render.pod_spec(obj)
    if spec is None:
        return ""
    parts = []
    for c in spec.get("containers", []):
        ports = ",".join(str(p["containerPort"]) for p in c.get("ports", []))
        probes = ",".join(
            f"{k[:-5]}:{(v.get('httpGet') or {}).get('path') or next(iter(v))}"
            for k, v in c.items()
            if k.endswith("Probe")
        )
        res = c.get("resources", {})
        parts.append(
            f"{c['name']} {c['image']} ports {ports or '-'} probes {probes} "
            f"req {res.get('requests', {}).get('cpu')}/{res.get('requests', {}).get('memory')} "
            f"lim {res.get('limits', {}).get('cpu')}/{res.get('limits', {}).get('memory')}"
        )
    replicas = obj["spec"].get("replicas", "HPA" if obj["kind"] == "Deployment" else "-")
    return f"{ident(obj)} (replicas {replicas}): " + "; ".join(parts)


def chart_without_secrets(label: str) -> list[Obj]:
    case = next(c for c in CHART_CASES if c.label == label)
    return render.helm_template(case, include_hooks=False, extra={"secrets": {"generate": False}})


SHIPPED_RULES = render.ROOT / "aggregator" / "rules"
CHART_RULES = render.CHART / "rules"


def rules_differ() -> list[str]:
    """The chart's rules/ is a copy of the shipped rule pack (Helm reads files only from
    inside the chart)."""
    shipped = {p.name: p.read_text() for p in SHIPPED_RULES.glob("*.toml")}
    chart = {p.name: p.read_text() for p in CHART_RULES.glob("*.toml")}
    return [f"k8s/charts/auditflow/rules/{name}: differs from aggregator/rules/{name}"
            for name in sorted(set(shipped) | set(chart)) if shipped.get(name) != chart.get(name)]


def check(renders: dict[str, list[Obj]], verbose: bool = True) -> int:
    failures = 0
    stale = rules_differ()
    if stale:
        failures += 1
        print("FAIL the rules ConfigMap is not the shipped rule pack:")
        for line in stale:
            print(f"  {line}")
    else:
        print(f"ok   the rules ConfigMap holds the shipped rule pack ({len(list(CHART_RULES.glob('*.toml')))} files of aggregator/rules)")
    for chart_label, kustomize_label in render.AGREEMENT:
        chart = normalize(chart_without_secrets(chart_label))
        kust = normalize(renders[kustomize_label])
        problems = []
        for key in sorted(set(chart) - set(kust)):
            problems.append(f"{key}: rendered by the chart only")
        for key in sorted(set(kust) - set(chart)):
            problems.append(f"{key}: rendered by Kustomize only")
        for key in sorted(set(chart) & set(kust)):
            problems.extend(f"{key}{line}" for line in diff(chart[key], kust[key]))
        if problems:
            failures += 1
            print(f"FAIL {chart_label} vs {kustomize_label}: {len(problems)} differences")
            for line in problems[:40]:
                print(f"  {line}")
            if len(problems) > 40:
                print(f"  … and {len(problems) - 40} more")
        else:
            workloads = [workload_summary(o) for o in chart.values() if render.pod_spec(o) is not None]
            print(f"ok   {chart_label} == {kustomize_label}: {len(chart)} objects identical, {len(workloads)} workloads")
            if verbose and chart_label == "chart-prod":
                for w in workloads:
                    print(f"       {w}")
        # Each overlay puts everything in its own namespace.
        env = kustomize_label.removeprefix("kustomize-")
        if env in render.ENVIRONMENTS:
            wrong = [ident(o) for o in renders[kustomize_label]
                     if o["kind"] != "Namespace" and o["metadata"].get("namespace") != f"auditflow-{env}"]
            if wrong:
                failures += 1
                print(f"FAIL {kustomize_label}: not in namespace auditflow-{env}: {', '.join(wrong)}")
    if failures:
        print("The chart and the Kustomize files disagree. If the chart's defaults changed, run\n"
              "  target/tools/k8s-venv/bin/python k8s/tests/k8scheck.py generate\n"
              "and mirror values-<env>.yaml changes in k8s/overlays/<env> (or the reverse).")
    return failures


# --- generation of k8s/base, k8s/components/monitoring and the overlays' files --------------


def _component(obj: Obj) -> str:
    return obj["metadata"].get("labels", {}).get("app.kubernetes.io/component", "misc")


def _kustomize_ready(objects: list[Obj]) -> tuple[dict[str, list[Obj]], list[Obj]]:
    """Objects grouped by component, ConfigMaps taken out (they become generator entries)."""
    groups: dict[str, list[Obj]] = {}
    configmaps: list[Obj] = []
    for obj in objects:
        obj = copy.deepcopy(obj)
        if "helm.sh/hook" in obj["metadata"].get("annotations", {}):
            continue
        obj["metadata"].pop("namespace", None)
        _strip_labels(obj["metadata"])
        spec = obj.get("spec")
        if isinstance(spec, dict):
            if isinstance(spec.get("template"), dict):
                _strip_labels(spec["template"].setdefault("metadata", {}))
            for claim in spec.get("volumeClaimTemplates", []):
                _strip_labels(claim.get("metadata", {}))
        if obj["kind"] == "ConfigMap":
            configmaps.append(obj)
        else:
            groups.setdefault(_component(obj), []).append(obj)
    return groups, configmaps


def _write_tree(directory: Path, groups: dict[str, list[Obj]], configmaps: list[Obj], *,
                kind: str, resources_prefix: list[str] | None = None, disable_hash: bool = False) -> None:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    resources = list(resources_prefix or [])
    for component in sorted(groups):
        name = f"{component}.yaml"
        (directory / name).write_text(GENERATED_HEADER + render.dump_all(groups[component]))
        resources.append(name)
    generators = []
    for cm in configmaps:
        cm_name = cm["metadata"]["name"]
        files = []
        for key, text in cm.get("data", {}).items():
            path = directory / "files" / cm_name / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            files.append(f"files/{cm_name}/{key}")
        entry: Obj = {"name": cm_name, "files": files,
                      "options": {"labels": cm["metadata"].get("labels", {})}}
        if disable_hash:
            entry["options"]["disableNameSuffixHash"] = True
        generators.append(entry)
    kustomization: Obj = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1" if kind == "Kustomization" else "kustomize.config.k8s.io/v1alpha1",
        "kind": kind,
        "resources": resources,
    }
    if generators:
        kustomization["configMapGenerator"] = generators
    (directory / "kustomization.yaml").write_text(GENERATED_HEADER + render.dump_all([kustomization]))


def generate() -> None:
    for stale in CHART_RULES.glob("*.toml"):
        stale.unlink()
    for rule_file in SHIPPED_RULES.glob("*.toml"):
        shutil.copyfile(rule_file, CHART_RULES / rule_file.name)
    default = next(c for c in CHART_CASES if c.label == "chart-default")
    base_objects = render.helm_template(default, include_hooks=False, extra={"secrets": {"generate": False}})
    groups, configmaps = _kustomize_ready(base_objects)
    _write_tree(K8S / "base", groups, configmaps, kind="Kustomization")
    print(f"wrote k8s/base: {sum(len(g) for g in groups.values())} objects in {len(groups)} files, "
          f"{len(configmaps)} generated ConfigMaps")

    monitoring = next(c for c in CHART_CASES if c.label == "chart-monitoring")
    with_monitoring = render.helm_template(monitoring, include_hooks=False, extra={"secrets": {"generate": False}})
    known = {ident(o) for o in base_objects}
    extra = [o for o in with_monitoring if ident(o) not in known]
    m_groups, m_configmaps = _kustomize_ready(extra)
    # The Grafana sidecar finds the dashboard by label; nothing refers to it by name.
    _write_tree(K8S / "components" / "monitoring", m_groups, m_configmaps, kind="Component", disable_hash=True)
    print(f"wrote k8s/components/monitoring: {len(extra)} objects")

    # The broker admits the agents' ServiceAccount of its own namespace, which is in its
    # configuration file: each overlay replaces that file with the chart's for its namespace.
    for env in render.ENVIRONMENTS:
        case = next(c for c in CHART_CASES if c.label == f"chart-{env}")
        objects = render.helm_template(case, include_hooks=False, extra={"secrets": {"generate": False}})
        config = next(o for o in objects if ident(o) == "ConfigMap/auditflow-broker-config")
        (K8S / "overlays" / env / "broker.toml").write_text(config["data"]["broker.toml"])
    print(f"wrote k8s/overlays/{{{','.join(render.ENVIRONMENTS)}}}/broker.toml")

    # The notify component replaces the aggregator's configuration with the chart's rendering
    # of its channels; its kustomization.yaml (the Secret mount and the egress) is written by
    # hand, as an example to copy, and the agree step holds it to the chart.
    notify = next(c for c in CHART_CASES if c.label == "chart-notify")
    objects = render.helm_template(notify, include_hooks=False, extra={"secrets": {"generate": False}})
    config = next(o for o in objects if ident(o) == "ConfigMap/auditflow-aggregator-config")
    (K8S / "components" / "notify" / "aggregator.toml").write_text(config["data"]["aggregator.toml"])
    print("wrote k8s/components/notify/aggregator.toml")


if __name__ == "__main__":
    sys.exit("use k8scheck.py")
