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


def test_loop_figures_compare_an_overloads_loop_time_with_the_maximums() -> None:
    from bench.serving import loop_figures

    at70 = {"achieved_rps": 280.0, "server_busiest_threads_cores": [0.63, 0.1]}
    over = {"achieved_rps": 800.0, "server_busiest_threads_cores": [0.68, 0.07]}
    web = {"achieved_rps": 800.0, "server_busiest_threads_cores": [0.56, 0.01]}
    got = loop_figures(at70, over, web)
    assert got["fused_loop_ms_per_answer_at_70pct"] == 2.25
    assert got["overload_loop_ms_per_answer"] == 0.85
    assert got["noop_replica_loop_ms_per_answer_at_2x"] == 0.7
    assert got["overload_loop_load_over_max"] == round(2 * 0.85 / 2.25, 3)
    assert got["overload_web_share_of_loop"] == round(0.7 / 0.85, 3)


def test_loop_figures_are_none_for_a_hold_that_answered_nothing() -> None:
    from bench.serving import loop_figures

    at70 = {"achieved_rps": 280.0, "server_busiest_threads_cores": [0.63]}
    dead = {"achieved_rps": 0.0, "server_busiest_threads_cores": [0.0]}
    got = loop_figures(at70, dead, dead)
    assert got["overload_loop_ms_per_answer"] is None
    assert got["overload_loop_load_over_max"] is None
    assert got["overload_web_share_of_loop"] is None
    assert got["fused_loop_ms_per_answer_at_70pct"] == 2.25
