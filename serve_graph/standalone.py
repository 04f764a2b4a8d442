"""The whole pipeline in one process behind uvicorn: the baseline and a simple deployment.

    uvicorn --factory serve_graph.standalone:create_app --port 8100
    python -m serve_graph.standalone --port 8100 --registry models --redis-url redis://...

Same stages, same app, no Ray: what a team would build without Serve, and the floor the
Ray Serve topologies are benchmarked against (bench/serving.py). The chaos suite runs it
as a child process so it can slow, kill and restart what it depends on — or the process
itself. On a clean shutdown (SIGTERM, SIGINT) the decision log's open segment is sealed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from serve_graph.app import (
    MicroBatcher,
    build_app,
    freeze_startup_heap,
    shorten_switch_interval,
)
from serve_graph.config import load_region
from serve_graph.pipeline import DecisionPipeline


def health_of(pipeline: DecisionPipeline) -> dict[str, Any]:
    champion = pipeline.scorer.champion
    error = getattr(pipeline.scorer, "load_error", None)  # a registry change that failed
    return {
        "status": "ok",
        "region": pipeline.region.name,
        "model_version": getattr(champion, "version", champion),
        "policy_version": pipeline.policy.version,
        "online_store": "up" if pipeline.features.available() else "down (fallback)",
    } | ({"model_load_error": error} if error else {})


def create_app(
    region: str | None = None,
    registry: str | None = None,
    log_dir: str | None = None,
    redis_url: str | None = None,
) -> FastAPI:
    """`redis_url` is the server (its database is the region's); default REDIS_URL/embedded."""
    config = load_region(region or os.environ.get("CHECKOUT_RISK_REGION", "us-east"))
    log_dir = log_dir or os.environ.get("CHECKOUT_RISK_LOG_DIR")
    pipeline = DecisionPipeline(
        config,
        Path(registry) if registry else None,
        log_dir=Path(log_dir) if log_dir else None,
        redis_url=redis_url,
    )
    pipeline.warm_up()
    freeze_startup_heap()
    shorten_switch_interval()
    batcher = MicroBatcher.for_pipeline(pipeline)

    async def decide(record: dict, arrived: float, trace: str | None) -> dict:
        return await batcher.submit(record, arrived, trace)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        pipeline.close()

    app = build_app(
        decide,
        lambda: health_of(pipeline),
        title=f"checkout-risk {config.name}",
        region=lambda: pipeline.region,
        lifespan=lifespan,
    )
    app.state.pipeline = pipeline
    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Serve one region in this process.")
    parser.add_argument("--region", default=None, help="region name or YAML (default us-east)")
    parser.add_argument("--registry", default=None, help="model registry folder")
    parser.add_argument("--log-dir", default=None, help="decision log folder")
    parser.add_argument("--redis-url", default=None, help="online store (default REDIS_URL)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args(argv)
    app = create_app(args.region, args.registry, args.log_dir, args.redis_url)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
