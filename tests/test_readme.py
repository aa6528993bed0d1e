"""The README's Quickstart, Cost and Sampling sections, run as written: their Python blocks in a fresh
process whose real openai SDK talks to the fake OpenAI API (tests/fake_providers.py), their
price file and shell commands through the real CLI; then the metrics they produce, scraped
from the endpoint the Quickstart's configure() serves."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from tests.conftest import Scrape
from tests.fake_providers import FakeProviders

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
QUICKSTART, COST = "Quickstart for an agent app", "Cost"


def section(title: str) -> str:
    """The text of a level-2 section of the README, its subsections included."""
    text = README.read_text("utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README has no section '## {title}'"
    return match.group(1)


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.M | re.S)


# Runs in a fresh process (configure() and the httpx instrumentation are process-wide): the
# README's blocks in order in one namespace, then one more turn of a new conversation (with
# the httpx hooks now installed: still one call) and one bare SDK call outside any run
# (counted by the hooks alone); then one scrape of the endpoint configure() serves.
HARNESS = """
import json, sys
import httpx
namespace = {"__name__": "__readme__"}
for n, block in enumerate(json.load(open(sys.argv[1]))):
    exec(compile(block, f"README.md python block {n + 1}", "exec"), namespace)
namespace["answer"]("One more thing.", customer="c-42", conversation_id="conv-2")
namespace["client"].chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
import spanmeter
spanmeter.current().state.flush()  # no waiting for reconciliation's one-second window
sys.stdout.write(httpx.get(spanmeter.current().metrics_url, timeout=10).text)
spanmeter.shutdown()
"""


def run_cli(line: str, cwd: Path) -> str:
    """A README shell line (``spanmeter ...``) through this checkout's CLI; its output."""
    argv = shlex.split(line, comments=True)
    assert argv[0] == "spanmeter", line
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "spanmeter", *argv[1:]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, f"{line}: {done.stdout}{done.stderr}"
    return done.stdout


def prices_per_million(output: str) -> dict[str, float]:
    """The rates `spanmeter prices MODEL` prints, by token type."""
    return {m[1]: float(m[2]) for m in re.finditer(r"^  (\w+)\s+([\d.]+)$", output, re.M)}


@pytest.fixture(scope="module")
def cost_section(tmp_path_factory) -> dict[str, str]:
    """Every shell line of the Cost section run, next to its price file; outputs by line."""
    workdir = tmp_path_factory.mktemp("readme-cost")
    text = section(COST)
    (toml,) = blocks(text, "toml")
    assert "configure(prices=\"prices.toml\")" in toml
    (workdir / "prices.toml").write_text(toml, "utf-8")
    lines = [line for block in blocks(text, "sh") for line in block.splitlines() if line.strip()]
    assert lines, "the Cost section has no shell commands"
    return {line: run_cli(line, workdir) for line in lines}


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory) -> tuple[Scrape, FakeProviders]:
    python = blocks(section(QUICKSTART), "python")
    assert len(python) >= 2, "the Quickstart's Python blocks were not found"
    path = tmp_path_factory.mktemp("readme-quickstart") / "blocks.json"
    path.write_text(json.dumps(python), "utf-8")
    with FakeProviders() as providers:
        env = dict(os.environ, OPENAI_BASE_URL=providers.url + "/v1", OPENAI_API_KEY="test-key",
                   OTEL_EXPORTER_PROMETHEUS_PORT="0",  # the Quickstart's configure() on a free port
                   PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]))  # fmt: skip
        for key in ("OTEL_EXPORTER_PROMETHEUS_HOST", "OTEL_SERVICE_NAME", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
            env.pop(key, None)
        done = subprocess.run([sys.executable, "-c", HARNESS, str(path)], env=env, capture_output=True, text=True,
                              timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return Scrape(done.stdout), providers


def test_quickstart_counts_one_conversation_once(quickstart):
    scrape, _ = quickstart
    assert scrape.value("agent_conversations_total", agent_name="support") == 1
    assert scrape.value("agent_conversation_turns_count", agent_name="support") == 1
    assert scrape.value("agent_conversation_turns_sum", agent_name="support") == 2
    assert scrape.value("spanmeter_conversations_ended_total", reason="app") == 1
    assert scrape.total("spanmeter_conversations_ended_total") == 1
    assert scrape.value("spanmeter_open_conversations") == 1  # conv-2, still open
    assert scrape.value("agent_escalations_total", agent_name="support") == 0


def test_quickstart_runs_calls_and_tokens(quickstart):
    scrape, providers = quickstart
    usage = providers.usage
    turns = 3  # two in the README, one more after it
    assert scrape.value("agent_requests_total", agent_name="support", status="success") == turns
    assert scrape.value("agent_tool_calls_total", agent_name="support", tool_name="search_orders",
                        status="success") == turns  # fmt: skip
    # each call once, also with the httpx hooks of the zero-code block installed
    assert scrape.value("model_inference_calls_total", agent_name="support", model_id="gpt-4o") == turns
    assert scrape.value("model_inference_calls_total", agent_name="unknown", model_id="gpt-4o-mini") == 1
    assert len([p for p, _ in providers.requests if p.endswith("/chat/completions")]) == turns + 1
    tokens = {t: scrape.value("agent_token_usage_total", agent_name="support", model_id="gpt-4o", token_type=t)
              for t in ("input", "output", "cache_read")}  # fmt: skip
    assert tokens == {"input": turns * usage.input, "output": turns * usage.output,
                      "cache_read": turns * usage.cache_read}  # fmt: skip
    assert scrape.value("agent_quality_score", agent_name="support", metric_type="groundedness") == 0.91


def test_quickstart_cost_is_the_price_the_cost_section_shows(quickstart, cost_section):
    scrape, providers = quickstart
    usage = providers.usage
    (shown,) = [out for line, out in cost_section.items() if line.startswith("spanmeter prices gpt-4o")]
    rate = prices_per_million(shown)
    per_call = ((usage.input - usage.cache_read) * rate["input"] + usage.cache_read * rate["cache_read"]
                + usage.output * rate["output"]) / 1e6  # fmt: skip
    cost = scrape.value("agent_estimated_cost_dollars_total", agent_name="support", model_id="gpt-4o")
    assert cost == pytest.approx(3 * per_call, rel=1e-12)
    assert scrape.total("agent_unpriced_calls_total") == 0


def test_cost_section_price_file_is_valid_and_applies_its_latest_entry(cost_section):
    (override,) = [out for line, out in cost_section.items() if "acme-ft-1" in line]
    rate = prices_per_million(override)
    # the file's second acme-ft-1 entry is in force from 2026-07-01 (UTC) on
    latest = datetime.now(timezone.utc).date() >= date(2026, 7, 1)
    assert (rate["input"], rate["output"]) == ((4.0, 16.0) if latest else (3.0, 12.0))
    assert any("--check" in line for line in cost_section)


SAMPLING_HARNESS = """
import json, sys
import httpx
namespace = {"__name__": "__readme__"}
for n, block in enumerate(json.load(open(sys.argv[1]))):
    exec(compile(block, f"README.md Sampling block {n + 1}", "exec"), namespace)
import spanmeter
from opentelemetry import trace
for _ in range(200):
    with spanmeter.agent_run("support"):
        with spanmeter.model_call("gpt-4o", provider="openai") as call:
            call.record_usage(input_tokens=10, output_tokens=2)
print(trace.get_tracer_provider().sampler.get_description(), file=sys.stderr)
spanmeter.current().state.flush()  # no waiting for reconciliation's one-second window
sys.stdout.write(httpx.get(spanmeter.current().metrics_url, timeout=10).text)
spanmeter.shutdown()
"""


def test_sampling_section_installs_keep_genai_and_counts_every_run(tmp_path):
    python = blocks(section("Sampling"), "python")
    assert python, "the Sampling section has no Python block"
    path = tmp_path / "blocks.json"
    path.write_text(json.dumps(python), "utf-8")
    env = dict(os.environ, OTEL_EXPORTER_PROMETHEUS_PORT="0",
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))  # fmt: skip
    done = subprocess.run([sys.executable, "-c", SAMPLING_HARNESS, str(path)], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "KeepGenAI{ParentBased{root:TraceIdRatioBased{0.1}" in done.stderr
    scrape = Scrape(done.stdout)
    assert scrape.value("agent_requests_total", agent_name="support", status="success") == 200
    assert scrape.value("model_inference_calls_total", agent_name="support", model_id="gpt-4o") == 200
