"""The pure mapping rules: coercion, outcome, error types, Prometheus names."""

from __future__ import annotations

import math

import pytest

from spanmeter import conventions as c
from spanmeter.catalog import prometheus_name


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, (0, None)), (12, (12, None)), ("42", (42, None)), (" 7 ", (7, None)), (2.4, (2, None)),
        (True, (None, "bool_value")), (-1, (None, "negative")), (-0.5, (None, "negative")),
        (math.nan, (None, "not_finite")), (math.inf, (None, "not_finite")),
        (10**30, (None, "out_of_range")), (1e30, (None, "out_of_range")), ("-3", (None, "not_a_number")),
        ("1e3", (None, "not_a_number")), ("٣", (None, "not_a_number")), (None, (None, "wrong_type")),
        ([1], (None, "wrong_type")), (b"12", (None, "wrong_type")),
    ],
)  # fmt: skip
def test_token_counts_are_coerced_or_dropped_by_the_stated_rule(value, expected):
    assert c.coerce_count(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("gpt-4o", ("gpt-4o", None)), (4, ("4", None)), (1.5, ("1.5", None)), ("", ("unknown", None)),
        ("m" * 200, ("m" * 128, "truncated")), ("a\udcffb", ("a?b", "invalid_utf8")),
        ("naïve ✓", ("naïve ✓", None)), (["x"], ("unknown", "wrong_type")), (True, ("unknown", "wrong_type")),
        ('quote" back\\slash\nnewline', ('quote" back\\slash\nnewline', None)),
    ],
)  # fmt: skip
def test_label_values_are_made_valid_and_bounded(value, expected):
    assert c.coerce_label(value) == expected


@pytest.mark.parametrize(
    ("error_type", "failed", "expected"),
    [
        (None, False, ("success", None)),
        (None, True, ("error", "_OTHER")),
        ("", True, ("error", "_OTHER")),
        ("rate_limit_exceeded", False, ("error", "rate_limit_exceeded")),
        ("timeout", True, ("timeout", "timeout")),
        ("openai.APITimeoutError", True, ("timeout", "openai.APITimeoutError")),
        (504, True, ("error", "504")),
    ],
)
def test_outcome_of_a_span(error_type, failed, expected):
    assert c.outcome(error_type, failed) == expected


def test_span_kinds_from_the_operation_name():
    assert c.kind_of({"gen_ai.operation.name": "chat"}) == c.KIND_INFERENCE
    assert c.kind_of({"gen_ai.operation.name": "embeddings"}) == c.KIND_INFERENCE
    assert c.kind_of({"gen_ai.operation.name": "invoke_agent"}) == c.KIND_AGENT
    assert c.kind_of({"gen_ai.operation.name": "execute_tool"}) == c.KIND_TOOL
    assert c.kind_of({"gen_ai.operation.name": "retrieval"}) is None
    assert c.kind_of({"gen_ai.operation.name": 3}) is None
    assert c.kind_of({}) is None


@pytest.mark.parametrize(
    ("name", "unit", "kind", "expected"),
    [
        ("agent_requests", "{request}", "counter", "agent_requests_total"),
        ("agent_request_duration", "s", "histogram", "agent_request_duration_seconds"),
        ("gen_ai.client.token.usage", "{token}", "histogram", "gen_ai_client_token_usage"),
        ("gen_ai.client.operation.duration", "s", "histogram", "gen_ai_client_operation_duration_seconds"),
        ("gen_ai.client.inference.usage.cache_read.input_tokens", "{token}", "counter",
         "gen_ai_client_inference_usage_cache_read_input_tokens_total"),
        ("model_output_tokens_per_second", "{token}/s", "histogram", "model_output_tokens_per_second"),
        ("x", "{token}/s", "histogram", "x_per_second"),
        ("agent_quality_score", "1", "gauge", "agent_quality_score"),
        ("x_seconds", "s", "histogram", "x_seconds"),
    ],
)
def test_prometheus_names(name, unit, kind, expected):
    assert prometheus_name(name, unit, kind) == expected


def test_the_2026_attributes_are_read_into_the_record():
    call = c.read({"gen_ai.operation.name": "chat", "gen_ai.main_agent.name": "concierge"}, c.KIND_INFERENCE, False)
    assert call.main_agent == "concierge" and call.agent is None
    tool = c.read({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "refund",
                   "gen_ai.tool.call.decision": "require_approval",
                   "microsoft.gen_ai.main_agent.name": "concierge"}, c.KIND_TOOL, False)  # fmt: skip
    assert (tool.tool_decision, tool.main_agent) == ("require_approval", "concierge")
    run = c.read({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support",
                  "gen_ai.agent.id": "asst_" + "x" * 200}, c.KIND_AGENT, False)  # fmt: skip
    assert run.agent == "support" and run.agent_id == hash("asst_" + "x" * 200)  # identity, bounded, never a label
    eur = c.read({"gen_ai.operation.name": "chat", "gen_ai.usage.cost.amount": 1.0,
                  "gen_ai.usage.cost.currency": "EUR"}, c.KIND_INFERENCE, False)  # fmt: skip
    assert eur.drops == [("cost", "currency_not_usd")]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("allow", ("allow", None)), ("DENY", ("deny", None)), (" require_approval", ("require_approval", None)),
     ("approve", (None, "unknown_value")), (True, (None, "wrong_type")), (None, (None, "wrong_type"))],
)  # fmt: skip
def test_tool_call_decisions_are_the_three_outcomes_of_the_convention(value, expected):
    assert c.decision_of(value) == expected
