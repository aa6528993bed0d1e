"""The committed Prometheus files pass the real promtool: config and rules check, and
unit tests prove every alert both firing and not firing."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from dashboards import assets
from dashboards.promql import exposed_series
from spanmeter.prometheus import DEFAULT_TARGET, local_config

pytestmark = pytest.mark.skipif(not shutil.which("promtool"), reason="needs Debian's prometheus package")


def promtool(*args, cwd: Path = assets.PROMETHEUS_DIR) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_promtool_accepts_the_scrape_config_and_the_rules_it_loads():
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 3 rule files found" in done.stdout  # recording, alerts, the operator's budgets


def test_promtool_accepts_the_rule_files():
    done = promtool("check", "rules", *[p.name for p in assets.RULE_FILES])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == 2


def test_promtool_unit_tests_of_the_alerts_pass():
    # both files at once: one per core
    procs = [subprocess.Popen(["promtool", "test", "rules", p.name], cwd=assets.PROMETHEUS_DIR,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for p in assets.PROMTOOL_TESTS]  # fmt: skip
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out


def test_the_budgets_file_passes_promtool_and_gives_each_rule_a_tenant():
    done = promtool("check", "rules", assets.BUDGETS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    budgets = [r for g in assets.rule_groups(assets.BUDGETS) for r in g["rules"]]
    assert budgets and all(r["record"] == "tenant_budget_dollars_per_hour" and r["labels"]["tenant"] for r in budgets)
    assert not assets.BUDGETS.read_text("utf-8").startswith("# GENERATED")  # the operator's to edit
    expr = {r["alert"]: r["expr"] for r in assets.alert_rules()}["TenantOverBudget"]
    assert "tenant_budget_dollars_per_hour" in expr and "on (tenant)" in expr


def _alert_tests() -> list[tuple[str, str, bool]]:
    """(test group, alert name, fires) of every alert_rule_test."""
    found = []
    for path in assets.PROMTOOL_TESTS:
        for group in yaml.safe_load(path.read_text("utf-8"))["tests"]:
            for case in group.get("alert_rule_test", []):
                found.append((group["name"], case["alertname"], bool(case["exp_alerts"])))
    return found


def test_every_alert_is_unit_tested_firing_and_not_firing():
    alerts = {rule["alert"] for rule in assets.alert_rules()}
    tests = _alert_tests()
    assert {name for _, name, _ in tests} == alerts
    assert {name for _, name, fires in tests if fires} == alerts, "an alert has no firing test"
    assert {name for _, name, fires in tests if not fires} == alerts, "an alert has no not-firing test"


def test_every_alert_has_a_severity_summary_description_and_runbook():
    for rule in assets.alert_rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        for key in ("summary", "description", "runbook"):
            assert rule["annotations"].get(key), (rule["alert"], key)


def test_the_articles_five_alerts_are_there_and_the_cost_alert_reads_the_total():
    rules = {r["alert"]: r for r in assets.alert_rules()}
    for name in ("AgentHighErrorRate", "AgentHighLatency", "ToolCallFailureSpike", "AgentQualityDegradation",
                 "AgentCostAnomaly"):  # fmt: skip
        assert name in rules
    cost_rate = {r["record"]: r["expr"] for r in assets.recording_rules()}[
        "agent_name_model_id:agent_estimated_cost_dollars:rate1h"]  # fmt: skip
    assert "agent_estimated_cost_dollars_total[1h]" in cost_rate
    assert "offset 1d" in rules["AgentCostAnomaly"]["expr"]


def test_the_articles_cost_alert_fails_the_cost_unit_test(tmp_path):
    """The unit tests catch the reference article's defect: its bare counter name matches nothing."""
    article = ("sum(rate(agent_estimated_cost_dollars[1h])) * 3600"
               " > 2 * sum(rate(agent_estimated_cost_dollars[1h] offset 1d)) * 3600")
    alerts = yaml.safe_load(assets.RULE_FILES[1].read_text("utf-8"))
    for group in alerts["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == "AgentCostAnomaly":
                rule["expr"] = article
    (tmp_path / "alerts.rules.yml").write_text(yaml.safe_dump(alerts), "utf-8")
    shutil.copy(assets.RULE_FILES[0], tmp_path)
    suite = yaml.safe_load(assets.PROMTOOL_TESTS[1].read_text("utf-8"))
    suite["tests"] = [g for g in suite["tests"] if g["name"].startswith("cost per hour at 3x")]
    (tmp_path / "cost.test.yml").write_text(yaml.safe_dump(suite), "utf-8")
    done = promtool("test", "rules", "cost.test.yml", cwd=tmp_path)
    report = done.stdout + done.stderr
    assert done.returncode != 0 and "alertname: AgentCostAnomaly" in report and "got:[]" in report, report


def _relabel_keeps(config: dict, name: str) -> bool:
    """Whether a series named ``name`` survives the metric_relabel_configs of ``config``."""
    for job in config["scrape_configs"]:
        for rule in job.get("metric_relabel_configs") or []:
            action = rule.get("action", "replace")
            if rule.get("source_labels") != ["__name__"] or action not in ("keep", "drop"):
                continue
            matches = re.fullmatch(rule.get("regex", "(.*)"), name) is not None
            if (action == "keep") != matches:
                return False
    return True


def test_the_scrape_config_keeps_every_series_spanmeter_exposes():
    config = yaml.safe_load((assets.PROMETHEUS_DIR / "prometheus.yml").read_text("utf-8"))
    assert [job["job_name"] for job in config["scrape_configs"]] == ["spanmeter"]
    assert config["scrape_configs"][0]["static_configs"][0]["targets"] == [DEFAULT_TARGET]
    for name in exposed_series():
        assert _relabel_keeps(config, name), name
    # the reference article's relabel rule would have dropped the model metrics
    article = {"scrape_configs": [{"metric_relabel_configs": [
        {"source_labels": ["__name__"], "regex": "agent_.*", "action": "keep"}]}]}  # fmt: skip
    assert not _relabel_keeps(article, "model_inference_duration_seconds_bucket")


def test_the_local_copy_of_the_config_only_changes_target_and_intervals():
    text = (assets.PROMETHEUS_DIR / "prometheus.yml").read_text("utf-8")
    local = yaml.safe_load(local_config(text, target="127.0.0.1:40123", scrape_interval="1s", evaluation_interval="1s"))
    committed = yaml.safe_load(text)
    assert local["global"] == {"scrape_interval": "1s", "evaluation_interval": "1s"}
    assert local["scrape_configs"][0]["static_configs"][0]["targets"] == ["127.0.0.1:40123"]
    local["global"], local["scrape_configs"][0]["static_configs"][0]["targets"] = committed["global"], [DEFAULT_TARGET]
    assert local == committed
