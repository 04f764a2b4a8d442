"""What the trained model must do, on named fraud patterns and cold-start segments.

Judged on a later window than the model was trained on, against the simulator's ground
truth (complete: no label delay), with the champion policy and configs/costs.yaml.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
from sklearn.metrics import average_precision_score

from serve_graph.combiner import combine_frame
from serve_graph.decisioning import SEVERITY, load_costs
from serve_graph.policy import evaluate_frame, load_policy
from trainers.evaluate import evaluate_scores
from trainers.registry import load_version
from trainers.train import truth_targets, window_features


@pytest.fixture(scope="module")
def later_window(trained, training_sim, registry_root):
    end = pd.Timestamp(trained["window"]["end"])
    start, stop = str(end.date()), str((end + pd.Timedelta(days=21)).date())
    frame, _, _ = window_features(training_sim / "events", training_sim / "labels", start, stop)
    version = load_version(registry_root / "v1")
    score = version.model.predict(frame)
    y = truth_targets(frame, training_sim / "truth")
    truth = (
        ds.dataset(training_sim / "truth", partitioning="hive")
        .to_table(columns=["transaction_id", "pattern"])
        .to_pandas()
        .set_index("transaction_id")
    )
    pattern = frame["transaction_id"].map(truth["pattern"]).to_numpy()
    return frame, score, y, pattern


def test_model_beats_rules_by_a_wide_margin(later_window) -> None:
    frame, score, y, _ = later_window
    policy, costs = load_policy(), load_costs()
    report = evaluate_scores(frame, score, y, policy, costs)
    cost = report["overall"]["cost_per_1000"]
    assert cost["model"] < 0.8 * cost["rules_only"] < 0.8 * cost["approve_all"]
    override, _ = evaluate_frame(policy, frame)
    rules_score = np.array([SEVERITY.get(a, 0) if a else 0 for a in override])
    assert report["overall"]["pr_auc"] > average_precision_score(y, rules_score) + 0.2
    for seg, value in (
        ("new_card", "new card"),
        ("new_device", "new device"),
        ("merchant_age", "merchant <30d"),
    ):
        c = report["segments"][seg][value]["cost_per_1000"]
        assert c["model"] < c["rules_only"], (seg, c)


@pytest.mark.parametrize(
    "pattern, caught",
    [("card_testing", 0.8), ("stolen_card", 0.8), ("account_takeover", 0.6), ("bust_out", 0.6)],
)
def test_named_fraud_patterns_are_challenged_or_blocked(later_window, pattern, caught) -> None:
    frame, score, _, patterns = later_window
    actions, _ = combine_frame(frame, score, load_policy(), load_costs())
    rows = patterns == pattern
    assert rows.sum() >= 5, f"too few {pattern} attempts in the window"
    assert np.isin(actions[rows], ["step_up", "block"]).mean() >= caught


def test_good_shoppers_are_almost_always_approved(later_window) -> None:
    frame, score, _, patterns = later_window
    actions, _ = combine_frame(frame, score, load_policy(), load_costs())
    legit = patterns == ""
    assert (actions[legit] == "approve").mean() > 0.98
    assert (actions[legit] == "block").mean() < 0.002


def test_probabilities_are_calibrated(later_window) -> None:
    _, score, y, _ = later_window
    assert 0.5 * y.mean() < score.mean() < 2.0 * y.mean()


def test_fallback_model_still_beats_approve_all(trained, training_sim, registry_root) -> None:
    from trainers.train import evaluate_model

    end = pd.Timestamp(trained["window"]["end"])
    report, _ = evaluate_model(
        registry_root / "v1",
        training_sim / "events",
        training_sim / "labels",
        str(end.date()),
        str((end + pd.Timedelta(days=21)).date()),
        truth=training_sim / "truth",
        fallback=True,
    )
    cost = report["overall"]["cost_per_1000"]
    assert cost["model"] < 0.6 * cost["approve_all"]
    assert report["overall"]["pr_auc"] > 0.2


@pytest.mark.parametrize("rows", [1, 5, 80])
def test_reason_codes_are_exact_shap_in_either_mode(later_window, registry_root, rows) -> None:
    """Few rows take CatBoost's per-row SHAP, many its precomputed mode: same values."""
    from trainers.model import PRECALC_ROWS, to_pool

    frame = later_window[0].head(rows)
    model = load_version(registry_root / "v1").model
    shap = model.booster.get_feature_importance(
        to_pool(frame, model.features), type="ShapValues", shap_mode="UsePreCalc"
    )[:, :-1]
    got = model.contributions(frame, top=5)
    assert (rows < PRECALC_ROWS) == (rows in (1, 5))
    for row, reasons in zip(shap, got, strict=True):
        assert len(reasons) == 5
        for name, value in reasons:
            assert value == pytest.approx(row[model.features.index(name)], abs=1e-4)
        top = np.sort(np.abs(row))[::-1][:5]
        assert sorted(abs(v) for _, v in reasons) == pytest.approx(sorted(top), abs=1e-4)
