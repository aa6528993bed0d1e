"""The GenAI metrics under their current names (semantic-conventions-genai), the v1.41 names
behind OTEL_SEMCONV_STABILITY_OPT_IN, modality splits, finish reasons and stream speed:
spans in, a real scrape out (and promtool's verdict on it)."""

from __future__ import annotations

import logging
import shutil
import subprocess

import httpx
import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

import spanmeter
from spanmeter import catalog, conventions
from tests.conftest import Scrape

S = 1_000_000_000  # ns per second
OLD = ("gen_ai_client_operation_duration_seconds_count", "gen_ai_client_token_usage_count",
       "gen_ai_client_operation_time_to_first_chunk_seconds_count")  # fmt: skip
NEW = ("gen_ai_client_inference_duration_seconds_count", "gen_ai_client_inference_usage_input_tokens_total",
       "gen_ai_client_inference_time_to_first_chunk_seconds_count")  # fmt: skip


@pytest.fixture
def make(monkeypatch):
    """A spanmeter set up under ``OTEL_SEMCONV_STABILITY_OPT_IN=value`` (unset for None)."""
    made = []

    def _make(value: str | None):
        if value is None:
            monkeypatch.delenv(catalog.ENV_SEMCONV_OPT_IN, raising=False)
        else:
            monkeypatch.setenv(catalog.ENV_SEMCONV_OPT_IN, value)
        instance = spanmeter.setup(service_name="names", port=0, registry=CollectorRegistry(),
                                   tracer_provider=TracerProvider())  # fmt: skip
        made.append(instance)
        return instance

    yield _make
    for instance in made:
        instance.shutdown()


def _scrape(instance) -> Scrape:
    instance.state.flush()
    response = httpx.get(instance.metrics_url, timeout=10)
    response.raise_for_status()
    return Scrape(response.text)


def _span(instance, name, attributes, start_s=0.0, end_s=1.0):
    tracer = instance.tracer_provider.get_tracer("t")
    base = 1_700_000_000 * S
    span = tracer.start_span(name, attributes=attributes, start_time=base + int(start_s * S))
    span.end(end_time=base + int(end_s * S))


def _workload(instance):
    chat = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"}
    # a text+image call whose provider split its usage by modality
    _span(instance, "chat gpt-4o", {**chat, "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 50,
                                    "gen_ai.usage.text.input_tokens": 700, "gen_ai.usage.image.input_tokens": 258,
                                    "gen_ai.usage.cache_read.input_tokens": 400,
                                    "gen_ai.usage.text.cache_read.input_tokens": 400,
                                    "gen_ai.response.finish_reasons": ("stop",)})  # fmt: skip
    # a streamed call without a split: first chunk at 0.5 s, end at 2.5 s, 100 output tokens of which 20 reasoning
    _span(instance, "chat gpt-4o", {**chat, "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 100,
                                    "gen_ai.usage.reasoning.output_tokens": 20, "gen_ai.request.stream": True,
                                    "gen_ai.response.time_to_first_chunk": 0.5,
                                    "gen_ai.response.finish_reasons": ("length", "stop")},
          0.0, 2.5)  # fmt: skip
    # an embeddings call: its own metrics, not the inference ones
    _span(instance, "embeddings e3", {"gen_ai.operation.name": "embeddings", "gen_ai.provider.name": "openai",
                                      "gen_ai.request.model": "e3", "gen_ai.usage.input_tokens": 64})  # fmt: skip
    # a failed call without usage
    _span(instance, "chat gpt-4o", {**chat, "error.type": "rate_limit_exceeded"})


def test_current_names_by_default_with_embeddings_apart_and_usage_by_modality(make):
    s = _scrape(_workload_on(make(None)))
    for old in OLD:
        assert old not in {x.name for x in s.samples}, old
    gpt = {"gen_ai_request_model": "gpt-4o", "gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai"}
    assert s.total("gen_ai_client_inference_duration_seconds_count", **gpt) == 3
    assert s.total("gen_ai_client_inference_duration_seconds_count", gen_ai_request_model="e3") == 0
    assert s.value("gen_ai_client_embeddings_duration_seconds_count", gen_ai_request_model="e3") == 1
    assert s.value("gen_ai_client_embeddings_operation_input_tokens_sum", gen_ai_request_model="e3") == 64
    # usage counters: the split where the span gave one, the rest (and unsplit calls) unknown
    usage = "gen_ai_client_inference_usage_input_tokens_total"
    assert s.value(usage, gen_ai_token_modality="text", **gpt) == 700
    assert s.value(usage, gen_ai_token_modality="image", **gpt) == 258
    assert s.value(usage, gen_ai_token_modality="unknown", **gpt) == 42 + 10
    assert s.value("gen_ai_client_inference_usage_cache_read_input_tokens_total", gen_ai_token_modality="text",
                   **gpt) == 400  # fmt: skip
    assert s.value("gen_ai_client_inference_usage_output_tokens_total", gen_ai_token_modality="unknown", **gpt) == 150
    assert s.value("gen_ai_client_inference_usage_reasoning_output_tokens_total", gen_ai_token_modality="unknown",
                   **gpt) == 20  # fmt: skip
    assert s.total(usage, gen_ai_request_model="e3") == 0  # embeddings: their own token histogram only
    # per-operation histograms: one observation per call with usage
    assert s.value("gen_ai_client_inference_operation_input_tokens_count", **gpt) == 2  # not the failed call
    assert s.value("gen_ai_client_inference_operation_output_tokens_sum", **gpt) == 150
    assert s.value("gen_ai_client_inference_time_to_first_chunk_seconds_count", **gpt) == 1


def _workload_on(instance):
    _workload(instance)
    return instance


def test_a_call_without_usage_counts_zero_unknown_tokens(make):
    instance = make(None)
    _span(instance, "chat m", {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "p",
                               "gen_ai.request.model": "m", "error.type": "timeout"})  # fmt: skip
    s = _scrape(instance)
    assert s.value("gen_ai_client_inference_usage_input_tokens_total", gen_ai_request_model="m",
                   gen_ai_token_modality="unknown") == 0  # fmt: skip
    assert s.value("gen_ai_client_inference_duration_seconds_count", gen_ai_request_model="m",
                   error_type="timeout") == 1  # fmt: skip


def test_finish_reasons_and_output_speed_of_streams(make):
    s = _scrape(_workload_on(make(None)))
    assert s.value("model_finish_reasons_total", agent_name="unknown", model_id="gpt-4o", finish_reason="stop") == 2
    assert s.value("model_finish_reasons_total", agent_name="unknown", model_id="gpt-4o", finish_reason="length") == 1
    # only the streamed call: (100 - 20 reasoning) tokens over 2.5 - 0.5 s
    assert s.value("model_output_tokens_per_second_count", agent_name="unknown", model_id="gpt-4o") == 1
    assert s.value("model_output_tokens_per_second_sum", agent_name="unknown", model_id="gpt-4o") == pytest.approx(40)
    assert s.buckets("model_output_tokens_per_second", model_id="gpt-4o")[50.0] == 1
    assert s.buckets("model_output_tokens_per_second", model_id="gpt-4o")[30.0] == 0


def test_finish_reason_values_are_bounded_labels(make):
    instance = make(None)
    for n in range(40):
        _span(instance, "chat m", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
                                   "gen_ai.response.finish_reasons": (f"reason_{n}",)})  # fmt: skip
    s = _scrape(instance)
    labels = {x["finish_reason"] for x in s.label_sets("model_finish_reasons_total")}
    assert len(labels) == 31 and "other" in labels  # 30 (label_limits["finish_reason"]) + other
    assert s.total("model_finish_reasons_total") == 40
    assert s.value("spanmeter_label_overflow_total", label="finish_reason") == 10


@pytest.mark.parametrize("value, old, new", [
    (None, False, True),
    ("gen_ai_latest_experimental", False, True),
    ("http,database", False, True),  # other areas' values: not spanmeter's business
    ("gen_ai_v1.41", True, False),
    ("gen_ai_latest_experimental/dup", True, True),
    ("http/dup, gen_ai/dup", True, True),
    ("gen_ai_v1.41,gen_ai_latest_experimental", True, True),
])  # fmt: skip
def test_opt_in_selects_the_v141_names_the_current_ones_or_both(make, value, old, new):
    s = _scrape(_workload_on(make(value)))
    names = {x.name for x in s.samples}
    for name in OLD:
        assert (name in names) is old, (value, name)
    for name in NEW:
        assert (name in names) is new, (value, name)
    if old and new:  # the same calls under both names
        assert s.total(OLD[0]) == s.total(NEW[0]) + s.total("gen_ai_client_embeddings_duration_seconds_count") == 4
        assert s.total("gen_ai_client_token_usage_sum", gen_ai_token_type="input") == s.total(NEW[1]) + 64


def test_an_unknown_gen_ai_value_is_ignored_with_a_warning(make, caplog):
    with caplog.at_level(logging.WARNING, logger="spanmeter"):
        instance = make("gen_ai_latest")
    assert any("gen_ai_latest" in r.getMessage() and "ignored" in r.getMessage() for r in caplog.records)
    s = _scrape(_workload_on(instance))
    assert s.total(NEW[0]) == 3 and s.total(OLD[0]) == 0


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool")
@pytest.mark.parametrize("value", [None, "gen_ai_latest_experimental/dup", "gen_ai_v1.41"])
def test_every_mode_is_a_valid_exposition_for_promtool(make, value):
    s = _scrape(_workload_on(make(value)))
    result = subprocess.run(["promtool", "check", "metrics"], input=s.text, capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_modality_attributes_are_read_and_bad_values_dropped():
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 10,
             "gen_ai.usage.audio.input_tokens": "7", "gen_ai.usage.image.output_tokens": -3,
             "gen_ai.response.finish_reasons": ["stop", "tool_calls"]}  # fmt: skip
    record = conventions.read(attrs, conventions.KIND_INFERENCE, False)
    split = dict(zip(conventions.MODALITY_TOKEN_ATTRIBUTES, record.modality_tokens))
    assert split["gen_ai.usage.audio.input_tokens"] == 7
    assert split["gen_ai.usage.image.output_tokens"] is None
    assert ("image.output_tokens", "negative") in record.drops
    assert record.finish_reasons == ("stop", "tool_calls")
    plain = conventions.read({"gen_ai.operation.name": "chat", "gen_ai.response.finish_reason": "stop"},
                             conventions.KIND_INFERENCE, False)  # fmt: skip
    assert plain.modality_tokens is None and plain.finish_reasons == ("stop",)


def test_one_call_seen_by_two_instrumentations_keeps_the_finish_reason_and_split_of_either(make):
    """A framework span and the SDK's span of the same call side by side (the framework's tracer
    detached its context: two traces): counted once, and what only one of them carries (finish
    reasons on the SDK span, the modality split on the framework's) is kept."""
    instance = make(None)
    framework = instance.tracer_provider.get_tracer("some.framework")
    sdk = instance.tracer_provider.get_tracer("some.sdk")
    call = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.provider.name": "openai",
            "gen_ai.usage.input_tokens": 500, "gen_ai.usage.output_tokens": 40}  # fmt: skip
    base = 1_800_000_000 * S
    outer = framework.start_span("chat gpt-4o", attributes={**call, "gen_ai.usage.audio.input_tokens": 120},
                                 start_time=base)  # fmt: skip
    inner = sdk.start_span("chat gpt-4o", context=Context(),
                           attributes={**call, "gen_ai.response.finish_reasons": ("stop",)},
                           start_time=base + S // 100)  # fmt: skip
    inner.end(end_time=base + S // 2)
    outer.end(end_time=base + S)
    s = _scrape(instance)
    assert s.value("model_inference_calls_total", model_id="gpt-4o") == 1
    assert s.value("model_finish_reasons_total", model_id="gpt-4o", finish_reason="stop") == 1
    usage = "gen_ai_client_inference_usage_input_tokens_total"
    assert s.value(usage, gen_ai_token_modality="audio") == 120
    assert s.value(usage, gen_ai_token_modality="unknown") == 380


def test_openinference_audio_token_details_are_the_audio_modality(make):
    instance = make(None)
    _span(instance, "llm", {"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o-audio", "llm.provider": "openai",
                            "llm.token_count.prompt": 100, "llm.token_count.completion": 30,
                            "llm.token_count.prompt_details.audio": 60,
                            "llm.token_count.completion_details.audio": 25})  # fmt: skip
    s = _scrape(instance)
    for name, audio, rest in (("input", 60, 40), ("output", 25, 5)):
        metric = f"gen_ai_client_inference_usage_{name}_tokens_total"
        assert s.value(metric, gen_ai_request_model="gpt-4o-audio", gen_ai_token_modality="audio") == audio
        assert s.value(metric, gen_ai_request_model="gpt-4o-audio", gen_ai_token_modality="unknown") == rest


def test_a_modality_split_larger_than_the_total_never_counts_more_than_the_total(make):
    instance = make(None)
    _span(instance, "chat m", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
                               "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 1,
                               "gen_ai.usage.text.input_tokens": 99})  # fmt: skip
    s = _scrape(instance)
    assert s.value("agent_token_usage_total", token_type="input", model_id="m") == 10
    assert s.total("gen_ai_client_inference_usage_input_tokens_total") == 10
    assert s.value("gen_ai_client_inference_usage_input_tokens_total", gen_ai_token_modality="text") == 10


def test_the_unknown_modality_series_stays_once_split_tokens_arrive(make):
    """A series once exported must not vanish (Prometheus would mark it stale)."""
    instance = make(None)
    chat = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}
    _span(instance, "chat m", chat)  # no usage: 0 unknown, as the conventions ask
    _span(instance, "chat m", {**chat, "gen_ai.usage.input_tokens": 5, "gen_ai.usage.text.input_tokens": 5})
    s = _scrape(instance)
    assert s.value("gen_ai_client_inference_usage_input_tokens_total", gen_ai_token_modality="unknown") == 0
    assert s.value("gen_ai_client_inference_usage_input_tokens_total", gen_ai_token_modality="text") == 5
