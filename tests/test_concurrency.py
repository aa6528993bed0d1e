"""Exact totals under threads and asyncio, during scrapes, and across fork()."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest
from opentelemetry import trace

THREADS, SPANS_PER_THREAD = 8, 10_000
CHAT = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini", "gen_ai.provider.name": "openai",
        "gen_ai.usage.input_tokens": 3, "gen_ai.usage.output_tokens": 2}  # fmt: skip


def test_threads_give_exact_totals_while_being_scraped(meter, scrape):
    tracer = meter.tracer_provider.get_tracer("t")
    start = threading.Barrier(THREADS + 1)

    def work(n: int) -> None:
        start.wait()
        agent = tracer.start_span(f"invoke_agent worker{n % 2}", attributes={
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": f"worker{n % 2}"})  # fmt: skip
        ctx = trace.set_span_in_context(agent)
        for _ in range(SPANS_PER_THREAD):
            tracer.start_span("chat gpt-4o-mini", context=ctx, attributes=CHAT).end()
        agent.end()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    start.wait()
    seen = []
    while any(t.is_alive() for t in threads):  # scrapes while the threads write
        seen.append(scrape().total("model_inference_calls_total"))
    for t in threads:
        t.join()
    s = scrape()
    total = THREADS * SPANS_PER_THREAD
    assert s.total("model_inference_calls_total") == total
    assert s.value("model_inference_calls_total", agent_name="worker0", model_id="gpt-4o-mini") == total / 2
    assert s.total("agent_token_usage_total", token_type="input") == 3 * total
    assert s.total("model_inference_duration_seconds_count") == total
    assert s.total("agent_inference_calls_per_run_sum") == total
    assert s.value("agent_estimated_cost_dollars_total", agent_name="worker1", model_id="gpt-4o-mini") == (
        pytest.approx(total / 2 * (3 * 0.15 + 2 * 0.60) / 1e6, rel=1e-12))
    assert seen == sorted(seen)  # counters never went backwards between scrapes
    assert s.value("spanmeter_processor_errors_total") == 0


def test_a_thousand_concurrent_asyncio_tasks(meter, scrape):
    async def task(n: int) -> None:
        async with meter.agent_run("async"):
            for _ in range(3):
                async with meter.model_call("gpt-4o-mini", provider="openai") as call:
                    await asyncio.sleep(0.001 * (n % 7))
                    call.record_usage(input_tokens=n, output_tokens=1)
            async with meter.tool_call("lookup"):
                await asyncio.sleep(0)

    async def main():
        await asyncio.gather(*(task(n) for n in range(1000)))

    asyncio.run(main())
    s = scrape()
    assert s.value("model_inference_calls_total", agent_name="async", model_id="gpt-4o-mini") == 3000
    assert s.value("agent_token_usage_total", agent_name="async", model_id="gpt-4o-mini", token_type="input") == (
        3 * sum(range(1000)))
    assert s.buckets("agent_inference_calls_per_run", agent_name="async")[2.0] == 0
    assert s.buckets("agent_inference_calls_per_run", agent_name="async")[3.0] == 1000
    assert s.value("agent_tool_calls_per_run_sum", agent_name="async") == 1000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_gives_the_child_clean_state_and_no_deadlock(meter, scrape):
    tracer = meter.tracer_provider.get_tracer("t")
    for _ in range(5):
        tracer.start_span("chat gpt-4o-mini", attributes=CHAT).end()
    # fork while another thread holds the state lock: the child must not inherit it held
    holding, release = threading.Event(), threading.Event()

    def hold():
        with meter.state.lock:
            holding.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(5)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: record and read back its own numbers, then exit
        try:
            from spanmeter.aggregate import produce

            tracer.start_span("chat gpt-4o-mini", attributes=CHAT).end()
            meter.state.flush()
            calls = [p.value for m in produce(meter.state) if m.name == "model_inference_calls"
                     for p in m.data.data_points]  # fmt: skip
            os.write(write, repr(calls).encode())
        finally:
            os._exit(0)
    release.set()
    holder.join()
    os.close(write)
    _, status = os.waitpid(pid, 0)
    child = os.read(read, 1000).decode()
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0
    assert child == "[1]"  # only its own span: the parent's five are not reported twice
    assert scrape().value("model_inference_calls_total", agent_name="unknown", model_id="gpt-4o-mini") == 5
