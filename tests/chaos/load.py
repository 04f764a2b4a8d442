"""An open-loop load driver: attempts at a fixed rate, every answer recorded.

Open loop on purpose: a closed loop (send the next request when the last one answered)
slows down exactly when the service does and hides the latency a checkout would see.
Here attempt ``i`` is sent at ``start + i / rate`` whatever happened before, and each
answer is kept with its status, client-side latency, degradation rung and decision id, so
chaos tests can assert on every answer and count decisions against the decision log.

Works against any HTTP endpoint speaking ``POST /v1/decisions``: the single-process app,
or a Ray Serve application (the Ray suite reuses it).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Answer:
    """One attempt as the client saw it. ``status`` 0 means no HTTP answer at all."""

    seq: int
    sent_s: float  # seconds since the run started (scheduled send time)
    transaction_id: str
    status: int
    latency_ms: float
    rung: int | None = None  # 1 full path; 2-4 degraded (None when there was no decision)
    degraded_reason: str | None = None
    decision_id: str | None = None
    action: str | None = None
    server_ms: float | None = None  # the service's own latency_ms (from arrival to decision)
    error: str | None = None


@dataclass
class LoadResult:
    answers: list[Answer] = field(default_factory=list)
    rate_per_s: float = 0.0
    duration_s: float = 0.0

    @property
    def ok(self) -> list[Answer]:
        return [a for a in self.answers if a.status == 200]

    @property
    def errors(self) -> list[Answer]:
        return [a for a in self.answers if a.status != 200]

    @property
    def worst_ms(self) -> float:
        return max((a.latency_ms for a in self.answers), default=0.0)

    @property
    def worst_server_ms(self) -> float:
        return max((a.server_ms or 0.0 for a in self.answers), default=0.0)

    def percentile_ms(self, q: float) -> float:
        values = sorted(a.latency_ms for a in self.answers)
        if not values:
            return 0.0
        return values[min(len(values) - 1, int(q / 100 * len(values)))]

    def between(self, start_s: float, end_s: float) -> list[Answer]:
        """Answers to attempts sent in ``[start_s, end_s)`` seconds after the start."""
        return [a for a in self.answers if start_s <= a.sent_s < end_s]

    def summary(self) -> dict[str, Any]:
        rungs: dict[int, int] = {}
        for a in self.ok:
            rungs[a.rung or 1] = rungs.get(a.rung or 1, 0) + 1
        return {
            "attempts": len(self.answers),
            "answers_200": len(self.ok),
            "errors": len(self.errors),
            "status_5xx": sum(1 for a in self.answers if a.status >= 500),
            "worst_ms": round(self.worst_ms, 1),
            "worst_server_ms": round(self.worst_server_ms, 1),
            "p99_ms": round(self.percentile_ms(99), 1),
            "p50_ms": round(self.percentile_ms(50), 1),
            "rungs": dict(sorted(rungs.items())),
            "rate_per_s": self.rate_per_s,
            "duration_s": self.duration_s,
        }


def default_attempt(seq: int) -> dict[str, Any]:
    """A valid attempt with a fresh transaction id; cards and merchants repeat."""
    now = time.time()
    return {
        "transaction_id": f"chaos-{uuid.uuid4().hex}",
        "event_time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + "Z",
        "card_id": f"tok_chaos_{seq % 97}",
        "shopper_id": f"shopper_chaos_{seq % 89}",
        "device_id": f"dev_chaos_{seq % 83}",
        "merchant_id": f"m{seq % 50}",
        "amount": 5.0 + (seq * 37) % 400,
        "currency": "USD",
        "card_country": "US",
        "ip_country": "US" if seq % 7 else "BR",
        "billing_country": "US",
        "shipping_country": "US",
        "region": "us-east",
    }


class LoadDriver:
    """Sends ``rate_per_s`` attempts per second to ``url`` for ``duration_s`` seconds."""

    def __init__(
        self,
        url: str,
        api_key: str,
        rate_per_s: float,
        duration_s: float,
        make_attempt: Callable[[int], dict[str, Any]] = default_attempt,
        timeout_s: float = 5.0,
    ) -> None:
        self.url, self.api_key = url, api_key
        self.rate_per_s, self.duration_s = rate_per_s, duration_s
        self.make_attempt, self.timeout_s = make_attempt, timeout_s
        self.result = LoadResult(rate_per_s=rate_per_s, duration_s=duration_s)
        self._thread: threading.Thread | None = None
        self.started = threading.Event()

    def run(self) -> LoadResult:
        """Drive the whole run in this thread and return every answer."""
        asyncio.run(self._run())
        self.result.answers.sort(key=lambda a: a.seq)
        return self.result

    def start(self) -> LoadDriver:
        """Drive in a background thread (inject faults meanwhile); ``join()`` for the result."""
        self._thread = threading.Thread(target=self.run, name="load-driver", daemon=True)
        self._thread.start()
        self.started.wait(10)
        return self

    def join(self) -> LoadResult:
        assert self._thread is not None
        self._thread.join(self.duration_s + self.timeout_s + 30)
        return self.result

    async def _run(self) -> None:
        n = int(self.rate_per_s * self.duration_s)
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits) as client:
            start = time.monotonic()
            self.t0 = start
            self.started.set()
            tasks = []
            for seq in range(n):
                due = start + seq / self.rate_per_s
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                tasks.append(asyncio.ensure_future(self._one(client, seq, due - start)))
            await asyncio.gather(*tasks)

    async def _one(self, client: httpx.AsyncClient, seq: int, sent_s: float) -> None:
        body = self.make_attempt(seq)
        began = time.monotonic()
        try:
            resp = await client.post(self.url, json=body, headers={"X-API-Key": self.api_key})
        except httpx.HTTPError as exc:
            latency = (time.monotonic() - began) * 1000
            self.result.answers.append(
                Answer(seq, sent_s, body["transaction_id"], 0, latency, error=repr(exc))
            )
            return
        latency = (time.monotonic() - began) * 1000
        answer = Answer(seq, sent_s, body["transaction_id"], resp.status_code, latency)
        if resp.status_code == 200:
            data = resp.json()
            degraded = data.get("degraded") or {}
            answer.rung = degraded.get("rung", 1)
            answer.degraded_reason = degraded.get("reason")
            answer.decision_id = data.get("decision_id")
            answer.action = data.get("action")
            answer.server_ms = data.get("latency_ms")
        else:
            answer.error = resp.text[:300]
        self.result.answers.append(answer)
