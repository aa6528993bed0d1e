"""The ``/metrics`` HTTP endpoint: ``prometheus_client``'s WSGI app, optionally behind TLS
and HTTP basic auth.

``prometheus_client.start_http_server`` serves TLS (and client certificates) but has no
basic auth; this module serves the same WSGI app (``prometheus_client.make_wsgi_app``)
from the standard library's threading WSGI server, so both work together. Settings are
checked, and the certificate loaded, when the endpoint is built: a wrong path or key is a
:class:`~spanmeter.errors.ConfigurationError`, not a failed scrape later.
"""

from __future__ import annotations

import base64
import hmac
import socket
import ssl
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from spanmeter.errors import ConfigurationError


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
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
    """``app`` answering 401 unless the request carries these basic-auth credentials."""
    username, password = check_credentials((username, password))
    expected = ("Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()).encode()

    def guarded(environ, start_response):
        given = environ.get("HTTP_AUTHORIZATION", "").encode()
        if not hmac.compare_digest(given, expected):  # constant time
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="spanmeter"'),
                                                ("Content-Type", "text/plain")])  # fmt: skip
            return [b"unauthorized\n"]
        return app(environ, start_response)

    return guarded


def serve(registry, host: str, port: int, *, tls: ssl.SSLContext | None = None, auth: tuple[str, str] | None = None):
    """Start serving ``registry`` on ``host:port`` in a daemon thread; returns the server."""
    app = make_wsgi_app(registry)
    if auth is not None:
        app = basic_auth(app, *auth)
    server_class = _IPv6Server if ":" in host else _Server
    server = make_server(host, port, app, server_class, handler_class=_QuietHandler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, name="spanmeter-metrics", daemon=True).start()
    return server
