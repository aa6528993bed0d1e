"""Conversations followed by gen_ai.conversation.id: turns, ends, escalations, bounded memory."""

from __future__ import annotations

import time

import httpx
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

import spanmeter
from tests.conftest import Scrape


def _turns(meter, conversation_id, n, agent="support"):
    for _ in range(n):
        with meter.agent_run(agent, conversation_id=conversation_id):
            pass


def test_each_run_is_a_turn_and_the_last_one_ends_the_conversation(meter, scrape):
    _turns(meter, "conv-a", 2)
    with meter.agent_run("support", conversation_id="conv-a") as run:
        run.end_conversation(escalated=True)
    _turns(meter, "conv-b", 1)
    with meter.agent_run("support", conversation_id="conv-b") as run:
        run.end_conversation()
    s = scrape()
    assert s.value("agent_conversations_total", agent_name="support") == 2
    assert s.value("agent_escalations_total", agent_name="support") == 1
    assert s.value("agent_conversation_turns_sum", agent_name="support") == 5
    assert s.buckets("agent_conversation_turns", agent_name="support")[2.0] == 1
    assert s.buckets("agent_conversation_turns", agent_name="support")[3.0] == 2
    assert s.value("agent_escalation_rate", agent_name="support") == 0.5
    assert s.value("spanmeter_conversations_ended_total", reason="app") == 2
    assert s.value("spanmeter_open_conversations") == 0
    assert "conv-a" not in s.text and "conv-b" not in s.text  # ids are never labels


def test_an_escalation_reported_out_of_band(meter, scrape):
    _turns(meter, "ticket-7", 4, agent="billing")
    assert scrape().value("spanmeter_open_conversations") == 1
    assert meter.end_conversation("ticket-7", escalated=True) is True
    assert meter.end_conversation("ticket-7") is False  # already ended
    assert meter.end_conversation("never-seen") is False
    s = scrape()
    assert s.value("agent_escalations_total", agent_name="billing") == 1
    assert s.value("agent_conversation_turns_sum", agent_name="billing") == 4


def test_idle_conversations_end_by_themselves():
    meter = spanmeter.setup(port=0, registry=CollectorRegistry(), tracer_provider=TracerProvider(),
                            conversation_idle_seconds=0.3)  # fmt: skip
    try:
        _turns(meter, "quiet", 3)
        s = Scrape(httpx.get(meter.metrics_url).text)
        assert s.value("spanmeter_open_conversations") == 1
        assert s.total("agent_conversations_total") == 0
        time.sleep(0.4)
        s = Scrape(httpx.get(meter.metrics_url).text)  # a scrape ends idle conversations
        assert s.value("agent_conversations_total", agent_name="support") == 1
        assert s.value("agent_conversation_turns_sum", agent_name="support") == 3
        assert s.value("spanmeter_conversations_ended_total", reason="idle") == 1
        assert s.value("spanmeter_open_conversations") == 0
    finally:
        meter.shutdown()


def test_open_conversations_are_bounded():
    meter = spanmeter.setup(port=0, registry=CollectorRegistry(), tracer_provider=TracerProvider(),
                            max_open_conversations=10)  # fmt: skip
    try:
        for n in range(25):
            _turns(meter, f"c{n}", 2)
        s = Scrape(httpx.get(meter.metrics_url).text)
        assert s.value("spanmeter_open_conversations") == 10
        assert s.value("spanmeter_conversations_ended_total", reason="evicted") == 15
        assert s.value("agent_conversations_total", agent_name="support") == 15
        assert s.value("agent_conversation_turns_sum", agent_name="support") == 30
    finally:
        meter.shutdown()


def test_module_level_end_conversation():
    meter = spanmeter.configure(port=0, registry=CollectorRegistry())
    try:
        with spanmeter.agent_run("support", conversation_id="x1"):
            pass
        assert spanmeter.end_conversation("x1", escalated=True) is True
        s = Scrape(httpx.get(meter.metrics_url).text)
        assert s.value("agent_escalations_total", agent_name="support") == 1
    finally:
        spanmeter.shutdown()
    assert spanmeter.end_conversation("x1") is False  # after shutdown: a no-op
