"""Frames for monitoring: decisions from the log, and a model's training-time reference.

One row per decision: the features as served, the champion's score and action, the
degraded rung, stale views, latency and stage timings, and — joined by decision id — the
shadow challenger's score. Times are the attempt's event time (UTC).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_views.definitions import CATEGORICAL_FEATURES, FEATURE_NAMES
from monitoring.windows import LogWindow, ModelReference

REFERENCE_FILE = "reference.parquet"


class MonitoringError(ValueError):
    """Inputs a report cannot be built from (no log, empty window, no reference)."""


def _segments_of(stream: Path) -> list[Path]:
    return sorted(stream.glob("segment-*.jsonl"))


def _records(log_root: Path):
    """(kind, record) for every line of every stream, skipping seals."""
    from serve_graph.decision_log import streams

    for stream in streams(log_root):
        for segment in _segments_of(stream):
            with segment.open(encoding="utf-8") as fh:
                for text in fh:
                    if not text.strip():
                        continue
                    line = json.loads(text)
                    rec = line.get("record")
                    if isinstance(rec, dict):
                        yield rec


def newest_event_time(log_root: Path) -> pd.Timestamp | None:
    """Just after the latest attempt time in the log: the end of ``last:`` windows.

    One millisecond after, so the end-exclusive window includes the newest decision.
    """
    newest = None
    for rec in _records(log_root):
        if rec.get("type") == "decision":
            ms = (rec.get("input") or {}).get("event_time_ms")
            if ms is not None and (newest is None or ms > newest):
                newest = ms
    return None if newest is None else pd.Timestamp(newest + 1, unit="ms", tz="UTC")


def load_decisions(
    log_root: str | Path,
    window: LogWindow,
    stage_field: str = "timings_ms",
) -> pd.DataFrame:
    """Every decision whose attempt time falls in `window`, with its shadow score."""
    log_root = Path(log_root)
    if not log_root.exists():
        raise MonitoringError(f"no decision log at {log_root}")
    lo, hi = window.start.value // 1_000_000, window.end.value // 1_000_000
    rows: list[dict[str, Any]] = []
    shadow: dict[str, float] = {}
    for rec in _records(log_root):
        kind = rec.get("type")
        if kind == "shadow":
            p = rec.get("shadow_fraud_probability")
            if p is not None:
                shadow[rec["decision_id"]] = float(p)
            continue
        if kind != "decision":
            continue
        inp = rec.get("input") or {}
        ms = inp.get("event_time_ms")
        if ms is None or not lo <= ms < hi:
            continue
        feats = rec.get("features") or {}
        row = {name: feats.get(name) for name in FEATURE_NAMES}
        degraded = rec.get("degraded") or {}
        stages = rec.get(stage_field) or {}
        row.update(
            decision_id=rec["decision_id"],
            transaction_id=rec["transaction_id"],
            event_time_ms=ms,
            region=inp.get("region") or feats.get("region") or rec.get("region"),
            served_by=rec.get("region"),
            amount_usd=feats.get("amount_usd", inp.get("amount_usd")),
            action=rec["action"],
            fraud_probability=rec.get("fraud_probability"),
            model_version=rec.get("model_version"),
            rung=int(degraded.get("rung", 1)),
            degraded_reason=degraded.get("reason"),
            stale=len(rec.get("stale_views") or []) > 0,
            latency_ms=rec.get("latency_ms"),
            policy_override=(rec.get("policy") or {}).get("override"),
            trace_id=rec.get("trace_id"),
            **{f"stage_ms.{k}": v for k, v in stages.items()},
        )
        rows.append(row)
    if not rows:
        raise MonitoringError(f"no decisions in {window.label()} in the log at {log_root}")
    frame = pd.DataFrame(rows)
    frame["event_time"] = pd.to_datetime(frame.pop("event_time_ms"), unit="ms", utc=True)
    frame["shadow_fraud_probability"] = frame["decision_id"].map(shadow)
    frame = frame.drop_duplicates("transaction_id", keep="first")
    return tidy(frame.sort_values("event_time", ignore_index=True))


def tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """Consistent dtypes: categoricals as strings, everything else numeric."""
    for name in FEATURE_NAMES:
        if name not in frame.columns:
            continue
        if name in CATEGORICAL_FEATURES:
            frame[name] = frame[name].astype("string").fillna("unknown").astype(object)
        else:
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(np.float64)
    if "fraud_probability" in frame.columns:
        frame["fraud_probability"] = pd.to_numeric(frame["fraud_probability"], errors="coerce")
    return frame


def sample(frame: pd.DataFrame, rows: int, seed: int) -> tuple[pd.DataFrame, str]:
    """A uniform random sample of at most `rows`, and a sentence saying how it was drawn."""
    if len(frame) <= rows:
        return frame, f"all {len(frame):,} rows (no sampling)"
    picked = frame.sample(n=rows, random_state=seed).sort_values("event_time")
    return picked.reset_index(drop=True), (
        f"{rows:,} of {len(frame):,} rows, uniform random sample without replacement (seed {seed})"
    )


def load_reference(
    ref: ModelReference,
    events: str | Path | None = None,
    labels: str | Path | None = None,
) -> tuple[pd.DataFrame, str]:
    """The model's training-time sample: stored with the version, else recomputed.

    Versions trained before reference samples were stored are recomputed with the offline
    engine over their recorded training window (needs the attempts and labels tables).
    """
    stored = ref.path / REFERENCE_FILE
    if stored.exists():
        frame = pd.read_parquet(stored)
        return tidy(frame), f"reference sample stored with model {ref.version} ({stored.name})"
    meta = json.loads((ref.path / "metadata.json").read_text())
    window = (meta.get("training") or {}).get("window") or {}
    if not window.get("train_start") or not window.get("end"):
        raise MonitoringError(f"model {ref.version} records no training window")
    if events is None or not Path(events).exists():
        raise MonitoringError(
            f"model {ref.version} has no stored reference sample; recomputing it needs the "
            f"attempts table (--events; {events or 'not given'} does not exist)"
        )
    from trainers.registry import load_version
    from trainers.train import reference_sample, window_features

    version = load_version(ref.path)
    frame, _, _ = window_features(events, labels, window["train_start"], window["end"])
    out = reference_sample(frame, version.model)
    return tidy(out), (
        f"recomputed with the offline engine over the training window "
        f"{window['train_start']}..{window['end']} (model {ref.version} stores no sample)"
    )


def segment_masks(frame: pd.DataFrame, named: dict[str, str]) -> dict[str, np.ndarray]:
    """Overall, each region, and the configured named segments (pandas query masks)."""
    masks: dict[str, np.ndarray] = {"overall": np.ones(len(frame), dtype=bool)}
    for region in sorted(frame["region"].dropna().astype(str).unique()):
        masks[f"region {region}"] = (frame["region"].astype(str) == region).to_numpy()
    for name, expr in named.items():
        try:
            masks[name] = frame.eval(expr).to_numpy(dtype=bool)
        except Exception as exc:  # noqa: BLE001 - a bad expression is a config error
            raise MonitoringError(f"segment {name!r}: cannot evaluate {expr!r}: {exc}") from exc
    return masks
