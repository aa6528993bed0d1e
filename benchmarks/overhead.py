"""spanmeter's cost, measured side by side in one process; prints a table.

    python benchmarks/overhead.py            # all sections, ~2 minutes (1 min 38 s to 1 min 55 s on a busy 2-core machine)
    python benchmarks/overhead.py --quick    # fewer rounds and spans, ~20 seconds

1. Per inference span created and ended under an open agent-run span, medians of paired
   batches (each variant runs in every round, in turn):
   - the span alone, no processor (the baseline: 1.00x);
   - spanmeter (default: every metric family, pricing on): the application thread's CPU
     (``time.thread_time``: the hot path) and the process's CPU including aggregation by
     spanmeter's background thread (``time.process_time``); and without pricing, for the
     cost of pricing alone;
   - the application's wall time in this single-threaded span loop, from its first span
     until every span of the batch is aggregated (spanmeter's background thread competes
     with it for the GIL, so its work lands in the app's wall time too); the best round,
     since other processes on a shared machine only ever add to it;
   - a naive processor making one OpenTelemetry instrument call per metric per span;
   - the reference article's hand instrumentation with ``prometheus_client`` for the same
     metric set, without any processor.
2. Total CPU per span including collection (``/metrics`` rendering), amortised over a 15 s
   scrape interval at several span rates.
3. One scrape of 10,000 series: CPU time and peak memory.
4. 1,000,000 inference spans with unique model and tool names: memory as they arrive.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
import tracemalloc

from opentelemetry import context, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

import spanmeter
from spanmeter import catalog
from spanmeter.aggregate import State
from spanmeter.pricing import Pricer
from spanmeter.processor import SpanmeterProcessor

START_ATTRS = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.provider.name": "openai"}
AGENT_ATTRS = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support"}
USAGE = {"gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.usage.input_tokens": 1200,
         "gen_ai.usage.output_tokens": 300, "gen_ai.usage.cache_read.input_tokens": 800}  # fmt: skip


def _spans(tracer, agent_span, n: int, article=None) -> None:
    token = context.attach(trace.set_span_in_context(agent_span))
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            span = tracer.start_span("chat gpt-4o", kind=trace.SpanKind.CLIENT, attributes=START_ATTRS)
            for key, value in USAGE.items():
                span.set_attribute(key, value)
            span.end()
            if article is not None:
                article(time.perf_counter() - t0)
    finally:
        context.detach(token)


class NaiveProcessor(SpanProcessor):
    """One OpenTelemetry instrument call per metric per span (what spanmeter avoids)."""

    def __init__(self, meter):
        self.duration = meter.create_histogram("model_inference_duration", unit="s")
        self.calls = meter.create_counter("model_inference_calls")
        self.tokens = meter.create_counter("agent_token_usage")
        self.cost = meter.create_counter("agent_estimated_cost_dollars")
        self.op_duration = meter.create_histogram("gen_ai.client.operation.duration", unit="s")
        self.token_usage = meter.create_histogram("gen_ai.client.token.usage")

    def on_end(self, span):
        a = span.attributes
        labels = {"agent_name": "support", "model_id": a.get("gen_ai.request.model")}
        genai = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": a.get("gen_ai.provider.name"),
                 "gen_ai.request.model": a.get("gen_ai.request.model")}  # fmt: skip
        seconds = (span.end_time - span.start_time) / 1e9
        i, o = a.get("gen_ai.usage.input_tokens"), a.get("gen_ai.usage.output_tokens")
        cr = a.get("gen_ai.usage.cache_read.input_tokens") or 0
        self.duration.record(seconds, labels)
        self.calls.add(1, labels)
        self.tokens.add(i, {**labels, "token_type": "input"})
        self.tokens.add(o, {**labels, "token_type": "output"})
        self.tokens.add(cr, {**labels, "token_type": "cache_read"})
        self.cost.add(((i - cr) * 2.5 + cr * 1.25 + o * 10) / 1e6, labels)
        self.op_duration.record(seconds, genai)
        self.token_usage.record(i, {**genai, "gen_ai.token.type": "input"})
        self.token_usage.record(o, {**genai, "gen_ai.token.type": "output"})


def _article_instrumentation():
    """The article's hand-written prometheus_client calls for the same metric set."""
    registry = CollectorRegistry()
    duration = Histogram("model_inference_duration_seconds", "", ["agent_name", "model_id"],
                         buckets=catalog.MODEL_INFERENCE_BUCKETS, registry=registry)  # fmt: skip
    calls = Counter("model_inference_calls", "", ["agent_name", "model_id"], registry=registry)
    tokens = Counter("agent_token_usage", "", ["agent_name", "model_id", "token_type"], registry=registry)
    cost = Counter("agent_estimated_cost_dollars", "", ["agent_name", "model_id"], registry=registry)
    op_duration = Histogram("gen_ai_client_operation_duration_seconds", "", ["op", "provider", "model"],
                            buckets=catalog.GENAI_DURATION_BUCKETS, registry=registry)  # fmt: skip
    token_usage = Histogram("gen_ai_client_token_usage", "", ["op", "provider", "model", "type"],
                            buckets=catalog.GENAI_TOKEN_BUCKETS, registry=registry)  # fmt: skip
    i, o, cr = 1200, 300, 800

    def record(seconds: float) -> None:
        duration.labels("support", "gpt-4o").observe(seconds)
        calls.labels("support", "gpt-4o").inc()
        tokens.labels("support", "gpt-4o", "input").inc(i)
        tokens.labels("support", "gpt-4o", "output").inc(o)
        tokens.labels("support", "gpt-4o", "cache_read").inc(cr)
        cost.labels("support", "gpt-4o").inc(((i - cr) * 2.5 + cr * 1.25 + o * 10) / 1e6)
        op_duration.labels("chat", "openai", "gpt-4o").observe(seconds)
        token_usage.labels("chat", "openai", "gpt-4o", "input").observe(i)
        token_usage.labels("chat", "openai", "gpt-4o", "output").observe(o)

    return record


def registry_scrape_cpu(processor) -> tuple[float, int]:
    """(median CPU seconds to render /metrics, series) for ``processor``'s state alone."""
    registry = CollectorRegistry()
    from spanmeter.export import PrometheusReader

    reader = PrometheusReader(state=processor.state, registry=registry)
    provider = MeterProvider(metric_readers=[reader])
    spanmeter.config._register_info(provider)  # as setup() does: the reader then always collects
    generate_latest(registry)
    cpus = []
    for _ in range(9):
        p0 = time.process_time()
        text = generate_latest(registry)
        cpus.append(time.process_time() - p0)
    provider.shutdown()
    return statistics.median(cpus), sum(1 for line in text.decode().splitlines() if line and line[0] != "#")


def per_span(spans: int, rounds: int) -> dict[str, dict[str, float]]:
    plain = TracerProvider()
    metered = TracerProvider()
    processor = SpanmeterProcessor(State(), pricer=Pricer.create())
    metered.add_span_processor(processor)
    unpriced_tp = TracerProvider()
    unpriced = SpanmeterProcessor(State())
    unpriced_tp.add_span_processor(unpriced)
    naive = TracerProvider()
    naive.add_span_processor(NaiveProcessor(MeterProvider().get_meter("naive")))
    article = _article_instrumentation()
    variants = {
        "plain": (plain, None, None),
        "spanmeter": (metered, None, processor),
        "unpriced": (unpriced_tp, None, unpriced),
        "naive": (naive, None, None),
        "article": (plain, article, None),
    }
    agents = {name: tp.get_tracer("bench").start_span("invoke_agent support", attributes=AGENT_ATTRS)
              for name, (tp, _, _) in variants.items()}  # fmt: skip
    tracers = {name: tp.get_tracer("bench") for name, (tp, _, _) in variants.items()}
    for name, (_, hook, _) in variants.items():  # warm up (and resolve the price once)
        _spans(tracers[name], agents[name], 2000, hook)
    processor.drain()
    thread_us: dict[str, list[float]] = {name: [] for name in variants}
    process_us: dict[str, list[float]] = {name: [] for name in variants}
    wall_us: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (_, hook, proc) in variants.items():
            gc.collect()
            w0, t0, p0 = time.perf_counter(), time.thread_time(), time.process_time()
            _spans(tracers[name], agents[name], spans, hook)
            t1 = time.thread_time()
            if proc is not None:
                proc.drain()  # what the background thread had not aggregated yet
            p1, w1 = time.process_time(), time.perf_counter()
            thread_us[name].append((t1 - t0) / spans * 1e6)
            process_us[name].append((p1 - p0) / spans * 1e6)
            wall_us[name].append((w1 - w0) / spans * 1e6)
    scrape, series = registry_scrape_cpu(processor)
    return {"thread": {k: statistics.median(v) for k, v in thread_us.items()},
            "process": {k: statistics.median(v) for k, v in process_us.items()},
            # wall time: the best round, as other processes on a shared machine only add to it
            "wall": {k: min(v) for k, v in wall_us.items()},
            "scrape": scrape, "series": series}  # fmt: skip


def scrape_cost(series: int) -> tuple[float, float, int]:
    """(CPU seconds of one /metrics rendering, peak MiB during it, series rendered)."""
    registry = CollectorRegistry()
    limits = {"agent": 1000, "model": 1000, "tool": 1000}
    meter = spanmeter.setup(start_server=False, registry=registry, tracer_provider=TracerProvider(),
                            label_limits=limits)  # fmt: skip
    tracer = meter.tracer_provider.get_tracer("bench")
    # each (agent, model) pair of inference spans makes ~68 exposed series (bucket lines included)
    pairs = max(1, series // 68)
    for n in range(pairs):
        attrs = {**START_ATTRS, "gen_ai.agent.name": f"agent-{n % 50}", "gen_ai.request.model": f"model-{n}"}
        span = tracer.start_span("chat", attributes=attrs)
        for key, value in USAGE.items():
            span.set_attribute(key, value)
        span.end()
    generate_latest(registry)  # warm
    text = generate_latest(registry).decode()
    rendered = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    cpus = []
    for _ in range(5):
        gc.collect()
        p0 = time.process_time()
        generate_latest(registry)
        cpus.append(time.process_time() - p0)
    cpu = statistics.median(cpus)
    tracemalloc.start()  # a separate rendering: tracing slows it down
    generate_latest(registry)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    meter.shutdown()
    return cpu, peak / 2**20, rendered


def unique_names(total: int, step: int) -> list[tuple[int, float]]:
    """(spans so far, traced MiB) while spans with unique model and tool names arrive."""
    meter = spanmeter.setup(start_server=False, registry=CollectorRegistry(), tracer_provider=TracerProvider())
    from opentelemetry.attributes import BoundedAttributes
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext

    # One resource for all: without it each ReadableSpan runs the resource detectors (in
    # a thread pool), ~0.7 ms per span, which made this section take most of 20 minutes.
    resource = Resource.get_empty()

    on_end = meter.processor.on_end
    gc.collect()
    tracemalloc.start()
    points = []
    for n in range(total):
        kind = n % 2
        attrs = ({"gen_ai.operation.name": "chat", "gen_ai.request.model": f"model-{n}", "gen_ai.usage.input_tokens": 5}
                 if kind else {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": f"tool-{n}"})  # fmt: skip
        on_end(ReadableSpan(name="x", context=SpanContext(1, n + 1, False),
                            attributes=BoundedAttributes(attributes=attrs, immutable=True),
                            start_time=0, end_time=1000, resource=resource))  # fmt: skip
        if (n + 1) % step == 0:
            meter.processor.drain()
            gc.collect()
            points.append((n + 1, tracemalloc.get_traced_memory()[0] / 2**20))
    tracemalloc.stop()
    meter.shutdown()
    return points


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    spans, rounds = (5000, 5) if args.quick else (20000, 9)
    print(f"spanmeter {spanmeter.__version__}; Python {platform.python_version()} on {platform.machine()}, "
          f"{platform.system()}; {rounds} rounds x {spans} spans, medians")  # fmt: skip

    t0 = time.monotonic()
    r = per_span(spans, rounds)
    base = r["thread"]["plain"]
    print("\n1. Per inference span under an agent run (us; ratio = added cost / span's own cost)")
    print(f"   {'what':<55} {'app thread':>10} {'ratio':>7} {'all threads':>12} {'ratio':>7} {'app wall*':>9} {'ratio':>7}")
    rows = [("span create + end, no processor (baseline)", "plain"),
            ("spanmeter, default (all metrics, pricing)", "spanmeter"),
            ("spanmeter without pricing (pricer=None)", "unpriced"),
            ("naive processor: one OTel instrument call per metric", "naive"),
            ("article's prometheus_client instrumentation", "article")]  # fmt: skip
    for label, key in rows:
        t, p = r["thread"][key], r["process"][key]
        added_t = (t - base) / base
        added_p = (p - r["process"]["plain"]) / r["process"]["plain"]
        w = r["wall"][key]
        added_w = (w - r["wall"]["plain"]) / r["wall"]["plain"]
        print(f"   {label:<55} {t:>10.2f} {added_t:>7.3f} {p:>12.2f} {added_p:>7.3f} {w:>9.2f} {added_w:>7.3f}")
    print("   (* wall time of the single-threaded loop until its spans are aggregated: best round; CPU: medians)")
    sm_t = r["thread"]["spanmeter"] - base
    sm_p = r["process"]["spanmeter"] - r["process"]["plain"]
    pricing = r["process"]["spanmeter"] - r["process"]["unpriced"]
    print(f"   pricing's share (all threads): {pricing:.2f} us = {pricing / r['process']['plain']:.3f}x the span")
    print(f"   spanmeter's hot path vs naive: {sm_t / (r['thread']['naive'] - base):.2f}x; "
          f"vs article: {sm_t / (r['thread']['article'] - base):.2f}x (lower is cheaper)")

    print(f"   (section 1 took {time.monotonic() - t0:.0f} s)")
    print(f"\n2. Total CPU per span including collection, scrape every 15 s (the benchmark's own "
          f"{r['series']}-series registry: {r['scrape'] * 1000:.2f} ms per scrape)")  # fmt: skip
    for rate in (1, 10, 100, 1000):
        per = sm_p + r["scrape"] * 1e6 / (rate * 15)
        print(f"   {rate:>5} spans/s: {per:7.2f} us per span = {per / r['process']['plain']:.3f}x the span")
    t0 = time.monotonic()
    cpu, peak, rendered = scrape_cost(10_000)
    print(f"\n3. One scrape of {rendered:,} series: {cpu * 1000:.1f} ms CPU (median of 5), "
          f"peak {peak:.1f} MiB of Python allocations while rendering ({time.monotonic() - t0:.0f} s)")  # fmt: skip

    total = 200_000 if args.quick else 1_000_000
    t0 = time.monotonic()
    points = unique_names(total, total // 10)
    print(f"\n4. {total:,} spans with unique model and tool names (limits: model 200, tool 500 values)")
    print("   " + "  ".join(f"{n // 1000}k: {mib:.2f} MiB" for n, mib in points) + f"  ({time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
