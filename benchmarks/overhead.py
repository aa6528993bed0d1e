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
from spanmeter.pricing import Pricer
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
    providers = {"plain": TracerProvider(), "unpriced": TracerProvider(), "priced": TracerProvider()}
    unpriced = SpanmeterProcessor(State())
    priced = SpanmeterProcessor(State(), pricer=Pricer.create())
    providers["unpriced"].add_span_processor(unpriced)
    providers["priced"].add_span_processor(priced)
    tracers = {name: tp.get_tracer("bench") for name, tp in providers.items()}
    agents = {
        name: tracer.start_span(
            "invoke_agent support", attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support"}
        )
        for name, tracer in tracers.items()
    }
    for name in tracers:  # warm up (and resolve the price once)
        _one_batch(tracers[name], agents[name], 2000)
    samples: dict[str, list[float]] = {name: [] for name in tracers}
    for _ in range(rounds):
        for name in tracers:
            samples[name].append(_one_batch(tracers[name], agents[name], spans))
    us = {name: statistics.median(values) * 1e6 for name, values in samples.items()}
    t0 = time.perf_counter()
    for _ in range(20):
        produce(priced.state)
    collect_ms = (time.perf_counter() - t0) / 20 * 1e3
    return {
        "span_us": us["plain"],
        "with_processor_us": us["priced"],
        "processor_us": us["priced"] - us["plain"],
        "ratio": (us["priced"] - us["plain"]) / us["plain"],
        "pricing_us": us["priced"] - us["unpriced"],
        "pricing_ratio": (us["priced"] - us["unpriced"]) / us["plain"],
        "produce_ms": collect_ms,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    r = measure(args.spans, args.rounds)
    print(f"python {sys.version.split()[0]}; {args.rounds} rounds x {args.spans} spans, medians")
    print(f"span create+end, no processor : {r['span_us']:7.2f} us")
    print(f"same with spanmeter (priced)  : {r['with_processor_us']:7.2f} us")
    print(f"processor cost per span       : {r['processor_us']:7.2f} us = {r['ratio']:.3f}x the span")
    print(f"  of which pricing            : {r['pricing_us']:7.2f} us = {r['pricing_ratio']:.3f}x the span")
    print(f"produce() of the state        : {r['produce_ms']:7.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
