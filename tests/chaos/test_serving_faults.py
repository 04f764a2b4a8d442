"""Faults under load on the real serving stack: Ray Serve on the local cluster, real Redis.

Each test drives open-loop traffic (``bench/load.py``) at one application, injects one
fault partway through, and checks what checkout is promised: every answer a 200 inside
the budget, degraded answers flagged, recovery without anyone stepping in, and no decision
a client received missing from the decision log. Each test records a row (fault, load,
answers, errors, worst latency, records lost) in ``.run/chaos/serving-faults.json``.

``--chaos-long`` holds the load longer.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from bench.load import bodies, run_step
from feature_views.store import embedded_url, run_dir
from serve_graph.config import dev_key, load_region
from serve_graph.decision_log import iter_records, verify
from serve_graph.deployments import wait_ready
from tests.chaos.conftest import assert_latencies_on_time
from tests.support.serving import (
    BASE,
    app_spec,
    as_body,
    deploy,
    load_history,
    replica_pids,
    shutdown,
)
from trainers.registry import Registry

ROWS: list[dict] = []
# The promise is 120 ms at checkout, network included; the server keeps a margin for that.
# It is checked as the other chaos tests check it (`assert_on_time`): on the service's own
# clock, p99 inside it and nothing past twice it; on the client's clock only "no hang" --
# the load driver shares the 2 cores with Ray, Redis and HAProxy, and a CI run's client
# clock measured 124 ms for a decision whose dead Scorer hop the server stops waiting for
# 85 ms after arrival.
BUDGET_MS = load_region("us-east").deadline_ms


def _on_time(result, summary: dict) -> None:
    assert_latencies_on_time(result.server_ms, result.latencies_ms, BUDGET_MS, summary)


def _long(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--chaos-long", default=False))


@pytest.fixture(scope="module")
def chaos(ray_cluster, trained, training_sim, registry_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("chaos-serving")
    redis_dir = work / "redis"
    url = embedded_url(redis_dir)
    Registry(registry_root).set_stage("v1", "champion", "chaos setup")
    window = load_history(training_sim, trained, url, "us-east")
    load_history(training_sim, trained, url, "eu-west")
    log_dir = work / "decision-log"
    common = {"registry": str(registry_root), "log_dir": str(log_dir), "redis_url": url}
    apps = [
        app_spec("chaos-us", "us-east", "/chaos-us", common),
        app_spec("chaos-eu", "eu-west", "/chaos-eu", common),
        app_spec("chaos-graph", "us-east", "/chaos-graph", common, graph=True),
    ]
    deploy(apps, work / "serve.yaml")
    for route in ("/chaos-us", "/chaos-eu", "/chaos-graph"):
        wait_ready(BASE + route, dev_key(), 240)
    attempts = [as_body(r) for r in window.tail(3000).to_dict("records")]
    yield {
        "work": work,
        "apps": apps,
        "redis_dir": redis_dir,
        "log_dir": log_dir,
        "attempts": attempts,
    }
    shutdown()
    from feature_views.store import stop_embedded

    stop_embedded(redis_dir)
    out = run_dir() / "chaos"
    out.mkdir(parents=True, exist_ok=True)
    (out / "serving-faults.json").write_text(json.dumps(ROWS, indent=2))


def _load(url: str, attempts: list[dict], prefix: str, rate: float, seconds: float, **kw):
    return asyncio.run(
        run_step(url, dev_key(), bodies(attempts, f"{prefix}-{time.time()}"), rate, seconds, **kw)
    )


def _warm(url: str, attempts: list[dict]) -> None:
    """Two seconds of light traffic first: the promise is for a service taking traffic."""
    _load(url, attempts, "warm", 20.0, 2.0)


def _after(delay_s: float, action) -> dict[str, float]:
    """Run `action` in `delay_s`, in a thread; the returned dict gets its start and end
    (``time.perf_counter()``) once it has run, to place it on a load's timeline."""
    when: dict[str, float] = {}

    def run() -> None:
        time.sleep(delay_s)
        when["start"] = time.perf_counter()
        action()
        when["end"] = time.perf_counter()

    threading.Thread(target=run, daemon=True).start()
    return when


def _row(fault: str, rate: float, seconds: float, result, lost: int | str = "n/a", **extra):
    s = result.summary()
    worst = sorted(result.timeline, key=lambda x: -x[1])[:5]
    row = {
        "fault": fault,
        "load": f"{rate:.0f} req/s open loop for {seconds:.0f} s",
        "answers": s["ok"],
        "errors": s["errors"],
        "worst_ms": s["max_ms"],
        "p99_ms": s["p99_ms"],
        "worst_server_ms": s["max_server_ms"],
        "p99_server_ms": s["p99_server_ms"],
        "degraded_share": s["degraded_share"],
        "records_lost": lost,
        "slowest": [(round(t, 2), round(ms, 1), st, r) for t, ms, st, r in worst],
        **extra,
    }
    ROWS.append(row)
    print(json.dumps(row))
    return s


def test_redis_killed_mid_load_then_restarted(chaos, request) -> None:
    """SIGKILL the Redis server under load: every answer 200 in budget, flagged rung 3 while
    it is down, the full path back within seconds of the restart."""
    seconds = 30.0 if _long(request) else 12.0
    rate = 40.0
    kill_at, restart_at = seconds * 0.25, seconds * 0.5
    pid = int((chaos["redis_dir"] / "redis.pid").read_text())
    _warm(f"{BASE}/chaos-us", chaos["attempts"])
    killed = _after(kill_at, lambda: os.kill(pid, signal.SIGKILL))
    restarted = _after(restart_at, lambda: embedded_url(chaos["redis_dir"]))
    result = _load(f"{BASE}/chaos-us", chaos["attempts"], "redis-kill", rate, seconds)
    s = _row(
        "Redis SIGKILLed, restarted after %.0f s" % (restart_at - kill_at), rate, seconds, result
    )
    assert s["errors"] == 0, s
    _on_time(result, s)
    # on the load's own clock: the fault threads start before it, by as long as the load
    # takes to set up (a full collection of this process's heap among it; once over the
    # 0.3 s margin this test used to keep), so their offsets alone misplace the window
    assert "end" in killed and "end" in restarted, (killed, restarted)
    down_from = killed["end"] - result.started + 0.5
    down_to = restarted["start"] - result.started - 0.3
    down = [(round(t, 2), r) for t, _, st, r in result.timeline if down_from < t < down_to]
    assert down and all(r in ("3", "4") for _, r in down), [x for x in down if x[1] not in "34"]
    back = [r for t, _, st, r in result.timeline if t > restarted["end"] - result.started + 3.0]
    assert back and all(r == "1" for r in back[-20:]), back[-20:]  # full path came back


def test_scorer_replica_killed(chaos, request) -> None:
    """SIGKILL the graph's Scorer replica under load: Serve starts another; no request
    fails meanwhile (the decisions fall back to rules, rung 4) and scoring comes back."""
    seconds = 30.0 if _long(request) else 15.0
    rate = 20.0
    (victim,) = replica_pids("chaos-graph", "ScorerDeployment")
    _warm(f"{BASE}/chaos-graph", chaos["attempts"])
    _after(3.0, lambda: os.kill(victim, signal.SIGKILL))
    result = _load(f"{BASE}/chaos-graph", chaos["attempts"], "scorer-kill", rate, seconds)
    s = _row("graph Scorer replica SIGKILLed", rate, seconds, result)
    assert s["errors"] == 0, s
    _on_time(result, s)  # a hung hop gets what is left of the budget, no more
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pids = replica_pids("chaos-graph", "ScorerDeployment")
        if pids and victim not in pids:
            break
        time.sleep(1)
    assert pids and victim not in pids  # Serve replaced the replica
    wait_ready(f"{BASE}/chaos-graph", dev_key(), 120)
    later = _load(f"{BASE}/chaos-graph", chaos["attempts"], "scorer-back", 10.0, 5.0)
    assert later.summary()["errors"] == 0
    assert later.rungs.get("1", 0) > 0  # scored again


def test_a_region_application_removed_the_client_fails_over(chaos, tmp_path) -> None:
    """Delete the us-east application under load: the checkout client moves to eu-west and
    no attempt fails; then the region comes back."""
    from serve_graph.client import CheckoutClient

    client = CheckoutClient(
        [f"{BASE}/chaos-us", f"{BASE}/chaos-eu"],
        dev_key(),
        budget_ms=1000,
        review_queue=tmp_path / "review.jsonl",
    )
    apps = chaos["apps"]
    _after(2.0, lambda: deploy([a for a in apps if a["name"] != "chaos-us"], tmp_path / "s.yaml"))
    outcomes, lat = [], []

    def one(i: int) -> None:
        body = dict(
            chaos["attempts"][i % len(chaos["attempts"])], transaction_id=f"fo-{i}-{time.time()}"
        )
        t = time.perf_counter()
        out = client.decide(body)
        lat.append((time.perf_counter() - t) * 1000)
        outcomes.append(out)

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        i = 0
        while time.monotonic() - started < 10.0:
            pool.submit(one, i)
            i += 1
            time.sleep(0.05)
    served: dict[str, int] = {}
    for o in outcomes:
        by = o.get("served_by") or "fail-safe"
        served[by] = served.get(by, 0) + 1
    fail_safe = sum(1 for o in outcomes if o.get("fail_safe"))
    row = {
        "fault": "us-east application deleted (client fails over to eu-west)",
        "load": "20 attempts/s through the checkout client for 10 s",
        "answers": len(outcomes),
        "errors": sum(
            1 for o in outcomes if o.get("action") not in ("approve", "step_up", "block")
        ),
        "worst_ms": round(max(lat), 2),
        "records_lost": "n/a",
        "served_by": served,
        "fail_safe": fail_safe,
    }
    ROWS.append(row)
    print(json.dumps(row))
    assert len(outcomes) == i and row["errors"] == 0
    assert served.get(f"{BASE}/chaos-eu", 0) > 0 and served.get(f"{BASE}/chaos-us", 0) > 0
    assert fail_safe <= 0.05 * len(outcomes), row
    deploy(apps, chaos["work"] / "serve.yaml")  # the region comes back
    wait_ready(f"{BASE}/chaos-us", dev_key(), 240)


def test_serving_process_sigkilled_mid_load_loses_no_received_decision(chaos, request) -> None:
    """SIGKILL the fused replica under load: every decision a client received is in the
    log after Serve restarts the replica, and every chain verifies."""
    seconds = 30.0 if _long(request) else 10.0
    rate = 40.0
    received: list[str] = []
    victims = replica_pids("chaos-us", "FusedDecider")
    _warm(f"{BASE}/chaos-us", chaos["attempts"])
    _after(seconds * 0.4, lambda: [os.kill(v, signal.SIGKILL) for v in victims])
    result = _load(
        f"{BASE}/chaos-us",
        chaos["attempts"],
        "proc-kill",
        rate,
        seconds,
        on_answer=lambda d: received.append(d["decision_id"]),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pids = replica_pids("chaos-us", "FusedDecider")
        if pids and not set(victims) & set(pids):
            break
        time.sleep(1)
    wait_ready(f"{BASE}/chaos-us", dev_key(), 120)  # the new replica adopted the old stream
    logged = {
        r.get("decision_id") for r in iter_records(chaos["log_dir"]) if r.get("type") == "decision"
    }
    lost = [d for d in received if d not in logged]
    report = verify(chaos["log_dir"])
    s = _row(
        "fused serving replica SIGKILLed",
        rate,
        seconds,
        result,
        lost=len(lost),
        received=len(received),
        in_flight_failed=result.summary()["errors"],
    )
    assert received and not lost, lost[:5]
    assert report.ok, [str(p) for p in report.problems][:5]
    assert s["ok"] == len(received)
