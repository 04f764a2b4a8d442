"""How bench.serving finds a replica's processes and what CPU they spent."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from bench.serving import cpu_seconds, replica_pids


def test_a_replica_is_found_by_its_process_title_and_its_cpu_counted() -> None:
    # a process whose command line carries the title, as Ray's does for a replica's worker
    busy = "import time\nt = time.process_time() + 0.3\nwhile time.process_time() < t: pass\n"
    busy += "time.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", busy, "ServeReplica:bench-x:Decider"])
    try:
        assert replica_pids("bench-x", "Decider") == [proc.pid]
        spent = 0.0
        for _ in range(50):  # until the busy loop is done
            spent = cpu_seconds([proc.pid])
            if spent >= 0.3:
                break
            time.sleep(0.1)
        assert 0.3 <= spent < 5
    finally:
        proc.kill()
        proc.wait()


def test_a_missing_application_is_named() -> None:
    with pytest.raises(RuntimeError, match="ServeReplica:no-such-app:Decider"):
        replica_pids("no-such-app", "Decider")


def test_helper_processes_are_found_by_their_executable_name() -> None:
    from bench.serving import processes_named

    proc = subprocess.Popen(["sleep", "30"])
    try:
        assert proc.pid in processes_named("sleep")
        assert processes_named("no-such-executable-here") == []
    finally:
        proc.kill()
        proc.wait()


_SPINNER = """
import threading, time

def spin():
    t = time.thread_time() + 0.4
    while time.thread_time() < t:
        pass
    time.sleep(30)

threading.Thread(target=spin).start()
time.sleep(30)
"""


def test_the_cpu_of_each_thread_is_counted_apart() -> None:
    from bench.serving import thread_seconds

    proc = subprocess.Popen([sys.executable, "-c", _SPINNER])
    try:
        per_thread: dict = {}
        for _ in range(50):
            per_thread = thread_seconds([proc.pid])
            if max(per_thread.values(), default=0) >= 0.35:  # /proc counts in ticks
                break
            time.sleep(0.1)
        busiest = sorted(per_thread.values(), reverse=True)
        assert len(busiest) >= 2 and busiest[0] >= 0.35 and busiest[1] < 0.2
        assert all(pid == proc.pid for pid, _ in per_thread)
    finally:
        proc.kill()
        proc.wait()
