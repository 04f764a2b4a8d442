"""Bulk-load the online store from offline history (``checkout-risk materialize``).

Uses the same write script as live serving — so a materialised store is exactly what
replaying the history one attempt at a time would have produced — but sends thousands of
updates per round trip. Attempts stream one partition at a time in time order; the
fraud labels known by the end of each partition follow it. Re-running is harmless: the
per-transaction guards make every write idempotent.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_views.offline import prepare, table_fraud_labels
from feature_views.online import OnlineFeatureStore, Update
from feature_views.store import connect
from feature_views.tables import count_attempts, iter_attempt_partitions, read_labels

BATCH = 2_000


def load_frames(
    store: OnlineFeatureStore,
    parts: Any,
    labels: pd.DataFrame,
    progress: bool = False,
    total: int | None = None,
) -> dict[str, Any]:
    """Write attempt partitions and the fraud labels in `labels` (from `fraud_labels`)."""
    from tqdm import tqdm

    started = time.perf_counter()
    label_ms = labels["label_ms"].to_numpy(dtype=np.int64) if len(labels) else np.array([])
    label_rows = labels.to_dict("records")
    taken = 0
    attempts = applied = entity_updates = labels_applied = 0
    bar = tqdm(total=total, desc="materialising", unit="attempt", disable=not progress)
    for part in parts:
        if part.empty:
            continue
        ops: list[Update] = []
        for rec in prepare(part).to_dict("records"):
            keys, argv = store.write_ops(rec)
            ops.append((keys, argv))
            entity_updates += len(keys) - 1
            if len(ops) >= BATCH:
                applied += sum(store.apply(ops))
                ops = []
        if ops:
            applied += sum(store.apply(ops))
        attempts += len(part)
        bar.update(len(part))
        end = int(part["event_time"].astype("int64").max())
        upto = int(np.searchsorted(label_ms, end, side="right")) if len(label_ms) else 0
        label_ops = [
            store.label_ops(r["transaction_id"], int(r["label_ms"]), r)
            for r in label_rows[taken:upto]
        ]
        for i in range(0, len(label_ops), BATCH):
            labels_applied += sum(store.apply(label_ops[i : i + BATCH]))
        entity_updates += sum(len(k) - 1 for k, _ in label_ops)
        taken = upto
    bar.close()
    seconds = time.perf_counter() - started
    return {
        "attempts": attempts,
        "attempts_applied": applied,
        "duplicates_skipped": attempts - applied,
        "fraud_labels_applied": labels_applied,
        "entity_updates": entity_updates,
        "seconds": round(seconds, 3),
        "entity_updates_per_s": round(entity_updates / max(seconds, 1e-9)),
        "namespace": store.ns,
    }


def materialize(
    events: str | Path,
    labels: str | Path | None,
    namespace: str = "cr",
    url: str | None = None,
    flush: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Load every attempt and fraud label of a table into the store namespace."""
    store = OnlineFeatureStore(connect(url, timeout_s=30.0), namespace=namespace)
    if flush:
        store.flush_namespace()
    fraud = table_fraud_labels(events, read_labels(labels))
    result = load_frames(
        store,
        iter_attempt_partitions(events),
        fraud,
        progress=progress,
        total=count_attempts(events),
    )
    result["labels_for_unknown_transactions"] = int(fraud.attrs.get("unknown_transactions", 0))
    return result
