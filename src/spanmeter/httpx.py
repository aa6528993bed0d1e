"""Zero-code model metrics for LLM calls made over ``httpx`` and ``httpx2``.

    import spanmeter, spanmeter.httpx
    meter = spanmeter.configure(service_name="support-bot")
    spanmeter.httpx.instrument(meter)      # every OpenAI / Anthropic / Gemini call counts

:func:`instrument` enables ``opentelemetry-instrumentation-httpx``
(``HTTPXClientInstrumentor`` for ``httpx``, ``HTTPX2ClientInstrumentor`` for ``httpx2``,
which openai 3.x and anthropic 2.x use) with hooks that recognise LLM requests by path
and body (:mod:`spanmeter.wire`, user rules first) and turn each into a GenAI
inference span that spanmeter's processor counts.

Design (why a child span, not attributes on the HTTP span): the instrumentation ends
the HTTP client span inside ``HTTPTransport.handle_request``, as soon as the response
headers are in, and httpx reads the body after that, for a JSON body
(``Client.send`` calls ``response.read()``) as well as for a stream. Usage is in the
body, so it can never be written on the HTTP span. The request hook therefore starts a
``chat {model}`` (or ``generate_content``/``embeddings``/``text_completion``) CLIENT
span as a child of the HTTP span, and a pass-through tap on the response stream ends it
when the body is exhausted, fails or is closed. The HTTP span carries no
``gen_ai.operation.name`` and is never counted as an inference.

The tap sits in place of the transport stream's inner byte iterator, beneath httpx's
exception mapping and content decoding: chunks reach the application unchanged and
uncopied, an exception from the connection passes through untouched (so the application
sees exactly the exception it would see without spanmeter), and the tap's own work is
guarded so that it never raises. It inspects a bounded number of bytes
(:mod:`spanmeter.wire`: whole documents up to 128 KiB, else their first and last 64 KiB;
streams scanned up to 16 MiB; only usage-bearing SSE events decoded).

Span lifetime: the inference span ends when the body ends (duration: request sent to
last byte), when the connection fails (``error.type`` = the exception's class name),
when the application closes the response early (what was read so far; counted as
``closed_early`` in ``spanmeter_dropped_values_total``), or, for a response the
application neither reads to the end nor closes, when the response is garbage-collected,
with the time of the last byte seen as its end (``abandoned``). A request that fails
before any response ends it at once with the failure's type.

Counted once: a request made under an open inference span (``spanmeter.model_call``, or
an SDK instrumentation's ``chat`` span) is already measured by that span, and gets no
second one. Provider errors: ``error.type`` from the error body (``rate_limit_exceeded``,
``rate_limit_error``, ``overloaded_error``, ``RESOURCE_EXHAUSTED``,
``context_length_exceeded``), else the HTTP status (``429``, ``529``...).

The instrumentation's own HTTP metrics are not recorded (it gets a no-op meter
provider): spanmeter's metrics come from spans.
"""

from __future__ import annotations

import importlib
import logging
import time

from opentelemetry import trace
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from spanmeter import __version__, wire
from spanmeter import conventions as c
from spanmeter.errors import ConfigurationError

__all__ = ["HttpxInstrumentation", "Rule", "instrument"]

Rule = wire.Rule
_log = logging.getLogger("spanmeter")
_INFERENCE_OPS = frozenset(op for op, kind in c.OPERATION_KINDS.items() if kind == c.KIND_INFERENCE)
_MAX_TRACKED = 100_000


class _Tracker(SpanProcessor):
    """Open inference spans (to count a call once), and calls awaiting a response.

    A call whose HTTP span ends without the response hook having run (the request failed
    before a response) is ended here, with the HTTP span's failure.
    """

    def __init__(self):
        self.active = True
        self.open_inferences: dict[int, None] = {}
        self.pending: dict[int, _Call] = {}

    def on_start(self, span, parent_context=None) -> None:
        if not self.active:
            return
        try:
            attrs = span.attributes
            if attrs and attrs.get(c.OPERATION_NAME) in _INFERENCE_OPS:
                if len(self.open_inferences) >= _MAX_TRACKED:  # spans that never end
                    self.open_inferences.clear()
                self.open_inferences[span.context.span_id] = None
        except Exception:  # deliberate: never break the application
            pass

    def on_end(self, span) -> None:
        try:
            if self.open_inferences:
                self.open_inferences.pop(span.context.span_id, None)
            if self.pending:
                call = self.pending.pop(span.context.span_id, None)
                if call is not None:
                    call.finish(error_type=_failure_of(span))
        except Exception:  # deliberate: never break the application
            pass

    def shutdown(self) -> None:
        self.active = False

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _failure_of(span) -> str:
    """``error.type`` of an HTTP span that ended without a response."""
    attrs = span.attributes or {}
    if attrs.get(c.ERROR_TYPE):
        return str(attrs[c.ERROR_TYPE])
    for event in span.events or ():
        if event.name == "exception" and event.attributes and event.attributes.get("exception.type"):
            return str(event.attributes["exception.type"]).rsplit(".", 1)[-1]
    return c.ERROR_OTHER


class _Call:
    """One LLM call in flight: its inference span and the reader of its response."""

    __slots__ = ("span", "request", "owner", "reader", "started", "first", "last_ns", "status", "finished")

    def __init__(self, span, request: wire.Request, owner: HttpxInstrumentation):
        self.span = span
        self.request = request
        self.owner = owner
        self.reader = None
        self.started = time.perf_counter()
        self.first = None
        self.last_ns = None
        self.status = None
        self.finished = False

    def feed(self, chunk) -> None:
        """A chunk on its way to the application; never raises."""
        try:
            if self.first is None:
                self.first = time.perf_counter() - self.started
            self.last_ns = time.time_ns()
            reader = self.reader
            if reader.active:
                reader.feed(chunk)
        except Exception:  # deliberate: the application's stream comes first
            self.owner._fault()
            self.reader.active = False

    def finish(self, error_type=None, problem=None, end_time=None) -> None:
        """End the inference span with what the response said; idempotent, never raises."""
        if self.finished:
            return
        self.finished = True
        try:
            span = self.span
            problems = []
            result = None
            if self.reader is not None:
                result = self.reader.finish()
                problems = result.problems
            if problem is not None and not (result is not None and result.complete):
                problems = problems + [problem]
            if result is not None:
                _set_result(span, result)
                error_type = error_type or result.error_type
            if self.request.stream and self.first is not None:
                span.set_attribute(c.TIME_TO_FIRST_CHUNK, self.first)
            if error_type:
                span.set_attribute(c.ERROR_TYPE, error_type)
                span.set_status(Status(StatusCode.ERROR))
            span.end(end_time=end_time)
            for item in problems:
                self.owner._drop(item)
        except Exception:  # deliberate
            self.owner._fault()

    def abandoned(self) -> None:
        if not self.finished:
            self.finish(problem=(wire.FIELD_RESPONSE, "abandoned"), end_time=self.last_ns)


def _set_result(span, result: wire.Result) -> None:
    set_attr = span.set_attribute
    if result.response_model:
        set_attr(c.RESPONSE_MODEL, result.response_model)
    if result.response_id:
        set_attr(c.RESPONSE_ID, result.response_id)
    if result.finish_reasons:
        set_attr(c.RESPONSE_FINISH_REASONS, tuple(result.finish_reasons))
    for key, value in (
        (c.INPUT_TOKENS, result.input_tokens),
        (c.OUTPUT_TOKENS, result.output_tokens),
        (c.CACHE_READ_TOKENS, result.cache_read_tokens),
        (c.CACHE_WRITE_TOKENS, result.cache_write_tokens),
        (c.REASONING_TOKENS, result.reasoning_tokens),
    ):
        if value is not None:
            set_attr(key, value)


class _Tap:
    """Pass-through of a sync response byte stream that tells the call what went by."""

    __slots__ = ("_inner", "_call")

    def __init__(self, inner, call: _Call):
        self._inner = inner
        self._call = call

    def __iter__(self):
        call = self._call
        feed = call.feed
        try:
            for chunk in self._inner:
                feed(chunk)
                yield chunk
        except GeneratorExit:
            call.finish(problem=(wire.FIELD_RESPONSE, "closed_early"))
            raise
        except BaseException as exc:
            call.finish(error_type=type(exc).__qualname__)
            raise
        call.finish()

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            self._call.finish(problem=(wire.FIELD_RESPONSE, "closed_early"))

    def __del__(self):
        try:
            self._call.abandoned()
        except Exception:  # deliberate: nothing may escape a finalizer
            pass


class _AsyncTap:
    """Pass-through of an async response byte stream that tells the call what went by."""

    __slots__ = ("_inner", "_call")

    def __init__(self, inner, call: _Call):
        self._inner = inner
        self._call = call

    async def __aiter__(self):
        call = self._call
        feed = call.feed
        try:
            async for chunk in self._inner:
                feed(chunk)
                yield chunk
        except GeneratorExit:
            call.finish(problem=(wire.FIELD_RESPONSE, "closed_early"))
            raise
        except BaseException as exc:
            call.finish(error_type=type(exc).__qualname__)
            raise
        call.finish()

    async def aclose(self) -> None:
        try:
            aclose = getattr(self._inner, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            self._call.finish(problem=(wire.FIELD_RESPONSE, "closed_early"))

    def __del__(self):
        try:
            self._call.abandoned()
        except Exception:  # deliberate
            pass


class _Hooks:
    """The four hooks for one client module (``httpx`` or ``httpx2``)."""

    def __init__(self, owner: HttpxInstrumentation, module):
        self.owner = owner
        self.byte_stream = module.ByteStream

    def request(self, span, info) -> None:
        try:
            if info[0] != b"POST":
                return
            owner = self.owner
            url = info[1]
            host, path = url.host, url.path
            rule = owner.matcher.match(host, path)
            if rule is None:
                return
            body = None
            stream = info[3]
            if isinstance(stream, self.byte_stream):  # bytes already in memory: safe to read
                body = b"".join(stream)
            request = wire.parse_request(rule, host, path, body)
            if request is None:
                return
            parent = span.parent
            if parent is not None and parent.span_id in owner.tracker.open_inferences:
                return  # an outer inference span already measures this call
            attributes = {
                c.OPERATION_NAME: request.operation,
                c.PROVIDER_NAME: request.provider,
                c.REQUEST_STREAM: request.stream,
            }
            if request.model:
                attributes[c.REQUEST_MODEL] = request.model
            name = f"{request.operation} {request.model}" if request.model else request.operation
            gen_span = owner.tracer.start_span(
                name, context=trace.set_span_in_context(span), kind=SpanKind.CLIENT, attributes=attributes
            )
            owner.tracker.pending[span.get_span_context().span_id] = _Call(gen_span, request, owner)
        except Exception:  # deliberate: never break the application's request
            self.owner._fault()

    def response(self, span, info, response, tap=_Tap) -> None:
        owner = self.owner
        if not owner.tracker.pending:
            return
        call = owner.tracker.pending.pop(span.get_span_context().span_id, None)
        if call is None:
            return
        try:
            status, headers, stream = response[0], response[1], response[2]
            call.status = status
            call.last_ns = time.time_ns()
            call.reader = wire.BodyReader(
                call.request.api,
                status,
                headers.get("content-type", "") if headers is not None else "",
                headers.get("content-encoding", "") if headers is not None else "",
                call.request.stream,
            )
            inner = getattr(stream, "_httpcore_stream", None)
            if inner is None:  # not the transport stream we know: measure without the body
                call.finish(problem=(wire.FIELD_RESPONSE, "unreadable_stream"))
                return
            stream._httpcore_stream = tap(inner, call)
        except Exception:  # deliberate
            owner._fault()
            call.finish()

    async def async_request(self, span, info) -> None:
        self.request(span, info)

    async def async_response(self, span, info, response) -> None:
        self.response(span, info, response, _AsyncTap)


class HttpxInstrumentation:
    """What :func:`instrument` enabled; :meth:`uninstrument` turns it off."""

    def __init__(self, meter, matcher: wire.Matcher):
        self.meter = meter
        self.matcher = matcher
        self.tracer = trace.get_tracer("spanmeter.httpx", __version__, tracer_provider=meter.tracer_provider)
        self.tracker = _Tracker()
        self.instrumentors: list = []
        self._last_log = -1e9

    def _drop(self, field_reason) -> None:
        self.meter.state.count("drops", field_reason)

    def _fault(self) -> None:
        try:
            self.meter.state.count("faults", ())
            now = time.monotonic()
            if now - self._last_log >= 60.0:
                self._last_log = now
                _log.warning("spanmeter.httpx dropped a measurement after an internal error", exc_info=True)
        except Exception:  # deliberate: even the error path must not raise
            pass

    def uninstrument(self) -> None:
        """Remove the hooks (and the instrumentation) from httpx and httpx2."""
        for instrumentor in self.instrumentors:
            instrumentor.uninstrument()
        self.instrumentors = []
        self.tracker.active = False
        self.tracker.open_inferences.clear()


def instrument(meter=None, *, rules=(), default_rules: bool = True) -> HttpxInstrumentation:
    """Measure every LLM call made with ``httpx`` or ``httpx2`` clients, sync and async.

    ``meter``: the :class:`spanmeter.Spanmeter` whose tracer provider and state to use
    (the one :func:`spanmeter.configure` made if None). ``rules``: extra
    :class:`spanmeter.wire.Rule` objects, tried before the built-in ones
    (``default_rules=False`` drops those). Raises :class:`spanmeter.ConfigurationError`
    when a requirement is missing or httpx is already instrumented without these hooks.
    """
    if meter is None:
        from spanmeter import config

        meter = config.current()
        if meter is None:
            raise ConfigurationError(
                "spanmeter.httpx.instrument() needs a running spanmeter: call spanmeter.configure() "
                "first, or pass meter=spanmeter.setup(...)"
            )
    try:
        from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor, HTTPXClientInstrumentor
    except ImportError as exc:
        raise ConfigurationError(
            f"spanmeter.httpx needs opentelemetry-instrumentation-httpx ({exc}); install it with "
            "pip install '.[httpx]' from a spanmeter checkout, 'spanmeter[httpx]' once published"
        ) from None
    try:
        matcher = wire.Matcher(rules, defaults=default_rules)
    except ValueError as exc:
        raise ConfigurationError(f"rules: {exc}") from None

    targets = []
    for cls, module_name in ((HTTPXClientInstrumentor, "httpx"), (HTTPX2ClientInstrumentor, "httpx2")):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        instrumentor = cls()
        if instrumentor.is_instrumented_by_opentelemetry:
            raise ConfigurationError(
                f"{module_name} is already instrumented by {cls.__name__} without spanmeter's hooks; "
                f"call {cls.__name__}().uninstrument() first (spanmeter.httpx.instrument() enables it)"
            )
        targets.append((instrumentor, module, cls.__name__))
    if not targets:
        raise ConfigurationError("spanmeter.httpx found neither httpx nor httpx2 installed: nothing to measure")

    owner = HttpxInstrumentation(meter, matcher)
    meter.tracer_provider.add_span_processor(owner.tracker)
    for instrumentor, module, name in targets:
        hooks = _Hooks(owner, module)
        instrumentor.instrument(
            tracer_provider=meter.tracer_provider,
            meter_provider=NoOpMeterProvider(),
            request_hook=hooks.request,
            response_hook=hooks.response,
            async_request_hook=hooks.async_request,
            async_response_hook=hooks.async_response,
        )
        if not instrumentor.is_instrumented_by_opentelemetry:
            owner.uninstrument()
            raise ConfigurationError(
                f"{name} refused to instrument {module.__name__} (a version conflict: see the "
                "opentelemetry-instrumentation warning above)"
            )
        owner.instrumentors.append(instrumentor)
    return owner
