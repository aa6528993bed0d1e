"""Evaluation sampling with an LLM judge: off the request path, bounded, never raising."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import threading
import time

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

import spanmeter
from spanmeter.quality import Evaluator, LLMJudge, Sampler
from tests.conftest import Scrape
from tests.judge_server import JudgeServer


@pytest.fixture
def judge_server():
    server = JudgeServer()
    yield server
    server.stop()


def _meter(evaluator, **kwargs):
    return spanmeter.setup(port=0, registry=CollectorRegistry(), tracer_provider=TracerProvider(),
                           evaluator=evaluator, **kwargs)  # fmt: skip


def _scrape(meter) -> Scrape:
    meter.state.flush()  # spans wait up to a second for reconciliation otherwise
    return Scrape(httpx.get(meter.metrics_url, timeout=10).text)


def _wait_for(meter, predicate, timeout=15.0) -> Scrape:
    deadline = time.monotonic() + timeout
    while True:
        s = _scrape(meter)
        if predicate(s) or time.monotonic() > deadline:
            return s
        time.sleep(0.05)


def _run(meter, agent="support", output="Your order ships Tuesday.", context=("order 42: ships Tuesday",)):
    with meter.agent_run(agent) as run:
        run.record_input("When does my order ship?")
        run.add_context(*context)
        run.record_output(output)


def _evaluations(s: Scrape, status: str, agent="support") -> float:
    return s.total("agent_evaluations_total", agent_name=agent, status=status)


def test_judge_scores_land_in_the_metrics_and_the_judge_is_metered(judge_server):
    judge = LLMJudge(base_url=judge_server.url("ok"), model="gpt-4o-mini", api_key="test-key")
    meter = _meter(Evaluator(judge, sample_rate=1.0))
    try:
        _run(meter)
        _run(meter)
        _wait_for(meter, lambda s: _evaluations(s, "done") == 2)
        s = _scrape(meter)  # again: the judge's spans ended before "done" was counted
        assert _evaluations(s, "done") == 2
        for metric, score in {"groundedness": 0.9, "relevance": 0.8, "safety": 1.0}.items():
            assert s.value("agent_quality_score", agent_name="support", metric_type=metric) == pytest.approx(score)
            assert s.value("agent_evaluation_score_count", agent_name="support", metric_type=metric) == 2
        assert s.buckets("agent_evaluation_score", agent_name="support", metric_type="relevance")[0.7] == 0
        assert s.buckets("agent_evaluation_score", agent_name="support", metric_type="relevance")[0.8] == 2
        # the judge's own calls: a separate agent, with tokens and cost ($0.15 / $0.60 per million)
        judge_calls = s.value("model_inference_calls_total", agent_name="spanmeter-judge", model_id="gpt-4o-mini")
        assert judge_calls == 2
        cost = s.value("agent_estimated_cost_dollars_total", agent_name="spanmeter-judge", model_id="gpt-4o-mini")
        assert cost == pytest.approx(2 * (500 * 0.15 + 40 * 0.60) / 1e6, rel=1e-9)
        assert _evaluations(s, "done", agent="spanmeter-judge") == 0  # the judge is never judged
        # what the judge was asked: the rubric for each criterion, the input, the context, the answer
        mode, request = judge_server.requests[0]
        assert request["response_format"] == {"type": "json_object"}
        prompt = request["messages"][-1]["content"]
        assert "When does my order ship?" in prompt and "order 42: ships Tuesday" in prompt
        assert "- groundedness:" in prompt and "- relevance:" in prompt and "- safety:" in prompt
    finally:
        meter.shutdown()


@pytest.mark.parametrize(
    ("mode", "judge_kwargs", "hits"),
    [
        ("malformed", {}, 1),  # prose instead of the JSON verdict: not retried
        ("error", {"retries": 2, "backoff": 0.01}, 3),  # 503 three times: retried, then failed
        ("slow", {"timeout": 0.3, "retries": 0}, 1),  # slower than the judge's timeout
    ],
)
def test_judge_failures_are_counted_never_raised(judge_server, mode, judge_kwargs, hits):
    judge = LLMJudge(base_url=judge_server.url(mode), model="gpt-4o-mini", **judge_kwargs)
    meter = _meter(Evaluator(judge, sample_rate=1.0))
    try:
        _run(meter)  # the run itself completes normally
        s = _wait_for(meter, lambda s: _evaluations(s, "failed") == 1)
        assert _evaluations(s, "failed") == 1 and _evaluations(s, "done") == 0
        assert not s.label_sets("agent_quality_score")
        assert s.value("agent_requests_total", agent_name="support", status="success") == 1
        assert s.value("spanmeter_processor_errors_total") == 0
        assert len([m for m, _ in judge_server.requests if m == mode]) == hits
        assert s.total("agent_requests_total", agent_name="spanmeter-judge", status="success") == 0
    finally:
        meter.shutdown()


def test_a_retried_judge_call_succeeds(judge_server):
    judge = LLMJudge(base_url=judge_server.url("flaky"), model="gpt-4o-mini", retries=1, backoff=0.01)
    meter = _meter(Evaluator(judge, sample_rate=1.0))
    try:
        _run(meter)
        assert _evaluations(_wait_for(meter, lambda s: _evaluations(s, "done") == 1), "done") == 1
    finally:
        meter.shutdown()


def test_a_full_queue_drops_the_newest_and_counts_it():
    started, release = threading.Event(), threading.Event()

    def blocking_judge(sample):
        started.set()
        release.wait(10)
        return {"relevance": 1.0}

    meter = _meter(Evaluator(blocking_judge, sample_rate=1.0, queue_size=2))
    try:
        _run(meter)
        assert started.wait(5)  # the worker holds the first sample
        for _ in range(4):
            _run(meter)  # two fit in the queue, two do not
        assert _evaluations(_scrape(meter), "dropped") == 2
        release.set()
        s = _wait_for(meter, lambda s: _evaluations(s, "done") == 3)
        assert _evaluations(s, "done") == 3 and _evaluations(s, "dropped") == 2
    finally:
        release.set()
        meter.shutdown()


def test_the_agent_run_does_not_wait_for_a_slow_judge():
    def slow_judge(sample):
        time.sleep(2.0)
        return {"relevance": 0.5}

    meter = _meter(Evaluator(slow_judge, sample_rate=1.0))
    try:
        t0 = time.perf_counter()
        _run(meter)
        elapsed = time.perf_counter() - t0
        s = _scrape(meter)
        assert elapsed < 0.5, elapsed  # a 2 s judge would make it >= 2 s if it waited
        assert s.value("agent_request_duration_seconds_sum", agent_name="support") < 0.5
        assert _evaluations(s, "done") == 0  # still being judged
        s = _wait_for(meter, lambda s: _evaluations(s, "done") == 1, timeout=10)
        assert _evaluations(s, "done") == 1
    finally:
        meter.shutdown()


def test_shutdown_drains_within_its_timeout_and_counts_what_is_left():
    def judge(sample):
        time.sleep(0.3)
        return {"relevance": 1.0}

    reg = CollectorRegistry()
    meter = spanmeter.setup(start_server=False, registry=reg, tracer_provider=TracerProvider(),
                            evaluator=Evaluator(judge, sample_rate=1.0, queue_size=50))  # fmt: skip
    for _ in range(10):
        _run(meter)
    meter.evaluator.shutdown(timeout=1.0)
    done = reg.get_sample_value("agent_evaluations_total", {"agent_name": "support", "status": "done"}) or 0
    dropped = reg.get_sample_value("agent_evaluations_total", {"agent_name": "support", "status": "dropped"}) or 0
    assert done + dropped == 10 and 2 <= done <= 5 and dropped >= 5  # final when shutdown returns
    time.sleep(0.5)  # a verdict arriving after shutdown is not published
    assert reg.get_sample_value("agent_evaluations_total", {"agent_name": "support", "status": "done"}) == done
    meter.shutdown()


def test_async_apps_and_async_judges():
    async def judge(sample):
        await asyncio.sleep(0.01)
        return {"safety": 0.25}

    meter = _meter(Evaluator(judge, sample_rate=1.0))
    try:
        async def app():
            async with meter.agent_run("support") as run:
                run.record_input("hi")
                await asyncio.sleep(0)
                run.record_output("hello")

        asyncio.run(app())
        s = _wait_for(meter, lambda s: _evaluations(s, "done") == 1)
        assert s.value("agent_quality_score", agent_name="support", metric_type="safety") == 0.25
    finally:
        meter.shutdown()


def test_span_content_is_read_only_when_the_user_opts_in():
    def judge(sample):
        assert "refund" in sample.input and "done" in sample.output
        return {"relevance": 0.6}

    for opt_in, expected in ((False, 0), (True, 1)):
        meter = _meter(Evaluator(judge, sample_rate=1.0, read_span_content=opt_in))
        try:
            tracer = meter.tracer_provider.get_tracer("another.framework")
            tracer.start_span("invoke_agent billing", attributes={
                "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "billing",
                "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"content": "refund me"}]}]),
                "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"content": "done"}]}]),
            }).end()  # fmt: skip
            time.sleep(0.3)
            s = _wait_for(meter, lambda s: _evaluations(s, "done", "billing") == expected, timeout=3)
            assert _evaluations(s, "done", "billing") == expected
            assert _evaluations(s, "failed", "billing") == 0
        finally:
            meter.shutdown()


def test_sampling_follows_the_trace_id_and_converges_to_the_rate():
    sampler = Sampler(rate=0.1, rates={"billing": 0.5, "never": 0.0})
    rng = random.Random(1)
    ids = [rng.getrandbits(128) for _ in range(200_000)]
    share = sum(sampler.sampled(t, "support") for t in ids) / len(ids)
    assert share == pytest.approx(0.1, abs=0.003)
    assert sum(sampler.sampled(t, "billing") for t in ids) / len(ids) == pytest.approx(0.5, abs=0.005)
    assert not any(sampler.sampled(t, "never") for t in ids[:1000])
    assert not any(sampler.sampled(t, "spanmeter-judge") for t in ids[:1000])
    # a trace sampled at 10% is sampled at 50% too: rates nest, like TraceIdRatioBased
    assert all(sampler.sampled(t, "billing") for t in ids[:5000] if sampler.sampled(t, "support"))


def test_two_processes_take_the_same_decisions_for_the_same_traces():
    rng = random.Random(7)
    ids = [rng.getrandbits(128) for _ in range(5000)]
    code = (
        "import sys, json\n"
        "from spanmeter.quality import Sampler\n"
        "ids = json.load(sys.stdin)\n"
        "s = Sampler(rate=0.2)\n"
        "print(''.join('1' if s.sampled(t, 'support') else '0' for t in ids))\n"
    )
    runs = [subprocess.run([sys.executable, "-c", code], input=json.dumps(ids), capture_output=True, text=True,
                           timeout=60, check=True).stdout.strip() for _ in range(2)]  # fmt: skip
    assert runs[0] == runs[1]
    assert runs[0].count("1") / len(ids) == pytest.approx(0.2, abs=0.02)
    here = "".join("1" if Sampler(rate=0.2).sampled(t, "support") else "0" for t in ids)
    assert here == runs[0]


def test_a_sampled_run_is_judged_with_the_trace_id_of_its_span():
    seen = []
    meter = _meter(Evaluator(lambda s: seen.append(s.trace_id) or {"relevance": 1.0}, sample_rate=1.0))
    try:
        with meter.agent_run("support") as run:
            trace_id = trace.get_current_span().get_span_context().trace_id
            run.record_output("x")
        _wait_for(meter, lambda s: _evaluations(s, "done") == 1)
        assert seen == [trace_id]
    finally:
        meter.shutdown()


def test_bad_evaluation_settings_fail_at_configuration():
    with pytest.raises(ValueError, match="sample_rate must be a share of runs between 0 and 1"):
        Evaluator(lambda s: {}, sample_rate=20)
    with pytest.raises(ValueError, match=r"rates\['a'\] must be a share"):
        Evaluator(lambda s: {}, rates={"a": -1})
    with pytest.raises(ValueError, match="queue_size must be an int >= 1"):
        Evaluator(lambda s: {}, queue_size=0)
    with pytest.raises(ValueError, match="have no rubric"):
        LLMJudge(base_url="http://127.0.0.1:1/v1", model="m", metrics=("vibes",))
