"""OpenTelemetry traces and Prometheus metrics for decisions.

One trace per decision: a root ``decision`` span (the child of the caller's W3C
``traceparent`` when checkout sends one) and one span per stage under it. Stages run once per
micro-batch, so each stage's start and end are recorded on every decision of the batch, each
in its own trace. When a stage runs in another deployment (the graph topology), the stage
span is a CLIENT span in the ingress replica and the deployment records a SERVER span under
it; the parents travel explicitly as ``traceparent`` strings in the handle call, because
Ray's handles carry no trace context of their own.

The exporter is chosen by the standard variables: ``OTEL_TRACES_EXPORTER`` (``otlp``,
``console`` or ``none``; none by default), ``OTEL_EXPORTER_OTLP_PROTOCOL`` /
``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` (``http/protobuf`` by default, ``grpc`` if its
exporter package is installed), ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES``. With no exporter no span is built at all (spans per decision
per stage cost microseconds each on the hot path); trace ids are still minted and stored in
every decision record, so a decision is always findable by its trace id.

Metrics go through Ray Serve's metrics API (``ray.serve.metrics``), which Ray exports for
Prometheus on each node's metrics port (``checkout-risk cluster up`` uses
``CHECKOUT_RISK_METRICS_PORT``, 8090 by default) with the deployment, replica and
application as tags. Outside a Serve replica (the single-process server) they are off.
"""

from __future__ import annotations

import collections
import contextvars
import os
import re
import secrets
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
STAGE_BOUNDARIES_MS = [0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 120, 250, 500]

# traceparents of the stage spans of the batch being processed in this thread: the remote
# stage stand-ins read them and pass them along with their handle call
_CARRIERS: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "checkout_risk_stage_carriers", default=None
)


def current_carriers() -> list[str] | None:
    """The stage-span traceparents (one per decision) for the call being made now."""
    return _CARRIERS.get()


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a valid W3C traceparent (an all-zero id is invalid), else None."""
    if not traceparent:
        return None
    m = TRACEPARENT.match(traceparent.strip().lower())
    if m is None or m.group(1) == "0" * 32 or m.group(2) == "0" * 16:
        return None
    return m.group(1)


def _exporters() -> list[Any]:
    names = [
        n.strip().lower()
        for n in os.environ.get("OTEL_TRACES_EXPORTER", "none").split(",")
        if n.strip()
    ]
    out: list[Any] = []
    for name in names:
        if name == "none":
            continue
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            out.append(ConsoleSpanExporter())
        elif name == "otlp":
            protocol = os.environ.get(
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            )
            if protocol == "grpc":
                try:
                    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                        OTLPSpanExporter,
                    )
                except ImportError as exc:
                    raise RuntimeError(
                        "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the package "
                        "opentelemetry-exporter-otlp-proto-grpc; use http/protobuf"
                    ) from exc
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
            out.append(OTLPSpanExporter())
        else:
            raise RuntimeError(f"OTEL_TRACES_EXPORTER={name!r}: use otlp, console or none")
    return out


class Tracing:
    """The tracer of one replica (or one process); a no-op that still mints ids when off."""

    def __init__(self, component: str, attributes: dict[str, str] | None = None) -> None:
        self.component = component
        self.tracer: Any = None
        self.provider: Any = None
        exporters = [] if os.environ.get("OTEL_SDK_DISABLED") == "true" else _exporters()
        if exporters:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            resource = Resource.create(
                {"service.name": os.environ.get("OTEL_SERVICE_NAME", "checkout-risk")}
                | (attributes or {})
            )
            self.provider = TracerProvider(resource=resource)
            for exporter in exporters:
                self.provider.add_span_processor(BatchSpanProcessor(exporter))
            self.tracer = self.provider.get_tracer("checkout_risk.serve_graph")

    @property
    def enabled(self) -> bool:
        return self.tracer is not None

    def batch(self, traceparents: Sequence[str | None], arrived: Sequence[float]) -> BatchTrace:
        return BatchTrace(self, traceparents, arrived)

    @contextmanager
    def serve(self, name: str, carriers: Sequence[str] | None) -> Iterator[None]:
        """SERVER spans of a stage run in this deployment, under the caller's stage spans."""
        if not self.enabled or not carriers:
            yield
            return
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        prop = TraceContextTextMapPropagator()
        start = time.time_ns()
        spans = [
            self.tracer.start_span(
                name,
                context=prop.extract({"traceparent": c}),
                kind=SpanKind.SERVER,
                start_time=start,
                attributes={"checkout_risk.component": self.component},
            )
            for c in carriers
        ]
        try:
            yield
        finally:
            end = time.time_ns()
            for span in spans:
                span.end(end_time=end)

    def flush(self, timeout_ms: int = 5_000) -> None:
        if self.provider is not None:
            self.provider.force_flush(timeout_ms)

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()


def _wall_ns(monotonic_s: float) -> int:
    return time.time_ns() - int((time.monotonic() - monotonic_s) * 1e9)


class BatchTrace:
    """The traces of one micro-batch: a root per decision and the batch's stage timings."""

    def __init__(
        self, tracing: Tracing, traceparents: Sequence[str | None], arrived: Sequence[float]
    ) -> None:
        self.tracing = tracing
        self.stage_ms: dict[str, float] = {}
        self.started = time.monotonic()
        self.queue_ms = [round((self.started - a) * 1000, 3) for a in arrived]
        self.roots: list[Any] = []
        if not tracing.enabled:
            self.trace_ids = [trace_id_of(t) or secrets.token_hex(16) for t in traceparents]
            return
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        prop = TraceContextTextMapPropagator()
        for parent, at in zip(traceparents, arrived, strict=True):
            ctx = prop.extract({"traceparent": parent}) if trace_id_of(parent) else None
            self.roots.append(
                tracing.tracer.start_span(
                    "decision", context=ctx, kind=SpanKind.SERVER, start_time=_wall_ns(at)
                )
            )
        self.trace_ids = [format(s.get_span_context().trace_id, "032x") for s in self.roots]

    @contextmanager
    def stage(self, name: str, rows: Sequence[int], remote: bool = False) -> Iterator[None]:
        """Time a stage run for `rows` of the batch; one child span per decision."""
        t0 = time.monotonic()
        spans: list[Any] = []
        token = None
        if self.tracing.enabled and rows:
            from opentelemetry import trace
            from opentelemetry.trace import SpanKind
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )

            start = time.time_ns()
            kind = SpanKind.CLIENT if remote else SpanKind.INTERNAL
            for i in rows:
                parent = trace.set_span_in_context(self.roots[i])
                spans.append(
                    self.tracing.tracer.start_span(
                        name,
                        context=parent,
                        kind=kind,
                        start_time=start,
                        attributes={"checkout_risk.batch_size": len(rows)},
                    )
                )
            if remote:
                prop = TraceContextTextMapPropagator()
                carriers = []
                for span in spans:
                    carrier: dict[str, str] = {}
                    prop.inject(carrier, context=trace.set_span_in_context(span))
                    carriers.append(carrier["traceparent"])
                token = _CARRIERS.set(carriers)
        try:
            yield
        finally:
            if token is not None:
                _CARRIERS.reset(token)
            self.stage_ms[name] = round(
                self.stage_ms.get(name, 0.0) + (time.monotonic() - t0) * 1000, 3
            )
            end = time.time_ns()
            for span in spans:
                span.end(end_time=end)

    def finish(self, rows: Sequence[int], attributes: Sequence[dict[str, Any]]) -> None:
        """End the root spans of `rows` (the response is ready), with decision attributes."""
        if not self.roots:
            return
        end = time.time_ns()
        for i, attrs in zip(rows, attributes, strict=True):
            root = self.roots[i]
            root.set_attributes({k: v for k, v in attrs.items() if v is not None})
            root.end(end_time=end)

    def close(self) -> None:
        """End any root not finished (a failed batch), so no span leaks."""
        end = time.time_ns()
        for root in self.roots:
            if root.is_recording():
                root.end(end_time=end)


class DecisionMetrics:
    """Counters and latency histograms through Ray Serve's Prometheus metrics."""

    def __init__(self) -> None:
        self.enabled = False
        if "ray" not in sys.modules:  # the single-process server: no Ray, no metrics
            return
        import ray

        if not ray.is_initialized():
            return
        from ray import serve
        from ray.serve.metrics import Counter, Histogram

        try:
            serve.get_replica_context()
        except Exception:  # noqa: BLE001 - not inside a Serve replica
            return
        self.decisions = Counter(
            "checkout_risk_decisions",
            description="Decisions made, by action, region and rung.",
            tag_keys=("action", "region", "rung"),
        )
        self.degraded = Counter(
            "checkout_risk_degraded_decisions",
            description="Decisions off the full path, by rung and reason.",
            tag_keys=("region", "rung", "reason"),
        )
        self.abandoned = Counter(
            "checkout_risk_abandoned_requests",
            description="Requests whose client left before their batch ran: not decided, "
            "not logged, not counted as attempts (the client's retry is).",
            tag_keys=("region",),
        )
        self.stage_latency = Histogram(
            "checkout_risk_stage_latency_ms",
            description="Wall time of one stage for one micro-batch.",
            boundaries=STAGE_BOUNDARIES_MS,
            tag_keys=("stage",),
        )
        self.decision_latency = Histogram(
            "checkout_risk_decision_latency_ms",
            description="From request arrival to the response being ready.",
            boundaries=STAGE_BOUNDARIES_MS,
            tag_keys=("region",),
        )
        self.enabled = True

    def record(self, stage_ms: dict[str, float], responses: Sequence[dict[str, Any]]) -> None:
        if not self.enabled:
            return
        for stage, ms in stage_ms.items():
            self.stage_latency.observe(ms, tags={"stage": stage})
        # one increment per distinct tag set of the batch, not one per decision: a shed
        # batch is a hundred decisions with one set of tags
        decided, degraded = tally(responses)
        for (action, region, rung), n in decided.items():
            self.decisions.inc(n, tags={"action": action, "region": region, "rung": rung})
        for (region, rung, reason), n in degraded.items():
            self.degraded.inc(n, tags={"region": region, "rung": rung, "reason": reason})
        for r in responses:
            self.decision_latency.observe(r["latency_ms"], tags={"region": r["region"]})

    def record_abandoned(self, n: int, region: str) -> None:
        if self.enabled:
            self.abandoned.inc(n, tags={"region": region})


def tally(
    responses: Sequence[dict[str, Any]],
) -> tuple[collections.Counter[tuple[str, str, str]], collections.Counter[tuple[str, str, str]]]:
    """Decisions by (action, region, rung) and degraded ones by (region, rung, reason): the
    reason's kind, the part before its first colon (its details vary per batch)."""
    decided: collections.Counter[tuple[str, str, str]] = collections.Counter()
    degraded: collections.Counter[tuple[str, str, str]] = collections.Counter()
    for r in responses:
        how = r.get("degraded")
        rung = str(how["rung"]) if how else "1"
        decided[(r["action"], r["region"], rung)] += 1
        if how:
            reason = str(how.get("reason") or "unknown").split(":")[0]
            degraded[(r["region"], rung, reason)] += 1
    return decided, degraded
