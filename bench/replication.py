"""Cross-region replication on loopback: lag, write-path cost of the outbox, catch-up.

    python -m bench.replication [--seconds 5] [--rates 200,1000] [--backlog 20000]

Two embedded Redis servers (one per region) on their own unix sockets in a scratch folder;
a replicator thread ships region A's outbox to region B while a writer applies attempts
in A at a fixed rate. Reports:

* outbox cost: one attempt's write script without and with the outbox XADD, interleaved
  in blocks so both see the same machine noise;
* lag: publish (the stream entry's server time) -> applied in B, per entry, at each rate;
* catch-up: a backlog written while the replicator was stopped (a partition), then
  drained: entries per second and time to converge.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import percentiles, write
from feature_views.contract import normalize_attempts
from feature_views.offline import prepare
from feature_views.online import OnlineFeatureStore
from feature_views.replication import Destination, Replicator, StepResult, outbox_key
from feature_views.store import connect, embedded_url, stop_embedded

T0 = pd.Timestamp("2026-03-02T00:00:00Z")


def make_attempts(n: int, prefix: str, cards: int = 5000) -> list[dict]:
    rng = np.random.default_rng(abs(hash(prefix)) % 2**32)
    card = rng.integers(0, cards, n)
    frame = pd.DataFrame(
        {
            "transaction_id": [f"{prefix}{i}" for i in range(n)],
            "event_time": T0 + pd.to_timedelta(np.arange(n) * 50, unit="ms"),
            "card_id": [f"tok_{c}" for c in card],
            "shopper_id": [f"s{c}" for c in card],
            "device_id": [f"d{c}" for c in card],
            "merchant_id": [f"m{c % 300}" for c in card],
            "merchant_category": "5411",
            "card_bin": "411111",
            "ip_country": "US",
            "amount": rng.uniform(5, 500, n).round(2),
        }
    )
    return prepare(normalize_attempts(frame)).to_dict("records")


def outbox_cost(client, n: int) -> dict:
    plain = OnlineFeatureStore(client, f"plain-{uuid.uuid4().hex[:6]}")
    ns = f"pub-{uuid.uuid4().hex[:6]}"
    published = OnlineFeatureStore(client, ns, outbox=outbox_key(ns))
    samples: dict[str, list[float]] = {"without_outbox": [], "with_outbox": []}
    rows = make_attempts(n, "cost")
    block = 200
    order = [("without_outbox", plain), ("with_outbox", published)]
    for start in range(0, n, block):
        order.reverse()  # each goes first in every other block
        for name, store in order:
            for row in rows[start : start + block]:
                t = time.perf_counter()
                store.write(row)
                samples[name].append((time.perf_counter() - t) * 1000)
    plain.flush_namespace()
    published.flush_namespace()
    return {name: percentiles(values) for name, values in samples.items()} | {"writes_each": n}


def lag_at(source, dest_client, rate: float, seconds: float) -> dict:
    ns_a, ns_b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    store = OnlineFeatureStore(source, ns_a, outbox=outbox_key(ns_a))
    rep = Replicator(source, ns_a, [Destination("b", dest_client, ns_b)])
    lags: list[float] = []
    batches: list[int] = []

    def on_step(_dest: Destination, result: StepResult) -> None:
        lags.extend(result.lag_ms)
        batches.append(result.delivered)

    stop = threading.Event()
    thread = threading.Thread(target=rep.run, args=(stop,), kwargs={"on_step": on_step})
    thread.start()
    rows = make_attempts(int(rate * seconds), f"r{int(rate)}-")
    started = time.perf_counter()
    for i, row in enumerate(rows):
        due = started + i / rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        store.write(row)
    deadline = time.monotonic() + 30
    while len(lags) < len(rows) and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join()
    achieved = len(rows) / (time.perf_counter() - started)
    out = percentiles(lags) | {
        "target_rps": rate,
        "achieved_rps": round(achieved),
        "entries": len(lags),
        "mean_batch": round(float(np.mean(batches)), 1),
    }
    store.flush_namespace()
    OnlineFeatureStore(dest_client, ns_b).flush_namespace()
    return out


def catch_up(source, dest_client, backlog: int) -> dict:
    ns_a, ns_b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    store = OnlineFeatureStore(source, ns_a, outbox=outbox_key(ns_a))
    rep = Replicator(source, ns_a, [Destination("b", dest_client, ns_b)])
    rows = make_attempts(backlog, "backlog")
    pipe_batch = 500
    for start in range(0, backlog, pipe_batch):
        store.write_many(rows[start : start + pipe_batch])
    started = time.perf_counter()
    delivered = 0
    while (step := rep.step(rep.destinations[0])).delivered:
        delivered += step.delivered
    seconds = time.perf_counter() - started
    store.flush_namespace()
    OnlineFeatureStore(dest_client, ns_b).flush_namespace()
    return {
        "backlog": backlog,
        "delivered": delivered,
        "seconds": round(seconds, 2),
        "entries_per_s": round(delivered / seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rates", default="200,1000")
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--writes", type=int, default=4000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="repl-", dir="/tmp") as tmp:
        dirs = [Path(tmp) / "a", Path(tmp) / "b"]
        try:
            source = connect(embedded_url(dirs[0]), timeout_s=10)
            dest = connect(embedded_url(dirs[1]), timeout_s=10)
            results = {
                "setup": "two embedded redis-server processes on unix sockets (loopback), "
                "replicator in a thread of the bench process",
                "outbox_write_cost": outbox_cost(source, args.writes),
                "lag": [
                    lag_at(source, dest, float(r), args.seconds) for r in args.rates.split(",")
                ],
                "catch_up_after_partition": catch_up(source, dest, args.backlog),
            }
        finally:
            for d in dirs:
                stop_embedded(d)
    write("replication", results, "bench.replication")


if __name__ == "__main__":
    main()
