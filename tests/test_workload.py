"""A scripted workload in, exact values out of the real /metrics endpoint."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import trace

import spanmeter
from spanmeter import catalog


class ProviderError(Exception):
    pass


def _sync_workload(meter) -> None:
    # support run 1: two inferences and a tool, succeeds
    with meter.agent_run("support", conversation_id="c-1"):
        with meter.model_call("gpt-4o", provider="openai") as call:
            call.record_usage(input_tokens=1000, output_tokens=200, cache_read_tokens=400)
            call.record_response(model="gpt-4o-2024-08-06", finish_reasons=["tool_calls"])
            call.record_first_chunk()  # a streamed call: time to first chunk
        with meter.tool_call("search_orders"):
            pass
        with meter.model_call("gpt-4o", provider="openai") as call:
            call.record_usage(input_tokens=1500, output_tokens=100)
    # support run 2: a failing tool the agent survives, then a rate-limited inference
    with pytest.raises(ProviderError):
        with meter.agent_run("support", conversation_id="c-2"):
            with meter.model_call("gpt-4o-mini", provider="openai") as call:
                call.record_usage(input_tokens=300, output_tokens=50)
            try:
                with meter.tool_call("issue_refund"):
                    raise RuntimeError("payment backend down")
            except RuntimeError:
                pass
            with meter.model_call("gpt-4o-mini", provider="openai") as call:
                call.fail("rate_limit_exceeded")
                raise ProviderError("429")
    # support run 3: a tool times out and the run with it
    with pytest.raises(TimeoutError):
        with meter.agent_run("support"):
            with meter.tool_call("search_orders"):
                raise TimeoutError("orders db")
    # research run: a reasoning model writing to the cache
    with meter.agent_run("research"):
        with meter.model_call("o3-mini", provider="openai") as call:
            call.record_usage(input_tokens=2000, output_tokens=900, reasoning_tokens=600, cache_write_tokens=100)


def test_sync_workload_gives_exact_counts(meter, scrape):
    _sync_workload(meter)
    s = scrape()

    assert s.value("agent_requests_total", agent_name="support", status="success") == 1
    assert s.value("agent_requests_total", agent_name="support", status="error") == 1
    assert s.value("agent_requests_total", agent_name="support", status="timeout") == 1
    assert s.value("agent_requests_total", agent_name="research", status="success") == 1
    assert s.value("agent_request_duration_seconds_count", agent_name="support") == 3

    assert s.value("model_inference_calls_total", agent_name="support", model_id="gpt-4o") == 2
    assert s.value("model_inference_calls_total", agent_name="support", model_id="gpt-4o-mini") == 2
    assert s.value("model_inference_calls_total", agent_name="research", model_id="o3-mini") == 1
    assert s.value("model_inference_duration_seconds_count", agent_name="support", model_id="gpt-4o-mini") == 2

    tokens = {
        ("support", "gpt-4o"): {"input": 2500, "output": 300, "cache_read": 400, "cache_write": 0, "reasoning": 0},
        ("support", "gpt-4o-mini"): {"input": 300, "output": 50, "cache_read": 0, "cache_write": 0, "reasoning": 0},
        ("research", "o3-mini"): {"input": 2000, "output": 900, "cache_read": 0, "cache_write": 100, "reasoning": 600},
    }
    for (agent, model), by_type in tokens.items():
        for token_type, expected in by_type.items():
            got = s.value("agent_token_usage_total", agent_name=agent, model_id=model, token_type=token_type)
            assert got == expected, (agent, model, token_type)

    assert s.value("agent_tool_calls_total", agent_name="support", tool_name="search_orders", status="success") == 1
    assert s.value("agent_tool_calls_total", agent_name="support", tool_name="search_orders", status="timeout") == 1
    assert s.value("agent_tool_calls_total", agent_name="support", tool_name="issue_refund", status="error") == 1
    assert s.value("agent_tool_call_duration_seconds_count", agent_name="support", tool_name="search_orders") == 2

    # per-run distributions: support runs made 2, 2 and 0 inferences; 2800, 350 and 0 tokens
    assert s.value("agent_inference_calls_per_run_count", agent_name="support") == 3
    assert s.value("agent_inference_calls_per_run_sum", agent_name="support") == 4
    assert s.buckets("agent_inference_calls_per_run", agent_name="support")[1.0] == 1
    assert s.buckets("agent_inference_calls_per_run", agent_name="support")[2.0] == 3
    assert s.value("agent_tool_calls_per_run_sum", agent_name="support") == 3
    assert s.value("agent_tokens_per_run_sum", agent_name="support") == 3150
    assert s.buckets("agent_tokens_per_run", agent_name="support")[250.0] == 1  # the 0-token run
    assert s.buckets("agent_tokens_per_run", agent_name="support")[500.0] == 2
    assert s.buckets("agent_tokens_per_run", agent_name="support")[2500.0] == 2
    assert s.buckets("agent_tokens_per_run", agent_name="support")[5000.0] == 3

    # GenAI convention metrics
    assert s.value(
        "gen_ai_client_inference_duration_seconds_count", gen_ai_request_model="gpt-4o-mini",
        gen_ai_provider_name="openai", gen_ai_operation_name="chat", error_type="rate_limit_exceeded",
    ) == 1  # fmt: skip
    assert s.total("gen_ai_client_inference_duration_seconds_count") == 5
    assert s.value(
        "gen_ai_client_inference_operation_input_tokens_sum", gen_ai_request_model="gpt-4o",
        gen_ai_response_model="gpt-4o-2024-08-06",
    ) == 1000  # fmt: skip
    assert s.total("gen_ai_client_inference_operation_input_tokens_count", gen_ai_request_model="gpt-4o") == 2
    assert s.total("gen_ai_client_inference_operation_output_tokens_sum", gen_ai_request_model="gpt-4o") == 300
    assert s.total("gen_ai_client_inference_usage_output_tokens_total", gen_ai_request_model="gpt-4o",
                   gen_ai_token_modality="unknown") == 300  # fmt: skip
    assert s.value("gen_ai_invoke_agent_duration_seconds_count", gen_ai_agent_name="support", error_type="TimeoutError") == 1
    assert s.value(
        "gen_ai_execute_tool_duration_seconds_count", gen_ai_tool_name="issue_refund", error_type="RuntimeError"
    ) == 1
    assert s.value("spanmeter_spans_total", kind="inference") == 5
    assert s.total("gen_ai_client_inference_time_to_first_chunk_seconds_count") == 1
    assert s.value("gen_ai_client_inference_time_to_first_chunk_seconds_count", gen_ai_request_model="gpt-4o") == 1
    assert s.value("spanmeter_processor_errors_total") == 0


def test_every_catalogue_metric_is_exposed_with_its_name_type_and_labels(meter, scrape):
    _sync_workload(meter)
    meter.record_quality("support", "groundedness", 0.8)
    meter.record_conversation("support", turns=4, escalated=True)
    meter.processor.record_evaluation("support", "done")  # what the evaluator records
    with meter.model_call("acme-private-llm") as call:  # a model no catalogue knows: unpriced
        call.record_usage(input_tokens=5)
    sdk = meter.tracer_provider.get_tracer("some.sdk.instrumentation")
    t0 = 1_700_000_000_000_000_000
    sdk.start_span("embeddings e3", start_time=t0, attributes={  # embeddings have their own GenAI metrics
        "gen_ai.operation.name": "embeddings", "gen_ai.request.model": "e3", "gen_ai.provider.name": "openai",
        "gen_ai.usage.input_tokens": 12}).end(end_time=t0 + 10**8)  # fmt: skip
    sdk.start_span("chat gpt-4o", start_time=t0, attributes={  # a stream: finish reason and output speed
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.provider.name": "openai",
        "gen_ai.usage.input_tokens": 20, "gen_ai.usage.output_tokens": 30, "gen_ai.request.stream": True,
        "gen_ai.response.time_to_first_chunk": 0.2, "gen_ai.response.finish_reasons": ("stop",),
    }).end(end_time=t0 + 10**9)  # fmt: skip
    with meter.agent_run("support"), meter.tool_call("refund") as refund:
        refund.record_decision("require_approval")  # the conventions' gen_ai.tool.call.decision event
    workflow = {"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": "triage"}
    with meter.tracer_provider.get_tracer("app").start_as_current_span("invoke_workflow triage", attributes=workflow):
        with meter.agent_run("triage_agent"):  # a workflow: agent runs coordinated by one span
            pass
    s = scrape()
    exposed_types = {"counter": "counter", "histogram": "histogram", "gauge": "gauge"}
    for spec in catalog.exported():  # the default: current GenAI names (v1.41 ones: tests/test_genai_names.py)
        if spec.name in ("spanmeter_dropped_values", "spanmeter_label_overflow", "spanmeter_otlp_failed_exports",
                         "spanmeter_deferred_metric_info"):  # fmt: skip
            continue  # nothing was dropped, collapsed or left to another scope in this workload, which pushes no OTLP
        family_name = spec.exposed_name.removesuffix("_total") if spec.kind == "counter" else spec.exposed_name
        assert family_name in s.families, spec.exposed_name
        family = s.families[family_name]
        assert family.type == exposed_types[spec.kind], spec.name
        sample_name = spec.exposed_name if spec.kind != "histogram" else spec.exposed_name + "_count"
        label_sets = s.label_sets(sample_name)
        assert label_sets, spec.exposed_name
        for labels in label_sets:
            assert set(labels) <= set(spec.exposed_labels), (spec.exposed_name, labels)
        required = {k for k in spec.exposed_labels if k != "error_type" and k != "gen_ai_response_model"
                    and k != "gen_ai_tool_type"}  # fmt: skip
        assert any(required <= set(labels) for labels in label_sets), (spec.exposed_name, label_sets)
        if spec.kind == "histogram":
            bounds = sorted(b for b in s.buckets(spec.exposed_name, **label_sets[0]) if b != float("inf"))
            assert tuple(bounds) == spec.buckets, spec.exposed_name


def test_plain_opentelemetry_spans_under_an_agent_run_land_in_the_right_buckets(meter, scrape):
    """An inference span from any instrumentation (older GenAI names, no agent name)."""
    tracer = meter.tracer_provider.get_tracer("some.sdk.instrumentation")
    t0 = 1_700_000_000_000_000_000
    agent = tracer.start_span(
        "invoke_agent planner", attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner"},
        start_time=t0,
    )  # fmt: skip
    ctx = trace.set_span_in_context(agent)
    durations = [0.1, 0.2, 0.35, 2.5, 12.0]
    start = t0
    for d in durations:
        span = tracer.start_span(
            "chat claude-x", context=ctx, kind=trace.SpanKind.CLIENT, start_time=start,
            attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "claude-x", "gen_ai.system": "anthropic",
                        "gen_ai.usage.prompt_tokens": 70, "gen_ai.usage.completion_tokens": 5},
        )  # fmt: skip
        span.end(end_time=start + int(d * 1e9))
        start += int(d * 1e9)
    tool = tracer.start_span(
        "execute_tool fetch", context=ctx, start_time=start,
        attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "fetch", "error.type": "timeout"},
    )  # fmt: skip
    tool.end(end_time=start + 3 * 10**9)
    agent.end(end_time=t0 + 20 * 10**9)
    s = scrape()

    labels = {"agent_name": "planner", "model_id": "claude-x"}
    assert s.buckets("model_inference_duration_seconds", **labels) == {
        0.2: 2, 0.5: 3, 1.0: 3, 2.0: 3, 3.0: 4, 5.0: 4, 10.0: 4, float("inf"): 5,
    }  # fmt: skip
    assert s.value("model_inference_duration_seconds_sum", **labels) == pytest.approx(sum(durations))
    genai = s.buckets("gen_ai_client_inference_duration_seconds", gen_ai_request_model="claude-x")
    assert genai[0.08] == 0 and genai[0.16] == 1 and genai[0.32] == 2 and genai[0.64] == 3
    assert genai[2.56] == 4 and genai[10.24] == 4 and genai[20.48] == 5
    assert s.value("gen_ai_client_inference_duration_seconds_count", gen_ai_provider_name="anthropic") == 5
    assert s.value("agent_token_usage_total", token_type="input", **labels) == 350
    assert s.value("agent_token_usage_total", token_type="output", **labels) == 25
    assert s.value("agent_tool_calls_total", agent_name="planner", tool_name="fetch", status="timeout") == 1
    assert s.buckets("agent_tool_call_duration_seconds", agent_name="planner", tool_name="fetch")[2.0] == 0
    assert s.buckets("agent_tool_call_duration_seconds", agent_name="planner", tool_name="fetch")[5.0] == 1
    assert s.buckets("agent_request_duration_seconds", agent_name="planner")[13.0] == 0
    assert s.buckets("agent_request_duration_seconds", agent_name="planner")[21.0] == 1
    assert s.buckets("gen_ai_invoke_agent_duration_seconds", gen_ai_agent_name="planner")[12.8] == 0
    assert s.buckets("gen_ai_invoke_agent_duration_seconds", gen_ai_agent_name="planner")[25.6] == 1
    assert s.value("agent_inference_calls_per_run_sum", agent_name="planner") == 5
    assert s.buckets("agent_inference_calls_per_run", agent_name="planner")[4.0] == 0
    assert s.buckets("agent_inference_calls_per_run", agent_name="planner")[5.0] == 1


def test_asyncio_runs_in_parallel_keep_their_own_ancestry(meter, scrape):
    @meter.tool_call("lookup")
    async def lookup(i: int) -> int:
        await asyncio.sleep(0.001 * (i % 3))
        return i

    @meter.agent_run("async_agent")
    async def run(i: int) -> None:
        for _ in range(2):
            async with meter.model_call("gpt-4o-mini", provider="openai") as call:
                await asyncio.sleep(0.001 * (i % 5))
                call.record_usage(input_tokens=10, output_tokens=5)
        await lookup(i)
        if i % 10 == 0:
            raise asyncio.TimeoutError()

    async def main():
        return await asyncio.gather(*(run(i) for i in range(50)), return_exceptions=True)

    results = asyncio.run(main())
    assert sum(isinstance(r, TimeoutError) for r in results) == 5
    s = scrape()
    assert s.value("agent_requests_total", agent_name="async_agent", status="success") == 45
    assert s.value("agent_requests_total", agent_name="async_agent", status="timeout") == 5
    assert s.value("model_inference_calls_total", agent_name="async_agent", model_id="gpt-4o-mini") == 100
    assert s.value("agent_token_usage_total", agent_name="async_agent", model_id="gpt-4o-mini", token_type="input") == 1000
    assert s.value("agent_tool_calls_total", agent_name="async_agent", tool_name="lookup", status="success") == 50
    # every run saw exactly its own two inferences and one tool call
    assert s.buckets("agent_inference_calls_per_run", agent_name="async_agent")[1.0] == 0
    assert s.buckets("agent_inference_calls_per_run", agent_name="async_agent")[2.0] == 50
    assert s.value("agent_tool_calls_per_run_sum", agent_name="async_agent") == 50
    assert s.buckets("agent_tool_calls_per_run", agent_name="async_agent")[0.0] == 0


def test_module_level_api_works_after_configure(monkeypatch):
    from prometheus_client import CollectorRegistry

    import httpx
    from tests.conftest import Scrape

    instance = spanmeter.configure(service_name="cfg", port=0, registry=CollectorRegistry())
    try:
        with spanmeter.agent_run("global_agent"):
            with spanmeter.model_call("m1") as call:
                call.record_usage(input_tokens=7)
        spanmeter.record_quality("global_agent", "relevance", 0.5)
        s = Scrape(httpx.get(instance.metrics_url).text)
        assert s.value("agent_requests_total", agent_name="global_agent", status="success") == 1
        assert s.value("agent_token_usage_total", agent_name="global_agent", model_id="m1", token_type="input") == 7
        assert s.value("agent_quality_score", agent_name="global_agent", metric_type="relevance") == 0.5
        assert s.value("target_info", service_name="cfg") == 1
    finally:
        spanmeter.shutdown()
