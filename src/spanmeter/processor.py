"""The span processor: remembers ancestry as spans start, aggregates them after they end.

Data flows one way: span -> :mod:`spanmeter.conventions` (a :class:`~spanmeter.conventions.Record`)
-> :mod:`spanmeter.reconcile` (which spans are one call) -> :class:`spanmeter.aggregate.State`
(which series, which histogram) -> export. The processor names no attribute: what a span is,
and whose run it belongs to, come from :mod:`spanmeter.conventions` when it starts and when
it ends (:mod:`spanmeter.ancestry` states the rules of runs and workflows).

Hot path (the application's thread): ``on_start`` classifies the span and, when it is under
an agent run or is itself a GenAI span, remembers its node by span id (a dictionary insert);
``on_end`` forgets it and, for a GenAI span, queues its frozen attribute dictionary with a
few numbers (a deque append). Nothing else runs there, and nothing there waits for a lock
that aggregation holds: when ``max_backlog`` ended spans wait, new ones are shed and
counted in ``spanmeter_spans_shed_total{reason="backlog"}`` (the application is never
blocked instead). The bound is checked without a lock, so threads ending spans at the same
instant may each add one more: at most ``max_backlog`` plus one per such thread wait. Whole
ended spans are never queued, nor kept by their ancestry node
(:meth:`spanmeter.ancestry.Node.end`): keeping them alive until a batch ran was measured to
double the total cost, through the allocator and the garbage collector.
Neither method ever raises into the application: a broad catch counts the error in
``spanmeter_processor_errors_total`` and logs it at most once a minute. After
``os.fork()`` the child starts with an empty queue and its own thread.

Aggregation (:meth:`SpanmeterProcessor.drain`, one thread at a time: the background thread
every second, and each collection before it reads the state) takes the spans that were
queued when it began (bounded, whatever producers keep adding), reads them into records,
hands them to the :class:`~spanmeter.reconcile.Reconciler`, and adds what it releases to
the state. Once two instrumentations report inference spans, spans wait ``reconcile_window``
seconds (1) there, so metrics show a span at the first collection that is at least that long
after it ended; ``force_flush()`` releases all.
At most ``max_open_spans`` started spans are remembered for ancestry; beyond that the
oldest half is forgotten (``spanmeter_open_spans_evicted_total``), so runs that never end
cannot grow memory without bound.
"""

from __future__ import annotations

import logging
import math
import itertools
import os
import threading
import time
import weakref
from collections import deque

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode

from spanmeter import ancestry, exemplars
from spanmeter import conventions as c
from spanmeter.ancestry import Node
from spanmeter.aggregate import OTHER, State
from spanmeter.conversations import ENDED_BY_APP
from spanmeter.events import EventBook, events_of
from spanmeter.pricing import UNPRICED
from spanmeter.reconcile import LATE_USAGE, NO_USAGE, Entry, Reconciler

_log = logging.getLogger("spanmeter")
_EMPTY: dict = {}
_ERROR = StatusCode.ERROR
_SAMPLED = trace.TraceFlags.SAMPLED
_OPERATION_NAME = c.OPERATION_NAME
_OPERATION_KINDS = c.OPERATION_KINDS
_AGENT, _INFERENCE, _TOOL, _WORKFLOW = c.KIND_AGENT, c.KIND_INFERENCE, c.KIND_TOOL, c.KIND_WORKFLOW
_RUNS = (_AGENT, _WORKFLOW)
#: Ended spans waiting for aggregation that wake the aggregating thread early.
WAKE_AT = 256
#: Ended spans waiting beyond which new ones are shed (counted, never blocking the app; checked
#: without a lock, so each thread ending a span at that instant may add one more).
MAX_BACKLOG = 100_000
_DRAIN_INTERVAL = 1.0  # seconds between aggregations when few spans end
_BATCH = 512  # spans aggregated per hold of the state lock
#: Ids of calls recorded without a span: above every 64-bit span id, so never one of them.
_SPANLESS_IDS = itertools.count(1 << 64)
#: Seconds at most a call waits for its open run to be given a missing attribution value.
ATTRIBUTION_HOLD = 300.0


def _attributes(span):
    # ``ReadableSpan.attributes`` is a MappingProxyType over BoundedAttributes, whose
    # ``get`` raises and catches KeyError for every absent key: 2.7 us for a dozen keys
    # on these machines (benchmarks/overhead.py), against 0.5 us on the plain dict it
    # wraps. The private ``_dict`` is used only when it is a plain dict (every SDK release
    # from 1.x to now); otherwise the public mapping.
    try:
        attrs = span._attributes._dict
        if attrs.__class__ is dict:
            return attrs
    except AttributeError:
        pass
    attrs = span.attributes
    return _EMPTY if attrs is None else attrs


class SpanmeterProcessor(SpanProcessor):
    """Derives the catalogue's metrics from ended spans into a :class:`State`.

    ``pricer`` (a :class:`spanmeter.pricing.Pricer`) prices each inference call; without
    one, no cost metric is produced. ``evaluator`` (a :class:`spanmeter.quality.Evaluator`)
    gets agent runs' recorded content when it opted in to reading it. ``reconcile_window``:
    seconds an ended span waits for another instrumentation's span of the same call.
    """

    def __init__(self, state: State | None = None, *, max_open_spans: int = 100_000, pricer=None, evaluator=None,
                 reconcile_window: float = 1.0, max_backlog: int = MAX_BACKLOG, attribution=None):  # fmt: skip
        if not isinstance(max_open_spans, int) or max_open_spans < 2:
            raise ValueError(f"max_open_spans must be an int >= 2, got {max_open_spans!r}")
        if not isinstance(reconcile_window, (int, float)) or not 0 <= reconcile_window <= 60:
            raise ValueError(f"reconcile_window must be a number of seconds in [0, 60], got {reconcile_window!r}")
        if not isinstance(max_backlog, int) or max_backlog < 1:
            raise ValueError(f"max_backlog must be an int >= 1, got {max_backlog!r}")
        self.state = state if state is not None else State()
        self.pricer = pricer
        self._price = pricer.price if pricer is not None else None
        self.evaluator = evaluator
        self.attribution = attribution  # a spanmeter.attribution.Attribution, or None
        self._baggage = attribution is not None and attribution.baggage_keys is not None
        # ended spans' attributes stay with their nodes only when calls below inherit them
        self._keep_final = attribution is not None and attribution.reads_spans
        self._max_open = max_open_spans
        self._window = float(reconcile_window)
        self._max_backlog = max_backlog
        self._stopped = False
        self._last_log = -math.inf
        self._reset()
        self.state.drainers.append(self.drain)
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (p := ref()) is not None and p._reset())

    def _reset(self) -> None:
        self._open: dict[int, tuple] = {}  # span id -> node (see spanmeter.ancestry)
        # Ended GenAI spans waiting for aggregation, in end order (deque appends are atomic).
        self._pending: deque = deque()
        self._shed = 0  # spans shed under overload; written by app threads under _shed_lock only
        self._shed_reported = 0
        self._shed_lock = threading.Lock()  # never taken by aggregation
        self._drain_lock = threading.Lock()  # one aggregator at a time; it alone uses what follows
        self._thread_lock = threading.Lock()  # starting the thread: never held by aggregation
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None  # started with the first span (again after fork)
        self._reconciler = Reconciler(window=self._window, max_entries=self._max_open)
        self.events = EventBook()  # evaluation results and tool-call decisions (spanmeter.events)
        # Calls whose attribution value their open run may still get: (entry, since); see _hold
        self._held: deque = deque()

    # --- SpanProcessor -----------------------------------------------------------------
    def on_start(self, span: Span, parent_context=None) -> None:
        if self._stopped:
            return
        try:
            attrs = _attributes(span)
            op = attrs.get(_OPERATION_NAME)  # conventions.kind_of, inlined for its common case
            kind = _OPERATION_KINDS.get(op) if op.__class__ is str else c.kind_of(attrs, span.name)
            try:  # the SDK span's fields behind its properties (as in on_end)
                parent, span_id = span._parent, span._context.span_id
            except AttributeError:  # another Span implementation: its public properties
                parent, span_id = span.parent, span.context.span_id
            opened = self._open
            # Every span gets a node: many frameworks say what a span is only when it ends.
            opened[span_id] = Node(span, span_id, opened.get(parent.span_id) if parent is not None else None,
                                   kind, attrs)  # fmt: skip
            if self._baggage:  # opt-in: attribution labels read from baggage entries
                opened[span_id].baggage = self.attribution.capture(parent_context)
            if len(opened) > self._max_open:
                self._evict()
        except Exception:  # deliberate: instrumentation must never break the app
            self._fault()

    def on_end(self, span: ReadableSpan) -> None:
        if self._stopped:
            return
        try:
            try:  # the SDK span's fields behind its properties: ~0.1 us less a span (benchmarks/overhead.py)
                context, status, scope = span._context, span._status, span._instrumentation_scope
                start, end = span._start_time, span._end_time
            except AttributeError:  # another ReadableSpan implementation: its public properties
                context, status, scope = span.context, span.status, span.instrumentation_scope
                start, end = span.start_time, span.end_time
            node = self._open.pop(context.span_id, None)
            attrs = _attributes(span)
            op = attrs.get(_OPERATION_NAME)
            if op.__class__ is str:  # conventions.kind_of, inlined for its common case
                kind = _OPERATION_KINDS.get(op)
                name = None
            else:
                name = span.name
                kind = c.kind_of(attrs, name)
            if node is not None:
                node.end(attrs if self._keep_final else None)
            if kind is None:
                return
            if name is None and kind != _INFERENCE:
                name = span.name  # run and tool names may come from it
            if node is not None and (node.kind is None or kind in _RUNS):
                node.type(kind, attrs, name or "")  # what it is and its name, from its final attributes
            pending = self._pending
            if len(pending) >= self._max_backlog:
                self._shed_one()
                return
            failed = status.status_code is _ERROR
            # Only the frozen attribute dict and a few numbers wait, not the span: keeping
            # whole spans alive was measured to double the cost through the allocator and GC.
            content_span = span if kind == _AGENT and self._reads_content() else None
            # _enqueue, inlined: one frame less for every GenAI span
            pending.append((attrs, kind, name, failed, events_of(span), start, end, context.trace_id, context.span_id,
                            scope.name if scope is not None else None, node, content_span,
                            context.trace_flags))  # fmt: skip
            if self._thread is None:
                self._start_thread()
            if len(pending) % WAKE_AT == 0:
                self._wake.set()
        except Exception:  # deliberate: instrumentation must never break the app
            self._fault()

    def record_call(self, attrs: dict, start: int, end: int, failed: bool, parent_id: int | None,
                    scope: str) -> None:  # fmt: skip
        """An inference call that has no span (``spanmeter.httpx``'s ``genai_spans=False``): queued
        as its ended span would be, below the node of the span current when it began
        (``parent_id``), so its agent, run and reconciliation are the same; never raises."""
        if self._stopped:
            return
        try:
            if len(self._pending) >= self._max_backlog:
                self._shed_one()
                return
            opened = self._open
            node = Node(None, next(_SPANLESS_IDS), opened.get(parent_id) if parent_id is not None else None,
                        _INFERENCE)  # fmt: skip
            node.end()
            # no trace to link to: trace id 0 and unsampled flags (no exemplar)
            self._enqueue((attrs, _INFERENCE, None, failed, None, start, end, 0, node.span_id, scope, node, None, 0))
        except Exception:  # deliberate: instrumentation must never break the app
            self._fault()

    def _shed_one(self) -> None:
        """Aggregation fell behind (``max_backlog`` waiting): an ended span is shed, counted, and
        the aggregator woken; the application is never blocked."""
        with self._shed_lock:
            self._shed += 1
        self._wake.set()

    def _enqueue(self, item: tuple) -> None:
        """Queue an ended span's item for aggregation (the aggregator starts with the first)."""
        pending = self._pending
        pending.append(item)
        if self._thread is None:
            self._start_thread()
        if len(pending) % WAKE_AT == 0:
            self._wake.set()

    def _reads_content(self) -> bool:
        return self.evaluator is not None and self.evaluator.read_span_content

    def _start_thread(self) -> None:
        with self._thread_lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._aggregate_forever, name="spanmeter-aggregator", daemon=True)
            self._thread.start()

    def _aggregate_forever(self) -> None:
        while not self._stopped:
            self._wake.wait(_DRAIN_INTERVAL)
            self._wake.clear()
            self.drain()

    def has_open(self, span_id: int) -> bool:
        """Whether the span ``span_id`` started on this processor's provider and is open (every
        GenAI span is remembered from its start; the oldest are forgotten beyond ``max_open_spans``)."""
        return span_id in self._open

    @property
    def open_spans(self) -> int:
        """Started spans remembered for ancestry (bounded by ``max_open_spans``)."""
        return len(self._open)

    @property
    def pending_spans(self) -> int:
        """Ended GenAI spans not aggregated yet (queued, waiting in reconciliation, or waiting
        for their run's attribution value)."""
        return len(self._pending) + len(self._reconciler) + len(self._held)

    def shutdown(self) -> None:
        self.drain(flush=True, final=True)
        self._stopped = True
        self._wake.set()
        self._open = {}

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Aggregate everything ended so far, without waiting for reconciliation's window."""
        self.drain(flush=True)
        return True

    # --- aggregation -------------------------------------------------------------------
    def drain(self, flush: bool = False, final: bool = False, budget: float | None = None) -> None:
        """Aggregate the ended spans queued when this began; every collection calls this first.

        ``budget`` (seconds; collections pass ``spanmeter.aggregate.COLLECT_BUDGET``) bounds the wait for
        another aggregator and the work: what is left stays queued for the next round, so a
        scrape under overload is quick and a little behind instead of slow.
        """
        if budget is None:
            self._drain_lock.acquire()
        elif not self._drain_lock.acquire(timeout=budget):
            return  # the aggregating thread is at it: serve what is aggregated
        try:
            if self.pricer is not None:
                self.pricer.refresh_if_due()
            pending = self._pending
            popleft = pending.popleft
            reconciler = self._reconciler
            now = time.monotonic()
            self.state.tick()  # one clock read per round: the last-touched stamp of the series it updates
            deadline = None if budget is None else now + budget
            read, add = c.read, reconciler.add
            for n in range(len(pending)):  # bounded: producers may keep adding
                if deadline is not None and n % 256 == 255 and time.monotonic() > deadline:
                    break
                item = popleft()
                try:
                    attrs, kind, name, failed, events, start, end, trace_id, span_id, scope, node, content, flags = item
                    record = read(attrs, kind, failed, name or "")
                    if failed or events:
                        record = _with_events(record, failed, events)
                    # a plain int works as well as TraceFlags (a hand-made SpanContext): no fault over an exemplar
                    entry = Entry(record, node, scope, trace_id, span_id, start, end, attrs, content,
                                  flags & _SAMPLED != 0)  # fmt: skip
                    if node is not None and kind == _INFERENCE:
                        outer = node.inference_above(_attributes)
                        if outer is not None:
                            entry.outers = (outer,)
                    add(entry, now)
                except Exception:  # deliberate: one bad span must not cost the others
                    self._fault()
            released = reconciler.release(now, flush, final)
            state = self.state
            inference = self._inference
            shed = self._shed
            if shed != self._shed_reported:
                state.count("shed", ("backlog",), shed - self._shed_reported)
                self._shed_reported = shed
            for start in range(0, len(released), _BATCH):
                offers = []
                with state.lock:
                    for entry in released[start : start + _BATCH]:
                        try:
                            if entry.record.kind == _INFERENCE:  # most spans: no offer, one frame less
                                inference(entry)
                                continue
                            offer = self._aggregate(entry)
                        except Exception:  # deliberate: one bad span must not cost the others
                            self._fault_locked()
                            continue
                        if offer is not None:
                            offers.append(offer)
                for offer in offers:  # outside the lock: a full queue records a drop
                    self.evaluator.offer(*offer)
            if self._held:
                with state.lock:
                    self._release_held_locked(now, flush)
            if self.events.waiting:  # log-record events, once the spans they are about were added
                with state.lock:
                    self.events.resolve_locked(state, self._open, _attributes, waited=flush)
        except Exception:  # deliberate
            self._fault()
        finally:
            self._drain_lock.release()

    def _aggregate(self, e: Entry):
        """Add one released span to the state (its lock is held); an evaluator offer or None."""
        kind = e.record.kind
        if kind == _INFERENCE:
            self._inference(e)
            return None
        if kind == _TOOL:
            self._tool(e)
            return None
        return self._run(e)

    # --- one method per kind of span ---------------------------------------------------
    def _inference(self, e: Entry) -> None:
        state = self.state
        record = e.record
        role = e.role
        if role == NO_USAGE:  # its usage never came
            state.count_locked("no_usage", (state.guards["model"].admit(record.model, state)
                                            if record.model is not None else c.UNKNOWN,))  # fmt: skip
            return
        if role == LATE_USAGE:  # the usage of a call counted earlier
            target = e.target
            tokens = e.record.tokens
            priced = self._price_call(target.record, tokens, e.end, e.attrs)
            series = state.add_call_locked(target.agent, target.record, tokens, call=False, duration=None, ttfc=None,
                                           priced=priced, attribution=self._attribution_of(target),
                                           split=e.record.modality_tokens)  # fmt: skip
            if e.sampled:  # an exemplar links to a trace: only to one the tracer exports
                exemplars.keep_call(series, None, priced, e.trace_id, e.span_id, e.end)
            ancestry.charge_call(target.node, (tokens[0] or 0) + (tokens[1] or 0), _femto(priced), count=False)
            return
        agent = record.agent
        if agent is None:
            agent = ancestry.agent_of(e.node, _attributes)
            if agent is None and record.main_agent is not None:
                agent = _main_agent(e.node, record)
        e.agent = agent
        start, end = e.start, e.end
        if start.__class__ is int and end.__class__ is int and start <= end:  # _duration's common case
            duration, drop = (end - start) / 1e9, None
        else:
            duration, drop = _duration(start, end)
        tokens = e.tokens
        priced = self._price_call(record, tokens, end, e.attrs) if e.price_it and self._price is not None else None
        call = e.call
        attribution = None if self.attribution is None else self._attribution_of(e)
        if attribution is not None and self._awaits_attribution(e, attribution):
            e.held = (duration, priced)  # added when its run has the value (charged up the run now)
            self._held.append((e, time.monotonic()))
        else:  # _add_call_locked, inlined: this runs for every call
            series = state.add_call_locked(agent, record, tokens, call, duration, record.time_to_first_chunk, priced,
                                           e.no_usage, attribution)  # fmt: skip
            if e.sampled:
                exemplars.keep_call(series, duration if call else None, priced, e.trace_id, e.span_id, end)
        node = e.node
        if node is not None:
            i, o = tokens[0], tokens[1]
            femto = priced[0] if priced is not None and priced is not UNPRICED else None
            ancestry.charge_call(node, (i or 0) + (o or 0), femto, call)
        drops = record.drops
        if drops or drop is not None:
            self._drops(drops, drop)
        self.events.saw_locked(state, e.span_id, agent, record)

    def _price_call(self, record, tokens, end, attrs):
        if self._price is None:
            return None
        if tokens[0] is None and tokens[1] is None and tokens[2] is None and tokens[3] is None:
            return self._price(record.provider, record.model, None, tokens, end, attrs)  # a span cost, if any
        state = self.state
        guard = state.guards["model"]
        model = record.model
        response_model = record.response_model
        known = guard.known  # admitted raw names: admit() would only look them up (no count, never OTHER)
        if model.__class__ is str and model in known and (
                response_model is None or (response_model.__class__ is str and response_model in known)):  # fmt: skip
            return self._price(record.provider, model, response_model, tokens, end, attrs)
        model_label = guard.admit(model, state) if model is not None else c.UNKNOWN
        if model_label == OTHER or (model.__class__ is str and len(model) > c.MAX_LABEL_LENGTH):
            return UNPRICED  # past the label's limit, or no model name: no catalogue lookup per new name
        if response_model is not None and guard.admit(response_model, state) == OTHER:
            response_model = None
        return self._price(record.provider, record.model, response_model, tokens, end, attrs)

    def _tool(self, e: Entry) -> None:
        record = e.record
        agent = record.agent
        if agent is None:
            agent = _agent_of(e.node, record)
        duration, drop = _duration(e.start, e.end)
        series = self.state.add_tool_locked(agent, record, duration)
        if e.sampled:
            exemplars.keep_duration(series, duration, e.trace_id, e.span_id, e.end)
        ancestry.charge_tool(e.node)
        self._drops(record.drops, drop)
        self.events.saw_locked(self.state, e.span_id, agent, record)

    def _run(self, e: Entry):
        """An agent run or workflow (the state lock is held); an evaluator offer or None."""
        record = e.record
        state = self.state
        node = e.node
        name = record.agent
        if node is not None:
            if record.named:
                node.rename(name, True)
            elif node.named:
                name = node.name
            if ancestry.same_as_enclosing(node):  # the enclosing run seen twice
                self.events.saw_locked(state, e.span_id, name, record)
                return None
        self.events.saw_locked(state, e.span_id, None if node is not None and node.is_workflow else name, record)
        duration, drop = _duration(e.start, e.end)
        self._drops(record.drops, drop)
        if node is not None and node.is_workflow:
            state.add_workflow_locked(name, record, duration, node)
            return None
        series = state.add_run_locked(name, record, duration, node, self._attribution_of(e))
        if e.sampled:
            exemplars.keep_duration(series, duration, e.trace_id, e.span_id, e.end)
        if node is not None:
            ancestry.close_run(node)
        conversation = record.conversation
        if conversation.__class__ is str and conversation:
            now = time.monotonic()
            state.conversation_turn_locked(conversation, name, now)
            if record.ends_conversation:
                state.end_conversation_locked(conversation, escalated=record.escalated, agent=name, now=now)
        if e.content is not None:
            return self._span_content(e.content, name, e.trace_id)
        return None

    def _add_call_locked(self, e: Entry, duration, priced, attribution) -> None:
        """Count a call (``e.agent`` known) in its series, with its exemplar when it is sampled."""
        call = e.call
        # positional arguments (call, duration, ttfc, priced, no_usage, attribution): keywords cost 30 ns more
        series = self.state.add_call_locked(e.agent, e.record, e.tokens, call, duration,
                                            e.record.time_to_first_chunk, priced, e.no_usage, attribution)  # fmt: skip
        if e.sampled:
            exemplars.keep_call(series, duration if call else None, priced, e.trace_id, e.span_id, e.end)

    def _awaits_attribution(self, e: Entry, values: tuple) -> bool:
        """Whether a call lacks a span-sourced attribution value while its run is still open
        (the run may be given it before it ends: ``app.tenant_id`` set once the request is parsed)."""
        if not any(values[n] is None for n in self.attribution.span_positions):  # type: ignore[union-attr]
            return False
        run = e.node.run_above() if e.node is not None else None
        return run is not None and not run.ended

    def _release_held_locked(self, now: float, flush: bool) -> None:
        """Add the held calls whose run ended or got the value, or that waited long enough
        (``flush``: all of them); beyond ``max_open_spans`` held, the oldest go at once."""
        held = self._held
        excess = len(held) - self._max_open
        for n in range(len(held)):
            e, since = held.popleft()
            try:
                attribution = self._attribution_of(e)
                if (not flush and n >= excess and now - since < ATTRIBUTION_HOLD
                        and self._awaits_attribution(e, attribution)):  # fmt: skip
                    held.append((e, since))
                    continue
                self._add_call_locked(e, *e.held, attribution)
            except Exception:  # deliberate: one bad span must not cost the others
                self._fault_locked()

    def _attribution_of(self, e: Entry):
        """Raw values of the attribution labels for a call or run (None when none is configured)."""
        if self.attribution is None:
            return None
        return self.attribution.values(e.attrs, e.node, _attributes)

    def _drops(self, drops, drop) -> None:
        count = self.state.count_locked
        if drops:
            for field_reason in drops:
                count("drops", field_reason)
        if drop is not None:
            count("drops", drop)

    @staticmethod
    def _span_content(span, agent, trace_id):
        """Opt-in: judge runs made by other instrumentations from their recorded content."""
        scope = getattr(span, "instrumentation_scope", None)
        if scope is not None and scope.name == "spanmeter":
            return None  # spanmeter's own runs hand their content over explicitly
        question, answer = c.content_of(_attributes(span))
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
            self.drain(flush=True)  # its last turns may still be waiting
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


def _agent_of(node, record):
    """The agent of a call or tool its span does not name: its run's, else, when no run
    encloses it (none was seen), the process's main agent (``gen_ai.main_agent.name``)."""
    agent = ancestry.agent_of(node, _attributes)
    if agent is None and record.main_agent is not None:
        return _main_agent(node, record)
    return agent


def _main_agent(node, record):
    """The main agent of a call or tool no run names (its run's agent was None): the span's
    ``gen_ai.main_agent.name`` when no run encloses it, else None (a workflow's call)."""
    return record.main_agent if node is None or node.run_above() is None else None


def _with_events(record, failed: bool, events):
    """A failed span's error type from its exception event (OpenInference names it there), and
    the evaluation and decision signals of its events."""
    if failed and record.error_type == c.ERROR_OTHER:
        exc = c.exception_type(events)
        if exc is not None:
            record = record._replace(error_type=c.error_label(exc)[0])
    if events:
        signals = c.signals_of(events)
        if signals:
            record = record._replace(signals=signals)
    return record


def _femto(priced):
    return priced[0] if priced is not None and priced is not UNPRICED else None


def _duration(start, end):
    """(seconds, None), or the value to use and a (field, reason) drop for a bad duration."""
    if start.__class__ is not int or end.__class__ is not int:
        return None, ("duration", "missing_timestamps")
    if end < start:
        return 0.0, ("duration", "negative")
    return (end - start) / 1e9, None
