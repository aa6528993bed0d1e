"""configure()/setup(): precedence, validation, endpoint lifecycle."""

from __future__ import annotations

import inspect
import pydoc
import re
import socket
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

import spanmeter
from spanmeter.config import ConfigurationError, resolve_endpoint


def test_endpoint_precedence_argument_then_environment_then_loopback_default():
    assert resolve_endpoint(environ={}) == ("127.0.0.1", 9464)
    env = {"OTEL_EXPORTER_PROMETHEUS_HOST": "0.0.0.0", "OTEL_EXPORTER_PROMETHEUS_PORT": "9555"}
    assert resolve_endpoint(environ=env) == ("0.0.0.0", 9555)
    assert resolve_endpoint("127.0.0.2", 9000, environ=env) == ("127.0.0.2", 9000)


@pytest.mark.parametrize(
    ("kwargs", "env", "message"),
    [
        ({}, {"OTEL_EXPORTER_PROMETHEUS_PORT": "ninety"}, "OTEL_EXPORTER_PROMETHEUS_PORT must be a TCP port"),
        ({"port": 70000}, {}, "port must be a TCP port number (0-65535), got 70000"),
    ],
)
def test_bad_endpoint_settings_fail_at_configuration_with_the_setting_named(kwargs, env, message):
    with pytest.raises(ConfigurationError) as err:
        resolve_endpoint(environ=env, **kwargs)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"label_limits": {"modle": 5}}, "label_limits has unknown label(s) ['modle']"),
        ({"label_limits": {"model": 0}}, "label_limits['model'] must be an int >= 1"),
        ({"quality_window_seconds": 0}, "quality_window_seconds must be a number of seconds > 0"),
        ({"max_open_spans": 1}, "max_open_spans must be an int >= 2"),
    ],
)
def test_bad_options_fail_at_setup(kwargs, message):
    with pytest.raises(ValueError) as err:
        spanmeter.setup(start_server=False, registry=CollectorRegistry(), **kwargs)
    assert message in str(err.value)


def test_the_endpoint_binds_loopback_by_default_and_stops_on_shutdown():
    meter = spanmeter.setup(port=0, registry=CollectorRegistry(), tracer_provider=TracerProvider())
    host, port = meter.address
    assert host == "127.0.0.1"
    assert httpx.get(meter.metrics_url).status_code == 200
    meter.shutdown()
    meter.shutdown()  # twice is fine
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_a_busy_port_is_a_configuration_error_naming_the_fix():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigurationError, match=f"cannot serve metrics on 127.0.0.1:{port}.*port="):
            spanmeter.setup(port=port, registry=CollectorRegistry(), tracer_provider=TracerProvider())


def _service_names(registry) -> set[str]:
    return {s.labels.get("service_name") for m in registry.collect() for s in m.samples if s.name == "target_info"}


def test_service_name_argument_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    for kwargs, expected in (({"service_name": "from-arg"}, "from-arg"), ({}, "from-env")):
        reg = CollectorRegistry()
        meter = spanmeter.setup(start_server=False, registry=reg, **kwargs)
        try:
            assert _service_names(reg) == {expected}
        finally:
            meter.shutdown()


def test_joins_a_meter_provider_the_app_already_has():
    app_reader = InMemoryMetricReader()
    app_provider = MeterProvider(metric_readers=[app_reader])
    reg = CollectorRegistry()
    meter = spanmeter.setup(start_server=False, registry=reg, meter_provider=app_provider,
                            tracer_provider=TracerProvider())  # fmt: skip
    app_provider.get_meter("app").create_counter("app_requests").add(3)
    with meter.agent_run("joined"):
        pass
    meter.state.flush()
    assert reg.get_sample_value("app_requests_total") == 3  # the app's own instrument, same endpoint
    assert reg.get_sample_value("agent_requests_total", {"agent_name": "joined", "status": "success"}) == 1
    meter.shutdown()  # detaches its reader and leaves the app's provider and reader working
    assert reg.get_sample_value("agent_requests_total", {"agent_name": "joined", "status": "success"}) is None
    app_provider.get_meter("app").create_counter("app_requests").add(1)
    data = app_reader.get_metrics_data()
    points = [p for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
              if m.name == "app_requests" for p in m.data.data_points]  # fmt: skip
    assert [p.value for p in points] == [4]


def test_configure_is_idempotent_until_shutdown():
    registry = CollectorRegistry()
    first = spanmeter.configure(port=0, registry=registry)
    try:
        assert spanmeter.configure(port=0, registry=registry) is first
        assert spanmeter.current() is first
    finally:
        spanmeter.shutdown()
    assert spanmeter.current() is None
    second = spanmeter.configure(port=0, registry=CollectorRegistry())
    try:
        assert second is not first
    finally:
        spanmeter.shutdown()


def test_recording_before_configure_is_a_no_op():
    assert spanmeter.current() is None
    spanmeter.record_quality("a", "relevance", 0.5)
    spanmeter.record_conversation("a", turns=2)


def test_configure_has_setups_explicit_typed_signature():
    configure, setup = inspect.signature(spanmeter.configure), inspect.signature(spanmeter.setup)
    assert configure.parameters == setup.parameters  # one definition, shown by help() and IDEs
    assert "shutdown_timeout_seconds" in configure.parameters and "evaluator" in configure.parameters
    untyped = [n for n, p in configure.parameters.items() if p.annotation is inspect.Parameter.empty]
    assert untyped == []
    assert "basic_auth" in pydoc.render_doc(spanmeter.configure)


def test_readme_settings_tables_list_every_configure_argument():
    # The tables headed "| setting | argument | environment | default |" (configure's, and
    # the OTLP push one) name each argument as `name=...` in their argument column.
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    documented: set[str] = set()
    in_table = False
    for line in readme.splitlines():
        if line.startswith("| setting | argument |"):
            in_table = True
        elif in_table and line.startswith("|"):
            argument_column = line.split("|")[2]
            documented |= set(re.findall(r"`(\w+)=", argument_column))
        else:
            in_table = False
    missing = set(inspect.signature(spanmeter.configure).parameters) - documented
    assert missing == set(), f"add a row to the README's configure table for {sorted(missing)}"
    assert documented <= set(inspect.signature(spanmeter.configure).parameters)
