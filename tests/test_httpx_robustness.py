"""spanmeter's hooks never change what the application receives: the same bytes, the same
exceptions, whatever the server sends (broken, malformed, huge, not JSON), and whatever
the application does with the response (reads it, closes it early, drops it)."""

from __future__ import annotations

import asyncio
import gc
import gzip
import json
import socket

import httpx
import httpx2
import openai
import pytest

import spanmeter.httpx
from tests.fake_providers import BIG_BODY_BYTES, Usage
from tests.test_httpx import MESSAGES, exporter, inference_spans, meter, providers  # noqa: F401  (fixtures)

CHAT = {"model": "gpt-4o", "messages": MESSAGES}
STREAM = dict(CHAT, stream=True, stream_options={"include_usage": True})


def _outcome(fn):
    """What the application sees: the body, or the exception's type, text and cause."""
    try:
        return ("body", fn())
    except Exception as exc:  # the point is to compare, whatever it is
        return ("raised", type(exc), str(exc), type(exc.__cause__))


def _with_and_without(meter, fn, http_spans=True):
    """``fn()``'s outcome without spanmeter's hooks, then with them."""
    plain = _outcome(fn)
    handle = spanmeter.httpx.instrument(meter, http_spans=http_spans)
    try:
        hooked = _outcome(fn)
    finally:
        handle.uninstrument()
    return plain, hooked


def _raw_post(module, url, body):
    def fetch():
        with module.Client() as client, client.stream("POST", url, json=body) as response:
            return b"".join(response.iter_raw())

    return fetch


@pytest.mark.parametrize("module", [httpx, httpx2], ids=["httpx", "httpx2"])
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", CHAT),
        ("/v1/chat/completions", STREAM),
        ("/v1/chat/completions", dict(STREAM, model="gpt-4o-malformed")),
        ("/v1/chat/completions", dict(CHAT, model="gpt-4o-big")),
        ("/v1/messages", {"model": "claude-x", "max_tokens": 8, "messages": MESSAGES, "stream": True}),
        ("/v1/responses", {"model": "o4-mini", "input": "hi", "stream": True}),
        ("/v1beta/models/gemini-x:streamGenerateContent?alt=sse", {"contents": []}),
    ],
    ids=["openai-json", "openai-sse", "openai-malformed-sse", "openai-10MB-json", "anthropic-sse",
         "responses-sse", "gemini-sse"],  # fmt: skip
)
def test_the_application_receives_byte_for_byte_what_the_server_sent(meter, providers, exporter, module, path,
                                                                     body):  # fmt: skip
    plain, hooked = _with_and_without(meter, _raw_post(module, providers.url + path, body))
    assert plain[0] == "body" and hooked == plain
    assert hooked[1] == providers.sent[-1]
    assert len(inference_spans(exporter)) == 1  # and it was measured


def test_a_gzip_body_is_decoded_for_the_application_and_read_for_usage(meter, providers, exporter):
    providers.usage = Usage(input=77, output=7, cache_read=0, reasoning=0)

    def fetch():
        with httpx2.Client() as client:
            response = client.post(providers.url + "/v1/chat/completions", json=dict(CHAT, model="gpt-4o-gzip"))
            assert response.headers["content-encoding"] == "gzip"
            return response.content

    plain, hooked = _with_and_without(meter, fetch)
    assert hooked == plain and hooked[1] == providers.sent[-1]
    (span,) = inference_spans(exporter)
    assert (span.attributes["gen_ai.usage.input_tokens"], span.attributes["gen_ai.usage.output_tokens"]) == (77, 7)


@pytest.mark.parametrize("http_spans", [True, False], ids=["http-spans", "genai-only"])
@pytest.mark.parametrize("module", [httpx, httpx2], ids=["httpx", "httpx2"])
@pytest.mark.parametrize("body", [dict(STREAM, model="gpt-4o-truncated"), dict(CHAT, model="gpt-4o-truncated")],
                         ids=["sse-cut", "json-cut"])  # fmt: skip
def test_a_broken_stream_raises_the_same_exception_as_without_spanmeter(meter, providers, exporter, module, body,
                                                                       http_spans):  # fmt: skip
    def read_all():
        with module.Client() as client:
            return client.post(providers.url + "/v1/chat/completions", json=body).content

    plain, hooked = _with_and_without(meter, read_all, http_spans)
    assert plain[0] == "raised" and plain[1] is module.RemoteProtocolError
    assert hooked == plain
    (span,) = inference_spans(exporter)
    assert span.attributes["error.type"] == "RemoteProtocolError"


def test_a_broken_stream_reaches_async_code_and_the_sdk_unchanged(meter, providers, exporter, scrape):
    def async_read():
        async def main():
            async with httpx2.AsyncClient() as client:
                async with client.stream("POST", providers.url + "/v1/chat/completions",
                                         json=dict(STREAM, model="gpt-4o-truncated")) as response:  # fmt: skip
                    return b"".join([chunk async for chunk in response.aiter_bytes()])

        return asyncio.run(main())

    def sdk_read():
        client = openai.OpenAI(base_url=providers.url + "/v1", api_key="test", max_retries=0)
        return [c for c in client.chat.completions.create(model="gpt-4o-truncated", messages=MESSAGES, stream=True)]

    for fn in (async_read, sdk_read):
        plain, hooked = _with_and_without(meter, fn)
        assert plain[0] == "raised" and hooked == plain
    assert scrape().value("gen_ai_client_inference_duration_seconds_count", gen_ai_request_model="gpt-4o-truncated",
                          error_type="RemoteProtocolError") == 2  # fmt: skip


@pytest.mark.parametrize("http_spans", [True, False], ids=["http-spans", "genai-only"])
def test_a_request_that_gets_no_response_ends_its_span_with_the_failure(meter, exporter, http_spans):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def post():
        with httpx2.Client() as client:
            return client.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=CHAT)

    plain, hooked = _with_and_without(meter, post, http_spans)
    assert plain[1] is httpx2.ConnectError and hooked == plain
    (span,) = inference_spans(exporter)
    assert span.attributes["error.type"] == "ConnectError"


def test_malformed_sse_events_are_skipped_and_counted_and_usage_still_read(meter, providers, scrape):
    providers.usage = Usage(input=11, output=3, cache_read=0, reasoning=0)
    handle = spanmeter.httpx.instrument(meter)
    try:
        with httpx2.Client() as client:
            with client.stream("POST", providers.url + "/v1/chat/completions",
                               json=dict(STREAM, model="gpt-4o-malformed")) as response:  # fmt: skip
                lines = list(response.iter_lines())
    finally:
        handle.uninstrument()
    assert "data: {not json" in lines  # the application got the garbage as sent
    s = scrape()
    assert s.value("agent_token_usage_total", model_id="gpt-4o-malformed", token_type="input") == 11
    assert s.value("spanmeter_dropped_values_total", field="llm_response", reason="malformed_event") == 2
    assert s.value("spanmeter_processor_errors_total") == 0


def test_a_10_mb_body_passes_whole_and_its_usage_is_read_from_the_tail(meter, providers, exporter):
    providers.usage = Usage(input=123456, output=65432, cache_read=1000, reasoning=0)
    handle = spanmeter.httpx.instrument(meter)
    try:
        client = openai.OpenAI(base_url=providers.url + "/v1", api_key="test", max_retries=0)
        reply = client.chat.completions.create(model="gpt-4o-big", messages=MESSAGES)
    finally:
        handle.uninstrument()
    assert len(reply.choices[0].message.content) == BIG_BODY_BYTES
    (span,) = inference_spans(exporter)
    assert span.attributes["gen_ai.usage.input_tokens"] == 123456
    assert span.attributes["gen_ai.usage.output_tokens"] == 65432
    assert span.attributes["gen_ai.usage.cache_read.input_tokens"] == 1000
    assert span.attributes["gen_ai.response.model"] == "gpt-4o-big-2025-01-01"


def test_a_request_body_larger_than_the_parse_limit_is_still_recognised(meter, providers, exporter):
    big = {"messages": [{"role": "user", "content": "y" * 300_000}], "model": "gpt-4o", "stream": False}
    handle = spanmeter.httpx.instrument(meter)
    try:
        with httpx2.Client() as client:
            client.post(providers.url + "/v1/chat/completions", content=json.dumps(big).encode())
    finally:
        handle.uninstrument()
    (span,) = inference_spans(exporter)
    assert span.attributes["gen_ai.request.model"] == "gpt-4o"
    assert span.attributes["gen_ai.request.stream"] is False


def test_a_stream_the_application_closes_early_ends_the_span_and_the_client_goes_on(meter, providers, exporter,
                                                                                   scrape):  # fmt: skip
    handle = spanmeter.httpx.instrument(meter)
    try:
        client = openai.OpenAI(base_url=providers.url + "/v1", api_key="test", max_retries=0)
        stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True,
                                                stream_options={"include_usage": True})  # fmt: skip
        first = next(iter(stream))
        stream.close()
        after = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # same client, goes on
    finally:
        handle.uninstrument()
    assert first.choices[0].delta.role == "assistant" and after.usage.prompt_tokens == 1200
    closed, completed = inference_spans(exporter)
    assert "gen_ai.usage.input_tokens" not in closed.attributes  # usage had not arrived yet
    assert "error.type" not in closed.attributes
    assert completed.attributes["gen_ai.usage.input_tokens"] == 1200
    s = scrape()
    assert s.value("model_inference_calls_total", model_id="gpt-4o") == 2
    assert s.value("spanmeter_dropped_values_total", field="llm_response", reason="closed_early") == 1


def test_a_response_the_application_never_reads_nor_closes_ends_when_collected(meter, providers, exporter, scrape):
    handle = spanmeter.httpx.instrument(meter)
    try:
        client = httpx2.Client()
        request = client.build_request("POST", providers.url + "/v1/chat/completions", json=STREAM)
        response = client.send(request, stream=True)
        assert response.status_code == 200
        assert inference_spans(exporter) == []  # still open: the body is unread
        del response
        gc.collect()
    finally:
        handle.uninstrument()
    (span,) = inference_spans(exporter)
    assert span.end_time >= span.start_time
    assert scrape().value("spanmeter_dropped_values_total", field="llm_response", reason="abandoned") == 1


def test_a_non_json_body_on_an_llm_path_counts_the_call_without_tokens(meter, providers, exporter, scrape):
    plain, hooked = _with_and_without(
        meter, lambda: httpx2.post(providers.url + "/v1/chat/completions", json=dict(CHAT, model="gpt-4o-notjson")).content
    )
    assert hooked == plain == ("body", providers.sent[-1])
    (span,) = inference_spans(exporter)
    assert "gen_ai.usage.input_tokens" not in span.attributes
    assert scrape().value("spanmeter_dropped_values_total", field="llm_response", reason="not_json") == 1


# --- compressed bodies: read from what httpx decodes for the application ------------------
@pytest.mark.parametrize("http_spans", [True, False], ids=["http-spans", "genai-only"])
def test_a_gzip_body_through_the_sdks_sync_and_async_counts_the_servers_tokens(meter, providers, exporter, scrape,
                                                                             http_spans):  # fmt: skip
    providers.usage = Usage(input=901, output=87, cache_read=300, reasoning=0)

    async def async_call():
        async with openai.AsyncOpenAI(base_url=providers.url + "/v1", api_key="test", max_retries=0) as client:
            return await client.chat.completions.create(model="gpt-4o-gzip", messages=MESSAGES)

    handle = spanmeter.httpx.instrument(meter, http_spans=http_spans)
    try:
        client = openai.OpenAI(base_url=providers.url + "/v1", api_key="test", max_retries=0)
        reply = client.chat.completions.create(model="gpt-4o-gzip", messages=MESSAGES)
        async_reply = asyncio.run(async_call())
        with httpx.Client() as plain:  # httpx 0.x: its decoders return bytes, httpx2's yield them
            body = plain.post(providers.url + "/v1/chat/completions", json=dict(CHAT, model="gpt-4o-gzip")).json()
    finally:
        handle.uninstrument()
    assert reply.choices[0].message.content == async_reply.choices[0].message.content == "Hello, how can I help?"
    assert body["usage"]["prompt_tokens"] == 901
    spans = inference_spans(exporter)
    assert [(s.attributes["gen_ai.usage.input_tokens"], s.attributes["gen_ai.usage.output_tokens"],
             s.attributes["gen_ai.usage.cache_read.input_tokens"]) for s in spans] == [(901, 87, 300)] * 3  # fmt: skip
    assert all(s.attributes["gen_ai.response.model"] == "gpt-4o-gzip-2025-01-01" for s in spans)
    s = scrape()
    assert s.value("agent_token_usage_total", model_id="gpt-4o-gzip", token_type="input") == 3 * 901
    assert s.total("spanmeter_dropped_values_total") == 0


def test_a_gzip_body_the_application_reads_raw_reaches_it_compressed_and_counts_the_call(meter, providers,
                                                                                         exporter, scrape):  # fmt: skip
    def raw():
        with httpx2.Client() as client:
            with client.stream("POST", providers.url + "/v1/chat/completions",
                               json=dict(CHAT, model="gpt-4o-gzip")) as response:  # fmt: skip
                return b"".join(response.iter_raw())

    plain, hooked = _with_and_without(meter, raw)
    assert hooked == plain and gzip.decompress(hooked[1]) == providers.sent[-1]
    (span,) = inference_spans(exporter)
    assert "gen_ai.usage.input_tokens" not in span.attributes  # httpx never decoded it, nor did spanmeter
    s = scrape()
    assert s.value("model_inference_calls_total", model_id="gpt-4o-gzip") == 1
    assert s.value("spanmeter_dropped_values_total", field="llm_response", reason="encoded_body_read_raw") == 1
