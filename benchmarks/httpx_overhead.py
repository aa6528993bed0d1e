"""Added latency of spanmeter's httpx hooks, per streamed chunk and per non-LLM request.

One process, one client, three configurations measured side by side in interleaved
batches (order rotated each round), medians printed as a table:

- ``plain``: httpx2 without instrumentation;
- ``otel``: ``HTTPX2ClientInstrumentor`` without hooks (the instrumentation's own cost);
- ``spanmeter``: ``spanmeter.httpx.instrument()`` (the instrumentation plus spanmeter's
  transport wrapper, the inference span, the pass-through taps and the SSE reader);
- ``genai-only``: ``spanmeter.httpx.instrument(http_spans=False)`` (no HTTP spans).

Then spanmeter's CPU per LLM call with the network taken out (a transport answering from
memory): JSON, streamed, and a 4 MB gzip body, which must cost its reading, not a second
inflation.

The server is on 127.0.0.1 and sends each body pre-built in one write (an SSE stream of
N OpenAI chunks, one HTTP chunk per event), so the client's per-chunk work dominates.

    python benchmarks/httpx_overhead.py [--rounds 15] [--chunks 2000] [--requests 200]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import httpx2  # noqa: E402
from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor  # noqa: E402
from opentelemetry.metrics import NoOpMeterProvider  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

import spanmeter  # noqa: E402
import spanmeter.httpx  # noqa: E402


def _sse_events(chunks: int) -> list:
    """An OpenAI stream of ``chunks`` content chunks, a usage chunk and [DONE], one bytes per event."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-2025"}
    events = [dict(base, choices=[{"index": 0, "delta": {"content": f"tok{i} "}, "logprobs": None,
                                   "finish_reason": None}], usage=None) for i in range(chunks)]  # fmt: skip
    events.append(dict(base, choices=[], usage={"prompt_tokens": 100, "completion_tokens": chunks}))
    return [b"data: " + data + b"\n\n" for data in [json.dumps(e).encode() for e in events] + [b"[DONE]"]]


def _sse_body(chunks: int) -> bytes:
    out = bytearray()
    for piece in _sse_events(chunks):
        out += b"%x\r\n%s\r\n" % (len(piece), piece)
    return bytes(out + b"0\r\n\r\n")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.endswith("/chat/completions"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(self.server.sse)
        else:
            self.do_GET()


class _Canned:
    """A transport's ``handle_request`` that answers from memory: spanmeter's work without the network's."""

    def __init__(self, sse_chunks: list, json_body: bytes, gzip_body: bytes):
        self.sse_chunks, self.json_body, self.gzip_body = sse_chunks, json_body, gzip_body

    def __call__(self, transport, request):
        kind = request.extensions.get("canned")
        if kind == "sse":
            headers, chunks = {"content-type": "text/event-stream"}, self.sse_chunks
        elif kind == "gzip":
            headers, chunks = {"content-type": "application/json", "content-encoding": "gzip"}, [
                self.gzip_body[i : i + 65536] for i in range(0, len(self.gzip_body), 65536)]  # fmt: skip
        else:
            headers, chunks = {"content-type": "application/json"}, [self.json_body]
        return httpx2.Response(200, headers=headers, stream=_ChunkStream(chunks))


class _ChunkStream(httpx2.SyncByteStream):
    def __init__(self, chunks):
        self._httpcore_stream = chunks  # where the transport's stream keeps its source

    def __iter__(self):
        yield from self._httpcore_stream


def _per_call_cpu(sse_events: list, rounds: int, n: int = 300) -> dict:
    """Median CPU us per LLM call answered from memory (no network), paired batches.

    Configurations: plain; spanmeter with HTTP spans; spanmeter ``http_spans=False``; the
    same on a no-op tracer (spanmeter's own code: taps, readers, hooks; no span). Calls: a
    JSON chat completion, a streamed one (the SSE body of the main table), a gzip JSON
    body of 4 MB decoded (``gzip``: read from what httpx decodes, never inflated twice).
    """
    from opentelemetry.trace import NoOpTracerProvider

    def usage_doc(content: str) -> bytes:
        return json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-2025",
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                        "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 100, "completion_tokens": 20}}).encode()  # fmt: skip

    big = usage_doc(" ".join(f"word{i}" for i in range(500_000)))
    canned = _Canned(sse_events, usage_doc("Hello!"), gzip.compress(big))
    original = httpx2.HTTPTransport.handle_request
    httpx2.HTTPTransport.handle_request = lambda transport, request: canned(transport, request)
    meter = spanmeter.setup(start_server=False, registry=CollectorRegistry(), tracer_provider=TracerProvider())
    client = httpx2.Client()
    url = "http://127.0.0.1:9/v1/chat/completions"
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    requests = {kind: client.build_request("POST", url, json=chat, extensions={"canned": kind})
                for kind in ("json", "sse", "gzip")}  # fmt: skip
    counts = {"json": n, "sse": max(1, n // 20), "gzip": max(1, n // 100)}
    configs = ("plain", "http-spans", "genai-only", "genai-only, no-op tracer")
    times = {(c, k): [] for c in configs for k in requests}
    try:
        for round_ in range(rounds + 1):
            order = configs[round_ % 4 :] + configs[: round_ % 4]
            for config in order:
                handle = None
                if config != "plain":
                    handle = spanmeter.httpx.instrument(meter, http_spans=config == "http-spans")
                    if "no-op" in config:
                        handle.tracer = NoOpTracerProvider().get_tracer("bench")
                try:
                    for kind, request in requests.items():
                        c0 = time.process_time()
                        for _ in range(counts[kind]):
                            response = client.send(request, stream=True)
                            for _chunk in response.iter_bytes():
                                pass
                            response.close()
                        meter.tracer_provider.force_flush()
                        if round_:
                            times[(config, kind)].append((time.process_time() - c0) / counts[kind] * 1e6)
                finally:
                    if handle is not None:
                        handle.uninstrument()
    finally:
        httpx2.HTTPTransport.handle_request = original
        client.close()
    calls = sum(point["count"] for _, point in meter.state.snapshot().get("model") or [])
    meter.shutdown()
    inflate = []
    compressed = canned.gzip_body
    for _ in range(5):
        c0 = time.process_time()
        zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(compressed)
        inflate.append((time.process_time() - c0) * 1e6)
    return {"times": {k: statistics.median(v) for k, v in times.items()}, "configs": configs,
            "inflate": statistics.median(inflate), "decoded": len(big), "calls": calls,
            "expected": (rounds + 1) * 2 * sum(counts.values())}  # two configurations record spans  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--chunks", type=int, default=2000, help="SSE events per streamed response")
    parser.add_argument("--streams", type=int, default=3, help="streamed responses per batch")
    parser.add_argument("--requests", type=int, default=200, help="non-LLM requests per batch")
    args = parser.parse_args(argv)

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.sse = _sse_body(args.chunks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    meter = spanmeter.setup(start_server=False, registry=CollectorRegistry(), tracer_provider=TracerProvider())
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip

    def enable(config):
        if config == "otel":
            HTTPX2ClientInstrumentor().instrument(tracer_provider=meter.tracer_provider,
                                                  meter_provider=NoOpMeterProvider())  # fmt: skip
            return HTTPX2ClientInstrumentor().uninstrument
        if config == "spanmeter":
            return spanmeter.httpx.instrument(meter).uninstrument
        if config == "genai-only":
            return spanmeter.httpx.instrument(meter, http_spans=False).uninstrument
        return lambda: None

    client = httpx2.Client()  # the same client (and connection pool) for every configuration
    sdk = None
    try:
        import openai

        sdk = openai.OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0)
    except ImportError:
        pass
    configs = ("plain", "otel", "spanmeter", "genai-only")
    results = {(c, m): [] for c in configs for m in ("chunk", "get", "post", "sdk")}
    chunks_seen = {}
    for round_ in range(args.rounds + 1):  # round 0 warms up
        order = configs[round_ % 4 :] + configs[: round_ % 4]
        for config in order:
            disable = enable(config)
            try:
                t0 = time.perf_counter()
                n = 0
                for _ in range(args.streams):
                    with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
                        for _chunk in response.iter_raw():
                            n += 1
                t_stream = time.perf_counter() - t0
                t0 = time.perf_counter()
                for _ in range(args.requests):
                    client.get(url + "/health")
                t_get = time.perf_counter() - t0
                t0 = time.perf_counter()
                for _ in range(args.requests):
                    client.post(url + "/v1/files", json={"purpose": "batch"})
                t_post = time.perf_counter() - t0
                t_sdk = sdk_chunks = 0
                if sdk is not None:
                    t0 = time.perf_counter()
                    for chunk in sdk.chat.completions.create(model="gpt-4o", messages=body["messages"], stream=True,
                                                             stream_options={"include_usage": True}):  # fmt: skip
                        sdk_chunks += 1
                    t_sdk = time.perf_counter() - t0
            finally:
                disable()
            if round_:
                chunks_seen[config] = n
                results[(config, "chunk")].append(t_stream / n)
                results[(config, "get")].append(t_get / args.requests)
                results[(config, "post")].append(t_post / args.requests)
                if sdk_chunks:
                    results[(config, "sdk")].append(t_sdk / sdk_chunks)
    client.close()
    server.shutdown()
    snapshot = meter.state.snapshot()
    meter.shutdown()
    direct = _per_call_cpu(_sse_events(args.chunks), args.rounds)

    med = {k: statistics.median(v) * 1e6 for k, v in results.items()}
    print(f"httpx2 {httpx2.__version__}, {args.rounds} rounds, medians in microseconds "
          f"({chunks_seen['plain']} chunks / {args.streams} streams per batch; {args.requests} requests per batch)")  # fmt: skip
    print()
    print("| measure | plain httpx2 | + otel instrumentation | + spanmeter | spanmeter adds to otel | ratio to plain "
          "| spanmeter `http_spans=False` | ratio to plain |")
    print("|---|---|---|---|---|---|---|---|")
    names = {"chunk": "per streamed chunk (SSE, raw bytes)", "sdk": "per streamed chunk (openai SDK objects)",
             "get": "per non-LLM GET", "post": "per non-LLM POST (JSON)"}
    for m, label in names.items():
        if not results[("plain", m)]:
            continue
        plain, otel, ours, lean = (med[(c, m)] for c in configs)
        print(f"| {label} | {plain:.2f} | {otel:.2f} | {ours:.2f} | {ours - otel:+.2f} | {ours / plain:.2f}x "
              f"| {lean:.2f} | {lean / plain:.2f}x |")  # fmt: skip
    print()
    print(f"Per LLM call answered from memory (no network; CPU us, medians of {args.rounds} paired rounds):")
    print()
    t = direct["times"]
    print("| call | " + " | ".join(direct["configs"]) + " |")
    print("|---|" + "---|" * len(direct["configs"]))
    labels = {"json": "JSON chat completion", "sse": f"streamed, {args.chunks + 2} events",
              "gzip": f"gzip JSON, {direct['decoded'] / 2**20:.1f} MiB decoded"}  # fmt: skip
    for kind, label in labels.items():
        plain = t[("plain", kind)]
        cells = [f"{plain:,.1f}"] + [f"+{t[(c, kind)] - plain:,.1f}" for c in direct["configs"][1:]]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(f"\ninflating that gzip body once takes {direct['inflate']:,.0f} us: spanmeter's added CPU on it is "
          f"its reading, not a second inflation")  # fmt: skip
    print(f"inference spans counted in those calls: {direct['calls']} (expected {direct['expected']})")
    models = snapshot.get("model") or []
    calls = sum(point["count"] for _, point in models)
    print()
    expected = 2 * (args.rounds + 1) * (args.streams + (1 if sdk is not None else 0))  # two spanmeter configs
    print(f"inference spans counted by spanmeter: {calls} (expected {expected})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
