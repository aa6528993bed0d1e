"""Shared fixtures: a spanmeter on its own providers, registry and a real HTTP endpoint."""

from __future__ import annotations

import importlib
import signal
import time

import httpx
import pytest
from opentelemetry import baggage
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.metrics import _internal as otel_metrics
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import spanmeter
from spanmeter import config as spanmeter_config

# The demo tests press Ctrl-C (SIGINT) as a terminal would. A harness that starts the suite in the
# background (`cmd &` in a script) has SIGINT ignored, and an ignored signal stays ignored across
# exec: the demo would never see it. Handled here, children start with the default again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


class Scrape:
    """Samples of one scrape of a /metrics endpoint, parsed with prometheus_client."""

    def __init__(self, text: str):
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = [s for f in self.families.values() for s in f.samples]

    def value(self, name: str, **labels) -> float:
        """The one sample named ``name`` whose labels include ``labels``; fails if not exactly one."""
        found = [s for s in self.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
        assert len(found) == 1, f"{len(found)} samples of {name}{labels}: {found}"
        return found[0].value

    def total(self, name: str, **labels) -> float:
        """Sum of the samples named ``name`` whose labels include ``labels`` (0 when none)."""
        return sum(
            s.value for s in self.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def buckets(self, name: str, **labels) -> dict[float, float]:
        """Cumulative counts by upper bound of one histogram series."""
        return {
            float(s.labels["le"]): s.value
            for s in self.samples
            if s.name == f"{name}_bucket" and all(s.labels.get(k) == v for k, v in labels.items())
        }

    def label_sets(self, name: str) -> list[dict]:
        return [s.labels for s in self.samples if s.name == name]


@pytest.fixture
def meter():
    """A spanmeter serving its own registry on a free loopback port."""
    instance = spanmeter.setup(
        service_name="test-agent", port=0, registry=CollectorRegistry(), tracer_provider=TracerProvider()
    )
    yield instance
    instance.shutdown()


@pytest.fixture
def scrape(meter):
    def _scrape() -> Scrape:
        meter.state.flush()  # spans wait up to a second for reconciliation otherwise
        response = httpx.get(meter.metrics_url, timeout=10)
        response.raise_for_status()
        return Scrape(response.text)

    return _scrape


def wait_until(condition, what: str, timeout: float = 20.0, interval: float = 0.2):
    """``condition()``'s first truthy result, polled every ``interval`` s; fails after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


# --- leak guard ---------------------------------------------------------------------------
# A test runs in the main thread of its worker, after the worker's other tests: whatever one
# leaves current or patched (an OpenTelemetry context, a wrapped SDK or transport method, the
# process-wide spanmeter) changes what the next one measures. Each test must leave these as
# it found them; the guard fails the test that did not, naming what it left, and restores them.
# Restored without failing: the global tracer and meter providers. Setting them is what
# configure() is for, and OpenTelemetry lets a process do it once, so its tests cannot undo
# it; left set, they change what later tests see (the anthropic SDK then traces every call on
# that provider) and make configure() join instead of install, by test order.

#: Methods that spanmeter.httpx and the OpenTelemetry instrumentations wrap, as (module, class, attribute).
_PATCHABLE = (
    ("httpx", "HTTPTransport", "handle_request"),
    ("httpx", "AsyncHTTPTransport", "handle_async_request"),
    ("httpx2", "HTTPTransport", "handle_request"),
    ("httpx2", "AsyncHTTPTransport", "handle_async_request"),
    ("openai.resources.chat.completions", "Completions", "create"),
    ("openai.resources.chat.completions", "AsyncCompletions", "create"),
    ("openai.resources.embeddings", "Embeddings", "create"),
    ("openai.resources.embeddings", "AsyncEmbeddings", "create"),
    ("anthropic.resources.messages", "Messages", "create"),
    ("anthropic.resources.messages", "AsyncMessages", "create"),
)


def _patchable() -> dict:
    """(class, its own entry of the method) for each patchable method whose module imports."""
    found = {}
    for module_name, class_name, attribute in _PATCHABLE:
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            continue
        found[(module_name, class_name, attribute)] = (cls, cls.__dict__.get(attribute))
    return found


_ORIGINALS = _patchable()  # at collection, before any test could patch them


def _describe(ctx) -> str:
    parts = []
    span = otel_trace.get_current_span(ctx)
    if span.get_span_context().is_valid:
        parts.append(f"span {getattr(span, 'name', type(span).__name__)!r} (recording={span.is_recording()})")
    entries = baggage.get_all(ctx)
    if entries:
        parts.append(f"baggage {dict(entries)}")
    return ", ".join(parts + [f"keys {sorted(ctx)}"])


def _leaks(when: str) -> list[str]:
    """What is left of the global state, each restored as it is found."""
    leaks = []
    ctx = otel_context.get_current()
    if ctx:
        leaks.append(f"OpenTelemetry context attached {when}: {_describe(ctx)}")
        otel_context.attach(otel_context.Context())  # its token is dropped: nothing may detach back to it
    for (module_name, class_name, attribute), (cls, original) in _ORIGINALS.items():
        now = cls.__dict__.get(attribute)
        if now is not original:
            owner = getattr(now, "_spanmeter", None) or getattr(now, "_self_wrapper", None) or now
            leaks.append(f"{module_name}.{class_name}.{attribute} patched {when} (by {owner!r})")
            if original is None:
                delattr(cls, attribute)
            else:
                setattr(cls, attribute, original)
    if spanmeter.current() is not None:
        leaks.append(f"spanmeter.configure() running {when} (call spanmeter.shutdown())")
        spanmeter.shutdown()
    return leaks


def _global_providers() -> tuple:
    """OpenTelemetry's global providers, whether each was set, and configure()'s memory of them
    (OpenTelemetry's private globals, as its own test utilities reset them)."""
    return (otel_trace._TRACER_PROVIDER, otel_trace._TRACER_PROVIDER_SET_ONCE._done,
            otel_metrics._METER_PROVIDER, otel_metrics._METER_PROVIDER_SET_ONCE._done,
            spanmeter_config._global_meter_provider, spanmeter_config._global_resource)  # fmt: skip


def _set_global_providers(saved: tuple) -> None:
    (otel_trace._TRACER_PROVIDER, otel_trace._TRACER_PROVIDER_SET_ONCE._done,
     otel_metrics._METER_PROVIDER, otel_metrics._METER_PROVIDER_SET_ONCE._done,
     spanmeter_config._global_meter_provider, spanmeter_config._global_resource) = saved  # fmt: skip


@pytest.fixture(autouse=True)
def _no_leaked_state():
    """Fail a test that leaves an OpenTelemetry context attached, an SDK or transport method
    patched, or ``spanmeter.configure`` running; restore them so the next test starts clean."""
    leaks = _leaks("before the test (by a wider-scoped fixture?)")
    providers = _global_providers()
    yield
    leaks += _leaks("after the test")
    if _global_providers() != providers:
        _set_global_providers(providers)
    if leaks:
        pytest.fail("global state left behind:\n  " + "\n  ".join(leaks), pytrace=False)
