"""The processor: ancestry, bounded memory, bad input and its own failures."""

from __future__ import annotations

import logging
import math

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, Status, StatusCode

from spanmeter.aggregate import State
from spanmeter.processor import SpanmeterProcessor

AGENT = {"gen_ai.operation.name": "invoke_agent"}


def _start(tracer, name, attributes, parent=None):
    ctx = trace.set_span_in_context(parent) if parent is not None else None
    return tracer.start_span(name, context=ctx, attributes=attributes)


def test_model_span_deep_under_an_agent_gets_its_name_and_counts_in_its_run(meter, scrape):
    tracer = meter.tracer_provider.get_tracer("t")
    agent = _start(tracer, "invoke_agent rag", {**AGENT, "gen_ai.agent.name": "rag"})
    chain = _start(tracer, "chain", {"framework.step": "plan"}, agent)  # no GenAI attributes at all
    retrieval = _start(tracer, "retrieval docs", {"gen_ai.operation.name": "retrieval"}, chain)
    chat = _start(tracer, "chat m", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
                                     "gen_ai.usage.input_tokens": 40, "gen_ai.usage.output_tokens": 2}, retrieval)  # fmt: skip
    for span in (chat, retrieval, chain, agent):
        span.end()
    s = scrape()
    assert s.value("model_inference_calls_total", agent_name="rag", model_id="m") == 1
    assert s.value("agent_inference_calls_per_run_sum", agent_name="rag") == 1
    assert s.value("agent_tokens_per_run_sum", agent_name="rag") == 42
    assert meter.processor.open_spans == 0


def test_nested_agent_runs_count_only_their_own_children(meter, scrape):
    tracer = meter.tracer_provider.get_tracer("t")
    router = _start(tracer, "invoke_agent router", {**AGENT, "gen_ai.agent.name": "router"})
    route = _start(tracer, "chat small", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "small"}, router)
    route.end()
    billing = _start(tracer, "invoke_agent billing", {**AGENT, "gen_ai.agent.name": "billing"}, router)
    for _ in range(3):
        _start(tracer, "chat big", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "big"}, billing).end()
    billing.end()
    router.end()
    s = scrape()
    assert s.value("model_inference_calls_total", agent_name="router", model_id="small") == 1
    assert s.value("model_inference_calls_total", agent_name="billing", model_id="big") == 3
    assert s.value("agent_inference_calls_per_run_sum", agent_name="router") == 1
    assert s.value("agent_inference_calls_per_run_sum", agent_name="billing") == 3


def test_agent_named_after_it_started_still_names_its_children(meter, scrape):
    tracer = meter.tracer_provider.get_tracer("t")
    agent = _start(tracer, "invoke_agent", dict(AGENT))
    agent.set_attribute("gen_ai.agent.name", "late")
    _start(tracer, "execute_tool x", {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "x"}, agent).end()
    agent.end()
    s = scrape()
    assert s.value("agent_tool_calls_total", agent_name="late", tool_name="x", status="success") == 1
    assert s.value("agent_requests_total", agent_name="late", status="success") == 1


def test_spans_outside_any_run_are_attributed_to_unknown(meter, scrape):
    tracer = meter.tracer_provider.get_tracer("t")
    _start(tracer, "chat m", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}).end()
    _start(tracer, "GET /health", {"http.request.method": "GET"}).end()  # not ours: ignored
    s = scrape()
    assert s.value("model_inference_calls_total", agent_name="unknown", model_id="m") == 1
    assert s.value("spanmeter_spans_total", kind="inference") == 1


def test_runs_that_never_end_do_not_grow_memory(scrape, meter):
    processor = SpanmeterProcessor(meter.state, max_open_spans=100)
    meter.tracer_provider.add_span_processor(processor)
    meter.processor.shutdown()  # only the bounded processor counts in this test
    tracer = meter.tracer_provider.get_tracer("t")
    for i in range(1000):
        agent = _start(tracer, "invoke_agent leak", {**AGENT, "gen_ai.agent.name": "leak"})
        _start(tracer, "chat m", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}, agent)
        assert processor.open_spans <= 100
    s = scrape()
    assert s.value("spanmeter_open_spans_evicted_total") == 2000 - processor.open_spans
    # a run that starts now still works
    agent = _start(tracer, "invoke_agent ok", {**AGENT, "gen_ai.agent.name": "ok"})
    _start(tracer, "chat m", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}, agent).end()
    agent.end()
    assert scrape().value("model_inference_calls_total", agent_name="ok", model_id="m") == 1


def _readable(attributes, *, start=0, end=10**9, status=StatusCode.UNSET, span_id=1):
    ctx = SpanContext(trace_id=1, span_id=span_id, is_remote=False)
    return ReadableSpan(name="x", context=ctx, attributes=attributes, start_time=start, end_time=end,
                        status=Status(status))  # fmt: skip


def test_bad_attribute_values_never_raise_and_are_coerced_or_counted(meter, scrape):
    chat = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}
    bad = [
        {"gen_ai.usage.input_tokens": "123"},  # numeric text: used
        {"gen_ai.usage.input_tokens": 2.6},  # float: rounded to 3
        {"gen_ai.usage.input_tokens": "lots"},
        {"gen_ai.usage.input_tokens": -5},
        {"gen_ai.usage.input_tokens": math.nan},
        {"gen_ai.usage.input_tokens": True},
        {"gen_ai.usage.input_tokens": 10**30},
        {"gen_ai.usage.input_tokens": [1, 2]},
        {"gen_ai.usage.output_tokens": math.inf},
    ]
    for n, extra in enumerate(bad):
        meter.processor.on_end(_readable({**chat, **extra}, span_id=n + 1))
    meter.processor.on_end(_readable({**chat, "gen_ai.request.model": "x" * 10_000}))
    meter.processor.on_end(_readable({**chat, "gen_ai.request.model": "caf\udce9"}))  # undecodable byte
    meter.processor.on_end(_readable({**chat, "gen_ai.request.model": ["not", "text"]}))
    meter.processor.on_end(_readable({**chat, "gen_ai.agent.name": ""}))
    meter.processor.on_end(_readable(chat, start=5 * 10**9, end=10**9))  # ends before it starts
    meter.processor.on_end(_readable(chat, start=None, end=None))
    s = scrape()
    assert s.value("model_inference_calls_total", agent_name="unknown", model_id="m") == len(bad) + 3
    assert s.value("agent_token_usage_total", agent_name="unknown", model_id="m", token_type="input") == 126
    assert s.value("agent_token_usage_total", agent_name="unknown", model_id="m", token_type="output") == 0
    for reason in ("not_a_number", "negative", "not_finite", "bool_value", "out_of_range", "wrong_type"):
        assert s.value("spanmeter_dropped_values_total", field="input_tokens", reason=reason) == 1, reason
    assert s.value("spanmeter_dropped_values_total", field="output_tokens", reason="not_finite") == 1
    assert s.value("model_inference_calls_total", model_id="x" * 128) == 1
    assert s.value("model_inference_calls_total", model_id="caf?") == 1
    assert s.value("model_inference_calls_total", agent_name="unknown", model_id="unknown") == 1
    assert s.value("spanmeter_dropped_values_total", field="model", reason="truncated") == 1
    assert s.value("spanmeter_dropped_values_total", field="model", reason="invalid_utf8") == 1
    assert s.value("spanmeter_dropped_values_total", field="model", reason="wrong_type") == 1
    assert s.value("spanmeter_dropped_values_total", field="duration", reason="negative") == 1
    assert s.value("spanmeter_dropped_values_total", field="duration", reason="missing_timestamps") == 1
    assert s.value("model_inference_duration_seconds_count", agent_name="unknown", model_id="m") == len(bad) + 2
    assert s.value("spanmeter_processor_errors_total") == 0


class _Exploding:
    """A span whose status cannot be read: stands for any bug inside the processor."""

    context = SpanContext(trace_id=1, span_id=99, is_remote=False)
    attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "t"}
    start_time, end_time = 0, 1

    @property
    def status(self):
        raise RuntimeError("boom")


def test_an_internal_error_is_caught_counted_and_logged_once_a_minute(meter, scrape, caplog):
    with caplog.at_level(logging.WARNING, logger="spanmeter"):
        for _ in range(3):
            meter.processor.on_end(_Exploding())
    assert scrape().value("spanmeter_processor_errors_total") == 3
    assert len([r for r in caplog.records if r.name == "spanmeter"]) == 1


def test_label_values_beyond_the_limit_collapse_into_other(scrape, meter):
    state = State(label_limits={"model": 3})
    processor = SpanmeterProcessor(state)
    for n in range(10):
        processor.on_end(_readable({"gen_ai.operation.name": "chat", "gen_ai.request.model": f"m{n}"}, span_id=n + 1))
    processor.force_flush()
    models = {}
    from spanmeter.aggregate import produce

    for metric in produce(state):
        if metric.name == "model_inference_calls":
            models = {p.attributes["model_id"]: p.value for p in metric.data.data_points}
        if metric.name == "spanmeter_label_overflow":
            assert [(p.attributes, p.value) for p in metric.data.data_points] == [({"label": "model"}, 7)]
    assert models == {"m0": 1, "m1": 1, "m2": 1, "other": 7}


def test_a_stopped_processor_ignores_spans(meter, scrape):
    meter.processor.shutdown()
    with meter.agent_run("after"):
        pass
    assert scrape().total("agent_requests_total") == 0


def test_main_agent_names_the_calls_and_tools_no_agent_span_encloses(meter, scrape):
    tracer = meter.tracer_provider.get_tracer("a-hosted-agent")
    main = {"gen_ai.main_agent.name": "concierge"}
    tracer.start_span("chat gpt-4o", attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                                                 "gen_ai.usage.input_tokens": 10, **main}).end()  # fmt: skip
    tracer.start_span("execute_tool search", attributes={"gen_ai.operation.name": "execute_tool",
                                                         "gen_ai.tool.name": "search", **main}).end()  # fmt: skip
    with meter.agent_run("billing"):  # an agent span encloses it: its run's agent wins
        tracer.start_span("chat gpt-4o", attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                                                     **main}).end()  # fmt: skip
    s = scrape()
    assert s.value("model_inference_calls_total", agent_name="concierge", model_id="gpt-4o") == 1
    assert s.value("model_inference_calls_total", agent_name="billing", model_id="gpt-4o") == 1
    assert s.value("agent_tool_calls_total", agent_name="concierge", tool_name="search", status="success") == 1
    assert not s.label_sets("agent_requests_total") or {x["agent_name"] for x in s.label_sets("agent_requests_total")
                                                        } == {"billing"}  # no phantom run of the main agent


def test_ended_spans_waiting_for_aggregation_are_not_kept_alive(meter, scrape):
    """Their ancestry node lets go of the span: only its attributes wait (benchmarks/overhead.py)."""
    import weakref

    tracer = meter.tracer_provider.get_tracer("t")
    agent = _start(tracer, "invoke_agent rag", {**AGENT, "gen_ai.agent.name": "rag"})
    chat = _start(tracer, "chat m", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
                                     "gen_ai.usage.input_tokens": 40, "gen_ai.usage.output_tokens": 2}, agent)  # fmt: skip
    chat.end()
    ended = weakref.ref(chat)
    del chat  # freed at once (no cycle): checked before the aggregator's first round, a second away
    assert ended() is None
    assert meter.processor.pending_spans == 1  # it still waits for aggregation
    agent.end()
    assert scrape().value("agent_tokens_per_run_sum", agent_name="rag") == 42
