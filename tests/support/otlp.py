"""A minimal OTLP/HTTP trace receiver for tests: what a collector would receive, decoded.

The serving code exports with the real OTLP exporter, configured by the standard
``OTEL_*`` variables; this receiver stands where the collector would and decodes the
protobuf requests with the official ``opentelemetry-proto`` messages.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    service: str
    instance: str
    attributes: dict


class OtlpReceiver:
    """Listens on 127.0.0.1:<free port>; `endpoint` is the OTEL_EXPORTER_OTLP_ENDPOINT."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path == "/v1/traces":
                    receiver._ingest(body)
                payload = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _ingest(self, body: bytes) -> None:
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        out = []
        for rs in req.resource_spans:
            res = {a.key: a.value.string_value for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    attrs = {}
                    for a in s.attributes:
                        v = a.value
                        attrs[a.key] = (
                            getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None
                        )
                    out.append(
                        ReceivedSpan(
                            s.name,
                            s.trace_id.hex(),
                            s.span_id.hex(),
                            s.parent_span_id.hex(),
                            s.kind,
                            res.get("service.name", ""),
                            res.get("service.instance.id", ""),
                            attrs,
                        )
                    )
        with self._lock:
            self.spans.extend(out)

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def wait_for(
        self,
        trace_id: str,
        names: set[str],
        timeout_s: float = 30.0,
        server: set[str] = frozenset(),
    ) -> list[ReceivedSpan]:
        """The spans of a trace once all `names` have arrived, and a SERVER span of each of
        `server` (exporters batch, each replica on its own schedule: a hop's CLIENT span can
        arrive seconds before the stage replica's SERVER span)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            spans = self.trace(trace_id)
            served = {s.name for s in spans if s.kind == 2}  # SPAN_KIND_SERVER
            if names <= {s.name for s in spans} and server <= served:
                return spans
            time.sleep(0.2)
        return self.trace(trace_id)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
