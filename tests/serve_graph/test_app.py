"""The lean decisions route answers exactly as the FastAPI route it stands in for.

Both apps run in-process over ASGI with the same keys, region and a recording `decide`;
every case (the hostile inputs of the chaos suite, key problems, content types, a valid
attempt with and without trace context) must get the same status, headers that matter,
and byte-identical JSON, and reach `decide` with the same record.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import httpx
import pytest

from serve_graph.app import build_app
from serve_graph.config import ApiKeys, digest, load_region
from tests.chaos.test_bad_input import CASES, VALID

KEY = "test-key-0123456789"
NOW = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _decision(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "decision_id": "d" * 32,
        "transaction_id": record["transaction_id"],
        "action": "step_up",
        "fraud_probability": 0.123456,
        "reasons": [{"kind": "policy", "code": "big_ticket"}],
        "model_version": "v1",
        "policy_version": "champion-1",
        "region": "us-east",
        "degraded": {"rung": 4, "reason": "overload: admission (25 ms queued)"},
        "latency_ms": 1.5,
        "trace_id": None,
        "internal": "not part of the API",  # dropped by the Decision model on both routes
    }


def _app(fast: bool, seen: list) -> Any:
    region = load_region("us-east")

    async def decide(record: dict, arrived: float, trace: str | None) -> dict:
        seen.append((record, trace))
        return _decision(record)

    return build_app(
        decide,
        dict,
        keys=ApiKeys({"test": digest(KEY)}),
        region=lambda: region,
        fast_route=fast,
    )


VALID_NOW = json.dumps(VALID | {"event_time": NOW}).encode()
EXTRA: list[tuple[str, bytes, dict[str, Any]]] = [
    ("valid", VALID_NOW, {}),
    ("valid with trace", VALID_NOW, {"traceparent": f"00-{'a' * 32}-{'b' * 16}-01"}),
    ("json with charset", VALID_NOW, {"Content-Type": "application/json; charset=utf-8"}),
    ("vendor json", VALID_NOW, {"Content-Type": "application/vnd.checkout+json"}),
    ("no content type", VALID_NOW, {"Content-Type": ""}),
    ("form content type", VALID_NOW, {"Content-Type": "application/x-www-form-urlencoded"}),
    ("no key", VALID_NOW, {"X-API-Key": ""}),
    ("wrong key", VALID_NOW, {"X-API-Key": "wrong"}),
    ("non-ascii key", VALID_NOW, {"X-API-Key": "clé".encode()}),
    ("malformed JSON, no key", b'{"amount": ', {"X-API-Key": ""}),
    ("bad field, no key", json.dumps(VALID | {"amount": -1}).encode(), {"X-API-Key": ""}),
    ("empty body, no key", b"", {"X-API-Key": ""}),
    ("NUL bytes", b"\x00\x00\x00\x00\x00", {}),
    ("invalid UTF-8", b'{"amount": "\xff\xfe"}', {}),
    ("deep nesting", b"[" * 8_000, {}),
    ("UTF-16 JSON", json.dumps(VALID | {"event_time": NOW}).encode("utf-16"), {}),
]
ALL = [(c[0], c[1], c[2]) for c in CASES if c[3] != 413] + EXTRA


async def _exchange(app: Any, body: bytes, headers: dict[str, str]) -> httpx.Response:
    sent = {"X-API-Key": KEY, "Content-Type": "application/json"} | headers
    sent = {k: v for k, v in sent.items() if v != ""}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        return await client.post("/v1/decisions", content=body, headers=sent)


@pytest.mark.parametrize("case, body, headers", ALL, ids=[c[0] for c in ALL])
def test_the_lean_route_answers_as_fastapi_does(case, body, headers) -> None:
    seen_fast: list = []
    seen_ref: list = []
    fast = asyncio.run(_exchange(_app(True, seen_fast), body, headers))
    ref = asyncio.run(_exchange(_app(False, seen_ref), body, headers))
    assert (fast.status_code, fast.json()) == (ref.status_code, ref.json()), case
    assert fast.headers["content-type"] == ref.headers["content-type"]
    assert fast.content == ref.content
    assert seen_fast == seen_ref  # the same record and trace reached the pipeline
    if case.startswith("valid"):
        assert fast.status_code == 200 and "internal" not in fast.json()


def test_other_routes_and_methods_still_go_to_fastapi() -> None:
    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=_app(True, []))
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            headers = {"X-API-Key": KEY}
            return [
                (await client.get("/v1/decisions", headers=headers)).status_code,
                (await client.get("/healthz", headers=headers)).status_code,
                (await client.post("/v1/decisions/", headers=headers)).status_code,
                (await client.get("/openapi.json", headers=headers)).status_code,
            ]

    assert asyncio.run(run()) == [405, 200, 307, 200]
