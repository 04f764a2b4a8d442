"""Recording benchmark results with the command, revision and machine that produced them."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """What ran the benchmark: cores, memory, CPU model, Python."""
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["memory_gb"] = round(int(mem) / 1024 / 1024, 1)
    except OSError:
        pass
    return info


def git_revision() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def percentiles(samples_ms: list[float] | np.ndarray) -> dict[str, float]:
    a = np.asarray(samples_ms, dtype=float)
    return {f"p{q:g}_ms": round(float(np.percentile(a, q)), 3) for q in (50, 90, 99, 99.9)}


def write(name: str, results: dict[str, Any], module: str) -> Path:
    """Write bench/results/<name>.json and print it; `module` is the `python -m` target."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python", "-m", module, *sys.argv[1:]])
    record = {
        "benchmark": name,
        "command": command,
        "git_revision": git_revision(),
        "recorded_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        # other jobs share the machine: the load when the run ended says how much
        "load_average_1_5_15m": [round(x, 2) for x in os.getloadavg()],
        "results": results,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return path
