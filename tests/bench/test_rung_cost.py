"""The per-rung CPU benchmark measures the rungs it names."""

from __future__ import annotations

from bench.rung_cost import measure
from serve_graph.decision_log import iter_records
from tests.serve_graph.test_pipeline import _pipeline, _record


def test_full_and_shed_batches_reach_their_rungs_and_are_logged(
    trained, registry_root, redis_url, tmp_path
) -> None:
    pipeline = _pipeline(registry_root, redis_url, tmp_path / "log")
    record = _record(40.0)
    try:
        full = measure(pipeline, [record], size=4, batches=3, shed=False)
        shed = measure(pipeline, [record], size=4, batches=3, shed=True)
    finally:
        pipeline.close()
    assert full["decisions"] == shed["decisions"] == 12
    assert set(full["rungs"]) <= {"1", "2"} and sum(full["rungs"].values()) == 12, full
    assert shed["rungs"] == {"4": 12}, shed
    for got in (full, shed):
        assert got["decide_cpu_ms"] > 0 and got["after_cpu_ms"] > 0, got
    # every decision measured went through the log, as a served one does
    assert sum(1 for _ in iter_records(pipeline.log_root)) == 24
