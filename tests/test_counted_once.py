"""Each LLM call counts once, however many instrumentations record it."""

from __future__ import annotations

from opentelemetry import trace

CHAT = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.provider.name": "openai"}
USAGE = {"gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100}


def _span(tracer, name, attributes, parent=None):
    ctx = trace.set_span_in_context(parent) if parent is not None else None
    return tracer.start_span(name, context=ctx, attributes=attributes)


def test_a_framework_span_around_an_sdk_span_counts_one_call(meter, scrape):
    tracer = meter.tracer_provider.get_tracer("t")
    agent = _span(tracer, "invoke_agent a", {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "a"})
    framework = _span(tracer, "chat gpt-4o", {**CHAT, **USAGE}, agent)  # e.g. pydantic-ai's model request span
    http = _span(tracer, "POST", {"http.request.method": "POST"}, framework)  # not GenAI: passes through
    sdk = _span(tracer, "chat gpt-4o", {**CHAT, **USAGE, "gen_ai.response.model": "gpt-4o-2024-08-06"}, http)
    for span in (sdk, http, framework, agent):
        span.end()
    s = scrape()
    assert s.value("model_inference_calls_total", agent_name="a", model_id="gpt-4o") == 1
    assert s.value("agent_token_usage_total", agent_name="a", model_id="gpt-4o", token_type="input") == 1000
    assert s.value("agent_inference_calls_per_run_sum", agent_name="a") == 1
    assert s.value("agent_tokens_per_run_sum", agent_name="a") == 1100
    assert s.value("agent_estimated_cost_dollars_total", agent_name="a", model_id="gpt-4o") == (
        1000 * 2.5 + 100 * 10
    ) / 1e6
    assert s.value("spanmeter_spans_total", kind="inference") == 1


def test_a_retrying_framework_span_counts_each_request_once(meter, scrape):
    tracer = meter.tracer_provider.get_tracer("t")
    framework = _span(tracer, "chat gpt-4o", {**CHAT, **USAGE})
    failed = _span(tracer, "chat gpt-4o", {**CHAT, "error.type": "rate_limit_exceeded"}, framework)
    failed.end()
    ok = _span(tracer, "chat gpt-4o", {**CHAT, **USAGE}, framework)
    ok.end()
    framework.end()
    s = scrape()
    assert s.total("model_inference_calls_total", model_id="gpt-4o") == 2  # two requests reached the API
    assert s.total("agent_token_usage_total", model_id="gpt-4o", token_type="input") == 1000
    assert s.total("spanmeter_inference_without_usage_total") == 0  # the failed one had none, the call had


def test_a_token_type_only_the_framework_span_saw_is_added(meter, scrape):
    tracer = meter.tracer_provider.get_tracer("t")
    framework = _span(tracer, "chat gpt-4o", {**CHAT, **USAGE, "gen_ai.usage.cache_read.input_tokens": 400,
                                              "gen_ai.usage.details.reasoning_tokens": 60})  # fmt: skip
    _span(tracer, "chat gpt-4o", {**CHAT, **USAGE, "gen_ai.usage.cache_read.input_tokens": 400}, framework).end()
    framework.end()
    s = scrape()
    tokens = {t: s.total("agent_token_usage_total", model_id="gpt-4o", token_type=t)
              for t in ("input", "output", "cache_read", "cache_write", "reasoning")}  # fmt: skip
    assert tokens == {"input": 1000, "output": 100, "cache_read": 400, "cache_write": 0, "reasoning": 60}
    assert s.total("model_inference_calls_total", model_id="gpt-4o") == 1


def test_tokens_only_on_the_outer_span_are_kept(meter, scrape):
    """A streamed call whose SDK span lost the usage the framework span still has."""
    tracer = meter.tracer_provider.get_tracer("t")
    framework = _span(tracer, "chat gpt-4o", {**CHAT, **USAGE})
    _span(tracer, "chat gpt-4o", {**CHAT, "gen_ai.request.stream": True}, framework).end()
    framework.end()
    s = scrape()
    assert s.total("model_inference_calls_total", model_id="gpt-4o") == 1
    assert s.total("agent_token_usage_total", model_id="gpt-4o", token_type="input") == 1000
    assert s.total("agent_token_usage_total", model_id="gpt-4o", token_type="output") == 100
    assert s.total("agent_estimated_cost_dollars_total", model_id="gpt-4o") > 0
    assert s.total("spanmeter_inference_without_usage_total") == 0


def test_two_side_by_side_spans_of_one_response_count_once(meter, scrape):
    tracer = meter.tracer_provider.get_tracer("t")
    parent = _span(tracer, "handler", {})
    with_id = {**CHAT, **USAGE, "gen_ai.response.id": "chatcmpl-123"}
    sdk = _span(meter.tracer_provider.get_tracer("openai-sdk"), "chat gpt-4o", with_id, parent)  # the SDK's own span
    other = _span(meter.tracer_provider.get_tracer("openllmetry"), "openai.chat", with_id, parent)  # and another's
    sdk.end()
    other.end()
    _span(tracer, "chat gpt-4o", {**with_id, "gen_ai.response.id": "chatcmpl-456"}, parent).end()  # another call
    parent.end()
    s = scrape()
    assert s.total("model_inference_calls_total", model_id="gpt-4o") == 2
    assert s.total("agent_token_usage_total", model_id="gpt-4o", token_type="input") == 2000


def test_a_server_reusing_response_ids_does_not_merge_separate_calls(meter, scrape):
    tracer = meter.tracer_provider.get_tracer("t")
    attrs = {**CHAT, **USAGE, "gen_ai.response.id": "chatcmpl-constant"}
    t = 1_800_000_000 * 10**9
    for n in range(3):  # one after the other, same id (a mock or a careless gateway)
        tracer.start_span("chat gpt-4o", attributes=attrs, start_time=t + n * 10**9).end(end_time=t + n * 10**9 + 5 * 10**8)
    s = scrape()
    assert s.total("model_inference_calls_total", model_id="gpt-4o") == 3


def test_calls_without_usage_are_counted_but_not_their_tokens(meter, scrape):
    tracer = meter.tracer_provider.get_tracer("t")
    for _ in range(3):
        _span(tracer, "chat gpt-4o", CHAT).end()
    framework = _span(tracer, "chat gpt-4o", CHAT)
    _span(tracer, "chat gpt-4o", CHAT, framework).end()
    framework.end()
    s = scrape()
    assert s.total("model_inference_calls_total", model_id="gpt-4o") == 4
    assert s.value("spanmeter_inference_without_usage_total", model_id="gpt-4o") == 4
    assert s.total("agent_token_usage_total", model_id="gpt-4o") == 0
    assert s.total("agent_unpriced_calls_total") == 0  # nothing to price is not unpriced
