"""The catalogue is the single source: README table, safe labels, consistent buckets."""

from __future__ import annotations

from pathlib import Path

from spanmeter import catalog
from spanmeter.catalog import GAUGE, HISTOGRAM, METRICS, TABLES

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_metric_table_is_generated_from_the_catalogue():
    text = README.read_text(encoding="utf-8")
    assert catalog.update_readme(text) == text, "stale: run `spanmeter catalog --update README.md`"


def test_article_metrics_keep_their_exact_names_and_labels():
    article = {
        "agent_requests_total": ("agent_name", "status"),
        "agent_request_duration_seconds": ("agent_name",),
        "model_inference_duration_seconds": ("agent_name", "model_id"),
        "model_inference_calls_total": ("agent_name", "model_id"),
        "agent_token_usage_total": ("agent_name", "model_id", "token_type"),
        "agent_tool_calls_total": ("agent_name", "tool_name", "status"),
        "agent_tool_call_duration_seconds": ("agent_name", "tool_name"),
        "agent_quality_score": ("agent_name", "metric_type"),
        "agent_conversation_turns": ("agent_name",),
        "agent_escalation_rate": ("agent_name",),
    }
    exposed = {m.exposed_name: m.exposed_labels for m in METRICS}
    for name, labels in article.items():
        assert exposed[name] == labels, name
    buckets = {m.exposed_name: m.buckets for m in METRICS}
    assert buckets["agent_request_duration_seconds"] == (0.5, 1, 2, 3, 5, 8, 13, 21, 30, 60)
    assert buckets["model_inference_duration_seconds"] == (0.2, 0.5, 1, 2, 3, 5, 10)
    assert buckets["agent_tool_call_duration_seconds"] == (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)
    assert buckets["agent_conversation_turns"] == (1, 2, 3, 5, 8, 13, 20)
    assert buckets["gen_ai_client_operation_duration_seconds"][:4] == (0.01, 0.02, 0.04, 0.08)
    assert buckets["gen_ai_client_operation_duration_seconds"][-1] == 81.92
    assert buckets["gen_ai_client_token_usage"][-1] == 67108864


def test_no_label_can_carry_prompts_user_or_conversation_ids():
    # Every label key of the catalogue, reviewed: none holds free text, a user or a
    # conversation. A new label must be added here on purpose.
    reviewed = {
        "agent_name", "status", "model_id", "token_type", "tool_name", "metric_type", "error_type",
        "gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "gen_ai_response_model",
        "gen_ai_token_type", "gen_ai_agent_name", "gen_ai_tool_name", "gen_ai_tool_type", "gen_ai_workflow_name",
        "kind", "field",
        "reason", "label", "source", "catalogue", "version", "signal",
        "decision",  # allow | deny | require_approval only (conventions.decision_of)
    }  # fmt: skip
    assert {key for m in METRICS for key in m.exposed_labels} == reviewed
    dims = {dim for table in TABLES.values() for dim in table}
    for word in ("prompt", "completion", "message", "content", "user", "conversation", "session"):
        assert not any(word in d for d in dims), word
        assert not any(word in key for key in reviewed), word


def test_histogram_buckets_are_sorted_and_gauges_never_sum_across_series():
    for m in METRICS:
        if m.kind == HISTOGRAM:
            assert list(m.buckets) == sorted(set(m.buckets)), m.name
            assert set(m.buckets) <= set(catalog.field_bounds(m.table, m.field)), m.name
        else:
            assert m.buckets == (), m.name
        if m.kind == GAUGE:  # a rolling average summed over series would be wrong
            assert {dim for _, dim in m.labels} == set(TABLES[m.table]), m.name


def test_exposed_names_are_unique():
    names = [m.exposed_name for m in METRICS]
    assert len(names) == len(set(names))
