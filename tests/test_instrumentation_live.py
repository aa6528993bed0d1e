"""The official OpenAI instrumentation, live: the openai SDK against the fake providers on 127.0.0.1.

``opentelemetry-instrumentation-openai-v2`` at its default settings (the v1.30 GenAI
conventions: ``gen_ai.system``, ``gen_ai.usage.input_tokens`` / ``output_tokens``) on the
tracer provider of a spanmeter; the metrics must count each call once with the tokens the
fake server returned. The recorded fixtures of the same instrumentation are in
``tests/fixtures/spans/openai-v2*`` (``scripts/record_fixtures.py``).
"""

from __future__ import annotations

import openai
import pytest
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.metrics import MeterProvider

from tests.fake_providers import FakeProviders

MODEL = "gpt-4o-mini"
PROMPT = [{"role": "user", "content": "Say hello."}]


@pytest.fixture
def providers():
    with FakeProviders() as server:
        yield server


@pytest.fixture
def client(meter, providers):
    """An OpenAI client on the fake server, its calls traced into ``meter``'s tracer provider."""
    instrumentor = OpenAIInstrumentor()
    # its own metrics go to a provider of their own: only spanmeter's are scraped
    instrumentor.instrument(tracer_provider=meter.tracer_provider, meter_provider=MeterProvider())
    try:
        with openai.OpenAI(base_url=providers.url + "/v1", api_key="sk-test", max_retries=0) as c:
            yield c
    finally:
        instrumentor.uninstrument()


def _assert_one_call(s, usage, *, response_model=f"{MODEL}-2025-01-01"):
    assert s.value("model_inference_calls_total", agent_name="unknown", model_id=MODEL) == 1
    tokens = {t: s.total("agent_token_usage_total", model_id=MODEL, token_type=t) for t in ("input", "output")}
    assert tokens == {"input": usage.input, "output": usage.output}  # OpenAI's input includes the cached
    # 2.4b0 reports neither cached nor reasoning tokens, though the response has both
    assert s.total("agent_token_usage_total", model_id=MODEL, token_type="cache_read") == 0
    assert s.total("agent_token_usage_total", model_id=MODEL, token_type="reasoning") == 0
    labels = dict(gen_ai_operation_name="chat", gen_ai_provider_name="openai", gen_ai_request_model=MODEL,
                  gen_ai_response_model=response_model)  # fmt: skip
    assert s.value("gen_ai_client_inference_operation_input_tokens_sum", **labels) == usage.input
    assert s.value("gen_ai_client_inference_operation_output_tokens_sum", **labels) == usage.output
    assert s.value("gen_ai_client_inference_usage_input_tokens_total", gen_ai_token_modality="unknown",
                   **labels) == usage.input  # fmt: skip
    assert s.value("gen_ai_client_inference_duration_seconds_count", **labels) == 1
    assert s.value("spanmeter_spans_total", kind="inference") == 1


def test_a_chat_completion_is_one_call_with_the_servers_tokens(client, providers, scrape):
    response = client.chat.completions.create(model=MODEL, messages=PROMPT)
    assert response.usage.prompt_tokens == providers.usage.input
    _assert_one_call(scrape(), providers.usage)


def test_a_streamed_chat_completion_with_usage_is_one_call_with_the_servers_tokens(client, providers, scrape):
    stream = client.chat.completions.create(
        model=MODEL, messages=PROMPT, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[-1].usage.completion_tokens == providers.usage.output
    _assert_one_call(scrape(), providers.usage)


def test_a_rate_limited_call_counts_as_a_failed_call_without_tokens(client, scrape):
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=MODEL + "-429", messages=PROMPT)
    s = scrape()
    assert s.value("model_inference_calls_total", agent_name="unknown", model_id=MODEL + "-429") == 1
    assert s.total("agent_token_usage_total", model_id=MODEL + "-429") == 0
    assert (
        s.value(
            "gen_ai_client_inference_duration_seconds_count",
            gen_ai_request_model=MODEL + "-429",
            error_type="RateLimitError",
        )
        == 1
    )
