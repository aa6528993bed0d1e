"""google-adk live, in-process: ADK's own spans through spanmeter, the fake Gemini server's log as truth.

ADK traces into the global tracer provider (``trace.get_tracer("gcp.vertex.agent")``, set by
the app or by ADK's ``maybe_set_otel_providers``); spanmeter joins that provider, as an ADK
app would do. google-adk pins opentelemetry-api/sdk <= 1.44, so this module runs in the venv
with ADK (the lowest supported OpenTelemetry); elsewhere it is skipped. The recorded spans of
the same set-ups are ``tests/fixtures/spans/google-adk*`` (``scripts/record_fixtures.py``).
"""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("google.adk")

from google import genai  # noqa: E402
from google.adk.agents import LlmAgent, SequentialAgent  # noqa: E402
from google.adk.models import Gemini  # noqa: E402
from google.adk.runners import InMemoryRunner  # noqa: E402
from google.genai import errors, types  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

import spanmeter  # noqa: E402
from tests.fake_providers import FakeProviders  # noqa: E402

MODEL = "gemini-2.5-flash"
TOKEN_TYPES = ("input", "output", "cache_read", "cache_write", "reasoning")


@pytest.fixture(scope="module")
def adk_tracer_provider() -> TracerProvider:
    """The global SDK tracer provider ADK traces into: set once per process, as an app does."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        pytest.skip(f"the global tracer provider is a {type(provider).__name__}, not the SDK's")
    return provider


@pytest.fixture
def meter(adk_tracer_provider):
    """spanmeter on ADK's tracer provider (the conftest's ``scrape`` reads this one)."""
    instance = spanmeter.setup(
        service_name="adk-app", port=0, registry=CollectorRegistry(), tracer_provider=adk_tracer_provider
    )
    yield instance
    instance.shutdown()


@pytest.fixture
def providers():
    with FakeProviders() as server:
        yield server


@pytest.fixture
def genai_instrumentor(meter):
    """opentelemetry-instrumentation-google-genai on too: ADK then leaves the inference span to it."""
    instrumentation = pytest.importorskip("opentelemetry.instrumentation.google_genai")
    from opentelemetry.sdk.metrics import MeterProvider

    instrumentor = instrumentation.GoogleGenAiSdkInstrumentor()
    instrumentor.instrument(tracer_provider=meter.tracer_provider, meter_provider=MeterProvider())
    yield
    instrumentor.uninstrument()


class _App:
    """An ADK app on the fake server: its agents, its tool runs, and ADK's in-memory runner."""

    def __init__(self, server: FakeProviders):
        self.server = server
        self.tool_runs = 0
        # no retries: ADK's default client would retry a 429
        self.client = genai.Client(api_key="test-key", http_options=types.HttpOptions(
            base_url=server.url, retry_options=types.HttpRetryOptions(attempts=1)))  # fmt: skip

    def agent(self, name: str = "weather_agent", tool: bool = True, model: str = MODEL) -> LlmAgent:
        def get_weather(city: str) -> str:
            """Current weather in a city."""
            self.tool_runs += 1
            return f"Sunny in {city}."

        return LlmAgent(name=name, model=Gemini(model=model, client=self.client),
                        instruction="Answer with the weather tool.", tools=[get_weather] if tool else [])  # fmt: skip

    def run(self, agent, question: str = "What is the weather in Paris?") -> list:
        runner = InMemoryRunner(agent=agent, app_name="weather_app")
        session = asyncio.run(runner.session_service.create_session(app_name="weather_app", user_id="u"))
        message = types.Content(role="user", parts=[types.Part(text=question)])
        return list(runner.run(user_id="u", session_id=session.id, new_message=message))

    def true_tokens(self) -> dict[str, int]:
        """Tokens of every call the fake server answered, in the GenAI meaning (Gemini's
        candidatesTokenCount excludes thoughts; its promptTokenCount includes the cached)."""
        u = self.server.usage
        n = len(self.server.requests)
        return {"input": n * u.input, "output": n * (u.output + u.reasoning), "cache_read": n * u.cache_read,
                "cache_write": 0, "reasoning": n * u.reasoning}  # fmt: skip


def _tokens(s, **labels) -> dict[str, float]:
    return {t: s.total("agent_token_usage_total", token_type=t, **labels) for t in TOKEN_TYPES}


def _assert_agent_with_tool(s, app: _App) -> None:
    assert len(app.server.requests) == 2 and app.tool_runs == 1  # the model asked for the tool once
    assert s.value("model_inference_calls_total", agent_name="weather_agent", model_id=MODEL) == 2
    assert s.total("model_inference_calls_total") == 2  # each call once
    assert _tokens(s, agent_name="weather_agent", model_id=MODEL) == app.true_tokens()
    assert s.value("agent_tool_calls_total", agent_name="weather_agent", tool_name="get_weather",
                   status="success") == 1  # fmt: skip
    assert s.value("agent_requests_total", agent_name="weather_agent", status="success") == 1
    assert {x.labels["agent_name"] for x in s.samples if x.name == "agent_requests_total"} == {"weather_agent"}


def test_an_agent_run_with_a_tool_counts_each_call_once_with_its_tokens_and_agent(meter, providers, scrape):
    app = _App(providers)
    app.run(app.agent())
    _assert_agent_with_tool(scrape(), app)


def test_with_the_google_genai_instrumentor_on_too_the_calls_still_count_once(
    meter, providers, genai_instrumentor, scrape
):
    app = _App(providers)
    app.run(app.agent())
    _assert_agent_with_tool(scrape(), app)


def test_a_rate_limited_call_fails_the_run_without_tokens(meter, providers, scrape):
    app = _App(providers)
    with pytest.raises(errors.ClientError):
        app.run(app.agent(model=MODEL + "-429"))
    s = scrape()
    assert len(providers.requests) == 1
    assert s.value("model_inference_calls_total", agent_name="weather_agent", model_id=MODEL + "-429") == 1
    assert s.total("agent_token_usage_total") == 0
    assert s.value("agent_requests_total", agent_name="weather_agent", status="error") == 1


def test_a_sequential_workflow_is_no_agent_and_each_agent_owns_its_calls(meter, providers, scrape):
    app = _App(providers)
    workflow = SequentialAgent(name="weather_workflow",
                               sub_agents=[app.agent(), app.agent(name="summary_agent", tool=False)])  # fmt: skip
    app.run(workflow)
    s = scrape()
    assert len(providers.requests) == 3  # weather_agent: call, tool, call; summary_agent: one call
    assert s.value("model_inference_calls_total", agent_name="weather_agent", model_id=MODEL) == 2
    assert s.value("model_inference_calls_total", agent_name="summary_agent", model_id=MODEL) == 1
    assert sum(_tokens(s, model_id=MODEL).values()) == sum(app.true_tokens().values())
    runs = {x.labels["agent_name"]: x.value for x in s.samples if x.name == "agent_requests_total"}
    assert runs == {"weather_agent": 1, "summary_agent": 1}  # the SequentialAgent is a workflow, not a run
