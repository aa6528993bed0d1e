"""/metrics over TLS, with client certificates and with basic auth; scraped by a real Prometheus."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

import spanmeter
from spanmeter.errors import ConfigurationError
from spanmeter.prometheus import LocalPrometheus

ASSETS = Path(__file__).resolve().parent.parent / "dashboards" / "prometheus"


def _issue(name: str, issuer_key=None, issuer_name=None, *, ca=False):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name or subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))  # fmt: skip
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                        critical=False)  # fmt: skip
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    return key, cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A test CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    root = tmp_path_factory.mktemp("pki")
    ca_key, ca = _issue("spanmeter test CA", ca=True)
    files = {"ca": root / "ca.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for name in ("server", "client"):
        key, cert = _issue(name, ca_key, ca.subject)
        files[name] = root / f"{name}.pem"
        files[name].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{name}_key"] = root / f"{name}-key.pem"
        files[f"{name}_key"].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))  # fmt: skip
    return files


def _meter(**kwargs):
    meter = spanmeter.setup(port=0, registry=CollectorRegistry(), tracer_provider=TracerProvider(), **kwargs)
    with meter.agent_run("secure"):
        pass
    meter.state.flush()
    return meter


def test_tls_serves_https_only(pki):
    meter = _meter(tls_certfile=str(pki["server"]), tls_keyfile=str(pki["server_key"]))
    try:
        assert meter.metrics_url.startswith("https://127.0.0.1:")
        response = httpx.get(meter.metrics_url, verify=ssl.create_default_context(cafile=str(pki["ca"])))
        assert response.status_code == 200 and 'agent_requests_total{agent_name="secure"' in response.text
        with pytest.raises(httpx.HTTPError):
            httpx.get(meter.metrics_url.replace("https", "http"), timeout=3)
        with pytest.raises(httpx.ConnectError):  # a client that does not trust the CA
            httpx.get(meter.metrics_url, timeout=3)
    finally:
        meter.shutdown()


def test_client_certificates_can_be_required(pki):
    meter = _meter(tls_certfile=str(pki["server"]), tls_keyfile=str(pki["server_key"]),
                   tls_client_cafile=str(pki["ca"]))  # fmt: skip
    try:
        trusting = ssl.create_default_context(cafile=str(pki["ca"]))
        with pytest.raises(httpx.HTTPError):
            httpx.get(meter.metrics_url, verify=trusting, timeout=3)
        trusting.load_cert_chain(str(pki["client"]), str(pki["client_key"]))
        assert httpx.get(meter.metrics_url, verify=trusting).status_code == 200
    finally:
        meter.shutdown()


def test_basic_auth(pki):
    meter = _meter(basic_auth=("prometheus", "s3cret"))
    try:
        anonymous = httpx.get(meter.metrics_url)
        assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Basic")
        assert "agent_requests" not in anonymous.text
        assert httpx.get(meter.metrics_url, auth=("prometheus", "wrong")).status_code == 401
        assert httpx.get(meter.metrics_url, auth=("prometheus", "s3cret")).status_code == 200
    finally:
        meter.shutdown()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tls_certfile": "/no/such.pem"}, "tls_certfile='/no/such.pem'"),
        ({"tls_keyfile": "key.pem"}, "tls_keyfile and tls_client_cafile need tls_certfile"),
        ({"basic_auth": ("user", "")}, "basic_auth must be a (username, password) pair"),
        ({"basic_auth": "user:pass"}, "basic_auth must be a (username, password) pair"),
    ],
)
def test_bad_security_settings_fail_at_configuration(kwargs, message):
    with pytest.raises(ConfigurationError) as err:
        spanmeter.setup(port=0, registry=CollectorRegistry(), tracer_provider=TracerProvider(), **kwargs)
    assert message in str(err.value)


def test_real_prometheus_scrapes_it_with_the_documented_config(pki, tmp_path):
    meter = _meter(tls_certfile=str(pki["server"]), tls_keyfile=str(pki["server_key"]),
                   basic_auth=("prometheus", "s3cret"))  # fmt: skip
    password = tmp_path / "password"
    password.write_text("s3cret\n")
    config = (ASSETS / "prometheus-secure.yml").read_text()
    config = config.replace("/etc/prometheus/spanmeter-ca.pem", str(pki["ca"]))
    config = config.replace("/etc/prometheus/spanmeter-metrics-password", str(password))
    (tmp_path / "prometheus.yml").write_text(config)
    host, port = meter.address
    rules = [ASSETS / "recording.rules.yml", ASSETS / "alerts.rules.yml"]
    prometheus = LocalPrometheus(tmp_path, f"{host}:{port}", scrape_interval="1s", rule_files=rules)
    try:
        prometheus.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            up = prometheus.query('up{job="spanmeter"}')
            if up and up[0]["value"][1] == "1":
                break
            time.sleep(0.3)
        assert up and up[0]["value"][1] == "1", prometheus.api("/api/v1/targets")
        runs = prometheus.query('agent_requests_total{agent_name="secure"}')
        assert runs and runs[0]["value"][1] == "1"
    finally:
        prometheus.stop()
        meter.shutdown()
