"""Processor cost per inference span, as a ratio to the span's own create-and-end cost.

Runs in one process: the same inference span (created and ended under an open agent
run span) on a tracer provider without any processor and on one with spanmeter's
processor, in alternating batches; prints medians and the ratio.

    python benchmarks/overhead.py [--spans 20000] [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from opentelemetry import context, trace
from opentelemetry.sdk.trace import TracerProvider

from spanmeter.aggregate import State, produce
from spanmeter.processor import SpanmeterProcessor

START_ATTRS = {
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.provider.name": "openai",
}


def _one_batch(tracer, agent_span, n: int) -> float:
    token = context.attach(trace.set_span_in_context(agent_span))
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            span = tracer.start_span("chat gpt-4o", kind=trace.SpanKind.CLIENT, attributes=START_ATTRS)
            span.set_attribute("gen_ai.response.model", "gpt-4o-2024-08-06")
            span.set_attribute("gen_ai.usage.input_tokens", 1200)
            span.set_attribute("gen_ai.usage.output_tokens", 300)
            span.set_attribute("gen_ai.usage.cache_read.input_tokens", 800)
            span.end()
        return (time.perf_counter() - t0) / n
    finally:
        context.detach(token)


def measure(spans: int, rounds: int) -> dict[str, float]:
    plain = TracerProvider()
    metered = TracerProvider()
    processor = SpanmeterProcessor(State())
    metered.add_span_processor(processor)
    tracers = {"plain": plain.get_tracer("bench"), "metered": metered.get_tracer("bench")}
    agents = {
        name: tracer.start_span("invoke_agent support", attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support"})
        for name, tracer in tracers.items()
    }
    for name in tracers:  # warm up
        _one_batch(tracers[name], agents[name], 2000)
    samples: dict[str, list[float]] = {"plain": [], "metered": []}
    for _ in range(rounds):
        for name in ("plain", "metered"):
            samples[name].append(_one_batch(tracers[name], agents[name], spans))
    plain_us = statistics.median(samples["plain"]) * 1e6
    metered_us = statistics.median(samples["metered"]) * 1e6
    # collection cost, for the record
    t0 = time.perf_counter()
    for _ in range(20):
        produce(processor.state)
    collect_ms = (time.perf_counter() - t0) / 20 * 1e3
    return {"span_us": plain_us, "with_processor_us": metered_us, "processor_us": metered_us - plain_us,
            "ratio": (metered_us - plain_us) / plain_us, "produce_ms": collect_ms}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    r = measure(args.spans, args.rounds)
    print(f"python {sys.version.split()[0]}; {args.rounds} rounds x {args.spans} spans, medians")
    print(f"span create+end, no processor : {r['span_us']:7.2f} us")
    print(f"same with spanmeter processor : {r['with_processor_us']:7.2f} us")
    print(f"processor cost per span       : {r['processor_us']:7.2f} us = {r['ratio']:.3f}x the span")
    print(f"produce() of the state        : {r['produce_ms']:7.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
