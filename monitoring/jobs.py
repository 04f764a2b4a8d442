"""Monitoring jobs: ``checkout-risk drift-report | quality-report | guardrail-report``.

The same entry point runs as a Ray job or a Kubernetes CronJob::

    ray job submit --working-dir . -- python -m monitoring.jobs drift-report \\
        --reference champion --current last:24h --log /abs/decision-log \\
        --registry /abs/models --out /abs/reports
    checkout-risk drift-report --reference champion --current last:24h

Paths for a Ray job are absolute: it runs in an uploaded copy of the working directory.

Locations default to the environment (``CHECKOUT_RISK_DECISION_LOG``,
``CHECKOUT_RISK_MODELS``, ``CHECKOUT_RISK_REPORTS``, ``CHECKOUT_RISK_EVENTS``,
``CHECKOUT_RISK_LABELS``) and then to the local layout (``.run/decision-log``, ``models/``,
``reports/``, ``data/sim``). Exit status: 0 no alert, 1 alerts (listed on stderr), 2 an
error the user can fix.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from monitoring.config import ROOT, ConfigError

EXIT_ALERTS = 1


class JobError(ValueError):
    """Printed as one ``error:`` line, exit status 2."""


def _default(env: str, fallback: Path) -> str:
    return os.environ.get(env, str(fallback))


def _defaults() -> dict[str, str]:
    from feature_views.store import run_dir
    from trainers.registry import registry_root

    return {
        "log": _default("CHECKOUT_RISK_DECISION_LOG", run_dir() / "decision-log"),
        "registry": str(registry_root()),
        "out": _default("CHECKOUT_RISK_REPORTS", ROOT / "reports"),
        "events": _default("CHECKOUT_RISK_EVENTS", ROOT / "data" / "sim" / "events"),
        "labels": _default("CHECKOUT_RISK_LABELS", ROOT / "data" / "sim" / "labels"),
    }


def _anchor(args: argparse.Namespace) -> pd.Timestamp | None:
    from monitoring.data import newest_event_time
    from monitoring.windows import _timestamp

    if args.now:
        return _timestamp(args.now)
    if not Path(args.log).exists():
        raise JobError(f"no decision log at {args.log}")
    return newest_event_time(Path(args.log))


def _reference_frame(args: argparse.Namespace, anchor: pd.Timestamp | None) -> tuple[Any, ...]:
    from monitoring.data import load_decisions, load_reference
    from monitoring.windows import ModelReference, parse_reference

    ref = parse_reference(args.reference, Path(args.registry), anchor)
    if isinstance(ref, ModelReference):
        frame, how = load_reference(ref, args.events, args.labels)
    else:
        frame, how = load_decisions(args.log, ref), "decision log"
    return ref, frame, how


def _within(frame: pd.DataFrame, window: Any) -> pd.DataFrame:
    inside = (frame["event_time"] >= window.start) & (frame["event_time"] < window.end)
    return frame[inside].reset_index(drop=True)


def _finish(kind: str, title: str, payload: dict, context: dict, snapshots: dict, args) -> int:
    from monitoring.report import out_dir, write

    directory = out_dir(args.out, kind)
    json_path, html_path = write(directory, kind, title, payload, context, snapshots)
    alerts = payload["alerts"]
    print(f"{title}: {len(alerts)} alert(s)")
    print(f"  html {html_path}\n  json {json_path}")
    for a in alerts:
        since = f" since {a['since']}" if a.get("since") else ""
        print(
            f"ALERT {a['kind']} [{a['scope']}]{since}: {'; '.join(a['reasons'])}", file=sys.stderr
        )
    return EXIT_ALERTS if alerts else 0


def drift_report(args: argparse.Namespace) -> int:
    from monitoring.config import load_drift
    from monitoring.data import load_decisions, load_reference
    from monitoring.drift import run_drift
    from monitoring.windows import LogWindow, ModelReference, parse_reference, parse_window

    started = time.perf_counter()
    config = load_drift(args.config)
    anchor = _anchor(args)
    current = parse_window(args.current, anchor)
    lookback = current.end - pd.Timedelta(days=config.timeline.days)
    span = LogWindow(min(current.start, lookback), current.end, "history")
    ref = parse_reference(args.reference, Path(args.registry), anchor)
    if isinstance(ref, ModelReference):
        reference, ref_how = load_reference(ref, args.events, args.labels)
        history = load_decisions(args.log, span)
    else:  # one pass over the log for both windows
        both = load_decisions(
            args.log, LogWindow(min(span.start, ref.start), max(span.end, ref.end), "both")
        )
        reference, ref_how = _within(both, ref), "decision log"
        if reference.empty:
            raise JobError(f"no decisions in the reference window {ref.label()}")
        history = _within(both, span)
    now = _within(history, current)
    if now.empty:
        raise JobError(f"no decisions in the current window {current.label()}")
    result = run_drift(reference, now.reset_index(drop=True), config, history)
    payload = {
        "scopes": [s.as_dict() for s in result.scopes],
        "timeline": result.timeline,
        "since": result.since,
        "sampling": result.sampling,
        "alerts": result.alerts,
    }
    snapshots = {
        s.scope: s.snapshot
        for s in result.scopes
        if s.snapshot and (s.alert or s.scope == "overall")
    }
    context = {
        "reference": f"{ref.label()} — {ref_how}",
        "current": f"{current.spec}: {current.label()}",
        "decisions in current window": f"{len(now):,} (drift uses full-path decisions, rungs 1–2)",
        "sampling, reference": result.sampling["reference"],
        "sampling, current": result.sampling["current"],
        "sampling, timeline": result.sampling["timeline"],
        "thresholds": str(args.config or "configs/monitoring/drift.yaml"),
        "decision log": str(args.log),
        "built in": f"{time.perf_counter() - started:.1f} s (drift {result.seconds:.1f} s: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in result.breakdown.items())
        + ")",
    }
    return _finish("drift", "Drift report", payload, context, snapshots, args)


def guardrail_report(args: argparse.Namespace) -> int:
    from monitoring.config import load_drift, load_guardrails
    from monitoring.data import load_decisions
    from monitoring.guardrails import run_guardrails
    from monitoring.windows import parse_window

    started = time.perf_counter()
    config, drift_config = load_guardrails(args.config), load_drift(args.drift_config)
    anchor = _anchor(args)
    current = parse_window(args.current, anchor)
    ref, baseline, ref_how = _reference_frame(args, anchor)
    frame = load_decisions(args.log, current, config.stage_timings_field)
    payload = run_guardrails(baseline, frame, config, drift_config)
    context = {
        "baseline": f"{ref.label()} — {ref_how}",
        "current": f"{current.spec}: {current.label()}",
        "decisions": f"{len(frame):,} (all rungs, no sampling)",
        "thresholds": str(args.config or "configs/monitoring/guardrails.yaml"),
        "decision log": str(args.log),
        "built in": f"{time.perf_counter() - started:.1f} s",
    }
    return _finish("guardrails", "Guardrail report", payload, context, {}, args)


def quality_report(args: argparse.Namespace) -> int:
    from feature_views.tables import read_labels
    from monitoring.config import load_drift, load_quality
    from monitoring.data import load_decisions
    from monitoring.quality import evidently_quality, label_maturity, mature_window, run_quality
    from monitoring.windows import LogWindow, ModelReference, parse_reference, parse_window

    started = time.perf_counter()
    config, drift_config = load_quality(args.config), load_drift(args.drift_config)
    if not Path(args.labels).exists():
        raise JobError(f"no label table at {args.labels} (--labels)")
    labels = read_labels(args.labels)
    anchor = _anchor(args)
    # attempt times for the arrival curve: the whole log (its decisions carry them)
    everything = load_decisions(
        args.log, LogWindow(pd.Timestamp(0, tz="UTC"), anchor + pd.Timedelta(days=1), "all")
    )
    # the arrival curve needs attempt times over a long history: the attempts table when
    # there is one (the log may hold only days), else the decisions in the log
    times, times_from = everything[["transaction_id", "event_time"]], "the decision log"
    if args.events and Path(args.events).exists():
        from feature_views.tables import read_attempt_columns

        table = read_attempt_columns(args.events, ["transaction_id", "event_time"])
        table["event_time"] = pd.to_datetime(table["event_time"], utc=True)
        if table["transaction_id"].isin(set(labels["transaction_id"])).any():
            times, times_from = table, f"attempts table {args.events}"
    maturity = label_maturity(times, labels, config.label_coverage)
    if args.current in (None, "mature"):
        current = mature_window(maturity, config.window_days)
    else:
        current = parse_window(args.current, anchor)
    frame = everything[
        (everything["event_time"] >= current.start) & (everything["event_time"] < current.end)
    ].reset_index(drop=True)
    if frame.empty:
        raise JobError(f"no decisions in {current.label()}")
    reference_pr_auc = None
    ref_label = "none"
    if args.reference:
        ref = parse_reference(args.reference, Path(args.registry), anchor)
        ref_label = ref.label()
        if isinstance(ref, ModelReference):
            import json

            meta = json.loads((ref.path / "metadata.json").read_text())
            reference_pr_auc = (meta.get("validation") or {}).get("pr_auc")
            ref_label += " — PR-AUC on its validation window"
    result = run_quality(
        frame,
        labels,
        current,
        maturity,
        config,
        drift_config,
        reference_pr_auc,
        args.allow_immature,
    )
    scored = result.pop("scored")
    m = result["maturity"]
    context = {
        "window": f"{current.spec}: {current.label()}",
        "labels known by": m["as_of"],
        "label maturity": (
            f"{m['coverage']:.0%} of fraud labels arrive within {m['maturity_days']:g} days "
            f"(estimated from {m['labelled_attempts']:,} labelled attempts, times from "
            f"{times_from}; days before {m['mature_until']} are mature)"
        ),
        "this window's labels": (
            f"~{m['window_label_completeness']:.0%} complete (estimated, least mature day)"
            + (" — IMMATURE: quality looks better than it is" if m["immature"] else "")
        ),
        "reference": ref_label,
        "decisions scored": f"{len(scored):,} (all, no sampling)",
        "thresholds": str(args.config or "configs/monitoring/quality.yaml"),
        "built in": f"{time.perf_counter() - started:.1f} s",
    }
    snapshots = {"classification": evidently_quality(scored)} if scored["is_fraud"].sum() else {}
    return _finish("quality", "Quality report", result, context, snapshots, args)


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    """Register the three monitoring subcommands on a parser's subparsers."""
    d = _defaults()

    def common(p: argparse.ArgumentParser, reference: str | None, current: str) -> None:
        p.add_argument(
            "--reference",
            default=reference,
            help="champion|canary|shadow, a model version or folder, or a log window",
        )
        p.add_argument(
            "--current",
            default=current,
            help="log window: last:24h, 2026-03-01..2026-03-08 (end-exclusive), or one day",
        )
        p.add_argument(
            "--now",
            default=None,
            help="anchor of last: windows (ISO UTC); default: the newest decision in the log",
        )
        p.add_argument("--log", default=d["log"], help=f"decision log (default {d['log']})")
        p.add_argument("--registry", default=d["registry"], help="model registry folder")
        p.add_argument(
            "--events",
            default=d["events"],
            help="attempts table (to recompute a reference for models stored without one)",
        )
        p.add_argument("--labels", default=d["labels"], help="label table")
        p.add_argument("--out", default=d["out"], help="reports folder")
        p.add_argument("--config", default=None, help="thresholds YAML")

    p = sub.add_parser(
        "drift-report",
        help="Evidently feature and prediction drift, by segment",
        description=drift_report.__doc__ or "Feature and prediction drift.",
    )
    common(p, "champion", "last:24h")
    p.set_defaults(handler=run, job=drift_report)

    p = sub.add_parser("quality-report", help="classification quality where labels matured")
    common(p, None, "mature")
    p.add_argument("--drift-config", default=None, help="segments come from drift.yaml")
    p.add_argument(
        "--allow-immature",
        action="store_true",
        help="judge a window whose labels have not matured (flagged)",
    )
    p.set_defaults(handler=run, job=quality_report)

    p = sub.add_parser(
        "guardrail-report",
        help="action rates, fallback rungs, stale features, latency, shadow disagreement",
    )
    common(p, "champion", "last:24h")
    p.add_argument("--drift-config", default=None, help="segments come from drift.yaml")
    p.set_defaults(handler=run, job=guardrail_report)


def run(args: argparse.Namespace) -> int:
    """Run a parsed subcommand; user errors become one line and status 2."""
    from monitoring.data import MonitoringError
    from monitoring.windows import WindowError
    from trainers.datasets import DatasetError

    try:
        return args.job(args)
    except (JobError, MonitoringError, WindowError, ConfigError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m monitoring.jobs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_subcommands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
