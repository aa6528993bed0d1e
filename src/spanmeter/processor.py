"""The span processor: classifies each ended span and aggregates its metrics.

Hot path rules: ``on_start``/``on_end`` never raise into the application (a broad
catch, counted in ``spanmeter_processor_errors_total`` and logged at most once a
minute), allocate little, and hold the state lock only for a few additions.

Ancestry: every span started under an agent run (at any depth, in this process) is
remembered until it ends, so a model or tool span without ``gen_ai.agent.name`` is
attributed to its nearest agent-run ancestor, and the run counts its inference calls,
tool calls and tokens. A nested agent run counts only its own children. At most
``max_open_spans`` spans are remembered; beyond that the oldest half is forgotten
(``spanmeter_open_spans_evicted_total``), so runs that never end cannot grow memory
without bound.
"""

from __future__ import annotations

import logging
import math
import time
from bisect import bisect_left

from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode

from spanmeter import conventions as c
from spanmeter.aggregate import State
from spanmeter.conversations import ENDED_BY_APP
from spanmeter.pricing import FEMTO, UNPRICED

_log = logging.getLogger("spanmeter")
_EMPTY: dict = {}
_ERROR = StatusCode.ERROR
_MAX_TOKENS = c.MAX_TOKENS
_TOKEN_FIELDS = tuple(f"{t}_tokens" for t in c.TOKEN_TYPES)


def _attributes(span):
    # ``ReadableSpan.attributes`` is a MappingProxyType over BoundedAttributes, whose
    # ``get`` raises and catches KeyError for every absent key: 2.7 us for a dozen keys
    # on these machines, against 0.5 us on the plain dict it freezes at span end.
    try:
        attrs = span._attributes._dict
        if attrs.__class__ is dict:
            return attrs
    except AttributeError:
        pass
    attrs = span.attributes
    return _EMPTY if attrs is None else attrs


class _Run:
    """What an agent run accumulates from its descendants until it ends."""

    __slots__ = ("span", "agent", "inference_calls", "tool_calls", "tokens", "cost")

    def __init__(self, span, agent):
        self.span = span
        self.agent = agent
        self.inference_calls = 0
        self.tool_calls = 0
        self.tokens = 0
        self.cost = None  # femto-dollars, once a call of the run was priced

    def agent_name(self):
        if self.agent is None:  # named after it started: read the live span
            self.agent = _attributes(self.span).get(c.AGENT_NAME)
        return self.agent


class SpanmeterProcessor(SpanProcessor):
    """Derives the catalogue's metrics from ended spans into a :class:`State`.

    ``pricer`` (a :class:`spanmeter.pricing.Pricer`) prices each inference span; without
    one, no cost metric is produced.
    """

    def __init__(self, state: State | None = None, *, max_open_spans: int = 100_000, pricer=None, evaluator=None):
        if not isinstance(max_open_spans, int) or max_open_spans < 2:
            raise ValueError(f"max_open_spans must be an int >= 2, got {max_open_spans!r}")
        self.state = state if state is not None else State()
        self.pricer = pricer
        self._price = pricer.price if pricer is not None else None
        self.evaluator = evaluator
        self._max_open = max_open_spans
        self._runs: dict[int, _Run] = {}
        self._stopped = False
        self._last_log = -math.inf

    # --- SpanProcessor -----------------------------------------------------------------
    def on_start(self, span: Span, parent_context=None) -> None:
        if self._stopped:
            return
        try:
            attrs = _attributes(span)
            if attrs.get(c.OPERATION_NAME) == c.OP_INVOKE_AGENT:
                run = _Run(span, attrs.get(c.AGENT_NAME))
            else:
                parent = span.parent
                if parent is None:
                    return
                run = self._runs.get(parent.span_id)
                if run is None:
                    return
            runs = self._runs
            runs[span.context.span_id] = run
            if len(runs) > self._max_open:
                self._evict()
        except Exception:  # deliberate: instrumentation must never break the app
            self._fault()

    def on_end(self, span: ReadableSpan) -> None:
        if self._stopped:
            return
        try:
            run = self._runs.pop(span.context.span_id, None) if self._runs else None
            attrs = _attributes(span)
            op = attrs.get(c.OPERATION_NAME)
            kind = c.OPERATION_KINDS.get(op) if op.__class__ is str else None
            if kind is None:
                return
            if kind == c.KIND_INFERENCE:
                self._inference(span, attrs, op, run)
            elif kind == c.KIND_TOOL:
                self._tool(span, attrs, run)
            else:
                self._agent(span, attrs, run)
        except Exception:  # deliberate: instrumentation must never break the app
            self._fault()

    @property
    def open_spans(self) -> int:
        """Spans under agent runs that started and have not ended yet (bounded)."""
        return len(self._runs)

    def shutdown(self) -> None:
        self._stopped = True
        self._runs = {}

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # nothing is buffered: spans are aggregated as they end

    # --- one method per kind of span ---------------------------------------------------
    def _inference(self, span, attrs, op, run) -> None:
        get = attrs.get
        response_model = get(c.RESPONSE_MODEL)
        model = get(c.REQUEST_MODEL) or response_model
        provider = get(c.PROVIDER_NAME) or get(c.SYSTEM)
        agent = get(c.AGENT_NAME)
        if agent is None and run is not None:
            agent = run.agent if run.agent is not None else run.agent_name()
        error_type = get(c.ERROR_TYPE)
        failed = span.status.status_code is _ERROR
        if error_type is not None or failed:
            error_type = c.outcome(error_type, failed)[1]
        i = get(c.INPUT_TOKENS)
        if i is None:
            i = get(c.PROMPT_TOKENS_OLD)
        o = get(c.OUTPUT_TOKENS)
        if o is None:
            o = get(c.COMPLETION_TOKENS_OLD)
        cr = get(c.CACHE_READ_TOKENS)
        cw = get(c.CACHE_WRITE_TOKENS)
        if cw is None:
            cw = get(c.CACHE_WRITE_TOKENS_NEXT)
        rs = get(c.REASONING_TOKENS)
        drops = None
        # Inline check (a loop costs more): every count absent or a plain int in range.
        if not (
            (i is None or (i.__class__ is int and 0 <= i <= _MAX_TOKENS))
            and (o is None or (o.__class__ is int and 0 <= o <= _MAX_TOKENS))
            and (cr is None or (cr.__class__ is int and 0 <= cr <= _MAX_TOKENS))
            and (cw is None or (cw.__class__ is int and 0 <= cw <= _MAX_TOKENS))
            and (rs is None or (rs.__class__ is int and 0 <= rs <= _MAX_TOKENS))
        ):
            (i, o, cr, cw, rs), drops = _coerce_tokens((i, o, cr, cw, rs))
        start, end = span.start_time, span.end_time
        if start.__class__ is int and end.__class__ is int and end >= start:
            duration = (end - start) / 1e9
        else:
            duration, drop = _duration(span)
            drops = (drops or []) + [drop]
        priced = None
        if self._price is not None:
            priced = self._price(provider, model, response_model, (i, o, cr, cw, rs), end, attrs)

        state = self.state
        table = state.model
        key = (agent, model, provider, op, response_model, error_type)
        try:
            series = table.by_raw.get(key)
        except TypeError:  # an unhashable attribute value
            series = None
        with state.lock:
            if series is None:
                series = state.series_locked(table, key)
            series.count += 1
            if duration is not None:
                h = series.duration
                h.counts[bisect_left(h.bounds, duration)] += 1
                h.total += duration
                if duration < h.min:
                    h.min = duration
                if duration > h.max:
                    h.max = duration
            counts = series.tokens
            if i is not None:
                counts[0] += i
                h = series.token_input
                h.counts[bisect_left(h.bounds, i)] += 1
                h.total += i
                if i < h.min:
                    h.min = i
                if i > h.max:
                    h.max = i
            if o is not None:
                counts[1] += o
                h = series.token_output
                h.counts[bisect_left(h.bounds, o)] += 1
                h.total += o
                if o < h.min:
                    h.min = o
                if o > h.max:
                    h.max = o
            if cr is not None:
                counts[2] += cr
            if cw is not None:
                counts[3] += cw
            if rs is not None:
                counts[4] += rs
            if priced is not None:
                if priced is UNPRICED:
                    series.unpriced_calls += 1
                    unpriced = series.unpriced_tokens
                    for n, value in enumerate((i, o, cr, cw, rs)):
                        if value is not None:
                            unpriced[n] += value
                else:
                    femto, source = priced
                    series.cost += femto
                    series.priced = True
                    state.priced_by[source].count += 1
                    if run is not None:
                        run.cost = femto if run.cost is None else run.cost + femto
            if run is not None:
                run.inference_calls += 1
                run.tokens += (i or 0) + (o or 0)
            state.spans_inference.count += 1
            if drops:
                for field_reason in drops:
                    state.count_locked("drops", field_reason)

    def _tool(self, span, attrs, run) -> None:
        get = attrs.get
        agent = get(c.AGENT_NAME)
        if agent is None and run is not None:
            agent = run.agent_name()
        status, error_type = c.outcome(get(c.ERROR_TYPE), span.status.status_code is _ERROR)
        duration, drop = _duration(span)
        state = self.state
        table = state.tool
        key = (agent, get(c.TOOL_NAME), get(c.TOOL_TYPE), status, error_type)
        try:
            series = table.by_raw.get(key)
        except TypeError:
            series = None
        with state.lock:
            if series is None:
                series = state.series_locked(table, key)
            series.count += 1
            if duration is not None:
                _observe(series.duration, duration)
            if run is not None:
                run.tool_calls += 1
            state.spans_tool.count += 1
            if drop:
                state.count_locked("drops", drop)

    def _agent(self, span, attrs, run) -> None:
        get = attrs.get
        agent = get(c.AGENT_NAME)
        if agent is None and run is not None:
            agent = run.agent
        status, error_type = c.outcome(get(c.ERROR_TYPE), span.status.status_code is _ERROR)
        duration, drop = _duration(span)
        state = self.state
        table = state.agent
        key = (agent, status, error_type)
        try:
            series = table.by_raw.get(key)
        except TypeError:
            series = None
        with state.lock:
            if series is None:
                series = state.series_locked(table, key)
            series.count += 1
            if duration is not None:
                _observe(series.duration, duration)
            if run is not None:  # None when the run started before spanmeter was added
                _observe(series.inference_calls, run.inference_calls)
                _observe(series.tool_calls, run.tool_calls)
                _observe(series.tokens, run.tokens)
                if run.cost is not None:
                    _observe(series.cost, run.cost / FEMTO)
            state.spans_agent.count += 1
            if drop:
                state.count_locked("drops", drop)
            conversation = get(c.CONVERSATION_ID)
            if conversation.__class__ is str and conversation:
                now = time.monotonic()
                state.conversation_turn_locked(conversation, agent, now)
                if get(c.CONVERSATION_ENDED) is True:
                    escalated = get(c.CONVERSATION_ESCALATED) is True
                    state.end_conversation_locked(conversation, escalated=escalated, agent=agent, now=now)
        evaluator = self.evaluator
        if evaluator is not None and evaluator.read_span_content:
            self._offer_span_content(evaluator, span, get, agent)

    @staticmethod
    def _offer_span_content(evaluator, span, get, agent) -> None:
        """Opt-in: judge runs made by other instrumentations from their recorded content."""
        scope = getattr(span, "instrumentation_scope", None)
        if scope is not None and scope.name == "spanmeter":
            return  # spanmeter's own runs hand their content over explicitly
        question = get(c.INPUT_MESSAGES) or get(c.OI_INPUT_VALUE)
        answer = get(c.OUTPUT_MESSAGES) or get(c.OI_OUTPUT_VALUE)
        if question is not None or answer is not None:
            evaluator.offer(agent, span.context.trace_id, question, answer)

    # --- helpers -----------------------------------------------------------------------
    def _evict(self) -> None:
        items = list(self._runs.items())
        keep = items[len(items) // 2 :]
        self._runs = dict(keep)
        self.state.count("evictions", (), len(items) - len(keep))

    def _fault(self) -> None:
        try:
            self.state.count("faults", ())
            now = time.monotonic()
            if now - self._last_log >= 60.0:
                self._last_log = now
                _log.warning("spanmeter dropped a span after an internal error", exc_info=True)
        except Exception:  # deliberate: even the error path must not raise
            pass

    # --- recording API for what spans do not carry --------------------------------------
    def record_quality(self, agent_name: str, metric_type: str, score: float) -> None:
        """Add an evaluation score (0..1) to the rolling ``agent_quality_score``."""
        try:
            if score.__class__ is bool or not isinstance(score, (int, float)):
                self.state.count("drops", ("quality_score", "wrong_type"))
                return
            if not (math.isfinite(score) and 0.0 <= score <= 1.0):
                self.state.count("drops", ("quality_score", "out_of_range"))
                return
            state = self.state
            score = float(score)
            with state.lock:
                series = state.series_locked(state.tables["quality"], (agent_name, metric_type))
                series.window.add(score, time.monotonic())
                _observe(series.scores, score)
        except Exception:  # deliberate
            self._fault()

    def record_conversation(self, agent_name: str, *, turns: int, escalated: bool = False) -> None:
        """Record a finished conversation: its number of turns and whether it escalated."""
        try:
            count, reason = c.coerce_count(turns)
            if reason is not None:
                self.state.count("drops", ("conversation_turns", reason))
                return
            state = self.state
            with state.lock:
                state.record_conversation_locked(agent_name, count, escalated is True, ENDED_BY_APP)
        except Exception:  # deliberate
            self._fault()

    def end_conversation(self, conversation_id: str, *, escalated: bool = False) -> bool:
        """End a conversation followed by its id; False when it is not open."""
        try:
            if not isinstance(conversation_id, str):
                return False
            with self.state.lock:
                return self.state.end_conversation_locked(
                    conversation_id, escalated=escalated is True, agent=None, now=time.monotonic()
                )
        except Exception:  # deliberate
            self._fault()
            return False

    def record_evaluation(self, agent_name: str, status: str) -> None:
        """Count one evaluation of a sampled run: ``done``, ``failed`` or ``dropped``."""
        try:
            with self.state.lock:
                self.state.count_locked("evaluations", (self._agent_label_locked(agent_name), status))
        except Exception:  # deliberate
            self._fault()

    def _agent_label_locked(self, agent_name) -> str:
        return self.state.guards["agent"].admit(agent_name, self.state) if agent_name is not None else c.UNKNOWN


def _observe(hist, value) -> None:
    hist.counts[bisect_left(hist.bounds, value)] += 1
    hist.total += value
    if value < hist.min:
        hist.min = value
    if value > hist.max:
        hist.max = value


def _coerce_tokens(tokens):
    """Token counts made usable by :func:`~spanmeter.conventions.coerce_count`, and the drops."""
    out, drops = [], []
    for field, value in zip(_TOKEN_FIELDS, tokens):
        if value is not None:
            value, reason = c.coerce_count(value)
            if reason is not None:
                drops.append((field, reason))
        out.append(value)
    return tuple(out), drops


def _duration(span):
    """(seconds, None), or the value to use and a (field, reason) drop for a bad duration."""
    start, end = span.start_time, span.end_time
    if start.__class__ is not int or end.__class__ is not int:
        return None, ("duration", "missing_timestamps")
    if end < start:
        return 0.0, ("duration", "negative")
    return (end - start) / 1e9, None
