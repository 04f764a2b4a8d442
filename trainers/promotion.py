"""Promotion with a gate: a new champion must be better where it counts, and nowhere worse.

Both models score the same later window — after the candidate's training window, so the
candidate cannot be judged on data it learned from — with the same policy and costs. The
candidate must lower the expected cost per 1,000 attempts overall and may not raise any
segment's cost beyond a tolerance (``configs/training/promotion.yaml``). Otherwise the
promotion is refused with the reasons, unless forced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pydantic
import yaml

from serve_graph.decisioning import load_costs
from serve_graph.policy import load_policy
from trainers.datasets import DatasetError, targets
from trainers.evaluate import evaluate_scores
from trainers.registry import ROOT, Registry, RegistryError, load_version
from trainers.train import truth_targets, window_features

GATE_CONFIG = ROOT / "configs" / "training" / "promotion.yaml"


class Gate(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    segment_tolerance: pydantic.confloat(ge=0, le=1)
    min_segment_attempts: pydantic.PositiveInt


def load_gate(path: Path | None = None) -> Gate:
    return Gate.model_validate(yaml.safe_load(Path(path or GATE_CONFIG).read_text()))


def compare(candidate: dict[str, Any], champion: dict[str, Any], gate: Gate) -> list[str]:
    """Reasons the candidate fails the gate (empty when it passes)."""
    reasons = []
    cand = candidate["overall"]["cost_per_1000"]["model"]
    champ = champion["overall"]["cost_per_1000"]["model"]
    if not cand < champ:
        reasons.append(
            f"overall cost per 1,000 attempts ${cand:,.2f} is not below the "
            f"champion's ${champ:,.2f}"
        )
    for seg, values in candidate["segments"].items():
        for value, m in values.items():
            other = champion["segments"][seg].get(value)
            if other is None or m["attempts"] < gate.min_segment_attempts:
                continue
            c, o = m["cost_per_1000"]["model"], other["cost_per_1000"]["model"]
            if c > o * (1 + gate.segment_tolerance) + 1e-9:
                reasons.append(
                    f"segment {seg}={value}: ${c:,.2f} per 1,000 vs champion "
                    f"${o:,.2f} (more than {gate.segment_tolerance:.0%} worse)"
                )
    return reasons


def promote(
    version: str,
    stage: str,
    events: str | None,
    labels: str | None,
    start: str | None,
    end: str | None,
    truth: str | None = None,
    force: bool = False,
    registry: Registry | None = None,
) -> tuple[bool, list[str]]:
    """Promote `version` to `stage`; returns (promoted, lines to print)."""
    reg = registry or Registry()
    if version not in reg.versions():
        raise RegistryError(f"unknown version {version!r} in {reg.root}")
    champion = reg.stage("champion")
    if stage != "champion" or champion is None or force and not all((events, labels, start, end)):
        why = (
            "first champion"
            if stage == "champion" and champion is None
            else "forced"
            if stage == "champion"
            else f"{stage} (no gate)"
        )
        reg.set_stage(version, stage, why)
        return True, [f"{version} is now {stage} ({why})"]
    if version == champion:
        return True, [f"{version} is already the champion"]
    if not all((events, labels, start, end)):
        raise DatasetError(
            "promotion to champion compares against the current champion: "
            "give --events, --labels, --start and --end of a later window"
        )
    cand_v, champ_v = load_version(version, reg.root), load_version(champion, reg.root)
    trained_until = cand_v.metadata["training"]["window"]["end"]
    if pd.Timestamp(start) < pd.Timestamp(trained_until) and not force:
        raise DatasetError(
            f"the comparison window starts {start}, inside the candidate's "
            f"training window (until {trained_until}); use a later window"
        )
    frame, _, label_table = window_features(events, labels, start, end)
    if truth:
        y = truth_targets(frame, truth)
    else:
        y = targets(frame, label_table, label_table["label_time"].max())
    policy, costs = load_policy(), load_costs()
    reports = {
        name: evaluate_scores(frame, v.model.predict(frame), y, policy, costs)
        for name, v in (("candidate", cand_v), ("champion", champ_v))
    }
    reasons = compare(reports["candidate"], reports["champion"], load_gate())
    cand = reports["candidate"]["overall"]["cost_per_1000"]["model"]
    champ = reports["champion"]["overall"]["cost_per_1000"]["model"]
    lines = [
        f"window [{start}, {end}): {len(frame):,} attempts; cost per 1,000: "
        f"{version} ${cand:,.2f} vs champion {champion} ${champ:,.2f}"
    ]
    if reasons and not force:
        return False, [
            *lines,
            f"refused: {version} stays where it is",
            *[f"  - {r}" for r in reasons],
            "(use --force to promote anyway)",
        ]
    reg.set_stage(
        version,
        "champion",
        "forced past: " + "; ".join(reasons)
        if reasons
        else f"beat {champion}: ${cand:,.2f} vs ${champ:,.2f} per 1,000",
    )
    return True, [*lines, f"{version} is now champion (was {champion})"]
