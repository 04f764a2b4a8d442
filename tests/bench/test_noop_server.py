"""The no-op server the serving benchmark measures its floor against."""

from __future__ import annotations

import asyncio
import json

import httpx

from bench.noop_server import create_app
from serve_graph.config import dev_key
from tests.chaos.test_bad_input import VALID


def _post(body: bytes, key: str | None) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app())
        headers = {"Content-Type": "application/json"} | ({"X-API-Key": key} if key else {})
        async with httpx.AsyncClient(transport=transport, base_url="http://noop") as client:
            return await client.post("/v1/decisions", content=body, headers=headers)

    return asyncio.run(go())


def test_it_checks_requests_as_the_service_does_and_approves_without_risk_work() -> None:
    ok = _post(json.dumps(VALID).encode(), dev_key())
    assert ok.status_code == 200
    decision = ok.json()
    assert decision["transaction_id"] == VALID["transaction_id"]
    assert decision["action"] == "approve" and decision["fraud_probability"] is None
    assert decision["latency_ms"] >= 0
    assert _post(json.dumps(VALID | {"amount": -1}).encode(), dev_key()).status_code == 422
    assert _post(json.dumps(VALID).encode(), None).status_code == 401


def test_the_same_app_is_a_serve_application_for_the_benchmarks_replica() -> None:
    """`bench.noop_server:serve_app` is what the serving benchmark deploys at /noop: an
    application builder taking Serve's args, binding the one no-op replica under the
    deployment name the benchmark's config and its CPU accounting look for."""
    from ray import serve

    from bench.noop_server import NoopReplica, serve_app

    app = serve_app({})
    assert isinstance(app, serve.Application)
    assert NoopReplica.name == "NoopReplica"
