"""LLM calls made with the official SDKs (openai 3.x, anthropic 2.x: httpx2) and plain
httpx against a real local server become exactly-counted inference metrics.

Each test drives a real client over loopback HTTP to :class:`FakeProviders`, then scrapes
spanmeter's real ``/metrics`` endpoint and parses it with ``prometheus_client``.
"""

from __future__ import annotations

import asyncio

import anthropic
import httpx
import httpx2
import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

import spanmeter
import spanmeter.httpx
from spanmeter.wire import Rule
from tests.fake_providers import FakeProviders, Usage

MESSAGES = [{"role": "user", "content": "hi"}]
#: Dollars per million tokens; distinct per token type so that cost depends on the conversion.
PRICES = {"price": [
    {"model": "gpt-4o", "input": 2.5, "output": 10, "cache_read": 1.25},
    {"model": "claude-test-sonnet", "input": 3, "output": 15, "cache_read": 0.3, "cache_write": 3.75},
]}  # fmt: skip


# --- fixtures (also used by test_httpx_robustness) ----------------------------------------
@pytest.fixture
def exporter():
    return InMemorySpanExporter()


@pytest.fixture
def meter(exporter):
    """A spanmeter on its own providers and registry, serving a free loopback port."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instance = spanmeter.setup(service_name="test-agent", port=0, registry=CollectorRegistry(),
                               tracer_provider=provider, prices=PRICES, price_catalogue=False)  # fmt: skip
    yield instance
    instance.shutdown()


@pytest.fixture(params=[True, False], ids=["http-spans", "genai-only"])
def instrumented(meter, request):
    """httpx and httpx2 instrumented by spanmeter for the duration of a test, in both modes:
    with the HTTP client spans (the default) and without (``http_spans=False``)."""
    handle = spanmeter.httpx.instrument(meter, http_spans=request.param)
    yield handle
    handle.uninstrument()


@pytest.fixture
def providers():
    with FakeProviders() as server:
        yield server


def inference_spans(exporter):
    ops = ("chat", "generate_content", "text_completion", "embeddings")
    return [s for s in exporter.get_finished_spans() if s.attributes.get("gen_ai.operation.name") in ops]


def tokens(scrape, model, agent="unknown"):
    s = scrape()
    return {t: s.value("agent_token_usage_total", agent_name=agent, model_id=model, token_type=t)
            for t in ("input", "output", "cache_read", "cache_write", "reasoning")}  # fmt: skip


# --- OpenAI SDK ---------------------------------------------------------------------------
def test_openai_sdk_sync_json_and_stream_count_exact_tokens_under_the_agent_run(
    meter, instrumented, providers, scrape, exporter
):
    providers.usage = Usage(input=1234, output=321, cache_read=400, reasoning=111)
    client = openai.OpenAI(base_url=providers.url + "/v1", api_key="test", max_retries=0)
    with meter.agent_run("support"):
        reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True,
                                                stream_options={"include_usage": True})  # fmt: skip
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert reply.usage.prompt_tokens == 1234 and text == "Hello, how can I help?"

    # OpenAI's prompt_tokens already include cached tokens, completion_tokens the reasoning.
    assert tokens(scrape, "gpt-4o", agent="support") == {
        "input": 2 * 1234, "output": 2 * 321, "cache_read": 2 * 400, "cache_write": 0, "reasoning": 2 * 111}
    s = scrape()
    # Per call: 834 uncached input at $2.5/M, 400 cached at $1.25/M, 321 output (reasoning inside) at $10/M.
    per_call = (834 * 2.5 + 400 * 1.25 + 321 * 10) / 1e6
    assert s.value("agent_estimated_cost_dollars_total", agent_name="support", model_id="gpt-4o") == pytest.approx(
        2 * per_call, abs=1e-12)
    assert s.value("model_inference_calls_total", agent_name="support", model_id="gpt-4o") == 2
    assert s.value("agent_inference_calls_per_run_count", agent_name="support") == 1
    assert s.value("agent_inference_calls_per_run_sum", agent_name="support") == 2
    assert s.value("gen_ai_client_inference_duration_seconds_count", gen_ai_operation_name="chat",
                   gen_ai_provider_name="openai", gen_ai_request_model="gpt-4o",
                   gen_ai_response_model="gpt-4o-2025-01-01") == 2  # fmt: skip
    json_span, stream_span = inference_spans(exporter)
    assert json_span.attributes["gen_ai.request.stream"] is False
    assert "gen_ai.response.time_to_first_chunk" not in json_span.attributes
    assert stream_span.attributes["gen_ai.request.stream"] is True
    ttfc = stream_span.attributes["gen_ai.response.time_to_first_chunk"]
    assert 0 < ttfc <= (stream_span.end_time - stream_span.start_time) / 1e9
    assert stream_span.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert s.value("gen_ai_client_inference_time_to_first_chunk_seconds_count", gen_ai_request_model="gpt-4o") == 1
    assert s.value("gen_ai_client_inference_time_to_first_chunk_seconds_sum", gen_ai_request_model="gpt-4o") == (
        pytest.approx(ttfc))


def test_openai_sdk_async_json_and_stream(meter, instrumented, providers, scrape, exporter):
    providers.usage = Usage(input=500, output=50, cache_read=0, reasoning=0)

    async def main():
        client = openai.AsyncOpenAI(base_url=providers.url + "/v1", api_key="test", max_retries=0)
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        stream = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True,
                                                      stream_options={"include_usage": True})  # fmt: skip
        async for _ in stream:
            pass
        await client.close()

    asyncio.run(main())
    assert tokens(scrape, "gpt-4o-mini") == {"input": 1000, "output": 100, "cache_read": 0, "cache_write": 0,
                                             "reasoning": 0}  # fmt: skip
    assert [s.attributes["gen_ai.request.stream"] for s in inference_spans(exporter)] == [False, True]
    assert "gen_ai.response.time_to_first_chunk" in inference_spans(exporter)[1].attributes


def test_openai_stream_without_include_usage_counts_the_call_without_tokens(meter, instrumented, providers,
                                                                            scrape):  # fmt: skip
    client = openai.OpenAI(base_url=providers.url + "/v1", api_key="test", max_retries=0)
    for _ in client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True):
        pass
    s = scrape()
    assert s.value("model_inference_calls_total", agent_name="unknown", model_id="gpt-4o") == 1
    assert s.total("agent_token_usage_total", model_id="gpt-4o") == 0  # the server never said


def test_openai_responses_api_json_and_stream(meter, instrumented, providers, scrape):
    providers.usage = Usage(input=900, output=90, cache_read=300, reasoning=30)
    client = openai.OpenAI(base_url=providers.url + "/v1", api_key="test", max_retries=0)
    reply = client.responses.create(model="o4-mini", input="hi")
    assert reply.output_text == "Hello, how can I help?"
    for _ in client.responses.create(model="o4-mini", input="hi", stream=True):
        pass
    assert tokens(scrape, "o4-mini") == {"input": 1800, "output": 180, "cache_read": 600, "cache_write": 0,
                                         "reasoning": 60}  # fmt: skip


# --- Anthropic SDK --------------------------------------------------------------------------
def test_anthropic_sdk_sync_input_tokens_include_cache_reads_and_writes(meter, instrumented, providers, scrape,
                                                                        exporter):  # fmt: skip
    providers.usage = Usage(input=1000, output=250, cache_read=300, cache_write=200, reasoning=0)
    client = anthropic.Anthropic(base_url=providers.url, api_key="test", max_retries=0)
    message = client.messages.create(model="claude-test-sonnet", max_tokens=64, messages=MESSAGES)
    assert message.usage.input_tokens == 1000  # Anthropic's meaning: without the cache
    with client.messages.stream(model="claude-test-sonnet", max_tokens=64, messages=MESSAGES) as stream:
        assert "".join(stream.text_stream) == "Hello, how can I help?"
    # GenAI meaning: input = 1000 + 300 cache reads + 200 cache writes, per call.
    assert tokens(scrape, "claude-test-sonnet") == {"input": 2 * 1500, "output": 2 * 250, "cache_read": 2 * 300,
                                                   "cache_write": 2 * 200, "reasoning": 0}  # fmt: skip
    # Priced as Anthropic bills it: 1000 uncached input, 300 cache reads, 200 cache writes, 250 output.
    per_call = (1000 * 3 + 300 * 0.3 + 200 * 3.75 + 250 * 15) / 1e6
    assert scrape().value("agent_estimated_cost_dollars_total", model_id="claude-test-sonnet") == pytest.approx(
        2 * per_call, abs=1e-12)
    spans = inference_spans(exporter)
    assert [s.attributes["gen_ai.provider.name"] for s in spans] == ["anthropic", "anthropic"]
    assert spans[1].attributes["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert spans[1].attributes["gen_ai.response.time_to_first_chunk"] > 0


def test_anthropic_sdk_async_json_and_stream(meter, instrumented, providers, scrape):
    providers.usage = Usage(input=10, output=20, cache_read=30, cache_write=40, reasoning=0)

    async def main():
        client = anthropic.AsyncAnthropic(base_url=providers.url, api_key="test", max_retries=0)
        await client.messages.create(model="claude-test-haiku", max_tokens=64, messages=MESSAGES)
        stream = await client.messages.create(model="claude-test-haiku", max_tokens=64, messages=MESSAGES,
                                              stream=True)  # fmt: skip
        async for _ in stream:
            pass
        await client.close()

    asyncio.run(main())
    assert tokens(scrape, "claude-test-haiku") == {"input": 160, "output": 40, "cache_read": 60, "cache_write": 80,
                                                  "reasoning": 0}  # fmt: skip


# --- plain httpx, another port, Gemini, user rules -----------------------------------------
def test_plain_httpx_to_an_openai_compatible_server_on_another_port(meter, instrumented, providers, scrape,
                                                                    exporter):  # fmt: skip
    with FakeProviders() as other:
        assert other.url != providers.url
        other.usage = Usage(input=70, output=7, cache_read=0, reasoning=0)
        body = {"model": "llama-3.1-8b", "messages": MESSAGES}
        with httpx.Client() as client:  # httpx, not httpx2: HTTPXClientInstrumentor
            assert client.post(other.url + "/v1/chat/completions", json=body).status_code == 200
            with client.stream("POST", other.url + "/v1/chat/completions",
                               json=dict(body, stream=True, stream_options={"include_usage": True})) as r:
                lines = list(r.iter_lines())  # fmt: skip
        assert lines[-2:] == ["data: [DONE]", ""]

        async def main():
            async with httpx.AsyncClient() as client:
                await client.post(other.url + "/v1/chat/completions", json=body)

        asyncio.run(main())
    assert tokens(scrape, "llama-3.1-8b") == {"input": 210, "output": 21, "cache_read": 0, "cache_write": 0,
                                              "reasoning": 0}  # fmt: skip
    assert {s.attributes["gen_ai.provider.name"] for s in inference_spans(exporter)} == {"openai"}


def test_gemini_generate_content_json_sse_and_json_array(meter, instrumented, providers, scrape, exporter):
    providers.usage = Usage(input=100, output=40, cache_read=25, reasoning=15)
    base = providers.url + "/v1beta/models/gemini-2.5-flash"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    with httpx2.Client() as client:
        client.post(base + ":generateContent", json=body)
        client.post(base + ":streamGenerateContent?alt=sse", json=body)
        client.post(base + ":streamGenerateContent", json=body)  # a streamed JSON array
    # candidatesTokenCount excludes thoughts; GenAI output includes reasoning.
    assert tokens(scrape, "gemini-2.5-flash") == {"input": 300, "output": 3 * 55, "cache_read": 75,
                                                  "cache_write": 0, "reasoning": 45}  # fmt: skip
    spans = inference_spans(exporter)
    assert {s.attributes["gen_ai.operation.name"] for s in spans} == {"generate_content"}
    assert [s.attributes["gen_ai.request.stream"] for s in spans] == [False, True, True]
    assert {s.attributes["gen_ai.response.model"] for s in spans} == {"gemini-2.5-flash-001"}


def test_user_rules_recognise_a_custom_gateway_path(meter, providers, scrape, exporter):
    handle = spanmeter.httpx.instrument(meter, rules=[Rule(r"/llm/generate$", "openai_chat", provider="vllm")])
    try:
        with httpx2.Client() as client:
            client.post(providers.url + "/llm/generate", json={"model": "qwen-7b", "messages": MESSAGES})
    finally:
        handle.uninstrument()
    (span,) = inference_spans(exporter)
    assert span.attributes["gen_ai.provider.name"] == "vllm"
    assert span.attributes["gen_ai.request.model"] == "qwen-7b"
    assert scrape().value("model_inference_calls_total", agent_name="unknown", model_id="qwen-7b") == 1


# --- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sdk", "model", "error_type"),
    [
        ("openai", "gpt-4o-429", "rate_limit_exceeded"),
        ("openai", "gpt-4o-context", "context_length_exceeded"),
        ("openai", "gpt-4o-500", "server_error"),
        ("anthropic", "claude-429", "rate_limit_error"),
        ("anthropic", "claude-529", "overloaded_error"),
        ("anthropic", "claude-context", "context_length_exceeded"),
        ("anthropic", "claude-500", "api_error"),
    ],
)
def test_provider_errors_name_error_type_from_the_error_body(meter, instrumented, providers, scrape, sdk, model,
                                                             error_type):  # fmt: skip
    if sdk == "openai":
        client = openai.OpenAI(base_url=providers.url + "/v1", api_key="test", max_retries=0)
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model=model, messages=MESSAGES)
    else:
        client = anthropic.Anthropic(base_url=providers.url, api_key="test", max_retries=0)
        with pytest.raises(anthropic.APIStatusError):
            client.messages.create(model=model, max_tokens=8, messages=MESSAGES)
    s = scrape()
    assert s.value("gen_ai_client_inference_duration_seconds_count", gen_ai_request_model=model,
                   error_type=error_type) == 1  # fmt: skip
    assert s.value("model_inference_calls_total", model_id=model) == 1


def test_overloaded_error_event_in_an_anthropic_stream_and_gemini_429(meter, instrumented, providers, scrape):
    client = anthropic.Anthropic(base_url=providers.url, api_key="test", max_retries=0)
    with pytest.raises(anthropic.APIStatusError):
        for _ in client.messages.create(model="claude-529", max_tokens=8, messages=MESSAGES, stream=True):
            pass
    with httpx2.Client() as c:
        assert c.post(providers.url + "/v1beta/models/gemini-429:generateContent", json={"contents": []}).status_code == 429
    s = scrape()
    assert s.value("gen_ai_client_inference_duration_seconds_count", gen_ai_request_model="claude-529",
                   error_type="overloaded_error") == 1  # fmt: skip
    assert s.value("gen_ai_client_inference_duration_seconds_count", gen_ai_request_model="gemini-429",
                   error_type="RESOURCE_EXHAUSTED") == 1  # fmt: skip


# --- counted once ------------------------------------------------------------------------------
def test_the_http_span_is_not_a_second_inference_and_model_call_is_not_doubled(meter, instrumented, providers,
                                                                               scrape, exporter):  # fmt: skip
    client = openai.OpenAI(base_url=providers.url + "/v1", api_key="test", max_retries=0)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    # The README's hand-instrumented pattern around the same SDK call: still one inference.
    with meter.model_call("gpt-4o", provider="openai") as call:
        reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        call.record_usage(input_tokens=reply.usage.prompt_tokens, output_tokens=reply.usage.completion_tokens)
    s = scrape()
    assert s.value("spanmeter_spans_total", kind="inference") == 2
    assert s.value("model_inference_calls_total", agent_name="unknown", model_id="gpt-4o") == 2
    http_spans = [sp for sp in exporter.get_finished_spans() if sp.name == "POST"]
    assert len(http_spans) == (2 if instrumented.http_spans else 0)
    assert not any(k.startswith("gen_ai.") for sp in http_spans for k in sp.attributes)


@pytest.mark.parametrize("genai_spans", [True, False], ids=["genai-spans", "spanless"])
def test_a_call_the_sdk_traces_on_another_tracer_provider_is_counted_under_its_run(meter, providers, scrape,
                                                                                   genai_spans):  # fmt: skip
    """The anthropic SDK traces each call itself, on the global tracer provider by default: when
    that is the app's own SDK provider, not spanmeter's, spanmeter never sees that span, so the
    call must be measured over HTTP, under the run it was made in (CI saw it counted nowhere)."""
    app_exporter = InMemorySpanExporter()
    app_provider = TracerProvider()  # the app's, exporting its traces elsewhere
    app_provider.add_span_processor(SimpleSpanProcessor(app_exporter))
    providers.usage = Usage(input=1000, output=250, cache_read=300, cache_write=200, reasoning=0)
    handle = spanmeter.httpx.instrument(meter, http_spans=False, genai_spans=genai_spans)
    try:
        client = anthropic.Anthropic(base_url=providers.url, api_key="test", max_retries=0,
                                     open_telemetry={"tracer_provider": app_provider})  # fmt: skip
        with meter.agent_run("support"):
            client.messages.create(model="claude-test-sonnet", max_tokens=64, messages=MESSAGES)
        client.messages.create(model="claude-test-sonnet", max_tokens=64, messages=MESSAGES)
    finally:
        handle.uninstrument()
    assert [s.attributes["gen_ai.operation.name"] for s in app_exporter.get_finished_spans()] == ["chat", "chat"]
    per_call = {"input": 1500, "output": 250, "cache_read": 300, "cache_write": 200, "reasoning": 0}
    assert tokens(scrape, "claude-test-sonnet", agent="support") == per_call
    assert tokens(scrape, "claude-test-sonnet") == per_call  # the call outside the run
    s = scrape()
    assert s.total("model_inference_calls_total") == 2
    assert s.value("agent_inference_calls_per_run_sum", agent_name="support") == 1


def test_requests_that_are_not_model_calls_make_no_inference(meter, instrumented, providers, scrape, exporter):
    with httpx2.Client() as client:
        client.get(providers.url + "/v1/chat/completions")  # not a POST
        client.post(providers.url + "/v1/files", json={"model": "gpt-4o"})  # not an LLM path
        client.post(providers.url + "/v1/chat/completions", content=b"not json at all")  # body rules it out
        client.post(providers.url + "/v1/chat/completions", json=["a", "list"])
    with httpx.Client() as client:
        client.get(providers.url + "/health")
    traced = [s for s in exporter.get_finished_spans() if s.name in ("GET", "POST")]
    assert len(traced) == (5 if instrumented.http_spans else 0)  # all traced, or none without HTTP spans
    assert inference_spans(exporter) == []
    assert scrape().total("spanmeter_spans_total", kind="inference") == 0


def test_instrument_raises_configuration_errors_up_front(meter):
    with pytest.raises(ValueError, match="not a regular expression"):  # at the user's call site
        Rule(r"/x(", "openai_chat")
    with pytest.raises(ValueError, match="Rule.api"):
        Rule(r"/x", "openai")
    with pytest.raises(spanmeter.ConfigurationError, match="rules"):
        spanmeter.httpx.instrument(meter, rules=["/x"])
    from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor

    HTTPX2ClientInstrumentor().instrument()
    try:
        with pytest.raises(spanmeter.ConfigurationError, match="already instrumented"):
            spanmeter.httpx.instrument(meter)
    finally:
        HTTPX2ClientInstrumentor().uninstrument()
    spanmeter.shutdown()
    with pytest.raises(spanmeter.ConfigurationError, match=r"spanmeter.configure\(\)"):
        spanmeter.httpx.instrument()


# --- HTTP spans or not ---------------------------------------------------------------------
class _HeaderRecorder(FakeProviders):
    """The fake providers, also keeping each request's headers."""

    def __init__(self):
        super().__init__()
        self.headers_seen: list = []
        handler = self.RequestHandlerClass

        class Recording(handler):
            def do_POST(self):
                self.server.headers_seen.append({k.lower(): v for k, v in self.headers.items()})
                super().do_POST()

        self.RequestHandlerClass = Recording


@pytest.mark.parametrize("http_spans", [True, False], ids=["http-spans", "genai-only"])
def test_an_llm_call_is_one_inference_span_over_its_http_span_or_alone(meter, exporter, http_spans):
    with _HeaderRecorder() as server:
        handle = spanmeter.httpx.instrument(meter, http_spans=http_spans)
        try:
            client = openai.OpenAI(base_url=server.url + "/v1", api_key="test", max_retries=0)
            with meter.agent_run("support"):
                client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        finally:
            handle.uninstrument()
    (inference,) = inference_spans(exporter)
    http = [s for s in exporter.get_finished_spans() if s.name == "POST"]
    (headers,) = server.headers_seen
    if http_spans:
        # as the official SDK instrumentations do: chat span -> HTTP client span, and the
        # trace goes on at the server with the HTTP span's context
        (http_span,) = http
        assert http_span.parent.span_id == inference.context.span_id
        assert headers["traceparent"].split("-")[2] == format(http_span.context.span_id, "016x")
    else:
        assert http == [] and "traceparent" not in headers  # the documented trade-off
    assert inference.attributes["gen_ai.usage.input_tokens"] == 1200


def test_without_http_spans_it_works_beside_the_http_instrumentation_and_twice_is_an_error(meter, providers,
                                                                                         exporter, scrape):  # fmt: skip
    from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor

    HTTPX2ClientInstrumentor().instrument(tracer_provider=meter.tracer_provider)
    handle = spanmeter.httpx.instrument(meter, http_spans=False)
    try:
        with pytest.raises(spanmeter.ConfigurationError, match="already instrumented by spanmeter"):
            spanmeter.httpx.instrument(meter, http_spans=False)
        client = openai.OpenAI(base_url=providers.url + "/v1", api_key="test", max_retries=0)
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    finally:
        handle.uninstrument()
        HTTPX2ClientInstrumentor().uninstrument()
    assert len([s for s in exporter.get_finished_spans() if s.name == "POST"]) == 1  # the user's own
    assert scrape().value("model_inference_calls_total", agent_name="unknown", model_id="gpt-4o") == 1
    handle = spanmeter.httpx.instrument(meter)  # uninstrument() left httpx as it was
    handle.uninstrument()


def test_uninstrument_under_another_wrapper_stops_measuring_and_instrument_works_again(meter, providers, exporter):
    from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor

    originals = [(cls, name, cls.__dict__[name]) for cls, name in ((httpx2.HTTPTransport, "handle_request"),
                                                                  (httpx2.AsyncHTTPTransport, "handle_async_request"))]  # fmt: skip
    handle = spanmeter.httpx.instrument(meter, http_spans=False)
    HTTPX2ClientInstrumentor().instrument(tracer_provider=meter.tracer_provider)  # wraps spanmeter's wrapper
    client = openai.OpenAI(base_url=providers.url + "/v1", api_key="test", max_retries=0)
    try:
        handle.uninstrument()  # cannot unwrap from under the other: it must pass through
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert inference_spans(exporter) == []
        again = spanmeter.httpx.instrument(meter, http_spans=False)
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        again.uninstrument()
    finally:
        HTTPX2ClientInstrumentor().uninstrument()
        assert httpx2.HTTPTransport.__dict__["handle_request"]._spanmeter is handle  # left passing through
        for cls, name, original in originals:  # sync and async, for the other tests
            setattr(cls, name, original)
    assert len(inference_spans(exporter)) == 1


def test_inference_spans_carry_the_priced_cost_before_they_end(meter, instrumented, providers, scrape, exporter):
    providers.usage = Usage(input=1234, output=321, cache_read=400, cache_write=100, reasoning=0)
    openai_client = openai.OpenAI(base_url=providers.url + "/v1", api_key="test", max_retries=0)
    openai_client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    stream = openai_client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)  # no usage asked
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    claude = anthropic.Anthropic(base_url=providers.url, api_key="test", max_retries=0)
    claude.messages.create(model="claude-test-sonnet", max_tokens=64, messages=MESSAGES)
    openai_json, openai_stream, anthropic_json = inference_spans(exporter)
    openai_cost = (834 * 2.5 + 400 * 1.25 + 321 * 10) / 1e6  # prompt_tokens include the cached 400
    # Anthropic's input leaves the cache out: 1234 fresh + 400 read + 100 written
    anthropic_cost = (1234 * 3 + 400 * 0.3 + 100 * 3.75 + 321 * 15) / 1e6
    for span, cost in ((openai_json, openai_cost), (anthropic_json, anthropic_cost)):
        assert span.attributes["gen_ai.usage.cost.amount"] == pytest.approx(cost, abs=1e-15)
        assert span.attributes["gen_ai.usage.cost.currency"] == "USD"
        assert span.attributes["gen_ai.usage.cost.source"] == "local"
        assert span.attributes["spanmeter.cost.price_source"] == "override"
    assert "gen_ai.usage.cost.amount" not in openai_stream.attributes  # no usage: no cost, never $0
    s = scrape()
    assert s.value("agent_estimated_cost_dollars_total", model_id="gpt-4o") == pytest.approx(openai_cost, abs=1e-12)
    assert s.value("spanmeter_priced_calls_total", source="override") == 2  # the span's cost keeps its source
