"""A known agent workload and the totals it must produce, shared by the OTLP tests and
the worker processes they fork."""

from __future__ import annotations

import spanmeter

INPUT, OUTPUT, CACHE_READ = 120, 30, 20


def run(runs: int, *, agent: str = "support", failing_tools: int = 0, api=spanmeter) -> None:
    """``runs`` agent runs of two model calls and one tool call each, then
    ``failing_tools`` failed tool calls inside one more run. ``api`` is the spanmeter
    module (configured) or a :class:`spanmeter.Spanmeter` from ``setup()``."""
    for _ in range(runs):
        with api.agent_run(agent):
            for _ in range(2):
                with api.model_call("gpt-4o", provider="openai") as call:
                    call.record_usage(input_tokens=INPUT, output_tokens=OUTPUT, cache_read_tokens=CACHE_READ)
            with api.tool_call("search_orders"):
                pass
    if failing_tools:
        with api.agent_run(agent):
            for _ in range(failing_tools):
                try:
                    with api.tool_call("refund"):
                        raise ValueError("refused")
                except ValueError:
                    pass


def expected(runs: int, failing_tools: int = 0) -> dict[str, float]:
    """Totals of :func:`run` as (metric, label) keys the tests read."""
    return {
        "agent_requests": runs + (1 if failing_tools else 0),
        "model_inference_calls": 2 * runs,
        "input_tokens": 2 * runs * INPUT,
        "output_tokens": 2 * runs * OUTPUT,
        "cache_read_tokens": 2 * runs * CACHE_READ,
        "tool_success": runs,
        "tool_error": failing_tools,
    }


def observed(store, agent: str = "support", **by) -> dict[str, float]:
    """The same totals read from an OTLP receiver (``by`` narrows to one instance)."""

    def get(metric, **attrs):
        values = store.per_instance(metric, agent_name=agent, **attrs)
        if "instance" in by:
            return values.get(by["instance"], 0)
        return sum(values.values())

    return {
        "agent_requests": get("agent_requests"),
        "model_inference_calls": get("model_inference_calls", model_id="gpt-4o"),
        "input_tokens": get("agent_token_usage", model_id="gpt-4o", token_type="input"),
        "output_tokens": get("agent_token_usage", model_id="gpt-4o", token_type="output"),
        "cache_read_tokens": get("agent_token_usage", model_id="gpt-4o", token_type="cache_read"),
        "tool_success": get("agent_tool_calls", tool_name="search_orders", status="success"),
        "tool_error": get("agent_tool_calls", tool_name="refund", status="error"),
    }
