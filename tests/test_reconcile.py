"""Reconciliation and runs: every call once, every agent named, workflows never taken for agents.

Hand-built span sequences of the shapes the frameworks emit (``../shared/docs/reference.md``
section 9); the recorded fixtures in test_instrumentations.py replay the real packages.
"""

from __future__ import annotations

import json

from opentelemetry import trace
from opentelemetry.context import Context

OPENAI = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini", "gen_ai.provider.name": "openai"}
USAGE = {"gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 300}
T0 = 1_800_000_000 * 10**9
MS = 10**6


def _start(tracer, name, attributes, parent=None, at=T0, context=None):
    if parent is not None:
        context = trace.set_span_in_context(parent)
    return tracer.start_span(name, context=context, attributes=attributes, start_time=at)


def _oi_llm(usage=(1200, 300), **extra):
    attrs = {"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o-mini-2025-01-01", "llm.provider": "openai",
             "llm.token_count.prompt": usage[0], "llm.token_count.completion": usage[1]}  # fmt: skip
    return {**attrs, **extra}


def test_a_framework_span_and_an_sdk_span_in_two_traces_are_one_call_of_the_framework_agent(meter, scrape):
    """OpenInference's LangChain tracer detaches its context: the SDK span lands in another trace."""
    langchain = meter.tracer_provider.get_tracer("openinference.instrumentation.langchain")
    sdk = meter.tracer_provider.get_tracer("openinference.instrumentation.openai")
    agent = _start(langchain, "weather_agent", {"openinference.span.kind": "AGENT", "agent.name": "weather_agent"})
    for n in range(2):
        at = T0 + n * 100 * MS
        framework = _start(langchain, "ChatOpenAI", _oi_llm(), agent, at=at)
        wire = _start(sdk, "ChatCompletion", _oi_llm(), at=at + 1 * MS, context=Context())
        wire.end(end_time=at + 50 * MS)
        framework.end(end_time=at + 60 * MS)
    agent.end(end_time=T0 + 300 * MS)
    s = scrape()
    assert s.value("model_inference_calls_total", agent_name="weather_agent", model_id="gpt-4o-mini-2025-01-01") == 2
    assert s.total("model_inference_calls_total") == 2
    assert s.total("agent_token_usage_total", token_type="input") == 2400
    assert s.value("agent_inference_calls_per_run_sum", agent_name="weather_agent") == 2
    assert s.value("agent_requests_total", agent_name="weather_agent", status="success") == 1


def test_concurrent_identical_calls_under_two_instrumentations_stay_two_calls(meter, scrape):
    a = meter.tracer_provider.get_tracer("framework")
    b = meter.tracer_provider.get_tracer("sdk")
    spans = [_start(t, "chat gpt-4o-mini", {**OPENAI, **USAGE}, at=T0 + n * MS) for n in range(2) for t in (a, b)]
    for span in spans:  # all four overlap, all carry identical usage
        span.end(end_time=T0 + 100 * MS)
    s = scrape()
    assert s.total("model_inference_calls_total") == 2
    assert s.total("agent_token_usage_total", token_type="input") == 2400


def test_spans_of_one_scope_are_never_merged(meter, scrape):
    tracer = meter.tracer_provider.get_tracer("sdk")
    attrs = {**OPENAI, **USAGE, "gen_ai.response.id": "chatcmpl-same"}
    for n in range(3):  # one instrumentation, three overlapping spans, one id: three calls
        _start(tracer, "chat gpt-4o-mini", attrs, at=T0 + n * MS).end(end_time=T0 + 100 * MS)
    assert scrape().total("model_inference_calls_total") == 3


def test_the_response_id_inside_openinference_output_pairs_it_with_another_instrumentation(meter, scrape):
    oi = meter.tracer_provider.get_tracer("openinference.instrumentation.openai")
    other = meter.tracer_provider.get_tracer("opentelemetry.instrumentation.openai_v2")
    body = json.dumps({"id": "chatcmpl-77", "object": "chat.completion", "choices": []})
    # different usage on purpose (one side saw cached tokens counted differently): the id decides
    a = _start(oi, "ChatCompletion", _oi_llm(usage=(1200, 300), **{"output.value": body}), at=T0)
    b = _start(other, "chat gpt-4o-mini", {**OPENAI, "gen_ai.usage.input_tokens": 1000,
                                           "gen_ai.usage.output_tokens": 300, "gen_ai.response.id": "chatcmpl-77"},
               context=Context(), at=T0 + MS)  # fmt: skip
    b.end(end_time=T0 + 40 * MS)
    a.end(end_time=T0 + 50 * MS)
    assert scrape().total("model_inference_calls_total") == 1


def _logfire(usage=None, span_type="span", stream=True):
    attrs = {**OPENAI, "logfire.span_type": span_type, "request_data": json.dumps({"model": "gpt-4o-mini",
                                                                                  "stream": stream})}  # fmt: skip
    if usage:
        attrs.update({"gen_ai.usage.input_tokens": usage[0], "gen_ai.usage.output_tokens": usage[1],
                      "gen_ai.response.id": "chatcmpl-9",
                      "gen_ai.usage.raw": json.dumps({"prompt_tokens": usage[0], "completion_tokens": usage[1],
                                                      "completion_tokens_details": {"reasoning_tokens": 64}})})  # fmt: skip
    return attrs


def test_a_logfire_stream_is_one_call_with_the_usage_its_log_span_brings(meter, scrape):
    tracer = meter.tracer_provider.get_tracer("logfire.openai")
    root = _start(tracer, "handler", {})
    chat = _start(tracer, "Chat Completion with 'gpt-4o-mini'", _logfire(), root)
    chat.end(end_time=T0 + 5 * MS)  # the span ends when the stream is handed back
    log = _start(tracer, "streaming response from 'gpt-4o-mini' took 0.50s", _logfire((1200, 300), "log"), root,
                 at=T0 + 500 * MS)  # fmt: skip
    log.end(end_time=T0 + 500 * MS)
    root.end(end_time=T0 + 600 * MS)
    s = scrape()
    assert s.total("model_inference_calls_total") == 1
    assert s.total("agent_token_usage_total", token_type="input") == 1200
    assert s.total("agent_token_usage_total", token_type="reasoning") == 64  # from gen_ai.usage.raw
    assert s.total("spanmeter_inference_without_usage_total") == 0
    assert s.value("model_inference_duration_seconds_sum", agent_name="unknown", model_id="gpt-4o-mini") == 0.5


def test_a_logfire_stream_longer_than_the_window_still_gets_its_usage(meter, scrape):
    tracer = meter.tracer_provider.get_tracer("logfire.openai")
    root = _start(tracer, "handler", {})
    _start(tracer, "Chat Completion with 'gpt-4o-mini'", _logfire(), root).end(end_time=T0 + 5 * MS)
    s = scrape()  # the call is aggregated before its stream ends
    assert s.total("model_inference_calls_total") == 1
    assert s.total("agent_token_usage_total") == 0
    log = _start(tracer, "streaming response from 'gpt-4o-mini'", _logfire((1200, 300), "log"), root, at=T0 + 9**9)
    log.end(end_time=T0 + 9**9)
    s = scrape()
    assert s.total("model_inference_calls_total") == 1
    assert s.total("agent_token_usage_total", token_type="input") == 1200
    assert s.total("spanmeter_inference_without_usage_total") == 0


def test_a_streamed_call_whose_usage_never_comes_is_counted_without_usage(meter, scrape):
    tracer = meter.tracer_provider.get_tracer("logfire.openai")
    _start(tracer, "Chat Completion with 'gpt-4o-mini'", _logfire()).end(end_time=T0 + 5 * MS)
    meter.processor.shutdown()  # waits no longer
    s = scrape()
    assert s.total("model_inference_calls_total") == 1
    assert s.value("spanmeter_inference_without_usage_total", model_id="gpt-4o-mini") == 1


def test_children_of_an_openinference_agent_carry_its_name(meter, scrape):
    tracer = meter.tracer_provider.get_tracer("openinference.instrumentation.openai_agents")
    agent = _start(tracer, "Assistant", {"openinference.span.kind": "AGENT", "agent.name": "Assistant"})
    _start(tracer, "response", _oi_llm(), agent).end()
    _start(tracer, "get_weather", {"openinference.span.kind": "TOOL"}, agent).end()  # named by its span name
    agent.end()
    s = scrape()
    assert s.total("model_inference_calls_total", agent_name="unknown") == 0
    assert s.value("model_inference_calls_total", agent_name="Assistant", model_id="gpt-4o-mini-2025-01-01") == 1
    assert s.value("agent_tool_calls_total", agent_name="Assistant", tool_name="get_weather", status="success") == 1


def test_a_nameless_agent_span_around_named_runs_is_a_workflow_not_an_agent(meter, scrape):
    """openai-agents under OpenInference: a root ``Agent workflow`` AGENT span with no name."""
    tracer = meter.tracer_provider.get_tracer("openinference.instrumentation.openai_agents")
    workflow = _start(tracer, "Agent workflow", {"openinference.span.kind": "AGENT"})
    for name, calls in (("Triage", 1), ("Weather", 2)):  # a hand-off: two runs in one workflow
        agent = _start(tracer, name, {"openinference.span.kind": "AGENT", "agent.name": name}, workflow)
        for _ in range(calls):
            _start(tracer, "response", _oi_llm(), agent).end()
        _start(tracer, "get_weather", {"openinference.span.kind": "TOOL", "tool.name": "get_weather"}, agent).end()
        agent.end()
    workflow.end()
    s = scrape()
    assert {x.labels["agent_name"] for x in s.samples if x.name == "agent_requests_total"} == {"Triage", "Weather"}
    assert s.value("model_inference_calls_total", agent_name="Weather", model_id="gpt-4o-mini-2025-01-01") == 2
    assert s.value("gen_ai_invoke_workflow_duration_seconds_count", gen_ai_workflow_name="Agent workflow") == 1
    assert s.value("gen_ai_invoke_workflow_inference_calls_sum", gen_ai_workflow_name="Agent workflow") == 3
    assert s.value("gen_ai_invoke_workflow_tool_calls_sum", gen_ai_workflow_name="Agent workflow") == 2
    assert s.total("model_inference_calls_total", agent_name="unknown") == 0


def test_a_nested_agent_span_with_the_same_name_is_the_same_run(meter, scrape):
    """OpenLLMetry's LangChain: ``<agent>.workflow`` (invoke_agent, same name) inside ``invoke_agent <agent>``."""
    tracer = meter.tracer_provider.get_tracer("opentelemetry.instrumentation.langchain")
    agent = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "weather_agent"}
    outer = _start(tracer, "invoke_agent weather_agent", agent)
    inner = _start(tracer, "weather_agent.workflow", agent, outer)
    for _ in range(2):
        _start(tracer, "chat gpt-4o-mini", {**OPENAI, **USAGE}, inner).end()
    _start(tracer, "execute_tool get_weather", {"gen_ai.operation.name": "execute_tool",
                                                "gen_ai.tool.name": "get_weather"}, inner).end()  # fmt: skip
    inner.end()
    outer.end()
    s = scrape()
    assert s.value("agent_requests_total", agent_name="weather_agent", status="success") == 1
    assert s.value("agent_inference_calls_per_run_sum", agent_name="weather_agent") == 2
    assert s.value("agent_tool_calls_per_run_sum", agent_name="weather_agent") == 1
    assert s.value("agent_tokens_per_run_sum", agent_name="weather_agent") == 3000


def test_free_text_stays_out_of_error_and_name_labels(meter, scrape):
    tracer = meter.tracer_provider.get_tracer("openinference.instrumentation.langchain")
    agent = _start(tracer, "lookup INPUT-ssn-123-45-6789", {"openinference.span.kind": "AGENT"})
    tool = _start(tracer, "search user@example.com", {"openinference.span.kind": "TOOL"}, agent)
    tool.set_attribute("error.type", "no account for USER-alice@example.com")
    tool.end()
    chat = _start(tracer, "chat", {**OPENAI, "error.type": True}, agent)
    chat.end()
    agent.end()
    s = scrape()
    assert "alice" not in s.text and "6789" not in s.text and "example.com" not in s.text
    assert s.value("agent_tool_calls_total", agent_name="unknown", tool_name="unknown", status="error") == 1
    assert s.value("agent_tool_call_duration_seconds_count", agent_name="unknown", tool_name="unknown") == 1
    assert s.value("spanmeter_dropped_values_total", field="error_type", reason="free_text") == 1
    assert s.value("spanmeter_dropped_values_total", field="error_type", reason="wrong_type") == 1


def test_pydantic_ai_thoughts_tokens_on_google_models_are_reasoning(meter, scrape):
    tracer = meter.tracer_provider.get_tracer("pydantic-ai")
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gemini-2.5-flash",
             "gen_ai.system": "google-gla", **USAGE, "gen_ai.usage.details.thoughts_tokens": 120}  # fmt: skip
    _start(tracer, "chat gemini-2.5-flash", attrs).end()
    assert scrape().value("agent_token_usage_total", agent_name="unknown", model_id="gemini-2.5-flash",
                          token_type="reasoning") == 120  # fmt: skip


def test_an_app_thread_is_never_blocked_by_a_backlog(meter, scrape):
    from spanmeter import SpanmeterProcessor

    processor = SpanmeterProcessor(meter.state, max_backlog=10)
    meter.tracer_provider.add_span_processor(processor)
    meter.processor.shutdown()  # only the small processor counts here
    with processor._drain_lock:  # an aggregation that takes its time
        tracer = meter.tracer_provider.get_tracer("sdk")
        for _ in range(25):
            _start(tracer, "chat gpt-4o-mini", {**OPENAI, **USAGE}).end()
    processor.force_flush()
    s = scrape()
    assert s.total("model_inference_calls_total") == 10
    assert s.value("spanmeter_spans_shed_total", reason="backlog") == 15


def test_a_second_instrumentation_pairs_with_a_call_of_the_first_that_ended_in_the_same_round(meter, scrape):
    """With one instrumentation spans are aggregated without waiting; the first span of a
    second one must still pair with the calls not aggregated yet (the same aggregation round)."""
    sdk = meter.tracer_provider.get_tracer("opentelemetry.instrumentation.openai_v2")
    framework = meter.tracer_provider.get_tracer("framework")
    attrs = {**OPENAI, **USAGE}
    _start(sdk, "chat gpt-4o-mini", {**attrs, "gen_ai.response.id": "chatcmpl-1"}).end(end_time=T0 + 50 * MS)
    meter.processor.force_flush()  # one instrumentation so far: aggregated at once
    at = T0 + 1000 * MS
    wire = _start(sdk, "chat gpt-4o-mini", {**attrs, "gen_ai.response.id": "chatcmpl-2"}, at=at + MS)
    outer = _start(framework, "chat gpt-4o-mini", {**attrs, "gen_ai.response.id": "chatcmpl-2"}, at=at,
                   context=Context())  # fmt: skip
    wire.end(end_time=at + 40 * MS)
    outer.end(end_time=at + 60 * MS)
    s = scrape()
    assert s.total("model_inference_calls_total") == 2
    assert s.total("agent_token_usage_total", token_type="input") == 2400


def test_a_call_without_usage_completed_by_a_second_instrumentation_in_its_round_is_not_counted_without_usage(
    meter, scrape
):
    sdk = meter.tracer_provider.get_tracer("opentelemetry.instrumentation.openai_v2")
    framework = meter.tracer_provider.get_tracer("framework")
    _start(sdk, "chat gpt-4o-mini", {**OPENAI, **USAGE}).end(end_time=T0 + 50 * MS)
    meter.processor.force_flush()  # one instrumentation so far: aggregated at once
    at = T0 + 1000 * MS
    wire = _start(sdk, "chat gpt-4o-mini", {**OPENAI, "gen_ai.response.id": "chatcmpl-9"}, at=at + MS)  # no usage
    outer = _start(framework, "chat gpt-4o-mini", {**OPENAI, **USAGE, "gen_ai.response.id": "chatcmpl-9"}, at=at,
                   context=Context())  # fmt: skip
    wire.end(end_time=at + 40 * MS)
    outer.end(end_time=at + 60 * MS)
    s = scrape()
    assert s.total("model_inference_calls_total") == 2
    assert s.total("agent_token_usage_total", token_type="input") == 2400
    assert s.total("spanmeter_inference_without_usage_total") == 0


SPLIT = {"gen_ai.usage.text.input_tokens": 1000, "gen_ai.usage.image.input_tokens": 150,
         "gen_ai.response.finish_reasons": ("stop",)}  # fmt: skip


def _assert_split_counted(s):
    """SPLIT's 1,150 of the call's 1,200 input tokens by modality, the other 50 unknown."""
    usage = "gen_ai_client_inference_usage_input_tokens_total"
    assert s.total(usage, gen_ai_token_modality="text") == 1000
    assert s.total(usage, gen_ai_token_modality="image") == 150
    assert s.total(usage, gen_ai_token_modality="unknown") == 50


def test_the_usage_span_of_a_stream_brings_its_modality_split_and_finish_reasons(meter, scrape):
    tracer = meter.tracer_provider.get_tracer("logfire.openai")
    root = _start(tracer, "handler", {})
    _start(tracer, "Chat Completion with 'gpt-4o-mini'", _logfire(), root).end(end_time=T0 + 5 * MS)
    log = _start(tracer, "streaming response from 'gpt-4o-mini'", {**_logfire((1200, 300), "log"), **SPLIT}, root,
                 at=T0 + 500 * MS)  # fmt: skip
    log.end(end_time=T0 + 500 * MS)
    root.end(end_time=T0 + 600 * MS)
    s = scrape()
    _assert_split_counted(s)
    assert s.total("model_finish_reasons_total", finish_reason="stop") == 1


def test_usage_that_comes_after_its_call_was_counted_keeps_its_modality_split(meter, scrape):
    tracer = meter.tracer_provider.get_tracer("logfire.openai")
    root = _start(tracer, "handler", {})
    _start(tracer, "Chat Completion with 'gpt-4o-mini'", _logfire(), root).end(end_time=T0 + 5 * MS)
    assert scrape().total("model_inference_calls_total") == 1  # counted before its stream ended
    log = _start(tracer, "streaming response from 'gpt-4o-mini'", {**_logfire((1200, 300), "log"), **SPLIT}, root,
                 at=T0 + 9**9)  # fmt: skip
    log.end(end_time=T0 + 9**9)
    s = scrape()
    _assert_split_counted(s)
    assert s.total("model_inference_calls_total") == 1
