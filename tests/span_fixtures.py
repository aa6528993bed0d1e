"""Span fixtures recorded from real GenAI instrumentations, rebuilt as OpenTelemetry SDK spans.

The fixtures are written by ``scripts/record_fixtures.py`` (never by hand): one JSON file per
recording (an instrumentation set at exact versions) and scenario, at
``tests/fixtures/spans/<recording>/<scenario>.json``. Use them as::

    fixture = span_fixtures.load("openai-v2/openai_chat")
    for span in fixture.spans():          # ReadableSpans, in the order the SDK ended them
        processor.on_end(span)
    fixture.replay(processor)             # or: on_start/on_end in the recorded order, live spans
    fixture.expected["by_model"]          # what the fake server returned, per requested model

Format 1 (JSON, keys sorted, one-space indent; all times are integer nanoseconds):

- ``format``: 1. ``recording``, ``scenario``: the names above. ``instrumentations``: what was
  instrumented, in order. ``environment``: variables set for the recording (e.g.
  ``OTEL_SEMCONV_STABILITY_OPT_IN``). ``config``: settings given to an instrumentation.
  ``notes``: what the recorder did that matters (e.g. the anthropic SDK's own spans switched
  off). ``packages``: versions of the relevant installed distributions. ``python``.
- ``fake_server.usage``: the token counts the fake server was set to answer with.
- ``expected``: what the fake server returned, from the bodies it sent:
  ``calls`` (one per HTTP request, in order: ``path``, ``request_model``, ``response_model``,
  ``stream``, ``status`` ``ok``/``error`` and ``error``, ``usage`` as the provider sent it,
  ``tokens`` in the GenAI meaning: ``input`` includes cache reads and writes, ``output``
  includes reasoning, plus ``cache_read``, ``cache_write``, ``reasoning``; ``tool_calls``
  the tools the model asked for; ``finish_reasons``); ``by_model`` (per requested model:
  ``calls``, ``errors``, ``response_models``, summed ``tokens``); ``tool_calls_requested``
  and ``tool_executions`` (tool name -> count: asked by the model / run by the app);
  ``agent_runs`` (agent name -> count). Fixtures of agent frameworks also have
  ``calls_by_agent`` (agent name -> the LLM requests made by that agent's runs: told by the mark
  ``[agent:<name>]`` its instructions carry in each request, or, where the scenario marks the
  app's runs, by the requests the fake server got while a run of that agent was in progress;
  every agent of ``agent_runs`` is listed, with 0 if it made none) and ``workflows`` (workflow
  name -> count, e.g. openai-agents' ``Agent workflow``; ``{}`` when the framework has none).
  Their ``agent_runs`` is exactly what the app ran, so any other agent name is a phantom run.
- ``resource``: the resource attributes shared by every span (a span with another resource
  has its own ``resource``).
- ``spans``, in the order they ended: ``name``, ``kind`` (``SpanKind`` name), ``trace_id``
  (32 hex), ``span_id`` (16 hex; both renumbered in start order), ``parent_span_id`` (or
  null; ``parent_is_remote`` when true), ``start_ns`` / ``end_ns`` (since the first span of
  the scenario started), ``started_at_step`` / ``ended_at_step`` (the order of every
  ``on_start`` and ``on_end`` in the scenario, counted together from 1),
  ``attributes_at_start`` (the keys the span started with), ``attributes`` (final; JSON
  lists stand for the SDK's tuples), ``status`` (``code`` name, ``description``), ``events``
  (``name``, ``time_ns``, ``attributes``), ``links``, ``scope`` (``name``, ``version``,
  ``schema_url``, ``attributes``).
- ``unended_spans``: spans that started and never ended in the scenario (should be empty).
- ``metrics``: what the instrumentation recorded through the metrics API during the
  scenario (delta): ``scope``, ``name``, ``unit``, ``type``, ``points`` (``attributes`` and
  ``value`` or ``count``/``sum``). ``logs``: log records / events it emitted
  (``event_name``, ``attributes``, ``body``, ``scope``).

Times are rebased on ``base_time_ns``; ids, durations and order are as recorded.
"""

from __future__ import annotations

import json
from pathlib import Path

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)

FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures" / "spans"
FORMAT = 1
#: 2026-01-01T00:00:00Z: where a fixture's time 0 lands unless told otherwise.
BASE_TIME_NS = 1_767_225_600_000_000_000


class SpanFixture:
    """One recorded scenario: its spans, what the fake server returned, and how it was recorded."""

    def __init__(self, path: Path, data: dict):
        if data.get("format") != FORMAT:
            raise ValueError(f"{path}: fixture format {data.get('format')!r}, this loader reads {FORMAT}")
        self.path = path
        self.data = data
        self.recording: str = data["recording"]
        self.scenario: str = data["scenario"]
        self.id = f"{self.recording}/{self.scenario}"

    def __repr__(self) -> str:
        return f"SpanFixture({self.id!r}, {len(self.data['spans'])} spans)"

    # --- what the recording says --------------------------------------------------------
    @property
    def expected(self) -> dict:
        """What the fake server returned (see the module docstring)."""
        return self.data["expected"]

    @property
    def packages(self) -> dict[str, str]:
        return self.data["packages"]

    @property
    def environment(self) -> dict[str, str]:
        return self.data["environment"]

    @property
    def notes(self) -> list[str]:
        return self.data["notes"]

    @property
    def metrics(self) -> list[dict]:
        return self.data["metrics"]

    @property
    def logs(self) -> list[dict]:
        return self.data["logs"]

    @property
    def raw_spans(self) -> list[dict]:
        """The spans as stored, in end order."""
        return self.data["spans"]

    # --- spans ----------------------------------------------------------------------------
    def spans(self, base_time_ns: int = BASE_TIME_NS) -> list[ReadableSpan]:
        """Finished SDK spans, in the order they ended (children before parents).

        Attributes are immutable ``BoundedAttributes``, as the SDK hands them to ``on_end``.
        """
        resource = _resource(self.data["resource"])
        return [_readable(raw, resource, base_time_ns) for raw in self._end_order()]

    def replay(self, processor, base_time_ns: int = BASE_TIME_NS) -> list[ReadableSpan]:
        """Drive ``processor`` as the SDK did: ``on_start`` and ``on_end`` in the recorded order.

        Each span is a live SDK span, made by an SDK tracer with the recorded ids, that starts
        with the attribute keys it started with (final values) and gets the rest, its events
        and status before it ends; so a processor that keeps the live span from ``on_start``
        sees it fill up. Returns the ended spans, in end order.
        """
        ids = _RecordedIds()
        provider = TracerProvider(
            resource=_resource(self.data["resource"]), id_generator=ids, span_limits=_LIMITS, sampler=ALWAYS_ON
        )
        ended: list[ReadableSpan] = []

        class _Collect(SpanProcessor):
            def on_start(self, span, parent_context=None):
                processor.on_start(span, parent_context=parent_context)

            def _on_ending(self, span):
                hook = getattr(processor, "_on_ending", None)
                if hook is not None:
                    hook(span)

            def on_end(self, span):
                ended.append(span)
                processor.on_end(span)

        provider.add_span_processor(_Collect())
        steps = [(raw["started_at_step"], 0, raw) for raw in self.raw_spans]
        steps += [(raw["ended_at_step"], 1, raw) for raw in self.raw_spans]
        steps.sort(key=lambda step: (step[0], step[1]))
        live = {}
        for _, is_end, raw in steps:
            if not is_end:
                if "resource" in raw:
                    raise ValueError(f"{self.id}: replay needs one resource for all spans")
                scope = raw["scope"]
                tracer = provider.get_tracer(scope["name"] or "", scope["version"], scope["schema_url"],
                                             scope["attributes"] or None)  # fmt: skip
                parent = _parent(raw)
                ids.trace_id, ids.span_id = int(raw["trace_id"], 16), int(raw["span_id"], 16)
                attributes = raw["attributes"]
                live[raw["span_id"]] = span = tracer.start_span(
                    raw["name"],
                    context=None if parent is None else set_span_in_context(NonRecordingSpan(parent)),
                    kind=SpanKind[raw["kind"]],
                    attributes={k: attributes[k] for k in raw["attributes_at_start"] if k in attributes},
                    links=_links(raw),
                    start_time=base_time_ns + raw["start_ns"],
                )
                if span.get_span_context().span_id != ids.span_id:
                    raise AssertionError(f"{self.id}: the SDK did not take the recorded span id")
            else:
                span = live.pop(raw["span_id"])
                span.set_attributes({k: v for k, v in raw["attributes"].items() if k not in raw["attributes_at_start"]})
                for event in raw["events"]:
                    span.add_event(event["name"], event["attributes"], base_time_ns + event["time_ns"])
                status = _status(raw["status"])
                if status.status_code is not StatusCode.UNSET:
                    span.set_status(status)
                span.end(end_time=base_time_ns + raw["end_ns"])
        provider.shutdown()
        return ended

    def _end_order(self) -> list[dict]:
        return sorted(self.raw_spans, key=lambda raw: raw["ended_at_step"])


# --- finding fixtures ---------------------------------------------------------------------
def load(name: str | Path) -> SpanFixture:
    """A fixture by id (``"openai-v2/openai_chat"``) or by path."""
    path = Path(name)
    if not path.suffix:
        path = FIXTURES_DIR / f"{name}.json"
    return SpanFixture(path, json.loads(path.read_text(encoding="utf-8")))


def fixture_ids(recording: str | None = None) -> list[str]:
    """Ids of the stored fixtures (of one recording when given), sorted."""
    pattern = f"{recording}/*.json" if recording else "*/*.json"
    return sorted(f"{p.parent.name}/{p.stem}" for p in FIXTURES_DIR.glob(pattern))


def recordings() -> list[str]:
    """Names of the recordings that have fixtures, sorted."""
    return sorted(p.name for p in FIXTURES_DIR.iterdir() if p.is_dir() and any(p.glob("*.json")))


def all_fixtures(recording: str | None = None) -> list[SpanFixture]:
    return [load(i) for i in fixture_ids(recording)]


# --- JSON -> SDK objects ------------------------------------------------------------------
class _RecordedIds(IdGenerator):
    """Hands the SDK the ids of the span being replayed (set just before it starts)."""

    trace_id = 0
    span_id = 0

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        return self.span_id


# The recording used the SDK's default limits; no limit here, so nothing is dropped twice.
_LIMITS = SpanLimits(
    max_span_attributes=SpanLimits.UNSET,
    max_events=SpanLimits.UNSET,
    max_links=SpanLimits.UNSET,
    max_event_attributes=SpanLimits.UNSET,
    max_link_attributes=SpanLimits.UNSET,
    max_attribute_length=SpanLimits.UNSET,
    max_span_attribute_length=SpanLimits.UNSET,
)


def _readable(raw: dict, resource: Resource, base: int) -> ReadableSpan:
    return ReadableSpan(
        name=raw["name"],
        context=_context(raw["trace_id"], raw["span_id"]),
        parent=_parent(raw),
        resource=_resource(raw["resource"]) if "resource" in raw else resource,
        attributes=BoundedAttributes(attributes=raw["attributes"], immutable=True),
        events=tuple(
            Event(e["name"], BoundedAttributes(attributes=e["attributes"], immutable=True), base + e["time_ns"])
            for e in raw["events"]
        ),
        links=_links(raw),
        kind=SpanKind[raw["kind"]],
        status=_status(raw["status"]),
        start_time=base + raw["start_ns"],
        end_time=base + raw["end_ns"],
        instrumentation_scope=_scope(raw["scope"]),
    )


def _context(trace_id: str, span_id: str, remote: bool = False) -> SpanContext:
    return SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=remote, trace_flags=TraceFlags(TraceFlags.SAMPLED))


def _parent(raw: dict) -> SpanContext | None:
    if raw["parent_span_id"] is None:
        return None
    return _context(raw["trace_id"], raw["parent_span_id"], raw.get("parent_is_remote", False))


def _links(raw: dict) -> tuple[Link, ...]:
    return tuple(
        Link(_context(link["trace_id"], link["span_id"]), BoundedAttributes(attributes=link["attributes"]))
        for link in raw["links"]
    )


def _status(raw: dict) -> Status:
    code = StatusCode[raw["code"]]
    return Status(code, raw["description"] if code is StatusCode.ERROR else None)


def _scope(raw: dict) -> InstrumentationScope:
    return InstrumentationScope(raw["name"] or "", raw["version"], raw["schema_url"], raw["attributes"] or None)


_RESOURCES: dict[str, Resource] = {}


def _resource(attributes: dict) -> Resource:
    key = json.dumps(attributes, sort_keys=True)
    if key not in _RESOURCES:
        _RESOURCES[key] = Resource(attributes)
    return _RESOURCES[key]
