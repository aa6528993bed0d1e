"""The emit API writes spans that follow the GenAI conventions, on success and failure."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import spanmeter


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _by_name(exporter):
    return {s.name: s for s in exporter.get_finished_spans()}


def test_spans_have_convention_names_kinds_attributes_and_parents(spans):
    tp, exporter = spans
    with spanmeter.agent_run("support", conversation_id="conv-1", agent_id="a-7", tracer_provider=tp):
        with spanmeter.model_call("gpt-4o", provider="openai", stream=True, tracer_provider=tp) as call:
            call.record_usage(input_tokens=10, output_tokens=4, cache_read_tokens=3, cache_write_tokens=2,
                              reasoning_tokens=1)  # fmt: skip
            call.record_response(model="gpt-4o-2024-08-06", finish_reasons=["stop"], response_id="r1")
            call.record_first_chunk()
        with spanmeter.tool_call("search_orders", tool_type="function", call_id="call_1", tracer_provider=tp):
            pass
    got = _by_name(exporter)
    agent, chat, tool = got["invoke_agent support"], got["chat gpt-4o"], got["execute_tool search_orders"]
    assert agent.kind is SpanKind.INTERNAL and chat.kind is SpanKind.CLIENT and tool.kind is SpanKind.INTERNAL
    assert dict(agent.attributes) == {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support",
        "gen_ai.conversation.id": "conv-1", "gen_ai.agent.id": "a-7",
    }  # fmt: skip
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.request.model"] == "gpt-4o"
    assert chat.attributes["gen_ai.provider.name"] == "openai"
    assert chat.attributes["gen_ai.request.stream"] is True
    assert chat.attributes["gen_ai.usage.input_tokens"] == 10
    assert chat.attributes["gen_ai.usage.output_tokens"] == 4
    assert chat.attributes["gen_ai.usage.cache_read.input_tokens"] == 3
    assert chat.attributes["gen_ai.usage.cache_creation.input_tokens"] == 2
    assert chat.attributes["gen_ai.usage.reasoning.output_tokens"] == 1
    assert chat.attributes["gen_ai.response.model"] == "gpt-4o-2024-08-06"
    assert chat.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert chat.attributes["gen_ai.response.id"] == "r1"
    assert chat.attributes["gen_ai.response.time_to_first_chunk"] >= 0
    assert dict(tool.attributes) == {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search_orders",
        "gen_ai.tool.type": "function", "gen_ai.tool.call.id": "call_1",
    }  # fmt: skip
    assert chat.parent.span_id == agent.context.span_id == tool.parent.span_id
    assert agent.status.status_code is StatusCode.UNSET


def test_an_exception_marks_the_span_and_still_ends_it(spans):
    tp, exporter = spans
    with pytest.raises(KeyError):
        with spanmeter.model_call("m", tracer_provider=tp):
            raise KeyError("x")
    span = _by_name(exporter)["chat m"]
    assert span.end_time is not None
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "KeyError"
    assert [e.name for e in span.events] == ["exception"]


class RequestTimedOut(TimeoutError):
    pass


class APITimeoutError(Exception):
    pass


@pytest.mark.parametrize(
    ("exc", "error_type"),
    [
        (TimeoutError(), "TimeoutError"),
        (RequestTimedOut(), "timeout"),  # a TimeoutError whose name does not say so
        (APITimeoutError(), "tests.test_emit.APITimeoutError"),
        (ValueError(), "ValueError"),
    ],
)
def test_timeouts_are_told_apart_from_other_errors(spans, exc, error_type):
    tp, exporter = spans
    with pytest.raises(type(exc)):
        with spanmeter.tool_call("t", tracer_provider=tp):
            raise exc
    assert _by_name(exporter)["execute_tool t"].attributes["error.type"] == error_type


def test_fail_names_the_error_and_survives_the_exception_that_follows(spans):
    tp, exporter = spans
    with pytest.raises(RuntimeError):
        with spanmeter.model_call("m", tracer_provider=tp) as call:
            call.fail("rate_limit_exceeded")
            raise RuntimeError("429")
    with spanmeter.tool_call("quiet", tracer_provider=tp) as tool:
        tool.fail("not_found")
    got = _by_name(exporter)
    assert got["chat m"].attributes["error.type"] == "rate_limit_exceeded"
    assert got["execute_tool quiet"].attributes["error.type"] == "not_found"
    assert got["execute_tool quiet"].status.status_code is StatusCode.ERROR


def test_decorators_make_one_span_per_call_sync_and_async(spans):
    tp, exporter = spans

    @spanmeter.tool_call("sync_tool", tracer_provider=tp)
    def sync_tool(x):
        return x * 2

    @spanmeter.agent_run("async_agent", tracer_provider=tp)
    async def agent(x):
        await asyncio.sleep(0)
        return sync_tool(x) + 1

    assert sync_tool(2) == 4
    assert asyncio.run(agent(3)) == 7
    assert sync_tool.__name__ == "sync_tool"
    names = [s.name for s in exporter.get_finished_spans()]
    assert names.count("execute_tool sync_tool") == 2
    assert names.count("invoke_agent async_agent") == 1
    inner = [s for s in exporter.get_finished_spans() if s.name == "execute_tool sync_tool"][1]
    outer = _by_name(exporter)["invoke_agent async_agent"]
    assert inner.parent.span_id == outer.context.span_id


def test_cancellation_is_recorded_as_a_failure(spans):
    tp, exporter = spans

    async def main():
        async def work():
            async with spanmeter.agent_run("slow", tracer_provider=tp):
                await asyncio.sleep(10)

        task = asyncio.create_task(work())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    span = _by_name(exporter)["invoke_agent slow"]
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "asyncio.exceptions.CancelledError"


@pytest.mark.parametrize("sampler", ["always_off", "no_sdk"])
def test_record_decision_on_a_span_that_is_not_recorded_never_raises(sampler):
    """A tool span the sampler dropped (or no SDK at all: the API's no-op tracer) is a
    NonRecordingSpan without attributes: recording the decision must not fail the tool call."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
    from opentelemetry.trace import NoOpTracerProvider

    provider = TracerProvider(sampler=ALWAYS_OFF) if sampler == "always_off" else NoOpTracerProvider()
    with spanmeter.tool_call("refund", tracer_provider=provider) as tool:
        tool.record_decision("allow")
    assert not tool.span.is_recording()


def test_record_decision_names_the_tool_on_the_event(spans):
    provider, exporter = spans
    with spanmeter.tool_call("refund", tracer_provider=provider) as tool:
        tool.record_decision("require_approval")
    (span,) = exporter.get_finished_spans()
    (event,) = span.events
    assert event.name == "gen_ai.tool.call.decision"
    assert dict(event.attributes) == {"gen_ai.tool.call.decision.outcome": "require_approval",
                                      "gen_ai.tool.name": "refund"}  # fmt: skip


def test_a_run_left_while_a_generator_holds_a_call_open_ends_and_is_not_left_current(meter, scrape):
    """A streamed answer written as a generator, read one chunk and kept: leaving the run must
    end it and restore the context, or every later span and call is charged to a dead run."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    meter.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))

    def answer():
        with meter.model_call("gpt-4o", provider="openai") as call:
            call.record_usage(input_tokens=10, output_tokens=2)
            yield "first chunk"
            yield "second chunk"

    with meter.agent_run("support"):
        stream = answer()
        next(stream)  # the consumer takes one chunk and keeps the generator
    assert trace.get_current_span() is trace.INVALID_SPAN  # neither the run nor its open call stays current
    with meter.agent_run("billing"):
        with meter.model_call("gpt-4o", provider="openai") as call:
            call.record_usage(input_tokens=5, output_tokens=1)
    stream.close()  # the abandoned call ends where it is closed: outside the context it entered
    assert trace.get_current_span() is trace.INVALID_SPAN
    spans = {s.name: s for s in exporter.get_finished_spans() if s.name.startswith("invoke_agent")}
    assert spans["invoke_agent billing"].parent is None  # not a child of the run left before
    s = scrape()
    assert s.total("agent_requests_total", agent_name="support") == 1  # the run left was counted
    assert s.total("agent_requests_total", agent_name="billing") == 1
    assert s.total("model_inference_calls_total", agent_name="billing") == 1
    assert s.total("model_inference_calls_total", agent_name="support") == 1  # the abandoned call, once
