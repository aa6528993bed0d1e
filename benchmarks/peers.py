"""CPU added per LLM call by spanmeter and its peers, measured side by side; prints a table.

    python benchmarks/peers.py            # ~2-4 minutes on 2 busy cores (+1-2 min to build the venvs once)
    python benchmarks/peers.py --quick    # a first look, ~40 seconds

Each set-up runs in a fresh process of its own venv (built under /tmp from the pinned
lock files in ``benchmarks/locks/``), calling the openai SDK against the fake providers
(``tests/fake_providers.py``) served by a separate process on 127.0.0.1. Half the calls
are streamed (``stream_options.include_usage``). Batches of ``--calls`` calls run one
process at a time, interleaved, the order rotated each round; each batch measures the
CPU of all the process's threads (``time.process_time``) including a flush of what its
telemetry queued (``force_flush``), so work moved to a background thread is counted.
Figures are medians over rounds with min-max; "added" is the median of the per-round
differences to the no-telemetry baseline of the same round. A second no-telemetry
process (the A/A control) shows how much two identical set-ups differ on this machine.
Scrape CPU (median of 9 renderings of ``/metrics``) and the series count are taken once,
after the last round.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ROOT / "benchmarks" / "locks"
MODEL = "gpt-4o"
MESSAGES = [{"role": "user", "content": "hi"}]

#: name -> (label, venv lock, scrape: what /metrics a user would serve)
VARIANTS = {
    "none": ("no telemetry (baseline)", "peers", False),
    "none-aa": ("no telemetry again (A/A control)", "peers", False),
    "prometheus-client": ("hand-written `prometheus_client` (the reference design)", "peers", True),
    "otel-v2-prometheus": ("`opentelemetry-instrumentation-openai-v2` + SDK + Prometheus reader", "peers", True),
    "otel-v2-otlp": ("openai-v2 spans to a Collector (BatchSpanProcessor + OTLP/HTTP)", "peers", False),
    "otel-v2-spanmeter": ("openai-v2 + spanmeter's processor", "peers", True),
    "spanmeter-zero-code": ("spanmeter zero-code (`setup` + `spanmeter.httpx.instrument`)", "peers", True),
    "spanmeter-zero-code-lean": ("spanmeter zero-code, `http_spans=False`", "peers", True),
    "spanmeter-zero-code-spanless": ("spanmeter zero-code, `http_spans=False, genai_spans=False` (no span)", "peers",
                                     True),  # fmt: skip
    "openlit": ("OpenLIT (`openlit.init`, metrics on, Prometheus reader)", "openlit", True),
}


# --- venvs --------------------------------------------------------------------------------
def venv(lock: str, root: Path) -> Path:
    """The python of a venv holding exactly ``locks/<lock>.txt``; built once per lock content."""
    text = (LOCKS / f"{lock}.txt").read_bytes()
    home = root / f"{lock}-{hashlib.sha256(text).hexdigest()[:12]}"
    python = home / "bin" / "python"
    if (home / ".complete").exists():
        return python
    print(f"building {home} from benchmarks/locks/{lock}.txt ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(home)], check=True)
    # --no-deps: the lock is the whole, resolved set (OpenLIT declares openai<3; it is
    # pinned to the SDK the other set-ups use, see locks/openlit.txt)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "-r", str(LOCKS / f"{lock}.txt")],
                   check=True)  # fmt: skip
    (home / ".complete").write_text("ok\n")
    return python


# --- the fake providers and a Collector-like OTLP sink, in their own process -------------
SERVER = r"""
import sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
sys.path.insert(0, sys.argv[1])
from tests.fake_providers import FakeProviders

class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

def trim(server):  # the fake keeps every body it sent; a benchmark sends tens of thousands
    while True:
        time.sleep(1)
        del server.sent[:], server.requests[:]

sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
sink.daemon_threads = True
threading.Thread(target=sink.serve_forever, daemon=True).start()
with FakeProviders() as providers:
    threading.Thread(target=trim, args=(providers,), daemon=True).start()
    print(providers.url, f"http://127.0.0.1:{sink.server_address[1]}", flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
"""


# --- one set-up, in its own process -------------------------------------------------------
def _setup(variant: str, sink: str):
    """Telemetry for ``variant``: (observe(seconds, usage) or None, flush(), scrape() -> bytes or None)."""
    if variant in ("none", "none-aa"):
        return None, lambda: None, None
    if variant == "prometheus-client":
        from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

        registry = CollectorRegistry()
        duration = Histogram("model_inference_duration_seconds", "Model call latency", ["agent_name", "model_id"],
                             registry=registry)  # fmt: skip
        calls = Counter("model_inference_calls", "Model calls", ["agent_name", "model_id"], registry=registry)
        tokens = Counter("agent_token_usage", "Tokens", ["agent_name", "model_id", "token_type"], registry=registry)

        def observe(seconds, usage):
            duration.labels("support", MODEL).observe(seconds)
            calls.labels("support", MODEL).inc()
            if usage is not None:
                tokens.labels("support", MODEL, "input").inc(usage.prompt_tokens)
                tokens.labels("support", MODEL, "output").inc(usage.completion_tokens)

        return observe, lambda: None, lambda: generate_latest(registry)

    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    if variant == "openlit":
        import openlit
        from opentelemetry import metrics, trace
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from prometheus_client import REGISTRY, generate_latest

        # OpenLIT reuses the global providers: spans are made and not exported (as in
        # otel-v2-prometheus), metrics go to a Prometheus reader; prices from a local file.
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()]))
        os.environ["OTEL_LOGS_EXPORTER"] = "none"
        prices = Path(f"/tmp/spanmeter-peers-prices-{os.getpid()}.json")
        prices.write_text(json.dumps({"chat": {MODEL: {"promptPrice": 0.0025, "completionPrice": 0.01}}}))
        openlit.init(application_name="bench", pricing_json=str(prices), collect_gpu_stats=False)
        return None, provider.force_flush, lambda: generate_latest(REGISTRY)

    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    if variant == "otel-v2-prometheus":
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from prometheus_client import REGISTRY, generate_latest

        provider = TracerProvider()
        meters = MeterProvider(metric_readers=[PrometheusMetricReader()])
        OpenAIInstrumentor().instrument(tracer_provider=provider, meter_provider=meters)
        return None, provider.force_flush, lambda: generate_latest(REGISTRY)
    if variant == "otel-v2-otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=sink + "/v1/traces")))
        OpenAIInstrumentor().instrument(tracer_provider=provider, meter_provider=NoOpMeterProvider())
        return None, provider.force_flush, None

    import spanmeter
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    meter = spanmeter.setup(service_name="bench", start_server=False, registry=registry,
                            tracer_provider=TracerProvider())  # fmt: skip
    if variant == "otel-v2-spanmeter":
        # its own metrics off: spanmeter makes them from the spans
        OpenAIInstrumentor().instrument(tracer_provider=meter.tracer_provider, meter_provider=NoOpMeterProvider())
    elif variant == "spanmeter-zero-code":
        import spanmeter.httpx

        spanmeter.httpx.instrument(meter)
    elif variant == "spanmeter-zero-code-lean":
        import spanmeter.httpx

        spanmeter.httpx.instrument(meter, http_spans=False)
    elif variant == "spanmeter-zero-code-spanless":
        import spanmeter.httpx

        spanmeter.httpx.instrument(meter, http_spans=False, genai_spans=False)
    else:
        raise SystemExit(f"unknown variant {variant}")
    return None, meter.tracer_provider.force_flush, lambda: generate_latest(registry)


def worker(variant: str, url: str, sink: str) -> int:
    """Serve ``batch N`` / ``scrape`` commands on stdin, answering one JSON line each."""
    out = os.fdopen(os.dup(1), "w")  # answers; the set-ups may print to stdout (OpenLIT's console)
    os.dup2(2, 1)
    import openai

    observe, flush, scrape = _setup(variant, sink)
    client = openai.OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0)

    def call(i: int) -> None:
        t0 = time.perf_counter()
        usage = None
        if i % 2:
            for chunk in client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True,
                                                        stream_options={"include_usage": True}):  # fmt: skip
                usage = chunk.usage or usage
        else:
            usage = client.chat.completions.create(model=MODEL, messages=MESSAGES).usage
        if observe is not None:
            observe(time.perf_counter() - t0, usage)

    for i in range(40):  # warm up: imports, pools, caches
        call(i)
    flush()
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "batch":
            n = int(cmd[1])
            w0, c0 = time.perf_counter(), time.process_time()
            for i in range(n):
                call(i)
            flush()
            answer = {"cpu": time.process_time() - c0, "wall": time.perf_counter() - w0, "calls": n}
        elif cmd[0] == "scrape":
            if scrape is None:
                answer = {"scrape_cpu": None, "series": None}
            else:
                text = scrape()
                cpus = []
                for _ in range(9):
                    c0 = time.process_time()
                    scrape()
                    cpus.append(time.process_time() - c0)
                series = sum(1 for row in text.decode().splitlines() if row and row[0] != "#")
                answer = {"scrape_cpu": statistics.median(cpus), "series": series}
        else:
            answer = {"error": f"unknown command {line!r}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()
    return 0


# --- the run ------------------------------------------------------------------------------
class Worker:
    def __init__(self, variant: str, python: Path, url: str, sink: str):
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), PYTHONHASHSEED="0")
        self.proc = subprocess.Popen([str(python), __file__, "--worker", variant, "--url", url, "--sink", sink],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip

    def ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker exited with {self.proc.wait()}")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _fmt(us: float) -> str:
    return f"{us:,.0f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 rounds of 1 batch: a first look")
    parser.add_argument("--rounds", type=int, help="rounds (default 20; --quick 5)")
    parser.add_argument("--batches", type=int, help="batches per variant per round (default 3; --quick 1)")
    parser.add_argument("--calls", type=int, default=100, help="calls per batch (half streamed)")
    parser.add_argument("--variants", help="comma-separated subset of: " + ", ".join(VARIANTS))
    parser.add_argument("--venvs", default="/tmp/spanmeter-peers", help="where the venvs are built")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--sink", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.url, args.sink)
    rounds = args.rounds or (5 if args.quick else 20)
    batches = args.batches or (1 if args.quick else 3)
    names = args.variants.split(",") if args.variants else list(VARIANTS)
    for name in names:
        if name not in VARIANTS:
            parser.error(f"unknown variant {name!r}")
    if "none" not in names:
        names.insert(0, "none")

    pythons = {lock: venv(lock, Path(args.venvs)) for lock in {VARIANTS[n][1] for n in names}}
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(ROOT)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    url, sink = server.stdout.readline().split()
    load = os.getloadavg()
    started = time.monotonic()
    workers = {}
    try:
        for name in names:
            workers[name] = Worker(name, pythons[VARIANTS[name][1]], url, sink)
        cpu = {n: [] for n in names}
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                for _ in range(batches):
                    a = workers[name].ask(f"batch {args.calls}")
                    cpu[name].append(a["cpu"] / a["calls"] * 1e6)
            print(f"round {r + 1}/{rounds} done ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
        scrapes = {n: workers[n].ask("scrape") for n in names}
    finally:
        for w in workers.values():
            w.close()
        server.stdin.close()
        server.wait(timeout=30)

    elapsed = time.monotonic() - started
    base = cpu["none"]
    pins = dict(line.strip().split("==", 1) for line in (LOCKS / "peers.txt").read_text().splitlines() if "==" in line)
    print(f"openai {pins.get('openai', '?')}, Python {platform.python_version()}, {os.cpu_count()} cores, load average "
          f"{load[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end; {rounds} rounds x {batches} batch(es) x "
          f"{args.calls} calls per set-up (half streamed), {elapsed / 60:.1f} min. CPU of all the process's "
          f"threads per call, microseconds: median (min-max) over batches; added = median of the per-batch "
          f"differences to the baseline batch of the same round.")  # fmt: skip
    print()
    print("| set-up | CPU per call | added per call | ratio to baseline | scrape CPU | series |")
    print("|---|---|---|---|---|---|")
    med_base = statistics.median(base)
    for name in names:
        values = cpu[name]
        added = statistics.median(v - b for v, b in zip(values, base))
        med = statistics.median(values)
        scrape = scrapes[name]
        scrape_text = f"{scrape['scrape_cpu'] * 1000:.2f} ms" if scrape["scrape_cpu"] is not None else "-"
        series = str(scrape["series"]) if scrape["series"] is not None else "-"
        added_text = "-" if name == "none" else f"{added:+,.0f}"
        print(f"| {VARIANTS[name][0]} | {_fmt(med)} ({_fmt(min(values))}-{_fmt(max(values))}) | {added_text} | "
              f"{med / med_base:.2f}x | {scrape_text} | {series} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
