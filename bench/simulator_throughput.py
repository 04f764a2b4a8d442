"""Simulator throughput: attempts written to Parquet per minute (goal >= 1,000,000).

python -m bench.simulator_throughput [--days 5] [--tx-per-day 400000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.common import write
from simulator.config import load_scenario
from simulator.marketplace import simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--tx-per-day", type=int, default=400_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        summary = simulate(
            load_scenario(),
            days=args.days,
            tx_per_day=args.tx_per_day,
            seed=1,
            out=Path(tmp) / "sim",
            progress=False,
        )
        seconds = time.perf_counter() - started
        size_mb = sum(p.stat().st_size for p in (Path(tmp) / "sim").rglob("*.parquet")) / 1e6
    write(
        "simulator",
        {
            "days": args.days,
            "tx_per_day": args.tx_per_day,
            "attempts": summary.attempts,
            "seconds": round(seconds, 2),
            "attempts_per_minute": round(summary.attempts / seconds * 60),
            "parquet_mb": round(size_mb, 1),
        },
        module="bench.simulator_throughput",
    )


if __name__ == "__main__":
    main()
