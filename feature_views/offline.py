"""The offline engine: point-in-time correct feature vectors for every attempt of a table.

Interprets ``definitions.py`` with vectorised numpy over whole partitions; there is no
per-attempt Python loop. Windows are found with ``searchsorted`` over a composite
(entity, time) key; sums come from prefix sums of integer cents (exact); distinct counts,
same-merchant counts and z-scores walk back through the window one lag at a time for all
attempts at once (work proportional to the window sizes, not to the table squared).

Tables larger than memory are processed in time-ordered partitions (one UTC day each):
:class:`OfflineState` carries just what later partitions need — the last 30 days of slim
history for exact windows, bucket aggregates for bucketed windows and label statistics,
and each entity's first/last attempt time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from feature_views.contract import FRAUD_LABEL_KINDS
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
    ms,
)
from feature_views.request_features import request_features

GLOBAL_KEY = "*"
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
    return np.maximum(np.round(np.asarray(amount_usd, dtype=np.float64) * 100), 1).astype(
        np.int64)


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
        "transaction_id", keep="first")
    joined = fraud.merge(attempts_keys[["transaction_id", *LABEL_KEY_COLUMNS]],
                         on="transaction_id", how="inner")
    joined["label_ms"] = joined["label_time"].astype("int64")
    joined = joined.sort_values(["label_ms", "transaction_id"], ignore_index=True)
    joined.attrs["unknown_transactions"] = len(fraud) - len(joined)
    return joined


@dataclasses.dataclass
class OfflineState:
    """What a later partition needs from earlier ones (see module docstring)."""

    history: dict[str, pd.DataFrame] = dataclasses.field(default_factory=dict)
    buckets: dict[str, pd.DataFrame] = dataclasses.field(default_factory=dict)
    label_buckets: dict[str, pd.DataFrame] = dataclasses.field(default_factory=dict)
    first_ms: dict[str, pd.Series] = dataclasses.field(default_factory=dict)
    last_ms: dict[str, pd.Series] = dataclasses.field(default_factory=dict)
    max_event_ms: int | None = None
    label_watermark_ms: int | None = None


# ---------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------

def _factorize(*arrays: np.ndarray) -> list[np.ndarray]:
    """Integer codes for object arrays, consistent across all of them."""
    joined = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
    codes, _ = pd.factorize(joined, use_na_sentinel=True)
    out, start = [], 0
    for a in arrays:
        out.append(codes[start:start + len(a)].astype(np.int64))
        start += len(a)
    return out


def _lag_order(count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Query indices by descending window size, and sizes sorted ascending for bisection."""
    order = np.argsort(-count, kind="stable")
    return order, np.sort(count)


def _active(order: np.ndarray, sorted_counts: np.ndarray, k: int) -> np.ndarray:
    """Queries whose window holds at least k entries (a prefix of `order`)."""
    n_active = len(sorted_counts) - np.searchsorted(sorted_counts, k, side="left")
    return order[:n_active]


@dataclasses.dataclass
class _Timeline:
    prev_ms: np.ndarray   # latest attempt strictly before t (-1 if none)
    first_ms: np.ndarray  # first attempt strictly before t (-1 if none)


def _timeline(ref_codes: np.ndarray, ref_ts: np.ndarray, comp: np.ndarray, span: int,
              base: int, q_codes: np.ndarray, q_ts: np.ndarray, q_keys: np.ndarray,
              state_first: pd.Series | None, state_last: pd.Series | None) -> _Timeline:
    """prev/first attempt strictly before each query, from `ref` plus carried state."""
    n = len(q_codes)
    q_comp = q_codes * span + (q_ts - base)
    hi = np.searchsorted(comp, q_comp, side="left")
    start = np.searchsorted(comp, q_codes * span, side="left")
    has_prev = hi > start
    prev = np.where(has_prev, ref_ts[np.maximum(hi - 1, 0)], -1)
    first = np.where(has_prev, ref_ts[np.minimum(start, len(ref_ts) - 1)], -1)
    if state_last is not None and len(state_last):
        carried_last = pd.Series(q_keys).map(state_last).to_numpy(dtype="float64", na_value=-1)
        carried_first = pd.Series(q_keys).map(state_first).to_numpy(dtype="float64", na_value=-1)
        carried_last = carried_last.astype(np.int64)
        carried_first = carried_first.astype(np.int64)
        prev = np.where(has_prev, prev, carried_last)
        first = np.where(carried_first >= 0,
                         np.where(has_prev, np.minimum(first, carried_first), carried_first),
                         first)
    return _Timeline(prev.astype(np.int64), np.asarray(first, dtype=np.int64)[:n])


def _apply_ttl(out: dict[str, np.ndarray], view: ActivityView | BucketedView,
               valid: np.ndarray, tl: _Timeline, t: np.ndarray) -> None:
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


# ---------------------------------------------------------------------------------------
# activity views: exact sliding windows
# ---------------------------------------------------------------------------------------

def _slim(frame: pd.DataFrame, view: ActivityView) -> pd.DataFrame:
    keys = entity_keys(frame, view.entity)
    slim = pd.DataFrame({"key": keys, "ts": frame["event_ms"].to_numpy(),
                         "txid": frame["transaction_id"].to_numpy(),
                         "cents": frame["amount_cents"].to_numpy()})
    for c in view.columns:
        slim[c] = frame[c].astype(object).where(frame[c].notna(), "").to_numpy()
    return slim[pd.notna(keys)]


def _activity(view: ActivityView, part: pd.DataFrame, state: OfflineState
              ) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Features of `view` for every row of `part`; returns them and the new history."""
    t = part["event_ms"].to_numpy()
    q_keys = entity_keys(part, view.entity)
    valid = pd.notna(q_keys)
    carry = state.history.get(view.name)
    ref = _slim(part, view)
    if carry is not None and len(carry):
        ref = pd.concat([carry, ref], ignore_index=True)
    ref = ref.sort_values(["key", "ts", "txid"], kind="stable", ignore_index=True)
    ref_keys = ref["key"].to_numpy()
    ref_ts = ref["ts"].to_numpy(dtype=np.int64)
    q_keys_filled = np.where(valid, q_keys, "\x00none")
    ref_codes, q_codes = _factorize(ref_keys, q_keys_filled)
    horizon = ms(view.horizon)
    base = int(min(ref_ts.min() if len(ref_ts) else t.min(), t.min())) - horizon - 1
    span = int(max(ref_ts.max() if len(ref_ts) else 0, t.max()) - base + 1)
    comp = ref_codes * span + (ref_ts - base)
    q_comp = q_codes * span + (t - base)
    hi = np.searchsorted(comp, q_comp, side="left")
    cum_cents = np.concatenate([[0], np.cumsum(ref["cents"].to_numpy(dtype=np.int64))])
    log_amount = np.log(ref["cents"].to_numpy(dtype=np.float64))
    out: dict[str, np.ndarray] = {}
    lag_windows: dict[int, list[Aggregation]] = {}
    for a in view.features:
        if a.kind in ("count", "sum_usd"):
            lo = np.searchsorted(comp, q_comp - ms(a.window), side="left")
            if a.kind == "count":
                out[a.name] = (hi - lo).astype(np.int64)
            else:
                out[a.name] = (cum_cents[hi] - cum_cents[lo]) / 100.0
        elif a.kind in ("distinct", "match_count", "zscore_log_amount"):
            lag_windows.setdefault(ms(a.window), []).append(a)
    for window, aggs in lag_windows.items():
        lo = np.searchsorted(comp, q_comp - window, side="left")
        out.update(_lag_aggregations(aggs, ref, ref_codes, lo, hi, part, log_amount))
    tl = _timeline(ref_codes, ref_ts, comp, span, base, q_codes, t, q_keys_filled,
                   state.first_ms.get(view.name), state.last_ms.get(view.name))
    for a in view.features:
        if a.kind in ("seconds_since_previous", "seconds_since_first"):
            out[a.name] = _since(a, tl, t)
    _apply_ttl(out, view, valid, tl, t)
    keep_from = int(t.max()) - horizon
    new_history = ref[ref_ts >= keep_from].reset_index(drop=True)
    return out, new_history


def _lag_aggregations(aggs: list[Aggregation], ref: pd.DataFrame, ref_codes: np.ndarray,
                      lo: np.ndarray, hi: np.ndarray, part: pd.DataFrame,
                      log_amount: np.ndarray) -> dict[str, np.ndarray]:
    """distinct / match_count / z-score over [lo, hi), newest entry first (as online)."""
    n = len(lo)
    count = hi - lo
    order, sorted_counts = _lag_order(count)
    max_k = int(count.max()) if n else 0
    out: dict[str, np.ndarray] = {}
    next_same: dict[str, np.ndarray] = {}
    match_codes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for a in aggs:
        if a.kind == "distinct" and a.column not in next_same:
            col_codes = _factorize(ref[a.column].to_numpy())[0]
            idx = np.arange(len(ref), dtype=np.int64)
            o = np.lexsort((idx, col_codes, ref_codes))
            nxt = np.full(len(ref), np.iinfo(np.int64).max, dtype=np.int64)
            same = (ref_codes[o[1:]] == ref_codes[o[:-1]]) & (col_codes[o[1:]] == col_codes[o[:-1]])
            nxt[o[:-1][same]] = o[1:][same]
            next_same[a.column] = nxt
        if a.kind == "match_count" and a.column not in match_codes:
            q_vals = part[a.column].astype(object).where(part[a.column].notna(), "").to_numpy()
            r_codes, q_codes = _factorize(ref[a.column].to_numpy(), q_vals)
            match_codes[a.column] = (r_codes, q_codes)
    acc = {a.name: np.zeros(n, dtype=np.int64) for a in aggs if a.kind != "zscore_log_amount"}
    zs = [a for a in aggs if a.kind == "zscore_log_amount"]
    total = np.zeros(n, dtype=np.float64)
    for k in range(1, max_k + 1):
        rows = _active(order, sorted_counts, k)
        j = hi[rows] - k
        for a in aggs:
            if a.kind == "distinct":
                acc[a.name][rows] += next_same[a.column][j] >= hi[rows]
            elif a.kind == "match_count":
                r_codes, q_codes = match_codes[a.column]
                acc[a.name][rows] += r_codes[j] == q_codes[rows]
        if zs:
            total[rows] += log_amount[j]
    out.update(acc)
    if zs:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / count
        sq = np.zeros(n, dtype=np.float64)
        for k in range(1, max_k + 1):
            rows = _active(order, sorted_counts, k)
            d = log_amount[hi[rows] - k] - mean[rows]
            sq[rows] += d * d
        q_log = np.log(part["amount_cents"].to_numpy(dtype=np.float64))
        with np.errstate(invalid="ignore", divide="ignore"):
            std = np.sqrt(sq / (count - 1))
            z = (q_log - mean) / std
        ok = (count >= 2) & (std > 0) & np.isfinite(z)
        for a in zs:
            out[a.name] = np.where(ok, np.clip(z, -Z_LIMIT, Z_LIMIT), a.default)
    return out


# ---------------------------------------------------------------------------------------
# bucketed views
# ---------------------------------------------------------------------------------------

def _bucket_table(keys: np.ndarray, ts: np.ndarray, cents: np.ndarray, bucket_ms: int
                  ) -> pd.DataFrame:
    frame = pd.DataFrame({"key": keys, "bucket": ts - ts % bucket_ms, "count": 1,
                          "cents": cents})
    frame = frame[pd.notna(keys)]
    return frame.groupby(["key", "bucket"], sort=False, as_index=False).sum()


def _window_sums(table: pd.DataFrame, q_keys: np.ndarray, q_lo: np.ndarray, q_hi: np.ndarray,
                 value_columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Sum of each value column over table rows with key == q_key and q_lo <= bucket < q_hi."""
    if table.empty:
        return {c: np.zeros(len(q_keys), dtype=np.int64) for c in value_columns}
    table = table.sort_values(["key", "bucket"], ignore_index=True)
    r_codes, q_codes = _factorize(table["key"].to_numpy(), q_keys)
    b = table["bucket"].to_numpy(dtype=np.int64)
    base = int(min(b.min(), q_lo.min())) - 1
    span = int(max(b.max(), q_hi.max()) - base + 1)
    comp = r_codes * span + (b - base)
    lo = np.searchsorted(comp, q_codes * span + (q_lo - base), side="left")
    hi = np.searchsorted(comp, q_codes * span + (q_hi - base), side="left")
    out = {}
    for c in value_columns:
        cum = np.concatenate([[0], np.cumsum(table[c].to_numpy(dtype=np.int64))])
        out[c] = cum[hi] - cum[lo]
    return out


def _bucketed(view: BucketedView, part: pd.DataFrame, state: OfflineState
              ) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    t = part["event_ms"].to_numpy()
    q_keys = entity_keys(part, view.entity)
    valid = pd.notna(q_keys)
    q_keys_filled = np.where(valid, q_keys, "\x00none")
    bucket_ms = ms(view.bucket)
    fresh = _bucket_table(q_keys, t, part["amount_cents"].to_numpy(), bucket_ms)
    carry = state.buckets.get(view.name)
    table = fresh if carry is None else pd.concat([carry, fresh], ignore_index=True)
    table = table.groupby(["key", "bucket"], sort=False, as_index=False).sum()
    current = t - t % bucket_ms
    out: dict[str, np.ndarray] = {}
    for a in view.features:
        if a.window is None:
            continue
        sums = _window_sums(table, q_keys_filled, current - ms(a.window), current,
                            ("count", "cents"))
        if a.kind == "count":
            out[a.name] = sums["count"].astype(np.int64)
        elif a.kind == "sum_usd":
            out[a.name] = sums["cents"] / 100.0
        elif a.kind == "mean_usd":
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = (sums["cents"] / sums["count"]) / 100.0
            out[a.name] = np.where(sums["count"] > 0, mean, a.default)
    # the timeline needs exact times: the partition's own attempts plus carried first/last
    keys_sorted = pd.DataFrame({"key": q_keys_filled, "ts": t})[valid].sort_values(
        ["key", "ts"], kind="stable")
    r_keys = keys_sorted["key"].to_numpy()
    r_ts = keys_sorted["ts"].to_numpy(dtype=np.int64)
    r_codes, q_codes = _factorize(r_keys, q_keys_filled)
    base = int(t.min()) - 1
    span = int(t.max() - base + 1)
    comp = r_codes * span + (r_ts - base)
    tl = _timeline(r_codes, r_ts, comp, span, base, q_codes, t, q_keys_filled,
                   state.first_ms.get(view.name), state.last_ms.get(view.name))
    for a in view.features:
        if a.kind in ("seconds_since_previous", "seconds_since_first"):
            out[a.name] = _since(a, tl, t)
    _apply_ttl(out, view, valid, tl, t)
    keep_from = int(t.max()) - ms(view.horizon) - bucket_ms
    return out, table[table["bucket"] >= keep_from].reset_index(drop=True)


# ---------------------------------------------------------------------------------------
# label statistics
# ---------------------------------------------------------------------------------------

def _label_stats(part: pd.DataFrame, new_labels: pd.DataFrame, state: OfflineState
                 ) -> tuple[dict[str, np.ndarray], dict[str, pd.DataFrame]]:
    t = part["event_ms"].to_numpy()
    day = t - t % DAY_MS
    window = max(ms(v.window) for v in LABEL_RATES)
    counts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    new_state: dict[str, pd.DataFrame] = {}
    for e in LABEL_ENTITIES:
        keys = entity_keys(part, e)
        attempts = pd.DataFrame({"key": keys, "bucket": day, "n": 1, "f": 0})
        lab_keys = (np.full(len(new_labels), GLOBAL_KEY, dtype=object) if e.key is None
                    else new_labels[e.key].astype(object).to_numpy())
        lab_ms = new_labels["label_ms"].to_numpy(dtype=np.int64)
        labels = pd.DataFrame({"key": lab_keys, "bucket": lab_ms - lab_ms % DAY_MS, "n": 0,
                               "f": 1})
        pieces = [p for p in (state.label_buckets.get(e.name), attempts, labels)
                  if p is not None and len(p)]
        table = pd.concat(pieces, ignore_index=True).groupby(
            ["key", "bucket"], sort=False, as_index=False).sum()
        sums = _window_sums(table, keys, day - window, day, ("n", "f"))
        counts[e.name] = (sums["n"], sums["f"])
        new_state[e.name] = table[table["bucket"] >= int(day.max()) - window].reset_index(
            drop=True)
    out: dict[str, np.ndarray] = {}
    for view in LABEL_RATES:
        parent = None
        for e in reversed(view.chain):
            n, f = counts[e.name]
            if parent is None:
                rate = (f + view.prior_strength * view.prior) / (n + view.prior_strength)
            else:
                rate = (f + view.strength * parent) / (n + view.strength)
            out[f"{e.name}_fraud_rate_90d"] = rate
            out[f"{e.name}_attempts_90d"] = n.astype(np.int64)
            out[f"{e.name}_fraud_labels_90d"] = f.astype(np.int64)
            parent = rate
    return out, new_state


# ---------------------------------------------------------------------------------------
# request-time features and the whole vector
# ---------------------------------------------------------------------------------------

def request_columns(part: pd.DataFrame, merchant_seen_seconds: np.ndarray
                    ) -> dict[str, np.ndarray]:
    """The inputs `request_features` needs, from contract-form attempts."""
    cols = {c: part[c].astype(object).to_numpy() for c in
            ("card_country", "merchant_country", "ip_country", "billing_country",
             "shipping_country", "merchant_id", "merchant_category", "card_bin", "card_network",
             "channel", "email_domain", "currency", "region")}
    cols["event_ms"] = part["event_ms"].to_numpy()
    cols["amount_usd"] = part["amount_usd"].to_numpy()
    created = part["merchant_created_at"]
    filled = created.fillna(pd.Timestamp(0, tz="UTC")).astype("datetime64[ms, UTC]")
    cols["merchant_created_ms"] = np.where(created.notna(), filled.astype("int64"), -1)
    cols["merchant_seen_seconds"] = merchant_seen_seconds
    return cols


def compute_partition(part: pd.DataFrame, new_labels: pd.DataFrame, state: OfflineState
                      ) -> pd.DataFrame:
    """Feature vectors for one time-ordered partition; advances `state` in place.

    `part` is contract-form attempts (any order); `new_labels` are the fraud labels (from
    :func:`fraud_labels`) not yet given to earlier partitions with label_time before the
    end of this partition.
    """
    if part.empty:
        return pd.DataFrame(columns=["transaction_id", "event_time", *FEATURE_NAMES])
    part = prepare(part).sort_values(["event_ms", "transaction_id"], kind="stable",
                                     ignore_index=True)
    t_min = int(part["event_ms"].iloc[0])
    if state.max_event_ms is not None and t_min < state.max_event_ms:
        raise ValueError("partitions must be given in time order without overlap "
                         f"(partition starts at {t_min} ms, earlier ones reached "
                         f"{state.max_event_ms} ms)")
    features: dict[str, np.ndarray] = {}
    for view in ACTIVITY_VIEWS:
        out, state.history[view.name] = _activity(view, part, state)
        features.update(out)
    for view in BUCKETED_VIEWS:
        out, state.buckets[view.name] = _bucketed(view, part, state)
        features.update(out)
    out, state.label_buckets = _label_stats(part, new_labels, state)
    features.update(out)
    features.update(request_features(request_columns(part, features["merchant_seen_seconds"])))
    _advance_timelines(part, state)
    state.max_event_ms = int(part["event_ms"].iloc[-1])
    frame = pd.DataFrame({"transaction_id": part["transaction_id"].to_numpy(),
                          "event_time": part["event_time"].to_numpy()})
    vector = pd.DataFrame({name: features[name] for name in FEATURE_NAMES})
    return pd.concat([frame, vector], axis=1)


def _advance_timelines(part: pd.DataFrame, state: OfflineState) -> None:
    for view in TIMELINE_VIEWS:
        keys = entity_keys(part, view.entity)
        frame = pd.DataFrame({"key": keys, "ts": part["event_ms"].to_numpy()})
        frame = frame[pd.notna(keys)]
        agg = frame.groupby("key")["ts"].agg(["min", "max"])
        old_first = state.first_ms.get(view.name)
        if old_first is None:
            state.first_ms[view.name] = agg["min"]
            state.last_ms[view.name] = agg["max"]
        else:
            state.first_ms[view.name] = pd.concat([old_first, agg["min"]]).groupby(level=0).min()
            state.last_ms[view.name] = pd.concat(
                [state.last_ms[view.name], agg["max"]]).groupby(level=0).max()


def compute_features(attempts: pd.DataFrame, labels: pd.DataFrame | None = None
                     ) -> pd.DataFrame:
    """Point-in-time feature vectors for an in-memory table (split by UTC day internally).

    Rows come back in (event_time, transaction_id) order.
    """
    keys = attempts[["transaction_id", *[c for c in LABEL_KEY_COLUMNS]]]
    lab = fraud_labels(labels if labels is not None else _empty_labels(), keys)
    attempts = attempts.sort_values(["event_time", "transaction_id"], kind="stable")
    day = attempts["event_time"].dt.floor("D")
    return pd.concat(list(_stream(
        (g.reset_index(drop=True) for _, g in attempts.groupby(day, sort=True)), lab)),
        ignore_index=True)


def _stream(parts: Iterator[pd.DataFrame], lab: pd.DataFrame) -> Iterator[pd.DataFrame]:
    state = OfflineState()
    label_ms = lab["label_ms"].to_numpy(dtype=np.int64)
    taken = 0
    for part in parts:
        if part.empty:
            continue
        end = int(part["event_time"].astype("int64").max())
        upto = int(np.searchsorted(label_ms, end, side="right"))
        yield compute_partition(part, lab.iloc[taken:upto], state)
        taken = upto


def _empty_labels() -> pd.DataFrame:
    return pd.DataFrame({"transaction_id": pd.Series([], dtype=object),
                         "label_time": pd.Series([], dtype="datetime64[ms, UTC]"),
                         "kind": pd.Series([], dtype=object)})


def iter_features(events: str | Path, labels: str | Path | None = None
                  ) -> Iterator[pd.DataFrame]:
    """Feature vectors for a Parquet table, one time-ordered partition at a time.

    Memory is bounded by one partition plus the carried state, so this runs over tables
    larger than memory when they are date-partitioned.
    """
    from feature_views.tables import iter_attempt_partitions, read_attempt_columns, read_labels

    lab = read_labels(labels)
    if len(lab):
        keys = read_attempt_columns(events, ["transaction_id", *LABEL_KEY_COLUMNS])
        keys = keys[keys["transaction_id"].isin(set(lab["transaction_id"]))]
        for c in LABEL_KEY_COLUMNS:
            if c not in keys.columns:
                keys[c] = "unknown"
            keys[c] = keys[c].fillna("unknown")
    else:
        keys = pd.DataFrame(columns=["transaction_id", *LABEL_KEY_COLUMNS])
    yield from _stream(iter_attempt_partitions(events), fraud_labels(lab, keys))
