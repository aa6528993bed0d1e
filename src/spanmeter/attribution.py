"""Who spends: opt-in attribution labels (tenant, team, project) on the cost, token and
request metrics.

``configure(attribution={"tenant": "app.tenant_id"})`` adds a label ``tenant`` whose value
is read, for each model call and agent run, from one source:

- ``"app.tenant_id"``: a span attribute, from the span itself or else the nearest span
  above it that has it (inherited down the run like the agent name: a call inside a run
  whose span carries the attribute gets it, whenever during the run it was set: a call
  without a value while its run is open waits for the run, see
  ``spanmeter.processor.ATTRIBUTION_HOLD``);
- ``"baggage:tenant"``: a W3C baggage entry in the context the span started in;
- ``"resource:service.namespace"``: an attribute of the tracer provider's resource (the
  same for every span of the process: a team or project per service).

Missing values are ``unknown``; distinct values are bounded like every label
(:data:`spanmeter.aggregate.ATTRIBUTION_LABEL_LIMIT`, ``label_limits={"tenant": ...}``),
beyond which they become ``other``. A baggage source costs one context read per span start;
span and resource sources are read at aggregation, off the application's thread. Labels go
on the metrics named in :data:`spanmeter.catalog.ATTRIBUTED` only: duration histograms
keep their series count (a label multiplies every bucket series). Per-person ids are
refused: they are unbounded and personal data (see :func:`check`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple

from opentelemetry import baggage as _baggage

from spanmeter import ancestry
from spanmeter.errors import ConfigurationError

SPAN, BAGGAGE, RESOURCE = "span", "baggage", "resource"
#: Attribution labels at most: each multiplies the series of the attributed metrics.
MAX_LABELS = 3
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
# Labels Prometheus or the exporter set on every series.
_RESERVED = {"job", "instance", "le", "quantile", "otel_scope_name", "otel_scope_version",
             "otel_scope_schema_url", "service_name", "service_namespace", "service_instance_id"}  # fmt: skip
# Words of a label name, and attribute keys, that identify a person or a session.
_PERSONAL_WORDS = {"user", "users", "userid", "username", "enduser", "email", "mail", "person", "people",
                   "phone", "session", "sessionid", "conversation", "ip", "login"}  # fmt: skip
_PERSONAL_KEYS = {"enduser.id", "enduser.pseudo.id", "user.id", "user.email", "user.name", "user.full_name",
                  "user.hash", "session.id", "session.previous_id", "gen_ai.conversation.id", "client.address",
                  "source.address"}  # fmt: skip


class Source(NamedTuple):
    """Where the value of one attribution label comes from."""

    label: str
    where: str  # SPAN, BAGGAGE or RESOURCE
    key: str


def parse(source: str) -> tuple[str, str]:
    """(where, key) of a source written ``key``, ``baggage:key`` or ``resource:key``."""
    for where in (BAGGAGE, RESOURCE):
        if source.startswith(where + ":"):
            return where, source[len(where) + 1 :]
    return SPAN, source


def check(attribution: Mapping[str, str] | None, taken: set[str]) -> tuple[Source, ...]:
    """The validated sources of ``configure(attribution=...)``; ``taken``: label names in use.

    Raises ``ConfigurationError`` for an invalid or clashing label name, an empty source, or
    a name or source that identifies a person: one series per person grows without bound
    and puts personal data in the metrics store, where it cannot be erased per person.
    """
    if attribution is None:
        return ()
    if not isinstance(attribution, Mapping):
        raise ConfigurationError(f'attribution must be a dict of label -> source, e.g. {{"tenant": "app.tenant_id"}}, '
                                 f"got {attribution!r}")  # fmt: skip
    if len(attribution) > MAX_LABELS:
        raise ConfigurationError(f"attribution has {len(attribution)} labels; at most {MAX_LABELS} (each multiplies "
                                 "the series of the cost, token and request metrics)")  # fmt: skip
    sources = []
    for label, source in attribution.items():
        if not isinstance(label, str) or not _LABEL.match(label) or label.startswith("__"):
            raise ConfigurationError(f"attribution label {label!r} is not a Prometheus label name "
                                     "([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)")  # fmt: skip
        if label in taken or label in _RESERVED:
            raise ConfigurationError(f"attribution label {label!r} is already a label of spanmeter's metrics or of "
                                     "Prometheus; choose another name, e.g. tenant, team or project")  # fmt: skip
        if not isinstance(source, str):
            raise ConfigurationError(f"attribution[{label!r}] must be a string: an attribute key, "
                                     f'"baggage:<key>" or "resource:<key>", got {source!r}')  # fmt: skip
        where, key = parse(source)
        if not key:
            raise ConfigurationError(f"attribution[{label!r}] = {source!r} names no key; e.g. \"app.tenant_id\", "
                                     '"baggage:tenant" or "resource:service.namespace"')  # fmt: skip
        words = set(re.split(r"[_.\-]+", label.lower())) | {label.lower()}
        if words & _PERSONAL_WORDS or key.lower() in _PERSONAL_KEYS:
            raise ConfigurationError(
                f"attribution {label!r} = {source!r} looks like a per-person id: spanmeter keeps user, session "
                "and conversation ids out of metric labels (one series per person is unbounded, and personal data "
                "in a metrics store cannot be erased per person); attribute to a tenant, team or project, and "
                "find one person's usage in the traces"
            )
        sources.append(Source(label, where, key))
    return tuple(sources)


class Attribution:
    """Reads the raw attribution values of a model call or agent run (at aggregation time)."""

    def __init__(self, sources: tuple[Source, ...]):
        self.sources = sources
        self.labels = tuple(s.label for s in sources)
        #: Positions of the labels read from span attributes (their values may come later in a run).
        self.span_positions = tuple(n for n, s in enumerate(sources) if s.where == SPAN)
        #: Baggage keys to capture when a span starts (None: no baggage source).
        self.baggage_keys = tuple(s.key for s in sources if s.where == BAGGAGE) or None
        #: Whether a label reads span attributes (inherited from spans that may have ended).
        self.reads_spans = any(s.where == SPAN for s in sources)
        self._resource: Mapping = {}

    def bind_resource(self, resource) -> None:
        """Resource sources read this resource (the tracer provider's)."""
        self._resource = dict(resource.attributes) if resource is not None else {}

    def capture(self, context) -> dict | None:
        """The configured baggage entries of ``context`` (the context a span starts in)."""
        entries = _baggage.get_all(context)
        if not entries or self.baggage_keys is None:
            return None
        return {k: entries[k] for k in self.baggage_keys if k in entries} or None

    def values(self, attrs, node, attributes_of) -> tuple:
        """One raw value (or None) per label, for the span with final attributes ``attrs``
        and ancestry ``node`` (a :class:`spanmeter.ancestry.Node` or None)."""
        out = []
        for source in self.sources:
            key = source.key
            if source.where == SPAN:
                value = attrs.get(key)
                if value is None and node is not None:
                    value = ancestry.inherited(node, key, attributes_of)
            elif source.where == BAGGAGE:
                captured = node.baggage if node is not None else None
                value = captured.get(key) if captured else None
            else:
                value = self._resource.get(key)
            out.append(value)
        return tuple(out)
