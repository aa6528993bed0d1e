"""A scope object kept and entered by several tasks or threads at once: each entry ends its
own span, under its own agent, and no ended span stays current."""

from __future__ import annotations

import asyncio
import threading

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, generate_latest

import spanmeter
from tests.conftest import Scrape


def test_one_tool_scope_shared_by_two_tasks_keeps_each_tasks_span():
    registry = CollectorRegistry()
    meter = spanmeter.setup(start_server=False, registry=registry, tracer_provider=TracerProvider())
    SEARCH = meter.tool_call("search")  # module-level style: built once, entered many times
    a_inside, b_inside, a_done = asyncio.Event(), asyncio.Event(), asyncio.Event()
    after: dict = {}

    async def task_a():
        try:
            async with meter.agent_run("billing"):
                async with SEARCH:
                    a_inside.set()
                    await b_inside.wait()  # B enters SEARCH while A is inside it
                    raise LookupError("no such order")
        except LookupError:
            pass
        finally:
            a_done.set()
        after["a"] = trace.get_current_span()

    async def task_b():
        await a_inside.wait()
        async with meter.agent_run("support"):
            async with SEARCH:
                b_inside.set()
                await a_done.wait()  # A fails and leaves first
        after["b"] = trace.get_current_span()

    async def main():
        await asyncio.gather(task_a(), task_b())

    try:
        asyncio.run(main())
        with meter.agent_run("support"), SEARCH:  # a later use, outside the tasks
            pass
        meter.state.flush()
        scrape = Scrape(generate_latest(registry).decode())
    finally:
        meter.shutdown()
    calls = {(s.labels["agent_name"], s.labels["status"]): s.value
             for s in scrape.samples if s.name == "agent_tool_calls_total"}  # fmt: skip
    assert calls == {("billing", "error"): 1.0, ("support", "success"): 2.0}
    assert after["a"] is trace.INVALID_SPAN and after["b"] is trace.INVALID_SPAN
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_one_scope_shared_by_threads_and_reentered_recursively():
    registry = CollectorRegistry()
    meter = spanmeter.setup(start_server=False, registry=registry, tracer_provider=TracerProvider())
    SEARCH = meter.tool_call("search")
    barrier = threading.Barrier(8)

    def worker(n: int):
        with meter.agent_run(f"agent-{n % 2}"):
            with SEARCH:
                barrier.wait()  # all eight inside the same scope object at once
                with SEARCH:  # and once more, nested
                    pass
            assert trace.get_current_span() is not trace.INVALID_SPAN  # the agent span again
        assert trace.get_current_span() is trace.INVALID_SPAN

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        meter.state.flush()
        scrape = Scrape(generate_latest(registry).decode())
    finally:
        meter.shutdown()
    assert scrape.value("agent_tool_calls_total", agent_name="agent-0", tool_name="search", status="success") == 8
    assert scrape.value("agent_tool_calls_total", agent_name="agent-1", tool_name="search", status="success") == 8
