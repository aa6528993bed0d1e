"""What OTLP push costs the application, as ratios measured side by side in one run.

The same inference span (with token usage, under an agent run, through spanmeter's emit
API) on three spanmeters in alternating batches: Prometheus reader only; plus OTLP metric
push every 0.1 s to a real OTLP/HTTP receiver on 127.0.0.1; plus OTLP export of every span.
Also the time of one push (collect, produce, encode, POST) in the pushing thread.

    PYTHONPATH=src:. python benchmarks/otlp_push.py [--spans 1000] [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

import spanmeter
from tests.otlp_receiver import OtlpHttpReceiver


def _batch(meter, n: int) -> float:
    start = time.perf_counter()
    with meter.agent_run("bench"):
        for _ in range(n):
            with meter.model_call("gpt-4o", provider="openai") as call:
                call.record_usage(input_tokens=100, output_tokens=20)
    return (time.perf_counter() - start) / n * 1e6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=1000)  # below the span queue's 2048
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    receiver = OtlpHttpReceiver()
    common = {"start_server": False, "tracer_provider": None}
    push = {"otlp": True, "otlp_endpoint": receiver.url, "otlp_interval_seconds": 0.1}
    variants = {
        "prometheus reader only": {},
        "+ OTLP metric push / 0.1 s": push,
        "+ OTLP span export": {**push, "otlp_spans": True},
    }
    meters = {}
    for name, extra in variants.items():
        kwargs = {**common, **extra, "registry": CollectorRegistry(), "tracer_provider": TracerProvider()}
        meters[name] = spanmeter.setup(**kwargs)
    try:
        times = {name: [] for name in meters}
        for _ in range(args.rounds):
            for name, meter in meters.items():
                times[name].append(_batch(meter, args.spans))
                if meter.push is not None and meter.push.span_processor is not None:
                    meter.push.span_processor.force_flush()  # keep the queue from dropping spans
        base = statistics.median(times["prometheus reader only"])
        for name, values in times.items():
            median = statistics.median(values)
            print(f"{name:28s} {median:7.1f} us per span   {median / base:5.2f}x")
        meter = meters["+ OTLP metric push / 0.1 s"]
        pushes = []
        for _ in range(30):
            start = time.perf_counter()
            meter.push.reader.force_flush()
            pushes.append((time.perf_counter() - start) * 1e3)
        print(f"one push (collect + produce + encode + POST): {statistics.median(pushes):.2f} ms "
              f"({len(receiver.metric_requests)} pushes received)")  # fmt: skip
    finally:
        for meter in meters.values():
            meter.shutdown()
        receiver.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
