"""Stale series expire: with series_ttl_seconds, series untouched that long leave the
exposition and memory, without ever making an exported counter go down.

Time is simulated: the state's clock is injected, nothing sleeps."""

from __future__ import annotations

import time

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

import spanmeter
from spanmeter import emit
from spanmeter.aggregate import State, produce
from spanmeter.processor import SpanmeterProcessor
from tests.conftest import Scrape, wait_until

HOUR, DAY = 3600.0, 86400.0


class Clock:
    """Monotonic seconds that the test moves."""

    def __init__(self):
        self.t = time.monotonic()  # where the state's own clock was when a test swaps this one in

    def __call__(self) -> float:
        return self.t


def stack(ttl=DAY):
    clock = Clock()
    state = State(series_ttl=ttl, clock=clock)
    processor = SpanmeterProcessor(state, reconcile_window=0)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    return clock, state, provider


def call(provider, model, agent="support", error=None, tokens=10):
    with emit.agent_run(agent, tracer_provider=provider):
        with emit.model_call(model, provider="openai", tracer_provider=provider) as handle:
            handle.record_usage(input_tokens=tokens, output_tokens=1)
            if error:
                handle.fail(error)


def points(metrics, name) -> dict[tuple, object]:
    for metric in metrics:
        if metric.name == name:
            return {tuple(sorted(p.attributes.items())): p for p in metric.data.data_points}
    return {}


def test_months_of_model_churn_keep_memory_bounded_and_labels_free():
    """A new model every hour for 75 days (1,800 models, 9 times the model label's limit of
    200) with a one-day TTL: at most a day's worth of series is kept, no model is ever
    collapsed into ``other``, and the model used all along keeps counting."""
    clock, state, provider = stack(ttl=DAY)
    hours = 1800
    largest = 0
    for hour in range(hours):
        clock.t += HOUR
        call(provider, "gpt-4o")
        call(provider, f"model-{hour}")
        metrics = produce(state)  # a collection: scrape or push
        largest = max(largest, len(state.tables["model"].series))
    calls = points(metrics, "model_inference_calls")
    # a day of models, plus the sweep's slack (it runs every ttl/24) and gpt-4o
    assert largest <= 24 + 1 + 1 + 1
    assert len(calls) <= 27
    assert calls[(("agent_name", "support"), ("model_id", "gpt-4o"))].value == hours
    assert calls[(("agent_name", "support"), ("model_id", f"model-{hours - 1}"))].value == 1
    assert not state.tables["overflow"].series  # no model ever became "other"
    assert len(state.guards["model"].values) <= 27
    assert len(state.touched) <= 60 and len(state.created) <= 60  # model, agent, no_usage ... tables together
    assert len(state.tables["model"].by_raw) <= 27


def test_a_stale_series_summed_with_a_live_one_stays_so_no_counter_goes_down():
    # (support, gpt-4o, error) and (support, gpt-4o, success) are one agent_token_usage_total point
    clock, state, provider = stack(ttl=DAY)
    call(provider, "gpt-4o", error="timeout")
    before = None
    for _ in range(3 * 24):  # three days of successful calls only
        clock.t += HOUR
        call(provider, "gpt-4o")
        tokens = points(produce(state), "agent_token_usage")
        value = tokens[(("agent_name", "support"), ("model_id", "gpt-4o"), ("token_type", "input"))].value
        assert before is None or value == before + 10  # never down, never a reset
        before = value
    errors = [k for k in state.tables["model"].series if k[5] is not None]
    assert len(errors) == 1  # kept: the error series is still part of the live points
    clock.t += 2 * DAY  # now nothing is touched: everything goes
    metrics = produce(state)
    assert points(metrics, "agent_token_usage") == {}
    assert state.tables["model"].series == {} and state.tables["agent"].series == {}


def test_an_expired_series_leaves_the_scrape_and_comes_back_from_zero_with_a_new_start():
    clock = Clock()
    meter = spanmeter.setup(port=0, registry=CollectorRegistry(), tracer_provider=TracerProvider(),
                            series_ttl_seconds=DAY, price_catalogue=False)  # fmt: skip
    meter.state.clock = clock

    def scrape() -> Scrape:
        meter.state.flush()
        return Scrape(httpx.get(meter.metrics_url, timeout=10).text)

    try:
        for _ in range(3):
            call(meter.tracer_provider, "retired-model")
        first = scrape()
        assert first.value("model_inference_calls_total", model_id="retired-model") == 3
        start = points(produce(meter.state), "model_inference_calls")
        (old,) = start.values()

        clock.t += DAY + HOUR + 1  # untouched for longer than the TTL (and the sweep's hour)
        gone = scrape()
        assert gone.label_sets("model_inference_calls_total") == []
        assert gone.label_sets("agent_requests_total") == []
        assert gone.value("spanmeter_processor_errors_total") == 0  # health series never expire

        call(meter.tracer_provider, "retired-model")
        back = scrape()
        assert back.value("model_inference_calls_total", model_id="retired-model") == 1  # from zero again
        (new,) = points(produce(meter.state), "model_inference_calls").values()
        assert new.start_time_unix_nano > old.start_time_unix_nano  # a new counter, as OTLP sees it
    finally:
        meter.shutdown()


def test_without_a_ttl_nothing_is_stamped_or_dropped():
    state = State(clock=Clock())
    processor = SpanmeterProcessor(state, reconcile_window=0)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    call(provider, "gpt-4o")
    state.clock.t += 1000 * DAY
    produce(state)
    assert state.touched == {} and state.created == {}
    assert len(state.tables["model"].series) == 1


@pytest.mark.parametrize("value", [0, 59, -1, float("inf"), True, "86400"])
def test_bad_series_ttl_is_a_configuration_error(value):
    with pytest.raises(spanmeter.ConfigurationError, match="series_ttl_seconds"):
        spanmeter.setup(start_server=False, registry=CollectorRegistry(), series_ttl_seconds=value)


# --- what a real Prometheus sees --------------------------------------------------------------


@pytest.mark.skipif(not __import__("shutil").which("prometheus"), reason="needs Debian's prometheus package")
def test_prometheus_sees_an_expired_series_go_stale_and_its_return_as_a_counter_reset():
    from dashboards import assets
    from spanmeter.prometheus import LocalPrometheus

    clock = Clock()
    meter = spanmeter.setup(port=0, registry=CollectorRegistry(), tracer_provider=TracerProvider(),
                            series_ttl_seconds=DAY, price_catalogue=False, reconcile_window_seconds=0)  # fmt: skip
    meter.state.clock = clock
    host, port = meter.address
    prom = LocalPrometheus(assets.PROMETHEUS_DIR, f"{host}:{port}", scrape_interval="1s", evaluation_interval="1s")
    prom.start()
    series = 'model_inference_calls_total{model_id="retired-model"}'
    value = lambda: [float(s["value"][1]) for s in prom.query(series)]  # noqa: E731
    try:
        for _ in range(3):
            call(meter.tracer_provider, "retired-model")
        call(meter.tracer_provider, "gpt-4o")
        wait_until(lambda: value() == [3.0], "the first value", timeout=30)
        clock.t += DAY + HOUR + 1
        call(meter.tracer_provider, "gpt-4o")  # still in use: stays
        wait_until(lambda: value() == [], "the staleness marker of the expired series", timeout=30)
        assert prom.query('model_inference_calls_total{model_id="gpt-4o"}')
        call(meter.tracer_provider, "retired-model")
        wait_until(lambda: value() == [1.0], "the series back from zero", timeout=30)
        # across the gap, Prometheus counts one reset, and no negative increase
        assert [float(s["value"][1]) for s in prom.query(f"resets({series}[1m])")] == [1.0]
        increase = [float(s["value"][1]) for s in prom.query(f"increase({series}[1m])")]
        assert len(increase) == 1 and increase[0] >= 0
    finally:
        prom.stop()
        meter.shutdown()


def test_a_sweep_keeps_the_finish_reason_values_live_series_still_show_so_the_label_limit_holds():
    """finish_reason values live inside the model series, not in a table key: a sweep (of any
    other stale series) must not forget them, or each sweep admits a new batch of values and
    model_finish_reasons_total grows past the label's limit."""
    clock = Clock()
    state = State(series_ttl=DAY, clock=clock, label_limits={"finish_reason": 2})
    provider = TracerProvider()
    provider.add_span_processor(SpanmeterProcessor(state, reconcile_window=0))

    def finish(model, reason):
        with emit.model_call(model, provider="openai", tracer_provider=provider) as handle:
            handle.record_usage(input_tokens=1, output_tokens=1)
            handle.record_response(finish_reasons=[reason])

    for n in range(4):
        call(provider, "retired-model")
        for day in range(3):
            clock.t += DAY / 2
            finish("gpt-4o", f"reason-{n}-{day}")  # the live series: a new free-form reason each time
            produce(state)
        clock.t += DAY  # retired-model is stale now: the next collection sweeps it
        produce(state)
    labels = {p.attributes["finish_reason"] for p in points(produce(state), "model_finish_reasons").values()}
    assert len(labels - {"other"}) <= 2, sorted(labels)


def test_tool_call_decisions_of_a_retired_tool_expire_like_its_calls():
    clock, state, provider = stack(ttl=DAY)
    with emit.agent_run("support", tracer_provider=provider):
        with emit.tool_call("retired-tool", tracer_provider=provider) as tool:
            tool.record_decision("require_approval")
    first = points(produce(state), "agent_tool_call_decisions")
    assert [p.value for p in first.values()] == [1]
    clock.t += DAY + HOUR + 1
    metrics = produce(state)
    assert points(metrics, "agent_tool_calls") == {}
    assert points(metrics, "agent_tool_call_decisions") == {}  # gone with the tool's other series
    assert "retired-tool" not in state.guards["tool"].values  # the label no longer counts toward the limit
