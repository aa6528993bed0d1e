"""spanmeter: OpenTelemetry spans from AI agents in, Prometheus metrics out.

    import spanmeter
    spanmeter.configure(service_name="support-bot")
    with spanmeter.agent_run("support", conversation_id=cid):
        with spanmeter.model_call("gpt-4o", provider="openai") as call:
            call.record_usage(input_tokens=1200, output_tokens=300)
        with spanmeter.tool_call("search_orders"):
            ...
"""

from importlib import metadata as _metadata

__version__: str
try:
    __version__ = _metadata.version("spanmeter")  # one source: the version in pyproject.toml
except _metadata.PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"

from spanmeter.catalog import METRICS, MetricSpec  # noqa: E402
from spanmeter.config import (  # noqa: E402
    ConfigurationError,
    Spanmeter,
    configure,
    current,
    end_conversation,
    record_conversation,
    record_quality,
    setup,
    shutdown,
)
from spanmeter.emit import AgentRun, ModelCall, ToolCall, agent_run, model_call, tool_call  # noqa: E402
from spanmeter.processor import SpanmeterProcessor  # noqa: E402
from spanmeter.quality import Evaluator, LLMJudge, Sample  # noqa: E402

__all__ = [
    "METRICS",
    "AgentRun",
    "ConfigurationError",
    "Evaluator",
    "LLMJudge",
    "MetricSpec",
    "ModelCall",
    "Sample",
    "Spanmeter",
    "SpanmeterProcessor",
    "ToolCall",
    "__version__",
    "agent_run",
    "configure",
    "current",
    "end_conversation",
    "model_call",
    "record_conversation",
    "record_quality",
    "setup",
    "shutdown",
    "tool_call",
]
