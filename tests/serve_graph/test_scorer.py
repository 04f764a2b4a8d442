"""The scorer's hot swap: promotions load beside the serving models, never in a request."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from serve_graph import stages
from serve_graph.pipeline import synthetic_attempt
from serve_graph.stages import FeatureLookup, Scorer
from trainers.registry import Registry


@pytest.fixture
def registry(trained, registry_root, tmp_path) -> Path:
    """A private registry holding v1 (champion) and a copy of it named v2."""
    root = tmp_path / "models"
    for name in ("v1", "v2"):
        shutil.copytree(registry_root / "v1", root / name)
        meta = root / name / "metadata.json"
        meta.chmod(0o644)
        meta.write_text(json.dumps(json.loads(meta.read_text()) | {"version": name}))
    Registry(root).set_stage("v1", "champion", "scorer test")
    return root


def _row() -> dict:
    return FeatureLookup.request_only([synthetic_attempt("us-east")])[0]


def test_the_watcher_loads_a_promotion_with_no_request_asking(registry, monkeypatch) -> None:
    loaded_in: list[str] = []
    real = stages.load_version

    def spy(version, root):
        loaded_in.append(threading.current_thread().name)
        return real(version, root)

    monkeypatch.setattr(stages, "load_version", spy)
    scorer = Scorer(registry)
    Registry(registry).set_stage("v2", "champion", "promote")
    Registry(registry).set_stage("v1", "shadow", "the old champion watched")
    deadline = time.monotonic() + 30
    while scorer.champion.version != "v2" and time.monotonic() < deadline:
        time.sleep(0.05)
    # v1 was loaded at start; the watcher loaded v2 and kept v1, now the shadow, as it was
    assert loaded_in == ["MainThread", "scorer-registry-watch"]
    assert scorer.shadow.version == "v1" and scorer.has_shadow()
    assert scorer.score([_row()], fallback=True)[1] == "v2/fallback"
    assert scorer.load_error is None
    scorer.close()


def test_a_version_that_cannot_load_keeps_the_one_serving(registry) -> None:
    scorer = Scorer(registry, watch=False)
    (registry / "v2" / "fallback.cbm").chmod(0o644)
    (registry / "v2" / "fallback.cbm").write_bytes(b"not a model")
    Registry(registry).set_stage("v2", "champion", "a broken promotion")
    scorer.refresh()
    assert scorer.champion.version == "v1" and scorer.load_error
    p, version = scorer.score([_row()], fallback=True)
    assert version == "v1/fallback" and 0 <= p[0] <= 1
    Registry(registry).set_stage("v1", "champion", "rolled back")
    scorer.refresh()
    assert scorer.champion.version == "v1" and scorer.load_error is None


def test_a_request_never_loads_a_version(registry) -> None:
    """Scoring uses the versions loaded; only `refresh` (the watcher) loads new ones."""
    scorer = Scorer(registry, watch=False)
    Registry(registry).set_stage("v2", "champion", "promote")
    time.sleep(1.1)  # past any once-a-second check a request might make
    assert scorer.score([_row()], fallback=True)[1] == "v1/fallback"
    assert not scorer.has_shadow() and scorer.champion.version == "v1"
    scorer.refresh()
    assert scorer.score([_row()], fallback=True)[1] == "v2/fallback"
