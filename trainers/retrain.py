"""Retraining as a Ray job.

    ray job submit --working-dir . -- python -m trainers.retrain \\
        --config configs/training/<name>.yaml

Steps, each on the cluster:

1. point-in-time features for the whole history, by the offline engine in one Ray task
   (it walks time in order, carrying state, so it is one sequential stream);
2. Ray Data preparation: targets from labels known by ``as_of``, the matured training
   window, and the time split into training and validation sets;
3. a Ray Train ``DataParallelTrainer``: each worker fits CatBoost (main and request-only
   fallback) on its shard of the training set with early stopping on the later validation
   window, reporting metrics and its models through ``ray.train.report``;
4. on the driver: shard models averaged (``catboost.sum_models``), calibrated on the
   validation window, evaluated, and written as a new immutable registry version.

Paths in the config must be absolute or URIs: the job runs in an uploaded copy of the
working directory, without the data. Without ``RAY_ADDRESS`` it starts a local Ray.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pydantic
import yaml


class RetrainConfig(pydantic.BaseModel):
    """configs/training/*.yaml"""

    model_config = pydantic.ConfigDict(extra="forbid")
    events: str
    labels: str
    registry: str
    as_of: str | None = None
    train_start: str | None = None
    train_end: str | None = None
    label_coverage: pydantic.confloat(gt=0, lt=1) = 0.9
    valid_days: pydantic.PositiveInt = 7
    workers: pydantic.PositiveInt = 2
    cpus_per_worker: pydantic.PositiveFloat = 1.0
    catboost: dict[str, Any] = {}
    version_prefix: str = "cb"
    decision_log: str | None = None  # served attempts train on their logged vectors

    @pydantic.field_validator("events", "labels", "registry")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if "://" not in value and not os.path.isabs(value):
            raise ValueError(
                f"{value!r} must be an absolute path or a URI (the job runs in a "
                "copy of the working directory)"
            )
        return value


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RetrainConfig:
    raw = yaml.safe_load(Path(path).read_text()) | (overrides or {})
    return RetrainConfig.model_validate(raw)


def _features_task(
    events: str, labels: str, out_dir: str, decision_log: str | None = None
) -> dict[str, Any]:
    """Features for every attempt — as served where logged, else offline — as Parquet."""
    import pandas as pd

    from feature_views.offline import iter_features
    from feature_views.tables import read_attempt_columns
    from trainers.datasets import CONTEXT_COLUMNS, served_features, with_served_features

    served = served_features(decision_log) if decision_log else None
    n_served = 0

    started = time.perf_counter()
    context = read_attempt_columns(
        events, ["transaction_id", *CONTEXT_COLUMNS, "merchant_created_at"]
    )
    rows = 0
    for i, part in enumerate(iter_features(events, labels)):
        if served is not None:
            part, n = with_served_features(part, served)
            n_served += n
        part = part.merge(context, on="transaction_id", how="left")
        created = part.pop("merchant_created_at")
        age = (part["event_time"] - created).dt.total_seconds() / 86_400
        # what merchant age is without the online store (the fallback model's input)
        part["fallback_merchant_age_days"] = age.clip(lower=0).where(created.notna(), -1.0)
        part.to_parquet(f"{out_dir}/part-{i:05d}.parquet", index=False)
        rows += len(part)
    return {
        "rows": rows,
        "seconds": time.perf_counter() - started,
        "served": n_served,
        "first_event": str(pd.read_parquet(f"{out_dir}/part-00000.parquet")["event_time"].min()),
    }


def _train_loop(config: dict[str, Any]) -> None:
    """Ray Train worker: fit both models on this worker's shard, report them."""
    import pandas as pd
    import ray.train

    from trainers.model import fit_booster

    ctx = ray.train.get_context()
    train = pd.concat(
        list(
            ray.train.get_dataset_shard("train").iter_batches(
                batch_format="pandas", batch_size=None
            )
        ),
        ignore_index=True,
    )
    valid = pd.concat(
        list(
            ray.train.get_dataset_shard("valid").iter_batches(
                batch_format="pandas", batch_size=None
            )
        ),
        ignore_index=True,
    )
    threads = max(1, int(config["threads"]))
    started = time.perf_counter()
    main = fit_booster(train, valid, config["features"], config["params"], threads)
    fallback = fit_booster(
        _as_fallback(train),
        _as_fallback(valid),
        config["fallback_features"],
        config["params"],
        threads,
    )
    rank = ctx.get_world_rank()
    with tempfile.TemporaryDirectory() as tmp:
        main.save_model(f"{tmp}/model-rank{rank}.cbm")
        fallback.save_model(f"{tmp}/fallback-rank{rank}.cbm")
        ray.train.report(
            {
                "rank": rank,
                "train_rows": len(train),
                "train_fraud": int(train["is_fraud"].sum()),
                "best_iteration": int(main.get_best_iteration() or 0),
                "fit_seconds": round(time.perf_counter() - started, 2),
            },
            checkpoint=ray.train.Checkpoint.from_directory(tmp),
        )


def _as_fallback(frame: Any) -> Any:
    out = frame.copy()
    out["merchant_age_days"] = out["fallback_merchant_age_days"]
    return out


def run(config: RetrainConfig) -> dict[str, Any]:
    import catboost
    import pandas as pd
    import ray
    from ray.train import Checkpoint, RunConfig, ScalingConfig
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from feature_views.tables import read_attempt_columns, read_labels
    from serve_graph.decisioning import load_costs
    from serve_graph.policy import load_policy
    from trainers.datasets import (
        FALLBACK_FEATURES,
        MODEL_FEATURES,
        TrainingSet,
        check_fraud_counts,
        choose_window,
    )
    from trainers.evaluate import evaluate_scores
    from trainers.model import Calibration, FraudModel, average_boosters, to_pool
    from trainers.registry import write_version
    from trainers.train import REFERENCE_ROWS, metadata_for, reference_sample

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=False)
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="retrain-") as work:
        feature_dir = Path(work) / "features"
        feature_dir.mkdir()
        t0 = time.perf_counter()
        info = ray.get(
            ray.remote(num_cpus=1)(_features_task).remote(
                config.events, config.labels, str(feature_dir), config.decision_log
            )
        )
        timings["features"] = round(time.perf_counter() - t0, 2)

        # Ray Data preparation: targets, maturity window and the time split
        t0 = time.perf_counter()
        labels = read_labels(config.labels)
        attempts = read_attempt_columns(config.events, ["transaction_id", "event_time"])
        attempts["event_time"] = pd.to_datetime(attempts["event_time"], utc=True)
        window = choose_window(
            attempts,
            labels,
            config.train_start,
            config.train_end,
            config.as_of,
            config.valid_days,
            config.label_coverage,
        )
        fraud_at = _fraud_times(labels, window.as_of)
        bounds = window.bounds()
        features = ray.data.read_parquet(str(feature_dir))

        def prepare(batch: pd.DataFrame, lo: str, hi: str) -> pd.DataFrame:
            t = pd.to_datetime(batch["event_time"], utc=True)
            keep = batch[(t >= pd.Timestamp(lo, tz="UTC")) & (t < pd.Timestamp(hi, tz="UTC"))]
            keep = keep.copy()
            keep["is_fraud"] = keep["transaction_id"].isin(fraud_at).astype("int8")
            return keep

        train_ds = features.map_batches(
            prepare,
            batch_format="pandas",
            fn_kwargs={"lo": bounds["train_start"], "hi": bounds["valid_start"]},
        ).materialize()
        valid_ds = features.map_batches(
            prepare,
            batch_format="pandas",
            fn_kwargs={"lo": bounds["valid_start"], "hi": bounds["end"]},
        ).materialize()
        timings["prepare"] = round(time.perf_counter() - t0, 2)

        t0 = time.perf_counter()
        trainer = DataParallelTrainer(
            _train_loop,
            train_loop_config={
                "features": list(MODEL_FEATURES),
                "fallback_features": list(FALLBACK_FEATURES),
                "params": config.catboost,
                "threads": config.cpus_per_worker,
            },
            scaling_config=ScalingConfig(
                num_workers=config.workers, resources_per_worker={"CPU": config.cpus_per_worker}
            ),
            datasets={"train": train_ds, "valid": valid_ds},
            dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
            run_config=RunConfig(
                name=f"retrain-{int(time.time())}", storage_path=str(Path(work) / "ray_train")
            ),
        )
        result = trainer.fit()
        timings["fit"] = round(time.perf_counter() - t0, 2)
        checkpoint: Checkpoint = result.checkpoint
        with checkpoint.as_directory() as ckpt:
            boosters = {}
            for kind in ("model", "fallback"):
                shards = []
                for rank in range(config.workers):
                    b = catboost.CatBoostClassifier()
                    b.load_model(f"{ckpt}/{kind}-rank{rank}.cbm")
                    shards.append(b)
                boosters[kind] = average_boosters(shards)

        valid = valid_ds.to_pandas()
        train_df = train_ds.select_columns(["transaction_id", "event_time", "is_fraud"]).to_pandas()
        check_fraud_counts(train_df, valid)
        models = {}
        for kind, features in (("model", MODEL_FEATURES), ("fallback", FALLBACK_FEATURES)):
            frame = valid if kind == "model" else _as_fallback(valid)
            raw = boosters[kind].predict_proba(to_pool(frame, features))[:, 1]
            models[kind] = FraudModel(
                boosters[kind], tuple(features), Calibration.fit(raw, valid["is_fraud"])
            )
        ts = TrainingSet(train_df, valid, window.as_of, window.maturity, bounds)
        policy, costs = load_policy(), load_costs()
        report = evaluate_scores(
            valid, models["model"].predict(valid), valid["is_fraud"], policy, costs
        )
        fb_report = evaluate_scores(
            valid, models["fallback"].predict(_as_fallback(valid)), valid["is_fraud"], policy, costs
        )
        meta = metadata_for(
            ts,
            models["model"],
            models["fallback"],
            report,
            fb_report,
            config.catboost,
            "ray_train",
            timings,
        )
        meta["ray"] = {
            "workers": config.workers,
            "cpus_per_worker": config.cpus_per_worker,
            "worker_metrics": result.metrics,
            "feature_rows": info["rows"],
        }
        meta["features_as_served"] = info["served"]
        # drift reference: a bounded sample of the training window (train + validation)
        n_train = train_ds.count()
        fraction = min(1.0, 1.2 * REFERENCE_ROWS / max(n_train + len(valid), 1))
        pool = [valid.sample(frac=fraction, random_state=0)] if fraction < 1 else [valid]
        if n_train:
            pool.append(train_ds.random_sample(fraction, seed=0).to_pandas())
        reference = reference_sample(pd.concat(pool, ignore_index=True), models["model"])
        version = f"{config.version_prefix}-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}"
        path = write_version(
            Path(config.registry) / version, models["model"], models["fallback"], meta, reference
        )
    rows = len(train_df) + len(valid)
    return {
        "version": version,
        "path": str(path),
        "training": ts.describe(),
        "validation": meta["validation"],
        "timings_s": timings,
        "rows_per_s_prepare": round(info["rows"] / max(timings["prepare"], 1e-9)),
        "rows_per_s_fit": round(rows / max(timings["fit"], 1e-9)),
    }


def _fraud_times(labels: Any, as_of: Any) -> set[str]:
    from trainers.datasets import targets

    known = labels[labels["label_time"] <= as_of]
    frame = known[["transaction_id"]].drop_duplicates()
    return set(frame["transaction_id"][targets(frame, labels, as_of) == 1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainers.retrain",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="configs/training/<name>.yaml")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value (YAML syntax), e.g. --set workers=1",
    )
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    try:
        config = load_config(args.config, overrides)
    except (OSError, pydantic.ValidationError, yaml.YAMLError) as exc:
        print(f"error: invalid training config {args.config}: {exc}", file=sys.stderr)
        return 2
    from trainers.datasets import DatasetError

    try:
        result = run(config)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
