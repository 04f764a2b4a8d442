"""Single-process faults: Redis killed and restarted, the serving process SIGKILLed.

The Ray suite repeats these against Serve (replicas, regions); here the real app runs as
one uvicorn process, so the promises are checked without a cluster:

* Redis SIGKILLed mid-load, then started again (empty, as after a crash without
  persistence): zero errors, answers inside the deadline (``assert_on_time``), decisions
  flagged rung 3 while it is down, the full path back within seconds of the restart,
  nothing missing from the decision log.
* The serving process SIGKILLed mid-load, then started again on the same log folder:
  every decision a client received is in the log — counted — and the chains verify.
  Attempts in flight at the kill get no answer (the checkout client fails over to the
  next region or its fail-safe); none of them was told a decision that is not logged.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from serve_graph.config import load_region
from serve_graph.decision_log import verify
from tests.chaos.conftest import (
    assert_on_time,
    assert_store_path,
    decisions_in_log,
    record_row,
)
from tests.chaos.load import LoadDriver, LoadResult

pytestmark = pytest.mark.chaos

RECOVERY_S = 2.5  # circuit breaker (1 s) + reconnect + a batch or two


def test_redis_killed_and_restarted_under_load(redis_server, serve, scale) -> None:
    region = load_region("us-east")
    app = serve(redis_server.url)
    phase = max(scale.phase_s, 3.0)
    total = 3 * phase + RECOVERY_S
    driver = LoadDriver(app.decisions_url, app.key, scale.rate_per_s, total).start()
    time.sleep(max(0.0, driver.t0 + phase - time.monotonic()))
    killed_at = time.monotonic() - driver.t0
    redis_server.kill()
    time.sleep(max(0.0, driver.t0 + 2 * phase - time.monotonic()))
    back_at = time.monotonic() - driver.t0  # before start(): it returns once Redis answers
    redis_server.start()
    result = driver.join()
    app.stop()

    summary = result.summary()
    assert not result.errors, result.errors[:3]
    assert_on_time(result, region.deadline_ms)
    assert_store_path(result.between(0, killed_at - 0.1), degraded=False)  # racing the kill
    assert_store_path(result.between(killed_at + 0.1, back_at), degraded=True)
    after = result.between(back_at, total)
    first_full = min(a.sent_s for a in after if a.rung == 1) - back_at
    assert first_full < RECOVERY_S, (first_full, summary)
    assert_store_path(result.between(back_at + RECOVERY_S, total), degraded=False)

    lost = {a.decision_id for a in result.ok} - decisions_in_log(app.log_dir)
    record_row("Redis SIGKILLed mid-load, restarted (single process)", result, len(lost))
    assert not lost


def test_serving_process_killed_loses_no_acknowledged_decision(
    redis_server, serve, scale, tmp_path: Path
) -> None:
    log_dir = tmp_path / "shared-log"
    first = serve(redis_server.url, log_dir=log_dir)
    phase = max(scale.phase_s, 3.0)
    driver = LoadDriver(first.decisions_url, first.key, scale.rate_per_s, phase).start()
    time.sleep(max(0.0, driver.t0 + phase / 2 - time.monotonic()))
    first.kill()
    before = driver.join()

    second = serve(redis_server.url, log_dir=log_dir, warm=False)
    after = LoadDriver(second.decisions_url, second.key, scale.rate_per_s, phase).run()
    second.kill()  # killed too: the log must hold everything without a clean shutdown

    assert before.ok and after.ok and not after.errors
    assert all(a.status == 0 for a in before.errors)  # no answer at all, never a 5xx
    received = {a.decision_id for a in before.ok + after.ok}
    logged = decisions_in_log(log_dir)
    lost = received - logged
    report = verify(log_dir)
    assert report.ok, [str(p) for p in report.problems]
    cli = subprocess.run(
        [str(Path(sys.executable).parent / "checkout-risk"), "verify-log", "--log", str(log_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0 and "chain verifies" in cli.stdout, cli.stdout
    both = LoadResult(before.answers + after.answers, scale.rate_per_s, 2 * phase)
    record_row("serving process SIGKILLed mid-load, restarted (single process)", both, len(lost))
    assert not lost, f"{len(lost)} of {len(received)} acknowledged decisions missing"
    assert len(received) <= report.records
