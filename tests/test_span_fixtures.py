"""The recorded span fixtures and their loader: well-formed, replayable, consistent with the server."""

from __future__ import annotations

import pytest
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import SpanProcessor

from tests import span_fixtures

IDS = span_fixtures.fixture_ids()


def test_every_recording_of_the_issue_has_fixtures():
    recorded = set(span_fixtures.recordings())
    assert {
        "openai-v2",
        "openai-v2-latest-experimental",
        "openinference-openai",
        "openinference-anthropic",
        "openllmetry-openai",
        "openllmetry-anthropic",
        "openlit",
        "pydantic-ai",
        "anthropic-sdk",
    } <= recorded
    assert any(r.startswith("nested-") for r in recorded)


@pytest.mark.parametrize("fixture_id", IDS)
def test_fixture_is_well_formed(fixture_id):
    fixture = span_fixtures.load(fixture_id)
    raw = fixture.raw_spans
    by_id = {s["span_id"]: s for s in raw}
    assert len(by_id) == len(raw)
    assert fixture.data["unended_spans"] == []
    assert fixture.packages and fixture.expected["calls"]
    for s in raw:
        assert s["started_at_step"] < s["ended_at_step"]
        assert 0 <= s["start_ns"] <= s["end_ns"]
        parent = by_id.get(s["parent_span_id"])
        if s["parent_span_id"] is not None:
            assert parent is not None, f"{s['name']}: parent not recorded"
            assert parent["trace_id"] == s["trace_id"]
            assert s["ended_at_step"] < parent["ended_at_step"]  # children end first
    spans = fixture.spans()
    assert [s.name for s in spans] == [s["name"] for s in sorted(raw, key=lambda s: s["ended_at_step"])]
    for span in spans:
        assert isinstance(span._attributes, BoundedAttributes)
        with pytest.raises(TypeError):
            span._attributes["x"] = 1  # immutable, as the SDK hands them to on_end
    by_model = fixture.expected["by_model"]
    assert sum(row["calls"] for row in by_model.values()) == len(fixture.expected["calls"])


class _Recorder(SpanProcessor):
    def __init__(self):
        self.events = []

    def on_start(self, span, parent_context=None):
        self.events.append(("start", span.context.span_id, tuple(sorted(span.attributes))))

    def on_end(self, span):
        self.events.append(("end", span.context.span_id, tuple(sorted(span.attributes))))


def _view(span):
    return (
        span.name, span.kind, span.context.trace_id, span.context.span_id, span.parent and span.parent.span_id,
        dict(span.attributes), span.start_time, span.end_time, span.status.status_code, span.status.description,
        [(e.name, dict(e.attributes), e.timestamp) for e in span.events], span.instrumentation_scope,
        dict(span.resource.attributes),
    )  # fmt: skip


@pytest.mark.parametrize("fixture_id", IDS)
def test_replay_drives_a_processor_in_the_recorded_order_with_the_same_spans(fixture_id):
    fixture = span_fixtures.load(fixture_id)
    recorder = _Recorder()
    ended = fixture.replay(recorder)
    assert [_view(s) for s in ended] == [_view(s) for s in fixture.spans()]
    expected = []
    for raw in fixture.raw_spans:
        span_id = int(raw["span_id"], 16)
        expected.append((raw["started_at_step"], ("start", span_id, tuple(raw["attributes_at_start"]))))
        expected.append((raw["ended_at_step"], ("end", span_id, tuple(sorted(raw["attributes"])))))
    assert recorder.events == [event for _, event in sorted(expected)]


# Recordings whose spans already speak the GenAI conventions spanmeter reads today.
GENAI_NOW = [
    i
    for i in IDS
    if i.split("/")[0] in ("openai-v2", "openai-v2-latest-experimental", "anthropic-sdk")
    and span_fixtures.load(i).raw_spans
]


@pytest.mark.parametrize("fixture_id", GENAI_NOW)
def test_replayed_genai_spans_count_each_call_once_with_the_servers_tokens(fixture_id, meter, scrape):
    fixture = span_fixtures.load(fixture_id)
    fixture.replay(meter.processor)
    s = scrape()
    for model, row in fixture.expected["by_model"].items():
        assert s.total("model_inference_calls_total", model_id=model) == row["calls"]
        tokens = row["tokens"]
        kinds = ("input", "output", "cache_read", "cache_write")
        if fixture.recording.startswith("openai-v2"):
            kinds = ("input", "output")  # it reports no cached or reasoning tokens
        for kind in kinds:
            assert s.total("agent_token_usage_total", model_id=model, token_type=kind) == tokens[kind], kind
