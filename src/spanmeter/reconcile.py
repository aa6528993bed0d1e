"""Reconciliation: which ended inference spans are one LLM call. The one place that decides it.

Ended spans wait here ``window`` seconds (1 by default) before they are aggregated, in the
order they ended; identity is decided while they wait. They wait, and rule 2 scans for
partners, only once inference spans of two instrumentation scopes or more were seen in the
process: with one instrumentation nothing can pair across scopes (rules 1 and 3 need no
wait), and spans are aggregated at once, unindexed. Rules (stated once here and in the
README):

1. **Nested**: an inference span that encloses others (a framework's LLM span around an SDK
   instrumentation's span, in one trace) is the same call seen twice. The enclosed spans,
   closest to the wire, are the calls; the enclosing one adds no call and no duration, and
   adds only token types none of them reported (all its tokens and its cost when none of
   them had usage).
2. **Side by side**: two inference spans from *different instrumentation scopes* that
   overlap in time and describe the same request are one call, in one trace or two
   (OpenInference's LangChain tracer and the anthropic SDK's stream helper detach their
   context). The same request means: the same response id wherever it is carried
   (``gen_ai.response.id``, or the id inside OpenInference's ``output.value``); else the
   same model family and identical input and output tokens; else, when one of them has no
   usage, the same model family. The span inside the other's time (else the one with more
   token types) supplies tokens and duration, the other fills token types it lacks; the one
   inside an agent run supplies the agent. Pairing is one to one, never two spans of one
   scope: N concurrent identical calls seen by two instrumentations are N calls.
3. **Usage after the call** (Logfire): a streamed call's span ends without usage; a
   zero-duration log span of the same scope (in the same trace inside an agent run, a trace
   of its own outside one) brings usage and response id when the stream ends. It completes the oldest such call of its model, even after that call was
   aggregated (then only its tokens and cost are added, up to ``await_seconds`` later); a
   call whose usage never comes is counted without usage then. A usage span that matches no
   call is a call of its own.

Memory is bounded: at most ``max_entries`` spans wait (older ones are released early), and
ids are kept by :func:`spanmeter.conventions.key`.
"""

from __future__ import annotations

import re
from collections import deque

from spanmeter import conventions as c

_INFERENCE = c.KIND_INFERENCE
_TOKENS = c.TOKENS
_NO_TOKENS = (None, None, None, None, None)
#: Roles of a released entry besides a plain span.
LATE_USAGE = 1  # usage (and cost) of a call aggregated earlier; ``target`` is that call
NO_USAGE = 2  # a call that waited for its usage in vain: count it without usage
#: Candidates looked at per span when pairing by usage or model family (rule 2).
SCAN = 32


class Entry:
    """One ended span waiting for aggregation."""

    __slots__ = ("record", "node", "scope", "trace_id", "span_id", "start", "end", "attrs", "content", "arrival",
                 "dead", "paired", "wrapper", "outers", "role", "target", "call", "tokens", "price_it",
                 "no_usage", "agent", "completed", "keys", "deadline", "sampled",
                 "held")  # fmt: skip  (held: set by the processor on a call waiting for attribution)

    def __init__(self, record, node, scope, trace_id, span_id, start, end, attrs, content=None, sampled=True):
        self.record = record
        self.node = node
        self.scope = scope
        self.trace_id = trace_id
        self.span_id = span_id
        self.start = start
        self.end = end
        self.attrs = attrs
        self.content = content
        self.arrival = 0.0
        self.dead = False
        self.paired = False
        self.wrapper = False
        self.outers: tuple = ()
        self.role = 0
        self.target = None
        self.call = True
        self.tokens = _NO_TOKENS
        self.price_it = True
        self.no_usage = 0
        self.agent = None
        self.completed = False
        self.keys = None
        self.deadline = 0.0
        self.sampled = sampled  # the tracer exports it: it may be an exemplar


_DATE_SUFFIX = re.compile(r"(-\d{4}-\d{2}-\d{2}|-\d{8}|@\d{8}|-\d{4}|-latest|-v\d+(:\d+)?)$")


def family(model) -> str | None:
    """A model name without provider prefix and date or version suffix, for matching."""
    if model.__class__ is not str or not model:
        return None
    name = model.rsplit("/", 1)[-1].lower()
    for _ in range(2):
        stripped = _DATE_SUFFIX.sub("", name)
        if stripped == name:
            break
        name = stripped
    return name


def _has_usage(record) -> bool:
    return record.input is not None or record.output is not None


def _inside(a: Entry, b: Entry) -> bool:
    return b.start <= a.start and a.end <= b.end


def _overlap(a: Entry, b: Entry) -> bool:
    return (a.start.__class__ is int and a.end.__class__ is int and b.start.__class__ is int
            and b.end.__class__ is int and a.start <= b.end and b.start <= a.end)  # fmt: skip


def _mask(tokens) -> int:
    i, o, cr, cw, rs = tokens
    return ((i is not None) | (o is not None) << 1 | (cr is not None) << 2 | (cw is not None) << 3
            | (rs is not None) << 4)  # fmt: skip


class Reconciler:
    """Holds ended spans for ``window`` seconds and decides which are one call (rules above).

    Not thread-safe: one aggregating thread at a time uses it.
    """

    def __init__(self, window: float = 1.0, await_seconds: float = 600.0, max_entries: int = 100_000):
        self.window = window
        self.await_seconds = await_seconds
        self.max_entries = max_entries
        self._held: deque[Entry] = deque()
        self._by_id: dict = {}  # response id -> entry
        self._by_usage: dict = {}  # (family, input, output) -> {id(entry): entry}
        self._by_family: dict = {}  # family -> {id(entry): entry}, every unpaired call
        self._usageless: dict = {}  # family -> {id(entry): entry}, those without usage
        self._enclosing: set = set()  # ids of inference spans that enclose a call (rule 1)
        self._wrappers: dict = {}  # enclosing span id -> [calls, token types seen (bits), calls without usage]
        self._awaiting: dict = {}  # scope -> deque of calls waiting for their usage (rule 3)
        self._late: deque[Entry] = deque()  # aggregated calls still waiting for their usage
        self._scopes: set = set()  # instrumentation scopes of the inference spans seen (a few)
        # Spans that needed no decision (one scope, nothing held before them): settled on
        # arrival and handed out first by the next release(), without waiting in _held.
        self._passed: list[Entry] = []

    def __len__(self) -> int:
        return len(self._held) + len(self._passed)

    # --- arrival ---------------------------------------------------------------------------
    def add(self, entry: Entry, now: float) -> None:
        entry.arrival = now
        record = entry.record
        scopes = self._scopes
        if record.kind == _INFERENCE:
            if entry.scope not in scopes and len(scopes) < 64:
                scopes.add(entry.scope)
                if len(scopes) == 2:
                    if self._passed:  # they may pair with the new scope's spans: they wait too
                        for e in self._passed:  # unsettled: release() settles them again
                            e.tokens, e.no_usage = _NO_TOKENS, 0
                        self._held.extendleft(reversed(self._passed))
                        self._passed = []
                    self._index_held()
            elif (len(scopes) == 1 and not self._held and not entry.outers and not record.usage_only
                  and not record.awaits_usage and entry.span_id not in self._enclosing):  # fmt: skip
                # one scope and nothing waiting before it: no rule applies, and release()
                # would hand it out at once (_settle's plain case, inlined)
                tokens = entry.tokens = record[_TOKENS]  # record.tokens, without the property's call
                if tokens[0] is None and tokens[1] is None:
                    entry.no_usage = 1
                self._passed.append(entry)
                return
            for outer in entry.outers:  # set by the caller: the inference span it is nested in
                self._enclosing.add(outer)
            if entry.span_id in self._enclosing:
                self._enclosing.discard(entry.span_id)
                entry.wrapper = True
            elif record.usage_only:
                if self._complete(entry):
                    return
            elif record.awaits_usage:
                self._awaiting.setdefault(entry.scope, deque()).append(entry)
            elif len(self._scopes) > 1 and self._pair(entry):
                return
            if len(self._enclosing) > self.max_entries:  # enclosing spans that never ended
                self._enclosing.clear()
        elif len(scopes) < 2 and not self._held:  # a run or tool: released at once as long as nothing waits
            self._passed.append(entry)
            return
        self._held.append(entry)

    def _index_held(self) -> None:
        """A second scope appeared: index the spans that waited unindexed until now.

        With one scope nothing can pair (rule 2 needs two), so spans are indexed only from
        here on; those still held are indexed now, in arrival order, as :meth:`_pair` would
        have done (none of them could pair with another: they share their scope).
        """
        for e in self._held:
            record = e.record
            # the spans add() handed to _pair: not wrappers, usage spans or awaiting calls
            # (``completed`` marks an awaiting call its usage completed since)
            if (record.kind == _INFERENCE and not e.dead and not e.wrapper and e.role == 0 and e.keys is None
                    and not e.completed and not record.usage_only and not record.awaits_usage):  # fmt: skip
                self._pair(e)

    def _pair(self, e: Entry) -> bool:
        """Rule 2: merge ``e`` into a waiting span of the same call; True when it was."""
        record = e.record
        keys: list[tuple] = []
        rid = record.response_id
        if rid.__class__ is str and rid:
            k = c.key(rid)
            p = self._by_id.get(k)
            if p is not None and p.scope != e.scope and self._fits(p, e):
                self._merge(p, e)
                return True
            if p is None or p.dead or p.paired:
                self._by_id[k] = e
                keys.append((self._by_id, k, None))
        fam = family(record.model) or family(record.response_model)
        if fam is not None:
            if _has_usage(record):
                ukey = (fam, record.input, record.output)
                if self._pair_in(self._by_usage.get(ukey), e) or self._pair_in(self._usageless.get(fam), e):
                    return True
                self._by_usage.setdefault(ukey, {})[id(e)] = e
                keys.append((self._by_usage, ukey, id(e)))
            else:
                if self._pair_in(self._by_family.get(fam), e):
                    return True
                self._usageless.setdefault(fam, {})[id(e)] = e
                keys.append((self._usageless, fam, id(e)))
            self._by_family.setdefault(fam, {})[id(e)] = e
            keys.append((self._by_family, fam, id(e)))
        e.keys = keys
        return False

    def _pair_in(self, candidates, e: Entry) -> bool:
        """Merge ``e`` into the first fitting candidate among the oldest :data:`SCAN` ones."""
        if candidates and len(self._scopes) > 1:  # with one scope nothing pairs: no scan
            for n, p in enumerate(candidates.values()):
                if n == SCAN:  # a flood of look-alike calls: the cost stays bounded
                    break
                if self._fits(p, e):
                    self._merge(p, e)
                    return True
        return False

    @staticmethod
    def _fits(p: Entry, e: Entry) -> bool:
        return (p is not e and not p.dead and not p.paired and not p.wrapper and p.scope != e.scope
                and p.record.kind == _INFERENCE and _overlap(p, e))  # fmt: skip

    @staticmethod
    def _merge(p: Entry, e: Entry) -> None:
        """``e`` and the waiting ``p`` are one call: ``p`` carries it on, ``e`` is dropped."""
        if _inside(e, p) and not _inside(p, e):
            inner, outer = e, p
        elif _inside(p, e) and not _inside(e, p):
            inner, outer = p, e
        else:  # neither inside the other: the one that reported more token types
            inner, outer = (e, p) if _mask(e.record.tokens).bit_count() > _mask(p.record.tokens).bit_count() else (p, e)
        a, b = inner.record, outer.record
        tokens = [x if x is not None else y for x, y in zip(a.tokens, b.tokens)]
        merged = a._replace(
            agent=a.agent if a.agent is not None else b.agent,
            named=a.named or b.named,
            model=a.model or b.model,
            response_model=a.response_model or b.response_model,
            provider=a.provider or b.provider,
            error_type=a.error_type or b.error_type,
            response_id=a.response_id or b.response_id,
            input=tokens[0], output=tokens[1], cache_read=tokens[2], cache_write=tokens[3], reasoning=tokens[4],
            drops=(a.drops or []) + (b.drops or []) or None,
            time_to_first_chunk=a.time_to_first_chunk if a.time_to_first_chunk is not None else b.time_to_first_chunk,
            finish_reasons=a.finish_reasons or b.finish_reasons, modality_tokens=a.modality_tokens or b.modality_tokens,
        )  # fmt: skip
        in_run = outer.node is not None and outer.node.run_above() is not None
        p.record = merged
        p.node = outer.node if in_run or inner.node is None else inner.node
        p.start, p.end, p.attrs = inner.start, inner.end, inner.attrs
        p.outers = p.outers + e.outers
        p.paired = True
        e.dead = True

    def _complete(self, e: Entry) -> bool:
        """Rule 3: ``e`` carries the usage of a streamed call; True when a waiting call took it."""
        fam = family(e.record.model) or family(e.record.response_model)
        queue = self._awaiting.get(e.scope)
        if queue:
            for p in queue:
                if not p.completed and not p.dead and self._same_model(p, fam) and p.start <= e.end:
                    p.completed = True
                    u = e.record
                    p.record = p.record._replace(
                        input=u.input, output=u.output, cache_read=u.cache_read, cache_write=u.cache_write,
                        reasoning=u.reasoning, response_id=u.response_id or p.record.response_id,
                        response_model=p.record.response_model or u.response_model, awaits_usage=False,
                        drops=(p.record.drops or []) + (u.drops or []) or None,
                        modality_tokens=u.modality_tokens or p.record.modality_tokens,
                        finish_reasons=p.record.finish_reasons or u.finish_reasons,
                    )  # fmt: skip
                    if e.end.__class__ is int and p.end.__class__ is int and e.end > p.end:
                        p.end = e.end  # the call lasted until its stream ended
                    queue.remove(p)
                    return True
        for p in self._late:
            if not p.completed and p.scope == e.scope and self._same_model(p, fam) and p.start <= e.end:
                p.completed = True
                e.role = LATE_USAGE
                e.target = p
                return False
        return False

    @staticmethod
    def _same_model(p: Entry, fam) -> bool:
        other = family(p.record.model) or family(p.record.response_model)
        return fam is None or other is None or fam == other

    # --- release ----------------------------------------------------------------------------
    def release(self, now: float, flush: bool = False, final: bool = False) -> list[Entry]:
        """The spans whose wait is over (all with ``flush``), decided, in the order they ended.

        ``final`` (at shutdown) also gives up on calls still waiting for their usage."""
        flush = flush or final
        cutoff = now - (self.window if len(self._scopes) > 1 else 0.0)
        held = self._held
        out = self._passed  # in arrival order, before every span still held
        self._passed = []
        while held and (flush or held[0].arrival <= cutoff or len(held) > self.max_entries):
            e = held.popleft()
            record = e.record
            if e.keys is not None or record.awaits_usage:  # with one scope, spans were never indexed
                self._unindex(e)
            if e.dead:
                continue
            if record.kind == _INFERENCE and e.role == 0:
                self._settle(e, now)
            out.append(e)
        late = self._late
        while late and (final or late[0].deadline <= now or len(late) > self.max_entries):
            e = late.popleft()
            if not e.completed:
                gone = Entry(e.record, e.node, e.scope, e.trace_id, e.span_id, e.start, e.end, e.attrs)
                gone.role = NO_USAGE
                out.append(gone)
        return out

    def _unindex(self, e: Entry) -> None:
        if e.keys:
            for table, k, ident in e.keys:
                if ident is None:
                    if table.get(k) is e:
                        del table[k]
                else:
                    bucket = table.get(k)
                    if bucket is not None:
                        bucket.pop(ident, None)
                        if not bucket:
                            del table[k]
            e.keys = None
        if e.record.awaits_usage and not e.completed:
            queue = self._awaiting.get(e.scope)
            if queue is not None:
                try:
                    queue.remove(e)
                except ValueError:
                    pass
                if not queue:
                    del self._awaiting[e.scope]

    def _settle(self, e: Entry, now: float) -> None:
        """Rule 1, and what a call without usage counts."""
        tokens = e.record.tokens
        has_usage = tokens[0] is not None or tokens[1] is not None
        if e.wrapper:
            nested = self._wrappers.pop(e.span_id, None)
            if nested is not None:
                e.call = False
                e.price_it = has_usage
                if nested[1] & 3:  # the enclosed calls counted the tokens and cost
                    mask = nested[1]
                    tokens = tuple(None if mask & (1 << n) else v for n, v in enumerate(tokens))
                    e.price_it = False
                elif not has_usage and nested[2]:
                    e.no_usage = nested[2]
                e.tokens = tokens
                return
        e.tokens = tokens
        if e.outers:
            for outer in e.outers:
                nested = self._wrappers.get(outer)
                if nested is None:
                    nested = self._wrappers[outer] = [0, 0, 0]
                nested[0] += 1
                nested[1] |= _mask(tokens)
                if not has_usage:
                    nested[2] += 1
            if len(self._wrappers) > self.max_entries:  # enclosing spans that never ended
                self._wrappers.clear()
        elif not has_usage:
            if e.record.awaits_usage and not e.completed:
                e.deadline = now + self.await_seconds
                self._late.append(e)
            else:
                e.no_usage = 1
