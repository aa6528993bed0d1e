"""The wire-format readers (pure, no HTTP): recognition rules, request parsing, provider
usage in GenAI terms, error types, and the bounds on what is inspected."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest

from spanmeter import wire
from spanmeter.wire import DOC_LIMIT, EDGE, STREAM_LIMIT, BodyReader, Matcher, Rule


def read(api, body: bytes, *, content_type="application/json", status=200, encoding="", chunk=None):
    reader = BodyReader(api, status, content_type, encoding)
    step = chunk or max(len(body), 1)
    for i in range(0, len(body), step):
        reader.feed(body[i : i + step])
    return reader.finish()


def sse(*events, event_names=False, nl=b"\n"):
    out = b""
    for name, obj in events:
        data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        out += (b"event: " + name.encode() + nl if event_names else b"") + b"data: " + data + nl + nl
    return out


# --- recognition ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("host", "path", "api", "provider"),
    [
        ("api.openai.com", "/v1/chat/completions", "openai_chat", "openai"),
        ("127.0.0.1", "/v1/chat/completions", "openai_chat", "openai"),
        ("my.openai.azure.com", "/openai/deployments/gpt4/chat/completions", "openai_chat", "azure.ai.openai"),
        ("api.groq.com", "/openai/v1/chat/completions", "openai_chat", "groq"),
        ("localhost", "/v1/completions", "openai_completions", "openai"),
        ("localhost", "/v1/embeddings", "openai_embeddings", "openai"),
        ("api.openai.com", "/v1/responses", "openai_responses", "openai"),
        ("api.anthropic.com", "/v1/messages", "anthropic_messages", "anthropic"),
        ("generativelanguage.googleapis.com", "/v1beta/models/gemini-2.5-pro:generateContent", "gemini",
         "gcp.gemini"),
        ("europe-west4-aiplatform.googleapis.com",
         "/v1/projects/p/locations/l/publishers/google/models/gemini-2.5-pro:streamGenerateContent", "gemini",
         "gcp.vertex_ai"),
    ],
)  # fmt: skip
def test_built_in_rules_recognise_provider_paths_on_any_host(host, path, api, provider):
    rule = Matcher().match(host, path)
    assert rule.api == api
    request = wire.parse_request(rule, host, path, b'{"model": "m", "contents": []}')
    assert request.provider == provider


@pytest.mark.parametrize("path", ["/v1/messages/count_tokens", "/v1/files", "/v1/models", "/v1/chat/completions/x",
                                  "/health", "/v1/messages/batches"])  # fmt: skip
def test_other_paths_are_not_model_calls(path):
    assert Matcher().match("api.openai.com", path) is None


def test_user_rules_come_first_and_can_require_a_host():
    vllm = Rule(r"/v1/chat/completions$", "openai_chat", provider="vllm", host=r"^gpu-\d+$")
    matcher = Matcher([vllm, Rule(r"/generate$", "openai_chat", provider="tgi")])
    assert matcher.match("gpu-3", "/v1/chat/completions") is vllm
    assert matcher.match("api.openai.com", "/v1/chat/completions").provider is None  # built-in
    assert matcher.match("x", "/generate").provider == "tgi"
    assert Matcher([vllm], defaults=False).match("api.openai.com", "/v1/chat/completions") is None


def test_the_body_confirms_or_rules_out_a_call():
    rule = Matcher().match("h", "/v1/chat/completions")
    assert wire.parse_request(rule, "h", "/v1/chat/completions", b"not json") is None
    assert wire.parse_request(rule, "h", "/v1/chat/completions", b"[1, 2]") is None
    assert wire.parse_request(rule, "h", "/v1/chat/completions", None) is None  # unreadable upload
    req = wire.parse_request(rule, "h", "/v1/chat/completions", b'{"model": "gpt-4o", "stream": true}')
    assert (req.model, req.stream, req.operation) == ("gpt-4o", True, "chat")


def test_a_request_over_the_parse_limit_is_searched_at_its_edges_ignoring_quoted_text():
    rule = Matcher().match("h", "/v1/chat/completions")
    content = 'he said \\"model\\": \\"fake\\" and \\"stream\\": true ' + "z" * DOC_LIMIT
    body = json.dumps({"messages": [{"role": "user", "content": content}], "model": "gpt-4o",
                       "stream": False}).encode()  # fmt: skip
    assert len(body) > DOC_LIMIT
    req = wire.parse_request(rule, "h", "/v1/chat/completions", body)
    assert (req.model, req.stream) == ("gpt-4o", False)


# --- usage in GenAI terms -------------------------------------------------------------------
def test_openai_prompt_tokens_include_cached_and_completion_includes_reasoning():
    body = {"model": "gpt-4o-2025", "id": "c1", "choices": [{"finish_reason": "length"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 40, "prompt_tokens_details": {"cached_tokens": 30},
                      "completion_tokens_details": {"reasoning_tokens": 25}}}  # fmt: skip
    r = read("openai_chat", json.dumps(body).encode())
    assert (r.input_tokens, r.output_tokens, r.cache_read_tokens, r.reasoning_tokens) == (100, 40, 30, 25)
    assert (r.response_model, r.response_id, r.finish_reasons) == ("gpt-4o-2025", "c1", ["length"])


def test_anthropic_input_tokens_get_cache_reads_and_writes_added_in_json_and_stream():
    usage = {"input_tokens": 10, "output_tokens": 1, "cache_read_input_tokens": 200, "cache_creation_input_tokens": 50}
    r = read("anthropic_messages", json.dumps({"model": "c", "usage": dict(usage, output_tokens=7),
                                               "stop_reason": "end_turn"}).encode())  # fmt: skip
    assert (r.input_tokens, r.output_tokens, r.cache_read_tokens, r.cache_write_tokens) == (260, 7, 200, 50)
    stream = sse(("message_start", {"type": "message_start", "message": {"model": "c", "id": "m", "usage": usage}}),
                 ("content_block_delta", {"type": "content_block_delta", "delta": {"text": "usage"}}),
                 ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "max_tokens"},
                                    "usage": {"output_tokens": 99}}),
                 ("message_stop", {"type": "message_stop"}), event_names=True)  # fmt: skip
    r = read("anthropic_messages", stream, content_type="text/event-stream")
    assert (r.input_tokens, r.output_tokens, r.finish_reasons, r.complete) == (260, 99, ["max_tokens"], True)


def test_gemini_output_includes_thoughts_and_input_the_tool_use_prompt():
    body = {"modelVersion": "g-001", "candidates": [{"finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 100, "toolUsePromptTokenCount": 5, "candidatesTokenCount": 20,
                              "thoughtsTokenCount": 8, "cachedContentTokenCount": 40}}  # fmt: skip
    r = read("gemini", json.dumps(body).encode())
    assert (r.input_tokens, r.output_tokens, r.reasoning_tokens, r.cache_read_tokens) == (105, 28, 8, 40)


_CHUNK = {"model": "m", "id": "x", "choices": [{"delta": {"content": "hi"}, "finish_reason": None}], "usage": None}
EVENTS = (("", _CHUNK), ("", dict(_CHUNK, choices=[{"delta": {}, "finish_reason": "stop"}])),
          ("", dict(_CHUNK, choices=[], usage={"prompt_tokens": 9, "completion_tokens": 4})), ("", b"[DONE]"))


def test_an_sse_stream_reads_the_same_whatever_the_chunk_boundaries():
    body = sse(*EVENTS, nl=b"\r\n")
    whole = read("openai_chat", body, content_type="text/event-stream")
    for step in (1, 2, 7, 64):
        r = read("openai_chat", body, content_type="text/event-stream", chunk=step)
        assert (r.input_tokens, r.output_tokens, r.finish_reasons, r.complete, r.response_model) == (
            whole.input_tokens, whole.output_tokens, whole.finish_reasons, whole.complete, whole.response_model)
    # one event per chunk (most servers; a shorter path in the reader), LF and CRLF
    for nl in (b"\n", b"\r\n"):
        events = [e + nl + nl for e in sse(*EVENTS, nl=nl).split(nl + nl) if e]
        reader = BodyReader("openai_chat", 200, "text/event-stream")
        for event in events:
            reader.feed(event)
        r = reader.finish()
        assert (r.input_tokens, r.output_tokens, r.finish_reasons, r.complete, r.response_model) == (
            9, 4, ["stop"], True, "m")
    assert (whole.input_tokens, whole.output_tokens, whole.finish_reasons, whole.complete) == (9, 4, ["stop"], True)


def test_gzip_and_deflate_bodies_are_inflated_and_corrupt_ones_reported():
    body = json.dumps({"usage": {"prompt_tokens": 5, "completion_tokens": 2}}).encode()
    assert read("openai_chat", gzip.compress(body), encoding="gzip", chunk=3).input_tokens == 5
    assert read("openai_chat", zlib.compress(body), encoding="deflate").input_tokens == 5
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert read("openai_chat", raw.compress(body) + raw.flush(), encoding="deflate").input_tokens == 5
    corrupt = bytearray(gzip.compress(body))
    corrupt[12:20] = b"\xff" * 8
    r = read("openai_chat", bytes(corrupt), encoding="gzip")
    assert r.input_tokens is None and (wire.FIELD_RESPONSE, "bad_encoding") in r.problems
    assert ("llm_response", "unsupported_encoding") in read("openai_chat", body, encoding="br").problems


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (429, {"error": {"type": "requests", "code": "rate_limit_exceeded", "message": "slow down"}},
         "rate_limit_exceeded"),
        (429, {"type": "error", "error": {"type": "rate_limit_error", "message": "x"}}, "rate_limit_error"),
        (529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "overloaded_error"),
        (400, {"type": "error", "error": {"type": "invalid_request_error",
                                          "message": "prompt is too long: 210000 tokens > 200000 maximum"}},
         "context_length_exceeded"),
        (400, {"error": {"code": 400, "status": "INVALID_ARGUMENT",
                         "message": "The input token count exceeds the maximum number of tokens allowed"}},
         "context_length_exceeded"),
        (429, {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota"}}, "RESOURCE_EXHAUSTED"),
        (503, {"error": {"code": "a code with spaces and a user id 42", "message": "x"}}, "503"),
        (502, "<html>bad gateway</html>", "502"),
        (200, {"choices": []}, None),
    ],
)  # fmt: skip
def test_error_type_comes_from_the_body_else_the_status(status, body, expected):
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    assert read("openai_chat", raw, status=status).error_type == expected


# --- bounds -----------------------------------------------------------------------------------
def test_a_large_json_body_keeps_only_its_edges_and_still_reads_model_and_usage():
    body = json.dumps({"id": "c9", "model": "gpt-4o", "choices": [{"message": {"content": "x" * 5_000_000},
                                                                   "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 7, "completion_tokens": 3,
                                 "prompt_tokens_details": {"cached_tokens": 2}}}).encode()  # fmt: skip
    reader = BodyReader("openai_chat", 200, "application/json")
    kept = 0
    for i in range(0, len(body), 65536):
        reader.feed(body[i : i + 65536])
        kept = max(kept, len(reader._doc.head) + reader._doc.tail_len)
    assert kept <= 2 * EDGE + 65536  # never the whole body
    r = reader.finish()
    assert (r.input_tokens, r.output_tokens, r.cache_read_tokens) == (7, 3, 2)
    assert (r.response_model, r.response_id, r.finish_reasons) == ("gpt-4o", "c9", ["stop"])


@pytest.mark.parametrize("api", ["openai_chat", "anthropic_messages", "gemini"])
def test_a_large_body_reads_the_last_real_usage_and_reason_not_quoted_text_nor_nulls(api):
    # Its tail is searched from the end: a null reason after the real one is no reason,
    # and keys quoted inside the content are no keys.
    decoy = 'he wrote \\"usage\\": {\\"prompt_tokens\\": 999} and \\"finish_reason\\": \\"decoy\\" '
    usage_key, reason_key, usage = {
        "openai_chat": ("usage", "finish_reason", {"prompt_tokens": 7, "completion_tokens": 3}),
        "anthropic_messages": ("usage", "stop_reason", {"input_tokens": 7, "output_tokens": 3}),
        "gemini": ("usageMetadata", "finishReason", {"promptTokenCount": 7, "candidatesTokenCount": 3}),
    }[api]
    text = ('{"id": "c9", "model": "m1", "content": "' + "x" * (DOC_LIMIT + 10) + decoy + '", '
            f'"{reason_key}": "stop", "other": {{"{reason_key}": null}}, "{usage_key}": {json.dumps(usage)}}}')
    body = text.encode()
    assert len(body) > DOC_LIMIT and json.loads(body)
    r = read(api, body, chunk=4096)
    assert (r.input_tokens, r.output_tokens, r.finish_reasons) == (7, 3, ["stop"])


def test_a_json_body_larger_than_the_stream_limit_is_followed_to_its_usage_at_the_end():
    # issue 13: a 210 MB body lost its usage; a document's edges cost no parsing to keep
    head = b'{"id": "c9", "model": "m1", "choices": [{"message": {"content": "'
    tail = b'"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}'
    filler = b"x" * (1 << 20)
    reader = BodyReader("openai_chat", 200, "application/json")
    reader.feed(head)
    for _ in range(STREAM_LIMIT // len(filler) + 2):
        reader.feed(filler)
    reader.feed(tail)
    assert reader.seen > STREAM_LIMIT
    r = reader.finish()
    assert (r.input_tokens, r.output_tokens, r.response_model, r.finish_reasons) == (7, 3, "m1", ["stop"])
    assert r.problems == []


def test_scanning_stops_at_the_stream_limit_and_an_overlong_line_is_dropped():
    reader = BodyReader("openai_chat", 200, "text/event-stream")
    reader.feed(b"data: " + b"x" * (DOC_LIMIT + 10))
    reader.feed(b"\n\n" + sse(("", {"usage": {"prompt_tokens": 4}})))
    assert reader.finish().input_tokens == 4
    assert ("llm_response", "sse_line_too_long") in reader.result.problems
    reader = BodyReader("openai_chat", 200, "text/event-stream")
    block = b": keep-alive\n" * 4096
    while reader.active:
        reader.feed(block)
    assert reader.seen > STREAM_LIMIT and ("llm_response", "inspection_limit") in reader.result.problems


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16-le", "utf-16", "utf-32"])
def test_json_bodies_in_every_encoding_json_allows_are_read(encoding):
    # the fast decoder takes UTF-8 documents starting "{"; a BOM or a UTF-16/32 body still reads
    body = {"model": "gpt-4o-2025", "id": "c1", "choices": [{"finish_reason": "stop", "message": {"content": "é"}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 4}}  # fmt: skip
    r = read("openai_chat", json.dumps(body, ensure_ascii=False).encode(encoding))
    assert (r.input_tokens, r.output_tokens, r.response_model, r.finish_reasons) == (9, 4, "gpt-4o-2025", ["stop"])


def test_content_deltas_are_not_json_decoded(monkeypatch):
    decoded = []
    real = wire._loads
    monkeypatch.setattr(wire, "_loads", lambda data: decoded.append(data) or real(data))
    delta = {"model": "m", "choices": [{"delta": {"content": "x"}, "finish_reason": None}], "usage": None}
    body = sse(*[("", delta)] * 50, ("", dict(delta, choices=[], usage={"prompt_tokens": 1})), ("", b"[DONE]"))
    assert read("openai_chat", body, content_type="text/event-stream", chunk=100).input_tokens == 1
    assert len(decoded) == 2  # the first event (model, id) and the usage chunk
