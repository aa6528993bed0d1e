"""shutdown() and the exit of the process keep one deadline when the Collector is silent
(accepts, never answers) or unreachable (nothing listens); what was not sent is counted
and logged once. Real OTLP/HTTP exporters, real sockets on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, generate_latest

import spanmeter
from tests.conftest import Scrape
from tests.otlp_receiver import OtlpHttpReceiver

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 2.0
SLACK = 1.5  # thread start-up and joins on a loaded 2-core machine


class SilentCollector:
    """Accepts every TCP connection on 127.0.0.1 and never answers."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.held: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.held.append(self.listener.accept()[0])
            except OSError:
                return

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def close(self):
        self.listener.close()
        for s in self.held:
            s.close()


def _unreachable() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def silent():
    collector = SilentCollector()
    yield collector
    collector.close()


def _push_meter(endpoint: str, **kwargs):
    meter = spanmeter.setup(
        start_server=False, registry=CollectorRegistry(), tracer_provider=TracerProvider(), otlp=True,
        otlp_endpoint=endpoint, otlp_spans=True, shutdown_timeout_seconds=DEADLINE, **kwargs,
    )  # fmt: skip
    with meter.agent_run("support"), meter.tool_call("search"):
        pass
    return meter


def _failed(meter) -> dict:
    return {dims[0]: value["count"] for dims, value in meter.state.snapshot()["otlp_failures"]}


@pytest.mark.parametrize("where", ["silent", "unreachable"])
def test_shutdown_keeps_its_deadline_and_counts_what_was_not_sent(where, silent, caplog):
    meter = _push_meter(silent.url if where == "silent" else _unreachable())
    with caplog.at_level("WARNING", logger="spanmeter"):
        start = time.monotonic()
        sent = meter.shutdown()
        took = time.monotonic() - start
    assert took < DEADLINE + SLACK, f"shutdown took {took:.1f} s against a {where} Collector"
    assert sent is False
    failed = _failed(meter)
    assert failed.get("metrics", 0) >= 1 and failed.get("spans", 0) >= 1, failed
    ours = [r for r in caplog.records if r.name == "spanmeter" and "not sent" in r.getMessage()]
    assert len(ours) == 1, [r.getMessage() for r in ours]
    assert "spans" in ours[0].getMessage() and "metrics" in ours[0].getMessage()


def test_a_reachable_collector_gets_everything_and_nothing_counts_as_lost(caplog):
    receiver = OtlpHttpReceiver()
    try:
        meter = _push_meter(receiver.url)
        with caplog.at_level("WARNING", logger="spanmeter"):
            assert meter.shutdown() is True
        assert receiver.spans() and receiver.total("agent_tool_calls", tool_name="search") == 1
        assert not any("not sent" in r.getMessage() for r in caplog.records)
        assert _failed(meter) == {"metrics": 0, "spans": 0}  # the series exist, at zero
    finally:
        receiver.close()


_CHILD = textwrap.dedent(
    """
    import atexit, json, sys, threading, time
    marks = {}
    atexit.register(lambda: print(json.dumps({"exit": time.monotonic() - marks["end"]}), flush=True))  # runs last
    import spanmeter
    spanmeter.configure(prometheus=False, otlp=True, otlp_spans=True, otlp_endpoint=sys.argv[1],
                        shutdown_timeout_seconds=float(sys.argv[2]))
    with spanmeter.agent_run("support"), spanmeter.tool_call("search"):
        pass

    def refuse_new_threads():  # as Python 3.12 does in exit hooks; runs before spanmeter's
        def start(self):
            raise RuntimeError("can't create new thread at interpreter shutdown")
        threading.Thread.start = start
    atexit.register(refuse_new_threads)
    marks["end"] = time.monotonic()
    """
)


@pytest.mark.parametrize("where", ["silent", "unreachable"])
def test_exit_without_shutdown_keeps_the_same_deadline(where, silent):
    endpoint = silent.url if where == "silent" else _unreachable()
    out = subprocess.run([sys.executable, "-c", _CHILD, endpoint, str(DEADLINE)], capture_output=True, text=True,
                         timeout=60, cwd=ROOT, env={**_env(), "PYTHONPATH": str(ROOT / "src")})  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    took = json.loads(out.stdout.strip().splitlines()[-1])["exit"]
    assert took < DEADLINE + SLACK, f"exit took {took:.1f} s against a {where} Collector"
    assert "not sent" in out.stderr  # logged once, at exit
    assert out.stderr.count("spanmeter shutdown") == 1


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}


def test_failed_periodic_pushes_are_counted_on_the_scrape_while_running():
    receiver = OtlpHttpReceiver()  # a real receiver, asked at a path it answers 404 on
    registry = CollectorRegistry()
    meter = spanmeter.setup(start_server=False, registry=registry, tracer_provider=TracerProvider(), otlp=True,
                            otlp_endpoint=receiver.url + "/wrong-prefix", otlp_interval_seconds=0.1)  # fmt: skip
    try:
        deadline = time.monotonic() + 5
        failed = 0.0
        while time.monotonic() < deadline and failed < 2:
            time.sleep(0.1)
            failed = Scrape(generate_latest(registry).decode()).value(
                "spanmeter_otlp_failed_exports_total", signal="metrics")
        assert failed >= 2
    finally:
        meter.shutdown()
        receiver.close()
