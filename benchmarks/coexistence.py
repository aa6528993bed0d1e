"""What a scrape costs when spanmeter shares the registry with the app's OpenTelemetry reader.

    python benchmarks/coexistence.py [--series 500] [--rounds 200]

The app: a ``MeterProvider`` with a ``PrometheusMetricReader`` on a registry, histograms
with ``--series`` series in all. Side by side, the CPU time (``time.thread_time``, median
of paired rounds) of one ``generate_latest`` of that registry:

- the app alone (the baseline, 1.00x);
- spanmeter beside it on its own provider: spanmeter also collects the app's provider to see
  its metric names (README, "Beside an existing OpenTelemetry set-up");
- spanmeter joined to the app's provider: its reader adds spanmeter's metrics only.

spanmeter's own metrics are the same 20 model series in both.
"""

from __future__ import annotations

import argparse
import statistics
import time

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, generate_latest

import spanmeter


def app(series: int) -> tuple[CollectorRegistry, MeterProvider]:
    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    meter = provider.get_meter("app")
    for i in range(max(1, series // 10)):
        histogram = meter.create_histogram(f"app_latency_{i}", unit="s", description="Latency.")
        for j in range(10):
            histogram.record(0.1 * j, {"route": f"/r{j}"})
    return registry, provider


def with_spanmeter(registry, meter_provider=None):
    meter = spanmeter.setup(registry=registry, tracer_provider=TracerProvider(), start_server=False,
                            meter_provider=meter_provider)  # fmt: skip
    for a in range(5):
        with meter.agent_run(f"agent{a}"):
            for k in range(4):
                with meter.model_call(f"gpt-{k}", provider="openai") as call:
                    call.record_usage(input_tokens=10, output_tokens=5)
    meter.state.flush()
    return meter


def cpu_ms(registry) -> float:
    start = time.thread_time()
    generate_latest(registry)
    return (time.thread_time() - start) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args(argv)
    variants = {"the app alone": app(args.series)[0]}
    registry, _ = app(args.series)
    with_spanmeter(registry)
    variants["spanmeter beside, own provider"] = registry
    registry, provider = app(args.series)
    with_spanmeter(registry, provider)
    variants["spanmeter joined to the app's provider"] = registry
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):  # paired rounds: every variant in turn
        for name, reg in variants.items():
            samples[name].append(cpu_ms(reg))
    base = statistics.median(samples["the app alone"])
    print(f"one scrape, CPU ms (median of {args.rounds}), app: {args.series} histogram series")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"  {name:<40} {median:8.2f} ms  {median / base:5.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
