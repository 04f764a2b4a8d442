"""The main job of `make run`: every capability built so far, end to end, on this machine.

1. simulate a marketplace (reused when the same size and seed are already on disk);
2. load the Redis online store and replay the last day live (feature views);
3. start the local Ray cluster and submit the retraining job (Ray Train + CatBoost);
4. evaluate the new version on the later, unseen days and promote it through the gate.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from checkout_risk import cluster
from simulator.config import load_scenario
from simulator.marketplace import simulate


def _simulation(data: Path, days: int, tx_per_day: int, seed: int) -> dict:
    manifest = data / "_SUCCESS.json"
    wanted = {"days": days, "tx_per_day": tx_per_day, "seed": seed}
    if manifest.exists():
        found = json.loads(manifest.read_text())
        if all(found.get(k) == v for k, v in wanted.items()):
            print(f"reusing simulated marketplace in {data} (delete it to regenerate)")
            return found
    return simulate(
        load_scenario(), days=days, tx_per_day=tx_per_day, seed=seed, out=data, overwrite=True
    ).as_dict()


def _train_and_promote(data: Path, registry: Path) -> None:
    from checkout_risk.cli import resolved_training_config
    from trainers.promotion import promote
    from trainers.registry import Registry
    from trainers.train import evaluate_model

    print(f"\nRay cluster: {cluster.up()} (jobs and dashboard on {cluster.JOBS_URL})")
    before = set(Registry(registry).versions())
    config = resolved_training_config(
        "configs/training/default.yaml",
        {"events": str(data / "events"), "labels": str(data / "labels"), "registry": str(registry)},
    )
    print(
        f"submitting the retraining job: ray job submit -- python -m trainers.retrain "
        f"--config {config}"
    )
    code = cluster.submit(["python", "-m", "trainers.retrain", "--config", str(config)])
    if code != 0:
        raise cluster.ClusterError(
            f"the retraining job failed with exit status {code} (its output is above)"
        )
    (version,) = sorted(set(Registry(registry).versions()) - before)
    meta = json.loads((registry / version / "metadata.json").read_text())
    start = meta["training"]["window"]["end"]
    end = str(
        (
            pd.Timestamp(json.loads((data / "_SUCCESS.json").read_text())["start_date"])
            + pd.Timedelta(days=json.loads((data / "_SUCCESS.json").read_text())["days"])
        ).date()
    )
    report, _ = evaluate_model(
        registry / version, data / "events", data / "labels", start, end, truth=data / "truth"
    )
    o = report["overall"]
    cost = o["cost_per_1000"]
    print(
        f"\n{version} on the unseen days [{start}, {end}) against ground truth: "
        f"PR-AUC {o['pr_auc']:.3f}, recall at 1% decline {o['recall_at_1pct_decline']:.2f}"
    )
    print(
        f"  cost per 1,000 attempts: model ${cost['model']:,.2f}, rules only "
        f"${cost['rules_only']:,.2f}, approve all ${cost['approve_all']:,.2f}"
    )
    ok, lines = promote(
        version,
        "champion",
        str(data / "events"),
        str(data / "labels"),
        start,
        end,
        truth=str(data / "truth"),
        registry=Registry(registry),
    )
    for line in lines:
        print(f"  {line}")


SERVE_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "serve" / "local.yaml"
BASE_URL = "http://127.0.0.1:8000"


def _serve() -> None:
    from serve_graph.config import dev_key
    from serve_graph.deployments import wait_ready

    cluster.serve("deploy", str(SERVE_CONFIG))
    for region in ("us-east", "eu-west"):
        wait_ready(f"{BASE_URL}/{region}", dev_key(), 300)
    print(
        f"\nserving both regions: {BASE_URL}/us-east and {BASE_URL}/eu-west "
        f"(serve deploy {SERVE_CONFIG.relative_to(Path.cwd())})"
    )


def _show_decisions(data: Path) -> None:
    """Live decisions through the checkout client, until one of each action is shown."""
    import pyarrow.dataset as ds

    from feature_views.tables import date_partitions
    from serve_graph.client import CheckoutClient
    from serve_graph.config import dev_key

    parts = date_partitions(data / "events")
    day = ds.dataset(parts[-1], format="parquet").to_table().to_pandas()
    truth = (
        ds.dataset(data / "truth" / parts[-1].name, format="parquet")
        .to_table(columns=["transaction_id", "pattern"])
        .to_pandas()
    )
    day = day.merge(truth, on="transaction_id")
    legit = day[day["pattern"] == ""]
    campaigns = day[~day["pattern"].isin(["", "friendly_fraud"])]  # friendly fraud looks legit
    order = pd.concat([legit.head(5), campaigns, legit.iloc[5:300]])
    client = CheckoutClient(
        [f"{BASE_URL}/us-east", f"{BASE_URL}/eu-west"], dev_key(), budget_ms=2000
    )
    shown: set[str] = set()
    for rec in order.to_dict("records"):
        body = {
            k: (v.isoformat() if isinstance(v, pd.Timestamp) else v)
            for k, v in rec.items()
            if k != "pattern" and v is not None and v == v
        }
        body["transaction_id"] = f"demo-{rec['transaction_id']}"
        out = client.decide(body)
        if out["action"] in shown:
            continue
        shown.add(out["action"])
        reasons = ", ".join(
            r["code"]
            + (f" ({r['contribution']:+.2f})" if r.get("contribution") is not None else "")
            for r in out.get("reasons", [])
        )
        print(
            f"\n  {out['action'].upper():<8} {rec['pattern'] or 'legitimate'} attempt "
            f"${rec['amount_usd']:,.2f} at {rec['merchant_id']}: p(fraud) "
            f"{out.get('fraud_probability')}, model {out.get('model_version')}, "
            f"{out.get('latency_ms')} ms, served by {out.get('served_by')}"
        )
        print(f"           reasons: {reasons or 'none'}")
        print(
            f"           decision {out.get('decision_id')} "
            f"(checkout-risk replay {out.get('decision_id')})"
        )
        if len(shown) == 3:
            break


def run(
    data: Path, days: int, tx_per_day: int, seed: int, registry: Path, keep_serving: bool = True
) -> None:
    import time

    from checkout_risk.cli import _print_simulation
    from feature_views.demo import run_feature_demo
    from serve_graph.config import dev_key, load_region
    from serve_graph.pipeline import region_store_url

    _print_simulation(_simulation(data, days, tx_per_day, seed))
    region = load_region("us-east")  # the demo history lives in us-east's online store
    run_feature_demo(data, namespace=region.namespace, url=region_store_url(region))
    _train_and_promote(data, registry)
    _serve()
    _show_decisions(data)
    print(f"\ndevelopment API key (also: checkout-risk dev-key): {dev_key()}")
    print(f"try: curl -s -H 'X-API-Key: {dev_key()}' {BASE_URL}/us-east/healthz")
    # the docs need the key too: a browser must add the X-API-Key header (e.g. with a
    # header extension), or save the page: curl -H 'X-API-Key: …' …/docs > docs.html
    print(f"     curl -s -H 'X-API-Key: {dev_key()}' {BASE_URL}/us-east/docs > docs.html")
    print("     checkout-risk verify-log")
    if keep_serving:
        print("serving until interrupted (Ctrl-C) ...")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("\nstopping: checkout-risk cluster down")
            cluster.down()
