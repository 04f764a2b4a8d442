"""Tampering with a real decision log is caught by `checkout-risk verify-log`.

The log comes from the served app under load, stopped cleanly (the open segment is
sealed), started again on the same folder and loaded again — two processes, two streams,
sealed segments — as an operator would find it. Each kind of tampering is applied to a
copy and the CLI must exit non-zero naming the problem (and, where one exists, the
decision). The untouched log verifies and holds exactly the decisions the clients got.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos.conftest import decisions_in_log, record_row
from tests.chaos.load import LoadDriver, LoadResult
from tests.chaos.services import RedisServer, ServedApp

pytestmark = pytest.mark.chaos

CLI = str(Path(sys.executable).parent / "checkout-risk")


@pytest.fixture(scope="module")
def served_log(tmp_path_factory, champion_registry, scale) -> tuple[Path, set[str]]:
    """A decision log written by two runs of the served app, and the ids clients received."""
    root = tmp_path_factory.mktemp("tamper")
    redis = RedisServer(root / "redis").start()
    log_dir = root / "decision-log"
    received: set[str] = set()
    results = []
    try:
        for run in range(2):
            app = ServedApp(root / f"app{run}", champion_registry, redis.url, log_dir=log_dir)
            app.start().warm_up(10)
            result = LoadDriver(app.decisions_url, app.key, scale.rate_per_s, scale.phase_s).run()
            app.stop()
            assert not result.errors, result.errors[:3]
            received |= {a.decision_id for a in result.ok}
            results.append(result)
    finally:
        redis.stop()
    lost = len(received - decisions_in_log(log_dir))
    both = LoadResult([a for r in results for a in r.answers], scale.rate_per_s, 2 * scale.phase_s)
    record_row("none: baseline, two runs with a clean stop between", both, lost)
    return log_dir, received


def _verify(log_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CLI, "verify-log", "--log", str(log_dir)], capture_output=True, text=True, timeout=120
    )


def test_untouched_log_verifies_and_holds_every_decision(served_log) -> None:
    log_dir, received = served_log
    out = _verify(log_dir)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "chain verifies" in out.stdout and "2 stream(s)" in out.stdout
    logged = decisions_in_log(log_dir)
    assert received <= logged  # warm-up decisions are logged too; none of the load's is lost
    assert f"{len(logged):,} records" in out.stdout


def _first_segment(log_dir: Path) -> Path:
    stream = sorted(p for p in log_dir.iterdir() if p.is_dir())[0]
    return sorted(stream.glob("segment-*.jsonl"))[0]


def _edit(lines: list[str]) -> str:
    line = json.loads(lines[5])
    line["record"]["action"] = "approve" if line["record"]["action"] != "approve" else "block"
    lines[5] = json.dumps(line)
    return line["record"]["decision_id"]


def _delete(lines: list[str]) -> str:
    del lines[4]
    return json.loads(lines[4])["record"]["decision_id"]  # the record after the gap is named


def _reorder(lines: list[str]) -> str:
    lines[2], lines[3] = lines[3], lines[2]
    return json.loads(lines[3])["record"]["decision_id"]  # now after a later record


def _insert(lines: list[str]) -> str:
    forged = json.loads(lines[1])
    forged["record"]["decision_id"] = "forged-decision"
    forged["record"]["action"] = "approve"
    lines.insert(2, json.dumps(forged))
    return "forged-decision"


def _truncate(lines: list[str]) -> str:
    del lines[len(lines) // 2 :]  # the tail and the seal are gone; later segments remain
    return ""


TAMPERING: dict[str, tuple[Callable[[list[str]], str], str]] = {
    "edit": (_edit, "content does not match its hash (edited)"),
    "delete": (_delete, "record(s) missing before this one"),
    "reorder": (_reorder, "record out of order or inserted"),
    "insert": (_insert, "record out of order or inserted"),
    "truncate": (_truncate, "segment is not sealed but later segments exist (truncated)"),
}


@pytest.mark.parametrize("kind", list(TAMPERING))
def test_each_kind_of_tampering_is_named(served_log, tmp_path: Path, kind: str) -> None:
    log_dir, _ = served_log
    copy = tmp_path / "log"
    shutil.copytree(log_dir, copy)
    segment = _first_segment(copy)
    lines = segment.read_text().splitlines()
    assert len(lines) > 10 and json.loads(lines[-1]).get("seal")  # a sealed, real segment
    tamper, phrase = TAMPERING[kind]
    named = tamper(lines)
    segment.write_text("\n".join(lines) + "\n")

    out = _verify(copy)
    assert out.returncode == 1, out.stdout
    problems = [line for line in out.stdout.splitlines() if line.startswith("TAMPERED")]
    assert any(phrase in p and named in p for p in problems), out.stdout
    assert "chain FAILS" in out.stdout
