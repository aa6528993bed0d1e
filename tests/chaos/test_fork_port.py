"""A forked worker pool does not keep the parent's /metrics port: scrapes go to the parent
while it serves, are refused once it stopped, and the port can be served again at once.
Real ``multiprocessing.Pool`` (fork start method), real sockets on 127.0.0.1."""

from __future__ import annotations

import multiprocessing
import os
import socket
import time

import httpx
from prometheus_client import CollectorRegistry

import spanmeter


def _listening_ports_of_this_process() -> set[int]:
    """TCP ports this (child) process holds a listening socket on, from its file descriptors."""
    ports = set()
    for fd in map(int, os.listdir("/proc/self/fd")):
        try:
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        try:
            if sock.type == socket.SOCK_STREAM and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                ports.add(sock.getsockname()[1])
        except OSError:
            pass
        finally:
            sock.close()
    return ports


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def test_a_forked_pool_leaves_the_port_to_the_parent():
    first = spanmeter.configure(port=0, registry=CollectorRegistry())
    port = first.address[1]
    pool = multiprocessing.get_context("fork").Pool(2)
    try:
        held = pool.map(_child_ports, range(2))
        assert all(port not in ports for ports in held), f"a worker kept port {port}: {held}"
        assert httpx.get(first.metrics_url, timeout=10).status_code == 200  # the parent answers
        spanmeter.shutdown()
        start = time.monotonic()
        assert _refused(port), "the port still accepted connections after the parent stopped serving"
        assert time.monotonic() - start < 2.0
        again = spanmeter.configure(port=port, registry=CollectorRegistry())  # while the pool still runs
        try:
            assert again.address[1] == port
            assert httpx.get(again.metrics_url, timeout=10).status_code == 200
        finally:
            spanmeter.shutdown()
    finally:
        spanmeter.shutdown()
        pool.terminate()
        pool.join()


def _child_ports(_) -> set[int]:
    return _listening_ports_of_this_process()
