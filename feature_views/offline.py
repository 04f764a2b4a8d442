"""The offline engine: point-in-time correct feature vectors for every attempt of a table.

Interprets ``definitions.py`` with vectorised numpy over whole partitions; there is no
per-attempt Python loop. Windows are found with ``searchsorted`` over a composite
(entity, time) key; sums come from prefix sums of integer cents (exact); distinct counts,
same-merchant counts and z-scores run over every (attempt, window entry) pair at once
(work proportional to the window sizes, not to the table squared).

Tables larger than memory are processed in time-ordered partitions (one UTC day each):
:class:`OfflineState` carries just what later partitions need — the last 30 days of slim
history for exact windows (one chunk per partition, each in (entity, time) order, so a
partition picks the rows of the entities it holds and re-sorts only those, never the
whole history), bucket aggregates for bucketed windows and label statistics, and each
entity's first/last attempt time. Partitions stay in Arrow until the views: string
columns are read as Parquet dictionaries, whose values map to stable integer codes (and
request-time features are worked out per distinct value). Two worker threads run the
views of one partition, the reading and decoding of the next and the building of the
previous partition's DataFrame, all as jobs of one pool.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.core.internals import BlockManager
from pandas.core.internals.api import make_block  # what pyarrow builds frames with

from feature_views.contract import FRAUD_LABEL_KINDS, attempts_table
from feature_views.definitions import (
    ACTIVITY_VIEWS,
    BUCKETED_VIEWS,
    FEATURE_NAMES,
    LABEL_ENTITIES,
    LABEL_RATES,
    TIMELINE_VIEWS,
    ActivityView,
    Aggregation,
    BucketedView,
    Entity,
    label_rate_values,
    ms,
)
from feature_views.request_features import STRING_INPUTS, Coded, request_features

GLOBAL_KEY = "*"
NEVER = np.iinfo(np.int64).max  # "no first attempt yet" in the carried first-seen arrays
LAG_PAIRS = 1 << 21  # (attempt, window entry) pairs walked at once by _lag_aggregations
Z_LIMIT = 20.0  # z-scores are clipped: two near-identical past amounts make std tiny
DAY_MS = 86_400_000
LABEL_KEY_COLUMNS = tuple(e.key for e in LABEL_ENTITIES if e.key)


def prepare(attempts: pd.DataFrame) -> pd.DataFrame:
    """Add the engine's working columns to contract-form attempts (sorted by time)."""
    out = attempts.copy()
    out["event_ms"] = out["event_time"].astype("int64")
    out["amount_cents"] = amount_cents(out["amount_usd"].to_numpy())
    return out


def amount_cents(amount_usd: np.ndarray) -> np.ndarray:
    """USD amounts as integer cents (at least 1), so sums are exact in both engines."""
    return np.maximum(np.round(np.asarray(amount_usd, dtype=np.float64) * 100), 1).astype(np.int64)


def entity_keys(frame: pd.DataFrame, entity: Entity) -> np.ndarray:
    """The entity key per row as an object array (None where the request has none)."""
    if entity.key is None:
        return np.full(len(frame), GLOBAL_KEY, dtype=object)
    col = frame[entity.key]
    return col.astype(object).where(col.notna(), None).to_numpy()


def fraud_labels(labels: pd.DataFrame, attempts_keys: pd.DataFrame) -> pd.DataFrame:
    """First fraud label per transaction, joined with the attempt's label-entity keys.

    `attempts_keys` holds transaction_id plus LABEL_KEY_COLUMNS for (at least) every
    labelled attempt. Labels for unknown transactions are dropped; `unknown_transactions`
    in ``.attrs`` counts them.
    """
    fraud = labels[labels["kind"].isin(FRAUD_LABEL_KINDS)]
    fraud = fraud.sort_values(["label_time", "transaction_id"]).drop_duplicates(
        "transaction_id", keep="first"
    )
    joined = fraud.merge(
        attempts_keys[["transaction_id", *LABEL_KEY_COLUMNS]], on="transaction_id", how="inner"
    )
    joined["label_ms"] = joined["label_time"].astype("int64")
    joined = joined.sort_values(["label_ms", "transaction_id"], ignore_index=True)
    joined.attrs["unknown_transactions"] = len(fraud) - len(joined)
    return joined


_POWERS: list[np.ndarray] = [np.ones(1, dtype=np.uint64)]  # 31 ** i modulo 2**64


def _powers(n: int) -> np.ndarray:
    if len(_POWERS[0]) < n:
        factors = np.full(2 * n, 31, dtype=np.uint64)
        factors[0] = 1
        _POWERS[0] = np.cumprod(factors)  # wraps modulo 2**64, as intended
    return _POWERS[0]


def _string_hashes(values: pa.Array) -> np.ndarray:
    """A 64-bit hash of every string of a null-free Arrow string array, from its buffers.

    Vectorised over the bytes (no Python string is created): a polynomial over the bytes,
    mixed with the length and finished with splitmix64. Not collision-free; callers verify.
    """
    n = len(values)
    offsets = np.frombuffer(
        values.buffers()[1], dtype=np.int32, count=n + 1, offset=4 * values.offset
    )
    offsets = offsets.astype(np.int64)
    lengths = np.diff(offsets)
    h = lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    if offsets[-1] > offsets[0]:
        data = np.frombuffer(values.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
        starts = offsets[:-1] - offsets[0]
        owner_start = np.repeat(starts, lengths)
        position = np.arange(len(data), dtype=np.int64) - owner_start
        terms = (data.astype(np.uint64) + np.uint64(1)) * _powers(int(lengths.max()))[position]
        nonempty = lengths > 0
        h[nonempty] += np.add.reduceat(terms, starts[nonempty])
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h


_STORED = pa.large_string()  # 64-bit offsets: all values ever seen may exceed 2 GB


class _Codes:
    """Stable integer codes for one column's string values, across partitions.

    Sorting and grouping integers is an order of magnitude cheaper than strings, and
    stable codes let carried history stay encoded between partitions. Each partition is
    dictionary-encoded by Arrow; only its distinct values are then looked up among
    everything seen so far, by 64-bit hash in a sorted array (vectorised, no Python
    strings). Every hash hit is verified against the stored value, so a collision never
    merges two keys: the rare value whose hash is taken gets its own code through a
    small dictionary.
    """

    def __init__(self) -> None:
        self.hashes = np.empty(0, dtype=np.uint64)  # sorted
        self.hash_codes = np.empty(0, dtype=np.int64)  # the code registered under each hash
        self.values: list[pa.Array] = []  # the value of every code, in code order
        self.overflow: dict[str, int] = {}  # values whose hash belongs to another value
        self.size = 0

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Codes for `values` (None/NaN -> -1), adding unseen values."""
        encoded = pa.array(values, type=pa.string(), from_pandas=True).dictionary_encode()
        return self.codes_of(encoded.dictionary)[encoded.indices.fill_null(-1).to_numpy()]

    def codes_of(self, uniques: pa.Array) -> np.ndarray:
        """Code of each of the null-free `uniques`, adding unseen ones; then -1 in a last
        slot, so dictionary indices with -1 for missing pick -1.

        `uniques` is normally a dictionary's values; a value given twice (a dictionary
        need not be unique) gets one code.
        """
        n = len(uniques)
        codes = np.full(n + 1, -1, dtype=np.int64)
        h = _string_hashes(uniques)
        clash = np.zeros(n, dtype=bool)
        found = np.zeros(n, dtype=bool)
        if len(self.hashes):
            at = np.minimum(_search(self.hashes, h), len(self.hashes) - 1)
            found = self.hashes[at] == h
            if found.any():
                hit = np.flatnonzero(found)
                known = pa.chunked_array(self.values, _STORED).take(self.hash_codes[at[hit]])
                mine = uniques.take(hit).cast(_STORED)
                same = pc.equal(known, mine).to_numpy(zero_copy_only=False)
                codes[hit[same]] = self.hash_codes[at[hit[same]]]
                clash[hit[~same]] = True
        unseen = np.flatnonzero(~found)
        new_hashes, first = np.unique(h[unseen], return_index=True)
        register = unseen[first]
        clash[unseen] = True  # a second value with one of these new hashes clashes ...
        clash[register] = False  # ... while the first registers it
        if len(register):
            fresh = np.arange(self.size, self.size + len(register))
            codes[register] = fresh
            again = unseen[clash[unseen]]  # ... unless it is the same value again
            if len(again):
                owner = register[np.searchsorted(new_hashes, h[again])]
                same = pc.equal(uniques.take(again), uniques.take(owner))
                same = same.to_numpy(zero_copy_only=False)
                codes[again[same]] = codes[owner[same]]
                clash[again[same]] = False
            self.size += len(register)
            self.values.append(uniques.take(register).cast(_STORED))
            where = np.searchsorted(self.hashes, new_hashes)
            self.hashes = np.insert(self.hashes, where, new_hashes)
            self.hash_codes = np.insert(self.hash_codes, where, fresh)
        for i in np.flatnonzero(clash).tolist():  # 64-bit collisions: practically never
            value = uniques[i].as_py()
            if value not in self.overflow:
                self.overflow[value] = self.size
                self.size += 1
                self.values.append(pa.array([value], _STORED))
            codes[i] = self.overflow[value]
        if len(self.values) > 64:  # keep lookups of stored values cheap
            self.values = [pa.concat_arrays(self.values)]
        return codes

    def __len__(self) -> int:
        return self.size


@dataclasses.dataclass
class OfflineState:
    """What a later partition needs from earlier ones (see module docstring).

    Everything is integer-coded: ``codes`` maps each contract column's strings to stable
    integers; history, buckets and timelines are numpy arrays over those codes.
    """

    codes: dict[str, _Codes] = dataclasses.field(default_factory=dict)
    history: dict[str, list[dict[str, np.ndarray]]] = dataclasses.field(default_factory=dict)
    buckets: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)
    label_buckets: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)
    first_ms: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    last_ms: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    max_event_ms: int | None = None

    def encode(self, column: str | None, values: np.ndarray) -> np.ndarray:
        if column is None:  # the global entity: one key for everything
            return np.zeros(len(values), dtype=np.int64)
        return self.codes.setdefault(column, _Codes()).encode(values)


# ---------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------

BUCKET_BITS = 21  # bucket indices (hours or days since 1970) stay below 2**21 until 2209


@dataclasses.dataclass
class _Timeline:
    prev_ms: np.ndarray  # latest attempt strictly before t (-1 if none)
    first_ms: np.ndarray  # first attempt strictly before t (-1 if none)


def _search(
    haystack: np.ndarray, needles: np.ndarray, order: np.ndarray | None = None
) -> np.ndarray:
    """np.searchsorted(..., side='left') with needles sorted first: far fewer cache misses.

    `order` (an argsort of needles, or of needles shifted by a constant) saves the sort.
    """
    if order is None:
        order = np.argsort(needles, kind="stable")
    found = np.empty(len(needles), dtype=np.int64)
    found[order] = np.searchsorted(haystack, needles[order], side="left")
    return found


def _lookup(table: np.ndarray | None, codes: np.ndarray) -> np.ndarray:
    """table[codes] with -1 for codes outside the table or invalid (-1)."""
    if table is None or not len(table):
        return np.full(len(codes), -1, dtype=np.int64)
    inside = (codes >= 0) & (codes < len(table))
    found = table[np.where(inside, codes, 0)]
    return np.where(inside & (found != NEVER), found, -1)


def _timeline(
    comp: np.ndarray,
    ref_ts: np.ndarray,
    span: int,
    base: int,
    q_codes: np.ndarray,
    q_ts: np.ndarray,
    state: OfflineState,
    view_name: str,
    q_order: np.ndarray,
    hi: np.ndarray | None = None,
) -> _Timeline:
    """prev/first attempt strictly before each query, from `ref` plus carried state.

    `comp` is the sorted composite (code * span + ts - base) of the reference attempts;
    anything older than the reference comes from the carried first/last arrays. `q_order`
    sorts the queries by (code, time), hence also by code; `hi`, when the caller has it,
    is each valid query's search position of (code, time) in `comp`.
    """
    valid = q_codes >= 0
    if hi is None:
        hi = _search(comp, q_codes * span + (q_ts - base), q_order)
    start = _search(comp, q_codes * span, q_order)
    has_prev = valid & (hi > start)
    safe = max(len(ref_ts) - 1, 0)
    prev = np.where(has_prev, ref_ts[np.clip(hi - 1, 0, safe)] if len(ref_ts) else -1, -1)
    first = np.where(has_prev, ref_ts[np.clip(start, 0, safe)] if len(ref_ts) else -1, -1)
    carried_first = _lookup(state.first_ms.get(view_name), q_codes)
    carried_last = _lookup(state.last_ms.get(view_name), q_codes)
    prev = np.where(has_prev, prev, carried_last)
    first = np.where(
        carried_first >= 0,
        np.where(has_prev, np.minimum(first, carried_first), carried_first),
        first,
    )
    return _Timeline(prev.astype(np.int64), first.astype(np.int64))


def _apply_ttl(
    out: dict[str, np.ndarray],
    view: ActivityView | BucketedView,
    valid: np.ndarray,
    tl: _Timeline,
    t: np.ndarray,
) -> None:
    """Defaults where the entity is unknown or its history is older than the TTL."""
    missing = ~valid | (tl.prev_ms < 0)
    stale = ~missing & ((t - tl.prev_ms) > ms(view.ttl))
    blank = missing | stale
    for a in view.features:
        out[a.name] = np.where(blank, a.default, out[a.name])
    out[f"{view.name}_missing"] = missing.astype(np.int64)
    out[f"{view.name}_stale"] = stale.astype(np.int64)


def _since(agg: Aggregation, tl: _Timeline, t: np.ndarray) -> np.ndarray:
    ref = tl.prev_ms if agg.kind == "seconds_since_previous" else tl.first_ms
    return np.where(ref >= 0, (t - ref) / 1000.0, agg.default)


def _composite(ts: np.ndarray, extra: np.ndarray | None = None) -> tuple[int, int]:
    """(base, span) so that code * span + (ts - base) sorts by (code, ts) without overlap."""
    lo = int(ts.min()) if len(ts) else 0
    hi = int(ts.max()) if len(ts) else 0
    if extra is not None and len(extra):
        lo, hi = min(lo, int(extra.min())), max(hi, int(extra.max()))
    base = lo - 1
    return base, hi - base + 1


# ---------------------------------------------------------------------------------------
# activity views: exact sliding windows
# ---------------------------------------------------------------------------------------


def _activity(view: ActivityView, batch: _Batch, state: OfflineState) -> dict[str, np.ndarray]:
    """Features of `view` for every row of `batch` (time-ordered); updates the history."""
    t, cents, codes = batch.event_ms, batch.amount_cents, batch.codes
    q_codes = codes[view.entity.key]
    valid = q_codes >= 0
    # fresh rows in (code, time, transaction) order: t is ascending, the sort stable
    fresh_rows = np.flatnonzero(valid)
    fresh_rows = fresh_rows[np.argsort(q_codes[fresh_rows], kind="stable")]
    fresh = {"code": q_codes[fresh_rows], "ts": t[fresh_rows], "cents": cents[fresh_rows]}
    for c in view.columns:
        fresh[c] = codes[c][fresh_rows]
    # Rows older than this partition's earliest window start are never needed again;
    # only the history of entities present in this partition matters to it.
    base = int(t.min()) - ms(view.horizon) - 1
    span = int(t.max()) - base + 1
    chunks = [c for c in state.history.get(view.name, []) if c["ts"].max() > base]
    present = np.zeros(len(state.codes[view.entity.key]), dtype=bool)
    present[fresh["code"]] = True
    ref = _relevant_history([*chunks, fresh], present, base)
    # composite keys code * span + (ts - base) sort by (code, time)
    comp = ref["code"] * span + (ref["ts"] - base)
    q_comp = np.where(valid, q_codes * span + (t - base), -1)
    # Searching with sorted needles lets numpy narrow each search from the previous one.
    # The queries sorted by (code, time) are the rows without a key, then the fresh rows.
    q_order = np.concatenate([np.flatnonzero(~valid), fresh_rows])
    sorted_q = q_comp[q_order]
    found: dict[int, np.ndarray] = {}

    def search(offset: int) -> np.ndarray:
        """Per query, the first history position at or after (code, time - offset)."""
        if offset not in found:  # windows shared by several aggregations: search once
            at = np.empty(len(q_comp), dtype=np.int64)
            at[q_order] = np.searchsorted(comp, sorted_q - offset, side="left")
            found[offset] = np.where(valid, at, 0)
        return found[offset]

    hi = search(0)
    cum_cents = np.concatenate([[0], np.cumsum(ref["cents"])])
    out: dict[str, np.ndarray] = {}
    lag_windows: dict[int, list[Aggregation]] = {}
    for a in view.features:
        if a.kind in ("count", "sum_usd"):
            lo = search(ms(a.window))
            if a.kind == "count":
                out[a.name] = (hi - lo).astype(np.int64)
            else:
                out[a.name] = (cum_cents[hi] - cum_cents[lo]) / 100.0
        elif a.kind in ("distinct", "match_count", "zscore_log_amount"):
            lag_windows.setdefault(ms(a.window), []).append(a)
    for window, aggs in lag_windows.items():
        out.update(_lag_aggregations(aggs, ref, search(window), hi, codes, cents))
    tl = _timeline(comp, ref["ts"], span, base, q_codes, t, state, view.name, q_order, hi)
    for a in view.features:
        if a.kind in ("seconds_since_previous", "seconds_since_first"):
            out[a.name] = _since(a, tl, t)
    _apply_ttl(out, view, valid, tl, t)
    state.history[view.name] = _compact([*chunks, fresh])
    return out


MAX_CHUNKS = 64  # carried history chunks per view before they are merged into one


def _relevant_history(
    chunks: list[dict[str, np.ndarray]], present: np.ndarray, base: int
) -> dict[str, np.ndarray]:
    """The rows of `chunks` whose code is `present` and time after `base`, in (code, time,
    transaction) order.

    Each chunk is one partition's rows in that order and chunks follow each other in
    time, so the picked rows form one sorted run per chunk: a stable sort by code (Timsort
    merges the runs) restores the order without touching the rest of the history.
    """
    picked = [np.flatnonzero(present[c["code"]] & (c["ts"] > base)) for c in chunks]
    rows = {
        k: np.concatenate([c[k][p] for c, p in zip(chunks, picked, strict=True)]) for k in chunks[0]
    }
    if len(chunks) == 1:
        return rows
    order = np.argsort(rows["code"], kind="stable")
    return {k: v[order] for k, v in rows.items()}


def _compact(chunks: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """The carried history chunks, merged into one when there are more than MAX_CHUNKS
    (many tiny partitions), so the per-partition work stays proportional to the rows.
    """
    chunks = [c for c in chunks if len(c["ts"])]
    if len(chunks) <= MAX_CHUNKS:
        return chunks
    merged = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    order = np.argsort(merged["code"], kind="stable")
    return [{k: v[order] for k, v in merged.items()}]


def _lag_pairs(
    count: np.ndarray, hi: np.ndarray
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """(q0, q1, query, entry): every (query, window entry) pair of queries q0..q1-1, lag
    1, 2, ... within each query (the entry at lag k is hi - k), in slices of at most
    LAG_PAIRS pairs (one query's window may exceed it) so memory stays bounded.
    """
    ends = np.cumsum(count)
    total = int(ends[-1]) if len(ends) else 0
    cuts = np.searchsorted(ends, np.arange(LAG_PAIRS, total, LAG_PAIRS), side="right")
    for q0, q1 in itertools.pairwise([0, *np.unique(cuts).tolist(), len(count)]):
        if q1 <= q0:
            continue
        c = count[q0:q1]
        query = np.repeat(np.arange(q0, q1), c)
        entry = np.repeat(hi[q0:q1] - 1 + np.cumsum(c) - c, c) - np.arange(len(query))
        yield q0, q1, query, entry


def _lag_aggregations(
    aggs: list[Aggregation],
    ref: dict[str, np.ndarray],
    lo: np.ndarray,
    hi: np.ndarray,
    codes: dict[str | None, np.ndarray],
    cents: np.ndarray,
) -> dict[str, np.ndarray]:
    """distinct / match_count / z-score over [lo, hi), newest entry first (as online).

    Every (query, lag) pair of the windows is laid out flat, lags 1, 2, ... within each
    query, so the walk is a few numpy calls whatever the window depth (the work is the
    sum of window sizes). Float sums accumulate per query in lag order, as online.
    """
    n = len(lo)
    count = hi - lo
    next_same: dict[str, np.ndarray] = {}
    for a in aggs:
        if a.kind == "distinct" and a.column not in next_same:
            col = ref[a.column]
            pair = ref["code"] * (int(col.max()) + 2 if len(col) else 1) + (col + 1)
            o = np.argsort(pair, kind="stable")
            nxt = np.full(len(pair), np.iinfo(np.int64).max, dtype=np.int64)
            same = pair[o[1:]] == pair[o[:-1]]
            nxt[o[:-1][same]] = o[1:][same]
            next_same[a.column] = nxt
    out = {a.name: np.zeros(n, dtype=np.int64) for a in aggs if a.kind != "zscore_log_amount"}
    zs = [a for a in aggs if a.kind == "zscore_log_amount"]
    total = np.zeros(n, dtype=np.float64)
    sq = np.zeros(n, dtype=np.float64)
    log_amount = np.log(ref["cents"].astype(np.float64)) if zs else None
    for q0, q1, query, j in _lag_pairs(count, hi):
        for a in aggs:
            if a.kind == "distinct":  # an entry counts if its value does not recur before hi
                newest = next_same[a.column][j] >= hi[query]
                out[a.name][q0:q1] = np.bincount(query[newest] - q0, minlength=q1 - q0)
            elif a.kind == "match_count":
                match = ref[a.column][j] == codes[a.column][query]
                out[a.name][q0:q1] = np.bincount(query[match] - q0, minlength=q1 - q0)
        if zs:
            np.add.at(total, query, log_amount[j])  # in array order: lag 1, 2, ... per query
    if zs:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / count
        for _, _, query, j in _lag_pairs(count, hi):
            d = log_amount[j] - mean[query]
            np.add.at(sq, query, d * d)
        q_log = np.log(cents.astype(np.float64))
        with np.errstate(invalid="ignore", divide="ignore"):
            std = np.sqrt(sq / (count - 1))
            z = (q_log - mean) / std
        ok = (count >= 2) & (std > 0) & np.isfinite(z)
        for a in zs:
            out[a.name] = np.where(ok, np.clip(z, -Z_LIMIT, Z_LIMIT), a.default)
    return out


# ---------------------------------------------------------------------------------------
# bucketed views and label statistics: integer-keyed bucket tables
# ---------------------------------------------------------------------------------------


def _aggregate(keys: np.ndarray, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Sum `values` per distinct composite key; result sorted by key."""
    uniq, inverse = np.unique(keys, return_inverse=True)
    out = {"key": uniq}
    for name, v in values.items():
        out[name] = np.bincount(inverse, weights=v, minlength=len(uniq)).astype(np.int64)
    return out


def _merge_buckets(
    carry: dict[str, np.ndarray] | None, fresh: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The carried table (sorted, unique keys) plus this partition's rows, still sorted.

    Only the partition is aggregated (sorted); it then merges into the carried table in
    linear time, so the cost per partition does not grow with a sort of the whole table.
    """
    new = _aggregate(fresh["key"], {k: v for k, v in fresh.items() if k != "key"})
    if carry is None or not len(carry["key"]):
        return new
    pos = np.searchsorted(carry["key"], new["key"])
    hit = carry["key"][np.minimum(pos, len(carry["key"]) - 1)] == new["key"]
    out = {}
    for k, v in carry.items():
        if k == "key":
            out[k] = np.insert(v, pos[~hit], new[k][~hit])
        else:
            merged = v.copy()
            merged[pos[hit]] += new[k][hit]
            out[k] = np.insert(merged, pos[~hit], new[k][~hit])
    return out


def _window_sums(
    table: dict[str, np.ndarray],
    q_codes: np.ndarray,
    bucket: np.ndarray,
    window: int,
    columns: tuple[str, ...],
    q_order: np.ndarray,
) -> dict[str, np.ndarray]:
    """Per query: sum of columns over the `window` buckets of its code before `bucket`.

    `q_order` sorts (code, bucket) keys of the queries (-1 codes counted as 0).
    """
    valid = q_codes >= 0
    key = (np.where(valid, q_codes, 0) << BUCKET_BITS) + bucket
    lo = _search(table["key"], key - window, q_order)
    hi = _search(table["key"], key, q_order)
    out = {}
    for c in columns:
        cum = np.concatenate([[0], np.cumsum(table[c])])
        out[c] = np.where(valid, cum[hi] - cum[lo], 0)
    return out


def _bucketed(view: BucketedView, batch: _Batch, state: OfflineState) -> dict[str, np.ndarray]:
    t = batch.event_ms
    q_codes = batch.codes[view.entity.key]
    valid = q_codes >= 0
    bucket_ms = ms(view.bucket)
    bucket = t // bucket_ms
    fresh = {
        "key": (q_codes[valid] << BUCKET_BITS) + bucket[valid],
        "count": np.ones(int(valid.sum()), dtype=np.int64),
        "cents": batch.amount_cents[valid],
    }
    table = _merge_buckets(state.buckets.get(view.name), fresh)
    # t ascending: a stable sort by code orders the (code, bucket) and (code, t) keys
    q_order = np.argsort(np.where(valid, q_codes, 0), kind="stable")
    out: dict[str, np.ndarray] = {}
    for a in view.features:
        if a.window is None:
            continue
        sums = _window_sums(
            table, q_codes, bucket, ms(a.window) // bucket_ms, ("count", "cents"), q_order
        )
        if a.kind == "count":
            out[a.name] = sums["count"]
        elif a.kind == "sum_usd":
            out[a.name] = sums["cents"] / 100.0
        elif a.kind == "mean_usd":
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = (sums["cents"] / sums["count"]) / 100.0
            out[a.name] = np.where(sums["count"] > 0, mean, a.default)
    # exact previous/first times: this partition's own attempts plus carried first/last
    order = q_order[valid[q_order]]
    r_codes, r_ts = q_codes[order], t[order]
    base, span = _composite(t)
    comp = r_codes * span + (r_ts - base)
    tl = _timeline(comp, r_ts, span, base, q_codes, t, state, view.name, q_order)
    for a in view.features:
        if a.kind in ("seconds_since_previous", "seconds_since_first"):
            out[a.name] = _since(a, tl, t)
    _apply_ttl(out, view, valid, tl, t)
    oldest = int(bucket.max()) - ms(view.horizon) // bucket_ms - 1
    keep = (table["key"] & ((1 << BUCKET_BITS) - 1)) >= oldest
    state.buckets[view.name] = {k: v[keep] for k, v in table.items()}
    return out


def _label_stats(batch: _Batch, state: OfflineState) -> dict[str, np.ndarray]:
    t = batch.event_ms
    day = t // DAY_MS
    window_days = max(ms(v.window) for v in LABEL_RATES) // DAY_MS
    label_day = batch.label_ms // DAY_MS
    counts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for e in LABEL_ENTITIES:
        q_codes = batch.codes[e.key]
        q_order = np.argsort(np.where(q_codes >= 0, q_codes, 0), kind="stable")
        lab_codes = batch.label_codes[e.key]
        fresh = {
            "key": np.concatenate(
                [(q_codes << BUCKET_BITS) + day, (lab_codes << BUCKET_BITS) + label_day]
            ),
            "n": np.concatenate([np.ones(len(t), np.int64), np.zeros(len(label_day), np.int64)]),
            "f": np.concatenate([np.zeros(len(t), np.int64), np.ones(len(label_day), np.int64)]),
        }
        table = _merge_buckets(state.label_buckets.get(e.name), fresh)
        sums = _window_sums(table, q_codes, day, window_days, ("n", "f"), q_order)
        counts[e.name] = (sums["n"], sums["f"])
        keep = (table["key"] & ((1 << BUCKET_BITS) - 1)) >= int(day.max()) - window_days - 1
        state.label_buckets[e.name] = {k: v[keep] for k, v in table.items()}
    out = label_rate_values(counts)
    for name, value in out.items():
        if not name.endswith("_fraud_rate_90d"):
            out[name] = np.asarray(value, dtype=np.int64)
    return out


# ---------------------------------------------------------------------------------------
# request-time features and the whole vector
# ---------------------------------------------------------------------------------------


def request_columns(part: pd.DataFrame, merchant_seen_seconds: np.ndarray) -> dict[str, np.ndarray]:
    """The inputs `request_features` needs, from contract-form attempts."""
    cols = {c: part[c].astype(object).to_numpy() for c in STRING_INPUTS}
    cols["event_ms"] = part["event_ms"].to_numpy()
    cols["amount_usd"] = part["amount_usd"].to_numpy()
    created = part["merchant_created_at"]
    filled = created.fillna(pd.Timestamp(0, tz="UTC")).astype("datetime64[ms, UTC]")
    cols["merchant_created_ms"] = np.where(created.notna(), filled.astype("int64"), -1)
    cols["merchant_seen_seconds"] = merchant_seen_seconds
    return cols


_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="feature-views")

ENCODED_COLUMNS = tuple(
    dict.fromkeys(
        [v.entity.key for v in TIMELINE_VIEWS if v.entity.key]
        + [c for v in ACTIVITY_VIEWS for c in v.columns]
        + [e.key for e in LABEL_ENTITIES if e.key]
    )
)


@dataclasses.dataclass
class _Batch:
    """One time-ordered partition decoded for the views (see :func:`_decode`)."""

    event_ms: np.ndarray  # int64 UTC ms, ascending
    amount_cents: np.ndarray
    codes: dict[str | None, np.ndarray]  # contract column -> stable codes (-1: none)
    request: dict[str, np.ndarray | Coded]  # request_features' inputs, but the merchant age
    label_ms: np.ndarray  # fraud labels newly known by the end of this partition
    label_codes: dict[str | None, np.ndarray]
    transaction_id: np.ndarray
    event_time: pd.Series


def _decode(table: pa.Table, new_labels: pd.DataFrame, state: OfflineState) -> _Batch:
    """Integer codes and numpy columns for a sorted contract-form partition.

    Assigns codes, so partitions must be decoded one at a time and in time order; the
    views then need nothing else from the table. Each string column is dictionary-encoded
    once by Arrow (or read so): its codes come from the distinct values alone, and the
    request-time inputs are the distinct values (as Python strings) with an index per
    row, so request features are worked out per distinct value.
    """
    event_ms = table.column("event_time").cast(pa.int64()).to_numpy()
    if state.max_event_ms is not None and len(event_ms) and event_ms[0] < state.max_event_ms:
        raise ValueError(
            "partitions must be given in time order without overlap "
            f"(partition starts at {int(event_ms[0])} ms, earlier ones reached "
            f"{state.max_event_ms} ms)"
        )
    state.max_event_ms = int(event_ms[-1])
    encoded: dict[str, tuple[np.ndarray, pa.Array]] = {}

    def dictionary(column: str) -> tuple[np.ndarray, pa.Array]:
        if column not in encoded:
            encoded[column] = _dictionary(table.column(column))
        return encoded[column]

    codes: dict[str | None, np.ndarray] = {
        c: state.codes.setdefault(c, _Codes()).codes_of(dictionary(c)[1])[dictionary(c)[0]]
        for c in ENCODED_COLUMNS
    }
    codes[None] = np.zeros(len(event_ms), dtype=np.int64)
    label_codes: dict[str | None, np.ndarray] = {
        e.key: (
            np.zeros(len(new_labels), dtype=np.int64)
            if e.key is None
            else state.encode(e.key, new_labels[e.key].to_numpy())
        )
        for e in LABEL_ENTITIES
    }
    request: dict[str, np.ndarray | Coded] = {}
    for c in STRING_INPUTS:  # distinct values as Python strings, None last for index -1
        indices, uniques = dictionary(c)
        request[c] = Coded(np.array([*uniques.to_pylist(), None], dtype=object), indices)
    amount_usd = table.column("amount_usd").to_numpy()
    request["event_ms"] = event_ms
    request["amount_usd"] = amount_usd
    created = table.column("merchant_created_at").cast(pa.int64()).fill_null(-1)
    request["merchant_created_ms"] = created.to_numpy()
    return _Batch(
        event_ms=event_ms,
        amount_cents=amount_cents(amount_usd),
        codes=codes,
        request=request,
        label_ms=new_labels["label_ms"].to_numpy(dtype=np.int64),
        label_codes=label_codes,
        transaction_id=table.column("transaction_id").to_numpy(),
        event_time=table.column("event_time").to_pandas(),
    )


def _dictionary(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """(index per row, -1 for null; the values indexed) of a string column.

    Columns read as Parquet dictionaries are used as they come (no hashing of every row);
    plain ones are dictionary-encoded. A dictionary larger than the partition (a day
    sliced from a whole table keeps the table's dictionary) is cut to the values used,
    so later steps work in proportion to the partition.
    """
    arr = column.combine_chunks()  # dictionaries of several chunks are unified
    if pa.types.is_dictionary(arr.type) and arr.dictionary.null_count:
        arr = arr.cast(arr.type.value_type)  # a null among the values: encode afresh
    if not pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_encode()
    indices = arr.indices.fill_null(-1).to_numpy()
    values = arr.dictionary
    if len(values) > len(indices):
        used = np.zeros(len(values) + 1, dtype=bool)  # the last slot catches the -1s
        used[indices] = True
        keep = np.flatnonzero(used[:-1])
        remap = np.full(len(values) + 1, -1, dtype=np.int64)
        remap[keep] = np.arange(len(keep))
        indices, values = remap[indices], values.take(keep)
    return indices, values


def _compute(batch: _Batch, state: OfflineState) -> pd.DataFrame:
    """Feature vectors for one decoded partition; advances `state` in place."""
    return _frame(batch, _gather(_submit_views(batch, state), batch, state))


def _submit_views(batch: _Batch, state: OfflineState) -> list[Future[dict[str, np.ndarray]]]:
    """Start the views of `batch` in the two worker threads (see :func:`_gather`).

    Views are independent given the codes, and their heavy lifting (sorts, searches,
    gathers) runs in numpy without the GIL: two threads keep both cores busy. Jobs go
    roughly longest first, so neither thread is left with a long job at the end.
    """

    def bucketed_and_request() -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for view in BUCKETED_VIEWS:
            out.update(_bucketed(view, batch, state))
        seen = {"merchant_seen_seconds": out["merchant_seen_seconds"]}  # merchant age
        return out | request_features(batch.request | seen)

    activity = [lambda v=v: _activity(v, batch, state) for v in ACTIVITY_VIEWS]
    jobs = [bucketed_and_request, *activity, lambda: _label_stats(batch, state)]
    return [_POOL.submit(job) for job in jobs]


def _gather(
    futures: list[Future[dict[str, np.ndarray]]], batch: _Batch, state: OfflineState
) -> dict[str, np.ndarray]:
    """The features of the views started by :func:`_submit_views`; then, as every view
    has read them, advances the carried first/last attempt times past `batch`.
    """
    features: dict[str, np.ndarray] = {}
    for future in futures:
        features.update(future.result())
    _advance_timelines(batch, state)
    return features


def _frame(batch: _Batch, features: dict[str, np.ndarray]) -> pd.DataFrame:
    """The output DataFrame of one partition (columns in FEATURE_NAMES order).

    Built from one 2-D block per dtype, filled row by row, the way pyarrow's
    ``to_pandas`` hands pandas its blocks: ``pd.DataFrame(dict)`` would consolidate the 77
    columns itself at several times the cost, all of it holding the GIL that the views of
    the next partition are waiting for. Same frame, column for column.
    """
    names = ["transaction_id", *FEATURE_NAMES]
    arrays = [np.asarray(batch.transaction_id), *(np.asarray(features[n]) for n in FEATURE_NAMES)]
    by_dtype: dict[np.dtype, list[int]] = {}
    for i, values in enumerate(arrays):
        by_dtype.setdefault(values.dtype, []).append(i)
    blocks = []
    for dtype, where in by_dtype.items():
        block = np.empty((len(where), len(batch.event_ms)), dtype=dtype)
        for row, i in enumerate(where):
            block[row] = arrays[i]
        blocks.append(make_block(block, placement=np.asarray(where)))
    manager = BlockManager(blocks, [pd.Index(names), pd.RangeIndex(len(batch.event_ms))])
    frame = pd.DataFrame._from_mgr(manager, manager.axes)
    frame.insert(1, "event_time", batch.event_time.array)
    return frame


def compute_partition(
    part: pd.DataFrame, new_labels: pd.DataFrame, state: OfflineState
) -> pd.DataFrame:
    """Feature vectors for one time-ordered partition; advances `state` in place.

    `part` is contract-form attempts (any order); `new_labels` are the fraud labels (from
    :func:`fraud_labels`) not yet given to earlier partitions with label_time before the
    end of this partition.
    """
    from feature_views.tables import sort_attempts

    if part.empty:
        return pd.DataFrame(columns=["transaction_id", "event_time", *FEATURE_NAMES])
    return _compute(_decode(sort_attempts(attempts_table(part)), new_labels, state), state)


def _advance_timelines(batch: _Batch, state: OfflineState) -> None:
    t = batch.event_ms
    for view in TIMELINE_VIEWS:
        q = batch.codes[view.entity.key]
        valid = q >= 0
        size = len(state.codes[view.entity.key])
        first = state.first_ms.get(view.name, np.empty(0, dtype=np.int64))
        last = state.last_ms.get(view.name, np.empty(0, dtype=np.int64))
        if len(first) < size:
            grow = size - len(first)
            first = np.concatenate([first, np.full(grow, NEVER, dtype=np.int64)])
            last = np.concatenate([last, np.full(grow, -1, dtype=np.int64)])
        np.minimum.at(first, q[valid], t[valid])
        np.maximum.at(last, q[valid], t[valid])
        state.first_ms[view.name] = first
        state.last_ms[view.name] = last


def compute_features(attempts: pd.DataFrame, labels: pd.DataFrame | None = None) -> pd.DataFrame:
    """Point-in-time feature vectors for an in-memory table (split by UTC day internally).

    Rows come back in (event_time, transaction_id) order.
    """
    from feature_views.tables import sort_attempts, split_days

    keys = attempts[["transaction_id", *[c for c in LABEL_KEY_COLUMNS]]]
    lab = fraud_labels(labels if labels is not None else _empty_labels(), keys)
    days = split_days(sort_attempts(attempts_table(attempts)))
    return pd.concat(list(_stream(days, lab)), ignore_index=True)


def _stream(tables: Iterable[pa.Table], lab: pd.DataFrame) -> Iterator[pd.DataFrame]:
    """Feature vectors per time-ordered partition, decoding the next while computing this.

    Partition N+1 is read, checked and decoded (Parquet decoding and Arrow kernels
    release the GIL) while the views of partition N run, so at most three partitions are
    in memory at once. The DataFrame of partition N is built while the views of N+1 run
    (it is queued first), and the caller gets it while they still run, so neither step
    leaves a core idle. Everything is a job of the same two worker threads: a third,
    separate reader thread made three busy threads contend for two cores and the GIL,
    3–5% slower side by side.
    """
    state = OfflineState()
    label_ms = lab["label_ms"].to_numpy(dtype=np.int64)
    source = iter(tables)
    taken = 0

    def next_batch() -> _Batch | None:
        nonlocal taken
        for table in source:
            if not table.num_rows:
                continue
            end = int(table.column("event_time").cast(pa.int64())[-1].as_py())
            upto = int(np.searchsorted(label_ms, end, side="right"))
            batch = _decode(table, lab.iloc[taken:upto], state)
            taken = upto
            return batch
        return None

    frame: Future[pd.DataFrame] | None = None
    pending = _POOL.submit(next_batch)
    while (batch := pending.result()) is not None:
        pending = _POOL.submit(next_batch)
        views = _submit_views(batch, state)
        if frame is not None:
            yield frame.result()
        frame = _POOL.submit(_frame, batch, _gather(views, batch, state))
    if frame is not None:
        yield frame.result()


def _empty_labels() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction_id": pd.Series([], dtype=object),
            "label_time": pd.Series([], dtype="datetime64[ms, UTC]"),
            "kind": pd.Series([], dtype=object),
        }
    )


def iter_features(events: str | Path, labels: str | Path | None = None) -> Iterator[pd.DataFrame]:
    """Feature vectors for a Parquet table, one time-ordered partition at a time.

    Memory is bounded by one partition plus the carried state, so this runs over tables
    larger than memory when they are date-partitioned.
    """
    from feature_views.tables import iter_attempt_tables, read_labels

    lab = read_labels(labels)
    tables = iter_attempt_tables(events, dictionaries=True)
    yield from _stream(tables, table_fraud_labels(events, lab))


def table_fraud_labels(events: str | Path, labels: pd.DataFrame) -> pd.DataFrame:
    """`fraud_labels` for a table on disk, reading only the labelled attempts' keys."""
    from feature_views.tables import read_attempt_columns

    if labels.empty:
        return fraud_labels(labels, pd.DataFrame(columns=["transaction_id", *LABEL_KEY_COLUMNS]))
    keys = read_attempt_columns(
        events, ["transaction_id", *LABEL_KEY_COLUMNS], transaction_ids=labels["transaction_id"]
    )
    for c in LABEL_KEY_COLUMNS:  # external tables may lack them: the contract's default
        keys[c] = keys[c].fillna("unknown") if c in keys.columns else "unknown"
    return fraud_labels(labels, keys)
