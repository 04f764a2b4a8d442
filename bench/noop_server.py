"""The no-op server: the serving web layer with no risk work behind it.

``python -m bench.serving`` runs this app in its own uvicorn process, beside the three
topologies, and offers it the same load at the same rates. It parses, authenticates and
validates each attempt exactly as the service does (``serve_graph.app.build_app``) and
answers a fixed approval, so its latency is what this machine, this load generator and
the HTTP layer cost before any feature read, score or log write. On a shared 2-core
machine that has a tail of its own, and a p99 goal for the full path can be no
tighter than it.

    uvicorn --factory bench.noop_server:create_app --port 8101
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import FastAPI

from serve_graph.app import build_app


def create_app() -> FastAPI:
    async def decide(record: dict, arrived: float, trace: str | None) -> dict[str, Any]:
        return {
            "decision_id": str(uuid.uuid4()),
            "transaction_id": record["transaction_id"],
            "action": "approve",
            "fraud_probability": None,
            "reasons": [],
            "model_version": None,
            "policy_version": "no-op",
            "region": "no-op",
            "degraded": None,
            "latency_ms": round((time.monotonic() - arrived) * 1000, 3),
        }

    return build_app(decide, lambda: {"status": "ok"}, title="checkout-risk no-op")
