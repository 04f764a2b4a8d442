"""Shared fixtures: a real Redis (REDIS_URL or the embedded server) and a small marketplace."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos-long",
        action="store_true",
        default=False,
        help="tests/chaos: longer load and many more fuzz examples (CI runs the short form)",
    )


def _urls() -> list[str]:
    """Every real Redis available: the embedded one always, REDIS_URL's when set."""
    from feature_views.store import embedded_url

    urls = [embedded_url()]
    if os.environ.get("REDIS_URL"):
        urls.append(os.environ["REDIS_URL"])
    return urls


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The store the suite's integration tests use: REDIS_URL if set, else embedded."""
    from feature_views.store import store_url

    return store_url()


@pytest.fixture(params=["embedded", "REDIS_URL"])
def any_redis_url(request: pytest.FixtureRequest) -> str:
    """Parametrised over both kinds of server, for the cheap tests."""
    from feature_views.store import embedded_url

    if request.param == "embedded":
        return embedded_url()
    if not os.environ.get("REDIS_URL"):
        pytest.skip("REDIS_URL not set: only the embedded Redis is available here")
    return os.environ["REDIS_URL"]


@pytest.fixture
def store(redis_url: str) -> Iterator:
    """An OnlineFeatureStore in a fresh namespace, deleted afterwards."""
    from feature_views.online import OnlineFeatureStore
    from feature_views.store import connect

    s = OnlineFeatureStore(connect(redis_url, timeout_s=5.0), namespace=f"t-{uuid.uuid4().hex[:8]}")
    yield s
    s.flush_namespace()


@pytest.fixture(scope="session")
def small_sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 days x ~600 attempts/day (~24k attempts), deterministic."""
    from simulator.config import load_scenario
    from simulator.marketplace import simulate

    out = tmp_path_factory.mktemp("sim") / "market"
    simulate(load_scenario(), days=40, tx_per_day=600, seed=3, out=out, progress=False)
    return out


@pytest.fixture(scope="session")
def medium_sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A larger marketplace for statistics: 60 days x 4,000 attempts/day."""
    from simulator.config import load_scenario
    from simulator.marketplace import simulate

    out = tmp_path_factory.mktemp("sim") / "medium"
    simulate(load_scenario(), days=60, tx_per_day=4000, seed=11, out=out, progress=False)
    return out


@pytest.fixture(scope="session")
def training_sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """75 days x 2,500 attempts/day with a 0.6% fraud rate: enough matured fraud to learn."""
    from simulator.config import load_scenario
    from simulator.marketplace import simulate

    out = tmp_path_factory.mktemp("sim") / "training"
    simulate(
        load_scenario(overrides={"fraud": {"rate": 0.006}}),
        days=75,
        tx_per_day=2500,
        seed=21,
        out=out,
        progress=False,
    )
    return out


@pytest.fixture(scope="session")
def registry_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def trained(training_sim: Path, registry_root: Path) -> dict:
    """One model version trained locally (no cluster) on the training marketplace."""
    from trainers.train import train

    return train(training_sim / "events", training_sim / "labels", registry_root / "v1")


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """One real local Ray cluster for the whole test session."""
    from checkout_risk import cluster

    was_up = cluster.is_up()
    address = cluster.up()
    yield address
    if not was_up:
        cluster.down()
