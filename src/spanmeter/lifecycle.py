"""Attaching to a tracer provider: the OpenTelemetry SDK cannot remove a span processor,
so spanmeter adds one :class:`ProcessorSlot` per tracer provider, once, and attaches and
detaches its processors there: any number of configure/shutdown cycles leave one
processor on it.
"""

from __future__ import annotations

import threading
import time
import weakref

from opentelemetry.sdk.trace import SpanProcessor


def _ignore(*args, **kwargs) -> None:
    pass


class ProcessorSlot(SpanProcessor):
    """The one span processor spanmeter adds to a tracer provider; forwards to the attached ones.

    With one processor attached its methods are bound straight through (no extra call on
    the hot path); with none, spans cost a no-op call.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._targets: tuple = ()
        self._bind()

    def attach(self, *processors) -> None:
        with self._lock:
            self._targets += tuple(p for p in processors if p is not None)
            self._bind()

    def detach(self, *processors) -> None:
        with self._lock:
            self._targets = tuple(t for t in self._targets if not any(t is p for p in processors))
            self._bind()

    @property
    def targets(self) -> tuple:
        return self._targets

    def _bind(self) -> None:
        # Instance attributes shadow the methods: the SDK calls sp.on_end(span) per span.
        targets = self._targets
        if not targets:
            self.on_start = self.on_end = self._on_ending = _ignore  # type: ignore[method-assign]
        elif len(targets) == 1:
            (only,) = targets
            self.on_start, self.on_end = only.on_start, only.on_end  # type: ignore[method-assign]
            self._on_ending = getattr(only, "_on_ending", _ignore)  # type: ignore[method-assign]
        else:

            def on_start(span, parent_context=None):
                for t in targets:
                    t.on_start(span, parent_context=parent_context)

            def on_end(span):
                for t in targets:
                    t.on_end(span)

            def on_ending(span):
                for t in targets:
                    getattr(t, "_on_ending", _ignore)(span)

            self.on_start, self.on_end, self._on_ending = on_start, on_end, on_ending  # type: ignore[method-assign]

    def shutdown(self) -> None:  # the provider shuts down: so do the attached processors
        for t in self._targets:
            t.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        deadline = time.monotonic() + timeout_millis / 1000
        return all([t.force_flush(int(max(0.0, deadline - time.monotonic()) * 1000)) for t in self._targets])


_slots: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_slots_lock = threading.Lock()


def slot_of(tracer_provider) -> ProcessorSlot:
    """The slot on ``tracer_provider``, added to it the first time."""
    with _slots_lock:
        slot = _slots.get(tracer_provider)
        if slot is None:
            slot = _slots[tracer_provider] = ProcessorSlot()
            tracer_provider.add_span_processor(slot)
        return slot


def attached(tracer_provider) -> tuple:
    """The processors spanmeter attached to ``tracer_provider`` (none: an empty tuple); adds nothing."""
    try:
        slot = _slots.get(tracer_provider)
    except TypeError:  # not weak-referenceable: spanmeter never attached to it
        return ()
    return slot.targets if slot is not None else ()
