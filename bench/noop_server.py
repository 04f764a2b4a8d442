"""The no-op server: the serving web layer with no risk work behind it.

``python -m bench.serving`` runs this app in its own uvicorn process, beside the three
topologies, and offers it the same load at the same rates. It parses, authenticates and
validates each attempt exactly as the service does (``serve_graph.app.build_app``) and
answers a fixed approval, so its latency is what this machine, this load generator and
the HTTP layer cost before any feature read, score or log write. On a shared 2-core
machine that has a tail of its own, and a p99 goal for the full path can be no
tighter than it.

    uvicorn --factory bench.noop_server:create_app --port 8101

The same app also runs as one Ray Serve replica (``serve_app``, an application builder
for ``import_path``), served as the fused decider is: direct ingress behind Serve's
HAProxy. The two side by side separate what Serve's request handling costs a replica
from what the app itself costs, which is the floor of every answer a replica gives, a
shed one included.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import FastAPI
from ray import serve

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


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=256)
@serve.ingress(create_app())
class NoopReplica:
    """The no-op app in a Serve replica, configured as the fused decider's."""


def serve_app(args: dict[str, Any] | None = None) -> Any:
    """The Serve application of the no-op replica (``bench.noop_server:serve_app``)."""
    return NoopReplica.bind()
