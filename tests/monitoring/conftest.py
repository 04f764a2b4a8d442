"""A decision log made by the real pipeline over a drifting marketplace.

The simulator's drift scenario (configs/simulation/drift.yaml: from half-way, fraud
x2.5 led by a card-testing campaign and cross-border traffic 18% -> 35%) runs for 24 days;
the first 8 load the online store, the next 16 are decided one micro-batch at a time by
the in-process DecisionPipeline over embedded Redis, with the session's trained model as
champion and as shadow.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
DAYS, TX_PER_DAY, SERVED_FROM = 24, 500, 8
START = pd.Timestamp("2026-06-01", tz="UTC")
DRIFT_FROM = START + pd.Timedelta(days=DAYS // 2)  # from_fraction 0.5


@pytest.fixture(scope="session")
def drift_sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from simulator.config import load_scenario
    from simulator.marketplace import simulate

    out = tmp_path_factory.mktemp("sim") / "drift"
    scenario = load_scenario(ROOT / "configs" / "simulation" / "drift.yaml")
    simulate(scenario, days=DAYS, tx_per_day=TX_PER_DAY, seed=5, out=out, progress=False)
    return out


@pytest.fixture(scope="session")
def drift_log(trained, registry_root, drift_sim, redis_url, tmp_path_factory) -> Path:
    from feature_views.materialize import load_frames
    from feature_views.offline import LABEL_KEY_COLUMNS, fraud_labels, prepare
    from feature_views.online import OnlineFeatureStore
    from feature_views.store import connect
    from feature_views.tables import read_attempts, read_labels
    from serve_graph.config import load_region
    from serve_graph.pipeline import DecisionPipeline, region_store_url
    from trainers.registry import Registry

    log = tmp_path_factory.mktemp("monitoring") / "decision-log"
    attempts = read_attempts(drift_sim / "events")
    labels = read_labels(drift_sim / "labels")
    served_from = START + pd.Timedelta(days=SERVED_FROM)
    history = attempts[attempts["event_time"] < served_from]
    served = attempts[attempts["event_time"] >= served_from]
    region = load_region("us-east").model_copy(
        update={
            "namespace": f"mon-{uuid.uuid4().hex[:6]}",
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
        fraud[fraud["label_ms"] < served_from.value // 1_000_000],
    )
    registry = Registry(registry_root)
    registry.set_stage("v1", "champion", "monitoring test")
    registry.set_stage("v1", "shadow", "monitoring test")
    pipeline = DecisionPipeline(region, registry_root, log_dir=log, redis_url=url)
    try:
        records = prepare(served).to_dict("records")
        for i in range(0, len(records), 16):
            batch = records[i : i + 16]
            out = pipeline.decide(batch, [time.monotonic()] * len(batch))
            pipeline.after(batch, out)
    finally:
        pipeline.close()
        store.flush_namespace()
    return log
