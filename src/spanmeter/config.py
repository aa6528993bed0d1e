"""Set-up: one call wires the span processor, a meter provider with the Prometheus
reader, and the ``/metrics`` HTTP endpoint.

Precedence for every setting: constructor argument, then environment variable, then
default. Settings:

- service name: ``service_name`` > ``OTEL_SERVICE_NAME`` (read by the SDK's
  ``Resource.create``) > ``unknown_service``;
- endpoint: ``host``/``port`` > ``OTEL_EXPORTER_PROMETHEUS_HOST``/``_PORT`` >
  ``127.0.0.1:9464``. The default host is loopback, not the exporter's ``localhost``:
  expose the endpoint beyond this machine only by asking for it;
- shutdown deadline: ``shutdown_timeout_seconds`` > 5 s, for every step of ``shutdown()``
  together, and for the exit of a process that never called it (see ``Spanmeter.shutdown``).

:func:`setup` builds a :class:`Spanmeter` and touches no global state but an exit hook
that stops it within its deadline (tests use it with their own providers and registry);
:func:`configure` is the once-per-process call that also joins or installs the global
tracer and meter providers; called again it returns the running instance for the same
arguments and refuses different ones until :func:`shutdown`.
"""

from __future__ import annotations

import atexit
import inspect
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

from opentelemetry import metrics, trace
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import Sampler
from prometheus_client import CollectorRegistry

from spanmeter import __version__
from spanmeter import attribution as _attribution
from spanmeter import catalog as _catalog
from spanmeter import endpoint as _endpoint
from spanmeter import lifecycle as _lifecycle
from spanmeter import otlp as _otlp
from spanmeter.aggregate import DEFAULT_LABEL_LIMITS, State
from spanmeter.errors import ConfigurationError
from spanmeter.export import SDK_CARDINALITY_LIMIT, PrometheusReader, check_joinable
from spanmeter.pricing import Pricer, catalogue_version
from spanmeter.processor import SpanmeterProcessor
from spanmeter.quality import Evaluator, LLMJudge
from spanmeter.sampling import KeepGenAI, keep_genai

_log = logging.getLogger("spanmeter")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9464
ENV_HOST = "OTEL_EXPORTER_PROMETHEUS_HOST"
ENV_PORT = "OTEL_EXPORTER_PROMETHEUS_PORT"
#: Seconds ``shutdown()`` (and the exit of a process that never called it) may take in all.
#: Below the grace periods of the servers that stop an app: gunicorn's ``graceful_timeout``
#: and Kubernetes' ``terminationGracePeriodSeconds`` are 30 s each.
DEFAULT_SHUTDOWN_TIMEOUT = 5.0


def _port(value, source: str) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{source} must be a TCP port number (0-65535), got {value!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigurationError(f"{source} must be a TCP port number (0-65535), got {port}")
    return port


def resolve_endpoint(host: str | None = None, port: int | None = None, environ=os.environ) -> tuple[str, int]:
    """(host, port) of the metrics endpoint by the precedence above."""
    if host is None:
        host = environ.get(ENV_HOST) or DEFAULT_HOST
    if port is None:
        env = environ.get(ENV_PORT)
        port = _port(env, ENV_PORT) if env else DEFAULT_PORT
    else:
        port = _port(port, "port")
    if not isinstance(host, str) or not host:
        raise ConfigurationError(f"host must be a non-empty string, got {host!r}")
    return host, port


def _check_label_limits(label_limits, attribution_labels=()) -> dict[str, int]:
    if label_limits is None:
        return {}
    unknown = set(label_limits) - set(DEFAULT_LABEL_LIMITS) - set(attribution_labels)
    if unknown:
        raise ConfigurationError(
            f"label_limits has unknown label(s) {sorted(unknown)}; known: "
            f"{sorted(DEFAULT_LABEL_LIMITS) + sorted(attribution_labels)}"
        )
    for key, value in label_limits.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigurationError(f"label_limits[{key!r}] must be an int >= 1, got {value!r}")
    return dict(label_limits)


def _check_sampler(sampler, tracer_provider) -> Sampler | None:
    """``sampler`` wrapped in ``keep_genai`` (once), for a tracer provider spanmeter creates."""
    if sampler is None:
        return None
    if tracer_provider is not None and not _samples_with(tracer_provider, sampler):
        raise ConfigurationError(
            "sampler=... applies to the tracer provider spanmeter creates, and a tracer provider was given "
            "(or configure() joined the global one) whose sampler cannot be changed: build that provider with "
            "TracerProvider(sampler=spanmeter.sampling.keep_genai(your_sampler)) and drop sampler=..."
        )
    return sampler if isinstance(sampler, KeepGenAI) else keep_genai(sampler)


def _samples_with(tracer_provider, sampler) -> bool:
    """The provider already samples with ``keep_genai(sampler)`` (a configure after shutdown)."""
    current = getattr(tracer_provider, "sampler", None)
    return current is sampler or (isinstance(current, KeepGenAI) and current.inner is sampler)


class Spanmeter:
    """A running spanmeter: processor, state, reader, and the HTTP endpoint if started.

    Build it with :func:`setup` or :func:`configure`.
    """

    def __init__(self, *, tracer_provider, meter_provider, processor, reader, server, owns_meter_provider,
                 push=None, evaluator=None, tls=False, shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
                 resource: Resource | None = None):  # fmt: skip
        self.tracer_provider = tracer_provider
        self.resource = resource  # the identity spanmeter's metrics are exported under
        self.meter_provider = meter_provider
        self.processor = processor
        self.reader = reader  # the Prometheus reader, None with prometheus=False
        self.push = push  # spanmeter.otlp.Push, None without otlp=True
        self.evaluator = evaluator
        self._server = server
        self._tls = tls
        self._owns_meter_provider = owns_meter_provider
        self.shutdown_timeout = shutdown_timeout
        self._closed = False
        self.pid = os.getpid()
        self._slot = _lifecycle.slot_of(tracer_provider)
        self._slot.attach(processor, push and push.span_processor)
        # Runs before the SDK providers' own exit hooks (registered earlier): the exit of a
        # process that never called shutdown() is bounded by the same deadline.
        atexit.register(self.shutdown)

    @property
    def state(self):
        return self.processor.state

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) the endpoint listens on, or None when no server was started."""
        if self._server is None:
            return None
        host, port = self._server.server_address[:2]
        return host, port

    @property
    def metrics_url(self) -> str | None:
        if self._server is None:
            return None
        host, port = self.address
        host = f"[{host}]" if ":" in host else host
        scheme = "https" if self._tls else "http"
        return f"{scheme}://{host}:{port}/metrics"

    # the emit API, bound to this instance's tracer provider
    def agent_run(self, agent_name: str, **kwargs):
        from spanmeter.emit import agent_run

        return agent_run(agent_name, tracer_provider=self.tracer_provider, evaluator=self.evaluator, **kwargs)

    def model_call(self, model: str, **kwargs):
        from spanmeter.emit import model_call

        return model_call(model, tracer_provider=self.tracer_provider, **kwargs)

    def tool_call(self, tool_name: str, **kwargs):
        from spanmeter.emit import tool_call

        return tool_call(tool_name, tracer_provider=self.tracer_provider, **kwargs)

    def record_quality(self, agent_name: str, metric_type: str, score: float) -> None:
        self.processor.record_quality(agent_name, metric_type, score)

    def record_conversation(self, agent_name: str, *, turns: int, escalated: bool = False) -> None:
        self.processor.record_conversation(agent_name, turns=turns, escalated=escalated)

    def end_conversation(self, conversation_id: str, *, escalated: bool = False) -> bool:
        return self.processor.end_conversation(conversation_id, escalated=escalated)

    def shutdown(self, timeout_seconds: float | None = None) -> bool:
        """Flush, stop the endpoint and detach from the providers, in ``timeout_seconds`` at
        most (default: ``shutdown_timeout_seconds``); False when something could not be sent
        in time (counted and logged). Safe to call twice."""
        if self._closed:
            return True
        self._closed = True
        atexit.unregister(self.shutdown)
        budget = self.shutdown_timeout if timeout_seconds is None else float(timeout_seconds)
        deadline = time.monotonic() + budget
        self._slot.detach(self.processor, self.push and self.push.span_processor)
        if self.pid != os.getpid():
            # Inherited through fork: release this process's copies only (the serving
            # thread and the export connections belong to the parent).
            self.processor.shutdown()
            if self._server is not None:
                self._server.server_close()
            return True
        if self.evaluator is not None:  # half the budget at most: the push needs the rest
            self.evaluator.shutdown(max(0.0, deadline - time.monotonic()) / 2)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.processor.shutdown()
        if self.processor.pricer is not None:
            self.processor.pricer.stop()
        # The network steps wait on the exporters' own threads, each until its share of the
        # deadline; an export still in flight then is left behind (and counted as not sent).
        if self.push is not None:
            self.push.stop(max(0.0, deadline - time.monotonic()) * 1000)
        # A provider shared with the app keeps working without spanmeter's readers; before SDK
        # 1.43 readers cannot be removed, so spanmeter's own provider is stopped instead.
        if self._owns_meter_provider or not hasattr(self.meter_provider, "remove_metric_reader"):
            try:
                self.meter_provider.shutdown(timeout_millis=max(0.0, deadline - time.monotonic()) * 1000)
            except Exception:  # deliberate: what a reader could not send is counted and logged below
                _log.debug("spanmeter: a metric reader failed to shut down", exc_info=True)
        else:
            for reader in (self.reader, self.push and self.push.reader):
                if reader is not None:
                    self.meter_provider.remove_metric_reader(reader)
        if self.push is None:
            return True
        failures = self.push.abandon()  # what is still in flight now is lost too
        if not any(failures.values()):
            return True
        _log.warning(  # the one log line about what was lost
            "spanmeter shutdown (shutdown_timeout_seconds=%g): OTLP export requests not sent: %s (Collector at %s "
            "unreachable or not answering; counted in spanmeter_otlp_failed_exports_total)",
            budget,
            ", ".join(f"{n} {signal}" for signal, n in failures.items()),
            self.push.settings.endpoint or "the default endpoint",
        )
        return False


def setup(
    *,
    service_name: str | None = None,
    host: str | None = None,
    port: int | None = None,
    start_server: bool = True,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    registry: CollectorRegistry | None = None,
    resource: Resource | None = None,
    label_limits: Mapping[str, int] | None = None,
    sdk_cardinality_limit: int = SDK_CARDINALITY_LIMIT,
    max_open_spans: int = 100_000,
    reconcile_window_seconds: float = 1.0,
    max_backlog: int = 100_000,
    quality_window_seconds: float = 3600.0,
    escalation_window_seconds: float = 3600.0,
    prices: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    price_catalogue: bool = True,
    update_prices: bool = False,
    update_prices_url: str | None = None,
    evaluator: Evaluator | None = None,
    conversation_idle_seconds: float = 1800.0,
    max_open_conversations: int = 100_000,
    shutdown_timeout_seconds: float = DEFAULT_SHUTDOWN_TIMEOUT,
    # OTLP push, see spanmeter.otlp
    prometheus: bool = True,
    otlp: bool = False,
    otlp_endpoint: str | None = None,
    otlp_protocol: str | None = None,
    otlp_interval_seconds: float | None = None,
    otlp_headers: Mapping[str, str] | None = None,
    otlp_spans: bool = False,
    # securing the endpoint, see spanmeter.endpoint
    tls_certfile: str | None = None,
    tls_keyfile: str | None = None,
    tls_client_cafile: str | None = None,
    basic_auth: tuple[str, str] | None = None,
    # exact under trace sampling, see spanmeter.sampling
    sampler: Sampler | None = None,
    # who spends, see spanmeter.attribution
    attribution: Mapping[str, str] | None = None,
    # stale series, see spanmeter.aggregate.State.sweep_locked
    series_ttl_seconds: float | None = None,
) -> Spanmeter:
    """Build a :class:`Spanmeter` from explicit parts; touches no global state.

    ``tracer_provider``: the SDK provider to add the processor to (a new one if None).
    ``label_limits``: distinct values per label of spanmeter's metrics before ``other``;
    ``sdk_cardinality_limit``: points per metric of the SDK's own instruments (yours too,
    when spanmeter joins your meter provider) before ``otel.metric.overflow``.
    ``meter_provider``: an SDK provider to add the reader to (a new one if None).
    ``registry``: the ``prometheus_client`` registry to serve (its global one if None).
    ``start_server=False`` serves nothing: read the registry yourself.
    ``prices``: price overrides, a TOML file path or the same structure as a dict
    (see :mod:`spanmeter.pricing`); validated now. ``price_catalogue=False`` prices from
    the overrides and span costs only. ``update_prices=True`` refreshes the genai-prices
    catalogue from the network hourly (never otherwise).
    ``evaluator``: a :class:`spanmeter.quality.Evaluator` that scores sampled runs in the
    background. ``conversation_idle_seconds``: a conversation followed by
    ``gen_ai.conversation.id`` ends after this long without a turn.
    ``reconcile_window_seconds``: how long an ended span waits for another instrumentation's
    span of the same call (see :mod:`spanmeter.reconcile`); ``max_backlog``: ended spans
    waiting for aggregation beyond which new ones are shed and counted, never blocking.
    ``shutdown_timeout_seconds``: what ``shutdown()`` (or the exit without it) may take in
    all, shared by every step; what is not sent by then is counted and logged.
    ``prometheus=False`` leaves the Prometheus reader out (OTLP push alone).
    ``otlp=True`` pushes by OTLP on an interval (:mod:`spanmeter.otlp` for the ``otlp_*``
    options and their ``OTEL_EXPORTER_OTLP_*`` variables); ``otlp_spans=True`` exports the
    spans too.
    ``tls_certfile``/``tls_keyfile`` serve ``/metrics`` over HTTPS (``tls_client_cafile``:
    require client certificates it signed); ``basic_auth=(user, password)`` requires HTTP
    basic auth (use it over TLS).
    ``sampler``: the application's trace sampler, for the tracer provider spanmeter creates:
    it samples with ``spanmeter.sampling.keep_genai(sampler)``, so the metrics count every
    GenAI run while export stays as ``sampler`` chose. With your own tracer provider, build
    it with ``TracerProvider(sampler=keep_genai(...))`` instead (a provider's sampler is
    fixed once made).
    ``attribution``: opt-in labels on the cost, token and request metrics, label -> source
    (``{"tenant": "app.tenant_id"}``: a span attribute, ``"baggage:<key>"`` or
    ``"resource:<key>"``; see :mod:`spanmeter.attribution`); never per-person ids.
    ``series_ttl_seconds``: series of models, tools, agents ... untouched this long (>= 60,
    e.g. 86400) are dropped from the exposition and from memory; None keeps them for the
    process's life.
    """
    push_settings = _otlp.settings(otlp, endpoint=otlp_endpoint, protocol=otlp_protocol,
                                   interval_seconds=otlp_interval_seconds, headers=otlp_headers,
                                   spans=otlp_spans)  # fmt: skip
    if not prometheus:
        if push_settings is None:
            raise ConfigurationError("prometheus=False and no otlp=True: nothing would export; turn one on")
        start_server = False
    if host is not None or port is not None or start_server:
        host, port = resolve_endpoint(host, port)
    tls = None
    if tls_certfile is not None:
        tls = _endpoint.tls_context(tls_certfile, tls_keyfile, tls_client_cafile)
    elif tls_keyfile is not None or tls_client_cafile is not None:
        raise ConfigurationError("tls_keyfile and tls_client_cafile need tls_certfile")
    if basic_auth is not None:
        basic_auth = _endpoint.check_credentials(basic_auth)
        if host is not None:
            _endpoint.warn_plain_credentials(host, tls, basic_auth)
    sources = _attribution.check(attribution, _catalog.label_names() | set(DEFAULT_LABEL_LIMITS))
    limits = _check_label_limits(label_limits, [source.label for source in sources])
    if series_ttl_seconds is not None and (isinstance(series_ttl_seconds, bool)
                                           or not isinstance(series_ttl_seconds, (int, float))
                                           or not 60 <= series_ttl_seconds < float("inf")):  # fmt: skip
        raise ConfigurationError(f"series_ttl_seconds must be None (series never expire) or a number of seconds "
                                 f">= 60, well above the scrape interval (e.g. 86400), got {series_ttl_seconds!r}")  # fmt: skip
    sampler = _check_sampler(sampler, tracer_provider)
    check_joinable(meter_provider)
    if not isinstance(sdk_cardinality_limit, int) or isinstance(sdk_cardinality_limit, bool) or sdk_cardinality_limit < 1:
        raise ConfigurationError(f"sdk_cardinality_limit must be an int >= 1, got {sdk_cardinality_limit!r}")
    for name, value in (("quality_window_seconds", quality_window_seconds),
                        ("escalation_window_seconds", escalation_window_seconds),
                        ("conversation_idle_seconds", conversation_idle_seconds),
                        ("shutdown_timeout_seconds", shutdown_timeout_seconds)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            raise ConfigurationError(f"{name} must be a number of seconds > 0, got {value!r}")
    if not isinstance(max_open_conversations, int) or max_open_conversations < 1:
        raise ConfigurationError(f"max_open_conversations must be an int >= 1, got {max_open_conversations!r}")
    if isinstance(reconcile_window_seconds, bool) or not isinstance(reconcile_window_seconds, (int, float)) or not (
            0 <= reconcile_window_seconds <= 60):  # fmt: skip
        raise ConfigurationError(f"reconcile_window_seconds must be a number of seconds in [0, 60], got "
                                 f"{reconcile_window_seconds!r}")  # fmt: skip
    if isinstance(max_backlog, bool) or not isinstance(max_backlog, int) or max_backlog < 1:
        raise ConfigurationError(f"max_backlog must be an int >= 1, got {max_backlog!r}")
    if not isinstance(max_open_spans, int) or isinstance(max_open_spans, bool) or max_open_spans < 2:
        raise ConfigurationError(f"max_open_spans must be an int >= 2, got {max_open_spans!r}")
    if evaluator is not None and not isinstance(evaluator, Evaluator):
        raise ConfigurationError(f"evaluator must be a spanmeter.quality.Evaluator, got {evaluator!r}")
    if resource is None:
        resource = _resource(service_name, tracer_provider)
    if push_settings is not None:
        resource = _otlp.instance_resource(resource)

    pricer = Pricer.create(prices, catalogue=price_catalogue, update=update_prices, update_url=update_prices_url)
    state = State(
        label_limits=limits,
        quality_window=float(quality_window_seconds),
        escalation_window=float(escalation_window_seconds),
        conversation_idle=float(conversation_idle_seconds),
        max_conversations=max_open_conversations,
        attribution=tuple(source.label for source in sources),
        series_ttl=None if series_ttl_seconds is None else float(series_ttl_seconds),
    )
    state.excluded_metrics = _catalog.excluded_names(_catalog.semconv_mode())  # OTEL_SEMCONV_STABILITY_OPT_IN
    attributor = _attribution.Attribution(sources) if sources else None
    if price_catalogue:
        pricer.on_refresh = lambda: state.set_info("price_catalogue", ("genai-prices", catalogue_version()))
        pricer.on_refresh()
    processor = SpanmeterProcessor(state, max_open_spans=max_open_spans, pricer=pricer, evaluator=evaluator,
                                   reconcile_window=float(reconcile_window_seconds), max_backlog=max_backlog,
                                   attribution=attributor)  # fmt: skip
    if tracer_provider is None:
        tracer_provider = (TracerProvider(resource=resource) if sampler is None
                           else TracerProvider(resource=resource, sampler=sampler))  # fmt: skip
    if attributor is not None:
        attributor.bind_resource(getattr(tracer_provider, "resource", resource))

    reader = (PrometheusReader(state=state, resource=resource, registry=registry, cardinality_limit=sdk_cardinality_limit)
              if prometheus else None)  # fmt: skip
    push = (_otlp.Push(push_settings, state=state, resource=resource, cardinality_limit=sdk_cardinality_limit,
                       pricer=pricer)
            if push_settings is not None else None)  # fmt: skip
    readers = [r for r in (reader, push and push.reader) if r is not None]
    owns = meter_provider is None
    if meter_provider is None:
        # spanmeter's exit hook stops it within the shutdown deadline, not the SDK's (30 s);
        # readers given to the constructor: add_metric_reader exists from SDK 1.43 only
        meter_provider = MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False)
    else:
        for r in readers:
            meter_provider.add_metric_reader(r)
    _register_info(meter_provider)

    server = None
    if start_server:
        from prometheus_client import REGISTRY

        try:
            server = _endpoint.serve(registry or REGISTRY, host, port, tls=tls, auth=basic_auth)
        except OSError as exc:
            if owns:
                meter_provider.shutdown()
            else:
                for r in readers:
                    meter_provider.remove_metric_reader(r)
            processor.shutdown()
            pricer.stop()
            if push is not None:
                push.shutdown()
            raise ConfigurationError(
                f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}); choose another "
                f"port with port=... or {ENV_PORT}, or pass start_server=False when your app already "
                f"serves this registry (spanmeter's metrics then appear on its endpoint)"
            ) from exc
    if evaluator is not None:
        if isinstance(evaluator.judge, LLMJudge) and evaluator.judge.tracer_provider is None:
            evaluator.judge.tracer_provider = tracer_provider  # meter the judge's own calls
        evaluator.start(processor)
    return Spanmeter(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        processor=processor,
        reader=reader,
        server=server,
        owns_meter_provider=owns,
        push=push,
        evaluator=evaluator,
        tls=tls is not None,
        shutdown_timeout=float(shutdown_timeout_seconds),
        resource=resource,
    )


def _resource(service_name: str | None, tracer_provider) -> Resource:
    base = tracer_provider.resource if tracer_provider is not None else Resource.create()
    return base.merge(Resource({"service.name": service_name})) if service_name else base


_with_info: weakref.WeakSet = weakref.WeakSet()  # meter providers that have spanmeter_info


def _register_info(meter_provider) -> None:
    # A gauge of the SDK's own kind: the reader always has a collection to add to. Once per
    # provider: a provider kept across configure/shutdown cycles would warn of a duplicate.
    if meter_provider in _with_info:
        return
    _with_info.add(meter_provider)
    meter = meter_provider.get_meter("spanmeter", __version__)
    meter.create_observable_gauge(
        "spanmeter_info",
        callbacks=[lambda options: [Observation(1, {"version": __version__})]],
        description="spanmeter is running; its version as a label.",
    )


# --- the process-wide default -----------------------------------------------------------
_lock = threading.Lock()
_default: Spanmeter | None = None
_default_arguments: dict[str, Any] = {}
_global_meter_provider: MeterProvider | None = None  # installed by configure, kept for the process
_global_resource: Resource | None = None  # the resource it was made with

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _arguments_of(source: Callable[_P, Any]) -> Callable[[Callable[..., _R]], Callable[_P, _R]]:
    """Give the decorated function the signature of ``source`` (for ``help()``, IDEs and type
    checkers): one definition of the settings, not two copies."""

    def apply(fn: Callable[..., _R]) -> Callable[_P, _R]:
        fn.__signature__ = inspect.signature(source).replace(return_annotation=inspect.signature(fn).return_annotation)  # type: ignore[attr-defined]
        return fn  # type: ignore[return-value]

    return apply


def _differences(given: dict[str, Any], running: dict[str, Any]) -> list[str]:
    signature = inspect.signature(setup)
    names = sorted(set(given) | set(running))
    missing = inspect.Parameter.empty
    return [n for n in names
            if given.get(n, signature.parameters[n].default if n in signature.parameters else missing)
            != running.get(n, signature.parameters[n].default if n in signature.parameters else missing)]  # fmt: skip


@_arguments_of(setup)
def configure(**kwargs: Any) -> Spanmeter:
    """Set spanmeter up once for this process; the arguments are :func:`setup`'s.

    Joins the global tracer provider when it is an SDK one (else installs a new one as
    global), and installs the meter provider as global when none is set; that provider
    stays for the process (:func:`shutdown` detaches spanmeter from it, so the app's own
    instruments keep working). Calling it again with the same arguments returns the
    running instance; with different ones raises ``ConfigurationError`` naming them
    (call :func:`shutdown` first). Unknown arguments raise ``TypeError`` like a call to
    :func:`setup`.
    """
    global _default, _default_arguments, _global_meter_provider, _global_resource
    inspect.signature(setup).bind(**kwargs)  # TypeError on an unknown argument, as setup gives
    with _lock:
        if _default is not None:
            if _default.pid == os.getpid():
                differing = _differences(kwargs, _default_arguments)
                if differing:
                    raise ConfigurationError(
                        f"spanmeter is already configured with other settings ({', '.join(differing)}): "
                        f"call spanmeter.shutdown() first, or spanmeter.current() for the running instance"
                    )
                return _default
            _default.shutdown()  # inherited through fork: this worker gets its own
        arguments = dict(kwargs)
        if kwargs.get("tracer_provider") is None:
            current = trace.get_tracer_provider()
            if isinstance(current, TracerProvider):
                kwargs["tracer_provider"] = current
        if (kwargs.get("meter_provider") is None and metrics.get_meter_provider() is _global_meter_provider
                and hasattr(_global_meter_provider, "add_metric_reader")):  # joining needs SDK >= 1.43  # fmt: skip
            # The app may hold instruments of it: join it again, when its identity (resource)
            # is the one this call asks for.
            wanted = kwargs.get("resource") or _resource(kwargs.get("service_name"), kwargs.get("tracer_provider"))
            if kwargs.get("otlp"):
                wanted = _otlp.instance_resource(wanted)
            if wanted == _global_resource:
                kwargs["meter_provider"] = _global_meter_provider
            else:
                _log.warning("spanmeter: configured with another identity than before; OpenTelemetry instruments "
                             "made from the global meter provider before stay on it and are no longer exported")
        instance = setup(**kwargs)
        if trace.get_tracer_provider() is not instance.tracer_provider:
            trace.set_tracer_provider(instance.tracer_provider)
        if not isinstance(metrics.get_meter_provider(), MeterProvider):
            metrics.set_meter_provider(instance.meter_provider)
            _global_meter_provider, _global_resource = instance.meter_provider, instance.resource
        if instance.meter_provider is _global_meter_provider:
            instance._owns_meter_provider = False  # shutdown detaches from it, never stops it
        _default, _default_arguments = instance, arguments
        return instance


def shutdown(timeout_seconds: float | None = None) -> bool:
    """Shut the instance made by :func:`configure` down within ``timeout_seconds`` (default:
    its ``shutdown_timeout_seconds``); ``configure`` may run again. False when something could
    not be sent in time (counted and logged)."""
    global _default, _default_arguments
    with _lock:
        instance, _default, _default_arguments = _default, None, {}
    return instance.shutdown(timeout_seconds) if instance is not None else True


def current() -> Spanmeter | None:
    """The instance made by :func:`configure`, if any."""
    return _default


def default_tracer_provider():
    """The tracer provider the module-level emit API uses."""
    return _default.tracer_provider if _default is not None else trace.get_tracer_provider()


def default_evaluator():
    """The evaluator of the instance made by :func:`configure`, if any."""
    return _default.evaluator if _default is not None else None


def end_conversation(conversation_id: str, *, escalated: bool = False) -> bool:
    """End a conversation followed by ``gen_ai.conversation.id`` (e.g. on a hand-off to a
    human, with ``escalated=True``); False when it is not open or before :func:`configure`."""
    if _default is None:
        return False
    return _default.end_conversation(conversation_id, escalated=escalated)


def record_quality(agent_name: str, metric_type: str, score: float) -> None:
    """Add an evaluation score (0..1) for an agent and metric type (groundedness, ...).

    Does nothing before :func:`configure`; never raises on bad values (they are
    dropped and counted in ``spanmeter_dropped_values_total``).
    """
    if _default is not None:
        _default.record_quality(agent_name, metric_type, score)


def record_conversation(agent_name: str, *, turns: int, escalated: bool = False) -> None:
    """Record the end of a conversation: its turns and whether it went to a human."""
    if _default is not None:
        _default.record_conversation(agent_name, turns=turns, escalated=escalated)
