"""The ``/metrics`` HTTP endpoint: ``prometheus_client``'s WSGI app, optionally behind TLS
and HTTP basic auth.

``prometheus_client.start_http_server`` serves TLS (and client certificates) but has no
basic auth; this module serves the same WSGI app (``prometheus_client.make_wsgi_app``)
from the standard library's threading WSGI server, so both work together. Settings are
checked, and the certificate loaded, when the endpoint is built: a wrong path or key is a
:class:`~spanmeter.errors.ConfigurationError`, not a failed scrape later.

A client cannot stall it: the accept loop only accepts; the TLS handshake, the request and
the response happen in the connection's own thread, each within :data:`REQUEST_TIMEOUT`;
at most :data:`MAX_CONNECTIONS` are served at once; a forked child closes the inherited
listening socket, so the port is the parent's alone.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import io
import ipaddress
import logging
import os
import socket
import ssl
import threading
import time
import weakref
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import make_wsgi_app

from spanmeter.errors import ConfigurationError

_log = logging.getLogger("spanmeter")


#: Seconds a connection has for the TLS handshake and the whole request (line and
#: headers) and then for the whole response; an idle or half-sent one is closed after it.
REQUEST_TIMEOUT = 5.0
#: Connections served at once; one more is closed at once (threads and memory stay bounded).
MAX_CONNECTIONS = 256
#: Listen backlog: a burst of hundreds of connections queues instead of waiting out SYN retries
#: (the kernel caps it at ``net.core.somaxconn``).
BACKLOG = 1024


class _Server(ThreadingMixIn, WSGIServer):
    """Threading WSGI server whose connections cannot hold a thread or the accept loop.

    The accept loop only accepts: the TLS handshake and every read and write happen in the
    connection's thread, each bounded by :data:`REQUEST_TIMEOUT`.
    """

    daemon_threads = True
    block_on_close = False
    request_queue_size = BACKLOG

    def __init__(self, *args, tls: ssl.SSLContext | None = None, request_timeout: float = REQUEST_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS, **kwargs):  # fmt: skip
        self.tls = tls
        self.request_timeout = request_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self._connections: set = set()  # open ones, closed in a forked child
        self._local = threading.local()  # the deadline of this thread's request
        super().__init__(*args, **kwargs)
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _close_inherited(ref))

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # full: refuse rather than queue without bound
            return
        self._connections.add(request)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._connections.discard(request)
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        conn = request
        try:
            deadline = time.monotonic() + self.request_timeout
            request.settimeout(self.request_timeout)
            if self.tls is not None:
                conn = self.tls.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
                self._connections.add(conn)
                conn.settimeout(self.request_timeout)
                conn.do_handshake()
            self._local.deadline = deadline
            self.finish_request(conn, client_address)
        except Exception:  # deliberate: a client that times out or speaks garbage gets closed, not logged
            pass
        finally:
            self.shutdown_request(conn)
            self._connections.discard(request)
            self._connections.discard(conn)
            self._slots.release()

    def handle_error(self, request, client_address):  # a broken client is not worth a traceback
        pass

    def _close_inherited(self) -> None:
        # The child of a fork must not keep the parent's port (nor its open scrapes) alive.
        for sock in [self.socket, *self._connections]:
            try:
                sock.close()
            except OSError:
                pass
        self._connections = set()


def _close_inherited(ref) -> None:
    server = ref()
    if server is not None:
        server._close_inherited()


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _DeadlineReader(io.RawIOBase):
    """A socket read within one deadline in total: a request trickled in stops at it."""

    def __init__(self, sock, deadline: float):
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request not received in time")
        self._sock.settimeout(remaining)
        return self._sock.recv_into(buffer)


class _Handler(WSGIRequestHandler):
    server: _Server

    def setup(self):
        super().setup()
        deadline = getattr(self.server._local, "deadline", None) or time.monotonic() + self.server.request_timeout
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, deadline))

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        # The request is read: the response gets its own timeout (sendall bounds the total).
        self.connection.settimeout(self.server.request_timeout)
        return parsed

    def log_message(self, format, *args):  # scrapes are not worth a log line each
        pass


def tls_context(certfile: str, keyfile: str | None = None, client_cafile: str | None = None) -> ssl.SSLContext:
    """A server TLS context; with ``client_cafile``, clients must show a certificate it signed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"tls_certfile={certfile!r} / tls_keyfile={keyfile!r}: cannot load the certificate and key ({exc})"
        ) from None
    if client_cafile is not None:
        try:
            context.load_verify_locations(cafile=client_cafile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"tls_client_cafile={client_cafile!r}: cannot load it ({exc})") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def check_credentials(pair) -> tuple[str, str]:
    """``pair`` as a (username, password) tuple, or a ConfigurationError saying what is wrong."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(isinstance(p, str) and p for p in pair):
        raise ConfigurationError("basic_auth must be a (username, password) pair of non-empty strings")
    if ":" in pair[0]:
        raise ConfigurationError("basic_auth username must not contain ':'")
    return pair[0], pair[1]


def basic_auth(app, username: str, password: str):
    """``app`` answering 401 unless the request carries these basic-auth credentials
    (the scheme name in any case, RFC 7617)."""
    username, password = check_credentials((username, password))
    expected = f"{username}:{password}".encode()

    def guarded(environ, start_response):
        scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
        try:
            given = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            given = b""
        if not (scheme.lower() == "basic" and hmac.compare_digest(given, expected)):  # constant time
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="spanmeter"'),
                                                ("Content-Type", "text/plain")])  # fmt: skip
            return [b"unauthorized\n"]
        return app(environ, start_response)

    return guarded


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses: traffic that never leaves the machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def warn_plain_credentials(host: str, tls, auth) -> None:
    """Log a warning when basic-auth credentials would cross the network in clear text."""
    if auth is not None and tls is None and not is_loopback(host):
        _log.warning(
            "spanmeter: basic_auth on plain HTTP at %s sends the password in clear text over the "
            "network; add tls_certfile=/tls_keyfile= (or keep host on 127.0.0.1)",
            host,
        )


def serve(registry, host: str, port: int, *, tls: ssl.SSLContext | None = None, auth: tuple[str, str] | None = None,
          request_timeout: float = REQUEST_TIMEOUT, max_connections: int = MAX_CONNECTIONS):  # fmt: skip
    """Start serving ``registry`` on ``host:port`` in a daemon thread; returns the server."""
    app = make_wsgi_app(registry)
    if auth is not None:
        app = basic_auth(app, *auth)
    server_class = _IPv6Server if ":" in host else _Server
    server = server_class((host, port), _Handler, tls=tls, request_timeout=request_timeout,
                          max_connections=max_connections)  # fmt: skip
    server.set_app(app)
    threading.Thread(target=server.serve_forever, name="spanmeter-metrics", daemon=True).start()
    return server
