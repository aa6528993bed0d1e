"""End to end: a scripted workload through spanmeter's real endpoint, scraped every second
by the real Prometheus with the committed scrape config and rules; every expression of
the dashboard and the rule files runs through Prometheus's HTTP API and returns data, and
the totals match the workload."""

from __future__ import annotations

import re
import shutil
import time

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Status, StatusCode
from prometheus_client import CollectorRegistry

import spanmeter
from dashboards import assets
from dashboards.promql import operands, references
from spanmeter.prometheus import LocalPrometheus
from spanmeter.quality import Evaluator
from tests.conftest import wait_until

pytestmark = pytest.mark.skipif(
    not shutil.which("prometheus"), reason="needs Debian's prometheus package (scripts/test.sh installs it)"
)

WINDOW = "1m"  # stands for $__rate_interval and $__range: the whole test fits in it
S = 10**9

# --- the workload: one round, run twice so that every series has an increase to rate ----------
# (agent, status, run seconds, [model calls], [tool calls])
#   model call: (model, seconds, input, output, cache_read, cache_write, reasoning, error_type)
#   tool call: (tool, seconds, error_type)
ROUND = [
    ("support", None, 4.0,
     [("gpt-4o", 1.2, 1000, 200, 400, 0, 0, None), ("gpt-4o", 0.8, 1500, 100, 0, 0, 0, None)],
     [("search_orders", 0.3, None)]),
    ("support", "ProviderError", 6.0,
     [("gpt-4o-mini", 0.5, 300, 50, 0, 0, 0, None), ("gpt-4o-mini", 0.1, None, None, 0, 0, 0, "rate_limit_exceeded")],
     [("issue_refund", 0.4, "RuntimeError")]),
    ("support", "timeout", 45.0, [], [("search_orders", 30.0, "timeout")]),
    ("research", None, 12.0, [("o3-mini", 9.0, 2000, 900, 0, 100, 600, None)], [("web_search", 1.5, None)]),
    ("billing", None, 2.0,
     [("claude-sonnet-4-5", 1.5, 800, 120, 0, 0, 0, None), ("acme-ft-7", 0.3, 500, 60, 0, 0, 0, None)],
     [("get_invoice", 0.1, None)]),
]  # fmt: skip
# dollars per million tokens (cache reads and writes at the input price); acme-ft-7 has none
PRICES = {"gpt-4o": (2.5, 10.0), "gpt-4o-mini": (0.15, 0.6), "o3-mini": (1.1, 4.4), "claude-sonnet-4-5": (3.0, 15.0)}
PROVIDERS = {"gpt-4o": "openai", "gpt-4o-mini": "openai", "o3-mini": "openai", "claude-sonnet-4-5": "anthropic",
             "acme-ft-7": "acme"}  # fmt: skip
# what the judge says of each agent's answers (the runs carry gen_ai.input/output.messages)
VERDICTS = {"support": {"groundedness": 0.62, "relevance": 0.8}, "research": {"groundedness": 0.9, "relevance": 0.88}}
# who spends: the tenant each agent's runs carry (configure(attribution={"tenant": "app.tenant_id"}))
TENANTS = {"support": "acme", "research": "globex", "billing": "initech"}
# conversations recorded by the app with record_conversation: (agent, turns, escalated)
CONVERSATIONS = [("research", 6, False), ("billing", 2, False)]
# and one followed by gen_ai.conversation.id: the three support runs, escalated at the end
ROUNDS = 2


def judge(sample):
    return VERDICTS[sample.agent_name]


def _span(tracer, name, attributes, start, seconds, error_type=None, context=None):
    span = tracer.start_span(name, context=context, start_time=start, attributes=attributes)
    if error_type:
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR))
    return span, start + int(seconds * S)


def run_round(meter, number: int) -> None:
    """One round of the workload, as plain OpenTelemetry spans with explicit times."""
    tracer = meter.tracer_provider.get_tracer("e2e.workload")
    t = time.time_ns() - 120 * S
    support_runs = [n for n, r in enumerate(ROUND) if r[0] == "support"]
    for n, (agent, error, seconds, models, tools) in enumerate(ROUND):
        attributes = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent,
                      "app.tenant_id": TENANTS[agent]}  # fmt: skip
        if agent in VERDICTS and error is None:
            attributes.update({"gen_ai.input.messages": "where is my order?", "gen_ai.output.messages": "on its way"})
        if agent == "support":
            attributes["gen_ai.conversation.id"] = f"support-{number}"
            if n == support_runs[-1]:
                attributes.update({"spanmeter.conversation.ended": True, "spanmeter.conversation.escalated": True})
        run, run_end = _span(tracer, f"invoke_agent {agent}", attributes, t, seconds, error)
        ctx = trace.set_span_in_context(run)
        at = t
        for model, secs, i, o, cr, cw, rs, err in models:
            attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": model,
                     "gen_ai.provider.name": PROVIDERS[model]}  # fmt: skip
            for key, value in (("gen_ai.usage.input_tokens", i), ("gen_ai.usage.output_tokens", o),
                               ("gen_ai.usage.cache_read.input_tokens", cr),
                               ("gen_ai.usage.cache_creation.input_tokens", cw),
                               ("gen_ai.usage.reasoning.output_tokens", rs)):  # fmt: skip
                if value:
                    attrs[key] = value
            if model == "gpt-4o" and i == 1000:  # a streamed response
                attrs.update({"gen_ai.request.stream": True, "gen_ai.response.time_to_first_chunk": 0.35})
            if model == "gpt-4o" and i == 1500:  # usage split by modality (a screenshot in the question)
                attrs.update({"gen_ai.usage.text.input_tokens": 1200, "gen_ai.usage.image.input_tokens": 300})
            if err is None:
                attrs["gen_ai.response.finish_reasons"] = ("length",) if model == "o3-mini" else ("stop",)
            span, at = _span(tracer, f"chat {model}", attrs, at, secs, err, ctx)
            span.end(end_time=at)
        for tool, secs, err in tools:
            attrs = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool}
            span, at = _span(tracer, f"execute_tool {tool}", attrs, at, secs, err, ctx)
            # the policy's decision before the tool ran (the conventions' event): refunds wait for a human
            outcome = "require_approval" if tool == "issue_refund" else "allow"
            span.add_event("gen_ai.tool.call.decision", {"gen_ai.tool.call.decision.outcome": outcome,
                                                         "gen_ai.tool.name": tool})  # fmt: skip
            span.end(end_time=at)
        run.end(end_time=run_end)
    workflow = {"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": "nightly_digest"}
    span, end = _span(tracer, "invoke_workflow nightly_digest", workflow, t, 2.5)  # a workflow of no agent run
    span.end(end_time=end)
    for agent, turns, escalated in CONVERSATIONS:
        meter.record_conversation(agent, turns=turns, escalated=escalated)


def _count(predicate) -> int:
    return ROUNDS * sum(predicate(run) for run in ROUND)


def _calls():
    return [call for run in ROUND for call in run[3]]


def _dollars(call) -> float:
    model, _s, i, o, *_ = call
    price_in, price_out = PRICES[model]
    return ((i or 0) * price_in + (o or 0) * price_out) / 1e6


EXPECTED_TOTALS = {
    "sum(agent_requests_total)": ROUNDS * len(ROUND),
    'sum(agent_requests_total{status="error"})': _count(lambda r: r[1] is not None and r[1] != "timeout"),
    'sum(agent_requests_total{status="timeout"})': _count(lambda r: r[1] == "timeout"),
    "sum(model_inference_calls_total)": _count(lambda r: len(r[3])),
    'sum(agent_token_usage_total{token_type="input"})': _count(lambda r: sum(c[2] or 0 for c in r[3])),
    'sum(agent_token_usage_total{token_type="output"})': _count(lambda r: sum(c[3] or 0 for c in r[3])),
    'sum(agent_token_usage_total{token_type="cache_read"})': _count(lambda r: sum(c[4] for c in r[3])),
    'sum(agent_token_usage_total{token_type="cache_write"})': _count(lambda r: sum(c[5] for c in r[3])),
    'sum(agent_token_usage_total{token_type="reasoning"})': _count(lambda r: sum(c[6] for c in r[3])),
    "sum(agent_tool_calls_total)": _count(lambda r: len(r[4])),
    'sum(agent_tool_call_decisions_total{decision="require_approval", tool_name="issue_refund"})':
        _count(lambda r: sum(t[0] == "issue_refund" for t in r[4])),
    'sum(agent_tool_call_decisions_total{decision="allow"})': _count(lambda r: sum(t[0] != "issue_refund" for t in r[4])),
    'sum(agent_tool_calls_total{status="error"})': _count(lambda r: sum(t[2] == "RuntimeError" for t in r[4])),
    'sum(agent_tool_calls_total{status="timeout"})': _count(lambda r: sum(t[2] == "timeout" for t in r[4])),
    'sum(gen_ai_client_inference_duration_seconds_count{error_type="rate_limit_exceeded"})':
        _count(lambda r: sum(c[7] == "rate_limit_exceeded" for c in r[3])),
    "sum(agent_conversations_total)": ROUNDS * (len(CONVERSATIONS) + 1),
    "sum(agent_escalations_total)": ROUNDS * (sum(e for _, _, e in CONVERSATIONS) + 1),
    'sum(agent_conversation_turns_sum{agent_name="support"})': _count(lambda r: r[0] == "support"),
    'sum(spanmeter_conversations_ended_total{reason="app"})': ROUNDS * (len(CONVERSATIONS) + 1),  # recorded ones too
    'sum(agent_evaluations_total{status="done"})': _count(lambda r: r[0] in VERDICTS and r[1] is None),
    'agent_quality_score{agent_name="support", metric_type="groundedness"}': 0.62,
    "sum(agent_estimated_cost_dollars_total)": ROUNDS * sum(_dollars(c) for c in _calls() if c[0] in PRICES),
    "sum(agent_unpriced_calls_total)": ROUNDS * sum(c[0] not in PRICES for c in _calls()),
    'sum(agent_unpriced_tokens_total{token_type="input"})': ROUNDS * sum(c[2] for c in _calls() if c[0] not in PRICES),
    "sum(gen_ai_client_inference_time_to_first_chunk_seconds_count)": ROUNDS,
    "sum(gen_ai_client_inference_usage_input_tokens_total)": _count(lambda r: sum(c[2] or 0 for c in r[3])),
    'sum(gen_ai_client_inference_usage_input_tokens_total{gen_ai_token_modality="image"})': ROUNDS * 300,
    'sum(gen_ai_client_inference_usage_reasoning_output_tokens_total)': _count(lambda r: sum(c[6] for c in r[3])),
    'sum(model_finish_reasons_total{finish_reason="stop"})':
        _count(lambda r: sum(c[7] is None and c[0] != "o3-mini" for c in r[3])),
    'sum(model_finish_reasons_total{finish_reason="length"})': _count(lambda r: sum(c[0] == "o3-mini" for c in r[3])),
    "sum(model_output_tokens_per_second_count)": ROUNDS,  # the streamed call: 200 tokens over 1.2 - 0.35 s
    "sum(spanmeter_inference_without_usage_total)": ROUNDS * sum(c[2] is None for c in _calls()),
    "sum(agent_cost_per_run_dollars_count)": _count(lambda r: any(c[0] in PRICES and c[2] for c in r[3])),
    "sum(agent_tokens_per_run_sum)": _count(lambda r: sum((c[2] or 0) + (c[3] or 0) for c in r[3])),
    'sum(agent_estimated_cost_dollars_total{tenant="acme"})':
        ROUNDS * sum(_dollars(c) for r in ROUND if r[0] == "support" for c in r[3] if c[0] in PRICES),
    'sum(agent_requests_total{tenant="globex"})': _count(lambda r: r[0] == "research"),
    'sum(agent_token_usage_total{tenant="initech", token_type="input"})':
        _count(lambda r: r[0] == "billing" and sum(c[2] for c in r[3])),
}  # fmt: skip
# The alerts this workload must trigger (pending: their `for` has not passed). The others
# need history a 30-second-old Prometheus cannot have; promtool unit tests cover them.
TRIGGERED = {"AgentHighErrorRate", "AgentHighLatency", "ToolCallFailureSpike", "AgentQualityDegradation",
             "AgentErrorBudgetBurnFast", "AgentErrorBudgetBurnSlow", "AgentLatencyBudgetBurnFast",
             "AgentLatencyBudgetBurnSlow", "AgentUnpricedSpend"}  # fmt: skip


@pytest.fixture(scope="module")
def stack():
    """spanmeter serving the workload, and a real Prometheus scraping it every second."""
    prices = {"price": [{"model": m, "input": i, "output": o} for m, (i, o) in PRICES.items()]}
    evaluator = Evaluator(judge, sample_rate=1.0, read_span_content=True)
    meter = spanmeter.setup(service_name="e2e-agents", port=0, registry=CollectorRegistry(),
                            tracer_provider=TracerProvider(), prices=prices, price_catalogue=False,
                            evaluator=evaluator, attribution={"tenant": "app.tenant_id"})  # fmt: skip
    host, port = meter.address
    prom = LocalPrometheus(assets.PROMETHEUS_DIR, f"{host}:{port}", scrape_interval="1s", evaluation_interval="1s")
    prom.start()
    try:
        wait_until(lambda: prom.query('up{job="spanmeter"} == 1'), "the first scrape")
        for done in range(1, ROUNDS + 1):
            run_round(meter, done)
            want = done * len(ROUND)
            wait_until(lambda: [s for s in prom.query("sum(agent_requests_total) + sum(agent_evaluations_total)")
                           if float(s["value"][1]) == want + done * len(VERDICTS)],
                  f"round {done} and its evaluations in Prometheus")  # fmt: skip
            time.sleep(2.5)  # a few more scrapes and rule evaluations after the round
        yield meter, prom
    finally:
        prom.stop()
        meter.shutdown()




def _poll(prom, exprs: list[str], timeout: float = 15.0) -> dict[str, list]:
    """Run every expression until each returns a finite value (or the time is up).

    """
    results: dict[str, list] = {e: prom.query(e) for e in exprs}
    deadline = time.monotonic() + timeout
    pending = [e for e in exprs if not assets.finite(results[e])]
    while pending:
        for expr in list(pending):
            results[expr] = prom.query(expr)
            if assets.finite(results[expr]):
                pending.remove(expr)
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return results


def _print(results: dict[str, list]) -> None:
    """With ``-s``: how many series (with a number) each expression returned."""
    for expr, result in results.items():
        print(f"{len(assets.finite(result)):3d} | {' '.join(expr.split())}")


def test_totals_in_prometheus_match_the_workload(stack):
    _meter, prom = stack
    for expr, expected in EXPECTED_TOTALS.items():
        got = prom.query(expr)
        assert got and float(got[0]["value"][1]) == pytest.approx(expected, rel=1e-12, abs=1e-15), (expr, got)
    # the scrape config keeps the model metrics the article's relabel rule dropped
    assert prom.query("count(model_inference_duration_seconds_bucket)")


def test_every_dashboard_expression_returns_data(stack):
    _meter, prom = stack
    exprs = [assets.substitute(expr, window=WINDOW) for _title, expr in assets.dashboard_expressions()]
    # a stat's `or vector(0)` shows 0 for no data: its own query must return data too
    exprs += [e.removesuffix(" or vector(0)") for e in exprs if e.endswith(" or vector(0)")]
    results = _poll(prom, exprs)
    empty = [e for e, r in results.items() if not assets.finite(r)]
    _print(results)
    print(f"dashboard: {len(exprs)} expressions, {len(exprs) - len(empty)} returned data")
    assert not empty, "expressions without data:\n" + "\n".join(empty)


def test_every_dashboard_variable_lists_values(stack):
    _meter, prom = stack
    for name, query in assets.variable_queries():
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert match, query
        selector = assets.substitute(match.group(1))
        values = prom.api(f"label/{match.group(2)}/values", **{"match[]": selector})
        print(f"{len(values):3d} | {query} -> {values}")
        assert values, (name, query)
    assert set(prom.api("label/agent_name/values", **{"match[]": "agent_requests_total"})) == {
        "support", "research", "billing"}  # fmt: skip


def test_top_spenders_are_the_workloads_tenants_by_spend(stack):
    _meter, prom = stack
    (top,) = [t["expr"] for p in assets.panels() if p["title"] == "Top spenders by tenant ($/hour)" for t in p["targets"]]
    spend = {s["metric"]["tenant"]: float(s["value"][1]) for s in _poll(prom, [assets.substitute(top)])[assets.substitute(top)]}
    dollars = {t: sum(_dollars(c) for r in ROUND if TENANTS[r[0]] == t for c in r[3] if c[0] in PRICES) for t in TENANTS.values()}
    assert set(spend) == {"acme", "globex", "initech"}
    assert sorted(spend, key=spend.get) == sorted(dollars, key=dollars.get)  # the same order as the workload's spend
    budget = prom.query('tenant_budget_dollars_per_hour{tenant="acme"}')  # the operator's budgets file is loaded
    assert float(budget[0]["value"][1]) == 10


def test_every_recording_rule_returns_data(stack):
    _meter, prom = stack
    exprs = [r["expr"] for r in assets.recording_rules()]
    results = _poll(prom, exprs)
    empty = [e for e, r in results.items() if not assets.finite(r)]
    _print(results)
    print(f"recording rules: {len(exprs)} expressions, {len(exprs) - len(empty)} returned data")
    assert not empty, "recording rules without data:\n" + "\n".join(empty)
    # and Prometheus itself evaluates them: the recorded series exist
    recorded = [r["record"] for r in assets.recording_rules()]
    missing = [name for name in recorded if not prom.query(name)]
    assert not missing, missing


def test_every_alert_operand_returns_data_and_the_workload_triggers_its_alerts(stack):
    _meter, prom = stack
    history, operand_count, with_data = [], 0, 0
    for rule in assets.alert_rules():
        for operand in operands(rule["expr"]):
            if not references(operand).metrics:
                continue  # a threshold
            operand_count += 1
            result = prom.query(operand)  # raises on an expression Prometheus rejects
            _print({operand: result})
            if assets.finite(result):
                with_data += 1
            elif " offset " in operand:
                history.append(operand)  # needs an hour or a day of history
            else:
                raise AssertionError(f"{rule['alert']}: no data for {operand}")
    print(f"\nalert operands: {operand_count}, {with_data} returned data; without data by design:")
    for operand in history:
        print(f"  {operand}")
    full = {r["alert"]: bool(assets.finite(prom.query(r["expr"]))) for r in assets.alert_rules()}
    _print({r["expr"]: prom.query(r["expr"]) for r in assets.alert_rules()})
    assert {name for name, fired in full.items() if fired} == TRIGGERED
    active = wait_until(lambda: {a["labels"]["alertname"] for a in prom.api("alerts")["alerts"]} >= TRIGGERED or None,
                   "the triggered alerts to be pending in Prometheus")  # fmt: skip
    assert active


def test_the_renderer_draws_every_panel_from_range_queries(stack, tmp_path):
    from dashboards.render import draw, query_panels

    _meter, prom = stack
    end = time.time()
    results = query_panels(prom, end - 30, end)
    assert set(results) == {p["title"] for p in assets.panels()}
    empty = draw(results, end - 30, tmp_path / "panels.png")
    assert empty == []
    assert (tmp_path / "panels.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
