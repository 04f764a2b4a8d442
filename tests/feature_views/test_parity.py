"""Training-serving parity: the online engine over real Redis equals the offline engine."""

from __future__ import annotations

import uuid

import pytest

from feature_views.online import OnlineFeatureStore
from feature_views.parity import replay_and_compare
from feature_views.store import connect
from feature_views.tables import read_attempts, read_labels

from .edge_cases import edge_attempts, edge_labels


def _store(url: str) -> OnlineFeatureStore:
    return OnlineFeatureStore(connect(url, timeout_s=5.0), namespace=f"p-{uuid.uuid4().hex[:8]}")


def test_parity_on_the_edge_cases(any_redis_url: str) -> None:
    store = _store(any_redis_url)
    try:
        report = replay_and_compare(edge_attempts(), edge_labels(), store)
    finally:
        store.flush_namespace()
    assert report.ok, report.render()
    assert report.labels_applied == 1


def test_parity_on_twenty_thousand_simulated_attempts(small_sim, redis_url: str) -> None:
    attempts = read_attempts(small_sim / "events")
    labels = read_labels(small_sim / "labels")
    assert len(attempts) >= 20_000
    store = _store(redis_url)
    try:
        report = replay_and_compare(attempts, labels, store)
    finally:
        store.flush_namespace()
    assert report.ok, report.render()
    assert report.attempts == len(attempts) and report.labels_applied > 10


def test_parity_detects_a_divergent_store(redis_url: str) -> None:
    """A store that already holds an extra attempt must be caught, feature by feature."""
    from feature_views.offline import prepare

    attempts = edge_attempts()
    store = _store(redis_url)
    try:
        ghost = prepare(attempts).to_dict("records")[0] | {"transaction_id": "ghost", "event_ms": 0}
        store.write(ghost)
        report = replay_and_compare(attempts, edge_labels(), store)
    finally:
        store.flush_namespace()
    assert not report.ok
    assert report.mismatches["card_age_seconds"] > 0
    assert "card_age_seconds" in report.render()


@pytest.mark.parametrize("limit", [500])
def test_parity_cli_prints_per_feature_result(small_sim, capsys, limit) -> None:
    from checkout_risk.cli import main

    code = main(
        [
            "parity",
            "--events",
            str(small_sim / "events"),
            "--labels",
            str(small_sim / "labels"),
            "--limit",
            str(limit),
            "--quiet",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "all features agree" in out and f"{limit:,} attempts" in out
