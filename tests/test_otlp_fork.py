"""Forked workers: each pushes its own series, and the sum across workers is exact.

The receiver is a real OTLP/HTTP server on 127.0.0.1 in this process; the workers are
real forked processes (multiprocessing's ``fork`` start method, and ``os.fork()`` in a
pre-fork server of ``tests/prefork_app.py``).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import spanmeter
import spanmeter.otlp
from spanmeter.config import ConfigurationError
from tests import otlp_workload as workload
from tests.otlp_receiver import OtlpHttpReceiver

ROOT = Path(__file__).resolve().parent.parent
INTERVAL = 0.1
WORKERS = 4


@pytest.fixture
def receiver():
    r = OtlpHttpReceiver()
    yield r
    r.close()


def _worker(url: str, k: int) -> None:
    """Worker ``k``: initialise after the fork, serve ``k + 1`` runs, exit through the hook."""
    post_fork = spanmeter.otlp.post_fork_hook(service_name="support-bot", otlp_endpoint=url,
                                              otlp_interval_seconds=INTERVAL)  # fmt: skip
    post_fork(None, None)
    workload.run(k + 1, failing_tools=k % 2)
    time.sleep(4 * INTERVAL)  # the periodic push runs in the worker's own thread
    spanmeter.otlp.worker_exit(None, None)


def _expected_by_worker(workers: int) -> list[dict]:
    return [workload.expected(k + 1, failing_tools=k % 2) for k in range(workers)]


def _order(totals: dict) -> tuple:
    return tuple(sorted(totals.items()))


def _assert_per_worker_series(receiver, expected: list[dict], agent: str = "support") -> None:
    instances = {i for i in receiver.instances()}
    assert len(instances) == len(expected), f"expected one identity per worker, got {instances}"
    per_worker = sorted((workload.observed(receiver, agent, instance=i) for i in instances), key=_order)
    assert per_worker == sorted(expected, key=_order)  # no worker overwrote another
    totals = workload.observed(receiver, agent)
    assert totals == {key: sum(e[key] for e in expected) for key in totals}


def test_four_forked_workers_push_their_own_series_which_sum_to_the_exact_totals(receiver):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(receiver.url, k)) for k in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * WORKERS

    _assert_per_worker_series(receiver, _expected_by_worker(WORKERS))
    assert {p.resource["service.name"] for p in receiver.points()} == {"support-bot"}
    # every worker pushed on its interval as well as at exit: the export thread runs after fork
    assert all(n >= 2 for n in receiver.requests_by_instance().values()), receiver.requests_by_instance()
    # each worker's points start at its own process start, the same in all its pushes
    for instance in receiver.instances():
        starts = {p.start_time for p in receiver.points() if p.instance == instance and p.metric == "agent_requests"}
        assert len(starts) == 1


def _prefork(url: str, workers: int, mode: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    done = subprocess.run([sys.executable, "-m", "tests.prefork_app", url, str(workers), mode], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_prefork_server_fork_after_import_initialise_after_fork_gives_exact_totals(receiver):
    result = _prefork(receiver.url, WORKERS, "initialise-after-fork")
    assert result["status"] == [0] * WORKERS
    _assert_per_worker_series(receiver, _expected_by_worker(WORKERS))


def test_configured_before_fork_the_inherited_push_stays_quiet_and_workers_reconfigure(receiver):
    result = _prefork(receiver.url, 3, "configured-before-fork")
    assert result["status"] == [0, 0, 0]
    # worker 0 never initialised: its runs never went out, under the parent's name or any
    assert receiver.total("agent_requests", agent_name="never-configured") == 0
    assert not [p for p in receiver.points() if p.attributes.get("agent_name") == "never-configured"]
    # the parent pushed its own run only, and workers 1 and 2 their own series
    master = receiver.per_instance("agent_requests", agent_name="master")
    assert list(master.values()) == [1]
    (parent,) = master
    workers = receiver.instances() - {parent}
    assert len(workers) == 2
    assert [p for p in receiver.points() if p.instance == parent and p.attributes.get("agent_name") == "support"] == []
    expected = [workload.expected(k + 1, failing_tools=k % 2) for k in (1, 2)]
    observed = sorted((workload.observed(receiver, instance=i) for i in workers), key=_order)
    assert observed == sorted(expected, key=_order)


def test_the_hook_checks_the_otlp_settings_in_the_parent():
    with pytest.raises(ConfigurationError, match="otlp_endpoint must be a URL"):
        spanmeter.otlp.post_fork_hook(otlp_endpoint="collector:4318")


def test_the_hook_refuses_one_instance_id_shared_by_every_worker(monkeypatch):
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,service.instance.id=web-1")
    with pytest.raises(ConfigurationError, match="sets service.instance.id for every worker"):
        spanmeter.otlp.post_fork_hook(otlp_endpoint="http://127.0.0.1:4318")
