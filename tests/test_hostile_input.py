"""Hostile input: whatever spans arrive, the processor never raises and the exposition stays valid."""

from __future__ import annotations

import math
import subprocess

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import SpanContext, Status, StatusCode
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import spanmeter

KEYS = [
    "gen_ai.operation.name", "gen_ai.request.model", "gen_ai.response.model", "gen_ai.provider.name",
    "gen_ai.system", "gen_ai.agent.name", "gen_ai.tool.name", "gen_ai.tool.type", "gen_ai.conversation.id",
    "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.usage.prompt_tokens",
    "gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.reasoning.output_tokens", "gen_ai.response.id", "gen_ai.response.time_to_first_chunk",
    "error.type", "llm.cost.total", "gen_ai.usage.cost", "operation.cost", "spanmeter.conversation.ended",
]  # fmt: skip
OPERATIONS = st.sampled_from(["chat", "invoke_agent", "execute_tool", "embeddings", "text_completion", "retrieval"])
ANY_TEXT = st.text(alphabet=st.characters(blacklist_categories=()), max_size=300)  # surrogates, controls, all
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True), ANY_TEXT, st.text(min_size=5000, max_size=20000),
    st.binary(max_size=50), st.lists(st.integers(), max_size=3), st.tuples(ANY_TEXT), st.just(object()),
    st.sampled_from(['quote"q', "back\\slash", "new\nline", "", " ", "other", "unknown", "{}", "\x00"]),
)  # fmt: skip
ATTRIBUTES = st.dictionaries(st.one_of(st.sampled_from(KEYS), ANY_TEXT), VALUES, max_size=12).flatmap(
    lambda d: OPERATIONS.map(lambda op: {"gen_ai.operation.name": op, **d}) | st.just(d)
)
TIMES = st.one_of(st.none(), st.integers(min_value=-(10**20), max_value=10**20))

_meter = spanmeter.setup(start_server=False, registry=(_registry := CollectorRegistry()),
                         tracer_provider=TracerProvider(), label_limits={"model": 50, "agent": 20, "tool": 30})  # fmt: skip


@st.composite
def spans(draw):
    span_id = draw(st.integers(min_value=1, max_value=2**64 - 1))
    parent = draw(st.one_of(st.none(), st.integers(min_value=1, max_value=2**64 - 1)))
    return ReadableSpan(
        name=draw(ANY_TEXT),
        context=SpanContext(trace_id=draw(st.integers(1, 2**128 - 1)), span_id=span_id, is_remote=False),
        parent=SpanContext(trace_id=1, span_id=parent, is_remote=False) if parent else None,
        attributes=draw(ATTRIBUTES),
        start_time=draw(TIMES),
        end_time=draw(TIMES),
        status=Status(draw(st.sampled_from(list(StatusCode)))),
    )


@settings(max_examples=int(__import__("os").environ.get("HYP_EXAMPLES", "400")), deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(spans(), min_size=1, max_size=6))
def test_any_span_is_handled_without_raising_and_the_exposition_parses(batch):
    for span in batch:
        _meter.processor.on_start(span)  # a span as it starts (same attributes)
    for span in reversed(batch):
        _meter.processor.on_end(span)
    text = generate_latest(_registry).decode("utf-8")  # would raise on an undecodable label
    families = list(text_string_to_metric_families(text))
    for family in families:
        for sample in family.samples:
            assert not math.isnan(sample.value) or family.name == "agent_quality_score"
            for value in sample.labels.values():
                assert len(value) <= 128 and isinstance(value, str)


def test_after_all_that_promtool_accepts_the_exposition_and_nothing_raised():
    text = generate_latest(_registry).decode("utf-8")
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr  # parses, and no lint finding either
    assert _registry.get_sample_value("spanmeter_processor_errors_total") == 0


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=100))
@settings(max_examples=200, deadline=None)
def test_label_values_survive_the_exposition_round_trip(model):
    registry = CollectorRegistry()
    meter = spanmeter.setup(start_server=False, registry=registry, tracer_provider=TracerProvider())
    try:
        meter.tracer_provider.get_tracer("t").start_span(
            "chat", attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": model}).end()  # fmt: skip
        meter.state.flush()
        families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
        labels = [s.labels["model_id"] for s in families["model_inference_calls"].samples]
        assert labels == [model.strip() and model[:128] or "unknown"] or labels == [model[:128]]
    finally:
        meter.shutdown()
