"""Added latency of spanmeter's httpx hooks, per streamed chunk and per non-LLM request.

One process, one client, three configurations measured side by side in interleaved
batches (order rotated each round), medians printed as a table:

- ``plain``: httpx2 without instrumentation;
- ``otel``: ``HTTPX2ClientInstrumentor`` without hooks (the instrumentation's own cost);
- ``spanmeter``: ``spanmeter.httpx.instrument()`` (the instrumentation plus the hooks,
  the inference span, the pass-through tap and the SSE reader).

The server is on 127.0.0.1 and sends each body pre-built in one write (an SSE stream of
N OpenAI chunks, one HTTP chunk per event), so the client's per-chunk work dominates.

    python benchmarks/httpx_overhead.py [--rounds 15] [--chunks 2000] [--requests 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
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


def _sse_body(chunks: int) -> bytes:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-2025"}
    events = [dict(base, choices=[{"index": 0, "delta": {"content": f"tok{i} "}, "logprobs": None,
                                   "finish_reason": None}], usage=None) for i in range(chunks)]  # fmt: skip
    events.append(dict(base, choices=[], usage={"prompt_tokens": 100, "completion_tokens": chunks}))
    out = bytearray()
    for data in [json.dumps(e).encode() for e in events] + [b"[DONE]"]:
        piece = b"data: " + data + b"\n\n"
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


def _hook_cpu(url: str, rounds: int, n: int = 5000) -> tuple[float, float]:
    """Median us of an HTTP client span's life for a non-LLM POST, without and with the hooks.

    Measured directly (no network, so no network noise): span start, request hook,
    response hook, span end, on two providers identical but for spanmeter's hooks and
    tracker, in alternating batches.
    """
    from opentelemetry.instrumentation.httpx import RequestInfo, ResponseInfo

    from spanmeter.httpx import _Hooks

    plain = spanmeter.setup(start_server=False, registry=CollectorRegistry(), tracer_provider=TracerProvider())
    hooked = spanmeter.setup(start_server=False, registry=CollectorRegistry(), tracer_provider=TracerProvider())
    handle = spanmeter.httpx.instrument(hooked)
    handle.uninstrument()  # leave httpx alone; keep the tracker, re-activated below
    handle.tracker.active = True
    hooks = _Hooks(handle, httpx2)
    request = httpx2.Request("POST", url + "/v1/files", json={"purpose": "batch"})
    info = RequestInfo(b"POST", request.url, request.headers, request.stream, request.extensions)
    response = ResponseInfo(200, httpx2.Headers({"content-type": "application/json"}), httpx2.ByteStream(b"{}"), {})
    tracers = (plain.tracer_provider.get_tracer("bench"), hooked.tracer_provider.get_tracer("bench"))
    times = ([], [])
    for round_ in range(rounds + 1):
        for which in ((0, 1) if round_ % 2 else (1, 0)):
            tracer = tracers[which]
            t0 = time.perf_counter()
            if which:
                for _ in range(n):
                    span = tracer.start_span("POST")
                    hooks.request(span, info)
                    hooks.response(span, info, response)
                    span.end()
            else:
                for _ in range(n):
                    tracer.start_span("POST").end()
            if round_:
                times[which].append((time.perf_counter() - t0) / n * 1e6)
    plain.shutdown()
    hooked.shutdown()
    return statistics.median(times[0]), statistics.median(times[1])


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
        return lambda: None

    client = httpx2.Client()  # the same client (and connection pool) for every configuration
    sdk = None
    try:
        import openai

        sdk = openai.OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0)
    except ImportError:
        pass
    configs = ("plain", "otel", "spanmeter")
    results = {(c, m): [] for c in configs for m in ("chunk", "get", "post", "sdk")}
    chunks_seen = {}
    for round_ in range(args.rounds + 1):  # round 0 warms up
        order = configs[round_ % 3 :] + configs[: round_ % 3]
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
    direct = _hook_cpu(url, args.rounds)

    med = {k: statistics.median(v) * 1e6 for k, v in results.items()}
    print(f"httpx2 {httpx2.__version__}, {args.rounds} rounds, medians in microseconds "
          f"({chunks_seen['plain']} chunks / {args.streams} streams per batch; {args.requests} requests per batch)")  # fmt: skip
    print()
    print("| measure | plain httpx2 | + otel instrumentation | + spanmeter hooks | spanmeter adds | ratio to plain |")
    print("|---|---|---|---|---|---|")
    names = {"chunk": "per streamed chunk (SSE, raw bytes)", "sdk": "per streamed chunk (openai SDK objects)",
             "get": "per non-LLM GET", "post": "per non-LLM POST (JSON)"}
    for m, label in names.items():
        if not results[("plain", m)]:
            continue
        plain, otel, ours = med[("plain", m)], med[("otel", m)], med[("spanmeter", m)]
        print(f"| {label} | {plain:.2f} | {otel:.2f} | {ours:.2f} | {ours - otel:+.2f} | {ours / plain:.2f}x |")
    base, hooked = direct
    print(f"| hooks' CPU per non-LLM POST (direct, paired) | - | {base:.2f} | {hooked:.2f} | {hooked - base:+.2f} | - |")
    models = snapshot.get("model") or []
    calls = sum(point["count"] for _, point in models)
    print()
    expected = (args.rounds + 1) * (args.streams + (1 if sdk is not None else 0))
    print(f"inference spans counted by spanmeter: {calls} (expected {expected})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
