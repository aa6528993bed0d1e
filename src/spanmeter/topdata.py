"""The figures of ``spanmeter top``: parse expositions, rates between scrapes, quantiles, views.

Pure functions, no I/O and no terminal: :mod:`spanmeter.top` fetches and draws. Rates
follow Prometheus' rules: a counter that drops between two scrapes was reset (the new
value is the increase since the reset); quantiles use ``histogram_quantile``'s
interpolation. Metric names come from :mod:`spanmeter.catalog`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from spanmeter.catalog import BY_NAME, HISTOGRAM

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs
Key = tuple[str, Labels]  # (sample name, labels)


def _exposed(name: str) -> str:
    return BY_NAME[name].exposed_name


# The families top reads, as Prometheus names them.
REQUESTS = _exposed("agent_requests")
REQUEST_DURATION = _exposed("agent_request_duration")
INFERENCE_PER_RUN = _exposed("agent_inference_calls_per_run")
TOOLS_PER_RUN = _exposed("agent_tool_calls_per_run")
MODEL_CALLS = _exposed("model_inference_calls")
MODEL_DURATION = _exposed("model_inference_duration")
TOKENS = _exposed("agent_token_usage")
COST = _exposed("agent_estimated_cost_dollars")
UNPRICED = _exposed("agent_unpriced_calls")
TOOL_CALLS = _exposed("agent_tool_calls")
TOOL_DURATION = _exposed("agent_tool_call_duration")
QUALITY = _exposed("agent_quality_score")
CONVERSATIONS = _exposed("agent_conversations")
ESCALATIONS = _exposed("agent_escalations")
TURNS = _exposed("agent_conversation_turns")
FAMILIES = (REQUESTS, REQUEST_DURATION, INFERENCE_PER_RUN, TOOLS_PER_RUN, MODEL_CALLS, MODEL_DURATION, TOKENS,
            COST, UNPRICED, TOOL_CALLS, TOOL_DURATION, QUALITY, CONVERSATIONS, ESCALATIONS, TURNS)  # fmt: skip
HISTOGRAMS = frozenset(m.exposed_name for m in BY_NAME.values() if m.kind == HISTOGRAM and m.exposed_name in FAMILIES)
#: Every sample name top reads (histograms as their _bucket, _sum and _count series).
SAMPLE_NAMES = frozenset(
    name for f in FAMILIES for name in ((f + "_bucket", f + "_sum", f + "_count") if f in HISTOGRAMS else (f,))
)
# The labels top groups by (each is in the catalogue's exposed labels; a test checks).
AGENT, MODEL, TOOL, STATUS, TOKEN_TYPE, METRIC_TYPE = (
    "agent_name", "model_id", "tool_name", "status", "token_type", "metric_type",
)  # fmt: skip


@dataclass(frozen=True)
class Scrape:
    """One reading of the metrics: ``samples`` maps (name, labels) to (timestamp, value).

    A sample's timestamp is the one the exposition carries, else the scrape's ``time``.
    """

    time: float
    samples: dict[Key, tuple[float, float]] = field(default_factory=dict)


def parse(text: str, now: float) -> Scrape:
    """The samples of a Prometheus text exposition that top reads; ValueError if it is not one."""
    samples: dict[Key, tuple[float, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in SAMPLE_NAMES:
                ts = float(s.timestamp) if s.timestamp is not None else now
                samples[(s.name, tuple(sorted(s.labels.items())))] = (ts, float(s.value))
    return Scrape(now, samples)


def reading_time(scrape: Scrape) -> float:
    """When a reading was taken: its newest sample timestamp (the scrape time if none)."""
    return max((ts for ts, _ in scrape.samples.values()), default=scrape.time)


def increase(before: float, after: float) -> float:
    """A counter's increase between two readings; a drop means it was reset to 0 in between."""
    return after - before if after >= before else after


def rates(prev: Scrape, cur: Scrape) -> dict[Key, float]:
    """Per-second rates of every counter and histogram series between two scrapes.

    A series absent from ``prev`` was created in between by its first increments, so it
    counts from 0 since ``prev`` was taken. Gauges are left out.
    """
    out: dict[Key, float] = {}
    start = reading_time(prev)
    for key, (t1, v1) in cur.samples.items():
        if key[0] == QUALITY:
            continue
        before = prev.samples.get(key)
        if before is None:
            t0, v0 = start, 0.0
        else:
            t0, v0 = before
        if t1 > t0:
            out[key] = increase(v0, v1) / (t1 - t0)
    return out


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' ``histogram_quantile`` of (upper bound, cumulative count) pairs; NaN if undefined.

    Same rules: the +Inf bucket is required; buckets of one bound are merged and counts
    made monotonic; the lowest bucket starts at 0 (if its bound is positive); a rank in the
    +Inf bucket gives the highest finite bound; linear interpolation inside a bucket.
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    merged: dict[float, float] = {}
    for bound, count in buckets:
        merged[bound] = merged.get(bound, 0.0) + count
    bs = sorted(merged.items())
    if not bs or not math.isinf(bs[-1][0]):
        return math.nan
    running = 0.0  # rates of cumulative counts can dip by float error: make them monotonic
    for i, (bound, count) in enumerate(bs):
        running = max(running, count)
        bs[i] = (bound, running)
    if len(bs) < 2:
        return math.nan
    observations = bs[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = next((i for i in range(len(bs) - 1) if bs[i][1] >= rank), len(bs) - 1)
    if b == len(bs) - 1:
        return bs[-2][0]
    if b == 0 and bs[0][0] <= 0:
        return bs[0][0]
    start, end, count = 0.0, bs[b][0], bs[b][1]
    if b > 0:
        start = bs[b - 1][0]
        count -= bs[b - 1][1]
        rank -= bs[b - 1][1]
    return start + (end - start) * (rank / count)


# --- grouping --------------------------------------------------------------------------


def _label(labels: Labels, name: str) -> str | None:
    for k, v in labels:
        if k == name:
            return v
    return None


def sum_by(values: dict[Key, float], name: str, by: tuple[str, ...], **where: str) -> dict[tuple, float]:
    """Like PromQL ``sum by (by) (name{where})`` over ``values``."""
    out: dict[tuple, float] = {}
    for (n, labels), v in values.items():
        if n != name or any(_label(labels, k) != want for k, want in where.items()):
            continue
        group = tuple(_label(labels, k) or "" for k in by)
        out[group] = out.get(group, 0.0) + v
    return out


def quantiles_by(values: dict[Key, float], family: str, by: tuple[str, ...], q: float) -> dict[tuple, float]:
    """``histogram_quantile(q, sum by (by, le) (rate(family_bucket)))`` per group."""
    per: dict[tuple, list[tuple[float, float]]] = {}
    for group_le, v in sum_by(values, family + "_bucket", by + ("le",)).items():
        try:
            bound = float(group_le[-1])
        except ValueError:  # a bucket without a usable le: not one Prometheus would use either
            continue
        per.setdefault(group_le[:-1], []).append((bound, v))
    return {g: histogram_quantile(q, b) for g, b in per.items()}


def _ratio(num: float | None, den: float | None, scale: float = 1.0) -> float | None:
    if num is None or not den:
        return None
    return num / den * scale


def _add(a: float | None, b: float | None) -> float | None:
    return None if a is None and b is None else (a or 0.0) + (b or 0.0)


def _finite(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else x


# --- views -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One column of a view: ``kind`` says how a value is shown (see :func:`format_value`)."""

    key: str
    title: str
    kind: str  # name, rate, pct, seconds, ratio, dollars, tokens, score


VIEWS: dict[str, tuple[Column, ...]] = {
    "agents": (
        Column("agent", "agent", "name"), Column("runs_per_s", "runs/s", "rate"),
        Column("error_pct", "err%", "pct"), Column("p50_s", "p50", "seconds"), Column("p95_s", "p95", "seconds"),
        Column("llm_calls_per_run", "llm/run", "ratio"), Column("tools_per_run", "tools/run", "ratio"),
        Column("tokens_per_s", "tok/s", "tokens"), Column("dollars_per_h", "$/h", "dollars"),
    ),
    "models": (
        Column("model", "model", "name"), Column("calls_per_s", "calls/s", "rate"),
        Column("p95_s", "p95", "seconds"), Column("input_per_s", "in tok/s", "tokens"),
        Column("output_per_s", "out tok/s", "tokens"), Column("cache_read_per_s", "cached/s", "tokens"),
        Column("reasoning_per_s", "reason/s", "tokens"), Column("cache_hit_pct", "cache hit", "pct"),
        Column("dollars_per_h", "$/h", "dollars"), Column("unpriced_pct", "unpriced", "pct"),
    ),
    "tools": (
        Column("tool", "tool", "name"), Column("agent", "agent", "name"), Column("calls_per_s", "calls/s", "rate"),
        Column("error_pct", "err%", "pct"), Column("timeout_pct", "timeout%", "pct"),
        Column("p95_s", "p95", "seconds"),
    ),
    # quality: score columns are added per metric type seen (see quality_columns)
    "quality": (
        Column("agent", "agent", "name"), Column("conversations_per_min", "conv/min", "rate"),
        Column("escalated_pct", "escalated", "pct"), Column("turns_per_conversation", "turns/conv", "ratio"),
    ),
}  # fmt: skip
#: The figure each view's sparkline follows.
TREND = {"agents": "runs_per_s", "models": "calls_per_s", "tools": "calls_per_s", "quality": "conversations_per_min"}
#: The default sort column of each view (numbers sort high first, names A-Z).
DEFAULT_SORT = {"agents": "runs_per_s", "models": "calls_per_s", "tools": "calls_per_s", "quality": "agent"}


def columns(view: str, rows: list[dict]) -> tuple[Column, ...]:
    """The columns of ``view``; the quality view gets one score column per metric type in ``rows``."""
    cols = VIEWS[view]
    if view == "quality":
        types = sorted({k[len("score:"):] for r in rows for k in r if k.startswith("score:")})
        cols = cols[:1] + tuple(Column("score:" + t, t, "score") for t in types) + cols[1:]
    return cols


def compute(prev: Scrape, cur: Scrape) -> dict[str, list[dict]]:
    """The rows of every view between two scrapes (None where a figure is undefined)."""
    r = rates(prev, cur)
    return {"agents": _agents(r), "models": _models(r), "tools": _tools(r), "quality": _quality(r, cur)}


def _agents(r: dict[Key, float]) -> list[dict]:
    runs = sum_by(r, REQUESTS, (AGENT,))
    ok = sum_by(r, REQUESTS, (AGENT,), status="success")
    p50 = quantiles_by(r, REQUEST_DURATION, (AGENT,), 0.5)
    p95 = quantiles_by(r, REQUEST_DURATION, (AGENT,), 0.95)
    llm_sum, llm_n = sum_by(r, INFERENCE_PER_RUN + "_sum", (AGENT,)), sum_by(r, INFERENCE_PER_RUN + "_count", (AGENT,))
    tool_sum, tool_n = sum_by(r, TOOLS_PER_RUN + "_sum", (AGENT,)), sum_by(r, TOOLS_PER_RUN + "_count", (AGENT,))
    tokens_in = sum_by(r, TOKENS, (AGENT,), token_type="input")
    tokens_out = sum_by(r, TOKENS, (AGENT,), token_type="output")
    cost = sum_by(r, COST, (AGENT,))
    names = set(runs) | set(tokens_in) | set(cost)
    rows = []
    for g in sorted(names):
        n = runs.get(g)
        rows.append({
            "agent": g[0],
            "runs_per_s": n,
            "error_pct": _ratio(None if n is None else n - ok.get(g, 0.0), n, 100.0),
            "p50_s": _finite(p50.get(g)),
            "p95_s": _finite(p95.get(g)),
            "llm_calls_per_run": _ratio(llm_sum.get(g), llm_n.get(g)),
            "tools_per_run": _ratio(tool_sum.get(g), tool_n.get(g)),
            "tokens_per_s": _add(tokens_in.get(g), tokens_out.get(g)),
            "dollars_per_h": _ratio(cost.get(g), 1.0, 3600.0),
        })  # fmt: skip
    return rows


def _models(r: dict[Key, float]) -> list[dict]:
    calls = sum_by(r, MODEL_CALLS, (MODEL,))
    p95 = quantiles_by(r, MODEL_DURATION, (MODEL,), 0.95)
    tokens = {t: sum_by(r, TOKENS, (MODEL,), token_type=t) for t in ("input", "output", "cache_read", "reasoning")}
    cost = sum_by(r, COST, (MODEL,))
    unpriced = sum_by(r, UNPRICED, (MODEL,))
    rows = []
    for g in sorted(set(calls) | set(tokens["input"])):
        n = calls.get(g)
        rows.append({
            "model": g[0],
            "calls_per_s": n,
            "p95_s": _finite(p95.get(g)),
            "input_per_s": tokens["input"].get(g),
            "output_per_s": tokens["output"].get(g),
            "cache_read_per_s": tokens["cache_read"].get(g),
            "reasoning_per_s": tokens["reasoning"].get(g),
            # input tokens include cache reads (the catalogue's rule), so this is a share of input
            "cache_hit_pct": _ratio(tokens["cache_read"].get(g), tokens["input"].get(g), 100.0),
            "dollars_per_h": _ratio(cost.get(g), 1.0, 3600.0),
            "unpriced_pct": _ratio(unpriced.get(g, 0.0), n, 100.0),
        })  # fmt: skip
    return rows


def _tools(r: dict[Key, float]) -> list[dict]:
    by = (TOOL, AGENT)
    calls = sum_by(r, TOOL_CALLS, by)
    errors = sum_by(r, TOOL_CALLS, by, status="error")
    timeouts = sum_by(r, TOOL_CALLS, by, status="timeout")
    p95 = quantiles_by(r, TOOL_DURATION, by, 0.95)
    rows = []
    for g in sorted(calls):
        n = calls[g]
        rows.append({
            "tool": g[0], "agent": g[1], "calls_per_s": n,
            "error_pct": _ratio(errors.get(g, 0.0), n, 100.0),
            "timeout_pct": _ratio(timeouts.get(g, 0.0), n, 100.0),
            "p95_s": _finite(p95.get(g)),
        })  # fmt: skip
    return rows


def _quality(r: dict[Key, float], cur: Scrape) -> list[dict]:
    scores: dict[str, dict[str, float]] = {}
    for (name, labels), (_, v) in cur.samples.items():
        if name == QUALITY:
            scores.setdefault(_label(labels, AGENT) or "", {})[_label(labels, METRIC_TYPE) or ""] = v
    conv = sum_by(r, CONVERSATIONS, (AGENT,))
    esc = sum_by(r, ESCALATIONS, (AGENT,))
    turns_sum, turns_n = sum_by(r, TURNS + "_sum", (AGENT,)), sum_by(r, TURNS + "_count", (AGENT,))
    rows = []
    for agent in sorted(set(scores) | {g[0] for g in conv}):
        g = (agent,)
        n = conv.get(g)
        row = {"agent": agent}
        row.update({"score:" + t: v for t, v in sorted(scores.get(agent, {}).items())})
        row.update({
            "conversations_per_min": _ratio(n, 1.0, 60.0),
            "escalated_pct": _ratio(esc.get(g, 0.0), n, 100.0),
            "turns_per_conversation": _ratio(turns_sum.get(g), turns_n.get(g)),
        })  # fmt: skip
        rows.append(row)
    return rows


# --- presenting ------------------------------------------------------------------------


def format_value(kind: str, value) -> str:
    """The text of one cell; ``-`` for an undefined figure (no runs in the interval, ...)."""
    if value is None:
        return "-"
    if kind == "name":
        return str(value)
    if kind == "pct":
        return f"{value:.1f}%"
    if kind == "seconds":
        return f"{value:.2f}s"
    if kind == "tokens":
        return f"{value:,.0f}"
    if kind == "dollars":
        return f"{value:.3f}"
    if kind == "rate":
        return f"{value:.2f}"
    if kind in ("ratio", "score"):
        return f"{value:.2f}"
    raise ValueError(f"unknown column kind {kind!r}")


def sort_rows(rows: list[dict], key: str, reverse: bool = False) -> list[dict]:
    """Rows by ``key``: numbers high to low, names A-Z (``reverse`` flips); undefined last."""
    present = [r for r in rows if r.get(key) is not None]
    missing = [r for r in rows if r.get(key) is None]
    numeric = all(isinstance(r[key], (int, float)) for r in present)
    present.sort(key=lambda r: r[key], reverse=numeric != reverse)
    return present + missing


def filter_rows(rows: list[dict], view: str, text: str) -> list[dict]:
    """Rows whose name columns (agent, model, tool) contain ``text`` (case-insensitive)."""
    if not text:
        return rows
    needle = text.lower()
    names = [c.key for c in VIEWS[view] if c.kind == "name"]
    return [r for r in rows if any(needle in str(r.get(k, "")).lower() for k in names)]


def plain_table(view: str, rows: list[dict]) -> str:
    """``rows`` as an aligned plain-text table: names left, figures right, two spaces apart."""
    cols = columns(view, rows)
    cells = [[c.title for c in cols]] + [[format_value(c.kind, r.get(c.key)) for c in cols] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cols))]
    lines = []
    for line in cells:
        parts = [text.ljust(w) if c.kind == "name" else text.rjust(w) for text, w, c in zip(line, widths, cols)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float | None], width: int) -> str:
    """The last ``width`` values as block characters scaled to their maximum (blank: no figure)."""
    padding: list[float | None] = [None] * (width - len(values))
    values = padding + values[-width:]  # newest at the right edge
    top = max((v for v in values if v is not None), default=0.0)
    out = []
    for v in values:
        if v is None:
            out.append(" ")
        elif top <= 0:
            out.append(SPARKS[0])
        else:
            out.append(SPARKS[min(len(SPARKS) - 1, int(v / top * (len(SPARKS) - 1) + 0.5))])
    return "".join(out)
