"""Ancestry: the agent run (and workflow) each span belongs to.

Every span that starts gets a :class:`Node` linked to its parent's node, so the chain from
a model or tool call up to its agent run survives however late the spans of the chain say
what they are: many frameworks set a span's attributes only when it ends (OpenInference's
LangChain tracer, openai-agents), after its children ended. What a node is (its kind, its
name) is read by :mod:`spanmeter.conventions`, from the span's attributes at start, again
from the live span while it is open, and from its final attributes when it ends.

A call or tool is charged to every node above it when it is aggregated; an agent run, when
it is aggregated, keeps what it was charged and takes it off the nodes above it, so each
run counts its own calls and tools, and a workflow all of those inside it.

Runs and workflows (rules, stated once here and in the README):

- every agent span (any convention: see :func:`spanmeter.conventions.kind_of`) is a run
  named by :func:`spanmeter.conventions.run_name`, the same reader the record uses;
- a nested agent span with the same name as its nearest enclosing run or workflow is that
  run seen twice (OpenLLMetry's ``<agent>.workflow`` span inside ``invoke_agent <agent>``,
  google-adk's ``invoke_agent X`` for a SequentialAgent inside ``invoke_workflow X``):
  nothing more is counted, its calls and tools stay with the enclosing one; an agent that
  runs no other agents inside a workflow of its own name is that workflow's agent run
  (google-adk's runner wraps every single-agent invocation in ``invoke_workflow``);
- a run no attribute names (its name, if any, comes from the span name) that encloses runs
  an attribute names is a workflow (openai-agents' ``Agent workflow``), as is every
  ``invoke_workflow`` span: it is counted in the workflow metrics, never as an agent run,
  and calls directly inside it belong to no agent.
"""

from __future__ import annotations

from spanmeter import conventions as c

_AGENT, _WORKFLOW, _INFERENCE = c.KIND_AGENT, c.KIND_WORKFLOW, c.KIND_INFERENCE
_RUNS = (c.KIND_AGENT, c.KIND_WORKFLOW)


class Node:
    """One started span: its parent's node, what it is once known, what its runs counted."""

    __slots__ = ("span", "span_id", "parent", "kind", "name", "named", "wraps_named", "ended",
                 "calls", "tools", "tokens", "cost", "total_calls", "total_tools", "baggage", "final")  # fmt: skip

    def __init__(self, span, span_id, parent: Node | None, kind, attributes=None):
        self.span = span  # while it is open (see end()): typing it reads its live attributes
        self.span_id = span_id
        self.parent = parent
        self.kind: int | None = kind
        self.name = None
        self.named = False
        self.wraps_named = False
        self.ended = False
        self.calls = 0  # own: calls below it, less those of the runs below it
        self.tools = 0
        self.tokens = 0
        self.cost = None  # femto-dollars, once a call below it was priced
        self.total_calls = 0  # everything below it (a workflow's figures)
        self.total_tools = 0
        self.baggage = None  # attribution's baggage entries, captured at start (spanmeter.attribution)
        self.final = None  # its final attributes, kept after it ended only for attribution (see end())
        if (kind == _AGENT or kind == _WORKFLOW) and attributes is not None:
            self.rename(*c.run_name(attributes, kind, span.name))

    def end(self, attributes=None) -> None:
        """Its span ended: the node no longer keeps the span (and all it holds) alive.

        Nodes wait for aggregation long after their span ended; holding the span there was
        measured to cost more than the rest of the hot path (benchmarks/overhead.py: the
        allocator and the garbage collector). ``attributes``: the span's final attribute dict,
        kept when attribution labels read span attributes (inherited by the calls below it)."""
        self.ended = True
        self.span = None
        self.final = attributes

    def type(self, kind: int, attributes, span_name: str = "") -> None:
        """It is a span of ``kind`` (its attributes say so now)."""
        self.kind = kind
        if kind in _RUNS and attributes is not None:
            self.rename(*c.run_name(attributes, kind, span_name))

    def rename(self, name, named: bool) -> None:
        if named or not self.named:
            self.name, self.named = name, named
        if self.named:
            run = self.run_above()
            if run is not None and run.name != self.name:
                run.wraps_named = True  # (makes a nameless run a workflow)

    @property
    def is_run(self) -> bool:
        return self.kind in _RUNS

    @property
    def is_workflow(self) -> bool:
        return self.kind == _WORKFLOW or (self.kind == _AGENT and not self.named and self.wraps_named)

    def run_above(self, attributes_of=None) -> Node | None:
        """The nearest agent run or workflow above this node (typing open spans on the way)."""
        node = self.parent
        while node is not None:
            if node.kind is None and attributes_of is not None:
                _type_open(node, attributes_of)
            if node.kind in _RUNS:
                return node
            node = node.parent
        return None

    def inference_above(self, attributes_of=None):
        """The span id of the inference span this one is nested in, within its run, or None."""
        node = self.parent
        while node is not None:
            if node.kind is None and attributes_of is not None:
                _type_open(node, attributes_of)
            if node.kind == _INFERENCE:
                return node.span_id
            if node.kind in _RUNS:
                return None
            node = node.parent
        return None


def _type_open(node: Node, attributes_of) -> None:
    """Read what an open span says it is now (attributes set after it started)."""
    span = node.span
    if span is None or node.ended:
        return
    attributes = attributes_of(span)
    name = getattr(span, "name", "")
    kind = c.kind_of(attributes, name)
    if kind is not None:
        node.type(kind, attributes, name)


def agent_of(node: Node | None, attributes_of=None):
    """The agent name of a call or tool at ``node``: its nearest run's (None in a workflow)."""
    if node is None:
        return None
    run = node.run_above(attributes_of)
    if run is None:
        return None
    if run.named and run.kind == _AGENT:  # the common case, without is_workflow's call: a named run is no workflow
        return run.name
    if run.is_workflow:
        return None
    if not run.named and run.span is not None and not run.ended and attributes_of is not None:
        run.rename(*c.run_name(attributes_of(run.span), run.kind or c.KIND_AGENT, getattr(run.span, "name", "")))
    return run.name


def inherited(node: Node, key: str, attributes_of):
    """Attribute ``key`` of the nearest span above ``node`` that has it, or None (attribution
    labels are inherited down the run like the agent name)."""
    above = node.parent
    while above is not None:
        attributes = attributes_of(above.span) if above.span is not None else above.final
        if attributes is not None:
            value = attributes.get(key)
            if value is not None:
                return value
        above = above.parent
    return None


def charge_call(node: Node | None, tokens: int, femto, count: bool = True) -> None:
    """A call below ``node`` (``count=False``: only its tokens and cost) for every node above."""
    run = node.parent if node is not None else None
    while run is not None:
        if count:
            run.calls += 1
            run.total_calls += 1
        run.tokens += tokens
        if femto is not None:
            run.cost = femto if run.cost is None else run.cost + femto
        run = run.parent


def charge_tool(node: Node | None) -> None:
    run = node.parent if node is not None else None
    while run is not None:
        run.tools += 1
        run.total_tools += 1
        run = run.parent


def same_as_enclosing(node: Node) -> bool:
    """An agent run named like the run or workflow it is nested in: that one seen twice
    (google-adk's ``invoke_agent X`` for a SequentialAgent inside ``invoke_workflow X``)."""
    run = node.run_above()
    if run is None or node.kind != _AGENT or node.name is None or node.name != run.name:
        return False
    # inside a workflow of its name, an agent that runs other agents is that workflow; one
    # that does the work itself is the workflow's agent run (google-adk's single agent)
    return run.kind == _AGENT or node.wraps_named


def close_run(node: Node) -> None:
    """A counted run keeps its own calls and tools: the runs above it do not count them again."""
    run = node.parent
    while run is not None:
        run.calls -= node.calls
        run.tools -= node.tools
        run.tokens -= node.tokens
        if node.cost is not None and run.cost is not None:
            run.cost -= node.cost
        run = run.parent
