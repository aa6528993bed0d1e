"""Aggregation under load and hostile span content (issue items 1, 8 and 9): a scrape stays
quick whatever the backlog, an application thread is never blocked by aggregation, shed
spans are counted exactly, free text never becomes a label, and memory is bounded by
entries, not by the size of what spans carry. Real endpoint on 127.0.0.1; generous bounds
(``benchmarks/load.py`` prints the figures)."""

from __future__ import annotations

import threading
import time
import tracemalloc

import httpx
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

import spanmeter
from spanmeter import SpanmeterProcessor
from tests.conftest import Scrape

CHAT = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini", "gen_ai.provider.name": "openai",
        "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 1}  # fmt: skip


def _meter(**kwargs):
    return spanmeter.setup(port=0, registry=CollectorRegistry(), tracer_provider=TracerProvider(), **kwargs)


def test_a_scrape_is_quick_while_a_huge_backlog_waits():
    meter = _meter()
    try:
        processor = meter.processor
        tracer = meter.tracer_provider.get_tracer("app")
        with processor._drain_lock:  # hold the aggregator back while 60,000 spans end
            for _ in range(60_000):
                tracer.start_span("chat gpt-4o-mini", attributes=CHAT).end()
            assert processor.pending_spans >= 60_000
        started = time.monotonic()
        httpx.get(meter.metrics_url, timeout=30).raise_for_status()
        assert time.monotonic() - started < 5.0  # a collection aggregates within its budget, then reads
        meter.state.flush()
        s = Scrape(httpx.get(meter.metrics_url, timeout=30).text)
        assert s.total("model_inference_calls_total") == 60_000  # nothing lost on the way
    finally:
        meter.shutdown()


def test_threads_are_never_blocked_and_every_span_is_counted_or_shed():
    meter = _meter(max_backlog=2_000)
    try:
        processor = meter.processor
        tracer = meter.tracer_provider.get_tracer("app")
        worst = []

        def work():
            slowest = 0.0
            for _ in range(5_000):
                span = tracer.start_span("chat gpt-4o-mini", attributes=CHAT)
                t = time.perf_counter()
                span.end()
                slowest = max(slowest, time.perf_counter() - t)
            worst.append(slowest)

        with processor._drain_lock:  # aggregation stalled for the whole run
            threads = [threading.Thread(target=work) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            assert not any(t.is_alive() for t in threads)  # nobody waited on the aggregator
        assert max(worst) < 1.0
        meter.state.flush()
        s = Scrape(httpx.get(meter.metrics_url, timeout=30).text)
        counted, shed = s.total("model_inference_calls_total"), s.value("spanmeter_spans_shed_total", reason="backlog")
        # the bound is checked without a lock: each of the 4 threads may add one past it
        assert 2_000 <= counted <= 2_000 + len(threads) and counted + shed == 20_000
    finally:
        meter.shutdown()


def test_free_text_in_error_types_and_span_names_never_becomes_a_label():
    meter = _meter()
    try:
        tracer = meter.tracer_provider.get_tracer("openinference.instrumentation.langchain")
        agent = tracer.start_span("lookup INPUT-ssn-123-45-6789", attributes={"openinference.span.kind": "AGENT"})
        from opentelemetry import trace

        with trace.use_span(agent, end_on_exit=True):
            tool = tracer.start_span("search user@example.com", attributes={"openinference.span.kind": "TOOL"})
            tool.set_attribute("error.type", "no account for USER-alice@example.com")
            tool.end()
            for value in (True, ("a", "b"), "x" * 500):
                tracer.start_span("chat", attributes={**CHAT, "error.type": value}).end()
        meter.state.flush()
        text = httpx.get(meter.metrics_url, timeout=30).text
        for secret in ("alice", "example.com", "6789", "INPUT-ssn", "xxxxxxxx", "('a'", "True"):
            assert secret not in text, secret
        s = Scrape(text)
        assert s.total("model_inference_calls_total", agent_name="unknown") == 3
        assert s.value("spanmeter_dropped_values_total", field="error_type", reason="free_text") == 2
        assert s.value("spanmeter_dropped_values_total", field="error_type", reason="wrong_type") == 2
    finally:
        meter.shutdown()


def test_memory_is_bounded_by_entries_not_by_what_spans_carry():
    meter = _meter()
    try:
        tracer = meter.tracer_provider.get_tracer("app")
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for n in range(2_000):  # 2,000 distinct 100 KB model names, conversation and response ids
            big = f"{n:06d}" + "m" * 100_000
            tracer.start_span("chat", attributes={**CHAT, "gen_ai.request.model": big,
                                                  "gen_ai.response.id": big}).end()  # fmt: skip
            with meter.agent_run("support", conversation_id=big):
                pass
        meter.state.flush()
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert grown < 20 * 2**20, grown  # 2,000 x 100 KB x 3 kept would be 600 MB
        s = Scrape(httpx.get(meter.metrics_url, timeout=30).text)
        assert s.total("model_inference_calls_total") == 2_000
        assert s.value("spanmeter_open_conversations") == 2_000
    finally:
        meter.shutdown()
