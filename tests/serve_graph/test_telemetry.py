"""Traces and trace ids: one trace per decision, a span per stage, exported over OTLP."""

from __future__ import annotations

import time
import uuid

import pytest

from feature_views.contract import PaymentAttempt
from serve_graph.config import load_region
from serve_graph.decision_log import iter_records
from serve_graph.pipeline import DecisionPipeline, region_store_url
from serve_graph.telemetry import Tracing, trace_id_of
from tests.support.otlp import OtlpReceiver
from trainers.registry import Registry

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
STAGES = {"features", "policy", "score", "combine", "log"}


def _record(amount: float = 80.0, card: str = "tok_t1") -> dict:
    return PaymentAttempt.model_validate(
        {
            "transaction_id": f"t-{uuid.uuid4().hex}",
            "event_time": "2026-08-20T10:00:00Z",
            "card_id": card,
            "merchant_id": "m1",
            "amount": amount,
            "region": "us-east",
        }
    ).to_record()


def _pipeline(registry_root, redis_url, log_dir) -> DecisionPipeline:
    Registry(registry_root).set_stage("v1", "champion", "telemetry test")
    region = load_region("us-east").model_copy(update={"namespace": f"tl-{uuid.uuid4().hex[:6]}"})
    return DecisionPipeline(
        region, registry_root, log_dir=log_dir, redis_url=region_store_url(region, redis_url)
    )


def test_traceparent_parsing() -> None:
    assert trace_id_of(TRACEPARENT) == CALLER_TRACE
    assert trace_id_of(TRACEPARENT.upper()) == CALLER_TRACE
    for bad in (None, "", "garbage", f"00-{'0' * 32}-{CALLER_SPAN}-01", f"00-{CALLER_TRACE}-xx-01"):
        assert trace_id_of(bad) is None


def test_without_an_exporter_ids_are_still_minted_and_logged(
    trained, registry_root, redis_url, tmp_path, monkeypatch
) -> None:
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    assert not Tracing("x").enabled
    pipeline = _pipeline(registry_root, redis_url, tmp_path / "log")
    try:
        now = time.monotonic()
        out = pipeline.decide(
            [_record(), _record(), _record()], [now] * 3, [TRACEPARENT, None, "x"]
        )
    finally:
        pipeline.close()
    assert out[0]["trace_id"] == CALLER_TRACE  # the caller's trace continues
    fresh = {out[1]["trace_id"], out[2]["trace_id"]}
    assert len(fresh) == 2 and all(len(t) == 32 and t != CALLER_TRACE for t in fresh)
    logged = {
        r["decision_id"]: r for r in iter_records(tmp_path / "log") if r["type"] == "decision"
    }
    for d in out:
        rec = logged[d["decision_id"]]
        assert rec["trace_id"] == d["trace_id"]
        assert STAGES - {"log"} <= set(rec["timings_ms"]) and rec["timings_ms"]["queue"] >= 0


def test_one_trace_per_decision_with_a_span_per_stage(
    trained, registry_root, redis_url, tmp_path, monkeypatch
) -> None:
    receiver = OtlpReceiver()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    pipeline = _pipeline(registry_root, redis_url, tmp_path / "log")
    try:
        assert pipeline.tracing.enabled
        now = time.monotonic()
        out = pipeline.decide([_record(), _record(9_000.0)], [now, now], [TRACEPARENT, None])
        pipeline.tracing.flush()
        by_trace = {d["trace_id"]: d for d in out}
        assert CALLER_TRACE in by_trace and len(by_trace) == 2  # one trace per decision
        for trace_id, decision in by_trace.items():
            spans = receiver.wait_for(trace_id, STAGES | {"decision"})
            roots = [s for s in spans if s.name == "decision"]
            assert len(roots) == 1
            root = roots[0]
            assert root.attributes["checkout_risk.decision_id"] == decision["decision_id"]
            if trace_id == CALLER_TRACE:
                assert root.parent_id == CALLER_SPAN  # under the caller's span
            else:
                assert root.parent_id == ""
            stages = [s for s in spans if s.name != "decision"]
            assert {s.name for s in stages} >= STAGES
            assert all(s.parent_id == root.span_id for s in stages)
            assert len(stages) == len({s.name for s in stages})  # one span per stage
            assert root.service == "checkout-risk" and root.instance == pipeline.replica_id
    finally:
        pipeline.close()
        pipeline.tracing.shutdown()
        receiver.close()


def test_an_unknown_exporter_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkinish")
    with pytest.raises(RuntimeError, match="otlp, console or none"):
        Tracing("x")


def test_a_batch_of_decisions_is_counted_per_distinct_tag_set() -> None:
    from serve_graph.telemetry import tally

    full = {"action": "approve", "region": "us-east", "degraded": None}
    shed = {
        "action": "step_up",
        "region": "us-east",
        "degraded": {"rung": 4, "reason": "overload: admission (80 ms queued)"},
    }
    other = dict(shed, degraded={"rung": 4, "reason": "overload: admission (95 ms queued)"})
    decided, degraded = tally([full, shed, other, full, dict(shed, action="block")])
    assert decided == {
        ("approve", "us-east", "1"): 2,
        ("step_up", "us-east", "4"): 2,
        ("block", "us-east", "4"): 1,
    }
    assert degraded == {("us-east", "4", "overload"): 3}  # the reason's kind, not details
    assert tally([]) == ({}, {})
