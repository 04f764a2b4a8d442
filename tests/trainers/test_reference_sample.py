"""Each model version stores a bounded sample of its training data: the drift reference."""

from __future__ import annotations

import json
import shutil

import pandas as pd

from monitoring.data import REFERENCE_FILE, load_reference
from monitoring.windows import ModelReference


def test_reference_sample_is_stored_with_the_model(trained, registry_root) -> None:
    stored = pd.read_parquet(registry_root / "v1" / REFERENCE_FILE)
    meta = json.loads((registry_root / "v1" / "metadata.json").read_text())
    assert 1_000 < len(stored) <= 20_000 and meta["reference_sample_rows"] == len(stored)
    assert stored["fraud_probability"].between(0, 1).all()
    assert set(stored["action"]) <= {"approve", "step_up", "block"}
    assert {"is_cross_border", "merchant_age_days", "region", "is_fraud"} <= set(stored.columns)
    window = meta["training"]["window"]
    assert stored["event_time"].min() >= pd.Timestamp(window["train_start"], tz="UTC")
    assert stored["event_time"].max() < pd.Timestamp(window["end"], tz="UTC")
    assert stored["transaction_id"].is_unique


def test_a_version_without_a_sample_is_recomputed_offline(
    trained, registry_root, training_sim, tmp_path
) -> None:
    old = tmp_path / "v0"
    shutil.copytree(registry_root / "v1", old)
    (old / REFERENCE_FILE).chmod(0o600)
    (old / REFERENCE_FILE).unlink()
    ref = ModelReference("v0", old, "v0")
    frame, how = load_reference(ref, training_sim / "events", training_sim / "labels")
    assert "recomputed with the offline engine" in how
    stored = pd.read_parquet(registry_root / "v1" / REFERENCE_FILE)
    # same training window, same sampling: the same rows with the same scores
    assert len(frame) == len(stored)
    merged = frame.merge(stored, on="transaction_id", suffixes=("", "_stored"))
    assert len(merged) > 0.95 * len(stored)
    assert (merged["fraud_probability"] - merged["fraud_probability_stored"]).abs().max() < 1e-6
