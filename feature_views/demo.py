"""The feature part of `make run`: load the online store and show live feature reads.

History up to the last simulated day is bulk-loaded; the last day is then replayed one
attempt at a time, as serving would (read the vector, then write the attempt), and a few
attempts of different kinds are printed with their features, view ages and cold-start flags.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds

from feature_views.contract import normalize_attempts
from feature_views.materialize import load_frames
from feature_views.offline import prepare, table_fraud_labels
from feature_views.online import OnlineFeatureStore, OnlineVector
from feature_views.store import connect, store_url
from feature_views.tables import date_partitions, iter_attempt_partitions, read_labels

SHOWN = (
    "card_count_24h",
    "card_distinct_merchants_24h",
    "card_age_seconds",
    "device_distinct_cards_24h",
    "card_amount_zscore_30d",
    "merchant_count_24h",
    "merchant_fraud_rate_90d",
    "ip_card_country_mismatch",
    "amount_usd",
)


def _show(title: str, rec: dict, vec: OnlineVector, read_ms: float) -> None:
    print(
        f"\n  {title}: {rec['transaction_id']} card={rec['card_id']} "
        f"merchant={rec['merchant_id']} ${rec['amount_usd']:,.2f}  (read {read_ms:.2f} ms)"
    )
    for name in SHOWN:
        value = vec.values[name]
        print(
            f"    {name:<30} {value:.4g}" if isinstance(value, float) else f"    {name:<30} {value}"
        )
    ages = ", ".join(
        f"{k}={'-' if v is None else f'{v / 1000:.0f}s'}" for k, v in vec.ages_ms.items()
    )
    print(f"    view ages: {ages}")
    print(f"    cold start: {vec.missing or 'none'}   stale: {vec.stale or 'none'}")


def run_feature_demo(data: Path, namespace: str = "demo", url: str | None = None) -> None:
    """Materialise all but the last day of `data`, then replay the last day live."""
    events, labels_path = data / "events", data / "labels"
    parts = date_partitions(events)
    url = url or store_url()
    store = OnlineFeatureStore(connect(url, timeout_s=30.0), namespace=namespace)
    store.flush_namespace()
    fraud = table_fraud_labels(events, read_labels(labels_path))
    today = prepare(normalize_attempts(ds.dataset(parts[-1], format="parquet").to_table()))
    today = today.sort_values(["event_ms", "transaction_id"], ignore_index=True)
    history_end = int(today["event_ms"].iloc[0])
    print(f"\nonline store: {url} (namespace '{namespace}')")
    loaded = load_frames(
        store,
        (
            p
            for p in iter_attempt_partitions(events)
            if p["event_time"].max().value // 1_000_000 < history_end
        ),
        fraud[fraud["label_ms"] < history_end],
        progress=True,
        total=sum(ds.dataset(p).count_rows() for p in parts[:-1]),
    )
    print(
        f"materialised {loaded['attempts']:,} attempts, {loaded['fraud_labels_applied']:,} "
        f"fraud labels: {loaded['entity_updates']:,} entity updates "
        f"({loaded['entity_updates_per_s']:,}/s)"
    )
    truth = ds.dataset(data / "truth" / parts[-1].name, format="parquet").to_table().to_pandas()
    today = today.merge(truth[["transaction_id", "pattern"]], on="transaction_id")
    wanted = {
        "card_testing": "card testing burst",
        "stolen_card": "stolen card abroad",
        "account_takeover": "account takeover",
        "": "ordinary returning shopper",
    }
    shown: set[str] = set()
    latencies = []
    started = time.perf_counter()
    for rec in today.to_dict("records"):
        t0 = time.perf_counter()
        vec = store.read(rec)
        latencies.append((time.perf_counter() - t0) * 1000)
        pattern = rec["pattern"]
        interesting = (
            pattern in wanted
            and pattern not in shown
            and (pattern != "" or vec.values["card_count_30d"] >= 3)
        )
        if pattern == "card_testing" and vec.values["device_distinct_cards_24h"] < 3:
            interesting = False
        if interesting:
            _show(wanted[pattern], rec, vec, latencies[-1])
            shown.add(pattern)
        store.write(rec)
    p50, p99 = np.percentile(latencies, [50, 99])
    print(
        f"\nreplayed the last day live: {len(latencies):,} attempts in "
        f"{time.perf_counter() - started:.1f} s; read latency p50 {p50:.2f} ms, "
        f"p99 {p99:.2f} ms (one Redis round trip each)"
    )
