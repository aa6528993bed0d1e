"""GenAI events from other tools: evaluation results and tool-call decisions become metrics
for the agent of the span they are parented to, whether they come as span events or as log
records (OpenTelemetry's Events) through spanmeter's LogRecordProcessor.

The events are built here by hand per semantic-conventions-genai (model/gen-ai/events.yaml:
``gen_ai.evaluation.result``; PR #535: ``gen_ai.tool.call.decision``); see
tests/test_evaluator_events.py for events recorded from a real evaluator package.
"""

from __future__ import annotations

import math
import time

import pytest
from opentelemetry import trace
from opentelemetry.sdk._logs import LoggerProvider

import spanmeter.events

EVAL, DECISION = "gen_ai.evaluation.result", "gen_ai.tool.call.decision"


def evaluation(name, score=None, label=None):
    attrs = {"gen_ai.evaluation.name": name}
    if score is not None:
        attrs["gen_ai.evaluation.score.value"] = score
    if label is not None:
        attrs["gen_ai.evaluation.score.label"] = label
    attrs["gen_ai.evaluation.explanation"] = "free text that must never become a label"
    return attrs


@pytest.fixture
def logger(meter):
    provider = LoggerProvider()
    provider.add_log_record_processor(spanmeter.events.log_processor(meter))
    yield provider.get_logger("an-evaluator")
    provider.shutdown()


def test_evaluation_span_events_score_the_agent_of_the_evaluated_span(meter, scrape):
    tracer = meter.tracer_provider.get_tracer("an-instrumentation")
    with meter.agent_run("support"):
        with tracer.start_as_current_span("chat gpt-4o", attributes={"gen_ai.operation.name": "chat",
                                                                     "gen_ai.request.model": "gpt-4o"}) as span:
            span.add_event(EVAL, evaluation("relevance", 0.8, "relevant"))
            span.add_event(EVAL, evaluation("groundedness", 0.5))
            span.add_event("gen_ai.client.inference.operation.details", {"gen_ai.evaluation.name": "ignored"})
    with meter.agent_run("billing") as run:  # an evaluation of the run itself
        run.span.add_event(EVAL, evaluation("relevance", 0.2))
    s = scrape()
    assert s.value("agent_quality_score", agent_name="support", metric_type="relevance") == 0.8
    assert s.value("agent_quality_score", agent_name="support", metric_type="groundedness") == 0.5
    assert s.value("agent_quality_score", agent_name="billing", metric_type="relevance") == 0.2
    assert s.value("agent_evaluation_score_count", agent_name="support", metric_type="relevance") == 1
    assert s.value("agent_evaluation_score_bucket", agent_name="support", metric_type="relevance", le="0.8") == 1
    assert s.value("agent_evaluation_score_bucket", agent_name="support", metric_type="relevance", le="0.7") == 0
    assert {ls["metric_type"] for ls in s.label_sets("agent_quality_score")} == {"relevance", "groundedness"}
    assert "free text" not in s.text


def test_evaluation_log_records_emitted_after_the_span_ended_find_its_agent(meter, scrape, logger):
    tracer = meter.tracer_provider.get_tracer("an-instrumentation")
    with meter.agent_run("support"):
        with tracer.start_as_current_span("chat gpt-4o", attributes={"gen_ai.operation.name": "chat",
                                                                     "gen_ai.response.id": "chatcmpl-42"}) as span:
            evaluated = trace.set_span_in_context(span)
    # later, off the request path, as asynchronous evaluators do: parented to the evaluated span
    logger.emit(event_name=EVAL, attributes=evaluation("relevance", 0.9), context=evaluated)
    logger.emit(event_name=EVAL, attributes=evaluation("relevance", 0.7), context=evaluated)
    # no span context, but the response id of the evaluated call (the convention's fallback)
    logger.emit(event_name=EVAL, attributes={**evaluation("safety", 1.0), "gen_ai.response.id": "chatcmpl-42"})
    logger.emit(body="an ordinary log line", attributes={"gen_ai.evaluation.name": "not an event"})
    s = scrape()
    assert s.value("agent_quality_score", agent_name="support", metric_type="relevance") == pytest.approx(0.8)
    assert s.value("agent_evaluation_score_count", agent_name="support", metric_type="relevance") == 2
    assert s.value("agent_quality_score", agent_name="support", metric_type="safety") == 1.0
    assert s.total("agent_evaluation_score_count") == 3


def test_scores_outside_0_1_non_numeric_or_absent_are_counted_drops_never_raised(meter, scrape, logger):
    with meter.agent_run("support") as run:
        for bad in (1.5, -0.1, math.nan, True, "high"):
            run.span.add_event(EVAL, evaluation("relevance", bad))
        run.span.add_event(EVAL, evaluation("toxicity", label="non-toxic"))  # a label-only verdict
        run.span.add_event(EVAL, {"gen_ai.evaluation.score.value": 0.5})  # no name
        run.span.add_event(EVAL, evaluation("relevance", "0.75"))  # a numeric string is read
        logger.emit(event_name=EVAL, attributes=evaluation("relevance", 7))
    s = scrape()
    drops = {(x["field"], x["reason"]) for x in s.label_sets("spanmeter_dropped_values_total")}
    assert s.value("spanmeter_dropped_values_total", field="evaluation_score", reason="out_of_range") == 4
    assert s.value("spanmeter_dropped_values_total", field="evaluation_score", reason="bool_value") == 1
    assert s.value("spanmeter_dropped_values_total", field="evaluation_score", reason="not_a_number") == 1
    assert s.value("spanmeter_dropped_values_total", field="evaluation_score", reason="absent") == 1
    assert s.value("spanmeter_dropped_values_total", field="evaluation_score", reason="no_name") == 1
    assert ("evaluation_score", "absent") in drops
    assert s.value("agent_quality_score", agent_name="support", metric_type="relevance") == 0.75
    assert s.value("spanmeter_processor_errors_total") == 0


def test_tool_call_decisions_count_allow_deny_and_escalations_per_agent_and_tool(meter, scrape, logger):
    tracer = meter.tracer_provider.get_tracer("a-framework")
    with meter.agent_run("support") as run:
        # approved, then ran: the decision is emitted inside the tool span, as a log record
        with meter.tool_call("refund"):
            logger.emit(event_name=DECISION, attributes={"gen_ai.tool.call.decision.outcome": "require_approval",
                                                         "gen_ai.tool.name": "refund", "gen_ai.tool.call.id": "c1"})
            logger.emit(event_name=DECISION, attributes={"gen_ai.tool.call.decision.outcome": "allow",
                                                         "gen_ai.tool.name": "refund", "gen_ai.tool.call.id": "c1"})
        # denied: no execute_tool span ever; the decision is a span event of the run
        run.span.add_event(DECISION, {"gen_ai.tool.call.decision.outcome": "deny", "gen_ai.tool.name": "delete_account"})
        # the decision written as an attribute of the tool span
        tracer.start_span("execute_tool search", attributes={"gen_ai.operation.name": "execute_tool",
                                                             "gen_ai.tool.name": "search",
                                                             "gen_ai.tool.call.decision": "allow"}).end()
        run.span.add_event(DECISION, {"gen_ai.tool.call.decision.outcome": "maybe", "gen_ai.tool.name": "search"})
    s = scrape()
    decisions = {(x["agent_name"], x["tool_name"], x["decision"]): s.value("agent_tool_call_decisions_total", **x)
                 for x in s.label_sets("agent_tool_call_decisions_total")}
    assert decisions == {
        ("support", "refund", "require_approval"): 1,
        ("support", "refund", "allow"): 1,
        ("support", "delete_account", "deny"): 1,
        ("support", "search", "allow"): 1,
    }
    assert s.value("spanmeter_dropped_values_total", field="tool_call_decision", reason="unknown_value") == 1


def test_an_event_whose_span_is_never_seen_counts_without_an_agent_after_a_wait(meter, scrape, logger):
    logger.emit(event_name=EVAL, attributes=evaluation("relevance", 0.6))  # no span, no response id
    meter.processor.drain()
    assert meter.processor.events.waiting == 1  # it waits for its span ...
    with meter.state.lock:
        meter.processor.events.resolve_locked(meter.state, {}, None,
                                              now=time.monotonic() + spanmeter.events.WAIT_SECONDS)  # fmt: skip
    assert meter.processor.events.waiting == 0  # ... WAIT_SECONDS at most, then counts without an agent
    assert scrape().value("agent_quality_score", agent_name="unknown", metric_type="relevance") == 0.6


def test_a_flush_counts_the_waiting_events_at_once(meter, scrape, logger):
    logger.emit(event_name=EVAL, attributes=evaluation("relevance", 0.4))
    assert scrape().value("agent_quality_score", agent_name="unknown", metric_type="relevance") == 0.4


def test_log_processor_needs_a_running_spanmeter():
    with pytest.raises(spanmeter.ConfigurationError, match="configure"):
        spanmeter.events.log_processor()


def test_a_log_event_with_a_map_or_list_response_id_is_counted_never_a_processor_error(meter, scrape, logger):
    """Log attributes may be maps and lists (OpenTelemetry's AnyValue): a response id of such
    a type names no call, and must not cost the event or raise in aggregation."""
    logger.emit(event_name=EVAL, attributes={**evaluation("relevance", 0.5), "gen_ai.response.id": {"id": "x"}})
    logger.emit(event_name=EVAL, attributes={**evaluation("relevance", 0.7), "gen_ai.response.id": ["a", "b"]})
    logger.emit(event_name=EVAL, attributes=evaluation("relevance", 0.9))
    s = scrape()
    assert s.value("spanmeter_processor_errors_total") == 0
    assert s.value("agent_evaluation_score_count", agent_name="unknown", metric_type="relevance") == 3


def test_a_tool_span_with_both_the_decision_attribute_and_the_event_counts_one_decision(meter, scrape):
    tracer = meter.tracer_provider.get_tracer("a-framework")
    with meter.agent_run("support"):
        span = tracer.start_span("execute_tool search", attributes={
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search",
            "gen_ai.tool.call.decision": "allow"})  # fmt: skip
        span.add_event(DECISION, {"gen_ai.tool.call.decision.outcome": "allow", "gen_ai.tool.name": "search"})
        span.end()
    s = scrape()
    assert s.value("agent_tool_call_decisions_total", agent_name="support", tool_name="search", decision="allow") == 1
