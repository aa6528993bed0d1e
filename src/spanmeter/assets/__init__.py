"""The monitoring assets that ship with spanmeter: the Grafana dashboard, the Prometheus
scrape configs, recording and alert rules, and their promtool unit tests.

One source: the repository's ``dashboards/grafana`` and ``dashboards/prometheus``. A wheel
carries them as the packages ``spanmeter.assets.grafana`` and ``spanmeter.assets.prometheus``
(see ``pyproject.toml``); run from a source checkout (``PYTHONPATH=src``), the repository's
directories are used. ``spanmeter assets export DIR`` writes them for an operator.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

#: Asset groups: a directory each, named as in the repository's ``dashboards/``.
GROUPS = ("grafana", "prometheus")
_PATTERNS = {"grafana": "*.json", "prometheus": "*.yml"}


def directory(group: str) -> Path:
    """The directory of one asset group (``"grafana"`` or ``"prometheus"``).

    Raises FileNotFoundError when neither the installed package data nor a checkout has it.
    """
    if group not in GROUPS:
        raise ValueError(f"unknown asset group {group!r}; one of {', '.join(GROUPS)}")
    spec = importlib.util.find_spec(f"{__name__}.{group}")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            if any(Path(location).glob(_PATTERNS[group])):
                return Path(location)
    checkout = Path(__file__).resolve().parents[3] / "dashboards" / group
    if any(checkout.glob(_PATTERNS[group])):
        return checkout
    raise FileNotFoundError(f"spanmeter's {group} assets are missing from this installation (reinstall spanmeter)")


def files(group: str) -> list[Path]:
    """The asset files of one group, sorted by name."""
    return sorted(directory(group).glob(_PATTERNS[group]))


def export(destination: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Copy every asset to ``destination/<group>/<name>``; returns the exported paths.

    Raises FileExistsError, before writing anything, when a file differs from what would
    be written and ``overwrite`` is false. An identical file is left as it is.
    """
    plan = [(source, Path(destination) / group / source.name) for group in GROUPS for source in files(group)]
    clashes = [target for source, target in plan if target.exists() and target.read_bytes() != source.read_bytes()]
    if clashes and not overwrite:
        raise FileExistsError(f"{len(clashes)} file(s) differ from spanmeter's, e.g. {clashes[0]} (use --force)")
    for source, target in plan:
        data = source.read_bytes()
        if not (target.exists() and target.read_bytes() == data):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return [target for _, target in plan]
