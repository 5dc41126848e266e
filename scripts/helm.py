#!/usr/bin/env python3
"""`helm lint` and `helm template` for the test suite, over the Helm v4 SDK
(PyPI `helm-python-sdk`): no helm binary installs from the registries this
project builds with. Run with the Python of the venv setup-test-env.sh makes.

  helm.py lint CHART [-f VALUES]...
  helm.py template RELEASE CHART [--namespace NS] [-f VALUES]... [--include-crds]
"""

import argparse
import json
import sys

import helm_python as helm


def merged_values(files):
    values = {}
    for path in files or []:
        with open(path, encoding="utf-8") as f:
            deep_merge(values, helm.values_from_yaml(f.read()) or {})
    return values


def deep_merge(into, new):
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            deep_merge(into[k], v)
        else:
            into[k] = v


def lint(args):
    report = helm.lint(args.chart, merged_values(args.values), strict=True)
    for m in report.get("messages", []):
        severity = {1: "INFO", 2: "WARNING", 3: "ERROR"}.get(m.get("severity"), "UNKNOWN")
        print(f"[{severity}] {m.get('path')}: {m.get('error')}")
    errors = report.get("errors") or []
    for e in errors:
        print(f"[ERROR] {e}")
    bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    return 1 if bad or errors else 0


def template(args):
    chart = helm.Chart.load(args.chart)
    rendered = chart.render(
        merged_values(args.values), name=args.release, namespace=args.namespace, is_install=True
    )
    docs = []
    if args.include_crds:
        for crd in chart.crds:
            docs.append(f"# Source: {crd['filename']}\n{crd['data'].strip()}\n")
    for path in sorted(rendered):
        body = rendered[path].strip()
        if not body or path.endswith("NOTES.txt"):
            continue
        docs.append(f"# Source: {path}\n{body}\n")
    sys.stdout.write("---\n".join(docs))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    l = sub.add_parser("lint")
    l.add_argument("chart")
    l.add_argument("-f", "--values", action="append")
    t = sub.add_parser("template")
    t.add_argument("release")
    t.add_argument("chart")
    t.add_argument("-n", "--namespace", default="default")
    t.add_argument("-f", "--values", action="append")
    t.add_argument("--include-crds", action="store_true")
    args = p.parse_args()
    try:
        return lint(args) if args.cmd == "lint" else template(args)
    except helm.HelmError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
