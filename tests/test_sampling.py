"""Exact metrics under trace sampling: keep_genai records what a ratio sampler drops,
and the exported traces stay the ones the ratio sampler chose, complete."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections import defaultdict

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Decision, ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from prometheus_client import CollectorRegistry

import spanmeter
from spanmeter.sampling import keep_genai
from tests.conftest import Scrape

RUNS = 1000
RATE = 0.1
INPUT, OUTPUT = 120, 30  # tokens per inference call
PRICE_IN, PRICE_OUT = 2.5, 10.0  # dollars per million tokens
# A run: [POST /chat] > invoke_agent support > chat gpt-4o, chat gpt-4o, plan > execute_tool search_orders.
# Every other run sits under a web framework's root span, so the ratio decision is taken on a
# span that is not GenAI; "plan" is a framework span between the run and its tool call.
RUN_SPANS = ["invoke_agent support", "chat gpt-4o", "chat gpt-4o", "plan", "execute_tool search_orders"]


def workload(meter, runs: int = RUNS) -> None:
    tracer = meter.tracer_provider.get_tracer("test.app")
    for n in range(runs):
        web = tracer.start_as_current_span("POST /chat") if n % 2 else contextlib.nullcontext()
        with web, meter.agent_run("support"):
            for _ in range(2):
                with meter.model_call("gpt-4o", provider="openai") as call:
                    call.record_usage(input_tokens=INPUT, output_tokens=OUTPUT)
            with tracer.start_as_current_span("plan"), meter.tool_call("search_orders"):
                pass


def sampled_stack(sampler):
    """A tracer provider with ``sampler``, an in-memory exporter of the sampled spans, spanmeter."""
    provider = TracerProvider(sampler=sampler)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter = spanmeter.setup(service_name="sampled-agent", port=0, registry=CollectorRegistry(),
                            tracer_provider=provider, price_catalogue=False,
                            prices={"price": [{"model": "gpt-4o", "input": PRICE_IN, "output": PRICE_OUT}]})  # fmt: skip
    return meter, exporter


def scrape(meter) -> Scrape:
    response = httpx.get(meter.metrics_url, timeout=10)
    response.raise_for_status()
    return Scrape(response.text)


EXPECTED = {  # (metric, labels) -> value, for RUNS runs
    ("agent_requests_total", (("agent_name", "support"), ("status", "success"))): RUNS,
    ("model_inference_calls_total", (("agent_name", "support"), ("model_id", "gpt-4o"))): 2 * RUNS,
    ("agent_tool_calls_total", (("agent_name", "support"), ("tool_name", "search_orders"))): RUNS,
    ("agent_token_usage_total", (("agent_name", "support"), ("token_type", "input"))): 2 * RUNS * INPUT,
    ("agent_token_usage_total", (("agent_name", "support"), ("token_type", "output"))): 2 * RUNS * OUTPUT,
    ("agent_inference_calls_per_run_count", (("agent_name", "support"),)): RUNS,
    ("agent_inference_calls_per_run_sum", (("agent_name", "support"),)): 2 * RUNS,
    ("agent_tool_calls_per_run_sum", (("agent_name", "support"),)): RUNS,
}
COST = 2 * RUNS * (INPUT * PRICE_IN + OUTPUT * PRICE_OUT) / 1e6


def test_ratio_sampled_app_counts_every_run_and_exports_a_tenth_of_them_complete():
    meter, exporter = sampled_stack(keep_genai(ParentBased(TraceIdRatioBased(RATE))))
    try:
        workload(meter)
        result = scrape(meter)
    finally:
        meter.shutdown()

    for (name, labels), want in EXPECTED.items():
        assert result.value(name, **dict(labels)) == want, name
    assert result.total("agent_tool_calls_total", agent_name="unknown") == 0  # ancestry kept through "plan"
    assert result.value("agent_estimated_cost_dollars_total", agent_name="support", model_id="gpt-4o") == (
        pytest.approx(COST, rel=1e-12)
    )

    traces = defaultdict(list)
    for span in exporter.get_finished_spans():
        assert span.context.trace_flags.sampled
        traces[span.context.trace_id].append(span)
    # Binomial(1000, 0.1): sd 9.5, so 60..140 fails about once in 30,000 runs.
    assert 0.06 * RUNS <= len(traces) <= 0.14 * RUNS
    for spans in traces.values():  # each exported trace is a whole run, parents included
        names = sorted(s.name for s in spans)
        assert names in (sorted(RUN_SPANS), sorted(RUN_SPANS + ["POST /chat"])), names
        ids = {s.context.span_id for s in spans}
        assert all(s.parent is None or s.parent.span_id in ids for s in spans)


def test_without_keep_genai_the_same_sampler_undercounts():
    """What keep_genai fixes: the processor sees the sampled tenth only."""
    meter, exporter = sampled_stack(ParentBased(TraceIdRatioBased(RATE)))
    try:
        workload(meter, runs=200)
        result = scrape(meter)
    finally:
        meter.shutdown()
    exported_runs = sum(s.name == "invoke_agent support" for s in exporter.get_finished_spans())
    assert result.total("agent_requests_total") == exported_runs < 100


# --- the decision rule, span by span ------------------------------------------------------------


def _provider(inner=ALWAYS_OFF):
    provider = TracerProvider(sampler=keep_genai(inner))
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


def test_dropped_genai_span_is_recorded_with_its_start_attributes_not_exported():
    tracer, exporter = _provider()
    attributes = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"}
    span = tracer.start_span("chat gpt-4o", attributes=attributes)
    assert span.is_recording() and not span.get_span_context().trace_flags.sampled
    assert dict(span.attributes) == attributes  # a DROP result carries no attributes: not lost
    span.end()
    assert exporter.get_finished_spans() == ()


@pytest.mark.parametrize(
    "name, attributes",
    [
        ("invoke_agent support", {"gen_ai.operation.name": "invoke_agent"}),
        ("execute_tool search", {"gen_ai.operation.name": "execute_tool"}),
        ("ChatOpenAI", {"openinference.span.kind": "LLM"}),
        ("agent run", {}),  # pydantic-ai before 1.0: the name says it
    ],
)
def test_genai_spans_of_every_convention_are_kept(name, attributes):
    tracer, _ = _provider()
    assert tracer.start_span(name, attributes=attributes).is_recording()


def test_other_spans_stay_dropped_outside_a_recorded_run():
    tracer, _ = _provider()
    root = tracer.start_span("POST /chat", attributes={"http.method": "POST"})
    assert not root.is_recording()
    child = tracer.start_span("SELECT orders", context=trace.set_span_in_context(root))
    assert not child.is_recording()


def test_the_whole_subtree_of_a_recorded_only_run_is_recorded():
    tracer, _ = _provider(ParentBased(ALWAYS_OFF))
    run = tracer.start_span("invoke_agent support", attributes={"gen_ai.operation.name": "invoke_agent"})
    step = tracer.start_span("plan", context=trace.set_span_in_context(run))
    http = tracer.start_span("GET /search", context=trace.set_span_in_context(step))
    assert step.is_recording() and http.is_recording()
    assert not http.get_span_context().trace_flags.sampled


def test_inner_decisions_that_record_stand():
    tracer, exporter = _provider(ParentBased(TraceIdRatioBased(1.0)))
    with tracer.start_as_current_span("POST /chat"), tracer.start_as_current_span(
        "chat gpt-4o", attributes={"gen_ai.operation.name": "chat"}
    ):
        pass
    assert sorted(s.name for s in exporter.get_finished_spans()) == ["POST /chat", "chat gpt-4o"]


def test_unsampled_remote_parent_is_not_a_recorded_run():
    tracer, _ = _provider(ParentBased(TraceIdRatioBased(1.0)))
    remote = NonRecordingSpan(SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(0)))
    ctx = trace.set_span_in_context(remote)
    assert not tracer.start_span("GET /health", context=ctx).is_recording()
    chat = tracer.start_span("chat gpt-4o", context=ctx, attributes={"gen_ai.operation.name": "chat"})
    assert chat.is_recording() and chat.get_span_context().trace_id == 0xABC


def test_description_names_the_inner_sampler():
    assert keep_genai(TraceIdRatioBased(0.1)).get_description() == "KeepGenAI{TraceIdRatioBased{0.1}}"


def test_not_a_sampler_is_a_configuration_error():
    with pytest.raises(spanmeter.ConfigurationError, match="keep_genai"):
        keep_genai(0.1)


def test_decision_for_a_recording_inner_result_is_the_inner_object():
    inner = ParentBased(TraceIdRatioBased(1.0))
    result = keep_genai(inner).should_sample(None, 0xABC, "POST /chat", attributes={"a": 1})
    assert result.decision is Decision.RECORD_AND_SAMPLE and dict(result.attributes) == {"a": 1}


# --- a real Prometheus scraping the sampled app --------------------------------------------------


@pytest.mark.skipif(not shutil.which("prometheus"), reason="needs Debian's prometheus package")
def test_prometheus_sees_exact_counts_from_a_ratio_sampled_app():
    from dashboards import assets
    from spanmeter.prometheus import LocalPrometheus

    meter, exporter = sampled_stack(keep_genai(ParentBased(TraceIdRatioBased(RATE))))
    host, port = meter.address
    prom = LocalPrometheus(assets.PROMETHEUS_DIR, f"{host}:{port}", scrape_interval="1s", evaluation_interval="1s")
    prom.start()
    try:
        workload(meter)
        queries = {
            "sum(agent_requests_total)": RUNS,
            "sum(model_inference_calls_total)": 2 * RUNS,
            'sum(agent_tool_calls_total{agent_name="support"})': RUNS,
            'sum(agent_token_usage_total{token_type="input"})': 2 * RUNS * INPUT,
            "sum(agent_inference_calls_per_run_sum)": 2 * RUNS,
        }
        deadline = time.monotonic() + 30
        got = {}
        while time.monotonic() < deadline:
            got = {q: [float(s["value"][1]) for s in prom.query(q)] for q in queries}
            if all(v == [want] for v, want in zip(got.values(), queries.values())):
                break
            time.sleep(0.5)
        assert got == {q: [float(want)] for q, want in queries.items()}
        cost = prom.query("sum(agent_estimated_cost_dollars_total)")
        assert float(cost[0]["value"][1]) == pytest.approx(COST, rel=1e-9)
        runs_exported = sum(s.name == "invoke_agent support" for s in exporter.get_finished_spans())
        assert 0.06 * RUNS <= runs_exported <= 0.14 * RUNS
    finally:
        prom.stop()
        meter.shutdown()


# --- spanmeter.setup/configure(sampler=...) installs keep_genai ----------------------------------


def test_setup_with_a_sampler_counts_every_run_and_exports_a_tenth():
    meter = spanmeter.setup(service_name="sampled-agent", port=0, registry=CollectorRegistry(), price_catalogue=False,
                            sampler=ParentBased(TraceIdRatioBased(RATE)),
                            prices={"price": [{"model": "gpt-4o", "input": PRICE_IN, "output": PRICE_OUT}]})  # fmt: skip
    exporter = InMemorySpanExporter()
    meter.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        assert meter.tracer_provider.sampler.get_description() == "KeepGenAI{ParentBased{root:TraceIdRatioBased{0.1},remoteParentSampled:AlwaysOnSampler,remoteParentNotSampled:AlwaysOffSampler,localParentSampled:AlwaysOnSampler,localParentNotSampled:AlwaysOffSampler}}"
        workload(meter)
        result = scrape(meter)
    finally:
        meter.shutdown()
    for (name, labels), want in EXPECTED.items():
        assert result.value(name, **dict(labels)) == want, name
    runs_exported = sum(s.name == "invoke_agent support" for s in exporter.get_finished_spans())
    assert 0.06 * RUNS <= runs_exported <= 0.14 * RUNS


def test_a_sampler_with_a_given_tracer_provider_is_a_configuration_error():
    with pytest.raises(spanmeter.ConfigurationError, match=r"sampler=.*keep_genai\(your_sampler\)"):
        spanmeter.setup(port=0, registry=CollectorRegistry(), tracer_provider=TracerProvider(),
                        sampler=TraceIdRatioBased(RATE))  # fmt: skip


CONFIGURE_SCRIPT = """
import httpx, json
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
import spanmeter
from tests.test_sampling import workload
sampler = ParentBased(TraceIdRatioBased(0.1))
meter = spanmeter.configure(service_name="sampled", port=0, sampler=sampler, price_catalogue=False)
exporter = InMemorySpanExporter()
trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(exporter))
workload(meter)
text = httpx.get(meter.metrics_url, timeout=10).text
again = spanmeter.configure(service_name="sampled", port=0, sampler=sampler, price_catalogue=False) is meter
spanmeter.shutdown()
print(json.dumps({"global": trace.get_tracer_provider() is meter.tracer_provider, "again": again, "text": text,
                  "exported": sum(s.name == "invoke_agent support" for s in exporter.get_finished_spans())}))
"""


def test_configure_with_a_sampler_installs_keep_genai_on_the_global_tracer_provider():
    """In a fresh process: the global tracer provider can be set once per process."""
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(root, "src"), root]))
    out = subprocess.run([sys.executable, "-c", CONFIGURE_SCRIPT], env=env, cwd=root, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.splitlines()[-1])
    assert got["global"] and got["again"]
    result = Scrape(got["text"])
    assert result.value("agent_requests_total", agent_name="support", status="success") == RUNS
    assert result.value("model_inference_calls_total", agent_name="support", model_id="gpt-4o") == 2 * RUNS
    assert 0.06 * RUNS <= got["exported"] <= 0.14 * RUNS
