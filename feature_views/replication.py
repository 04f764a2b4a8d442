"""Cross-region replication of online feature updates.

A shopper who pays in us-east and then, a minute later, in ap-southeast must be seen by
both regions' velocity features. Each region's Redis is its own primary, so updates are
shipped between them:

1. **Outbox.** With replication on, the online write script (``online.py``) appends every
   *newly* applied attempt to the region's stream ``{ns}:repl:out`` in the same atomic
   script as the update: an attempt whose ``transaction_id`` guard already existed (a
   retry) is neither applied nor published, and no update is applied without being
   published.
2. **Replicator.** The source region's replicator processes (one or more, sharing the
   work) read that stream through one consumer group per destination region and apply
   each entry to the destination with the same write script, without an outbox (so
   nothing echoes back). The destination's own
   ``SET NX`` guard on the ``transaction_id`` makes every apply idempotent: re-delivery
   after a crash, replaying the stream, or an attempt that a failing-over client sent to
   both regions counts once in each region.
3. **Acknowledgement after apply.** Entries are acknowledged only after the destination
   accepted them, so a partition (destination unreachable) or a replicator restart
   leaves them pending in the source stream; they are delivered when the replicator
   runs again, and entries a crashed replicator held are claimed by the others after
   ``claim_idle_ms``. Entries older than the stream's retention (``MAXLEN``) are lost to
   a destination that was away longer than that; the replicator reports it.

Order is not preserved across replicators, and need not be: every update the write script
makes commutes (sorted-set adds, first/latest/previous times, bucket counters), so the
destination converges to the same state whatever the order of delivery.

What crosses a region boundary is exactly :data:`REPLICATED_FIELDS`: the transaction id,
event time, USD amount, and the entity ids and columns the velocity views aggregate. Card
ids are vault tokens (the contract rejects anything shaped like a card number, and so
does :func:`encode_update`); shoppers, devices and merchants are opaque ids; e-mail
addresses, names and addresses are not fields of the contract at all. Ids are not
hashed again: the destination must find the same keys as its own attempts to combine the
counts. Which regions may receive a region's updates is decided by its region config
(data residency, ``serve_graph/config.py``), not here.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from feature_views.contract import looks_like_pan, text_problem
from feature_views.definitions import ACTIVITY_VIEWS, BUCKETED_VIEWS, LABEL_ENTITIES
from feature_views.online import OnlineFeatureStore
from feature_views.store import StoreUnavailable

log = logging.getLogger(__name__)

OUTBOX_SUFFIX = "repl:out"
UNREAD_SCAN_LIMIT = 10_000

# Every contract field the write script reads, and nothing else.
REPLICATED_FIELDS: tuple[str, ...] = tuple(
    sorted(
        {"transaction_id", "amount_usd"}
        | {v.entity.key for v in (*ACTIVITY_VIEWS, *BUCKETED_VIEWS) if v.entity.key}
        | {e.key for e in LABEL_ENTITIES if e.key}
        | {c for v in ACTIVITY_VIEWS for c in v.columns}
    )
)


class ReplicationError(ValueError):
    """An update that must not, or cannot, cross a region boundary."""


def outbox_key(namespace: str) -> str:
    """The stream a region's updates are published to."""
    return f"{namespace}:{OUTBOX_SUFFIX}"


def _plain(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def encode_update(attempt: Mapping[str, Any], event_ms: int) -> str:
    """The outbox payload of one attempt: JSON of REPLICATED_FIELDS plus ``event_ms``."""
    card = attempt.get("card_id")
    if isinstance(card, str) and looks_like_pan(card):
        raise ReplicationError("card_id looks like a card number; it must never leave a region")
    payload = {name: _plain(attempt.get(name)) for name in REPLICATED_FIELDS}
    payload["event_ms"] = int(event_ms)
    return json.dumps(payload, separators=(",", ":"), sort_keys=True)


def decode_update(raw: bytes | str) -> dict[str, Any]:
    """An outbox payload back into the contract-form mapping the write script takes."""
    try:
        update = json.loads(raw)
    except (TypeError, ValueError) as exc:
        raise ReplicationError(f"unreadable replicated update: {exc}") from exc
    if not isinstance(update, dict):
        raise ReplicationError("replicated update is not an object")
    unknown = set(update) - set(REPLICATED_FIELDS) - {"event_ms"}
    missing = {"transaction_id", "event_ms", "amount_usd"} - set(update)
    if unknown or missing:
        raise ReplicationError(
            f"replicated update has unknown fields {sorted(unknown)} or lacks {sorted(missing)}"
        )
    for name, value in update.items():  # the contract's text rules, as at the API
        problem = text_problem(value) if isinstance(value, str) else None
        if problem:
            raise ReplicationError(f"replicated update field {name}: {problem}")
    return update


@dataclass
class Destination:
    """A region that receives the source's updates: its name, Redis and namespace."""

    name: str
    client: redis.Redis
    namespace: str
    store: OnlineFeatureStore = field(init=False)

    def __post_init__(self) -> None:
        self.store = OnlineFeatureStore(self.client, self.namespace)  # no outbox: no echo


@dataclass
class StepResult:
    """What one replication step did for one destination."""

    delivered: int = 0  # entries read from the stream
    applied: int = 0  # of which were new to the destination
    lag_ms: list[float] = field(default_factory=list)  # publish -> applied, per entry


class Replicator:
    """Ships one source region's outbox to its destinations, at least once, idempotently.

    Each destination has its own consumer group ``to:{name}`` on the source stream, so a
    destination that is down holds back nobody else.
    """

    def __init__(
        self,
        source: redis.Redis,
        source_namespace: str,
        destinations: Iterable[Destination],
        consumer: str = "replicator",
        batch: int = 512,
        claim_idle_ms: int = 30_000,
    ) -> None:
        """`consumer` must be unique per running replicator (the pod name);
        `claim_idle_ms`: how long another replicator's unacknowledged entries wait before
        this one takes them over (that replicator is presumed dead)."""
        self.source = source
        self.stream = outbox_key(source_namespace)
        self.destinations = list(destinations)
        self.consumer = consumer
        self.batch = batch
        self.claim_idle_ms = claim_idle_ms
        self.trimmed: dict[str, int] = {}
        for dest in self.destinations:
            try:
                self.source.xgroup_create(self.stream, self._group(dest), id="0", mkstream=True)
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    @staticmethod
    def _group(dest: Destination) -> str:
        return f"to:{dest.name}"

    def step(self, dest: Destination, block_ms: int | None = None) -> StepResult:
        """Deliver what is pending for `dest` (first the entries delivered but not
        acknowledged before a crash or partition, then new ones)."""
        group = self._group(dest)
        self._check_trimmed(dest)
        entries = self._read(group, "0", None)  # our own unacknowledged entries
        if not entries:  # then a dead replicator's
            claimed = self.source.xautoclaim(
                self.stream, group, self.consumer, self.claim_idle_ms, count=self.batch
            )
            entries = list(claimed[1])
        if not entries:
            entries = self._read(group, ">", block_ms)
        result = StepResult(delivered=len(entries))
        if not entries:
            return result
        updates = []
        for entry_id, fields in entries:
            if not fields:  # trimmed from the stream while pending: nothing left to apply
                continue
            try:
                updates.append(decode_update(fields[b"u"]))
            except (ReplicationError, KeyError) as exc:
                # a malformed entry can never succeed: record it and move on
                log.error("replication to %s: skipping entry %s: %s", dest.name, entry_id, exc)
        applied = dest.store.write_many(updates) if updates else []  # raises if dest is down
        now_ms = time.time() * 1000
        result.applied = sum(applied)
        result.lag_ms = [now_ms - int(entry_id.split(b"-")[0]) for entry_id, _ in entries]
        self.source.xack(self.stream, group, *[entry_id for entry_id, _ in entries])
        return result

    def _read(self, group: str, start: str, block_ms: int | None) -> list[tuple[bytes, dict]]:
        reply = self.source.xreadgroup(
            group, self.consumer, {self.stream: start}, count=self.batch, block=block_ms
        )
        return list(reply[0][1]) if reply else []

    def _check_trimmed(self, dest: Destination) -> None:
        """Warn when the stream lost entries this destination never received (a partition
        longer than the outbox retention): its velocity is undercounted until rebuilt."""
        groups = {g["name"].decode(): g for g in self.source.xinfo_groups(self.stream)}
        info = groups.get(self._group(dest))
        if not info or info["last-delivered-id"] in (b"0-0", "0-0"):
            return
        first = self.source.xrange(self.stream, count=1)
        if not first:
            return
        last = _id_tuple(info["last-delivered-id"])
        oldest = _id_tuple(first[0][0])
        if oldest > last and self.trimmed.get(dest.name) != oldest:
            self.trimmed[dest.name] = oldest
            log.error(
                "replication to %s: entries after %s were trimmed before delivery; "
                "its velocity features miss them until rebuilt (checkout-risk materialize)",
                dest.name,
                info["last-delivered-id"],
            )

    def pending(self) -> dict[str, int]:
        """Entries each destination has not acknowledged: delivered but unacknowledged plus
        not yet delivered (on Redis < 7, which does not track the latter, counted up to
        UNREAD_SCAN_LIMIT so that a large backlog costs no large read)."""
        out = {}
        for g in self.source.xinfo_groups(self.stream):
            name = g["name"].decode().removeprefix("to:")
            unread = g.get("lag")  # Redis >= 7
            if unread is None:
                last = g["last-delivered-id"]
                last = last.decode() if isinstance(last, bytes) else last
                unread = len(
                    self.source.xrange(self.stream, min=f"({last}", count=UNREAD_SCAN_LIMIT)
                )
            out[name] = int(unread) + int(g["pending"])
        return out

    def run(
        self,
        stop: threading.Event,
        idle_block_ms: int = 5,
        retry_s: float = 1.0,
        on_step: Callable[[Destination, StepResult], None] | None = None,
    ) -> None:
        """Replicate until `stop` is set. An unreachable destination is retried every
        `retry_s` seconds while the others keep flowing; nothing is acknowledged for it
        meanwhile. `on_step` sees every non-empty step (lag measurement, metrics)."""
        down_until = {d.name: 0.0 for d in self.destinations}
        block = max(1, idle_block_ms // max(1, len(self.destinations)))
        while not stop.is_set():
            for dest in self.destinations:
                if time.monotonic() < down_until[dest.name]:
                    continue
                try:
                    result = self.step(dest, block_ms=block)
                except (redis.exceptions.RedisError, OSError, StoreUnavailable) as exc:
                    log.warning("replication to %s paused: %s", dest.name, exc)
                    down_until[dest.name] = time.monotonic() + retry_s
                    continue
                if result.delivered and on_step is not None:
                    on_step(dest, result)
            if all(time.monotonic() < t for t in down_until.values()):
                stop.wait(retry_s / 4)  # every destination is down: nothing to block on


def _id_tuple(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms_part, _, seq = text.partition("-")
    return int(ms_part), int(seq or 0)
