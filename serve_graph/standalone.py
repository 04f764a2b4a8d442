"""The whole pipeline in one process behind uvicorn: the baseline and a simple deployment.

    uvicorn --factory serve_graph.standalone:create_app --port 8100

Same stages, same app, no Ray: what a team would build without Serve, and the floor the
Ray Serve topologies are benchmarked against (bench/serving.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from serve_graph.app import MicroBatcher, build_app
from serve_graph.config import load_region
from serve_graph.pipeline import DecisionPipeline


def health_of(pipeline: DecisionPipeline) -> dict[str, Any]:
    champion = pipeline.scorer.champion
    return {
        "status": "ok",
        "region": pipeline.region.name,
        "model_version": getattr(champion, "version", champion),
        "policy_version": pipeline.policy.version,
        "online_store": "up" if pipeline.features.available() else "down (fallback)",
    }


def create_app(
    region: str | None = None, registry: str | None = None, log_dir: str | None = None
) -> FastAPI:
    config = load_region(region or os.environ.get("CHECKOUT_RISK_REGION", "us-east"))
    log_dir = log_dir or os.environ.get("CHECKOUT_RISK_LOG_DIR")
    pipeline = DecisionPipeline(
        config, Path(registry) if registry else None, log_dir=Path(log_dir) if log_dir else None
    )
    pipeline.warm_up()
    batcher = MicroBatcher(pipeline.decide, pipeline.after, config.max_batch, config.batch_wait_ms)

    async def decide(record: dict, arrived: float, trace: str | None) -> dict:
        return await batcher.submit(record, arrived, trace)

    app = build_app(decide, lambda: health_of(pipeline), title=f"checkout-risk {config.name}")
    app.state.pipeline = pipeline
    return app
