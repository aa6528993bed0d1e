"""``spanmeter.httpx.instrument(http_spans=False, genai_spans=False)``: LLM calls measured
without any span give the same metrics as with their GenAI spans.

The same workload (the real openai and anthropic SDKs over loopback to
:class:`FakeProviders`: JSON, a stream, a provider error, inside and outside an agent run)
runs once with GenAI spans and once without; every counter and every histogram count of
spanmeter's real ``/metrics`` must be equal, and no LLM call may reach the trace exporter.
Both run in the test's process, after whatever its worker ran before (a fresh process once
hid that an SDK's own span on another tracer provider made a call go uncounted).
"""

from __future__ import annotations

import urllib.request

import anthropic
import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

import spanmeter
import spanmeter.httpx
from tests.conftest import Scrape
from tests.fake_providers import FakeProviders, Usage
from tests.test_httpx import MESSAGES, PRICES

#: Histograms whose buckets and sums depend on timing (their counts are compared).
_TIMED = ("duration", "time_to_first_chunk", "per_second")


def _timed(name: str) -> bool:
    return name.endswith(("_bucket", "_sum")) and any(word in name for word in _TIMED)


@pytest.fixture
def providers():
    with FakeProviders() as server:
        server.usage = Usage(input=1234, output=321, cache_read=400, reasoning=111)
        yield server


def _workload(meter, providers) -> None:
    client = openai.OpenAI(base_url=providers.url + "/v1", api_key="test", max_retries=0)
    claude = anthropic.Anthropic(base_url=providers.url, api_key="test", max_retries=0)
    with meter.agent_run("support"):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True,
                                                stream_options={"include_usage": True})  # fmt: skip
        for _ in stream:
            pass
        with meter.tool_call("lookup"):
            pass
        claude.messages.create(model="claude-test-sonnet", max_tokens=8, messages=MESSAGES)
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="gpt-4o-429", messages=MESSAGES)


def _measure(genai_spans: bool, providers) -> tuple[dict, list]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter = spanmeter.setup(service_name="spanless", port=0, registry=CollectorRegistry(), tracer_provider=provider,
                            prices=PRICES, price_catalogue=False)  # fmt: skip
    handle = spanmeter.httpx.instrument(meter, http_spans=False, genai_spans=genai_spans)
    try:
        _workload(meter, providers)
        meter.state.flush()
        host, port = meter.address
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
            scrape = Scrape(response.read().decode())
    finally:
        handle.uninstrument()
        meter.shutdown()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in scrape.samples
               if not _timed(s.name) and not s.name.startswith(("target_info", "spanmeter_info"))}  # fmt: skip
    return samples, [s.name for s in exporter.get_finished_spans()]


def test_without_genai_spans_every_count_is_the_same_and_no_llm_call_reaches_the_traces(providers):
    with_spans, traced = _measure(True, providers)
    spanless, traced_spanless = _measure(False, providers)
    assert spanless == with_spans
    # the workload did reach the metrics: tokens, cost, the agent's calls, the error
    key = ("agent_token_usage_total", (("agent_name", "support"), ("model_id", "gpt-4o"), ("token_type", "input")))
    assert spanless[key] == 2 * 1234
    assert spanless[("agent_inference_calls_per_run_count", (("agent_name", "support"),))] == 1
    assert sum(v for (name, _), v in spanless.items() if name == "model_inference_calls_total") == 4
    assert spanless[("agent_inference_calls_per_run_sum", (("agent_name", "support"),))] == 3
    assert any(name == "agent_estimated_cost_dollars_total" and v > 0 for (name, _), v in spanless.items())
    assert any(("error_type", "rate_limit_exceeded") in labels for _, labels in spanless)
    assert {"chat gpt-4o", "chat claude-test-sonnet"} <= set(traced)  # with spans: the LLM calls are traced
    assert traced_spanless == ["execute_tool lookup", "invoke_agent support"]  # without: only the app's spans


def test_genai_spans_false_needs_http_spans_false():
    meter = spanmeter.setup(service_name="spanless", start_server=False, registry=CollectorRegistry(),
                            tracer_provider=TracerProvider())  # fmt: skip
    try:
        with pytest.raises(spanmeter.ConfigurationError, match="http_spans=False"):
            spanmeter.httpx.instrument(meter, genai_spans=False)
    finally:
        meter.shutdown()
