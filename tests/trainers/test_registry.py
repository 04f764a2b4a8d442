"""The registry: immutable versions, gated promotion, instant rollback, nothing half-written."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from checkout_risk.cli import main
from trainers.registry import Registry, RegistryError, load_version
from trainers.train import train


def test_version_records_what_made_it(trained, registry_root) -> None:
    meta = json.loads((registry_root / "v1" / "metadata.json").read_text())
    for key in (
        "features",
        "feature_view_versions",
        "training",
        "validation",
        "calibration",
        "data_sha256",
        "code",
        "fallback",
    ):
        assert key in meta, key
    assert meta["training"]["maturity"]["days"] > 0
    assert meta["training"]["window"]["end"] == trained["window"]["end"]
    assert len(meta["code"]["sha256"]) == 64
    assert not os.access(registry_root / "v1" / "model.cbm", os.W_OK) or os.geteuid() == 0
    assert oct((registry_root / "v1" / "model.cbm").stat().st_mode)[-3:] == "444"


def test_versions_are_immutable(trained, training_sim, registry_root) -> None:
    from trainers.datasets import DatasetError

    with pytest.raises(DatasetError, match="immutable"):
        train(training_sim / "events", training_sim / "labels", registry_root / "v1")


@pytest.fixture(scope="module")
def weak(trained, training_sim, registry_root) -> str:
    """A deliberately poor model: a few trees on the first three weeks only."""
    train(
        training_sim / "events",
        training_sim / "labels",
        registry_root / "v0-weak",
        train_start="2026-06-01",
        train_end="2026-06-22",
        params={"iterations": 8, "depth": 2},
    )
    return "v0-weak"


def test_promotion_gate_refuses_a_worse_model_and_accepts_a_better(
    trained, weak, training_sim, registry_root, monkeypatch, capsys, tmp_path
) -> None:
    monkeypatch.setenv("CHECKOUT_RISK_MODELS", str(registry_root))
    (registry_root / "registry.json").unlink(missing_ok=True)  # other tests set stages
    end = pd.Timestamp(trained["window"]["end"])
    window = [
        "--events",
        str(training_sim / "events"),
        "--labels",
        str(training_sim / "labels"),
        "--truth",
        str(training_sim / "truth"),
        "--start",
        str(end.date()),
        "--end",
        str((end + pd.Timedelta(days=21)).date()),
    ]
    assert main(["promote", weak, "--stage", "champion"]) == 0  # first champion: no gate
    assert Registry(registry_root).stage("champion") == weak
    gate = tmp_path / "gate.yaml"
    gate.write_text("segment_tolerance: 0.5\nmin_segment_attempts: 500\n")
    monkeypatch.setattr("trainers.promotion.GATE_CONFIG", gate)
    assert main(["promote", "v1", "--stage", "champion", *window]) == 0
    assert Registry(registry_root).stage("champion") == "v1"
    capsys.readouterr()
    code = main(["promote", weak, "--stage", "champion", *window])
    out = capsys.readouterr().out
    assert code == 1 and "refused" in out and "not below the champion" in out
    assert Registry(registry_root).stage("champion") == "v1"
    assert main(["promote", weak, "--stage", "shadow"]) == 0
    assert Registry(registry_root).stage("shadow") == weak

    # rollback is instant and goes back one champion at a time
    assert main(["rollback"]) == 0
    assert Registry(registry_root).stage("champion") == weak
    assert main(["rollback"]) == 2  # nothing before weak
    assert main(["promote", "v1", "--stage", "champion", "--force"]) == 0
    assert Registry(registry_root).stage("champion") == "v1"


def test_gate_names_each_regressing_segment() -> None:
    from trainers.promotion import Gate, compare

    def report(overall: float, seg: float, attempts: int = 1000) -> dict:
        m = {"attempts": attempts, "cost_per_1000": {"model": seg}}
        return {
            "overall": {"cost_per_1000": {"model": overall}},
            "segments": {"new_card": {"new card": m}},
        }

    gate = Gate(segment_tolerance=0.1, min_segment_attempts=500)
    assert compare(report(90, 100), report(100, 100), gate) == []
    reasons = compare(report(90, 120), report(100, 100), gate)
    assert len(reasons) == 1 and "new_card=new card" in reasons[0]
    assert compare(report(90, 120, attempts=10), report(100, 100), gate) == []  # too small
    assert "not below" in compare(report(100, 100), report(100, 100), gate)[0]


def test_promotion_window_must_be_after_training(
    trained, weak, training_sim, registry_root, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("CHECKOUT_RISK_MODELS", str(registry_root))
    Registry(registry_root).set_stage(weak, "champion", "test setup")
    code = main(
        [
            "promote",
            "v1",
            "--stage",
            "champion",
            "--events",
            str(training_sim / "events"),
            "--labels",
            str(training_sim / "labels"),
            "--start",
            "2026-06-10",
            "--end",
            "2026-06-20",
        ]
    )
    assert code == 2 and "inside the candidate's training window" in capsys.readouterr().err


def test_unknown_version_is_refused(registry_root) -> None:
    with pytest.raises(RegistryError):
        Registry(registry_root).set_stage("nope", "champion", "x")
    with pytest.raises(RegistryError):
        load_version(registry_root / "nope")


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda e, lab: (e.drop(columns=["merchant_id"]), lab), "missing required column"),
        (lambda e, lab: (e.assign(event_time="soon"), lab), "unparseable times"),
        (
            lambda e, lab: (
                e,
                pd.concat(
                    [
                        lab,
                        pd.DataFrame(
                            {
                                "transaction_id": ["ghost"],
                                "label_time": [lab["label_time"].iloc[0]],
                                "kind": ["chargeback"],
                                "reason": ["x"],
                            }
                        ),
                    ]
                ),
            ),
            "unknown transactions",
        ),
    ],
)
def test_bad_tables_give_one_error_and_write_nothing(
    training_sim, tmp_path, capsys, mutate, needle
) -> None:
    from feature_views.tables import read_attempts, read_labels

    events = read_attempts(training_sim / "events").head(5000)
    labels = read_labels(training_sim / "labels")
    labels = labels[labels["transaction_id"].isin(events["transaction_id"])]
    events, labels = mutate(events, labels)
    events.to_parquet(tmp_path / "events.parquet")
    labels.to_parquet(tmp_path / "labels.parquet")
    out = tmp_path / "models" / "bad"
    code = main(
        [
            "train",
            "--events",
            str(tmp_path / "events.parquet"),
            "--labels",
            str(tmp_path / "labels.parquet"),
            "--model-out",
            str(out),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0]
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_empty_window_writes_nothing(training_sim, tmp_path, capsys) -> None:
    out = tmp_path / "models" / "empty"
    code = main(
        [
            "train",
            "--events",
            str(training_sim / "events"),
            "--labels",
            str(training_sim / "labels"),
            "--train-start",
            "2030-01-01",
            "--model-out",
            str(out),
        ]
    )
    assert code == 2 and "empty training window" in capsys.readouterr().err
    assert not out.exists()
