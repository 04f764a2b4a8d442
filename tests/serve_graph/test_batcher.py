"""The micro-batcher: batching, backlog draining, after-work merging, failures reported."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from serve_graph.app import MicroBatcher


class Recorder:
    def __init__(self, run_s: float = 0.0, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.shed_batches: list[list[str]] = []
        self.after_calls: list[list[str]] = []
        self.run_s, self.fail_on = run_s, fail_on
        self.after_gate = threading.Event()
        self.after_gate.set()

    def run(
        self, records: list[dict], arrived: list[float], traces: list, shed: str | None = None
    ) -> list[dict]:
        ids = [r["id"] for r in records]
        if shed is not None:
            self.shed_batches.append(ids)
            return [{"id": i, "n": len(ids), "shed": shed} for i in ids]
        self.batches.append(ids)
        if self.fail_on in ids:
            raise RuntimeError("stage exploded")
        time.sleep(self.run_s)
        return [{"id": i, "n": len(ids)} for i in ids]

    def after(self, records: list[dict], results: list[dict]) -> None:
        self.after_gate.wait(5)
        self.after_calls.append([r["id"] for r in records])


async def _submit_all(b: MicroBatcher, ids: list[str]) -> list:
    return await asyncio.gather(
        *(b.submit({"id": i}, time.monotonic(), None) for i in ids), return_exceptions=True
    )


def test_concurrent_requests_share_batches_and_each_gets_its_own_answer() -> None:
    rec = Recorder()
    b = MicroBatcher(rec.run, rec.after, max_batch=8, wait_ms=5, backlog_factor=1)
    ids = [str(i) for i in range(20)]
    out = asyncio.run(_submit_all(b, ids))
    assert [o["id"] for o in out] == ids
    assert all(len(batch) <= 8 for batch in rec.batches) and len(rec.batches) >= 3
    assert sorted(i for batch in rec.batches for i in batch) == sorted(ids)


def test_a_backlog_is_drained_in_larger_batches() -> None:
    rec = Recorder(run_s=0.05)
    b = MicroBatcher(rec.run, rec.after, max_batch=4, wait_ms=1, backlog_factor=4)
    out = asyncio.run(_submit_all(b, [str(i) for i in range(40)]))
    assert len(out) == 40
    assert max(len(batch) for batch in rec.batches) > 4  # backlog: up to 16 at once
    assert all(len(batch) <= 16 for batch in rec.batches)


def test_after_work_merges_pending_batches_and_survives_failures() -> None:
    rec = Recorder(run_s=0.01)
    rec.after_gate.clear()  # hold the first after-call so later batches pile up behind it
    b = MicroBatcher(rec.run, rec.after, max_batch=2, wait_ms=1, backlog_factor=1)

    async def scenario() -> None:
        first = await _submit_all(b, ["a", "b"])
        rest = await _submit_all(b, ["c", "d", "e", "f", "g", "h"])
        assert len(first) == 2 and len(rest) == 6
        rec.after_gate.set()
        for _ in range(200):
            if sum(len(c) for c in rec.after_calls) == 8:
                break
            await asyncio.sleep(0.01)

    asyncio.run(scenario())
    done = [i for call in rec.after_calls for i in call]
    assert sorted(done) == list("abcdefgh")  # every decision's after-work ran, once
    assert len(rec.after_calls) < len(rec.batches)  # pending batches were merged


def test_a_failing_batch_answers_every_waiter_and_the_loop_goes_on() -> None:
    rec = Recorder(fail_on="boom")
    b = MicroBatcher(rec.run, rec.after, max_batch=8, wait_ms=20, backlog_factor=1)

    async def scenario() -> tuple[list, list]:
        bad = await _submit_all(b, ["x", "boom", "y"])
        good = await _submit_all(b, ["z"])
        return bad, good

    bad, good = asyncio.run(scenario())
    assert all(isinstance(o, RuntimeError) for o in bad)
    assert good == [{"id": "z", "n": 1}]


@pytest.mark.parametrize("max_batch", [1, 3])
def test_batch_size_is_respected(max_batch: int) -> None:
    rec = Recorder()
    b = MicroBatcher(rec.run, rec.after, max_batch=max_batch, wait_ms=5, backlog_factor=1)
    asyncio.run(_submit_all(b, [str(i) for i in range(7)]))
    assert max(len(batch) for batch in rec.batches) <= max_batch


def test_a_slow_batch_does_not_hold_the_next_one() -> None:
    done: list[str] = []

    def run(records: list[dict], arrived: list[float], traces: list) -> list[dict]:
        if any(r["id"] == "slow" for r in records):
            time.sleep(0.3)
        return [{"id": r["id"]} for r in records]

    b = MicroBatcher(run, lambda *_: None, max_batch=1, wait_ms=1, in_flight=2)

    async def scenario() -> None:
        async def one(i: str, delay: float) -> None:
            await asyncio.sleep(delay)
            await b.submit({"id": i}, time.monotonic(), None)
            done.append(i)

        await asyncio.gather(one("slow", 0), one("fast", 0.05))

    asyncio.run(scenario())
    assert done == ["fast", "slow"]


def _queue_rule_only(b: MicroBatcher) -> MicroBatcher:
    """Admission on the full path's queue alone. The lag probe's first tick is an hour
    away, so the lag reads as unknown (0): on a loaded test machine timers fire late, and
    the lag rule (tested on its own below) turned away an arrival these tests expect on
    the full path (seen once in a clean-clone run)."""
    b.lag_tick_s = 3600.0
    return b


def test_admission_sends_the_excess_to_the_shed_lane_at_once() -> None:
    # the full path takes 200 ms a batch; after 20 ms in its queue, arrivals bypass it
    rec = Recorder(run_s=0.2)
    b = _queue_rule_only(
        MicroBatcher(rec.run, rec.after, max_batch=4, wait_ms=1, in_flight=1, admit_wait_ms=20)
    )
    answered: dict[str, float] = {}

    async def scenario() -> list:
        t0 = time.monotonic()

        async def one(i: str, delay: float) -> dict:
            await asyncio.sleep(delay)
            out = await b.submit({"id": i}, time.monotonic(), None)
            answered[i] = time.monotonic() - t0
            return out

        # "a" starts the first batch; "b" waits for the only slot; "c" and "d" come when
        # "b" has been queued longer than 20 ms; "e" after the full path has caught up
        return await asyncio.gather(
            one("a", 0), one("b", 0.01), one("c", 0.06), one("d", 0.07), one("e", 0.7)
        )

    out = {o["id"]: o for o in asyncio.run(scenario())}
    assert [i for batch in rec.batches for i in batch] == ["a", "b", "e"]
    assert sorted(i for batch in rec.shed_batches for i in batch) == ["c", "d"]
    assert out["c"]["shed"].startswith("overload: admission")
    queued_ms = int(out["c"]["shed"].split("(")[1].split(" ")[0])
    assert queued_ms >= 20  # the wait that turned it away, logged as evidence
    assert "shed" not in out["a"] and "shed" not in out["e"]
    assert answered["c"] < 0.15 and answered["d"] < 0.15  # not behind the 200 ms batches
    assert b.turned_away == 2


def _arrivals(b: MicroBatcher, at: dict[str, float]) -> dict[str, dict]:
    """Submit each id at its offset (seconds) and collect the answers by id."""

    async def scenario() -> list:
        async def one(i: str, delay: float) -> dict:
            await asyncio.sleep(delay)
            return await b.submit({"id": i}, time.monotonic(), None)

        return await asyncio.gather(*(one(i, d) for i, d in at.items()))

    return {o["id"]: o for o in asyncio.run(scenario())}


@pytest.mark.parametrize("interval_ms", [0, 60])
def test_one_stall_turns_nothing_away_when_admission_waits_for_a_standing_queue(
    interval_ms: float,
) -> None:
    """The first batch stalls 150 ms, then the full path is fast again: the backlog it left
    is gone with the next batch. Only without an interval does admission shed on it."""
    rec = Recorder()
    stalled = []

    def run(records, arrived, traces, shed=None):
        if shed is None and not stalled:
            stalled.append(True)
            time.sleep(0.15)
        return rec.run(records, arrived, traces, shed)

    b = _queue_rule_only(
        MicroBatcher(
            run, rec.after, 4, 1, in_flight=1, admit_wait_ms=20, admit_interval_ms=interval_ms
        )
    )
    # "b" waits behind the stall; "c" and "d" arrive when it has waited 80 and 110 ms,
    # within 60 ms of the wait first exceeding the limit; "e" once all is clear
    out = _arrivals(b, {"a": 0, "b": 0.01, "c": 0.09, "d": 0.12, "e": 0.3})
    shed = sorted(i for batch in rec.shed_batches for i in batch)
    assert shed == ([] if interval_ms else ["c", "d"]), shed
    assert "shed" not in out["a"] and "shed" not in out["e"]


def test_a_standing_queue_is_shed_after_the_interval_and_at_once_when_it_returns() -> None:
    rec = Recorder(run_s=0.2)
    b = _queue_rule_only(
        MicroBatcher(rec.run, rec.after, 4, 1, in_flight=1, admit_wait_ms=20, admit_interval_ms=60)
    )
    out = _arrivals(
        b,
        {
            # "b" waits behind "a"'s 200 ms batch: over the limit from 30 ms on, seen by
            # "c" at 50 ms; by "d" at 140 ms it has stood 90 ms over it
            **{"a": 0, "b": 0.01, "c": 0.05, "d": 0.14, "e": 0.16},
            # all clear by 0.4 s; "f" starts a batch, "g" waits behind it, and "h" sees
            # that queue over the limit within a second of the last turning away
            **{"f": 0.6, "g": 0.61, "h": 0.66},
        },
    )
    shed = sorted(i for batch in rec.shed_batches for i in batch)
    assert shed == ["d", "e", "h"], shed
    assert out["d"]["shed"].startswith("overload: admission")
    assert b.turned_away == 3


@pytest.mark.parametrize("shed_in_flight", [2, 8])
def test_shed_batches_awaiting_durability_do_not_hold_later_arrivals(
    shed_in_flight: int,
) -> None:
    """A shed batch keeps its slot until its log records are durable (300 ms here, a slow
    group commit). Four arrivals turned away 20 ms apart: with two slots the third and
    fourth wait for the first two commits; with the default, each is decided on arrival."""
    started: dict[str, float] = {}

    async def run(records, arrived, traces, shed=None):
        if shed is None:
            await asyncio.sleep(1.0)  # "a": the full path's only slot, long enough to stand
        else:
            started.update((r["id"], time.monotonic() - arrived[0]) for r in records)
            await asyncio.sleep(0.3)  # awaiting the commit
        return [{"id": r["id"], "shed": shed} for r in records]

    b = _queue_rule_only(
        MicroBatcher(
            run,
            lambda *_: None,
            max_batch=1,
            wait_ms=0,
            in_flight=1,
            admit_wait_ms=20,
            shed_in_flight=shed_in_flight,
        )
    )
    # "b" queues behind "a"; from 20 ms on that queue stands, and c1-c4 are turned away
    out = _arrivals(b, {"a": 0, "b": 0.01, "c1": 0.05, "c2": 0.07, "c3": 0.09, "c4": 0.11})
    shed = sorted(i for i, o in out.items() if o["shed"])
    assert shed == ["c1", "c2", "c3", "c4"], shed
    if shed_in_flight == 2:
        assert started["c3"] > 0.15 and started["c4"] > 0.15, started
    else:
        assert max(started.values()) < 0.15, started


def test_a_shed_lane_without_slots_is_refused() -> None:
    with pytest.raises(ValueError, match="shed_in_flight"):
        MicroBatcher(lambda *_: [], lambda *_: None, max_batch=1, wait_ms=0, shed_in_flight=0)


def test_admission_turns_arrivals_away_while_the_event_loop_itself_lags() -> None:
    """A full path that holds the event loop (decide_async's stages run on it) leaves
    free slots and a short queue, while arrivals wait to be read at all: admission
    watches the loop's lag too, and sheds until it has caught up."""
    rec = Recorder()
    hog_s = 0.04

    async def run(records, arrived, traces, shed=None):
        if shed is None:
            time.sleep(hog_s)  # CPU work on the loop: nothing else runs meanwhile
        return rec.run(records, arrived, traces, shed)

    b = MicroBatcher(run, rec.after, max_batch=1, wait_ms=0, in_flight=8, admit_wait_ms=20)

    async def scenario() -> list:
        outs = []
        for i in range(40):  # an arrival every 5 ms, 8 ms of full-path work each
            outs.append(asyncio.ensure_future(b.submit({"id": str(i)}, time.monotonic(), None)))
            await asyncio.sleep(0.005)
        done = await asyncio.gather(*outs)
        await asyncio.sleep(b.lag_horizon_s * 2)  # quiet: the old lag says nothing now
        done.append(await b.submit({"id": "later"}, time.monotonic(), None))
        return done

    for _ in range(2):  # the second time on a new event loop, where the probe starts anew
        rec.shed_batches.clear()
        out = {o["id"]: o for o in asyncio.run(scenario())}
        shed = [i for batch in rec.shed_batches for i in batch]
        assert "0" not in shed and len(shed) >= 10, shed  # the first one was admitted
        reasons = {out[i]["shed"] for i in shed}
        assert any("event-loop lag" in r for r in reasons), reasons
        lag_ms = max(int(r.split("(")[1].split(" ")[0]) for r in reasons if "lag" in r)
        assert lag_ms >= 20  # the lag that turned them away, logged as evidence
        assert "shed" not in out["later"]


def test_without_an_admission_limit_everything_waits_for_the_full_path() -> None:
    rec = Recorder(run_s=0.05)
    b = MicroBatcher(rec.run, rec.after, max_batch=1, wait_ms=1, in_flight=1)
    asyncio.run(_submit_all(b, [str(i) for i in range(6)]))
    assert rec.shed_batches == [] and sum(len(batch) for batch in rec.batches) == 6


def test_a_coroutine_run_decides_on_the_event_loop() -> None:
    """`run` as a coroutine (DecisionPipeline.decide_async) runs in the loop's own thread;
    a blocking one goes to a worker thread."""
    seen: list[int] = []
    rec = Recorder()

    async def run(records, arrived, traces, shed=None):
        seen.append(threading.get_ident())
        await asyncio.sleep(0)
        return rec.run(records, arrived, traces, shed)

    async def main() -> tuple[list, int]:
        b = MicroBatcher(run, rec.after, max_batch=4, wait_ms=1)
        out = await asyncio.gather(
            *(b.submit({"id": str(i)}, time.monotonic(), None) for i in range(9))
        )
        return out, threading.get_ident()

    out, loop_thread = asyncio.run(main())
    assert [o["id"] for o in out] == [str(i) for i in range(9)]
    assert seen and set(seen) == {loop_thread}
    blocking: list[int] = []

    def run_blocking(records, arrived, traces, shed=None):
        blocking.append(threading.get_ident())
        return rec.run(records, arrived, traces, shed)

    async def main_blocking() -> int:
        b = MicroBatcher(run_blocking, rec.after, max_batch=4, wait_ms=1)
        await b.submit({"id": "x"}, time.monotonic(), None)
        return threading.get_ident()

    loop_thread = asyncio.run(main_blocking())
    assert blocking and blocking[0] != loop_thread


def test_a_request_whose_client_left_is_not_decided() -> None:
    rec = Recorder(run_s=0.05)
    counted: list[int] = []
    b = MicroBatcher(
        rec.run, rec.after, max_batch=1, wait_ms=0, backlog_factor=1, in_flight=1,
        on_abandoned=counted.append,
    )  # fmt: skip

    async def scenario() -> list:
        first = asyncio.ensure_future(b.submit({"id": "a"}, time.monotonic(), None))
        await asyncio.sleep(0.01)  # "a" is being decided; "b" and "c" wait behind it
        gone = asyncio.ensure_future(b.submit({"id": "b"}, time.monotonic(), None))
        kept = asyncio.ensure_future(b.submit({"id": "c"}, time.monotonic(), None))
        await asyncio.sleep(0.01)
        gone.cancel()  # as Serve cancels the handler when the client disconnects
        return await asyncio.gather(first, kept, gone, return_exceptions=True)

    a, c, b_out = asyncio.run(scenario())
    assert a["id"] == "a" and c["id"] == "c"
    assert isinstance(b_out, asyncio.CancelledError)
    assert [i for batch in rec.batches for i in batch] == ["a", "c"]
    assert b.abandoned == 1 and counted == [1]  # the replica's metric hears of it


def _serve_request(request_id: str) -> None:
    """What Ray Serve sets in a replica while it handles a request: its id, and that the
    handle calls made under it are its children, cancelled with it."""
    from ray.serve.context import _RequestContext, _serve_request_context

    _serve_request_context.set(
        _RequestContext(_internal_request_id=request_id, cancel_on_parent_request_cancel=True)
    )


def _parent_request() -> str | None:
    from ray.serve.context import _serve_request_context

    current = _serve_request_context.get()
    return current._internal_request_id if current is not None else None


def test_batches_run_outside_the_request_that_started_the_batcher() -> None:
    """The first request a replica receives starts the batcher's workers. Its hops must
    not become that request's children: Serve cancels the children of a request whose
    client left, and every batch after it would lose its in-flight hops then."""
    rec = Recorder()
    parents: list[str | None] = []

    async def run(records, arrived, traces, shed=None):
        parents.append(_parent_request())
        return rec.run(records, arrived, traces, shed)

    def after(records, results) -> None:
        parents.append(_parent_request())

    async def request(b: MicroBatcher, i: int) -> dict:
        _serve_request(f"request-{i}")
        return await b.submit({"id": str(i)}, time.monotonic(), None)

    async def main() -> list:
        b = MicroBatcher(run, after, max_batch=2, wait_ms=1)
        out = [await request(b, 0)]  # the first request starts the workers
        out += await asyncio.gather(*(request(b, i) for i in range(1, 6)))
        await asyncio.sleep(0.05)  # the after-work
        return out

    out = asyncio.run(main())
    assert [o["id"] for o in out] == [str(i) for i in range(6)]
    assert len(parents) >= 3 and set(parents) == {None}, parents


def test_a_pipelines_batcher_takes_its_regions_settings_and_counts_abandoned_requests() -> None:
    from types import SimpleNamespace

    from serve_graph.config import load_region

    region = load_region("us-east")
    counted: list[tuple[int, str]] = []

    async def decide_async(records, arrived, traces, shed=None):
        return [{} for _ in records]

    pipeline = SimpleNamespace(
        region=region,
        decide_async=decide_async,
        after=lambda records, results: None,
        metrics=SimpleNamespace(record_abandoned=lambda n, name: counted.append((n, name))),
    )
    b = MicroBatcher.for_pipeline(pipeline, in_flight=4)
    assert (b.max_batch, b.in_flight) == (region.max_batch, 4)
    assert b.wait_s == region.batch_wait_ms / 1000
    assert b.admit_wait_s == region.admit_wait_ms / 1000
    b.on_abandoned(3)
    assert counted == [(3, "us-east")]
