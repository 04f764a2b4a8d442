"""The per-rung CPU benchmark measures the rungs it names."""

from __future__ import annotations

import uuid

from bench.rung_cost import measure
from feature_views.contract import PaymentAttempt
from serve_graph.config import load_region
from serve_graph.decision_log import iter_records
from serve_graph.pipeline import DecisionPipeline, region_store_url
from trainers.registry import Registry


def test_full_and_shed_batches_reach_their_rungs_and_are_logged(
    trained, registry_root, redis_url, tmp_path
) -> None:
    Registry(registry_root).set_stage("v1", "champion", "rung-cost test")
    region = load_region("us-east").model_copy(update={"namespace": f"rc-{uuid.uuid4().hex[:6]}"})
    pipeline = DecisionPipeline(
        region,
        registry_root,
        log_dir=tmp_path / "log",
        redis_url=region_store_url(region, redis_url),
    )
    record = PaymentAttempt.model_validate(
        {
            "transaction_id": "template",
            "event_time": "2026-08-20T10:00:00Z",
            "card_id": "tok_1",
            "merchant_id": "m1",
            "amount": 40.0,
            "region": "us-east",
        }
    ).to_record()
    try:
        full = measure(pipeline, [record], size=4, batches=3, shed=False)
        shed = measure(pipeline, [record], size=4, batches=3, shed=True)
    finally:
        pipeline.close()
    assert full["decisions"] == shed["decisions"] == 12
    assert set(full["rungs"]) <= {"1", "2"} and sum(full["rungs"].values()) == 12, full
    assert shed["rungs"] == {"4": 12}, shed
    for got in (full, shed):
        assert got["decide_cpu_ms"] > 0 and got["after_cpu_ms"] > 0, got
    # every decision measured went through the log, as a served one does
    assert sum(1 for _ in iter_records(pipeline.log_root)) == 24
