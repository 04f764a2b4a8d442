"""What a report compares: decision-log windows and model references.

Windows are UTC and end-exclusive:

* ``last:24h``, ``last:7d``, ``last:90m`` — the span ending at the anchor (the newest
  decision in the log unless ``--now`` pins it: logs replayed from a simulation live on
  the event clock, not the wall clock);
* ``2026-03-01..2026-03-08`` — whole days, the end day excluded; ISO times also work;
* ``2026-03-01`` — that one day.

A reference is a window of the log, or a model: ``champion`` / ``canary`` / ``shadow``
(the version in that stage), a version name in the registry, or a version folder. A model
reference means the data it was trained on (its stored reference sample).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

_LAST = re.compile(r"^last:(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class WindowError(ValueError):
    """A window or reference that cannot be understood; says what is accepted."""


@dataclass(frozen=True)
class LogWindow:
    """[start, end) on the event clock, UTC."""

    start: pd.Timestamp
    end: pd.Timestamp
    spec: str

    def label(self) -> str:
        return f"{self.start.isoformat()} .. {self.end.isoformat()} (end-exclusive)"

    def days(self) -> list[pd.Timestamp]:
        return list(pd.date_range(self.start.floor("D"), self.end, freq="D", inclusive="left"))


@dataclass(frozen=True)
class ModelReference:
    """A registry version; its training-time data is the reference."""

    version: str
    path: Path
    spec: str

    def label(self) -> str:
        return f"model {self.version} (training data)" + (
            f", stage {self.spec}" if self.spec != self.version else ""
        )


def _timestamp(text: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(text)
    except ValueError as exc:
        raise WindowError(f"{text!r} is not an ISO date or time") from exc
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def parse_window(spec: str, anchor: pd.Timestamp | None = None) -> LogWindow:
    """A decision-log window; `anchor` is the end of ``last:`` windows."""
    spec = spec.strip()
    match = _LAST.match(spec)
    if match:
        if anchor is None:
            raise WindowError(f"{spec!r} needs an anchor: the log is empty and --now is not set")
        span = pd.Timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        if span <= pd.Timedelta(0):
            raise WindowError(f"{spec!r}: the span must be positive")
        return LogWindow(anchor - span, anchor, spec)
    if ".." in spec:
        lo, _, hi = spec.partition("..")
        start, end = _timestamp(lo), _timestamp(hi)
    elif re.match(r"^\d{4}-\d{2}-\d{2}$", spec):
        start = _timestamp(spec)
        end = start + pd.Timedelta(days=1)
    else:
        raise WindowError(
            f"cannot read window {spec!r}: use last:24h, last:7d, "
            "2026-03-01..2026-03-08 (end-exclusive) or one day 2026-03-01"
        )
    if end <= start:
        raise WindowError(f"empty window {spec!r}: the end must be after the start")
    return LogWindow(start, end, spec)


def parse_reference(
    spec: str, registry: Path, anchor: pd.Timestamp | None = None
) -> LogWindow | ModelReference:
    """A model (stage, version name or folder) or else a decision-log window."""
    from trainers.registry import STAGES, Registry

    spec = spec.strip()
    if spec in STAGES:
        version = Registry(registry).stage(spec)
        if version is None:
            raise WindowError(f"no model is in stage {spec!r} in the registry {registry}")
        return ModelReference(version, Path(registry) / version, spec)
    folder = Path(spec)
    if (folder / "metadata.json").exists():
        return ModelReference(folder.name, folder, spec)
    if (Path(registry) / spec / "metadata.json").exists():
        return ModelReference(spec, Path(registry) / spec, spec)
    try:
        return parse_window(spec, anchor)
    except WindowError as exc:
        raise WindowError(
            f"{exc}; or a model: champion, canary, shadow, a version in {registry}"
        ) from exc
