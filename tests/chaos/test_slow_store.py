"""Redis slowed by real network latency: every answer on time, degraded, then recovered.

The store sits behind :class:`LatencyProxy` on loopback. Under a steady open-loop load the
injected delay goes 0 → 50 ms → 500 ms → 0. The promise under test: every attempt gets a
200 inside the region's 120 ms deadline (p99, and never near a hang: ``assert_on_time``);
while Redis is slower than its 25 ms share the decisions say so (rung 3, reason "online
store"); once the delay is gone the full path is back within seconds, without a restart;
and no decision a client received is missing from the decision log.
"""

from __future__ import annotations

import time

import pytest

from serve_graph.config import load_region
from tests.chaos.conftest import (
    assert_on_time,
    assert_store_path,
    decisions_in_log,
    record_row,
)
from tests.chaos.load import LoadDriver
from tests.chaos.proxy import LatencyProxy

pytestmark = pytest.mark.chaos

RECOVERY_S = 2.5  # circuit breaker (1 s) + a batch or two


def test_slow_store_keeps_deadlines_and_recovers(redis_server, serve, scale) -> None:
    region = load_region("us-east")
    with LatencyProxy("127.0.0.1", redis_server.port) as proxy:
        app = serve(proxy.url)
        phase = max(scale.phase_s, 3.0)
        plan = [(0.0, phase), (50.0, phase), (500.0, phase), (0.0, phase + RECOVERY_S + 1)]
        driver = LoadDriver(
            app.decisions_url, app.key, scale.rate_per_s, sum(d for _, d in plan)
        ).start()
        starts = []
        at = 0.0
        for delay_ms, duration in plan:
            time.sleep(max(0.0, driver.t0 + at - time.monotonic()))
            proxy.set_delay(delay_ms)
            starts.append(at)
            at += duration
        result = driver.join()
    app.stop()

    summary = result.summary()
    assert summary["status_5xx"] == 0 and not result.errors, result.errors[:3]
    assert_on_time(result, region.deadline_ms)

    grace = 0.1  # attempts already past their Redis read when the delay changed
    healthy = result.between(0.0, starts[1])
    slow = result.between(starts[1] + grace, starts[3])
    after = result.between(starts[3], at)
    assert healthy and slow and after
    assert_store_path(healthy, degraded=False)
    assert_store_path(slow, degraded=True)
    first_full = min(a.sent_s for a in after if a.rung == 1) - starts[3]
    assert first_full < RECOVERY_S, first_full
    assert_store_path(result.between(starts[3] + RECOVERY_S, at), degraded=False)

    lost = {a.decision_id for a in result.ok} - decisions_in_log(app.log_dir)
    record_row("Redis slowed by 50 ms, then 500 ms (TCP proxy), then restored", result, len(lost))
    assert not lost
