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
        raise RuntimeError(f"retraining job failed with exit status {code}")
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


def run(data: Path, days: int, tx_per_day: int, seed: int, registry: Path) -> None:
    from checkout_risk.cli import _print_simulation
    from feature_views.demo import run_feature_demo

    _print_simulation(_simulation(data, days, tx_per_day, seed))
    run_feature_demo(data)
    _train_and_promote(data, registry)
