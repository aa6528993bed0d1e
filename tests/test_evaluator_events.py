"""Evaluation events recorded from a real evaluator package become quality metrics.

``tests/fixtures/events/splunk-otel-util-genai-evals.json`` holds what Splunk's
``splunk-otel-util-genai`` + ``splunk-otel-util-genai-evals`` (builtin ``length`` evaluator,
reported as ``relevance``) emitted for an agent run with two chat calls: its spans and its
log-record events, each parented to the span it evaluated (written by
``scripts/record_evaluator_events.py``; the package needs an older OpenTelemetry API than
this project's, so it runs there, not here). The spans are rebuilt here with the recorded
names, attributes and nesting, and the recorded events are emitted as log records through
spanmeter's LogRecordProcessor, after the spans ended, as the evaluator did.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk._logs import LoggerProvider

import spanmeter.events

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "events" / "splunk-otel-util-genai-evals.json"


def replay(meter, recording) -> None:
    tracer = meter.tracer_provider.get_tracer("splunk-otel-util-genai")
    live = {}
    for span in recording["spans"]:  # in start order
        parent = live.get(span["parent_span_id"])
        context = trace.set_span_in_context(parent) if parent is not None else None
        live[span["span_id"]] = tracer.start_span(span["name"], context=context, attributes=span["attributes"])
    for span_id in sorted(live, reverse=True):  # children end before their parents
        live[span_id].end()
    provider = LoggerProvider()
    provider.add_log_record_processor(spanmeter.events.log_processor(meter))
    logger = provider.get_logger("opentelemetry.util.genai.emitters.evaluation")
    for record in recording["logs"]:  # after the spans ended, as the evaluator's thread emits them
        context = trace.set_span_in_context(live[record["span_id"]]) if record["span_id"] else None
        logger.emit(event_name=record["event_name"], attributes=record["attributes"], body=record["body"],
                    context=context)  # fmt: skip
    provider.shutdown()


def test_a_real_evaluators_events_score_the_agent_of_the_evaluated_calls(meter, scrape):
    recording = json.loads(FIXTURE.read_text())
    evaluations = [r for r in recording["logs"] if r["event_name"] == "gen_ai.evaluation.result"]
    scores = [r["attributes"]["gen_ai.evaluation.score.value"] for r in evaluations]
    assert len(scores) == 2 and all(0 <= x <= 1 for x in scores)  # the recording is what the test needs
    replay(meter, recording)
    s = scrape()
    assert s.value("agent_quality_score", agent_name="support", metric_type="relevance") == pytest.approx(
        sum(scores) / 2)  # fmt: skip
    assert s.value("agent_evaluation_score_count", agent_name="support", metric_type="relevance") == 2
    assert s.value("agent_evaluation_score_sum", agent_name="support", metric_type="relevance") == pytest.approx(
        sum(scores))  # fmt: skip
    assert s.value("model_inference_calls_total", agent_name="support", model_id="gpt-4o") == 2
    assert s.total("spanmeter_dropped_values_total", field="evaluation_score") == 0
    assert "Length characters" not in s.text  # the explanation never becomes a label


def test_its_events_find_the_agent_through_the_span_even_when_they_do_not_name_it(meter, scrape):
    recording = json.loads(FIXTURE.read_text())
    for record in recording["logs"]:
        record["attributes"].pop("gen_ai.agent.name", None)
    for span in recording["spans"][1:]:  # the chat spans say nothing of their agent: only the nesting does
        span["attributes"].pop("gen_ai.agent.name", None)
    replay(meter, recording)
    s = scrape()
    assert s.value("agent_evaluation_score_count", agent_name="support", metric_type="relevance") == 2
    assert not [x for x in s.label_sets("agent_quality_score") if x["agent_name"] != "support"]
