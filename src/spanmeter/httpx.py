"""Zero-code model metrics for LLM calls made over ``httpx`` and ``httpx2``.

    import spanmeter, spanmeter.httpx
    meter = spanmeter.configure(service_name="support-bot")
    spanmeter.httpx.instrument(meter)      # every OpenAI / Anthropic / Gemini call counts

:func:`instrument` wraps the transports' ``handle_request`` / ``handle_async_request``
of ``httpx`` and ``httpx2`` (which openai 3.x and anthropic 2.x use), recognises LLM
requests by method, path and body (:mod:`spanmeter.wire`, user rules first) and records
each as a GenAI inference span (``chat {model}``, ``generate_content``, ``embeddings``,
``text_completion``; kind CLIENT) that spanmeter's processor counts. By default it also
enables ``opentelemetry-instrumentation-httpx`` (``HTTPXClientInstrumentor`` /
``HTTPX2ClientInstrumentor``), whose HTTP client span of an LLM call is then a child
of the GenAI span, as with the official SDK instrumentations.

``http_spans=False`` records the GenAI spans alone: no HTTP client span for any request
and no ``traceparent`` header sent (so no trace continues at an LLM gateway), for less
than half the CPU per call (the HTTP instrumentation is most of it; ``benchmarks/peers.py``).
The metrics are the same either way: they come from the GenAI span.

``genai_spans=False`` (with ``http_spans=False``) makes no span at all: what the GenAI span
would carry goes straight to spanmeter's processor when the call ends, under the span that
was current when it began (its agent run), so every metric is the same. The trade-off: LLM
calls are not in your traces (no span, no cost on a span, no exemplar linking to one); the
span is about half of the CPU spanmeter adds per call (``benchmarks/peers.py``).

Usage is in the response body, which httpx reads after ``handle_request`` returns, so
the span ends when the body does. Two pass-through taps, neither copying nor changing
what the application gets: one on the transport's byte stream (beneath httpx's exception
mapping: the application sees exactly the exception it would see without spanmeter)
times the body and ends the span when it ends, fails or is closed; the other reads the
bytes as httpx's content decoder hands them to the application, so a gzip/deflate/br/
zstd body is decompressed once, by httpx (a compressed body the application reads raw,
with ``iter_raw()``, is counted without usage: ``encoded_body_read_raw`` in
``spanmeter_dropped_values_total``). Both taps guard their own work and never raise. The
inspection is bounded (:mod:`spanmeter.wire`: whole documents up to 128 KiB, else their
first and last 64 KiB, whatever their size; streams scanned up to 16 MiB; only
usage-bearing SSE events decoded).

Span lifetime: the inference span ends when the body ends (duration: request sent to
last byte), when the request or the body fails (``error.type`` = the exception's class
name), when the application closes the response early (what was read so far; counted as
``closed_early`` in ``spanmeter_dropped_values_total``), or, for a response the
application neither reads to the end nor closes, when the response is garbage-collected,
with the time of the last byte seen as its end (``abandoned``).

Counted once: a request made while an inference span of this spanmeter's tracer provider
is current (``spanmeter.model_call``, or an SDK instrumentation's ``chat`` span) is already
measured by that span, and gets no second one. An inference span of another provider (the
anthropic SDK traces each call on the global one by default: the app's own, say) never
reaches spanmeter: the request is measured, under the span that one was made in (its agent
run; ``unknown`` when that one is another provider's too).

Provider errors: ``error.type`` from the error body (``rate_limit_exceeded``,
``rate_limit_error``, ``overloaded_error``, ``RESOURCE_EXHAUSTED``,
``context_length_exceeded``), else the HTTP status (``429``, ``529``...).

Cost: the inference span carries the call's priced cost before it ends
(``gen_ai.usage.cost.amount`` in US dollars, ``.currency`` ``USD``, ``.source`` ``local``,
and ``spanmeter.cost.price_source``), when the response had usage and the model a price.

The HTTP instrumentation's own metrics are not recorded (it gets a no-op meter
provider): spanmeter's metrics come from spans.
"""

from __future__ import annotations

import importlib
import logging
import time

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import SpanKind, Status, StatusCode

from spanmeter import __version__, wire
from spanmeter import conventions as c
from spanmeter.errors import ConfigurationError
from spanmeter.pricing import cost_attributes

__all__ = ["HttpxInstrumentation", "Rule", "instrument"]

Rule = wire.Rule
_log = logging.getLogger("spanmeter")
_INFERENCE_OPS = frozenset(op for op, kind in c.OPERATION_KINDS.items() if kind == c.KIND_INFERENCE)
_CLOSED_EARLY = (wire.FIELD_RESPONSE, "closed_early")
_NO_ATTRIBUTES: dict = {}


class _Spanless:
    """Stands in for the inference span with ``genai_spans=False``: keeps what the span would
    carry and hands it to spanmeter's processor when the call ends. No span is made."""

    __slots__ = ("attributes", "start", "parent", "failed", "processor")

    def __init__(self, processor, attributes: dict, parent):
        self.processor = processor
        self.attributes = attributes
        self.start = time.time_ns()
        context = parent.get_span_context()
        self.parent = context.span_id if context.is_valid else None
        self.failed = False

    def set_attributes(self, attributes: dict) -> None:
        self.attributes.update(attributes)

    def set_status(self, status) -> None:
        self.failed = status.status_code is StatusCode.ERROR

    def end(self, end_time=None) -> None:
        self.processor.record_call(self.attributes, self.start, end_time or time.time_ns(), self.failed,
                                   self.parent, _SCOPE)  # fmt: skip


_SCOPE = "spanmeter.httpx"  # the tracer's name: spans and spanless calls are one instrumentation


class _Call:
    """One LLM call in flight: its inference span and the reader of its response."""

    __slots__ = ("span", "request", "owner", "reader", "started", "first", "last_ns", "finished", "raw_feed",
                 "decoded")  # fmt: skip

    def __init__(self, span, request: wire.Request, owner: HttpxInstrumentation):
        self.span = span
        self.request = request
        self.owner = owner
        self.reader = None
        self.started = time.perf_counter()
        self.first = None
        self.last_ns = None
        self.finished = False
        self.raw_feed = True  # False once httpx's decoder feeds the reader
        self.decoded = False  # httpx's decoder ran (the application reads decoded bytes)

    def feed(self, chunk, _time_ns=time.time_ns) -> None:
        """A raw chunk on its way to the application; never raises."""
        try:
            self.last_ns = _time_ns()
            if self.first is None:
                self.first = time.perf_counter() - self.started
            if self.raw_feed:
                self.reader.feed(chunk)
        except Exception:  # deliberate: the application's stream comes first
            self.owner._fault()
            self.reader.active = False

    def feed_decoded(self, data) -> None:
        """Decoded bytes httpx hands to the application; never raises."""
        try:
            if not self.finished:
                self.reader.feed(data)
        except Exception:  # deliberate
            self.owner._fault()
            self.reader.active = False

    def finish(self, error_type=None, problem=None, end_time=None) -> None:
        """End the inference span with what the response said; idempotent, never raises."""
        if self.finished:
            return
        self.finished = True
        try:
            span = self.span
            problems = ()
            result = None
            reader = self.reader
            if reader is not None:
                result = reader.finish()
                problems = result.problems
                if not self.raw_feed and not self.decoded and self.first is not None and problem is None:
                    # an encoded body read raw (iter_raw): httpx never decoded it, nor do we
                    problems = problems + [(wire.FIELD_RESPONSE, "encoded_body_read_raw")]
            if problem is not None and not (result is not None and result.complete):
                problems = [*problems, problem]
            # Every attribute in one write: one lock and one validation pass of the SDK
            # instead of three (benchmarks/httpx_overhead.py, per LLM call).
            attributes = _result_attributes(result) if result is not None else {}
            if result is not None:
                error_type = error_type or result.error_type
                if (result.input_tokens is not None or result.output_tokens is not None) and self.owner.genai_spans:
                    self.owner._add_cost(attributes, self.request, result)  # the processor prices spanless calls
            if self.request.stream and self.first is not None:
                attributes[c.TIME_TO_FIRST_CHUNK] = self.first
            if error_type:
                attributes[c.ERROR_TYPE] = error_type
            if attributes:
                span.set_attributes(attributes)
            if error_type:
                span.set_status(Status(StatusCode.ERROR))
            span.end(end_time=end_time)
            for item in problems:
                self.owner._drop(item)
        except Exception:  # deliberate
            self.owner._fault()

    def abandoned(self) -> None:
        if not self.finished:
            self.finish(problem=(wire.FIELD_RESPONSE, "abandoned"), end_time=self.last_ns)


def _result_attributes(result: wire.Result) -> dict:
    """The span attributes of what the response said (those it said)."""
    attributes = {}
    if result.response_model:
        attributes[c.RESPONSE_MODEL] = result.response_model
    if result.response_id:
        attributes[c.RESPONSE_ID] = result.response_id
    if result.finish_reasons:
        attributes[c.RESPONSE_FINISH_REASONS] = tuple(result.finish_reasons)
    if result.input_tokens is not None:
        attributes[c.INPUT_TOKENS] = result.input_tokens
    if result.output_tokens is not None:
        attributes[c.OUTPUT_TOKENS] = result.output_tokens
    if result.cache_read_tokens is not None:
        attributes[c.CACHE_READ_TOKENS] = result.cache_read_tokens
    if result.cache_write_tokens is not None:
        attributes[c.CACHE_WRITE_TOKENS] = result.cache_write_tokens
    if result.reasoning_tokens is not None:
        attributes[c.REASONING_TOKENS] = result.reasoning_tokens
    return attributes


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
            call.finish(problem=_CLOSED_EARLY)
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
            self._call.finish(problem=_CLOSED_EARLY)

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
            call.finish(problem=_CLOSED_EARLY)
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
            self._call.finish(problem=_CLOSED_EARLY)

    def __del__(self):
        try:
            self._call.abandoned()
        except Exception:  # deliberate
            pass


class _DecodedTap:
    """Stands in for a response's content decoder: what it decodes also goes to the call.

    httpx's decoders return bytes, httpx2's yield them: both are passed on unchanged.
    """

    __slots__ = ("_inner", "_call")

    def __init__(self, inner, call: _Call):
        self._inner = inner
        self._call = call

    def decode(self, data):
        out = self._inner.decode(data)
        self._call.decoded = True
        if out.__class__ is bytes:
            if out:
                self._call.feed_decoded(out)
            return out
        return self._relay(out)

    def flush(self):
        out = self._inner.flush()
        if out.__class__ is bytes:
            if out:
                self._call.feed_decoded(out)
            return out
        return self._relay(out)

    def _relay(self, parts):
        feed = self._call.feed_decoded
        for part in parts:
            if part:
                feed(part)
            yield part

    def __getattr__(self, name):
        return getattr(self._inner, name)


class HttpxInstrumentation:
    """What :func:`instrument` enabled; :meth:`uninstrument` turns it off."""

    def __init__(self, meter, matcher: wire.Matcher, http_spans: bool = True, genai_spans: bool = True):
        self.meter = meter
        self.matcher = matcher
        self.http_spans = http_spans
        self.genai_spans = genai_spans
        self.tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider=meter.tracer_provider)
        self.instrumentors: list = []
        self.active = True
        self._patched: list = []  # (class, attribute, original, ours)
        self._last_log = -1e9

    # --- per request -----------------------------------------------------------------
    def begin(self, module, request) -> _Call | None:
        """The call a request starts, with its inference span started; None if it is no LLM call."""
        try:
            if request.method != "POST" or not self.active:
                return None
            url = request.url
            host, path = url.host, url.path
            rule = self.matcher.match(host, path)
            if rule is None:
                return None
            current = trace.get_current_span()
            parent = None  # the context to measure the call in when not the current one
            if current.is_recording():
                attrs = getattr(current, "attributes", None)
                if attrs and attrs.get(c.OPERATION_NAME) in _INFERENCE_OPS:
                    if self.meter.processor.has_open(current.get_span_context().span_id):
                        return None  # an outer inference span of this spanmeter already measures this call
                    # One of another tracer provider (the anthropic SDK's own span, on the app's
                    # global provider): this spanmeter never sees it, so the call is measured here,
                    # under the span that one was made in (its agent run).
                    outer = getattr(current, "parent", None)
                    if outer is not None:
                        current = trace.NonRecordingSpan(outer)
                        parent = trace.set_span_in_context(current)
            body = None
            stream = request.stream
            if isinstance(stream, module.ByteStream):  # bytes already in memory: safe to read
                body = b"".join(stream)
            parsed = wire.parse_request(rule, host, path, body)
            if parsed is None:
                return None
            attributes = {
                c.OPERATION_NAME: parsed.operation,
                c.PROVIDER_NAME: parsed.provider,
                c.REQUEST_STREAM: parsed.stream,
            }
            if parsed.model:
                attributes[c.REQUEST_MODEL] = parsed.model
            name = f"{parsed.operation} {parsed.model}" if parsed.model else parsed.operation
            if self.genai_spans:
                span = self.tracer.start_span(name, context=parent, kind=SpanKind.CLIENT, attributes=attributes)
            else:
                span = _Spanless(self.meter.processor, attributes, current)
            return _Call(span, parsed, self)
        except Exception:  # deliberate: never break the application's request
            self._fault()
            return None

    def respond(self, call: _Call, response, tap) -> None:
        """Tap ``response``'s body for ``call``; never raises."""
        try:
            headers = response.headers
            call.last_ns = time.time_ns()
            encoding = headers.get("content-encoding", "")
            if encoding:
                get_decoder = getattr(response, "_get_content_decoder", None)
                if get_decoder is not None:  # read what httpx decodes, not the raw bytes
                    response._decoder = _DecodedTap(get_decoder(), call)
                    call.raw_feed = False
                    encoding = ""
            call.reader = wire.BodyReader(call.request.api, response.status_code, headers.get("content-type", ""),
                                          encoding, call.request.stream)  # fmt: skip
            stream = response.stream
            inner = getattr(stream, "_httpcore_stream", None)
            if inner is None:  # not the transport stream we know: measure without the body
                call.finish(problem=(wire.FIELD_RESPONSE, "unreadable_stream"))
                return
            stream._httpcore_stream = tap(inner, call)
        except Exception:  # deliberate
            self._fault()
            call.finish()

    def _wrap(self, module, cls, attribute: str, is_async: bool):
        original = getattr(cls, attribute)
        begin, respond = self.begin, self.respond
        # With HTTP spans, the GenAI span is made current so that the HTTP span is its child.
        current = self.http_spans

        if is_async:

            async def handle(transport, request):
                call = begin(module, request)
                if call is None:
                    return await original(transport, request)
                token = otel_context.attach(trace.set_span_in_context(call.span)) if current else None
                try:
                    response = await original(transport, request)
                except BaseException as exc:
                    call.finish(error_type=type(exc).__qualname__)
                    raise
                finally:
                    if token is not None:
                        otel_context.detach(token)
                respond(call, response, _AsyncTap)
                return response

        else:

            def handle(transport, request):
                call = begin(module, request)
                if call is None:
                    return original(transport, request)
                token = otel_context.attach(trace.set_span_in_context(call.span)) if current else None
                try:
                    response = original(transport, request)
                except BaseException as exc:
                    call.finish(error_type=type(exc).__qualname__)
                    raise
                finally:
                    if token is not None:
                        otel_context.detach(token)
                respond(call, response, _Tap)
                return response

        handle._spanmeter = self
        setattr(cls, attribute, handle)
        self._patched.append((cls, attribute, original, handle))

    def _add_cost(self, attributes: dict, request: wire.Request, result: wire.Result) -> None:
        """The call's priced cost into the span's ``attributes``, before it ends (see
        :mod:`spanmeter.emit`); a pricing fault is counted and the span still ends."""
        pricer = getattr(self.meter.processor, "pricer", None)
        if pricer is None:
            return
        tokens = (result.input_tokens, result.output_tokens, result.cache_read_tokens, result.cache_write_tokens,
                  result.reasoning_tokens)  # fmt: skip
        try:
            priced = pricer.price(request.provider, request.model, result.response_model or None, tokens,
                                  time.time_ns(), _NO_ATTRIBUTES)  # fmt: skip
        except Exception:  # deliberate: a price is not worth an unended span
            self._fault()
            return
        attributes.update(cost_attributes(priced))  # nothing for None or UNPRICED

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
        """Remove spanmeter's wrappers (and the HTTP instrumentation it enabled) from httpx and httpx2."""
        self.active = False  # a wrapper another one wrapped since cannot be removed: it then passes through
        for cls, attribute, original, ours in reversed(self._patched):
            if cls.__dict__.get(attribute) is ours:
                setattr(cls, attribute, original)
        self._patched = []
        for instrumentor in self.instrumentors:
            instrumentor.uninstrument()
        self.instrumentors = []


_TRANSPORTS = (("HTTPTransport", "handle_request", False), ("AsyncHTTPTransport", "handle_async_request", True))


def instrument(meter=None, *, rules=(), default_rules: bool = True, http_spans: bool = True,
               genai_spans: bool = True) -> HttpxInstrumentation:  # fmt: skip
    """Measure every LLM call made with ``httpx`` or ``httpx2`` clients, sync and async.

    ``meter``: the :class:`spanmeter.Spanmeter` whose tracer provider and state to use
    (the one :func:`spanmeter.configure` made if None). ``rules``: extra
    :class:`spanmeter.wire.Rule` objects, tried before the built-in ones
    (``default_rules=False`` drops those). ``http_spans=False``: GenAI spans only, no
    HTTP client spans and no ``traceparent`` header (about half the CPU per call; the
    same metrics). ``genai_spans=False`` (with ``http_spans=False``): no span at all, the
    same metrics (LLM calls leave your traces). Raises :class:`spanmeter.ConfigurationError` when a requirement is
    missing or httpx is already instrumented (by spanmeter, or by the HTTP
    instrumentation when ``http_spans`` is on).
    """
    if meter is None:
        from spanmeter import config

        meter = config.current()
        if meter is None:
            raise ConfigurationError(
                "spanmeter.httpx.instrument() needs a running spanmeter: call spanmeter.configure() "
                "first, or pass meter=spanmeter.setup(...)"
            )
    if not genai_spans and http_spans:
        raise ConfigurationError(
            "genai_spans=False records LLM calls without any span; it needs http_spans=False too "
            "(an HTTP client span without its GenAI span would stand alone in the trace)"
        )
    instrumentor_classes = {}
    if http_spans:
        try:
            from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor, HTTPXClientInstrumentor
        except ImportError as exc:
            raise ConfigurationError(
                f"spanmeter.httpx needs opentelemetry-instrumentation-httpx for HTTP spans ({exc}); install it "
                "with pip install '.[httpx]' from a spanmeter checkout ('spanmeter[httpx]' once published), or pass "
                "http_spans=False"
            ) from None
        instrumentor_classes = {"httpx": HTTPXClientInstrumentor, "httpx2": HTTPX2ClientInstrumentor}
    try:
        matcher = wire.Matcher(rules, defaults=default_rules)
    except ValueError as exc:
        raise ConfigurationError(f"rules: {exc}") from None

    targets = []
    for module_name in ("httpx", "httpx2"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        existing = getattr(module.HTTPTransport.handle_request, "_spanmeter", None)
        if existing is not None and existing.active:
            raise ConfigurationError(
                f"{module_name} is already instrumented by spanmeter.httpx.instrument(); call uninstrument() "
                "on the object it returned first"
            )
        cls = instrumentor_classes.get(module_name)
        instrumentor = cls() if cls is not None else None
        if instrumentor is not None and instrumentor.is_instrumented_by_opentelemetry:
            raise ConfigurationError(
                f"{module_name} is already instrumented by {cls.__name__}; call {cls.__name__}().uninstrument() "
                "first (spanmeter.httpx.instrument() enables it), or pass http_spans=False"
            )
        targets.append((module, instrumentor))
    if not targets:
        raise ConfigurationError("spanmeter.httpx found neither httpx nor httpx2 installed: nothing to measure")

    owner = HttpxInstrumentation(meter, matcher, http_spans, genai_spans)
    for module, instrumentor in targets:
        if instrumentor is not None:
            instrumentor.instrument(tracer_provider=meter.tracer_provider, meter_provider=NoOpMeterProvider())
            if not instrumentor.is_instrumented_by_opentelemetry:
                owner.uninstrument()
                raise ConfigurationError(
                    f"{type(instrumentor).__name__} refused to instrument {module.__name__} (a version conflict: "
                    "see the opentelemetry-instrumentation warning above)"
                )
            owner.instrumentors.append(instrumentor)
        for class_name, attribute, is_async in _TRANSPORTS:  # after the HTTP instrumentation: outermost
            owner._wrap(module, getattr(module, class_name), attribute, is_async)
    return owner
