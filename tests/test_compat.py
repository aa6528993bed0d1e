"""The supported OpenTelemetry range (1.39 on): what differs across SDK and exporter versions.

scripts/test.sh runs this file with the newest versions (.venv) and with the oldest
(.venv-lowest, opentelemetry-sdk 1.39.0 / exporter-prometheus 0.60b0).
"""

from __future__ import annotations

import subprocess
from importlib import metadata

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import spanmeter

SDK = metadata.version("opentelemetry-sdk")
EXPORTER = metadata.version("opentelemetry-exporter-prometheus")
JOINABLE = hasattr(MeterProvider, "add_metric_reader")  # opentelemetry-sdk 1.43 on


def _workload(meter) -> None:
    """One successful and one failed call: GenAI points with and without ``error_type``."""
    with meter.agent_run("compat"):
        with meter.model_call("gpt-4o", provider="openai") as call:
            call.record_usage(input_tokens=10, output_tokens=5)
        with meter.model_call("gpt-4o", provider="openai") as call:
            call.fail("rate_limit_exceeded")


def test_a_metric_with_points_of_different_label_sets_is_one_family():
    registry = CollectorRegistry()
    meter = spanmeter.setup(registry=registry, tracer_provider=TracerProvider(), start_server=False)
    try:
        _workload(meter)
        text = generate_latest(registry).decode()
    finally:
        meter.shutdown()
    helps = [line for line in text.splitlines() if line.startswith("# HELP gen_ai_client_inference_duration_seconds ")]
    assert len(helps) == 1, f"exporter {EXPORTER}: {helps}"
    family = next(f for f in text_string_to_metric_families(text) if f.name == "gen_ai_client_inference_duration_seconds")
    counts = {s.labels.get("error_type", ""): s.value for s in family.samples if s.name.endswith("_count")}
    assert counts == {"": 1.0, "rate_limit_exceeded": 1.0}
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_metrics_go_to_the_given_registry_only_and_leave_it_on_shutdown():
    registry = CollectorRegistry()
    meter = spanmeter.setup(registry=registry, tracer_provider=TracerProvider(), start_server=False)
    try:
        _workload(meter)
        assert registry.get_sample_value("agent_requests_total", {"agent_name": "compat", "status": "success"}) == 1
        assert REGISTRY.get_sample_value("agent_requests_total", {"agent_name": "compat", "status": "success"}) is None
    finally:
        meter.shutdown()
    assert registry.get_sample_value("agent_requests_total", {"agent_name": "compat", "status": "success"}) is None
    again = spanmeter.setup(registry=registry, tracer_provider=TracerProvider(), start_server=False)
    again.shutdown()  # the registry is free for a new spanmeter


@pytest.mark.skipif(JOINABLE, reason=f"opentelemetry-sdk {SDK} can add a reader to a MeterProvider")
def test_an_sdk_that_cannot_join_a_meter_provider_says_so_before_touching_anything():
    tracer_provider = TracerProvider()
    with pytest.raises(spanmeter.ConfigurationError, match=r"meter_provider: .*opentelemetry-sdk>=1\.43"):
        spanmeter.setup(registry=CollectorRegistry(), tracer_provider=tracer_provider,
                        meter_provider=MeterProvider(), start_server=False)  # fmt: skip
    assert not tracer_provider._active_span_processor._span_processors  # nothing attached to the app's provider
