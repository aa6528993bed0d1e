"""Cost on spans: the GenAI cost attributes read (USD only) and written on spanmeter's own spans."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import spanmeter
from spanmeter import conventions as c
from tests.test_pricing import M, _call, _cost

COST = {"gen_ai.usage.cost.amount": 0.042, "gen_ai.usage.cost.currency": "USD", "gen_ai.usage.cost.source": "provider"}


def test_genai_cost_in_usd_is_the_calls_cost_and_wins_over_the_catalogue(meter, scrape):
    _call(meter, "gpt-4o", provider="openai", input=1000, output=100, **COST)
    _call(meter, "openrouter-auto", **COST)  # a router priced it; no tokens, model unknown to the catalogue
    s = scrape()
    assert _cost(s, "gpt-4o") == pytest.approx(0.042, rel=1e-12)
    assert _cost(s, "openrouter-auto") == pytest.approx(0.042, rel=1e-12)
    assert s.value("spanmeter_priced_calls_total", source="span") == 2


def test_a_cost_in_another_currency_is_dropped_and_the_tokens_are_priced_instead(meter, scrape):
    eur = {"gen_ai.usage.cost.amount": 9.99, "gen_ai.usage.cost.currency": "EUR"}
    _call(meter, "gpt-4o", provider="openai", input=1000, output=100, **eur)
    _call(meter, "openrouter-auto", **eur)  # nothing else to price it with: unpriced, never $0 nor 9.99 "dollars"
    _call(meter, "gpt-4o", provider="openai", input=1000, output=100, **{"gen_ai.usage.cost.amount": 1.0})
    _call(meter, "my-router", input=10, **{"gen_ai.usage.cost": 0.5, "gen_ai.usage.cost.currency": "JPY"})  # OpenLIT
    s = scrape()
    assert _cost(s, "gpt-4o") == pytest.approx(2 * (1000 * 2.50 + 100 * 10) / M, rel=1e-12)
    assert s.value("agent_unpriced_calls_total", model_id="openrouter-auto") == 1
    assert s.value("agent_unpriced_calls_total", model_id="my-router") == 1
    assert not [x for x in s.label_sets("agent_estimated_cost_dollars_total") if x["model_id"] == "openrouter-auto"]
    assert s.value("spanmeter_dropped_values_total", field="cost", reason="currency_not_usd") == 3
    assert s.value("spanmeter_dropped_values_total", field="cost", reason="currency_missing") == 1
    assert s.value("spanmeter_priced_calls_total", source="catalogue") == 2


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"gen_ai.usage.cost.amount": 0.5, "gen_ai.usage.cost.currency": "usd"}, (0.5, None)),
        ({"gen_ai.usage.cost.amount": 2, "gen_ai.usage.cost.currency": "USD"}, (2.0, None)),
        ({"gen_ai.usage.cost.amount": "0.5", "gen_ai.usage.cost.currency": "USD"}, (None, ("cost", "wrong_type"))),
        ({"gen_ai.usage.cost.amount": -1.0, "gen_ai.usage.cost.currency": "USD"}, (None, ("cost", "out_of_range"))),
        ({"gen_ai.usage.cost.amount": float("nan"), "gen_ai.usage.cost.currency": "USD"},
         (None, ("cost", "out_of_range"))),
        ({"gen_ai.usage.cost.amount": 0.5}, (None, ("cost", "currency_missing"))),
        ({"gen_ai.usage.cost.amount": 0.5, "gen_ai.usage.cost.currency": "EUR", "llm.cost.total": 0.7},
         (None, ("cost", "currency_not_usd"))),
        ({"llm.cost.total": 0.7}, (0.7, None)),
        ({}, (None, None)),
    ],
)
def test_cost_reading_rules(attributes, expected):
    assert c.cost_of(attributes.get) == expected


@pytest.fixture
def exported(meter):
    exporter = InMemorySpanExporter()
    meter.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def test_model_call_spans_carry_their_priced_cost_and_the_metrics_keep_the_price_source(meter, scrape, exported):
    with meter.agent_run("support"):
        with meter.model_call("gpt-4o", provider="openai") as call:
            call.record_usage(input_tokens=1000, cache_read_tokens=400, output_tokens=200)
        with meter.model_call("acme-private-llm") as call:  # no price known: no cost attribute, never 0
            call.record_usage(input_tokens=10, output_tokens=1)
        with meter.model_call("gpt-4o", provider="openai") as call:  # the app's own cost stays
            call.record_usage(input_tokens=1000, output_tokens=200)
            call.set_attribute("gen_ai.usage.cost.amount", 0.5)
            call.set_attribute("gen_ai.usage.cost.currency", "USD")
    priced, unpriced, own = [s for s in exported.get_finished_spans() if s.name.startswith("chat")]
    expected = (600 * 2.50 + 400 * 1.25 + 200 * 10) / M
    assert priced.attributes["gen_ai.usage.cost.amount"] == pytest.approx(expected, rel=1e-12)
    assert priced.attributes["gen_ai.usage.cost.currency"] == "USD"
    assert priced.attributes["gen_ai.usage.cost.source"] == "local"
    assert priced.attributes["spanmeter.cost.price_source"] == "catalogue"
    assert "gen_ai.usage.cost.amount" not in unpriced.attributes
    assert own.attributes["gen_ai.usage.cost.amount"] == 0.5 and "spanmeter.cost.price_source" not in own.attributes
    s = scrape()
    assert s.value("agent_estimated_cost_dollars_total", agent_name="support", model_id="gpt-4o") == pytest.approx(
        expected + 0.5, rel=1e-12)  # fmt: skip
    assert s.value("spanmeter_priced_calls_total", source="catalogue") == 1  # not "span": spanmeter priced it
    assert s.value("spanmeter_priced_calls_total", source="span") == 1
    assert s.value("agent_unpriced_calls_total", model_id="acme-private-llm") == 1


def test_a_model_call_without_a_spanmeter_on_its_provider_gets_no_cost():
    from opentelemetry.sdk.trace import TracerProvider

    provider, exporter = TracerProvider(), InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with spanmeter.model_call("gpt-4o", provider="openai", tracer_provider=provider) as call:
        call.record_usage(input_tokens=1000, output_tokens=200)
    (span,) = exporter.get_finished_spans()
    assert "gen_ai.usage.cost.amount" not in span.attributes
