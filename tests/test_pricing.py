"""Cost: every usage shape priced from published per-million prices written here by hand."""

from __future__ import annotations

import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

import spanmeter
from spanmeter import pricing
from spanmeter.cli import main as cli
from spanmeter.errors import ConfigurationError
from tests.conftest import Scrape

M = 1_000_000  # prices below are dollars per million tokens, as providers publish them


def _call(meter, model, *, provider=None, response_model=None, at=None, **attributes):
    """One inference span from plain OpenTelemetry code, usage as GenAI attributes."""
    names = {"input": "gen_ai.usage.input_tokens", "output": "gen_ai.usage.output_tokens",
             "cache_read": "gen_ai.usage.cache_read.input_tokens",
             "cache_write": "gen_ai.usage.cache_creation.input_tokens",
             "reasoning": "gen_ai.usage.reasoning.output_tokens"}  # fmt: skip
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": model}
    if provider:
        attrs["gen_ai.provider.name"] = provider
    if response_model:
        attrs["gen_ai.response.model"] = response_model
    for key, value in attributes.items():
        attrs[names.get(key, key)] = value
    tracer = meter.tracer_provider.get_tracer("test")
    start = None if at is None else int(at.timestamp() * 1e9)
    span = tracer.start_span(f"chat {model}", attributes=attrs, start_time=start)
    span.end(end_time=None if start is None else start + 10**9)


def _cost(s: Scrape, model: str) -> float:
    return s.value("agent_estimated_cost_dollars_total", agent_name="unknown", model_id=model)


def test_openai_cached_and_reasoning_tokens(meter, scrape):
    # gpt-4o: $2.50 input, $1.25 cached input, $10 output
    _call(meter, "gpt-4o", provider="openai", input=1000, cache_read=400, output=200)
    # o3-mini: $1.10 input, $0.55 cached input, $4.40 output; reasoning is inside output
    _call(meter, "o3-mini", provider="openai", input=2000, cache_read=500, output=900, reasoning=600)
    s = scrape()
    assert _cost(s, "gpt-4o") == pytest.approx((600 * 2.50 + 400 * 1.25 + 200 * 10) / M, rel=1e-12)
    assert _cost(s, "o3-mini") == pytest.approx((1500 * 1.10 + 500 * 0.55 + 900 * 4.40) / M, rel=1e-12)
    assert s.value("spanmeter_priced_calls_total", source="catalogue") == 2


def test_anthropic_cache_write_and_read(meter, scrape):
    # claude-3-5-sonnet: $3 input, $0.30 cache read, $3.75 cache write, $15 output;
    # GenAI input_tokens include the cached part: 10,000 = 2,000 fresh + 6,000 read + 2,000 written
    _call(meter, "claude-3-5-sonnet-20241022", provider="anthropic", input=10_000, cache_read=6_000,
          cache_write=2_000, output=500)  # fmt: skip
    expected = (2_000 * 3 + 6_000 * 0.30 + 2_000 * 3.75 + 500 * 15) / M
    assert _cost(scrape(), "claude-3-5-sonnet-20241022") == pytest.approx(expected, rel=1e-12)


def test_long_context_tier_applies_to_all_tokens_above_the_threshold(meter, scrape):
    # claude-sonnet-4-5 above 200k input tokens: $6 input, $0.60 cache read, $22.50 output
    _call(meter, "claude-sonnet-4-5", provider="anthropic", input=300_000, cache_read=100_000, output=1_000)
    expected = (200_000 * 6 + 100_000 * 0.60 + 1_000 * 22.50) / M
    assert _cost(scrape(), "claude-sonnet-4-5") == pytest.approx(expected, rel=1e-12)


def test_google_model_with_provider_inferred_from_the_name(meter, scrape):
    # gemini-2.0-flash: $0.10 input, $0.40 output; the span does not say the provider
    _call(meter, "gemini-2.0-flash", input=10_000, output=1_000)
    assert _cost(scrape(), "gemini-2.0-flash") == pytest.approx((10_000 * 0.10 + 1_000 * 0.40) / M, rel=1e-12)


def test_dated_snapshots_prefixed_names_and_bedrock_ids(meter, scrape):
    # gpt-4o-2024-08-06 costs what gpt-4o costs ($2.50 / $10) ...
    _call(meter, "gpt-4o-2024-08-06", provider="openai", input=1000, output=100)
    # ... but the older snapshot it answered from has its own price ($5 / $15): the response model wins
    _call(meter, "gpt-4o", provider="openai", response_model="gpt-4o-2024-05-13", input=1000, output=100)
    # provider-prefixed name (LiteLLM style): gpt-4o-mini $0.15 / $0.60
    _call(meter, "openai/gpt-4o-mini", input=1000, output=100)
    # Bedrock id, GenAI provider name: $3 / $15
    _call(meter, "anthropic.claude-3-5-sonnet-20241022-v2:0", provider="aws.bedrock", input=1000, output=100)
    s = scrape()
    assert _cost(s, "gpt-4o-2024-08-06") == pytest.approx((1000 * 2.50 + 100 * 10) / M, rel=1e-12)
    assert _cost(s, "gpt-4o") == pytest.approx((1000 * 5 + 100 * 15) / M, rel=1e-12)
    assert _cost(s, "openai/gpt-4o-mini") == pytest.approx((1000 * 0.15 + 100 * 0.60) / M, rel=1e-12)
    assert _cost(s, "anthropic.claude-3-5-sonnet-20241022-v2:0") == pytest.approx((1000 * 3 + 100 * 15) / M, rel=1e-12)


def test_the_price_in_force_on_the_span_day_is_used(meter, scrape):
    # grok-4.20 cost $2 / $6 until 2026-04-29 and $1.25 / $2.50 from 2026-04-30
    _call(meter, "grok-4.20", provider="x_ai", at=dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc),
          input=1000, output=1000)  # fmt: skip
    _call(meter, "grok-4.20", provider="x_ai", at=dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc),
          input=1000, output=1000)  # fmt: skip
    expected = (1000 * 2 + 1000 * 6) / M + (1000 * 1.25 + 1000 * 2.50) / M
    assert _cost(scrape(), "grok-4.20") == pytest.approx(expected, rel=1e-12)


def test_cost_already_on_the_span_wins(meter, scrape):
    _call(meter, "gpt-4o", provider="openai", input=1000, output=100, **{"llm.cost.total": 0.0123})  # OpenInference
    _call(meter, "my-router", input=10, **{"gen_ai.usage.cost": 0.5})  # OpenLIT, model unknown to the catalogue
    _call(meter, "my-router", **{"operation.cost": 0.25})  # pydantic-ai, no token counts at all
    s = scrape()
    assert _cost(s, "gpt-4o") == pytest.approx(0.0123, rel=1e-12)
    assert _cost(s, "my-router") == pytest.approx(0.75, rel=1e-12)
    assert s.value("spanmeter_priced_calls_total", source="span") == 3
    assert s.total("agent_unpriced_calls_total") == 0


def test_unknown_model_is_unpriced_loudly_never_zero(meter, scrape):
    _call(meter, "acme-private-llm", input=1200, output=300, cache_read=200)
    _call(meter, "acme-private-llm")  # no usage: nothing to price, not unpriced
    s = scrape()
    assert s.value("agent_unpriced_calls_total", model_id="acme-private-llm") == 1
    assert s.value("agent_unpriced_tokens_total", model_id="acme-private-llm", token_type="input") == 1200
    assert s.value("agent_unpriced_tokens_total", model_id="acme-private-llm", token_type="output") == 300
    assert s.value("agent_unpriced_tokens_total", model_id="acme-private-llm", token_type="cache_read") == 200
    assert s.total("agent_estimated_cost_dollars_total", model_id="acme-private-llm") == 0
    assert not [x for x in s.label_sets("agent_estimated_cost_dollars_total") if x["model_id"] == "acme-private-llm"]
    assert s.value("model_inference_calls_total", model_id="acme-private-llm") == 2


OVERRIDES = """
[[price]]
model = "acme-ft-1"          # a fine-tune, any provider
input = 3.0
output = 12.0
cache_read = 0.3

[[price]]
model = "acme-ft-1"
input = 4.0
output = 16.0
start_date = 2026-07-01      # new price from this day on

[[price]]
provider = "ollama"          # every local model: explicitly free
input = 0
output = 0

[[price]]
model = "gpt-4o"             # a negotiated rate beats the catalogue
provider = "openai"
input = 2.0
output = 8.0
"""


@pytest.fixture
def priced_meter(tmp_path):
    path = tmp_path / "prices.toml"
    path.write_text(OVERRIDES)
    meter = spanmeter.setup(port=0, registry=CollectorRegistry(), tracer_provider=TracerProvider(), prices=path)
    yield meter
    meter.shutdown()


def test_user_overrides_per_model_per_provider_with_start_dates(priced_meter):
    june = dt.datetime(2026, 6, 15, tzinfo=dt.timezone.utc)
    august = dt.datetime(2026, 8, 15, tzinfo=dt.timezone.utc)
    _call(priced_meter, "acme-ft-1", provider="openai", at=june, input=1000, cache_read=500, output=100)
    _call(priced_meter, "acme-ft-1", provider="openai", at=august, input=1000, output=100)
    _call(priced_meter, "llama3.1:8b", provider="ollama", input=5000, output=5000)
    _call(priced_meter, "gpt-4o", provider="openai", input=1000, output=100)
    s = Scrape(httpx.get(priced_meter.metrics_url).text)
    june_cost = (500 * 3.0 + 500 * 0.3 + 100 * 12.0) / M
    august_cost = (1000 * 4.0 + 100 * 16.0) / M  # the dated entry has no cache price: input rate
    assert _cost(s, "acme-ft-1") == pytest.approx(june_cost + august_cost, rel=1e-12)
    assert _cost(s, "llama3.1:8b") == 0  # priced, at zero: not unpriced
    assert _cost(s, "gpt-4o") == pytest.approx((1000 * 2.0 + 100 * 8.0) / M, rel=1e-12)
    assert s.value("spanmeter_priced_calls_total", source="override") == 4
    assert s.total("agent_unpriced_calls_total") == 0


def test_overrides_as_a_dict_in_code():
    meter = spanmeter.setup(start_server=False, registry=CollectorRegistry(), tracer_provider=TracerProvider(),
                            prices={"price": [{"model": "in-house", "input": 1, "output": 2}]})  # fmt: skip
    try:
        _call(meter, "in-house", input=1_000_000, output=1_000_000)
        meter.state.flush()
        metric = [m for m in spanmeter.aggregate.produce(meter.state) if m.name == "agent_estimated_cost_dollars"]
        assert [p.value for p in metric[0].data.data_points] == [3.0]
    finally:
        meter.shutdown()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[[price]]\nmodel = "m"\ninptu = 1\noutput = 2\n',
         "price entry 1 (model 'm'): unknown key(s) ['inptu']; allowed:"),
        ('[[price]]\nmodel = "m"\ninput = -1\noutput = 2\n',
         "price entry 1 (model 'm'): input is negative (-1); prices are >= 0"),
        ('[[price]]\nmodel = "ok"\ninput = 1\noutput = 1\n[[price]]\nmodel = "m"\ninput = 1\noutput = 2\n'
         'start_date = "31/01/2026"\n',
         "price entry 2 (model 'm'): start_date must be a date like 2026-01-31, got '31/01/2026'"),
        ('[[price]]\ninput = 1\noutput = 2\n', "price entry 1: give a model, a provider, or both"),
        ('[[price]]\nmodel = "m"\ninput = 1\n', "input and output prices are required"),
        ("[[price]\n", "not valid TOML"),
    ],
)  # fmt: skip
def test_a_bad_override_file_fails_at_configure_naming_file_entry_and_fix(tmp_path, content, message):
    path = tmp_path / "bad-prices.toml"
    path.write_text(content)
    with pytest.raises(ConfigurationError) as err:
        spanmeter.configure(port=0, registry=CollectorRegistry(), prices=path)
    assert str(err.value).startswith(str(path))
    assert message in str(err.value)
    assert spanmeter.current() is None  # nothing was left half set up


def test_a_million_tiny_costs_add_up_exactly(meter, scrape):
    # gpt-4o-mini input at $0.15 per million tokens: one token costs $0.00000015
    from opentelemetry.attributes import BoundedAttributes
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext

    attrs = BoundedAttributes(attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
                                          "gen_ai.provider.name": "openai", "gen_ai.usage.input_tokens": 1},
                              immutable=True)  # fmt: skip
    span = ReadableSpan(name="chat gpt-4o-mini", context=SpanContext(1, 2, False), attributes=attrs,
                        start_time=1_800_000_000 * 10**9, end_time=1_800_000_001 * 10**9)  # fmt: skip
    on_end = meter.processor.on_end
    for n in range(1_000_000):
        on_end(span)
        if n % 50_000 == 0:  # a loop this tight overloads any aggregator: give it its turn
            meter.processor.drain()
    got = scrape().value("agent_estimated_cost_dollars_total", agent_name="unknown", model_id="gpt-4o-mini")
    assert abs(got - 0.15) / 0.15 < 1e-9, got
    float_sum = 0.0
    for _ in range(1_000_000):  # what summing floats would have given, for the record
        float_sum += 1 * 0.15 / M
    assert got == 0.15 and float_sum != 0.15


def test_cost_per_run_and_the_catalogue_info(meter, scrape):
    with meter.agent_run("support"):
        with meter.model_call("gpt-4o", provider="openai") as call:
            call.record_usage(input_tokens=1000, output_tokens=100)  # $0.0035
        with meter.model_call("gpt-4o", provider="openai") as call:
            call.record_usage(input_tokens=2000, output_tokens=100)  # $0.006
    with meter.agent_run("support"):
        with meter.model_call("acme-private-llm") as call:  # unpriced: the run has no known cost
            call.record_usage(input_tokens=10)
    s = scrape()
    assert s.value("agent_cost_per_run_dollars_count", agent_name="support") == 1
    assert s.value("agent_cost_per_run_dollars_sum", agent_name="support") == pytest.approx(0.0095, rel=1e-12)
    assert s.buckets("agent_cost_per_run_dollars", agent_name="support")[0.005] == 0
    assert s.buckets("agent_cost_per_run_dollars", agent_name="support")[0.01] == 1
    from importlib.metadata import version

    assert s.value("spanmeter_price_catalogue_info", catalogue="genai-prices", version=version("genai-prices")) == 1


def test_pricing_adds_no_catalogue_lookup_per_span():
    pricer = pricing.Pricer.create()
    now = 1_800_000_000 * 10**9
    first = pricer.price("openai", "gpt-4o", None, (1000, 100, None, None, None), now, {})
    calls = []
    original = pricing.catalogue_rates
    pricing.catalogue_rates = lambda *a: calls.append(a) or original(*a)
    try:
        for n in range(1000):
            assert pricer.price("openai", "gpt-4o", None, (1000, 100, None, None, None), now + n, {}) == first
    finally:
        pricing.catalogue_rates = original
    assert calls == []


class _PricesServer(BaseHTTPRequestHandler):
    payload = json.dumps([{"id": "openai", "name": "OpenAI", "api_pattern": "https://api\\.openai\\.com",
                           "models": [{"id": "gpt-4o", "match": {"equals": "gpt-4o"},
                                       "prices": {"input_mtok": 7, "output_mtok": 21}}]}]).encode()  # fmt: skip

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, *args):
        pass


def test_catalogue_auto_update_only_when_asked(tmp_path):
    from genai_prices import data_snapshot, wait_prices_updated_sync

    server = ThreadingHTTPServer(("127.0.0.1", 0), _PricesServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/data.json"
    reg = CollectorRegistry()
    meter = spanmeter.setup(start_server=False, registry=reg, tracer_provider=TracerProvider(),
                            update_prices=True, update_prices_url=url)  # fmt: skip
    try:
        assert wait_prices_updated_sync(timeout=20)
        meter.processor.pricer._checked = -1e9  # do not wait the 10 s between snapshot checks
        _call(meter, "gpt-4o", provider="openai", input=1000, output=1000)
        meter.state.flush()
        cost = reg.get_sample_value("agent_estimated_cost_dollars_total", {"agent_name": "unknown", "model_id": "gpt-4o"})
        assert cost == pytest.approx((1000 * 7 + 1000 * 21) / M, rel=1e-12)
        versions = [s.labels["version"] for m in reg.collect() for s in m.samples
                    if s.name == "spanmeter_price_catalogue_info"]  # fmt: skip
        assert len(versions) == 1 and versions[0].startswith("auto-update ")
    finally:
        meter.shutdown()
        data_snapshot.set_custom_snapshot(None)
        server.shutdown()


def test_prices_command_shows_the_resolved_price_and_its_source(capsys, tmp_path):
    assert cli(["prices", "gpt-4o", "--provider", "openai"]) == 0
    out = capsys.readouterr().out
    assert "genai-prices" in out and "openai/gpt-4o" in out
    assert "input" in out and "2.5" in out and "cache_read" in out and "1.25" in out and "10" in out
    path = tmp_path / "p.toml"
    path.write_text(OVERRIDES)
    assert cli(["prices", "acme-ft-1", "--prices", str(path)]) == 0
    assert "price entry 2 (model 'acme-ft-1')" in capsys.readouterr().out
    assert cli(["prices", "no-such-model-anywhere"]) == 1
    assert "no price" in capsys.readouterr().out
    assert cli(["prices", "--check", str(path)]) == 0
    assert "4 price entries" in capsys.readouterr().out
    path.write_text('[[price]]\nmodel = "m"\ninput = -1\noutput = 2\n')
    assert cli(["prices", "--check", str(path)]) == 2
    assert "input is negative" in capsys.readouterr().err
