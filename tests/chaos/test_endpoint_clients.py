"""Hostile and careless clients of /metrics: idle TLS connections, half-sent and trickled
requests, a burst of hundreds of connections. Real endpoint, real sockets on 127.0.0.1.

Bounds are generous (the machine is shared); ``benchmarks/reliability.py`` prints the figures.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

import spanmeter
from spanmeter.endpoint import REQUEST_TIMEOUT
from tests.test_endpoint_security import pki  # noqa: F401  (the fixture)


def _meter(**kwargs):
    meter = spanmeter.setup(port=0, registry=CollectorRegistry(), tracer_provider=TracerProvider(), **kwargs)
    with meter.agent_run("chaos"):
        pass
    meter.state.flush()  # aggregate now rather than after reconciliation's window
    return meter


def _timed(fn) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """True when the server closes ``sock`` (EOF or reset) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except (socket.timeout, TimeoutError):
        return False


def test_an_idle_tls_client_blocks_neither_scrapes_nor_shutdown(pki):  # noqa: F811
    meter = _meter(tls_certfile=str(pki["server"]), tls_keyfile=str(pki["server_key"]))
    verify = ssl.create_default_context(cafile=str(pki["ca"]))
    idle = socket.create_connection(meter.address)  # connects, never says hello
    try:
        time.sleep(0.2)
        for _ in range(3):
            took = _timed(lambda: httpx.get(meter.metrics_url, verify=verify, timeout=10).raise_for_status())
            assert took < 2.0, f"a scrape waited {took:.1f} s behind an idle TLS client"
        # the idle client is dropped once its handshake deadline passes
        assert _closed_by_server(idle, REQUEST_TIMEOUT + 3)
    finally:
        second_idle = socket.create_connection(meter.address)
        took = _timed(meter.shutdown)
        second_idle.close()
        idle.close()
    assert took < 2.0, f"shutdown waited {took:.1f} s behind an idle TLS client"


def test_two_hundred_half_sent_requests_are_closed_and_do_not_block_scrapes():
    meter = _meter()
    baseline = threading.active_count()
    clients = []
    try:
        for _ in range(200):
            s = socket.create_connection(meter.address)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line: never complete
            clients.append(s)
        took = _timed(lambda: httpx.get(meter.metrics_url, timeout=10).raise_for_status())
        assert took < 2.0
        start = time.monotonic()
        assert all(_closed_by_server(s, REQUEST_TIMEOUT + 4 - (time.monotonic() - start)) for s in clients)
        deadline = time.monotonic() + 3
        while threading.active_count() > baseline + 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert threading.active_count() <= baseline + 5, "connection threads outlived their requests"
    finally:
        for s in clients:
            s.close()
        meter.shutdown()


def test_a_trickled_request_is_cut_at_the_request_deadline():
    meter = _meter()
    client = socket.create_connection(meter.address)
    try:
        start = time.monotonic()
        request = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200
        closed = False
        for byte in request:  # one byte every 0.25 s: each read is quick, the whole never ends
            try:
                client.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.25)
            if time.monotonic() - start > REQUEST_TIMEOUT + 3:
                break
        closed = closed or _closed_by_server(client, 1.0)
        assert closed, "a request trickled byte by byte held its connection past the deadline"
        assert time.monotonic() - start < REQUEST_TIMEOUT + 3
    finally:
        client.close()
        meter.shutdown()


def test_a_burst_of_two_hundred_connections_is_served_without_syn_retries():
    meter = _meter()
    barrier = threading.Barrier(200)
    results: list = []

    def scrape():
        barrier.wait()
        try:
            with socket.create_connection(meter.address, timeout=10) as s:
                s.sendall(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            results.append(data.startswith(b"HTTP/1.0 200"))
        except OSError as exc:
            results.append(exc)

    threads = [threading.Thread(target=scrape) for _ in range(200)]
    try:
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        took = time.monotonic() - start
    finally:
        meter.shutdown()
    assert results == [True] * 200
    # A listen backlog of 5 makes part of such a burst wait out 1 s, 3 s, 7 s SYN retries.
    assert took < 5.0, f"200 concurrent scrapes took {took:.1f} s"


@pytest.mark.parametrize("scheme", ["Basic", "basic", "BASIC"])
def test_the_basic_scheme_is_case_insensitive(scheme):
    import base64

    meter = _meter(basic_auth=("prometheus", "s3cret"))
    try:
        token = base64.b64encode(b"prometheus:s3cret").decode()
        ok = httpx.get(meter.metrics_url, headers={"Authorization": f"{scheme} {token}"}, timeout=10)
        wrong = base64.b64encode(b"prometheus:wrong").decode()
        denied = httpx.get(meter.metrics_url, headers={"Authorization": f"{scheme} {wrong}"}, timeout=10)
        bearer = httpx.get(meter.metrics_url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    finally:
        meter.shutdown()
    assert ok.status_code == 200 and "agent_requests_total" in ok.text
    assert denied.status_code == 401 and bearer.status_code == 401


def test_basic_auth_over_plain_http_beyond_loopback_warns(caplog):
    common = {"start_server": False, "registry": CollectorRegistry(), "tracer_provider": TracerProvider()}
    with caplog.at_level("WARNING", logger="spanmeter"):
        spanmeter.setup(host="192.0.2.10", basic_auth=("prometheus", "s3cret"), **common).shutdown()
    assert any("clear text" in r.getMessage() and "192.0.2.10" in r.getMessage() for r in caplog.records)
    assert not any("s3cret" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="spanmeter"):
        spanmeter.setup(host="127.0.0.1", basic_auth=("prometheus", "s3cret"), **common).shutdown()
    assert not any("clear text" in r.getMessage() for r in caplog.records)


def test_connections_beyond_the_cap_are_closed_at_once_and_the_cap_frees_up():
    from spanmeter import endpoint

    registry = CollectorRegistry()
    server = endpoint.serve(registry, "127.0.0.1", 0, request_timeout=1.0, max_connections=3)
    address = server.server_address[:2]
    held = [socket.create_connection(address) for _ in range(3)]  # idle: each holds a slot
    try:
        time.sleep(0.2)
        extra = socket.create_connection(address)
        start = time.monotonic()
        assert _closed_by_server(extra, 0.5), "a connection beyond the cap was kept waiting"
        assert time.monotonic() - start < 0.5
        extra.close()
        assert all(_closed_by_server(s, 3.0) for s in held)  # the idle ones time out...
        time.sleep(0.1)
        response = httpx.get(f"http://127.0.0.1:{address[1]}/metrics", timeout=10)  # ...and free their slots
        assert response.status_code == 200
    finally:
        for s in held:
            s.close()
        server.shutdown()
        server.server_close()
