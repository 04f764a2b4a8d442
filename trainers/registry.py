"""The model registry: immutable versions, stages, promotion gates, instant rollback.

Layout (``models/`` by default, ``CHECKOUT_RISK_MODELS`` to move it)::

    models/<version>/model.cbm        champion-candidate CatBoost model
    models/<version>/fallback.cbm     request-only model for when the online store is down
    models/<version>/metadata.json    features and view versions, window, maturity,
                                      calibration, metrics, data and code hashes
    models/<version>/reference.parquet  a bounded sample of the training data (features,
                                      score, action): the reference for drift monitoring
    models/registry.json              stages (shadow, canary, champion) and their history

A version folder is written under a temporary name and renamed into place, then made
read-only; an existing version is never overwritten. Stages live in one small JSON file
replaced atomically, so promotion and rollback are instant and serving replicas pick them
up on their next reload.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainers.model import FraudModel

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("shadow", "canary", "champion")


class RegistryError(ValueError):
    """A registry operation that cannot proceed; the message says why."""


def registry_root() -> Path:
    return Path(os.environ.get("CHECKOUT_RISK_MODELS", ROOT / "models"))


def code_hash() -> dict[str, str]:
    """Hash of the code that shapes a model: feature views and trainers, plus git revision."""
    digest = hashlib.sha256()
    for folder in ("feature_views", "trainers"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            digest.update(path.read_bytes())
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        rev = "unknown"
    return {"sha256": digest.hexdigest(), "git_revision": rev}


@dataclass
class ModelVersion:
    """A loaded registry version: metadata plus the main and fallback models."""

    version: str
    path: Path
    metadata: dict[str, Any]
    model: FraudModel
    fallback: FraudModel


def write_version(
    directory: Path,
    model: FraudModel,
    fallback: FraudModel,
    metadata: dict[str, Any],
    reference: Any = None,
) -> Path:
    """Write a new immutable version folder at `directory` (must not exist).

    `reference` (a DataFrame) is stored as ``reference.parquet``: drift reports compare
    live traffic with the data the model learned from, without recomputing it.
    """
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise RegistryError(f"{directory} already exists: versions are immutable")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        model.save(staging, "model")
        fallback.save(staging, "fallback")
        meta = dict(metadata, version=directory.name)
        if reference is not None:
            reference.to_parquet(staging / "reference.parquet", index=False)
            meta["reference_sample_rows"] = len(reference)
        (staging / "metadata.json").write_text(json.dumps(meta, indent=2, default=str))
        for f in staging.iterdir():
            f.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        if directory.exists():
            directory.rmdir()
        os.rename(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def load_version(path_or_version: str | Path, root: Path | None = None) -> ModelVersion:
    """Load a version by folder path or by name under the registry root."""
    path = Path(path_or_version)
    if not (path / "metadata.json").exists():
        path = (root or registry_root()) / str(path_or_version)
    if not (path / "metadata.json").exists():
        raise RegistryError(f"no model version at {path_or_version}")
    meta = json.loads((path / "metadata.json").read_text())
    model = FraudModel.load(path, "model", meta["features"], meta["calibration"])
    fallback = FraudModel.load(
        path, "fallback", meta["fallback"]["features"], meta["fallback"]["calibration"]
    )
    return ModelVersion(meta["version"], path, meta, model, fallback)


class Registry:
    """Stages over the versions of one registry folder."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root or registry_root())
        self.file = self.root / "registry.json"

    def versions(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and (p / "metadata.json").exists()
        )

    def state(self) -> dict[str, Any]:
        if not self.file.exists():
            return {"stages": {s: None for s in STAGES}, "history": []}
        return json.loads(self.file.read_text())

    def stage(self, name: str) -> str | None:
        return self.state()["stages"].get(name)

    def _save(self, state: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.file)

    def set_stage(self, version: str, stage: str, reason: str) -> dict[str, Any]:
        if stage not in STAGES:
            raise RegistryError(f"unknown stage {stage!r}; use one of {STAGES}")
        if version not in self.versions():
            raise RegistryError(f"unknown version {version!r} in {self.root}")
        state = self.state()
        previous = state["stages"].get(stage)
        state["stages"][stage] = version
        state["history"].append(
            {
                "at": dt.datetime.now(dt.timezone.utc).isoformat(),
                "event": "promote",
                "stage": stage,
                "version": version,
                "previous": previous,
                "reason": reason,
            }
        )
        self._save(state)
        return state

    def rollback(self) -> tuple[str, str]:
        """Make the previous champion the champion again; returns (from, to)."""
        state = self.state()
        current = state["stages"].get("champion")
        earlier = [
            h
            for h in state["history"]
            if h["stage"] == "champion" and h["event"] in ("promote", "rollback")
        ]
        if current is None or not earlier or earlier[-1].get("previous") is None:
            raise RegistryError("no previous champion to roll back to")
        target = earlier[-1]["previous"]
        state["stages"]["champion"] = target
        # the entry records where we came from, so a second rollback goes further back
        older = [h for h in earlier[:-1] if h["version"] == target]
        state["history"].append(
            {
                "at": dt.datetime.now(dt.timezone.utc).isoformat(),
                "event": "rollback",
                "stage": "champion",
                "version": target,
                "previous": older[-1]["previous"] if older else None,
                "rolled_back": current,
                "reason": "rollback",
            }
        )
        self._save(state)
        return current, target
