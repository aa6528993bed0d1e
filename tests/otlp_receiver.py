"""Real OTLP receivers on 127.0.0.1 for the tests: what a Collector's ``otlp`` receiver
gets, decoded from protobuf with ``opentelemetry-proto``.

:class:`OtlpHttpReceiver` serves ``POST /v1/metrics`` and ``/v1/traces`` (OTLP/HTTP,
binary protobuf, gzip or not); :class:`OtlpGrpcReceiver` serves the gRPC services. Both
keep every request and flatten metric data points into :class:`Point` rows.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality


def any_value(value: AnyValue):
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(any_value(v) for v in value.array_value.values)
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def attributes(key_values) -> dict:
    return {kv.key: any_value(kv.value) for kv in key_values}


@dataclass(frozen=True)
class Point:
    """One data point as received, with the identity of what sent it."""

    resource: dict
    scope: str
    metric: str
    unit: str
    kind: str  # sum, gauge, histogram
    temporality: int | None
    monotonic: bool | None
    attributes: dict
    start_time: int
    time: int
    value: float | None = None  # sum and gauge
    count: int | None = None  # histogram
    sum: float | None = None
    bucket_counts: tuple[int, ...] = ()
    bounds: tuple[float, ...] = ()
    exemplars: tuple[tuple[float, str, str, int], ...] = ()  # (value, trace id hex, span id hex, time)

    @property
    def instance(self) -> str | None:
        return self.resource.get("service.instance.id")


def _exemplar(e) -> tuple[float, str, str, int]:
    value = e.as_int if e.WhichOneof("value") == "as_int" else e.as_double
    return value, e.trace_id.hex(), e.span_id.hex(), e.time_unix_nano


def _points(request) -> list[Point]:
    out = []
    for rm in request.resource_metrics:
        resource = attributes(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                data = getattr(metric, kind)
                temporality = getattr(data, "aggregation_temporality", None)
                monotonic = getattr(data, "is_monotonic", None)
                for dp in data.data_points:
                    common = dict(
                        resource=resource, scope=sm.scope.name, metric=metric.name, unit=metric.unit, kind=kind,
                        temporality=temporality, monotonic=monotonic, attributes=attributes(dp.attributes),
                        start_time=dp.start_time_unix_nano, time=dp.time_unix_nano,
                        exemplars=tuple(_exemplar(e) for e in getattr(dp, "exemplars", ())),
                    )  # fmt: skip
                    if kind == "histogram":
                        out.append(Point(**common, count=dp.count, sum=dp.sum,
                                         bucket_counts=tuple(dp.bucket_counts), bounds=tuple(dp.explicit_bounds)))  # fmt: skip
                    else:
                        value = dp.as_int if dp.WhichOneof("value") == "as_int" else dp.as_double
                        out.append(Point(**common, value=value))
    return out


class _Store:
    """Requests received, thread-safe; queries over the flattened points."""

    def __init__(self):
        self._lock = threading.Lock()
        self.metric_requests: list = []
        self.span_requests: list = []
        self.headers: list[dict] = []  # HTTP headers of each request (OTLP/HTTP only)

    def add_metrics(self, request) -> None:
        with self._lock:
            self.metric_requests.append(request)

    def add_spans(self, request) -> None:
        with self._lock:
            self.span_requests.append(request)

    def points(self) -> list[Point]:
        with self._lock:
            requests = list(self.metric_requests)
        return [p for r in requests for p in _points(r)]

    def spans(self) -> list[tuple[dict, object]]:
        """(resource attributes, span) for every span received."""
        with self._lock:
            requests = list(self.span_requests)
        return [(attributes(rs.resource.attributes), span)
                for r in requests for rs in r.resource_spans for ss in rs.scope_spans for span in ss.spans]  # fmt: skip

    def latest(self, metric: str) -> dict[tuple, Point]:
        """The last point of each (instance, attributes) series of ``metric``: cumulative
        points carry the totals, so the last one of a series is its value."""
        last: dict[tuple, Point] = {}
        for p in self.points():
            if p.metric != metric:
                continue
            key = (p.instance, tuple(sorted(p.attributes.items())))
            if key not in last or p.time >= last[key].time:
                last[key] = p
        return last

    def per_instance(self, metric: str, **attrs) -> dict[str | None, float]:
        """Sum of the latest values (histograms: counts) of ``metric`` by instance."""
        out: dict[str | None, float] = {}
        for (instance, _), p in self.latest(metric).items():
            if all(p.attributes.get(k) == v for k, v in attrs.items()):
                out[instance] = out.get(instance, 0) + (p.count if p.kind == "histogram" else p.value)
        return out

    def total(self, metric: str, **attrs) -> float:
        """What ``sum(metric{attrs})`` over every worker shows once the last pushes arrived."""
        return sum(self.per_instance(metric, **attrs).values())

    def requests_by_instance(self) -> dict[str | None, int]:
        """How many metric export requests each instance sent."""
        with self._lock:
            requests = list(self.metric_requests)
        counts: dict[str | None, int] = {}
        for r in requests:
            for rm in r.resource_metrics:
                instance = attributes(rm.resource.attributes).get("service.instance.id")
                counts[instance] = counts.get(instance, 0) + 1
        return counts

    def instances(self) -> set:
        return {p.instance for p in self.points()}

    def wait_for(self, predicate, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return predicate()


class OtlpHttpReceiver(_Store):
    """OTLP/HTTP (binary protobuf) on a free port of 127.0.0.1."""

    def __init__(self):
        super().__init__()
        store = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                store.headers.append({k.lower(): v for k, v in self.headers.items()})
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                if self.path == "/v1/metrics":
                    store.add_metrics(metrics_service_pb2.ExportMetricsServiceRequest.FromString(body))
                    reply = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
                elif self.path == "/v1/traces":
                    store.add_spans(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
                    reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class OtlpGrpcReceiver(_Store):
    """OTLP/gRPC (insecure) on a free port of 127.0.0.1."""

    def __init__(self):
        import grpc

        super().__init__()
        store = self

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request, context):
                store.add_metrics(request)
                return metrics_service_pb2.ExportMetricsServiceResponse()

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):
                store.add_spans(request)
                return trace_service_pb2.ExportTraceServiceResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self._server)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.stop(grace=None)


CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
