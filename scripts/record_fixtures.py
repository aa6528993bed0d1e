#!/usr/bin/env python3
"""Record span fixtures from the real GenAI instrumentation packages.

Each *recording* runs one set of instrumentations (at exact versions) in a virtualenv of
its own, outside the repo, against ``tests/fake_providers.py`` on 127.0.0.1, with the real
``openai`` / ``anthropic`` / ``pydantic-ai`` clients, and writes the finished spans of each
scenario to ``tests/fixtures/spans/<recording>/<scenario>.json`` (format: the docstring of
``tests/span_fixtures.py``), with what the fake server returned and the package versions.

Usage::

    python scripts/record_fixtures.py                   # every recording
    python scripts/record_fixtures.py openai-v2 openlit # some of them
    python scripts/record_fixtures.py --list            # what there is
    options: --venvs DIR   (default $SPANMETER_FIXTURE_VENVS or /tmp/spanmeter-fixture-venvs)
             --recreate    (rebuild the virtualenvs)

It needs a Python >= 3.11 (pydantic-ai's floor) and PyPI. The virtualenvs are reused while
their pinned requirements are unchanged. The same file is the recorder that runs inside
each virtualenv (``--inside RECORDING``); it imports only that venv's packages and the
fake server, never spanmeter.

What the recorder changes in what it records, and nothing else: trace and span ids are
renumbered in start order (1, 2, ...), times are nanoseconds since the first span of the
scenario started, and machine paths in strings (stack traces) become ``<site-packages>``,
``<python>``, ``<repo>``. The fake server cannot answer with a tool call, so this script
serves the first turn of the tool round trips itself (``_tool_calling_handler``, a subclass
of the fake server's handler; every other request is the fake server's own answer).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "spans"
FAKE_PROVIDERS = REPO / "tests" / "fake_providers.py"
DEFAULT_VENVS = Path(os.environ.get("SPANMETER_FIXTURE_VENVS", "/tmp/spanmeter-fixture-venvs"))
FORMAT = 1

# --- what is installed where (exact versions tested) -----------------------------------
OTEL_SDK = ["opentelemetry-api==1.45.2", "opentelemetry-sdk==1.45.2"]
OPENAI = "openai==3.57.0"
ANTHROPIC = "anthropic==2.14.0"
# 2.4b0 imports ``httpx`` (openai 3.x uses ``httpx2``) without declaring it, and
# ``opentelemetry.util.genai.instruments``, which util-genai 1.2b0 renamed (pip picks the newest,
# 1.3b0, and the import fails). util-genai 0.4b0 is the release that goes with it: from 1.0b0 on
# ``is_experimental_mode()`` is always true, so the default (v1.30 conventions) path is gone.
OPENAI_V2 = ["opentelemetry-instrumentation-openai-v2==2.4b0", "opentelemetry-util-genai==0.4b0", "httpx==0.28.1"]

VENVS: dict[str, list[str]] = {
    "openai-v2": [*OTEL_SDK, *OPENAI_V2, OPENAI],
    # the newest util-genai that 2.4b0 imports: always the latest-experimental path
    "openai-v2-util-genai-1.1": [*OTEL_SDK, OPENAI_V2[0], "opentelemetry-util-genai==1.1b0", OPENAI_V2[2], OPENAI],
    "openinference": [
        *OTEL_SDK,
        "openinference-instrumentation-openai==0.1.66",
        "openinference-instrumentation-anthropic==3.1.0",
        "openinference-instrumentation==0.1.72",
        "openinference-semantic-conventions==0.1.42",
        OPENAI,
        ANTHROPIC,
    ],
    "openllmetry": [
        *OTEL_SDK,
        "opentelemetry-instrumentation-openai==0.62.4",
        "opentelemetry-instrumentation-anthropic==0.62.4",
        "opentelemetry-semantic-conventions-ai==0.5.1",
        OPENAI,
        ANTHROPIC,
    ],
    "anthropic-sdk": [*OTEL_SDK, ANTHROPIC],
    "pydantic-ai": [
        *OTEL_SDK,
        "pydantic-ai-slim[openai]==2.68.0",
        OPENAI,
        *OPENAI_V2,
    ],
    "nested-openai": [
        *OTEL_SDK,
        "openinference-instrumentation-openai==0.1.66",
        "openinference-instrumentation==0.1.72",
        *OPENAI_V2,
        OPENAI,
    ],
    # traceloop-sdk (OpenLLMetry's SDK: the same instrumentations plus @workflow/@agent/@tool)
    # pins nothing itself, but its contrib instrumentations resolve only at 0.66b1 together; it
    # imports ``httpx`` without declaring it (openai 3.x brings ``httpx2`` only).
    "traceloop-sdk": [
        "traceloop-sdk==0.62.4",
        "httpx==0.28.1",
        OPENAI,
        "opentelemetry-api==1.45.1",
        "opentelemetry-sdk==1.45.1",
        "opentelemetry-instrumentation==0.66b1",
        "opentelemetry-semantic-conventions==0.66b1",
        *(
            f"opentelemetry-instrumentation-{name}==0.66b1"
            for name in "logging redis requests sqlalchemy threading urllib3".split()
        ),
    ],
    # openlit 1.45.0 requires openai<3 and anthropic<1, and pins each of its contrib
    # instrumentations to one opentelemetry-instrumentation release: 0.66b1 is the newest
    # that every one of them has.
    "openlit": [
        "openlit==1.45.0",
        "openai==2.54.0",
        "anthropic==0.125.0",
        "opentelemetry-api==1.45.1",
        "opentelemetry-sdk==1.45.1",
        "opentelemetry-exporter-otlp==1.45.1",
        "opentelemetry-instrumentation==0.66b1",
        "opentelemetry-semantic-conventions==0.66b1",
        *(
            f"opentelemetry-instrumentation-{name}==0.66b1"
            for name in (
                "aiohttp-client asgi django falcon fastapi flask httpx pyramid requests starlette "
                "tornado urllib urllib3 wsgi"
            ).split()
        ),
    ],
}

# --- agent frameworks (issue 12, fixtures A): each framework's venv, resolved by pip once, pinned
LANGCHAIN = [
    "langchain==1.5.2",
    "langchain-core==1.8.3",
    "langchain-openai==1.7.4",
    "langchain-anthropic==1.7.10",
    "langgraph==1.2.24",
    "langgraph-prebuilt==1.1.3",
    "langsmith==0.15.1",
    OPENAI,
    ANTHROPIC,
]
VENVS |= {
    "openai-agents": [
        *OTEL_SDK,
        "openai-agents==0.24.0",
        "openinference-instrumentation-openai-agents==2.6.0",
        "openinference-instrumentation==0.1.72",
        "openinference-semantic-conventions==0.1.42",
        OPENAI,
    ],
    "langchain-openinference": [
        *OTEL_SDK,
        *LANGCHAIN,
        "openinference-instrumentation-langchain==0.1.80",
        "openinference-instrumentation-openai==0.1.66",
        "openinference-instrumentation-anthropic==3.1.0",
        "openinference-instrumentation==0.1.72",
        "openinference-semantic-conventions==0.1.42",
    ],
    "langchain-openllmetry": [
        *OTEL_SDK,
        *LANGCHAIN,
        "opentelemetry-instrumentation-langchain==0.62.4",
        "opentelemetry-instrumentation-openai==0.62.4",
        "opentelemetry-instrumentation-anthropic==0.62.4",
        "opentelemetry-semantic-conventions-ai==0.5.1",
    ],
    "litellm": [
        *OTEL_SDK,
        "litellm==1.110.2",
        "openinference-instrumentation-litellm==0.1.51",
        "openinference-instrumentation==0.1.72",
        "openinference-semantic-conventions==0.1.42",
        OPENAI,
    ],
}

OPENAI_SCENARIOS = ["openai_chat", "openai_chat_stream", "openai_tool_roundtrip", "openai_chat_error", "openai_responses"]
ANTHROPIC_SCENARIOS = [
    "anthropic_messages",
    "anthropic_messages_stream",
    "anthropic_messages_stream_helper",
    "anthropic_tool_roundtrip",
    "anthropic_messages_error",
]
# The same calls with the anthropic SDK's own spans left on (its default), beside the
# instrumentation's: two spans for one call.
WITH_SDK_SPANS = ["anthropic_messages_with_sdk_spans", "anthropic_messages_stream_with_sdk_spans"]
PYDANTIC_AI_SCENARIOS = ["pydantic_ai_agent_tool", "pydantic_ai_agent_tool_stream"]

#: recording -> venv, environment, instrumentations (in the order they are applied), scenarios
RECORDINGS: dict[str, dict] = {
    "openai-v2": {
        "venv": "openai-v2",
        "instrument": ["openai_v2"],
        "scenarios": OPENAI_SCENARIOS,
    },
    "openai-v2-latest-experimental": {
        "venv": "openai-v2",
        "env": {"OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental"},
        "instrument": ["openai_v2"],
        "scenarios": OPENAI_SCENARIOS,
    },
    "openai-v2-util-genai-1.1b0": {
        "venv": "openai-v2-util-genai-1.1",
        "instrument": ["openai_v2"],
        "scenarios": OPENAI_SCENARIOS,
    },
    "openinference-openai": {
        "venv": "openinference",
        "instrument": ["openinference_openai"],
        "scenarios": OPENAI_SCENARIOS + ["openai_chat_in_session"],
    },
    "openinference-anthropic": {
        "venv": "openinference",
        "instrument": ["openinference_anthropic"],
        "scenarios": ANTHROPIC_SCENARIOS + WITH_SDK_SPANS,
    },
    "openllmetry-openai": {
        "venv": "openllmetry",
        "instrument": ["openllmetry_openai"],
        "scenarios": OPENAI_SCENARIOS,
    },
    "openllmetry-anthropic": {
        "venv": "openllmetry",
        "instrument": ["openllmetry_anthropic"],
        "scenarios": ANTHROPIC_SCENARIOS + WITH_SDK_SPANS,
    },
    "openllmetry-traceloop-sdk": {
        "venv": "traceloop-sdk",
        "instrument": ["traceloop_sdk"],
        "scenarios": ["traceloop_agent_tool"],
    },
    "openlit": {
        "venv": "openlit",
        "instrument": ["openlit"],
        "scenarios": OPENAI_SCENARIOS + ANTHROPIC_SCENARIOS,
    },
    "anthropic-sdk": {
        "venv": "anthropic-sdk",
        "instrument": [],
        "sdk_spans": True,
        "scenarios": ANTHROPIC_SCENARIOS + ["anthropic_messages_in_conversation"],
    },
    "pydantic-ai": {
        "venv": "pydantic-ai",
        "instrument": ["pydantic_ai"],
        "scenarios": PYDANTIC_AI_SCENARIOS,
    },
    "nested-pydantic-ai-openai-v2": {
        "venv": "pydantic-ai",
        "instrument": ["pydantic_ai", "openai_v2"],
        "scenarios": PYDANTIC_AI_SCENARIOS,
    },
    "nested-openinference-openai-v2": {
        "venv": "nested-openai",
        "instrument": ["openai_v2", "openinference_openai"],
        "scenarios": ["openai_chat", "openai_chat_stream", "openai_tool_roundtrip"],
    },
}

# === fixtures B: Logfire, pydantic-ai's other models, google-genai, google-adk, strands ======
# (kept in blocks of their own: another helper adds LangChain / openai-agents / litellm beside)
LOGFIRE = ["logfire==5.4.0", "logfire-sdk==5.4.0", "opentelemetry-instrumentation==0.66b2",
           "opentelemetry-semantic-conventions==0.66b2", "opentelemetry-exporter-otlp-proto-http==1.45.2"]  # fmt: skip
VENVS.update({
    "logfire": [*OTEL_SDK, *LOGFIRE, OPENAI, ANTHROPIC],
})
RECORDINGS.update({
    # logfire.configure(send_to_logfire=False, additional_span_processors=[the recorder's]):
    # Logfire's own SDK TracerProvider, as a Logfire user runs it.
    "logfire-openai": {
        "venv": "logfire",
        "instrument": ["logfire_openai"],
        "scenarios": OPENAI_SCENARIOS + ["openai_responses_stream_b"],
    },
    "logfire-anthropic": {
        "venv": "logfire",
        "instrument": ["logfire_anthropic"],
        "scenarios": ANTHROPIC_SCENARIOS + ["logfire_anthropic_messages_with_sdk_spans",
                                            "logfire_anthropic_stream_helper_with_sdk_spans"],
    },
})
GOOGLE_GENAI = "google-genai==2.34.0"  # google-adk 2.13 wants <3; pydantic-ai 2.68 too
VENVS.update({
    "pydantic-ai-models": [*OTEL_SDK, "pydantic-ai-slim[openai,anthropic,google]==2.68.0", OPENAI, ANTHROPIC,
                           GOOGLE_GENAI],
})
# pydantic-ai agents on each model: a plain run, a run with a tool, the same streamed, a failed run
PAI_SCENARIOS = ["pai_{}_agent", "pai_{}_agent_tool", "pai_{}_agent_tool_stream", "pai_{}_agent_error"]
for _model in ("anthropic", "google", "responses"):
    RECORDINGS[f"pydantic-ai-{_model}"] = {
        "venv": "pydantic-ai-models",
        "instrument": ["pydantic_ai"],
        "scenarios": [name.format(_model) for name in PAI_SCENARIOS],
    }
RECORDINGS["pydantic-ai-anthropic"]["scenarios"] += ["pai_anthropic_agent_tool_with_sdk_spans",
                                                     "pai_anthropic_agent_tool_stream_with_sdk_spans"]
GEMINI_MODEL = "gemini-2.5-flash"
GEMINI_SCENARIOS = ["gemini_generate", "gemini_generate_stream", "gemini_tool_roundtrip", "gemini_generate_error"]
# (the instrumentation refuses google-genai 3.x)
VENVS["google-genai"] = [*OTEL_SDK, "opentelemetry-instrumentation-google-genai==1.3b0",
                         "opentelemetry-util-genai==1.3b0", "opentelemetry-instrumentation==0.66b2",
                         "opentelemetry-semantic-conventions==0.66b2", GOOGLE_GENAI]  # fmt: skip
RECORDINGS["google-genai"] = {"venv": "google-genai", "instrument": ["google_genai"], "scenarios": GEMINI_SCENARIOS}
# the SDK's automatic function calling runs the tool itself (traced), so a recording of its own
RECORDINGS["google-genai-automatic-function-calling"] = {"venv": "google-genai", "instrument": ["google_genai"],
                                                         "scenarios": ["gemini_tool_automatic"]}  # fmt: skip
# google-adk 2.13.0 pins opentelemetry-api/sdk >=1.39,<=1.44 and google-genai >=2.30,<3.
VENVS["google-adk"] = ["google-adk==2.13.0", "opentelemetry-api==1.44.0", "opentelemetry-sdk==1.44.0",
                       "opentelemetry-instrumentation==0.65b0", "opentelemetry-semantic-conventions==0.65b0",
                       "opentelemetry-instrumentation-google-genai==1.3b0", "opentelemetry-util-genai==1.3b0",
                       GOOGLE_GENAI]  # fmt: skip
_ADK = ["adk_agent", "adk_agent_tool", "adk_agent_tool_stream", "adk_agent_error", "adk_workflow"]
RECORDINGS["google-adk"] = {"venv": "google-adk", "instrument": ["google_adk"], "scenarios": _ADK}
RECORDINGS["google-adk-google-genai"] = {"venv": "google-adk", "instrument": ["google_adk", "google_genai"],
                                         "scenarios": _ADK}  # fmt: skip
# strands-agents' openai extra wants openai<3
VENVS["strands"] = ["strands-agents[openai]==1.62.0", "openai==2.54.0", "opentelemetry-api==1.45.1",
                    "opentelemetry-sdk==1.45.1", "opentelemetry-instrumentation-threading==0.66b1"]  # fmt: skip
_STRANDS = ["strands_agent", "strands_agent_tool", "strands_agent_tool_stream", "strands_agent_error"]
RECORDINGS["strands"] = {"venv": "strands", "instrument": ["strands"], "scenarios": _STRANDS}
RECORDINGS["strands-latest-experimental"] = {"venv": "strands", "instrument": ["strands"], "scenarios": _STRANDS,
                                             "env": {"OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental"}}
# The common Logfire set-up: pydantic-ai agents and the SDK under them, both instrumented by Logfire
VENVS["logfire-pydantic-ai"] = [*OTEL_SDK, *LOGFIRE, "pydantic-ai-slim[openai,anthropic]==2.68.0", OPENAI, ANTHROPIC]
RECORDINGS["logfire-pydantic-ai-openai"] = {
    "venv": "logfire-pydantic-ai",
    "instrument": ["logfire_pydantic_ai", "logfire_openai"],
    "scenarios": ["pai_chat_agent_tool", "pai_chat_agent_tool_stream", "pai_chat_agent_error",
                  "pai_responses_agent_tool", "pai_responses_agent_tool_stream"],
}  # fmt: skip
RECORDINGS["logfire-pydantic-ai-anthropic"] = {
    "venv": "logfire-pydantic-ai",
    "instrument": ["logfire_pydantic_ai", "logfire_anthropic"],
    "scenarios": ["pai_anthropic_agent_tool", "pai_anthropic_agent_tool_stream", "pai_anthropic_agent_error"],
}
# === end of fixtures B (configuration) =====================================================

# Dummy values of the scenarios; the recorder refuses to write a fixture that holds the key.
API_KEY = "sk-spanmeter-dummy-key"
OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-sonnet-5"  # one the SDK does not warn about as deprecated
GREETING = "Say hello."
QUESTION = "What is the weather in Paris?"
TOOL_NAME = "get_weather"
TOOL_ARGS = {"city": "Paris"}
AGENT_NAME = "weather_agent"
CONVERSATION_ID = "conversation-1"
# Prices given to OpenLIT (its default is to download a price list at start-up): USD per
# 1000 tokens. Test values, recorded in the fixture.
OPENLIT_PRICES = {
    "chat": {
        OPENAI_MODEL: {"promptPrice": 0.00015, "completionPrice": 0.0006},
        ANTHROPIC_MODEL: {"promptPrice": 0.003, "completionPrice": 0.015},
    },
    "embeddings": {},
    "images": {},
    "audio": {},
}
# Which installed distributions a fixture lists.
PACKAGE_PATTERN = re.compile(
    r"^(opentelemetry-.*|openinference-.*|openai|anthropic|openlit|pydantic-ai.*|pydantic|genai-prices|httpx2?)$"
)

# the agent frameworks of issue 12 (fixtures A)
FRAMEWORK_PACKAGES = re.compile(r"^(openai-agents|langchain.*|langgraph.*|langsmith|litellm)$")

# === outside the venvs: build them, run the recorder in each ===========================
def _requirements_hash(requirements: list[str]) -> str:
    return hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:16]


def ensure_venv(name: str, root: Path, recreate: bool) -> Path:
    """The venv ``name`` under ``root`` with its pinned packages, (re)built when needed."""
    requirements = VENVS[name]
    venv = root / name
    python = venv / "bin" / "python"
    marker = venv / "spanmeter-requirements.sha"
    digest = _requirements_hash(requirements)
    if not recreate and python.exists() and marker.exists() and marker.read_text() == digest:
        return python
    if venv.exists():
        shutil.rmtree(venv)
    print(f"[{name}] creating {venv}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    log = venv / "pip-install.log"
    with log.open("w") as out:
        result = subprocess.run(
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", *requirements],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if result.returncode:
        tail = [line for line in log.read_text().splitlines() if not line.startswith("WARNING: Location")][-15:]
        raise SystemExit(f"[{name}] pip install failed ({log}):\n" + "\n".join(tail))
    marker.write_text(digest)
    return python


def record_outside(names: list[str], venvs: Path, recreate: bool) -> int:
    failed = []
    built: set[str] = set()
    for name in names:
        recording = RECORDINGS[name]
        venv = recording["venv"]
        python = ensure_venv(venv, venvs, recreate and venv not in built)
        built.add(venv)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            # nothing of the caller's OpenTelemetry or provider settings leaks in
            **recording.get("env", {}),
        }
        print(f"[{name}] recording in {venv}", flush=True)
        started = time.monotonic()
        result = subprocess.run([str(python), str(Path(__file__).resolve()), "--inside", name], env=env, cwd=REPO)
        print(f"[{name}] exit {result.returncode} in {time.monotonic() - started:.1f}s", flush=True)
        if result.returncode:
            failed.append(name)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recordings", nargs="*", help="recordings to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the recordings and exit")
    parser.add_argument("--venvs", type=Path, default=DEFAULT_VENVS, help="where the virtualenvs live")
    parser.add_argument("--recreate", action="store_true", help="rebuild the virtualenvs")
    parser.add_argument("--inside", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inside:
        return record_inside(args.inside)
    if args.list:
        for name, recording in RECORDINGS.items():
            print(f"{name:32} venv={recording['venv']:14} {', '.join(recording['scenarios'])}")
        return 0
    unknown = [n for n in args.recordings if n not in RECORDINGS]
    if unknown:
        parser.error(f"unknown recordings {unknown}; --list shows them")
    venvs = args.venvs.resolve()
    if venvs == REPO or REPO in venvs.parents:
        parser.error("--venvs must be outside the repository")
    return record_outside(args.recordings or list(RECORDINGS), venvs, args.recreate)


# === inside a venv: the recorder ========================================================
def _load_fake_providers():
    import importlib.util

    spec = importlib.util.spec_from_file_location("fake_providers", FAKE_PROVIDERS)
    module = importlib.util.module_from_spec(spec)
    sys.modules["fake_providers"] = module  # dataclasses resolve the module by name
    spec.loader.exec_module(module)
    return module


def _tool_calling_handler(fp):
    """The fake server's handler, answering the first turn of a tool round trip with a tool call.

    A request that offers tools and carries no tool result yet gets a call of the first
    tool with ``TOOL_ARGS``, and the server's usage; every other request is the fake
    server's own answer.
    """

    class ToolCallingHandler(fp._Handler):
        def handle(self):
            try:
                super().handle()
            except ConnectionResetError:  # a client closing a kept-alive connection: not news
                pass

        def _renamed(self, obj):
            names = getattr(self.server, "response_model_names", None)
            if names and isinstance(obj, dict) and obj.get("model") in names:
                return dict(obj, model=names[obj["model"]])
            return obj

        def _json(self, status, obj, **kwargs):
            return super()._json(status, self._renamed(obj), **kwargs)

        def _sse(self, events, **kwargs):
            return super()._sse([(name, self._renamed(obj)) for name, obj in events], **kwargs)

        def _wait_for_peer(self):
            # ``*_concurrent`` scenarios: no answer before the other request has arrived too,
            # so the two identical calls overlap for sure
            barrier = getattr(self.server, "barrier", None)
            if barrier is not None:
                barrier.wait(timeout=10)

        def _openai_chat(self, request):
            self._wait_for_peer()
            tools = request.get("tools") or []
            answered = any(m.get("role") == "tool" for m in request.get("messages") or [])
            if not tools or answered or self._scenario(request.get("model", "")):
                return super()._openai_chat(request)
            model = request.get("model", "")
            name = tools[0]["function"]["name"]
            arguments = json.dumps(TOOL_ARGS)
            base = {"id": f"chatcmpl-{self.number}", "created": 1_700_000_000, "model": model + "-2025-01-01",
                    "system_fingerprint": "fp"}  # fmt: skip
            if not request.get("stream"):
                call = {"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}
                body = dict(base, object="chat.completion", usage=self._openai_usage(), choices=[{
                    "index": 0, "logprobs": None, "finish_reason": "tool_calls",
                    "message": {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}}])  # fmt: skip
                return self._json(200, body)
            chunk = dict(base, object="chat.completion.chunk")
            include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
            extra = {"usage": None} if include_usage else {}

            def delta(d, finish=None):
                return ("", dict(chunk, choices=[{"index": 0, "delta": d, "logprobs": None,
                                                  "finish_reason": finish}], **extra))  # fmt: skip

            events = [
                delta({"role": "assistant", "content": None, "tool_calls": [{"index": 0, "id": "call_1",
                       "type": "function", "function": {"name": name, "arguments": ""}}]}),
                delta({"tool_calls": [{"index": 0, "function": {"arguments": arguments[:9]}}]}),
                delta({"tool_calls": [{"index": 0, "function": {"arguments": arguments[9:]}}]}),
                delta({}, "tool_calls"),
            ]  # fmt: skip
            if include_usage:
                events.append(("", dict(chunk, choices=[], usage=self._openai_usage())))
            events.append(("", b"[DONE]"))
            self._sse(events)

        def _openai_responses(self, request, output=None):
            self._wait_for_peer()
            # Agent frameworks: each offered function the conversation has not called yet gets
            # one call (a handoff ``transfer_to_*`` first), then the fake server's text answer.
            if output is None and not self._scenario(request.get("model", "")):
                name = _next_tool(request)
                if name is not None:
                    arguments = "{}" if name.startswith("transfer_to_") else json.dumps(TOOL_ARGS)
                    call_id = f"call_{self.number}"
                    output = [fp._Handler.responses_function_call(name, arguments, call_id)]
            return super()._openai_responses(request, output)

        def _anthropic(self, request):
            tools = request.get("tools") or []
            answered = any(
                isinstance(m.get("content"), list) and any(b.get("type") == "tool_result" for b in m["content"])
                for m in request.get("messages") or []
            )
            if not tools or answered or self._scenario(request.get("model", "")):
                return super()._anthropic(request)
            u = self.server.usage
            usage = {"input_tokens": u.input, "output_tokens": u.output, "cache_read_input_tokens": u.cache_read,
                     "cache_creation_input_tokens": u.cache_write}  # fmt: skip
            body = {"id": f"msg_{self.number}", "type": "message", "role": "assistant",
                    "model": request["model"] + "-20250101", "stop_sequence": None, "stop_reason": "tool_use",
                    "content": [{"type": "tool_use", "id": f"toolu_{self.number}", "name": tools[0]["name"],
                                 "input": TOOL_ARGS}], "usage": usage}  # fmt: skip
            if not request.get("stream"):
                return self._json(200, body)
            # streamed: the tool_use block with its input as JSON deltas (added for fixtures A)
            arguments = json.dumps(TOOL_ARGS)
            delta_usage = usage if self.server.anthropic_cumulative_delta else {"output_tokens": u.output}
            self._sse([
                ("message_start", {"type": "message_start", "message": dict(
                    body, content=[], stop_reason=None, usage=dict(usage, output_tokens=1))}),
                ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": dict(
                    body["content"][0], input={})}),
                ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
                    "type": "input_json_delta", "partial_json": arguments[:9]}}),
                ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
                    "type": "input_json_delta", "partial_json": arguments[9:]}}),
                ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use",
                                                                      "stop_sequence": None}, "usage": delta_usage}),
                ("message_stop", {"type": "message_stop"}),
            ], event_names=True)  # fmt: skip

    return ToolCallingHandler


def _next_tool(request: dict) -> str | None:
    """The first function a Responses API request offers that its input has not called yet."""
    offered = [t.get("name") for t in request.get("tools") or [] if t.get("type") == "function"]
    items = request.get("input") if isinstance(request.get("input"), list) else []
    called = {i.get("name") for i in items if isinstance(i, dict) and i.get("type") == "function_call"}
    left = [name for name in offered if name and name not in called]
    handoffs = [name for name in left if name.startswith("transfer_to_")]
    return (handoffs or left or [None])[0]


AGENT_MARK = re.compile(r"\[agent:(\w+)\]")


def _marked(agent: str, instructions: str) -> str:
    """An agent's instructions, marked so the request log tells which agent made a call."""
    return f"[agent:{agent}] {instructions}"


def _agent_of(request: dict) -> str | None:
    """The agent whose instructions (system prompt) a request carries, from its mark."""
    texts = [request.get("instructions"), request.get("system")]
    for item in (request.get("messages") or []) + (request.get("input") if isinstance(request.get("input"), list) else []):
        if isinstance(item, dict) and item.get("role") in ("system", "developer"):
            texts.append(item.get("content"))
    for text in texts:
        match = AGENT_MARK.search(json.dumps(text)) if text else None
        if match:
            return match.group(1)
    return None


# genai-prices (pydantic-ai's prices) knows OpenAI's dated snapshot names, not the fake server's
# ``<model>-2025-01-01``: the pydantic-ai scenarios get a real snapshot name, so ``operation.cost`` shows.
PRICED_RESPONSE_MODELS = {OPENAI_MODEL + "-2025-01-01": OPENAI_MODEL + "-2024-07-18"}


class _App:
    """What a scenario uses: clients pointed at the fake server, and the tool it may run."""

    def __init__(self, url: str, recording: dict, scenario: str):
        self.url = url
        self.recording = recording
        self.scenario = scenario
        self.tool_runs: dict[str, int] = {}
        self.notes: list[str] = []
        # agent frameworks: the runs the scenario made (agent name -> count), its workflows
        self.agents: dict[str, int] | None = None
        self.workflows: dict[str, int] = {}

    def run_tool(self, name: str, arguments: dict) -> str:
        self.tool_runs[name] = self.tool_runs.get(name, 0) + 1
        return f"Sunny, 21 C in {arguments.get('city', '?')}."

    def openai(self, asynchronous: bool = False):
        import openai

        cls = openai.AsyncOpenAI if asynchronous else openai.OpenAI
        return cls(base_url=self.url + "/v1", api_key=API_KEY, max_retries=0)

    def anthropic(self, conversation_id: str | None = None):
        import anthropic

        kwargs = {}
        if _major("anthropic") >= 2:
            sdk_spans = self.recording.get("sdk_spans", False) or self.scenario.endswith("_with_sdk_spans")
            if not sdk_spans:
                # The SDK's own spans are on by default; off here to isolate the instrumentation.
                kwargs["open_telemetry"] = False
                self.notes.append("anthropic SDK's own spans switched off (Anthropic(open_telemetry=False))")
            else:
                self.notes.append("anthropic SDK's own spans left on (its default)")
                if conversation_id is not None:
                    kwargs["open_telemetry"] = {"conversation_id": conversation_id}
                    self.notes.append(f"Anthropic(open_telemetry={kwargs['open_telemetry']})")
        return anthropic.Anthropic(base_url=self.url, api_key=API_KEY, max_retries=0, **kwargs)


def _major(distribution: str) -> int:
    from importlib.metadata import version

    return int(version(distribution).split(".")[0])


# --- scenarios ---------------------------------------------------------------------------
OPENAI_TOOLS = [{"type": "function", "function": {
    "name": TOOL_NAME, "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]  # fmt: skip
ANTHROPIC_TOOLS = [{"name": TOOL_NAME, "description": "Current weather in a city.",
                    "input_schema": OPENAI_TOOLS[0]["function"]["parameters"]}]  # fmt: skip


def _drain(stream) -> None:
    for _ in stream:
        pass
    close = getattr(stream, "close", None)
    if close is not None:
        close()


def openai_chat(app):
    app.openai().chat.completions.create(model=OPENAI_MODEL, messages=[{"role": "user", "content": GREETING}])


def openai_chat_stream(app):
    stream = app.openai().chat.completions.create(
        model=OPENAI_MODEL,
        messages=[{"role": "user", "content": GREETING}],
        stream=True,
        stream_options={"include_usage": True},
    )
    _drain(stream)


def openai_tool_roundtrip(app):
    client = app.openai()
    messages = [{"role": "user", "content": QUESTION}]
    first = client.chat.completions.create(model=OPENAI_MODEL, messages=messages, tools=OPENAI_TOOLS)
    call = first.choices[0].message.tool_calls[0]
    result = app.run_tool(call.function.name, json.loads(call.function.arguments))
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": call.function.name,
                                                             "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": result},
    ]  # fmt: skip
    client.chat.completions.create(model=OPENAI_MODEL, messages=messages, tools=OPENAI_TOOLS)


def openai_chat_error(app):
    import openai

    try:
        app.openai().chat.completions.create(
            model=OPENAI_MODEL + "-429", messages=[{"role": "user", "content": GREETING}]
        )
    except openai.RateLimitError:
        return
    raise AssertionError("the fake server should have answered 429")


def openai_responses(app):
    app.openai().responses.create(model=OPENAI_MODEL, input=GREETING)


def anthropic_messages(app):
    app.anthropic().messages.create(
        model=ANTHROPIC_MODEL, max_tokens=256, messages=[{"role": "user", "content": GREETING}]
    )


def anthropic_messages_stream(app):
    stream = app.anthropic().messages.create(
        model=ANTHROPIC_MODEL, max_tokens=256, messages=[{"role": "user", "content": GREETING}], stream=True
    )
    _drain(stream)


def anthropic_messages_stream_helper(app):
    # the SDK's streaming helper (a context manager), which instrumentations wrap on their own
    with app.anthropic().messages.stream(
        model=ANTHROPIC_MODEL, max_tokens=256, messages=[{"role": "user", "content": GREETING}]
    ) as stream:
        for _ in stream.text_stream:
            pass
        stream.get_final_message()


def anthropic_tool_roundtrip(app):
    client = app.anthropic()
    messages = [{"role": "user", "content": QUESTION}]
    first = client.messages.create(model=ANTHROPIC_MODEL, max_tokens=256, messages=messages, tools=ANTHROPIC_TOOLS)
    block = next(b for b in first.content if b.type == "tool_use")
    result = app.run_tool(block.name, dict(block.input))
    messages += [
        {"role": "assistant", "content": [{"type": "tool_use", "id": block.id, "name": block.name,
                                           "input": dict(block.input)}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": result}]},
    ]  # fmt: skip
    client.messages.create(model=ANTHROPIC_MODEL, max_tokens=256, messages=messages, tools=ANTHROPIC_TOOLS)


def anthropic_messages_error(app):
    import anthropic

    try:
        app.anthropic().messages.create(
            model=ANTHROPIC_MODEL + "-429", max_tokens=256, messages=[{"role": "user", "content": GREETING}]
        )
    except anthropic.RateLimitError:
        return
    raise AssertionError("the fake server should have answered 429")


def anthropic_messages_in_conversation(app):
    app.anthropic(conversation_id=CONVERSATION_ID).messages.create(
        model=ANTHROPIC_MODEL, max_tokens=256, messages=[{"role": "user", "content": GREETING}]
    )


def openai_chat_in_session(app):
    from openinference.instrumentation import using_session

    app.notes.append(f"call made inside openinference.instrumentation.using_session({CONVERSATION_ID!r})")
    with using_session(CONVERSATION_ID):
        openai_chat(app)


anthropic_messages_with_sdk_spans = anthropic_messages
anthropic_messages_stream_with_sdk_spans = anthropic_messages_stream


def traceloop_agent_tool(app):
    from traceloop.sdk.decorators import agent, tool, workflow

    @tool(name=TOOL_NAME)
    def get_weather(city: str) -> str:
        return app.run_tool(TOOL_NAME, {"city": city})

    @agent(name=AGENT_NAME)
    def weather_agent() -> None:
        client = app.openai()
        messages = [{"role": "user", "content": QUESTION}]
        first = client.chat.completions.create(model=OPENAI_MODEL, messages=messages, tools=OPENAI_TOOLS)
        call = first.choices[0].message.tool_calls[0]
        result = get_weather(**json.loads(call.function.arguments))
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": call.id, "type": "function", "function": {"name": call.function.name,
                                                                 "arguments": call.function.arguments}}]},
            {"role": "tool", "tool_call_id": call.id, "content": result},
        ]  # fmt: skip
        client.chat.completions.create(model=OPENAI_MODEL, messages=messages, tools=OPENAI_TOOLS)

    @workflow(name="weather_workflow")
    def run() -> None:
        weather_agent()

    run()


def _weather_agent(app):
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIChatModel(OPENAI_MODEL, provider=OpenAIProvider(openai_client=app.openai(asynchronous=True)))
    agent = Agent(model, name=AGENT_NAME, instructions="Answer with the weather tool.")

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        return app.run_tool(TOOL_NAME, {"city": city})

    return agent


def pydantic_ai_agent_tool(app):
    result = _weather_agent(app).run_sync(QUESTION)
    assert result.output, result


def pydantic_ai_agent_tool_stream(app):
    import asyncio

    agent = _weather_agent(app)

    async def run():
        async with agent.run_stream(QUESTION) as result:
            return await result.get_output()

    assert asyncio.run(run())


# === agent frameworks (issue 12, fixtures A) ================================================
# Every agent's instructions carry its mark (``_marked``), so the fake server's request log
# says which agent made each call: ``expected.calls_by_agent``.
TRIAGE_AGENT = "triage_agent"


# --- openai-agents (OpenInference) ------------------------------------------------------------
def _agents_client(app):
    """openai-agents' default (Responses) model, on a client pointed at the fake server."""
    import agents

    agents.set_default_openai_client(app.openai(asynchronous=True), use_for_tracing=False)
    agents.set_default_openai_api("responses")


def _agents_weather_agent(app, model: str = OPENAI_MODEL, tools: bool = True):
    from agents import Agent, function_tool

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        return app.run_tool(TOOL_NAME, {"city": city})

    instructions = _marked(AGENT_NAME, "Answer with the weather tool." if tools else "Answer briefly.")
    return Agent(name=AGENT_NAME, instructions=instructions, model=model, tools=[get_weather] if tools else [])


def _agents_run(app, agent, prompt: str, streamed: bool = False):
    import asyncio

    from agents import Runner

    _agents_client(app)
    app.workflows["Agent workflow"] = app.workflows.get("Agent workflow", 0) + 1  # the SDK's default name
    if not streamed:
        return Runner.run_sync(agent, prompt)

    async def run():
        result = Runner.run_streamed(agent, prompt)
        async for _ in result.stream_events():
            pass
        return result

    return asyncio.run(run())


def agents_run(app):
    app.agents = {AGENT_NAME: 1}
    result = _agents_run(app, _agents_weather_agent(app, tools=False), GREETING)
    assert result.final_output, result


def agents_run_stream(app):
    app.agents = {AGENT_NAME: 1}
    result = _agents_run(app, _agents_weather_agent(app, tools=False), GREETING, streamed=True)
    assert result.final_output, result


def agents_tool_roundtrip(app):
    app.agents = {AGENT_NAME: 1}
    result = _agents_run(app, _agents_weather_agent(app), QUESTION)
    assert app.tool_runs == {TOOL_NAME: 1}, (app.tool_runs, result)


def agents_handoff(app):
    """A triage agent hands off to the weather agent, which runs the tool: two agents, one workflow."""
    from agents import Agent

    weather = _agents_weather_agent(app)
    triage = Agent(name=TRIAGE_AGENT, instructions=_marked(TRIAGE_AGENT, "Hand weather questions off."),
                   model=OPENAI_MODEL, handoffs=[weather])  # fmt: skip
    app.agents = {TRIAGE_AGENT: 1, AGENT_NAME: 1}
    result = _agents_run(app, triage, QUESTION)
    assert result.last_agent.name == AGENT_NAME and app.tool_runs == {TOOL_NAME: 1}, (result, app.tool_runs)


def agents_run_concurrent(app):
    """The same agent run twice at once (two workflows): two runs, two calls, never one."""
    import asyncio

    from agents import Runner

    agent = _agents_weather_agent(app, tools=False)
    _agents_client(app)
    app.agents, app.workflows = {AGENT_NAME: 2}, {"Agent workflow": 2}

    async def run():
        return await asyncio.gather(Runner.run(agent, GREETING), Runner.run(agent, GREETING))

    assert all(r.final_output for r in asyncio.run(run()))


def agents_handoff_stream(app):
    """The handoff, streamed."""
    from agents import Agent

    weather = _agents_weather_agent(app)
    triage = Agent(name=TRIAGE_AGENT, instructions=_marked(TRIAGE_AGENT, "Hand weather questions off."),
                   model=OPENAI_MODEL, handoffs=[weather])  # fmt: skip
    app.agents = {TRIAGE_AGENT: 1, AGENT_NAME: 1}
    result = _agents_run(app, triage, QUESTION, streamed=True)
    assert result.last_agent.name == AGENT_NAME and app.tool_runs == {TOOL_NAME: 1}, (result, app.tool_runs)


def agents_error(app):
    import openai

    app.agents = {AGENT_NAME: 1}
    try:
        _agents_run(app, _agents_weather_agent(app, model=OPENAI_MODEL + "-429", tools=False), GREETING)
    except openai.RateLimitError:
        return
    raise AssertionError("the fake server should have answered 429")


def _instrument_openai_agents(tel) -> dict:
    import agents
    from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor
    from openinference.instrumentation.openai_agents._processor import OpenInferenceTracingProcessor

    # exclusive (its default): its processor replaces the SDK's, which exports to OpenAI
    OpenAIAgentsInstrumentor().instrument(tracer_provider=tel.tracer_provider)
    processors = agents.tracing.get_trace_provider()._multi_processor._processors
    if not all(isinstance(p, OpenInferenceTracingProcessor) for p in processors):
        raise RuntimeError(f"an openai-agents trace processor would export elsewhere: {processors}")
    return {"openai_agents_trace_processors": [type(p).__name__ for p in processors]}


# --- LangChain + LangGraph (OpenInference, OpenLLMetry) --------------------------------------------
def _lc_model(app, provider: str = "openai", model: str | None = None, **kwargs):
    """A LangChain chat model on the fake server: ``openai`` (chat completions), ``responses``
    (``ChatOpenAI(use_responses_api=True)``) or ``anthropic``."""
    if provider == "anthropic":
        from langchain_anthropic import ChatAnthropic

        return ChatAnthropic(model=model or ANTHROPIC_MODEL, base_url=app.url, api_key=API_KEY, max_retries=0,
                             max_tokens=256, **kwargs)  # fmt: skip
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model=model or OPENAI_MODEL, base_url=app.url + "/v1", api_key=API_KEY, max_retries=0,
                      stream_usage=True, use_responses_api=provider == "responses", **kwargs)  # fmt: skip


def _lc_agent(app, llm, tools: bool = True):
    """LangChain 1.x's agent (``create_agent``, a LangGraph graph) named ``AGENT_NAME``."""
    from langchain.agents import create_agent
    from langchain.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        return app.run_tool(TOOL_NAME, {"city": city})

    app.agents = {AGENT_NAME: 1}
    prompt = _marked(AGENT_NAME, "Answer with the weather tool." if tools else "Answer briefly.")
    return create_agent(llm, tools=[get_weather] if tools else [], system_prompt=prompt, name=AGENT_NAME)


def _lc_chat(provider):
    def scenario(app):
        assert _lc_model(app, provider).invoke(GREETING).content

    return scenario


def _lc_chat_stream(provider):
    def scenario(app):
        chunks = list(_lc_model(app, provider).stream(GREETING))
        assert chunks

    return scenario


def _lc_agent_tool(provider):
    def scenario(app):
        _lc_agent(app, _lc_model(app, provider)).invoke({"messages": [{"role": "user", "content": QUESTION}]})
        assert app.tool_runs == {TOOL_NAME: 1}, app.tool_runs

    return scenario


def _lc_agent_tool_stream(provider):
    def scenario(app):
        agent = _lc_agent(app, _lc_model(app, provider))
        for _ in agent.stream({"messages": [{"role": "user", "content": QUESTION}]}, stream_mode="messages"):
            pass
        assert app.tool_runs == {TOOL_NAME: 1}, app.tool_runs

    return scenario


def _lc_chat_concurrent(provider):
    def scenario(app):
        """Two identical requests at once (``batch``): two calls, never one."""
        replies = _lc_model(app, provider).batch([GREETING, GREETING], config={"max_concurrency": 2})
        assert len(replies) == 2 and all(r.content for r in replies)

    return scenario


def _lc_agent_error(provider):
    def scenario(app):
        import anthropic
        import openai

        model = (ANTHROPIC_MODEL if provider == "anthropic" else OPENAI_MODEL) + "-429"
        agent = _lc_agent(app, _lc_model(app, provider, model), tools=False)
        try:
            agent.invoke({"messages": [{"role": "user", "content": GREETING}]})
        except (openai.RateLimitError, anthropic.RateLimitError):
            return
        raise AssertionError("the fake server should have answered 429")

    return scenario


LANGCHAIN_SCENARIOS = []
for _provider, _prefix in (("openai", "lc_openai"), ("responses", "lc_responses"), ("anthropic", "lc_anthropic")):
    for _suffix, _make in (("chat", _lc_chat), ("chat_stream", _lc_chat_stream), ("agent_tool", _lc_agent_tool),
                           ("agent_tool_stream", _lc_agent_tool_stream), ("agent_error", _lc_agent_error),
                           ("chat_concurrent", _lc_chat_concurrent)):  # fmt: skip
        if _provider == "anthropic" and _suffix == "chat_concurrent":
            continue  # the recorder's barrier covers the OpenAI APIs
        globals()[f"{_prefix}_{_suffix}"] = _make(_provider)
        LANGCHAIN_SCENARIOS.append(f"{_prefix}_{_suffix}")


def _instrument_openinference_langchain(tel) -> dict:
    from openinference.instrumentation.langchain import LangChainInstrumentor

    LangChainInstrumentor().instrument(tracer_provider=tel.tracer_provider)
    return {}


def _instrument_openllmetry_langchain(tel) -> dict:
    from opentelemetry.instrumentation.langchain import LangchainInstrumentor

    LangchainInstrumentor().instrument(tracer_provider=tel.tracer_provider, meter_provider=tel.meter_provider)
    return {}


# --- litellm (OpenInference) ----------------------------------------------------------------
def _litellm_kwargs(app, provider: str = "openai") -> dict:
    if provider == "anthropic":
        return {"model": "anthropic/" + ANTHROPIC_MODEL, "api_base": app.url, "api_key": API_KEY, "max_tokens": 256,
                "num_retries": 0, "max_retries": 0}  # fmt: skip
    return {"model": "openai/" + OPENAI_MODEL, "api_base": app.url + "/v1", "api_key": API_KEY, "num_retries": 0,
            "max_retries": 0}  # fmt: skip


def litellm_completion(app):
    import litellm

    litellm.completion(messages=[{"role": "user", "content": GREETING}], **_litellm_kwargs(app))


def litellm_completion_stream(app):
    import litellm

    stream = litellm.completion(messages=[{"role": "user", "content": GREETING}], stream=True,
                                stream_options={"include_usage": True}, **_litellm_kwargs(app))  # fmt: skip
    _drain(stream)


def litellm_tool_roundtrip(app):
    """litellm has no agent: the app runs the tool between two completions."""
    import litellm

    messages = [{"role": "user", "content": QUESTION}]
    first = litellm.completion(messages=messages, tools=OPENAI_TOOLS, **_litellm_kwargs(app))
    call = first.choices[0].message.tool_calls[0]
    result = app.run_tool(call.function.name, json.loads(call.function.arguments))
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": call.function.name,
                                                             "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": result},
    ]  # fmt: skip
    litellm.completion(messages=messages, tools=OPENAI_TOOLS, **_litellm_kwargs(app))


def litellm_completion_error(app):
    import litellm

    kwargs = dict(_litellm_kwargs(app), model="openai/" + OPENAI_MODEL + "-429")
    try:
        litellm.completion(messages=[{"role": "user", "content": GREETING}], **kwargs)
    except litellm.RateLimitError:
        return
    raise AssertionError("the fake server should have answered 429")


def litellm_anthropic(app):
    import litellm

    litellm.completion(messages=[{"role": "user", "content": GREETING}], **_litellm_kwargs(app, "anthropic"))


def litellm_anthropic_stream(app):
    import litellm

    stream = litellm.completion(messages=[{"role": "user", "content": GREETING}], stream=True,
                                stream_options={"include_usage": True}, **_litellm_kwargs(app, "anthropic"))  # fmt: skip
    _drain(stream)


def litellm_responses(app):
    import litellm

    litellm.responses(input=GREETING, **_litellm_kwargs(app))


def _instrument_openinference_litellm(tel) -> dict:
    from openinference.instrumentation.litellm import LiteLLMInstrumentor

    LiteLLMInstrumentor().instrument(tracer_provider=tel.tracer_provider)
    return {}


# litellm: no telemetry; offline mode: its price map, beta headers and tokenizers from the package,
# nothing fetched
LITELLM_ENV = {"LITELLM_TELEMETRY": "False", "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_OFFLINE_MODE": "true"}
LITELLM_SCENARIOS = ["litellm_completion", "litellm_completion_stream", "litellm_tool_roundtrip",
                     "litellm_completion_error", "litellm_anthropic", "litellm_anthropic_stream", "litellm_responses"]  # fmt: skip


# LangSmith tracing off (its default, stated); the anthropic SDK's own spans off (on by default),
# so only the named instrumentations speak.
LANGCHAIN_ENV = {"LANGSMITH_TRACING": "false", "LANGCHAIN_TRACING_V2": "false", "ANTHROPIC_OPEN_TELEMETRY": "false"}

FRAMEWORK_INSTRUMENTATIONS = {
    "openinference_openai_agents": _instrument_openai_agents,
    "openinference_langchain": _instrument_openinference_langchain,
    "openllmetry_langchain": _instrument_openllmetry_langchain,
    "openinference_litellm": _instrument_openinference_litellm,
}
AGENTS_SCENARIOS = ["agents_run", "agents_run_stream", "agents_tool_roundtrip", "agents_handoff", "agents_handoff_stream",
                    "agents_error", "agents_run_concurrent"]  # fmt: skip
FRAMEWORK_RECORDINGS = {
    "openinference-openai-agents": {
        "venv": "openai-agents",
        "instrument": ["openinference_openai_agents"],
        "scenarios": AGENTS_SCENARIOS,
    },
    "langchain-openinference": {
        "venv": "langchain-openinference",
        "env": LANGCHAIN_ENV,
        # langchain-anthropic reads a stream's usage from message_delta only
        "anthropic_cumulative_delta": True,
        "instrument": ["openinference_langchain"],
        "scenarios": LANGCHAIN_SCENARIOS,
    },
    # with the family's SDK instrumentors on too (what Phoenix's auto-instrumentation does)
    "langchain-openinference-sdk": {
        "venv": "langchain-openinference",
        "env": LANGCHAIN_ENV,
        # langchain-anthropic reads a stream's usage from message_delta only
        "anthropic_cumulative_delta": True,
        "instrument": ["openinference_langchain", "openinference_openai", "openinference_anthropic"],
        "scenarios": LANGCHAIN_SCENARIOS,
    },
    "langchain-openllmetry": {
        "venv": "langchain-openllmetry",
        "env": LANGCHAIN_ENV,
        # langchain-anthropic reads a stream's usage from message_delta only
        "anthropic_cumulative_delta": True,
        "instrument": ["openllmetry_langchain"],
        "scenarios": LANGCHAIN_SCENARIOS,
    },
    "langchain-openllmetry-sdk": {
        "venv": "langchain-openllmetry",
        "env": LANGCHAIN_ENV,
        # langchain-anthropic reads a stream's usage from message_delta only
        "anthropic_cumulative_delta": True,
        "instrument": ["openllmetry_langchain", "openllmetry_openai", "openllmetry_anthropic"],
        "scenarios": LANGCHAIN_SCENARIOS,
    },
    "openinference-litellm": {
        "venv": "litellm",
        "env": LITELLM_ENV,
        "anthropic_cumulative_delta": True,
        "instrument": ["openinference_litellm"],
        "scenarios": LITELLM_SCENARIOS,
    },
}
RECORDINGS |= FRAMEWORK_RECORDINGS


# --- instrumentations ----------------------------------------------------------------------
def _instrument(name: str, tel) -> dict:
    """Apply one instrumentation to the recorder's providers; returns what to write down."""
    if name in INSTRUMENT_B:  # fixtures B's instrumentations (their block, near the end)
        return INSTRUMENT_B[name](tel)
    providers = {"tracer_provider": tel.tracer_provider, "meter_provider": tel.meter_provider}
    if name in FRAMEWORK_INSTRUMENTATIONS:  # the agent frameworks' (issue 12, fixtures A)
        return FRAMEWORK_INSTRUMENTATIONS[name](tel)
    if name == "openai_v2":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(**providers, logger_provider=tel.logger_provider)
    elif name == "openinference_openai":
        from openinference.instrumentation.openai import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(tracer_provider=tel.tracer_provider)
    elif name == "openinference_anthropic":
        from openinference.instrumentation.anthropic import AnthropicInstrumentor

        AnthropicInstrumentor().instrument(tracer_provider=tel.tracer_provider)
    elif name == "openllmetry_openai":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(**providers)
    elif name == "openllmetry_anthropic":
        from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor

        AnthropicInstrumentor().instrument(**providers)
    elif name == "openlit":
        import tempfile

        import openlit

        prices = Path(tempfile.mkdtemp()) / "pricing.json"
        prices.write_text(json.dumps(OPENLIT_PRICES))
        # Reuses the global providers set up by the recorder; no exporter of its own.
        openlit.init(
            service_name="spanmeter-fixtures",
            pricing_json=str(prices),
            disabled_instrumentors=[],
            collect_gpu_stats=False,
        )
        return {"openlit_pricing_json_usd_per_1k_tokens": OPENLIT_PRICES["chat"]}
    elif name == "traceloop_sdk":
        from opentelemetry.sdk.trace import SpanProcessor
        from traceloop.sdk import Traceloop
        from traceloop.sdk.instruments import Instruments

        # A processor of our own keeps it off its cloud exporter; it reuses the global
        # provider, which already has the recorder's exporter. No usage telemetry.
        Traceloop.init(
            app_name="spanmeter-fixtures",
            processor=SpanProcessor(),
            telemetry_enabled=False,
            instruments={Instruments.OPENAI},
            disable_batch=True,
        )
        return {"traceloop_init": {"instruments": ["OPENAI"], "telemetry_enabled": False}}
    elif name == "pydantic_ai":
        from pydantic_ai import Agent

        # 2.x has no ``Agent(instrument=...)`` any more; this is its documented switch. It
        # uses the global providers (InstrumentationSettings() defaults).
        Agent.instrument_all(True)
    else:
        raise ValueError(name)
    return {}


class _Telemetry:
    """Tracer, meter and logger providers that keep everything in memory, set as the globals."""

    def __init__(self):
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        resource = Resource.create({"service.name": "spanmeter-fixtures"})
        steps = self.steps = {}  # span_id -> [start step, end step, attribute keys at start]
        counter = [0]

        class StepRecorder(SpanProcessor):
            """Notes the order of every on_start and on_end, and the keys a span started with."""

            def on_start(self, span, parent_context=None):
                counter[0] += 1
                steps[span.context.span_id] = [counter[0], None, sorted(span.attributes or {})]

            def on_end(self, span):
                counter[0] += 1
                steps.setdefault(span.context.span_id, [None, None, []])[1] = counter[0]

        self.counter = counter
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider(resource=resource)
        self.tracer_provider.add_span_processor(StepRecorder())
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        delta = {kind: AggregationTemporality.DELTA for kind in _instrument_kinds()}
        self.metrics = InMemoryMetricReader(preferred_temporality=delta)
        self.meter_provider = MeterProvider(resource=resource, metric_readers=[self.metrics])
        trace.set_tracer_provider(self.tracer_provider)
        metrics.set_meter_provider(self.meter_provider)
        self.logs = None
        self.logger_provider = None
        try:
            from opentelemetry import _logs
            from opentelemetry.sdk._logs import LoggerProvider
            from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

            try:
                from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter as InMemoryLogs
            except ImportError:
                from opentelemetry.sdk._logs.export import InMemoryLogExporter as InMemoryLogs
            self.logs = InMemoryLogs()
            self.logger_provider = LoggerProvider(resource=resource)
            self.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(self.logs))
            _logs.set_logger_provider(self.logger_provider)
        except ImportError:
            pass

    def reset(self):
        self.spans.clear()
        self.steps.clear()
        self.counter[0] = 0
        self.metrics.get_metrics_data()  # delta: drops what earlier scenarios recorded
        if self.logs is not None:
            self.logs.clear()


def _instrument_kinds():
    from opentelemetry.sdk.metrics import (
        Counter,
        Histogram,
        ObservableCounter,
        ObservableGauge,
        ObservableUpDownCounter,
        UpDownCounter,
    )

    return (Counter, UpDownCounter, Histogram, ObservableCounter, ObservableUpDownCounter, ObservableGauge)


# --- what the fake server returned -----------------------------------------------------------
def _parse_body(body: bytes) -> tuple[list[dict], bool]:
    """The JSON objects of a response body (one, or each SSE ``data:``), and whether it streamed."""
    text = body.decode("utf-8", "replace")
    if text.lstrip().startswith(("{", "[")):
        try:
            return [json.loads(text)], False
        except ValueError:
            return [], False
    events = []
    for line in text.splitlines():
        if line.startswith("data: ") and line[6:].strip() != "[DONE]":
            try:
                events.append(json.loads(line[6:]))
            except ValueError:
                pass
    return events, True


def _exchange(path: str, request: dict, body: bytes) -> dict:
    """One call as the fake server saw and answered it, usage in the provider's own meaning,
    and its tokens in the GenAI meaning (input includes cache reads and writes, output includes
    reasoning)."""
    objects, streamed = _parse_body(body)
    if _is_gemini(path):  # fixtures B
        return _gemini_exchange(path, objects, streamed)
    call = {"path": path.split("?", 1)[0], "request_model": request.get("model"), "stream": streamed,
            "status": "ok", "response_model": None, "usage": None, "tool_calls": [], "finish_reasons": []}  # fmt: skip
    usage: dict = {}
    for obj in objects:
        if isinstance(obj.get("error"), dict) or obj.get("type") == "error":
            error = obj["error"]
            call["status"] = "error"
            call["error"] = {k: error.get(k) for k in ("type", "code") if error.get(k) is not None}
        if call["path"].endswith("/messages"):  # Anthropic
            message = obj.get("message") if obj.get("type") == "message_start" else obj
            if obj.get("type") in ("message", "message_start"):
                call["response_model"] = message.get("model")
                usage.update(message.get("usage") or {})
                call["tool_calls"] += [b["name"] for b in message.get("content") or [] if b.get("type") == "tool_use"]
                if message.get("stop_reason"):
                    call["finish_reasons"].append(message["stop_reason"])
            elif obj.get("type") == "content_block_start" and obj["content_block"].get("type") == "tool_use":
                call["tool_calls"].append(obj["content_block"]["name"])  # a streamed tool call
            elif obj.get("type") == "message_delta":
                usage.update(obj.get("usage") or {})
                call["finish_reasons"].append(obj["delta"].get("stop_reason"))
        elif call["path"].endswith("/responses"):
            response = obj.get("response") if "response" in obj else obj
            if isinstance(response, dict) and response.get("object") == "response":
                call["response_model"] = response.get("model")
                if response.get("usage"):
                    usage = dict(response["usage"])
                call["tool_calls"] = [i["name"] for i in response.get("output") or [] if i.get("type") == "function_call"]
        else:  # OpenAI chat completions
            if obj.get("model"):
                call["response_model"] = obj["model"]
            if obj.get("usage"):
                usage = dict(obj["usage"])
            for choice in obj.get("choices") or []:
                message = choice.get("message") or choice.get("delta") or {}
                call["tool_calls"] += [t["function"]["name"] for t in message.get("tool_calls") or []
                                       if t.get("function", {}).get("name")]  # fmt: skip
                if choice.get("finish_reason"):
                    call["finish_reasons"].append(choice["finish_reason"])
    if usage:
        call["usage"] = usage
        call["tokens"] = _genai_tokens(call["path"], usage)
    return call


def _genai_tokens(path: str, usage: dict) -> dict:
    def n(d, *keys):
        for key in keys:
            d = (d or {}).get(key)
        return d or 0

    if _is_gemini(path):  # fixtures B
        return _gemini_tokens(usage)
    if path.endswith("/messages"):
        cache_read = n(usage, "cache_read_input_tokens")
        cache_write = n(usage, "cache_creation_input_tokens")
        return {"input": n(usage, "input_tokens") + cache_read + cache_write, "output": n(usage, "output_tokens"),
                "cache_read": cache_read, "cache_write": cache_write, "reasoning": 0}  # fmt: skip
    if path.endswith("/responses"):
        return {"input": n(usage, "input_tokens"), "output": n(usage, "output_tokens"),
                "cache_read": n(usage, "input_tokens_details", "cached_tokens"), "cache_write": 0,
                "reasoning": n(usage, "output_tokens_details", "reasoning_tokens")}  # fmt: skip
    return {"input": n(usage, "prompt_tokens"), "output": n(usage, "completion_tokens"),
            "cache_read": n(usage, "prompt_tokens_details", "cached_tokens"), "cache_write": 0,
            "reasoning": n(usage, "completion_tokens_details", "reasoning_tokens")}  # fmt: skip


def _expected(server, app) -> dict:
    assert len(server.requests) == len(server.sent), (len(server.requests), len(server.sent))
    calls = [_exchange(path, request, body) for (path, request), body in zip(server.requests, server.sent)]
    by_model: dict[str, dict] = {}
    for call in calls:
        row = by_model.setdefault(call["request_model"], {"calls": 0, "errors": 0, "response_models": [],
                                                          "tokens": dict.fromkeys(_TOKENS, 0)})  # fmt: skip
        row["calls"] += 1
        row["errors"] += call["status"] == "error"
        if call["response_model"] and call["response_model"] not in row["response_models"]:
            row["response_models"].append(call["response_model"])
        for key, value in (call.get("tokens") or {}).items():
            row["tokens"][key] += value
    return {
        "calls": calls,
        "by_model": by_model,
        "tool_calls_requested": _count(name for call in calls for name in call["tool_calls"]),
        "tool_executions": dict(sorted(app.tool_runs.items())),
        "agent_runs": {AGENT_NAME: 1} if app.scenario.startswith(("pydantic_ai", "traceloop")) else {},
        **_agent_expectations(server, app),
        **_expected_runs(app),  # fixtures B: marked by the scenario (_agent_run), where it marks them
    }


def _agent_expectations(server, app) -> dict:
    """What an agent-framework scenario ran: its runs, each agent's calls (by the mark of the
    agent's instructions in each request), its workflows."""
    if app.agents is None:
        return {}
    by_agent = dict.fromkeys(app.agents, 0)
    for _, request in server.requests:
        agent = _agent_of(request)
        if agent is not None:
            by_agent[agent] = by_agent.get(agent, 0) + 1
    return {"agent_runs": dict(sorted(app.agents.items())), "calls_by_agent": dict(sorted(by_agent.items())),
            "workflows": dict(sorted(app.workflows.items()))}  # fmt: skip


_TOKENS = ("input", "output", "cache_read", "cache_write", "reasoning")


def _count(names) -> dict:
    out: dict[str, int] = {}
    for name in names:
        out[name] = out.get(name, 0) + 1
    return dict(sorted(out.items()))


# --- spans, metrics and logs to JSON ---------------------------------------------------------
class _Scrubber:
    """Machine paths in strings become placeholders; a leftover path or the key is an error."""

    def __init__(self):
        import sysconfig

        pairs = [
            (sysconfig.get_paths()["purelib"], "<site-packages>"),
            (sysconfig.get_paths()["platlib"], "<site-packages>"),
            (sysconfig.get_paths()["stdlib"], "<python>"),
            (str(REPO), "<repo>"),
            (sys.prefix, "<venv>"),
            (sys.base_prefix, "<python>"),
            (os.path.expanduser("~"), "<home>"),
        ]
        self.pairs = sorted({(a, b) for a, b in pairs if a and a != "/"}, key=lambda p: -len(p[0]))

    def __call__(self, value):
        if isinstance(value, str):
            for prefix, placeholder in self.pairs:
                if prefix in value:
                    value = value.replace(prefix, placeholder)
            return value
        if isinstance(value, (list, tuple)):
            return [self(v) for v in value]
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        return value

    @staticmethod
    def check(text: str) -> None:
        leaks = [needle for needle in (API_KEY, "/tmp/", "/root", "/home/", "/work/", "/usr/", "/opt/") if needle in text]
        if leaks:
            raise RuntimeError(f"fixture would hold {leaks}")


def _spans_json(tel, scrub) -> tuple[list[dict], dict, list[str]]:
    spans = list(tel.spans.get_finished_spans())
    order = sorted(spans, key=lambda s: (tel.steps.get(s.context.span_id, [0])[0] or 0, s.start_time))
    trace_ids: dict[int, str] = {}
    span_ids: dict[int, str] = {}
    for span in order:
        trace_ids.setdefault(span.context.trace_id, f"{len(trace_ids) + 1:032x}")
        span_ids.setdefault(span.context.span_id, f"{len(span_ids) + 1:016x}")
    t0 = min((s.start_time for s in spans), default=0)
    resources = {json.dumps(dict(s.resource.attributes), sort_keys=True) for s in spans}
    resource = json.loads(resources.pop()) if len(resources) == 1 else None
    out = []
    for span in sorted(spans, key=lambda s: tel.steps.get(s.context.span_id, [0, 0])[1] or 0):
        start_step, end_step, start_keys = tel.steps.get(span.context.span_id, [None, None, []])
        parent = span.parent
        scope = span.instrumentation_scope
        item = {
            "name": span.name,
            "kind": span.kind.name,
            "trace_id": trace_ids[span.context.trace_id],
            "span_id": span_ids[span.context.span_id],
            "parent_span_id": None if parent is None else span_ids.get(parent.span_id, f"{parent.span_id:016x}"),
            "start_ns": span.start_time - t0,
            "end_ns": span.end_time - t0,
            "started_at_step": start_step,
            "ended_at_step": end_step,
            "attributes_at_start": start_keys,
            "attributes": scrub(_plain(span.attributes)),
            "status": {"code": span.status.status_code.name, "description": scrub(span.status.description)},
            "events": [
                {"name": e.name, "time_ns": e.timestamp - t0, "attributes": scrub(_plain(e.attributes))}
                for e in span.events
            ],
            "links": [
                {"trace_id": trace_ids.get(link.context.trace_id, f"{link.context.trace_id:032x}"),
                 "span_id": span_ids.get(link.context.span_id, f"{link.context.span_id:016x}"),
                 "attributes": scrub(_plain(link.attributes))}
                for link in span.links
            ],  # fmt: skip
            "scope": {
                "name": scope.name if scope else None,
                "version": scope.version if scope else None,
                "schema_url": (scope.schema_url or None) if scope else None,
                "attributes": _plain(getattr(scope, "attributes", None)) if scope else {},
            },
        }
        if parent is not None and parent.is_remote:
            item["parent_is_remote"] = True
        if resource is None:
            item["resource"] = _plain(span.resource.attributes)
        out.append(item)
    unended = [f"step {s[0]}" for sid, s in tel.steps.items() if s[1] is None]
    return out, resource or {}, unended


def _plain(attributes) -> dict:
    if not attributes:
        return {}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(dict(attributes).items())}


def _metrics_json(tel) -> list[dict]:
    data = tel.metrics.get_metrics_data()
    out = []
    for rm in getattr(data, "resource_metrics", None) or []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points = []
                for p in metric.data.data_points:
                    point = {"attributes": _plain(p.attributes)}
                    for field in ("value", "count", "sum"):
                        if hasattr(p, field):
                            point[field] = getattr(p, field)
                    points.append(point)
                points.sort(key=lambda p: json.dumps(p, sort_keys=True))
                out.append({"scope": sm.scope.name, "name": metric.name, "unit": metric.unit,
                            "type": type(metric.data).__name__, "points": points})  # fmt: skip
    return sorted(out, key=lambda m: (m["scope"], m["name"]))


def _logs_json(tel, scrub) -> list[dict]:
    if tel.logs is None:
        return []
    out = []
    for item in tel.logs.get_finished_logs():
        record = getattr(item, "log_record", item)
        body = record.body
        try:
            json.dumps(body)
        except TypeError:
            body = repr(body)
        out.append({
            "event_name": getattr(record, "event_name", None) or (record.attributes or {}).get("event.name"),
            "attributes": scrub(_plain(record.attributes)),
            "body": scrub(body),
            "scope": getattr(getattr(item, "instrumentation_scope", None), "name", None),
        })  # fmt: skip
    return out


def _packages() -> dict:
    from importlib.metadata import distributions

    found = {}
    for dist in distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if PACKAGE_PATTERN.match(name) or FRAMEWORK_PACKAGES.match(name):
            found[name] = dist.version
    return dict(sorted(found.items()))


def record_inside(name: str) -> int:
    import gc
    import logging
    import traceback

    logging.basicConfig(level=logging.WARNING)
    recording = RECORDINGS[name]
    fp = _load_fake_providers()
    tel = _Telemetry()
    config = {}
    for instrumentation in recording["instrument"]:
        config.update(_instrument(instrumentation, tel))
    scrub = _Scrubber()
    out_dir = OUT / name
    out_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    with fp.FakeProviders() as server:
        server.RequestHandlerClass = _handler_b(_tool_calling_handler(fp))
        server.unique_ids = True  # as the real APIs: an instrumentation may key its state by response id
        # cache writes too, so Anthropic's meaning of input tokens shows (OpenAI ignores it)
        server.usage = fp.Usage(cache_write=200)
        for scenario in recording["scenarios"]:
            tel.reset()
            server.requests.clear()
            server.barrier = threading.Barrier(2) if scenario.endswith("_concurrent") else None
            server.sent.clear()
            app = _App(server.url, recording, scenario)
            app.server = server  # fixtures B: _agent_run reads the server's log
            server.response_model_names = None
            server.anthropic_cumulative_delta = recording.get("anthropic_cumulative_delta", False)
            if server.anthropic_cumulative_delta and "anthropic" in scenario:
                app.notes.append("Anthropic streams end with the cumulative usage in message_delta, as the API sends today")
            if scenario.startswith("pydantic_ai"):
                server.response_model_names = PRICED_RESPONSE_MODELS
                app.notes.append(
                    "response model renamed by the recorder's handler to a dated name genai-prices knows: "
                    + ", ".join(f"{a} -> {b}" for a, b in PRICED_RESPONSE_MODELS.items())
                )
            try:
                globals()[scenario](app)
            except Exception:
                failures += 1
                print(f"[{name}] {scenario} FAILED:\n{traceback.format_exc()}", file=sys.stderr)
                continue
            gc.collect()
            time.sleep(0.05)  # let a span ended by a background thread or finalizer end
            tel.tracer_provider.force_flush()
            spans, resource, unended = _spans_json(tel, scrub)
            fixture = {
                "format": FORMAT,
                "recording": name,
                "scenario": scenario,
                "instrumentations": recording["instrument"] or ["anthropic SDK (built in)"],
                "environment": recording.get("env", {}),
                "config": config,
                "notes": sorted(set(app.notes)),
                "packages": _packages(),
                "python": ".".join(map(str, sys.version_info[:3])),
                "fake_server": {"usage": vars(server.usage)},
                "expected": _expected(server, app),
                "resource": resource,
                "spans": spans,
                "unended_spans": unended,
                "metrics": _metrics_json(tel),
                "logs": _logs_json(tel, scrub),
            }
            text = json.dumps(fixture, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
            try:
                _Scrubber.check(text)
            except RuntimeError:
                (Path("/tmp") / f"spanmeter-rejected-{name}-{scenario}.json").write_text(text)
                raise
            (out_dir / f"{scenario}.json").write_text(text)
            print(f"[{name}] {scenario}: {len(spans)} spans, {len(fixture['expected']['calls'])} calls", flush=True)
    return 1 if failures else 0

# === fixtures B: instrumentations and scenarios ============================================
def _logfire(tel) -> None:
    """Logfire configured as a user adds a span processor of their own: its SDK TracerProvider,
    the recorder's processors as ``additional_span_processors``; nothing leaves the machine."""
    import tempfile

    import logfire
    from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
    from opentelemetry.sdk.trace import SpanProcessor

    if getattr(tel, "logfire", False):
        return
    recorder = tel.tracer_provider._active_span_processor

    class Forward(SpanProcessor):
        def on_start(self, span, parent_context=None):
            recorder.on_start(span, parent_context=parent_context)

        def on_end(self, span):
            recorder.on_end(span)

    # Logfire has a meter provider of its own: the recorder reads that one.
    tel.metrics = InMemoryMetricReader(
        preferred_temporality={kind: AggregationTemporality.DELTA for kind in _instrument_kinds()})
    # the machine's identity stays out of the fixtures (Logfire's resource detectors add it)
    logfire.configure(send_to_logfire=False, console=False, service_name="spanmeter-fixtures",
                      resource_attributes={"host.id": "<host>", "host.name": "<host>", "os.version": "<os>"},
                      data_dir=tempfile.mkdtemp(), additional_span_processors=[Forward()],
                      metrics=logfire.MetricsOptions(additional_readers=[tel.metrics]))  # fmt: skip
    tel.logfire = True


def _logfire_openai(tel) -> dict:
    import logfire

    _logfire(tel)
    logfire.instrument_openai()
    return {"logfire": LOGFIRE_CONFIG, "logfire.instrument_openai": "defaults (version=2)"}


def _logfire_anthropic(tel) -> dict:
    import logfire

    _logfire(tel)
    logfire.instrument_anthropic()
    return {"logfire": LOGFIRE_CONFIG, "logfire.instrument_anthropic": "defaults (version=2)"}


def _logfire_pydantic_ai(tel) -> dict:
    import logfire

    _logfire(tel)
    logfire.instrument_pydantic_ai()
    return {"logfire": LOGFIRE_CONFIG, "logfire.instrument_pydantic_ai": "defaults"}


LOGFIRE_CONFIG = ("logfire.configure(send_to_logfire=False, console=False, additional_span_processors=[recorder], "
                  "metrics=MetricsOptions(additional_readers=[recorder]))")  # fmt: skip

PACKAGE_PATTERN = re.compile(PACKAGE_PATTERN.pattern + r"|^(logfire.*|google-genai|google-adk|strands-agents.*)$")

INSTRUMENT_B = {
    "logfire_openai": _logfire_openai,
    "logfire_anthropic": _logfire_anthropic,
    "logfire_pydantic_ai": _logfire_pydantic_ai,
}


def _logfire_anthropic_sdk_spans(app):
    """An anthropic client with its own spans on (its default) going where a Logfire app's global
    tracer provider would send them: Logfire's (the recorder's own global is set first)."""
    import anthropic
    import logfire

    provider = logfire.DEFAULT_LOGFIRE_INSTANCE.config.get_tracer_provider()
    app.notes.append("anthropic SDK's own spans on, to Logfire's tracer provider (a Logfire app's global)")
    return anthropic.Anthropic(base_url=app.url, api_key=API_KEY, max_retries=0,
                               open_telemetry={"tracer_provider": provider})  # fmt: skip


def logfire_anthropic_messages_with_sdk_spans(app):
    _logfire_anthropic_sdk_spans(app).messages.create(
        model=ANTHROPIC_MODEL, max_tokens=256, messages=[{"role": "user", "content": GREETING}])  # fmt: skip


def logfire_anthropic_stream_helper_with_sdk_spans(app):
    with _logfire_anthropic_sdk_spans(app).messages.stream(
        model=ANTHROPIC_MODEL, max_tokens=256, messages=[{"role": "user", "content": GREETING}]
    ) as stream:
        for _ in stream.text_stream:
            pass


def openai_responses_stream_b(app):
    _drain(app.openai().responses.create(model=OPENAI_MODEL, input=GREETING, stream=True))


def _handler_b(base):
    """Fixtures B's tool calls on top of ``base``: a streamed Anthropic ``tool_use`` and the
    Responses API's ``function_call`` (JSON and stream); Gemini's are the fake server's own."""

    class Handler(base):
        def _anthropic(self, request):
            tools = request.get("tools") or []
            answered = any(isinstance(m.get("content"), list)
                           and any(b.get("type") == "tool_result" for b in m["content"])
                           for m in request.get("messages") or [])  # fmt: skip
            if not tools or answered or not request.get("stream") or self._scenario(request.get("model", "")):
                return super()._anthropic(request)
            u = self.server.usage
            usage = {"input_tokens": u.input, "output_tokens": 1, "cache_read_input_tokens": u.cache_read,
                     "cache_creation_input_tokens": u.cache_write}  # fmt: skip
            message = {"id": f"msg_{len(self.server.requests)}", "type": "message", "role": "assistant",
                       "model": request["model"] + "-20250101", "stop_sequence": None, "stop_reason": None,
                       "content": [], "usage": usage}  # fmt: skip
            block = {"type": "tool_use", "id": "toolu_1", "name": tools[0]["name"], "input": {}}
            args = json.dumps(TOOL_ARGS)
            self._sse([
                ("message_start", {"type": "message_start", "message": message}),
                ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}),
                ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                         "delta": {"type": "input_json_delta", "partial_json": args[:9]}}),
                ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                         "delta": {"type": "input_json_delta", "partial_json": args[9:]}}),
                ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                                   "usage": {"output_tokens": u.output}}),
                ("message_stop", {"type": "message_stop"}),
            ], event_names=True)  # fmt: skip

        def _openai_responses(self, request):
            tools = [t for t in request.get("tools") or [] if t.get("type") == "function"]
            items = request.get("input") if isinstance(request.get("input"), list) else []
            answered = any(isinstance(i, dict) and i.get("type") == "function_call_output" for i in items)
            if not tools or answered or self._scenario(request.get("model", "")):
                return super()._openai_responses(request)
            u = self.server.usage
            call = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": tools[0]["name"],
                    "arguments": json.dumps(TOOL_ARGS), "status": "completed"}  # fmt: skip
            response = {
                "id": f"resp_{len(self.server.requests)}", "object": "response", "created_at": 1_700_000_000,
                "status": "completed", "model": request["model"] + "-2025-01-01", "error": None,
                "incomplete_details": None, "output": [call], "parallel_tool_calls": True, "tool_choice": "auto",
                "tools": [], "usage": {"input_tokens": u.input, "input_tokens_details": {"cached_tokens": u.cache_read},
                                       "output_tokens": u.output,
                                       "output_tokens_details": {"reasoning_tokens": u.reasoning},
                                       "total_tokens": u.input + u.output}}  # fmt: skip
            if not request.get("stream"):
                return self._json(200, response)
            created = dict(response, status="in_progress", output=[], usage=None)
            events = [
                ("response.created", {"type": "response.created", "response": created}),
                ("response.in_progress", {"type": "response.in_progress", "response": created}),
                ("response.output_item.added", {"type": "response.output_item.added", "output_index": 0,
                                                "item": dict(call, arguments="", status="in_progress")}),
                ("response.function_call_arguments.delta", {"type": "response.function_call_arguments.delta",
                 "output_index": 0, "item_id": call["id"], "delta": call["arguments"]}),
                ("response.function_call_arguments.done", {"type": "response.function_call_arguments.done",
                 "output_index": 0, "item_id": call["id"], "arguments": call["arguments"]}),
                ("response.output_item.done", {"type": "response.output_item.done", "output_index": 0, "item": call}),
                ("response.completed", {"type": "response.completed", "response": response}),
            ]  # fmt: skip
            for i, (_, event) in enumerate(events):
                event["sequence_number"] = i
            self._sse(events, event_names=True)

    return Handler


def _gemini_client(app):
    """A google-genai client on the fake server: no retries, nothing sent elsewhere."""
    from google import genai
    from google.genai import types

    return genai.Client(api_key=API_KEY, http_options=types.HttpOptions(
        base_url=app.url, retry_options=types.HttpRetryOptions(attempts=1)))  # fmt: skip


def _pai_model(app, kind: str, suffix: str = ""):
    if kind == "anthropic":
        import anthropic
        from pydantic_ai.models.anthropic import AnthropicModel
        from pydantic_ai.providers.anthropic import AnthropicProvider

        # The SDK's own spans are on by default; off here to isolate pydantic-ai's, except in the
        # ``*_with_sdk_spans`` scenarios (to the global tracer provider, as in a plain app).
        sdk_spans = app.scenario.endswith("_with_sdk_spans")
        app.notes.append("anthropic SDK's own spans left on (its default)" if sdk_spans else
                         "anthropic SDK's own spans switched off (AsyncAnthropic(open_telemetry=False))")  # fmt: skip
        client = anthropic.AsyncAnthropic(base_url=app.url, api_key=API_KEY, max_retries=0,
                                          **({} if sdk_spans else {"open_telemetry": False}))  # fmt: skip
        return AnthropicModel(ANTHROPIC_MODEL + suffix, provider=AnthropicProvider(anthropic_client=client))
    if kind == "google":
        from pydantic_ai.models.google import GoogleModel
        from pydantic_ai.providers.google import GoogleProvider

        return GoogleModel(GEMINI_MODEL + suffix, provider=GoogleProvider(client=_gemini_client(app)))
    from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    if kind == "chat":
        return OpenAIChatModel(OPENAI_MODEL + suffix, provider=OpenAIProvider(openai_client=app.openai(True)))
    return OpenAIResponsesModel(OPENAI_MODEL + suffix, provider=OpenAIProvider(openai_client=app.openai(True)))


def _pai_agent(app, kind: str, tool: bool, suffix: str = ""):
    from pydantic_ai import Agent

    agent = Agent(_pai_model(app, kind, suffix), name=AGENT_NAME, instructions="Answer with the weather tool.")
    if tool:

        @agent.tool_plain
        def get_weather(city: str) -> str:
            """Current weather in a city."""
            return app.run_tool(TOOL_NAME, {"city": city})

    return agent


def _pai_scenarios(kind: str) -> None:
    """The scenarios of ``PAI_SCENARIOS`` for one pydantic-ai model, as module functions."""

    def plain(app):
        with _agent_run(app, AGENT_NAME):
            assert _pai_agent(app, kind, tool=False).run_sync(GREETING).output

    def with_tool(app):
        with _agent_run(app, AGENT_NAME):
            assert _pai_agent(app, kind, tool=True).run_sync(QUESTION).output

    def streamed(app):
        import asyncio

        agent = _pai_agent(app, kind, tool=True)

        async def run():
            async with agent.run_stream(QUESTION) as result:
                return await result.get_output()

        with _agent_run(app, AGENT_NAME):
            assert asyncio.run(run())

    def failed(app):
        from pydantic_ai.exceptions import ModelHTTPError

        with _agent_run(app, AGENT_NAME):
            try:
                _pai_agent(app, kind, tool=True, suffix="-429").run_sync(QUESTION)
            except ModelHTTPError:
                return
        raise AssertionError("the fake server should have answered 429")

    for template, function in zip(PAI_SCENARIOS, (plain, with_tool, streamed, failed)):
        globals()[template.format(kind)] = function


for _kind in ("anthropic", "google", "responses", "chat"):
    _pai_scenarios(_kind)
pai_anthropic_agent_tool_with_sdk_spans = pai_anthropic_agent_tool  # noqa: F821 (made just above)
pai_anthropic_agent_tool_stream_with_sdk_spans = pai_anthropic_agent_tool_stream  # noqa: F821


# --- fixtures B: the google-genai SDK (under its OpenTelemetry instrumentation) ------------------
GEMINI_TOOL = {"function_declarations": [{"name": TOOL_NAME, "description": "Current weather in a city.",
                                          "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}},
                                                         "required": ["city"]}}]}  # fmt: skip


# (each keeps its client in a variable: a dropped google-genai 3.x Client closes its connection)
def gemini_generate(app):
    client = _gemini_client(app)
    client.models.generate_content(model=GEMINI_MODEL, contents=GREETING)


def gemini_generate_stream(app):
    client = _gemini_client(app)
    for _ in client.models.generate_content_stream(model=GEMINI_MODEL, contents=GREETING):
        pass


def gemini_tool_roundtrip(app):
    """The app runs the function the model asked for and sends its result back."""
    from google.genai import types

    client = _gemini_client(app)
    manual = types.AutomaticFunctionCallingConfig(disable=True)
    config = types.GenerateContentConfig(tools=[GEMINI_TOOL], automatic_function_calling=manual)
    contents = [types.Content(role="user", parts=[types.Part(text=QUESTION)])]
    first = client.models.generate_content(model=GEMINI_MODEL, contents=contents, config=config)
    call = first.function_calls[0]
    result = app.run_tool(call.name, dict(call.args))
    answer = types.Part.from_function_response(name=call.name, response={"result": result})
    contents += [first.candidates[0].content, types.Content(role="user", parts=[answer])]
    client.models.generate_content(model=GEMINI_MODEL, contents=contents, config=config)


def gemini_tool_automatic(app):
    """The SDK's automatic function calling: one generate_content, two requests, the tool run between."""

    def get_weather(city: str) -> str:
        """Current weather in a city."""
        return app.run_tool(TOOL_NAME, {"city": city})

    from google.genai import types

    client = _gemini_client(app)
    client.models.generate_content(model=GEMINI_MODEL, contents=QUESTION,
                                   config=types.GenerateContentConfig(tools=[get_weather]))


def gemini_generate_error(app):
    from google.genai import errors

    client = _gemini_client(app)
    try:
        client.models.generate_content(model=GEMINI_MODEL + "-429", contents=GREETING)
    except errors.ClientError:
        return
    raise AssertionError("the fake server should have answered 429")


def _google_genai(tel) -> dict:
    from opentelemetry.instrumentation.google_genai import GoogleGenAiSdkInstrumentor

    GoogleGenAiSdkInstrumentor().instrument(tracer_provider=tel.tracer_provider, meter_provider=tel.meter_provider,
                                            logger_provider=tel.logger_provider)  # fmt: skip
    return {}


INSTRUMENT_B["google_genai"] = _google_genai


# --- fixtures B: google-adk's own spans (alone, and with the google-genai instrumentor) -----------
def _adk_agent(app, name: str = AGENT_NAME, tool: bool = True, suffix: str = "", client=None):
    from google.adk.agents import LlmAgent
    from google.adk.models import Gemini

    def get_weather(city: str) -> str:
        """Current weather in a city."""
        return app.run_tool(TOOL_NAME, {"city": city})

    # a client of our own: the fake server, no retries (ADK's default client would retry a 429)
    model = Gemini(model=GEMINI_MODEL + suffix, client=client or _gemini_client(app))
    return LlmAgent(name=name, model=model, instruction="Answer with the weather tool.",
                    tools=[get_weather] if tool else [])  # fmt: skip


def _adk_run(app, agent, question: str = QUESTION, streaming: bool = False) -> list:
    """One user turn through ADK's in-memory runner (its sync ``run``, as its quickstart does)."""
    import asyncio

    from google.adk.agents.run_config import RunConfig, StreamingMode
    from google.adk.runners import InMemoryRunner
    from google.genai import types

    runner = InMemoryRunner(agent=agent, app_name="weather_app")
    session = asyncio.run(runner.session_service.create_session(app_name="weather_app", user_id="user-1"))
    config = RunConfig(streaming_mode=StreamingMode.SSE if streaming else StreamingMode.NONE)
    message = types.Content(role="user", parts=[types.Part(text=question)])
    # ADK runs every invocation as a workflow named after the root agent (``invoke_workflow``
    # span; its own gen_ai.invoke_workflow.duration metric counts it): marked as such.
    with _agent_run(app, agent.name, workflow=True):
        return list(runner.run(user_id="user-1", session_id=session.id, new_message=message, run_config=config))


def adk_agent(app):
    with _agent_run(app, AGENT_NAME):
        _adk_run(app, _adk_agent(app, tool=False), GREETING)


def adk_agent_tool(app):
    with _agent_run(app, AGENT_NAME):
        _adk_run(app, _adk_agent(app))


def adk_agent_tool_stream(app):
    with _agent_run(app, AGENT_NAME):
        _adk_run(app, _adk_agent(app), streaming=True)


def adk_agent_error(app):
    from google.genai import errors

    with _agent_run(app, AGENT_NAME):
        try:
            _adk_run(app, _adk_agent(app, suffix="-429"))
        except errors.ClientError:
            return
    raise AssertionError("the fake server should have answered 429")


def adk_workflow(app):
    """A SequentialAgent (ADK's workflow agent) running two LLM agents, each marked by callbacks."""
    from google.adk.agents import SequentialAgent

    runs = {}

    def before(callback_context):
        runs[callback_context.agent_name] = _agent_run(app, callback_context.agent_name).__enter__()

    def after(callback_context):
        runs.pop(callback_context.agent_name).__exit__(None, None, None)

    client = _gemini_client(app)
    weather = _adk_agent(app, client=client)
    summary = _adk_agent(app, name="summary_agent", tool=False, client=client)
    for agent in (weather, summary):
        agent.before_agent_callback, agent.after_agent_callback = before, after
    # (deprecated in 2.x for ``Workflow``, which cannot yet hold LlmAgents; still what apps run)
    _adk_run(app, SequentialAgent(name="weather_workflow", sub_agents=[weather, summary]))


INSTRUMENT_B["google_adk"] = lambda tel: {}  # its spans are built in; it uses the global tracer provider


# --- fixtures B: strands-agents' own spans, its OpenAI model on the fake server -----------------
def _strands_agent(app, tool: bool = True, suffix: str = ""):
    from strands import Agent, tool as strands_tool
    from strands.models.openai import OpenAIModel

    @strands_tool
    def get_weather(city: str) -> str:
        """Current weather in a city.

        Args:
            city: the city
        """
        return app.run_tool(TOOL_NAME, {"city": city})

    model = OpenAIModel(client_args={"base_url": app.url + "/v1", "api_key": API_KEY, "max_retries": 0},
                        model_id=OPENAI_MODEL + suffix)  # fmt: skip
    return Agent(name=AGENT_NAME, model=model, system_prompt="Answer with the weather tool.",
                 tools=[get_weather] if tool else [], callback_handler=None)  # fmt: skip


def strands_agent(app):
    with _agent_run(app, AGENT_NAME):
        _strands_agent(app, tool=False)(GREETING)


def strands_agent_tool(app):
    with _agent_run(app, AGENT_NAME):
        _strands_agent(app)(QUESTION)


def strands_agent_tool_stream(app):
    """The agent's event stream (``stream_async``), as a streaming UI consumes it."""
    import asyncio

    agent = _strands_agent(app)

    async def run():
        async for _ in agent.stream_async(QUESTION):
            pass

    with _agent_run(app, AGENT_NAME):
        asyncio.run(run())


def strands_agent_error(app):
    import openai

    with _agent_run(app, AGENT_NAME):
        try:
            _strands_agent(app, suffix="-429")(QUESTION)
        except Exception as error:  # strands wraps a rate limit in its ModelThrottledException
            if not isinstance(error.__cause__ or error, openai.RateLimitError) and "Rate limit" not in str(error):
                raise
            app.notes.append(f"the run raised {type(error).__module__}.{type(error).__name__}")
            return
    raise AssertionError("the fake server should have answered 429")


INSTRUMENT_B["strands"] = lambda tel: {}  # its spans are built in; it uses the global tracer provider


# --- fixtures B: agent runs as the app ran them, and Gemini bodies -----------------------------
class _agent_run:
    """Marks an agent run (or, ``workflow=True``, a workflow) the app makes: ``expected``'s
    ``agent_runs`` / ``workflows`` count them, and ``calls_by_agent`` counts the requests the
    fake server got while the run was in progress."""

    def __init__(self, app, name: str, workflow: bool = False):
        self.app, self.name, self.workflow = app, name, workflow

    def __enter__(self):
        self.first = len(self.app.server.requests)
        return self

    def __exit__(self, *exc):
        app = self.app
        if not hasattr(app, "runs_b"):
            app.runs_b = {"agent_runs": {}, "calls_by_agent": {}, "workflows": {}}
        if self.workflow:
            app.runs_b["workflows"][self.name] = app.runs_b["workflows"].get(self.name, 0) + 1
            return
        runs, calls = app.runs_b["agent_runs"], app.runs_b["calls_by_agent"]
        runs[self.name] = runs.get(self.name, 0) + 1
        calls[self.name] = calls.get(self.name, 0) + len(app.server.requests) - self.first


def _expected_runs(app) -> dict:
    return {k: dict(sorted(v.items())) for k, v in getattr(app, "runs_b", {}).items()}


def _is_gemini(path: str) -> bool:
    return ":generateContent" in path or ":streamGenerateContent" in path


def _gemini_exchange(path: str, objects: list, streamed: bool) -> dict:
    """A Gemini call: the model is in the path; a stream is SSE or one JSON array."""
    if len(objects) == 1 and isinstance(objects[0], list):  # streamGenerateContent without alt=sse
        objects, streamed = objects[0], True
    path = path.split("?", 1)[0]
    call = {"path": path, "request_model": path.split("/models/", 1)[1].split(":", 1)[0], "stream": streamed,
            "status": "ok", "response_model": None, "usage": None, "tool_calls": [], "finish_reasons": []}  # fmt: skip
    usage: dict = {}
    for obj in objects:
        if isinstance(obj.get("error"), dict):
            call["status"] = "error"
            call["error"] = {k: obj["error"].get(k) for k in ("code", "status") if obj["error"].get(k) is not None}
        call["response_model"] = obj.get("modelVersion") or call["response_model"]
        usage = obj.get("usageMetadata") or usage  # each chunk carries the running total
        for candidate in obj.get("candidates") or []:
            parts = (candidate.get("content") or {}).get("parts") or []
            call["tool_calls"] += [p["functionCall"]["name"] for p in parts if "functionCall" in p]
            if candidate.get("finishReason"):
                call["finish_reasons"].append(candidate["finishReason"])
    if usage:
        call["usage"] = usage
        call["tokens"] = _gemini_tokens(usage)
    return call


def _gemini_tokens(usage: dict) -> dict:
    """Gemini's counts in the GenAI meaning: promptTokenCount already includes the cached
    tokens; candidatesTokenCount excludes the thoughts, which GenAI output includes."""
    thoughts = usage.get("thoughtsTokenCount") or 0
    return {"input": usage.get("promptTokenCount") or 0,
            "output": (usage.get("candidatesTokenCount") or 0) + thoughts,
            "cache_read": usage.get("cachedContentTokenCount") or 0, "cache_write": 0, "reasoning": thoughts}


# === end of fixtures B (instrumentations and scenarios) ====================================


if __name__ == "__main__":
    sys.exit(main())
