"""Training without a cluster: ``checkout-risk train``, ``score-batch`` and ``evaluate``.

The same steps run inside the Ray job (``trainers/retrain.py``): point-in-time features for
the whole history given (``feature_views.offline``), a matured, time-split training set
(``trainers.datasets``), the CatBoost champion candidate plus a request-only fallback model
(``trainers.model``), and a registry version (``trainers.registry``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_views.definitions import CATEGORICAL_FEATURES, feature_versions
from feature_views.offline import compute_features, prepare, request_columns
from feature_views.request_features import request_features
from serve_graph.combiner import combine_frame
from serve_graph.decisioning import Costs, load_costs
from serve_graph.policy import Policy, load_policy
from trainers.datasets import (
    CONTEXT_COLUMNS,
    FALLBACK_FEATURES,
    MODEL_FEATURES,
    DatasetError,
    TrainingSet,
    build_training_set,
    load_tables,
    served_features,
    targets,
    with_served_features,
)
from trainers.evaluate import evaluate_scores
from trainers.model import FraudModel, train_model
from trainers.registry import code_hash, write_version


def fallback_frame(frame: pd.DataFrame, attempts: pd.DataFrame) -> pd.DataFrame:
    """Request-only features exactly as serving computes them with the store down.

    Without the online store the merchant's first-seen age is unknown, so merchant age
    comes from ``merchant_created_at`` alone.
    """
    rows = prepare(attempts.set_index("transaction_id").loc[frame["transaction_id"]].reset_index())
    out = request_features(request_columns(rows, np.full(len(rows), -1.0)))
    result = pd.DataFrame(out)
    for c in ("transaction_id", "event_time", "is_fraud"):
        if c in frame.columns:
            result[c] = frame[c].to_numpy()
    return result


REFERENCE_ROWS = 20_000


def reference_sample(
    frame: pd.DataFrame,
    model: FraudModel,
    policy: Policy | None = None,
    costs: Costs | None = None,
    rows: int = REFERENCE_ROWS,
    seed: int = 0,
) -> pd.DataFrame:
    """A bounded uniform sample of the training rows with the model's score and action.

    Stored with the model version as the drift reference: features as trained on, plus
    what the model (with the champion rules) would decide, so prediction drift and
    action-rate guardrails have a baseline. Bounded so a 9B-row history still stores MBs.
    """
    picked = frame.sample(n=rows, random_state=seed) if len(frame) > rows else frame
    picked = picked.sort_values("event_time").reset_index(drop=True)
    score = model.predict(picked)
    actions, _ = combine_frame(picked, score, policy or load_policy(), costs or load_costs())
    keep = [c for c in ("transaction_id", "event_time", "is_fraud") if c in picked.columns]
    out = picked[[*keep, *MODEL_FEATURES]].copy()
    out["fraud_probability"] = score
    out["action"] = np.asarray(actions, dtype=object)
    return out


def data_hash(ts: TrainingSet) -> str:
    digest = hashlib.sha256()
    for part in (ts.train, ts.valid):
        digest.update(
            pd.util.hash_pandas_object(part[["transaction_id", "is_fraud"]], index=False)
            .to_numpy()
            .tobytes()
        )
    return digest.hexdigest()


def fit_models(
    ts: TrainingSet, attempts: pd.DataFrame, params: dict[str, Any] | None, thread_count: int = -1
) -> tuple[FraudModel, FraudModel]:
    """The main model on every feature and the fallback on request-only features."""
    model = train_model(ts.train, ts.valid, MODEL_FEATURES, params, thread_count)
    fallback = train_model(
        fallback_frame(ts.train, attempts),
        fallback_frame(ts.valid, attempts),
        FALLBACK_FEATURES,
        params,
        thread_count,
    )
    return model, fallback


def metadata_for(
    ts: TrainingSet,
    model: FraudModel,
    fallback: FraudModel,
    valid_report: dict[str, Any],
    fallback_report: dict[str, Any],
    params: dict[str, Any] | None,
    trained_with: str,
    timings: dict[str, float],
) -> dict[str, Any]:
    def headline(report: dict[str, Any]) -> dict[str, Any]:
        o = report["overall"]
        return {
            k: o[k]
            for k in (
                "attempts",
                "fraud",
                "pr_auc",
                "roc_auc",
                "recall_at_1pct_decline",
                "cost_per_1000",
            )
        }

    return {
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "trained_with": trained_with,
        "features": list(model.features),
        "categorical_features": [f for f in model.features if f in CATEGORICAL_FEATURES],
        "feature_view_versions": feature_versions(),
        "calibration": vars(model.calibration),
        "best_iteration": int(model.booster.get_best_iteration() or 0),
        "params": params or {},
        "fallback": {
            "features": list(fallback.features),
            "calibration": vars(fallback.calibration),
            "validation": headline(fallback_report),
        },
        "training": ts.describe(),
        "validation": headline(valid_report),
        "data_sha256": data_hash(ts),
        "code": code_hash(),
        "timings_s": timings,
    }


def train(
    events: str | Path,
    labels: str | Path,
    model_out: str | Path,
    train_start: str | None = None,
    train_end: str | None = None,
    as_of: str | None = None,
    params: dict[str, Any] | None = None,
    policy: Policy | None = None,
    costs: Costs | None = None,
    decision_log: str | Path | None = None,
) -> dict[str, Any]:
    """`checkout-risk train`: train and write one registry version to `model_out`.

    With `decision_log`, attempts that were served use the feature vectors logged at
    decision time (no training-serving skew); the rest use the offline engine.
    """
    out = Path(model_out)
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out} already exists: model versions are immutable")
    timings: dict[str, float] = {}
    started = time.perf_counter()
    attempts, label_table = load_tables(events, labels)
    features = compute_features(attempts, label_table)
    served = 0
    if decision_log is not None:
        features, served = with_served_features(features, served_features(decision_log))
    timings["features"] = round(time.perf_counter() - started, 2)
    ts = build_training_set(features, attempts, label_table, train_start, train_end, as_of)
    t0 = time.perf_counter()
    model, fallback = fit_models(ts, attempts, params)
    timings["fit"] = round(time.perf_counter() - t0, 2)
    policy, costs = policy or load_policy(), costs or load_costs()
    valid_report = evaluate_scores(
        ts.valid, model.predict(ts.valid), ts.valid["is_fraud"], policy, costs
    )
    fallback_report = evaluate_scores(
        ts.valid,
        fallback.predict(fallback_frame(ts.valid, attempts)),
        ts.valid["is_fraud"],
        policy,
        costs,
    )
    meta = metadata_for(
        ts, model, fallback, valid_report, fallback_report, params, "local", timings
    )
    meta["features_as_served"] = served
    reference = reference_sample(
        pd.concat([ts.train, ts.valid], ignore_index=True), model, policy, costs
    )
    write_version(out, model, fallback, meta, reference)
    rows = len(ts.train) + len(ts.valid)
    return {
        "version": out.name,
        "path": str(out),
        **ts.describe(),
        "validation": meta["validation"],
        "timings_s": timings,
        "rows_per_s_fit": round(rows / max(timings["fit"], 1e-9)),
    }


# ---------------------------------------------------------------------------------------
# scoring and evaluation of any window
# ---------------------------------------------------------------------------------------


def _window(frame: pd.DataFrame, start: str, end: str) -> pd.DataFrame:
    try:
        lo, hi = pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC")
    except ValueError as exc:
        raise DatasetError(f"--start/--end must be ISO dates: {exc}") from exc
    if hi <= lo:
        raise DatasetError(f"empty window [{start}, {end})")
    selected = frame[(frame["event_time"] >= lo) & (frame["event_time"] < hi)]
    if selected.empty:
        raise DatasetError(f"no attempts in the window [{start}, {end})")
    return selected.reset_index(drop=True)


def window_features(
    events: str | Path, labels: str | Path | None, start: str, end: str
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Point-in-time features over the whole history, restricted to [start, end)."""
    attempts, label_table = load_tables(events, labels)
    features = compute_features(attempts, label_table)
    frame = features.merge(attempts[["transaction_id", *CONTEXT_COLUMNS]], on="transaction_id")
    return _window(frame, start, end), attempts, label_table


def score_batch(
    model_dir: str | Path,
    events: str | Path,
    labels: str | Path | None,
    start: str,
    end: str,
    out: str | Path,
) -> dict[str, Any]:
    """`checkout-risk score-batch`: transaction_id, score (p(fraud)), action per attempt."""
    from trainers.registry import load_version

    version = load_version(model_dir)
    frame, _, _ = window_features(events, labels, start, end)
    score = version.model.predict(frame)
    actions, hits = combine_frame(frame, score, load_policy(), load_costs())
    result = pd.DataFrame(
        {
            "transaction_id": frame["transaction_id"],
            "score": score,
            "action": actions,
            "policy_rules": [",".join(h) for h in hits],
            "model_version": version.version,
        }
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    result.to_parquet(tmp, index=False)
    tmp.replace(out)
    counts = result["action"].value_counts().to_dict()
    return {
        "scored": len(result),
        "out": str(out),
        "model_version": version.version,
        "actions": {k: int(v) for k, v in counts.items()},
    }


def truth_targets(frame: pd.DataFrame, truth: str | Path) -> np.ndarray:
    """Ground truth from a simulator's truth table (complete: no label delay)."""
    import pyarrow.dataset as ds

    table = (
        ds.dataset(truth, format="parquet", partitioning="hive")
        .to_table(columns=["transaction_id", "is_fraud"])
        .to_pandas()
    )
    mapped = frame["transaction_id"].map(table.set_index("transaction_id")["is_fraud"])
    if mapped.isna().any():
        raise DatasetError(f"{int(mapped.isna().sum())} attempts have no ground truth in {truth}")
    return mapped.astype(int).to_numpy()


def evaluate_model(
    model_dir: str | Path,
    events: str | Path,
    labels: str | Path,
    start: str,
    end: str,
    truth: str | Path | None = None,
    fallback: bool = False,
) -> tuple[dict[str, Any], str]:
    """Evaluation report of a registry version on [start, end); returns (report, version)."""
    from trainers.registry import load_version

    version = load_version(model_dir)
    frame, attempts, label_table = window_features(events, labels, start, end)
    if truth is not None:
        y = truth_targets(frame, truth)
        target_source = f"ground truth ({truth})"
    else:
        as_of = label_table["label_time"].max() if len(label_table) else frame["event_time"].max()
        y = targets(frame, label_table, as_of)
        target_source = f"labels known by {as_of}"
    model = version.fallback if fallback else version.model
    scored = fallback_frame(frame, attempts) if fallback else frame
    report = evaluate_scores(frame, model.predict(scored), y, load_policy(), load_costs())
    report["model_version"] = version.version + (" (fallback)" if fallback else "")
    report["window"] = {"start": start, "end": end, "targets": target_source}
    return report, version.version
