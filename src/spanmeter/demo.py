"""``spanmeter demo``: a fake OpenAI-compatible LLM server and a workload of agents.

Everything runs on loopback in this process: a real HTTP server speaking the OpenAI
chat-completions wire format (latency per model, some slow calls, some rate limits,
streamed answers as server-sent events), three agents that call it over real HTTP under
spanmeter's emit API, tools that sometimes fail or time out, conversations that end or get
escalated, an LLM judge (the same server, answering the judge's rubric with scores that
differ by agent: billing's groundedness sits below the 0.7 alert threshold), and
spanmeter's ``/metrics`` endpoint.
"""

from __future__ import annotations

import contextlib

import json
import random
import shutil
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# --- the fake LLM server ------------------------------------------------------------


@dataclass(frozen=True)
class ModelProfile:
    latency: float  # typical seconds per call
    reasoning: bool = False


MODELS = {
    "gpt-4o-mini": ModelProfile(0.15),
    "gpt-4o": ModelProfile(0.45),
    "claude-sonnet-4-5": ModelProfile(0.6),
    "o3-mini": ModelProfile(1.2, reasoning=True),
    "acme-billing-ft": ModelProfile(0.25),  # a private fine-tune: no public price, so unpriced
}
#: The judge's scores by agent (criterion -> typical score), with a little noise.
JUDGE_SCORES = {
    "support": {"groundedness": 0.91, "relevance": 0.88, "safety": 0.99},
    "research": {"groundedness": 0.8, "relevance": 0.84, "safety": 0.97},
    "billing": {"groundedness": 0.64, "relevance": 0.78, "safety": 0.98},
}
JUDGE_SHARE = 0.3  # runs the demo's LLM judge scores
SLOW_SHARE = 0.05  # calls that take six times longer
RATE_LIMIT_SHARE = 0.02
SERVER_ERROR_SHARE = 0.01


class _LLMHandler(BaseHTTPRequestHandler):
    server: FakeLLMServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # quiet
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        try:
            request = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return self._send(400, {"error": {"type": "invalid_request_error", "message": "body is not JSON"}})
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            return self._send(404, {"error": {"type": "not_found", "message": self.path}})
        status, body = self.server.complete(request)
        if status == 200 and request.get("stream"):
            return self._stream(body)
        self._send(status, body)

    def _stream(self, body: dict) -> None:
        """The completion as OpenAI server-sent events: content deltas, then the usage chunk."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        base = {"id": body["id"], "object": "chat.completion.chunk", "created": body["created"], "model": body["model"]}
        words = body["choices"][0]["message"]["content"].split(" ")[:20] or [""]
        events = [{**base, "choices": [{"index": 0, "delta": {"content": w + " "}, "finish_reason": None}]}
                  for w in words]  # fmt: skip
        events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        events.append({**base, "choices": [], "usage": body["usage"]})
        for event in events:
            data = f"data: {json.dumps(event)}\n\n".encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
            time.sleep(0.005 * self.server.time_scale)
        done = b"data: [DONE]\n\n"
        self.wfile.write(f"{len(done):x}\r\n".encode() + done + b"\r\n0\r\n\r\n")


class FakeLLMServer(ThreadingHTTPServer):
    """An OpenAI-compatible chat-completions server on 127.0.0.1 with scripted behaviour."""

    daemon_threads = True

    def __init__(self, port: int = 0, *, seed: int = 7, time_scale: float = 1.0):
        super().__init__(("127.0.0.1", port), _LLMHandler)
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self.time_scale = time_scale

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def start(self) -> FakeLLMServer:
        threading.Thread(target=self.serve_forever, name="fake-llm", daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def complete(self, request: dict) -> tuple[int, dict]:
        if (request.get("response_format") or {}).get("type") == "json_object":
            return 200, self._judge(request)
        model = str(request.get("model", "gpt-4o-mini"))
        profile = MODELS.get(model, ModelProfile(0.3))
        with self._rng_lock:
            roll = self._rng.random()
            jitter = self._rng.lognormvariate(0.0, 0.35)
            slow = self._rng.random() < SLOW_SHARE
            cached_share = self._rng.choice((0.0, 0.0, 0.5, 0.8))
            out_tokens = self._rng.randint(40, 400)
        if roll < RATE_LIMIT_SHARE:
            time.sleep(0.02 * self.time_scale)
            return 429, {"error": {"type": "rate_limit_error", "code": "rate_limit_exceeded",
                                   "message": "Rate limit reached"}}  # fmt: skip
        if roll < RATE_LIMIT_SHARE + SERVER_ERROR_SHARE:
            return 500, {"error": {"type": "server_error", "message": "The server had an error"}}
        time.sleep(profile.latency * jitter * (6 if slow else 1) * self.time_scale)
        prompt = sum(len(str(m.get("content", ""))) for m in request.get("messages", []))
        prompt_tokens = 200 + prompt // 4
        reasoning = out_tokens * 2 if profile.reasoning else 0
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": out_tokens + reasoning,
            "total_tokens": prompt_tokens + out_tokens + reasoning,
            "prompt_tokens_details": {"cached_tokens": int(prompt_tokens * cached_share)},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }
        return 200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": f"{model}-2025-01-01",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "ok " * (out_tokens // 10)}}],
            "usage": usage,
        }  # fmt: skip


    def _judge(self, request: dict) -> dict:
        """A verdict in the strict JSON the built-in LLM judge asks for."""
        prompt = str(request["messages"][-1].get("content", ""))
        criteria = [line[2:].split(":")[0] for line in prompt.splitlines() if line.startswith("- ")]
        agent = next((a for a in JUDGE_SCORES if f"my {a} question" in prompt), "support")
        with self._rng_lock:
            scores = {c: round(min(1.0, max(0.0, JUDGE_SCORES[agent].get(c, 0.8) + self._rng.gauss(0, 0.04))), 2)
                      for c in criteria}  # fmt: skip
        time.sleep(0.2 * self.time_scale)
        verdict = {"scores": scores, "reasons": {c: "demo verdict" for c in criteria}}
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
            "model": f"{request.get('model')}-2025-01-01",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": json.dumps(verdict)}}],
            "usage": {"prompt_tokens": 350 + len(prompt) // 4, "completion_tokens": 60, "total_tokens": 410},
        }  # fmt: skip


# --- the agents ----------------------------------------------------------------------


@dataclass(frozen=True)
class ToolProfile:
    latency: float
    error_share: float
    timeout_share: float


@dataclass(frozen=True)
class AgentProfile:
    models: tuple[str, ...]
    tools: dict[str, ToolProfile]
    max_steps: int
    escalation_share: float


AGENTS = {
    "support": AgentProfile(
        ("gpt-4o-mini", "gpt-4o"),
        {"search_orders": ToolProfile(0.05, 0.02, 0.01), "lookup_kb": ToolProfile(0.12, 0.01, 0.0),
         "issue_refund": ToolProfile(0.3, 0.12, 0.03)},
        3, 0.12),
    "research": AgentProfile(
        ("gpt-4o", "o3-mini"),
        {"web_search": ToolProfile(0.4, 0.04, 0.06), "fetch_page": ToolProfile(0.2, 0.08, 0.02)},
        4, 0.02),
    "billing": AgentProfile(
        ("claude-sonnet-4-5", "acme-billing-ft"),
        {"get_invoice": ToolProfile(0.08, 0.01, 0.0), "charge_card": ToolProfile(0.5, 0.05, 0.05)},
        2, 0.2),
}  # fmt: skip
TOOL_TIMEOUT = 1.0  # seconds a tool may take before it is abandoned


class ProviderError(Exception):
    """An error response from the LLM server."""

    def __init__(self, status: int, code: str):
        super().__init__(f"HTTP {status}: {code}")
        self.status = status
        self.code = code


def chat(base_url: str, model: str, messages: list[dict], timeout: float = 30.0, *, on_first_chunk=None) -> dict:
    """POST a chat completion over real HTTP; raise ProviderError on an error response.

    With ``on_first_chunk``, the answer is streamed (server-sent events, usage in the last
    chunk): it is called when the first chunk arrives, and the chunks are put back together.
    """
    payload: dict[str, object] = {"model": model, "messages": messages}
    if on_first_chunk is not None:
        payload.update(stream=True, stream_options={"include_usage": True})
    request = urllib.request.Request(
        f"{base_url}/chat/completions", data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if on_first_chunk is None:
                return json.loads(response.read())
            return _read_stream(response, on_first_chunk)
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read()).get("error", {})
        except ValueError:
            error = {}
        raise ProviderError(exc.code, str(error.get("code") or error.get("type") or exc.code)) from None


def _read_stream(response, on_first_chunk) -> dict:
    content, usage, finish, model = [], None, "stop", None
    for raw in response:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line[6:])
        if model is None:
            on_first_chunk()
        model = event.get("model", model)
        usage = event.get("usage") or usage
        for choice in event.get("choices", []):
            content.append(choice.get("delta", {}).get("content") or "")
            finish = choice.get("finish_reason") or finish
    return {"model": model, "usage": usage,
            "choices": [{"finish_reason": finish, "message": {"content": "".join(content)}}]}  # fmt: skip


@dataclass
class Tally:
    """What the workload did, for the progress line."""

    runs: dict[str, int] = field(default_factory=lambda: {"success": 0, "error": 0, "timeout": 0})
    model_calls: int = 0
    tool_calls: int = 0
    tokens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **kwargs) -> None:
        with self.lock:
            for key, value in kwargs.items():
                if key in self.runs:
                    self.runs[key] += value
                else:
                    setattr(self, key, getattr(self, key) + value)

    def line(self, elapsed: float) -> str:
        r = self.runs
        return (
            f"[{elapsed:6.1f}s] runs {sum(r.values())} (ok {r['success']}, error {r['error']}, "
            f"timeout {r['timeout']}) | model calls {self.model_calls} | tool calls {self.tool_calls} "
            f"| tokens {self.tokens:,}"
        )


#: The demo's tenants (configure(attribution={"tenant": TENANT_ATTRIBUTE}): who spends).
TENANTS = ("acme", "globex", "initech")
TENANT_ATTRIBUTE = "demo.tenant_id"


class Workload:
    """Agent runs against the fake server, instrumented with a :class:`~spanmeter.Spanmeter`."""

    def __init__(self, meter, base_url: str, *, seed: int = 11, time_scale: float = 1.0):
        self.meter = meter
        self.base_url = base_url
        self.time_scale = time_scale
        self.tally = Tally()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._conversations: dict[str, tuple[str, int]] = {}  # id -> (agent, turns)
        self._busy: set[str] = set()  # conversations in a turn now
        self._tenants = random.Random(seed + 1)  # its own: the workload's draws stay as they were
        self._approvals = random.Random(seed + 2)  # the same for tool-call decisions

    def _roll(self) -> float:
        with self._lock:
            return self._rng.random()

    def _pick(self, options):
        with self._lock:
            return self._rng.choice(list(options))

    def run_once(self, agent: str | None = None) -> str:
        """One agent run (a turn of a conversation); returns its status."""
        agent = agent or self._pick(AGENTS)
        profile = AGENTS[agent]
        conversation = self._conversation(agent)
        status = "success"
        try:
            with self._workflow(agent), self.meter.agent_run(agent, conversation_id=conversation) as run:
                with self._lock:
                    run.set_attribute(TENANT_ATTRIBUTE, self._tenants.choice(TENANTS))
                question = f"help me with my {agent} question " * 5
                run.record_input(question)
                answer = self._steps(agent, profile, question, run)
                run.record_output(answer)
                self._maybe_end_conversation(conversation, profile, run)
        except TimeoutError:
            status = "timeout"
        except Exception:
            status = "error"
        finally:
            with self._lock:
                self._busy.discard(conversation)
        self.tally.add(**{status: 1})
        return status

    def _workflow(self, agent: str):
        """Research runs inside a workflow span (GenAI ``invoke_workflow``), as orchestration
        frameworks emit them: the workflow metrics get data."""
        if agent != "research":
            return contextlib.nullcontext()
        tracer = self.meter.tracer_provider.get_tracer("spanmeter.demo")
        return tracer.start_as_current_span(
            "invoke_workflow research_pipeline",
            attributes={"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": "research_pipeline"},
        )

    def _steps(self, agent: str, profile: AgentProfile, question: str, run) -> str:
        messages = [{"role": "user", "content": question}]
        steps = 1 + int(self._roll() * profile.max_steps)
        answer = ""
        for step in range(steps):
            model = profile.models[0] if self._roll() < 0.75 else profile.models[-1]
            answer = self._model(model, messages, stream=agent == "research")
            if step < steps - 1:
                tool = self._pick(profile.tools)
                try:
                    self._tool(tool, profile.tools[tool])
                except TimeoutError:
                    if self._roll() < 0.5:  # half the time the agent gives up
                        raise
                result = f"result of {tool} " * 20
                run.add_context(result)
                messages.append({"role": "tool", "content": result})
        return answer

    def _model(self, model: str, messages: list[dict], stream: bool = False) -> str:
        provider = "acme" if model.startswith("acme-") else "openai"
        with self.meter.model_call(model, provider=provider, stream=stream) as call:
            self.tally.add(model_calls=1)
            try:
                response = chat(self.base_url, model, messages,
                                on_first_chunk=call.record_first_chunk if stream else None)  # fmt: skip
            except ProviderError as exc:
                call.fail(exc.code)
                raise
            usage = response["usage"]
            call.record_usage(
                input_tokens=usage["prompt_tokens"],
                output_tokens=usage["completion_tokens"],
                cache_read_tokens=usage["prompt_tokens_details"]["cached_tokens"],
                reasoning_tokens=usage["completion_tokens_details"]["reasoning_tokens"],
            )
            call.record_response(
                model=response["model"], finish_reasons=[c["finish_reason"] for c in response["choices"]]
            )
            self.tally.add(tokens=usage["prompt_tokens"] + usage["completion_tokens"])
            return response["choices"][0]["message"]["content"]

    def _tool(self, tool: str, profile: ToolProfile) -> None:
        with self.meter.tool_call(tool, tool_type="function") as call:
            self.tally.add(tool_calls=1)
            # a policy decides before the tool runs: a few calls wait for a human's approval
            with self._lock:
                approval = self._approvals.random() < 0.05
            call.record_decision("require_approval" if approval else "allow")
            roll = self._roll()
            if roll < profile.timeout_share:
                time.sleep(TOOL_TIMEOUT * self.time_scale)
                raise TimeoutError(f"{tool} did not answer in {TOOL_TIMEOUT}s")
            time.sleep(profile.latency * (0.5 + self._roll()) * self.time_scale)
            if roll < profile.timeout_share + profile.error_share:
                raise RuntimeError(f"{tool} failed")

    def _conversation(self, agent: str) -> str:
        """An open conversation of ``agent`` not in a turn now (turns are sequential), or a new one."""
        with self._lock:
            for cid, (owner, _turns) in self._conversations.items():
                if owner == agent and cid not in self._busy and self._rng.random() < 0.6:
                    break
            else:
                cid = uuid.uuid4().hex
                self._conversations[cid] = (agent, 0)
            self._busy.add(cid)
            return cid

    def _maybe_end_conversation(self, cid: str, profile: AgentProfile, run) -> None:
        """This turn may be the conversation's last (handed to a human, sometimes)."""
        with self._lock:
            agent, turns = self._conversations[cid]
            turns += 1
            if self._rng.random() < 0.35 or turns >= 12:
                del self._conversations[cid]
                escalated = self._rng.random() < profile.escalation_share
            else:
                self._conversations[cid] = (agent, turns)
                return
        run.end_conversation(escalated=escalated)


def run_demo(
    *,
    duration: float = 0.0,
    rate: float = 4.0,
    host: str | None = None,
    port: int | None = None,
    prometheus: bool = False,
    out=print,
) -> int:
    """Serve metrics and drive the workload until ``duration`` seconds or Ctrl-C.

    ``prometheus=True`` also starts a real Prometheus (the ``prometheus`` binary on PATH)
    on 127.0.0.1 with spanmeter's scrape config and rules (package data), stopped on exit.
    """
    import spanmeter

    llm = FakeLLMServer().start()
    judge = spanmeter.LLMJudge(base_url=llm.base_url, model="gpt-4o-mini", timeout=10.0)
    try:
        meter = spanmeter.configure(service_name="spanmeter-demo", host=host, port=port,
                                    evaluator=spanmeter.Evaluator(judge, sample_rate=JUDGE_SHARE),
                                    attribution={"tenant": TENANT_ATTRIBUTE})  # fmt: skip
    except Exception:
        llm.stop()
        raise
    workload = Workload(meter, llm.base_url)
    assert meter.address is not None and meter.metrics_url is not None  # configure() serves by default
    mhost, mport = meter.address
    prom = None
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="agent")
    started = time.monotonic()
    try:
        for line in banner(meter.metrics_url, llm.base_url, rate, duration):
            out(line)
        prom = _start_prometheus(f"{mhost}:{mport}", out) if prometheus else None
        if prom is None:
            out("  scrape it from Prometheus with:")
            out("    scrape_configs:")
            out("      - job_name: spanmeter-demo")
            out(f'        static_configs: [{{targets: ["{mhost}:{mport}"]}}]')
        out(f"  {rate:g} agent runs/s" + (f" for {duration:g}s" if duration else "") + "; Ctrl-C stops.")
        started = time.monotonic()
        _drive(workload, pool, stop, started, duration, rate, out)
    except KeyboardInterrupt:
        out("stopping (Ctrl-C) ...")
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        try:
            out(workload.tally.line(time.monotonic() - started))
        finally:
            spanmeter.shutdown()
            llm.stop()
            if prom is not None:
                prom.stop()
        out("stopped.")
    return 0


def banner(metrics_url: str, llm_url: str, rate: float, duration: float) -> list[str]:
    """What the demo is and what in its numbers is on purpose."""
    return [
        "spanmeter demo",
        f"  metrics : {metrics_url}",
        f"  fake LLM: {llm_url} (OpenAI chat completions, on loopback; slow calls, rate limits, server errors)",
        f"  agents  : support, research, billing, {rate:g} runs/s together; their tools sometimes fail or time out",
        f"  judge   : {JUDGE_SHARE:.0%} of runs are scored by spanmeter's LLM judge against the same server; the judge",
        "            meters its own calls as the agent `spanmeter-judge`, so agent runs and model calls per",
        "            second exceed --rate: that is the judge's traffic, and its cost shows in the cost metrics",
        "  unpriced: billing's `acme-billing-ft` is a private fine-tune with no public price, on purpose: its calls",
        "            count in agent_unpriced_calls_total (not as $0), and the AgentUnpricedSpend alert goes",
        "            pending (firing after 5 minutes); a price file (configure(prices=...)) would price it",
    ]


def _drive(workload: Workload, pool: ThreadPoolExecutor, stop: threading.Event, started: float,
           duration: float, rate: float, out) -> None:  # fmt: skip
    """Submit ``rate`` runs per second until ``duration`` (0: forever); a progress line every 2 s."""
    next_line = started + 2.0
    interval = 1.0 / rate if rate > 0 else 1.0
    next_run = started
    while not stop.is_set():
        now = time.monotonic()
        if duration and now - started >= duration:
            break
        if now >= next_run:
            pool.submit(workload.run_once)
            next_run += interval
        if now >= next_line:
            out(workload.tally.line(now - started))
            next_line += 2.0
        time.sleep(min(0.05, max(0.0, next_run - time.monotonic())))


def _start_prometheus(target: str, out):
    """A real Prometheus scraping ``target`` every 5 s with spanmeter's rules (package data), or None."""
    from spanmeter import assets as _assets
    from spanmeter.prometheus import LocalPrometheus, PrometheusError

    if shutil.which("prometheus") is None:
        out("  prometheus: no `prometheus` binary on PATH (Debian: apt-get install prometheus); skipped")
        return None
    try:
        assets = _assets.directory("prometheus")
        dashboard = _assets.files("grafana")[0]
    except (FileNotFoundError, IndexError) as exc:
        out(f"  prometheus: {exc or 'no dashboard'}; skipped")
        return None
    try:
        prom = LocalPrometheus(assets, target, scrape_interval="5s", evaluation_interval="5s",
                               flags=("--enable-feature=exemplar-storage",)).start()  # latency spikes link to traces
    except PrometheusError as exc:
        out(f"  prometheus: could not start: {exc}")
        return None
    out(f"  prometheus: {prom.url} (scrapes every 5s, rules from {assets}; stopped on exit)")
    out(f"  dashboard : import {dashboard} into Grafana,")
    out(f"              with a Prometheus data source at {prom.url}")
    return prom
