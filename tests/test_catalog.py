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
        "gen_ai_token_modality",  # text, image, audio, unknown
        "finish_reason",  # the provider's stop reason (stop, length, ...), bounded by label_limits
        "decision",  # allow | deny | require_approval only (conventions.decision_of)
        "metric", "scope",  # a catalogue metric's name, an instrumentation scope's (spanmeter_deferred_metric_info)
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


# The GenAI metrics as semantic-conventions-genai defines them (main, late 2026):
# docs/gen-ai/client-inference.md, client-embeddings.md, gen-ai-token-metrics.md
# (model/gen-ai/token-metrics.yaml), examples-workflow-call-counts.md; the v1.41 names from
# open-telemetry/semantic-conventions v1.41 (model/gen-ai/metrics.yaml). name -> (instrument,
# unit, the attributes spanmeter sets, buckets or None).
_D = tuple(round(0.01 * 2**i, 2) for i in range(14))
_T = tuple(4.0**i for i in range(14))
_C = tuple(2.0**i for i in range(8))
_MODEL = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.response.model")
CURRENT_GENAI = {
    "gen_ai.client.inference.duration": ("histogram", "s", _MODEL + ("error.type",), _D),
    "gen_ai.client.inference.time_to_first_chunk": ("histogram", "s", _MODEL, _D),
    "gen_ai.client.inference.usage.input_tokens": ("counter", "{token}", _MODEL + ("gen_ai.token.modality",), None),
    "gen_ai.client.inference.usage.output_tokens": ("counter", "{token}", _MODEL + ("gen_ai.token.modality",), None),
    "gen_ai.client.inference.usage.cache_read.input_tokens":
        ("counter", "{token}", _MODEL + ("gen_ai.token.modality",), None),
    "gen_ai.client.inference.usage.cache_write.input_tokens":
        ("counter", "{token}", _MODEL + ("gen_ai.token.modality",), None),
    "gen_ai.client.inference.usage.reasoning.output_tokens":
        ("counter", "{token}", _MODEL + ("gen_ai.token.modality",), None),
    "gen_ai.client.inference.operation.input_tokens": ("histogram", "{token}", _MODEL + ("error.type",), _T),
    "gen_ai.client.inference.operation.output_tokens": ("histogram", "{token}", _MODEL + ("error.type",), _T),
    "gen_ai.client.embeddings.duration": ("histogram", "s", _MODEL + ("error.type",), _D),
    "gen_ai.client.embeddings.operation.input_tokens": ("histogram", "{token}", _MODEL, _T),
    "gen_ai.invoke_agent.duration": ("histogram", "s", ("gen_ai.agent.name", "error.type"),
                                     tuple(round(0.1 * 2**i, 1) for i in range(13))),
    "gen_ai.invoke_agent.inference_calls": ("histogram", "{inference_call}", ("gen_ai.agent.name",), _C),
    "gen_ai.invoke_agent.tool_calls": ("histogram", "{tool_call}", ("gen_ai.agent.name",), _C),
    "gen_ai.execute_tool.duration": ("histogram", "s", ("gen_ai.tool.name", "gen_ai.tool.type",
                                                        "gen_ai.agent.name", "error.type"), _D),
    "gen_ai.invoke_workflow.duration": ("histogram", "s", ("gen_ai.workflow.name", "error.type"),
                                        tuple(round(0.1 * 2**i, 1) for i in range(13))),
    "gen_ai.invoke_workflow.inference_calls": ("histogram", "{call}", ("gen_ai.workflow.name",), _C),
    "gen_ai.invoke_workflow.tool_calls": ("histogram", "{call}", ("gen_ai.workflow.name",), _C),
}
V141_GENAI = {
    "gen_ai.client.operation.duration": ("histogram", "s", _MODEL + ("error.type",), _D),
    "gen_ai.client.operation.time_to_first_chunk": ("histogram", "s", _MODEL + ("error.type",), _D),
    "gen_ai.client.token.usage": ("histogram", "{token}", _MODEL + ("gen_ai.token.type",), _T),
}


def _shape(m) -> tuple:
    keys = tuple(k for k, _ in m.labels) + ((m.fan_out[0],) if m.fan_out else ())
    return m.kind, m.unit, keys, m.buckets or None


def test_genai_names_are_pinned_against_the_conventions():
    genai = {m.name: m for m in METRICS if m.family == "genai"}
    assert set(genai) == set(CURRENT_GENAI) | set(V141_GENAI)
    for name, shape in {**CURRENT_GENAI, **V141_GENAI}.items():
        assert _shape(genai[name]) == shape, name
    default = {m.name for m in catalog.exported()}
    assert set(CURRENT_GENAI) <= default and not set(V141_GENAI) & default
    assert {m.name for m in catalog.exported(catalog.semconv_mode({catalog.ENV_SEMCONV_OPT_IN: "gen_ai_v1.41"}))
            if m.family == "genai"} == set(V141_GENAI) | {n for n in CURRENT_GENAI if genai[n].semconv == ""}


def test_every_metric_names_its_source_in_the_readme_table():
    rows = [line for line in catalog.markdown_table().splitlines()[2:]]
    assert len(rows) == len(METRICS)
    for m, row in zip(METRICS, rows):
        source = row.split(" | ")[4]
        assert source == m.origin and source, m.name
        if m.family == "genai":
            assert source.startswith("GenAI semconv"), m.name
            assert ("opt-in" in source) == (m.name in V141_GENAI), m.name
        elif m.family == "self":
            assert source == "spanmeter", m.name
    article = {m.name for m in METRICS if m.origin == "reference article"}
    assert article == catalog.ARTICLE_NAMES  # the eleven metrics the article's code defines
