"""A real HTTP server on 127.0.0.1 speaking the wire formats of LLM providers.

OpenAI chat completions and responses, Anthropic messages, Gemini generateContent /
streamGenerateContent (``alt=sse`` or the streamed JSON array), as JSON bodies or SSE
streams (chunked transfer encoding, one event per chunk), with the error bodies of
each provider. What a request gets is chosen by a suffix of its model name:

- ``-429``, ``-529``, ``-context``, ``-500``: the provider's error for a rate limit, an
  overload, a prompt over the context length, a server error;
- ``-truncated``: the stream (or body) is cut by closing the connection mid-way;
- ``-malformed``: an SSE stream with broken JSON, non-JSON lines, comments and CRLF
  line endings around the real events;
- ``-notjson``: a 200 ``text/plain`` body; ``-big``: a 10 MB JSON body;
- ``-gzip``: the JSON body gzip-encoded; ``-nousage``: no usage in the response.

A Gemini request that declares functions and carries no function response yet is answered
with a call of the first declared function (arguments: :attr:`FakeProviders.tool_args`).

Token counts come from :attr:`FakeProviders.usage`, in the provider's own meaning
(Anthropic's ``input`` excludes cache reads and writes; OpenAI's includes cached tokens
and its output includes reasoning). Every response body sent is kept in ``sent``.
"""

from __future__ import annotations

import gzip
import itertools
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Usage:
    input: int = 1200
    output: int = 300
    cache_read: int = 400
    cache_write: int = 0
    reasoning: int = 120


BIG_BODY_BYTES = 10 * 1024 * 1024
WORDS = ["Hel", "lo", ", ", "how ", "can ", "I ", "help", "?"]


class _Handler(BaseHTTPRequestHandler):
    server: FakeProviders
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # one event per segment, no 40 ms delayed-ACK stalls

    def log_message(self, format, *args):  # quiet
        pass

    # --- sending ------------------------------------------------------------------------
    def _json(self, status: int, obj, *, gzip_it: bool = False, raw: bytes | None = None) -> None:
        body = raw if raw is not None else json.dumps(obj).encode()
        headers = {"Content-Type": "application/json"}
        if gzip_it:
            self.server.sent.append(body)
            body = gzip.compress(body, mtime=0)  # the same bytes for the same body, whenever sent
            headers["Content-Encoding"] = "gzip"
        else:
            self.server.sent.append(body)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _start_stream(self, content_type: str = "text/event-stream") -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._streamed = bytearray()

    def _chunk(self, data: bytes) -> None:
        self._streamed += data
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        self.server.sent.append(bytes(self._streamed))

    def _cut_stream(self) -> None:
        self.wfile.flush()
        self.server.sent.append(bytes(self._streamed))
        self.close_connection = True  # closing now leaves the chunked body incomplete

    def _sse(self, events, *, truncated=False, malformed=False, event_names=False, crlf=False) -> None:
        self._start_stream()
        nl = b"\r\n" if crlf else b"\n"
        if malformed:
            self._chunk(b": a comment line" + nl + nl)
            self._chunk(b"data: {not json" + nl + nl)
            self._chunk(b"this line is not an SSE field" + nl + nl)
        for i, (name, obj) in enumerate(events):
            if truncated and i == len(events) // 2:
                return self._cut_stream()
            data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
            head = b"event: " + name.encode() + nl if event_names and name else b""
            self._chunk(head + b"data: " + data + nl + nl)
            if malformed and i == 1:
                self._chunk(b"data: {\"choices\": [{\"finish_reason\": \"sto" + nl + nl)
        self._end_stream()

    # --- routing ------------------------------------------------------------------------
    def do_GET(self):
        self._json(200, {"ok": True, "path": self.path})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            request = json.loads(raw or b"{}")
        except ValueError:
            request = {}
        path = self.path.split("?", 1)[0]
        if not isinstance(request, dict):
            return self._json(400, {"error": {"message": "body must be a JSON object", "type": "invalid_request"}})
        self.server.requests.append((self.path, request))
        self.number = next(self.server.numbers) if self.server.unique_ids else 42
        if path.endswith("/chat/completions"):
            return self._openai_chat(request)
        if path.endswith("/responses"):
            return self._openai_responses(request)
        if path.endswith("/messages"):
            return self._anthropic(request)
        if ":generateContent" in path or ":streamGenerateContent" in path:
            return self._gemini(path, request)
        self._json(200, {"echo": len(raw)})

    def _scenario(self, model: str) -> str:
        for s in ("429", "529", "500", "context", "truncated", "malformed", "notjson", "big", "gzip", "nousage"):
            if model.endswith("-" + s):
                return s
        return ""

    # --- OpenAI -------------------------------------------------------------------------
    def _openai_error(self, scenario: str) -> bool:
        errors = {
            "429": (429, {"message": "Rate limit reached for gpt-4o", "type": "requests", "param": None,
                          "code": "rate_limit_exceeded"}),
            "context": (400, {"message": "This model's maximum context length is 128000 tokens. However, your "
                              "messages resulted in 130000 tokens.", "type": "invalid_request_error",
                              "param": "messages", "code": "context_length_exceeded"}),
            "500": (500, {"message": "The server had an error", "type": "server_error", "param": None,
                          "code": None}),
        }  # fmt: skip
        if scenario in errors:
            status, error = errors[scenario]
            self._json(status, {"error": error})
            return True
        if scenario == "notjson":
            body = b"<html>upstream gateway says hello</html>"
            self.server.sent.append(body)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return True
        return False

    def _openai_usage(self):
        u = self.server.usage
        return {
            "prompt_tokens": u.input, "completion_tokens": u.output, "total_tokens": u.input + u.output,
            "prompt_tokens_details": {"cached_tokens": u.cache_read, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": u.reasoning, "audio_tokens": 0},
        }  # fmt: skip

    def _openai_chat(self, request):
        model = request.get("model", "")
        scenario = self._scenario(model)
        if self._openai_error(scenario):
            return
        response_model = model + "-2025-01-01"
        base = {"id": f"chatcmpl-{self.number}", "created": 1_700_000_000, "model": response_model,
                "system_fingerprint": "fp"}  # fmt: skip
        if not request.get("stream"):
            content = "x" * BIG_BODY_BYTES if scenario == "big" else "".join(WORDS)
            body = dict(base, object="chat.completion", choices=[{
                "index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None, "finish_reason": "stop"}])  # fmt: skip
            if scenario != "nousage":
                body["usage"] = self._openai_usage()
            if scenario == "truncated":
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.server.sent.append(data[: len(data) // 2])
                self.close_connection = True
                return
            return self._json(200, body, gzip_it=scenario == "gzip")
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        chunk = dict(base, object="chat.completion.chunk")
        usage_field = {"usage": None} if include_usage else {}
        events = [("", dict(chunk, choices=[{"index": 0, "delta": {"role": "assistant", "content": ""},
                                             "logprobs": None, "finish_reason": None}], **usage_field))]  # fmt: skip
        for word in WORDS:
            events.append(("", dict(chunk, choices=[{"index": 0, "delta": {"content": word}, "logprobs": None,
                                                     "finish_reason": None}], **usage_field)))  # fmt: skip
        events.append(("", dict(chunk, choices=[{"index": 0, "delta": {}, "logprobs": None,
                                                 "finish_reason": "stop"}], **usage_field)))  # fmt: skip
        if include_usage and scenario != "nousage":
            events.append(("", dict(chunk, choices=[], usage=self._openai_usage())))
        events.append(("", b"[DONE]"))
        self._sse(events, truncated=scenario == "truncated", malformed=scenario == "malformed",
                  crlf=scenario == "malformed")  # fmt: skip

    def _openai_responses(self, request, output: list[dict] | None = None):
        """A Responses API answer: JSON, or the SSE events of a stream (``response.created`` ...
        ``response.completed``); ``output`` replaces the text message (e.g. function calls)."""
        model = request.get("model", "")
        scenario = self._scenario(model)
        if self._openai_error(scenario):
            return
        u = self.server.usage
        text = "".join(WORDS)
        n = self.number
        message = {"type": "message", "id": f"msg_{n}", "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "text": text, "annotations": []}]}  # fmt: skip
        output = output if output is not None else [message]
        response = {
            "id": f"resp_{n}", "object": "response", "created_at": 1_700_000_000, "status": "completed",
            "model": model + "-2025-01-01", "error": None, "incomplete_details": None,
            "output": output, "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "usage": {"input_tokens": u.input, "input_tokens_details": {"cached_tokens": u.cache_read},
                      "output_tokens": u.output, "output_tokens_details": {"reasoning_tokens": u.reasoning},
                      "total_tokens": u.input + u.output},
        }  # fmt: skip
        if scenario == "nousage":
            response["usage"] = None
        if not request.get("stream"):
            return self._json(200, response)
        created = dict(response, status="in_progress", output=[], usage=None)
        events = [("response.created", {"type": "response.created", "response": created}),
                  ("response.in_progress", {"type": "response.in_progress", "response": created})]  # fmt: skip
        for index, item in enumerate(output):
            events += self._responses_item_events(index, item)
        events.append(("response.completed", {"type": "response.completed", "response": response}))
        for i, (_, event) in enumerate(events):
            event["sequence_number"] = i
        self._sse(events, event_names=True, truncated=scenario == "truncated")

    @staticmethod
    def _responses_item_events(index: int, item: dict) -> list:
        """The stream events that build one output item, as the Responses API sends them."""
        at = {"output_index": index}
        if item["type"] == "function_call":
            started = dict(item, arguments="", status="in_progress")
            args = item["arguments"]
            return [
                ("response.output_item.added", {"type": "response.output_item.added", **at, "item": started}),
                ("response.function_call_arguments.delta", {"type": "response.function_call_arguments.delta",
                 **at, "item_id": item["id"], "delta": args[: len(args) // 2]}),
                ("response.function_call_arguments.delta", {"type": "response.function_call_arguments.delta",
                 **at, "item_id": item["id"], "delta": args[len(args) // 2 :]}),
                ("response.function_call_arguments.done", {"type": "response.function_call_arguments.done",
                 **at, "item_id": item["id"], "arguments": args}),
                ("response.output_item.done", {"type": "response.output_item.done", **at, "item": item}),
            ]  # fmt: skip
        part = {"type": "output_text", "text": "", "annotations": []}
        at_part = {**at, "item_id": item["id"], "content_index": 0}
        events = [
            ("response.output_item.added", {"type": "response.output_item.added", **at,
             "item": dict(item, status="in_progress", content=[])}),
            ("response.content_part.added", {"type": "response.content_part.added", **at_part, "part": part}),
        ]  # fmt: skip
        for word in WORDS:
            events.append(("response.output_text.delta", {"type": "response.output_text.delta", **at_part,
                                                          "delta": word, "logprobs": []}))  # fmt: skip
        text = "".join(WORDS)
        events += [
            ("response.output_text.done", {"type": "response.output_text.done", **at_part, "text": text,
                                           "logprobs": []}),
            ("response.content_part.done", {"type": "response.content_part.done", **at_part,
                                            "part": dict(part, text=text)}),
            ("response.output_item.done", {"type": "response.output_item.done", **at, "item": item}),
        ]  # fmt: skip
        return events

    @staticmethod
    def responses_function_call(name: str, arguments: str, call_id: str = "call_1") -> dict:
        """A Responses API output item asking for a call of the function ``name``."""
        return {"type": "function_call", "id": "fc_" + call_id, "call_id": call_id, "name": name,
                "arguments": arguments, "status": "completed"}  # fmt: skip

    # --- Anthropic ----------------------------------------------------------------------
    def _anthropic(self, request):
        model = request.get("model", "")
        scenario = self._scenario(model)
        errors = {
            "429": (429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
            "529": (529, "overloaded_error", "Overloaded"),
            "context": (400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"),
            "500": (500, "api_error", "Internal server error"),
        }
        if scenario in errors:
            status, kind, message = errors[scenario]
            return self._json(status, {"type": "error", "error": {"type": kind, "message": message}})
        u = self.server.usage
        usage = {"input_tokens": u.input, "output_tokens": u.output,
                 "cache_read_input_tokens": u.cache_read, "cache_creation_input_tokens": u.cache_write}  # fmt: skip
        message = {"id": f"msg_{self.number}", "type": "message", "role": "assistant", "model": model + "-20250101",
                   "stop_sequence": None}  # fmt: skip
        if not request.get("stream"):
            body = dict(message, content=[{"type": "text", "text": "".join(WORDS)}], stop_reason="end_turn",
                        usage=usage)  # fmt: skip
            return self._json(200, body, gzip_it=scenario == "gzip")
        start_usage = dict(usage, output_tokens=1)
        events = [
            ("message_start", {"type": "message_start", "message": dict(
                message, content=[], stop_reason=None, usage=start_usage)}),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
            ("ping", {"type": "ping"}),
        ]  # fmt: skip
        for word in WORDS:
            events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                   "delta": {"type": "text_delta", "text": word}}))  # fmt: skip
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                               "usage": dict(usage) if self.server.anthropic_cumulative_delta
                               else {"output_tokens": u.output}}),
            ("message_stop", {"type": "message_stop"}),
        ]  # fmt: skip
        if scenario == "529":
            events = events[:4] + [("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                          "message": "Overloaded"}})]  # fmt: skip
        self._sse(events, event_names=True, truncated=scenario == "truncated")

    # --- Gemini -------------------------------------------------------------------------
    def _gemini(self, path, request):
        model = path.split("/models/", 1)[1].split(":", 1)[0]
        scenario = self._scenario(model)
        if scenario == "429":
            return self._json(429, {"error": {"code": 429, "message": "Resource has been exhausted",
                                              "status": "RESOURCE_EXHAUSTED"}})  # fmt: skip
        u = self.server.usage
        usage = {"promptTokenCount": u.input, "candidatesTokenCount": u.output, "thoughtsTokenCount": u.reasoning,
                 "cachedContentTokenCount": u.cache_read, "totalTokenCount": u.input + u.output + u.reasoning}

        response_id = f"resp-{len(self.server.requests)}" if self.server.unique_ids else "resp-42"
        call = self._gemini_function_call(request)

        def response(text, finish=None, with_usage=True):
            parts = [{"text": text}] if call is None else [call]
            candidate = {"content": {"parts": parts, "role": "model"}, "index": 0}
            if finish:
                candidate["finishReason"] = finish
            body = {"candidates": [candidate], "modelVersion": model + "-001", "responseId": response_id}
            if with_usage:
                body["usageMetadata"] = usage if finish else dict(usage, candidatesTokenCount=1)
            return body

        if ":generateContent" in path:
            return self._json(200, response("".join(WORDS), "STOP"))
        if call is not None:  # a function call comes whole, in one chunk
            events = [("", response("", "STOP"))]
        else:
            events = [("", response(w)) for w in WORDS[:-1]] + [("", response(WORDS[-1], "STOP"))]
        if "alt=sse" in self.path:
            return self._sse(events, crlf=True, truncated=scenario == "truncated")
        # Without alt=sse: one JSON array, streamed element by element.
        self._start_stream("application/json")
        for i, (_, obj) in enumerate(events):
            self._chunk((b"[" if i == 0 else b",\r\n") + json.dumps(obj).encode())
        self._chunk(b"]")
        self._end_stream()


    def _gemini_function_call(self, request) -> dict | None:
        """A ``functionCall`` part calling the first declared function with ``server.tool_args``, when
        the request offers functions and its contents hold no ``functionResponse`` yet; else None."""
        declared = [f for tool in request.get("tools") or [] for f in tool.get("functionDeclarations") or []]
        answered = any("functionResponse" in part for content in request.get("contents") or []
                       for part in content.get("parts") or [])  # fmt: skip
        if not declared or answered:
            return None
        return {"functionCall": {"name": declared[0]["name"], "args": dict(self.server.tool_args)}}


class FakeProviders(ThreadingHTTPServer):
    """The fake providers on a free port of 127.0.0.1; use as a context manager."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.usage = Usage()
        # Anthropic's message_delta usage: only output_tokens (the documented example), or, as
        # the API sends today, the cumulative usage with input and cache counts too.
        self.anthropic_cumulative_delta = False
        self.tool_args: dict = {"city": "Paris"}  # the arguments of a Gemini function call it makes
        self.sent: list[bytes] = []
        self.requests: list = []
        # response ids: 42 in every answer (identical requests, identical bytes), or unique per
        # request, as the real APIs' (numbered from 1)
        self.unique_ids = False
        self.numbers = itertools.count(1)
        self._thread = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self):
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()
        time.sleep(0)  # let handler threads see the closed socket
