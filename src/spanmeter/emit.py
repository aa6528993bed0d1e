"""The emit API: spans for an agent run, a model inference and a tool call.

Each of :func:`agent_run`, :func:`model_call` and :func:`tool_call` returns a scope
that works as a context manager (``with`` and ``async with``) and as a decorator (of
plain and ``async`` functions). Spans follow the OpenTelemetry GenAI conventions
v1.41: ``invoke_agent {agent}``, ``chat {model}``, ``execute_tool {tool}``.

When the block raises, the span gets status ERROR, ``error.type`` (the exception's
qualified class name, or ``timeout`` for a ``TimeoutError`` not named so) and the
exception event, and still ends, so the measurement is recorded. An exception that is
not an ``Exception`` (cancellation, ``KeyboardInterrupt``) is recorded the same way.
A handle's ``fail(error_type)`` marks a failure without an exception.

A model call's span gets its cost before it ends, when usage was recorded and the model has
a price (the pricer of the spanmeter processor on the span's tracer provider; the pricing
cache makes it a dictionary lookup): ``gen_ai.usage.cost.amount`` (US dollars),
``gen_ai.usage.cost.currency`` ``USD``, ``gen_ai.usage.cost.source`` ``local``
(semantic-conventions-genai, Development), and ``spanmeter.cost.price_source`` (override or
catalogue). A cost the application set on the span itself is left as it is.

A scope object may be kept and reused, also concurrently (``SEARCH = tool_call("search")``
then ``async with SEARCH:`` in several tasks or threads): each entry's span and handle
live in that entry's context (``contextvars``, through the OpenTelemetry context), so
tasks never end or mark each other's spans.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from spanmeter import __version__
from spanmeter import conventions as c
from spanmeter.lifecycle import attached
from spanmeter.pricing import cost_attributes

_log = logging.getLogger("spanmeter")
_tracers: dict[int, tuple[object, trace.Tracer]] = {}
#: OpenTelemetry context key of the innermost entry (its handle) of a spanmeter scope.
_ENTRY = otel_context.create_key("spanmeter-scope-entry")
_NO_ATTRIBUTES: dict = {}


def _tracer(tracer_provider) -> trace.Tracer:
    if tracer_provider is None:
        from spanmeter import config

        tracer_provider = config.default_tracer_provider()
    key = id(tracer_provider)
    entry = _tracers.get(key)
    if entry is None or entry[0] is not tracer_provider:
        tracer = trace.get_tracer("spanmeter", __version__, tracer_provider=tracer_provider)
        entry = _tracers[key] = (tracer_provider, tracer)
    return entry[1]


class SpanHandle:
    """What the ``as`` of a scope gives: the span, and a way to mark a failure."""

    __slots__ = ("span", "_started", "_error_type", "_scope", "_token", "_outer")

    def __init__(self, span):
        self.span = span
        self._started = time.perf_counter()
        self._error_type: str | None = None
        self._scope = None  # the scope entered, and the token of the context it attached
        self._token = None
        self._outer = None  # the entry that was innermost when this one entered

    def fail(self, error_type: str = c.ERROR_OTHER, description: str | None = None) -> None:
        """Mark the operation failed (``timeout`` in the type counts as a timeout).

        Without an exception this is how a failure is told; before raising, it names
        the error better than the exception class (a provider's error code, say).
        """
        self._error_type = error_type
        self.span.set_attribute(c.ERROR_TYPE, error_type)
        self.span.set_status(Status(StatusCode.ERROR, description))

    def set_attribute(self, key: str, value) -> None:
        self.span.set_attribute(key, value)


class AgentRun(SpanHandle):
    """Handle of an agent run.

    ``record_input``, ``record_output`` and ``add_context`` keep what an evaluator judges
    if this run's trace is sampled (see :mod:`spanmeter.quality`); they never go on the
    span or into a metric.
    """

    __slots__ = ("_input", "_output", "_context")

    def __init__(self, span):
        super().__init__(span)
        self._input = None
        self._output = None
        self._context: list = []

    def set_conversation_id(self, conversation_id: str) -> None:
        self.span.set_attribute(c.CONVERSATION_ID, conversation_id)

    def end_conversation(self, *, escalated: bool = False) -> None:
        """This run is the last turn of its conversation (``escalated``: handed to a human)."""
        self.span.set_attribute(c.CONVERSATION_ENDED, True)
        self.span.set_attribute(c.CONVERSATION_ESCALATED, bool(escalated))

    def record_input(self, text) -> None:
        self._input = text

    def record_output(self, text) -> None:
        self._output = text

    def add_context(self, *items) -> None:
        """Tool results or retrieved documents the answer should be grounded in."""
        self._context.extend(items)


class ModelCall(SpanHandle):
    """Handle of a model inference: record usage and response details on it."""

    __slots__ = ("_tokens", "_response_model")

    def __init__(self, span):
        super().__init__(span)
        self._tokens = None  # (input, output, cache_read, cache_write, reasoning), for the cost
        self._response_model = None

    def record_usage(
        self,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cache_read_tokens: int | None = None,
        cache_write_tokens: int | None = None,
        reasoning_tokens: int | None = None,
    ) -> None:
        """Token usage with the GenAI meaning: ``input_tokens`` includes cache reads
        and writes, ``output_tokens`` includes reasoning. (Anthropic's API reports
        input without cache: add ``cache_read`` and ``cache_creation`` to it.)"""
        span = self.span
        self._tokens = (input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens)
        for key, value in (
            (c.INPUT_TOKENS, input_tokens),
            (c.OUTPUT_TOKENS, output_tokens),
            (c.CACHE_READ_TOKENS, cache_read_tokens),
            (c.CACHE_WRITE_TOKENS, cache_write_tokens),
            (c.REASONING_TOKENS, reasoning_tokens),
        ):
            if value is not None:
                span.set_attribute(key, value)

    def record_response(
        self,
        *,
        model: str | None = None,
        finish_reasons: Sequence[str] | None = None,
        response_id: str | None = None,
    ) -> None:
        if model is not None:
            self._response_model = model
            self.span.set_attribute(c.RESPONSE_MODEL, model)
        if finish_reasons is not None:
            self.span.set_attribute(c.RESPONSE_FINISH_REASONS, list(finish_reasons))
        if response_id is not None:
            self.span.set_attribute(c.RESPONSE_ID, response_id)

    def record_first_chunk(self) -> None:
        """Call when the first chunk of a streamed response arrives."""
        self.span.set_attribute(c.TIME_TO_FIRST_CHUNK, time.perf_counter() - self._started)


class ToolCall(SpanHandle):
    """Handle of a tool call."""

    __slots__ = ()

    def record_decision(self, outcome: str) -> None:
        """The decision taken before the tool ran: ``allow``, ``deny`` or ``require_approval``.

        Written as the conventions' ``gen_ai.tool.call.decision`` event on the tool span and
        counted in ``agent_tool_call_decisions_total``; another outcome is counted as a dropped
        value, never raised.
        """
        span = self.span
        if not span.is_recording():  # sampled out, or no SDK: nothing to record, and no attributes to read
            return
        attributes = {c.TOOL_CALL_DECISION_OUTCOME: outcome}
        tool = (getattr(span, "attributes", None) or {}).get(c.TOOL_NAME)
        if tool is not None:
            attributes[c.TOOL_NAME] = tool
        span.add_event(c.TOOL_CALL_DECISION, attributes)


class _Scope:
    """One span per use, as ``with``, ``async with`` or decorator.

    Left while a scope entered inside it is still open (a generator holding a ``with``,
    read in part and kept), it still ends its span and restores the context it found, so
    nothing later is charged to it; a scope exited in another context than its entry's (that
    generator closed or collected elsewhere) ends its span when it has only one open.
    """

    __slots__ = ("_name", "_kind", "_attributes", "_handle_cls", "_tracer_provider", "_evaluator", "_open")

    def __init__(self, name, kind, attributes, handle_cls, tracer_provider, evaluator=None):
        self._name = name
        self._kind = kind
        self._attributes = attributes
        self._handle_cls = handle_cls
        self._tracer_provider = tracer_provider
        self._evaluator = evaluator
        self._open: list = []  # handles entered and not exited (one, unless the scope is shared)

    def _fresh(self) -> _Scope:
        return _Scope(
            self._name, self._kind, self._attributes, self._handle_cls, self._tracer_provider, self._evaluator
        )

    def __enter__(self):
        span = _tracer(self._tracer_provider).start_span(self._name, kind=self._kind, attributes=self._attributes)
        handle = self._handle_cls(span)
        handle._scope = self
        handle._outer = otel_context.get_value(_ENTRY)
        # The entry lives in the context it attaches, not on the scope: a scope entered by
        # two tasks at once finds each task's own entry at exit.
        handle._token = otel_context.attach(otel_context.set_value(_ENTRY, handle, trace.set_span_in_context(span)))
        self._open.append(handle)
        return handle

    def __exit__(self, exc_type, exc, tb) -> None:
        handle = otel_context.get_value(_ENTRY)
        while handle is not None and handle._scope is not self:
            handle = handle._outer  # left before a scope entered inside it (a kept generator's)
        token = None
        if handle is not None:
            token = handle._token  # ours is in this context: detaching restores what we found
        else:
            entered = self._open[:]
            if len(entered) != 1:  # shared by tasks or threads: which entry is this one's is unknown
                _log.warning("spanmeter: %s exited where it was not entered (another task or thread?)", self._name)
                return
            handle = entered[0]  # exited elsewhere (a generator closed or collected): end it, leave the context
        try:
            self._open.remove(handle)
        except ValueError:  # its span ended already (exited elsewhere first): only the context is left
            if token is not None:
                otel_context.detach(token)
            return
        span = handle.span
        try:
            if exc is not None:
                span.set_attribute(c.ERROR_TYPE, handle._error_type or c.error_type_of(exc))
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:1000]))
                span.record_exception(exc)
            if self._handle_cls is ModelCall and handle._tokens is not None:
                self._price(handle)
        finally:
            if token is not None:
                otel_context.detach(token)
            span.end()
            if self._handle_cls is AgentRun and (handle._input is not None or handle._output is not None):
                self._offer(handle)

    def _price(self, handle: ModelCall) -> None:
        """Set the call's cost attributes (see the module docstring); never raises."""
        try:
            span = handle.span
            attributes = getattr(span, "attributes", None) or {}
            if c.COST_AMOUNT in attributes:
                return  # the application priced it
            tracer_provider = self._tracer_provider
            if tracer_provider is None:
                from spanmeter import config

                tracer_provider = config.default_tracer_provider()
            pricer = pricer_of(tracer_provider)
            if pricer is None:
                return
            tokens, _ = c.coerce_tokens(handle._tokens)
            priced = pricer.price(self._attributes.get(c.PROVIDER_NAME), self._attributes.get(c.REQUEST_MODEL),
                                  handle._response_model, tokens, time.time_ns(), _NO_ATTRIBUTES)  # fmt: skip
            cost = cost_attributes(priced)
            if cost:
                span.set_attributes(cost)
        except Exception:  # deliberate: pricing must never break the application's call
            _log.debug("spanmeter could not price a model call", exc_info=True)

    def _offer(self, handle: AgentRun) -> None:
        evaluator = self._evaluator
        if evaluator is None and self._tracer_provider is None:
            from spanmeter import config

            evaluator = config.default_evaluator()
        if evaluator is not None:
            evaluator.offer(self._attributes[c.AGENT_NAME], handle.span.get_span_context().trace_id,
                            handle._input, handle._output, handle._context)  # fmt: skip

    async def __aenter__(self):
        return self.__enter__()

    async def __aexit__(self, exc_type, exc, tb) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, fn):
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args, **kwargs):
                async with self._fresh():
                    return await fn(*args, **kwargs)

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self._fresh():
                return fn(*args, **kwargs)

        return wrapper


def pricer_of(tracer_provider):
    """The pricer of the spanmeter processor attached to ``tracer_provider``, or None."""
    for processor in attached(tracer_provider):
        pricer = getattr(processor, "pricer", None)
        if pricer is not None:
            return pricer
    return None


def agent_run(
    agent_name: str,
    *,
    conversation_id: str | None = None,
    agent_id: str | None = None,
    provider: str | None = None,
    tracer_provider=None,
    evaluator=None,
) -> _Scope:
    """An agent run: span ``invoke_agent {agent_name}`` (INTERNAL, in-process agent).

    ``evaluator``: where a sampled run's captured input/output go (by default the one given
    to :func:`spanmeter.configure`).
    """
    attributes = {c.OPERATION_NAME: c.OP_INVOKE_AGENT, c.AGENT_NAME: agent_name}
    if conversation_id is not None:
        attributes[c.CONVERSATION_ID] = conversation_id
    if agent_id is not None:
        attributes[c.AGENT_ID] = agent_id
    if provider is not None:
        attributes[c.PROVIDER_NAME] = provider
    return _Scope(f"invoke_agent {agent_name}", SpanKind.INTERNAL, attributes, AgentRun, tracer_provider, evaluator)


def model_call(
    model: str,
    *,
    provider: str | None = None,
    operation: str = c.OP_CHAT,
    stream: bool | None = None,
    tracer_provider=None,
) -> _Scope:
    """A model inference: span ``{operation} {model}`` (CLIENT)."""
    attributes = {c.OPERATION_NAME: operation, c.REQUEST_MODEL: model}
    if provider is not None:
        attributes[c.PROVIDER_NAME] = provider
    if stream is not None:
        attributes[c.REQUEST_STREAM] = stream
    return _Scope(f"{operation} {model}", SpanKind.CLIENT, attributes, ModelCall, tracer_provider)


def tool_call(
    tool_name: str,
    *,
    tool_type: str | None = None,
    call_id: str | None = None,
    tracer_provider=None,
) -> _Scope:
    """A tool call: span ``execute_tool {tool_name}`` (INTERNAL)."""
    attributes = {c.OPERATION_NAME: c.OP_EXECUTE_TOOL, c.TOOL_NAME: tool_name}
    if tool_type is not None:
        attributes[c.TOOL_TYPE] = tool_type
    if call_id is not None:
        attributes[c.TOOL_CALL_ID] = call_id
    return _Scope(f"execute_tool {tool_name}", SpanKind.INTERNAL, attributes, ToolCall, tracer_provider)
