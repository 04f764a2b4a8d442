"""The capacity plan: hand-checked arithmetic, failover cover, and config errors."""

from __future__ import annotations

import math

import pytest
import yaml

from checkout_risk.capacity import CAPACITY, CapacityConfig, load_capacity, plan, side_cpus
from checkout_risk.cli import main
from serve_graph.config import RegionConfig, regions

SMALL = {
    "peak_qps": 1000,
    "regions": {"a": 0.5, "b": 0.3, "c": 0.2},
    "replica": {"sustainable_rps": 100, "cpus": 1, "memory_gib": 1},
    "target_utilisation": 0.5,
    "worker_pod": {"cpus": 4, "memory_gib": 8, "reserved_cpus": 1},
    "head_pod": {"cpus": 2, "memory_gib": 4},
    "replicator": {"entries_per_s": 300},
    "redis": {
        "ops_per_decision": 10,
        "ops_per_replicated_update": 5,
        "ops_per_shard": 4000,
        "memory_gib": 1,
    },
}
REGIONS = [
    RegionConfig(name="a", namespace="a", jurisdiction="US"),
    RegionConfig(name="b", namespace="b", jurisdiction="EU", residency_required=True),
    RegionConfig(name="c", namespace="c", jurisdiction="SG"),
]


def test_plan_matches_the_hand_computed_example() -> None:
    p = plan(CapacityConfig.model_validate(SMALL), REGIONS, side=0)["a"]
    # own peak 500/s at 50 rps per replica (100 x 0.5): 10 replicas
    assert (p.peak_rps, p.min_replicas) == (500, 10)
    # b (0.3) fails: a takes 1000 x 0.3 x 0.5 / 0.7 = 214.3 more -> 714.3/s, 15 replicas
    assert p.failover_rps == pytest.approx(714.3, abs=0.05) and p.max_replicas == 15
    # 3 replicas per 4-CPU pod with 1 reserved: 4..5 pods; 2 pods carry 500/s at 300/pod
    assert (p.replicas_per_pod, p.min_worker_pods, p.max_worker_pods) == (3, 4, 5)
    assert p.pods_allowed_down == 2
    # a receives c's updates (200/s) but not b's (EU residency)
    assert p.replicated_in_rps == 200
    ops = 714.2857 * 10 + 200 * (714.2857 / 500) * 5
    assert p.redis_ops == pytest.approx(ops, abs=1) and p.redis_shards == 3
    # a sends to b and c: 714.3 x 2 entries/s at 300 per replicator
    assert p.replicators == 5
    assert plan(CapacityConfig.model_validate(SMALL), REGIONS, side=0)["b"].replicators == 0
    # the default outbox (1,000,000 entries) lasts 2,000 s at a's 500/s; b has none
    assert p.outbox_retention_s == 2000
    assert (
        plan(CapacityConfig.model_validate(SMALL), REGIONS, side=0)["b"].outbox_retention_s is None
    )
    assert plan(CapacityConfig.model_validate(SMALL), REGIONS, side=0)["b"].replicated_in_rps == 700


def test_side_deployments_get_room_in_the_worker_pods() -> None:
    # a's 15 replicas fill 5 pods of 3 exactly; 0.2 CPU of explainer and shadow needs a 6th
    p = plan(CapacityConfig.model_validate(SMALL), REGIONS, side=0.2)["a"]
    assert (p.min_worker_pods, p.max_worker_pods) == (4, 6)
    assert side_cpus() > 0  # the committed serve config has side deployments


def test_without_failover_headroom_max_equals_min() -> None:
    plans = plan(
        CapacityConfig.model_validate(SMALL | {"failover_headroom": False}), REGIONS, side=0
    )
    assert all(p.min_replicas == p.max_replicas for p in plans.values())


def test_survivors_cover_the_whole_peak_when_any_region_fails() -> None:
    cap = load_capacity()
    plans = plan(cap)
    per_replica = cap.replica.sustainable_rps * cap.target_utilisation
    for failed in plans:  # whichever region fails, the others' ceilings carry the peak
        survivors = sum(p.max_replicas for name, p in plans.items() if name != failed)
        assert survivors * per_replica >= cap.peak_qps
    for p in plans.values():
        assert p.min_replicas * per_replica >= p.peak_rps
        schedulable = cap.worker_pod.cpus - cap.worker_pod.reserved_cpus
        assert p.max_worker_pods * schedulable >= p.max_replicas * cap.replica.cpus + side_cpus()


def test_the_committed_config_plans_every_region() -> None:
    cap = load_capacity()
    assert cap.peak_qps == 28000
    assert set(plan(cap)) == {r.name for r in regions()}
    assert math.isclose(sum(cap.regions.values()), 1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"regions": {"a": 0.5, "b": 0.3, "c": 0.3}}, "sum to 1"),
        ({"worker_pod": {"cpus": 1, "memory_gib": 8, "reserved_cpus": 0.5}}, "at least one"),
        ({"peak_qps": -1}, "greater than 0"),
        ({"surprise": 1}, "Extra inputs"),
    ],
)
def test_bad_configs_are_refused_with_the_reason(change, message) -> None:
    with pytest.raises(ValueError, match=message):
        CapacityConfig.model_validate(SMALL | change)


def test_regions_without_a_share_are_refused() -> None:
    with pytest.raises(ValueError, match="no traffic share for"):
        plan(
            CapacityConfig.model_validate(SMALL), [*REGIONS, RegionConfig(name="d", namespace="d")]
        )


def test_plan_command_prints_every_region(capsys) -> None:
    assert main(["k8s", "plan"]) == 0
    out = capsys.readouterr().out
    for region in regions():
        assert region.name in out
    assert yaml.safe_load(CAPACITY.read_text())["replica"]["sustainable_rps"] > 0
