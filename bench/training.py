"""Training throughput: feature preparation and CatBoost fitting, local and on Ray Train.

    python -m bench.training [--days 90] [--tx-per-day 5000]

Local = `checkout-risk train` (one process, all threads). Ray = the retraining job with 1
and 2 workers on the local cluster (started if needed), run one after the other.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml

from bench.common import write
from checkout_risk import cluster
from simulator.config import load_scenario
from simulator.marketplace import simulate
from trainers.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--tx-per-day", type=int, default=5000)
    args = parser.parse_args()
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        sim = Path(tmp) / "sim"
        simulate(
            load_scenario(),
            days=args.days,
            tx_per_day=args.tx_per_day,
            seed=3,
            out=sim,
            progress=False,
        )
        started = time.perf_counter()
        local = train(sim / "events", sim / "labels", Path(tmp) / "models" / "local")
        rows = local["train_rows"] + local["valid_rows"]
        results["local"] = {
            "attempts_featurised": int(json.loads((sim / "_SUCCESS.json").read_text())["attempts"]),
            "training_rows": rows,
            "timings_s": local["timings_s"],
            "features_rows_per_s": round(
                json.loads((sim / "_SUCCESS.json").read_text())["attempts"]
                / local["timings_s"]["features"]
            ),
            "fit_rows_per_s": local["rows_per_s_fit"],
            "total_s": round(time.perf_counter() - started, 1),
            "validation_pr_auc": local["validation"]["pr_auc"],
        }
        cluster.up()
        for workers in (1, 2):
            config = yaml.safe_load(Path("configs/training/default.yaml").read_text())
            config.update(
                events=str(sim / "events"),
                labels=str(sim / "labels"),
                registry=str(Path(tmp) / f"ray-{workers}"),
                workers=workers,
                cpus_per_worker=2 / workers,
            )
            path = Path(tmp) / f"retrain-{workers}.yaml"
            path.write_text(yaml.safe_dump(config))
            t0 = time.perf_counter()
            code = cluster.submit(["python", "-m", "trainers.retrain", "--config", str(path)])
            wall = time.perf_counter() - t0
            (version,) = list((Path(tmp) / f"ray-{workers}").iterdir())
            meta = json.loads((version / "metadata.json").read_text())
            results[f"ray_{workers}_workers"] = {
                "exit": code,
                "wall_s": round(wall, 1),
                "timings_s": meta["timings_s"],
                "fit_rows_per_s": round(rows / meta["timings_s"]["fit"]),
                "validation_pr_auc": meta["validation"]["pr_auc"],
            }
    write("training", results, module="bench.training")


if __name__ == "__main__":
    main()
