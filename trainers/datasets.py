"""Training sets from attempts and late labels: maturity, targets, time-ordered splits.

Confirmed fraud arrives by chargeback days to months after the attempt. An attempt without
a fraud label is only "legitimate" once it is old enough that most of its chargebacks would
have arrived. We estimate the chargeback arrival curve from the labels themselves — with a
correction for right truncation, since the latest attempts have had little time to be
reported — and train only on attempts older than the chosen maturity. The choice is stored
with the model.

Splits are by time, never random: train on the older part of the mature window, stop early
on the most recent mature days.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_views.contract import FRAUD_LABEL_KINDS, ContractError
from feature_views.definitions import FEATURE_NAMES, REQUEST_FEATURES

DAY_MS = 86_400_000
# request fields kept beside the features for policies, segments and cost evaluation
CONTEXT_COLUMNS = ("card_id", "shopper_id", "device_id")  # merchant_id, region are features
MODEL_FEATURES: tuple[str, ...] = FEATURE_NAMES
FALLBACK_FEATURES: tuple[str, ...] = tuple(r.name for r in REQUEST_FEATURES)


class DatasetError(ValueError):
    """The tables or the requested window cannot make a training set; says why."""


class ImmatureWindowWarning(UserWarning):
    """An explicit training window reaches into attempts whose labels are immature."""


@dataclasses.dataclass(frozen=True)
class Maturity:
    """The chargeback arrival curve and the age after which an attempt counts as labelled."""

    days: float
    coverage: float  # share of eventual labels arrived by `days`
    curve: dict[str, float]  # quantile of the delay distribution -> days
    labelled_attempts: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def arrival_curve(
    delays_days: np.ndarray, windows_days: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distribution of label delays, corrected for right truncation.

    A delay is only observed when it is shorter than the time the attempt has been
    observable (its window). The product-limit estimator for right-truncated data
    (Lagakos, Barraj & De Gruttola, 1988) gives F(d) = prod_{d_j > d} (1 - n_j / R_j), with
    R_j the attempts whose delay is <= d_j and whose window is >= d_j.
    Returns (distinct delays ascending, F at each).
    """
    delays = np.asarray(delays_days, dtype=np.float64)
    windows = np.asarray(windows_days, dtype=np.float64)
    values, counts = np.unique(delays, return_counts=True)
    at_most = np.searchsorted(np.sort(delays), values, side="right")
    window_short = np.searchsorted(np.sort(windows), values, side="left")
    risk = np.maximum(at_most - window_short, counts)
    # the longest delays are seen by few attempts: with fewer than 5 at risk the factor is
    # noise (often 0, which would zero the whole curve), so it is left out
    factors = np.where(risk >= 5, 1.0 - counts / risk, 1.0)
    # F(d_k) = product of factors of strictly larger delays
    tail = np.concatenate([np.cumprod(factors[::-1])[::-1][1:], [1.0]])
    return values, tail


def estimate_maturity(
    attempts: pd.DataFrame,
    labels: pd.DataFrame,
    as_of: pd.Timestamp,
    coverage: float = 0.9,
    min_days: float = 7.0,
    max_days: float = 120.0,
) -> Maturity:
    """The smallest age by which `coverage` of fraud labels have arrived (bounded)."""
    first = (
        labels[labels["kind"].isin(FRAUD_LABEL_KINDS)]
        .groupby("transaction_id")["label_time"]
        .min()
        .rename("label_time")
        .reset_index()
    )
    joined = first.merge(attempts[["transaction_id", "event_time"]], on="transaction_id")
    joined = joined[joined["label_time"] <= as_of]
    if len(joined) < 20:
        return Maturity(
            days=max_days, coverage=float("nan"), curve={}, labelled_attempts=len(joined)
        )
    delay = (joined["label_time"] - joined["event_time"]).dt.total_seconds().to_numpy() / 86_400
    window = (as_of - joined["event_time"]).dt.total_seconds().to_numpy() / 86_400
    delay = np.clip(delay, 0.0, None)
    values, cdf = arrival_curve(delay, window)
    reached = values[cdf >= coverage]
    days = float(np.clip(reached[0] if len(reached) else max_days, min_days, max_days))
    curve = {
        f"p{int(q * 100)}": round(float(values[np.searchsorted(cdf, q)]), 2)
        for q in (0.5, 0.75, 0.9, 0.95)
        if np.searchsorted(cdf, q) < len(values)
    }
    return Maturity(
        days=round(days, 2), coverage=coverage, curve=curve, labelled_attempts=len(joined)
    )


def targets(attempts: pd.DataFrame, labels: pd.DataFrame, as_of: pd.Timestamp) -> np.ndarray:
    """1 where a fraud label was known by `as_of` and not later overturned (dispute won)."""
    known = labels[labels["label_time"] <= as_of]
    fraud_time = (
        known[known["kind"].isin(FRAUD_LABEL_KINDS)].groupby("transaction_id")["label_time"].min()
    )
    won_time = known[known["kind"] == "dispute_won"].groupby("transaction_id")["label_time"].max()
    fraud = attempts["transaction_id"].map(fraud_time)
    won = attempts["transaction_id"].map(won_time)
    overturned = won.notna() & fraud.notna() & (won > fraud)
    return (fraud.notna() & ~overturned).to_numpy().astype(np.int8)


def check_labels(attempts: pd.DataFrame, labels: pd.DataFrame) -> None:
    """Labels must refer to known attempts; otherwise the tables do not belong together."""
    unknown = ~labels["transaction_id"].isin(set(attempts["transaction_id"]))
    if unknown.any():
        example = labels.loc[unknown, "transaction_id"].iloc[0]
        raise DatasetError(
            f"{int(unknown.sum())} label(s) refer to unknown transactions, "
            f"e.g. {example!r}: are the attempts and labels the same dataset?"
        )


@dataclasses.dataclass
class TrainingSet:
    """Feature vectors with targets, split by time, and how the split was chosen."""

    train: pd.DataFrame
    valid: pd.DataFrame
    as_of: pd.Timestamp
    maturity: Maturity
    window: dict[str, str]

    def describe(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            "window": self.window,
            "maturity": self.maturity.as_dict(),
            "train_rows": len(self.train),
            "train_fraud": int(self.train["is_fraud"].sum()),
            "valid_rows": len(self.valid),
            "valid_fraud": int(self.valid["is_fraud"].sum()),
        }


def _day(value: str | dt.date | None, name: str) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        return pd.Timestamp(str(value), tz="UTC").floor("D")
    except ValueError as exc:
        raise DatasetError(f"{name} must be an ISO date (YYYY-MM-DD), got {value!r}") from exc


@dataclasses.dataclass(frozen=True)
class Window:
    """The training window chosen from the tables: as-of time, maturity and split bounds."""

    as_of: pd.Timestamp
    maturity: Maturity
    start: pd.Timestamp
    valid_start: pd.Timestamp
    end: pd.Timestamp

    def bounds(self) -> dict[str, str]:
        return {
            "train_start": str(self.start.date()),
            "valid_start": str(self.valid_start.date()),
            "end": str(self.end.date()),
        }


def choose_window(
    attempts: pd.DataFrame,
    labels: pd.DataFrame,
    train_start: str | None = None,
    train_end: str | None = None,
    as_of: str | None = None,
    valid_days: int = 7,
    coverage: float = 0.9,
) -> Window:
    """Training window ending at ``as_of - maturity`` unless given; ISO days, end-exclusive.

    ``as_of`` defaults to the latest time in the tables. An explicit end later than the
    maturity cut-off warns: those attempts look legitimate only because their chargebacks
    have not arrived yet.
    """
    check_labels(attempts, labels)
    latest = max(
        attempts["event_time"].max(),
        labels["label_time"].max() if len(labels) else attempts["event_time"].max(),
    )
    now = _day(as_of, "--as-of") if as_of else latest
    maturity = estimate_maturity(attempts, labels, now, coverage=coverage)
    mature_end = (now - pd.Timedelta(days=maturity.days)).floor("D") + pd.Timedelta(days=1)
    start = _day(train_start, "--train-start") or attempts["event_time"].min().floor("D")
    end = _day(train_end, "--train-end") or mature_end
    if end <= start:
        raise DatasetError(
            f"empty training window [{start.date()}, {end.date()}) "
            f"(labels mature after {maturity.days:g} days; as of {now.date()})"
        )
    if train_end is not None and end > mature_end:
        warnings.warn(
            f"training window ends {end.date()}, after the label maturity cut-off "
            f"{mature_end.date()}: recent attempts will look legitimate only because "
            "their chargebacks have not arrived yet",
            ImmatureWindowWarning,
            stacklevel=2,
        )
    valid_start = max(end - pd.Timedelta(days=valid_days), start + (end - start) / 2).floor("D")
    return Window(now, maturity, start, valid_start, end)


def build_training_set(
    features: pd.DataFrame,
    attempts: pd.DataFrame,
    labels: pd.DataFrame,
    train_start: str | None = None,
    train_end: str | None = None,
    as_of: str | None = None,
    valid_days: int = 7,
    coverage: float = 0.9,
) -> TrainingSet:
    """Join features (offline engine output) with targets and split by time."""
    window = choose_window(attempts, labels, train_start, train_end, as_of, valid_days, coverage)
    frame = features.merge(attempts[["transaction_id", *CONTEXT_COLUMNS]], on="transaction_id")
    frame["is_fraud"] = targets(frame, labels, window.as_of)
    frame = frame[(frame["event_time"] >= window.start) & (frame["event_time"] < window.end)]
    if frame.empty:
        raise DatasetError(
            f"no attempts in the training window [{window.start.date()}, {window.end.date()})"
        )
    train = frame[frame["event_time"] < window.valid_start].reset_index(drop=True)
    valid = frame[frame["event_time"] >= window.valid_start].reset_index(drop=True)
    check_fraud_counts(train, valid)
    return TrainingSet(train, valid, window.as_of, window.maturity, window.bounds())


def check_fraud_counts(train: pd.DataFrame, valid: pd.DataFrame, minimum: int = 5) -> None:
    for name, part in (("training", train), ("validation", valid)):
        if part["is_fraud"].sum() < minimum:
            raise DatasetError(
                f"the {name} split has {int(part['is_fraud'].sum())} fraud "
                "labels; widen the window or wait for labels to mature"
            )


def served_features(log_root: str | Path) -> pd.DataFrame:
    """Feature vectors exactly as served, from the decision log (full-path decisions only).

    Decisions on rung 3 or 4 were made without the online store, so their logged vectors
    are not full vectors; those attempts keep their offline features.
    """
    from serve_graph.decision_log import iter_records

    rows = []
    for rec in iter_records(log_root):
        if rec.get("type") != "decision":
            continue
        degraded = rec.get("degraded")
        if degraded and degraded.get("rung", 1) > 2:
            continue
        row = {name: rec["features"].get(name) for name in FEATURE_NAMES}
        row["transaction_id"] = rec["transaction_id"]
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["transaction_id", *FEATURE_NAMES])
    return frame.drop_duplicates("transaction_id", keep="first")


def with_served_features(features: pd.DataFrame, served: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Offline features with every attempt that was served replaced by its logged vector."""
    if served.empty:
        return features, 0
    served = served[served["transaction_id"].isin(set(features["transaction_id"]))]
    keep = features[~features["transaction_id"].isin(set(served["transaction_id"]))]
    times = features.set_index("transaction_id")["event_time"]
    served = served.assign(event_time=served["transaction_id"].map(times).to_numpy())
    merged = pd.concat([keep, served[features.columns]], ignore_index=True)
    for name in FEATURE_NAMES:
        merged[name] = merged[name].astype(features[name].dtype)
    return merged.sort_values(["event_time", "transaction_id"], ignore_index=True), len(served)


def load_tables(events: str | Path, labels: str | Path | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Attempts and labels (empty without a path) in contract form, errors for the CLI."""
    from feature_views.tables import read_attempts, read_labels

    try:
        attempts = read_attempts(events)
        label_table = read_labels(labels)
    except (ContractError, FileNotFoundError) as exc:
        raise DatasetError(str(exc)) from exc
    if attempts.empty:
        raise DatasetError(f"{events} holds no attempts")
    return attempts, label_table
