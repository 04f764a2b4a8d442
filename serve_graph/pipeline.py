"""The decision pipeline: the stages chained in-process, with deadlines and degradation.

This is the fused hot path (one Ray Serve replica runs it per micro-batch) and also the
single-process baseline. For every micro-batch:

1. FeatureLookup — one Redis round trip (also returning decisions already made for these
   transaction ids: a retry gets the same answer and changes no feature);
2. PolicyEngine — champion rules and lists (shadow policies are logged, never enforced);
3. Scorer — CatBoost champion, calibrated p(fraud);
4. DecisionCombiner — expected-cost action, then policy overrides;
5. reasons — rule ids, and SHAP contributions for step_up / block;
6. the decision log — appended and fsynced before any response leaves.

After the responses: the attempts are written to the online store (idempotent) and shadow
models score the batch off the critical path.

The degradation ladder (rungs as in DESIGN §2): 1 full path; 2 some views stale (defaults,
same model); 3 online store down or slow (request-only features, fallback model); 4 scorer
down, or too little time left to score (rules only, conservative step-up). Every decision
off rung 1 carries its rung and reason; recovery is automatic.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Generator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from feature_views.contract import to_ms
from feature_views.store import store_url
from serve_graph.config import RegionConfig, publish_outbox
from serve_graph.decision_log import HASHED_FIELDS, DecisionLog, adopt_abandoned, keyed_hash
from serve_graph.decisioning import DEFAULT_COSTS
from serve_graph.policy import CHAMPION_POLICY
from serve_graph.stages import (
    DecisionCombiner,
    FeatureBatch,
    FeatureLookup,
    PolicyEngine,
    Scorer,
)
from serve_graph.telemetry import BatchTrace, DecisionMetrics, Tracing
from trainers.registry import registry_root

LIST_FIELDS = ("card_id", "shopper_id", "merchant_id", "email_domain", "device_id")

# what a batch's steps yield between stages: a point where an event-loop caller yields too
PAUSE: None = None

# The monotonic deadline of the batch being decided in this context: a stage in another
# deployment may use what is left of it and no more (a hung hop must not outlast the budget)
BATCH_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "checkout_risk_batch_deadline", default=None
)


def region_store_url(region: RegionConfig, url: str | None = None) -> str:
    """The region's Redis: its own database of the server (local two-region mode).

    Idempotent: a URL that already names a database gets the region's database instead.
    """
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url or store_url())
    if parts.scheme == "unix":
        query = dict(parse_qsl(parts.query)) | {"db": str(region.redis_db)}
        return f"unix://{parts.path}?{urlencode(query)}"
    return urlunsplit(parts._replace(path=f"/{region.redis_db}"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def synthetic_attempt(region: str) -> dict[str, Any]:
    """A contract-valid attempt that names no real entity: what stages warm up on."""
    from feature_views.contract import PaymentAttempt

    return PaymentAttempt.model_validate(
        {
            "transaction_id": f"warm-up-{uuid.uuid4().hex}",
            "event_time": datetime.now(timezone.utc).isoformat(),
            "card_id": "warm-up-card",
            "merchant_id": "warm-up-merchant",
            "amount": 10.0,
            "region": region,
        }
    ).to_record()


def synthetic_row(rec: dict[str, Any] | None = None) -> dict[str, Any]:
    """Request-time features of a synthetic attempt, shaped like a served feature row."""
    rec = rec or synthetic_attempt("us-east")
    return _with_request_fields(FeatureLookup.request_only([rec])[0], rec)


def _with_request_fields(row: dict[str, Any], rec: dict[str, Any]) -> dict[str, Any]:
    """`row` (a feature vector) with the attempt's own fields the policy reads beside the
    features: the entity ids its lists match, the amount and the region."""
    for f in LIST_FIELDS:
        row.setdefault(f, rec.get(f))
    row.setdefault("amount_usd", rec["amount_usd"])
    row.setdefault("region", rec.get("region"))
    return row


def failure(stage: str, exc: BaseException) -> str:
    """A degraded reason naming what failed: a timeout's message is empty, its type is not."""
    return f"{stage}: {str(exc) or type(exc).__name__}"


def _and(reason: str, earlier: str | None) -> str:
    """A worse rung's reason, keeping the one that degraded the decision before it (the
    store down, and then no time left to score: both are evidence)."""
    return f"{reason}; {earlier}" if earlier else reason


def warm_row(rec: dict[str, Any], fetched: Any) -> dict[str, Any]:
    """The row a warm-up scores: `rec`'s features as read (`fetched`, a FeatureBatch, may
    be None or a fallback), or its request-time features alone when there are none."""
    if fetched is None or not fetched.vectors:
        return synthetic_row(rec)
    return _with_request_fields(dict(fetched.vectors[0].values), rec)


def _resume(
    steps: Generator[Any, Any, list[dict[str, Any]]],
    pending: list[dict[str, Any]] | None,
    commit: Callable[[list[dict[str, Any]]], None],
) -> list[dict[str, Any]] | None:
    """The batch's next step after `pending`: log records are committed first (a failed
    commit is raised inside the batch, so its stages see it); a pause just goes on."""
    if pending is not PAUSE:
        try:
            commit(pending)
        except BaseException as exc:  # noqa: BLE001 - the batch's stages see it
            return steps.throw(exc)
    return steps.send(None)


def _hop(answer: Any) -> Generator[Any, Any, Any]:
    """A stage's answer. A stage in another deployment answers with an awaitable (its
    hop), which the batch yields to its driver: `decide_async` awaits it on the event
    loop and sends the result back, or throws the hop's exception in."""
    if inspect.isawaitable(answer):
        return (yield answer)
    return answer


class ScoringReserve:
    """What a batch must have left of its budget to be scored: learned from this replica's
    own batches, capped by the region's ``scoring_budget_ms``.

    From the scoring decision to the durable log record a batch still scores, combines,
    explains its non-approvals and commits: a few milliseconds in a fused replica, a few
    tens across the graph's hops. A fixed 40 ms reserve sent fused batches that had 33-39
    ms left to rules only after a single stall of the event loop (16 of the 21 degraded
    decisions of a 15 s hold at 70% load), when what remained took under 10 ms. So the
    reserve is a high quantile of what that part took in recent batches, with a margin;
    until enough batches were seen, and never above it, the configured budget.
    """

    window = 128  # recent scored batches
    min_samples = 16
    quantile = 0.95  # a single stall in the window is not what scoring needs
    margin = 1.5
    floor_ms = 5.0

    def __init__(self) -> None:
        self._took: deque[float] = deque(maxlen=self.window)
        self._needs_ms: float | None = None  # None until `min_samples` batches were seen

    def observe(self, took_ms: float) -> None:
        """Once per scored batch; the quantile is taken here, not on every read of it."""
        self._took.append(took_ms)
        if len(self._took) >= self.min_samples:
            ordered = sorted(self._took)
            high = ordered[min(len(ordered) - 1, int(self.quantile * len(ordered)))]
            self._needs_ms = max(self.floor_ms, self.margin * high)

    def ms(self, ceiling_ms: float) -> float:
        """The reserve now, at most `ceiling_ms` (the region's scoring budget)."""
        return ceiling_ms if self._needs_ms is None else min(ceiling_ms, self._needs_ms)


class DecisionPipeline:
    """All stages of one region, for one replica."""

    def __init__(
        self,
        region: RegionConfig,
        registry: Path | None = None,
        policy_path: Path = CHAMPION_POLICY,
        shadow_policies: Sequence[Path] = (),
        costs_path: Path = DEFAULT_COSTS,
        log_dir: Path | None = None,
        redis_url: str | None = None,
        replica_id: str | None = None,
        stages: dict[str, Any] | None = None,
    ) -> None:
        """`stages` replaces local stages with stand-ins (the graph topology's handles)."""
        from feature_views.store import run_dir

        self.region = region
        stages = stages or {}
        self.features = stages.get("features") or FeatureLookup(
            region_store_url(region, redis_url),
            region.namespace,
            region.feature_timeout_ms,
            region.store_retry_after_s,
            publish_outbox(region),
            region.outbox_maxlen,
        )
        self.policy = stages.get("policy") or PolicyEngine(policy_path, shadow_policies)
        self.scorer = stages.get("scorer") or Scorer(registry or registry_root())
        self.combiner = stages.get("combiner") or DecisionCombiner(
            costs_path, region.rules_only_step_up_usd
        )
        # SHAP for step_up/block and shadow challengers may live in their own deployments
        self.explainer = stages.get("explainer") or self.scorer
        self.shadow_scorer = stages.get("shadow") or self.scorer
        self.replica_id = replica_id or uuid.uuid4().hex[:8]
        self.log_root = Path(log_dir or run_dir() / "decision-log")
        # a replica killed mid-write left a torn, never-acknowledged line: repair and record it
        adopt_abandoned(self.log_root, f"{region.name}-")
        self.log = DecisionLog(self.log_root / f"{region.name}-{self.replica_id}")
        self._recent: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._served: OrderedDict[str, dict[str, Any]] = OrderedDict()  # for shadow scoring
        self.tracing = Tracing(
            "pipeline",
            {"service.instance.id": self.replica_id, "checkout_risk.region": region.name},
        )
        self.metrics = DecisionMetrics()
        self.reserve = ScoringReserve()
        self._dumped: dict[str | None, tuple[dict, dict]] = {}
        self._dumped_from: Any = None

    def _remote(self, stage: Any) -> bool:
        return bool(getattr(stage, "remote", False))

    def warm_up(self) -> dict[str, float]:
        """Run every local stage once on a synthetic attempt before taking traffic.

        The first Redis connection, CatBoost's first prediction on each model and the first
        SHAP call cost tens to hundreds of milliseconds; paid by real payments they would
        blow the budget right after every deploy or restart. Nothing is written: no feature
        update, no log record. Best effort: a stage that cannot warm up now (the store is
        down) simply warms up on its first real batch. Returns the ms each step took.
        """
        took: dict[str, float] = {}
        rec = synthetic_attempt(self.region.name)

        def step(name: str, fn: Any) -> Any:
            t0 = time.monotonic()
            try:
                return fn()
            except Exception:  # noqa: BLE001 - warming is best effort
                return None
            finally:
                took[name] = round((time.monotonic() - t0) * 1000, 2)

        if self._remote(self.features):
            return took  # the graph's stages warm themselves in their own replicas
        fetched = step("features", lambda: self.features.lookup([rec], [rec["transaction_id"]]))
        fallback_row = synthetic_row(rec)
        row = warm_row(rec, fetched)
        step("policy", lambda: self.policy.evaluate([row]))
        step("score", lambda: self.scorer.score([row], False))
        step("score_fallback", lambda: self.scorer.score([fallback_row], True))
        if not self._remote(self.explainer):
            step("explain", lambda: self.explainer.explain([row], False, self.region.explain_top))
        return took

    # ---- the hot path -------------------------------------------------------------------
    def decide(
        self,
        records: Sequence[dict[str, Any]],
        arrived: Sequence[float],
        traceparents: Sequence[str | None] | None = None,
        shed: str | None = None,
    ) -> list[dict[str, Any]]:
        """Decisions for a micro-batch of validated contract-form attempts (blocking).

        `traceparents` are the callers' W3C trace contexts (None where absent): each
        decision's trace continues the caller's, and its trace id is logged with it.
        `shed` (a reason) decides the batch on rules alone, without the store or a model:
        the admission limit in front of the queue sends the excess of an overload here.

        In-process stages only (replay, tools, tests): a pipeline whose stages are other
        deployments awaits their hops in `decide_async`.
        """
        steps = self._steps(records, arrived, traceparents, shed)
        try:
            pending = next(steps)
            while True:
                if inspect.isawaitable(pending):
                    getattr(pending, "close", lambda: None)()
                    steps.close()
                    raise TypeError("a stage in another deployment is awaited: decide_async")
                pending = _resume(steps, pending, self.log.append)
        except StopIteration as done:
            return done.value

    async def decide_async(
        self,
        records: Sequence[dict[str, Any]],
        arrived: Sequence[float],
        traceparents: Sequence[str | None] | None = None,
        shed: str | None = None,
    ) -> list[dict[str, Any]]:
        """`decide` on the event loop: the batch's work runs here; its log records are
        awaited from the log's writer thread (`DecisionLog.append_async`).

        What every serving replica runs. Handing each batch to a worker thread cost a GIL
        hand-off at every Redis reply, each up to the interpreter's switch interval while
        the event loop was busy: that, not the work, was most of a batch's time on a
        loaded replica. Between stages the batch yields to the loop (``PAUSE``), so
        requests arriving meanwhile are read and queued (admission sees them) instead of
        waiting unseen in the socket. A stage in another deployment (the graph topology)
        answers with its hop, awaited here while other batches run.

        The commit is the one hand-off kept. The writer thread group-commits every batch
        pending, shed and full alike, in one write and fsync, while the loop reads and
        decides other requests. A loop that wrote and fsynced each batch itself could do
        neither for ~1 ms of fsync under load, half of a shed batch's time on the loop.
        The hand-off back costs up to the switch interval, which serving processes
        shorten to 1 ms (`shorten_switch_interval`). Alternated three times at 600/s
        against the inline commit, it had the lower p99 in each pair and shed a third to
        a fifth as much, for ~5% more CPU an answer (docs/capacity.md).
        """
        steps = self._steps(records, arrived, traceparents, shed)
        try:
            pending = next(steps)
            while True:
                if pending is PAUSE:  # let the loop take in the requests that arrived
                    await asyncio.sleep(0)
                    pending = steps.send(None)
                    continue
                # a hop to another deployment, or the batch's log records, durable before
                # any response leaves; either's failure is thrown into the batch's stages
                waited = pending if inspect.isawaitable(pending) else self.log.append_async(pending)
                try:
                    answer = await waited
                except Exception as exc:  # noqa: BLE001 - the stage's own fallback
                    pending = steps.throw(exc)
                else:
                    pending = steps.send(answer)
        except StopIteration as done:
            return done.value
        finally:  # cancelled mid-hop: unwind the batch here, in its own context
            steps.close()

    def _steps(
        self,
        records: Sequence[dict[str, Any]],
        arrived: Sequence[float],
        traceparents: Sequence[str | None] | None,
        shed: str | None,
    ) -> Generator[Any, Any, list[dict[str, Any]]]:
        """The batch as steps: yields the log records to make durable, and finishes once
        they are (the caller commits them, blocking or awaited); between stages it yields
        ``PAUSE``, where an event-loop caller lets other work run."""
        budget_s = self.region.budget_ms / 1000
        deadline = min(arrived) + budget_s
        trace = self.tracing.batch(list(traceparents or [None] * len(records)), arrived)
        token = BATCH_DEADLINE.set(deadline)
        try:
            return (yield from self._decide_batch(records, arrived, deadline, trace, shed))
        finally:
            BATCH_DEADLINE.reset(token)
            trace.close()

    def _decide_batch(
        self,
        records: Sequence[dict[str, Any]],
        arrived: Sequence[float],
        deadline: float,
        trace: BatchTrace,
        shed: str | None = None,
    ) -> Generator[Any, Any, list[dict[str, Any]]]:
        txids = [str(r["transaction_id"]) for r in records]
        responses: list[dict[str, Any] | None] = [self._recent.get(t) for t in txids]
        todo = [i for i, r in enumerate(responses) if r is None]
        replays = [i for i, r in enumerate(responses) if r is not None]
        if not todo:
            trace.finish(replays, [{"checkout_risk.idempotent_replay": True}] * len(replays))
            return [dict(r, idempotent_replay=True) for r in responses]  # type: ignore[arg-type]
        batch = [records[i] for i in todo]
        left_ms = (deadline - time.monotonic()) * 1000
        reserve_ms = self.reserve.ms(self.region.scoring_budget_ms)
        if shed is None and left_ms < reserve_ms:
            shed = f"overload: {left_ms:.0f} ms left, scoring needs {reserve_ms:.0f}"
        if shed is not None:
            # Overloaded: turned away by admission, or the batch waited so long that it
            # could not be scored anyway. Shed before the store too (rules on request-time
            # features), so a backlog drains at the cheapest rung instead of growing.
            # Retries are still recognised by this replica's memory of recent decisions,
            # not by the store's.
            fetched = FeatureBatch(None, FeatureLookup.request_only(batch), shed)
        else:
            with trace.stage("features", todo, self._remote(self.features)):
                fetched = yield from _hop(self.features.lookup(batch, [txids[i] for i in todo]))
            yield PAUSE
        fresh: list[int] = []
        for j, i in enumerate(todo):
            stored = fetched.decisions[j] if fetched.decisions else None
            if stored:
                responses[i] = dict(json.loads(stored), idempotent_replay=True)
                replays.append(i)
            else:
                fresh.append(j)
        trace.finish(replays, [{"checkout_risk.idempotent_replay": True}] * len(replays))
        if fresh:
            decided = yield from self._decide(
                batch, fresh, fetched, arrived, deadline, todo, trace, shed is not None
            )
            for j, response in zip(fresh, decided, strict=True):
                responses[todo[j]] = response
        return responses  # type: ignore[return-value]

    def _decide(
        self,
        batch: list[dict[str, Any]],
        fresh: list[int],
        fetched: Any,
        arrived: Sequence[float],
        deadline: float,
        todo: list[int],
        trace: BatchTrace,
        shed: bool = False,
    ) -> Generator[Any, Any, list[dict[str, Any]]]:
        records = [batch[j] for j in fresh]
        rows = [todo[j] for j in fresh]  # positions in the micro-batch (its traces)
        rung, reason = 1, None
        if fetched.vectors is not None:
            vectors = [fetched.vectors[j] for j in fresh]
            values = [dict(v.values) for v in vectors]
            ages = [v.ages_ms for v in vectors]
            stale = [v.stale for v in vectors]
            missing = [v.missing for v in vectors]
            fallback = False
        else:
            values = [fetched.fallback[j] for j in fresh]
            ages, stale, missing = [{}] * len(records), [[]] * len(records), [[]] * len(records)
            fallback, rung, reason = True, 3, fetched.error
        for v, rec in zip(values, records, strict=True):
            _with_request_fields(v, rec)
        with trace.stage("policy", rows, self._remote(self.policy)):
            policy = yield from _hop(self.policy.evaluate(values))
        scoring_from = time.monotonic()
        left_ms = (deadline - scoring_from) * 1000
        reserve_ms = self.reserve.ms(self.region.scoring_budget_ms)
        p: np.ndarray | None = None
        version = None
        if shed:
            rung = 4  # no model either: a shed batch must cost as little as possible
        elif left_ms < reserve_ms:
            late = f"overload: {left_ms:.0f} ms left before scoring, which needs {reserve_ms:.0f}"
            rung, reason = 4, _and(late, reason)
        else:
            try:
                with trace.stage("score", rows, self._remote(self.scorer)):
                    p, version = yield from _hop(self.scorer.score(values, fallback))
            except Exception as exc:  # noqa: BLE001 - the scorer failing must not fail us
                rung, reason = 4, _and(failure("scorer", exc), reason)
        with trace.stage("combine", rows, self._remote(self.combiner)):
            actions = yield from _hop(self.combiner.combine(values, policy, p))
        explain = [i for i, a in enumerate(actions) if a != "approve"] if p is not None else []
        yield PAUSE
        contributions: dict[int, list[tuple[str, float]]] = {}
        if explain and (deadline - time.monotonic()) * 1000 > 10:
            explained = [values[i] for i in explain]
            try:
                with trace.stage(
                    "explain", [rows[i] for i in explain], self._remote(self.explainer)
                ):
                    found = yield from _hop(
                        self.explainer.explain(explained, fallback, self.region.explain_top)
                    )
                for i, c in zip(explain, found, strict=True):
                    contributions[i] = c
            except Exception:  # noqa: BLE001 - SHAP late or down: the decision still stands
                # its features and score are logged, so `replay` computes the same SHAP later
                for i in explain:
                    contributions[i] = [("explanation_deferred", None)]
        now = time.monotonic()
        out, log_records = [], []
        for i, (rec, act) in enumerate(zip(records, actions, strict=True)):
            row_rung, row_reason = rung, reason
            if row_rung == 1 and stale[i]:
                row_rung, row_reason = 2, f"stale views: {', '.join(stale[i])}"
            decision_id = uuid.uuid4().hex
            reasons = [{"kind": "policy", "code": rid} for rid in policy[i].rule_ids]
            reasons += [
                {"kind": "model", "code": f, "contribution": c} for f, c in contributions.get(i, [])
            ]
            k = todo[fresh[i]]
            latency_ms = round((now - arrived[k]) * 1000, 3)
            response = {
                "decision_id": decision_id,
                "transaction_id": str(rec["transaction_id"]),
                "action": act,
                "fraud_probability": None if p is None else round(float(p[i]), 6),
                "reasons": reasons,
                "model_version": version,
                "policy_version": self.policy.version,
                "region": self.region.name,
                "degraded": None if row_rung == 1 else {"rung": row_rung, "reason": row_reason},
                "latency_ms": latency_ms,
                "trace_id": trace.trace_ids[k],
            }
            out.append(response)
            record = self._log_record(
                rec, values[i], ages[i], missing[i], stale[i], policy[i], p, i, response
            )
            # the batch's stage wall times up to the log write, and this decision's wait
            record["timings_ms"] = dict(trace.stage_ms, queue=trace.queue_ms[k])
            log_records.append(record)
        with trace.stage("log", rows):
            yield log_records  # durable before any response leaves
        if p is not None:  # what scoring needed, up to a durable record
            self.reserve.observe((time.monotonic() - scoring_from) * 1000)
        trace.finish(
            rows,
            [
                {
                    "checkout_risk.decision_id": r["decision_id"],
                    "checkout_risk.action": r["action"],
                    "checkout_risk.rung": (r["degraded"] or {}).get("rung", 1),
                }
                for r in out
            ],
        )
        self.metrics.record(trace.stage_ms, out)
        for response, v in zip(out, values, strict=True):
            self._remember(response)
            if fetched.vectors is not None:
                self._served[response["decision_id"]] = v
        while len(self._served) > 5_000:
            self._served.popitem(last=False)
        return out

    def _log_record(
        self,
        rec: dict[str, Any],
        values: dict[str, Any],
        ages: dict[str, Any],
        missing: list[str],
        stale: list[str],
        policy: Any,
        p: np.ndarray | None,
        i: int,
        response: dict[str, Any],
    ) -> dict[str, Any]:
        key_input = {
            k: (keyed_hash(str(v)) if k in HASHED_FIELDS and v is not None else v)
            for k, v in rec.items()
            if k != "event_ms"
        }
        key_input["event_time_ms"] = to_ms(rec.get("event_time"))
        if key_input.get("merchant_created_at") is not None:
            key_input["merchant_created_at"] = to_ms(rec["merchant_created_at"])
        features = {
            k: _jsonable(v)
            for k, v in values.items()
            if k not in LIST_FIELDS or k in ("merchant_id", "email_domain")
        }
        costs, guardrails = self._costs_in_force(rec.get("region"))
        return {
            "type": "decision",
            **response,
            "input": key_input,
            "features": features,
            "feature_ages_ms": ages,
            "missing_views": missing,
            "stale_views": stale,
            "policy": {
                "version": self.policy.version,
                "override": policy.action,
                "rules": list(policy.rule_ids),
            },
            "costs": costs,
            "guardrails": guardrails,
            "replica": self.replica_id,
        }

    def _costs_in_force(self, region: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """The costs and guardrails logged with a decision, dumped once per config version
        (not once per decision: pydantic dumps are a real share of a shed decision's cost).
        Copies, so no two log records share a mutable dict."""
        all_costs = self.combiner.costs.get()
        if self._dumped_from is not all_costs:  # a reload: the held reference keeps ids apart
            self._dumped_from, self._dumped = all_costs, {}
        cached = self._dumped.get(region)
        if cached is None:
            cached = (
                all_costs.for_region(region).model_dump(),
                all_costs.guardrails.model_dump(),
            )
            self._dumped[region] = cached
        return dict(cached[0]), dict(cached[1])

    def _remember(self, response: dict[str, Any]) -> None:
        self._recent[response["transaction_id"]] = response
        while len(self._recent) > 20_000:
            self._recent.popitem(last=False)

    # ---- after the responses ------------------------------------------------------------
    def after(self, records: Sequence[dict[str, Any]], responses: Sequence[dict[str, Any]]) -> None:
        """Online feature updates and shadow scoring, off the critical path."""
        new = [
            (r, d)
            for r, d in zip(records, responses, strict=True)
            if not d.get("idempotent_replay")
        ]
        if not new:
            return
        t0 = time.monotonic()
        self.features.update([r for r, _ in new], [json.dumps(d) for _, d in new])
        t1 = time.monotonic()
        self.shadow([r for r, _ in new], [d for _, d in new])
        t2 = time.monotonic()
        self.metrics.record({"online_update": (t1 - t0) * 1000, "shadow": (t2 - t1) * 1000}, [])

    def shadow(
        self, records: Sequence[dict[str, Any]], responses: Sequence[dict[str, Any]]
    ) -> None:
        """Shadow challenger and shadow policies: evaluated, logged, never enforced."""
        if not self.shadow_scorer.has_shadow() and not self.policy.shadows:
            return
        policies = self.policy.evaluate_shadows([dict(r) for r in records])
        # the features as served, not re-read; a decision made without them (the store
        # down: request-time features only) has none for the challenger, and only it
        served = [self._served.pop(d["decision_id"], None) for d in responses]
        have = [i for i, v in enumerate(served) if v is not None]
        scored: dict[int, float] = {}
        model = None
        if have and self.shadow_scorer.has_shadow():
            found = self.shadow_scorer.score_shadow([served[i] for i in have])
            if found is not None:
                p, model = found
                scored = {i: round(float(p[k]), 6) for k, i in enumerate(have)}
        entries = [
            {
                "type": "shadow",
                "decision_id": d["decision_id"],
                "shadow_model": model if i in scored else None,
                "shadow_fraud_probability": scored.get(i),
                "shadow_policies": policies[i],
            }
            for i, d in enumerate(responses)
        ]
        self.log.append(entries)

    def close(self) -> None:
        """Seal the open log segment (its count and final hash mark a clean end) and close."""
        self.log.seal()
        self.log.close()
        getattr(self.scorer, "close", lambda: None)()  # its registry watcher
