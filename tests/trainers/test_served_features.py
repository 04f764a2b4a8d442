"""Zero training-serving skew: vectors logged by the serving pipeline equal the offline ones,
and training can use them."""

from __future__ import annotations

import time
import uuid

import pandas as pd

from feature_views.materialize import load_frames
from feature_views.offline import LABEL_KEY_COLUMNS, compute_features, fraud_labels, prepare
from feature_views.online import OnlineFeatureStore
from feature_views.store import connect
from feature_views.tables import read_attempts, read_labels
from serve_graph.config import load_region
from serve_graph.pipeline import DecisionPipeline, region_store_url
from trainers.datasets import served_features, with_served_features
from trainers.registry import Registry


def test_served_vectors_equal_offline_vectors(
    trained, training_sim, registry_root, redis_url, tmp_path
) -> None:
    from feature_views.definitions import FEATURE_NAMES
    from feature_views.parity import values_equal

    attempts = read_attempts(training_sim / "events")
    labels = read_labels(training_sim / "labels")
    day = pd.Timestamp("2026-08-03", tz="UTC")
    history = attempts[attempts["event_time"] < day]
    served_day = attempts[(attempts["event_time"] >= day)].head(250)
    region = load_region("us-east").model_copy(
        update={
            "namespace": f"skew-{uuid.uuid4().hex[:6]}",
            "deadline_ms": 10_000,
            "network_margin_ms": 0,
            "feature_timeout_ms": 5_000,
        }
    )
    url = region_store_url(region, redis_url)
    store = OnlineFeatureStore(connect(url, timeout_s=30), region.namespace)
    fraud = fraud_labels(labels, attempts[["transaction_id", *LABEL_KEY_COLUMNS]])
    load_frames(
        store,
        [g.reset_index(drop=True) for _, g in history.groupby(history["event_time"].dt.floor("D"))],
        fraud[fraud["label_ms"] < day.value // 1_000_000],
    )
    Registry(registry_root).set_stage("v1", "champion", "skew test")
    pipeline = DecisionPipeline(region, registry_root, log_dir=tmp_path / "log", redis_url=url)
    try:
        for rec in prepare(served_day).to_dict("records"):  # one at a time, as live traffic
            out = pipeline.decide([rec], [time.monotonic()])
            assert out[0]["degraded"] is None
            pipeline.after([rec], out)
    finally:
        pipeline.close()
        store.flush_namespace()
    served = served_features(tmp_path / "log").set_index("transaction_id")
    offline = (
        compute_features(attempts[attempts["event_time"] < day + pd.Timedelta(days=1)], labels)
        .set_index("transaction_id")
        .loc[served.index]
    )
    assert len(served) == 250
    bad = [
        (name, tx)
        for tx in served.index
        for name in FEATURE_NAMES
        if not values_equal(name, offline.at[tx, name], served.at[tx, name])
    ]
    assert not bad, bad[:10]
    merged, n = with_served_features(offline.reset_index(), served.reset_index())
    assert n == 250 and len(merged) == len(offline)
