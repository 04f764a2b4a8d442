"""Security promises, checked against the served app.

Every route needs an API key — the schema and the docs too; admin operations (reload,
promote, rollback) are not routes at all; and no raw card number or e-mail address sent to
us, in any field, ends up in Redis, the decision log, or the process output.
"""

from __future__ import annotations

import re

import httpx
import pytest

from feature_views.contract import ATTEMPT_FIELDS
from serve_graph.app import build_app
from serve_graph.config import ApiKeys, digest
from tests.chaos.conftest import decisions_in_log
from tests.chaos.load import LoadDriver, default_attempt

pytestmark = pytest.mark.chaos

PUBLIC_ROUTES = {
    ("POST", "/v1/decisions"),
    ("GET", "/healthz"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
}


def _route_table() -> set[tuple[str, str]]:
    """Every route the public app declares, documented in the schema or not."""

    async def decide(record: dict, arrived: float, trace: str | None) -> dict:
        raise AssertionError("never called")

    app = build_app(decide, dict, keys=ApiKeys({}))
    return {(m, r.path) for r in app.routes for m in getattr(r, "methods", ()) if m != "HEAD"}


def test_the_public_app_has_no_admin_routes(quiet_app) -> None:
    assert _route_table() == PUBLIC_ROUTES
    app, _ = quiet_app
    with httpx.Client(base_url=app.base, headers={"X-API-Key": app.key}, timeout=10) as client:
        schema = client.get("/openapi.json").json()
        assert set(schema["paths"]) == {"/v1/decisions", "/healthz"}
        for path in ("/reload", "/promote", "/rollback", "/admin", "/v1/models/champion"):
            for method in ("GET", "POST", "PUT"):
                assert client.request(method, path).status_code in (404, 405), (method, path)
        assert client.get("/redoc").status_code == 404


@pytest.mark.parametrize("method, path", sorted(PUBLIC_ROUTES))
@pytest.mark.parametrize(
    "key",
    [None, "", "wrong-key", "dev_", "x" * 4000, "clé-ünïcode"],
    ids=["missing", "empty", "wrong", "prefix", "long", "non-ascii"],
)
def test_every_route_refuses_a_missing_or_wrong_key(quiet_app, method, path, key) -> None:
    app, _ = quiet_app
    headers = {} if key is None else {"X-API-Key": key.encode()}  # raw UTF-8 bytes
    r = httpx.request(
        method,
        app.base + path,
        headers=headers,
        content=b'{"not": "even valid"',
        timeout=10,
    )
    assert r.status_code == 401, (r.status_code, r.text[:200])
    assert "API key" in r.json()["detail"]
    assert "openapi" not in r.text and "swagger" not in r.text.lower()


def test_a_stored_digest_is_not_a_key_and_the_key_works(quiet_app) -> None:
    app, _ = quiet_app
    stolen = httpx.get(f"{app.base}/healthz", headers={"X-API-Key": digest(app.key)}, timeout=10)
    assert stolen.status_code == 401
    ok = httpx.get(f"{app.base}/docs", headers={"X-API-Key": app.key}, timeout=10)
    assert ok.status_code == 200 and "/v1/decisions" in ok.text  # the schema is inlined


def test_keys_map_to_their_own_client_only() -> None:
    keys = ApiKeys({"checkout-web": digest("key-web"), "checkout-app": digest("key-app")})
    assert keys.client_for("key-web") == "checkout-web"
    assert keys.client_for("key-app") == "checkout-app"
    assert keys.client_for("key-web ") is None and keys.client_for(digest("key-web")) is None
    assert keys.client_for(None) is None and keys.client_for("") is None


# ---- no raw card numbers or e-mails anywhere -------------------------------------------

PANS = ["4111111111111111", "5555555555554444", "378282246310005", "6011111111111117"]
EMAILS = ["alice.smith@example.com", "bob+shop@mail.example.org"]


def _leaks(pan_or_email: str) -> list[str]:
    return [pan_or_email] + (
        [" ".join(re.findall(".{1,4}", pan_or_email))] if pan_or_email.isdigit() else []
    )


def _sensitive_variants() -> list[str]:
    out = []
    for pan in PANS:
        out += [pan, " ".join(re.findall(".{1,4}", pan)), "-".join(re.findall(".{1,4}", pan))]
        out += [f"ref {pan}", f"card:{pan}"]
    for email in EMAILS:
        out += [email, f"contact {email}"]
    return out


def test_no_raw_card_number_or_email_reaches_redis_logs_or_output(quiet_app, scale) -> None:
    app, redis = quiet_app
    fields = [f.name for f in ATTEMPT_FIELDS if str(f.arrow_type) == "string"]
    fields.remove("currency")
    refused = 0
    with httpx.Client(timeout=10, headers={"X-API-Key": app.key}) as client:
        for i, value in enumerate(_sensitive_variants()):
            for field in fields:
                body = default_attempt(i) | {field: value}
                r = client.post(app.decisions_url, json=body)
                assert r.status_code == 422, (field, value, r.text[:300])
                assert value not in r.text  # the refusal does not echo it back either
                refused += 1
    # ordinary traffic alongside, so the scan covers a store and log that are in use
    result = LoadDriver(app.decisions_url, app.key, scale.rate_per_s, scale.phase_s).run()
    assert not result.errors
    assert {a.decision_id for a in result.ok} <= decisions_in_log(app.log_dir)

    needles = [n.encode() for v in PANS + EMAILS for n in _leaks(v)]
    client = redis.client()
    blobs: list[bytes] = []
    for key in client.scan_iter(count=1000):
        blobs.append(key)
        kind = client.type(key)
        if kind == b"string":
            blobs.append(client.get(key) or b"")
        elif kind == b"hash":
            blobs += [x for kv in client.hgetall(key).items() for x in kv]
        elif kind == b"zset":
            blobs += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind in (b"list", b"set"):
            blobs += list(client.lrange(key, 0, -1) if kind == b"list" else client.smembers(key))
    assert len(blobs) > 100  # the store is in use: the scan is looking at something
    store = b"\n".join(blobs)
    log = b"\n".join(p.read_bytes() for p in app.log_dir.rglob("segment-*.jsonl"))
    output = app.output.read_bytes()
    assert log and output and refused > 100
    for needle in needles:
        assert needle not in store, needle
        assert needle not in log, needle
        assert needle not in output, needle
