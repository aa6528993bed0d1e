"""LLM wire formats: which HTTP requests are model calls, and what their responses say.

Pure functions and small bounded readers, no HTTP client and no SDK: the httpx hooks
(:mod:`spanmeter.httpx`) feed them bytes. What they understand:

- requests, by method, host and path, confirmed by the JSON body: OpenAI chat
  completions, completions, embeddings and responses (and every OpenAI-compatible
  server on any host: vLLM, Ollama, llama.cpp, LiteLLM, gateways), Anthropic
  messages, Gemini ``generateContent`` / ``streamGenerateContent``. :class:`Rule`
  lets users add their own (tried before the built-in ones);
- responses: JSON bodies, SSE streams (OpenAI ``stream_options.include_usage`` final
  chunk, Responses API ``response.completed``, Anthropic ``message_start`` /
  ``message_delta``, Gemini ``alt=sse``), Gemini's streamed JSON array, and provider
  error bodies, gzip/deflate-encoded or not.

Usage keeps the GenAI meaning: input includes cache reads and writes, output includes
reasoning. Anthropic's ``input_tokens`` excludes its cache reads and writes, so they
are added; OpenAI's ``prompt_tokens`` already includes ``cached_tokens`` and its
``completion_tokens`` the reasoning tokens; Gemini's ``candidatesTokenCount`` excludes
``thoughtsTokenCount``, which is added (and ``toolUsePromptTokenCount`` to input).

Bounds (what "bounded inspection" means here):

- a request body is parsed whole up to :data:`DOC_LIMIT` bytes; a larger one is only
  searched for ``"model"`` and ``"stream"`` in its first and last :data:`EDGE` bytes;
- a JSON response body (and one SSE data line) is kept whole up to :data:`DOC_LIMIT`
  bytes; past that only its first and last :data:`EDGE` bytes are kept, and the model,
  id and the ``usage`` object are taken from them (providers put usage at the end);
- an SSE stream is scanned line by line (a pending line is held up to
  :data:`DOC_LIMIT`), only the few events that carry model, usage, finish reasons or
  errors are JSON-decoded, and scanning stops after :data:`STREAM_LIMIT` bytes (a JSON
  document is followed to its end whatever its size: keeping its edges costs no parsing);
- compressed bodies are inflated :data:`EDGE` bytes at a time (the httpx hooks give the
  reader what httpx decoded for the application instead: one inflation).

A reader never raises on what the server sent: what it cannot use is reported in
:attr:`Result.problems` as ``(field, reason)`` pairs for ``spanmeter_dropped_values_total``.
"""

from __future__ import annotations

import functools
import json
import re
import zlib
from dataclasses import dataclass, field

DOC_LIMIT = 128 * 1024
EDGE = 64 * 1024
STREAM_LIMIT = 16 * 1024 * 1024

# Wire formats.
OPENAI_CHAT = "openai_chat"
OPENAI_COMPLETIONS = "openai_completions"
OPENAI_EMBEDDINGS = "openai_embeddings"
OPENAI_RESPONSES = "openai_responses"
ANTHROPIC_MESSAGES = "anthropic_messages"
GEMINI = "gemini"
APIS = (OPENAI_CHAT, OPENAI_COMPLETIONS, OPENAI_EMBEDDINGS, OPENAI_RESPONSES, ANTHROPIC_MESSAGES, GEMINI)

#: ``gen_ai.operation.name`` of each wire format.
OPERATIONS = {
    OPENAI_CHAT: "chat",
    OPENAI_COMPLETIONS: "text_completion",
    OPENAI_EMBEDDINGS: "embeddings",
    OPENAI_RESPONSES: "chat",
    ANTHROPIC_MESSAGES: "chat",
    GEMINI: "generate_content",
}

#: Problems reported by readers: field of ``spanmeter_dropped_values_total``.
FIELD_RESPONSE = "llm_response"
FIELD_REQUEST = "llm_request"


@dataclass(frozen=True)
class Rule:
    """How to recognise one kind of LLM request.

    ``path``: a regular expression searched in the URL path (anchor it with ``$``);
    ``api``: the wire format (one of :data:`APIS`); ``provider``: the
    ``gen_ai.provider.name`` to report, or None to name it from the host (OpenAI
    wire format on an unknown host: ``openai``, as the OpenAI SDK instrumentations do);
    ``host``: a regular expression the host must match (None: any host).
    """

    path: str
    api: str
    provider: str | None = None
    host: str | None = None

    def __post_init__(self):
        if self.api not in APIS:
            raise ValueError(f"Rule.api must be one of {APIS}, got {self.api!r}")
        for name in ("path", "host"):
            pattern = getattr(self, name)
            if pattern is None:
                continue
            try:
                re.compile(pattern)
            except (re.error, TypeError) as exc:
                raise ValueError(f"Rule.{name} is not a regular expression: {pattern!r} ({exc})") from None


DEFAULT_RULES = (
    Rule(r"/chat/completions/?$", OPENAI_CHAT),
    Rule(r"/responses/?$", OPENAI_RESPONSES),
    Rule(r"/embeddings/?$", OPENAI_EMBEDDINGS),
    Rule(r"/completions/?$", OPENAI_COMPLETIONS),
    Rule(r"/messages/?$", ANTHROPIC_MESSAGES),
    Rule(r"/models/[^/:]+:(?:stream)?[gG]enerateContent$", GEMINI),
)

#: Well-known hosts -> ``gen_ai.provider.name`` (GenAI conventions' well-known values).
HOST_PROVIDERS = (
    (re.compile(r"(^|\.)api\.openai\.com$"), "openai"),
    (re.compile(r"\.openai\.azure\.com$"), "azure.ai.openai"),
    (re.compile(r"(^|\.)api\.anthropic\.com$"), "anthropic"),
    (re.compile(r"(^|\.)generativelanguage\.googleapis\.com$"), "gcp.gemini"),
    (re.compile(r"aiplatform\.googleapis\.com$"), "gcp.vertex_ai"),
    (re.compile(r"(^|\.)api\.deepseek\.com$"), "deepseek"),
    (re.compile(r"(^|\.)api\.groq\.com$"), "groq"),
    (re.compile(r"(^|\.)api\.mistral\.ai$"), "mistral_ai"),
    (re.compile(r"(^|\.)api\.x\.ai$"), "x_ai"),
    (re.compile(r"(^|\.)api\.perplexity\.ai$"), "perplexity"),
)
_API_PROVIDER = {ANTHROPIC_MESSAGES: "anthropic", GEMINI: "gcp.gemini"}


@functools.lru_cache(maxsize=1024)  # ten regular expressions per call otherwise; hosts are few
def provider_for(host: str, api: str) -> str:
    """``gen_ai.provider.name`` of a request to ``host`` in wire format ``api``."""
    for pattern, name in HOST_PROVIDERS:
        if pattern.search(host):
            return name
    return _API_PROVIDER.get(api, "openai")


class Matcher:
    """Finds the first rule matching a (host, path); user rules before the built-in ones.

    The common case, a request that is no model call, costs one ``str.endswith``.
    """

    def __init__(self, rules=(), *, defaults: bool = True):
        user = tuple(rules)
        for rule in user:
            if not isinstance(rule, Rule):
                raise ValueError(f"rules must be spanmeter.wire.Rule objects, got {rule!r}")
        rules = user + (DEFAULT_RULES if defaults else ())
        self._rules = tuple((re.compile(r.path), re.compile(r.host) if r.host else None, r) for r in rules)
        # User rules may match any path; the built-in ones only paths ending in these.
        self._any_path = bool(user)
        self._suffixes = ("completions", "completions/", "responses", "responses/", "embeddings",
                          "embeddings/", "messages", "messages/", "enerateContent")  # fmt: skip

    def match(self, host: str, path: str) -> Rule | None:
        if not self._any_path and not path.endswith(self._suffixes):
            return None
        for path_re, host_re, rule in self._rules:
            if path_re.search(path) and (host_re is None or host_re.search(host)):
                return rule
        return None


_decode_json = json.JSONDecoder().decode


def _loads(data: bytes):
    """``json.loads`` of a document; one starting ``{`` and then no NUL (UTF-8, as JSON on the
    wire is) skips its encoding sniffing: 0.7 us of 2.7 per small document."""
    if data[:1] == b"{" and data[1:2] != b"\x00":
        return _decode_json(data.decode("utf-8", "surrogatepass"))
    return json.loads(data)


# --- requests ----------------------------------------------------------------------------
@dataclass(slots=True)
class Request:
    """What the request says: the span's request attributes."""

    api: str
    operation: str
    provider: str
    model: str | None
    stream: bool


_MODEL_RE = re.compile(rb'(?<!\\)"model"\s*:\s*"([^"\\]{1,256})"')
_STREAM_RE = re.compile(rb'(?<!\\)"stream"\s*:\s*(true|false)')
_GEMINI_MODEL_RE = re.compile(r"/models/([^/:]+):")


def parse_request(rule: Rule, host: str, path: str, body: bytes | None) -> Request | None:
    """The request of an LLM call, or None when the body shows it is not one.

    ``body`` is the request body, or None when it cannot be read without consuming it.
    A body that is not a JSON object rules the call out (a path that merely looks like
    an LLM API); a body larger than :data:`DOC_LIMIT` is searched, not parsed.
    """
    api = rule.api
    model = None
    stream = False
    if api == GEMINI:
        m = _GEMINI_MODEL_RE.search(path)
        model = m.group(1) if m else None
        stream = "streamGenerateContent" in path
        if body is not None and len(body) <= DOC_LIMIT:
            try:
                obj = _loads(body)
            except ValueError:
                return None
            if not isinstance(obj, dict):
                return None
    elif body is None:
        return None
    elif len(body) <= DOC_LIMIT:
        try:
            obj = _loads(body)
        except ValueError:
            return None
        if not isinstance(obj, dict):
            return None
        model = obj.get("model")
        if not isinstance(model, str):
            model = None
        stream = obj.get("stream") is True
    else:
        found_model = found_stream = None
        for part in (body[-EDGE:], body[:EDGE]):
            found_model = found_model or _MODEL_RE.search(part)
            found_stream = found_stream or _STREAM_RE.search(part)
        if found_model:
            model = found_model.group(1).decode("utf-8", "replace")
        stream = bool(found_stream and found_stream.group(1) == b"true")
    provider = rule.provider or provider_for(host, api)
    return Request(api, OPERATIONS[api], provider, model, stream)


# --- responses ---------------------------------------------------------------------------
@dataclass(slots=True)
class Result:
    """What a response said, in GenAI terms (None where it did not say)."""

    response_model: str | None = None
    response_id: str | None = None
    finish_reasons: list = field(default_factory=list)
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    error_type: str | None = None
    complete: bool = False  # a stream's terminal event was seen
    problems: list = field(default_factory=list)  # (field, reason) for the drop counter


def _int(value) -> int | None:
    return value if value.__class__ is int and value >= 0 else None


def _add(*values) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _str(value, limit: int = 256) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


_CODE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")
_CONTEXT_HINTS = ("prompt is too long", "context length", "context window", "maximum context",
                  "exceeds the maximum number of tokens", "too many tokens")  # fmt: skip


def error_type_from(status: int | None, body) -> str | None:
    """``error.type`` of a failed call from its HTTP status and provider error body.

    The provider's code or type when it is a short identifier (``rate_limit_exceeded``,
    ``rate_limit_error``, ``overloaded_error``, ``RESOURCE_EXHAUSTED``...);
    ``context_length_exceeded`` when the message says the prompt is too long; else the
    HTTP status as text (the HTTP conventions' ``error.type``). None for a success.
    """
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = error.get("message")
        if isinstance(message, str):
            lowered = message[:2000].lower()
            if any(h in lowered for h in _CONTEXT_HINTS):
                return "context_length_exceeded"
        for key in ("code", "type", "status"):
            value = error.get(key)
            if isinstance(value, str) and _CODE_RE.match(value):
                return value
    elif isinstance(error, str) and _CODE_RE.match(error):
        return error
    if status is not None and status >= 400:
        return str(status)
    if error is not None:
        return "_OTHER"
    return None


def _openai_usage(result: Result, usage) -> None:
    if not isinstance(usage, dict):
        return
    # Chat/completions: prompt/completion_tokens; Responses API: input/output_tokens.
    i = _int(usage.get("prompt_tokens", usage.get("input_tokens")))
    o = _int(usage.get("completion_tokens", usage.get("output_tokens")))
    details_in = usage.get("prompt_tokens_details") or usage.get("input_tokens_details")
    details_out = usage.get("completion_tokens_details") or usage.get("output_tokens_details")
    if i is not None:
        result.input_tokens = i  # includes cached_tokens already
    if o is not None:
        result.output_tokens = o  # includes reasoning_tokens already
    if isinstance(details_in, dict) and _int(details_in.get("cached_tokens")) is not None:
        result.cache_read_tokens = details_in["cached_tokens"]
    if isinstance(details_out, dict) and _int(details_out.get("reasoning_tokens")) is not None:
        result.reasoning_tokens = details_out["reasoning_tokens"]


def _anthropic_usage(result: Result, usage) -> None:
    if not isinstance(usage, dict):
        return
    base = _int(usage.get("input_tokens"))
    cr = _int(usage.get("cache_read_input_tokens"))
    cw = _int(usage.get("cache_creation_input_tokens"))
    o = _int(usage.get("output_tokens"))
    if cr is not None:
        result.cache_read_tokens = cr
    if cw is not None:
        result.cache_write_tokens = cw
    if base is not None:
        # Anthropic's input_tokens excludes cache reads and writes; GenAI's includes them.
        result.input_tokens = base + (result.cache_read_tokens or 0) + (result.cache_write_tokens or 0)
    if o is not None:
        result.output_tokens = o


def _gemini_usage(result: Result, usage) -> None:
    if not isinstance(usage, dict):
        return
    prompt = _int(usage.get("promptTokenCount"))
    tool_prompt = _int(usage.get("toolUsePromptTokenCount"))
    candidates = _int(usage.get("candidatesTokenCount"))
    thoughts = _int(usage.get("thoughtsTokenCount"))
    cached = _int(usage.get("cachedContentTokenCount"))
    if prompt is not None or tool_prompt is not None:
        result.input_tokens = _add(prompt, tool_prompt)  # promptTokenCount includes cached
    if candidates is not None or thoughts is not None:
        result.output_tokens = _add(candidates, thoughts)  # candidates exclude thoughts
    if thoughts is not None:
        result.reasoning_tokens = thoughts
    if cached is not None:
        result.cache_read_tokens = cached


def _reasons(result: Result, values) -> None:
    for value in values:
        if isinstance(value, str) and value and value not in result.finish_reasons and len(result.finish_reasons) < 16:
            result.finish_reasons.append(value[:64])


def apply_document(result: Result, api: str, obj, status: int | None = None) -> None:
    """Read a whole JSON response (or one decoded SSE event) of wire format ``api``."""
    if isinstance(obj, list):  # Gemini's streamed JSON array: each element is a response
        for item in obj[-4096:]:
            apply_document(result, api, item, status)
        return
    if not isinstance(obj, dict):
        return
    error = error_type_from(status, obj)
    if error is not None and ("error" in obj or (status or 0) >= 400):
        result.error_type = error
    if api == ANTHROPIC_MESSAGES:
        kind = obj.get("type")
        if kind == "message_start":
            obj = obj.get("message") or {}
        elif kind == "message_delta":
            delta = obj.get("delta")
            if isinstance(delta, dict):
                _reasons(result, (delta.get("stop_reason"),))
            _anthropic_usage(result, obj.get("usage"))
            return
        elif kind == "message_stop":
            result.complete = True
            return
        if not isinstance(obj, dict):
            return
        result.response_model = _str(obj.get("model")) or result.response_model
        result.response_id = _str(obj.get("id")) or result.response_id
        _reasons(result, (obj.get("stop_reason"),))
        _anthropic_usage(result, obj.get("usage"))
    elif api == GEMINI:
        result.response_model = _str(obj.get("modelVersion")) or result.response_model
        result.response_id = _str(obj.get("responseId")) or result.response_id
        candidates = obj.get("candidates")
        if isinstance(candidates, list):
            _reasons(result, (c.get("finishReason") for c in candidates[:16] if isinstance(c, dict)))
        _gemini_usage(result, obj.get("usageMetadata"))
    elif api == OPENAI_RESPONSES:
        kind = obj.get("type")
        if isinstance(kind, str) and kind.startswith("response.") and isinstance(obj.get("response"), dict):
            if kind in ("response.completed", "response.incomplete", "response.failed"):
                result.complete = True
            obj = obj["response"]
        result.response_model = _str(obj.get("model")) or result.response_model
        result.response_id = _str(obj.get("id")) or result.response_id
        status_text = obj.get("status")
        if status_text == "incomplete":
            details = obj.get("incomplete_details")
            _reasons(result, (details.get("reason") if isinstance(details, dict) else "incomplete",))
        elif status_text == "completed":
            _reasons(result, ("stop",))
        elif status_text == "failed":
            result.error_type = error_type_from(None, obj) or "_OTHER"
        _openai_usage(result, obj.get("usage"))
    else:  # OpenAI chat, completions, embeddings, and compatible servers
        result.response_model = _str(obj.get("model")) or result.response_model
        result.response_id = _str(obj.get("id")) or result.response_id
        choices = obj.get("choices")
        if isinstance(choices, list):
            _reasons(result, (c.get("finish_reason") for c in choices[:16] if isinstance(c, dict)))
        _openai_usage(result, obj.get("usage"))


# --- bounded readers ---------------------------------------------------------------------
class _Inflater:
    """Content-Encoding gzip/deflate decoder, :data:`EDGE` bytes of output at a time."""

    def __init__(self, encoding: str):
        wbits = 16 + zlib.MAX_WBITS if encoding in ("gzip", "x-gzip") else zlib.MAX_WBITS
        self._d = zlib.decompressobj(wbits)
        self._deflate_raw = encoding == "deflate"

    def __call__(self, data: bytes):
        try:
            out = self._d.decompress(data, EDGE)
        except zlib.error:
            if not self._deflate_raw:
                raise
            # "deflate" is sometimes sent raw, without the zlib header.
            self._d = zlib.decompressobj(-zlib.MAX_WBITS)
            self._deflate_raw = False
            out = self._d.decompress(data, EDGE)
        yield out
        while self._d.unconsumed_tail:
            yield self._d.decompress(self._d.unconsumed_tail, EDGE)


class _Edges:
    """The first and last :data:`EDGE` bytes of a document, or all of it up to :data:`DOC_LIMIT`."""

    __slots__ = ("head", "tail", "tail_len", "size")

    def __init__(self):
        self.head = bytearray()
        self.tail: list = []
        self.tail_len = 0
        self.size = 0

    def add(self, data) -> None:
        self.size += len(data)
        if not self.tail:
            room = DOC_LIMIT - len(self.head)
            if len(data) <= room:
                self.head += data
                return
            # Past the limit: keep EDGE bytes of head; the rest starts the tail.
            self.head += data[:room]
            data = data[room:]
            self.tail.append(bytes(self.head[EDGE:]))
            self.tail_len = len(self.head) - EDGE
            del self.head[EDGE:]
        self.tail.append(bytes(data))
        self.tail_len += len(data)
        while self.tail_len - len(self.tail[0]) >= EDGE:
            self.tail_len -= len(self.tail.pop(0))

    @property
    def whole(self) -> bytes | None:
        return bytes(self.head) if not self.tail else None

    def edges(self) -> tuple[bytes, bytes]:
        return bytes(self.head), b"".join(self.tail)[-EDGE:]


_ID_RE = re.compile(rb'(?<!\\)"(id|responseId)"\s*:\s*"([^"\\]{1,256})"')
_MODEL_VERSION_RE = re.compile(rb'(?<!\\)"modelVersion"\s*:\s*"([^"\\]{1,256})"')


def _balanced_object(data: bytes, start: int) -> bytes | None:
    """The JSON object starting at ``data[start]`` (a ``{``), or None if it is cut."""
    depth = 0
    in_string = escaped = False
    for pos in range(start, len(data)):
        ch = data[pos]
        if in_string:
            if escaped:
                escaped = False
            elif ch == 0x5C:  # backslash
                escaped = True
            elif ch == 0x22:
                in_string = False
        elif ch == 0x22:
            in_string = True
        elif ch == 0x7B:
            depth += 1
        elif ch == 0x7D:
            depth -= 1
            if depth == 0:
                return data[start : pos + 1]
    return None


_REASON_KEYS = (b'"finish_reason"', b'"stop_reason"', b'"finishReason"')
_USAGE_KEYS = (b'"usage"', b'"usageMetadata"')
_STRING_VALUE_RE = re.compile(rb'\s*:\s*"([^"\\]{1,64})"')
_OBJECT_VALUE_RE = re.compile(rb"\s*:\s*\{")


def _last_key(data: bytes, keys, value_re):
    """(key, value match) of the last unescaped ``key`` in ``data`` whose value matches, or None."""
    best = None
    for key in keys:
        end = len(data)
        while True:
            pos = data.rfind(key, 0, end)
            if pos < 0 or (best is not None and pos < best[0]):
                break
            if pos == 0 or data[pos - 1] != 0x5C:  # not inside a string (\")
                m = value_re.match(data, pos + len(key))
                if m is not None:
                    best = (pos, key, m)
                    break
            end = pos
    return None if best is None else best[1:]


def apply_edges(result: Result, api: str, head: bytes, tail: bytes, status: int | None) -> None:
    """Read what a document too large to keep says at its edges (model, id, usage)."""
    wrapper = {}
    m = _MODEL_RE.search(head) or _MODEL_VERSION_RE.search(head)
    if m:
        wrapper["modelVersion" if api == GEMINI else "model"] = m.group(1).decode("utf-8", "replace")
    m = _ID_RE.search(head)
    if m:
        wrapper[m.group(1).decode()] = m.group(2).decode("utf-8", "replace")
    # The last reason and usage object, searched from the end: scanning the whole tail
    # forwards cost ~1 ms per large body (benchmarks/httpx_overhead.py, gzip row).
    found = _last_key(tail, _REASON_KEYS, _STRING_VALUE_RE)
    reasons = [found[1].group(1).decode("utf-8", "replace")] if found else []
    found = _last_key(tail, _USAGE_KEYS, _OBJECT_VALUE_RE)
    if found is not None:
        key, m = found
        obj = _balanced_object(tail, m.end() - 1)
        if obj is not None:
            try:
                wrapper[key.strip(b'"').decode()] = json.loads(obj)
            except ValueError:
                result.problems.append((FIELD_RESPONSE, "malformed_json"))
    if api == ANTHROPIC_MESSAGES and reasons:
        wrapper["stop_reason"] = reasons[-1]
    elif api == GEMINI and reasons:
        wrapper["candidates"] = [{"finishReason": reasons[-1]}]
    elif reasons:
        wrapper["choices"] = [{"finish_reason": reasons[-1]}]
    if api == OPENAI_RESPONSES and "usage" in wrapper:
        wrapper["status"] = "completed"
    apply_document(result, api, wrapper, status)


_EVENT_ENDS = (b"\n\n", b"\r\n\r\n")
_INTERESTING = re.compile(rb'"(?:usage|usageMetadata|finish_reason|finishReason|error)"\s*:\s*[{"\[]')


def _wanted_test(api: str):
    """Whether a run of whole events may hold something a reader needs (no false negatives).

    Substring tests first: one regular expression with the ``[DONE]`` alternative in it
    took twice as long per chunk (``benchmarks/httpx_overhead.py``, per streamed chunk).
    """
    if api == ANTHROPIC_MESSAGES:
        return lambda data: b"message_" in data or b"error" in data
    if api == OPENAI_RESPONSES:
        return lambda data: (b"response.created" in data or b"response.completed" in data
                             or b"response.incomplete" in data or b"response.failed" in data
                             or b"error" in data)  # fmt: skip
    search = _INTERESTING.search
    return lambda data: b"[DONE]" in data or search(data) is not None


_WANTED_TESTS = {api: _wanted_test(api) for api in APIS}


class BodyReader:
    """Reads a response body as it passes, bounded; :meth:`finish` gives the :class:`Result`.

    ``feed`` is called with each chunk of raw (possibly compressed) bytes and never
    raises for what the server sent; after :data:`STREAM_LIMIT` bytes of an SSE stream
    ``active`` turns False and the caller stops feeding (a JSON document is followed to its
    end, keeping only its edges).
    """

    def __init__(self, api: str, status: int, content_type: str, content_encoding: str = "", stream: bool = False):
        self.api = api
        self.status = status
        self.result = Result()
        self.active = True
        self.seen = 0
        encoding = content_encoding.strip().lower()
        self._inflate = None
        if encoding in ("gzip", "x-gzip", "deflate"):
            self._inflate = _Inflater(encoding)
        elif encoding not in ("", "identity"):
            self.active = False
            self.result.problems.append((FIELD_RESPONSE, "unsupported_encoding"))
        self.sse = "text/event-stream" in content_type.lower()
        self.stream = stream
        self._doc = None if self.sse else _Edges()
        # SSE state
        self._line = bytearray()
        self._line_too_long = False
        self._event = b""
        self._data: list = []
        self._events = 0
        self._skim = False  # True once an event was read: the fast path in feed() may skip chunks
        self._wanted = _WANTED_TESTS.get(api) or _wanted_test(api)

    def feed(self, chunk) -> None:
        if not self.active:
            return
        self.seen += len(chunk)
        if self.seen > STREAM_LIMIT and self._doc is None:  # a document keeps its edges whatever its size
            self.active = False
            self.result.problems.append((FIELD_RESPONSE, "inspection_limit"))
            return
        if self._inflate is not None:
            try:
                for part in self._inflate(chunk):
                    self._take(part)
            except zlib.error:
                self.active = False
                self.result.problems.append((FIELD_RESPONSE, "bad_encoding"))
            return
        # Fast path, most chunks of a stream (measured per chunk by benchmarks/httpx_overhead.py):
        # whole events after the first, nothing pending, nothing a reader needs in them.
        wanted = False
        if self._skim and not self._line and not self._data and chunk.endswith(_EVENT_ENDS):
            if not self._wanted(chunk):
                return
            wanted = True  # _dispatch need not search the event again
        # One whole "data:" event and nothing pending (the chunk of most servers): no line split.
        if self._doc is None and not self._line and not self._event and chunk.startswith(b"data:") \
                and chunk.find(b"\n") == len(chunk) - 2 and chunk.endswith(b"\n\n") and chunk[-3:-2] != b"\r" \
                and self._data is not None and not self._data and not self._line_too_long:
            self._data.append(chunk[6:-2] if chunk[5:6] == b" " else chunk[5:-2])
            self._dispatch(wanted)
            return
        self._take(chunk)

    def _take(self, data) -> None:
        if self._doc is not None:
            self._doc.add(data)
            return
        # SSE: split into lines; keep the unfinished one (bounded).
        start = 0
        find = data.find
        while True:
            nl = find(b"\n", start)
            if nl < 0:
                break
            if self._line:
                self._line += data[start:nl]
                line = bytes(self._line)
                self._line.clear()
            else:
                line = data[start:nl]
            self._sse_line(line)
            start = nl + 1
        rest = data[start:]
        if rest:
            if len(self._line) + len(rest) > DOC_LIMIT:
                self._line_too_long = True
                self._line.clear()
            else:
                self._line += rest

    def _sse_line(self, line) -> None:
        if line[-1:] == b"\r":
            line = line[:-1]
        if self._line_too_long:  # the end of a line we could not keep
            self._line_too_long = False
            self.result.problems.append((FIELD_RESPONSE, "sse_line_too_long"))
            self._data = None  # this event cannot be read
            return
        if not line:
            self._dispatch()
            return
        if line.startswith(b"data:"):
            value = line[6:] if line[5:6] == b" " else line[5:]
            if self._data is not None:
                self._data.append(value)
        elif line.startswith(b"event:"):
            self._event = line[6:].strip()
        # comments (":...") and other fields (id, retry) are ignored

    _ANTHROPIC_EVENTS = (b"message_start", b"message_delta", b"message_stop", b"error")
    _RESPONSES_EVENTS = (b"response.created", b"response.completed", b"response.incomplete",
                         b"response.failed", b"error")  # fmt: skip

    def _dispatch(self, wanted: bool = False) -> None:
        """Read the event gathered; ``wanted``: the wanted-test already passed it."""
        data, event = self._data, self._event
        self._data, self._event = [], b""
        if data is None:
            return
        if not data:
            return
        payload = data[0] if len(data) == 1 else b"\n".join(data)
        self._events += 1
        self._skim = self._doc is None
        api = self.api
        if payload == b"[DONE]":
            self.result.complete = True
            return
        if api == ANTHROPIC_MESSAGES:
            if event and event not in self._ANTHROPIC_EVENTS:
                return
        elif api == OPENAI_RESPONSES:
            if event and event not in self._RESPONSES_EVENTS:
                return
        elif self._events > 1 and not wanted and not _INTERESTING.search(payload):
            return  # a content delta: nothing for metrics in it
        try:
            obj = _loads(payload)
        except ValueError:
            self.result.problems.append((FIELD_RESPONSE, "malformed_event"))
            return
        if api == ANTHROPIC_MESSAGES and isinstance(obj, dict) and obj.get("type") == "error":
            self.result.error_type = error_type_from(None, obj) or "_OTHER"
            return
        if api == GEMINI and isinstance(obj, dict) and obj.get("usageMetadata") is not None:
            self.result.complete = any(
                isinstance(c, dict) and c.get("finishReason") for c in obj.get("candidates") or ()
            )
        apply_document(self.result, api, obj, None)

    def finish(self) -> Result:
        """The result once the body ended (or stopped being read)."""
        result = self.result
        status = self.status
        if self._doc is not None and (self.active or self._doc.size):
            whole = self._doc.whole
            if whole is not None:
                if whole.strip():
                    try:
                        obj = _loads(whole)
                    except ValueError:
                        obj = None
                        if self.active:
                            result.problems.append((FIELD_RESPONSE, "not_json"))
                    if obj is not None:
                        apply_document(result, self.api, obj, status)
            else:
                head, tail = self._doc.edges()
                apply_edges(result, self.api, head, tail, status)
            result.complete = self.active
        elif self._doc is None and self.active:
            if self._data:  # a last event without its blank line
                self._dispatch()
        if status >= 400 and result.error_type is None:
            result.error_type = str(status)
        return result
