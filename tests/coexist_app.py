"""An app with the usual OpenTelemetry set-up, and spanmeter beside it (run as a process).

``python -m tests.coexist_app ORDER PROVIDER OPENAI_URL CALLS`` sets up, in ORDER
(``app-first`` or ``spanmeter-first``), the app's global ``MeterProvider`` with a
``PrometheusMetricReader`` on ``prometheus_client``'s default registry, a ``prometheus_client``
counter of its own on that registry, the official OpenAI instrumentation (recording its
``gen_ai.client.*`` metrics on the global meter provider, or on the app's provider given
explicitly with PROVIDER ``explicit``) and ``spanmeter.configure(port=0)`` (PROVIDER
``own``, or ``join``: ``meter_provider=`` the app's). Then it makes CALLS chat completions
with the real openai SDK against the fake server at OPENAI_URL, prints spanmeter's
``/metrics`` URL and keeps serving until stdin closes. With a fifth argument ``app-serves``
the app serves the registry itself (``prometheus_client.start_http_server``) and spanmeter
starts no server (``start_server=False``): the URL printed is the app's.
"""

from __future__ import annotations

import sys

import openai
from opentelemetry import metrics, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import Counter, start_http_server

import spanmeter

MODEL = "gpt-4o-mini"
ORDERS = ("app-first", "spanmeter-first")
PROVIDERS = ("own", "join", "explicit")


def main(order: str, provider: str, url: str, calls: int, app_serves: bool = False) -> int:
    resource = Resource.create({"service.name": "coexist-app"})
    app_provider = MeterProvider(resource=resource, metric_readers=[PrometheusMetricReader()])
    endpoint: list[str] = []  # the app's, when it serves the registry itself
    requests = Counter("app_requests", "Requests the app served (its own prometheus_client metric).")

    def app_setup():
        if app_serves:
            server, _thread = start_http_server(0, addr="127.0.0.1")
            endpoint.append(f"http://127.0.0.1:{server.server_address[1]}/metrics")
        trace.set_tracer_provider(TracerProvider(resource=resource))
        metrics.set_meter_provider(app_provider)  # refused (and logged) when spanmeter's is global already
        OpenAIInstrumentor().instrument(**({"meter_provider": app_provider} if provider == "explicit" else {}))

    def spanmeter_setup():
        kwargs: dict = {"meter_provider": app_provider} if provider == "join" else {}
        kwargs.update({"start_server": False} if app_serves else {"port": 0})
        return spanmeter.configure(service_name="coexist-app", **kwargs)

    if order == "app-first":
        app_setup()
        meter = spanmeter_setup()
    else:
        meter = spanmeter_setup()
        app_setup()
    with openai.OpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0) as client:
        for _ in range(calls):
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hello."}])
            requests.inc()
    meter.processor.force_flush()
    print(endpoint[0] if app_serves else meter.metrics_url, flush=True)
    sys.stdin.read()  # serve until the test closes stdin
    spanmeter.shutdown()
    return 0


if __name__ == "__main__":
    order, provider, url, calls = sys.argv[1:5]
    assert order in ORDERS and provider in PROVIDERS and sys.argv[5:] in ([], ["app-serves"]), sys.argv
    sys.exit(main(order, provider, url, int(calls), app_serves=sys.argv[5:] == ["app-serves"]))
