"""The online engine: feature vectors from Redis in one round trip, idempotent updates.

Redis layout (``{ns}`` is the store namespace, one per region; ids are the contract values):

=====================================  ======  =============================================
key                                    type    contents
=====================================  ======  =============================================
``{ns}:a:{view}:{entity id}``          zset    the entity's attempts of the last ``horizon``
                                               (30 d): member ``txid␟cents␟col…`` (the
                                               columns the view aggregates), score = event
                                               ms. Exact sliding windows; TTL = view TTL.
``{ns}:m:{view}:{entity id}``          hash    ``f`` first, ``l`` latest, ``p`` latest
                                               before ``l`` (event ms). Gives "previous
                                               attempt strictly before t" and view age.
``{ns}:b:{view}:{entity id}``          hash    bucketed views: ``c{bucket}`` attempts and
                                               ``s{bucket}`` cents per bucket index
                                               (``ms // bucket_ms``); ``lo`` oldest kept.
``{ns}:l:{entity}:{entity id}``        hash    label statistics per UTC day index:
                                               ``n{day}`` attempts, ``f{day}`` first fraud
                                               labels (by label day); ``lo`` oldest kept.
``{ns}:g:tx:{txid}``                   string  idempotency guard of an attempt (7 d).
``{ns}:g:lf:{txid}``                   string  guard of a transaction's fraud label (180 d).
``{ns}:repl:out``                      stream  replication outbox (only when enabled): one
                                               entry per newly applied attempt, the fields
                                               of ``replication.REPLICATED_FIELDS``.
=====================================  ======  =============================================

Reads pipeline every command for a micro-batch of attempts into ONE round trip and
evaluate the views in Python with the same arithmetic, in the same order, as
``offline.py``. Writes go through one Lua script call per chunk of attempts, each attempt
packed into one field string: its guard and every update apply atomically, so a retried
``transaction_id`` never double counts. The script touches several entities' keys, so a
region's store is one Redis primary (see docs on sharding by entity in the capacity plan).

Key TTLs only collect garbage; freshness is decided at read time from the event clock: a
view whose latest attempt is older than its TTL is returned as defaults and flagged stale.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import redis

from feature_views.contract import to_ms
from feature_views.definitions import (
    ACTIVITY_VIEWS,
    BUCKETED_VIEWS,
    FEATURE_NAMES,
    LABEL_ENTITIES,
    LABEL_RATES,
    ActivityView,
    BucketedView,
    Entity,
    label_rate_values,
    ms,
)
from feature_views.offline import GLOBAL_KEY, Z_LIMIT, amount_cents
from feature_views.request_features import STRING_INPUTS, request_features
from feature_views.store import StoreUnavailable

SEP = "\x1f"  # between the parts of an activity entry
RS = "\x1e"  # between the fields of a packed update (see _APPLY_SCRIPT)
DAY_MS = 86_400_000
ATTEMPT_GUARD_TTL_S = 7 * 86_400
LABEL_GUARD_TTL_S = 180 * 86_400
LABEL_WINDOW_MS = max(ms(v.window) for v in LABEL_RATES)
_LABEL_KEEP_DAYS = LABEL_WINDOW_MS // DAY_MS + 1
_LABEL_TTL_S = LABEL_WINDOW_MS // 1000 + 2 * 86_400
# what each view's writes need, worked out once rather than per attempt
_ACTIVITY_WRITES = [
    (v, v.columns, ms(v.horizon), int(v.ttl.total_seconds())) for v in ACTIVITY_VIEWS
]
_BUCKETED_WRITES = [
    (v, ms(v.bucket), ms(v.horizon) // ms(v.bucket) + 1, int(v.ttl.total_seconds()))
    for v in BUCKETED_VIEWS
]
_T = TypeVar("_T")
# One update of the apply script: its KEYS (the guard first) and its fields (the guard TTL
# first, then the ops).
Update = tuple[list[str], list[Any]]

# Label counts of each key (hashes of per-day fields n<day>, f<day>) over the days
# [ARGV[1], ARGV[2]): {n1, f1, n2, f2, ...}. `_label_counts` is the same arithmetic in
# Python (the tests hold the two together).
_LABEL_SCRIPT = """
local lo, today = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for k = 1, #KEYS do
  local h = redis.call('HGETALL', KEYS[k])
  local n, f = 0, 0
  for i = 1, #h, 2 do
    local name = h[i]
    if name ~= 'lo' then
      local day = tonumber(string.sub(name, 2))
      if day ~= nil and day >= lo and day < today then
        if string.sub(name, 1, 1) == 'n' then
          n = n + tonumber(h[i + 1])
        else
          f = f + tonumber(h[i + 1])
        end
      end
    end
  end
  out[#out + 1] = n
  out[#out + 1] = f
end
return out
"""

# Applies a batch of updates in one call, each behind its own idempotency guard. Update u is
# ARGV[2u-1], its fields joined by \30 (RS): `nkeys decision_ttl guard_ttl op...`, and
# ARGV[2u], the decision to remember ('' when decision_ttl is 0). Its keys follow the
# previous update's in KEYS: the guard first, then those its ops name by index (1 = the
# guard), then the decision key last when it has one. Ops:
#   z key score member trim_below ttl      add to an activity zset, trim, expire
#   m key ts ttl                           advance first / latest / previous times
#   h key prefix bucket incr keep ttl      bucket counter, drop buckets older than keep
#   x key maxlen payload                   append the update to a stream (replication outbox)
# Returns 1 per update newly applied, 0 per update whose guard was already set. One packed
# field string per update, not ~80 arguments: packing each argument is most of a write's cost
# in the client (redis-py spends ~0.7 us an argument), and the server parses fewer bulks.
_APPLY_SCRIPT = r"""
local prefixes = {'c', 's', 'n', 'f'}
local function split(s)
  local out, from = {}, 1
  while true do
    local to = string.find(s, '\30', from, true)
    if not to then
      out[#out + 1] = string.sub(s, from)
      return out
    end
    out[#out + 1] = string.sub(s, from, to - 1)
    from = to + 1
  end
end
local function apply(a, base)
  local i = 4
  while i <= #a do
    local op = a[i]
    local k = KEYS[base + tonumber(a[i + 1])]
    if op == 'z' then
      redis.call('ZADD', k, a[i + 2], a[i + 3])
      redis.call('ZREMRANGEBYSCORE', k, '-inf', '(' .. a[i + 4])
      redis.call('EXPIRE', k, a[i + 5])
      i = i + 6
    elseif op == 'm' then
      local ts_s = a[i + 2]
      local ts = tonumber(ts_s)
      local v = redis.call('HMGET', k, 'f', 'l', 'p')
      if (not v[1]) or ts < tonumber(v[1]) then redis.call('HSET', k, 'f', ts_s) end
      if not v[2] then
        redis.call('HSET', k, 'l', ts_s)
      elseif ts > tonumber(v[2]) then
        redis.call('HSET', k, 'p', v[2], 'l', ts_s)
      elseif ts < tonumber(v[2]) and ((not v[3]) or ts > tonumber(v[3])) then
        redis.call('HSET', k, 'p', ts_s)
      end
      redis.call('EXPIRE', k, a[i + 3])
      i = i + 4
    elseif op == 'h' then
      local bucket = tonumber(a[i + 3])
      redis.call('HINCRBY', k, a[i + 2] .. a[i + 3], a[i + 4])
      local keep = bucket - tonumber(a[i + 5])
      local lo = tonumber(redis.call('HGET', k, 'lo'))
      if not lo then
        redis.call('HSET', k, 'lo', tostring(keep))
      elseif lo < keep then
        if keep - lo > 2048 then
          for _, name in ipairs(redis.call('HKEYS', k)) do
            local b = tonumber(string.sub(name, 2))
            if name ~= 'lo' and b and b < keep then redis.call('HDEL', k, name) end
          end
        else
          for b = lo, keep - 1 do
            for _, p in ipairs(prefixes) do
              redis.call('HDEL', k, p .. string.format('%d', b))
            end
          end
        end
        redis.call('HSET', k, 'lo', string.format('%d', keep))
      end
      redis.call('EXPIRE', k, a[i + 6])
      i = i + 7
    elseif op == 'x' then
      -- outbox for cross-region replication: written only when the guard was new
      redis.call('XADD', k, 'MAXLEN', '~', a[i + 2], '*', 'u', a[i + 3])
      i = i + 4
    else
      error('unknown op ' .. tostring(op))
    end
  end
end
local applied, base = {}, 0
for u = 1, #ARGV, 2 do
  local a = split(ARGV[u])
  local nkeys = tonumber(a[1])
  if a[2] ~= '0' then
    redis.call('SET', KEYS[base + nkeys], ARGV[u + 1], 'NX', 'EX', a[2])
  end
  if redis.call('SET', KEYS[base + 1], '1', 'NX', 'EX', a[3]) then
    apply(a, base)
    applied[#applied + 1] = 1
  else
    applied[#applied + 1] = 0
  end
  base = base + nkeys
end
return applied
"""


@dataclass
class OnlineVector:
    """One served feature vector: values, the age of each view, and what was defaulted."""

    values: dict[str, Any]
    ages_ms: dict[str, int | None]
    missing: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)


def _key(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def _cents(amount_usd: Any) -> int:
    """`offline.amount_cents` of one amount, without building an array (the same rounding:
    both round half to even on the same float64 product)."""
    return max(round(float(amount_usd) * 100), 1)


def _event_ms(attempt: Mapping[str, Any]) -> int:
    if "event_ms" in attempt:
        return int(attempt["event_ms"])
    return to_ms(attempt["event_time"])


class OnlineFeatureStore:
    """Reads and writes the feature views of one region's Redis store."""

    def __init__(
        self,
        client: redis.Redis,
        namespace: str = "cr",
        outbox: str | None = None,
        outbox_maxlen: int = 1_000_000,
    ) -> None:
        """`outbox`: a stream key that receives every newly applied attempt, in the same
        script as the update, for the cross-region replicator (feature_views/replication.py);
        None (the default) publishes nothing."""
        self.r = client
        self.ns = namespace
        self.outbox = outbox
        self.outbox_maxlen = outbox_maxlen
        self._apply = self.r.register_script(_APPLY_SCRIPT)
        self._labels = self.r.register_script(_LABEL_SCRIPT)
        try:  # now rather than on first use (which reloads them after a server restart)
            self._load_scripts()
        except StoreUnavailable:
            pass  # unreachable now: the first read or write says so

    # ---- keys -------------------------------------------------------------------------
    def _k(self, kind: str, view: str, entity_id: str) -> str:
        return f"{self.ns}:{kind}:{view}:{entity_id}"

    def _entity_id(self, attempt: Mapping[str, Any], entity: Entity) -> str | None:
        return GLOBAL_KEY if entity.key is None else _key(attempt.get(entity.key))

    # ---- read -------------------------------------------------------------------------
    def read_many(self, attempts: Sequence[Mapping[str, Any]]) -> list[OnlineVector]:
        """Feature vectors for a micro-batch of contract-form attempts, ONE round trip.

        Raises StoreUnavailable if Redis does not answer within the client's timeout.
        """
        return self.read_many_with(attempts)[0]

    def read_many_with(
        self, attempts: Sequence[Mapping[str, Any]], decision_ids: Sequence[str] = ()
    ) -> tuple[list[OnlineVector], list[bytes | None]]:
        """`read_many` plus the decisions stored for `decision_ids`, in the same round trip
        (a retried transaction gets its first decision back)."""
        return self._scripted("read", lambda: self._read(attempts, decision_ids))

    def _scripted(self, what: str, run: Callable[[], _T]) -> _T:
        """Run a pipeline that sends our scripts as plain EVALSHA.

        A pipeline holding a registered script asks the server whether it exists before
        every execute: one more round trip per read and per write. A server that lost the
        scripts (restarted, flushed) gets them again and the pipeline goes once more: reads
        change nothing and writes are idempotent (attempt guards, first decision wins).
        """
        for last in (False, True):
            try:
                return run()
            except redis.exceptions.NoScriptError as exc:
                if last:
                    raise StoreUnavailable(f"online store {what} failed: {exc}") from exc
                self._load_scripts()
            except (redis.exceptions.RedisError, OSError) as exc:
                raise StoreUnavailable(f"online store {what} failed: {exc}") from exc
        raise AssertionError("unreachable")

    def _read(
        self, attempts: Sequence[Mapping[str, Any]], decision_ids: Sequence[str]
    ) -> tuple[list[OnlineVector], list[bytes | None]]:
        pipe = self.r.pipeline(transaction=False)
        for txid in decision_ids:
            pipe.get(self.decision_key(txid))
        # Attempts of one batch share keys (every attempt reads the global label counts,
        # many the same merchant or category): each distinct read is sent once, and its
        # reply parsed once. Parsing replies is most of a read's cost in this process.
        queued: dict[tuple[Any, ...], int] = {}

        def fetch(*command: Any) -> int:
            at = queued.get(command)
            if at is None:
                at = queued[command] = len(queued)
                if command[0] == "ZRANGEBYSCORE":  # raw pairs: no score re-encoding
                    pipe.execute_command(*command, "WITHSCORES")
                elif command[0] == "HMGET":
                    pipe.hmget(command[1], "f", "l", "p")
                else:
                    pipe.hgetall(command[1])
            return at

        days: dict[int, dict[str, int]] = {}  # label counts wanted: day -> key -> position

        def counts(key: str, t: int) -> tuple[int, str]:
            keys = days.setdefault(t // DAY_MS, {})
            keys.setdefault(key, len(keys))
            return t // DAY_MS, key

        plan: list[list[tuple[Any, ...]]] = []
        for attempt in attempts:
            t = _event_ms(attempt)
            steps: list[tuple[Any, ...]] = []
            for view in ACTIVITY_VIEWS:
                eid = self._entity_id(attempt, view.entity)
                if eid is None:
                    steps.append(("none", view))
                    continue
                key = self._k("a", view.name, eid)
                entries = fetch("ZRANGEBYSCORE", key, t - ms(view.horizon), f"({t}")
                steps.append(
                    ("activity", view, entries, fetch("HMGET", self._k("m", view.name, eid)))
                )
            for bview in BUCKETED_VIEWS:
                eid = self._entity_id(attempt, bview.entity)
                if eid is None:
                    steps.append(("none", bview))
                    continue
                buckets = fetch("HGETALL", self._k("b", bview.name, eid))
                steps.append(
                    ("bucketed", bview, buckets, fetch("HMGET", self._k("m", bview.name, eid)))
                )
            for entity in LABEL_ENTITIES:
                key = self._k("l", entity.name, self._entity_id(attempt, entity) or "")
                steps.append(("labels", entity, counts(key, t)))
            plan.append(steps)
        # label counts are summed in Redis: ~180 day fields a key stay there, two numbers
        # come back
        for day, keys in days.items():
            lo = day - LABEL_WINDOW_MS // DAY_MS
            pipe.execute_command("EVALSHA", self._labels.sha, len(keys), *keys, lo, day)
        replies = pipe.execute()
        n = len(decision_ids)
        summed: dict[tuple[int, str], tuple[int, int]] = {}
        for (day, keys), reply in zip(days.items(), replies[n + len(queued) :], strict=True):
            for key, i in keys.items():
                summed[(day, key)] = (int(reply[2 * i]), int(reply[2 * i + 1]))
        return self._evaluate(attempts, plan, replies[n:], summed), list(replies[:n])

    def read(self, attempt: Mapping[str, Any]) -> OnlineVector:
        return self.read_many([attempt])[0]

    def decision_key(self, transaction_id: str) -> str:
        return f"{self.ns}:g:dec:{transaction_id}"

    def write_many(
        self, attempts: Sequence[Mapping[str, Any]], decisions: Sequence[str] = ()
    ) -> list[bool]:
        """Apply many attempts in one round trip; store each decision (first one wins).

        `decisions[i]` belongs to `attempts[i]`; attempts past the end of `decisions` store
        none. Returns, per attempt, whether it was new (False: already applied).
        """
        remembered = [
            (self.decision_key(str(attempt["transaction_id"])), decision)
            for attempt, decision in zip(attempts, decisions, strict=False)
        ]
        return self.apply([self.write_ops(attempt) for attempt in attempts], remembered)

    # Updates per script call. Redis runs a call whole, so a read waits behind at most one
    # call (~1 ms for 64 attempts); a pipeline carries as many calls as the batch needs.
    APPLY_CHUNK = 64

    def apply(
        self, updates: Sequence[Update], decisions: Sequence[tuple[str, str]] = ()
    ) -> list[bool]:
        """Run updates from `write_ops` / `label_ops` in one round trip.

        `decisions[i]`, a (key, value) pair, is set (if absent) with `updates[i]`, whether
        or not that update was applied before. Returns, per update, whether it was new.
        """
        calls = [
            self._pack(updates[i : i + self.APPLY_CHUNK], decisions[i : i + self.APPLY_CHUNK])
            for i in range(0, len(updates), self.APPLY_CHUNK)
        ]

        def send() -> list[Any]:
            pipe = self.r.pipeline(transaction=False)
            for keys, argv in calls:
                pipe.execute_command("EVALSHA", self._apply.sha, len(keys), *keys, *argv)
            return pipe.execute()

        if not calls:
            return []
        return [bool(x) for reply in self._scripted("write", send) for x in reply]

    @staticmethod
    def _pack(
        updates: Sequence[Update], decisions: Sequence[tuple[str, str]] = ()
    ) -> tuple[list[str], list[str]]:
        """KEYS and ARGV of one apply-script call: two arguments an update, not ~80.

        Raises ValueError if a field holds RS (U+001E): the contract admits no control
        characters, so such a field is a caller's bug, and it would split wrongly.
        """
        all_keys: list[str] = []
        argv: list[str] = []
        for n, (keys, fields) in enumerate(updates):
            packed = RS.join(map(str, fields))
            if packed.count(RS) != len(fields) - 1:
                raise ValueError(
                    f"update {keys[0]!r}: a field holds the separator U+001E; "
                    "ids and codes must be printable text"
                )
            all_keys += keys
            if n < len(decisions):
                key, value = decisions[n]
                all_keys.append(key)
                argv += [f"{len(keys) + 1}{RS}{ATTEMPT_GUARD_TTL_S}{RS}{packed}", value]
            else:
                argv += [f"{len(keys)}{RS}0{RS}{packed}", ""]
        return all_keys, argv

    def _load_scripts(self) -> None:
        try:
            self.r.script_load(_APPLY_SCRIPT)
            self.r.script_load(_LABEL_SCRIPT)
        except (redis.exceptions.RedisError, OSError) as exc:
            raise StoreUnavailable(f"online store unavailable: {exc}") from exc

    def _evaluate(
        self,
        attempts: Sequence[Mapping[str, Any]],
        plan: list[list[tuple[Any, ...]]],
        replies: list[Any],
        label_counts: dict[tuple[int, str], tuple[int, int]],
    ) -> list[OnlineVector]:
        vectors: list[OnlineVector] = []
        merchant_seen = np.empty(len(attempts))
        for i, (attempt, steps) in enumerate(zip(attempts, plan, strict=True)):
            t = _event_ms(attempt)
            vec = OnlineVector(values={}, ages_ms={})
            labels: dict[str, tuple[int, int]] = {}
            for kind, obj, *at in steps:
                if kind == "none":
                    _blank(vec, obj, stale=False)
                    vec.ages_ms[obj.name] = None
                elif kind == "activity":
                    _activity(vec, obj, attempt, t, _pairs(replies[at[0]]), replies[at[1]])
                elif kind == "bucketed":
                    _bucketed(vec, obj, t, replies[at[0]], replies[at[1]])
                else:
                    labels[obj.name] = label_counts[at[0]]
            _label_rates(vec, labels)
            merchant_seen[i] = vec.values["merchant_seen_seconds"]
            vectors.append(vec)
        req = request_features(_request_columns(attempts, merchant_seen))
        for i, vec in enumerate(vectors):
            for name, column in req.items():
                value = column[i]
                vec.values[name] = value.item() if hasattr(value, "item") else value
            vec.values = {name: vec.values[name] for name in FEATURE_NAMES}
        return vectors

    # ---- write ------------------------------------------------------------------------
    def write_ops(self, attempt: Mapping[str, Any]) -> Update:
        """KEYS and fields of the apply script for one attempt (see `apply`)."""
        t = _event_ms(attempt)
        txid = str(attempt["transaction_id"])
        cents = _cents(attempt["amount_usd"])
        keys = [f"{self.ns}:g:tx:{txid}"]
        argv: list[Any] = [ATTEMPT_GUARD_TTL_S]
        for view, columns, horizon_ms, ttl_s in _ACTIVITY_WRITES:
            eid = self._entity_id(attempt, view.entity)
            if eid is None:
                continue
            member = SEP.join([txid, str(cents), *[_key(attempt.get(c)) or "" for c in columns]])
            keys += [self._k("a", view.name, eid), self._k("m", view.name, eid)]
            n = len(keys)
            argv += ["z", n - 1, t, member, t - horizon_ms, ttl_s, "m", n, t, ttl_s]
        for bview, bucket_ms, keep, ttl_s in _BUCKETED_WRITES:
            eid = self._entity_id(attempt, bview.entity)
            if eid is None:
                continue
            keys += [self._k("b", bview.name, eid), self._k("m", bview.name, eid)]
            n, bucket = len(keys), t // bucket_ms
            argv += ["h", n - 1, "c", bucket, 1, keep, ttl_s]
            argv += ["h", n - 1, "s", bucket, cents, keep, ttl_s]
            argv += ["m", n, t, ttl_s]
        day = t // DAY_MS
        for entity in LABEL_ENTITIES:
            keys.append(self._k("l", entity.name, self._entity_id(attempt, entity) or ""))
            argv += ["h", len(keys), "n", day, 1, _LABEL_KEEP_DAYS, _LABEL_TTL_S]
        if self.outbox is not None:
            from feature_views.replication import encode_update

            keys.append(self.outbox)
            argv += ["x", len(keys), self.outbox_maxlen, encode_update(attempt, t)]
        return keys, argv

    def write(self, attempt: Mapping[str, Any]) -> bool:
        """Apply one decided attempt; False when this transaction_id was already applied."""
        return self.apply([self.write_ops(attempt)])[0]

    def label_ops(
        self, transaction_id: str, label_ms: int, attempt_keys: Mapping[str, Any]
    ) -> Update:
        """KEYS and fields recording one fraud label against the attempt's label entities."""
        keys = [f"{self.ns}:g:lf:{transaction_id}"]
        argv: list[Any] = [LABEL_GUARD_TTL_S]
        for entity in LABEL_ENTITIES:
            eid = self._entity_id(attempt_keys, entity) or ""
            keys.append(self._k("l", entity.name, eid))
            argv += ["h", len(keys), "f", label_ms // DAY_MS, 1, _LABEL_KEEP_DAYS, _LABEL_TTL_S]
        return keys, argv

    def apply_fraud_label(
        self, transaction_id: str, label_ms: int, attempt_keys: Mapping[str, Any]
    ) -> bool:
        """Count a late fraud label (once per transaction) toward the label statistics.

        `attempt_keys` holds the labelled attempt's merchant_id, merchant_category and
        card_bin (the label feed joins them from the decision log).
        """
        return self.apply([self.label_ops(transaction_id, label_ms, attempt_keys)])[0]

    def flush_namespace(self) -> int:
        """Delete every key of this namespace (tests, `materialize --flush`)."""
        deleted = 0
        batch: list[bytes] = []
        for key in self.r.scan_iter(match=f"{self.ns}:*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                deleted += self.r.delete(*batch)
                batch = []
        if batch:
            deleted += self.r.delete(*batch)
        return deleted


# ---------------------------------------------------------------------------------------
# evaluation: the same arithmetic as offline.py, on one entity's history
# ---------------------------------------------------------------------------------------


def _pairs(reply: list[Any]) -> list[Any]:
    """(member, score) pairs of a raw ZRANGEBYSCORE ... WITHSCORES reply: RESP3 sends
    them paired, RESP2 as one flat list."""
    if reply and not isinstance(reply[0], (list, tuple)):
        return list(zip(reply[::2], reply[1::2], strict=True))
    return reply


def _timeline(meta: list[Any], t: int) -> tuple[int | None, int | None]:
    """(latest attempt strictly before t, first attempt strictly before t)."""
    first, last, prev = (int(v) if v is not None else None for v in meta)
    if last is None:
        return None, None
    if last < t:
        before = last
    elif prev is not None and prev < t:
        before = prev
    else:
        before = None
    return before, (first if first is not None and first < t else None)


def _blank(vec: OnlineVector, view: ActivityView | BucketedView, stale: bool) -> None:
    for a in view.features:
        vec.values[a.name] = a.default
    vec.values[f"{view.name}_missing"] = 0 if stale else 1
    vec.values[f"{view.name}_stale"] = 1 if stale else 0
    (vec.stale if stale else vec.missing).append(view.name)


def _check_ttl(
    vec: OnlineVector, view: ActivityView | BucketedView, before: int | None, t: int
) -> bool:
    """Record the view's age; blank it and return False when missing or stale."""
    vec.ages_ms[view.name] = None if before is None else t - before
    if before is None:
        _blank(vec, view, stale=False)
        return False
    if t - before > ms(view.ttl):
        _blank(vec, view, stale=True)
        return False
    vec.values[f"{view.name}_missing"] = 0
    vec.values[f"{view.name}_stale"] = 0
    return True


def _activity(
    vec: OnlineVector,
    view: ActivityView,
    attempt: Mapping[str, Any],
    t: int,
    entries: list[tuple[bytes, float]],
    meta: list[Any],
) -> None:
    before, first = _timeline(meta, t)
    if not _check_ttl(vec, view, before, t):
        return
    scores = [int(score) for _, score in entries]
    parts = [member.decode().split(SEP) for member, _ in entries]
    cents = [int(p[1]) for p in parts]
    col_index = {c: 2 + i for i, c in enumerate(view.columns)}
    log_cents: np.ndarray | None = None
    for a in view.features:
        if a.window is not None:
            lo = bisect.bisect_left(scores, t - ms(a.window))
            window = range(lo, len(scores))
        if a.kind == "count":
            vec.values[a.name] = len(window)
        elif a.kind == "sum_usd":
            vec.values[a.name] = sum(cents[j] for j in window) / 100.0
        elif a.kind == "distinct":
            c = col_index[a.column]
            vec.values[a.name] = len({parts[j][c] for j in window})
        elif a.kind == "match_count":
            c = col_index[a.column]
            target = _key(attempt.get(a.column)) or ""
            vec.values[a.name] = sum(1 for j in window if parts[j][c] == target)
        elif a.kind == "zscore_log_amount":
            if log_cents is None:
                log_cents = np.log(np.array(cents, dtype=np.float64))
            vec.values[a.name] = _zscore(log_cents, window, attempt, a.default)
        elif a.kind == "seconds_since_previous":
            vec.values[a.name] = (t - before) / 1000.0
        elif a.kind == "seconds_since_first":
            vec.values[a.name] = (t - first) / 1000.0 if first is not None else a.default


def _zscore(
    log_cents: np.ndarray, window: range, attempt: Mapping[str, Any], default: float
) -> float:
    n = len(window)
    if n < 2:
        return default
    total = 0.0
    for j in reversed(window):  # newest first, as the offline lag walk
        total += float(log_cents[j])
    mean = total / n
    sq = 0.0
    for j in reversed(window):
        d = float(log_cents[j]) - mean
        sq += d * d
    std = math.sqrt(sq / (n - 1))
    if not std > 0:
        return default
    x = float(
        np.log(np.array([amount_cents(np.array([attempt["amount_usd"]]))[0]], dtype=np.float64))[0]
    )
    z = (x - mean) / std
    if not math.isfinite(z):
        return default
    return max(-Z_LIMIT, min(Z_LIMIT, z))


def _bucketed(
    vec: OnlineVector, view: BucketedView, t: int, buckets: dict[bytes, bytes], meta: list[Any]
) -> None:
    before, first = _timeline(meta, t)
    if not _check_ttl(vec, view, before, t):
        return
    bucket_ms = ms(view.bucket)
    current = t // bucket_ms
    counts: dict[int, int] = {}
    cents: dict[int, int] = {}
    for name, value in buckets.items():
        field_name = name.decode()
        if field_name[0] == "c":
            counts[int(field_name[1:])] = int(value)
        elif field_name[0] == "s":
            cents[int(field_name[1:])] = int(value)
    for a in view.features:
        if a.window is not None:
            lo = current - ms(a.window) // bucket_ms
            n = sum(v for b, v in counts.items() if lo <= b < current)
            s = sum(v for b, v in cents.items() if lo <= b < current)
        if a.kind == "count":
            vec.values[a.name] = n
        elif a.kind == "sum_usd":
            vec.values[a.name] = s / 100.0
        elif a.kind == "mean_usd":
            vec.values[a.name] = (s / n) / 100.0 if n > 0 else a.default
        elif a.kind == "seconds_since_previous":
            vec.values[a.name] = (t - before) / 1000.0
        elif a.kind == "seconds_since_first":
            vec.values[a.name] = (t - first) / 1000.0 if first is not None else a.default


def _label_counts(buckets: dict[bytes, bytes], t: int) -> tuple[int, int]:
    today = t // DAY_MS
    lo = today - LABEL_WINDOW_MS // DAY_MS
    n = f = 0
    for name, value in buckets.items():
        field_name = name.decode()
        if field_name == "lo":
            continue
        day = int(field_name[1:])
        if lo <= day < today:
            if field_name[0] == "n":
                n += int(value)
            else:
                f += int(value)
    return n, f


def _label_rates(vec: OnlineVector, counts: dict[str, tuple[int, int]]) -> None:
    vec.values.update(label_rate_values(counts))


def _request_columns(
    attempts: Sequence[Mapping[str, Any]], merchant_seen: np.ndarray
) -> dict[str, np.ndarray]:
    names = STRING_INPUTS
    cols: dict[str, np.ndarray] = {
        n: np.array([a.get(n) for a in attempts], dtype=object) for n in names
    }
    cols["event_ms"] = np.array([_event_ms(a) for a in attempts], dtype=np.int64)
    cols["amount_usd"] = np.array([a["amount_usd"] for a in attempts], dtype=np.float64)
    created = [to_ms(a.get("merchant_created_at")) for a in attempts]
    cols["merchant_created_ms"] = np.array(
        [-1 if c is None else c for c in created], dtype=np.int64
    )
    cols["merchant_seen_seconds"] = merchant_seen
    return cols
