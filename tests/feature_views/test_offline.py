"""The offline engine computes the declared semantics, point in time, in any partitioning."""

from __future__ import annotations

import pandas as pd
import pytest

from feature_views.definitions import FEATURE_NAMES
from feature_views.offline import compute_features, iter_features

from .edge_cases import edge_attempts, edge_labels


@pytest.fixture(scope="module")
def edge() -> pd.DataFrame:
    return compute_features(edge_attempts(), edge_labels()).set_index("transaction_id")


def test_windows_are_end_exclusive_and_start_inclusive(edge: pd.DataFrame) -> None:
    assert edge.loc["e2", "card_count_10m"] == 1  # e1 at exactly t - 10 min counts
    assert edge.loc["e2", "card_amount_usd_10m"] == 10.0
    assert edge.loc["e3", "card_count_10m"] == 1  # e2 shares e3's millisecond
    assert edge.loc["e3", "card_seconds_since_previous"] == 600.0
    assert edge.loc["e4", "card_count_1h"] == 3
    assert edge.loc["e4", "card_count_10m"] == 0
    assert edge.loc["e4", "card_amount_usd_1h"] == 50.0


def test_distinct_match_and_first_seen(edge: pd.DataFrame) -> None:
    assert edge.loc["e4", "card_distinct_merchants_24h"] == 1
    assert edge.loc["e4", "card_merchant_count_30d"] == 0  # first time at m2
    assert edge.loc["e3", "card_merchant_count_30d"] == 1
    assert edge.loc["e4", "card_age_seconds"] == 3600.0
    assert edge.loc["e4", "device_distinct_cards_30d"] == 1
    assert edge.loc["e7", "card_distinct_ip_countries_24h"] == 1


def test_zscore_defaults_until_two_amounts_and_with_zero_spread(edge: pd.DataFrame) -> None:
    assert edge.loc["e2", "card_amount_zscore_30d"] == 0.0  # one prior amount
    assert edge.loc["e4", "card_amount_zscore_30d"] > 1.0  # 40 against 10, 20
    assert edge.loc["e7", "card_amount_zscore_30d"] == 0.0  # one prior


def test_bucketed_merchant_view_counts_whole_hours_only(edge: pd.DataFrame) -> None:
    assert edge.loc["e2", "merchant_count_24h"] == 0  # same hour as e1: not yet
    assert edge.loc["e6", "merchant_count_24h"] == 0  # m1's hour was > 24 h ago
    assert edge.loc["e6", "merchant_count_7d"] == 3
    assert edge.loc["e6", "merchant_avg_ticket_usd_7d"] == pytest.approx(50.0 / 3)
    assert edge.loc["e2", "merchant_avg_ticket_usd_7d"] == -1.0


def test_ttl_blanks_and_flags_stale_history(edge: pd.DataFrame) -> None:
    row = edge.loc["e5"]
    assert row["card_activity_stale"] == 1 and row["card_activity_missing"] == 0
    assert row["card_seconds_since_previous"] == -1.0 and row["card_age_seconds"] == -1.0
    assert row["merchant_volume_stale"] == 1


def test_cold_start_and_absent_keys_are_missing_not_errors(edge: pd.DataFrame) -> None:
    new = edge.loc["e8"]
    for view in ("card_activity", "device_activity", "shopper_activity", "merchant_volume"):
        assert new[f"{view}_missing"] == 1
    guest = edge.loc["e6"]
    assert guest["shopper_activity_missing"] == 1 and guest["device_activity_missing"] == 1
    assert guest["shopper_count_30d"] == 0
    assert new["card_bin"] == "unknown" and new["merchant_category"] == "unknown"


def test_labels_count_only_when_known_and_once_per_transaction(edge: pd.DataFrame) -> None:
    # e1's chargeback arrived on day 1: invisible on day 0 and day 1, counted on day 2
    assert edge.loc["e4", "merchant_fraud_labels_90d"] == 0
    assert edge.loc["e6", "merchant_fraud_labels_90d"] == 1
    assert edge.loc["e6", "global_fraud_labels_90d"] == 1  # confirmed_fraud not counted twice
    assert edge.loc["e6", "card_bin_fraud_labels_90d"] == 1
    assert edge.loc["e6", "merchant_attempts_90d"] == 3  # e1..e3 on day 0
    assert edge.loc["e5", "merchant_fraud_labels_90d"] == 0  # out of the 90-day window
    rate = edge.loc["e6", "merchant_fraud_rate_90d"]
    assert rate > edge.loc["e6", "merchant_category_fraud_rate_90d"] * 0.99
    assert edge.loc["e8", "merchant_fraud_rate_90d"] == pytest.approx(
        edge.loc["e8", "merchant_category_fraud_rate_90d"]
    )  # cold start: inherits parent


def test_request_features(edge: pd.DataFrame) -> None:
    assert edge.loc["e7", "ip_card_country_mismatch"] == 1
    assert edge.loc["e7", "billing_shipping_mismatch"] == 1
    assert edge.loc["e1", "local_hour"] == 19  # New York, 00:00 UTC in winter
    assert edge.loc["e8", "amount_usd"] == 32.4
    assert edge.loc["e1", "card_merchant_countries"] == "US>US"


def test_every_declared_feature_is_produced(edge: pd.DataFrame) -> None:
    assert list(edge.columns) == ["event_time", *FEATURE_NAMES]
    assert not edge[list(FEATURE_NAMES)].isna().any().any()


def test_partitioned_run_equals_whole_table(small_sim) -> None:
    from feature_views.tables import read_attempts, read_labels

    whole = compute_features(read_attempts(small_sim / "events"), read_labels(small_sim / "labels"))
    streamed = pd.concat(
        list(iter_features(small_sim / "events", small_sim / "labels")), ignore_index=True
    )
    pd.testing.assert_frame_equal(whole, streamed)
    assert len(whole) > 20_000


def test_partition_frames_are_what_pandas_would_build(small_sim) -> None:
    # frames are assembled from one block per dtype; they must equal pandas' own
    # construction from the columns, dtypes and order included, and stay consolidated
    import warnings

    frame = next(iter(iter_features(small_sim / "events", small_sim / "labels")))
    assert list(frame.columns) == ["transaction_id", "event_time", *FEATURE_NAMES]
    rebuilt = pd.DataFrame({c: frame[c].to_numpy(copy=True) for c in frame.columns})
    rebuilt["event_time"] = frame["event_time"].copy()
    pd.testing.assert_frame_equal(frame, rebuilt, check_exact=True)
    assert frame._mgr.nblocks <= 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "highly fragmented" warning for callers
        frame["label"] = 0
        frame.loc[frame.index[:3], "amount_usd"] = 1.0


def test_no_feature_sees_the_future(small_sim) -> None:
    """Dropping every later attempt and label must not change an attempt's features."""
    from feature_views.tables import read_attempts, read_labels

    attempts = read_attempts(small_sim / "events")
    labels = read_labels(small_sim / "labels")
    full = compute_features(attempts, labels).set_index("transaction_id")
    cut = attempts["event_time"].iloc[len(attempts) // 2]
    early = attempts[attempts["event_time"] <= cut]
    known = labels[labels["label_time"] <= cut]
    part = compute_features(early, known).set_index("transaction_id")
    pd.testing.assert_frame_equal(part, full.loc[part.index])


def test_string_codes_are_stable_and_distinct_across_partitions() -> None:
    import numpy as np

    from feature_views.offline import _Codes

    codes = _Codes()
    first = codes.encode(np.array(["a", "b", None, "a", ""], dtype=object))
    second = codes.encode(np.array(["", "c", "b", float("nan")], dtype=object))
    assert first[0] == first[3] and first[2] == -1 and second[3] == -1
    assert second[0] == first[4] and second[2] == first[1]
    assert len({*first[[0, 1, 4]], second[1]}) == 4 == len(codes)


def test_hash_collisions_never_merge_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a hash that collides for every value of one length, codes stay exact."""
    import numpy as np

    import feature_views.offline as offline

    real = offline._string_hashes
    monkeypatch.setattr(offline, "_string_hashes", lambda v: real(v) % np.uint64(3))
    codes = offline._Codes()
    values = [f"card_{i}" for i in range(50)]
    first = codes.encode(np.array(values[:30], dtype=object))
    second = codes.encode(np.array(values[20:] + values[:5], dtype=object))
    assert len(set(first.tolist())) == 30 and len(codes) == 50
    by_value = dict(zip(values[:30], first.tolist(), strict=True))
    again = dict(zip(values[20:] + values[:5], second.tolist(), strict=True))
    assert all(again[v] == by_value[v] for v in again if v in by_value)
    assert len(set(again.values()) - set(by_value.values())) == 20


def test_lag_walk_in_slices_equals_one_pass(
    edge: pd.DataFrame, small_sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bounding the (attempt, window entry) pairs walked at once changes no value."""
    import feature_views.offline as offline
    from feature_views.tables import read_attempts, read_labels

    attempts = read_attempts(small_sim / "events").head(3000)
    labels = read_labels(small_sim / "labels")
    whole = compute_features(attempts, labels)
    monkeypatch.setattr(offline, "LAG_PAIRS", 7)
    sliced = compute_features(attempts, labels)
    pd.testing.assert_frame_equal(whole, sliced, check_exact=True)
    monkeypatch.setattr(offline, "LAG_PAIRS", 1)  # every window deeper than one slice
    tiny = compute_features(edge_attempts(), edge_labels()).set_index("transaction_id")
    pd.testing.assert_frame_equal(tiny, edge, check_exact=True)
