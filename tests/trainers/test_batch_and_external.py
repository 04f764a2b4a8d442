"""score-batch output, and training on an external dataset with only the core columns."""

from __future__ import annotations

import pandas as pd
import pyarrow.dataset as ds

from checkout_risk.cli import main
from feature_views.tables import read_attempts


def test_score_batch_writes_scores_and_actions(
    trained, training_sim, registry_root, tmp_path, capsys
) -> None:
    out = tmp_path / "preds.parquet"
    code = main(
        [
            "score-batch",
            "--model",
            str(registry_root / "v1"),
            "--events",
            str(training_sim / "events"),
            "--labels",
            str(training_sim / "labels"),
            "--start",
            "2026-08-01",
            "--end",
            "2026-08-08",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    preds = pd.read_parquet(out)
    assert {"transaction_id", "score", "action"} <= set(preds.columns)
    assert preds["score"].between(0, 1).all()
    assert set(preds["action"]) <= {"approve", "step_up", "block"}
    events = read_attempts(training_sim / "events")
    in_window = events[
        (events["event_time"] >= "2026-08-01") & (events["event_time"] < "2026-08-08")
    ]
    assert set(preds["transaction_id"]) == set(in_window["transaction_id"])


def test_external_core_only_dataset_trains_and_scores(training_sim, tmp_path, capsys) -> None:
    """events: transaction_id, event_time, card_id, merchant_id, amount, currency;
    labels: transaction_id, label_time, is_fraud (a row = reported)."""
    events = read_attempts(training_sim / "events")[
        ["transaction_id", "event_time", "card_id", "merchant_id", "amount", "currency"]
    ]
    events.to_parquet(tmp_path / "events.parquet")
    truth = ds.dataset(training_sim / "truth", partitioning="hive").to_table().to_pandas()
    labels = pd.read_parquet(training_sim / "labels")
    labels = labels[labels["kind"] != "dispute_won"][["transaction_id", "label_time"]]
    labels["is_fraud"] = labels["transaction_id"].isin(
        truth.loc[truth["is_fraud"], "transaction_id"]
    )
    labels.to_parquet(tmp_path / "labels.parquet")
    model = tmp_path / "ext-model"
    assert (
        main(
            [
                "train",
                "--events",
                str(tmp_path / "events.parquet"),
                "--labels",
                str(tmp_path / "labels.parquet"),
                "--model-out",
                str(model),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "score-batch",
                "--model",
                str(model),
                "--events",
                str(tmp_path / "events.parquet"),
                "--labels",
                str(tmp_path / "labels.parquet"),
                "--start",
                "2026-08-01",
                "--end",
                "2026-08-08",
                "--out",
                str(tmp_path / "p.parquet"),
            ]
        )
        == 0
    )
    preds = pd.read_parquet(tmp_path / "p.parquet")
    assert len(preds) > 1000 and preds["score"].between(0, 1).all()
