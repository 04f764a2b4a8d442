"""The capacity plan: replicas, worker pods and Redis shards per region, from one config.

Every number comes from ``configs/capacity.yaml``; :func:`plan` is the only arithmetic, so
the manifests in ``k8s/``, ``checkout-risk k8s plan`` and docs/regions.md cannot disagree.

The rules, per region ``r`` with share ``s_r`` of the marketplace peak ``P``:

* own peak ``L_r = P * s_r`` decisions/s;
* failover peak: when the largest *other* region ``f`` fails, checkout clients spread its
  traffic over the survivors in proportion to their shares, so
  ``F_r = L_r + P * s_f * s_r / (1 - s_f)``;
* a replica is planned at ``target_utilisation`` of its sustainable rps, so
  ``min_replicas = ceil(L_r / (rps * u))`` (always on: node scale-up takes minutes and a
  payment peak does not wait) and ``max_replicas = ceil(F_r / (rps * u))`` (the
  autoscaler's ceiling; with ``failover_headroom`` off it equals the minimum's peak);
* worker pods hold ``floor((pod_cpus - reserved) / replica_cpus)`` replicas each, and the
  pods also fit the side deployments (the shadow scorer; an explainer if one is configured);
* replicators ``= ceil(F_r * destinations / entries_per_s)``;
* Redis commands/s are the region's own decisions times ``ops_per_decision`` plus the
  updates it receives from other regions (replication, after data residency) times
  ``ops_per_replicated_update``, both at the failover peak (incoming updates scaled by
  the same factor as the region's own traffic: an upper bound, since the failed region
  stops sending); shards ``= ceil(ops / ops_per_shard)``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pydantic
import yaml

from serve_graph.config import RegionConfig, regions, replication_targets

ROOT = Path(__file__).resolve().parent.parent
CAPACITY = ROOT / "configs" / "capacity.yaml"
SERVE_CONFIG = ROOT / "configs" / "serve" / "local.yaml"


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


class ReplicaSpec(_Strict):
    sustainable_rps: pydantic.PositiveFloat
    cpus: pydantic.PositiveFloat
    memory_gib: pydantic.PositiveFloat


class PodSpec(_Strict):
    cpus: pydantic.PositiveFloat
    memory_gib: pydantic.PositiveFloat
    reserved_cpus: pydantic.NonNegativeFloat = 0


class ReplicatorSpec(_Strict):
    entries_per_s: pydantic.PositiveFloat


class RedisSpec(_Strict):
    ops_per_decision: pydantic.PositiveFloat
    ops_per_replicated_update: pydantic.PositiveFloat
    ops_per_shard: pydantic.PositiveFloat
    memory_gib: pydantic.PositiveFloat


class CapacityConfig(_Strict):
    """configs/capacity.yaml (see that file for the meaning and units of each input)."""

    peak_qps: pydantic.PositiveFloat
    regions: dict[str, pydantic.confloat(gt=0, le=1)]
    replica: ReplicaSpec
    target_utilisation: pydantic.confloat(gt=0, le=1)
    failover_headroom: bool = True
    worker_pod: PodSpec
    head_pod: PodSpec
    replicator: ReplicatorSpec
    redis: RedisSpec

    @pydantic.model_validator(mode="after")
    def _check(self) -> CapacityConfig:
        total = sum(self.regions.values())
        if abs(total - 1) > 1e-6:
            raise ValueError(f"region shares must sum to 1, not {total:g}")
        if self.worker_pod.cpus - self.worker_pod.reserved_cpus < self.replica.cpus:
            raise ValueError("a worker pod must hold at least one replica")
        return self


class RegionPlan(pydantic.BaseModel):
    """What one region needs at the marketplace peak."""

    region: str
    peak_rps: float  # its own share of the peak, decisions/s
    failover_rps: float  # with the largest other region's traffic spread over survivors
    min_replicas: int
    max_replicas: int
    replicas_per_pod: int
    min_worker_pods: int
    max_worker_pods: int
    pods_allowed_down: int  # PodDisruptionBudget: pods that may be evicted at own peak
    replicated_in_rps: float  # updates received from other regions at peak
    redis_ops: float  # commands/s at failover peak
    redis_shards: int
    replicators: int  # processes shipping its outbox (0: residency sends it nowhere)
    outbox_retention_s: float | None  # how long a partition may last at own peak before
    # the outbox trims updates a destination has not received (None: no outbox)


def load_capacity(path: Path = CAPACITY) -> CapacityConfig:
    try:
        return CapacityConfig.model_validate(yaml.safe_load(Path(path).read_text()))
    except OSError as exc:
        raise ValueError(f"cannot read capacity config {path}: {exc.strerror}") from exc
    except (yaml.YAMLError, pydantic.ValidationError) as exc:
        raise ValueError(f"invalid capacity config {path}: {exc}") from exc


def side_cpus(serve_config: Path = SERVE_CONFIG) -> float:
    """CPUs of the deployments beside the fused one (shadow scorer, explainer if any) in the
    region application of configs/serve/local.yaml: they share the worker pods."""
    app = yaml.safe_load(Path(serve_config).read_text())["applications"][0]
    total = 0.0
    for deployment in app["deployments"]:
        if deployment["name"] == "FusedDecider":
            continue
        scaling = deployment.get("autoscaling_config") or {}
        replicas = scaling.get("max_replicas", deployment.get("num_replicas", 1))
        total += replicas * (deployment.get("ray_actor_options") or {}).get("num_cpus", 1)
    return total


def plan(
    capacity: CapacityConfig,
    region_configs: list[RegionConfig] | None = None,
    side: float | None = None,
) -> dict[str, RegionPlan]:
    """The capacity plan of every region in `capacity`, in its order; `side`: CPUs of the
    side deployments per region (default: from configs/serve/local.yaml)."""
    side = side_cpus() if side is None else side
    configs = {r.name: r for r in (region_configs or regions())}
    missing = sorted(set(capacity.regions) - set(configs))
    unplanned = sorted(set(configs) - set(capacity.regions))
    if missing or unplanned:
        raise ValueError(
            f"configs/capacity.yaml and configs/regions/ disagree: no region config for "
            f"{missing}, no traffic share for {unplanned}"
        )
    shares = capacity.regions
    peak = capacity.peak_qps
    per_replica = capacity.replica.sustainable_rps * capacity.target_utilisation
    per_pod = math.floor(
        (capacity.worker_pod.cpus - capacity.worker_pod.reserved_cpus) / capacity.replica.cpus
    )
    # who receives whose updates (data residency applied)
    receives: dict[str, float] = dict.fromkeys(shares, 0.0)
    sends_to: dict[str, int] = {}
    for name in shares:
        targets = replication_targets(configs[name], list(configs.values()))
        sends_to[name] = len(targets)
        for target in targets:
            receives[target] += peak * shares[name]
    out: dict[str, RegionPlan] = {}
    for name, share in shares.items():
        own = peak * share
        failover = own
        if capacity.failover_headroom and len(shares) > 1:
            largest_other = max(s for n, s in shares.items() if n != name)
            failover = own + peak * largest_other * share / (1 - largest_other)
        min_replicas = math.ceil(own / per_replica - 1e-9)
        max_replicas = max(min_replicas, math.ceil(failover / per_replica - 1e-9))
        schedulable = capacity.worker_pod.cpus - capacity.worker_pod.reserved_cpus
        cpu = capacity.replica.cpus
        min_pods = math.ceil((min_replicas * cpu + side) / schedulable - 1e-9)
        max_pods = math.ceil((max_replicas * cpu + side) / schedulable - 1e-9)
        # pods needed to carry the own peak at full sustainable rps (no headroom left)
        needed = math.ceil(own / (capacity.replica.sustainable_rps * per_pod) - 1e-9)
        scale = failover / own if own else 1.0
        ops = (
            failover * capacity.redis.ops_per_decision
            + receives[name] * scale * capacity.redis.ops_per_replicated_update
        )
        out[name] = RegionPlan(
            region=name,
            peak_rps=round(own, 1),
            failover_rps=round(failover, 1),
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            replicas_per_pod=per_pod,
            min_worker_pods=min_pods,
            max_worker_pods=max_pods,
            pods_allowed_down=max(1, min_pods - needed),
            replicated_in_rps=round(receives[name], 1),
            redis_ops=round(ops),
            redis_shards=math.ceil(ops / capacity.redis.ops_per_shard - 1e-9),
            # each replicator ships every entry to every destination, at failover peak
            outbox_retention_s=(
                round(configs[name].outbox_maxlen / own, 1) if sends_to[name] else None
            ),
            replicators=math.ceil(
                failover * sends_to[name] / capacity.replicator.entries_per_s - 1e-9
            ),
        )
    return out
