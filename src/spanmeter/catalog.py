"""The metrics catalogue: the single source of every metric spanmeter exports.

Each :class:`MetricSpec` gives the OpenTelemetry name, type, unit, labels, buckets and
help of one metric, and where its values come from (a table of the aggregation state
and a field of its series). The processor, the exporter, the README table and the
dashboards are generated from or checked against this module.

Names follow the reference article (``agent_*``, ``model_*``) so that the names
Prometheus exposes are exactly the article's; the GenAI convention metrics
(``gen_ai.*``) follow the OpenTelemetry GenAI semantic conventions as they stand on
https://github.com/open-telemetry/semantic-conventions-genai (:data:`GENAI_SEMCONV`:
docs/gen-ai/client-inference.md, client-embeddings.md, gen-ai-token-metrics.md), with the
v1.41 names they replaced available through ``OTEL_SEMCONV_STABILITY_OPT_IN``
(:func:`semconv_mode`). Each metric says where its name comes from (``MetricSpec.source``).
"""

from __future__ import annotations

import re
import logging
import os
from dataclasses import dataclass
from typing import Mapping

from spanmeter.conventions import MODALITIES, TOKEN_TYPES

_log = logging.getLogger("spanmeter")

COUNTER = "counter"
HISTOGRAM = "histogram"
GAUGE = "gauge"

# --- tables of the aggregation state and their dimensions -----------------------------
#: table name -> the dimensions (in key order) of its series.
TABLES: dict[str, tuple[str, ...]] = {
    "model": ("agent", "model", "provider", "operation", "response_model", "error_type"),
    "tool": ("agent", "tool", "tool_type", "status", "error_type"),
    "agent": ("agent", "status", "error_type"),
    "workflow": ("workflow", "status", "error_type"),
    "conversation": ("agent",),
    "quality": ("agent", "metric_type"),
    "spans": ("kind",),
    "drops": ("field", "reason"),
    "overflow": ("label",),
    "faults": (),
    "evictions": (),
    "evaluations": ("agent", "status"),
    "no_usage": ("model",),
    "shed": ("reason",),
    "conversation_ends": ("reason",),
    "open_conversations": (),
    "price_sources": ("source",),
    "price_catalogue": ("catalogue", "version"),
    "deferred": ("metric", "scope"),
    "otlp_failures": ("signal",),
    "tool_decisions": ("agent", "tool", "decision"),
}

#: Trailing dimension of the attributed tables: a tuple of the attribution labels' values (one
#: per label of ``configure(attribution=...)``, see :mod:`spanmeter.attribution`), or None.
ATTRIBUTION_DIM = "attribution"
for _table in ("model", "agent"):
    TABLES[_table] += (ATTRIBUTION_DIM,)

# --- buckets ---------------------------------------------------------------------------
# The reference article's buckets.
AGENT_REQUEST_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 30.0, 60.0)
MODEL_INFERENCE_BUCKETS = (0.2, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0)
TOOL_CALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
CONVERSATION_TURN_BUCKETS = (1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0)


def _decimal(bounds) -> tuple[float, ...]:
    # 0.01 * 2**3 is 0.08000000000000002 in binary; keep the decimal the spec writes.
    return tuple(float(f"{b:.10g}") for b in bounds)


# GenAI semantic conventions' ExplicitBucketBoundaries.
GENAI_DURATION_BUCKETS = _decimal(0.01 * 2**i for i in range(14))  # 0.01 .. 81.92
GENAI_AGENT_DURATION_BUCKETS = _decimal(0.1 * 2**i for i in range(13))  # 0.1 .. 409.6
GENAI_TOKEN_BUCKETS = tuple(float(4**i) for i in range(14))  # 1 .. 67108864
GENAI_CALLS_BUCKETS = tuple(float(2**i) for i in range(8))  # 1 .. 128
# spanmeter's per-run distributions.
INFERENCE_CALLS_PER_RUN_BUCKETS = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 50.0)
TOOL_CALLS_PER_RUN_BUCKETS = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 50.0)
TOKENS_PER_RUN_BUCKETS = (
    100.0, 250.0, 500.0, 1e3, 2.5e3, 5e3, 1e4, 2.5e4, 5e4, 1e5, 2.5e5, 5e5, 1e6,
)  # fmt: skip
#: Output tokens per second of streamed calls (spanmeter's).
OUTPUT_RATE_BUCKETS = (1.0, 5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0, 1000.0)
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0)
COST_PER_RUN_BUCKETS = (
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
)  # fmt: skip
#: Costs are summed as integers of femto-dollars (1e-15 $), so a million tiny costs add
#: up exactly; the exported value is that integer divided by this (correctly rounded).
COST_DIVISOR = 10**15


# --- where names come from ------------------------------------------------------------------
#: The semantic-conventions-genai state the current ``gen_ai.*`` names were checked against
#: (main, late 2026: client-inference.md, client-embeddings.md, gen-ai-token-metrics.md,
#: changelog.d/374.breaking.md, +.breaking.md, +embeddings.breaking.md); Development stability.
GENAI_SEMCONV = "semantic-conventions-genai main @024a4f9"
SEMCONV_CURRENT = "current"
SEMCONV_V141 = "v1.41"
SEMCONV_BOTH = "both"
SOURCES = {
    SEMCONV_CURRENT: f"GenAI semconv ({GENAI_SEMCONV})",
    SEMCONV_V141: "GenAI semconv v1.41 (opt-in: OTEL_SEMCONV_STABILITY_OPT_IN)",
    SEMCONV_BOTH: "GenAI semconv (v1.41 and current)",
    "article": "reference article",
    "spanmeter": "spanmeter",
}
#: Metric names the reference article defines (the rest of the article family is spanmeter's,
#: named in the article's style).
ARTICLE_NAMES = frozenset({
    "agent_requests", "agent_request_duration", "model_inference_duration", "model_inference_calls",
    "agent_token_usage", "agent_estimated_cost_dollars", "agent_tool_calls", "agent_tool_call_duration",
    "agent_quality_score", "agent_conversation_turns", "agent_escalation_rate",
})  # fmt: skip


@dataclass(frozen=True)
class MetricSpec:
    """One exported metric.

    ``labels`` pairs each exported attribute key with the table dimension it reads;
    ``fan_out`` adds one more label whose values index the field (token types).
    """

    name: str
    kind: str
    unit: str
    help: str
    table: str
    field: str
    labels: tuple[tuple[str, str], ...]
    buckets: tuple[float, ...] = ()
    fan_out: tuple[str, tuple[str, ...]] | None = None
    family: str = "article"
    divisor: int = 1  # exported value = stored integer / divisor
    # --- GenAI conventions as they stand now (issue 14) ---
    #: Only rows whose ``rows[0]`` dimension is (``rows[2]`` True) or is not (False) one of
    #: ``rows[1]``: inference and embeddings share the model table but not their metrics.
    rows: tuple[str, tuple[str, ...], bool] | None = None
    #: Which convention names it: ``SEMCONV_CURRENT``, ``SEMCONV_V141`` (names the current
    #: conventions replaced, opt-in), or "" (the same name in both, or not a convention metric).
    semconv: str = ""
    #: Where the name comes from, for the README table; "" derives it (:attr:`origin`).
    source: str = ""

    @property
    def origin(self) -> str:
        """The README's "source" column: :attr:`source`, else derived from family and semconv."""
        if self.source:
            return self.source
        if self.family == "genai":
            return SOURCES[self.semconv or SEMCONV_BOTH]
        if self.family == "self":
            return SOURCES["spanmeter"]
        return SOURCES["article" if self.name in ARTICLE_NAMES else "spanmeter"]

    @property
    def exposed_name(self) -> str:
        return prometheus_name(self.name, self.unit, self.kind)

    @property
    def exposed_labels(self) -> tuple[str, ...]:
        keys = [key for key, _ in self.labels]
        if self.fan_out:
            keys.append(self.fan_out[0])
        return tuple(_sanitize_label(k) for k in keys)


_A = ("agent_name", "agent")
_M = ("model_id", "model")
_EMBEDDINGS = ("operation", ("embeddings",), True)
_NOT_EMBEDDINGS = ("operation", ("embeddings",), False)
_GENAI_MODEL_LABELS = (
    ("gen_ai.operation.name", "operation"),
    ("gen_ai.provider.name", "provider"),
    ("gen_ai.request.model", "model"),
    ("gen_ai.response.model", "response_model"),
    ("error.type", "error_type"),
)

METRICS: tuple[MetricSpec, ...] = (
    # --- agent runs (the article's request-level metrics) ---
    MetricSpec("agent_requests", COUNTER, "{request}",
               "Agent runs by outcome (success, error, timeout).",
               "agent", "count", (_A, ("status", "status"))),
    MetricSpec("agent_request_duration", HISTOGRAM, "s",
               "Duration of an agent run, including all model and tool calls.",
               "agent", "duration", (_A,), AGENT_REQUEST_BUCKETS),
    MetricSpec("agent_inference_calls_per_run", HISTOGRAM, "{call}",
               "Model inference calls made by one agent run (LLM round trips).",
               "agent", "inference_calls", (_A,), INFERENCE_CALLS_PER_RUN_BUCKETS),
    MetricSpec("agent_tool_calls_per_run", HISTOGRAM, "{call}",
               "Tool calls made by one agent run.",
               "agent", "tool_calls", (_A,), TOOL_CALLS_PER_RUN_BUCKETS),
    MetricSpec("agent_tokens_per_run", HISTOGRAM, "{token}",
               "Input plus output tokens used by one agent run.",
               "agent", "tokens", (_A,), TOKENS_PER_RUN_BUCKETS),
    # --- model inference ---
    MetricSpec("model_inference_duration", HISTOGRAM, "s",
               "Duration of a model inference call (excludes tool execution).",
               "model", "duration", (_A, _M), MODEL_INFERENCE_BUCKETS),
    MetricSpec("model_inference_calls", COUNTER, "{call}",
               "Model inference calls.",
               "model", "count", (_A, _M)),
    MetricSpec("agent_token_usage", COUNTER, "{token}",
               "Tokens used, by type: input (includes cache reads and writes), output "
               "(includes reasoning), cache_read, cache_write, reasoning.",
               "model", "tokens", (_A, _M), fan_out=("token_type", TOKEN_TYPES)),
    MetricSpec("model_finish_reasons", COUNTER, "{generation}",
               "Why the model stopped generating (gen_ai.response.finish_reasons: stop, length, "
               "tool_calls, content_filter, ...), one per generation of a call.",
               "model", "finish_reasons", (_A, _M), fan_out=("finish_reason", ())),
    MetricSpec("model_output_tokens_per_second", HISTOGRAM, "{token}/s",
               "Output speed of a streamed call: output tokens (less reasoning) over the time from "
               "its first chunk to its end.",
               "model", "output_rate", (_A, _M), OUTPUT_RATE_BUCKETS),
    # --- cost ---
    MetricSpec("agent_estimated_cost_dollars", COUNTER, "{USD}",
               "Estimated cost of model inference in US dollars, from each call's token usage "
               "and its model's price (calls without a known price are in "
               "agent_unpriced_calls_total instead).",
               "model", "cost", (_A, _M), divisor=COST_DIVISOR),
    MetricSpec("agent_cost_per_run_dollars", HISTOGRAM, "{USD}",
               "Estimated cost of one agent run in US dollars (cost per interaction).",
               "agent", "cost", (_A,), COST_PER_RUN_BUCKETS),
    MetricSpec("agent_unpriced_calls", COUNTER, "{call}",
               "Inference calls with token usage that could not be priced (no price known "
               "for the model): their cost is missing from agent_estimated_cost_dollars_total.",
               "model", "unpriced_calls", (_M,)),
    MetricSpec("agent_unpriced_tokens", COUNTER, "{token}",
               "Tokens of the inference calls that could not be priced, by type.",
               "model", "unpriced_tokens", (_M,), fan_out=("token_type", TOKEN_TYPES)),
    # --- tools ---
    MetricSpec("agent_tool_calls", COUNTER, "{call}",
               "Tool calls by outcome (success, error, timeout).",
               "tool", "count", (_A, ("tool_name", "tool"), ("status", "status"))),
    MetricSpec("agent_tool_call_duration", HISTOGRAM, "s",
               "Duration of a tool call.",
               "tool", "duration", (_A, ("tool_name", "tool")), TOOL_CALL_BUCKETS),
    MetricSpec("agent_tool_call_decisions", COUNTER, "{decision}",
               "Decisions taken before a tool ran (gen_ai.tool.call.decision): allow, deny, or "
               "require_approval (escalated to a human or another approver).",
               "tool_decisions", "count", (_A, ("tool_name", "tool"), ("decision", "decision"))),
    # --- quality and conversations ---
    MetricSpec("agent_quality_score", GAUGE, "1",
               "Rolling average of evaluation scores (0..1) over the quality window.",
               "quality", "score", (_A, ("metric_type", "metric_type"))),
    MetricSpec("agent_evaluation_score", HISTOGRAM, "1",
               "Evaluation scores (0..1) by agent and metric type (groundedness, relevance, safety, ...).",
               "quality", "scores", (_A, ("metric_type", "metric_type")), SCORE_BUCKETS),
    MetricSpec("agent_evaluations", COUNTER, "{evaluation}",
               "Sampled agent runs sent to evaluation, by outcome: done, failed (judge error, "
               "timeout, malformed verdict) or dropped (queue full, or left at shutdown).",
               "evaluations", "count", (_A, ("status", "status"))),
    MetricSpec("agent_conversation_turns", HISTOGRAM, "{turn}",
               "Turns per finished conversation.",
               "conversation", "turns", (_A,), CONVERSATION_TURN_BUCKETS),
    MetricSpec("agent_conversations", COUNTER, "{conversation}",
               "Finished conversations.",
               "conversation", "conversations", (_A,)),
    MetricSpec("agent_escalations", COUNTER, "{conversation}",
               "Finished conversations that were escalated to a human.",
               "conversation", "escalations", (_A,)),
    MetricSpec("agent_escalation_rate", GAUGE, "1",
               "Share (0..1) of conversations escalated to a human over the escalation "
               "window, computed in this process; prefer rate(agent_escalations_total) / "
               "rate(agent_conversations_total) in PromQL.",
               "conversation", "escalation_rate", (_A,)),
    # --- OpenTelemetry GenAI semantic convention metrics ---
    MetricSpec("gen_ai.client.operation.duration", HISTOGRAM, "s",
               "GenAI operation duration.",
               "model", "duration", _GENAI_MODEL_LABELS, GENAI_DURATION_BUCKETS,
               family="genai", semconv=SEMCONV_V141),
    MetricSpec("gen_ai.client.operation.time_to_first_chunk", HISTOGRAM, "s",
               "Time from the request to the first chunk of a streamed response.",
               "model", "time_to_first_chunk", _GENAI_MODEL_LABELS, GENAI_DURATION_BUCKETS,
               family="genai", semconv=SEMCONV_V141),
    MetricSpec("gen_ai.client.token.usage", HISTOGRAM, "{token}",
               "Number of input and output tokens used.",
               "model", "token_usage", _GENAI_MODEL_LABELS[:4], GENAI_TOKEN_BUCKETS,
               fan_out=("gen_ai.token.type", ("input", "output")), family="genai", semconv=SEMCONV_V141),
    # --- the current names (semantic-conventions-genai: client-inference.md, client-embeddings.md,
    # gen-ai-token-metrics.md); they replace the three above, kept behind OTEL_SEMCONV_STABILITY_OPT_IN ---
    MetricSpec("gen_ai.client.inference.duration", HISTOGRAM, "s",
               "GenAI client inference operation duration (embeddings have their own).",
               "model", "duration", _GENAI_MODEL_LABELS, GENAI_DURATION_BUCKETS,
               family="genai", rows=_NOT_EMBEDDINGS, semconv=SEMCONV_CURRENT),
    MetricSpec("gen_ai.client.inference.time_to_first_chunk", HISTOGRAM, "s",
               "Time from the request to the first chunk of a streamed response (streamed calls only).",
               "model", "time_to_first_chunk", _GENAI_MODEL_LABELS[:4], GENAI_DURATION_BUCKETS,
               family="genai", rows=_NOT_EMBEDDINGS, semconv=SEMCONV_CURRENT),
    *(MetricSpec(f"gen_ai.client.inference.usage.{name}", COUNTER, "{token}",
                 f"{text}, by modality (unknown: what the span did not break down; 0 for a call "
                 f"without usage).",
                 "model", f"usage_{token_type}", _GENAI_MODEL_LABELS[:4],
                 fan_out=("gen_ai.token.modality", ()), family="genai", rows=_NOT_EMBEDDINGS,
                 semconv=SEMCONV_CURRENT)
      for name, token_type, text in (
          ("input_tokens", "input", "Input tokens used, including cached tokens"),
          ("output_tokens", "output", "Output tokens used, including reasoning tokens"),
          ("cache_read.input_tokens", "cache_read", "Input tokens served from a provider-managed cache"),
          ("cache_write.input_tokens", "cache_write", "Input tokens written to a provider-managed cache"),
          ("reasoning.output_tokens", "reasoning", "Output tokens used for reasoning"),
      )),
    MetricSpec("gen_ai.client.inference.operation.input_tokens", HISTOGRAM, "{token}",
               "Input tokens per inference operation (percentiles; use the usage counters for totals).",
               "model", "operation_input_tokens", _GENAI_MODEL_LABELS, GENAI_TOKEN_BUCKETS,
               family="genai", rows=_NOT_EMBEDDINGS, semconv=SEMCONV_CURRENT),
    MetricSpec("gen_ai.client.inference.operation.output_tokens", HISTOGRAM, "{token}",
               "Output tokens per inference operation (percentiles; use the usage counters for totals).",
               "model", "operation_output_tokens", _GENAI_MODEL_LABELS, GENAI_TOKEN_BUCKETS,
               family="genai", rows=_NOT_EMBEDDINGS, semconv=SEMCONV_CURRENT),
    MetricSpec("gen_ai.client.embeddings.duration", HISTOGRAM, "s",
               "GenAI client embeddings operation duration.",
               "model", "duration", _GENAI_MODEL_LABELS, GENAI_DURATION_BUCKETS,
               family="genai", rows=_EMBEDDINGS, semconv=SEMCONV_CURRENT),
    MetricSpec("gen_ai.client.embeddings.operation.input_tokens", HISTOGRAM, "{token}",
               "Input tokens per embeddings operation.",
               "model", "operation_input_tokens", _GENAI_MODEL_LABELS[:4], GENAI_TOKEN_BUCKETS,
               family="genai", rows=_EMBEDDINGS, semconv=SEMCONV_CURRENT),
    MetricSpec("gen_ai.invoke_agent.duration", HISTOGRAM, "s",
               "The end-to-end duration of a single agent invocation.",
               "agent", "duration", (("gen_ai.agent.name", "agent"), ("error.type", "error_type")),
               GENAI_AGENT_DURATION_BUCKETS, family="genai"),
    MetricSpec("gen_ai.invoke_agent.inference_calls", HISTOGRAM, "{inference_call}",
               "Model inference calls made by one agent invocation (its own, not its sub-agents').",
               "agent", "inference_calls", (("gen_ai.agent.name", "agent"),), GENAI_CALLS_BUCKETS, family="genai"),
    MetricSpec("gen_ai.invoke_agent.tool_calls", HISTOGRAM, "{tool_call}",
               "Tool calls made by one agent invocation.",
               "agent", "tool_calls", (("gen_ai.agent.name", "agent"),), GENAI_CALLS_BUCKETS, family="genai"),
    MetricSpec("gen_ai.execute_tool.duration", HISTOGRAM, "s",
               "The duration of a single tool execution.",
               "tool", "duration",
               (("gen_ai.tool.name", "tool"), ("gen_ai.tool.type", "tool_type"),
                ("gen_ai.agent.name", "agent"), ("error.type", "error_type")),
               GENAI_DURATION_BUCKETS, family="genai"),
    MetricSpec("gen_ai.invoke_workflow.duration", HISTOGRAM, "s",
               "The end-to-end duration of a workflow that coordinates agent runs.",
               "workflow", "duration", (("gen_ai.workflow.name", "workflow"), ("error.type", "error_type")),
               GENAI_AGENT_DURATION_BUCKETS, family="genai"),
    MetricSpec("gen_ai.invoke_workflow.inference_calls", HISTOGRAM, "{call}",
               "Model inference calls made within one workflow, by all its agent runs.",
               "workflow", "inference_calls", (("gen_ai.workflow.name", "workflow"),),
               GENAI_CALLS_BUCKETS, family="genai"),
    MetricSpec("gen_ai.invoke_workflow.tool_calls", HISTOGRAM, "{call}",
               "Tool calls made within one workflow, by all its agent runs.",
               "workflow", "tool_calls", (("gen_ai.workflow.name", "workflow"),),
               GENAI_CALLS_BUCKETS, family="genai"),
    # --- spanmeter's own health ---
    MetricSpec("spanmeter_spans", COUNTER, "{span}",
               "Spans turned into metrics, by kind (agent, inference, tool).",
               "spans", "count", (("kind", "kind"),), family="self"),
    MetricSpec("spanmeter_dropped_values", COUNTER, "{value}",
               "Attribute values the processor could not use as they were, by field and "
               "reason (see spanmeter.conventions).",
               "drops", "count", (("field", "field"), ("reason", "reason")), family="self"),
    MetricSpec("spanmeter_label_overflow", COUNTER, "{value}",
               "Label values collapsed into 'other' because the label's limit of distinct "
               "values was reached.",
               "overflow", "count", (("label", "label"),), family="self"),
    MetricSpec("spanmeter_processor_errors", COUNTER, "{error}",
               "Unexpected exceptions caught inside spanmeter (never raised into the app).",
               "faults", "count", (), family="self"),
    MetricSpec("spanmeter_priced_calls", COUNTER, "{call}",
               "Inference calls priced, by where the price came from (span: cost attribute on "
               "the span; override: the user's price file; catalogue: genai-prices).",
               "price_sources", "count", (("source", "source"),), family="self"),
    MetricSpec("spanmeter_price_catalogue_info", GAUGE, "1",
               "The price catalogue in use and its version or date (value is always 1).",
               "price_catalogue", "value", (("catalogue", "catalogue"), ("version", "version")),
               family="self"),
    MetricSpec("spanmeter_deferred_metric_info", GAUGE, "1",
               "spanmeter's metrics left out because another instrumentation scope of the process "
               "exports the same name (its series count the same calls); value is always 1.",
               "deferred", "value", (("metric", "metric"), ("scope", "scope")), family="self"),
    MetricSpec("spanmeter_inference_without_usage", COUNTER, "{call}",
               "Inference calls whose spans carried no token usage (unknown is not zero: their "
               "tokens and cost are missing from the token and cost metrics).",
               "no_usage", "count", (_M,), family="self"),
    MetricSpec("spanmeter_conversations_ended", COUNTER, "{conversation}",
               "Conversations followed by gen_ai.conversation.id that ended, by how: app (the "
               "application ended it), idle (no turn for the idle timeout), evicted (too many open).",
               "conversation_ends", "count", (("reason", "reason"),), family="self"),
    MetricSpec("spanmeter_open_conversations", GAUGE, "{conversation}",
               "Conversations followed by gen_ai.conversation.id that are open now.",
               "open_conversations", "value", (), family="self"),
    MetricSpec("spanmeter_spans_shed", COUNTER, "{span}",
               "Ended spans not turned into metrics because aggregation fell too far behind "
               "(backlog: more than the processor's max_backlog spans waiting); the "
               "application is never blocked instead.",
               "shed", "count", (("reason", "reason"),), family="self"),
    MetricSpec("spanmeter_open_spans_evicted", COUNTER, "{span}",
               "Open spans forgotten because too many were open at once (runs that never end).",
               "evictions", "count", (), family="self"),
    MetricSpec("spanmeter_otlp_failed_exports", COUNTER, "{request}",
               "OTLP export requests that failed or were still in flight at the shutdown deadline, "
               "by signal (metrics, spans). A failed span request loses its spans; metric points are "
               "cumulative and go with the next push.",
               "otlp_failures", "count", (("signal", "signal"),), family="self"),
)  # fmt: skip

BY_NAME: dict[str, MetricSpec] = {m.name: m for m in METRICS}
#: Metrics that carry the attribution labels (tenant, team, ...) when some are configured: cost,
#: tokens and requests. Not the duration histograms: a label multiplies each of their bucket series.
ATTRIBUTED: frozenset[str] = frozenset({
    "agent_requests", "model_inference_calls", "agent_token_usage", "agent_estimated_cost_dollars",
    "gen_ai.client.token.usage",  # v1.41 (opt-in)
    *(m.name for m in METRICS if m.name.startswith("gen_ai.client.inference.usage.")),  # the current ones
})  # fmt: skip


def label_names() -> set[str]:
    """Every label name spanmeter's metrics expose (attribution labels must not clash)."""
    return {label for m in METRICS for label in m.exposed_labels}


#: Fields that read the same histogram of a series under another name, (table, field) ->
#: field: v1.41's input/output token histogram and the current per-operation ones.
SHARED_FIELDS = {
    ("model", "operation_input_tokens"): "token_usage",
    ("model", "operation_output_tokens"): "token_usage",
}


def field_bounds(table: str, field: str) -> tuple[float, ...]:
    """Union of the buckets of every histogram reading ``table.field``, sorted.

    The processor counts each observation once on these bounds; each metric's own
    buckets are a subset, projected at collection time.
    """
    field = SHARED_FIELDS.get((table, field), field)
    bounds: set[float] = set()
    for m in METRICS:
        if m.table == table and SHARED_FIELDS.get((m.table, m.field), m.field) == field and m.kind == HISTOGRAM:
            bounds.update(m.buckets)
    return tuple(sorted(bounds))


# --- OTEL_SEMCONV_STABILITY_OPT_IN: which GenAI names -------------------------------------
ENV_SEMCONV_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"
#: The official instrumentations' value for the latest GenAI conventions (opentelemetry-
#: instrumentation ``_semconv.py``): current names only, as spanmeter's default.
OPT_IN_LATEST = "gen_ai_latest_experimental"
#: Current and v1.41 names side by side (the ``http/dup`` pattern; peers spell it this way).
OPT_IN_DUP = ("gen_ai_latest_experimental/dup", "gen_ai/dup")
#: v1.41 names only (spanmeter's value: the instrumentations give them when nothing is set).
OPT_IN_V141 = "gen_ai_v1.41"


def semconv_mode(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The GenAI names to export, from ``OTEL_SEMCONV_STABILITY_OPT_IN`` (comma-separated):
    ``{SEMCONV_CURRENT}`` (unset or ``gen_ai_latest_experimental``), ``{SEMCONV_V141}``
    (``gen_ai_v1.41``) or both (``gen_ai_latest_experimental/dup``, or v1.41 with latest).

    The list is shared with other areas (``http``, ``database``...): values spanmeter does not
    know are ignored, as the instrumentations ignore them; unknown ``gen_ai*`` ones are logged.
    """
    raw = (os.environ if environ is None else environ).get(ENV_SEMCONV_OPT_IN) or ""
    values = {v.strip() for v in raw.split(",") if v.strip()}
    for value in values:
        if value.startswith("gen_ai") and value not in (OPT_IN_LATEST, OPT_IN_V141, *OPT_IN_DUP):
            _log.warning("spanmeter: %s=%s: %r is not a GenAI value spanmeter knows (%s); ignored",
                         ENV_SEMCONV_OPT_IN, raw, value, ", ".join((OPT_IN_LATEST, OPT_IN_DUP[0], OPT_IN_V141)))
    if values & set(OPT_IN_DUP) or {OPT_IN_V141, OPT_IN_LATEST} <= values:
        return frozenset({SEMCONV_CURRENT, SEMCONV_V141})
    if OPT_IN_V141 in values:
        return frozenset({SEMCONV_V141})
    return frozenset({SEMCONV_CURRENT})


def excluded_names(mode: frozenset[str]) -> frozenset[str]:
    """Names of the catalogue's GenAI metrics that ``mode`` (from :func:`semconv_mode`) leaves out."""
    return frozenset(m.name for m in METRICS if m.semconv and m.semconv not in mode)


def exported(mode: frozenset[str] = frozenset({SEMCONV_CURRENT})) -> tuple[MetricSpec, ...]:
    """The catalogue's metrics exported under ``mode``."""
    leave_out = excluded_names(mode)
    return tuple(m for m in METRICS if m.name not in leave_out)


# --- Prometheus names (the mapping the OpenTelemetry Prometheus exporter applies) -----
_NAME_RE = re.compile(r"[^a-zA-Z0-9:]+")
_LABEL_RE = re.compile(r"[^a-zA-Z0-9]+")
_UNITS = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": "", "%": "percent"}
_PER_UNITS = {"s": "second", "m": "minute", "h": "hour"}


def _sanitize_label(key: str) -> str:
    return _LABEL_RE.sub("_", key)


def prometheus_unit(unit: str) -> str:
    unit = re.sub(r"{[^}]*}", "", unit)
    if unit in _UNITS:
        return _UNITS[unit]
    top, per, bottom = unit.partition("/")
    if per and bottom:  # "{token}/s" -> "per_second", as the exporter maps ratio units
        top = _UNITS.get(top, _NAME_RE.sub("_", top).strip("_"))
        bottom = _PER_UNITS.get(bottom, _NAME_RE.sub("_", bottom).strip("_"))
        return f"{top}_per_{bottom}" if top else f"per_{bottom}"
    return _NAME_RE.sub("_", unit).strip("_")


def prometheus_name(name: str, unit: str, kind: str) -> str:
    """The metric name Prometheus shows for an OpenTelemetry metric."""
    name = _NAME_RE.sub("_", name)
    suffix = prometheus_unit(unit)
    if suffix and not name.endswith("_" + suffix):
        name += "_" + suffix
    if kind == COUNTER and not name.endswith("_total"):
        name += "_total"
    return name


# --- README table -----------------------------------------------------------------------
TABLE_START = "<!-- metrics-table:start (generated by `spanmeter catalog --update README.md`; do not edit) -->"
TABLE_END = "<!-- metrics-table:end -->"


def _fmt_bound(b: float) -> str:
    return f"{b:g}"


def markdown_table() -> str:
    """The metric table of the README, generated from :data:`METRICS`."""
    rows = [
        "| metric (as Prometheus shows it) | type | labels | buckets | source | description |",
        "|---|---|---|---|---|---|",
    ]
    for m in METRICS:
        labels = ", ".join(f"`{k}`" for k in m.exposed_labels) or "-"
        buckets = ", ".join(_fmt_bound(b) for b in m.buckets) or "-"
        rows.append(f"| `{m.exposed_name}` | {m.kind} | {labels} | {buckets} | {m.origin} | {m.help} |")
    return "\n".join(rows)


def update_readme(text: str) -> str:
    """``text`` with the part between the table markers replaced by a fresh table."""
    start = text.index(TABLE_START) + len(TABLE_START)
    end = text.index(TABLE_END)
    return text[:start] + "\n" + markdown_table() + "\n" + text[end:]
