"""OTLP push: spanmeter's metrics (and optionally the spans) sent to a Collector.

A Prometheus pull endpoint per process breaks with forked workers (gunicorn, uvicorn
``--workers``): each worker holds its own counters behind one port. Each worker pushes
instead, on an interval, with its own ``service.instance.id``; the Collector serves the
union to Prometheus and PromQL sums across workers (``collector/README.md``).

Settings, each: argument > environment variable (read by the OpenTelemetry SDK
exporters) > default.

- protocol: ``otlp_protocol`` > ``OTEL_EXPORTER_OTLP_METRICS_PROTOCOL`` (spans:
  ``..._TRACES_PROTOCOL``) > ``OTEL_EXPORTER_OTLP_PROTOCOL`` > ``http/protobuf``;
- endpoint: ``otlp_endpoint`` (a base URL such as ``http://127.0.0.1:4318``; the HTTP
  exporters append ``/v1/metrics`` and ``/v1/traces``) > ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``
  / ``OTEL_EXPORTER_OTLP_ENDPOINT`` > the exporter's default (``localhost:4318`` for
  HTTP, ``localhost:4317`` for gRPC);
- interval: ``otlp_interval_seconds`` > ``OTEL_METRIC_EXPORT_INTERVAL`` (milliseconds) > 60 s;
- headers: ``otlp_headers`` > ``OTEL_EXPORTER_OTLP_(METRICS_)HEADERS``; timeout,
  compression, certificates: the ``OTEL_EXPORTER_OTLP_*`` variables only.

Temporality: spanmeter's own points are cumulative, with one start time per process
(reset in a forked child). ``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`` applies
to the SDK's instruments only; a backend that needs delta gets it from the Collector's
``cumulativetodelta`` processor.

Failures: every OTLP export request that fails, or that is still in flight when
``shutdown()``'s deadline passes, counts in ``spanmeter_otlp_failed_exports_total{signal}``
(a failed span request loses its spans; metric points are cumulative and go with the next
push). ``shutdown()`` logs what was not sent once.

Cost on exported spans: with ``otlp_spans=True`` every exported inference span that has
usage and no ``gen_ai.usage.cost.amount`` gets its priced cost in the export path
(:class:`CostSpanExporter`, in the exporter's thread): ended spans are frozen, so the
exported span is a copy with ``gen_ai.usage.cost.amount`` (US dollars), ``.currency``
``USD``, ``.source`` ``local`` and ``spanmeter.cost.price_source`` added. A call whose model
has no price is exported without a cost (never $0); spans that carry a cost keep theirs.

Fork: initialise in each worker after the fork (:func:`post_fork_hook`). A pipeline
inherited through ``fork()`` goes quiet in the child, so a worker never pushes under its
parent's identity.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from spanmeter import conventions as c
from spanmeter.export import SDK_CARDINALITY_LIMIT, ProducingReader
from spanmeter.pricing import cost_attributes

_log = logging.getLogger("spanmeter")

HTTP = "http/protobuf"
GRPC = "grpc"
PROTOCOLS = (HTTP, GRPC)
#: Python package of each protocol's exporters (the ``otlp`` extra installs both).
EXPORTER_PACKAGES = {
    HTTP: ("opentelemetry.exporter.otlp.proto.http", "opentelemetry-exporter-otlp-proto-http"),
    GRPC: ("opentelemetry.exporter.otlp.proto.grpc", "opentelemetry-exporter-otlp-proto-grpc"),
}
DEFAULT_INTERVAL_SECONDS = 60.0
ENV_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
ENV_METRICS_PROTOCOL = "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"
ENV_TRACES_PROTOCOL = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
ENV_INTERVAL = "OTEL_METRIC_EXPORT_INTERVAL"
ENV_TEMPORALITY = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"
ENV_RESOURCE = "OTEL_RESOURCE_ATTRIBUTES"
INSTANCE_ID = "service.instance.id"
#: Resource attribute on what spanmeter exports: the Collector derives no metrics again
#: from spans of a service that already meters them (``collector/otelcol.yaml``).
METERED = "spanmeter.metered"


def _error(message: str) -> Exception:
    from spanmeter.config import ConfigurationError  # config imports this module

    return ConfigurationError(message)


@dataclass(frozen=True)
class OtlpSettings:
    """Validated OTLP settings; ``None`` fields are left to the exporters' environment."""

    metrics_protocol: str
    spans_protocol: str
    endpoint: str | None
    interval_seconds: float
    headers: dict[str, str] | None
    spans: bool


def resolve(
    *,
    endpoint: str | None = None,
    protocol: str | None = None,
    interval_seconds: float | None = None,
    headers: Mapping[str, str] | None = None,
    spans: bool = False,
    environ: Mapping[str, str] = os.environ,
) -> OtlpSettings:
    """The OTLP settings by the precedence above; raises ``ConfigurationError`` naming the fix."""
    metrics_protocol = _protocol(protocol, ENV_METRICS_PROTOCOL, environ)
    spans_protocol = _protocol(protocol, ENV_TRACES_PROTOCOL, environ)
    needed = {metrics_protocol, spans_protocol} if spans else {metrics_protocol}
    for proto in sorted(needed):
        module, package = EXPORTER_PACKAGES[proto]
        if importlib.util.find_spec(module) is None:
            raise _error(
                f"OTLP over {proto} needs {package}: pip install 'spanmeter[otlp]' "
                f"(or choose the other protocol with otlp_protocol=...)"
            )
    if endpoint is not None:
        if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
            raise _error(f"otlp_endpoint must be a URL such as http://127.0.0.1:4318, got {endpoint!r}")
        endpoint = endpoint.rstrip("/")
    if interval_seconds is None:
        raw = environ.get(ENV_INTERVAL)
        if raw:
            try:
                interval_seconds = float(raw) / 1000.0
            except ValueError:
                raise _error(f"{ENV_INTERVAL} must be a number of milliseconds > 0, got {raw!r}") from None
            if not interval_seconds > 0:
                raise _error(f"{ENV_INTERVAL} must be a number of milliseconds > 0, got {raw!r}")
        else:
            interval_seconds = DEFAULT_INTERVAL_SECONDS
    elif isinstance(interval_seconds, bool) or not isinstance(interval_seconds, (int, float)) or not (
        0 < interval_seconds < float("inf")
    ):
        raise _error(f"otlp_interval_seconds must be a number of seconds > 0, got {interval_seconds!r}")
    if headers is not None:
        if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise _error(f"otlp_headers must map header names to string values, got {headers!r}")
        headers = dict(headers)
    preference = environ.get(ENV_TEMPORALITY, "").strip().upper()
    if preference in ("DELTA", "LOWMEMORY"):
        _log.warning(
            "%s=%s applies to OpenTelemetry SDK instruments only: spanmeter's metrics stay "
            "cumulative (use the Collector's cumulativetodelta processor for a delta backend)",
            ENV_TEMPORALITY,
            preference,
        )
    return OtlpSettings(
        metrics_protocol=metrics_protocol,
        spans_protocol=spans_protocol,
        endpoint=endpoint,
        interval_seconds=float(interval_seconds),
        headers=headers,
        spans=bool(spans),
    )


def _protocol(argument, signal_env: str, environ) -> str:
    if argument is not None:
        value, source = argument, "otlp_protocol"
    elif environ.get(signal_env):
        value, source = environ[signal_env], signal_env
    elif environ.get(ENV_PROTOCOL):
        value, source = environ[ENV_PROTOCOL], ENV_PROTOCOL
    else:
        return HTTP
    value = value.strip() if isinstance(value, str) else value
    if value not in PROTOCOLS:
        raise _error(f"{source} must be one of {', '.join(PROTOCOLS)}, got {value!r}")
    return value


def instance_resource(resource: Resource) -> Resource:
    """``resource`` with a ``service.instance.id`` of this process (unless it has one)
    and the :data:`METERED` marker: the identity that keeps workers' series apart."""
    extra: dict[str, str | bool] = {METERED: True}
    if INSTANCE_ID not in resource.attributes:
        extra[INSTANCE_ID] = _instance_id()
    return resource.merge(Resource(extra))


_instance: tuple[int, str] = (0, "")


def _instance_id() -> str:
    # One per process, kept across configure/shutdown cycles; a forked child gets its own.
    global _instance
    pid = os.getpid()
    if _instance[0] != pid:
        _instance = (pid, str(uuid.uuid4()))
    return _instance[1]


# --- fork awareness -------------------------------------------------------------------
class _ForkGuard:
    """True in a process forked from the one that built the owner (set at fork)."""

    __slots__ = ("inherited", "__weakref__")

    def __init__(self):
        self.inherited = False
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _mark_inherited(ref))


def _mark_inherited(ref) -> None:
    guard = ref()
    if guard is not None:
        guard.inherited = True


_INHERITED_WARNING = (
    "spanmeter's OTLP push was configured before this process was forked; it exports "
    "nothing here so workers do not share the parent's identity. Call spanmeter.configure() "
    "in each worker after the fork (gunicorn: post_fork = spanmeter.otlp.post_fork_hook(...))."
)


class OtlpMetricReader(ProducingReader, PeriodicExportingMetricReader):
    """``PeriodicExportingMetricReader`` that adds spanmeter's metrics to each export.

    In a forked child it drops its collections: the child has its own spanmeter to
    configure (the exporter's connection and the resource belong to the parent).
    """

    def __init__(self, exporter, *, state, resource: Resource, interval_seconds: float,
                 cardinality_limit: int = SDK_CARDINALITY_LIMIT):  # fmt: skip
        self._fork = _ForkGuard()
        self._warned = False
        super().__init__(exporter, export_interval_millis=interval_seconds * 1000.0, state=state, resource=resource,
                         cardinality_limit=cardinality_limit)  # fmt: skip

    def _receive_metrics(self, metrics_data, timeout_millis: float = 10_000, **kwargs) -> None:
        if self._fork.inherited:
            if not self._warned:
                self._warned = True
                _log.warning(_INHERITED_WARNING)
            return
        super()._receive_metrics(metrics_data, timeout_millis, **kwargs)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        """The last export, then stop; later calls (``remove_metric_reader`` makes one) do nothing."""
        if getattr(self, "_stopped", False):
            return
        self._stopped = True
        super().shutdown(timeout_millis=timeout_millis, **kwargs)


class SpanExportProcessor(BatchSpanProcessor):
    """``BatchSpanProcessor`` that queues nothing in a process forked after it was built."""

    def __init__(self, exporter, **kwargs):
        self._fork = _ForkGuard()
        super().__init__(exporter, **kwargs)

    def on_end(self, span) -> None:
        if not self._fork.inherited:
            super().on_end(span)

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        """Export what is queued (in the processor's own worker thread) and stop, waiting
        ``timeout_millis`` at most; the SDK's ``shutdown()`` takes no timeout (30 s)."""
        batch = getattr(self, "_batch_processor", None)  # the SDK's worker, behind BatchSpanProcessor
        if batch is None:
            super().shutdown()
        else:
            batch.shutdown(timeout_millis=int(timeout_millis))


# --- counting what was not sent ---------------------------------------------------------
class _Counted:
    """Counts the failed export requests of the exporter it wraps (``signal``: metrics or spans)."""

    def __init__(self, inner, signal: str, state):
        self.inner = inner
        self.signal = signal
        self._state = state
        if state is not None:
            state.count("otlp_failures", (signal,), 0)  # the series exists from the start, for alerts
        self._lock = threading.Lock()
        self._in_flight = 0
        self._abandoned = False
        self._stopped = False
        self.failed = 0

    def _export(self, call, success):
        with self._lock:
            self._in_flight += 1
        result = None
        try:
            result = call()
            return result
        finally:
            with self._lock:
                self._in_flight -= 1
                counted = result != success and not self._abandoned
            if counted:
                self._fail(1)

    def _fail(self, n: int) -> None:
        self.failed += n
        if self._state is not None:
            self._state.count("otlp_failures", (self.signal,), n)

    def abandon(self) -> int:
        """Count the requests still in flight as failed (their late outcome is not counted
        again) and stop the exporter's retries; returns how many."""
        with self._lock:
            in_flight, self._abandoned = self._in_flight, True
        if in_flight:
            self._fail(in_flight)
        self._stop()
        return in_flight

    def _stop(self, **kwargs) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self.inner.shutdown(**kwargs)


class CountedMetricExporter(_Counted, MetricExporter):
    """A metric exporter counting its failed requests."""

    def __init__(self, inner, state=None):
        _Counted.__init__(self, inner, "metrics", state)
        # the reader asks its exporter for these (the SDK base class keeps them so)
        MetricExporter.__init__(self, preferred_temporality=inner._preferred_temporality,
                                preferred_aggregation=inner._preferred_aggregation)  # fmt: skip

    def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs):
        return self._export(lambda: self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs),
                            MetricExportResult.SUCCESS)  # fmt: skip

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        self._stop(timeout_millis=timeout_millis, **kwargs)


class CountedSpanExporter(_Counted, SpanExporter):
    """A span exporter counting its failed requests."""

    def __init__(self, inner, state=None):
        _Counted.__init__(self, inner, "spans", state)

    def export(self, spans):
        return self._export(lambda: self.inner.export(spans), SpanExportResult.SUCCESS)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self._stop()


# --- cost on exported spans ---------------------------------------------------------------
class CostSpanExporter(SpanExporter):
    """Adds the priced cost to copies of the inference spans it exports (see the module
    docstring); other spans pass as they are. Never fails an export for a pricing fault."""

    def __init__(self, inner, pricer):
        self.inner = inner
        self.pricer = pricer

    def export(self, spans):
        pricer = self.pricer
        out = []
        for span in spans:
            try:
                span = with_cost(span, pricer)
            except Exception:  # deliberate: the span goes as it was
                _log.debug("spanmeter could not price an exported span", exc_info=True)
            out.append(span)
        return self.inner.export(out)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.inner.shutdown()


def with_cost(span: ReadableSpan, pricer) -> ReadableSpan:
    """``span``, or a copy of it with the cost attributes when it is an inference span with
    usage (or a dollar cost of an older convention) and no ``gen_ai.usage.cost.amount``.

    A span that names a currency of its own (``gen_ai.usage.cost.currency``, as OpenLIT writes
    beside its ``gen_ai.usage.cost``) is left as it is: a USD amount would contradict it.
    """
    attributes = span.attributes
    if not attributes or c.COST_AMOUNT in attributes or c.COST_CURRENCY in attributes:
        return span
    name = span.name
    kind = c.kind_of(attributes, name)
    if kind != c.KIND_INFERENCE:
        return span
    record = c.read(attributes, kind, span.status.status_code is StatusCode.ERROR, name)
    cost = cost_attributes(pricer.price(record.provider, record.model, record.response_model, record.tokens,
                                        span.end_time, attributes))  # fmt: skip
    if not cost:
        return span
    return ReadableSpan(
        name=name, context=span.context, parent=span.parent, resource=span.resource,
        attributes={**attributes, **cost}, events=span.events, links=span.links, kind=span.kind,
        status=span.status, start_time=span.start_time, end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )  # fmt: skip


# --- building ---------------------------------------------------------------------------
def _metric_exporter(settings: OtlpSettings):
    if settings.metrics_protocol == GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(endpoint=settings.endpoint, headers=settings.headers)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    endpoint = f"{settings.endpoint}/v1/metrics" if settings.endpoint else None
    return OTLPMetricExporter(endpoint=endpoint, headers=settings.headers)


def _span_exporter(settings: OtlpSettings):
    if settings.spans_protocol == GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=settings.endpoint, headers=settings.headers)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    endpoint = f"{settings.endpoint}/v1/traces" if settings.endpoint else None
    return OTLPSpanExporter(endpoint=endpoint, headers=settings.headers)


class Push:
    """The OTLP parts of one spanmeter: a metric reader and, optionally, a span processor."""

    def __init__(self, settings: OtlpSettings, *, state, resource: Resource, cardinality_limit: int = SDK_CARDINALITY_LIMIT,
                 pricer=None):  # fmt: skip
        self.settings = settings
        self.metric_exporter = CountedMetricExporter(_metric_exporter(settings), state)
        self.reader = OtlpMetricReader(
            self.metric_exporter, state=state, resource=resource, interval_seconds=settings.interval_seconds,
            cardinality_limit=cardinality_limit,
        )
        span_exporter = _span_exporter(settings) if settings.spans else None
        if span_exporter is not None and pricer is not None:
            span_exporter = CostSpanExporter(span_exporter, pricer)
        self.span_exporter = CountedSpanExporter(span_exporter, state) if settings.spans else None
        self.span_processor = SpanExportProcessor(self.span_exporter) if settings.spans else None

    @property
    def inherited(self) -> bool:
        """True in a process forked after this was built: it exports nothing here."""
        return self.reader._fork.inherited

    def flush(self, timeout_millis: float = 10_000) -> None:
        """Export the spans and metrics now (the spans first: they end before metrics count)."""
        if self.inherited:
            return
        if self.span_processor is not None:
            self.span_processor.force_flush(int(timeout_millis))
        self.reader.force_flush(timeout_millis)

    def stop(self, timeout_millis: float) -> None:
        """The last exports, then stop, within ``timeout_millis``: the spans get half of it,
        the metrics (the reader's final collection) what is left. Each export runs in its
        exporter's own thread, which is waited for until its share ends, never longer (no
        thread is started here: Python 3.12 forbids that in an exit hook)."""
        if self.inherited:
            return
        deadline = time.monotonic() + timeout_millis / 1000
        if self.span_processor is not None:
            self.span_processor.shutdown(timeout_millis / 2)
        self.reader.shutdown(timeout_millis=max(0.0, deadline - time.monotonic()) * 1000)

    def abandon(self) -> dict[str, int]:
        """At the end of shutdown: count the requests still in flight as not sent and stop
        retrying; returns the failed requests so far by signal."""
        exporters = [e for e in (self.metric_exporter, self.span_exporter) if e is not None]
        for exporter in exporters:
            exporter.abandon()
        return self.failures()

    def failures(self) -> dict[str, int]:
        """Failed (or abandoned) export requests by signal."""
        return {e.signal: e.failed for e in (self.metric_exporter, self.span_exporter) if e is not None}

    def shutdown(self) -> None:
        """Stop the span export (after a flush). The reader stops with its meter provider."""
        if self.span_processor is not None and not self.inherited:
            self.span_processor.shutdown()


def settings(
    enabled: bool,
    *,
    endpoint: str | None = None,
    protocol: str | None = None,
    interval_seconds: float | None = None,
    headers: Mapping[str, str] | None = None,
    spans: bool = False,
    environ: Mapping[str, str] = os.environ,
) -> OtlpSettings | None:
    """:func:`resolve` when ``enabled``; None when not, and an error when OTLP options are
    given without ``otlp=True`` (they would silently do nothing)."""
    if enabled:
        return resolve(endpoint=endpoint, protocol=protocol, interval_seconds=interval_seconds,
                       headers=headers, spans=spans, environ=environ)  # fmt: skip
    given = [name for name, value in (("otlp_endpoint", endpoint), ("otlp_protocol", protocol),
             ("otlp_interval_seconds", interval_seconds), ("otlp_headers", headers)) if value is not None]  # fmt: skip
    if spans:
        given.append("otlp_spans")
    if given:
        raise _error(f"{', '.join(given)} given but OTLP push is off: pass otlp=True")
    return None


def post_fork_hook(**configure_kwargs):
    """A function ``(server, worker)`` for gunicorn's ``post_fork`` setting (or any
    pre-fork server) that runs :func:`spanmeter.configure` in the new worker.

    OTLP push is on and the Prometheus endpoint off unless ``configure_kwargs`` say
    otherwise (forked workers cannot share one port). The OTLP settings are checked now,
    in the parent, so a mistake stops the server at start-up rather than in each worker.
    """
    kwargs = {"otlp": True, "prometheus": False, **configure_kwargs}
    settings(bool(kwargs["otlp"]), **_otlp_arguments(kwargs))
    if INSTANCE_ID in _resource_keys(os.environ.get(ENV_RESOURCE, "")):
        raise _error(
            f"{ENV_RESOURCE} sets {INSTANCE_ID} for every worker, so their series would collide; "
            f"remove it there: spanmeter gives each worker its own"
        )

    def post_fork(server=None, worker=None) -> None:
        import spanmeter

        spanmeter.configure(**kwargs)

    return post_fork


def worker_exit(server=None, worker=None) -> None:
    """For gunicorn's ``worker_exit`` setting: flush the worker's last numbers and stop."""
    import spanmeter

    spanmeter.shutdown()


def _otlp_arguments(kwargs) -> dict:
    names = {"otlp_endpoint": "endpoint", "otlp_protocol": "protocol", "otlp_interval_seconds": "interval_seconds",
             "otlp_headers": "headers", "otlp_spans": "spans"}  # fmt: skip
    return {names[k]: v for k, v in kwargs.items() if k in names}


def _resource_keys(raw: str) -> set[str]:
    return {item.split("=", 1)[0].strip() for item in raw.split(",") if "=" in item}
