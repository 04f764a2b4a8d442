"""Shared setup for tests that serve over HTTP on the real local Ray cluster."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from checkout_risk import cluster

BASE = "http://127.0.0.1:8000"


def post(
    url: str, body: dict, key: str | None = None, timeout: float = 10
) -> tuple[int, dict, float]:
    req = urllib.request.Request(
        f"{url}/v1/decisions",
        data=json.dumps(body, default=str).encode(),
        headers={"Content-Type": "application/json", **({"X-API-Key": key} if key else {})},
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read()), (time.perf_counter() - started) * 1000
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}"), (time.perf_counter() - started) * 1000


def as_body(rec: dict) -> dict:
    out = {}
    for k, v in rec.items():
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NaT:
            continue
        out[k] = v.isoformat() if isinstance(v, pd.Timestamp) else v
    return out


def load_history(training_sim: Path, trained: dict, url: str, region_name: str) -> pd.DataFrame:
    """Load the online store with history up to a week after the training window; returns
    the attempts after that point (what the tests replay as live traffic)."""
    from feature_views.materialize import load_frames
    from feature_views.offline import LABEL_KEY_COLUMNS, fraud_labels
    from feature_views.online import OnlineFeatureStore
    from feature_views.store import connect
    from feature_views.tables import read_attempts, read_labels
    from serve_graph.config import load_region
    from serve_graph.pipeline import region_store_url

    attempts = read_attempts(training_sim / "events")
    labels = read_labels(training_sim / "labels")
    start = pd.Timestamp(trained["window"]["end"], tz="UTC") + pd.Timedelta(days=7)
    history = attempts[attempts["event_time"] < start]
    region = load_region(region_name)
    store = OnlineFeatureStore(
        connect(region_store_url(region, url), timeout_s=30), region.namespace
    )
    store.flush_namespace()
    fraud = fraud_labels(labels, attempts[["transaction_id", *LABEL_KEY_COLUMNS]])
    load_frames(
        store,
        [g.reset_index(drop=True) for _, g in history.groupby(history["event_time"].dt.floor("D"))],
        fraud[fraud["label_ms"] < start.value // 1_000_000],
    )
    return attempts[attempts["event_time"] >= start]


def app_spec(
    name: str,
    region: str,
    path: str,
    common: dict[str, Any],
    graph: bool = False,
    fused_replicas: int = 1,
    env: dict[str, str] | None = None,
    hops: list[str] | None = None,
) -> dict[str, Any]:
    """One application of a Serve config, with fractional CPUs that fit two cores; a graph
    runs `hops` as deployments of their own (default: every stage)."""
    from serve_graph.deployments import hop_deployments

    spec: dict[str, Any] = {
        "name": name,
        "route_prefix": path,
        "args": dict(common, region=region) | ({"hops": hops} if hops else {}),
        "import_path": f"serve_graph.deployments:{'graph' if graph else 'fused'}_app",
    }
    if env:
        spec["runtime_env"] = {"env_vars": env}
    if graph:
        spec["deployments"] = [
            {"name": n, "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1}}
            for n in hop_deployments(hops)
        ]
    else:
        spec["deployments"] = [
            {"name": n, "num_replicas": r, "ray_actor_options": {"num_cpus": c}}
            for n, r, c in (
                ("FusedDecider", fused_replicas, 0.25),
                ("ShadowScorerDeployment", 1, 0.05),
            )
        ]
    return spec


def deploy(apps: list[dict[str, Any]], path: Path) -> None:
    """`serve deploy` a config of these applications (declarative: others are removed)."""
    config = {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": 8000},
        "applications": apps,
    }
    path.write_text(yaml.safe_dump(config))
    cluster.serve("deploy", str(path))


def app_status(name: str) -> str | None:
    """An application's status in `serve status` (RUNNING, DEPLOYING, ...), None if absent."""
    apps = (yaml.safe_load(cluster.serve("status")) or {}).get("applications") or {}
    return (apps.get(name) or {}).get("status")


def shutdown() -> None:
    cluster.serve("shutdown", "--yes", check=False)


def replica_pids(app: str, deployment: str) -> list[int]:
    """PIDs of the live replica processes of one deployment (their process titles)."""
    title = f"ray::ServeReplica:{app}:{deployment}".encode()
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (proc / "cmdline").read_bytes().split(b"\0")[0].startswith(title):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids
