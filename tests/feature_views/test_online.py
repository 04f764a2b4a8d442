"""The Redis online engine: idempotent writes, TTL at read time, typed faults. Real Redis."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid

import pytest
import redis

from feature_views.offline import prepare
from feature_views.online import OnlineFeatureStore
from feature_views.store import StoreUnavailable, connect, embedded_url

from .edge_cases import edge_attempts


@pytest.fixture
def records() -> dict[str, dict]:
    return {r["transaction_id"]: r for r in prepare(edge_attempts()).to_dict("records")}


def test_a_retried_attempt_never_double_counts(store: OnlineFeatureStore, records) -> None:
    assert store.write(records["e1"]) is True
    assert store.write(records["e1"]) is False
    assert store.write(records["e1"]) is False
    vec = store.read(records["e2"])
    assert vec.values["card_count_10m"] == 1
    assert vec.values["merchant_count_7d"] == 0 and vec.values["global_attempts_90d"] == 0


def test_read_returns_each_view_with_its_age(store: OnlineFeatureStore, records) -> None:
    store.write(records["e1"])
    vec = store.read(records["e4"])
    assert vec.ages_ms["card_activity"] == 3_600_000
    assert vec.ages_ms["merchant_volume"] is None  # m2 never seen
    assert "merchant_volume" in vec.missing and vec.values["merchant_volume_missing"] == 1


def test_values_older_than_ttl_are_missing_and_flagged(store: OnlineFeatureStore, records) -> None:
    for tx in ("e1", "e2", "e3", "e4"):
        store.write(records[tx])
    vec = store.read(records["e5"])  # 100 days later, TTL 90 days
    assert vec.values["card_activity_stale"] == 1 and "card_activity" in vec.stale
    assert vec.values["card_count_30d"] == 0 and vec.values["card_age_seconds"] == -1.0
    assert vec.ages_ms["card_activity"] > 90 * 86_400_000


def test_unknown_entities_get_defaults_and_cold_start_flags(
    store: OnlineFeatureStore, records
) -> None:
    vec = store.read(records["e8"])
    assert set(vec.missing) >= {
        "card_activity",
        "device_activity",
        "shopper_activity",
        "merchant_volume",
    }
    assert vec.values["card_seconds_since_previous"] == -1.0
    assert vec.values["merchant_fraud_rate_90d"] == vec.values["merchant_category_fraud_rate_90d"]


def test_late_labels_update_label_statistics(store: OnlineFeatureStore, records) -> None:
    for tx in ("e1", "e2", "e3"):
        store.write(records[tx])
    before = store.read(records["e6"]).values
    label_ms = int(records["e1"]["event_ms"]) + 86_400_000
    assert store.apply_fraud_label("e1", label_ms, records["e1"]) is True
    assert store.apply_fraud_label("e1", label_ms + 5, records["e1"]) is False  # once per tx
    after = store.read(records["e6"]).values
    assert before["merchant_fraud_labels_90d"] == 0 and after["merchant_fraud_labels_90d"] == 1
    assert after["merchant_fraud_rate_90d"] > before["merchant_fraud_rate_90d"]


def test_one_round_trip_for_a_micro_batch(store: OnlineFeatureStore, records) -> None:
    """The whole batch is one pipeline: commands counted by the server, one execute."""
    calls = {"n": 0}
    original = store.r.pipeline

    def counting_pipeline(*args, **kwargs):
        pipe = original(*args, **kwargs)
        execute = pipe.execute

        def once(*a, **k):
            calls["n"] += 1
            return execute(*a, **k)

        pipe.execute = once
        return pipe

    store.r.pipeline = counting_pipeline
    vectors = store.read_many(list(records.values()))
    assert calls["n"] == 1 and len(vectors) == len(records)


def test_unreachable_store_raises_one_typed_error_quickly() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.perf_counter()
    with pytest.raises(StoreUnavailable):
        connect(f"redis://127.0.0.1:{port}/0", timeout_s=0.05)
    assert time.perf_counter() - started < 1.0


def test_slow_store_raises_within_the_callers_timeout(redis_url: str, records) -> None:
    fast = OnlineFeatureStore(connect(redis_url, timeout_s=0.05), namespace=f"t-{uuid.uuid4().hex}")
    admin = redis.Redis.from_url(redis_url)
    admin.execute_command("CLIENT", "PAUSE", 400, "ALL")  # a real, stalled server
    try:
        started = time.perf_counter()
        with pytest.raises(StoreUnavailable):
            fast.read(records["e2"])
        elapsed = time.perf_counter() - started
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
    assert elapsed < 0.3


def test_embedded_server_is_used_without_redis_url(tmp_path, monkeypatch) -> None:
    from feature_views import store as store_module

    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("CHECKOUT_RISK_RUN_DIR", str(tmp_path))
    url = store_module.store_url()
    assert url.startswith("unix://") and str(tmp_path) in url
    client = connect(url)
    assert client.info("server")["redis_version"]
    assert store_module.stop_embedded(tmp_path / "redis") is True


def test_redis_url_is_used_when_set(monkeypatch) -> None:
    url = embedded_url()  # any real server stands in for "the one REDIS_URL names"
    monkeypatch.setenv("REDIS_URL", url)
    from feature_views.store import store_url

    assert store_url() == url


def test_concurrent_embedded_starts_share_one_server(tmp_path) -> None:
    urls: list[str] = []
    threads = [
        threading.Thread(target=lambda: urls.append(embedded_url(tmp_path / "r"))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(urls)) == 1
    pid = (tmp_path / "r" / "redis.pid").read_text().strip()
    assert pid and os.path.exists(f"/proc/{pid}")
    from feature_views.store import stop_embedded

    stop_embedded(tmp_path / "r")


def test_label_counts_summed_in_redis_equal_the_python_arithmetic(store) -> None:
    """The read sums a label hash's days in a Lua script; `_label_counts` is the reference."""
    from feature_views.online import _LABEL_SCRIPT, DAY_MS, LABEL_WINDOW_MS, _label_counts

    t = 1_790_000_000_000
    today, span = t // DAY_MS, LABEL_WINDOW_MS // DAY_MS
    key = f"{store.ns}:l:merchant:edge"
    fields = {"lo": 7, f"n{today}": 50, f"f{today}": 5, f"n{today - 1}": 11, f"f{today - 1}": 2}
    fields |= {f"n{today - span}": 13, f"f{today - span}": 3}  # first day inside the window
    fields |= {f"n{today - span - 1}": 1000, f"f{today - span - 1}": 900}  # just outside
    store.r.hset(key, mapping=fields)
    sha = store.r.script_load(_LABEL_SCRIPT)
    n, f = store.r.evalsha(sha, 1, key, today - span, today)
    assert (n, f) == _label_counts(store.r.hgetall(key), t) == (24, 5)
    assert store.r.evalsha(sha, 1, f"{store.ns}:l:merchant:none", today - span, today) == [0, 0]


def test_a_flushed_script_cache_is_reloaded_by_the_next_read(store, records) -> None:
    store.write(records["e1"])
    before = store.read(records["e6"]).values
    store.r.script_flush()  # as a restarted server: the read's script is gone
    assert store.read(records["e6"]).values == before


def test_a_write_after_the_scripts_were_flushed_applies_once(store, records) -> None:
    store.r.script_flush()
    assert store.write_many([records["e1"], records["e2"]]) == [True, True]
    store.r.script_flush()
    assert store.write_many([records["e1"]]) == [False]  # the guard still holds
    assert store.read(records["e4"]).values["card_count_24h"] == 2  # e1 and e2, once each


def test_one_amount_in_cents_is_the_offline_rounding() -> None:
    """The write path rounds one amount in Python; offline rounds arrays in numpy."""
    import numpy as np

    from feature_views.offline import amount_cents
    from feature_views.online import _cents

    rng = np.random.default_rng(7)
    amounts = [0.001, 0.004, 0.005, 0.015, 0.025, 1.005, 2.675, 10.125, 99_999.995]
    amounts += list(np.round(rng.lognormal(3, 2, 2_000), 3)) + list(rng.uniform(0, 5, 2_000))
    assert [_cents(a) for a in amounts] == amount_cents(np.array(amounts)).tolist()


def test_a_batch_spanning_script_calls_applies_each_attempt_once(store, records) -> None:
    """Many attempts, more than one script call, a repeated id inside the batch, decisions
    for some: each applied once, the first decision kept, none stored past `decisions`."""
    store.APPLY_CHUNK = 3  # several calls in one pipeline
    base = records["e1"]
    batch = [dict(base, transaction_id=f"b{i}", event_ms=base["event_ms"] + i) for i in range(7)]
    batch.append(dict(batch[2]))  # the same transaction again, later in the batch
    assert store.write_many(batch, ["d0", "d1", "d2", "d3"]) == [True] * 7 + [False]
    assert store.r.get(store.decision_key("b2")) == b"d2"
    assert store.r.get(store.decision_key("b4")) is None  # past the decisions given
    assert store.write_many(batch[:3], ["x0", "x1", "x2"]) == [False] * 3
    assert store.r.get(store.decision_key("b0")) == b"d0"  # first decision wins
    later = dict(base, transaction_id="after", event_ms=base["event_ms"] + 60_000)
    assert store.read(later).values["card_count_10m"] == 7


def test_a_field_holding_the_packing_separator_is_refused_before_anything_is_sent(
    store, records
) -> None:
    bad = dict(records["e1"], device_id="dev\x1eice")
    with pytest.raises(ValueError, match="U\\+001E"):
        store.write_many([records["e2"], bad])
    assert store.r.exists(f"{store.ns}:g:tx:e2") == 0  # the whole batch, not half of it


def test_an_unknown_op_is_an_error_not_a_silent_skip(store) -> None:
    with pytest.raises(StoreUnavailable, match="unknown op"):
        store.apply([([f"{store.ns}:g:tx:q", f"{store.ns}:x"], [60, "q", 2])])
