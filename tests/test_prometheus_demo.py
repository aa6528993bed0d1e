"""`spanmeter demo --prometheus`: a newcomer gets a real Prometheus with the rules, on loopback."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not shutil.which("prometheus"), reason="needs Debian's prometheus package")


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH")]))
    return env


def _query(url: str, expr: str) -> list:
    body = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_demo_starts_prometheus_with_the_rules_and_stops_it_on_ctrl_c():
    proc = subprocess.Popen(
        [sys.executable, "-m", "spanmeter", "demo", "--port", "0", "--rate", "20", "--duration", "90", "--prometheus"],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines = []
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
            match = re.search(r"prometheus: (http://127\.0\.0\.1:\d+) ", line)
            url = match and match.group(1)
        assert url, "".join(lines)
        deadline = time.monotonic() + 60  # generous: the 2 cores are shared
        while time.monotonic() < deadline:
            recorded = "agent_name_tool_name:agent_tool_calls:present"  # a rule result after one evaluation
            if _query(url, "sum(agent_requests_total) > 0") and _query(url, recorded):
                break
            time.sleep(0.5)
        else:
            raise AssertionError("no demo data or recorded series in Prometheus")
        groups = httpx.get(f"{url}/api/v1/rules", timeout=5).json()["data"]["groups"]
        assert {g["name"] for g in groups} >= {"spanmeter.rates", "spanmeter.slo", "spanmeter.agents"}
        assert _query(url, 'up{job="spanmeter"} == 1')
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        out = proc.stdout.read()  # not communicate(): it would skip what readline() buffered
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, "".join(lines) + out
    assert "ai-agent-operations.json" in "".join(lines) + out
    assert not _prometheus_processes(url), "Prometheus outlived the demo"


def _prometheus_processes(url: str) -> list[str]:
    """Command lines of running processes listening where the demo's Prometheus did."""
    flag = f"--web.listen-address={url.removeprefix('http://')}"
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if flag.encode() in args:
            found.append(b" ".join(args).decode(errors="replace"))
    return found


def test_demo_without_a_prometheus_binary_says_so_and_runs_on(tmp_path):
    env = _env()
    env["PATH"] = str(Path(sys.executable).parent)  # python, but no prometheus
    done = subprocess.run(
        [sys.executable, "-m", "spanmeter", "demo", "--port", "0", "--duration", "1", "--prometheus"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no `prometheus` binary on PATH" in done.stdout and "stopped." in done.stdout
