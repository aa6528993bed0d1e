"""OTLP push in one process: settings, what reaches a real OTLP receiver, lifecycle."""

from __future__ import annotations

import logging
import socket

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import REGISTRY, CollectorRegistry

import spanmeter
from spanmeter import otlp
from spanmeter.config import ConfigurationError
from tests import otlp_workload as workload
from tests.conftest import Scrape
from tests.otlp_receiver import CUMULATIVE, OtlpGrpcReceiver, OtlpHttpReceiver

HOUR = 3600.0  # an interval that never ticks during a test: exports come from flushes


@pytest.fixture
def receiver():
    r = OtlpHttpReceiver()
    yield r
    r.close()


@pytest.fixture
def grpc_receiver():
    r = OtlpGrpcReceiver()
    yield r
    r.close()


def push_only(endpoint, **kwargs):
    kwargs.setdefault("tracer_provider", TracerProvider())
    kwargs.setdefault("otlp_interval_seconds", HOUR)
    return spanmeter.setup(otlp=True, otlp_endpoint=endpoint, prometheus=False, service_name="support-bot", **kwargs)


# --- settings ------------------------------------------------------------------------------
def test_settings_precedence_argument_then_environment_then_default():
    default = otlp.resolve(environ={})
    assert (default.metrics_protocol, default.endpoint, default.interval_seconds) == ("http/protobuf", None, 60.0)
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_METRIC_EXPORT_INTERVAL": "5000"}
    from_env = otlp.resolve(environ=env)
    assert (from_env.metrics_protocol, from_env.spans_protocol, from_env.interval_seconds) == ("grpc", "grpc", 5.0)
    per_signal = otlp.resolve(environ={**env, "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf"})
    assert (per_signal.metrics_protocol, per_signal.spans_protocol) == ("http/protobuf", "grpc")
    argument = otlp.resolve(protocol="http/protobuf", interval_seconds=2, endpoint="http://127.0.0.1:4318/", environ=env)
    assert (argument.metrics_protocol, argument.interval_seconds, argument.endpoint) == (
        "http/protobuf", 2.0, "http://127.0.0.1:4318",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "env", "message"),
    [
        ({"protocol": "http/json"}, {}, "otlp_protocol must be one of http/protobuf, grpc, got 'http/json'"),
        ({}, {"OTEL_EXPORTER_OTLP_PROTOCOL": "udp"}, "OTEL_EXPORTER_OTLP_PROTOCOL must be one of"),
        ({"endpoint": "127.0.0.1:4318"}, {}, "otlp_endpoint must be a URL such as http://127.0.0.1:4318"),
        ({"interval_seconds": 0}, {}, "otlp_interval_seconds must be a number of seconds > 0, got 0"),
        ({}, {"OTEL_METRIC_EXPORT_INTERVAL": "soon"}, "OTEL_METRIC_EXPORT_INTERVAL must be a number of milliseconds"),
        ({"headers": {"x-token": 3}}, {}, "otlp_headers must map header names to string values"),
    ],
)
def test_bad_otlp_settings_fail_at_configuration_naming_the_setting(kwargs, env, message):
    with pytest.raises(ConfigurationError) as err:
        otlp.resolve(environ=env, **kwargs)
    assert message in str(err.value)


def test_otlp_options_without_otlp_true_fail_instead_of_doing_nothing():
    with pytest.raises(ConfigurationError, match="otlp_endpoint, otlp_spans given but OTLP push is off: pass otlp=True"):
        spanmeter.setup(start_server=False, registry=CollectorRegistry(), otlp_endpoint="http://127.0.0.1:4318",
                        otlp_spans=True)  # fmt: skip


def test_turning_off_both_prometheus_and_otlp_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="prometheus=False and no otlp=True: nothing would export"):
        spanmeter.setup(prometheus=False)


def test_a_delta_temporality_preference_warns_that_spanmeters_metrics_stay_cumulative(caplog):
    with caplog.at_level(logging.WARNING, logger="spanmeter"):
        otlp.resolve(environ={"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta"})
    assert "spanmeter's metrics stay cumulative" in caplog.text


# --- what arrives -----------------------------------------------------------------------------
def test_push_alone_delivers_exact_totals_with_the_worker_identity_and_no_prometheus_reader(receiver):
    meter = push_only(receiver.url)
    workload.run(3, agent="otlp-alone", failing_tools=2, api=meter)
    meter.shutdown()  # flushes the last numbers

    assert workload.observed(receiver, agent="otlp-alone") == workload.expected(3, failing_tools=2)
    (instance,) = receiver.instances()
    point = next(iter(receiver.latest("agent_requests").values()))
    assert point.resource["service.instance.id"] == instance and point.resource["service.name"] == "support-bot"
    assert point.resource[otlp.METERED] is True
    assert (point.temporality, point.monotonic, point.unit) == (CUMULATIVE, True, "{request}")
    assert {p.metric for p in receiver.points()} >= {"spanmeter_info", "gen_ai.client.inference.duration"}
    # nothing was registered for Prometheus: the app's global registry never sees these series
    assert REGISTRY.get_sample_value("agent_requests_total", {"agent_name": "otlp-alone", "status": "success"}) is None
    assert meter.metrics_url is None and meter.reader is None


def test_each_push_repeats_the_process_start_time_with_growing_cumulative_totals(receiver):
    meter = push_only(receiver.url, otlp_interval_seconds=0.05)
    try:
        workload.run(1, api=meter)
        assert receiver.wait_for(lambda: receiver.total("agent_requests") == 1)
        first = next(iter(receiver.latest("agent_requests").values()))
        workload.run(2, api=meter)
        assert receiver.wait_for(lambda: receiver.total("agent_requests") == 3)  # by the interval, no flush
        later = next(iter(receiver.latest("agent_requests").values()))
    finally:
        meter.shutdown()
    assert later.start_time == first.start_time == meter.state.start_ns
    assert later.time > first.time


def test_beside_the_prometheus_endpoint_both_show_the_same_numbers(receiver):
    meter = spanmeter.setup(port=0, registry=CollectorRegistry(), tracer_provider=TracerProvider(), otlp=True,
                            otlp_endpoint=receiver.url, otlp_interval_seconds=HOUR)  # fmt: skip
    try:
        workload.run(2, failing_tools=1, api=meter)
        meter.state.flush()
        scrape = Scrape(httpx.get(meter.metrics_url, timeout=10).text)
    finally:
        meter.shutdown()
    pushed = workload.observed(receiver)
    assert pushed == workload.expected(2, failing_tools=1)
    assert scrape.total("agent_requests_total", agent_name="support") == pushed["agent_requests"]
    assert scrape.value("agent_token_usage_total", agent_name="support", token_type="input") == pushed["input_tokens"]
    assert scrape.value("agent_tool_calls_total", tool_name="refund", status="error") == pushed["tool_error"]


def test_the_standard_environment_variables_choose_endpoint_and_headers(receiver, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=agents")
    meter = spanmeter.setup(otlp=True, prometheus=False, tracer_provider=TracerProvider(), otlp_interval_seconds=HOUR)
    workload.run(1, api=meter)
    meter.shutdown()
    assert workload.observed(receiver) == workload.expected(1)
    assert receiver.headers and all(h.get("x-tenant") == "agents" for h in receiver.headers)


def test_the_header_argument_wins_over_the_environment(receiver, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=from-env")
    meter = push_only(receiver.url, otlp_headers={"x-tenant": "from-arg"})
    meter.shutdown()
    assert receiver.headers and all(h.get("x-tenant") == "from-arg" for h in receiver.headers)


def test_grpc_protocol_delivers_the_same_totals(grpc_receiver):
    meter = push_only(grpc_receiver.url, otlp_protocol="grpc")
    workload.run(2, failing_tools=1, api=meter)
    meter.shutdown()
    assert workload.observed(grpc_receiver) == workload.expected(2, failing_tools=1)


def test_spans_are_exported_too_when_asked_and_marked_as_already_metered(receiver):
    meter = push_only(receiver.url, tracer_provider=None, otlp_spans=True)
    workload.run(1, api=meter)
    meter.shutdown()
    spans = receiver.spans()
    assert sorted(span.name for _, span in spans) == [
        "chat gpt-4o", "chat gpt-4o", "execute_tool search_orders", "invoke_agent support",
    ]  # fmt: skip
    resource = spans[0][0]
    assert resource[otlp.METERED] is True and resource["service.instance.id"] in receiver.instances()
    assert workload.observed(receiver) == workload.expected(1)


def test_spans_are_not_exported_unless_asked(receiver):
    meter = push_only(receiver.url, tracer_provider=None)
    workload.run(1, api=meter)
    meter.shutdown()
    assert receiver.span_requests == [] and receiver.metric_requests


def test_joins_the_apps_meter_provider_and_leaves_it_working_after_shutdown(receiver):
    app_reader = InMemoryMetricReader()
    app_provider = MeterProvider(metric_readers=[app_reader])
    meter = push_only(receiver.url, meter_provider=app_provider)
    app_provider.get_meter("app").create_counter("app_requests").add(3)
    workload.run(1, api=meter)
    meter.shutdown()
    assert receiver.total("app_requests") == 3  # the app's own instrument went out by OTLP too
    assert workload.observed(receiver) == workload.expected(1)
    sent = len(receiver.metric_requests)
    app_provider.get_meter("app").create_counter("app_requests").add(1)
    data = app_reader.get_metrics_data()
    assert [p.value for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
            if m.name == "app_requests" for p in m.data.data_points] == [4]  # fmt: skip
    app_provider.force_flush()
    assert len(receiver.metric_requests) == sent  # spanmeter's reader is detached


def test_an_unreachable_collector_never_raises_into_the_application(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")  # seconds, in the Python exporters: short retries
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there once closed
    meter = push_only(refused)
    workload.run(1, api=meter)  # the app's work goes on
    meter.shutdown()  # the failed flush is logged by the exporter, not raised
    assert meter.state.snapshot()["faults"] == [((), {"count": 0})]


def test_a_missing_exporter_package_is_a_configuration_error_naming_the_extra(monkeypatch):
    real = otlp.importlib.util.find_spec
    monkeypatch.setattr(otlp.importlib.util, "find_spec",
                        lambda name, *a: None if name.endswith(".proto.grpc") else real(name, *a))  # fmt: skip
    with pytest.raises(ConfigurationError, match=r"needs opentelemetry-exporter-otlp-proto-grpc: pip install 'spanmeter\[otlp\]'"):
        otlp.resolve(protocol="grpc", environ={})
    assert otlp.resolve(environ={}).metrics_protocol == "http/protobuf"  # the other one is still there


def test_every_exported_inference_span_with_a_price_carries_its_cost(receiver):
    from tests.otlp_receiver import attributes

    meter = push_only(receiver.url, otlp_spans=True, prices={"price": [{"model": "gpt-4o", "input": 2.5, "output": 10}]},
                      price_catalogue=False)  # fmt: skip
    tracer = meter.tracer_provider.get_tracer("another-instrumentation")
    genai = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.provider.name": "openai",
             "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100}  # fmt: skip
    openinference = {"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o", "llm.provider": "openai",
                     "llm.token_count.prompt": 2000, "llm.token_count.completion": 200}  # fmt: skip
    for name, attrs in (("official", genai), ("openinference", openinference),
                        ("unknown-model", {**genai, "gen_ai.request.model": "acme-llm"}),
                        ("legacy-cost", {**genai, "llm.cost.total": 0.25}),
                        ("priced-upstream", {**genai, "gen_ai.usage.cost.amount": 0.5,
                                             "gen_ai.usage.cost.currency": "USD",
                                             "gen_ai.usage.cost.source": "provider"}),
                        ("openlit-yen", {**genai, "gen_ai.usage.cost": 75.0, "gen_ai.usage.cost.currency": "JPY"}),
                        ("not-genai", {"http.request.method": "POST"})):  # fmt: skip
        tracer.start_span(name, attributes=attrs).end()
    with meter.model_call("gpt-4o", provider="openai") as call:  # priced before it ended
        call.record_usage(input_tokens=10, output_tokens=1)
    meter.shutdown()
    exported = {span.name: attributes(span.attributes) for _, span in receiver.spans()}
    cost = {name: a.get("gen_ai.usage.cost.amount") for name, a in exported.items()}
    assert cost == {
        "official": pytest.approx((1000 * 2.5 + 100 * 10) / 1e6, abs=1e-15),
        "openinference": pytest.approx((2000 * 2.5 + 200 * 10) / 1e6, abs=1e-15),
        "unknown-model": None,  # no price: no cost, never $0
        "legacy-cost": 0.25,
        "priced-upstream": 0.5,
        "openlit-yen": None,  # its own currency: no USD amount beside it
        "not-genai": None,
        "chat gpt-4o": pytest.approx((10 * 2.5 + 1 * 10) / 1e6, abs=1e-15),
    }
    assert exported["official"]["gen_ai.usage.cost.currency"] == "USD"
    assert exported["official"]["gen_ai.usage.cost.source"] == "local"
    assert exported["official"]["spanmeter.cost.price_source"] == "override"
    assert exported["priced-upstream"]["gen_ai.usage.cost.source"] == "provider"  # left as it was
    assert exported["openlit-yen"]["gen_ai.usage.cost.currency"] == "JPY"  # left as it was
    assert exported["official"]["gen_ai.usage.input_tokens"] == 1000  # the copy keeps everything else
