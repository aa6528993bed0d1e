"""`spanmeter demo`, the main job: run it as a user would and scrape it."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time

import httpx

from tests.conftest import Scrape


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command() -> list[str]:
    script = shutil.which("spanmeter")
    assert script, "the `spanmeter` console script is not installed"
    return [script]


def _scrape_until(url: str, proc, enough, deadline: float) -> Scrape:
    last = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            last = Scrape(httpx.get(url, timeout=2).text)
            if enough(last):
                return last
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"the demo did not produce enough data in time; last scrape: {last and last.text[:2000]}")


def test_demo_serves_agent_metrics_and_stops_cleanly_on_ctrl_c():
    port = _free_port()
    proc = subprocess.Popen(
        [*_command(), "demo", "--port", str(port), "--rate", "20", "--duration", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        s = _scrape_until(
            url, proc, lambda s: s.total("agent_requests_total") >= 10 and s.total("agent_tool_calls_total") >= 5,
            time.monotonic() + 30,
        )  # fmt: skip
        agents = {labels["agent_name"] for labels in s.label_sets("agent_requests_total")}
        assert agents <= {"support", "research", "billing", "spanmeter-judge"}
        assert len(agents - {"spanmeter-judge"}) >= 2
        assert s.total("model_inference_calls_total") >= 10
        assert s.total("agent_token_usage_total", token_type="input") > 0
        assert s.total("gen_ai_client_inference_duration_seconds_count") + s.total(
            "gen_ai_client_embeddings_duration_seconds_count") == s.total("model_inference_calls_total")
        assert s.value("spanmeter_processor_errors_total") == 0
        assert s.value("target_info", service_name="spanmeter-demo") == 1
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert f"http://127.0.0.1:{port}/metrics" in out
    assert "stopped." in out


def test_demo_runs_for_its_duration_then_exits():
    port = _free_port()
    done = subprocess.run(
        [sys.executable, "-m", "spanmeter", "demo", "--port", str(port), "--rate", "5", "--duration", "1.5"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "runs" in done.stdout and "stopped." in done.stdout


def test_demo_reports_a_busy_port_without_a_traceback():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([*_command(), "demo", "--port", str(port), "--duration", "1"],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
