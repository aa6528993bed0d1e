"""Regenerate every monitoring asset from the catalogue: ``python -m dashboards.generate``.

Writes the Grafana dashboard JSON and the Prometheus recording and alert rules; with
``--check`` writes nothing and exits 1 when a committed file differs from what the
generator makes (the test suite runs the same check).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from dashboards import rules

ROOT = Path(__file__).resolve().parent
GRAFANA_DIR = ROOT / "grafana"
PROMETHEUS_DIR = ROOT / "prometheus"
COMMAND = "python -m dashboards.generate"
YAML_HEADER = (
    f"# GENERATED FILE, DO NOT EDIT: regenerate with `{COMMAND}` (source: dashboards/rules.py,\n"
    "# metric names from src/spanmeter/catalog.py). A test fails when this file is stale.\n"
)


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(document: dict) -> str:
    return YAML_HEADER + yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)


def outputs() -> dict[Path, str]:
    """Every generated file and its content."""
    from dashboards import grafana  # needs grafana-foundation-sdk (the dev extra)

    files = {
        PROMETHEUS_DIR / "recording.rules.yml": to_yaml(rules.recording_document()),
        PROMETHEUS_DIR / "alerts.rules.yml": to_yaml(rules.alert_document()),
    }
    for name, text in grafana.dashboards().items():
        files[GRAFANA_DIR / f"{name}.json"] = text
    return files


def stale() -> list[Path]:
    """Generated files whose committed content differs from a fresh generation."""
    return [path for path, text in outputs().items() if not path.exists() or path.read_text("utf-8") != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed file is stale")
    args = parser.parse_args(argv)
    if args.check:
        bad = stale()
        for path in bad:
            print(f"stale: {path.relative_to(ROOT)} (run `{COMMAND}`)", file=sys.stderr)
        return 1 if bad else 0
    for path, text in outputs().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text("utf-8") != text:
            path.write_text(text, "utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
