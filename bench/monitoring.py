"""Drift report build time: reading the decision log, Evidently drift, the HTML.

    python -m bench.monitoring [--days 10] [--tx-per-day 10000]

A drifting marketplace (configs/simulation/drift.yaml, 8 warm-up days whose attempts only
build history, then the drift from the middle of the measured days) is featurised
by the offline engine, scored by a small CatBoost model fitted on the first days' ground
truth, decided by the champion policy and costs, and written through the real
``DecisionLog`` with the fields the serving pipeline logs (features as served, score,
action, region, event time). The report compares the first half (reference) with the
second (current): once as configured (20,000-row samples, per-day timeline), once without
sampling, once without the timeline — the same windows, one after the other.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import write
from feature_views.definitions import FEATURE_NAMES
from feature_views.offline import compute_features
from feature_views.tables import read_attempts, read_labels
from monitoring.config import load_drift
from monitoring.data import load_decisions
from monitoring.drift import run_drift
from monitoring.windows import LogWindow
from serve_graph.combiner import combine_frame
from serve_graph.decision_log import DecisionLog
from serve_graph.decisioning import load_costs
from serve_graph.policy import load_policy
from simulator.config import load_scenario
from simulator.marketplace import simulate
from trainers.datasets import CONTEXT_COLUMNS, MODEL_FEATURES
from trainers.model import train_model
from trainers.train import truth_targets

ROOT = Path(__file__).resolve().parent.parent


WARM_UP_DAYS = 8


def build_log(sim: Path, log: Path) -> tuple[int, pd.Timestamp, pd.Timestamp]:
    attempts = read_attempts(sim / "events")
    features = compute_features(attempts, read_labels(sim / "labels"))
    frame = features.merge(attempts[["transaction_id", *CONTEXT_COLUMNS]], on="transaction_id")
    frame["is_fraud"] = truth_targets(frame, sim / "truth")
    start = frame["event_time"].min().floor("D")
    fit = frame[frame["event_time"] < start + pd.Timedelta(days=3)]
    valid = frame[
        (frame["event_time"] >= start + pd.Timedelta(days=3))
        & (frame["event_time"] < start + pd.Timedelta(days=4))
    ]
    model = train_model(fit, valid, MODEL_FEATURES, {"iterations": 150})
    frame = frame[frame["event_time"] >= start + pd.Timedelta(days=WARM_UP_DAYS)]
    frame = frame.reset_index(drop=True)
    score = model.predict(frame)
    actions, hits = combine_frame(frame, score, load_policy(), load_costs())
    writer = DecisionLog(log / "us-east-bench")
    batch = []
    values = frame[list(FEATURE_NAMES)].to_dict("records")
    for i, row in enumerate(frame.itertuples(index=False)):
        feats = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in values[i].items()}
        batch.append(
            {
                "type": "decision",
                "decision_id": uuid.uuid4().hex,
                "transaction_id": row.transaction_id,
                "action": str(actions[i]),
                "fraud_probability": round(float(score[i]), 6),
                "region": "us-east",
                "degraded": None,
                "latency_ms": None,
                "input": {"event_time_ms": row.event_time.value // 1_000_000},
                "features": feats,
                "stale_views": [],
                "policy": {"override": None, "rules": hits[i]},
            }
        )
        if len(batch) == 2048:
            writer.append(batch, timeout=60)
            batch = []
    if batch:
        writer.append(batch, timeout=60)
    writer.close()
    return len(frame), start + pd.Timedelta(days=WARM_UP_DAYS), frame["event_time"].max()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--tx-per-day", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sim, log = Path(tmp) / "sim", Path(tmp) / "log"
        total = WARM_UP_DAYS + args.days
        drift_day = WARM_UP_DAYS + args.days // 2
        simulate(
            load_scenario(
                ROOT / "configs" / "simulation" / "drift.yaml",
                overrides={"drift": {"from_fraction": (drift_day + 0.5) / total}},
            ),
            days=total,
            tx_per_day=args.tx_per_day,
            seed=4,
            out=sim,
            progress=False,
        )
        t0 = time.perf_counter()
        n, start, _ = build_log(sim, log)
        build_s = time.perf_counter() - t0
        half = start + pd.Timedelta(days=args.days // 2)
        end = start + pd.Timedelta(days=args.days)
        t0 = time.perf_counter()
        reference = load_decisions(log, LogWindow(start, half, "reference"))
        history = load_decisions(log, LogWindow(start, end, "history"))
        read_s = time.perf_counter() - t0
        current = history[history["event_time"] >= half].reset_index(drop=True)
        base = load_drift()
        variants = {
            "as_configured": base,
            "no_sampling": base.model_copy(update={"sample_rows": 10_000_000}),
            "no_timeline": base.model_copy(
                update={"timeline": base.timeline.model_copy(update={"days": 0})}
            ),
        }
        runs: dict = {"drift_starts": str((start + pd.Timedelta(days=args.days // 2)).date())}
        run_drift(reference.head(500), current.head(500), base)  # imports, first-call costs
        for name, config in variants.items():
            t0 = time.perf_counter()
            result = run_drift(reference, current, config, history)
            runs[name] = {
                "seconds": round(time.perf_counter() - t0, 2),
                "breakdown_s": result.breakdown,
                "sampling": result.sampling,
                "alerts": [a["scope"] for a in result.alerts],
                "since": {k: v for k, v in result.since.items() if v},
                "overall": {
                    k: v
                    for k, v in result.scopes[0].as_dict().items()
                    if k in ("reasons", "drifted_share", "drifted_features", "prediction")
                },
                "overall_drifting_days": [
                    p["day"] for p in result.timeline.get("overall", []) if p["drifting"]
                ],
            }
    write(
        "monitoring",
        {
            "decisions_in_log": n,
            "reference_rows": len(reference),
            "current_rows": len(current),
            "monitored_features": len(base.features),
            "scopes": len(result.scopes),
            "log_write_and_features_s": round(build_s, 1),
            "read_log_s": round(read_s, 1),
            "drift": runs,
        },
        "bench.monitoring",
    )


if __name__ == "__main__":
    main()
