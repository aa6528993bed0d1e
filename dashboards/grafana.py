"""The "AI Agent Operations" Grafana dashboard, built with grafana-foundation-sdk.

Sections follow the reference article (overview, model performance, tool performance,
cost) plus quality and conversations. Every metric name comes from the catalogue via
:func:`dashboards.promql.m`; fixed long windows (cost per hour, escalation ratio) read
the recording rules of :mod:`dashboards.rules`, so load those rules with the dashboard.
"""

from __future__ import annotations

import itertools

from grafana_foundation_sdk.builders import bargauge, common, dashboard, gauge, piechart, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

from dashboards import rules
from dashboards.promql import ATTRIBUTION_LABELS, m

UID = "spanmeter-ai-agent-operations"
TITLE = "AI Agent Operations"
GENERATED = (
    "GENERATED FILE, DO NOT EDIT: regenerate with `python -m dashboards.generate` (source: dashboards/grafana.py, "
    "metric names from spanmeter's catalogue)."
)
DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
A = 'agent_name=~"$agent_name"'
M = 'model_id=~"$model_id"'
AM = 'agent_name=~"$agent_name", model_id=~"$model_id"'
RI = "$__rate_interval"

_ids = itertools.count(1)


def _thresholds(*steps: tuple[float | None, str]):
    return dashboard.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
        [dm.Threshold(value, color) for value, color in steps]
    )


def _legend(calcs=("mean", "max")):
    return (common.VizLegendOptions().display_mode(cm.LegendDisplayMode.TABLE).placement(cm.LegendPlacement.BOTTOM)
            .show_legend(True).calcs(list(calcs)))  # fmt: skip


def _queries(panel, queries, exemplars=False):
    for ref, (expr, legend) in zip("ABCDEFGH", queries):
        query = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref)
        panel = panel.with_target(query.exemplar(True) if exemplars else query)
    return panel


def ts(title: str, description: str, unit: str, *queries, thresholds=None, min_=None, max_=None,
       stacked=False, bars=False, width=8, height=8, exemplars=False):  # fmt: skip
    """A time series panel; ``exemplars``: its queries ask for exemplars (a link from a spike to its trace)."""
    panel = (timeseries.Panel().id(next(_ids)).title(title).description(description).datasource(DS).unit(unit)
             .span(width).height(height).legend(_legend())
             .tooltip(common.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING))
             .thresholds(thresholds or _thresholds((None, "green"))))  # fmt: skip
    if thresholds:
        panel = panel.thresholds_style(common.GraphThresholdsStyleConfig().mode(cm.GraphTresholdsStyleMode.LINE))
    if min_ is not None:
        panel = panel.min(min_)
    if max_ is not None:
        panel = panel.max(max_)
    if stacked:
        panel = panel.stacking(common.StackingConfig().mode(cm.StackingMode.NORMAL)).fill_opacity(60)
    if bars:
        panel = panel.draw_style(cm.GraphDrawStyle.BARS).fill_opacity(80)
    return _queries(panel, queries, exemplars)


def stat_(title: str, description: str, unit: str, *queries, thresholds=None, width=4, height=6):
    """A single-value panel showing the last value."""
    panel = (stat.Panel().id(next(_ids)).title(title).description(description).datasource(DS).unit(unit)
             .span(width).height(height).color_mode(cm.BigValueColorMode.BACKGROUND)
             .graph_mode(cm.BigValueGraphMode.AREA)
             .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
             .thresholds(thresholds or _thresholds((None, "blue"))))  # fmt: skip
    return _queries(panel, queries)


def gauge_(title: str, description: str, unit: str, *queries, thresholds, min_, max_, width=8, height=8):
    panel = (gauge.Panel().id(next(_ids)).title(title).description(description).datasource(DS).unit(unit)
             .span(width).height(height).min(min_).max(max_).thresholds(thresholds)
             .show_threshold_markers(True)
             .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))  # fmt: skip
    return _queries(panel, queries)


def pie(title: str, description: str, unit: str, *queries, width=8, height=8):
    panel = (piechart.Panel().id(next(_ids)).title(title).description(description).datasource(DS).unit(unit)
             .span(width).height(height)
             .legend(piechart.PieChartLegendOptions().display_mode(cm.LegendDisplayMode.TABLE)
                     .placement(cm.LegendPlacement.RIGHT).show_legend(True).values(["percent", "value"]))
             .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))  # fmt: skip
    return _queries(panel, queries)


def bars(title: str, description: str, unit: str, *queries, thresholds=None, width=8, height=8):
    panel = (bargauge.Panel().id(next(_ids)).title(title).description(description).datasource(DS).unit(unit)
             .span(width).height(height).orientation(cm.VizOrientation.HORIZONTAL)
             .display_mode(cm.BarGaugeDisplayMode.GRADIENT)
             .thresholds(thresholds or _thresholds((None, "blue")))
             .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))  # fmt: skip
    return _queries(panel, queries)


def _rate(name: str, selector: str, suffix: str = "", window: str = RI) -> str:
    return f"rate({m(name, suffix)}{{{selector}}}[{window}])"


def _quantile(q: float, name: str, by: str, selector: str) -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) ({_rate(name, selector, '_bucket')}))"


def _mean(name: str, by: str, selector: str) -> str:
    return f"sum by ({by}) ({_rate(name, selector, '_sum')})\n/ sum by ({by}) ({_rate(name, selector, '_count')})"


def _ratio(bad: str, total: str, by: str) -> str:
    return f"(sum by ({by}) ({bad}) or sum by ({by}) ({total}) * 0)\n/ sum by ({by}) ({total})"


def overview():
    failed = _ratio(_rate("agent_requests", A + ', status!="success"'), _rate("agent_requests", A), "agent_name")
    return [
        ts("Request rate by status", "Agent runs per second by outcome (success, error, timeout).", "reqps",
           (f"sum by (agent_name, status) ({_rate('agent_requests', A)})", "{{agent_name}} - {{status}}"),
           stacked=True),
        ts("Error rate", "Share of agent runs that ended in an error or a timeout. Line: the 5% of the "
           "AgentHighErrorRate alert.", "percentunit", (failed, "{{agent_name}}"),
           thresholds=_thresholds((None, "green"), (0.05, "red")), min_=0),
        ts("Request latency (P50 / P95 / P99)", "Duration of agent runs, including all model and tool calls. "
           "Line: the 10 s of the AgentHighLatency alert (P95).", "s",
           *[(_quantile(q, "agent_request_duration", "agent_name", A), f"{{{{agent_name}}}} P{int(q * 100)}")
             for q in (0.5, 0.95, 0.99)],
           thresholds=_thresholds((None, "green"), (10, "red")), exemplars=True),
        ts("Error budget burn rate (1h)", f"How fast each agent spends its {rules.AVAILABILITY_SLO:.0%} availability "
           "error budget over the last hour (1 = exactly on budget). Line: 14.4, the fast-burn page.", "x",
           (f"{rules.FAILED.format('1h')}{{{A}}} / {1 - rules.AVAILABILITY_SLO:g}", "{{agent_name}} errors"),
           (f"{rules.SLOW.format('1h')}{{{A}}} / {1 - rules.LATENCY_SLO:g}", "{{agent_name}} latency"),
           thresholds=_thresholds((None, "green"), (1, "yellow"), (14.4, "red")), min_=0, width=24, height=6),
    ]  # fmt: skip


def model_performance():
    genai = 'gen_ai_request_model=~"$model_id", error_type!=""'
    GM = 'gen_ai_request_model=~"$model_id"'
    return [
        ts("Inference latency by model (P50 / P95)", "Duration of model inference calls (excludes tool execution).",
           "s", *[(_quantile(q, "model_inference_duration", "model_id", AM), f"{{{{model_id}}}} P{int(q * 100)}")
                  for q in (0.5, 0.95)], exemplars=True),
        ts("Token usage by model and type", "Tokens per minute. input includes cache reads and writes; output "
           "includes reasoning.", "short",
           (f"sum by (model_id, token_type) ({_rate('agent_token_usage', AM)}) * 60",
            "{{model_id}} {{token_type}}")),
        ts("Inference calls per run", "LLM round trips one agent run needs: mean and P95.", "short",
           (_mean("agent_inference_calls_per_run", "agent_name", A), "{{agent_name}} mean"),
           (_quantile(0.95, "agent_inference_calls_per_run", "agent_name", A), "{{agent_name}} P95")),
        pie("Model routing distribution", "Share of inference calls per model over the dashboard's time range "
            "(is the routing or cascade doing what it should?).", "short",
            (f"sum by (model_id) (increase({m('model_inference_calls')}{{{AM}}}[$__range]))", "{{model_id}}")),
        ts("Inference errors by type", "Failed inference calls per second by provider and error type "
           "(rate limits, server errors, timeouts), from the GenAI convention metric "
           "gen_ai.client.inference.duration.", "reqps",
           ("sum by (gen_ai_provider_name, error_type) ("
            f"{_rate('gen_ai.client.inference.duration', genai, '_count')})",
            "{{gen_ai_provider_name}} {{error_type}}"), bars=True),
        ts("Tokens per run", "Input plus output tokens of one agent run: mean over 30 min against the 1-day mean "
           "(the AgentTokensPerRunSpike alert fires above 2x).", "short",
           (f"{rules.TOKENS_AVG.format('30m')}{{{A}}}", "{{agent_name}} 30 min"),
           (f"{rules.TOKENS_AVG.format('1d')}{{{A}}}", "{{agent_name}} 1 day")),
        ts("Time to first token by model (P50 / P95)", "Streamed responses: time from the request to the first "
           "chunk, from the GenAI convention metric gen_ai.client.inference.time_to_first_chunk.", "s",
           *[(_quantile(q, "gen_ai.client.inference.time_to_first_chunk", "gen_ai_request_model",
                        'gen_ai_request_model=~"$model_id"'), f"{{{{gen_ai_request_model}}}} P{int(q * 100)}")
             for q in (0.5, 0.95)]),
        ts("Output speed of streams by model (P50 / P95)", "Streamed responses: output tokens (less reasoning) "
           "per second from the first chunk to the end.", "short",
           *[(_quantile(q, "model_output_tokens_per_second", "model_id", AM), f"{{{{model_id}}}} P{int(q * 100)}")
             for q in (0.5, 0.95)]),
        ts("Finish reasons by model", "Generations per second by why the model stopped (stop, length: cut by "
           "max tokens, tool_calls, content_filter ...). A rise of length or content_filter shows truncated or "
           "blocked answers.", "short",
           (f"sum by (model_id, finish_reason) ({_rate('model_finish_reasons', AM)})",
            "{{model_id}} {{finish_reason}}"), stacked=True),
        ts("Input tokens by modality", "Input tokens per minute by gen_ai.token.modality (text, image, audio; "
           "unknown: what the instrumentation did not break down), from the GenAI usage counter.", "short",
           (f"sum by (gen_ai_token_modality) ({_rate('gen_ai.client.inference.usage.input_tokens', GM)}) * 60",
            "{{gen_ai_token_modality}}"),
           width=24, height=6),
    ]  # fmt: skip


def tool_performance():
    T = A + ', tool_name=~"$tool_name"'
    ok = _rate("agent_tool_calls", T + ', status="success"')
    total = _rate("agent_tool_calls", T)
    success = f"(sum by (tool_name) ({ok}) or sum by (tool_name) ({total}) * 0)\n/ sum by (tool_name) ({total}) * 100"
    return [
        ts("Tool call success rate", "Share of tool calls that succeeded. Line: 90%, where ToolCallFailureSpike "
           "fires.", "percent", (success, "{{tool_name}}"),
           thresholds=_thresholds((None, "red"), (90, "green")), min_=0, max_=100),
        ts("Tool call latency (P95)", "Duration of individual tool calls.", "s",
           (_quantile(0.95, "agent_tool_call_duration", "tool_name", T), "{{tool_name}} P95"), exemplars=True),
        ts("Tool call volume by status", "Tool calls per second per tool and outcome.", "reqps",
           (f"sum by (tool_name, status) ({total})", "{{tool_name}} {{status}}"), stacked=True, bars=True),
        ts("Tool calls per run", "Tool calls one agent run makes: mean and P95.", "short",
           (_mean("agent_tool_calls_per_run", "agent_name", A), "{{agent_name}} mean"),
           (_quantile(0.95, "agent_tool_calls_per_run", "agent_name", A), "{{agent_name}} P95"), width=24, height=6),
        ts("Tool call decisions", "Decisions taken before a tool ran (gen_ai.tool.call.decision), per second: "
           "allow, deny, require_approval (a human or another approver was asked).", "reqps",
           (f"sum by (tool_name, decision) ({_rate('agent_tool_call_decisions', T)})", "{{tool_name}} {{decision}}"),
           stacked=True, bars=True, width=24, height=6),
    ]  # fmt: skip


def cost():
    cost_rate = f"{rules.COST_RATE}{{{AM}}}"
    money = _thresholds((None, "blue"))
    return [
        stat_("Estimated cost ($/hour)", "Estimated model spend over the last hour, in dollars per hour.",
              "currencyUSD", (f"sum({cost_rate}) * 3600", "Cost/Hour"), thresholds=money),
        stat_("Estimated cost (last 24 h)", "Estimated model spend over the last 24 hours.", "currencyUSD",
              (f"sum(increase({m('agent_estimated_cost_dollars')}{{{AM}}}[1d]))", "Cost/Day"), thresholds=money),
        stat_("Cost per run", "Mean estimated cost of one agent run (one interaction).", "currencyUSD",
              (f"sum({_rate('agent_cost_per_run_dollars', A, '_sum')})\n"
               f"/ sum({_rate('agent_cost_per_run_dollars', A, '_count')})",
               "Cost/Run"), thresholds=money),
        stat_("Unpriced calls", "Inference calls in the time range whose model has no known price: their cost "
              "is missing from the panels here (alert: AgentUnpricedSpend).", "short",
              (f"sum(increase({m('agent_unpriced_calls')}{{{M}}}[$__range])) or vector(0)",
               "Unpriced calls"), thresholds=_thresholds((None, "green"), (1, "red"))),
        stat_("Calls without usage", "Inference calls in the time range whose spans carried no token usage "
              "(failed calls, streams without usage): their tokens and cost are missing, not zero.", "short",
              (f"sum(increase({m('spanmeter_inference_without_usage')}{{{M}}}[$__range])) or vector(0)",
               "Calls without usage"), thresholds=_thresholds((None, "green"), (1, "yellow"))),
        ts("Cost per hour by model", "Estimated spend in dollars per hour (1-hour rate) by agent and model.",
           "currencyUSD", (f"sum by (agent_name, model_id) ({cost_rate}) * 3600", "{{agent_name}} {{model_id}}"),
           width=8),
        ts("Cost per run (mean / P95)", "Estimated cost of one agent run by agent.", "currencyUSD",
           (_mean("agent_cost_per_run_dollars", "agent_name", A), "{{agent_name}} mean"),
           (_quantile(0.95, "agent_cost_per_run_dollars", "agent_name", A), "{{agent_name}} P95"), width=8),
        bars("Unpriced tokens by model and type", "Tokens of calls that could not be priced, over the time range.",
             "short", (f"sum by (model_id, token_type) (increase({m('agent_unpriced_tokens')}"
                       f"{{{M}}}[$__range]))", "{{model_id}} {{token_type}}"), width=8),
    ]  # fmt: skip


def quality():
    article = _thresholds((0, "red"), (0.7, "yellow"), (0.85, "green"))
    score = m("agent_quality_score")
    return [
        gauge_("Agent quality score (rolling)", "Rolling average of evaluation scores (0..1). Red below 0.70 "
               "(AgentQualityDegradation), green from 0.85.", "none",
               (f'{score}{{{A}, metric_type="groundedness"}}', "{{agent_name}} groundedness"),
               (f'{score}{{{A}, metric_type="relevance"}}', "{{agent_name}} relevance"),
               thresholds=article, min_=0, max_=1, width=8),
        ts("Quality scores over time", "Every evaluation metric type by agent.", "none",
           (f"{score}{{{A}}}", "{{agent_name}} {{metric_type}}"), thresholds=article, min_=0, max_=1, width=16),
        ts("Evaluation scores (P10 / P50)", "Distribution of single evaluation scores: the low tail shows bad "
           "answers a rolling average hides.", "none",
           *[(_quantile(q, "agent_evaluation_score", "agent_name, metric_type", A),
              f"{{{{agent_name}}}} {{{{metric_type}}}} P{int(q * 100)}") for q in (0.1, 0.5)],
           thresholds=article, min_=0, max_=1, width=12),
        ts("Evaluations by outcome", "Sampled runs judged per minute: done, failed (judge error, timeout, "
           "malformed verdict) or dropped (queue full).", "short",
           (f"sum by (agent_name, status) ({_rate('agent_evaluations', A)}) * 60", "{{agent_name}} {{status}}"),
           stacked=True, bars=True, width=12),
    ]  # fmt: skip


def conversations():
    return [
        ts("Turns per conversation (mean / P95)", "Turns of finished conversations.", "short",
           (_mean("agent_conversation_turns", "agent_name", A), "{{agent_name}} mean"),
           (_quantile(0.95, "agent_conversation_turns", "agent_name", A), "{{agent_name}} P95")),
        ts("Escalation rate (1h)", "Share of finished conversations escalated to a human over the last hour, "
           "computed in PromQL from counters (survives restarts, sums across replicas).", "percentunit",
           (f"{'agent_name:agent_escalations:ratio_rate1h'}{{{A}}}", "{{agent_name}}"),
           thresholds=_thresholds((None, "green"), (0.2, "red")), min_=0),
        ts("Finished conversations", "Conversations finished per hour.", "short",
           (f"sum by (agent_name) ({_rate('agent_conversations', A)}) * 3600", "{{agent_name}}")),
        ts("Conversations ended by reason", "How followed conversations (gen_ai.conversation.id) ended, per "
           "hour: app (the application ended it), idle (timeout without a turn), evicted (too many open).",
           "short", (f"sum by (reason) (rate({m('spanmeter_conversations_ended')}[{RI}])) * 3600", "{{reason}}"),
           width=16),
        stat_("Open conversations", "Conversations followed by gen_ai.conversation.id that are open now.",
              "short", (f"sum({m('spanmeter_open_conversations')})", "open"), width=8, height=8),
    ]  # fmt: skip


def workflows():
    W = 'gen_ai_workflow_name=~".+"'
    runs = f"sum by (gen_ai_workflow_name) ({_rate('gen_ai.invoke_workflow.duration', W, '_count')})"
    return [
        ts("Workflow runs", "Workflows (spans that coordinate agent runs: invoke_workflow, or a nameless "
           "agent span around named ones) per second.", "reqps", (runs, "{{gen_ai_workflow_name}}"), width=8),
        ts("Workflow latency (P95)", "End-to-end duration of a workflow, all its agent runs included.", "s",
           (_quantile(0.95, "gen_ai.invoke_workflow.duration", "gen_ai_workflow_name", W),
            "{{gen_ai_workflow_name}} P95"), width=8),
        ts("Calls per workflow", "Model inference calls and tool calls one workflow makes, all its agent "
           "runs included (mean).", "short",
           (_mean("gen_ai.invoke_workflow.inference_calls", "gen_ai_workflow_name", W), "{{gen_ai_workflow_name}} LLM calls"),
           (_mean("gen_ai.invoke_workflow.tool_calls", "gen_ai_workflow_name", W), "{{gen_ai_workflow_name}} tool calls"),
           width=8),
    ]  # fmt: skip


def spenders():
    """Who spends: cost, budget, tokens and runs per attribution label (tenant, ...)."""
    panels = []
    for label in ATTRIBUTION_LABELS:
        sel = f'{label}=~"${label}"'
        spend = f"sum by ({label}) ({rules.SPEND_RATE.format(label)}{{{sel}}}) * 3600"
        legend = f"{{{{{label}}}}}"
        panels += [
            bars(f"Top spenders by {label} ($/hour)", f"The 10 {label} values with the highest estimated model "
                 "spend over the last hour (configure(attribution=...) sets the label).", "currencyUSD",
                 (f"topk(10, {spend})", legend), width=8),
            ts(f"Cost per hour by {label}", f"Estimated model spend in dollars per hour (1-hour rate) by {label}.",
               "currencyUSD", (spend, legend), width=8),
            ts(f"Spend against budget by {label}", f"Spend per hour over the {label}'s budget "
               f"({rules.BUDGET.format(label)} in budgets.rules.yml; no line without one). Line: 100%, where "
               f"{label.title().replace('_', '')}OverBudget fires.", "percentunit",
               (f"{spend}\n/ on ({label}) {rules.BUDGET.format(label)}", legend),
               thresholds=_thresholds((None, "green"), (1, "red")), min_=0, width=8),
            ts(f"Tokens by {label} and type", "Tokens per minute. input includes cache reads and writes; output "
               "includes reasoning.", "short",
               (f"sum by ({label}, token_type) ({_rate('agent_token_usage', A + ', ' + sel)}) * 60",
                f"{legend} {{{{token_type}}}}"), width=12),
            ts(f"Agent runs by {label}", "Agent runs per second by agent and outcome.", "reqps",
               (f"sum by ({label}, agent_name, status) ({_rate('agent_requests', A + ', ' + sel)})",
                f"{legend} {{{{agent_name}}}} {{{{status}}}}"), stacked=True, width=12),
        ]  # fmt: skip
    return panels


SECTIONS = (
    ("Overview", overview),
    ("Model performance", model_performance),
    ("Tool performance", tool_performance),
    ("Cost", cost),
    ("Quality", quality),
    ("Conversations", conversations),
    ("Workflows", workflows),
    ("Who spends", spenders),
)


def _variable(name: str, label: str, query: str):
    return (dashboard.QueryVariable(name).label(label).datasource(DS).query(query)
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC)
            .multi(True).include_all(True).all_value(".*")
            .current(dm.VariableOption(selected=True, text="All", value="$__all")))  # fmt: skip


def build():
    """The dashboard builder."""
    global _ids
    _ids = itertools.count(1)
    board = (
        dashboard.Dashboard(TITLE).uid(UID).tags(["spanmeter", "ai-agents", "generated"])
        .description(f"Agents, models, tools, cost, quality and conversations from spanmeter's metrics. {GENERATED}")
        .refresh("30s").time("now-1h", "now").timezone("browser").editable()
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(_variable("agent_name", "Agent", f"label_values({m('agent_requests')}, agent_name)"))
        .with_variable(_variable("model_id", "Model",
                                 f'label_values({m("model_inference_calls")}{{agent_name=~"$agent_name"}}, model_id)'))
        .with_variable(_variable("tool_name", "Tool",
                                 f'label_values({m("agent_tool_calls")}{{agent_name=~"$agent_name"}}, tool_name)'))
    )  # fmt: skip
    for label in ATTRIBUTION_LABELS:
        board = board.with_variable(_variable(label, label.replace("_", " ").title(),
                                              f"label_values({m('agent_estimated_cost_dollars')}, {label})"))
    for title, panels in SECTIONS:
        board = board.with_row(dashboard.Row(title).id(next(_ids)))
        for panel in panels():
            board = board.with_panel(panel)
    return board


def dashboards() -> dict[str, str]:
    """File stem -> JSON text of every dashboard."""
    return {"ai-agent-operations": JSONEncoder(sort_keys=True, indent=2).encode(build().build()) + "\n"}
