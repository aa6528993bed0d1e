"""Spans recorded from real instrumentations, replayed: the same metrics whatever produced them.

Each fixture holds what the fake provider server returned; the metrics must match it,
call for call and token for token, except where an instrumentation does not record a
field (it is then absent, never wrong) or records it wrongly (a known gap, asserted as it
is so that a fix upstream shows here).
"""

from __future__ import annotations

import pytest

from tests import span_fixtures

ALL_TOKENS = ("input", "output", "cache_read", "cache_write", "reasoning")
# What each recording reports: token types, and whether the app's tools are traced.
READS = {
    "openai-v2": (("input", "output"), False),
    "openai-v2-latest-experimental": (("input", "output"), False),
    "openai-v2-util-genai-1.1b0": (("input", "output"), False),
    "openinference-openai": (ALL_TOKENS, False),
    "openinference-anthropic": (ALL_TOKENS, False),
    "openllmetry-openai": (ALL_TOKENS, False),
    "openllmetry-anthropic": (ALL_TOKENS, False),
    "openllmetry-traceloop-sdk": (ALL_TOKENS, True),
    "openlit": (ALL_TOKENS, False),
    "pydantic-ai": (ALL_TOKENS, True),
    "anthropic-sdk": (ALL_TOKENS, False),
    "nested-openinference-openai-v2": (ALL_TOKENS, False),
    "nested-pydantic-ai-openai-v2": (ALL_TOKENS, True),
    # agent frameworks (issue 12, fixtures A)
    "openinference-openai-agents": (ALL_TOKENS, True),
    "langchain-openinference": (ALL_TOKENS, True),
    "langchain-openinference-sdk": (ALL_TOKENS, True),
    "langchain-openllmetry": (ALL_TOKENS, True),
    "langchain-openllmetry-sdk": (ALL_TOKENS, True),
    "openinference-litellm": (ALL_TOKENS, False),
    # fixtures B: Logfire, pydantic-ai's other models, google-genai, google-adk, strands
    "logfire-openai": (ALL_TOKENS, False),  # reasoning only inside the JSON of gen_ai.usage.raw
    "logfire-anthropic": (ALL_TOKENS, False),
    "pydantic-ai-anthropic": (ALL_TOKENS, True),
    "pydantic-ai-google": (ALL_TOKENS, True),  # reasoning in gen_ai.usage.details.thoughts_tokens
    "pydantic-ai-responses": (ALL_TOKENS, True),
    "google-genai": (("input", "output", "cache_read", "reasoning"), False),
    "google-genai-automatic-function-calling": (("input", "output", "cache_read", "reasoning"), True),
    "google-adk": (("input", "output", "cache_read", "reasoning"), True),
    "google-adk-google-genai": (("input", "output", "cache_read", "reasoning"), True),
    "logfire-pydantic-ai-openai": (ALL_TOKENS, True),
    "logfire-pydantic-ai-anthropic": (ALL_TOKENS, True),
    "strands": (("input", "output", "cache_read"), True),
    "strands-latest-experimental": (("input", "output", "cache_read"), True),
}
# Where an instrumentation records no request model: the model label it leaves spanmeter
# (request model -> label), as recorded on the spans; by recording or by fixture.
MODEL_LABELS = {
    # litellm.responses(): ``llm.model_name`` is the response's model, ``llm.invocation_parameters``
    # has no model (litellm.completion() records the requested one).
    "openinference-litellm/litellm_responses": {"gpt-4o-mini": "gpt-4o-mini-2025-01-01"},
    # openai-agents' ``response`` span has only ``llm.model_name``, the response's model (and
    # none at all when the call failed): the requested model is not on the span.
    "openinference-openai-agents": {"gpt-4o-mini": "gpt-4o-mini-2025-01-01", "gpt-4o-mini-429": "unknown"},
}
# What the instrumentation itself gets wrong, as spanmeter reports it: (model, metric, token type) -> value.
KNOWN_GAPS = {
    # OpenLIT's Anthropic error span carries no attribute at all: nothing marks it as GenAI.
    "openlit/anthropic_messages_error": {("claude-sonnet-5-429", "calls", None): 0},
    # OpenLIT reports no cache reads or writes for streamed Anthropic calls.
    "openlit/anthropic_messages_stream": {("claude-sonnet-5", "tokens", "input"): 1200,
                                          ("claude-sonnet-5", "tokens", "cache_read"): 0,
                                          ("claude-sonnet-5", "tokens", "cache_write"): 0},
    "openlit/anthropic_messages_stream_helper": {("claude-sonnet-5", "tokens", "input"): 1200,
                                                 ("claude-sonnet-5", "tokens", "cache_read"): 0,
                                                 ("claude-sonnet-5", "tokens", "cache_write"): 0},
    # OpenLLMetry adds message_start's output token to message_delta's total.
    "openllmetry-anthropic/anthropic_messages_stream": {("claude-sonnet-5", "tokens", "output"): 301},
    "openllmetry-anthropic/anthropic_messages_stream_helper": {("claude-sonnet-5", "tokens", "output"): 301},
    # OpenLLMetry records no reasoning tokens for streamed OpenAI calls.
    "openllmetry-openai/openai_chat_stream": {("gpt-4o-mini", "tokens", "reasoning"): 0},
    # google-genai's automatic function calling: two requests under one generate_content span
    # that carries the last response's usage only (gen_ai.response.id resp-2, input 1200).
    "google-genai-automatic-function-calling/gemini_tool_automatic": {
        ("gemini-2.5-flash", "calls", None): 1, ("gemini-2.5-flash", "errors", None): 0,
        ("gemini-2.5-flash", "tokens", "input"): 1200, ("gemini-2.5-flash", "tokens", "output"): 420,
        ("gemini-2.5-flash", "tokens", "cache_read"): 400, ("gemini-2.5-flash", "tokens", "reasoning"): 120},
}  # fmt: skip
# OpenLIT records reasoning tokens for the Responses API only.
for _scenario, _model in (("openai_chat", "gpt-4o-mini"), ("openai_chat_stream", "gpt-4o-mini"),
                          ("openai_tool_roundtrip", "gpt-4o-mini")):  # fmt: skip
    KNOWN_GAPS[f"openlit/{_scenario}"] = {(_model, "tokens", "reasoning"): 0}

# OpenLLMetry's LangChain chat spans (``ChatOpenAI.chat``) carry no reasoning count (no
# ``gen_ai.usage.reasoning_tokens``), for chat completions and the Responses API alike; its
# OpenAI instrumentor's chat spans are suppressed under LangChain, so nothing else has it.
for _recording, _prefixes in (("langchain-openllmetry", ("lc_openai", "lc_responses")),
                              ("langchain-openllmetry-sdk", ("lc_openai",))):  # fmt: skip
    for _prefix in _prefixes:
        for _suffix in ("chat", "chat_stream", "agent_tool", "agent_tool_stream", "chat_concurrent"):
            KNOWN_GAPS[f"{_recording}/{_prefix}_{_suffix}"] = {("gpt-4o-mini", "tokens", "reasoning"): 0}
FIXTURES = [i for i in span_fixtures.fixture_ids() if span_fixtures.load(i).raw_spans]


def test_every_recording_has_its_expectations_written_here():
    assert {i.split("/")[0] for i in FIXTURES} == set(READS)


@pytest.mark.parametrize("fixture_id", FIXTURES)
def test_replayed_spans_give_the_servers_numbers(fixture_id, meter, scrape):
    fixture = span_fixtures.load(fixture_id)
    token_types, tools_traced = READS[fixture.recording]
    gaps = KNOWN_GAPS.get(fixture_id, {})
    labels = MODEL_LABELS.get(fixture_id) or MODEL_LABELS.get(fixture.recording, {})
    fixture.replay(meter.processor)
    s = scrape()

    for request_model, row in fixture.expected["by_model"].items():
        model = labels.get(request_model, request_model)
        calls = s.total("model_inference_calls_total", model_id=model)
        assert calls == gaps.get((model, "calls", None), row["calls"]), model
        failed = sum(x.value for x in s.samples if x.name == "gen_ai_client_inference_duration_seconds_count"
                     and x.labels.get("gen_ai_request_model") == model and x.labels.get("error_type"))  # fmt: skip
        assert failed == gaps.get((model, "errors", None), gaps.get((model, "calls", None), row["errors"])), model
        for token_type in ALL_TOKENS:
            got = s.total("agent_token_usage_total", model_id=model, token_type=token_type)
            if (model, "tokens", token_type) in gaps:
                assert got == gaps[(model, "tokens", token_type)], (model, token_type)
            elif token_type in token_types:
                assert got == row["tokens"][token_type], (model, token_type)
            else:
                assert got == 0, (model, token_type)  # not reported: absent, never invented
    for tool, runs in fixture.expected["tool_executions"].items():
        assert s.total("agent_tool_calls_total", tool_name=tool) == (runs if tools_traced else 0), tool
    for agent, runs in fixture.expected["agent_runs"].items():
        assert s.total("agent_requests_total", agent_name=agent) == runs, agent
    models = {x.labels["model_id"] for x in s.samples if x.name == "model_inference_calls_total"}
    assert models <= {labels.get(m, m) for m in fixture.expected["by_model"]}  # one model_id per request model
    if "calls_by_agent" in fixture.expected:  # agent frameworks: every run named, none invented
        runs = {x.labels["agent_name"] for x in s.samples if x.name == "agent_requests_total" and x.value}
        assert runs == set(fixture.expected["agent_runs"])
        for agent, calls in fixture.expected["calls_by_agent"].items():
            assert s.total("model_inference_calls_total", agent_name=agent) == calls, agent
    assert s.value("spanmeter_processor_errors_total") == 0


_LATER = iter(range(1, 10**6))


def _replay_later(fixture_id, processor):
    """Replay a fixture a minute after the previous one: recordings share ids and times, and
    spans of one response id that overlap in time are one call."""
    span_fixtures.load(fixture_id).replay(processor, span_fixtures.BASE_TIME_NS + next(_LATER) * 60 * 10**9)


def test_tools_and_tokens_of_an_agent_run_are_attributed_to_its_agent(meter, scrape):
    for fixture_id, agent in (("pydantic-ai/pydantic_ai_agent_tool", "weather_agent"),
                              ("openllmetry-traceloop-sdk/traceloop_agent_tool", "weather_agent"),
                              ("nested-pydantic-ai-openai-v2/pydantic_ai_agent_tool", "weather_agent")):  # fmt: skip
        _replay_later(fixture_id, meter.processor)
    s = scrape()
    assert s.value("agent_requests_total", agent_name="weather_agent", status="success") == 3
    assert s.value("agent_tool_calls_total", agent_name="weather_agent", tool_name="get_weather",
                   status="success") == 3  # fmt: skip
    assert s.total("model_inference_calls_total", agent_name="unknown") == 0
    # per-run counts too, although the replay gives a Traceloop agent span its attributes only
    # when it ends: every span's node links a call to its run, whenever the run says what it is
    assert s.value("agent_inference_calls_per_run_sum", agent_name="weather_agent") == 6


def test_traceloop_agents_named_after_start_still_own_their_calls(meter, scrape):
    """Traceloop starts its agent and tool spans bare, then sets their kind and name."""
    from opentelemetry import trace

    tracer = meter.tracer_provider.get_tracer("traceloop.tracer")
    agent = tracer.start_span("weather_agent.agent")
    agent.set_attributes({"traceloop.span.kind": "agent", "traceloop.entity.name": "weather_agent"})
    with trace.use_span(agent, end_on_exit=True):
        for _ in range(2):
            chat = tracer.start_span("openai.chat", attributes={"gen_ai.operation.name": "chat"})
            chat.set_attributes({"gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 10,
                                 "gen_ai.usage.output_tokens": 1})  # fmt: skip
            chat.end()
        tool = tracer.start_span("get_weather.tool")
        tool.set_attributes({"traceloop.span.kind": "tool", "traceloop.entity.name": "get_weather"})
        tool.end()
    s = scrape()
    assert s.value("model_inference_calls_total", agent_name="weather_agent", model_id="gpt-4o-mini") == 2
    assert s.value("agent_tool_calls_total", agent_name="weather_agent", tool_name="get_weather",
                   status="success") == 1  # fmt: skip
    assert s.value("agent_inference_calls_per_run_sum", agent_name="weather_agent") == 2
    assert s.value("agent_tokens_per_run_sum", agent_name="weather_agent") == 22


def test_pydantic_ai_aggregated_usage_on_the_agent_span_is_not_counted_again(meter, scrape):
    fixture = span_fixtures.load("pydantic-ai/pydantic_ai_agent_tool")
    agent_span = [r for r in fixture.raw_spans if r["name"].startswith("invoke_agent")][0]
    assert agent_span["attributes"]["gen_ai.aggregated_usage.input_tokens"] == 2400  # it is there ...
    fixture.replay(meter.processor)
    assert scrape().total("agent_token_usage_total", token_type="input") == 2400  # ... and counted once


def test_cost_the_span_carries_is_used(meter, scrape):
    _replay_later("pydantic-ai/pydantic_ai_agent_tool", meter.processor)  # operation.cost
    _replay_later("openlit/openai_chat", meter.processor)  # gen_ai.usage.cost
    s = scrape()
    assert s.value("spanmeter_priced_calls_total", source="span") == 3


def test_openinference_failed_call_keeps_its_model_and_error_class(meter, scrape):
    span_fixtures.load("openinference-openai/openai_chat_error").replay(meter.processor)
    s = scrape()
    assert s.value("model_inference_calls_total", agent_name="unknown", model_id="gpt-4o-mini-429") == 1
    assert s.value("gen_ai_client_inference_duration_seconds_count", gen_ai_request_model="gpt-4o-mini-429",
                   error_type="openai.RateLimitError") == 1  # fmt: skip


AGENT_FIXTURES = [i for i in FIXTURES if "calls_by_agent" in span_fixtures.load(i).expected]


@pytest.mark.parametrize("fixture_id", AGENT_FIXTURES)
def test_calls_inside_an_agent_run_carry_its_agent_name_and_no_run_is_invented(fixture_id, meter, scrape):
    """Where the recording marked the app's agent runs: each LLM request made during a run is
    counted under that run's agent, and the agents with runs are exactly the app's agents."""
    fixture = span_fixtures.load(fixture_id)
    gaps = KNOWN_GAPS.get(fixture_id, {})
    fixture.replay(meter.processor)
    s = scrape()
    for agent, calls in fixture.expected["calls_by_agent"].items():
        want = gaps.get((agent, "calls_by_agent", None), calls)
        assert s.total("model_inference_calls_total", agent_name=agent) == want, agent
    runs = {x.labels["agent_name"]: x.value for x in s.samples if x.name == "agent_requests_total"}
    assert runs == fixture.expected["agent_runs"]  # a workflow is no agent run
    workflows = {x.labels["gen_ai_workflow_name"]: x.value for x in s.samples
                 if x.name == "gen_ai_invoke_workflow_duration_seconds_count"}  # fmt: skip
    assert workflows == fixture.expected.get("workflows", {})
