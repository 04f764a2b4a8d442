"""The checkout-side client: region failover and the static fail-safe policy.

Checkout calls its home region first and, on a timeout, a 5xx or a refused connection, the
next region — within one overall budget (also on 404, a region whose application is gone,
and 429). When no region answers it applies the static
fail-safe policy (approve small amounts, step up the rest) and records the attempt for later
review, so checkout never waits on us and no attempt goes unreviewed. 4xx answers are the
caller's mistake and are returned as they are, never retried elsewhere.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serve_graph.decision_log import HASHED_FIELDS, keyed_hash

# not the caller's mistake: the region has no such route (an application being replaced or
# removed) or is shedding load, so another region may well answer
RETRY_ELSEWHERE = (404, 429)


class CheckoutClient:
    """Decide one attempt via the first region that answers in time."""

    def __init__(
        self,
        regions: Sequence[str],
        api_key: str,
        budget_ms: float = 120.0,
        fail_safe_approve_below_usd: float = 50.0,
        review_queue: str | Path = ".run/review-queue.jsonl",
    ) -> None:
        if not regions:
            raise ValueError("at least one region URL is needed")
        self.regions = [r.rstrip("/") for r in regions]
        self.api_key = api_key
        self.budget_s = budget_ms / 1000
        self.approve_below = fail_safe_approve_below_usd
        self.review_queue = Path(review_queue)
        self._lock = threading.Lock()

    def decide(self, attempt: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        errors = []
        for i, region in enumerate(self.regions):
            left = self.budget_s - (time.monotonic() - started)
            if left <= 0.005:
                break
            # leave later regions a share of the budget
            timeout = left if i == len(self.regions) - 1 else left / (len(self.regions) - i)
            try:
                status, body = self._post(region, attempt, max(timeout, 0.005))
            except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
                errors.append(f"{region}: {exc}")
                continue
            if status < 500 and status not in RETRY_ELSEWHERE:
                return dict(body, served_by=region, http_status=status)
            errors.append(f"{region}: HTTP {status}")
        return self._fail_safe(attempt, errors)

    def _post(
        self, region: str, attempt: dict[str, Any], timeout: float
    ) -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(
            f"{region}/v1/decisions",
            data=json.dumps(attempt, default=str).encode(),
            headers={"Content-Type": "application/json", "X-API-Key": self.api_key},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code >= 500:
                return exc.code, {}
            return exc.code, json.loads(exc.read() or b"{}")

    def _fail_safe(self, attempt: dict[str, Any], errors: list[str]) -> dict[str, Any]:
        amount = float(attempt.get("amount_usd") or attempt.get("amount") or 0.0)
        action = "approve" if amount < self.approve_below else "step_up"
        entry = {
            k: (keyed_hash(str(v)) if k in HASHED_FIELDS and v is not None else v)
            for k, v in attempt.items()
        }
        entry = {"queued_at": time.time(), "action": action, "errors": errors, "attempt": entry}
        with self._lock:
            self.review_queue.parent.mkdir(parents=True, exist_ok=True)
            with open(self.review_queue, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry, default=str) + "\n")
        return {
            "action": action,
            "fail_safe": True,
            "decision_id": None,
            "reasons": [{"kind": "fail_safe", "code": "no_region_answered"}],
            "errors": errors,
            "served_by": None,
        }
