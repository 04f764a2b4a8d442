"""An open-loop HTTP load generator: requests leave at scheduled times, not when the last
one came back.

A closed-loop client slows down when the server does and so hides queueing ("coordinated
omission"). Here request i is due at ``t0 + i / rate``; its latency is measured from that
due time, so time spent waiting for a free connection on our side counts too. Every answer
is parsed: status, latency, and the decision's degradation rung.

    python -m bench.load --url http://127.0.0.1:8000/us-east --rate 300 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TIMEOUT_S = 2.0


@dataclass
class StepResult:
    """One offered rate held for `duration_s`."""

    offered_rps: float
    duration_s: float
    sent: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    rungs: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    elapsed_s: float = 0.0
    # per request: (due, seconds after the start), latency ms, status, rung ("" if none)
    timeline: list[tuple[float, float, str, str]] = field(default_factory=list)
    # the service's own latency_ms of each decision (arrival to decision): what the server
    # controls, without this process's scheduling or the connection
    server_ms: list[float] = field(default_factory=list)
    # time.perf_counter() at the timeline's zero: where an event timed by another thread
    # (a fault injected during the step) falls on it
    started: float = 0.0

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms or [np.nan], dtype=float)
        server = np.asarray(self.server_ms, dtype=float)
        ok = self.statuses.get("200", 0)
        degraded = sum(v for k, v in self.rungs.items() if k != "1")
        return {
            "offered_rps": round(self.offered_rps, 1),
            "achieved_rps": round(ok / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "sent": self.sent,
            "ok": ok,
            "errors": self.errors,
            "statuses": dict(self.statuses),
            "degraded_share": round(degraded / ok, 4) if ok else None,
            "rungs": dict(self.rungs),
            **{f"p{q:g}_ms": round(float(np.nanpercentile(lat, q)), 2) for q in (50, 90, 99, 99.9)},
            "max_ms": round(float(np.nanmax(lat)), 2),
            "p99_server_ms": round(float(np.percentile(server, 99)), 2) if self.server_ms else None,
            "max_server_ms": round(max(self.server_ms), 2) if self.server_ms else None,
        }

    def by_second(self) -> list[dict[str, Any]]:
        """The step second by second, by when each request was due: whether a tail is the
        onset of a load (a queue built before admission reacted) or lasts the whole step."""
        if not self.timeline:
            return []
        due = np.asarray([t[0] for t in self.timeline])
        lat = np.asarray([t[1] for t in self.timeline])
        degraded = np.asarray([t[2] == "200" and t[3] not in ("", "1") for t in self.timeline])
        failed = np.asarray([t[2] != "200" for t in self.timeline])
        seconds = np.floor(due).astype(int)
        out = []
        for second in np.unique(seconds):
            at = seconds == second
            out.append(
                {
                    "second": int(second),
                    "sent": int(at.sum()),
                    "p50_ms": round(float(np.percentile(lat[at], 50)), 1),
                    "p99_ms": round(float(np.percentile(lat[at], 99)), 1),
                    "degraded_share": round(float(degraded[at].mean()), 3),
                    "errors": int(failed[at].sum()),
                }
            )
        return out


async def run_step(
    url: str,
    key: str,
    body: Callable[[int], bytes],
    rate: float,
    duration_s: float,
    connections: int = 256,
    on_answer: Callable[[dict[str, Any]], None] | None = None,
) -> StepResult:
    """Offer `rate` requests/s for `duration_s` to ``{url}/v1/decisions``.

    `on_answer` sees every decision received (the chaos tests count them against the log).
    The collector is off while the step runs: a full collection of this process's heap
    (the replayed attempts, pandas) paused it 25-47 ms a step here, and every request due
    meanwhile was counted as that much slower.
    """
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        return await _run_step(url, key, body, rate, duration_s, connections, on_answer)
    finally:
        gc.enable()
        gc.unfreeze()
        gc.collect()


async def _run_step(
    url: str,
    key: str,
    body: Callable[[int], bytes],
    rate: float,
    duration_s: float,
    connections: int,
    on_answer: Callable[[dict[str, Any]], None] | None,
) -> StepResult:
    import aiohttp

    result = StepResult(rate, duration_s)
    total = max(1, int(rate * duration_s))
    headers = {"Content-Type": "application/json", "X-API-Key": key}
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    t0 = time.perf_counter() + 0.05
    result.started = t0
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int, due: float) -> None:
            try:
                async with session.post(
                    f"{url}/v1/decisions", data=body(i), headers=headers
                ) as resp:
                    payload = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, asyncio.TimeoutError):
                result.errors += 1
                result.statuses["timeout/conn"] = result.statuses.get("timeout/conn", 0) + 1
                result.timeline.append((due - t0, (time.perf_counter() - due) * 1000, "conn", ""))
                return
            latency = (time.perf_counter() - due) * 1000
            result.latencies_ms.append(latency)
            result.statuses[str(status)] = result.statuses.get(str(status), 0) + 1
            if status != 200:
                result.errors += 1
                result.timeline.append((due - t0, latency, str(status), ""))
                return
            answer = json.loads(payload)
            degraded = answer.get("degraded")
            rung = str(degraded["rung"]) if degraded else "1"
            result.rungs[rung] = result.rungs.get(rung, 0) + 1
            result.timeline.append((due - t0, latency, "200", rung))
            if isinstance(answer.get("latency_ms"), (int, float)):
                result.server_ms.append(float(answer["latency_ms"]))
            if on_answer is not None:
                on_answer(answer)

        tasks: list[asyncio.Task] = []
        i = 0
        while i < total:
            now = time.perf_counter()
            due = t0 + i / rate
            if due > now:
                await asyncio.sleep(due - now)
                continue
            while i < total and t0 + i / rate <= now:  # everything due by now leaves now
                tasks.append(asyncio.create_task(one(i, t0 + i / rate)))
                i += 1
        result.sent = total
        await asyncio.gather(*tasks)
        result.elapsed_s = max(duration_s, time.perf_counter() - t0)
    return result


def sustainable(s: dict[str, Any], budget_ms: float = 120.0) -> bool:
    """Served in full: every answer 200 on the full path, within budget, at the offered rate."""
    return (
        s["errors"] == 0
        and s["achieved_rps"] >= 0.95 * s["offered_rps"]
        and s["p99_ms"] <= budget_ms
        and (s["degraded_share"] or 0.0) <= 0.01
    )


async def find_max(
    url: str,
    key: str,
    body: Callable[[int], bytes],
    start_rps: float,
    factor: float,
    step_s: float,
    log: Callable[[str], None] = print,
    ceiling_rps: float = 20_000,
    floor_rps: float = 5.0,
    refinements: int = 2,
) -> tuple[float, list[dict[str, Any]]]:
    """Raise the offered rate by `factor` until a rate fails twice in a row (the machine is
    shared: one stall should not end the search), then bisect `refinements` times between
    the last good and the first bad rate. When the first rate fails, lower it by `factor`
    (down to `floor_rps`) until one holds.

    The ratios the benchmark reports are only as sharp as this bracket: with one
    bisection a maximum was known to within a factor of 1.2 (two topologies a grid step
    apart read as 0.595 or 0.71 of each other); two bring that to 1.1 for ~10 s more."""
    steps: list[dict[str, Any]] = []

    async def attempt(rate: float) -> bool:
        for _ in range(2):
            s = (await run_step(url, key, body, rate, step_s)).summary()
            s["sustainable"] = sustainable(s)
            steps.append(s)
            log(_line(s))
            await asyncio.sleep(1.0)  # let queues and the after-response work drain
            if s["sustainable"]:
                return True
        return False

    good, bad = 0.0, None
    rate = start_rps
    while rate <= ceiling_rps:
        if not await attempt(rate):
            bad = rate
            break
        good = rate
        rate *= factor
    # the first rate already failed: step down instead of reporting a maximum of 0
    while good == 0.0 and bad is not None and bad / factor >= floor_rps:
        rate = bad / factor
        if await attempt(rate):
            good = rate
        else:
            bad = rate
    if bad is not None and good > 0:
        for _ in range(refinements):
            mid = (good + bad) / 2
            if await attempt(mid):
                good = mid
            else:
                bad = mid
    return good, steps


def _line(s: dict[str, Any]) -> str:
    return (
        f"  offered {s['offered_rps']:>7.0f}/s  achieved {s['achieved_rps']:>7.1f}/s  "
        f"p50 {s['p50_ms']:>7.1f}  p99 {s['p99_ms']:>7.1f}  max {s['max_ms']:>7.1f} ms  "
        f"errors {s['errors']}  degraded {s['degraded_share']}"
        + ("" if s.get("sustainable", True) else "  <- not sustainable")
    )


def bodies(attempts: Sequence[dict[str, Any]], prefix: str) -> Callable[[int], bytes]:
    """Request i: attempt i (cycling), each call under a transaction id never used before.

    Ids count across every step that shares this generator: a repeated id would be an
    idempotent replay, answered from memory, and flatter the server.
    """
    templates = [json.dumps(dict(a, transaction_id="@@TXID@@"), default=str) for a in attempts]
    serial = itertools.count()

    def body(i: int) -> bytes:
        tx = f"{prefix}-{next(serial)}"
        return templates[i % len(templates)].replace("@@TXID@@", tx).encode()

    return body


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the app's base URL (…/us-east)")
    parser.add_argument("--key", help="API key (default: the local dev key)")
    parser.add_argument("--rate", type=float, required=True, help="offered requests/s")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--data", default="data/sim", help="simulated marketplace to replay")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0:
        parser.error("--rate and --duration must be positive")
    from serve_graph.config import dev_key

    attempts = sample_attempts(args.data, 5_000)
    s = asyncio.run(
        run_step(
            args.url,
            args.key or dev_key(),
            bodies(attempts, f"load-{int(time.time())}"),
            args.rate,
            args.duration,
        )
    ).summary()
    print(json.dumps(s, indent=2))


def sample_attempts(data: str, n: int) -> list[dict[str, Any]]:
    """The last `n` attempts of a simulated marketplace, as API request bodies."""
    import pandas as pd

    from feature_views.tables import date_partitions, read_attempts

    parts = date_partitions(f"{data}/events")
    frames = []
    for part in reversed(parts):
        frames.append(read_attempts(part))
        if sum(len(f) for f in frames) >= n:
            break
    df = pd.concat(frames[::-1]).tail(n)
    out = []
    for rec in df.to_dict("records"):
        out.append(
            {
                k: (v.isoformat() if isinstance(v, pd.Timestamp) else v)
                for k, v in rec.items()
                if v is not None and v == v
            }
        )
    return out


if __name__ == "__main__":
    main()
