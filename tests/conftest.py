"""Shared fixtures: a spanmeter on its own providers, registry and a real HTTP endpoint."""

from __future__ import annotations

import signal
import time

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import spanmeter

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
