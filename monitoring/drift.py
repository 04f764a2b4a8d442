"""Feature and prediction drift with Evidently: overall, per segment, and per day.

Each scope (overall, each region, cross-border, young merchants) compares the current
window's decisions with the reference: one Evidently ``ValueDrift`` per monitored feature,
plus the champion's score and its action mix. A scope alerts when the share of drifted
features passes its threshold, when a critical feature drifts, or when the prediction
does (``configs/monitoring/drift.yaml``).

Scores come from Evidently's drift tests called directly (the functions its ``ValueDrift``
metric uses): a ``Report`` also renders a Plotly figure per column, three quarters of its
time, so full Reports run only for the scopes whose pages are written (overall and every
alerting scope), and their scores are the same numbers.

Only decisions made on the full feature vector (rungs 1 and 2) enter: on rungs 3 and 4
the store or the scorer was down, which the guardrail report covers.

To say *since when*, the same comparison runs per UTC day for the days before the
window's end (a smaller sample per day); a scope has drifted since the first day of its
latest unbroken run of drifting days.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from feature_views.definitions import CATEGORICAL_FEATURES
from monitoring.config import DriftConfig
from monitoring.data import sample, segment_masks

ACTIONS = ("approve", "step_up", "block")


@dataclass
class ScopeDrift:
    """Drift of one scope (overall or a segment) between reference and current."""

    scope: str
    reference_rows: int
    current_rows: int
    columns: dict[str, dict[str, Any]] = field(default_factory=dict)
    score: dict[str, Any] | None = None
    actions: dict[str, Any] | None = None
    action_rates: dict[str, dict[str, float]] = field(default_factory=dict)
    eligible: bool = True
    reasons: list[str] = field(default_factory=list)
    snapshot: Any = None

    @property
    def drifted(self) -> list[str]:
        """Drifted features, most drifted first (distance over threshold)."""
        hits = [(c, v["score"] / v["threshold"]) for c, v in self.columns.items() if v["drifted"]]
        return [c for c, _ in sorted(hits, key=lambda x: -x[1])]

    @property
    def drifted_share(self) -> float:
        return len(self.drifted) / max(len(self.columns), 1)

    @property
    def alert(self) -> bool:
        return self.eligible and bool(self.reasons)

    def as_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "rows": {"reference": self.reference_rows, "current": self.current_rows},
            "eligible": self.eligible,
            "alert": self.alert,
            "reasons": self.reasons,
            "drifted_share": round(self.drifted_share, 4),
            "drifted_features": self.drifted,
            "columns": self.columns,
            "prediction": {"score": self.score, "actions": self.actions},
            "action_rates": self.action_rates,
        }


def _numeric(columns: list[str]) -> list[str]:
    return [c for c in columns if c not in CATEGORICAL_FEATURES]


def _categorical(columns: list[str]) -> list[str]:
    return [c for c in columns if c in CATEGORICAL_FEATURES]


def _usable(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str]) -> list[str]:
    """Columns Evidently can compare: present, and not empty on either side."""
    return [
        c
        for c in columns
        if c in reference.columns
        and c in current.columns
        and reference[c].notna().any()
        and current[c].notna().any()
    ]


def evidently_drift(
    reference: pd.DataFrame, current: pd.DataFrame, config: DriftConfig, with_prediction: bool
) -> tuple[dict[str, dict[str, Any]], Any]:
    """Per-column drift as one Evidently report (for its HTML); returns (columns, snapshot)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    specs = _specs(reference, current, config, with_prediction)
    numeric = [c for c, kind, _, _ in specs if kind == "num"]
    categorical = [c for c, kind, _, _ in specs if kind == "cat"]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    metrics = [ValueDrift(column=c, method=m, threshold=t) for c, _, m, t in specs]

    def dataset(frame: pd.DataFrame) -> Any:
        part = frame[numeric + categorical].copy()
        for c in categorical:
            part[c] = part[c].astype(str)
        return Dataset.from_pandas(part, data_definition=definition)

    snapshot = Report(metrics).run(dataset(current), dataset(reference))
    out: dict[str, dict[str, Any]] = {}
    for metric in snapshot.dict()["metrics"]:
        cfg = metric["config"]
        value = metric["value"]
        score = float(value) if value is not None and np.isfinite(value) else 0.0
        out[cfg["column"]] = {
            "score": round(score, 5),
            "threshold": cfg["threshold"],
            "method": cfg["method"],
            "drifted": score >= cfg["threshold"],
        }
    return out, snapshot


def _specs(
    reference: pd.DataFrame, current: pd.DataFrame, config: DriftConfig, with_prediction: bool
) -> list[tuple[str, str, str, float]]:
    """(column, kind, method, threshold) for every column compared."""
    features = _usable(reference, current, config.features)
    specs = [(c, "num", config.num_method, config.num_threshold) for c in _numeric(features)]
    specs += [(c, "cat", config.cat_method, config.cat_threshold) for c in _categorical(features)]
    if with_prediction:
        for c in _usable(reference, current, ["fraud_probability"]):
            specs.append((c, "num", config.num_method, config.prediction.score_threshold))
        for c in _usable(reference, current, ["action"]):
            specs.append((c, "cat", "jensenshannon", config.prediction.action_threshold))
    return specs


def drift_scores(
    reference: pd.DataFrame, current: pd.DataFrame, config: DriftConfig, with_prediction: bool
) -> dict[str, dict[str, Any]]:
    """Per-column drift with Evidently's drift tests, without rendering figures."""
    from evidently.legacy.calculations.stattests import get_stattest
    from evidently.legacy.core import ColumnType

    out: dict[str, dict[str, Any]] = {}
    for column, kind, method, threshold in _specs(reference, current, config, with_prediction):
        ref, cur = reference[column].dropna(), current[column].dropna()
        if kind == "cat":
            ref, cur = ref.astype(str), cur.astype(str)
        ctype = ColumnType.Numerical if kind == "num" else ColumnType.Categorical
        test = get_stattest(ref, cur, ctype, method)
        result = test(ref, cur, ctype, threshold)
        score = float(result.drift_score) if np.isfinite(result.drift_score) else 0.0
        out[column] = {
            "score": round(score, 5),
            "threshold": threshold,
            "method": test.display_name,
            "drifted": score >= threshold,
        }
    return out


def _rates(frame: pd.DataFrame) -> dict[str, float]:
    counts = frame["action"].value_counts(normalize=True)
    return {a: round(float(counts.get(a, 0.0)), 5) for a in ACTIONS}


def scope_drift(
    scope: str, reference: pd.DataFrame, current: pd.DataFrame, config: DriftConfig
) -> ScopeDrift:
    result = ScopeDrift(scope, len(reference), len(current))
    result.eligible = min(len(reference), len(current)) >= config.alerts.min_rows
    if min(len(reference), len(current)) < 2:
        result.eligible = False
        return result
    columns = drift_scores(reference, current, config, True)
    result.score = columns.pop("fraud_probability", None)
    result.actions = columns.pop("action", None)
    result.columns = columns
    result.action_rates = {"reference": _rates(reference), "current": _rates(current)}
    if result.drifted_share >= config.alerts.drifted_share:
        top = ", ".join(result.drifted[:5])
        result.reasons.append(
            f"{len(result.drifted)}/{len(columns)} features drifted "
            f"({result.drifted_share:.0%} >= {config.alerts.drifted_share:.0%}): {top}"
        )
    critical = [c for c in result.drifted if c in config.alerts.critical_features]
    if critical:
        result.reasons.append(
            "critical feature(s) drifted: "
            + ", ".join(f"{c} {columns[c]['score']:.3f}" for c in critical)
        )
    if config.alerts.prediction:
        if result.score and result.score["drifted"]:
            result.reasons.append(
                f"score drift {result.score['score']:.3f} >= {result.score['threshold']}"
            )
        if result.actions and result.actions["drifted"]:
            ref, cur = result.action_rates["reference"], result.action_rates["current"]
            mix = ", ".join(f"{a} {ref[a]:.1%}->{cur[a]:.1%}" for a in ACTIONS)
            result.reasons.append(
                f"action mix drift {result.actions['score']:.3f} >= "
                f"{result.actions['threshold']} ({mix})"
            )
    return result


def full_path(frame: pd.DataFrame) -> pd.DataFrame:
    """Decisions made on full feature vectors (rungs 1–2); references have no rung."""
    if "rung" not in frame.columns:
        return frame
    return frame[(frame["rung"] <= 2) & frame["fraud_probability"].notna()].reset_index(drop=True)


@dataclass
class DriftResult:
    scopes: list[ScopeDrift]
    timeline: dict[str, list[dict[str, Any]]]
    since: dict[str, str | None]
    sampling: dict[str, str]
    seconds: float
    breakdown: dict[str, float] = field(default_factory=dict)

    @property
    def alerts(self) -> list[dict[str, Any]]:
        out = []
        for s in self.scopes:
            if s.alert:
                out.append(
                    {
                        "kind": "drift",
                        "scope": s.scope,
                        "since": self.since.get(s.scope),
                        "drifted_features": s.drifted,
                        "reasons": s.reasons,
                    }
                )
        return out


def run_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    config: DriftConfig,
    history: pd.DataFrame | None = None,
) -> DriftResult:
    """All scopes for the window; `history` (decisions before and in it) feeds the timeline."""
    started = time.perf_counter()
    reference, current = full_path(reference), full_path(current)
    ref_sample, ref_how = sample(reference, config.sample_rows, config.seed)
    cur_sample, cur_how = sample(current, config.sample_rows, config.seed)
    ref_masks = segment_masks(ref_sample, config.segments)
    cur_masks = segment_masks(cur_sample, config.segments)
    seconds: dict[str, float] = {}
    tick = time.perf_counter()
    scopes = []
    for name, mask in cur_masks.items():
        ref_mask = ref_masks.get(name, np.zeros(len(ref_sample), dtype=bool))
        scopes.append(scope_drift(name, ref_sample[ref_mask], cur_sample[mask], config))
    seconds["scores"] = round(time.perf_counter() - tick, 2)
    tick = time.perf_counter()
    for scope in scopes:
        if scope.scope == "overall" or scope.alert:
            mask, ref_mask = cur_masks[scope.scope], ref_masks.get(scope.scope)
            if ref_mask is not None and mask.sum() >= 2 and ref_mask.sum() >= 2:
                _, scope.snapshot = evidently_drift(
                    ref_sample[ref_mask], cur_sample[mask], config, True
                )
    seconds["evidently_pages"] = round(time.perf_counter() - tick, 2)
    tick = time.perf_counter()
    timeline: dict[str, list[dict[str, Any]]] = {}
    since: dict[str, str | None] = {}
    if history is not None and config.timeline.days > 0:
        timeline, since = _timeline(ref_sample, full_path(history), scopes, config)
    seconds["timeline"] = round(time.perf_counter() - tick, 2)
    return DriftResult(
        scopes,
        timeline,
        since,
        {"reference": ref_how, "current": cur_how, "timeline": _timeline_how(config)},
        round(time.perf_counter() - started, 2),
        seconds,
    )


def _timeline_how(config: DriftConfig) -> str:
    return (
        f"per UTC day, at most {config.timeline.sample_rows:,} decisions per day "
        f"(uniform, seed {config.seed}) against the reference sample"
    )


def _timeline(
    reference: pd.DataFrame,
    history: pd.DataFrame,
    scopes: list[ScopeDrift],
    config: DriftConfig,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str | None]]:
    """Per-day drift for the overall scope and every alerting segment.

    Each day watches what drifted over the whole window (its most drifted features and
    the score), so the timeline says when *this* drift began; a day is drifting when the
    score drifted, a watched critical feature did, or at least half of the watched ones.
    """
    wanted = {s.scope: s for s in scopes if s.scope == "overall" or s.alert}
    ref = reference  # the whole reference sample: per-day noise comes from one side only
    ref_masks = segment_masks(ref, config.segments)
    days = history["event_time"].dt.floor("D")
    last = days.max()
    first = max(days.min(), last - pd.Timedelta(days=config.timeline.days - 1))
    timeline: dict[str, list[dict[str, Any]]] = {name: [] for name in wanted}
    for day in pd.date_range(first, last, freq="D"):
        part = history[days == day]
        if part.empty:
            continue
        part, _ = sample(part, config.timeline.sample_rows, config.seed)
        masks = segment_masks(part, config.segments)
        for name, whole in wanted.items():
            mask, ref_mask = masks.get(name), ref_masks.get(name)
            if mask is None or ref_mask is None or mask.sum() < 2 or ref_mask.sum() < 2:
                continue
            watched = whole.drifted[:5] or list(whole.columns)[:5]
            narrow = config.model_copy(update={"features": watched})
            result = scope_drift(name, ref[ref_mask], part[mask], narrow)
            score_drifted = bool(result.score and result.score["drifted"])
            timeline[name].append(
                {
                    "day": str(day.date()),
                    "rows": int(mask.sum()),
                    "watched": watched,
                    "drifted_share": round(result.drifted_share, 4),
                    "score_drift": None if result.score is None else result.score["score"],
                    "drifting": (
                        result.drifted_share >= 0.5
                        or score_drifted
                        or any(c in config.alerts.critical_features for c in result.drifted)
                    )
                    and int(mask.sum()) >= config.timeline.min_rows,
                    "top_features": result.drifted[:3],
                }
            )
    since = {}
    for name, points in timeline.items():
        start = None
        for point in reversed(points):
            if not point["drifting"]:
                break
            start = point["day"]
        since[name] = start
    return timeline, since
