"""Metric readers that export spanmeter's pre-aggregated metrics.

A reader collects the meter provider's own instruments, then
:func:`merge` appends spanmeter's metrics (from :func:`spanmeter.aggregate.produce`)
as one more instrumentation scope before the reader's exporter sees them. Any reader
class of the SDK can be given this behaviour with :class:`ProducingReader`.

Beside an application's own OpenTelemetry set-up, each collection decides what is
spanmeter's to export (:class:`PrometheusReader`): a metric another instrumentation
scope already exports under the same name is left to it (:class:`Deferrals`), and
another OpenTelemetry Prometheus reader serving the same registry keeps the one
``target_info`` (and the instruments of a provider both read).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import threading
from importlib import metadata

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.metrics.export import MetricsData, ResourceMetrics, ScopeMetrics, Sum
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import REGISTRY

from spanmeter import __version__, exemplars
from spanmeter.aggregate import State, produce
from spanmeter.catalog import COUNTER, GAUGE, HISTOGRAM, METRICS, prometheus_name
from spanmeter.errors import ConfigurationError

_log = logging.getLogger("spanmeter")
SCOPE = InstrumentationScope("spanmeter", __version__)


def merge(metrics_data: MetricsData | None, metrics: list, resource: Resource) -> MetricsData | None:
    """``metrics_data`` with ``metrics`` added under spanmeter's scope.

    When the collection already has that scope (the SDK's own ``spanmeter_info`` gauge),
    the metrics join it: exporters key scopes by identity, and OTLP encoding would keep
    only one of two equal scopes.
    """
    if not metrics:
        return metrics_data
    if metrics_data is None or not metrics_data.resource_metrics:
        scope = ScopeMetrics(scope=SCOPE, metrics=metrics, schema_url="")
        return MetricsData(resource_metrics=[ResourceMetrics(resource=resource, scope_metrics=[scope], schema_url="")])
    first, *rest = metrics_data.resource_metrics
    scopes = list(first.scope_metrics)
    for n, existing in enumerate(scopes):
        if existing.scope == SCOPE:
            scopes[n] = ScopeMetrics(scope=SCOPE, metrics=[*existing.metrics, *metrics], schema_url=existing.schema_url)
            break
    else:
        scopes.append(ScopeMetrics(scope=SCOPE, metrics=metrics, schema_url=""))
    merged = ResourceMetrics(resource=first.resource, scope_metrics=scopes, schema_url=first.schema_url)
    return MetricsData(resource_metrics=[merged, *rest])


#: Points per metric the SDK keeps for its own instruments (``spanmeter_info`` and the
#: application's); further attribute sets land in one ``otel.metric.overflow="true"`` point.
#: spanmeter's own metrics are bounded by label instead (see ``aggregate.DEFAULT_LABEL_LIMITS``).
SDK_CARDINALITY_LIMIT = 2000


def sdk_cardinality_limits(limit: int = SDK_CARDINALITY_LIMIT) -> dict:
    """The same limit for every public instrument class, for a reader's ``cardinality_limits``."""
    return {cls: limit for cls in (Counter, UpDownCounter, Histogram, ObservableCounter,
                                   ObservableUpDownCounter, ObservableGauge)}  # fmt: skip


def _accepts(init, name: str) -> bool:
    """Whether the (bound) ``__init__`` takes keyword ``name``: the SDK's signatures grew over versions."""
    return name in inspect.signature(init).parameters


def check_joinable(meter_provider) -> None:
    """Raise ConfigurationError when spanmeter cannot join ``meter_provider`` (None: it makes its own).

    ``MeterProvider.add_metric_reader`` exists from opentelemetry-sdk 1.43 on; before, a
    provider's readers are fixed when it is created.
    """
    if meter_provider is not None and not hasattr(meter_provider, "add_metric_reader"):
        raise ConfigurationError(
            "meter_provider: this opentelemetry-sdk cannot add a reader to an existing MeterProvider "
            "(add_metric_reader needs opentelemetry-sdk>=1.43); upgrade the SDK, or leave meter_provider "
            "out and let spanmeter create its own provider"
        )


class ProducingReader:
    """Mixin for a ``MetricReader`` subclass: adds the metrics of ``state`` to each collection.

    The SDK's own cardinality limit applies from opentelemetry-sdk 1.45.2 on (readers gained
    ``cardinality_limits`` then); older SDKs keep every attribute set of their instruments.
    """

    def __init__(self, *args, state: State, resource: Resource | None = None,
                 cardinality_limit: int = SDK_CARDINALITY_LIMIT, **kwargs):  # fmt: skip
        self._spanmeter_state = state
        self._spanmeter_resource = resource or Resource.get_empty()
        self.deferrals = Deferrals(state)
        if _accepts(super().__init__, "cardinality_limits"):
            kwargs["cardinality_limits"] = sdk_cardinality_limits(cardinality_limit)
        super().__init__(*args, **kwargs)

    def _receive_metrics(self, metrics_data, timeout_millis: float = 10_000, **kwargs) -> None:
        try:
            extra = produce(self._spanmeter_state)
        except Exception:  # deliberate: a fault here must not cost the other metrics
            self._spanmeter_state.count("faults", ())
            _log.warning("spanmeter could not produce its metrics", exc_info=True)
            extra = []
        try:
            metrics_data, others = self._spanmeter_beside(metrics_data)
            self.deferrals.update(others)
            extra = self.deferrals.keep(extra)
        except Exception:  # deliberate: the exposition goes out as it would have without the check
            self._spanmeter_state.count("faults", ())
            _log.warning("spanmeter could not compare its metrics with the other instrumentations'", exc_info=True)
        merged = merge(metrics_data, self._spanmeter_prepare(extra), self._spanmeter_resource)
        if merged is not None:
            super()._receive_metrics(merged, timeout_millis, **kwargs)  # type: ignore[misc]  # the mixed-in reader's

    def _spanmeter_beside(self, metrics_data):
        """(the collection to export with spanmeter's metrics, names other scopes export to their scope)."""
        return metrics_data, exported_names(metrics_data)

    def _spanmeter_prepare(self, metrics: list) -> list:
        return metrics


def _kind(metric) -> str:
    data = metric.data
    if isinstance(data, HistogramData):
        return HISTOGRAM
    return COUNTER if isinstance(data, Sum) and data.is_monotonic else GAUGE


def exported_names(metrics_data: MetricsData | None) -> dict[str, str]:
    """The OpenTelemetry and Prometheus names of the metrics of ``metrics_data`` outside
    spanmeter's scope, each to the name of the instrumentation scope recording it."""
    names: dict[str, str] = {}
    if metrics_data is None:
        return names
    for resource_metrics in metrics_data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope.name
            if scope == SCOPE.name:
                continue
            for metric in scope_metrics.metrics:
                names.setdefault(metric.name, scope)
                names.setdefault(prometheus_name(metric.name, metric.unit or "", _kind(metric)), scope)
    return names


_MAX_SCOPE = 256  # characters of an instrumentation scope's name kept in a label

class Deferrals:
    """spanmeter's metrics that another instrumentation scope exports under the same name.

    From the first collection that shows one, spanmeter leaves its own copy out for good
    (logged once, and shown from the next collection by ``spanmeter_deferred_metric_info``):
    the other scope's series count the same calls (``gen_ai.*`` metrics of an official
    instrumentation), and two families of one name are an invalid exposition.
    """

    def __init__(self, state: State | None = None):
        self._lock = threading.Lock()
        self._state = state
        self.deferred: dict[str, str] = {}  # spanmeter's metric name -> the scope exporting that name

    def update(self, others: dict[str, str]) -> None:
        if not others:
            return
        for spec in METRICS:
            if spec.name in self.deferred:
                continue
            scope = others.get(spec.name) or others.get(spec.exposed_name)
            if scope is None:
                continue
            with self._lock:
                if spec.name in self.deferred:
                    continue
                self.deferred[spec.name] = scope
            if self._state is not None:
                self._state.add_info("deferred", (spec.exposed_name, scope[:_MAX_SCOPE]))
            meaning = ("records the same calls" if spec.family == "genai"
                       else "uses the same name")  # fmt: skip
            _log.info("spanmeter: %s (%s) is exported by the instrumentation scope %r, which %s; spanmeter leaves "
                      "its own copy out", spec.name, spec.exposed_name, scope, meaning)  # fmt: skip

    def keep(self, metrics: list) -> list:
        """``metrics`` without the deferred ones."""
        deferred = self.deferred
        return [m for m in metrics if m.name not in deferred] if deferred else metrics


def _exporter_minor() -> int:
    """The ``NN`` of opentelemetry-exporter-prometheus ``0.NNbM`` (0 when unknown)."""
    try:
        return int(metadata.version("opentelemetry-exporter-prometheus").split(".")[1].split("b")[0])
    except (metadata.PackageNotFoundError, IndexError, ValueError):
        return 0


def pad_labels(metrics: list) -> list:
    """The metrics with every point of a metric carrying the same label keys (missing ones "").

    opentelemetry-exporter-prometheus before 0.62b0 makes one metric family per label-key set,
    so a metric whose points differ in keys (``error_type`` only on failures) is exposed
    twice under one name, which Prometheus' parsers reject; 0.62b0 on pads like this itself.
    An empty label is the same as no label to Prometheus.
    """
    out = []
    for metric in metrics:
        points = metric.data.data_points
        keys = {key for point in points for key in point.attributes}
        if all(len(point.attributes) == len(keys) for point in points):
            out.append(metric)
            continue
        padded = [dataclasses.replace(point, attributes={**dict.fromkeys(keys, ""), **point.attributes})
                  for point in points]  # fmt: skip
        out.append(dataclasses.replace(metric, data=dataclasses.replace(metric.data, data_points=padded)))
    return out


class PrometheusReader(ProducingReader, PrometheusMetricReader):
    """``PrometheusMetricReader`` serving spanmeter's metrics too.

    Instrumentation-scope labels are off by default so the series carry exactly the
    catalogue's labels. Works with opentelemetry-exporter-prometheus 0.60b0 and later: before
    0.63b0 the exporter had no ``registry`` argument, before 0.64b0 no scope labels at all.
    """

    def __init__(self, *, state: State, resource: Resource | None = None, registry=None, scope_labels: bool = False,
                 cardinality_limit: int = SDK_CARDINALITY_LIMIT):  # fmt: skip
        kwargs: dict = {}
        if _accepts(PrometheusMetricReader.__init__, "scope_info_enabled"):
            kwargs["scope_info_enabled"] = scope_labels
        own_registry = _accepts(PrometheusMetricReader.__init__, "registry")
        if registry is not None and own_registry:
            kwargs["registry"] = registry
        super().__init__(state=state, resource=resource, cardinality_limit=cardinality_limit, **kwargs)
        self._spanmeter_registry = None
        if registry is not None and not own_registry:
            # exporter < 0.63b0 always registers on the global registry: move its collector
            REGISTRY.unregister(self._collector)
            registry.register(self._collector)
            self._spanmeter_registry = registry
        self._spanmeter_pad = _exporter_minor() < 62
        self._spanmeter_served = REGISTRY if registry is None else registry  # None: the exporter's default
        exemplars.serve(self._collector)  # the exporter drops exemplars; OpenMetrics scrapes get them

    def _spanmeter_prepare(self, metrics: list) -> list:
        return pad_labels(metrics) if self._spanmeter_pad else metrics

    def _spanmeter_beside(self, metrics_data):
        """Share the registry with the application's OpenTelemetry Prometheus readers.

        A reader of the same provider already exports its instruments: spanmeter then adds
        its own metrics only. One ``target_info`` per registry: spanmeter's is left out while
        another reader shows one. What the other readers' providers export is looked at by
        collecting them for this reader (their own exposition is untouched).
        """
        others = exported_names(metrics_data)
        mine = _consumer(self)
        shared = other_target_info = False
        for peer in peers(self._spanmeter_served, self._collector):
            consumer = _consumer(peer)
            target_info = not getattr(peer._collector, "_disable_target_info", False)
            if consumer is mine:
                shared = True
                other_target_info = other_target_info or target_info
                continue
            seen = _peek(peer, consumer)
            if seen is not None and seen.resource_metrics:
                other_target_info = other_target_info or target_info
                for name, scope in exported_names(seen).items():
                    others.setdefault(name, scope)
        for name in registered_names(self._spanmeter_served, self._collector):
            others.setdefault(name, PROMETHEUS_CLIENT)
        if hasattr(self._collector, "_disable_target_info"):  # read by the collector after this collection
            self._collector._disable_target_info = other_target_info
        return (None if shared else metrics_data), others

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        if self._spanmeter_registry is None:
            return super().shutdown(timeout_millis, **kwargs)
        self._spanmeter_registry.unregister(self._collector)  # what exporter < 0.63b0 would do on REGISTRY


#: What :class:`Deferrals` names as the exporter of a metric of ``prometheus_client``'s own on the registry.
PROMETHEUS_CLIENT = "prometheus_client"


def registered_names(registry, collector) -> set[str]:
    """The names ``registry`` knows of its collectors but ``collector`` and OpenTelemetry
    readers': the application's own ``prometheus_client`` metrics (``Counter("agent_requests")``
    gives ``agent_requests``, ``agent_requests_total``, ``agent_requests_created``)."""
    lock = getattr(registry, "_lock", None)
    if lock is None:
        return set()
    with lock:
        registered = list(getattr(registry, "_collector_to_names", {}).items())
    names: set[str] = set()
    for other, other_names in registered:
        reader = getattr(getattr(other, "_callback", None), "__self__", None)
        if other is not collector and not isinstance(reader, PrometheusMetricReader):
            names.update(other_names)
    return names


def peers(registry, collector) -> list:
    """The OpenTelemetry ``PrometheusMetricReader`` s serving ``registry`` but ``collector``'s.

    prometheus_client lists a registry's collectors in no public attribute; the exporter's
    collector calls back its reader's bound ``collect``.
    """
    lock = getattr(registry, "_lock", None)
    if lock is None:
        return []
    with lock:
        collectors = list(getattr(registry, "_collector_to_names", ()))
    found = []
    for other in collectors:
        reader = getattr(getattr(other, "_callback", None), "__self__", None)
        if other is not collector and isinstance(reader, PrometheusMetricReader):
            found.append(reader)
    return found


def _consumer(reader):
    """What collects ``reader``'s provider (the SDK's measurement consumer): one per provider."""
    return getattr(getattr(reader, "_collect", None), "__self__", None)


def _peek(reader, consumer, timeout_millis: float = 5_000) -> MetricsData | None:
    """A collection of ``reader``'s provider that ``reader`` never receives (None when unattached).

    The storage it reads is cumulative: the reader's own next collection is the same.
    """
    if consumer is None:
        return None
    try:
        return consumer.collect(reader, timeout_millis=timeout_millis)
    except Exception:  # deliberate: a provider being shut down, a callback failing: nothing learnt this time
        _log.debug("spanmeter could not look at another reader's metrics", exc_info=True)
        return None
