"""Pre-aggregated metric state and its projection onto OpenTelemetry metric data.

The processor updates plain Python numbers here (a dictionary lookup and a few
additions per span); at collection time :func:`produce` turns a snapshot of them into
the SDK's public metric data classes (``Metric``, ``Sum``, ``Histogram``, ``Gauge``),
which any metric reader exports. This is what the OpenTelemetry specification calls a
metric producer: one OpenTelemetry instrument call per metric per span would cost
twice the span itself (``../shared/docs/reference.md`` section 6).
"""

from __future__ import annotations

import math
import os
import threading
import time
import weakref
from bisect import bisect_left

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    Sum,
)

from spanmeter import catalog, exemplars
from spanmeter.catalog import COUNTER, GAUGE, HISTOGRAM, METRICS, TABLES, MetricSpec
from spanmeter.catalog import ATTRIBUTED, ATTRIBUTION_DIM
from spanmeter import conventions as c
from spanmeter.conventions import MAX_LABEL_LENGTH, TOKEN_TYPES, UNKNOWN, coerce_label
from spanmeter.conventions import MODALITIES, MODALITY_SPLIT_TYPES
from spanmeter.conversations import ENDED_BY_APP, ENDED_EVICTED, ENDED_IDLE, ConversationTracker
from spanmeter.pricing import UNPRICED

OTHER = "other"

#: Distinct values each label dimension may take before new ones collapse into
#: ``other``. Override per dimension with ``configure(label_limits={...})``.
DEFAULT_LABEL_LIMITS: dict[str, int] = {
    "agent": 100,
    "model": 200,
    "tool": 500,
    "provider": 50,
    "operation": 30,
    "error_type": 100,
    "tool_type": 30,
    "metric_type": 50,
    "workflow": 100,
    "finish_reason": 30,  # gen_ai.response.finish_reasons values (a label of model_finish_reasons)
}
# Dimensions whose values come from spans or from the application, and the guard
# (limit) that admits them; response models share the model guard.
_GUARD_OF_DIM = {
    "agent": "agent",
    "model": "model",
    "response_model": "model",
    "tool": "tool",
    "provider": "provider",
    "operation": "operation",
    "error_type": "error_type",
    "tool_type": "tool_type",
    "metric_type": "metric_type",
    "workflow": "workflow",
}
# Dimensions that must have a value (``unknown`` when the span has none); the others
# are left out of a data point when absent (``error.type`` on success, for example).
_OPTIONAL_DIMS = {"response_model", "error_type", "tool_type"}
_NO_TOKENS = (None, None, None, None, None)
#: Seconds a collection spends letting processors aggregate before it reads the state.
COLLECT_BUDGET = 0.25
# Raw attribute tuples remembered per table for the fast path; beyond this the slow
# path (sanitise, look up) runs for new tuples, so memory stays bounded.
_RAW_CACHE_LIMIT = 20_000
#: Distinct values of an attribution label (tenant, team, ...) before ``other``.
ATTRIBUTION_LABEL_LIMIT = 100
# Tables whose series expire after ``series_ttl_seconds`` untouched: the ones whose keys
# come from spans or the application (models, tools, agents come and go); spanmeter's own
# health series are few and fixed.
_EXPIRING = ("model", "tool", "agent", "workflow", "conversation", "quality", "evaluations", "no_usage",
             "tool_decisions")


class Hist:
    """Counts of observations on fixed bounds, with sum, min and max (and exemplars, when kept)."""

    __slots__ = ("bounds", "counts", "total", "min", "max", "exemplars")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.exemplars: list | None = None  # per bucket: the latest (value, trace_id, span_id, end_ns)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def snapshot(self) -> tuple[list[int], float, float, float]:
        return list(self.counts), self.total, self.min, self.max

    def keep(self, value: float, trace_id: int, span_id: int, end: int) -> None:
        """Make this span the exemplar of ``value``'s bucket (see :mod:`spanmeter.exemplars`)."""
        kept = self.exemplars
        if kept is None:
            kept = self.exemplars = [None] * len(self.counts)
        kept[bisect_left(self.bounds, value)] = (value, trace_id, span_id, end)


def _hist(table: str, field: str) -> Hist:
    return Hist(_BOUNDS[table, field])


_BOUNDS = {
    (m.table, m.field): catalog.field_bounds(m.table, m.field) for m in METRICS if m.kind == HISTOGRAM
}


class ModelSeries:
    """One (agent, model, provider, operation, response model, error type) combination.

    ``cost`` is an integer of femto-dollars: sums of
    many tiny costs stay exact (:data:`~spanmeter.catalog.COST_DIVISOR`).
    """

    __slots__ = (
        "dims", "count", "duration", "tokens", "token_input", "token_output", "cost",
        "priced", "unpriced_calls", "unpriced_tokens", "time_to_first_chunk",
        "modality_tokens", "finish_reasons", "output_rate",
        "cost_exemplar",
    )  # fmt: skip

    def __init__(self, dims):
        self.dims = dims
        self.count = 0
        self.duration = _hist("model", "duration")
        self.tokens = [0] * len(TOKEN_TYPES)
        self.token_input = _hist("model", "token_usage")
        self.token_output = _hist("model", "token_usage")
        self.cost = 0
        self.priced = False
        self.unpriced_calls = 0
        self.unpriced_tokens = [0] * len(TOKEN_TYPES)
        self.time_to_first_chunk = _hist("model", "time_to_first_chunk")  # streamed calls only
        #: tokens by (type, gen_ai.token.modality): index type * len(MODALITIES) + modality
        self.modality_tokens = [0] * (len(TOKEN_TYPES) * len(MODALITIES))
        self.finish_reasons: dict[str, int] = {}  # finish_reason label -> generations
        self.output_rate = _hist("model", "output_rate")  # streamed calls with output tokens
        self.cost_exemplar = None  # the latest priced call: (femto-dollars, trace_id, span_id, end_ns)

    def snapshot(self, now: float) -> dict:
        ttfc = self.time_to_first_chunk.snapshot()
        rate = self.output_rate.snapshot()
        snap = {f"usage_{t}": _by_modality(self.modality_tokens, n) for n, t in enumerate(TOKEN_TYPES)}
        tin, tout = self.token_input.snapshot(), self.token_output.snapshot()
        snap.update({
            "operation_input_tokens": tin if sum(tin[0]) else None,
            "operation_output_tokens": tout if sum(tout[0]) else None,
            "finish_reasons": dict(self.finish_reasons) or None,
            "output_rate": rate if sum(rate[0]) else None,
        })
        return snap | {
            "count": self.count,
            "time_to_first_chunk": ttfc if sum(ttfc[0]) else None,
            "duration": self.duration.snapshot(),
            "tokens": list(self.tokens),
            "token_usage": (tin, tout),
            # no cost point for a series that was never priced: absent is not $0
            "cost": self.cost if self.priced else None,
            "unpriced_calls": self.unpriced_calls if self.unpriced_calls else None,
            "unpriced_tokens": list(self.unpriced_tokens) if self.unpriced_calls else None,
        }


def _by_modality(counts: list[int], n: int) -> dict[str, int]:
    """Tokens of type ``n`` by modality: the modalities seen, and ``unknown`` always (0 included:
    the conventions record a call without usage as 0 unknown, and a series once exported must
    not vanish when split tokens arrive)."""
    width = len(MODALITIES)
    row = counts[n * width : (n + 1) * width]
    out = {m: v for m, v in zip(MODALITIES, row) if v}
    out[MODALITIES[-1]] = row[-1]
    return out


def add_modalities(counts: list[int], tokens: tuple, split: tuple | None) -> None:
    """Add one call's ``tokens`` (TOKEN_TYPES order) to ``counts`` by modality.

    ``split`` is the span's text/image/audio counts (``conventions.MODALITY_TOKEN_ATTRIBUTES``
    order) or None; what the split does not cover of a total is ``unknown``, never negative, and
    a split larger than the total is cut to it (the total is what the other token metrics count).
    """
    width = len(MODALITIES)
    unknown = width - 1
    types = len(MODALITY_SPLIT_TYPES)
    for n, total in enumerate(tokens):
        if total is None:
            continue
        known = 0
        if split is not None and n < types:
            for m in range(unknown):
                part = split[m * types + n]
                if part:
                    part = min(part, total - known)
                    counts[n * width + m] += part
                    known += part
        if total > known:
            counts[n * width + unknown] += total - known


_OWN_SPLIT = object()  # add_call_locked: the modality split is the record's own
# The token histograms' bounds, as ints when all are whole numbers: add_call_locked finds an
# int count's bucket among ints ~60 ns faster than among floats (mixed comparisons), and in
# the same bucket (Python compares ints and floats exactly); benchmarks/overhead.py.
_TOKEN_BOUNDS = _BOUNDS["model", "token_usage"]
_TOKEN_SEARCH = tuple(int(b) for b in _TOKEN_BOUNDS) if all(b == int(b) for b in _TOKEN_BOUNDS) else _TOKEN_BOUNDS

# where each token type's "unknown" modality count is in ModelSeries.modality_tokens (TOKEN_TYPES order)
_UNKNOWN_INPUT, _UNKNOWN_OUTPUT, _UNKNOWN_CACHE_READ, _UNKNOWN_CACHE_WRITE, _UNKNOWN_REASONING = (
    n * len(MODALITIES) + len(MODALITIES) - 1 for n in range(len(TOKEN_TYPES)))


class ToolSeries:
    __slots__ = ("dims", "count", "duration")

    def __init__(self, dims):
        self.dims = dims
        self.count = 0
        self.duration = _hist("tool", "duration")

    def snapshot(self, now: float) -> dict:
        return {"count": self.count, "duration": self.duration.snapshot()}


class AgentSeries:
    __slots__ = ("dims", "count", "duration", "inference_calls", "tool_calls", "tokens", "cost")

    def __init__(self, dims):
        self.dims = dims
        self.count = 0
        self.duration = _hist("agent", "duration")
        self.inference_calls = _hist("agent", "inference_calls")
        self.tool_calls = _hist("agent", "tool_calls")
        self.tokens = _hist("agent", "tokens")
        self.cost = _hist("agent", "cost")  # runs with at least one priced call

    def snapshot(self, now: float) -> dict:
        cost = self.cost.snapshot()
        return {
            "count": self.count,
            "duration": self.duration.snapshot(),
            "inference_calls": self.inference_calls.snapshot(),
            "tool_calls": self.tool_calls.snapshot(),
            "tokens": self.tokens.snapshot(),
            "cost": cost if sum(cost[0]) else None,
        }


class WorkflowSeries:
    __slots__ = ("dims", "count", "duration", "inference_calls", "tool_calls")

    def __init__(self, dims):
        self.dims = dims
        self.count = 0
        self.duration = _hist("workflow", "duration")
        self.inference_calls = _hist("workflow", "inference_calls")
        self.tool_calls = _hist("workflow", "tool_calls")

    def snapshot(self, now: float) -> dict:
        return {
            "count": self.count,
            "duration": self.duration.snapshot(),
            "inference_calls": self.inference_calls.snapshot(),
            "tool_calls": self.tool_calls.snapshot(),
        }


class RollingWindow:
    """Sum and count of the values added over the last ``seconds``, in fixed slots.

    Memory is constant (``slots`` numbers); a value leaves the window up to one slot
    width late.
    """

    __slots__ = ("width", "sums", "counts", "epochs")

    def __init__(self, seconds: float, slots: int = 60):
        self.width = seconds / slots
        self.sums = [0.0] * slots
        self.counts = [0] * slots
        self.epochs = [-1] * slots

    def add(self, value: float, now: float) -> None:
        epoch = int(now // self.width)
        i = epoch % len(self.sums)
        if self.epochs[i] != epoch:
            self.epochs[i] = epoch
            self.sums[i] = 0.0
            self.counts[i] = 0
        self.sums[i] += value
        self.counts[i] += 1

    def mean(self, now: float) -> float | None:
        oldest = int(now // self.width) - len(self.sums)
        total, n = 0.0, 0
        for epoch, s, c in zip(self.epochs, self.sums, self.counts):
            if epoch > oldest:
                total += s
                n += c
        return total / n if n else None


class ConversationSeries:
    __slots__ = ("dims", "turns", "conversations", "escalations", "window")

    def __init__(self, dims, window_seconds: float):
        self.dims = dims
        self.turns = _hist("conversation", "turns")
        self.conversations = 0
        self.escalations = 0
        self.window = RollingWindow(window_seconds)

    def snapshot(self, now: float) -> dict:
        return {
            "turns": self.turns.snapshot(),
            "conversations": self.conversations,
            "escalations": self.escalations,
            "escalation_rate": self.window.mean(now),
        }


class QualitySeries:
    __slots__ = ("dims", "window", "scores")

    def __init__(self, dims, window_seconds: float):
        self.dims = dims
        self.window = RollingWindow(window_seconds)
        self.scores = _hist("quality", "scores")

    def snapshot(self, now: float) -> dict:
        return {"score": self.window.mean(now), "scores": self.scores.snapshot()}


class CountSeries:
    __slots__ = ("dims", "count")

    def __init__(self, dims):
        self.dims = dims
        self.count = 0

    def snapshot(self, now: float) -> dict:
        return {"count": self.count}


class ValueSeries:
    """A gauge whose value the state sets."""

    __slots__ = ("dims", "value")

    def __init__(self, dims):
        self.dims = dims
        self.value = 0

    def snapshot(self, now: float) -> dict:
        return {"value": self.value}


class InfoSeries:
    """A constant 1 whose labels carry the information (an info metric)."""

    __slots__ = ("dims",)

    def __init__(self, dims):
        self.dims = dims

    def snapshot(self, now: float) -> dict:
        return {"value": 1}


class LabelGuard:
    """Turns raw attribute values of one label into bounded, valid label values."""

    __slots__ = ("name", "limit", "values", "known")

    def __init__(self, name: str, limit: int):
        self.name = name
        self.limit = limit
        self.values: set[str] = set()
        self.known: dict = {}  # raw str -> label, only for admitted values

    def admit(self, raw, state: State) -> str:
        """The label for ``raw``; the caller holds ``state.lock``."""
        if raw.__class__ is str:
            label = self.known.get(raw)
            if label is not None:
                return label
        label, reason = coerce_label(raw)
        if reason is not None:
            state.count_locked("drops", (self.name, reason))
        if label not in self.values:
            if len(self.values) >= self.limit:
                state.count_locked("overflow", (self.name,))
                return OTHER
            self.values.add(label)
        if raw.__class__ is str and len(raw) <= MAX_LABEL_LENGTH and len(self.known) < _RAW_CACHE_LIMIT:
            self.known[raw] = label  # long raw values are not kept: memory is bounded by entries
        return label


class Table:
    """Series of one kind, keyed by their sanitised dimension values."""

    __slots__ = ("name", "dims", "factory", "series", "by_raw")

    def __init__(self, name: str, factory):
        self.name = name
        self.dims = TABLES[name]
        self.factory = factory
        self.series: dict[tuple, object] = {}
        self.by_raw: dict[tuple, object] = {}  # raw attribute tuple -> series (fast path)


class State:
    """Everything the processor has aggregated, behind one lock.

    Methods ending in ``_locked`` expect the caller to hold :attr:`lock`.
    """

    def __init__(
        self,
        *,
        label_limits: dict[str, int] | None = None,
        quality_window: float = 3600.0,
        escalation_window: float = 3600.0,
        conversation_idle: float = 1800.0,
        max_conversations: int = 100_000,
        attribution: tuple[str, ...] = (),
        series_ttl: float | None = None,
        clock=time.monotonic,
    ):
        limits = dict(DEFAULT_LABEL_LIMITS)
        limits.update({label: ATTRIBUTION_LABEL_LIMIT for label in attribution})
        limits.update(label_limits or {})
        #: Attribution label names, in the order of the values of the attribution dimension.
        self.attribution_labels = tuple(attribution)
        #: Seconds after which an untouched series is dropped (None: never); see :meth:`sweep_locked`.
        self.series_ttl = series_ttl
        self.clock = clock  # monotonic seconds, for the series' last-touched stamps
        self._limits = limits
        self.quality_window = quality_window
        self.escalation_window = escalation_window
        self.conversation_idle = conversation_idle
        self.max_conversations = max_conversations
        #: Called before each snapshot: processors aggregate the spans still waiting.
        self.drainers: list = []
        #: GenAI metric names not produced (v1.41 ones by default); set from
        #: ``OTEL_SEMCONV_STABILITY_OPT_IN`` at configure time (:func:`catalog.semconv_mode`).
        self.excluded_metrics: frozenset[str] = catalog.excluded_names(frozenset({catalog.SEMCONV_CURRENT}))
        self._reset()
        # A forked child must not inherit a lock held by another thread of the parent,
        # nor report the parent's counts a second time.
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (s := ref()) is not None and s._reset())

    def _reset(self) -> None:
        self.lock = threading.Lock()
        self.now = self.clock()  # the stamp of series touched now: read once per drain (tick)
        self.touched: dict = {}  # series -> self.now when last updated (series_ttl only)
        self.created: dict = {}  # (table, dims) -> time_ns the series was made (series_ttl only)
        self._next_sweep = self.now
        self.start_ns = time.time_ns()
        self.guards = {name: LabelGuard(name, limit) for name, limit in self._limits.items()}
        qw, ew = self.quality_window, self.escalation_window
        self.tables = {
            "model": Table("model", ModelSeries),
            "tool": Table("tool", ToolSeries),
            "agent": Table("agent", AgentSeries),
            "workflow": Table("workflow", WorkflowSeries),
            "conversation": Table("conversation", lambda d: ConversationSeries(d, ew)),
            "quality": Table("quality", lambda d: QualitySeries(d, qw)),
            "spans": Table("spans", CountSeries),
            "drops": Table("drops", CountSeries),
            "overflow": Table("overflow", CountSeries),
            "faults": Table("faults", CountSeries),
            "evictions": Table("evictions", CountSeries),
            "evaluations": Table("evaluations", CountSeries),
            "no_usage": Table("no_usage", CountSeries),
            "shed": Table("shed", CountSeries),
            "conversation_ends": Table("conversation_ends", CountSeries),
            "open_conversations": Table("open_conversations", ValueSeries),
            "price_sources": Table("price_sources", CountSeries),
            "price_catalogue": Table("price_catalogue", InfoSeries),
            "deferred": Table("deferred", InfoSeries),
            "otlp_failures": Table("otlp_failures", CountSeries),
            "tool_decisions": Table("tool_decisions", CountSeries),
        }
        # Zero-valued health series exist from the start so alerts on them can fire.
        self.count_locked("faults", (), 0)
        self.count_locked("evictions", (), 0)
        self.count_locked("shed", ("backlog",), 0)
        # Direct references for the hot path.
        self.model = self.tables["model"]
        self.tool = self.tables["tool"]
        self.agent = self.tables["agent"]
        self.workflow = self.tables["workflow"]
        spans = self.tables["spans"].series
        self.spans_agent = spans[("agent",)] = CountSeries(("agent",))
        self.spans_inference = spans[("inference",)] = CountSeries(("inference",))
        self.spans_tool = spans[("tool",)] = CountSeries(("tool",))
        self.conversations = ConversationTracker(idle_seconds=self.conversation_idle, max_open=self.max_conversations)
        self.open_conversations = self.tables["open_conversations"].series[()] = ValueSeries(())
        for reason in (ENDED_BY_APP, ENDED_IDLE, ENDED_EVICTED):
            self.count_locked("conversation_ends", (reason,), 0)
        sources = self.tables["price_sources"].series
        self.priced_by = {s: sources.setdefault((s,), CountSeries((s,))) for s in ("span", "override", "catalogue")}

    # --- series lookup ---------------------------------------------------------------
    def series_locked(self, table: Table, raw: tuple):
        """The series for a tuple of raw attribute values, created when new."""
        labels = []
        cacheable = True
        for dim, value in zip(table.dims, raw):
            if dim == ATTRIBUTION_DIM:  # a tuple of raw values, one per attribution label
                label = None if value is None else self._attribution_locked(value)
                cacheable = cacheable and (label is None or (OTHER not in label and all(
                    v is None or (v.__class__ is str and len(v) <= MAX_LABEL_LENGTH) for v in value)))  # fmt: skip
                labels.append(label)
                continue
            guard = _GUARD_OF_DIM.get(dim)
            if value is None:
                label = None if dim in _OPTIONAL_DIMS else UNKNOWN
            elif guard is None:
                label = value  # set by spanmeter itself (status, kind, reason ...)
            else:
                label = self.guards[guard].admit(value, self)
                cacheable = (cacheable and label != OTHER and value.__class__ is str
                             and len(value) <= MAX_LABEL_LENGTH)  # fmt: skip
            labels.append(label)
        key = tuple(labels)
        series = table.series.get(key)
        if series is None:
            series = table.series[key] = table.factory(key)
            if self.series_ttl is not None:
                self.created[table.name, key] = time.time_ns()
        if self.series_ttl is not None:
            self.touched[series] = self.now
        if cacheable and len(table.by_raw) < _RAW_CACHE_LIMIT:
            try:
                table.by_raw[raw] = series
            except TypeError:  # an unhashable value; the slow path serves it each time
                pass
        return series

    def count_locked(self, table: str, dims: tuple, n: int = 1) -> None:
        t = self.tables[table]
        series = t.series.get(dims)
        if series is None:
            series = t.series[dims] = CountSeries(dims)
            if self.series_ttl is not None and table in _EXPIRING:
                self.created[table, dims] = time.time_ns()
        if self.series_ttl is not None and table in _EXPIRING:
            self.touched[series] = self.now
        series.count += n

    def _attribution_locked(self, raw: tuple) -> tuple:
        guards = self.guards
        return tuple(UNKNOWN if v is None else guards[label].admit(v, self)
                     for label, v in zip(self.attribution_labels, raw))  # fmt: skip

    # --- one method per kind of span (the caller holds the lock) -----------------------
    def _series(self, table: Table, key: tuple):
        try:
            series = table.by_raw.get(key)
        except TypeError:  # an unhashable attribute value
            series = None
        if series is None:
            return self.series_locked(table, key)
        if self.series_ttl is not None:
            self.touched[series] = self.now
        return series

    def add_call_locked(self, agent, record, tokens, call: bool, duration, ttfc, priced, no_usage: int = 0,
                        attribution: tuple | None = None, split=_OWN_SPLIT):
        """An inference span: a call (``call``) or only tokens and cost of one counted elsewhere.

        ``tokens`` (GenAI meaning), ``priced`` (None, UNPRICED or (femto-dollars, source)) and
        ``no_usage`` (calls of this series without usage) were decided by the reconciliation.
        ``attribution``: raw values of the attribution labels (None when none is configured).
        ``split``: the modality split of ``tokens`` when it is not ``record``'s (the usage span
        of a call counted earlier). Returns the series.
        """
        key = (agent, record.model, record.provider, record.operation, record.response_model, record.error_type,
               attribution)  # fmt: skip
        table = self.model
        try:  # _series, inlined: this runs for every inference span
            series = table.by_raw.get(key)
        except TypeError:  # an unhashable attribute value
            series = None
        if series is None:
            series = self.series_locked(table, key)
        elif self.series_ttl is not None:
            self.touched[series] = self.now
        if call:
            series.count += 1
            if duration is not None:  # Hist.observe, inlined: it runs for every call
                h = series.duration
                h.counts[bisect_left(h.bounds, duration)] += 1
                h.total += duration
                if duration < h.min:
                    h.min = duration
                if duration > h.max:
                    h.max = duration
            if ttfc is not None:
                series.time_to_first_chunk.observe(ttfc)
            self.spans_inference.count += 1
        if no_usage:
            self.count_locked("no_usage", (series.dims[1],), no_usage)
        i, o, cr, cw, rs = tokens
        if tokens != _NO_TOKENS:
            counts = series.tokens
            if i is not None:
                counts[0] += i
                h = series.token_input  # Hist.observe, inlined (as for the duration above)
                h.counts[bisect_left(_TOKEN_SEARCH, i)] += 1  # h.bounds, as ints
                h.total += i
                if i < h.min:
                    h.min = i
                if i > h.max:
                    h.max = i
            if o is not None:
                counts[1] += o
                h = series.token_output
                h.counts[bisect_left(_TOKEN_SEARCH, o)] += 1
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
            if split is _OWN_SPLIT:
                split = record.modality_tokens
            if split is None:  # add_modalities' common case: all of each total is "unknown" (unrolled)
                modality = series.modality_tokens
                if i and i > 0:
                    modality[_UNKNOWN_INPUT] += i
                if o and o > 0:
                    modality[_UNKNOWN_OUTPUT] += o
                if cr and cr > 0:
                    modality[_UNKNOWN_CACHE_READ] += cr
                if cw and cw > 0:
                    modality[_UNKNOWN_CACHE_WRITE] += cw
                if rs and rs > 0:
                    modality[_UNKNOWN_REASONING] += rs
            else:
                add_modalities(series.modality_tokens, tokens, split)
        if call and (record.finish_reasons is not None or ttfc is not None):
            self._call_extras_locked(series, record, tokens, duration, ttfc)
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
                self.priced_by[source].count += 1
        return series

    def _call_extras_locked(self, series, record, tokens, duration, ttfc) -> None:
        """Finish reasons and output speed of a call (the current GenAI conventions' additions)."""
        reasons = record.finish_reasons
        if reasons is not None:
            guard = self.guards["finish_reason"]
            counts = series.finish_reasons
            for raw in reasons:
                label = guard.admit(raw, self)
                counts[label] = counts.get(label, 0) + 1
        output = tokens[1]
        if ttfc is not None and output and duration is not None and duration > ttfc:
            # reasoning comes before the first visible chunk: the stream carries the rest
            visible = output - (tokens[4] or 0)
            if visible > 0:
                series.output_rate.observe(visible / (duration - ttfc))

    def add_tool_locked(self, agent, record, duration):
        status = c.status_of(record.error_type)
        series = self._series(self.tool, (agent, record.tool, record.tool_type, status, record.error_type))
        series.count += 1
        if duration is not None:
            series.duration.observe(duration)
        self.spans_tool.count += 1
        return series

    def add_run_locked(self, agent, record, duration, run, attribution: tuple | None = None):
        """An agent run; ``run`` (its :class:`spanmeter.ancestry.Node`, or None) holds what its
        own calls and tools added up to; ``attribution`` as for :meth:`add_call_locked`. Returns the series."""
        series = self._series(self.agent, (agent, c.status_of(record.error_type), record.error_type, attribution))
        series.count += 1
        if duration is not None:
            series.duration.observe(duration)
        if run is not None:  # None when the run started before spanmeter was added
            series.inference_calls.observe(run.calls)
            series.tool_calls.observe(run.tools)
            series.tokens.observe(run.tokens)
            if run.cost is not None:
                series.cost.observe(run.cost / catalog.COST_DIVISOR)
        self.spans_agent.count += 1
        return series

    def add_workflow_locked(self, name, record, duration, run) -> None:
        series = self._series(self.workflow, (name, c.status_of(record.error_type), record.error_type))
        series.count += 1
        if duration is not None:
            series.duration.observe(duration)
        if run is not None:
            series.inference_calls.observe(run.total_calls)
            series.tool_calls.observe(run.total_tools)

    def set_info(self, table: str, dims: tuple | None) -> None:
        """Make ``dims`` the one series of an info table (none when ``dims`` is None)."""
        with self.lock:
            series = self.tables[table].series
            series.clear()
            if dims is not None:
                series[dims] = InfoSeries(dims)

    def add_info(self, table: str, dims: tuple) -> None:
        """Add ``dims`` to the series of an info table."""
        with self.lock:
            series = self.tables[table].series
            if dims not in series:
                series[dims] = InfoSeries(dims)

    # --- conversations ------------------------------------------------------------------
    def conversation_turn_locked(self, conversation_id: str, agent, now: float) -> None:
        for ended in self.conversations.turn(c.key(conversation_id), agent, now):
            self.record_conversation_locked(ended.agent, ended.turns, ended.escalated, ended.reason)
        self.open_conversations.value = len(self.conversations)

    def end_conversation_locked(self, conversation_id: str, *, escalated: bool, agent, now: float) -> bool:
        ended = self.conversations.end(c.key(conversation_id), escalated=escalated, agent=agent, now=now)
        if ended is not None:
            self.record_conversation_locked(ended.agent, ended.turns, ended.escalated, ended.reason)
            self.open_conversations.value = len(self.conversations)
        return ended is not None

    def expire_conversations_locked(self, now: float) -> None:
        for ended in self.conversations.expire(now):
            self.record_conversation_locked(ended.agent, ended.turns, ended.escalated, ended.reason)
        self.open_conversations.value = len(self.conversations)

    def record_conversation_locked(self, agent, turns: int, escalated: bool, reason: str) -> None:
        series = self.series_locked(self.tables["conversation"], (agent,))
        series.turns.observe(turns)
        series.conversations += 1
        if escalated:
            series.escalations += 1
        series.window.add(1.0 if escalated else 0.0, time.monotonic())
        self.count_locked("conversation_ends", (reason,))

    def count(self, table: str, dims: tuple, n: int = 1) -> None:
        with self.lock:
            self.count_locked(table, dims, n)

    # --- collection -------------------------------------------------------------------
    def flush(self) -> None:
        """Have every processor aggregate all it holds, reconciliation's window or not."""
        for drain in self.drainers:
            drain(flush=True)

    def snapshot(self) -> dict[str, list[tuple[tuple, dict]]]:
        """Each table's (dims, fields) rows; with ``series_ttl``, also ``"_created"``: the
        time_ns each series was made, by (table, dims)."""
        for drain in self.drainers:
            drain(budget=COLLECT_BUDGET)
        now = time.monotonic()
        with self.lock:
            self.expire_conversations_locked(now)
            if self.series_ttl is not None:
                self.tick()
                if self.now >= self._next_sweep:
                    self.sweep_locked()
            snap = {
                name: [(s.dims, s.snapshot(now)) for s in t.series.values()]
                for name, t in self.tables.items()
            }
            if self.series_ttl is not None:
                snap["_created"] = dict(self.created)
            return snap

    # --- stale series (series_ttl) -----------------------------------------------------------
    def tick(self) -> None:
        """Read the clock once: series touched from now on are stamped with this time (the
        processor calls it once per aggregation round, not per span)."""
        self.now = self.clock()

    def sweep_locked(self) -> int:
        """Drop the series untouched for ``series_ttl`` seconds; returns how many.

        A stale series stays while another series it is summed with on some exported metric
        is live (e.g. by error type into one ``agent_token_usage_total`` point): dropping it
        would make that point's counter go down, which Prometheus reads as a reset. Label
        values no series uses any more are forgotten, so they no longer count toward the
        label's limit.
        """
        self._next_sweep = self.now + self.series_ttl / 24  # the check costs a pass over all series
        cutoff = self.now - self.series_ttl
        touched, dropped = self.touched, 0
        for name in _EXPIRING:
            table = self.tables[name]
            stale = {key for key, s in table.series.items() if touched.get(s, self.now) < cutoff}
            if stale:
                stale = _unpinned(name, table.series, stale)
            if not stale:
                continue
            for key in stale:
                touched.pop(table.series.pop(key), None)
                self.created.pop((name, key), None)
            table.by_raw = {raw: s for raw, s in table.by_raw.items() if s.dims not in stale}
            dropped += len(stale)
        if dropped:
            self._forget_labels_locked()
        return dropped

    def _forget_labels_locked(self) -> None:
        in_use: dict[str, set] = {name: set() for name in self.guards}
        for table in self.tables.values():
            for i, dim in enumerate(table.dims):
                if dim == ATTRIBUTION_DIM:
                    for key in table.series:
                        if key[i] is not None:
                            for label, value in zip(self.attribution_labels, key[i]):
                                in_use[label].add(value)
                elif dim in _GUARD_OF_DIM:
                    in_use[_GUARD_OF_DIM[dim]].update(key[i] for key in table.series)
        # finish reasons are no key: they live in the model series' counts, which still show them
        for series in self.tables["model"].series.values():
            in_use["finish_reason"].update(series.finish_reasons)
        for name, guard in self.guards.items():
            guard.values &= in_use[name]
            guard.known = {raw: label for raw, label in guard.known.items() if label in guard.values}


def _groupings(table: str) -> set[tuple[int, ...]]:
    """For each metric reading ``table``, the positions of the dimensions its points are keyed by."""
    dims = TABLES[table]
    out = set()
    for spec in METRICS:
        if spec.table == table:
            index = tuple(dims.index(dim) for _, dim in spec.labels)
            if spec.name in ATTRIBUTED:
                index += (dims.index(ATTRIBUTION_DIM),)
            out.add(index)
    return out


def _unpinned(table: str, series: dict, stale: set) -> set:
    """The keys of ``stale`` whose every exported point has no live series in it."""
    groupings = _groupings(table)
    changed = True
    while changed and stale:
        changed = False
        for index in groupings:
            live = {tuple(key[i] for i in index) for key in series if key not in stale}
            pinned = {key for key in stale if tuple(key[i] for i in index) in live}
            if pinned:
                stale = stale - pinned
                changed = True
    return stale


def _projection(spec: MetricSpec) -> list[tuple[int, int]]:
    """For each bucket of ``spec`` (and +Inf), the range of union-bound slots it sums."""
    union = catalog.field_bounds(spec.table, spec.field)
    ranges, start = [], 0
    for bound in spec.buckets:
        end = union.index(bound) + 1
        ranges.append((start, end))
        start = end
    ranges.append((start, len(union) + 1))
    return ranges


_PROJECTIONS = {m.name: _projection(m) for m in METRICS if m.kind == HISTOGRAM}


def _merge_hist(acc, snap, ranges):
    counts, total, lo, hi = snap
    projected = [sum(counts[a:b]) for a, b in ranges]
    if acc is None:
        return [projected, total, lo, hi]
    acc[0] = [x + y for x, y in zip(acc[0], projected)]
    acc[1] += total
    acc[2] = min(acc[2], lo)
    acc[3] = max(acc[3], hi)
    return acc


def produce(state: State, metrics: tuple[MetricSpec, ...] = METRICS) -> list[Metric]:
    """OpenTelemetry metric data for every metric of the catalogue, cumulative.

    GenAI names in ``state.excluded_metrics`` (from ``OTEL_SEMCONV_STABILITY_OPT_IN``,
    :func:`spanmeter.catalog.semconv_mode`) are not produced.
    """
    snap = state.snapshot()
    start, now = state.start_ns, time.time_ns()
    leave_out = state.excluded_metrics
    created = snap.get("_created")
    out = []
    for spec in metrics:
        rows = snap[spec.table]
        if not rows or spec.name in leave_out:
            continue
        dims = TABLES[spec.table]
        index = [dims.index(dim) for _, dim in spec.labels]
        keys = [key for key, _ in spec.labels]
        attributed = state.attribution_labels if spec.name in ATTRIBUTED else ()
        if attributed:  # one more key element: the tuple of attribution labels, fanned out below
            index.append(dims.index(ATTRIBUTION_DIM))
        starts: dict[tuple, int] = {}  # with series_ttl: a point starts when its oldest series was made
        fan = spec.fan_out[1] if spec.fan_out else (None,)
        dynamic = spec.fan_out is not None and not fan  # values are {label value: count}
        where = (dims.index(spec.rows[0]), frozenset(spec.rows[1]), spec.rows[2]) if spec.rows else None
        groups: dict[tuple, list] = {}
        for row_dims, fields in rows:
            value = fields[spec.field]
            if value is None:
                continue
            if where is not None and (row_dims[where[0]] in where[1]) is not where[2]:
                continue
            if dynamic:
                group = tuple(row_dims[i] for i in index)
                if created is not None:
                    made = created.get((spec.table, row_dims), start)
                    starts[group] = min(starts.get(group, made), made)
                acc = groups.setdefault(group, {})
                for label, n in value.items():
                    acc[label] = acc.get(label, 0) + n
                continue
            group = tuple(row_dims[i] for i in index)
            if created is not None:
                made = created.get((spec.table, row_dims), start)
                starts[group] = min(starts.get(group, made), made)
            acc = groups.get(group)
            if spec.kind == HISTOGRAM:
                ranges = _PROJECTIONS[spec.name]
                if spec.fan_out:
                    acc = acc or [None] * len(fan)
                    groups[group] = [_merge_hist(a, v, ranges) for a, v in zip(acc, value)]
                else:
                    groups[group] = [_merge_hist(acc[0] if acc else None, value, ranges)]
            elif spec.fan_out:
                groups[group] = [a + v for a, v in zip(acc or [0] * len(fan), value)]
            else:
                groups[group] = [(acc[0] if acc else 0) + value]
        if spec.divisor != 1:
            groups = {g: [v / spec.divisor for v in values] for g, values in groups.items()}
        points = []
        for group, values in groups.items():
            base = {k: v for k, v in zip(keys, group) if v is not None}
            if attributed:
                base.update(zip(attributed, group[-1] or ()))
            pairs = values.items() if dynamic else zip(fan, values)
            for fan_value, value in pairs:
                attributes = dict(base)
                if spec.fan_out:
                    attributes[spec.fan_out[0]] = fan_value
                points.append(_point(spec, attributes, value, starts.get(group, start), now))
        points = [p for p in points if p is not None]
        if points:
            out.append(Metric(name=spec.name, description=spec.help, unit=spec.unit, data=_data(spec, points)))
    return exemplars.attach(out, state)


def _point(spec, attributes, value, start, now):
    if spec.kind == HISTOGRAM:
        counts, total, lo, hi = value
        n = sum(counts)
        if n == 0 and spec.fan_out:
            return None  # e.g. no output-token observation in this series
        return HistogramDataPoint(
            attributes=attributes, start_time_unix_nano=start, time_unix_nano=now,
            count=n, sum=total, bucket_counts=counts, explicit_bounds=spec.buckets,
            min=lo if n else 0.0, max=hi if n else 0.0,
        )  # fmt: skip
    return NumberDataPoint(attributes=attributes, start_time_unix_nano=start, time_unix_nano=now, value=value)


def _data(spec, points):
    if spec.kind == COUNTER:
        return Sum(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE, is_monotonic=True)
    if spec.kind == GAUGE:
        return Gauge(data_points=points)
    return Histogram(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE)
