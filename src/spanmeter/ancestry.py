"""Ancestry: the agent run (and workflow) each span belongs to, remembered as spans start.

The processor keeps, per open span id, a *node*: a tuple ``(run, inference span id,
id of the inference span enclosing it)``. ``run`` is the nearest enclosing :class:`Run`
(or None); the two ids tell a call nested in another inference span (a framework's LLM
span around an SDK instrumentation's span) from a call of its own. Spans of no GenAI kind
share their parent's node, so ancestry reaches through any depth of them.

Runs and workflows (rules, stated once here and in the README):

- every agent span (any convention: see :func:`spanmeter.conventions.kind_of`) opens a
  run named by :func:`spanmeter.conventions.run_name`, the same reader the record uses
  when the span ends;
- a nested agent span with the same agent name as its nearest enclosing run is the same
  run (OpenLLMetry's ``<agent>.workflow`` span inside ``invoke_agent <agent>``): its calls
  and tools fold into the enclosing run, and no second run is counted;
- a run no attribute names (its name, if any, comes from the span name) that encloses runs
  an attribute names is a workflow (openai-agents' ``Agent workflow``), as is every
  ``invoke_workflow`` span: it is counted in the workflow metrics, never as an agent run,
  and calls directly inside it belong to no agent;
- a run counts its own calls and tools; a workflow counts those of every run inside it.
"""

from __future__ import annotations

from spanmeter import conventions as c


class Run:
    """What an agent run or workflow accumulates from its descendants until it ends."""

    __slots__ = ("span", "kind", "name", "named", "parent", "inference_calls", "tool_calls", "tokens", "cost",
                 "sub_calls", "sub_tools", "wraps_named")  # fmt: skip

    def __init__(self, span, kind: int, name, named: bool, parent: Run | None):
        self.span = span
        self.kind = kind
        self.name = name
        self.named = named
        self.parent = parent
        self.inference_calls = 0
        self.tool_calls = 0
        self.tokens = 0
        self.cost = None  # femto-dollars, once a call of the run was priced
        self.sub_calls = 0  # calls and tools of the runs inside this one (a workflow's totals)
        self.sub_tools = 0
        self.wraps_named = False
        if named and parent is not None and not parent.named and parent.name != name:
            parent.wraps_named = True

    @property
    def is_workflow(self) -> bool:
        return self.kind == c.KIND_WORKFLOW or (not self.named and self.wraps_named)

    def refresh(self, attributes, span_name: str = "") -> None:
        """Read the name again (Traceloop names its agents after they start)."""
        if not self.named:
            name, named = c.run_name(attributes, self.kind, span_name)
            if named:
                self.name, self.named = name, True
                if self.parent is not None and not self.parent.named and self.parent.name != name:
                    self.parent.wraps_named = True

    def agent(self, attributes_of):
        """The agent name of the calls and tools directly inside this run (None in a workflow).

        ``attributes_of(span)`` reads a live span's attributes (the processor's reader).
        """
        if not self.named and self.span is not None:
            self.refresh(attributes_of(self.span), getattr(self.span, "name", ""))
        if self.is_workflow:
            return None
        return self.name

    def add_call(self, tokens: int, femto) -> None:
        self.inference_calls += 1
        self.tokens += tokens
        if femto is not None:
            self.cost = femto if self.cost is None else self.cost + femto
        run = self.parent
        while run is not None:
            run.sub_calls += 1
            run = run.parent

    def add_tool(self) -> None:
        self.tool_calls += 1
        run = self.parent
        while run is not None:
            run.sub_tools += 1
            run = run.parent

    def add_usage(self, tokens: int, femto) -> None:
        """Tokens and cost of a call counted already (usage that arrived after it)."""
        self.tokens += tokens
        if femto is not None:
            self.cost = femto if self.cost is None else self.cost + femto

    def fold_into_parent(self) -> None:
        """This run is its parent's run seen twice: hand it what it counted."""
        parent = self.parent
        parent.inference_calls += self.inference_calls
        parent.tool_calls += self.tool_calls
        parent.sub_calls += self.sub_calls - self.inference_calls
        parent.sub_tools += self.sub_tools - self.tool_calls
        parent.tokens += self.tokens
        if self.cost is not None:
            parent.cost = self.cost if parent.cost is None else parent.cost + self.cost
        if self.wraps_named:
            parent.wraps_named = True

    def same_as_parent(self) -> bool:
        """Named like the run it is nested in (and neither is a workflow)."""
        parent = self.parent
        return (parent is not None and self.kind == c.KIND_AGENT and parent.kind == c.KIND_AGENT
                and self.name is not None and self.name == parent.name)  # fmt: skip


def node_of(kind: int, span_id: int, parent_node, span, attributes, span_name: str):
    """The node of a span of ``kind`` (not None) that starts under ``parent_node``."""
    if kind == c.KIND_INFERENCE:
        if parent_node is None:
            return (None, span_id, None)
        return (parent_node[0], span_id, parent_node[1])
    if kind == c.KIND_TOOL:
        return (parent_node[0] if parent_node is not None else None, None, None)
    name, named = c.run_name(attributes, kind, span_name)
    return (Run(span, kind, name, named, parent_node[0] if parent_node is not None else None), None, None)
