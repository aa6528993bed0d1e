"""configure/shutdown cycles leave the app's own OpenTelemetry instruments working and one
span processor on the global tracer provider; a second configure() never silently drops
its arguments."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

import spanmeter
from spanmeter.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[2]

# A fresh interpreter: the global providers are set once per process.
_CYCLES = textwrap.dedent(
    """
    import json, logging, warnings
    from opentelemetry import metrics, trace
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families
    import spanmeter

    problems = []
    class Collect(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.WARNING:
                problems.append(record.getMessage())
    logging.getLogger().addHandler(Collect())

    spanmeter.configure(start_server=False, registry=CollectorRegistry())
    orders = metrics.get_meter("app").create_counter("app_orders")  # the app's own instrument
    orders.add(1)
    for _ in range(50):
        spanmeter.shutdown()
        orders.add(1)
        registry = CollectorRegistry()
        spanmeter.configure(start_server=False, registry=registry)
    late = metrics.get_meter("app").create_counter("app_refunds")  # made after the cycles
    orders.add(1)
    late.add(2)
    with spanmeter.agent_run("support"), spanmeter.tool_call("search"):
        pass
    spanmeter.current().state.flush()
    samples = {(s.name, s.labels.get("tool_name")): s.value
               for f in text_string_to_metric_families(generate_latest(registry).decode()) for s in f.samples}
    processors = trace.get_tracer_provider()._active_span_processor._span_processors
    print(json.dumps({
        "orders": samples.get(("app_orders_total", None)),
        "refunds": samples.get(("app_refunds_total", None)),
        "search_calls": samples.get(("agent_tool_calls_total", "search")),
        "processors": [type(p).__name__ for p in processors],
        "targets": [len(p.targets) for p in processors if hasattr(p, "targets")],
        "problems": problems,
    }))
    spanmeter.shutdown()
    """
)


def test_fifty_configure_shutdown_cycles_keep_the_apps_instruments_and_one_processor():
    out = subprocess.run([sys.executable, "-c", _CYCLES], capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")})  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["problems"] == []  # e.g. "A shutdown MeterProvider can not provide a Meter"
    # Each spanmeter reader counts from when it was attached, like a restarted exporter.
    assert result["orders"] == 1.0 and result["refunds"] == 2.0
    assert result["search_calls"] == 1.0  # counted once, not once per stopped processor
    assert result["processors"] == ["ProcessorSlot"] and result["targets"] == [1]


def test_configure_again_returns_the_instance_or_names_the_settings_it_would_change():
    registry = CollectorRegistry()
    first = spanmeter.configure(port=0, registry=registry)
    try:
        assert spanmeter.configure(port=0, registry=registry) is first
        with pytest.raises(ConfigurationError) as error:
            spanmeter.configure(port=0, registry=registry, host="127.0.0.2", basic_auth=("prometheus", "pw-123"))
        message = str(error.value)
        assert "basic_auth" in message and "host" in message and "shutdown()" in message
        assert "pw-123" not in message and "port" not in message and "registry" not in message
        with pytest.raises(ConfigurationError, match="tls_certfile"):
            spanmeter.configure(port=0, registry=registry, tls_certfile="server.pem")
        with pytest.raises(ConfigurationError, match="registry"):
            spanmeter.configure(port=0)
        with pytest.raises(TypeError):
            spanmeter.configure(port=0, registry=registry, no_such_setting=1)
        assert spanmeter.current() is first  # unchanged, still serving without auth
        assert httpx.get(first.metrics_url, timeout=10).status_code == 200
    finally:
        spanmeter.shutdown()
