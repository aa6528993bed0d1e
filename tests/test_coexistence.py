"""spanmeter beside an application's own OpenTelemetry Prometheus set-up.

The app (``tests/coexist_app.py``, a process of its own: the OpenTelemetry globals are set
once per process) has the usual set-up: a global ``MeterProvider`` with a
``PrometheusMetricReader`` on ``prometheus_client``'s default registry, a
``prometheus_client`` counter of its own there, and the official OpenAI instrumentation
recording its ``gen_ai.client.*`` metrics, driving the real openai SDK against the fake
providers. spanmeter is configured before or after it, on its own provider or joining the
app's. Whatever the combination, spanmeter's ``/metrics`` must pass ``promtool check
metrics`` and count each call once in every family, in the exposition and in a real
Prometheus.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, generate_latest

import spanmeter
from spanmeter.catalog import HISTOGRAM, METRICS
from spanmeter.prometheus import LocalPrometheus
from tests.conftest import Scrape
from tests.fake_providers import FakeProviders

pytestmark = pytest.mark.skipif(
    not shutil.which("promtool"), reason="needs Debian's prometheus package (scripts/test.sh installs it)"
)

ROOT = Path(__file__).resolve().parent.parent
CALLS = 7
GENAI = [spec for spec in METRICS if spec.family == "genai"]
COMBINATIONS = [("app-first", "own"), ("app-first", "join"), ("app-first", "explicit"),
                ("spanmeter-first", "own"), ("spanmeter-first", "join"), ("spanmeter-first", "explicit")]  # fmt: skip


@pytest.fixture(scope="module")
def providers():
    with FakeProviders() as server:
        yield server


@contextlib.contextmanager
def app(order: str, provider: str, url: str, calls: int = CALLS, *extra: str):
    """The app process after ``calls`` chat completions; yields the /metrics URL serving spanmeter."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "tests.coexist_app", order, provider, url, str(calls),
                                    *extra],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                   cwd=ROOT, env=env)  # fmt: skip
        try:
            ready, _, _ = select.select([process.stdout], [], [], 60)  # an app stuck in set-up fails, not hangs
            metrics_url = process.stdout.readline().strip() if ready else ""
            if not metrics_url:
                process.kill()
                process.wait(30)
                stderr.seek(0)
                pytest.fail(f"the app exited with {process.returncode}: {stderr.read()[-3000:]}")
            yield metrics_url
        finally:
            process.stdin.close()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def promtool(text: str) -> None:
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr + "\n" + text


def call_families() -> list[tuple[str, str | None]]:
    """(name, label splitting it or None) of every histogram counting one observation per call:
    the catalogue's inference histograms (GenAI and spanmeter's) and the openai-v2
    instrumentation's own (2.4b0: the v1.30 names)."""
    families = {(spec.exposed_name, spec.fan_out[0].replace(".", "_") if spec.fan_out else None)
                for spec in METRICS if spec.kind == HISTOGRAM and spec.table == "model"}  # fmt: skip
    families |= {("gen_ai_client_operation_duration_seconds", None), ("gen_ai_client_token_usage", "gen_ai_token_type")}
    return sorted(families, key=lambda f: (f[0], f[1] or ""))


def counts_by(samples, name: str, label: str | None) -> dict[str, float]:
    """Observations of histogram ``name`` summed over its series, by ``label`` (or under "")."""
    out: dict[str, float] = {}
    for sample in samples:
        if sample.name == f"{name}_count":
            key = sample.labels.get(label, "") if label else ""
            out[key] = out.get(key, 0.0) + sample.value
    return out


def assert_once(s: Scrape, calls: int) -> None:
    """One family per name, and ``calls`` in every family counting calls."""
    types = [line.split()[2] for line in s.text.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types)), sorted(t for t in types if types.count(t) > 1)
    assert types.count("target_info") == 1
    seen = []
    for name, label in call_families():
        counts = counts_by(s.samples, name, label)
        if counts:  # a family of calls this workload makes (no stream: no time to first chunk)
            seen.append(name)
            assert counts == dict.fromkeys(counts, calls), (name, counts)
    assert "gen_ai_client_operation_duration_seconds" in seen  # the headline of the bug
    assert s.total("model_inference_calls_total") == calls
    assert s.total("app_requests_total") == calls  # the app's prometheus_client metric, served once too
    assert s.value("spanmeter_info") == 1


@pytest.mark.parametrize("order,provider", COMBINATIONS, ids=["-".join(c) for c in COMBINATIONS])
def test_beside_the_apps_opentelemetry_set_up_the_exposition_is_valid_and_counts_each_call_once(
    providers, order, provider
):
    with app(order, provider, providers.url) as url:
        text = httpx.get(url, timeout=10).text
    promtool(text)
    assert_once(Scrape(text), CALLS)


@pytest.mark.parametrize("order", ["app-first", "spanmeter-first"])
def test_on_the_apps_own_endpoint_with_start_server_off_the_exposition_is_valid_and_counts_once(providers, order):
    with app(order, "own", providers.url, CALLS, "app-serves") as url:
        text = httpx.get(url, timeout=10).text
    promtool(text)
    assert_once(Scrape(text), CALLS)


@pytest.mark.skipif(not shutil.which("prometheus"), reason="needs Debian's prometheus package")
def test_through_a_real_prometheus_each_call_counts_once_in_every_family(providers):
    calls = 13
    with app("app-first", "own", providers.url, calls) as url:
        target = url.removeprefix("http://").removesuffix("/metrics")
        from dashboards import assets

        with LocalPrometheus(assets.PROMETHEUS_DIR, target, scrape_interval="1s", evaluation_interval="1s") as prom:
            expected = {"sum(model_inference_calls_total)": {"": calls}, "sum(app_requests_total)": {"": calls},
                        "count(target_info)": {"": 1}, "count(spanmeter_info)": {"": 1}}  # fmt: skip
            for name, label in call_families():
                by = f" by ({label})" if label else ""
                expected[f"sum{by} ({name}_count)"] = None  # every series group present: calls
            deadline = time.monotonic() + 20
            while True:
                got = {}
                for expr in expected:
                    label = expr[expr.index("(") + 1 : expr.index(")")] if " by (" in expr else None
                    got[expr] = {r["metric"].get(label, "") if label else "": float(r["value"][1])
                                 for r in prom.query(expr)}  # fmt: skip
                done = all(got[e] == want if want is not None else got[e] == dict.fromkeys(got[e], calls)
                           for e, want in expected.items())  # fmt: skip
                if done and got["sum (gen_ai_client_operation_duration_seconds_count)"]:
                    break
                if time.monotonic() > deadline:
                    break
                time.sleep(0.3)
    assert got["sum (gen_ai_client_operation_duration_seconds_count)"] == {"": calls}  # 2 x calls before the fix
    for expr, want in expected.items():
        assert got[expr] == (want if want is not None else dict.fromkeys(got[expr], calls)), expr


# --- in one process: the rule behind it, for every GenAI metric of the catalogue ----------------


def _spanmeter_with_calls(meter_provider=None):
    registry = CollectorRegistry()
    meter = spanmeter.setup(registry=registry, tracer_provider=TracerProvider(), start_server=False,
                            meter_provider=meter_provider)  # fmt: skip
    with meter.agent_run("support"):
        with meter.model_call("gpt-4o", provider="openai") as call:
            call.record_usage(input_tokens=10, output_tokens=5)
    meter.state.flush()
    return meter, registry


def test_alone_spanmeter_exports_its_genai_metrics():
    meter, registry = _spanmeter_with_calls()
    try:
        s = Scrape(generate_latest(registry).decode())
    finally:
        meter.shutdown()
    assert s.total("gen_ai_client_inference_duration_seconds_count") == 1  # current names by default
    assert meter.reader.deferrals.deferred == {}
    assert s.total("spanmeter_deferred_metric_info") == 0


@pytest.mark.parametrize("spec", [s for s in GENAI if s.kind == HISTOGRAM], ids=lambda s: s.name)
def test_a_genai_metric_another_scope_records_is_left_to_it(spec, caplog):
    """Another instrumentation on the provider spanmeter joined records the metric: one family
    remains, the other scope's, and spanmeter says once which it left out."""
    provider = MeterProvider()
    meter, registry = _spanmeter_with_calls(provider)  # a reader sees what is recorded after it joined
    theirs = provider.get_meter("some.instrumentation")
    other = theirs.create_histogram(spec.name, unit=spec.unit, description="Theirs.")
    other.record(0.5, {"gen_ai.operation.name": "chat"})
    caplog.set_level("INFO", logger="spanmeter")
    try:
        generate_latest(registry)
        text = generate_latest(registry).decode()
        said = [r.getMessage() for r in caplog.records if r.name == "spanmeter" and spec.name in r.getMessage()]
        assert len(said) == 1 and "some.instrumentation" in said[0], said
    finally:
        meter.shutdown()
        provider.shutdown()
    promtool(text)
    s = Scrape(text)
    assert s.total(f"{spec.exposed_name}_count") == 1  # the other scope's one observation
    assert meter.reader.deferrals.deferred == {spec.name: "some.instrumentation"}
    assert s.total("model_inference_calls_total") == 1  # spanmeter's own families stay
    # what was left out, and for whom, is on /metrics from the collection after it was seen
    assert s.value("spanmeter_deferred_metric_info", metric=spec.exposed_name, scope="some.instrumentation") == 1
    assert s.total("spanmeter_deferred_metric_info") == 1


def _types(text: str) -> list[str]:
    return [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]


@pytest.mark.parametrize("theirs", ["recording", "without target_info", "idle"])
def test_one_target_info_beside_another_opentelemetry_reader_of_the_registry(theirs):
    """spanmeter's target_info is left out only while the other reader shows one."""
    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(disable_target_info=theirs == "without target_info",
                                                                    registry=registry)])  # fmt: skip
    if theirs != "idle":  # an idle provider's reader exports nothing, target_info neither
        provider.get_meter("app").create_counter("app_jobs", description="Jobs.").add(1)
    meter = spanmeter.setup(registry=registry, tracer_provider=TracerProvider(), start_server=False)
    try:
        text = generate_latest(registry).decode()
    finally:
        meter.shutdown()
        provider.shutdown()
    promtool(text)
    assert _types(text).count("target_info") == 1
    assert ("app_jobs_total" in text) == (theirs != "idle")


def test_a_name_clash_with_any_of_spanmeters_metrics_leaves_spanmeters_copy_out():
    provider = MeterProvider()
    meter, registry = _spanmeter_with_calls(provider)
    provider.get_meter("app").create_counter("model_inference_calls", unit="{call}", description="The app's.").add(5)
    try:
        text = generate_latest(registry).decode()
    finally:
        meter.shutdown()
        provider.shutdown()
    promtool(text)
    assert Scrape(text).total("model_inference_calls_total") == 5  # the app's, alone
    assert meter.reader.deferrals.deferred == {"model_inference_calls": "app"}


@pytest.mark.parametrize("order", ["app-first", "spanmeter-first"])
def test_an_apps_own_prometheus_client_metric_of_the_same_name_leaves_spanmeters_copy_out(order):
    """An app moving from hand-written prometheus_client metrics (the reference article's
    Counter("agent_requests", ...)) on the registry spanmeter serves: one family per name."""
    from prometheus_client import Counter

    registry = CollectorRegistry(auto_describe=True)  # as prometheus_client's default REGISTRY

    def theirs():
        counter = Counter("agent_requests", "The app's own.", ["agent_name", "status"], registry=registry)
        counter.labels("support", "success").inc(5)

    if order == "app-first":
        theirs()
    meter = spanmeter.setup(registry=registry, tracer_provider=TracerProvider(), start_server=False)
    if order == "spanmeter-first":
        theirs()
    try:
        with meter.agent_run("support"):
            with meter.model_call("gpt-4o", provider="openai") as call:
                call.record_usage(input_tokens=10, output_tokens=5)
        meter.state.flush()
        text = generate_latest(registry).decode()
    finally:
        meter.shutdown()
    promtool(text)
    s = Scrape(text)
    assert s.total("agent_requests_total") == 5  # the app's, alone
    assert s.total("model_inference_calls_total") == 1  # spanmeter's other families stay
    assert meter.reader.deferrals.deferred == {"agent_requests": "prometheus_client"}
