#!/usr/bin/env python3
"""Record ``gen_ai.evaluation.result`` events from a real evaluator package.

Runs Splunk's ``splunk-otel-util-genai`` (the GenAI telemetry handler) with
``splunk-otel-util-genai-evals`` (its evaluation manager and builtin ``length`` evaluator) in
a virtualenv of its own, outside the repo, and writes the spans it made and the log-record
events it emitted to ``tests/fixtures/events/splunk-otel-util-genai-evals.json``. DO NOT EDIT
that file: regenerate it with::

    python scripts/record_evaluator_events.py [--venv DIR]   (default /tmp/spanmeter-evaluator-venv)

Scenario: an agent run ``support`` with two chat calls (a short and a long answer); the
evaluation manager scores each call after it ended, in its own thread, and emits one
``gen_ai.evaluation.result`` log record per call, parented to the evaluated chat span.
The package's event emitter only emits the metric names it knows (bias, toxicity,
sentiment, hallucination, relevance), so its builtin ``length`` evaluator is configured to
report under ``relevance`` (``OTEL_INSTRUMENTATION_GENAI_EVALS_EVALUATORS``); its scoring
(length / (length + 50)) and the event's shape are the package's own.

What the recorder changes: trace and span ids are renumbered in start order (1, 2, ...);
nothing else. The package needs opentelemetry-api < 1.39 (it imports ``opentelemetry._events``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "events" / "splunk-otel-util-genai-evals.json"
REQUIREMENTS = ["splunk-otel-util-genai==0.1.15", "splunk-otel-util-genai-evals==0.1.8",
                "opentelemetry-api==1.38.0", "opentelemetry-sdk==1.38.0",
                "opentelemetry-semantic-conventions==0.59b0", "opentelemetry-instrumentation==0.59b0"]  # fmt: skip
ENVIRONMENT = {
    "OTEL_INSTRUMENTATION_GENAI_EVALS_EVALUATORS": "length(LLMInvocation(relevance))",
    "OTEL_INSTRUMENTATION_GENAI_EMITTERS": "span_metric_event",
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",
}
ANSWERS = ("Yes.", "Your order left the warehouse this morning; the carrier expects to deliver it tomorrow "
           "before noon, and you will get a tracking link by e-mail within the hour.")  # fmt: skip


def record() -> dict:
    """Inside the virtualenv: run the scenario and return the recording."""
    os.environ.update(ENVIRONMENT)
    from importlib.metadata import version

    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogExporter, SimpleLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.util.genai.handler import get_telemetry_handler
    from opentelemetry.util.genai.types import AgentInvocation, InputMessage, LLMInvocation, OutputMessage, Text

    spans, logs = InMemorySpanExporter(), InMemoryLogExporter()
    tracer_provider, logger_provider = TracerProvider(), LoggerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    handler = get_telemetry_handler(tracer_provider=tracer_provider, meter_provider=MeterProvider(),
                                    logger_provider=logger_provider)  # fmt: skip
    agent = handler.start_agent(AgentInvocation(name="support"))
    for n, answer in enumerate(ANSWERS, start=1):
        call = LLMInvocation(request_model="gpt-4o", provider="openai",
                             input_messages=[InputMessage(role="user", parts=[Text(content="Where is my order?")])])
        handler.start_llm(call)
        call.output_messages = [OutputMessage(role="assistant", parts=[Text(content=answer)], finish_reason="stop")]
        call.input_tokens, call.output_tokens, call.response_id = 12, len(answer) // 4, f"chatcmpl-{n}"
        handler.stop_llm(call)
    handler.stop_agent(agent)
    handler.wait_for_evaluations(30)
    finished = sorted(spans.get_finished_spans(), key=lambda s: s.start_time)
    ids = {s.context.span_id: n for n, s in enumerate(finished, start=1)}
    traces = {}
    for s in finished:
        traces.setdefault(s.context.trace_id, len(traces) + 1)
    return {
        "format": 1,
        "packages": {p: version(p) for p in ("splunk-otel-util-genai", "splunk-otel-util-genai-evals",
                                             "opentelemetry-sdk")},  # fmt: skip
        "environment": ENVIRONMENT,
        "spans": [{"span_id": ids[s.context.span_id], "trace_id": traces[s.context.trace_id],
                   "parent_span_id": ids.get(s.parent.span_id) if s.parent else None, "name": s.name,
                   "kind": s.kind.name, "attributes": _plain(dict(s.attributes)),
                   "events": [{"name": e.name, "attributes": _plain(dict(e.attributes or {}))} for e in s.events]}
                  for s in finished],  # fmt: skip
        "logs": [{"event_name": r.log_record.event_name or (r.log_record.attributes or {}).get("event.name"),
                  "span_id": ids.get(r.log_record.span_id), "attributes": _plain(dict(r.log_record.attributes or {})),
                  "body": _plain(r.log_record.body)}
                 for r in logs.get_finished_logs()],  # fmt: skip
    }


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", default="/tmp/spanmeter-evaluator-venv")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inside:
        json.dump(record(), sys.stdout, indent=1, sort_keys=True)
        return 0
    venv = Path(args.venv)
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *REQUIREMENTS], check=True)
    out = subprocess.run([str(python), __file__, "--inside"], check=True, capture_output=True, text=True).stdout
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(out + "\n", encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
