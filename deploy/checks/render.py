"""`helm template` without a helm binary: renders helm/duovarsity with Helm's own Go SDK
(helm-python-sdk) and prints the manifests, as `helm template` would.

    python3 deploy/checks/render.py [RELEASE] [-f VALUES.yaml]... [-n NAMESPACE]
"""

import argparse
import sys
from pathlib import Path

import helm_python
import yaml

CHART = Path(__file__).resolve().parents[2] / "helm" / "duovarsity"


def merge(base, extra):
    """Helm's -f semantics: later files override earlier ones, maps merge deeply."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("release", nargs="?", default="duovarsity")
    parser.add_argument("-f", "--values", action="append", default=[])
    parser.add_argument("-n", "--namespace", default="default")
    args = parser.parse_args()
    values = {}
    for path in args.values:
        merge(values, yaml.safe_load(Path(path).read_text()) or {})
    helm_python.disable_logging()
    rendered = helm_python.Chart.load(str(CHART)).render(
        values, name=args.release, namespace=args.namespace
    )
    for path in sorted(rendered):
        text = rendered[path].strip()
        if text and not path.endswith("NOTES.txt"):
            print(f"---\n# Source: {path}\n{text}")
    notes = next((t for p, t in rendered.items() if p.endswith("NOTES.txt")), "")
    print(notes, file=sys.stderr)


if __name__ == "__main__":
    main()
