"""Offline engine throughput, this checkout against another git revision, side by side.

    python -m bench.offline_engine [--baseline main] [--rounds 3] [--days 30] [--tx-per-day 20000]

The machine is shared, so one number alone says little: each round runs the baseline's
engine and this checkout's engine in fresh processes, one after the other, over the same
simulated table, and records wall seconds, events/s and CPU seconds per million events
(user + system, all threads). The baseline is exported with ``git archive`` into a
scratch folder; nothing in the repository changes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from bench.common import write
from simulator.config import load_scenario
from simulator.marketplace import simulate

ROOT = Path(__file__).resolve().parent.parent

# Runs inside a fresh interpreter whose sys.path starts at the checkout being measured.
_RUN = """
import json, resource, sys, time
from feature_views.offline import iter_features
t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
rows = sum(len(f) for f in iter_features(sys.argv[1], sys.argv[2]))
seconds, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
print(json.dumps({"events": rows, "seconds": seconds, "cpu_seconds": cpu}))
"""


def export_revision(revision: str, into: Path) -> Path:
    """The tree of `revision` (a branch, tag or commit of this repository) under `into`."""
    archive = into / "baseline.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "archive", revision], cwd=ROOT, stdout=out, check=True)
    tree = into / "baseline"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def run_engine(checkout: Path, events: Path, labels: Path) -> dict[str, float]:
    """One full offline pass over the table with the engine found in `checkout`."""
    done = subprocess.run(
        [sys.executable, "-c", _RUN, str(events), str(labels)],
        cwd=checkout,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict[str, float]]) -> dict[str, float]:
    events = runs[0]["events"]
    best = min(r["seconds"] for r in runs)
    median = statistics.median(r["seconds"] for r in runs)
    cpu = statistics.median(r["cpu_seconds"] for r in runs)
    return {
        "events": events,
        "rounds": len(runs),
        "best_seconds": round(best, 2),
        "median_seconds": round(median, 2),
        "events_per_s_best": round(events / best),
        "events_per_s_median": round(events / median),
        "cpu_seconds_per_million_events": round(cpu / events * 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", default="main", help="git revision to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--tx-per-day", type=int, default=20_000)
    parser.add_argument("--name", default="offline_engine")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        sim = scratch / "sim"
        simulate(
            load_scenario(),
            days=args.days,
            tx_per_day=args.tx_per_day,
            seed=5,
            out=sim,
            progress=False,
        )
        baseline = export_revision(args.baseline, scratch)
        runs: dict[str, list[dict[str, float]]] = {"baseline": [], "this": []}
        for _ in range(args.rounds):
            for name, checkout in (("baseline", baseline), ("this", ROOT)):
                runs[name].append(run_engine(checkout, sim / "events", sim / "labels"))
    base, this = summarise(runs["baseline"]), summarise(runs["this"])
    results = {
        "table": f"{args.days} days x {args.tx_per_day} attempts/day (simulator, seed 5)",
        "baseline_revision": args.baseline,
        "baseline": base,
        "this": this,
        "speedup_median_wall": round(base["median_seconds"] / this["median_seconds"], 2),
        "cpu_ratio": round(
            base["cpu_seconds_per_million_events"] / this["cpu_seconds_per_million_events"], 2
        ),
    }
    write(args.name, results, module="bench.offline_engine")


if __name__ == "__main__":
    main()
