"""The Grafana dashboard and the rule files: generated from the catalogue, not stale, and
every expression names only series and labels spanmeter really exposes."""

from __future__ import annotations

import re

import pytest

from dashboards import assets, generate
from dashboards.promql import check, exposed_series, m, operands, references
from spanmeter import catalog

SECTIONS = ["Overview", "Model performance", "Tool performance", "Cost", "Quality", "Conversations", "Workflows",
            "Who spends"]


def _recorded_labels() -> dict[str, frozenset[str]]:
    """Labels of each recorded series: the grouping labels of its expression."""
    labels = {}
    for rule in assets.recording_rules():
        refs = references(rule["expr"])
        labels[rule["record"]] = frozenset(refs.grouping)
    return labels


def test_committed_files_are_what_the_generator_makes():
    stale = generate.stale()
    assert not stale, f"regenerate with `{generate.COMMAND}`: {stale}"


def test_generated_files_say_do_not_edit():
    assert "DO NOT EDIT" in assets.dashboard()["description"]
    for path in assets.RULE_FILES:
        assert path.read_text("utf-8").startswith("# GENERATED FILE, DO NOT EDIT"), path


@pytest.mark.parametrize("where, expr", assets.dashboard_expressions() + [
    (f"rule {r.get('record') or r.get('alert')}", r["expr"]) for r in assets.recording_rules() + assets.alert_rules()
])  # fmt: skip
def test_every_expression_names_exposed_series_and_labels(where, expr):
    expr = assets.substitute(expr)
    assert not check(expr, _recorded_labels()), (where, check(expr, _recorded_labels()))


def test_the_checker_rejects_the_articles_cost_query_and_a_wrong_label():
    # the reference article's cost panel: prometheus_client exposes the counter as ..._total
    assert check("sum(rate(agent_estimated_cost_dollars[1h])) * 3600") == [
        "agent_estimated_cost_dollars is not a series spanmeter exposes"]  # fmt: skip
    assert check('sum by (tool) (rate(agent_tool_calls_total{agent="x"}[5m]))') == [
        "agent_tool_calls_total has no label 'agent'", "no series in the expression has the grouping label 'tool'"]
    assert check("histogram_quantile(0.9, sum by (le) (rate(agent_request_duration_seconds[5m])))")
    with pytest.raises(KeyError):
        m("agent_estimated_cost_dollars", "_bucket")  # a counter has no buckets


def test_every_catalogue_metric_of_the_article_is_on_the_dashboard():
    used = set()
    for _where, expr in assets.dashboard_expressions():
        used |= references(assets.substitute(expr)).metrics
    for spec in catalog.METRICS:
        if spec.family != "article" or spec.name == "agent_escalation_rate":
            continue  # the in-process escalation gauge: the dashboard computes the ratio in PromQL
        names = {spec.exposed_name} if spec.kind != catalog.HISTOGRAM else {
            spec.exposed_name + s for s in ("_bucket", "_sum", "_count")}  # fmt: skip
        recorded_from = {r["record"] for r in assets.recording_rules() if names & references(r["expr"]).metrics}
        assert (names | recorded_from) & used, f"{spec.exposed_name} is on no panel"


def test_dashboard_has_a_row_per_section_and_the_variables():
    board = assets.dashboard()
    assert board["title"] == "AI Agent Operations"
    assert [p["title"] for p in board["panels"] if p["type"] == "row"] == SECTIONS
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("agent_name", "model_id", "tool_name"):
        assert variables[name]["datasource"]["uid"] == "${datasource}"
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"
        assert f", {name})" in variables[name]["query"]


def test_who_spends_has_a_tenant_variable_a_top_spenders_panel_and_the_tenant_cost_rule():
    variables = {v["name"]: v for v in assets.dashboard()["templating"]["list"]}
    assert variables["tenant"]["query"] == "label_values(agent_estimated_cost_dollars_total, tenant)"
    assert variables["tenant"]["includeAll"] and variables["tenant"]["allValue"] == ".*"
    (top,) = _panel("Top spenders by tenant ($/hour)")["targets"]
    assert top["expr"].startswith("topk(10, sum by (tenant) (tenant:agent_estimated_cost_dollars:rate1h")
    rules = {r["record"]: r["expr"] for r in assets.recording_rules()}
    assert rules["tenant:agent_estimated_cost_dollars:rate1h"] == (
        "sum by (tenant) (rate(agent_estimated_cost_dollars_total[1h]))")
    # the tenant label exists on the attributed metrics only: never on a duration histogram
    assert check('sum by (tenant) (rate(agent_request_duration_seconds_count[5m]))')
    assert not check('sum by (tenant) (rate(agent_requests_total[5m]))')


def test_every_panel_has_a_unit_a_legend_a_description_and_the_datasource_variable():
    top = assets.dashboard()["panels"]
    ids = [p["id"] for p in top] + [p["id"] for row in top for p in row.get("panels") or []]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in assets.panels():
        title = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        assert panel["fieldConfig"]["defaults"].get("unit"), title
        assert panel.get("description"), title
        if panel["type"] != "piechart":  # a pie chart has no thresholds to colour by
            assert panel["fieldConfig"]["defaults"]["thresholds"]["steps"], title
        for target in panel["targets"]:
            assert target["legendFormat"] and target["refId"], title
            for label in re.findall(r"{{\s*(\w+)\s*}}", target["legendFormat"]):
                expr = assets.substitute(target["expr"])
                refs = references(expr)
                assert label in refs.grouping or any(label in exposed_series().get(n, ()) for n in refs.metrics) \
                    or label in _recorded_labels().get(next(iter(refs.metrics)), ()), (title, label)  # fmt: skip


def _panel(title: str) -> dict:
    (panel,) = [p for p in assets.panels() if p["title"] == title]
    return panel


def test_the_articles_panels_keep_its_units_and_thresholds():
    quality = _panel("Agent quality score (rolling)")
    assert quality["type"] == "gauge"
    defaults = quality["fieldConfig"]["defaults"]
    assert (defaults["min"], defaults["max"]) == (0, 1)
    assert [(s["value"], s["color"]) for s in defaults["thresholds"]["steps"]] == [
        (0, "red"), (0.7, "yellow"), (0.85, "green")]  # fmt: skip
    assert [t["expr"] for t in quality["targets"]] == [
        'agent_quality_score{agent_name=~"$agent_name", metric_type="groundedness"}',
        'agent_quality_score{agent_name=~"$agent_name", metric_type="relevance"}']  # fmt: skip
    success = _panel("Tool call success rate")["fieldConfig"]["defaults"]
    assert (success["unit"], success["min"], success["max"]) == ("percent", 0, 100)
    cost = _panel("Estimated cost ($/hour)")
    assert cost["type"] == "stat" and cost["fieldConfig"]["defaults"]["unit"] == "currencyUSD"
    assert "agent_estimated_cost_dollars:rate1h" in cost["targets"][0]["expr"]
    latency = _panel("Request latency (P50 / P95 / P99)")
    assert [t["legendFormat"] for t in latency["targets"]] == ["{{agent_name}} P50", "{{agent_name}} P95",
                                                               "{{agent_name}} P99"]  # fmt: skip


def test_a_histogram_bound_in_a_rule_is_matched_as_the_exporter_writes_it():
    # the OpenTelemetry exporter writes le="30.0"; Prometheus 2 matches label values as text
    slow = [r["expr"] for r in assets.recording_rules() if r["record"].startswith("agent_name:agent_requests_slow")]
    assert slow and all('le=~"30(\\\\.0)?"' in expr for expr in slow)
    assert 30.0 in catalog.AGENT_REQUEST_BUCKETS


def test_operands_split_alerts_at_comparisons_and_set_operators():
    assert operands("(a > 1 and b{x=\"y > z\"} > bool 2) or c unless on (k) d[5m] offset 1h") == [
        "a", "1", 'b{x="y > z"}', "2", "c", "d[5m] offset 1h"]  # fmt: skip
    assert operands("sum(rate(x[5m])) / sum(rate(y[5m]))") == ["sum(rate(x[5m])) / sum(rate(y[5m]))"]


def test_generate_check_fails_on_a_hand_edited_file_and_generate_repairs_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(generate, "GRAFANA_DIR", tmp_path / "grafana")
    monkeypatch.setattr(generate, "PROMETHEUS_DIR", tmp_path / "prometheus")
    monkeypatch.setattr(generate, "ROOT", tmp_path)
    assert generate.main([]) == 0
    assert generate.main(["--check"]) == 0
    rules = tmp_path / "prometheus" / "alerts.rules.yml"
    rules.write_text(rules.read_text("utf-8").replace("> 0.05", "> 0.5"), "utf-8")
    assert generate.main(["--check"]) == 1
    assert "stale: prometheus/alerts.rules.yml" in capsys.readouterr().err
    assert generate.main([]) == 0 and generate.main(["--check"]) == 0
