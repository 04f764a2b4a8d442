"""Ray Serve wiring: the same pipeline, fused in one replica or spread over deployments.

Topology is configuration (``configs/serve/*.yaml``, ``import_path``):

* ``serve_graph.deployments:fused_app`` — the hot path. One deployment runs every stage
  in-process on micro-batches; replicas scale out behind Serve's direct ingress / HAProxy.
  Measured on 2 cores, every handle hop costs milliseconds, so this is the default.
* ``serve_graph.deployments:graph_app`` — Ingress → FeatureLookup → PolicyEngine →
  Scorer → DecisionCombiner (+ an Explainer for SHAP) as separate deployments composed with
  ``DeploymentHandle``s. The ingress runs the very same ``DecisionPipeline`` with remote
  stand-ins for the stages, and every hop carries a whole micro-batch. Use it when a stage
  earns its own scaling or hardware (a heavier model, batched explanations, challengers).

Stages hold no Ray code (``stages.py``); this module only adapts them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve

from serve_graph.app import (
    MicroBatcher,
    build_app,
    detached_task,
    freeze_startup_heap,
    shorten_switch_interval,
)
from serve_graph.config import load_region, publish_outbox
from serve_graph.pipeline import (
    BATCH_DEADLINE,
    DecisionPipeline,
    failure,
    region_store_url,
    synthetic_attempt,
    synthetic_row,
    warm_row,
)
from serve_graph.policy import CHAMPION_POLICY, PolicyResult
from serve_graph.stages import DecisionCombiner, FeatureBatch, FeatureLookup, PolicyEngine, Scorer
from serve_graph.telemetry import Tracing, current_carriers

logger = logging.getLogger(__name__)

_REPLICA: Any = None  # the ingress replica living in this worker process


async def _decide(record: dict, arrived: float, trace: str | None) -> dict:
    _Remote.loop = asyncio.get_running_loop()
    return await _REPLICA.batcher.submit(record, arrived, trace)


async def _health() -> dict[str, Any]:
    from serve_graph.standalone import health_of

    _Remote.loop = asyncio.get_running_loop()
    warm = await _REPLICA.warmed()
    if warm is None:  # a 503: checkout's health checks keep traffic away meanwhile
        return {"status": "warming up", "topology": _REPLICA.topology}
    return health_of(_REPLICA.pipeline) | {"topology": _REPLICA.topology, "warm_up_ms": warm}


def _region() -> Any:
    return _REPLICA.pipeline.region if _REPLICA is not None else None


_app = build_app(_decide, _health, title="checkout-risk", region=_region)


def _warm(fn: Any) -> None:
    """A stage's first call (CatBoost's first prediction or SHAP) is slow: pay it at start,
    not on a payment. Best effort: a missing model warms up on first use."""
    try:
        fn()
    except Exception:  # noqa: BLE001
        pass


def _tracing(component: str) -> Tracing:
    """This replica's tracer: its spans name the deployment and the replica."""
    try:
        ctx = serve.get_replica_context()
        replica = ctx.replica_id.unique_id
    except Exception:  # noqa: BLE001 - constructed outside Serve (tests)
        replica = "local"
    return Tracing(component, {"service.instance.id": replica})


def _paths(registry: str | None, log_dir: str | None) -> dict[str, Any]:
    return {
        "registry": Path(registry) if registry else None,
        "log_dir": Path(log_dir) if log_dir else None,
    }


class _Ingress:
    topology = "fused"
    in_flight = 2  # micro-batches running at once in this replica

    def _start(self, pipeline: DecisionPipeline) -> None:
        global _REPLICA
        self.pipeline = pipeline
        self.warm_up_ms: dict[str, float] | None = pipeline.warm_up()  # no cold payments
        freeze_startup_heap()
        shorten_switch_interval()
        self.batcher = MicroBatcher.for_pipeline(pipeline, self.in_flight)
        _REPLICA = self

    def check_health(self) -> None:
        if self.topology == "fused" and self.pipeline.scorer.champion is None:
            raise RuntimeError("no champion model loaded")

    async def warmed(self) -> dict[str, float] | None:
        """What warming up took (ms per step), or None while it is still going on. A fused
        replica warmed every stage in its constructor."""
        return self.warm_up_ms


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=128)
@serve.ingress(_app)
class FusedDecider(_Ingress):
    """The hot path in this replica: one Redis round trip and one CatBoost call per batch.

    SHAP explanations (only for step_up/block) run here, on the batch's few non-approvals;
    an ExplainerDeployment takes them over when the application says ``explainer: remote``.
    Shadow challengers, whose cost differs from the hot path's, are a separate deployment
    reached with one batched call after the responses.
    """

    def __init__(
        self,
        region: str,
        registry: str | None = None,
        log_dir: str | None = None,
        redis_url: str | None = None,
        explainer: Any = None,
        shadow: Any = None,
    ) -> None:
        cfg = load_region(region)
        stages = {}
        if explainer is not None:
            stages["explainer"] = RemoteExplainer(explainer, cfg.budget_ms / 1000)
        if shadow is not None:
            stages["shadow"] = RemoteShadowScorer(shadow, 10.0)
        self._start(
            DecisionPipeline(cfg, redis_url=redis_url, stages=stages, **_paths(registry, log_dir))
        )


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class ExplainerDeployment:
    """Batched SHAP contributions for the decisions that are not approvals."""

    def __init__(self, registry: str | None = None) -> None:
        from trainers.registry import registry_root

        self.stage = Scorer(Path(registry) if registry else registry_root())
        self.tracing = _tracing("ExplainerDeployment")
        _warm(lambda: self.stage.explain([synthetic_row()], False, 5))

    def explain(
        self, values: list[dict], fallback: bool, top: int, trace: list[str] | None = None
    ) -> list:
        with self.tracing.serve("explain", trace):
            return self.stage.explain(values, fallback, top)


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class ShadowScorerDeployment:
    """The registry's shadow challenger, scored after the response; logged, never enforced."""

    def __init__(self, registry: str | None = None) -> None:
        from trainers.registry import registry_root

        self.stage = Scorer(Path(registry) if registry else registry_root())

    def has_shadow(self) -> bool:
        return self.stage.has_shadow()

    def score_shadow(self, values: list[dict]) -> tuple[np.ndarray, str] | None:
        return self.stage.score_shadow(values)


# ---------------------------------------------------------------------------------------
# the separate-deployment graph
# ---------------------------------------------------------------------------------------
#
# A stage's hot-path methods are coroutines: Serve runs them on the replica's event loop.
# As plain methods Serve ran each call in a thread pool, a GIL hand-off there and one back
# per hop, each up to the interpreter's 5 ms switch interval while the loop was busy
# (the ingress lost the same to its worker thread, see `_Remote`). Their work is short and
# the replica does nothing else meanwhile; the online writes after the response, which
# may take longer, stay plain methods in the pool.


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class FeatureLookupDeployment:
    def __init__(self, region: str, redis_url: str | None = None) -> None:
        cfg = load_region(region)
        self.stage = FeatureLookup(
            region_store_url(cfg, redis_url),
            cfg.namespace,
            cfg.feature_timeout_ms,
            cfg.store_retry_after_s,
            publish_outbox(cfg),
            cfg.outbox_maxlen,
        )
        self.tracing = _tracing("FeatureLookupDeployment")

    async def lookup(
        self, records: list[dict], ids: list[str], trace: list[str] | None = None
    ) -> FeatureBatch:
        with self.tracing.serve("features", trace):
            return self.stage.lookup(records, ids)

    def update(self, records: list[dict], decisions: list[str], trace: Any = None) -> None:
        self.stage.update(records, decisions)


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class PolicyDeployment:
    def __init__(self, policy: str | None = None) -> None:
        self.stage = PolicyEngine(Path(policy) if policy else CHAMPION_POLICY)
        self.tracing = _tracing("PolicyDeployment")

    async def evaluate(
        self, values: list[dict], trace: list[str] | None = None
    ) -> tuple[list[PolicyResult], str]:
        with self.tracing.serve("policy", trace):
            return self.stage.evaluate(values), self.stage.version


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class ScorerDeployment:
    def __init__(self, registry: str | None = None) -> None:
        from trainers.registry import registry_root

        self.stage = Scorer(Path(registry) if registry else registry_root())
        self.tracing = _tracing("ScorerDeployment")
        row = synthetic_row()
        _warm(lambda: self.stage.score([row], False))
        _warm(lambda: self.stage.score([row], True))
        _warm(lambda: self.stage.explain([row], False, 5))

    async def score(
        self, values: list[dict], fallback: bool, trace: list[str] | None = None
    ) -> tuple[np.ndarray, str]:
        with self.tracing.serve("score", trace):
            return self.stage.score(values, fallback)

    async def explain(
        self, values: list[dict], fallback: bool, top: int, trace: list[str] | None = None
    ) -> list:
        with self.tracing.serve("explain", trace):
            return self.stage.explain(values, fallback, top)


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class CombinerDeployment:
    def __init__(self, region: str) -> None:
        from serve_graph.decisioning import DEFAULT_COSTS

        self.stage = DecisionCombiner(DEFAULT_COSTS, load_region(region).rules_only_step_up_usd)
        self.tracing = _tracing("CombinerDeployment")

    async def combine(
        self,
        values: list[dict],
        policy: list[PolicyResult],
        p: np.ndarray | None,
        trace: list[str] | None = None,
    ) -> list[str]:
        with self.tracing.serve("combine", trace):
            return self.stage.combine(values, policy, p)


class _Remote:
    """Calls to another deployment, with a timeout and a circuit breaker.

    The hot path awaits a hop on the replica's event loop (``acall``; the pipeline's
    stage methods below are coroutines, which `DecisionPipeline.decide_async` awaits).
    Run from a worker thread instead, each hop cost two GIL hand-offs (the thread handing
    the call to the loop, the loop handing the answer back), each up to the interpreter's
    5 ms switch interval while the loop was busy. The after-response work (online
    updates, shadow scoring) runs in a worker thread and uses the blocking ``call``.
    """

    # The replica's event loop, captured by the first request: in Serve's throughput-
    # optimised mode handles route on the event loop, so blocking calls from a worker
    # thread are scheduled onto it and awaited there.
    loop: asyncio.AbstractEventLoop | None = None
    remote = True  # the pipeline traces a call through it as a CLIENT span

    # after repeated failed or timed-out calls, skip the hop this long: a couple of batches
    # pay for a dead replica, not every batch until Serve has replaced it
    retry_after_s = 1.0
    # what a hop leaves of the batch's deadline for the log write and the response
    reserve_s = 0.015

    # consecutive failures that open the circuit: one slow call is not a dead replica
    trip_after = 2

    def __init__(self, handle: Any, timeout_s: float) -> None:
        self.handle, self.timeout_s = handle, timeout_s
        self._open_until = 0.0
        self._failures = 0

    def call(self, method: str, *args: Any) -> Any:
        """The hop, blocking: from a worker thread, never from the event loop."""
        self._admit(method)
        try:
            result = self._call(method, *args)
        except BaseException:
            self._failed()
            raise
        self._failures = 0
        return result

    async def acall(self, method: str, *args: Any) -> Any:
        """The hop, awaited on the replica's event loop."""
        self._admit(method)
        try:
            request = self._request(method, args, self._traced())
            result = await asyncio.wait_for(request, self._timeout())
        except BaseException:
            self._failed()
            raise
        self._failures = 0
        return result

    def _admit(self, method: str) -> None:
        if time.monotonic() < self._open_until:
            raise RuntimeError(f"{method}: hop skipped after repeated failures")

    def _failed(self) -> None:
        self._failures += 1
        if self._failures >= self.trip_after:
            self._open_until = time.monotonic() + self.retry_after_s
            self._failures = 0

    def _timeout(self) -> float:
        deadline = BATCH_DEADLINE.get()
        if deadline is None:
            return self.timeout_s
        # on the hot path: no longer than the batch has left
        return max(0.001, min(self.timeout_s, deadline - time.monotonic() - self.reserve_s))

    @staticmethod
    def _traced() -> dict[str, Any]:
        carriers = current_carriers()  # this stage's spans, one per decision of the batch
        return {"trace": carriers} if carriers else {}

    async def _request(self, method: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        return await getattr(self.handle, method).remote(*args, **kwargs)

    def _call(self, method: str, *args: Any) -> Any:
        if _Remote.loop is None:
            raise RuntimeError("no serving event loop yet")
        request = self._request(method, args, self._traced())  # this thread's trace context
        timeout = self._timeout()
        future = asyncio.run_coroutine_threadsafe(request, _Remote.loop)
        try:
            return future.result(timeout=timeout)
        except BaseException:
            future.cancel()
            raise


class RemoteFeatureLookup(_Remote):
    def available(self) -> bool:
        return True

    async def lookup(self, records: Any, ids: Any = ()) -> FeatureBatch:
        try:
            return await self.acall("lookup", list(records), list(ids))
        except Exception as exc:  # noqa: BLE001 - the feature hop failing degrades to rung 3
            error = failure("features", exc)
            return FeatureBatch(None, FeatureLookup.request_only(records), error)

    def update(self, records: Any, decisions: Any) -> None:
        try:
            self.call("update", list(records), list(decisions))
        except Exception:  # noqa: BLE001 - a lost update is caught up by materialisation
            pass


class RemotePolicyEngine(_Remote):
    """The policy hop, with the same policy file evaluated here when the hop fails: rules
    are cheap, and a decision must never lose its blocklists to a dead replica."""

    shadows: list = []

    def __init__(self, handle: Any, timeout_s: float) -> None:
        super().__init__(handle, timeout_s)
        self.local = PolicyEngine(CHAMPION_POLICY)
        self.version = self.local.version

    async def evaluate(self, values: Any) -> list[PolicyResult]:
        try:
            results, self.version = await self.acall("evaluate", list(values))
        except Exception:  # noqa: BLE001 - evaluated here instead
            results, self.version = self.local.evaluate(list(values)), self.local.version
        return results

    def evaluate_shadows(self, values: Any) -> list[dict]:
        return [{} for _ in values]


class RemoteScorer(_Remote):
    shadow = None

    def has_shadow(self) -> bool:  # the graph runs no shadow challenger
        return False

    champion: str | None = None  # the version that scored last (health reports it)

    async def score(self, values: Any, fallback: bool) -> tuple[np.ndarray, str]:
        p, version = await self.acall("score", list(values), fallback)
        self.champion = version.split("/")[0]
        return p, version

    async def explain(self, values: Any, fallback: bool, top: int) -> list:
        return await self.acall("explain", list(values), fallback, top)


class RemoteExplainer(_Remote):
    async def explain(self, values: Any, fallback: bool, top: int) -> list:
        return await self.acall("explain", list(values), fallback, top)


class RemoteShadowScorer(_Remote):
    """The shadow deployment, asked whether it holds a challenger at most every
    `recheck_s`: asking on every batch cost two handle calls per batch of the hot path's
    event loop, for an answer that changes when someone promotes a model (and that the
    deployment itself re-reads from the registry at most once a second)."""

    recheck_s = 1.0

    def __init__(self, handle: Any, timeout_s: float) -> None:
        super().__init__(handle, timeout_s)
        self._known: tuple[float, bool] | None = None

    def has_shadow(self) -> bool:
        now = time.monotonic()
        if self._known is not None and now - self._known[0] < self.recheck_s:
            return self._known[1]
        try:
            found = bool(self.call("has_shadow"))
        except Exception:  # noqa: BLE001 - shadow scoring is optional
            found = False
        self._known = (now, found)
        return found

    def score_shadow(self, values: Any) -> tuple[np.ndarray, str] | None:
        return self.call("score_shadow", list(values))


class RemoteCombiner(_Remote):
    """The combiner hop, combined here with the same cost file when the hop fails."""

    def __init__(self, handle: Any, timeout_s: float, rules_only_step_up_usd: float) -> None:
        from serve_graph.decisioning import DEFAULT_COSTS, load_costs
        from serve_graph.stages import _Reloading

        super().__init__(handle, timeout_s)
        self.costs = _Reloading(DEFAULT_COSTS, load_costs)  # logged with each decision
        self.local = DecisionCombiner(DEFAULT_COSTS, rules_only_step_up_usd)

    async def combine(self, values: Any, policy: Any, p: Any) -> list[str]:
        try:
            return await self.acall("combine", list(values), list(policy), p)
        except Exception:  # noqa: BLE001 - the same costs, combined here
            return self.local.combine(values, policy, p)


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=128)
@serve.ingress(_app)
class GraphIngress(_Ingress):
    """The pipeline with every stage a separate deployment, reached through handles."""

    topology = "graph"
    # the ingress mostly waits on its hops: more batches in flight keep every stage busy
    in_flight = 4

    def __init__(
        self,
        features: Any | None,
        policy: Any | None,
        scorer: Any | None,
        combiner: Any | None,
        region: str,
        registry: str | None = None,
        log_dir: str | None = None,
        redis_url: str | None = None,
    ) -> None:
        """A stage whose handle is None runs in this replica, as in the fused one."""
        cfg = load_region(region)
        hop_s = cfg.budget_ms / 1000
        remote = {
            "features": lambda h: RemoteFeatureLookup(h, cfg.feature_timeout_ms / 1000 + 0.05),
            "policy": lambda h: RemotePolicyEngine(h, hop_s),
            "scorer": lambda h: RemoteScorer(h, hop_s),
            "combiner": lambda h: RemoteCombiner(h, hop_s, cfg.rules_only_step_up_usd),
        }
        handles = {"features": features, "policy": policy, "scorer": scorer, "combiner": combiner}
        stages = {name: remote[name](h) for name, h in handles.items() if h is not None}
        pipeline = DecisionPipeline(
            cfg, redis_url=redis_url, stages=stages, **_paths(registry, log_dir)
        )
        self._start(pipeline)
        self.warm_up_ms = None
        self._warming: asyncio.Task | None = None

    # how long one health check waits for the hops' warm-up before answering 503
    warm_wait_s = 1.5
    # how long a warm-up hop may take (a handle's first call finds the replicas)
    warm_hop_s = 30.0

    async def warmed(self) -> dict[str, float] | None:
        """Each hop once, on a synthetic attempt, before the first health check passes.

        A handle's first call looks up its deployment's replicas, and a stage replica's
        first call loads what it loads: together more than a hop's share of the budget. A
        cold graph paid that on its first payments, and two of them in a row opened the
        feature hop's circuit, sending the next second of decisions to rung 3 (seen on a
        clean-clone run). Nothing is written: a feature read, a policy evaluation, a score
        and a combine.
        """
        if self._warming is None:
            self._warming = detached_task(asyncio.get_running_loop(), self._warm_hops())
        done, _ = await asyncio.wait({self._warming}, timeout=self.warm_wait_s)
        return self.warm_up_ms if done else None

    async def _warm_hops(self) -> None:
        """Each hop once; whatever happens, warming up ends with what it measured. A
        warm-up that raised would otherwise leave the health route answering 503 for good,
        and checkout keeping traffic away from a replica whose hops have fallbacks."""
        took: dict[str, float] = {}
        try:
            await self._warm_each_hop(took)
        except Exception:  # noqa: BLE001 - each hop's own fallback remains
            logger.exception("warming the graph's hops failed after %s", sorted(took))
        finally:
            self.warm_up_ms = took

    async def _warm_each_hop(self, took: dict[str, float]) -> None:
        p = self.pipeline
        rec = synthetic_attempt(p.region.name)

        async def hop(name: str, stage: Any, method: str, *args: Any) -> Any:
            if not isinstance(stage, _Remote):  # runs in this replica: no hop to warm
                return None
            t0 = time.monotonic()
            try:
                return await asyncio.wait_for(stage._request(method, args, {}), self.warm_hop_s)
            except Exception:  # noqa: BLE001 - best effort: the hop's own fallback remains
                logger.warning("warming the %s hop failed", name, exc_info=True)
                return None
            finally:
                took[name] = round((time.monotonic() - t0) * 1000, 2)

        fetched = await hop("features", p.features, "lookup", [rec], [rec["transaction_id"]])
        if not isinstance(p.features, _Remote):  # a local read: the row the hops will see
            fetched = p.features.lookup([rec], [rec["transaction_id"]])
        row = warm_row(rec, fetched)
        evaluated = await hop("policy", p.policy, "evaluate", [row])
        # the champion on features as read; the fallback model on request-time ones only
        fallback = not (fetched and fetched.vectors)
        scored = await hop("score", p.scorer, "score", [row], fallback)
        if scored is not None:
            p.scorer.champion = scored[1].split("/")[0]
        if evaluated is None and not isinstance(p.policy, _Remote):
            evaluated = (p.policy.evaluate([row]), p.policy.version)
        if evaluated is not None:
            await hop("combine", p.combiner, "combine", [row], evaluated[0], None)


# ---------------------------------------------------------------------------------------
# application builders (import paths for `serve run` / serve config files)
# ---------------------------------------------------------------------------------------


def fused_app(args: dict[str, Any]) -> Any:
    """`explainer`: ``local`` (default) computes SHAP for step_up/block in the replica;
    ``remote`` binds an ExplainerDeployment for models whose SHAP is too heavy for the hot
    path's replica. Per-row SHAP on the served model costs ~0.4 ms a row, less than the hop
    itself (a handle call measured 14 ms p50 at 200 req/s on 2 cores)."""
    region = args.get("region", os.environ.get("CHECKOUT_RISK_REGION", "us-east"))
    registry = args.get("registry")
    where = args.get("explainer", "local")
    if where not in ("local", "remote"):
        raise ValueError(f"explainer must be 'local' or 'remote', not {where!r}")
    return FusedDecider.bind(
        region,
        registry,
        args.get("log_dir"),
        args.get("redis_url"),
        ExplainerDeployment.bind(registry) if where == "remote" else None,
        ShadowScorerDeployment.bind(registry),
    )


GRAPH_HOPS = ("features", "policy", "scorer", "combiner")


def graph_hops(hops: Any = None) -> tuple[str, ...]:
    """The stages a graph runs as deployments of their own (`hops` in the app's args):
    all four by default, in pipeline order; a clear error for anything else."""
    if hops is None:
        return GRAPH_HOPS
    if isinstance(hops, str):
        hops = [h.strip() for h in hops.split(",") if h.strip()]
    if not isinstance(hops, (list, tuple)) or not hops:
        raise ValueError(f"hops must be a non-empty list of {list(GRAPH_HOPS)}, not {hops!r}")
    unknown = [h for h in hops if h not in GRAPH_HOPS]
    if unknown:
        raise ValueError(f"unknown hops {unknown}: each must be one of {list(GRAPH_HOPS)}")
    return tuple(h for h in GRAPH_HOPS if h in hops)


def hop_deployments(hops: Any = None) -> list[str]:
    """The deployment names of a graph with these `hops`, the ingress first: what its
    serve config lists."""
    by_hop = {
        "features": FeatureLookupDeployment,
        "policy": PolicyDeployment,
        "scorer": ScorerDeployment,
        "combiner": CombinerDeployment,
    }
    return [GraphIngress.name] + [by_hop[h].name for h in graph_hops(hops)]


def graph_app(args: dict[str, Any]) -> Any:
    """`hops` (default all four): the stages that run as deployments of their own; the
    others run in the ingress replica. A hop costs a handle call each way per batch (~5 ms
    at p50 on two busy cores), which a stage of microseconds (the policy's rules, the
    combiner's arithmetic) never earns back; the feature read and the model may, when they
    scale apart from the ingress."""
    region = args.get("region", os.environ.get("CHECKOUT_RISK_REGION", "us-east"))
    registry, log_dir, redis_url = args.get("registry"), args.get("log_dir"), args.get("redis_url")
    hops = graph_hops(args.get("hops"))
    return GraphIngress.bind(
        FeatureLookupDeployment.bind(region, redis_url) if "features" in hops else None,
        PolicyDeployment.bind() if "policy" in hops else None,
        ScorerDeployment.bind(registry) if "scorer" in hops else None,
        CombinerDeployment.bind(region) if "combiner" in hops else None,
        region,
        registry,
        log_dir,
        redis_url,
    )


def wait_ready(url: str, key: str, timeout_s: float = 120.0) -> None:
    """Poll /healthz until the application answers (used by make run and tests)."""
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(f"{url}/healthz", headers={"X-API-Key": key})
            with urllib.request.urlopen(req, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not become healthy")
