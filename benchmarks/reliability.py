"""Reliability figures: how long a scrape and a shutdown take when a peer misbehaves.

- scrape time while one TLS client holds a connection open and sends nothing;
- ``shutdown()`` time with OTLP push (metrics and spans) to a Collector that accepts and
  never answers ("silent") and to a port nothing listens on ("unreachable");
- exit time of a process that configured spanmeter that way and never called shutdown.

Run (from the checkout): ``PYTHONPATH=src:. python benchmarks/reliability.py``. Each
figure is capped (``CAP`` seconds) so a hang shows as ``>= CAP`` instead of hanging.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

import spanmeter

CAP = 60.0


def silent_server() -> tuple[socket.socket, list]:
    """A TCP server on 127.0.0.1 that accepts every connection and never answers."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    held: list = []

    def accept():
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return listener, held


def unreachable_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pki(root: Path) -> tuple[str, str, str]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.test_endpoint_security import _issue
    from cryptography.hazmat.primitives import serialization

    ca_key, ca = _issue("bench CA", ca=True)
    key, cert = _issue("server", ca_key, ca.subject)
    (root / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (root / "s.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (root / "s-key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))  # fmt: skip
    return str(root / "s.pem"), str(root / "s-key.pem"), str(root / "ca.pem")


def scrape_with_idle_tls_client() -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cert, key, ca = _pki(Path(tmp))
        meter = spanmeter.setup(port=0, registry=CollectorRegistry(), tracer_provider=TracerProvider(),
                                tls_certfile=cert, tls_keyfile=key)  # fmt: skip
        idle = socket.create_connection(meter.address)  # connects, sends nothing
        time.sleep(0.2)
        start = time.perf_counter()
        try:
            httpx.get(meter.metrics_url, verify=ssl.create_default_context(cafile=ca), timeout=CAP)
            scrape = time.perf_counter() - start
        except httpx.HTTPError:
            scrape = CAP
        done = threading.Event()
        start = time.perf_counter()
        threading.Thread(target=lambda: (meter.shutdown(), done.set()), daemon=True).start()
        closed = time.perf_counter() - start if done.wait(CAP) else CAP
        idle.close()
        return scrape, closed


_CHILD = """
import sys, time, spanmeter
spanmeter.configure(prometheus=False, otlp=True, otlp_spans=True, otlp_endpoint=sys.argv[1])
with spanmeter.agent_run("bench"):
    pass
{end}
"""


def _child(endpoint: str, end: str) -> float:
    start = time.perf_counter()
    try:
        subprocess.run([sys.executable, "-c", _CHILD.format(end=end), endpoint], timeout=CAP,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    except subprocess.TimeoutExpired:
        return CAP
    return time.perf_counter() - start


def main() -> int:
    scrape, closed = scrape_with_idle_tls_client()
    print(f"TLS endpoint, one idle client: scrape {scrape:.2f} s, shutdown {closed:.2f} s")
    listener, _ = silent_server()
    silent = f"http://127.0.0.1:{listener.getsockname()[1]}"
    unreachable = f"http://127.0.0.1:{unreachable_port()}"
    start = time.perf_counter()  # interpreter start and imports alone, for reference
    subprocess.run([sys.executable, "-c", "import spanmeter, opentelemetry.exporter.otlp.proto.http.trace_exporter"],
                   check=True)  # fmt: skip
    baseline = time.perf_counter() - start
    for name, endpoint in (("silent", silent), ("unreachable", unreachable)):
        timed = "t = time.perf_counter(); spanmeter.shutdown(); print(time.perf_counter() - t)"
        out = subprocess.run([sys.executable, "-c", _CHILD.format(end=timed), endpoint], capture_output=True,
                             text=True, timeout=CAP * 2)  # fmt: skip
        shutdown = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "?"
        exit_time = _child(endpoint, "")
        print(f"OTLP push to a {name} Collector: shutdown() {float(shutdown):.2f} s; a process exiting without "
              f"shutdown() {exit_time:.2f} s in all (its start-up alone: {baseline:.2f} s)")
    listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
