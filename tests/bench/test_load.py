"""The load generator's search for the maximum sustainable rate, on a simulated server."""

from __future__ import annotations

import asyncio

import pytest

import bench.load as load


class _Server:
    """Sustains every rate up to `capacity`; the offered rates are recorded."""

    def __init__(self, capacity: float) -> None:
        self.capacity, self.offered = capacity, []

    async def run_step(self, url, key, body, rate, duration_s, **kwargs):
        self.offered.append(rate)
        result = load.StepResult(rate, duration_s, sent=100, elapsed_s=duration_s)
        result.statuses = {"200": 100}
        result.rungs = {"1": 100}
        result.latencies_ms = [10.0 if rate <= self.capacity else 500.0] * 100
        result.elapsed_s = 100 / rate
        return result


# two bisections after the x1.4 grid: within ~10% of the capacity (one left ~20%)
@pytest.mark.parametrize("capacity, low, high", [(300.0, 270, 300), (20.0, 18, 20), (1.0, 0, 0)])
def test_find_max_brackets_the_capacity(monkeypatch, capacity, low, high) -> None:
    server = _Server(capacity)
    monkeypatch.setattr(load, "run_step", server.run_step)
    monkeypatch.setattr(load.asyncio, "sleep", _no_sleep)
    best, steps = asyncio.run(load.find_max("u", "k", lambda i: b"", 50, 1.4, 1.0, lambda m: None))
    assert low <= best <= high, (best, server.offered)
    assert len(steps) == len(server.offered)
    if capacity < 50:  # the first rate failed: the search went down, not to a maximum of 0
        assert min(server.offered) < 50


async def _no_sleep(_s: float) -> None:
    return None


def test_each_bisection_halves_the_bracket(monkeypatch) -> None:
    server = _Server(300.0)
    monkeypatch.setattr(load, "run_step", server.run_step)
    monkeypatch.setattr(load.asyncio, "sleep", _no_sleep)
    found = []
    for refinements in (0, 1, 2, 3):
        best, _ = asyncio.run(
            load.find_max(
                "u", "k", lambda i: b"", 50, 1.4, 1.0, lambda m: None, refinements=refinements
            )
        )
        found.append(best)
    # the grid passes 268.9 and fails 376.5; bisecting: 322.7 fails, 295.8 passes, 309.3 fails
    assert [round(b, 1) for b in found] == [268.9, 268.9, 295.8, 295.8]


def test_a_step_second_by_second_places_its_tail_in_time() -> None:
    """A queue at the onset of a load and a tail that lasts are told apart by when the
    slow requests were due: each second gets its own p50, p99, degraded share and errors."""
    result = load.StepResult(100, 3.0)
    result.timeline = [(0.0 + i / 100, 400.0 - 4 * i, "200", "4") for i in range(100)]
    result.timeline += [(1.0 + i / 100, 10.0, "200", "1") for i in range(100)]
    result.timeline += [(2.0 + i / 100, 12.0, "200" if i else "conn", "1") for i in range(100)]
    seconds = result.by_second()
    assert [s["second"] for s in seconds] == [0, 1, 2]
    assert [s["sent"] for s in seconds] == [100, 100, 100]
    assert seconds[0]["p99_ms"] > 390 and seconds[0]["degraded_share"] == 1.0
    assert seconds[1] == {
        "second": 1, "sent": 100, "p50_ms": 10.0, "p99_ms": 10.0, "degraded_share": 0.0,
        "errors": 0,
    }  # fmt: skip
    assert seconds[2]["errors"] == 1 and seconds[2]["degraded_share"] == 0.0
    assert load.StepResult(100, 1.0).by_second() == []
