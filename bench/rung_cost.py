"""CPU per decision inside one process, per rung, without HTTP.

    python -m bench.rung_cost

A replica overloaded to twice its full-path maximum sheds almost every request to rules
alone, and still has a ceiling (``docs/capacity.md``, *The cheapest rung has a ceiling*).
This separates the risk work from the web layer in front of it: the same pipeline a
replica runs (`DecisionPipeline.decide_async`, on one event loop, the log fsynced per
batch), fed micro-batches of replayed attempts directly, on the full path and on the shed
lane, and then the online-store write every decided attempt gets after its response
(`DecisionPipeline.after`). The CPU time is the whole process's (`time.process_time`), so
Redis's own work is not in it. Results: ``bench/results/rung_cost.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import write

SHED = "overload: rung-cost benchmark"


def measure(
    pipeline: Any, records: list[dict[str, Any]], size: int, batches: int, shed: bool
) -> dict[str, Any]:
    """`batches` micro-batches of `size` attempts (each under a transaction id never used
    before, so none is answered from the replica's memory of recent decisions) through
    `pipeline`, then their after-response work (the online-store write; shadow scoring
    where there is a challenger): CPU milliseconds per decision for each."""

    def batch(b: int) -> list[dict[str, Any]]:
        rows = [records[(b * size + i) % len(records)] for i in range(size)]
        return [dict(r, transaction_id=f"rc-{uuid.uuid4().hex}") for r in rows]

    work = [batch(b) for b in range(batches)]
    decided: list[list[dict[str, Any]]] = []

    async def run() -> None:
        for rows in work:
            now = time.monotonic()
            decided.append(
                await pipeline.decide_async(rows, [now] * len(rows), shed=SHED if shed else None)
            )

    n = size * batches
    t0 = time.process_time()
    asyncio.run(run())
    t1 = time.process_time()
    for rows, out in zip(work, decided, strict=True):
        pipeline.after(rows, out)
    t2 = time.process_time()
    rungs = Counter(str((d["degraded"] or {}).get("rung", 1)) for out in decided for d in out)
    return {
        "batch_size": size,
        "decisions": n,
        "decide_cpu_ms": round((t1 - t0) * 1000 / n, 4),
        "after_cpu_ms": round((t2 - t1) * 1000 / n, 4),
        "rungs": dict(rungs),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="CPU per decision per rung, in-process.")
    parser.add_argument("--decisions", type=int, default=1_920, help="per rung and batch size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args(argv)
    if args.decisions < 32 or min(args.sizes) < 1:
        parser.error("need --decisions >= 32 and batch sizes >= 1")
    from bench.load import sample_attempts
    from bench.serving import log, prepare
    from feature_views.contract import PaymentAttempt
    from serve_graph.config import load_region
    from serve_graph.pipeline import DecisionPipeline

    paths = prepare(60, 2_000)
    records = [
        PaymentAttempt.model_validate(a).to_record()
        for a in sample_attempts(str(paths["data"]), 2_000)
    ]
    results: dict[str, Any] = {"full": [], "shed": []}
    with tempfile.TemporaryDirectory() as logs:
        pipeline = DecisionPipeline(
            load_region("us-east"),
            paths["registry"],
            log_dir=Path(logs),
            redis_url=paths["redis_url"],
        )
        try:
            pipeline.warm_up()
            for size in args.sizes:
                batches = max(1, args.decisions // size)
                for rung, shed in (("full", False), ("shed", True)):
                    measure(pipeline, records, size, max(1, batches // 10), shed)  # warm
                    got = measure(pipeline, records, size, batches, shed)
                    log(f"{rung:>4} batch {size:>3}: {got}")
                    results[rung].append(got)
        finally:
            pipeline.close()
    results["setup"] = {
        "data": "60 days x 2000/day, attempts replayed under fresh transaction ids",
        "store": "the serving benchmark's materialised store (embedded Redis or REDIS_URL)",
        "cpu": "time.process_time of this process: every thread, not Redis",
        "path": "DecisionPipeline.decide_async on one event loop, then .after",
    }
    write("rung_cost", results, "bench.rung_cost")


if __name__ == "__main__":
    main()
