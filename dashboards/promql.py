"""Catalogue-backed metric names and a small PromQL reader.

:func:`m` is how the generator names a series: it fails at generation time for a name
the exporter does not produce. :func:`references` and :func:`check` read an expression
back (metric names, label matchers, grouping labels) so a test can prove that every
query in the committed files names only series and labels that exist. :func:`operands`
splits an expression at its top-level comparison and set operators, so each side can be
run on its own against a real Prometheus.

This is a reader for the expressions we write, not a full PromQL parser: it knows
strings, label matchers, ranges, grouping clauses and function calls.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from spanmeter.catalog import ATTRIBUTED, HISTOGRAM, METRICS, exported

_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
#: The attribution labels (``configure(attribution={...})``) the dashboard and rules are made
#: for: a variable and "who spends" panels each, a cost-per-hour recording rule each, and a
#: budget alert for the first. Change to your labels and regenerate.
ATTRIBUTION_LABELS = ("tenant",)


def exposed_series() -> dict[str, frozenset[str]]:
    """Every series name Prometheus scrapes from spanmeter by default (current GenAI names, not
    the v1.41 ones behind ``OTEL_SEMCONV_STABILITY_OPT_IN``), with its label names."""
    names: dict[str, frozenset[str]] = {}
    for spec in exported():
        labels = frozenset(spec.exposed_labels)
        if spec.name in ATTRIBUTED:
            labels |= frozenset(ATTRIBUTION_LABELS)
        if spec.kind == HISTOGRAM:
            for suffix in _HISTOGRAM_SUFFIXES:
                names[spec.exposed_name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
        else:
            names[spec.exposed_name] = labels
    return names


def m(name: str, suffix: str = "") -> str:
    """The exposed name of catalogue metric ``name`` (plus a histogram ``suffix``)."""
    series = exposed_series()
    for spec in exported():
        if spec.name == name or spec.exposed_name == name:
            full = spec.exposed_name + suffix
            if full not in series:
                raise KeyError(f"{full} is not a series of {spec.exposed_name} ({spec.kind})")
            return full
    raise KeyError(f"{name} is not in spanmeter.catalog.METRICS")


# --- reading expressions back --------------------------------------------------------------
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<number>[0-9][0-9a-zA-Z.+]*|\.[0-9]+)
    | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
    | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],@])
    )""",
    re.VERBOSE,
)
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
            "and", "or", "unless", "inf", "nan", "atan2"}  # fmt: skip
_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_COMPARISON = {"==", "!=", "<", ">", "<=", ">="}
_SET = {"and", "or", "unless"}


def tokens(expr: str) -> list[tuple[str, str]]:
    """(kind, text) tokens of ``expr``; raises ValueError on a character it cannot read."""
    out, pos = [], 0
    expr = expr.rstrip()
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if not match or match.end() == pos:
            raise ValueError(f"cannot read {expr[pos:pos + 20]!r} in {expr!r}")
        kind = match.lastgroup
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


@dataclass
class References:
    """What an expression refers to."""

    metrics: set[str] = field(default_factory=set)
    #: (metric, label, operator, value) of each label matcher
    matchers: list[tuple[str, str, str, str]] = field(default_factory=list)
    #: label names in by/without/on/ignoring/group_* clauses
    grouping: set[str] = field(default_factory=set)
    #: functions called
    functions: set[str] = field(default_factory=set)


def references(expr: str) -> References:
    """Metric names, label matchers and grouping labels of ``expr``."""
    toks = tokens(expr)
    refs = References()
    i = 0
    last_metric = ""
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else ""
        if kind == "ident" and text in _GROUPING and nxt == "(":
            i += 2
            while toks[i][1] != ")":
                if toks[i][0] == "ident":
                    refs.grouping.add(toks[i][1])
                i += 1
        elif kind == "ident" and (nxt == "(" or nxt in ("by", "without")) and text not in KEYWORDS:
            refs.functions.add(text)
        elif kind == "ident" and text not in KEYWORDS:
            refs.metrics.add(text)
            last_metric = text
        elif text == "{":
            metric = last_metric if i > 0 and toks[i - 1][1] == last_metric else ""
            i += 1
            while toks[i][1] != "}":
                if toks[i][0] == "ident":
                    label, op, value = toks[i][1], toks[i + 1][1], toks[i + 2][1]
                    refs.matchers.append((metric, label, op, value[1:-1]))
                    i += 3
                else:
                    i += 1
        elif text == "[":
            while toks[i][1] != "]":
                i += 1
        i += 1
    return refs


def check(expr: str, extra: dict[str, frozenset[str]] | None = None) -> list[str]:
    """Problems of ``expr``: names the exporter does not produce, labels they do not have.

    ``extra`` adds series that exist besides the exporter's (recording rules).
    """
    known = {**exposed_series(), **(extra or {})}
    refs = references(expr)
    problems = [f"{name} is not a series spanmeter exposes" for name in sorted(refs.metrics - set(known))]
    labels_in_use: set[str] = set()
    for name in refs.metrics & set(known):
        labels_in_use |= known[name]
    for metric, label, _op, _value in refs.matchers:
        have = known.get(metric, labels_in_use)
        if label not in have:
            problems.append(f"{metric or 'selector'} has no label {label!r}")
    for label in sorted(refs.grouping - labels_in_use):
        problems.append(f"no series in the expression has the grouping label {label!r}")
    return problems


def operands(expr: str) -> list[str]:
    """The sub-expressions joined by top-level comparison or set operators, recursively.

    ``(a > 1 and b > 1) or c < 2`` gives ``a``, ``1``, ``b``, ``1``, ``c``, ``2``. An
    expression without such operators gives itself.
    """
    text = expr.strip()
    while _wrapped(text):
        text = text[1:-1].strip()
    for ops in (_SET - {"and", "unless"}, {"and", "unless"}, _COMPARISON):
        parts = _split(text, ops)
        if len(parts) > 1:
            return [o for part in parts for o in operands(part)]
    return [text]


def _wrapped(text: str) -> bool:
    if not (text.startswith("(") and text.endswith(")")):
        return False
    depth = 0
    for _kind, tok, start in _spans(text):
        depth += tok in "([{" and len(tok) == 1
        depth -= tok in ")]}" and len(tok) == 1
        if depth == 0 and start < len(text) - 1:
            return False
    return True


def _spans(text: str):
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ValueError(f"cannot read {text[pos:pos + 20]!r}")
        kind = match.lastgroup
        yield kind, match.group(kind), match.start(kind)
        pos = match.end()
        if not text[pos:].strip():
            return


def _split(text: str, ops: set[str]) -> list[str]:
    parts, depth, start = [], 0, 0
    spans = list(_spans(text))
    i = 0
    while i < len(spans):
        kind, tok, pos = spans[i]
        if kind == "op" and tok in "([{":
            depth += 1
        elif kind == "op" and tok in ")]}":
            depth -= 1
        elif depth == 0 and tok in ops and (kind == "op" or tok in _SET):
            parts.append(text[start:pos])
            # skip the operator's modifiers: bool, on/ignoring (...), group_left/right (...)
            j = i + 1
            while j < len(spans) and spans[j][1] in ("bool", *_GROUPING):
                j += 1
                if j < len(spans) and spans[j][1] == "(":
                    while spans[j][1] != ")":
                        j += 1
                    j += 1
            start = spans[j][2] if j < len(spans) else len(text)
            i = j
            continue
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts] if len(parts) > 1 else [text]
