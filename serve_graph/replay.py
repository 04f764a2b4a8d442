"""Reproducing a decision from the log and the registry (`checkout-risk replay`).

The log holds everything that went into a decision: the features as served, the policy
result and version, the costs in force, the model version and its output. Replay loads that
model version from the registry, scores the logged features, combines with the logged policy
result and costs, recomputes the SHAP reasons, and compares each with what was logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from serve_graph.decision_log import find
from serve_graph.decisioning import CostModel, Costs, Guardrails
from serve_graph.policy import PolicyResult
from serve_graph.stages import DecisionCombiner
from trainers.registry import load_version, registry_root


class ReplayError(ValueError):
    """The decision cannot be found or its model is gone from the registry."""


@dataclass
class ReplayResult:
    decision_id: str
    logged: dict[str, Any]
    replayed: dict[str, Any]
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def replay(
    decision_id: str,
    log_root: Path,
    registry: Path | None = None,
    rules_only_step_up_usd: float = 100.0,
) -> ReplayResult:
    record = find(log_root, decision_id)
    if record is None:
        raise ReplayError(f"decision {decision_id} is not in the log at {log_root}")
    version = record.get("model_version")
    values = dict(record["features"])
    values.setdefault("amount_usd", record["input"].get("amount_usd"))
    values.setdefault("region", record["input"].get("region"))
    p = None
    contributions: list[tuple[str, float]] = []
    deferred = any(r["code"] == "explanation_deferred" for r in record["reasons"])
    if version is not None:
        name, _, kind = version.partition("/")
        try:
            mv = load_version(name, registry or registry_root())
        except Exception as exc:
            raise ReplayError(f"model version {name} is not in the registry: {exc}") from exc
        model = mv.fallback if kind == "fallback" else mv.model
        frame = pd.DataFrame.from_records([values], columns=list(model.features))
        p = float(model.predict(frame)[0])
        if record["action"] != "approve":
            top = len([r for r in record["reasons"] if r["kind"] == "model"])
            if deferred:  # SHAP was late at decision time: this computes it now
                from serve_graph.config import load_region

                top = load_region(record["region"]).explain_top
            contributions = model.contributions(frame, top)[0] if top else []
    policy = PolicyResult(record["policy"]["override"], tuple(record["policy"]["rules"]))
    costs = Costs(
        CostModel.model_validate(record["costs"]),
        {},
        Guardrails.model_validate(record.get("guardrails") or {}),
    )
    combiner = DecisionCombiner.__new__(DecisionCombiner)
    combiner.step_up_usd = rules_only_step_up_usd
    action = combiner.combine(
        [values], [policy], None if p is None else np.array([p]), costs=costs
    )[0]
    replayed = {
        "action": action,
        "fraud_probability": None if p is None else round(p, 6),
        "model_reasons": [[f, c] for f, c in contributions],
    }
    logged = {
        "action": record["action"],
        "fraud_probability": record["fraud_probability"],
        "model_reasons": [
            [r["code"], r["contribution"]] for r in record["reasons"] if r["kind"] == "model"
        ],
    }
    if deferred:
        logged["model_reasons"] = replayed["model_reasons"]  # nothing logged to compare with
    mismatches = [k for k in replayed if replayed[k] != logged[k]]
    return ReplayResult(decision_id, logged, replayed, mismatches)
