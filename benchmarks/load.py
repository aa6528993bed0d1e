#!/usr/bin/env python3
"""Load: 8 threads end inference spans flat out while a scraper reads /metrics every 100 ms.

Prints the longest scrape, the span-end latency of the application threads (p50, p99.9,
max: what spanmeter's ``on_end`` costs them, waiting included), and checks the totals are
exact: every span produced is either counted in ``model_inference_calls_total`` or shed and
counted in ``spanmeter_spans_shed_total``. Usage::

    python benchmarks/load.py                   # 8 threads x 50,000 spans
    python benchmarks/load.py --threads 4 --spans 10000 --max-backlog 5000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import httpx  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

import spanmeter  # noqa: E402

ATTRS = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini", "gen_ai.provider.name": "openai",
         "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 10}  # fmt: skip


def _total(text: str, name: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--spans", type=int, default=50_000, help="spans per thread")
    parser.add_argument("--max-backlog", type=int, default=100_000)
    args = parser.parse_args(argv)
    meter = spanmeter.setup(port=0, registry=CollectorRegistry(), tracer_provider=TracerProvider(),
                            max_backlog=args.max_backlog)  # fmt: skip
    provider = meter.tracer_provider
    end_times: list[list[float]] = [[] for _ in range(args.threads)]
    start = threading.Barrier(args.threads + 1)
    done = threading.Event()

    def work(n: int) -> None:
        tracer = provider.get_tracer("load")  # one instrumentation, as in an app
        out = end_times[n]
        clock = time.perf_counter
        start.wait()
        for _ in range(args.spans):
            span = tracer.start_span("chat gpt-4o-mini", attributes=ATTRS)
            t = clock()
            span.end()
            out.append(clock() - t)

    scrapes: list[float] = []

    def scrape_forever() -> None:
        with httpx.Client(timeout=60) as client:
            while not done.is_set():
                t = time.perf_counter()
                client.get(meter.metrics_url).raise_for_status()
                scrapes.append(time.perf_counter() - t)
                time.sleep(0.1)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(args.threads)]
    for t in threads:
        t.start()
    scraper = threading.Thread(target=scrape_forever)
    scraper.start()
    began = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    produced_in = time.perf_counter() - began
    done.set()
    scraper.join()
    meter.state.flush()
    text = httpx.get(meter.metrics_url, timeout=60).text
    counted, shed = _total(text, "model_inference_calls_total"), _total(text, "spanmeter_spans_shed_total")
    produced = args.threads * args.spans
    ends = sorted(x for per in end_times for x in per)
    print(f"{args.threads} threads x {args.spans:,} spans in {produced_in:.1f} s, scraping every 100 ms "
          f"({len(scrapes)} scrapes), max_backlog {args.max_backlog:,}")  # fmt: skip
    if scrapes:
        print(f"scrape time: median {statistics.median(scrapes) * 1e3:.1f} ms, max {max(scrapes) * 1e3:.1f} ms")
    print(f"span end (app thread): p50 {ends[len(ends) // 2] * 1e6:.1f} us, "
          f"p99.9 {ends[int(len(ends) * 0.999)] * 1e6:.1f} us, max {ends[-1] * 1e3:.2f} ms")  # fmt: skip
    print(f"totals: produced {produced:,} = counted {counted:,.0f} + shed {shed:,.0f}: "
          f"{'exact' if counted + shed == produced else 'MISMATCH'}")  # fmt: skip
    meter.shutdown()
    return 0 if counted + shed == produced else 1


if __name__ == "__main__":
    sys.exit(main())
