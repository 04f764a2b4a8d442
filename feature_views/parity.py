"""Training-serving parity: replay attempts through Redis and compare with the offline engine.

Attempts are replayed one at a time in event-time order, exactly as serving sees them: the
fraud labels known by then are applied, the vector is read online (one round trip), then
the attempt is written. Every feature must equal the offline engine's value for the same
attempt — integers and strings exactly, floats within 1e-9 relative.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_views.definitions import FEATURE_BY_NAME, FEATURE_NAMES
from feature_views.offline import LABEL_KEY_COLUMNS, compute_features, fraud_labels, prepare
from feature_views.online import OnlineFeatureStore
from feature_views.store import connect

REL_TOL = 1e-9
ABS_TOL = 1e-12


@dataclass
class ParityReport:
    """Per-feature mismatch counts with a few examples each."""

    attempts: int
    labels_applied: int
    mismatches: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[tuple[str, Any, Any]]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not any(self.mismatches.values())

    def render(self) -> str:
        lines = [
            f"parity: {self.attempts:,} attempts replayed through Redis, "
            f"{self.labels_applied:,} fraud labels applied, {len(FEATURE_NAMES)} features "
            f"compared ({self.seconds:.1f} s)"
        ]
        bad = {k: v for k, v in self.mismatches.items() if v}
        if not bad:
            lines.append("all features agree (ints/strings exactly, floats within 1e-9 rel)")
            return "\n".join(lines)
        lines.append(f"{'feature':<36} mismatches  example (transaction, offline, online)")
        for name, count in sorted(bad.items(), key=lambda kv: -kv[1]):
            ex = self.examples[name][0]
            lines.append(f"{name:<36} {count:>10}  {ex[0]}: {ex[1]!r} vs {ex[2]!r}")
        return "\n".join(lines)


def values_equal(name: str, offline: Any, online: Any) -> bool:
    """The parity rule for one feature value."""
    dtype = FEATURE_BY_NAME[name].dtype
    if dtype == "category":
        return str(offline) == str(online)
    if dtype == "int":
        return int(offline) == int(online)
    return math.isclose(float(offline), float(online), rel_tol=REL_TOL, abs_tol=ABS_TOL)


def replay_and_compare(
    attempts: pd.DataFrame, labels: pd.DataFrame, store: OnlineFeatureStore, progress: bool = False
) -> ParityReport:
    """Replay contract-form `attempts` through `store` (an empty namespace) and compare."""
    import time

    from tqdm import tqdm

    t0 = time.perf_counter()
    attempts = attempts.sort_values(
        ["event_time", "transaction_id"], kind="stable", ignore_index=True
    )
    offline = compute_features(attempts, labels).set_index("transaction_id")
    keys = attempts[["transaction_id", *LABEL_KEY_COLUMNS]]
    lab = fraud_labels(labels, keys)
    lab_ms = lab["label_ms"].to_numpy(dtype=np.int64)
    lab_rows = lab.to_dict("records")
    records = prepare(attempts).to_dict("records")
    report = ParityReport(
        attempts=len(records), labels_applied=0, mismatches={n: 0 for n in FEATURE_NAMES}
    )
    next_label = 0
    for rec in tqdm(records, desc="replaying", unit="attempt", disable=not progress):
        t = int(rec["event_ms"])
        upto = int(np.searchsorted(lab_ms, t, side="right"))
        for row in lab_rows[next_label:upto]:
            store.apply_fraud_label(row["transaction_id"], int(row["label_ms"]), row)
            report.labels_applied += 1
        next_label = upto
        online = store.read(rec).values
        expected = offline.loc[rec["transaction_id"]]
        for name in FEATURE_NAMES:
            if not values_equal(name, expected[name], online[name]):
                report.mismatches[name] += 1
                report.examples.setdefault(name, []).append(
                    (rec["transaction_id"], expected[name], online[name])
                )
        store.write(rec)
    report.seconds = time.perf_counter() - t0
    return report


def run_parity(
    events: str | Path, labels: str | Path | None, limit: int | None = None, progress: bool = True
) -> ParityReport:
    """`checkout-risk parity`: replay a table (first `limit` attempts) in a scratch namespace."""
    from feature_views.tables import read_attempts, read_labels

    attempts = read_attempts(events)
    if limit is not None:
        attempts = attempts.iloc[:limit]
    store = OnlineFeatureStore(connect(timeout_s=5.0), namespace=f"parity-{uuid.uuid4().hex[:8]}")
    try:
        return replay_and_compare(attempts, read_labels(labels), store, progress=progress)
    finally:
        store.flush_namespace()
