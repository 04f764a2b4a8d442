"""The in-process pipeline: overload sheds to rules only, and config edits apply live."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from feature_views.contract import PaymentAttempt
from serve_graph.config import load_region
from serve_graph.pipeline import DecisionPipeline, ScoringReserve, region_store_url
from serve_graph.stages import PolicyEngine
from trainers.registry import Registry

ROOT = Path(__file__).resolve().parents[2]


def _record(amount: float = 250.0) -> dict:
    return PaymentAttempt.model_validate(
        {
            "transaction_id": f"p-{uuid.uuid4().hex}",
            "event_time": "2026-08-20T10:00:00Z",
            "card_id": "tok_1",
            "merchant_id": "m1",
            "amount": amount,
            "region": "us-east",
        }
    ).to_record()


def _pipeline(registry_root, redis_url, log_dir, stages=None) -> DecisionPipeline:
    """us-east's pipeline over its own namespace, with v1 as champion."""
    Registry(registry_root).set_stage("v1", "champion", "pipeline test")
    region = load_region("us-east").model_copy(update={"namespace": f"pl-{uuid.uuid4().hex[:6]}"})
    return DecisionPipeline(
        region,
        registry_root,
        log_dir=log_dir,
        redis_url=region_store_url(region, redis_url),
        stages=stages,
    )


@pytest.fixture
def pipeline(trained, registry_root, redis_url, tmp_path):
    p = _pipeline(registry_root, redis_url, tmp_path / "log")
    yield p
    p.close()


def test_full_path_when_there_is_time(pipeline) -> None:
    out = pipeline.decide([_record()], [time.monotonic()])[0]
    assert out["degraded"] is None and out["fraud_probability"] is not None


def test_overload_sheds_to_rules_only_instead_of_timing_out(pipeline) -> None:
    # the request already waited 70 ms in queues: 30 ms are left, scoring needs 40
    late = time.monotonic() - 0.070
    out = pipeline.decide([_record(250.0)], [late])[0]
    assert out["degraded"]["rung"] == 4 and "overload" in out["degraded"]["reason"]
    assert out["fraud_probability"] is None and out["action"] == "step_up"  # >= $100
    from serve_graph.decision_log import find

    logged = find(pipeline.log_root, out["decision_id"])
    assert "features" not in logged["timings_ms"]  # shed before the store round trip too
    small = pipeline.decide([_record(20.0)], [late])[0]
    assert small["action"] == "approve"


def test_the_scoring_reserve_is_learned_from_recent_batches(pipeline) -> None:
    """A fused replica scores, explains and logs a batch in milliseconds: once it has seen
    that, a batch with 30 ms left is scored, where the configured 40 ms would shed it. A
    batch with less than the learned reserve left still goes to rules only."""
    for _ in range(ScoringReserve.min_samples):
        assert pipeline.decide([_record()], [time.monotonic()])[0]["degraded"] is None
    reserve = pipeline.reserve.ms(pipeline.region.scoring_budget_ms)
    assert ScoringReserve.floor_ms <= reserve < 30, reserve
    out = pipeline.decide([_record(250.0)], [time.monotonic() - 0.070])[0]
    assert out["degraded"] is None and out["fraud_probability"] is not None
    late = pipeline.decide([_record(250.0)], [time.monotonic() - 0.098])[0]
    assert late["degraded"]["rung"] == 4, late["degraded"]
    assert f"scoring needs {reserve:.0f}" in late["degraded"]["reason"]


def test_scoring_reserve_quantile_margin_floor_and_ceiling() -> None:
    r = ScoringReserve()
    for _ in range(ScoringReserve.min_samples - 1):
        r.observe(2.0)
    assert r.ms(40) == 40  # too few batches seen: the configured budget
    r.observe(2.0)
    assert r.ms(40) == ScoringReserve.floor_ms  # 1.5 x 2 ms is under the floor
    for _ in range(100):
        r.observe(10.0)
    r.observe(500.0)  # one stall in the window is not what scoring needs
    assert r.ms(40) == 15.0
    for _ in range(ScoringReserve.window):
        r.observe(60.0)
    assert r.ms(40) == 40  # never above the region's budget


def test_a_batch_turned_away_by_admission_is_decided_on_rules_alone(pipeline) -> None:
    # fresh requests (the whole budget left) that admission sent to the shed lane
    now = time.monotonic()
    big, small = pipeline.decide(
        [_record(250.0), _record(20.0)], [now, now], shed="overload: admission (25 ms queued)"
    )
    for out in (big, small):
        assert out["degraded"] == {"rung": 4, "reason": "overload: admission (25 ms queued)"}
        assert out["fraud_probability"] is None and out["model_version"] is None
    assert big["action"] == "step_up" and small["action"] == "approve"
    from serve_graph.decision_log import find

    logged = find(pipeline.log_root, big["decision_id"])
    assert not {"features", "score", "explain"} & set(logged["timings_ms"])


def test_policy_edits_apply_without_a_restart(tmp_path) -> None:
    path = tmp_path / "policy.yaml"
    text = (ROOT / "configs" / "policies" / "champion.yaml").read_text()
    path.write_text(text)
    engine = PolicyEngine(path)
    assert engine.version == "champion-2026.11.1"
    time.sleep(0.05)
    path.write_text(text.replace("champion-2026.11.1", "champion-2026.11.2"))
    time.sleep(1.1)  # edits are picked up within a second
    assert engine.version == "champion-2026.11.2"
    path.write_text("rules: [this is not a policy")  # a broken edit keeps the last good one
    time.sleep(1.1)
    assert engine.version == "champion-2026.11.2"


def test_warm_up_exercises_every_stage_and_writes_nothing(pipeline) -> None:
    from feature_views.store import connect
    from serve_graph.decision_log import iter_records

    redis = connect(pipeline.features.url, timeout_s=5)
    before = redis.dbsize()
    took = pipeline.warm_up()
    assert {"features", "policy", "score", "score_fallback", "explain"} <= set(took)
    assert redis.dbsize() == before
    assert list(iter_records(pipeline.log_root)) == []


class _DeadExplainer:
    def explain(self, *args, **kwargs):
        raise TimeoutError("explainer hop timed out")


def test_a_dead_explainer_defers_shap_and_replay_computes_it(
    trained, registry_root, redis_url, tmp_path
) -> None:
    from serve_graph.decision_log import find
    from serve_graph.replay import replay

    p = _pipeline(registry_root, redis_url, tmp_path / "log", {"explainer": _DeadExplainer()})
    try:
        out = p.decide([_record(9_500.0)], [time.monotonic()])[0]  # large: not an approval
    finally:
        p.close()
    assert out["action"] != "approve" and out["degraded"] is None
    model = [r for r in out["reasons"] if r["kind"] == "model"]
    assert model == [{"kind": "model", "code": "explanation_deferred", "contribution": None}]
    assert find(tmp_path / "log", out["decision_id"]) is not None
    result = replay(out["decision_id"], tmp_path / "log", registry_root)
    assert not result.mismatches
    assert len(result.replayed["model_reasons"]) == p.region.explain_top


def test_one_failed_read_does_not_open_the_store_circuit(tmp_path) -> None:
    """Two failed reads in a row open it (a dead store costs two timeouts, not one per
    batch); a single late read degrades only its own batch."""
    from serve_graph.stages import FeatureLookup

    lookup = FeatureLookup(
        f"unix://{tmp_path}/no-such.sock", "cb", timeout_ms=25, retry_after_s=0.2
    )
    rec = _record()
    first = lookup.lookup([rec])
    assert first.vectors is None and "circuit open" not in first.error
    assert lookup.available()  # one failure: the next batch tries the store again
    second = lookup.lookup([rec])
    assert second.vectors is None and "circuit open" not in second.error
    assert not lookup.available()
    assert lookup.lookup([rec]).error == "online store: circuit open"
    time.sleep(0.25)
    assert lookup.available()
    with pytest.raises(ValueError):
        FeatureLookup(None, "cb", timeout_ms=25, trip_after=0)


def test_a_read_between_failures_resets_the_count(redis_url, tmp_path) -> None:
    from serve_graph.stages import FeatureLookup

    lookup = FeatureLookup(redis_url, "cb", timeout_ms=500)
    rec = _record()
    good_url = lookup.url
    lookup.url = f"unix://{tmp_path}/no-such.sock"
    assert lookup.lookup([rec]).vectors is None
    lookup.url = good_url
    assert lookup.lookup([rec]).vectors is not None
    lookup.url = f"unix://{tmp_path}/no-such.sock"
    lookup._store = None  # as after a lost connection: the next read reconnects
    assert lookup.lookup([rec]).vectors is None
    assert lookup.available()  # not two in a row


def test_decide_on_the_event_loop_answers_and_logs_as_in_a_thread(pipeline) -> None:
    """decide_async runs the same steps as decide; only the log commit is awaited."""
    import asyncio

    from serve_graph.decision_log import find

    records = [_record(25.0), _record(9_500.0), _record(60.0)]
    now = time.monotonic()
    threaded = pipeline.decide(records[:1], [now])
    looped = asyncio.run(pipeline.decide_async(records[1:], [now, now]))
    shed = asyncio.run(pipeline.decide_async([_record(40.0)], [now], shed="overload: test"))
    assert [d["transaction_id"] for d in looped] == [r["transaction_id"] for r in records[1:]]
    assert looped[0]["action"] != "approve"
    assert [r["kind"] for r in looped[0]["reasons"]].count("model") == pipeline.region.explain_top
    assert shed[0]["degraded"]["rung"] == 4
    for d in threaded + looped + shed:
        assert find(pipeline.log_root, d["decision_id"])["action"] == d["action"]
    again = asyncio.run(pipeline.decide_async(records[1:2], [time.monotonic()]))
    assert again[0]["idempotent_replay"] and again[0]["decision_id"] == looped[0]["decision_id"]


def test_the_loop_decides_other_batches_while_one_waits_for_its_fsync(
    pipeline, monkeypatch
) -> None:
    """A batch's log records are made durable by the log's writer thread while the event
    loop goes on: with a disk whose fsync takes 400 ms, a timer on the loop is never held
    up that long, and every decision is still durable before it is returned."""
    import asyncio
    import os

    from serve_graph import decision_log
    from serve_graph.decision_log import find

    pipeline.warm_up()
    pipeline.decide([_record()], [time.monotonic()])  # first calls paid before timing
    fsync = os.fsync

    def slow(fd: int) -> None:
        time.sleep(0.4)
        fsync(fd)

    monkeypatch.setattr(decision_log.os, "fsync", slow)
    gaps: list[float] = []

    async def run() -> list[dict]:
        done = asyncio.Event()

        async def ticker() -> None:
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.005)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        ticking = asyncio.create_task(ticker())
        now = time.monotonic()
        decided = await asyncio.gather(
            pipeline.decide_async([_record()], [now]),
            pipeline.decide_async([_record(40.0)], [now], shed="overload: test"),
        )
        done.set()
        await ticking
        return [d for batch in decided for d in batch]

    decisions = asyncio.run(run())
    assert len(decisions) == 2 and max(gaps) < 0.3, max(gaps)
    for d in decisions:
        assert find(pipeline.log_root, d["decision_id"])["action"] == d["action"]


def _hung_scorer():
    """The graph's Scorer stand-in, its replica having taken the call and never answering."""
    import asyncio

    from serve_graph.deployments import RemoteScorer

    class Hung(RemoteScorer):
        async def _request(self, method: str, args: tuple, kwargs: dict) -> None:
            await asyncio.Event().wait()

    return Hung(handle=None, timeout_s=10.0)


def test_a_hung_scorer_hop_costs_what_the_batch_has_left_then_is_skipped(
    trained, registry_root, redis_url, tmp_path
) -> None:
    """The graph's hops are awaited on the replica's event loop. A Scorer replica that took
    the call and never answers costs a batch what its budget has left (less the reserve
    for the log write and the response), not the hop's own 10 s timeout; two such batches
    open the circuit and the next skips the hop at once. Each decision falls back to rules
    (rung 4) and is logged."""
    import asyncio

    from serve_graph.decision_log import find

    hung = _hung_scorer()
    p = _pipeline(registry_root, redis_url, tmp_path / "log", stages={"scorer": hung})

    async def three_batches() -> list[tuple[dict, float]]:
        out = []
        for _ in range(3):
            t0 = time.monotonic()
            decided = await p.decide_async([_record()], [t0])
            out.append((decided[0], time.monotonic() - t0))
        return out

    try:
        results = asyncio.run(three_batches())
        with pytest.raises(TypeError, match="decide_async"):
            p.decide([_record()], [time.monotonic()])  # a hop cannot be awaited in a thread
    finally:
        p.close()
    budget = p.region.budget_ms / 1000
    for d, _ in results:
        assert d["degraded"]["rung"] == 4 and d["degraded"]["reason"].startswith("scorer"), d
        assert find(p.log_root, d["decision_id"])["action"] == d["action"]
    (_, first), (_, second), (third, _) = results
    assert budget - hung.reserve_s - 0.005 <= first < 2 * budget
    assert budget - hung.reserve_s - 0.005 <= second < 2 * budget
    assert "skipped after repeated failures" in third["degraded"]["reason"]


def test_a_decision_degraded_twice_logs_both_reasons(trained, registry_root, tmp_path) -> None:
    """The store is down (rung 3) and then the Scorer hop times out (rung 4): the reason
    names both, so the log shows why the decision had neither features nor a score."""
    import asyncio

    from serve_graph.decision_log import find

    dead_store = f"unix://{tmp_path}/no-such.sock"
    p = _pipeline(registry_root, dead_store, tmp_path / "log", stages={"scorer": _hung_scorer()})
    try:
        d = asyncio.run(p.decide_async([_record()], [time.monotonic()]))[0]
    finally:
        p.close()
    reason = d["degraded"]["reason"]
    assert d["degraded"]["rung"] == 4 and reason.startswith("scorer: TimeoutError; "), reason
    assert "online store" in reason, reason
    assert find(p.log_root, d["decision_id"])["degraded"]["reason"] == reason


def test_the_challenger_scores_every_decision_served_with_features(
    trained, registry_root, redis_url, tmp_path
) -> None:
    """One decision of an after-work batch made without the store's features (request-time
    ones only, the store down) gets no challenger score; the others still do."""
    import json
    import shutil

    from serve_graph.decision_log import iter_records

    root = tmp_path / "models"
    shutil.copytree(registry_root / "v1", root / "v1")
    shutil.copytree(registry_root / "v1", root / "v2")
    meta = root / "v2" / "metadata.json"
    meta.chmod(0o644)
    meta.write_text(json.dumps(json.loads(meta.read_text()) | {"version": "v2"}))
    Registry(root).set_stage("v2", "shadow", "challenger")
    p = _pipeline(root, redis_url, tmp_path / "log")
    try:
        assert p.scorer.has_shadow()
        records = [_record(), _record(), _record()]
        responses = p.decide(records, [time.monotonic()] * 3)
        assert all(r["degraded"] is None for r in responses)
        p._served.pop(responses[1]["decision_id"])  # as if decided at rung 3
        p.after(records, responses)
    finally:
        p.close()
    shadows = {
        r["decision_id"]: r for r in iter_records(tmp_path / "log") if r.get("type") == "shadow"
    }
    first, second, third = (shadows[r["decision_id"]] for r in responses)
    assert first["shadow_model"] == third["shadow_model"] == "v2"
    assert 0 <= first["shadow_fraud_probability"] <= 1
    assert second["shadow_model"] is None and second["shadow_fraud_probability"] is None
