"""Metric readers that export spanmeter's pre-aggregated metrics.

A reader collects the meter provider's own instruments, then
:func:`merge` appends spanmeter's metrics (from :func:`spanmeter.aggregate.produce`)
as one more instrumentation scope before the reader's exporter sees them. Any reader
class of the SDK can be given this behaviour with :class:`ProducingReader`.
"""

from __future__ import annotations

import logging

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import MetricsData, ResourceMetrics, ScopeMetrics
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from spanmeter import __version__
from spanmeter.aggregate import State, produce

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


class ProducingReader:
    """Mixin for a ``MetricReader`` subclass: adds the metrics of ``state`` to each collection."""

    def __init__(self, *args, state: State, resource: Resource | None = None,
                 cardinality_limit: int = SDK_CARDINALITY_LIMIT, **kwargs):  # fmt: skip
        self._spanmeter_state = state
        self._spanmeter_resource = resource or Resource.get_empty()
        super().__init__(*args, cardinality_limits=sdk_cardinality_limits(cardinality_limit), **kwargs)

    def _receive_metrics(self, metrics_data, timeout_millis: float = 10_000, **kwargs) -> None:
        try:
            extra = produce(self._spanmeter_state)
        except Exception:  # deliberate: a fault here must not cost the other metrics
            self._spanmeter_state.count("faults", ())
            _log.warning("spanmeter could not produce its metrics", exc_info=True)
            extra = []
        merged = merge(metrics_data, extra, self._spanmeter_resource)
        if merged is not None:
            super()._receive_metrics(merged, timeout_millis, **kwargs)


class PrometheusReader(ProducingReader, PrometheusMetricReader):
    """``PrometheusMetricReader`` serving spanmeter's metrics too.

    Instrumentation-scope labels are off by default so the series carry exactly the
    catalogue's labels.
    """

    def __init__(self, *, state: State, resource: Resource | None = None, registry=None, scope_labels: bool = False,
                 cardinality_limit: int = SDK_CARDINALITY_LIMIT):  # fmt: skip
        kwargs = {"scope_info_enabled": scope_labels}
        if registry is not None:
            kwargs["registry"] = registry
        super().__init__(state=state, resource=resource, cardinality_limit=cardinality_limit, **kwargs)
