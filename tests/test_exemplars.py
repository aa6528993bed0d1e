"""Exemplars: a latency bucket or a cost series links to the latest span behind it.

A real Prometheus with exemplar storage scrapes spanmeter in OpenMetrics and answers
``/api/v1/query_exemplars`` (also with the dashboard's own latency queries) with the trace
ids of the spans the test made; the plain text scrape is unchanged; OTLP carries the same.
"""

from __future__ import annotations

import shutil
import time
import urllib.request
from bisect import bisect_left

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

import spanmeter
from dashboards import assets
from spanmeter import catalog, exemplars
from spanmeter.catalog import COUNTER, HISTOGRAM
from spanmeter.prometheus import LocalPrometheus
from spanmeter.sampling import keep_genai
from tests.otlp_receiver import OtlpHttpReceiver
from tests.conftest import wait_until

S = 10**9
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
PRICES = {"price": [{"model": "gpt-4o", "input": 2.5, "output": 10.0}]}
# (run seconds, inference seconds, tool seconds): each run's spans fall in buckets of their
# own in every duration histogram, the article's and the GenAI ones
RUNS = [(0.3, 0.1, 0.03), (1.5, 0.7, 0.3), (4.0, 2.5, 3.0)]


def _has_chat_calls(spec) -> bool:
    """Whether ``spec`` counts the test's chat calls (embeddings have their own metrics)."""
    return spec.rows is None or ("chat" in spec.rows[1]) == spec.rows[2]


# what the default set-up exports (current GenAI names) and the test's spans feed
CARRYING = [m for m in catalog.exported() if exemplars.carries(m) and _has_chat_calls(m)]
KIND_OF_TABLE = {"agent": "run", "model": "chat", "tool": "tool"}


def _setup(**kwargs):
    kwargs.setdefault("port", 0)
    kwargs.setdefault("registry", CollectorRegistry())
    kwargs.setdefault("tracer_provider", TracerProvider())
    return spanmeter.setup(service_name="exemplars", prices=PRICES, price_catalogue=False, **kwargs)


def _ids(span) -> tuple[str, str]:
    context = span.get_span_context()
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def run(meter, run_s: float, chat_s: float, tool_s: float, *, agent="support", tokens=(1000, 100)) -> dict:
    """One agent run (one chat call, one tool call) with explicit times; the ids of its spans."""
    tracer = meter.tracer_provider.get_tracer("exemplars.workload")
    start = time.time_ns() - int(run_s * S) - S
    attributes = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent}
    root = tracer.start_span(f"invoke_agent {agent}", start_time=start, attributes=attributes)
    context = trace.set_span_in_context(root)
    chat = tracer.start_span("chat gpt-4o", context=context, start_time=start, attributes={
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.provider.name": "openai",
        "gen_ai.usage.input_tokens": tokens[0], "gen_ai.usage.output_tokens": tokens[1]})  # fmt: skip
    chat.end(end_time=start + int(chat_s * S))
    tool = tracer.start_span("execute_tool lookup", context=context, start_time=start + int(chat_s * S),
                             attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup"})
    tool.end(end_time=start + int((chat_s + tool_s) * S))
    root.end(end_time=start + int(run_s * S))
    return {"run": _ids(root), "chat": _ids(chat), "tool": _ids(tool),
            "cost": (tokens[0] * 2.5 + tokens[1] * 10.0) / 1e6}  # fmt: skip


def scrape(meter, accept: str | None) -> str:
    host, port = meter.address
    headers = {"Accept": accept} if accept else {}
    request = urllib.request.Request(f"http://{host}:{port}/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode("utf-8")


def _exemplars_of(families, spec) -> list[tuple[dict, object]]:
    """(sample labels, exemplar) of every sample of ``spec`` that has one."""
    name = spec.exposed_name + "_bucket" if spec.kind == HISTOGRAM else spec.exposed_name
    return [(s.labels, s.exemplar) for f in families for s in f.samples if s.name == name and s.exemplar]


def test_every_duration_histogram_and_the_cost_counter_carry_exemplars_the_gen_ai_ones_too():
    carrying = {(m.table, m.field, m.family) for m in CARRYING}
    assert carrying == {("agent", "duration", "article"), ("agent", "duration", "genai"),
                        ("model", "duration", "article"), ("model", "duration", "genai"),
                        ("tool", "duration", "article"), ("tool", "duration", "genai"),
                        ("model", "cost", "article")}  # fmt: skip
    assert {m.exposed_name for m in CARRYING if m.kind == COUNTER} == {"agent_estimated_cost_dollars_total"}


def test_openmetrics_scrape_has_one_exemplar_per_bucket_the_latest_and_plain_text_has_none():
    meter = _setup()
    try:
        spans = [run(meter, *r) for r in RUNS]
        again = run(meter, *RUNS[0])  # same buckets as the first run: it replaces the first one's exemplars
        meter.state.flush()
        text = scrape(meter, None)
        openmetrics = scrape(meter, OPENMETRICS)
    finally:
        meter.shutdown()

    assert " # {" not in text and "trace_id" not in text
    plain = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in parse_text(text) for s in f.samples}
    families = list(parse_openmetrics(openmetrics))  # the strict OpenMetrics parser: raises on a bad exemplar
    # the same numbers in both formats (OpenMetrics adds _created samples only)
    om = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}
    assert {k: v for k, v in om.items() if k in plain} == {k: v for k, v in plain.items() if k in om}
    assert sum(k[0].endswith("_bucket") for k in plain) == sum(k[0].endswith("_bucket") for k in om)

    latest = [again, *spans[1:]]
    for spec in CARRYING:
        found = _exemplars_of(families, spec)
        kind = "chat" if spec.table == "model" else KIND_OF_TABLE[spec.table]
        if spec.kind == COUNTER:  # one series, one exemplar: the latest priced call
            ((_, exemplar),) = found
            assert (exemplar.labels["trace_id"], exemplar.labels["span_id"]) == again["chat"]
            assert exemplar.value == pytest.approx(again["cost"])
            continue
        # three runs in three buckets each, the first one's replaced by the repeat
        got = {(e.labels["trace_id"], e.labels["span_id"]) for _, e in found}
        assert got == {r[kind] for r in latest}, spec.name
        for labels, exemplar in found:
            assert set(exemplar.labels) == {"trace_id", "span_id"}
            assert len(exemplar.labels["trace_id"]) == 32 and len(exemplar.labels["span_id"]) == 16
            # the exemplar's value lies in its bucket (le is cumulative: the smallest bound above it)
            le = float(labels["le"])
            assert bisect_left(spec.buckets, exemplar.value) == bisect_left(spec.buckets, le), (spec.name, labels)
            assert abs(float(exemplar.timestamp) - time.time()) < 60


def test_two_buckets_of_the_gen_ai_histogram_are_one_of_the_articles_so_it_keeps_the_later_span():
    meter = _setup()
    try:
        first = run(meter, 0.3, 0.015, 0.03)  # gen_ai bucket 0.02; the article's 0.2
        second = run(meter, 0.3, 0.03, 0.03)  # gen_ai bucket 0.04; the article's 0.2 again
        meter.state.flush()
        families = list(parse_openmetrics(scrape(meter, OPENMETRICS)))
    finally:
        meter.shutdown()
    article = {e.labels["span_id"]: float(labels["le"])
               for labels, e in _exemplars_of(families, catalog.BY_NAME["model_inference_duration"])}  # fmt: skip
    genai = {e.labels["span_id"]: float(labels["le"])
             for labels, e in _exemplars_of(families, catalog.BY_NAME["gen_ai.client.inference.duration"])}  # fmt: skip
    assert article == {second["chat"][1]: 0.2}
    assert genai == {first["chat"][1]: 0.02, second["chat"][1]: 0.04}


def test_a_span_the_tracer_does_not_export_is_counted_but_never_an_exemplar():
    # keep_genai records GenAI spans its inner sampler drops (exact metrics), without exporting them:
    # an exemplar naming one would link to a trace the backend never got
    meter = _setup(tracer_provider=TracerProvider(sampler=keep_genai(ALWAYS_OFF)))
    sampled = _setup()
    try:
        run(meter, *RUNS[0])
        meter.state.flush()
        families = list(parse_openmetrics(scrape(meter, OPENMETRICS)))
        run(sampled, *RUNS[0])
        sampled.state.flush()
        control = list(parse_openmetrics(scrape(sampled, OPENMETRICS)))
    finally:
        meter.shutdown()
        sampled.shutdown()
    counts = {s.name: s.value for f in families for s in f.samples if s.name.endswith("_count")}
    assert counts["agent_request_duration_seconds_count"] == 1
    assert all(not _exemplars_of(families, spec) for spec in CARRYING)
    assert all(_exemplars_of(control, spec) for spec in CARRYING)  # the same workload, sampled


def test_otlp_points_carry_the_same_exemplars():
    receiver = OtlpHttpReceiver()
    meter = spanmeter.setup(otlp=True, otlp_endpoint=receiver.url, prometheus=False, service_name="exemplars",
                            tracer_provider=TracerProvider(), prices=PRICES, price_catalogue=False,
                            otlp_interval_seconds=3600.0)  # fmt: skip
    try:
        spans = [run(meter, *r) for r in RUNS]
    finally:
        meter.shutdown()  # flushes the last push
        receiver.close()
    for spec in CARRYING:
        ((point),) = receiver.latest(spec.name).values()
        kind = "chat" if spec.table == "model" else KIND_OF_TABLE[spec.table]
        got = {(trace_id, span_id) for _, trace_id, span_id, _ in point.exemplars}
        if spec.kind == COUNTER:
            assert got == {spans[-1]["chat"]}
            assert point.exemplars[0][0] == pytest.approx(spans[-1]["cost"])
        else:
            assert got == {s[kind] for s in spans}, spec.name
            # each in its bucket, by value, as a Collector's Prometheus exporter places them
            slots = {bisect_left(point.bounds, value) for value, *_ in point.exemplars}
            assert len(slots) == len(spans) and all(point.bucket_counts[i] for i in slots)


@pytest.fixture(scope="module")
def stack():
    """spanmeter, and a real Prometheus with exemplar storage scraping it every second."""
    if not shutil.which("prometheus"):
        pytest.skip("needs Debian's prometheus package (scripts/test.sh installs it)")
    meter = _setup()
    host, port = meter.address
    prom = LocalPrometheus(assets.PROMETHEUS_DIR, f"{host}:{port}", scrape_interval="1s", evaluation_interval="1s",
                           flags=("--enable-feature=exemplar-storage",))  # fmt: skip
    prom.start()
    try:
        wait_until(lambda: prom.query('up{job="spanmeter"} == 1'), "the first scrape")
        spans = [run(meter, *r) for r in RUNS]
        yield meter, prom, spans
    finally:
        prom.stop()
        meter.shutdown()




def _query_exemplars(prom, expr: str) -> list[dict]:
    now = time.time()
    return prom.api("query_exemplars", query=expr, start=f"{now - 3600:.3f}", end=f"{now + 60:.3f}")


def _found(result) -> set[tuple[str, str]]:
    return {(e["labels"]["trace_id"], e["labels"]["span_id"]) for series in result for e in series["exemplars"]}


@pytest.mark.parametrize("spec", CARRYING, ids=lambda m: m.exposed_name)
def test_prometheus_returns_the_spans_trace_ids_from_query_exemplars(stack, spec):
    _meter, prom, spans = stack
    kind = "chat" if spec.table == "model" else KIND_OF_TABLE[spec.table]
    name = spec.exposed_name + "_bucket" if spec.kind == HISTOGRAM else spec.exposed_name
    want = {s[kind] for s in spans} if spec.kind == HISTOGRAM else {spans[-1]["chat"]}
    result = wait_until(lambda: (r := _query_exemplars(prom, name)) and _found(r) >= want and r, f"exemplars of {name}")
    assert _found(result) <= {s[kind] for s in spans}  # no span the test did not make
    for series in result:
        for e in series["exemplars"]:
            if spec.kind == HISTOGRAM:  # Prometheus keeps each on the bucket the exposition put it on
                le = float(series["seriesLabels"]["le"])
                assert bisect_left(spec.buckets, float(e["value"])) == bisect_left(spec.buckets, le)
            else:
                assert float(e["value"]) == pytest.approx(spans[-1]["cost"])


def test_the_dashboards_latency_panels_ask_for_exemplars_and_get_the_spans_back(stack):
    _meter, prom, spans = stack
    targets = [(p["title"], t) for p in assets.panels() for t in p.get("targets", [])]
    with_exemplars = [(title, t["expr"]) for title, t in targets if t.get("exemplar")]
    bucket_names = {m.exposed_name + "_bucket": m for m in CARRYING if m.kind == HISTOGRAM}
    latency = {title for title, t in targets if any(n in t["expr"] for n in bucket_names)}
    # every query of a latency panel that reads a histogram carrying exemplars asks for them
    assert {"Request latency (P50 / P95 / P99)", "Inference latency by model (P50 / P95)",
            "Tool call latency (P95)"} <= {title for title, _ in with_exemplars}  # fmt: skip
    for title, t in targets:
        if title in latency and any(n in t["expr"] for n in bucket_names):
            assert t.get("exemplar") is True, title
    # Grafana sends the panel's query to /api/v1/query_exemplars: it returns the test's spans
    for title, expr in with_exemplars:
        spec = next(m for n, m in bucket_names.items() if n in expr)
        kind = "chat" if spec.table == "model" else KIND_OF_TABLE[spec.table]
        want = {s[kind] for s in spans}
        query = assets.substitute(expr)
        result = wait_until(lambda: (r := _query_exemplars(prom, query)) and _found(r) >= want and r, title)
        assert _found(result) == want, title


def test_each_tenants_cost_series_links_to_its_own_tenants_latest_call_not_another_tenants():
    """With attribution labels the cost counter has one point per tenant: its exemplar is the
    latest priced call of that tenant (trace, span and value), on OTLP and in OpenMetrics."""
    meter = _setup(attribution={"tenant": "app.tenant_id"})
    tracer = meter.tracer_provider.get_tracer("exemplars.tenants")
    spans = {}
    try:
        for tenant, tokens in (("acme", (1000, 100)), ("globex", (5000, 500))):  # globex's call is the later one
            with tracer.start_as_current_span("invoke_agent support", attributes={
                    "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support",
                    "app.tenant_id": tenant}):  # fmt: skip
                with tracer.start_as_current_span("chat gpt-4o", attributes={
                        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                        "gen_ai.provider.name": "openai", "gen_ai.usage.input_tokens": tokens[0],
                        "gen_ai.usage.output_tokens": tokens[1]}) as chat:  # fmt: skip
                    spans[tenant] = (_ids(chat), (tokens[0] * 2.5 + tokens[1] * 10.0) / 1e6)
        meter.state.flush()
        from spanmeter.aggregate import produce

        otlp = {m.name: m for m in produce(meter.state)}["agent_estimated_cost_dollars"]
        openmetrics = scrape(meter, OPENMETRICS)
    finally:
        meter.shutdown()

    by_tenant = {p.attributes["tenant"]: p for p in otlp.data.data_points}
    assert set(by_tenant) == {"acme", "globex"}
    for tenant, ((trace_id, span_id), cost) in spans.items():
        (exemplar,) = by_tenant[tenant].exemplars
        assert (format(exemplar.trace_id, "032x"), format(exemplar.span_id, "016x")) == (trace_id, span_id), tenant
        assert exemplar.value == pytest.approx(cost)
    spec = catalog.BY_NAME["agent_estimated_cost_dollars"]
    found = {labels["tenant"]: e for labels, e in _exemplars_of(list(parse_openmetrics(openmetrics)), spec)}
    assert set(found) == {"acme", "globex"}
    for tenant, ((trace_id, span_id), cost) in spans.items():
        assert (found[tenant].labels["trace_id"], found[tenant].labels["span_id"]) == (trace_id, span_id), tenant
        assert found[tenant].value == pytest.approx(cost)
