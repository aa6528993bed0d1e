"""Per-span cost of attribution labels and of series expiry, side by side; prints a table.

    PYTHONPATH=src python benchmarks/attribution_ttl.py

Each round creates runs of one agent span and two inference spans (20 tenants) through
spanmeter's processor and aggregates them, for each configuration in turn (paired rounds,
so a busy machine slows all alike); medians of 7 rounds of 9,000 spans, CPU per span in
microseconds and the ratio to the default configuration.
"""

from __future__ import annotations

import statistics
import time

from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

import spanmeter

RUNS, ROUNDS = 3000, 7
CONFIGS = {
    "default": {},
    "attribution": {"attribution": {"tenant": "app.tenant_id"}},
    "series_ttl": {"series_ttl_seconds": 86400},
    "both": {"attribution": {"tenant": "app.tenant_id"}, "series_ttl_seconds": 86400},
}
_RUN = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support"}
_CALL = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.provider.name": "openai",
         "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 20}  # fmt: skip


def build(**settings):
    provider = TracerProvider()
    meter = spanmeter.setup(start_server=False, registry=CollectorRegistry(), tracer_provider=provider,
                            price_catalogue=False, prices={"price": [{"model": "gpt-4o", "input": 2.5, "output": 10}]},
                            **settings)  # fmt: skip
    return meter, provider.get_tracer("bench")


def one_round(meter, tracer) -> float:
    """CPU microseconds per span, aggregation included."""
    start = time.process_time()
    for n in range(RUNS):
        with tracer.start_as_current_span("invoke_agent support", attributes={**_RUN, "app.tenant_id": f"t{n % 20}"}):
            for _ in range(2):
                with tracer.start_as_current_span("chat gpt-4o", attributes=_CALL):
                    pass
    meter.state.flush()
    return (time.process_time() - start) / (3 * RUNS) * 1e6


def main() -> int:
    built = {name: build(**settings) for name, settings in CONFIGS.items()}
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for _ in range(ROUNDS):
        for name, (meter, tracer) in built.items():
            times[name].append(one_round(meter, tracer))
    base = statistics.median(times["default"])
    print(f"{'configuration':14s} {'us/span':>8s} {'ratio':>6s}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:14s} {median:8.2f} {median / base:6.3f}x")
    for meter, _ in built.values():
        meter.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
