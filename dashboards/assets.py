"""The committed monitoring assets read back: dashboard panels and expressions, rules.

Used by the tests (every expression is checked against the catalogue and run against a
real Prometheus) and by the panel renderer.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]  # the repository
DASHBOARD = ROOT / "dashboards" / "grafana" / "ai-agent-operations.json"
PROMETHEUS_DIR = ROOT / "dashboards" / "prometheus"
RULE_FILES = (PROMETHEUS_DIR / "recording.rules.yml", PROMETHEUS_DIR / "alerts.rules.yml")
PROMTOOL_TESTS = (PROMETHEUS_DIR / "alerts.test.yml", PROMETHEUS_DIR / "alerts-history.test.yml")
#: The budgets per tenant the operator edits (not generated), read by the budget alert.
BUDGETS = PROMETHEUS_DIR / "budgets.rules.yml"
PROMTOOL_TESTS += (PROMETHEUS_DIR / "budgets.test.yml",)


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text("utf-8"))


def panels(board: dict | None = None) -> list[dict]:
    """Every panel (rows excluded), including panels inside collapsed rows."""
    board = board or dashboard()
    out = []
    for panel in board["panels"]:
        if panel["type"] == "row":
            out.extend(panel.get("panels") or [])
        else:
            out.append(panel)
    return out


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title / ref id, expr) of every query in the dashboard."""
    return [(f"{p['title']} / {t['refId']}", t["expr"]) for p in panels() for t in p.get("targets", [])]


def variable_queries() -> list[tuple[str, str]]:
    return [(v["name"], v["query"]) for v in dashboard()["templating"]["list"] if v["type"] == "query"]


def rule_groups(path: Path) -> list[dict]:
    return yaml.safe_load(path.read_text("utf-8"))["groups"]


def recording_rules() -> list[dict]:
    """The generated recording rules, then the operator's budgets."""
    return [r for path in (RULE_FILES[0], BUDGETS) for g in rule_groups(path) for r in g["rules"]]


def alert_rules() -> list[dict]:
    return [r for g in rule_groups(RULE_FILES[1]) for r in g["rules"]]


def substitute(expr: str, *, agent: str = ".*", model: str = ".*", tool: str = ".*", window: str = "1m") -> str:
    """A dashboard expression as Grafana would send it, with the test's variable values."""
    for name, value in (("$__rate_interval", window), ("$__range", window), ("$agent_name", agent),
                        ("$model_id", model), ("$tool_name", tool), ("$tenant", ".*")):  # fmt: skip
        expr = expr.replace(name, value)
    assert "$" not in expr, f"an unsubstituted variable in {expr}"
    return expr


def finite(result: list[dict]) -> list[dict]:
    """Series of an instant-query result whose value is a number (not NaN or inf)."""
    return [s for s in result if math.isfinite(float(s["value"][1]))]
