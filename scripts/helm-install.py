#!/usr/bin/env python3
"""Install (or upgrade) the llorch-operator Helm chart into a cluster.

    scripts/helm-install.py --kubeconfig PATH [--namespace NS] [--release NAME]
                            [--set KEY=VALUE]... [--timeout SECONDS]

What `helm upgrade --install RELEASE charts/llorch-operator --namespace NS
--create-namespace --wait` does, with Helm's own library (the PyPI package
`helm-python-sdk`, which runs Helm v4's Go SDK in process): the CRD from the
chart's crds/, then the chart's objects, waiting until they are ready.
`make demo` uses it. Run it with the project's venv:
`$(scripts/python-env.sh)/bin/python scripts/helm-install.py ...`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CHART = Path(__file__).resolve().parent.parent / "charts" / "llorch-operator"


def parse_set(items: list[str]) -> dict:
    """`a.b=c` pairs as nested values (`true`/`false`/integers typed;
    `{x,y}` a list of strings, as Helm's `--set` reads it)."""
    values: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {item!r}: use KEY=VALUE")
        value: object = raw
        if raw in ("true", "false"):
            value = raw == "true"
        elif raw.lstrip("-").isdigit():
            value = int(raw)
        elif raw.startswith("{") and raw.endswith("}"):
            value = [v for v in raw[1:-1].split(",") if v]
        node = values
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", default="llorch-system")
    parser.add_argument("--release", default="llorch")
    parser.add_argument("--set", action="append", default=[], dest="sets")
    parser.add_argument("--timeout", type=int, default=300)
    args = parser.parse_args()

    import helm_python as helm

    values = parse_set(args.sets) or None
    with helm.Config(kubeconfig_path=args.kubeconfig, namespace=args.namespace) as cfg:
        installed = {r["name"] for r in cfg.list()}
        with helm.Chart.load(CHART) as chart:
            if args.release in installed:
                release = cfg.upgrade(chart, args.release, values, namespace=args.namespace,
                                      timeout=args.timeout, wait="watcher")
            else:
                release = cfg.install(chart, args.release, values, namespace=args.namespace,
                                      timeout=args.timeout, wait="watcher", create_namespace=True)
    print(f"release {release.get('name', args.release)} in {args.namespace}: "
          f"{release.get('info', {}).get('status', 'deployed')}, revision {release.get('version', '?')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
