"""The recording API for what spans do not carry: quality scores and finished conversations."""

from __future__ import annotations

import math

import pytest

from spanmeter.aggregate import RollingWindow


def test_quality_score_is_the_rolling_average_per_agent_and_metric(meter, scrape):
    for score in (0.9, 0.7, 0.8):
        meter.record_quality("support", "groundedness", score)
    meter.record_quality("support", "relevance", 1)
    meter.record_quality("billing", "groundedness", 0.4)
    s = scrape()
    assert s.value("agent_quality_score", agent_name="support", metric_type="groundedness") == pytest.approx(0.8)
    assert s.value("agent_quality_score", agent_name="support", metric_type="relevance") == 1.0
    assert s.value("agent_quality_score", agent_name="billing", metric_type="groundedness") == 0.4


def test_bad_scores_are_dropped_and_counted_never_raised(meter, scrape):
    for bad in (1.5, -0.1, math.nan, "0.9", None, True):
        meter.record_quality("support", "safety", bad)
    s = scrape()
    assert "agent_quality_score" not in s.families or not s.label_sets("agent_quality_score")
    assert s.value("spanmeter_dropped_values_total", field="quality_score", reason="out_of_range") == 3
    assert s.value("spanmeter_dropped_values_total", field="quality_score", reason="wrong_type") == 3


def test_rolling_window_forgets_old_values_in_constant_memory():
    window = RollingWindow(seconds=60, slots=6)  # 10 s slots
    window.add(1.0, now=1000.0)
    window.add(0.0, now=1005.0)
    assert window.mean(now=1009.0) == 0.5
    window.add(0.0, now=1050.0)
    assert window.mean(now=1059.0) == 1 / 3
    assert window.mean(now=1065.0) == 0.0  # the 1000-1010 slot left the window
    assert window.mean(now=1200.0) is None  # nothing left
    for t in range(10_000):
        window.add(1.0, now=2000.0 + t)
    assert len(window.sums) == 6


def test_conversations_turns_and_escalations(meter, scrape):
    for turns, escalated in ((1, False), (3, True), (4, False), (25, False)):
        meter.record_conversation("support", turns=turns, escalated=escalated)
    meter.record_conversation("support", turns=-2)  # dropped
    s = scrape()
    assert s.value("agent_conversations_total", agent_name="support") == 4
    assert s.value("agent_escalations_total", agent_name="support") == 1
    assert s.value("agent_escalation_rate", agent_name="support") == 0.25
    assert s.buckets("agent_conversation_turns", agent_name="support") == {
        1.0: 1, 2.0: 1, 3.0: 2, 5.0: 3, 8.0: 3, 13.0: 3, 20.0: 3, float("inf"): 4,
    }  # fmt: skip
    assert s.value("agent_conversation_turns_sum", agent_name="support") == 33
    assert s.value("spanmeter_dropped_values_total", field="conversation_turns", reason="negative") == 1
