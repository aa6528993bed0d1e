"""The span processor: remembers ancestry as spans start, aggregates them after they end.

Hot path (the application's thread): ``on_start`` classifies the span from its start
attributes and, when it is under an agent run or is itself a GenAI span, remembers it by
span id (a dictionary insert); ``on_end`` forgets it and, for a GenAI span, queues its
frozen attribute dictionary with a few numbers (a deque append). Nothing else runs there.
A background thread aggregates the queue every second (sooner when
:data:`WAKE_AT` spans wait), and every collection (scrape or export) aggregates what is
queued first, so metrics are exact at each collection; should the thread fall
:data:`BACKLOG_LIMIT` spans behind, the ending threads aggregate too. Whole ended spans
are never queued: keeping them alive until a batch ran was measured to double the total
cost, through the allocator and the garbage collector. Neither method ever raises into the
application: a broad catch counts the error in ``spanmeter_processor_errors_total`` and
logs it at most once a minute. After ``os.fork()`` the child starts with an empty queue
and its own thread.

Aggregation (:meth:`SpanmeterProcessor.drain`, one thread at a time) reads each queued span
into a record (:func:`spanmeter.conventions.read`), prices inference spans, and adds them to
the :class:`spanmeter.aggregate.State` under its lock, a batch at a time.

Ancestry: a model or tool span without ``gen_ai.agent.name`` is attributed to its nearest
agent-run ancestor in this process (through any depth of other spans), and the run counts
its inference calls, tool calls, tokens and cost. A nested agent run counts only its own
children. At most ``max_open_spans`` started spans are remembered; beyond that the oldest
half is forgotten (``spanmeter_open_spans_evicted_total``), so runs that never end cannot
grow memory without bound.

Each LLM call counts once:

- an inference span nested under another inference span (through spans of no GenAI kind:
  a framework's LLM span around an SDK instrumentation's span) is the same call seen
  twice. The innermost spans (closest to the wire) are counted; the enclosing one adds
  no call and no duration; it adds its tokens and cost when none of the spans it encloses
  had usage, and otherwise only the token types none of them reported (a framework span
  that saw cache reads an SDK span did not report);
- two inference spans with the same ``gen_ai.response.id`` that overlap in time (two
  instrumentations side by side, in one trace or two: the anthropic SDK's own spans and
  OpenLLMetry's are separate traces) count once: the first that ends. (Calls that do not
  overlap are separate calls, even from a server that reuses response ids.)
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import weakref
from collections import OrderedDict, deque

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode

from spanmeter import conventions as c
from spanmeter.aggregate import OTHER, State
from spanmeter.conversations import ENDED_BY_APP
from spanmeter.pricing import FEMTO, UNPRICED

_log = logging.getLogger("spanmeter")
_EMPTY: dict = {}
_ERROR = StatusCode.ERROR
_OPERATION_NAME = c.OPERATION_NAME
_OPERATION_KINDS = c.OPERATION_KINDS
_AGENT, _INFERENCE = c.KIND_AGENT, c.KIND_INFERENCE
#: Ended spans waiting for aggregation that wake the aggregating thread early.
WAKE_AT = 1024
#: Ended spans waiting beyond which the thread ending a span aggregates them itself.
BACKLOG_LIMIT = 100_000
_DRAIN_INTERVAL = 1.0  # seconds between aggregations when few spans end
_BATCH = 512  # spans aggregated per hold of the state lock
_SEEN_RESPONSES = 10_000
_NO_TOKENS = (None, None, None, None, None)  # (trace id, response id) pairs remembered for de-duplication


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
    one, no cost metric is produced. ``evaluator`` (a :class:`spanmeter.quality.Evaluator`)
    gets agent runs' recorded content when it opted in to reading it.
    """

    def __init__(self, state: State | None = None, *, max_open_spans: int = 100_000, pricer=None, evaluator=None):
        if not isinstance(max_open_spans, int) or max_open_spans < 2:
            raise ValueError(f"max_open_spans must be an int >= 2, got {max_open_spans!r}")
        self.state = state if state is not None else State()
        self.pricer = pricer
        self._price = pricer.price if pricer is not None else None
        self.evaluator = evaluator
        self._max_open = max_open_spans
        self._stopped = False
        self._last_log = -math.inf
        self._reset()
        self.state.drainers.append(self.drain)
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (p := ref()) is not None and p._reset())

    def _reset(self) -> None:
        # span id -> (run, id of the innermost open inference span, id of the one enclosing it)
        self._open: dict[int, tuple] = {}
        # Ended GenAI spans waiting for aggregation, in end order (deque appends are atomic).
        self._pending: deque = deque()
        self._drain_lock = threading.Lock()  # one aggregator at a time; it alone uses what follows
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None  # started with the first span (again after fork)
        # outer inference span id -> [inner calls counted, token types they reported (bits), without usage]
        self._wrappers: dict[int, list] = {}
        self._seen: OrderedDict = OrderedDict()  # response id -> (start, end)

    # --- SpanProcessor -----------------------------------------------------------------
    def on_start(self, span: Span, parent_context=None) -> None:
        if self._stopped:
            return
        try:
            attrs = _attributes(span)
            op = attrs.get(_OPERATION_NAME)  # the GenAI conventions, inline: the common case
            kind = _OPERATION_KINDS.get(op) if op.__class__ is str else c.kind_of(attrs, span.name)
            parent = span.parent
            ctx = None
            if parent is not None:
                ctx = self._open.get(parent.span_id)
                if ctx is None:
                    ctx = self._late_parent(parent, parent_context)
            if kind is None:
                if ctx is None:
                    return
                span_id = span.context.span_id
            elif kind == _INFERENCE:
                span_id = span.context.span_id
                ctx = (ctx[0], span_id, ctx[1]) if ctx is not None else (None, span_id, None)
            elif kind == _AGENT:
                span_id = span.context.span_id
                ctx = (_Run(span, attrs.get(c.AGENT_NAME)), None, None)
            else:
                span_id = span.context.span_id
                ctx = (ctx[0] if ctx is not None else None, None, None)
            opened = self._open
            opened[span_id] = ctx
            if len(opened) > self._max_open:
                self._evict()
        except Exception:  # deliberate: instrumentation must never break the app
            self._fault()

    def _late_parent(self, parent, parent_context):
        """The context of a parent that became a GenAI span after it started (Traceloop
        agents and tools get their attributes then); None when it is not one. The SDK
        passes no context when the parent is the current span."""
        parent_span = trace.get_current_span(parent_context)
        if not hasattr(parent_span, "_attributes") or parent_span.get_span_context().span_id != parent.span_id:
            return None  # not an SDK span of this process (a remote or non-recording parent)
        attrs = _attributes(parent_span)
        kind = c.kind_of(attrs, getattr(parent_span, "name", ""))
        if kind is None:
            return None
        if kind == c.KIND_AGENT:
            ctx = (_Run(parent_span, attrs.get(c.AGENT_NAME) or attrs.get(c.TRACELOOP_ENTITY_NAME)), None, None)
        elif kind == c.KIND_INFERENCE:
            ctx = (None, parent.span_id, None)
        else:
            ctx = (None, None, None)
        self._open[parent.span_id] = ctx
        return ctx

    def on_end(self, span: ReadableSpan) -> None:
        if self._stopped:
            return
        try:
            context = span.context
            ctx = self._open.pop(context.span_id, None) if self._open else None
            attrs = _attributes(span)
            op = attrs.get(_OPERATION_NAME)
            if op.__class__ is str:  # the GenAI conventions, inline: the common case
                kind = _OPERATION_KINDS.get(op)
                name = None
            else:
                name = span.name
                kind = c.kind_of(attrs, name)
            if kind is None:
                return
            failed = span.status.status_code is _ERROR
            exc = c.exception_type(span.events) if failed and attrs.get(c.ERROR_TYPE) is None else None
            # Only the frozen attribute dict and a few numbers wait, not the span: keeping
            # whole spans alive was measured to double the cost through the allocator and GC.
            content_span = span if kind == _AGENT and self._reads_content() else None
            pending = self._pending
            pending.append((attrs, kind, name, failed, exc, span.start_time, span.end_time, context.trace_id,
                            ctx, content_span))  # fmt: skip
            if self._thread is None:
                self._start_thread()
            backlog = len(pending)
            if backlog % WAKE_AT == 0:
                self._wake.set()
                if backlog >= BACKLOG_LIMIT:  # the aggregating thread cannot keep up: help it
                    self.drain()
        except Exception:  # deliberate: instrumentation must never break the app
            self._fault()

    def _reads_content(self) -> bool:
        return self.evaluator is not None and self.evaluator.read_span_content

    def _start_thread(self) -> None:
        with self._drain_lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._aggregate_forever, name="spanmeter-aggregator", daemon=True)
            self._thread.start()

    def _aggregate_forever(self) -> None:
        while not self._stopped:
            self._wake.wait(_DRAIN_INTERVAL)
            self._wake.clear()
            self.drain()

    @property
    def open_spans(self) -> int:
        """Started spans remembered for ancestry (bounded by ``max_open_spans``)."""
        return len(self._open)

    @property
    def pending_spans(self) -> int:
        """Ended GenAI spans not aggregated yet."""
        return len(self._pending)

    def shutdown(self) -> None:
        self.drain()
        self._stopped = True
        self._wake.set()
        self._open = {}
        self._wrappers = {}

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self.drain()
        return True

    # --- aggregation -------------------------------------------------------------------
    def drain(self) -> None:
        """Aggregate the ended spans waiting; every collection calls this first."""
        with self._drain_lock:
            try:
                if self.pricer is not None:
                    self.pricer.refresh_if_due()
                pending = self._pending
                popleft = pending.popleft
                state = self.state
                while pending:
                    offers = []
                    with state.lock:
                        for _ in range(_BATCH):
                            try:
                                item = popleft()
                            except IndexError:
                                break
                            try:
                                offer = self._aggregate(item)
                            except Exception:  # deliberate: one bad span must not cost the others
                                self._fault_locked()
                                continue
                            if offer is not None:
                                offers.append(offer)
                    for offer in offers:  # outside the lock: a full queue records a drop
                        self.evaluator.offer(*offer)
            except Exception:  # deliberate
                self._fault()

    def _aggregate(self, item):
        """Add one ended span to the state (the state lock is held); an evaluator offer or None."""
        attrs, kind, name, failed, exc, start, end, trace_id, ctx, content_span = item
        record = c.read(attrs, kind, failed, name)
        if exc is not None and record[8] == c.ERROR_OTHER:  # its exception event names the error
            record = (*record[:8], exc, *record[9:])
        if kind == c.KIND_INFERENCE:
            self._inference(attrs, record, start, end, ctx)
            return None
        if kind == c.KIND_TOOL:
            self._tool(record, start, end, ctx)
            return None
        agent = self._agent(attrs, record, start, end, ctx)
        if content_span is not None:
            return self._span_content(content_span, agent, trace_id)
        return None

    # --- one method per kind of span ---------------------------------------------------
    def _inference(self, attrs, record, start, end, ctx) -> None:
        (_, op, agent, model, response_model, provider, _, _, error_type, _, response_id,
         i, o, cr, cw, rs, drops, ttfc) = record  # fmt: skip
        run = None
        wrapper = None  # what the inference spans nested in this one counted
        outer = None  # the inference span this one is nested in
        if ctx is not None:
            run, _, outer = ctx
            if agent is None and run is not None:
                agent = run.agent if run.agent is not None else run.agent_name()
            if self._wrappers and ctx[1] is not None:
                wrapper = self._wrappers.pop(ctx[1], None)
        has_usage = i is not None or o is not None
        price_it = wrapper is None or has_usage
        if wrapper is not None and wrapper[1] & 3:
            # The nested spans counted this call's tokens and cost; keep only the token
            # types none of them reported (e.g. cache reads a framework span saw).
            mask = wrapper[1]
            i = None if mask & 1 else i
            o = None if mask & 2 else o
            cr = None if mask & 4 else cr
            cw = None if mask & 8 else cw
            rs = None if mask & 16 else rs
            has_usage = price_it = False
        duration_ok = start.__class__ is int and end.__class__ is int and end >= start
        if duration_ok:
            duration = (end - start) / 1e9
        else:
            duration, drop = _duration(start, end)
            drops = (drops or []) + [drop]
        state = self.state
        table = state.model
        key = (agent, model, provider, op, response_model, error_type)
        try:
            series = table.by_raw.get(key)
        except TypeError:  # an unhashable attribute value
            series = None
        if wrapper is None and response_id.__class__ is str and response_id and duration_ok:
            seen_key = response_id  # provider ids are unique; two traces may share a call
            seen = self._seen
            other = seen.get(seen_key)
            if other is not None and other[0] <= end and start <= other[1]:
                return  # another instrumentation's span of the same call counted it
            # (the same id on calls that do not overlap in time: a server reusing ids)
            seen[seen_key] = (start, end)
            if len(seen) > _SEEN_RESPONSES:
                seen.popitem(last=False)
        if series is None:
            series = state.series_locked(table, key)
        priced = None
        if self._price is not None and price_it:
            dims = series.dims
            if dims[1] == OTHER:  # past the model label's limit: no catalogue lookup per new name
                priced = UNPRICED if has_usage else None
            else:
                priced = self._price(provider, model, response_model if dims[4] != OTHER else None,
                                     (i, o, cr, cw, rs), end, attrs)  # fmt: skip
        if wrapper is None:  # a call (the innermost span of it)
            series.count += 1
            if duration is not None:
                series.duration.observe(duration)
            if ttfc is not None:
                series.time_to_first_chunk.observe(ttfc)
            if run is not None:
                run.inference_calls += 1
            state.spans_inference.count += 1
            if outer is not None:
                nested = self._wrappers.get(outer)
                if nested is None:
                    nested = self._wrappers[outer] = [0, 0, 0]  # calls, token types seen, without usage
                nested[0] += 1
                nested[1] |= ((i is not None) | (o is not None) << 1 | (cr is not None) << 2
                              | (cw is not None) << 3 | (rs is not None) << 4)  # fmt: skip
                if not has_usage:
                    nested[2] += 1
            elif not has_usage:
                state.count_locked("no_usage", (series.dims[1],))
        elif not has_usage and not wrapper[1] & 3 and wrapper[2]:
            state.count_locked("no_usage", (series.dims[1],), wrapper[2])
        tokens = (i, o, cr, cw, rs)
        if tokens != _NO_TOKENS:
            counts = series.tokens
            for n, value in enumerate(tokens):
                if value is not None:
                    counts[n] += value
            if i is not None:
                series.token_input.observe(i)
            if o is not None:
                series.token_output.observe(o)
            if run is not None:
                run.tokens += (i or 0) + (o or 0)
        if priced is not None:
            if priced is UNPRICED:
                series.unpriced_calls += 1
                unpriced = series.unpriced_tokens
                for n, value in enumerate(tokens):
                    if value is not None:
                        unpriced[n] += value
            else:
                femto, source = priced
                series.cost += femto
                series.priced = True
                state.priced_by[source].count += 1
                if run is not None:
                    run.cost = femto if run.cost is None else run.cost + femto
        if drops:
            for field_reason in drops:
                state.count_locked("drops", field_reason)
        if len(self._wrappers) > self._max_open:  # outer spans that never ended
            self._wrappers.clear()

    def _tool(self, record, start, end, ctx) -> None:
        agent, tool, tool_type, error_type, drops = record[2], record[6], record[7], record[8], record[16]
        run = ctx[0] if ctx is not None else None
        if agent is None and run is not None:
            agent = run.agent_name()
        status = c.status_of(error_type)
        duration, drop = _duration(start, end)
        state = self.state
        table = state.tool
        key = (agent, tool, tool_type, status, error_type)
        try:
            series = table.by_raw.get(key)
        except TypeError:
            series = None
        if series is None:
            series = state.series_locked(table, key)
        series.count += 1
        if duration is not None:
            series.duration.observe(duration)
        if run is not None:
            run.tool_calls += 1
        state.spans_tool.count += 1
        for field_reason in (drops or ()) + ((drop,) if drop else ()):
            state.count_locked("drops", field_reason)

    def _agent(self, attrs, record, start, end, ctx):
        """Aggregates an agent run (the state lock is held); returns its agent name."""
        agent, error_type, conversation, drops = record[2], record[8], record[9], record[16]
        run = ctx[0] if ctx is not None else None
        if agent is None and run is not None:
            agent = run.agent
        status = c.status_of(error_type)
        duration, drop = _duration(start, end)
        state = self.state
        table = state.agent
        key = (agent, status, error_type)
        try:
            series = table.by_raw.get(key)
        except TypeError:
            series = None
        if series is None:
            series = state.series_locked(table, key)
        series.count += 1
        if duration is not None:
            series.duration.observe(duration)
        if run is not None:  # None when the run started before spanmeter was added
            series.inference_calls.observe(run.inference_calls)
            series.tool_calls.observe(run.tool_calls)
            series.tokens.observe(run.tokens)
            if run.cost is not None:
                series.cost.observe(run.cost / FEMTO)
        state.spans_agent.count += 1
        for field_reason in (drops or ()) + ((drop,) if drop else ()):
            state.count_locked("drops", field_reason)
        if conversation.__class__ is str and conversation:
            now = time.monotonic()
            state.conversation_turn_locked(conversation, agent, now)
            if attrs.get(c.CONVERSATION_ENDED) is True:
                escalated = attrs.get(c.CONVERSATION_ESCALATED) is True
                state.end_conversation_locked(conversation, escalated=escalated, agent=agent, now=now)
        return agent

    @staticmethod
    def _span_content(span, agent, trace_id):
        """Opt-in: judge runs made by other instrumentations from their recorded content."""
        scope = getattr(span, "instrumentation_scope", None)
        if scope is not None and scope.name == "spanmeter":
            return None  # spanmeter's own runs hand their content over explicitly
        get = _attributes(span).get
        question = get(c.INPUT_MESSAGES) or get(c.OI_INPUT_VALUE)
        answer = get(c.OUTPUT_MESSAGES) or get(c.OI_OUTPUT_VALUE)
        if question is None and answer is None:
            return None
        return agent, trace_id, question, answer

    # --- helpers -----------------------------------------------------------------------
    def _evict(self) -> None:
        items = list(self._open.items())
        keep = items[len(items) // 2 :]
        self._open = dict(keep)
        self.state.count("evictions", (), len(items) - len(keep))

    def _fault(self) -> None:
        try:
            self.state.count("faults", ())
            self._log_fault()
        except Exception:  # deliberate: even the error path must not raise
            pass

    def _fault_locked(self) -> None:
        try:
            self.state.count_locked("faults", ())
            self._log_fault()
        except Exception:  # deliberate
            pass

    def _log_fault(self) -> None:
        now = time.monotonic()
        if now - self._last_log >= 60.0:
            self._last_log = now
            _log.warning("spanmeter dropped a span after an internal error", exc_info=True)

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
                series.scores.observe(score)
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
            self.drain()  # its last turns may still be waiting
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
                label = self.state.guards["agent"].admit(agent_name, self.state) if agent_name else c.UNKNOWN
                self.state.count_locked("evaluations", (label, status))
        except Exception:  # deliberate
            self._fault()


def _duration(start, end):
    """(seconds, None), or the value to use and a (field, reason) drop for a bad duration."""
    if start.__class__ is not int or end.__class__ is not int:
        return None, ("duration", "missing_timestamps")
    if end < start:
        return 0.0, ("duration", "negative")
    return (end - start) / 1e9, None
