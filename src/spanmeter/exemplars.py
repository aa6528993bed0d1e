"""Exemplars: from a bucket or a cost series to the latest span behind it.

Kept (by the processor, under the state's lock): for the duration histograms of agent
runs, inference calls and tool calls, the latest span per bucket of each series
(:meth:`spanmeter.aggregate.Hist.keep`); for the cost counter, the latest priced call of
each series. An exemplar is ``(value, trace_id, span_id, end_time_ns)``: memory is bounded
by one tuple per bucket per series, whatever the span rate.

Served: :func:`attach` puts them on the data points :func:`spanmeter.aggregate.produce`
makes (``exemplars`` of the SDK's points), which the OTLP encoder sends as they are. The
OpenTelemetry Prometheus exporter drops exemplars, so :func:`serve` wraps its
``prometheus_client`` collector to set them on the ``_bucket`` and ``_total`` samples;
``prometheus_client`` writes them in OpenMetrics only (a scraper whose ``Accept`` asks for
``application/openmetrics-text``) and leaves the plain text format as it was.
Labels: ``trace_id`` (32 hex digits) and ``span_id`` (16), the names Grafana's Prometheus
data source links to traces by.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from typing import NamedTuple

from opentelemetry.sdk.metrics import Exemplar as OtelExemplar
from prometheus_client.samples import Exemplar as PromExemplar

from spanmeter.catalog import ATTRIBUTED, ATTRIBUTION_DIM, COUNTER, HISTOGRAM, METRICS, TABLES, MetricSpec
from spanmeter.pricing import UNPRICED

_log = logging.getLogger("spanmeter")

#: ``(table, field)`` of the state whose metrics carry exemplars: every histogram and
#: counter of the catalogue reading one of these (the article's and the GenAI ones alike).
FIELDS = frozenset({("agent", "duration"), ("model", "duration"), ("tool", "duration"), ("model", "cost")})
#: Where a counter's exemplar is kept on its series (the histograms keep theirs in the Hist).
COUNTER_SLOT = {("model", "cost"): "cost_exemplar"}
TRACE_ID = "trace_id"
SPAN_ID = "span_id"


def carries(spec: MetricSpec) -> bool:
    """Whether ``spec``'s points get exemplars."""
    return (spec.table, spec.field) in FIELDS and spec.kind in (HISTOGRAM, COUNTER) and spec.fan_out is None


class _Carrier(NamedTuple):
    """What collection needs of one metric carrying exemplars, worked out once."""

    spec: MetricSpec
    keys: tuple[str, ...]  # its attribute keys, in label order
    histogram: bool
    family: str  # prometheus_client's family name (a counter's without _total)
    sample: str  # the samples that carry them: name_bucket, name_total
    labels: tuple[str, ...]  # exposed label names, in the order of keys


def _carrier(spec: MetricSpec) -> _Carrier:
    histogram = spec.kind == HISTOGRAM
    name = spec.exposed_name
    return _Carrier(spec, tuple(key for key, _ in spec.labels), histogram,
                    name if histogram else name.removesuffix("_total"),
                    name + "_bucket" if histogram else name, spec.exposed_labels)  # fmt: skip


_CARRIERS: dict[str, _Carrier] = {m.name: _carrier(m) for m in METRICS if carries(m)}


# --- kept by the processor (the state's lock is held) ------------------------------------
def keep_call(series, duration, priced, trace_id: int, span_id: int, end) -> None:
    """An inference span's exemplars: its duration (None: not observed) and its cost (when priced)."""
    if duration is not None:
        series.duration.keep(duration, trace_id, span_id, end)
    if priced is not None and priced is not UNPRICED and end.__class__ is int:
        series.cost_exemplar = (priced[0], trace_id, span_id, end)


def keep_duration(series, duration, trace_id: int, span_id: int, end) -> None:
    """An agent run's or a tool call's exemplar (None: its duration was not observed)."""
    if duration is not None and series is not None:
        series.duration.keep(duration, trace_id, span_id, end)


# --- onto the metric data (OTLP, and the Prometheus exporter's input) ---------------------
def _kept_locked(state, needed: set) -> dict:
    """For each needed (table, field): [(series dims, exemplars)], copied."""
    out: dict = {}
    for table, field in needed:
        slot = COUNTER_SLOT.get((table, field))
        rows = []
        for series in state.tables[table].series.values():
            if slot is not None:
                kept = getattr(series, slot, None)
                if kept is not None:
                    rows.append((series.dims, [kept]))
            else:
                kept = getattr(series, field).exemplars
                if kept is not None:
                    rows.append((series.dims, [e for e in kept if e is not None]))
        out[table, field] = rows
    return out


def _group(spec: MetricSpec, rows, divisor: int, attributed: bool) -> dict:
    """Exemplars of ``spec`` by point (its label values, then the attribution labels' values
    when ``attributed``, as :func:`produce` groups them), the latest per bucket (histograms)
    or per point (counters)."""
    dims = TABLES[spec.table]
    index = [dims.index(dim) for _, dim in spec.labels]
    where = dims.index(ATTRIBUTION_DIM) if attributed else None
    histogram = spec.kind == HISTOGRAM
    groups: dict[tuple, dict] = {}
    for row_dims, kept in rows:
        key = tuple(row_dims[i] for i in index)
        if where is not None:  # one point per tenant (team...): never another tenant's span
            key += (tuple(row_dims[where] or ()),)
        group = groups.setdefault(key, {})
        for value, trace_id, span_id, end in kept:
            slot = bisect_left(spec.buckets, value) if histogram else 0
            old = group.get(slot)
            if old is None or old[3] < end:
                group[slot] = (value / divisor if divisor != 1 else value, trace_id, span_id, end)
    return groups


def attach(metrics: list, state) -> list:
    """``metrics`` (from :func:`~spanmeter.aggregate.produce`) with their points' exemplars set.

    Read under the state's lock just after the snapshot, so an exemplar may name a span that
    arrived in between: the next collection counts it.
    """
    carriers = [(metric, _CARRIERS[metric.name]) for metric in metrics if metric.name in _CARRIERS]
    if not carriers:
        return metrics
    with state.lock:
        kept = _kept_locked(state, {(c.spec.table, c.spec.field) for _, c in carriers})
    for metric, carrier in carriers:
        spec, keys = carrier.spec, carrier.keys
        rows = kept[spec.table, spec.field]
        if not rows:
            continue
        labels = state.attribution_labels if spec.name in ATTRIBUTED else ()
        groups = _group(spec, rows, spec.divisor, bool(labels))
        for point in metric.data.data_points:
            key = tuple(point.attributes.get(k) for k in keys)
            if labels:
                key += (tuple(point.attributes[label] for label in labels if label in point.attributes),)
            group = groups.get(key)
            if group:
                found = [OtelExemplar({}, v, end, span_id, trace_id)
                         for _, (v, trace_id, span_id, end) in sorted(group.items())]  # fmt: skip
                # produce() made this point for this collection alone: setting the field costs
                # less than dataclasses.replace of each point and metric (measured: a scrape of
                # 10,000 series)
                object.__setattr__(point, "exemplars", found)
    return metrics


# --- onto the Prometheus exposition ------------------------------------------------------
def _index(metrics_data) -> dict:
    """family name -> (carrier, {label values: {bucket index (0 for a counter): Exemplar}},
    the names of the point labels beyond the carrier's: attribution labels, in order)."""
    index: dict = {}
    for resource_metrics in metrics_data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                carrier = _CARRIERS.get(metric.name)
                if carrier is None:
                    continue
                spec, keys, histogram = carrier.spec, carrier.keys, carrier.histogram
                by_labels = {}
                extra: tuple = ()
                for point in metric.data.data_points:
                    if not point.exemplars:
                        continue
                    extra = tuple(k for k in point.attributes if k not in keys)  # the same for every point
                    by_bucket = {}
                    for e in point.exemplars:
                        labels = {TRACE_ID: format(e.trace_id, "032x"), SPAN_ID: format(e.span_id, "016x")}
                        slot = bisect_left(spec.buckets, e.value) if histogram else 0
                        by_bucket[slot] = PromExemplar(labels, e.value, e.time_unix_nano / 1e9)
                    by_labels[tuple(str(point.attributes.get(k, "")) for k in keys + extra)] = by_bucket
                if by_labels:
                    index[carrier.family] = (carrier, by_labels, extra)
    return index


def _with_exemplars(family, index: dict):
    found = index.get(family.name)
    if found is None:
        return family
    carrier, by_labels, extra = found
    buckets, histogram, wanted = carrier.spec.buckets, carrier.histogram, carrier.sample
    label_names = carrier.labels + extra  # attribution labels are Prometheus label names as they are
    out = []
    by_bucket = series = None
    for sample in family.samples:
        if sample.name != wanted:
            series = None  # a series' buckets are consecutive, its _count and _sum follow them
        else:
            labels = sample.labels
            if series is None or not histogram:
                series = tuple(labels.get(key, "") for key in label_names)
                by_bucket = by_labels.get(series)
            if by_bucket:
                exemplar = by_bucket.get(bisect_left(buckets, float(labels["le"])) if histogram else 0)
                if exemplar is not None:
                    sample = sample._replace(exemplar=exemplar)
        out.append(sample)
    family.samples = out
    return family


def serve(collector) -> None:
    """Have the OpenTelemetry Prometheus exporter's ``collector`` write spanmeter's exemplars.

    Wraps the instance's ``add_metrics_data`` (which receives each collection's data, with
    the exemplars :func:`attach` set) and ``collect`` (which the registry calls per scrape).
    """
    add, collect = collector.add_metrics_data, collector.collect
    index: dict = {}

    def add_metrics_data(metrics_data) -> None:
        try:
            index["current"] = _index(metrics_data)
        except Exception:  # deliberate: exemplars must never cost a scrape its metrics
            index.pop("current", None)
            _log.warning("spanmeter could not index its exemplars", exc_info=True)
        add(metrics_data)

    def collect_with_exemplars():
        for family in collect():
            current = index.get("current")
            if current:
                try:
                    family = _with_exemplars(family, current)
                except Exception:  # deliberate, as above
                    _log.warning("spanmeter could not attach its exemplars", exc_info=True)
            yield family

    collector.add_metrics_data = add_metrics_data
    collector.collect = collect_with_exemplars
