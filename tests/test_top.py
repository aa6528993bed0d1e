"""`spanmeter top`: figures from two scrapes, exact tables, and the live view in a real terminal."""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pexpect
import pyte
import pytest
import yaml

from spanmeter import catalog, cli, topdata
from spanmeter.topdata import Scrape, histogram_quantile, parse, rates
from tests.conftest import Scrape as Parsed

FIXTURES = Path(__file__).parent / "fixtures" / "top"
INF = math.inf


# --- pure functions ----------------------------------------------------------------------------


# (q, [(upper bound, cumulative count)], expected), worked by hand with Prometheus' rules
QUANTILE_CASES = [
    (0.5, [(0.5, 10), (1.0, 20), (INF, 20)], 0.5),  # rank lands exactly on a bound
    (0.95, [(0.5, 10), (1.0, 20), (INF, 20)], 0.95),  # 0.5 + 0.5 * 9/10
    (0.25, [(0.5, 10), (1.0, 20), (INF, 20)], 0.25),  # the lowest bucket starts at 0
    (0.9, [(1.0, 5), (INF, 10)], 1.0),  # rank in the +Inf bucket: the highest finite bound
    (0.1, [(-1.0, 5), (INF, 10)], -1.0),  # lowest bucket with a bound <= 0: that bound
    (0.5, [(1.0, 0), (INF, 0)], math.nan),  # no observations
    (0.5, [(1.0, 3), (2.0, 5)], math.nan),  # no +Inf bucket
    (0.5, [(INF, 5)], math.nan),  # fewer than two buckets
    (-0.1, [(1.0, 3), (INF, 3)], -INF),
    (1.1, [(1.0, 3), (INF, 3)], INF),
    (0.5, [(INF, 10), (2.0, 10), (1.0, 4)], 1 + 1 / 6),  # any input order; 1 + (5-4)/(10-4)
    (0.5, [(1.0, 2), (1.0, 2), (2.0, 8), (INF, 8)], 1.0),  # one bound twice ("1", "1.0"): merged
    (0.5, [(1.0, 4), (2.0, 3.5), (3.0, 8), (INF, 8)], 1.0),  # a dip (rates' float error) made monotonic
]


@pytest.mark.parametrize("q, buckets, expected", QUANTILE_CASES)
def test_histogram_quantile_follows_prometheus_rules(q, buckets, expected):
    got = histogram_quantile(q, buckets)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs Debian's promtool (scripts/test.sh installs it)")
def test_histogram_quantile_agrees_with_prometheus_itself(tmp_path):
    """The same cases through the real PromQL engine: promtool checks our values as expected results."""
    tests = []
    for i, (q, buckets, _) in enumerate(QUANTILE_CASES):
        series = [{"series": f'h_bucket{{case="{i}",n="{j}",le="{"+Inf" if b == INF else repr(b)}"}}',
                   "values": repr(float(c))} for j, (b, c) in enumerate(buckets)]  # fmt: skip
        expr = f'histogram_quantile({q}, sum by (le) (h_bucket{{case="{i}"}}))'
        value = histogram_quantile(q, buckets)  # infinities too: YAML writes .inf
        if math.isnan(value):  # promtool 2.42 never matches an expected NaN; only NaN is != itself
            expr, value = f"count({expr} != {expr})", 1.0
        tests.append({"interval": "1m", "input_series": series, "promql_expr_test": [
            {"expr": expr, "eval_time": "0m", "exp_samples": [{"labels": "{}", "value": value}]}]})  # fmt: skip
    path = tmp_path / "quantiles.test.yml"
    path.write_text(yaml.safe_dump({"rule_files": [], "tests": tests}))
    done = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def _scrape(t: float, **values: float) -> Scrape:
    key = lambda agent: ("agent_requests_total", (("agent_name", agent), ("status", "success")))  # noqa: E731
    return Scrape(t, {key(agent): (t, v) for agent, v in values.items()})


def test_a_counter_that_drops_was_reset_and_its_new_value_is_the_increase():
    got = rates(_scrape(100.0, a=50.0, b=10.0), _scrape(110.0, a=5.0, b=30.0))
    assert got[("agent_requests_total", (("agent_name", "a"), ("status", "success")))] == 0.5  # 5 since reset
    assert got[("agent_requests_total", (("agent_name", "b"), ("status", "success")))] == 2.0


def test_a_series_born_between_scrapes_counts_from_zero():
    got = rates(_scrape(100.0, a=1.0), _scrape(104.0, a=1.0, new=2.0))
    assert got[("agent_requests_total", (("agent_name", "new"), ("status", "success")))] == 0.5


def test_exposition_timestamps_are_used_and_other_families_ignored():
    first = parse((FIXTURES / "first.prom").read_text(), now=5.0)
    key = ("agent_requests_total", (("agent_name", "support"), ("status", "success")))
    assert first.samples[key] == (1000.0, 100.0)  # the exposition's own millisecond timestamp
    assert not [k for k in first.samples if k[0].startswith("python_")]


def test_every_name_and_label_read_is_in_the_catalogue():
    exposed = {m.exposed_name: m for m in catalog.METRICS}
    for family in topdata.FAMILIES:
        assert family in exposed, family
    used = {
        topdata.REQUESTS: {topdata.AGENT, topdata.STATUS},
        topdata.MODEL_CALLS: {topdata.AGENT, topdata.MODEL},
        topdata.TOKENS: {topdata.AGENT, topdata.MODEL, topdata.TOKEN_TYPE},
        topdata.TOOL_CALLS: {topdata.AGENT, topdata.TOOL, topdata.STATUS},
        topdata.QUALITY: {topdata.AGENT, topdata.METRIC_TYPE},
        topdata.UNPRICED: {topdata.MODEL},
    }
    for family, labels in used.items():
        assert labels <= set(exposed[family].exposed_labels), family


def test_sparkline_scales_to_its_maximum_and_keeps_the_newest_on_the_right():
    assert topdata.sparkline([0.0, 1.0, 2.0, None, 4.0], 6) == " ▁▃▅ █"


def test_sort_and_filter_rows():
    rows = [{"agent": "b", "x": 1.0}, {"agent": "a", "x": None}, {"agent": "c", "x": 3.0}]
    assert [r["agent"] for r in topdata.sort_rows(rows, "x")] == ["c", "b", "a"]  # high first, undefined last
    assert [r["agent"] for r in topdata.sort_rows(rows, "agent")] == ["a", "b", "c"]
    assert [r["agent"] for r in topdata.sort_rows(rows, "agent", reverse=True)] == ["c", "b", "a"]
    assert [r["agent"] for r in topdata.filter_rows(rows, "agents", "B")] == ["b"]


# --- --once and --json against a fixed exposition ----------------------------------------------


class _Scripted(ThreadingHTTPServer):
    """Serves ``bodies`` in turn (the last one again after that) on a free loopback port."""

    daemon_threads = True

    def __init__(self, bodies: list[str]):
        self.bodies = bodies
        self.served = 0

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(handler):
                body = self.bodies[min(self.served, len(self.bodies) - 1)].encode()
                self.served += 1
                handler.send_response(200)
                handler.send_header("Content-Type", "text/plain; version=0.0.4")
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/metrics"


@pytest.fixture
def fixed():
    server = _Scripted([(FIXTURES / "first.prom").read_text(), (FIXTURES / "second.prom").read_text()])
    yield server
    server.shutdown()
    server.server_close()


# Worked by hand from the fixtures (10 s apart by their timestamps): support ran 18 + 2 new
# errors = 20 runs (2/s, 10% errors); research's counters were reset (50 -> 5: 5 runs);
# support's p50 = 0.5 + 0.5 * (10-5)/(15-5) = 0.75, p95 = 1 + (19-15)/(20-15) = 1.8;
# o3-mini's p95 falls in the +Inf bucket: 1.0; tool p95 = 0.1 + 0.15 * 5.5/6 = 0.2375.
EXPECTED_ONCE = """\
spanmeter top {url}: rates over 10.0s between two readings

[agents]
agent     runs/s   err%    p50    p95  llm/run  tools/run  tok/s    $/h
support     2.00  10.0%  0.75s  1.80s     2.50       0.50    300  3.600
research    0.50   0.0%  0.75s  1.75s        -          -    400      -

[models]
model    calls/s    p95  in tok/s  out tok/s  cached/s  reason/s  cache hit    $/h  unpriced
gpt-4o      4.00  0.90s       200        100        50         0      25.0%  3.600      0.0%
o3-mini     2.00  1.00s       100        300         0        50       0.0%      -    100.0%

[tools]
tool          agent    calls/s   err%  timeout%    p95
issue_refund  support     1.00  20.0%     10.0%  0.24s

[quality]
agent     groundedness  relevance  conv/min  escalated  turns/conv
research          0.65          -         -          -           -
support           0.91       0.80     36.00      50.0%        3.00
"""


def test_once_prints_the_exact_table_of_two_scrapes(fixed, capsys):
    assert cli.main(["top", fixed.url, "--once", "--interval", "0.05"]) == 0
    assert capsys.readouterr().out == EXPECTED_ONCE.format(url=fixed.url)
    assert fixed.served == 2


def test_json_gives_the_same_figures_as_numbers(fixed, capsys):
    assert cli.main(["top", fixed.url, "--json", "--view", "models", "--interval", "0.05"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["interval_s"] == 10.0 and list(doc["views"]) == ["models"]
    gpt, o3 = doc["views"]["models"]
    assert gpt == {"model": "gpt-4o", "calls_per_s": 4.0, "p95_s": pytest.approx(0.9), "input_per_s": 200.0,
                   "output_per_s": 100.0, "cache_read_per_s": 50.0, "reasoning_per_s": 0.0, "cache_hit_pct": 25.0,
                   "dollars_per_h": pytest.approx(3.6), "unpriced_pct": 0.0}  # fmt: skip
    assert o3["dollars_per_h"] is None and o3["unpriced_pct"] == 100.0
    fixed.served = 0  # the same two scrapes again
    assert cli.main(["top", fixed.url, "--json", "--view", "quality", "--interval", "0.05"]) == 0
    research, support = json.loads(capsys.readouterr().out)["views"]["quality"]
    assert support == {"agent": "support", "conversations_per_min": 36.0, "escalated_pct": 50.0,
                       "turns_per_conversation": 3.0, "scores": {"groundedness": 0.91, "relevance": 0.8}}  # fmt: skip
    assert research["scores"] == {"groundedness": 0.65} and research["conversations_per_min"] is None


def test_once_says_no_data_yet_for_an_endpoint_without_agent_metrics(capsys):
    server = _Scripted(["# TYPE python_info gauge\npython_info 1.0\n"])
    try:
        assert cli.main(["top", server.url, "--once", "--view", "agents", "--interval", "0.05"]) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert capsys.readouterr().out.endswith("[agents]\nno data yet\n")


def test_once_against_an_unreachable_endpoint_fails_with_the_reason(capsys):
    url = f"http://127.0.0.1:{_free_port()}/metrics"
    assert cli.main(["top", url, "--once", "--interval", "0.05"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("spanmeter top: endpoint unreachable:") and url in err


# --- the live view in a real pseudo-terminal ---------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_demo(port: int = 0, rate: float = 8.0) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "spanmeter", "demo", "--port", str(port), "--rate", str(rate)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    for line in proc.stdout:
        found = re.search(r"metrics : (http://\S+)", line)
        if found:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
            return proc, found.group(1)
    raise AssertionError(f"the demo printed no metrics URL (exit {proc.wait()})")


def _stop(proc: subprocess.Popen) -> None:
    """Gone at once, as a crashed agent process (the demo's own clean stop is tested in test_demo)."""
    proc.kill()
    proc.wait()


@pytest.fixture
def demo():
    proc, url = _start_demo()
    yield url
    _stop(proc)


class Terminal:
    """``spanmeter top`` in a pseudo-terminal, its screen rendered by the pyte VT emulator."""

    def __init__(self, *args: str, rows: int = 40, cols: int = 160):
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        env = {**os.environ, "TERM": "xterm-256color"}
        # rich reads these before the terminal's own size: say the same size in both
        env.update(COLUMNS=str(cols), LINES=str(rows))
        self.child = pexpect.spawn(sys.executable, ["-m", "spanmeter", "top", *args], env=env,
                                   dimensions=(rows, cols))  # fmt: skip

    def pump(self, seconds: float = 0.0) -> None:
        end = time.monotonic() + seconds
        while True:
            try:
                self.stream.feed(self.child.read_nonblocking(65536, timeout=0.05))
            except pexpect.TIMEOUT:
                if time.monotonic() >= end:
                    return
            except pexpect.EOF:
                return

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def wait_for(self, predicate, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(0.1)
            if predicate(self.text()):
                return self.text()
        raise AssertionError(f"screen never matched; last screen:\n{self.text()}")

    def close(self) -> int | None:
        if self.child.isalive():
            self.child.send("q")
            self.child.expect(pexpect.EOF, timeout=5)
        self.child.close()
        return self.child.exitstatus


def _table(screen: str, first: str) -> dict[str, list[str]]:
    """Rows of the table on screen whose header starts with ``first``: name -> cells."""
    lines = screen.splitlines()
    start = next((i for i, line in enumerate(lines) if line.split()[:1] == [first]), None)
    if start is None:
        return {}
    rows = {}
    for line in lines[start + 2 :]:  # header, rule, rows up to the first blank line
        if not line.strip():
            break
        cells = line.split()
        rows[cells[0]] = cells[1:]
    return rows


class _Recorder(ThreadingHTTPServer):
    """A pass-through to ``upstream`` that keeps (time, text) of every scrape it relays."""

    daemon_threads = True

    def __init__(self, upstream: str):
        self.records: list[tuple[float, str]] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(handler):
                t = time.time()
                body = urllib.request.urlopen(upstream, timeout=5).read()
                self.records.append((t, body.decode()))
                handler.send_response(200)
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/metrics"


def _expected_agents(before: tuple[float, str], after: tuple[float, str]) -> dict[str, dict]:
    """Runs/s, error %, tokens/s and $/h per agent, worked out here from the two scrapes' totals.

    None where the agent has no series of that metric yet (a first run still going: tokens
    before any finished run), which top shows as "-".
    """
    (t0, a), (t1, b) = before, after
    a, b = Parsed(a), Parsed(b)
    dt = t1 - t0

    def rate(name: str, agent: str, **labels) -> float | None:
        if not [s for s in b.label_sets(name) if s["agent_name"] == agent and labels.items() <= s.items()]:
            return None
        return (b.total(name, agent_name=agent, **labels) - a.total(name, agent_name=agent, **labels)) / dt

    families = ("agent_requests_total", "agent_token_usage_total", "agent_estimated_cost_dollars_total")
    out = {}
    for agent in {labels["agent_name"] for name in families for labels in b.label_sets(name)}:
        runs, ok = rate("agent_requests_total", agent), rate("agent_requests_total", agent, status="success") or 0.0
        tokens = [r for r in (rate("agent_token_usage_total", agent, token_type=t) for t in ("input", "output"))
                  if r is not None]  # fmt: skip
        cost = rate("agent_estimated_cost_dollars_total", agent)
        out[agent] = {"runs": runs, "err": 100 * (runs - ok) / runs if runs else None,
                      "tokens": sum(tokens) if tokens else None,
                      "dollars": None if cost is None else cost * 3600}  # fmt: skip
    return out


def _close(shown: str, expected: float | None, places: float) -> bool:
    if expected is None:
        return shown == "-"
    value = float(shown.rstrip("%s").replace(",", ""))
    # the scrape times differ from top's by the proxy hop: a few ms of a 2 s interval
    return abs(value - expected) <= places + 0.03 * abs(expected)


def test_live_view_shows_the_rates_of_the_scrapes_and_keys_switch_views(demo):
    proxy = _Recorder(demo)
    term = Terminal(proxy.url, "--interval", "2")
    try:
        old = term.wait_for(lambda s: "live: rates" in s and "runs/s" in s)
        # read the screen redrawn after the next scrape: the rates between the last two scrapes
        n = len(proxy.records)
        term.wait_for(lambda s: len(proxy.records) > n, timeout=5)
        n = len(proxy.records)
        term.wait_for(lambda s: s != old and "live: rates" in s)
        term.pump(0.3)  # the redraw after scrape n is whole by now; scrape n + 1 is 2 s away
        screen = term.text()
        assert len(proxy.records) == n, "top scraped again while the screen was read"
        expected = _expected_agents(proxy.records[n - 2], proxy.records[n - 1])
        shown = _table(screen, "agent")
        for name in [k for k in shown if k.endswith("…")]:  # a name shrunk to fit the figures
            (full,) = [e for e in expected if e.startswith(name[:-1])]
            shown[full] = shown.pop(name)
        assert set(shown) == set(expected) and {"support", "research", "billing"} <= set(shown)
        for agent, cells in shown.items():
            runs, err, p50, p95, llm, tools, tokens, dollars, *_ = cells
            want = expected[agent]
            assert _close(runs, want["runs"], 0.01), (agent, runs, want)
            assert _close(err, want["err"], 0.1), (agent, err, want)
            assert _close(tokens, want["tokens"], 1), (agent, tokens, want)
            assert _close(dollars, want["dollars"], 0.001), (agent, dollars, want)
            assert p95 == "-" or (p50 <= p95 and 0 < float(p95.rstrip("s")) <= 60)  # within the buckets
        assert sum(e["runs"] or 0 for a, e in expected.items() if a != "spanmeter-judge") > 2  # the demo runs 8/s

        term.child.send("2")
        screen = term.wait_for(lambda s: "cache hit" in s and "unpriced" in s)
        assert {"gpt-4o", "gpt-4o-mini"} <= set(_table(screen, "model"))
        # billing's private fine-tune has no price: its calls with usage are unpriced, its $/h unknown
        # (the row itself must be there: an absent one must not pass the wait)
        screen = term.wait_for(lambda s: _table(s, "model").get("acme-billing-ft", ["-", "-"])[-2] not in ("-", "0.0%"))
        dollars, unpriced = _table(screen, "model")["acme-billing-ft"][-3:-1]
        assert dollars == "-" and 0 < float(unpriced.rstrip("%")) <= 100
        term.child.send("3")
        screen = term.wait_for(lambda s: "timeout%" in s and "web_search" in s)
        term.child.send("4")
        screen = term.wait_for(lambda s: "escalated" in s and "groundedness" in s)
        term.child.send("1")
        term.wait_for(lambda s: "llm/run" in s)
        term.child.send("/bill\r")
        screen = term.wait_for(lambda s: "filter: 'bill'" in s)
        assert set(_table(screen, "agent")) == {"billing"}
        term.child.send("s")  # next sort column: err%
        term.wait_for(lambda s: "err% ▼" in s)
    finally:
        assert term.close() == 0
        proxy.shutdown()
        proxy.server_close()


def test_unreachable_endpoint_shows_retrying_and_recovers_when_it_comes_up():
    port = _free_port()
    term = Terminal(f"http://127.0.0.1:{port}/metrics", "--interval", "0.5")
    demo = None
    try:
        screen = term.wait_for(lambda s: "endpoint unreachable: retrying" in s)
        assert "runs/s" not in screen and "last reading" not in screen  # no figures were ever read
        demo, _ = _start_demo(port)
        screen = term.wait_for(lambda s: "live: rates" in s and "support" in _table(s, "agent"), timeout=20)
        assert "unreachable" not in screen
        _stop(demo)  # gone again: the last figures stay, under the retry state and their age
        screen = term.wait_for(lambda s: "endpoint unreachable: retrying" in s and "last reading" in s)
        assert "support" in _table(screen, "agent")
    finally:
        if demo is not None:
            _stop(demo)
        assert term.close() == 0



@pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs Debian's prometheus (scripts/test.sh has it)")
def test_prometheus_mode_agrees_with_prometheus_own_irate_and_quantile(demo, capsys):
    """--prometheus reads the raw samples: its figures are Prometheus' irate of the last two scrapes."""
    from spanmeter.prometheus import LocalPrometheus, find_assets

    target = demo.split("/")[2]
    with LocalPrometheus(find_assets(Path(__file__).parent.parent), target, scrape_interval="1s",
                         rule_files=[]) as prom:  # fmt: skip
        runs_q = "sum by (agent_name) (irate(agent_requests_total[1m]))"
        p95_q = "histogram_quantile(0.95, sum by (agent_name, le) (irate(agent_request_duration_seconds_bucket[1m])))"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            # Compare only when no scrape landed between the queries, and when no series was born in
            # the last scrape (irate skips a one-sample series; top counts it from 0): ask again.
            born = prom.query("count_over_time(agent_requests_total[1m]) < 2 or count_over_time("
                              "agent_request_duration_seconds_count[1m]) < 2")  # fmt: skip
            before = {s["metric"]["agent_name"]: float(s["value"][1]) for s in prom.query(runs_q)}
            p95 = {s["metric"]["agent_name"]: float(s["value"][1]) for s in prom.query(p95_q)}
            assert cli.main(["top", "--prometheus", prom.url, "--json", "--view", "agents"]) == 0
            rows = {r["agent"]: r for r in json.loads(capsys.readouterr().out)["views"]["agents"]}
            after = {s["metric"]["agent_name"]: float(s["value"][1]) for s in prom.query(runs_q)}
            if before and before == after and not born and {"support", "research", "billing"} <= set(rows):
                break
            time.sleep(0.5)
        else:
            raise AssertionError("Prometheus never held still for one comparison")
        assert set(rows) == set(before)
        for agent, rate in before.items():
            assert rows[agent]["runs_per_s"] == pytest.approx(rate, rel=1e-9), agent
            if not math.isnan(p95[agent]):
                assert rows[agent]["p95_s"] == pytest.approx(p95[agent], rel=1e-9), agent


def test_state_line_tells_what_is_true():
    from spanmeter.top import SourceError, State, status_line

    state = State(url="http://127.0.0.1:1/metrics", interval=2.0, keep=300.0)
    assert status_line(state, 100.0)[1] == "connecting to http://127.0.0.1:1/metrics ..."
    state.history = [_scrape(98.0, a=1.0)]
    assert status_line(state, 100.0)[1] == "no data yet: rates need two readings (next in 2s)"
    state.history.append(_scrape(100.0, a=3.0))
    assert status_line(state, 100.5)[1].startswith("live: rates over the last 2.0s, as of ")
    assert status_line(state, 200.0)[1].startswith("stale: the newest sample is from ")  # 100 s old
    state.error, state.last_ok = SourceError("http://127.0.0.1:1/metrics: refused", unreachable=True), 100.0
    assert status_line(state, 112.0)[1] == (
        "endpoint unreachable: retrying every 2s (http://127.0.0.1:1/metrics: refused); last reading 12s ago")
    state.history, state.error = [Scrape(1.0), Scrape(3.0)], None
    assert status_line(state, 3.0)[1] == "no data yet: the endpoint has none of spanmeter's agent metrics"


def test_live_view_refuses_without_a_terminal(fixed, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO())  # a pipe, as in a script
    assert cli.main(["top", fixed.url]) == 2
    assert "use --once or --json" in capsys.readouterr().err


def test_keys_edit_the_filter_and_cycle_views_and_sort():
    from spanmeter.top import State

    state = State(url="u", interval=2.0, keep=300.0)
    for ch in "/bilx\x7fl\r":  # type "bilx", backspace, "l", Enter
        assert state.key(ch)
    assert (state.filter, state.editing) == ("bill", False)
    state.key("/")
    state.key("\x1b")  # Esc clears
    assert (state.filter, state.editing) == ("", False)
    state.key("\t")
    assert state.view == "models"
    state.key("s")
    assert state.sort["models"] == "p95_s"  # the column after calls/s
    state.key("4")
    assert state.view == "quality"
    assert state.key("q") is False


def test_on_a_narrow_terminal_names_shrink_then_sparklines_then_columns_go_but_figures_are_never_cut():
    from spanmeter.top import fit_columns

    cols = topdata.VIEWS["agents"][:4]  # agent, runs/s, err%, p50
    assert fit_columns(cols, [15, 8, 5, 5], 200) == (4, 24, 0)  # room for everything
    widths = [15, 8, 5, 5]
    assert fit_columns(cols, widths, 32) == (4, 0, 0) and widths == [8, 8, 5, 5]  # 8+8+5+5 + 3 gaps of 2
    widths = [15, 8, 5, 5]
    assert fit_columns(cols, widths, 31) == (3, 0, 1) and widths[:3] == [8, 8, 5]
