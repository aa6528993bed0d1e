"""GenAI events turned into metrics: evaluation results and tool-call decisions.

Two events of the GenAI conventions (semantic-conventions-genai, Development) say something
about a span, and are parented to it:

- ``gen_ai.evaluation.result`` (``gen_ai.evaluation.name``, ``.score.value``, ``.score.label``,
  ``.explanation``), from any evaluator: the score becomes an ``agent_quality_score`` /
  ``agent_evaluation_score`` observation with ``metric_type`` = the evaluation name, for the
  agent of the evaluated span. Scores outside 0..1, non-numeric or absent (a label-only
  verdict) are counted in ``spanmeter_dropped_values_total{field="evaluation_score"}``;
- ``gen_ai.tool.call.decision`` (``gen_ai.tool.call.decision.outcome`` = ``allow`` | ``deny`` |
  ``require_approval``, ``gen_ai.tool.name``): one ``agent_tool_call_decisions_total`` for the
  agent of the span it was emitted in (a tool span, or the agent run when a denied call never
  ran). The same outcome written as the attribute ``gen_ai.tool.call.decision`` of an
  ``execute_tool`` span counts the same way.

They arrive two ways. As span events, with the span when it ends (the processor reads them
from the ended span). As log records with an event name (OpenTelemetry's Events, the way
its SDKs emit them since span events were deprecated in 2026): add
:func:`log_processor` to your ``LoggerProvider``; it keeps the event's span id and
attributes only (a deque append on the emitting thread), and the processor resolves the
span's agent when it aggregates: from the spans it aggregated recently (the last
:data:`MAX_REMEMBERED`), else from the span if it is still open, else, after
:data:`WAIT_SECONDS`, without an agent (``unknown``). An evaluation without a span
context is matched by ``gen_ai.response.id`` to the call it names.
"""

from __future__ import annotations

import time
from collections import deque

from opentelemetry.sdk._logs import LogRecordProcessor

from spanmeter import ancestry
from spanmeter import conventions as c

#: Spans whose agent is remembered for events that come after them (span id -> agent).
MAX_REMEMBERED = 20_000
#: Log-record events waiting for their span; beyond this, new ones are dropped and counted.
MAX_WAITING = 10_000
#: Seconds a log-record event waits for its span to be aggregated before it counts without an agent.
WAIT_SECONDS = 5.0
_MISSING = object()
_NAMES = (c.EVALUATION_RESULT, c.TOOL_CALL_DECISION)


def events_of(span):
    """The events of an ended span, or None (the common case, read without a copy)."""
    try:
        events = span._events  # ``span.events`` copies them: 0.4 us against 20 ns, for every span
    except AttributeError:
        return span.events or None
    return tuple(events) if events else None


class EventBook:
    """The agents of recently aggregated spans, and the log-record events waiting for them.

    Owned by one :class:`spanmeter.processor.SpanmeterProcessor`; methods ending in
    ``_locked`` run while its state's lock is held.
    """

    def __init__(self):
        self._agents: dict = {}  # span id -> agent (None: no agent), most recent last
        self._responses: dict = {}  # response id -> agent, for events without a span context
        self._waiting: deque = deque()  # (span id, response id, name, attributes, since)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def offer(self, state, span_id, response_id, name: str, attributes) -> None:
        """A log-record event (any thread; never blocks)."""
        if len(self._waiting) >= MAX_WAITING:
            state.count("drops", ("event", "backlog"))
            return
        if response_id.__class__ is not str:  # a log attribute may be a map or a list: it names no call
            response_id = None
        self._waiting.append((span_id, response_id, name, dict(attributes or {}), time.monotonic()))

    def saw_locked(self, state, span_id, agent, record) -> None:
        """A span was aggregated: remember its agent, and count the events it carried."""
        agents = self._agents
        agents[span_id] = agent
        if len(agents) > MAX_REMEMBERED:
            for old in list(agents)[: MAX_REMEMBERED // 2]:
                del agents[old]
        response_id = record.response_id
        if response_id is not None and response_id.__class__ is str:
            responses = self._responses
            responses[c.key(response_id)] = agent
            if len(responses) > MAX_REMEMBERED:
                for old in list(responses)[: MAX_REMEMBERED // 2]:
                    del responses[old]
        signals = record.signals
        if record.tool_decision is not None and not (
            signals and any(name == c.TOOL_CALL_DECISION for name, _ in signals)
        ):  # one decision per tool span: its event, when it has one, is the decision
            record_decision_locked(state, agent, record.tool, record.tool_decision)
        if signals:
            for name, attributes in signals:
                record_event_locked(state, agent, name, attributes)

    def resolve_locked(self, state, opened: dict, attributes_of, now: float | None = None,
                       waited: bool = False) -> None:
        """Count the waiting log-record events whose span's agent is known, or that waited long
        enough (``waited``: all of them, as a flush or shutdown wants)."""
        now = time.monotonic() if now is None else now
        if waited:
            now += WAIT_SECONDS
        waiting = self._waiting
        for _ in range(len(waiting)):
            item = waiting.popleft()
            span_id, response_id, name, attributes, since = item
            agent = self._agents.get(span_id, _MISSING) if span_id else _MISSING
            if agent is _MISSING and response_id is not None:
                agent = self._responses.get(c.key(response_id), _MISSING)
            if agent is _MISSING and span_id:
                node = opened.get(span_id)
                if node is not None:  # still open: a decision inside a tool or agent span
                    agent = node.name if node.kind == c.KIND_AGENT else ancestry.agent_of(node, attributes_of)
            if agent is _MISSING:
                if now - since < WAIT_SECONDS:
                    waiting.append(item)
                    continue
                agent = None
            try:
                record_event_locked(state, agent, name, attributes)
            except Exception:  # deliberate: one malformed event must not cost the others waiting
                state.count_locked("faults", ())


def record_event_locked(state, agent, name: str, attributes) -> None:
    """One evaluation result or tool-call decision for ``agent`` (None: unknown; then the
    event's own ``gen_ai.agent.name``, which some evaluators write, is used)."""
    if agent is None:
        agent = attributes.get(c.AGENT_NAME)
    if name == c.EVALUATION_RESULT:
        metric_type, score, reason = c.evaluation_of(attributes)
        if reason is not None:
            state.count_locked("drops", ("evaluation_score", reason))
            return
        series = state.series_locked(state.tables["quality"], (agent, metric_type))
        series.window.add(score, time.monotonic())
        series.scores.observe(score)
    elif name == c.TOOL_CALL_DECISION:
        get = attributes.get
        record_decision_locked(state, agent, get(c.TOOL_NAME), get(c.TOOL_CALL_DECISION_OUTCOME))


def record_decision_locked(state, agent, tool, value) -> None:
    decision, reason = c.decision_of(value)
    if reason is not None:
        state.count_locked("drops", ("tool_call_decision", reason))
        return
    state.series_locked(state.tables["tool_decisions"], (agent, tool, decision)).count += 1


class SpanmeterLogProcessor(LogRecordProcessor):
    """Passes ``gen_ai.evaluation.result`` and ``gen_ai.tool.call.decision`` log records to a
    spanmeter processor; every other log record costs a string comparison. Never raises."""

    def __init__(self, processor):
        self._processor = processor

    def on_emit(self, log_record) -> None:
        try:
            record = getattr(log_record, "log_record", log_record)  # SDK >= 1.39: ReadWriteLogRecord
            name = getattr(record, "event_name", None)
            attributes = record.attributes
            if name is None and attributes:  # SDKs before event_name: the event.name attribute
                name = attributes.get("event.name")
            if name not in _NAMES:
                return
            processor = self._processor
            span_id = record.span_id or None
            response_id = attributes.get(c.RESPONSE_ID) if attributes else None
            processor.events.offer(processor.state, span_id, response_id, name, attributes)
        except Exception:  # deliberate: an event must never break the app
            self._processor._fault()

    emit = on_emit  # SDKs before 1.35 call emit(log_data)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def log_processor(meter=None) -> SpanmeterLogProcessor:
    """A ``LogRecordProcessor`` for your SDK ``LoggerProvider`` that gives ``meter``'s
    processor (the :func:`spanmeter.configure` one if None) the GenAI events it meters::

        logger_provider.add_log_record_processor(spanmeter.events.log_processor())
    """
    if meter is None:
        from spanmeter import config

        meter = config.current()
        if meter is None:
            from spanmeter.errors import ConfigurationError

            raise ConfigurationError("spanmeter.events.log_processor() needs a running spanmeter: call "
                                     "spanmeter.configure() first, or pass meter=spanmeter.setup(...)")  # fmt: skip
    return SpanmeterLogProcessor(getattr(meter, "processor", meter))
