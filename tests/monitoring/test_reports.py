"""Drift, guardrail and quality reports over a decision log made by the real pipeline."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from monitoring.jobs import main
from monitoring.windows import LogWindow, ModelReference, WindowError, parse_reference, parse_window
from tests.monitoring.conftest import DRIFT_FROM, ROOT

QUIET = "2026-06-09..2026-06-12"  # before the drift: the reference
BEFORE = "2026-06-12"  # the last day without drift
DRIFTING = "2026-06-20..2026-06-25"


def _run(tmp_path: Path, *argv: str) -> tuple[int, dict, Path]:
    out = tmp_path / "reports"
    before = set(out.glob("*")) if out.exists() else set()
    code = main([*argv, "--out", str(out)])
    made = sorted(set(out.glob("*")) - before) if out.exists() else []
    if not made:
        return code, {}, out
    return code, json.loads((made[-1] / "report.json").read_text()), made[-1]


def test_windows_and_references(registry_root, trained) -> None:
    anchor = pd.Timestamp("2026-03-08T12:00:00Z")
    w = parse_window("last:24h", anchor)
    assert (w.start, w.end) == (anchor - pd.Timedelta(hours=24), anchor)
    w = parse_window("2026-03-01..2026-03-08")
    assert w.end - w.start == pd.Timedelta(days=7) and len(w.days()) == 7
    assert parse_window("2026-03-01").end == pd.Timestamp("2026-03-02", tz="UTC")
    for bad in ("yesterday", "2026-03-08..2026-03-01", "last:0h"):
        with pytest.raises(WindowError):
            parse_window(bad, anchor)
    with pytest.raises(WindowError, match="needs an anchor"):
        parse_window("last:24h", None)
    from trainers.registry import Registry

    Registry(registry_root).set_stage("v1", "champion", "windows test")
    assert isinstance(parse_reference("champion", registry_root), ModelReference)
    assert isinstance(parse_reference("v1", registry_root), ModelReference)
    assert isinstance(parse_reference(QUIET, registry_root), LogWindow)


def test_drift_scores_are_evidentlys_report_numbers(drift_log) -> None:
    from monitoring.config import load_drift
    from monitoring.data import load_decisions
    from monitoring.drift import drift_scores, evidently_drift

    config = load_drift()
    reference = load_decisions(drift_log, parse_window(QUIET))
    current = load_decisions(drift_log, parse_window(DRIFTING))
    report, snapshot = evidently_drift(reference, current, config, True)
    fast = drift_scores(reference, current, config, True)
    assert set(fast) == set(report) == {*config.features, "fraud_probability", "action"}
    for column, value in report.items():
        assert fast[column]["score"] == pytest.approx(value["score"], abs=1e-5), column
        assert fast[column]["drifted"] == value["drifted"]
    assert snapshot.dict()["metrics"]


def test_drift_scenario_is_flagged_and_a_quiet_window_is_not(drift_log, tmp_path) -> None:
    args = ["drift-report", "--log", str(drift_log), "--reference", QUIET]
    code, quiet, _ = _run(tmp_path, *args, "--current", BEFORE)
    assert code == 0, quiet["alerts"]
    assert quiet["alerts"] == []

    code, report, folder = _run(tmp_path, *args, "--current", DRIFTING)
    assert code == 1
    flagged = {a["scope"]: a for a in report["alerts"]}
    assert {"overall", "cross-border"} <= set(flagged)
    overall = next(s for s in report["scopes"] if s["scope"] == "overall")
    assert "is_cross_border" in overall["drifted_features"]
    assert overall["prediction"]["score"]["drifted"]  # the fraud campaign moves the scores
    # since when: the per-day timeline finds the first day of the drift
    assert flagged["overall"]["since"] == str(DRIFT_FROM.date())
    page = (folder / "report.html").read_text()
    assert page.index("alert(s)") < page.index("What was compared")  # verdict first
    assert "uniform random sample" in page or "no sampling" in page
    assert (folder / "evidently" / "overall.html").stat().st_size > 10_000
    assert (folder / "evidently" / "cross-border.json").exists()


def test_sampling_is_stated_and_bounded(drift_log, tmp_path) -> None:
    config = Path(__file__).resolve().parents[2] / "configs" / "monitoring" / "drift.yaml"
    small = tmp_path / "drift.yaml"
    small.write_text(config.read_text().replace("sample_rows: 20000", "sample_rows: 600"))
    code, report, _ = _run(
        tmp_path,
        "drift-report",
        *("--log", str(drift_log), "--reference", QUIET, "--current", DRIFTING),
        *("--config", str(small)),
    )
    assert code == 1
    assert report["sampling"]["current"].startswith("600 of ")
    overall = next(s for s in report["scopes"] if s["scope"] == "overall")
    assert overall["rows"]["current"] == 600


def test_model_reference_and_the_cronjob_form(drift_log, registry_root, tmp_path) -> None:
    code, report, _ = _run(
        tmp_path,
        "drift-report",
        *("--reference", "champion", "--current", "last:24h"),
        *("--log", str(drift_log), "--registry", str(registry_root)),
    )
    assert code in (0, 1) and report, "the CronJob's exact form must build a report"
    assert "stored with model v1" in report["context"]["reference"]
    from monitoring.data import newest_event_time

    end = newest_event_time(drift_log)
    start = (end - pd.Timedelta(hours=24)).isoformat()
    assert report["context"]["current"].startswith(f"last:24h: {start} .. {end.isoformat()}")
    overall = next(s for s in report["scopes"] if s["scope"] == "overall")
    assert overall["rows"]["current"] >= 400  # the newest day, newest decision included


def _latency_limits(tmp_path: Path, ms: float) -> Path:
    """The shipped guardrails with every latency limit set to `ms`: whether this shared
    machine stalled while the fixture decided is not what these tests are about."""
    config = ROOT / "configs" / "monitoring" / "guardrails.yaml"
    text = re.sub(
        r"^(  (total|features|queue):\s*)\d+", rf"\g<1>{ms:g}", config.read_text(), flags=re.M
    )
    path = tmp_path / f"guardrails-{ms:g}.yaml"
    path.write_text(text)
    return path


def test_guardrails_against_the_quiet_baseline(drift_log, tmp_path) -> None:
    args = ["guardrail-report", "--log", str(drift_log), "--reference", QUIET]
    patient = ("--config", str(_latency_limits(tmp_path, 60_000)))
    code, quiet, _ = _run(tmp_path, *args, "--current", BEFORE, *patient)
    assert code == 0, quiet["alerts"]
    assert quiet["rung_share"] == {"1": 1.0} or quiet["rung_share"].get("1", 0) > 0.99
    assert quiet["latency_p99_ms"]["total"] > 0
    assert quiet["stage_timings_present"]  # the pipeline logs each stage's wall time
    assert {"features", "score", "queue"} <= set(quiet["latency_p99_ms"])
    # shadow and champion are the same model here: they must agree exactly
    assert quiet["shadow"]["decisions"] > 0 and quiet["shadow"]["disagreement"] == 0.0
    # latency limits do alert: below any real stage time, every limited stage is named
    code, slow, _ = _run(
        tmp_path, *args, "--current", BEFORE, "--config", str(_latency_limits(tmp_path, 0.001))
    )
    assert code == 1
    assert {a["scope"] for a in slow["alerts"] if a["kind"] == "latency"} == {
        "total",
        "features",
        "queue",
    }

    code, report, folder = _run(tmp_path, *args, "--current", DRIFTING)
    assert code == 1
    rates = [a for a in report["alerts"] if a["kind"] == "action_rate"]
    assert any(a["scope"] == "cross-border" and "block rate" in a["reasons"][0] for a in rates)
    assert "Action rates" in (folder / "report.html").read_text()


def test_quality_needs_mature_labels_and_says_how_mature(drift_log, drift_sim, tmp_path) -> None:
    args = ["quality-report", "--log", str(drift_log), "--labels", str(drift_sim / "labels")]
    code, report, _ = _run(tmp_path, *args, "--current", "2026-06-23..2026-06-25")
    assert code == 2 and not report  # a window one day old is refused, nothing written
    code, report, folder = _run(
        tmp_path, *args, "--current", "2026-06-09..2026-06-25", "--allow-immature"
    )
    assert code in (0, 1)
    assert report["maturity"]["immature"] is True
    assert report["maturity"]["window_label_completeness"] < 0.9
    days = {d["day"]: d["label_completeness"] for d in report["days"]}
    assert days["2026-06-09"] >= days["2026-06-24"]  # older days have more labels in
    scopes = {s["scope"] for s in report["segments"]}
    assert {"overall", "cross-border", "merchant <30d"} <= scopes
    assert "IMMATURE" in (folder / "report.html").read_text()
    assert "times from the decision log" in report["context"]["label maturity"]
    # with the attempts table the arrival curve sees the whole history, not only served days
    code, report, _ = _run(
        tmp_path,
        *args,
        *("--events", str(drift_sim / "events"), "--current", BEFORE, "--allow-immature"),
    )
    assert code in (0, 1)
    assert "times from attempts table" in report["context"]["label maturity"]
    assert report["maturity"]["labelled_attempts"] > 24
