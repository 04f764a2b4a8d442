"""Business guardrails from the decision log, against the reference's baseline.

* approve / step_up / block rates per segment against the baseline (a model version's
  training-time sample decided by the same policy and costs, or an earlier log window);
* the share of decisions on each rung of the degradation ladder;
* the stale-feature rate (decisions with at least one stale view);
* p99 latency, total and per stage when the records carry stage timings;
* shadow-versus-champion disagreement: the action the shadow challenger's score would
  have produced (same policy result, same costs) against the champion's action.

Thresholds: ``configs/monitoring/guardrails.yaml``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from monitoring.config import DriftConfig, GuardrailConfig
from monitoring.data import segment_masks

ACTIONS = ("approve", "step_up", "block")


def shadow_actions(frame: pd.DataFrame) -> np.ndarray:
    """The shadow model's final action: its expected-cost proposal, then the logged
    policy override and the guardrails, exactly as the combiner treats the champion."""
    from serve_graph.decisioning import actions_for, apply_guardrails, load_costs, stricter

    costs = load_costs()
    p = frame["shadow_fraud_probability"].to_numpy(dtype=np.float64)
    proposed = actions_for(costs, p, frame["amount_usd"].to_numpy(), frame["region"].to_numpy())
    override = frame["policy_override"].to_numpy(dtype=object)
    forced = np.asarray([o is not None and o == o for o in override])
    final = np.asarray(proposed, dtype=object).copy()
    allow = forced & (override == "approve")
    harder = forced & ~allow
    final[allow] = "approve"
    if harder.any():
        final[harder] = stricter(final[harder], override[harder])
    return apply_guardrails(final, p, override == "block", costs.guardrails)


def _rates(actions: pd.Series) -> dict[str, float]:
    counts = actions.value_counts(normalize=True)
    return {a: round(float(counts.get(a, 0.0)), 5) for a in ACTIONS}


def _p99(values: pd.Series) -> float | None:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return None if values.empty else round(float(np.percentile(values, 99)), 3)


def run_guardrails(
    baseline: pd.DataFrame,
    current: pd.DataFrame,
    config: GuardrailConfig,
    drift_config: DriftConfig,
) -> dict[str, Any]:
    """Every guardrail for the window, with its alerts."""
    alerts: list[dict[str, Any]] = []
    segments = []
    base_masks = segment_masks(baseline, drift_config.segments)
    for name, mask in segment_masks(current, drift_config.segments).items():
        cur = current[mask]
        base_mask = base_masks.get(name)
        base = baseline[base_mask] if base_mask is not None else baseline.iloc[:0]
        row: dict[str, Any] = {
            "scope": name,
            "rows": {"baseline": len(base), "current": len(cur)},
            "current": _rates(cur["action"]) if len(cur) else {},
            "baseline": _rates(base["action"]) if len(base) else {},
            "alerts": [],
        }
        eligible = min(len(cur), len(base)) >= config.min_rows
        for action, limit in config.action_rate_change.items():
            if not row["current"] or not row["baseline"]:
                continue
            change = row["current"][action] - row["baseline"][action]
            row.setdefault("change", {})[action] = round(change, 5)
            if eligible and abs(change) > limit:
                text = (
                    f"{action} rate {row['current'][action]:.2%} vs baseline "
                    f"{row['baseline'][action]:.2%} ({change:+.2%}, limit ±{limit:.0%})"
                )
                row["alerts"].append(text)
                alerts.append({"kind": "action_rate", "scope": name, "reasons": [text]})
        segments.append(row)

    n = len(current)
    rung_share = {
        int(r): round(float(c) / n, 5)
        for r, c in current["rung"].value_counts().sort_index().items()
    }
    for rung, limit in config.rung_share_max.items():
        share = rung_share.get(rung, 0.0)
        if share > limit:
            alerts.append(
                {
                    "kind": "fallback_rung",
                    "scope": "overall",
                    "reasons": [f"{share:.2%} of decisions on rung {rung} (limit {limit:.0%})"],
                }
            )
    reasons = current.loc[current["rung"] > 1, "degraded_reason"].fillna("").str.split(":").str[0]
    stale_rate = round(float(current["stale"].mean()), 5)
    if stale_rate > config.stale_feature_rate_max:
        alerts.append(
            {
                "kind": "stale_features",
                "scope": "overall",
                "reasons": [
                    f"{stale_rate:.2%} of decisions had stale views "
                    f"(limit {config.stale_feature_rate_max:.0%})"
                ],
            }
        )

    latency = {"total": _p99(current["latency_ms"])}
    for col in sorted(c for c in current.columns if c.startswith("stage_ms.")):
        latency[col.removeprefix("stage_ms.")] = _p99(current[col])
    for stage, limit in config.latency_p99_ms_max.items():
        value = latency.get(stage)
        if value is not None and value > limit:
            alerts.append(
                {
                    "kind": "latency",
                    "scope": stage,
                    "reasons": [f"p99 {stage} latency {value:.1f} ms (limit {limit:g} ms)"],
                }
            )

    shadowed = current[current["shadow_fraud_probability"].notna()]
    shadow: dict[str, Any] = {"decisions": len(shadowed)}
    if len(shadowed):
        theirs = shadow_actions(shadowed)
        differ = theirs != shadowed["action"].to_numpy(dtype=object)
        shadow["disagreement"] = round(float(differ.mean()), 5)
        shadow["shadow_rates"] = _rates(pd.Series(theirs))
        shadow["champion_rates"] = _rates(shadowed["action"])
        if shadow["disagreement"] > config.shadow_disagreement_max:
            alerts.append(
                {
                    "kind": "shadow_disagreement",
                    "scope": "overall",
                    "reasons": [
                        f"shadow and champion disagree on {shadow['disagreement']:.2%} of "
                        f"decisions (limit {config.shadow_disagreement_max:.0%})"
                    ],
                }
            )
    return {
        "decisions": n,
        "segments": segments,
        "rung_share": rung_share,
        "degraded_reasons": {k: int(v) for k, v in reasons.value_counts().items()},
        "stale_feature_rate": stale_rate,
        "latency_p99_ms": latency,
        "stage_timings_present": len(latency) > 1,
        "shadow": shadow,
        "alerts": alerts,
    }
