"""Exact metrics under trace sampling: a sampler that records GenAI runs the inner one drops.

A span processor sees recording spans only, so with a ratio sampler at 10% the metrics
count 10% of the calls. :func:`keep_genai` wraps the application's sampler; for each span:

1. the inner sampler's decision stands whenever it records the span (``RECORD_AND_SAMPLE``
   or ``RECORD_ONLY``): what is exported is exactly what the inner sampler chose;
2. where the inner sampler drops it, the span is recorded but not exported
   (``RECORD_ONLY``, with its start attributes) when it is a GenAI span (an agent run, an
   inference or a tool call, classified from its start attributes and name by
   :func:`spanmeter.conventions.kind_of`, as the processor classifies it) or when its
   parent is a span of this process that is recorded but not sampled. So a whole run is
   recorded below a dropped root: the framework and HTTP spans between an agent run and its
   tool and model calls too, which the processor needs to attribute them to the run
   (a ``ParentBased`` inner sampler drops every child of an unsampled parent);
3. anything else stays dropped: spans outside GenAI runs cost what they cost before.

Trade-off: a recorded span costs about as much CPU and memory as a sampled one until it
ends (only export is saved), so an app sampling 10% pays for recording all its GenAI runs
(and their subtrees) in full. Spans classified only after they start (the Traceloop SDK's
agents and tools get their attributes then) are not seen as GenAI at sampling time; their
model calls are still counted, under the agent ``unknown`` when the run was dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, get_current_span
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from spanmeter.conventions import kind_of
from spanmeter.errors import ConfigurationError

_log = logging.getLogger("spanmeter")
_EMPTY: dict = {}
_RECORD_ONLY = Decision.RECORD_ONLY


class KeepGenAI(Sampler):
    """Records (without exporting) the GenAI runs ``inner`` drops; see :mod:`spanmeter.sampling`."""

    def __init__(self, inner: Sampler):
        if not callable(getattr(inner, "should_sample", None)):
            raise ConfigurationError(
                f"keep_genai(inner): expected an OpenTelemetry sampler, got {inner!r}; "
                "pass e.g. ParentBased(TraceIdRatioBased(0.1)) from opentelemetry.sdk.trace.sampling"
            )
        self.inner = inner
        self._last_log = -float("inf")

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        result = self.inner.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)
        if result.decision.is_recording():
            return result
        try:
            if kind_of(attributes or _EMPTY, name) is None:
                parent = get_current_span(parent_context)
                if not parent.is_recording() or parent.get_span_context().trace_flags.sampled:
                    return result  # not GenAI, not under a recorded-only span: dropped as chosen
            # The span's own attributes: a DROP result carries none, and a span is created
            # with the result's attributes only.
            return SamplingResult(_RECORD_ONLY, attributes, result.trace_state)
        except Exception:  # deliberate: instrumentation must never break the app
            now = time.monotonic()
            if now - self._last_log >= 60:
                self._last_log = now
                _log.exception("spanmeter: keep_genai could not classify a span; the inner decision stands")
            return result

    def get_description(self) -> str:
        return f"KeepGenAI{{{self.inner.get_description()}}}"


def keep_genai(inner: Sampler) -> Sampler:
    """``inner``, except that GenAI runs it drops are recorded (``RECORD_ONLY``), not exported.

    ``TracerProvider(sampler=keep_genai(ParentBased(TraceIdRatioBased(0.1))))`` exports 10%
    of the traces and lets spanmeter count every agent run, model call and tool call.
    """
    return KeepGenAI(inner)
