"""An LLM judge whose server trickles its answer (one byte a second, each read well within
httpx's per-read timeout) is cut at the judge's total deadline. Real HTTP over 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from opentelemetry.sdk.trace import TracerProvider

from spanmeter.quality import JudgeError, LLMJudge, Sample

TIMEOUT = 3.0


class TricklingServer:
    """Reads a request, then answers one byte per ``interval`` seconds (``phase``: from the
    status line on, or after complete headers announcing a long body)."""

    def __init__(self, phase: str, interval: float = 1.0):
        self.phase = phase
        self.interval = interval
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1"

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn):
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            body = b'{"choices": [{"message": {"content": "{}"}}]}' + b" " * 1000
            head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            if self.phase == "body":
                conn.sendall(head)
                head = b""
            try:
                for byte in head + body:
                    if self.stop.wait(self.interval):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                return

    def close(self):
        self.stop.set()
        self.listener.close()


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_a_trickling_judge_times_out_at_its_total_deadline(phase):
    server = TricklingServer(phase)
    judge = LLMJudge(base_url=server.url, model="judge-model", timeout=TIMEOUT, retries=0,
                     tracer_provider=TracerProvider())  # fmt: skip
    try:
        start = time.monotonic()
        with pytest.raises(JudgeError) as error:
            judge(Sample(agent_name="support", trace_id=1, input="q", output="a"))
        took = time.monotonic() - start
    finally:
        judge.close()
        server.close()
    assert error.value.reason == "timeout"
    assert took < TIMEOUT + 2.0, f"the judge call took {took:.1f} s with a {TIMEOUT} s timeout"
