"""Chaos suite fixtures: a private Redis, the served app, load scale and the results table.

Short by default (CI); ``pytest tests/chaos --chaos-long`` runs longer loads and many more
fuzz examples. Each test that drives load records one row (fault, load, answers, errors,
worst latency, records lost) in ``reports/chaos/summary.json`` and the terminal summary,
which is where the README's table comes from.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.chaos.load import LoadResult
from tests.chaos.services import RedisServer, ServedApp

ROOT = Path(__file__).resolve().parents[2]
ROWS: list[dict] = []

settings.register_profile(
    "chaos",
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "chaos-long",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def pytest_configure(config: pytest.Config) -> None:
    settings.load_profile("chaos-long" if config.getoption("--chaos-long") else "chaos")


@dataclass(frozen=True)
class Scale:
    """How hard the suite pushes: load rate, seconds per phase, fuzz examples."""

    long: bool
    rate_per_s: float
    phase_s: float
    fuzz_examples: int


@pytest.fixture(scope="session")
def scale(request: pytest.FixtureRequest) -> Scale:
    if request.config.getoption("--chaos-long"):
        return Scale(True, rate_per_s=40, phase_s=20, fuzz_examples=2000)
    return Scale(False, rate_per_s=40, phase_s=3, fuzz_examples=150)


@pytest.fixture(scope="session")
def champion_registry(request: pytest.FixtureRequest) -> Path:
    """A registry with a champion: CHECKOUT_RISK_CHAOS_REGISTRY's, else one trained here.

    Pointing the variable at an existing registry (e.g. ``models/`` after ``make run``)
    skips the few minutes of training when iterating on the suite.
    """
    from trainers.registry import Registry

    existing = os.environ.get("CHECKOUT_RISK_CHAOS_REGISTRY")
    if existing:
        if Registry(Path(existing)).stage("champion") is None:
            pytest.fail(f"CHECKOUT_RISK_CHAOS_REGISTRY={existing} has no champion version")
        return Path(existing)
    request.getfixturevalue("trained")
    root = request.getfixturevalue("registry_root")
    Registry(root).set_stage("v1", "champion", "chaos suite")
    return root


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def serve(tmp_path: Path, champion_registry: Path) -> Iterator[Callable[..., ServedApp]]:
    """Start served apps (``serve(redis_url)``); each is stopped at the end of the test."""
    apps: list[ServedApp] = []

    def start(redis_url: str, log_dir: Path | None = None, warm: bool = True) -> ServedApp:
        app = ServedApp(
            tmp_path / f"app{len(apps)}", champion_registry, redis_url, log_dir=log_dir
        ).start()
        apps.append(app)
        if warm:
            app.warm_up()
        return app

    yield start
    for app in apps:
        app.stop()


def decisions_in_log(log_dir: Path) -> set[str]:
    from serve_graph.decision_log import iter_records

    return {
        r["decision_id"] for r in iter_records(log_dir) if r.get("type", "decision") == "decision"
    }


def record_row(fault: str, result: LoadResult, lost: int | None) -> dict:
    """One line of the README's reliability table."""
    s = result.summary()
    row = {
        "fault": fault,
        "load": f"{s['rate_per_s']:g}/s for {s['duration_s']:g} s",
        "answers": s["answers_200"],
        "errors": s["errors"],
        "worst_ms": s["worst_ms"],
        "worst_server_ms": s["worst_server_ms"],
        "p99_ms": s["p99_ms"],
        "records_lost": lost,
        "rungs": s["rungs"],
    }
    ROWS.append(row)
    return row


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not ROWS:
        return
    out = ROOT / "reports" / "chaos" / "summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(ROWS, indent=2) + "\n")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ROWS:
        return
    terminalreporter.section("chaos results")
    terminalreporter.write_line(
        "| fault | load | answers | errors | worst latency | records lost |"
    )
    for r in ROWS:
        terminalreporter.write_line(
            f"| {r['fault']} | {r['load']} | {r['answers']} | {r['errors']} | "
            f"{r['worst_ms']} ms (p99 {r['p99_ms']} ms, server {r['worst_server_ms']} ms) | "
            f"{r['records_lost']} | rungs {r['rungs']}"
        )


@pytest.fixture(scope="module")
def quiet_app(tmp_path_factory, champion_registry) -> Iterator[tuple[ServedApp, RedisServer]]:
    """A served app on its own Redis that only this module's tests talk to.

    Its region is us-east with one day as the oldest accepted event_time, so the
    per-region clock window is exercised on both sides.
    """
    import yaml

    root = tmp_path_factory.mktemp("quiet")
    config = yaml.safe_load((ROOT / "configs" / "regions" / "us-east.yaml").read_text())
    config["max_event_age_s"] = 86_400
    region = root / "us-east-one-day.yaml"
    region.write_text(yaml.safe_dump(config))
    redis = RedisServer(root / "redis").start()
    app = ServedApp(root / "app", champion_registry, redis.url, region=str(region)).start()
    app.warm_up(10)
    yield app, redis
    app.stop()
    redis.stop()


def store_and_log_state(app: ServedApp, redis: RedisServer) -> dict:
    """Everything a request could leave behind: every Redis key and value, the log bytes."""
    import time

    time.sleep(0.5)  # post-response feature writes of earlier valid requests settle first
    client = redis.client()
    keys = sorted(client.scan_iter(count=1000))
    dump = {k: client.dump(k) for k in keys}
    log = {
        str(p.relative_to(app.log_dir)): p.read_bytes()
        for p in sorted(app.log_dir.rglob("segment-*.jsonl"))
    }
    return {"dbsize": client.dbsize(), "keys": dump, "log": log}


def assert_on_time(result: LoadResult, deadline_ms: float, hang_ms: float = 1000.0) -> None:
    """The latency promise, as a shared 2-core machine can check it without flaking.

    On the service's own clock (arrival to decision): p99 inside the deadline and no
    answer beyond twice it. The client's clock adds the load driver's own scheduling in
    the test process, which on an oversubscribed machine reaches a few hundred ms, so it
    is only held to ``hang_ms``: a blocked call or a missed timeout still fails the test.
    """
    assert_latencies_on_time(
        [a.server_ms or 0.0 for a in result.ok],
        [a.latency_ms for a in result.answers],
        deadline_ms,
        result.summary(),
        hang_ms,
    )


def assert_latencies_on_time(
    server_ms: list[float],
    client_ms: list[float],
    deadline_ms: float,
    summary: dict,
    hang_ms: float = 1000.0,
) -> None:
    """`assert_on_time` on plain lists (the serving-fault tests' load is ``bench/load.py``)."""
    server = sorted(server_ms)
    assert server, summary
    p99_server = server[min(len(server) - 1, int(0.99 * len(server)))]
    assert p99_server < deadline_ms, summary
    assert server[-1] < 2 * deadline_ms, summary
    assert max(client_ms, default=0.0) < hang_ms, summary


def assert_store_path(answers: list, degraded: bool) -> None:
    """Whether these answers went around the online store (rung 3) or through it (rung 1).

    While the store is slow or dead every answer must go around it (rung 3, with an
    "online store" reason), or shed to rules only (rung 4) when this machine's CPU leaves
    too little time to score. While it is healthy, most answers must take the full path:
    on a quiet machine all do, but on an oversubscribed one a 25 ms Redis read can time
    out and open the one-second circuit breaker, so up to 40% may go around it.
    """
    assert answers
    rungs = [a.rung for a in answers]
    if degraded:
        wrong = [(a.sent_s, a.rung, a.degraded_reason) for a in answers if a.rung not in (3, 4)]
        assert not wrong, wrong[:5]
        assert all("online store" in (a.degraded_reason or "") for a in answers if a.rung == 3)
        assert rungs.count(4) <= 0.2 * len(rungs), rungs.count(4)
    else:
        assert rungs.count(1) >= 0.6 * len(rungs), [
            (a.sent_s, a.rung, a.degraded_reason) for a in answers if a.rung != 1
        ][:5]
