"""The Ray Train retraining job, submitted with `ray job submit` to a real local cluster."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from checkout_risk import cluster


def test_ray_job_trains_averages_shards_and_registers(ray_cluster, training_sim, tmp_path) -> None:
    registry = tmp_path / "registry"
    config = yaml.safe_load(open("configs/training/default.yaml"))
    config.update(
        events=str(training_sim / "events"),
        labels=str(training_sim / "labels"),
        registry=str(registry),
        workers=2,
        cpus_per_worker=0.5,
        catboost={"iterations": 150, "learning_rate": 0.15, "depth": 5},
    )
    path = tmp_path / "retrain.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [
            str(cluster._ray()),
            "job",
            "submit",
            "--address",
            cluster.JOBS_URL,
            "--working-dir",
            ".",
            "--",
            "python",
            "-m",
            "trainers.retrain",
            "--config",
            str(path),
        ],
        env=cluster.ray_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    versions = [p for p in registry.iterdir() if p.is_dir()]
    assert len(versions) == 1
    meta = json.loads((versions[0] / "metadata.json").read_text())
    assert meta["trained_with"] == "ray_train" and meta["ray"]["workers"] == 2
    assert meta["validation"]["pr_auc"] > 0.3
    assert (
        meta["validation"]["cost_per_1000"]["model"]
        < meta["validation"]["cost_per_1000"]["rules_only"]
    )
    assert (versions[0] / "model.cbm").exists() and (versions[0] / "fallback.cbm").exists()


def test_bad_config_is_one_clear_error(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("events: relative/path\nlabels: /x\nregistry: /y\n")
    result = subprocess.run(
        [sys.executable, "-m", "trainers.retrain", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "absolute path" in result.stderr
