"""Who spends: attribution labels (tenant, team, project) on the cost, token and request
metrics, read from a span attribute, a baggage entry or the resource, inherited down the run."""

from __future__ import annotations

import httpx
import pytest
from opentelemetry import baggage, context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

import spanmeter
from spanmeter import catalog
from tests.conftest import Scrape

PRICES = {"price": [{"model": "gpt-4o", "input": 2.5, "output": 10.0}]}
COST = (100 * 2.5 + 20 * 10.0) / 1e6  # one call of 100 input, 20 output tokens


def make(attribution, tracer_provider=None, **kwargs):
    return spanmeter.setup(port=0, registry=CollectorRegistry(), price_catalogue=False, prices=PRICES,
                           tracer_provider=tracer_provider or TracerProvider(), attribution=attribution,
                           **kwargs)  # fmt: skip


def scrape(meter) -> Scrape:
    meter.state.flush()
    response = httpx.get(meter.metrics_url, timeout=10)
    response.raise_for_status()
    return Scrape(response.text)


def call(meter, model="gpt-4o"):
    with meter.model_call(model, provider="openai") as handle:
        handle.record_usage(input_tokens=100, output_tokens=20)


@pytest.fixture
def tenant_meter():
    meter = make({"tenant": "app.tenant_id"})
    yield meter
    meter.shutdown()


def test_calls_inside_a_run_get_the_tenant_the_run_span_was_given_during_the_run(tenant_meter):
    meter = tenant_meter
    for tenant, runs in (("acme", 3), ("globex", 1)):
        for _ in range(runs):
            with meter.agent_run("support") as run:
                call(meter)  # before the attribute is set: the run's final attributes count
                run.set_attribute("app.tenant_id", tenant)
                call(meter)
    result = scrape(meter)
    for tenant, runs in (("acme", 3), ("globex", 1)):
        labels = {"agent_name": "support", "tenant": tenant}
        assert result.value("agent_requests_total", status="success", **labels) == runs
        assert result.value("model_inference_calls_total", model_id="gpt-4o", **labels) == 2 * runs
        assert result.value("agent_token_usage_total", token_type="input", **labels) == 200 * runs
        assert result.value("agent_estimated_cost_dollars_total", **labels) == pytest.approx(2 * runs * COST)
        assert result.value("gen_ai_client_inference_usage_input_tokens_total", gen_ai_token_modality="unknown",
                            tenant=tenant) == 200 * runs  # fmt: skip
    # Duration histograms keep their series: no tenant label, all runs in one series.
    assert result.label_sets("agent_request_duration_seconds_count") == [{"agent_name": "support"}]
    assert result.value("agent_request_duration_seconds_count", agent_name="support") == 4
    assert result.value("model_inference_duration_seconds_count", agent_name="support", model_id="gpt-4o") == 8
    assert all("tenant" not in labels for labels in result.label_sets("agent_tool_call_duration_seconds_count"))


def test_only_the_catalogues_attributed_metrics_carry_the_label(tenant_meter):
    meter = tenant_meter
    with meter.agent_run("support") as run:
        run.set_attribute("app.tenant_id", "acme")
        call(meter)
        with meter.tool_call("search"):
            pass
    result = scrape(meter)
    with_tenant = {s.name for s in result.samples if "tenant" in s.labels}
    usage = {f"gen_ai_client_inference_usage_{t}_total"
             for t in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens",
                       "reasoning_output_tokens")}  # fmt: skip
    assert with_tenant == {
        "agent_requests_total", "model_inference_calls_total", "agent_token_usage_total",
        "agent_estimated_cost_dollars_total", *usage,
    }  # fmt: skip
    exported = {m.name for m in catalog.exported()}  # the v1.41 token histogram is opt-in
    assert {catalog.BY_NAME[n].exposed_name for n in catalog.ATTRIBUTED if n in exported} == with_tenant


def test_the_nearest_enclosing_span_with_the_attribute_wins_and_a_call_can_carry_its_own(tenant_meter):
    meter = tenant_meter
    tracer = meter.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("POST /chat", attributes={"app.tenant_id": "acme"}):
        with meter.agent_run("planner"):
            call(meter)  # inherited from the request span, two levels up
            with meter.agent_run("researcher") as inner:
                inner.set_attribute("app.tenant_id", "initech")  # nearer: wins for its calls
                call(meter)
            with meter.model_call("gpt-4o", provider="openai") as own:
                own.set_attribute("app.tenant_id", "globex")
                own.record_usage(input_tokens=100, output_tokens=20)
    result = scrape(meter)
    calls = {(s.labels["agent_name"], s.labels["tenant"]): s.value
             for s in result.samples if s.name == "model_inference_calls_total"}  # fmt: skip
    assert calls == {("planner", "acme"): 1, ("researcher", "initech"): 1, ("planner", "globex"): 1}
    assert result.value("agent_requests_total", agent_name="planner", tenant="acme") == 1
    assert result.value("agent_requests_total", agent_name="researcher", tenant="initech") == 1


def test_calls_outside_any_attributed_span_are_unknown(tenant_meter):
    call(tenant_meter)
    result = scrape(tenant_meter)
    assert result.value("model_inference_calls_total", agent_name="unknown", tenant="unknown") == 1


def test_baggage_and_resource_sources():
    provider = TracerProvider(resource=Resource.create({"service.namespace": "payments"}))
    meter = make({"team": "baggage:team", "project": "resource:service.namespace"}, tracer_provider=provider)
    try:
        token = context.attach(baggage.set_baggage("team", "checkout"))
        try:
            with meter.agent_run("support"):
                call(meter)
        finally:
            context.detach(token)
        with meter.agent_run("support"):  # no baggage: unknown
            call(meter)
        result = scrape(meter)
    finally:
        meter.shutdown()
    assert result.value("model_inference_calls_total", team="checkout", project="payments") == 1
    assert result.value("model_inference_calls_total", team="unknown", project="payments") == 1
    assert result.value("agent_requests_total", team="checkout", project="payments") == 1


def test_tenants_beyond_the_limit_become_other_and_are_counted():
    meter = make({"tenant": "app.tenant_id"}, label_limits={"tenant": 2})
    try:
        for tenant in ("a", "b", "c", "d"):
            with meter.agent_run("support") as run:
                run.set_attribute("app.tenant_id", tenant)
                call(meter)
        result = scrape(meter)
    finally:
        meter.shutdown()
    calls = {s.labels["tenant"]: s.value for s in result.samples if s.name == "model_inference_calls_total"}
    assert calls == {"a": 1, "b": 1, "other": 2}
    assert result.value("spanmeter_label_overflow_total", label="tenant") >= 2
    # a tenant's cost past the limit is still counted, under other: totals stay exact
    assert result.total("agent_estimated_cost_dollars_total") == pytest.approx(4 * COST)


def test_without_attribution_no_label_is_added(meter, scrape):
    with meter.agent_run("support") as run:
        run.set_attribute("app.tenant_id", "acme")
    assert scrape().label_sets("agent_requests_total") == [{"agent_name": "support", "status": "success"}]


@pytest.mark.parametrize(
    "attribution, message",
    [
        ({"tenant-id": "app.tenant_id"}, "not a Prometheus label name"),
        ({"__tenant": "app.tenant_id"}, "not a Prometheus label name"),
        ({"agent_name": "app.tenant_id"}, "already a label"),
        ({"model_id": "app.tenant_id"}, "already a label"),
        ({"job": "app.tenant_id"}, "already a label"),
        ({"model": "app.tenant_id"}, "already a label"),
        ({"user_id": "app.user"}, "per-person id"),
        ({"email": "app.email"}, "per-person id"),
        ({"session": "baggage:session"}, "per-person id"),
        ({"tenant": "enduser.id"}, "per-person id"),
        ({"tenant": "gen_ai.conversation.id"}, "per-person id"),
        ({"tenant": "baggage:"}, "names no key"),
        ({"tenant": 3}, "must be a string"),
        ({"a": "x", "b": "y", "c": "z", "d": "w"}, "at most 3"),
        (["tenant"], "must be a dict"),
    ],
)
def test_bad_attribution_is_a_configuration_error_naming_it(attribution, message):
    with pytest.raises(spanmeter.ConfigurationError, match=message):
        spanmeter.setup(start_server=False, registry=CollectorRegistry(), attribution=attribution)


def test_label_limits_accept_attribution_labels_only_when_configured():
    with pytest.raises(spanmeter.ConfigurationError, match="unknown label.*tenant"):
        spanmeter.setup(start_server=False, registry=CollectorRegistry(), label_limits={"tenant": 5})
    meter = spanmeter.setup(start_server=False, registry=CollectorRegistry(), label_limits={"tenant": 5},
                            attribution={"tenant": "app.tenant_id"})  # fmt: skip
    assert meter.state.guards["tenant"].limit == 5
    meter.shutdown()


def test_attributed_metrics_exist_in_the_catalogue():
    """A rename in the catalogue must not silently drop a metric's attribution."""
    assert catalog.ATTRIBUTED <= set(catalog.BY_NAME)
    assert all(catalog.BY_NAME[n].table in ("model", "agent") for n in catalog.ATTRIBUTED)
    assert not any(catalog.BY_NAME[n].kind == catalog.HISTOGRAM and catalog.BY_NAME[n].field == "duration"
                   for n in catalog.ATTRIBUTED)  # fmt: skip


def test_a_tenant_id_of_another_type_is_a_label_and_long_ones_are_counted(tenant_meter):
    meter = tenant_meter
    for tenant in (42, 42, "x" * 1000):
        with meter.agent_run("support") as run:
            run.set_attribute("app.tenant_id", tenant)
            call(meter)
    result = scrape(meter)
    assert result.value("model_inference_calls_total", tenant="42") == 2
    assert result.total("spanmeter_dropped_values_total", field="tenant") >= 1  # the long one was cut, and said so
    assert result.total("model_inference_calls_total") == 3


def test_a_tenant_set_on_the_run_after_an_aggregation_round_still_reaches_the_calls_before_it(tenant_meter):
    meter = tenant_meter
    with meter.agent_run("support") as run:
        call(meter)
        meter.processor.drain()  # what the aggregating thread does every second of a long run
        assert meter.processor.pending_spans == 1  # the call waits for its run, which may still get a tenant
        run.set_attribute("app.tenant_id", "acme")
    result = scrape(meter)
    assert result.value("model_inference_calls_total", agent_name="support", model_id="gpt-4o", tenant="acme") == 1
    assert result.value("agent_tokens_per_run_sum", agent_name="support") == 120  # charged to its run all the same


def test_a_call_waiting_for_its_runs_tenant_is_counted_as_unknown_when_the_run_ends_without_one(tenant_meter):
    meter = tenant_meter
    with meter.agent_run("support"):
        call(meter)
        meter.processor.drain()
    meter.processor.drain()  # the run ended: the call waits no more
    assert meter.processor.pending_spans == 0
    result = scrape(meter)
    assert result.value("model_inference_calls_total", agent_name="support", model_id="gpt-4o", tenant="unknown") == 1


def test_a_call_with_its_tenant_already_known_is_counted_at_once(tenant_meter):
    meter = tenant_meter
    with meter.agent_run("support") as run:
        run.set_attribute("app.tenant_id", "acme")
        call(meter)
        meter.processor.drain()
        assert meter.processor.pending_spans == 0
