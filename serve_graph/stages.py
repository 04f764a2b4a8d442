"""The serving stages as plain classes (no Ray import).

``deployments.py`` wraps them as Ray Serve deployments — fused into one replica (the hot
path) or as separate deployments — and ``pipeline.py`` chains them in-process, which is
also what the single-process baseline, backtests and unit tests run. Every stage works on
micro-batches: lists of contract-form attempt dicts.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from feature_views.online import OnlineFeatureStore, OnlineVector, _request_columns
from feature_views.request_features import request_features
from feature_views.store import StoreUnavailable, connect
from serve_graph.decisioning import Costs, actions_for, apply_guardrails, load_costs, stricter
from serve_graph.policy import Policy, PolicyResult, evaluate, load_policy
from trainers.registry import ModelVersion, Registry, load_version

logger = logging.getLogger(__name__)


class _Reloading:
    """Re-reads a file-backed object when the file changes (checked at most once a second)."""

    def __init__(self, path: Path, loader: Any) -> None:
        self.path, self.loader = Path(path), loader
        self._mtime = self.path.stat().st_mtime
        self.value = loader(self.path)
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    def get(self) -> Any:
        now = time.monotonic()
        if now - self._checked > 1.0 and self._lock.acquire(blocking=False):
            try:
                self._checked = now
                mtime = self.path.stat().st_mtime
                if mtime != self._mtime:
                    self.value = self.loader(self.path)  # a broken edit keeps the old value
                    self._mtime = mtime
            except Exception:  # noqa: BLE001 - an invalid edit must not take serving down
                pass
            finally:
                self._lock.release()
        return self.value


# ---------------------------------------------------------------------------------------
# FeatureLookup
# ---------------------------------------------------------------------------------------


@dataclass
class FeatureBatch:
    """Vectors for a batch, or the request-only fallback when the store is unavailable."""

    vectors: list[OnlineVector] | None
    fallback: list[dict[str, Any]] | None
    error: str | None = None
    decisions: list[Any] = field(default_factory=list)


class FeatureLookup:
    """One pipelined Redis round trip per micro-batch; request-only features when it fails.

    After `trip_after` failed reads in a row the store is skipped for ``retry_after_s`` (a
    circuit breaker), so a dead Redis costs two timeouts, not one per batch; then it is
    tried again. One late read is not a dead store: on a busy replica a read can miss its
    25 ms share once (a GIL or scheduler stall), and opening on it sent a whole second of
    decisions (~1% of a benchmark step) around a healthy store.
    """

    def __init__(
        self,
        url: str | None,
        namespace: str,
        timeout_ms: float,
        retry_after_s: float = 1.0,
        outbox: str | None = None,
        outbox_maxlen: int = 1_000_000,
        trip_after: int = 2,
    ) -> None:
        """`outbox`: replication stream that receives each new update (None: none)."""
        if trip_after < 1:
            raise ValueError("trip_after must be at least 1")
        self.url, self.namespace = url, namespace
        self.outbox, self.outbox_maxlen = outbox, outbox_maxlen
        self.timeout_s = timeout_ms / 1000
        self.retry_after_s = retry_after_s
        self.trip_after = trip_after
        self._store: OnlineFeatureStore | None = None
        self._writer: OnlineFeatureStore | None = None
        self._open_until = 0.0
        self._failures = 0  # failed reads in a row

    def _get_store(self) -> OnlineFeatureStore:
        if self._store is None:
            self._store = OnlineFeatureStore(
                connect(self.url, self.timeout_s), self.namespace, self.outbox, self.outbox_maxlen
            )
        return self._store

    def available(self) -> bool:
        return time.monotonic() >= self._open_until

    def lookup(
        self, records: Sequence[dict[str, Any]], idempotency_keys: Sequence[str] = ()
    ) -> FeatureBatch:
        if self.available():
            try:
                store = self._get_store()
                vectors, decisions = store.read_many_with(records, idempotency_keys)
                self._failures = 0
                return FeatureBatch(vectors, None, decisions=decisions)
            except StoreUnavailable as exc:
                self._trip()
                return FeatureBatch(None, self.request_only(records), f"online store: {exc}")
            except Exception as exc:  # noqa: BLE001 - any store fault degrades, never fails
                self._trip()
                return FeatureBatch(None, self.request_only(records), f"online store: {exc}")
        return FeatureBatch(None, self.request_only(records), "online store: circuit open")

    def _trip(self) -> None:
        self._store = None  # a timed-out connection may still owe a reply: start afresh
        self._failures += 1
        if self._failures >= self.trip_after:
            self._open_until = time.monotonic() + self.retry_after_s
            self._failures = 0

    @staticmethod
    def request_only(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Request-time features as the fallback model was trained on them."""
        cols = request_features(_request_columns(records, np.full(len(records), -1.0)))
        return [
            {k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in cols.items()}
            for i in range(len(records))
        ]

    # Writes happen after the response: they get their own connection with a patient
    # timeout, and go in chunks so that Redis, single-threaded, serves the hot path's reads
    # between them (one large pipeline would hold every read behind it).
    WRITE_CHUNK = 32
    WRITE_TIMEOUT_S = 2.0

    def _get_writer(self) -> OnlineFeatureStore:
        if self._writer is None:
            self._writer = OnlineFeatureStore(
                connect(self.url, self.WRITE_TIMEOUT_S),
                self.namespace,
                self.outbox,
                self.outbox_maxlen,
            )
        return self._writer

    def update(self, records: Sequence[dict[str, Any]], decisions: Sequence[str]) -> None:
        """After the response: apply the attempts (idempotent) and remember the decisions.

        A failed write does not open the read circuit (reads judge the store themselves);
        a lost update is caught up by materialisation.
        """
        if not self.available():
            return
        try:
            writer = self._get_writer()
            for i in range(0, len(records), self.WRITE_CHUNK):
                writer.write_many(
                    records[i : i + self.WRITE_CHUNK], decisions[i : i + self.WRITE_CHUNK]
                )
        except Exception:  # noqa: BLE001 - never fail the after-work loop
            self._writer = None


# ---------------------------------------------------------------------------------------
# PolicyEngine
# ---------------------------------------------------------------------------------------


class PolicyEngine:
    """Champion policy (enforced) and shadow policies (evaluated and logged only)."""

    def __init__(self, champion: Path, shadows: Sequence[Path] = ()) -> None:
        self.champion = _Reloading(champion, load_policy)
        self.shadows = [_Reloading(p, load_policy) for p in shadows]

    @property
    def version(self) -> str:
        return self.champion.get().version

    def evaluate(self, values: Sequence[dict[str, Any]]) -> list[PolicyResult]:
        policy: Policy = self.champion.get()
        return [evaluate(policy, v) for v in values]

    def evaluate_shadows(self, values: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{} for _ in values]
        for shadow in self.shadows:
            policy = shadow.get()
            for i, v in enumerate(values):
                r = evaluate(policy, v)
                out[i][policy.version] = {"action": r.action, "rules": list(r.rule_ids)}
        return out


# ---------------------------------------------------------------------------------------
# Scorer
# ---------------------------------------------------------------------------------------


def _columns(rows: Sequence[dict[str, Any]], features: Sequence[str]) -> dict[str, list]:
    """Rows as columns for `to_pool` (no DataFrame on the hot path)."""
    return {f: [r[f] for r in rows] for f in features}


def _watch(ref: weakref.ref, stop: threading.Event, every_s: float) -> None:
    """A scorer's registry watcher; ends with its scorer (it holds no strong reference)."""
    while not stop.wait(every_s):
        scorer = ref()
        if scorer is None:
            return
        try:
            scorer.refresh()
        except Exception:  # noqa: BLE001 - a failed check is retried at the next one
            logger.exception("checking the model registry failed")
        del scorer


class Scorer:
    """The champion model (and shadow challenger), hot-swapped when the registry changes.

    Promotion or rollback rewrites ``registry.json``. A watcher thread notices (a stat
    every `check_s`) and loads the new versions beside the ones in use, then swaps both in
    by reference: requests in flight finish on the model they started with, none is
    dropped, and none waits for a load. Loading inline, in the first request that noticed,
    cost it and every request queued behind it on the event loop the whole load (two
    CatBoost files), which on a busy CI machine pushed a promotion's next decision down to
    rules only; and a shadow deployment asked "do you hold a challenger?" answered no
    until some request had paid for its load. CatBoost parses a model holding the
    interpreter lock, so a load still pauses the replica's other threads for the parse
    (7-17 ms here for a 1.3 MB model and its 7.4 MB fallback, more on a slower machine),
    once per promotion: admission's smoothed event-loop lag moves by a quarter of such a
    pause (`MicroBatcher`).

    A registry or version that cannot be loaded keeps the versions in use and says so in
    `load_error` (the health check shows it); that registry state is not retried, the next
    change is.
    """

    check_s = 1.0

    def __init__(self, registry_root: Path, watch: bool = True) -> None:
        """`watch=False`: no watcher thread; `refresh()` is called by hand (tools, tests)."""
        self.registry = Registry(registry_root)
        self._lock = threading.Lock()  # one load at a time
        self._mtime: float | None = None
        self._seen = False
        self.champion: ModelVersion | None = None
        self.shadow: ModelVersion | None = None
        self.load_error: str | None = None
        self.refresh(raise_errors=True)
        self._stop = threading.Event()
        if watch:
            threading.Thread(
                target=_watch,
                args=(weakref.ref(self), self._stop, self.check_s),
                name="scorer-registry-watch",
                daemon=True,
            ).start()

    def close(self) -> None:
        self._stop.set()

    def _registry_mtime(self) -> float | None:
        file = self.registry.file
        return file.stat().st_mtime if file.exists() else None

    def refresh(self, raise_errors: bool = False) -> None:
        """Load what the registry names now, if it changed since the last look."""
        with self._lock:
            mtime = self._registry_mtime()
            if self._seen and mtime == self._mtime:
                return
            self._mtime, self._seen = mtime, True
            try:
                stages = self.registry.state()["stages"]
                champion = self._load(stages.get("champion"))
                shadow = self._load(stages.get("shadow"))
            except Exception as exc:
                # a half-copied version or a bad registry edit: serve on with what works
                self.load_error = f"{type(exc).__name__}: {exc}"
                logger.error("model registry change not loaded: %s", self.load_error)
                if raise_errors:
                    raise
                return
            self.champion, self.shadow, self.load_error = champion, shadow, None

    def _load(self, version: str | None) -> ModelVersion | None:
        """`version`, reusing a loaded one (a rollback swaps champion and shadow back)."""
        if version is None:
            return None
        for current in (self.champion, self.shadow):
            if current is not None and current.version == version:
                return current
        return load_version(version, self.registry.root)

    def score(self, rows: list[dict[str, Any]], fallback: bool) -> tuple[np.ndarray, str]:
        """Calibrated p(fraud) for a batch, and the version that produced it."""
        champion = self.champion
        if champion is None:
            raise RuntimeError("no champion model in the registry")
        model = champion.fallback if fallback else champion.model
        suffix = "/fallback" if fallback else ""
        return model.predict(_columns(rows, model.features)), champion.version + suffix

    def has_shadow(self) -> bool:
        return self.shadow is not None

    def score_shadow(self, rows: list[dict[str, Any]]) -> tuple[np.ndarray, str] | None:
        shadow = self.shadow
        if shadow is None:
            return None
        return shadow.model.predict(_columns(rows, shadow.model.features)), shadow.version

    def explain(
        self, rows: list[dict[str, Any]], fallback: bool, top: int
    ) -> list[list[tuple[str, float]]]:
        champion = self.champion
        if champion is None or not rows:
            return [[] for _ in rows]
        model = champion.fallback if fallback else champion.model
        return model.contributions(_columns(rows, model.features), top)


# ---------------------------------------------------------------------------------------
# DecisionCombiner
# ---------------------------------------------------------------------------------------


class DecisionCombiner:
    """Expected-cost action, then policy overrides; rules-only when there is no score."""

    def __init__(self, costs_path: Path, rules_only_step_up_usd: float) -> None:
        self.costs = _Reloading(costs_path, load_costs)
        self.step_up_usd = rules_only_step_up_usd

    def combine(
        self,
        values: Sequence[dict[str, Any]],
        policy: Sequence[PolicyResult],
        fraud_probability: np.ndarray | None,
        costs: Costs | None = None,
    ) -> list[str]:
        """`costs` overrides the configured costs (replay uses the ones logged)."""
        amounts = np.array([v["amount_usd"] for v in values], dtype=np.float64)
        if fraud_probability is None:  # rung 4: rules only, conservative challenge
            proposed = np.where(amounts >= self.step_up_usd, "step_up", "approve").astype(object)
        else:
            costs = costs or self.costs.get()
            proposed = actions_for(
                costs,
                fraud_probability,
                amounts,
                np.array([v.get("region") for v in values], dtype=object),
            )
        out = []
        for action, result in zip(proposed, policy, strict=True):
            if result.action == "approve":
                out.append("approve")
            elif result.action is not None:
                out.append(stricter(str(action), result.action))
            else:
                out.append(str(action))
        if fraud_probability is not None:  # guardrails bound what the model does alone
            blocked = np.array([r.action == "block" for r in policy], dtype=bool)
            out = apply_guardrails(
                np.array(out, dtype=object), fraud_probability, blocked, costs.guardrails
            ).tolist()
        return out
