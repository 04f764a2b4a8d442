"""Training sets: label maturity from the arrival curve, targets as known, time splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feature_views.contract import normalize_attempts, normalize_labels
from trainers.datasets import (
    DatasetError,
    ImmatureWindowWarning,
    arrival_curve,
    build_training_set,
    choose_window,
    targets,
)


def test_arrival_curve_corrects_for_right_truncation() -> None:
    rng = np.random.default_rng(1)
    n = 20_000
    delay = rng.lognormal(np.log(14), 0.9, n)
    window = rng.uniform(0, 150, n)  # how long each attempt has been observable
    seen = delay <= window  # recent attempts' long delays are not seen yet
    values, cdf = arrival_curve(delay[seen], window[seen])
    median = values[np.searchsorted(cdf, 0.5)]
    naive = np.median(delay[seen])
    assert abs(median - 14) < 1.5  # corrected estimate near the truth
    assert naive < median - 1  # the naive one is biased short


def _tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    rows = [
        {
            "transaction_id": f"t{i}",
            "event_time": t0 + pd.Timedelta(hours=3 * i),
            "card_id": f"c{i % 50}",
            "merchant_id": "m1",
            "amount": 10.0,
        }
        for i in range(800)
    ]
    attempts = normalize_attempts(pd.DataFrame(rows))
    labels = normalize_labels(
        pd.DataFrame(
            [
                {
                    "transaction_id": f"t{i}",
                    "label_time": t0 + pd.Timedelta(hours=3 * i, days=10),
                    "kind": "chargeback",
                }
                for i in range(0, 800, 5)
            ]
            + [
                {
                    "transaction_id": "t5",
                    "label_time": t0 + pd.Timedelta(days=30),
                    "kind": "dispute_won",
                }
            ]
        )
    )
    return attempts, labels


def test_targets_use_only_labels_known_by_as_of_and_overturned_disputes() -> None:
    attempts, labels = _tables()
    early = targets(attempts, labels, pd.Timestamp("2026-01-12", tz="UTC"))
    late = targets(attempts, labels, pd.Timestamp("2026-04-01", tz="UTC"))
    assert early.sum() < late.sum()
    assert early[0] == 1 and late[0] == 1
    assert late[5] == 0  # chargeback, then the merchant won the dispute


def test_window_ends_at_maturity_and_splits_by_time() -> None:
    attempts, labels = _tables()
    window = choose_window(attempts, labels)
    assert 7 <= window.maturity.days <= 120
    assert window.end <= window.as_of - pd.Timedelta(days=window.maturity.days) + pd.Timedelta(
        days=1
    )
    assert window.start < window.valid_start < window.end
    features = attempts[["transaction_id", "event_time"]].copy()
    features["card_id"] = attempts["card_id"]
    ts = build_training_set(features.drop(columns="card_id"), attempts, labels)
    assert ts.train["event_time"].max() < ts.valid["event_time"].min()


def test_explicit_window_overrides_maturity_with_a_warning() -> None:
    attempts, labels = _tables()
    with pytest.warns(ImmatureWindowWarning, match="maturity"):
        choose_window(attempts, labels, train_start="2026-01-01", train_end="2026-04-15")


def test_empty_window_and_unknown_transactions_are_clear_errors() -> None:
    attempts, labels = _tables()
    with pytest.raises(DatasetError, match="empty training window"):
        choose_window(attempts, labels, train_start="2026-03-01", train_end="2026-02-01")
    stray = pd.concat(
        [
            labels,
            normalize_labels(
                pd.DataFrame([{"transaction_id": "nope", "label_time": "2026-02-01T00:00:00Z"}])
            ),
        ]
    )
    with pytest.raises(DatasetError, match="unknown transactions"):
        choose_window(attempts, stray)
    with pytest.raises(DatasetError, match="ISO date"):
        choose_window(attempts, labels, train_start="first of May")
