"""The cluster helpers' own failure reporting, without a cluster."""

from __future__ import annotations

import socket

import pytest

from checkout_risk import cluster


def test_a_failed_serve_command_says_why_in_its_first_line(monkeypatch) -> None:
    """`make run` and the benchmarks deploy through `cluster.serve`: when Serve's CLI
    fails, the error's first line is the CLI's own last word, not a CalledProcessError."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    monkeypatch.setattr(cluster, "JOBS_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(cluster.ClusterError) as failed:
        cluster.serve("status")
    first = str(failed.value).splitlines()[0]
    assert first.startswith("serve status failed: ") and str(port) in first, first
    assert cluster.serve("status", check=False) == ""  # the caller asked not to check
