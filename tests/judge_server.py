"""A real OpenAI-compatible chat-completions server on 127.0.0.1 that plays an LLM judge.

The first path segment picks the behaviour: ``/ok/v1`` answers the strict JSON verdict
with the scores in ``JudgeServer.scores``; ``/malformed/v1`` answers prose; ``/slow/v1``
sleeps ``slow_seconds`` first; ``/error/v1`` answers 503; ``/flaky/v1`` answers 503 once,
then a verdict. Every request body is kept in ``requests``.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    server: JudgeServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, status: int, body: dict | str) -> None:
        data = (json.dumps(body) if isinstance(body, dict) else body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        mode = self.path.strip("/").split("/")[0]
        with self.server.lock:
            self.server.requests.append((mode, request))
            hits = sum(1 for m, _ in self.server.requests if m == mode)
        if mode == "error" or (mode == "flaky" and hits == 1):
            return self._send(503, {"error": {"type": "server_error", "message": "overloaded"}})
        if mode == "slow":
            time.sleep(self.server.slow_seconds)
        user = request["messages"][-1]["content"]
        asked = [line[2:].split(":")[0] for line in user.split("\n") if line.startswith("- ")]
        verdict = {"scores": {m: self.server.scores.get(m, 0.5) for m in asked}, "reasons": {m: "ok" for m in asked}}
        content = "The answer looks fine to me." if mode == "malformed" else json.dumps(verdict)
        self._send(200, {
            "id": "chatcmpl-judge", "object": "chat.completion", "model": request["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 500, "completion_tokens": 40, "total_tokens": 540},
        })  # fmt: skip


class JudgeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, scores: dict[str, float] | None = None, slow_seconds: float = 2.0):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.scores = scores or {"groundedness": 0.9, "relevance": 0.8, "safety": 1.0}
        self.slow_seconds = slow_seconds
        self.requests: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{mode}/v1"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
