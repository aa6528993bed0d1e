"""Prometheus recording and alert rules for spanmeter's metrics, as data.

Names come from the catalogue through :func:`dashboards.promql.m`. Recording rules
follow the ``level:metric:operations`` convention; they hold the rates and ratios the
dashboard and the alerts share, and are the series worth keeping in long-term storage.

Alerts: the reference article's five, corrected (the cost alert reads the ``_total``
counter Prometheus really has; failures count timeouts too), multi-window
multi-burn-rate SLO alerts for agent errors and latency (Google SRE workbook, chapter
"Alerting on SLOs"), unpriced spend, a tool failure spike against its own baseline, and
two indirect prompt-injection signals (a tool an agent has not used before; a jump of
tokens per run).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from dashboards.promql import ATTRIBUTION_LABELS, m

# --- service level objectives (change here, then regenerate) --------------------------------
#: share of agent runs that must succeed (status="success")
AVAILABILITY_SLO = 0.99
#: share of agent runs that must finish within LATENCY_SLO_SECONDS (a bucket bound)
LATENCY_SLO = 0.99
LATENCY_SLO_SECONDS = 30
#: (severity, burn rate, long window, short window, for) of the SRE workbook's
#: recommended multi-window multi-burn-rate alerts: 2% of a 30-day budget in 1 h,
#: 5% in 6 h (page); 10% in 1 d, 10% in 3 d (ticket).
BURN_WINDOWS = (
    ("critical", 14.4, "1h", "5m"),
    ("critical", 6, "6h", "30m"),
    ("warning", 3, "1d", "2h"),
    ("warning", 1, "3d", "6h"),
)
SLO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
#: the cost anomaly alert ignores spend below this many dollars per hour
COST_ANOMALY_FLOOR = 1.0
#: tokens per run (30 min average) above this multiple of the 1-day average
TOKEN_SPIKE_FACTOR = 2
#: a tool's failure ratio above this multiple of its 1-day ratio (and above 2%)
TOOL_SPIKE_FACTOR = 3
NEW_TOOL_HISTORY = "7d"


@dataclass(frozen=True)
class Record:
    record: str
    expr: str


@dataclass(frozen=True)
class Alert:
    alert: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    runbook: str


def _e(text: str) -> str:
    return textwrap.dedent(text).strip()


def _ratio(bad: str, total: str, by: str) -> str:
    """``bad / total``, 0 (not absent) when there is traffic but nothing bad."""
    return f"(sum by ({by}) ({bad}) or sum by ({by}) ({total}) * 0)\n/ sum by ({by}) ({total})"


def _failed_ratio(window: str) -> str:
    total = f"rate({m('agent_requests')}[{window}])"
    bad = f'rate({m("agent_requests")}{{status!="success"}}[{window}])'
    return _ratio(bad, total, "agent_name")


def _slow_ratio(window: str) -> str:
    le = f'{{le=~"{LATENCY_SLO_SECONDS}(\\\\.0)?"}}'  # the exporter writes le="30.0"
    fast = f"sum by (agent_name) (rate({m('agent_request_duration', '_bucket')}{le}[{window}]))"
    total = f"sum by (agent_name) (rate({m('agent_request_duration', '_count')}[{window}]))"
    return f"1 - {fast}\n/ {total}"


FAILED = "agent_name:agent_requests_failed:ratio_rate{}"
SLOW = "agent_name:agent_requests_slow:ratio_rate{}"
TOOL_FAILED = "tool_name:agent_tool_calls_failed:ratio_rate{}"
COST_RATE = "agent_name_model_id:agent_estimated_cost_dollars:rate1h"
TOOLS_PRESENT = "agent_name_tool_name:agent_tool_calls:present"
TOKENS_AVG = "agent_name:agent_tokens_per_run:avg{}"
#: cost per attribution label (tenant, ...) per second over an hour: {label}
SPEND_RATE = "{}:agent_estimated_cost_dollars:rate1h"
#: the budgets the operator writes in budgets.rules.yml (not generated): {label}
BUDGET = "{}_budget_dollars_per_hour"


def _tool_failed_ratio(window: str) -> str:
    total = f"rate({m('agent_tool_calls')}[{window}])"
    bad = f'rate({m("agent_tool_calls")}{{status!="success"}}[{window}])'
    return _ratio(bad, total, "tool_name")


def _tokens_avg(window: str) -> str:
    return (
        f"sum by (agent_name) (rate({m('agent_tokens_per_run', '_sum')}[{window}]))\n"
        f"/ sum by (agent_name) (rate({m('agent_tokens_per_run', '_count')}[{window}]))"
    )


def recording_rules() -> dict[str, list[Record]]:
    """Recording rules by group name."""
    rates = [
        Record("agent_name_status:agent_requests:rate5m",
               f"sum by (agent_name, status) (rate({m('agent_requests')}[5m]))"),
        Record("agent_name_le:agent_request_duration_seconds_bucket:rate5m",
               f"sum by (agent_name, le) (rate({m('agent_request_duration', '_bucket')}[5m]))"),
        Record("agent_name_model_id:model_inference_calls:rate5m",
               f"sum by (agent_name, model_id) (rate({m('model_inference_calls')}[5m]))"),
        Record("agent_name_model_id_le:model_inference_duration_seconds_bucket:rate5m",
               f"sum by (agent_name, model_id, le) (rate({m('model_inference_duration', '_bucket')}[5m]))"),
        Record("agent_name_model_id_token_type:agent_token_usage:rate5m",
               f"sum by (agent_name, model_id, token_type) (rate({m('agent_token_usage')}[5m]))"),
        Record("agent_name_tool_name_status:agent_tool_calls:rate5m",
               f"sum by (agent_name, tool_name, status) (rate({m('agent_tool_calls')}[5m]))"),
        Record(TOOL_FAILED.format("5m"), _tool_failed_ratio("5m")),
        Record(TOOL_FAILED.format("1d"), _tool_failed_ratio("1d")),
        Record(COST_RATE,
               f"sum by (agent_name, model_id) (rate({m('agent_estimated_cost_dollars')}[1h]))"),
        Record("model_id:agent_unpriced_calls:increase1h",
               f"sum by (model_id) (increase({m('agent_unpriced_calls')}[1h]))"),
        Record("agent_name:agent_escalations:ratio_rate1h",
               _ratio(f"rate({m('agent_escalations')}[1h])", f"rate({m('agent_conversations')}[1h])",
                      "agent_name")),
        Record(TOKENS_AVG.format("30m"), _tokens_avg("30m")),
        Record(TOKENS_AVG.format("1d"), _tokens_avg("1d")),
        Record(TOOLS_PRESENT, f"group by (agent_name, tool_name) ({m('agent_tool_calls')})"),
        Record("gen_ai_workflow_name_le:gen_ai_invoke_workflow_duration_seconds_bucket:rate5m",
               f"sum by (gen_ai_workflow_name, le) (rate({m('gen_ai.invoke_workflow.duration', '_bucket')}[5m]))"),
    ]  # fmt: skip
    rates += [Record(SPEND_RATE.format(label), f"sum by ({label}) (rate({m('agent_estimated_cost_dollars')}[1h]))")
              for label in ATTRIBUTION_LABELS]  # fmt: skip
    slo = [Record(FAILED.format(w), _failed_ratio(w)) for w in SLO_WINDOWS]
    slo += [Record(SLOW.format(w), _slow_ratio(w)) for w in SLO_WINDOWS]
    return {"spanmeter.rates": rates, "spanmeter.slo": slo}


def _burn(series: str, budget: float, pairs) -> str:
    clauses = [
        f"({series.format(long)} > ({burn} * {budget:g})\n and {series.format(short)} > ({burn} * {budget:g}))"
        for _severity, burn, long, short in pairs
    ]
    return "\nor\n".join(clauses)


def _burn_alerts(name: str, series: str, objective: float, what: str, runbook: str) -> list[Alert]:
    budget = round(1 - objective, 6)
    page = [w for w in BURN_WINDOWS if w[0] == "critical"]
    ticket = [w for w in BURN_WINDOWS if w[0] == "warning"]
    windows = lambda ws: ", ".join(f"{b}x over {lg} and {s}" for _, b, lg, s in ws)  # noqa: E731
    return [
        Alert(f"{name}BudgetBurnFast", _burn(series, budget, page), "2m", "critical",
              f"Agent {{{{ $labels.agent_name }}}} is burning its {what} error budget fast",
              f"The {what} SLO ({objective:.1%}) of agent {{{{ $labels.agent_name }}}} loses budget at "
              f"{windows(page)}: at this pace a 30-day budget lasts days. Bad-run ratio now: "
              "{{ $value | humanizePercentage }}.", runbook),
        Alert(f"{name}BudgetBurnSlow", _burn(series, budget, ticket), "15m", "warning",
              f"Agent {{{{ $labels.agent_name }}}} is slowly burning its {what} error budget",
              f"The {what} SLO ({objective:.1%}) of agent {{{{ $labels.agent_name }}}} loses budget at "
              f"{windows(ticket)}: the 30-day budget will run out before the month ends. Bad-run ratio: "
              "{{ $value | humanizePercentage }}.", runbook),
    ]  # fmt: skip


def alert_rules() -> dict[str, list[Alert]]:
    """Alert rules by group name."""
    cost_now = f"sum({COST_RATE}) * 3600"
    article = [
        Alert("AgentHighErrorRate", f"{FAILED.format('5m')} > 0.05", "5m", "critical",
              "Agent {{ $labels.agent_name }} error rate above 5%",
              "{{ $value | humanizePercentage }} of the runs of agent {{ $labels.agent_name }} ended in an "
              "error or a timeout over the last 5 minutes.",
              "Overview row: which status grows; Model performance row: inference errors by type "
              "(rate limits, provider errors); Tool performance row: a failing tool the agent does not survive."),
        Alert("AgentHighLatency",
              "histogram_quantile(0.95,\n  sum by (agent_name, le) "
              "(agent_name_le:agent_request_duration_seconds_bucket:rate5m)\n) > 10", "5m", "warning",
              "Agent {{ $labels.agent_name }} P95 latency above 10s",
              "95% of the runs of agent {{ $labels.agent_name }} take up to {{ $value | humanizeDuration }} "
              "(threshold 10s) over the last 5 minutes.",
              "Compare inference latency by model, inference calls per run and tool latency on the "
              "dashboard: a slower model, more LLM round trips or a slow tool."),
        Alert("ToolCallFailureSpike", f"{TOOL_FAILED.format('5m')} > 0.1", "3m", "critical",
              "Tool {{ $labels.tool_name }} failure rate above 10%",
              "{{ $value | humanizePercentage }} of the calls of tool {{ $labels.tool_name }} failed or timed "
              "out over the last 5 minutes.",
              "Tool performance row: the tool's status split and latency; the integration behind the tool "
              "(credentials, quota, upstream outage); error.type in gen_ai_execute_tool_duration_seconds_count."),
        Alert("AgentQualityDegradation", f'{m("agent_quality_score")}{{metric_type="groundedness"}} < 0.70',
              "15m", "warning",
              "Agent {{ $labels.agent_name }} groundedness score dropped below 0.70",
              "The rolling groundedness score of agent {{ $labels.agent_name }} is {{ $value }} "
              "(warning below 0.70, healthy from 0.85).",
              "Look for a recent prompt, model or retrieval change; sample low-scoring traces; check whether "
              "tool failures leave the agent without context."),
        Alert("AgentCostAnomaly",
              f"{cost_now}\n> 2 * sum({COST_RATE} offset 1d) * 3600\nand {cost_now} > {COST_ANOMALY_FLOOR:g}",
              "30m", "warning",
              "Agent cost per hour is 2x higher than same time yesterday",
              "Estimated model spend is {{ $value | humanize }} $/h, more than twice the same hour yesterday "
              f"(spend below {COST_ANOMALY_FLOOR:g} $/h is ignored).",
              "Cost row: which agent and model; tokens per run and inference calls per run (a prompt change "
              "or a loop); model routing distribution (traffic moved to a dearer model)."),
    ]  # fmt: skip
    slo = _burn_alerts("AgentError", FAILED, AVAILABILITY_SLO, "availability",
                       "Overview row: error rate and status split; then the inference error types and tool "
                       "failures of the agent. Roll back a recent change if the burn started with it.")
    slo += _burn_alerts("AgentLatency", SLOW, LATENCY_SLO, f"latency ({LATENCY_SLO_SECONDS}s)",
                        "Overview row: P95/P99; Model performance row: inference latency by model and calls "
                        "per run; Tool performance row: tool latency.")  # fmt: skip
    spend = [
        Alert("AgentUnpricedSpend", "model_id:agent_unpriced_calls:increase1h > 0", "5m", "warning",
              "Calls to model {{ $labels.model_id }} cannot be priced",
              "{{ $value | humanize }} inference calls to model {{ $labels.model_id }} in the last hour had "
              "token usage but no known price: their cost is missing from "
              "agent_estimated_cost_dollars_total, so the cost panels under-report.",
              "Add a price for the model (or the alias it reports) to spanmeter's price overrides, or "
              "update the price catalogue; agent_unpriced_tokens_total shows the tokens not counted."),
        Alert("ToolCallFailuresAboveBaseline",
              f"{TOOL_FAILED.format('5m')}\n> {TOOL_SPIKE_FACTOR} * {TOOL_FAILED.format('1d')}\n"
              f"and {TOOL_FAILED.format('5m')} > 0.02", "10m", "warning",
              "Tool {{ $labels.tool_name }} fails more than usual",
              "The failure ratio of tool {{ $labels.tool_name }} is {{ $value | humanizePercentage }} over "
              f"5 minutes, more than {TOOL_SPIKE_FACTOR}x its 1-day ratio (below the 10% of "
              "ToolCallFailureSpike, but not its normal).",
              "Tool performance row: the tool's error and timeout split and latency; recent deploys of "
              "the integration; error.type in gen_ai_execute_tool_duration_seconds_count."),
    ]  # fmt: skip
    injection = [
        Alert("AgentNewToolUsed",
              f"{TOOLS_PRESENT}\nunless on (agent_name, tool_name) "
              f"max_over_time({TOOLS_PRESENT}[{NEW_TOOL_HISTORY}] offset 1h)\n"
              f"unless on () absent_over_time({TOOLS_PRESENT}[1h] offset 1d)", "0m", "warning",
              "Agent {{ $labels.agent_name }} called tool {{ $labels.tool_name }} for the first time",
              f"Agent {{{{ $labels.agent_name }}}} called {{{{ $labels.tool_name }}}}, a tool it had not used in "
              f"the {NEW_TOOL_HISTORY} before the last hour. Calling tools an agent does not normally use is an "
              "indirect sign of prompt injection (or a new release). Fires for an hour; silent until the rules "
              "have a day of history.",
              "Find the runs in your traces (execute_tool span, gen_ai.tool.name) and read their inputs; "
              "check whether a release added the tool; look for co-occurring token-per-run spikes and "
              "quality drops."),
        Alert("AgentTokensPerRunSpike",
              f"{TOKENS_AVG.format('30m')}\n> {TOKEN_SPIKE_FACTOR} * {TOKENS_AVG.format('1d')}\n"
              f"and on (agent_name) sum by (agent_name) (increase({m('agent_tokens_per_run', '_count')}[30m])) "
              ">= 10", "15m", "warning",
              "Agent {{ $labels.agent_name }} uses many more tokens per run than usual",
              f"Runs of agent {{{{ $labels.agent_name }}}} average {{{{ $value | humanize }}}} tokens over 30 "
              f"minutes, more than {TOKEN_SPIKE_FACTOR}x the 1-day average. Longer inputs are an indirect sign "
              "of prompt injection; also of a prompt change or a loop of LLM calls.",
              "Model performance row: inference calls per run and token usage by type; sample the largest "
              "runs in your traces and read their inputs; check for new tools (AgentNewToolUsed)."),
    ]  # fmt: skip
    groups = {"spanmeter.agents": article, "spanmeter.slo-burn": slo,
              "spanmeter.spend-and-tools": spend, "spanmeter.prompt-injection-signals": injection}  # fmt: skip
    if ATTRIBUTION_LABELS:
        groups["spanmeter.budgets"] = [_budget_alert(ATTRIBUTION_LABELS[0])]
    return groups


def _budget_alert(label: str) -> Alert:
    """Spend of one ``label`` value (a tenant) above the budget the operator set for it."""
    return Alert(
        f"{label.title().replace('_', '')}OverBudget",
        f"{SPEND_RATE.format(label)} * 3600\n> on ({label}) {BUDGET.format(label)}", "15m", "warning",
        f"{label.title()} {{{{ $labels.{label} }}}} spends more than its budget",
        f"Estimated model spend of {label} {{{{ $labels.{label} }}}} is {{{{ $value | humanize }}}} $/h over the "
        f"last hour, above its {BUDGET.format(label)} (set in budgets.rules.yml; a {label} without a "
        "budget there never fires).",
        f"Who spends row: the {label}'s agents and models; tokens and calls per run (a loop, a prompt change, a "
        f"dearer model); raise the budget in budgets.rules.yml if the spend is expected.")



def recording_document() -> dict:
    return {"groups": [{"name": name, "rules": [{"record": r.record, "expr": r.expr} for r in rules]}
                       for name, rules in recording_rules().items()]}  # fmt: skip


def alert_document() -> dict:
    groups = []
    for name, alerts in alert_rules().items():
        rules = []
        for a in alerts:
            rule = {"alert": a.alert, "expr": a.expr}
            if a.for_ != "0m":
                rule["for"] = a.for_
            rule["labels"] = {"severity": a.severity}
            rule["annotations"] = {"summary": a.summary, "description": a.description, "runbook": a.runbook}
            rules.append(rule)
        groups.append({"name": name, "rules": rules})
    return {"groups": groups}
