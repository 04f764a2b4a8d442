"""Classification quality by segment, only where fraud labels have matured.

Chargebacks arrive days to months late, so a recent window looks better than it is: its
fraud is not labelled yet. The arrival curve of label delays is estimated from the labels
themselves (``trainers.datasets.arrival_curve``, corrected for right truncation); a day is
mature once ``label_coverage`` of its eventual labels are expected to have arrived, and
the report states each window's estimated label completeness.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from monitoring.config import DriftConfig, QualityConfig
from monitoring.data import MonitoringError, segment_masks
from monitoring.windows import LogWindow


@dataclass(frozen=True)
class LabelMaturity:
    """How complete the labels of a window are, as of the newest label."""

    as_of: pd.Timestamp
    days: float  # age by which `coverage` of labels arrive
    coverage: float
    curve: dict[str, float]
    labelled_attempts: int
    delays: np.ndarray
    cdf: np.ndarray

    def completeness(self, age_days: float) -> float:
        """Estimated share of eventual fraud labels arrived for attempts this old."""
        if len(self.delays) == 0:
            return 0.0
        i = np.searchsorted(self.delays, age_days, side="right") - 1
        return 0.0 if i < 0 else float(self.cdf[i])

    def mature_end(self) -> pd.Timestamp:
        return (self.as_of - pd.Timedelta(days=self.days)).floor("D")

    def as_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            "maturity_days": self.days,
            "coverage": self.coverage,
            "delay_quantiles_days": self.curve,
            "labelled_attempts": self.labelled_attempts,
        }


def label_maturity(attempts: pd.DataFrame, labels: pd.DataFrame, coverage: float) -> LabelMaturity:
    """Arrival curve from labels joined to attempt times; as of the newest label."""
    from feature_views.contract import FRAUD_LABEL_KINDS
    from trainers.datasets import arrival_curve, estimate_maturity

    if labels.empty:
        raise MonitoringError("the label table is empty: no window can be judged yet")
    as_of = labels["label_time"].max()
    maturity = estimate_maturity(attempts, labels, as_of, coverage=coverage)
    first = (
        labels[labels["kind"].isin(FRAUD_LABEL_KINDS)]
        .groupby("transaction_id")["label_time"]
        .min()
        .rename("label_time")
        .reset_index()
        .merge(attempts[["transaction_id", "event_time"]], on="transaction_id")
    )
    delays = np.clip(
        (first["label_time"] - first["event_time"]).dt.total_seconds().to_numpy() / 86_400,
        0,
        None,
    )
    window = (as_of - first["event_time"]).dt.total_seconds().to_numpy() / 86_400
    values, cdf = arrival_curve(delays, window) if len(delays) else (np.array([]), np.array([]))
    return LabelMaturity(
        as_of, maturity.days, coverage, maturity.curve, maturity.labelled_attempts, values, cdf
    )


def mature_window(maturity: LabelMaturity, days: int) -> LogWindow:
    """The latest `days` whole UTC days whose labels are mature."""
    end = maturity.mature_end()
    return LogWindow(end - pd.Timedelta(days=days), end, f"mature:{days}d")


def _metrics(y: np.ndarray, score: np.ndarray, action: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    both = 0 < y.sum() < len(y)
    flagged = action != "approve"
    blocked = action == "block"
    return {
        "attempts": int(len(y)),
        "fraud": int(y.sum()),
        "fraud_rate": round(float(y.mean()), 6) if len(y) else None,
        "pr_auc": round(float(average_precision_score(y, score)), 4) if both else None,
        "roc_auc": round(float(roc_auc_score(y, score)), 4) if both else None,
        "recall_flagged": round(float(flagged[y == 1].mean()), 4) if y.sum() else None,
        "precision_flagged": round(float(y[flagged].mean()), 4) if flagged.any() else None,
        "precision_blocked": round(float(y[blocked].mean()), 4) if blocked.any() else None,
        "flag_rate": round(float(flagged.mean()), 4) if len(y) else None,
    }


def run_quality(
    current: pd.DataFrame,
    labels: pd.DataFrame,
    window: LogWindow,
    maturity: LabelMaturity,
    config: QualityConfig,
    drift_config: DriftConfig,
    reference_pr_auc: float | None = None,
    allow_immature: bool = False,
) -> dict[str, Any]:
    """Quality per segment of decisions in `window`, with targets known by the newest label."""
    from trainers.datasets import targets

    mature_end = maturity.mature_end()
    immature = window.end > mature_end
    if immature and not allow_immature:
        raise MonitoringError(
            f"labels of {window.label()} are not mature: attempts need "
            f"{maturity.days:g} days for {maturity.coverage:.0%} of their labels, so the "
            f"latest mature day ends {mature_end.date()} (use --allow-immature to judge "
            "it anyway, flagged as such)"
        )
    scored = current[current["fraud_probability"].notna()].reset_index(drop=True)
    if scored.empty:
        raise MonitoringError(f"no scored decisions in {window.label()}")
    y = targets(scored, labels, maturity.as_of).astype(np.int64)
    scored = scored.assign(is_fraud=y)
    days = []
    for day, part in scored.groupby(scored["event_time"].dt.floor("D")):
        # the day's youngest attempts (its end, or as-of if the day is not over)
        newest = min(day + pd.Timedelta(days=1), maturity.as_of)
        age = (maturity.as_of - newest).total_seconds() / 86_400
        days.append(
            {
                "day": str(day.date()),
                "age_days": round(age, 1),
                "label_completeness": round(maturity.completeness(age), 3),
                "decisions": len(part),
                "fraud_labels": int(part["is_fraud"].sum()),
            }
        )
    completeness = min(d["label_completeness"] for d in days)
    score = scored["fraud_probability"].to_numpy(dtype=np.float64)
    action = scored["action"].to_numpy(dtype=object)
    segments = []
    alerts = []
    for name, mask in segment_masks(scored, drift_config.segments).items():
        m = _metrics(y[mask], score[mask], action[mask])
        m["scope"] = name
        m["alerts"] = []
        if m["fraud"] >= config.min_fraud and m["pr_auc"] is not None and not immature:
            if m["pr_auc"] < config.min_pr_auc:
                m["alerts"].append(f"PR-AUC {m['pr_auc']:.3f} < {config.min_pr_auc}")
            if reference_pr_auc is not None and name == "overall":
                drop = reference_pr_auc - m["pr_auc"]
                if drop > config.max_pr_auc_drop:
                    m["alerts"].append(
                        f"PR-AUC {m['pr_auc']:.3f} is {drop:.3f} below the reference's "
                        f"{reference_pr_auc:.3f} (limit {config.max_pr_auc_drop})"
                    )
        for text in m["alerts"]:
            alerts.append({"kind": "quality", "scope": name, "reasons": [text]})
        segments.append(m)
    return {
        "maturity": maturity.as_dict()
        | {
            "mature_until": str(mature_end.date()),
            "window_label_completeness": completeness,
            "immature": immature,
        },
        "days": days,
        "segments": segments,
        "reference_pr_auc": reference_pr_auc,
        "alerts": alerts,
        "scored": scored,
    }


def evidently_quality(scored: pd.DataFrame) -> Any:
    """Evidently's classification report (probabilistic, binary) for the window."""
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset

    definition = DataDefinition(
        classification=[
            BinaryClassification(
                target="is_fraud", prediction_probas="fraud_probability", pos_label=1
            )
        ],
        numerical_columns=["fraud_probability"],
        categorical_columns=["is_fraud"],
    )
    part = scored[["is_fraud", "fraud_probability"]].copy()
    data = Dataset.from_pandas(part, data_definition=definition)
    return Report([ClassificationPreset()]).run(data, None)
