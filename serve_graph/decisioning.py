"""Expected-cost decisioning: the action with the lowest expected cost given p(fraud).

Costs come from ``configs/costs.yaml`` (per-region overrides). The same functions serve one
live request (``action_for``) and whole tables in evaluation and backtests
(``actions_for``), so offline cost figures describe exactly what serving does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_COSTS = ROOT / "configs" / "costs.yaml"
ACTIONS = ("approve", "step_up", "block")
SEVERITY = {a: i for i, a in enumerate(ACTIONS)}


class CostError(ValueError):
    """The cost configuration is unreadable or invalid."""


class CostModel(pydantic.BaseModel):
    """The cost of each outcome for one region (see configs/costs.yaml for meanings)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    margin_rate: pydantic.confloat(ge=0, le=1)
    chargeback_fee: pydantic.NonNegativeFloat
    ops_cost_per_fraud: pydantic.NonNegativeFloat
    churn_probability_on_decline: pydantic.confloat(ge=0, le=1)
    lifetime_value: pydantic.NonNegativeFloat
    challenge_fee: pydantic.NonNegativeFloat
    step_up_abandon_rate: pydantic.confloat(ge=0, le=1)
    fraud_pass_rate: pydantic.confloat(ge=0, le=1)

    def outcome_costs(self, amount: np.ndarray) -> dict[tuple[str, bool], np.ndarray]:
        """Cost in USD of (action, is_fraud) for each amount."""
        fraud_loss = amount + self.chargeback_fee + self.ops_cost_per_fraud
        zero = np.zeros_like(amount)
        return {
            ("approve", True): fraud_loss,
            ("approve", False): zero,
            ("block", True): zero,
            ("block", False): self.margin_rate * amount
            + self.churn_probability_on_decline * self.lifetime_value,
            ("step_up", True): self.challenge_fee + self.fraud_pass_rate * fraud_loss,
            ("step_up", False): self.step_up_abandon_rate * self.margin_rate * amount
            + self.challenge_fee,
        }


class Guardrails(pydantic.BaseModel):
    """Business limits on what the model may do alone (configs/costs.yaml, guardrails)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    min_block_probability: pydantic.confloat(ge=0, le=1) = 0.3


@dataclass(frozen=True)
class Costs:
    """Default costs plus per-region overrides, and the guardrails."""

    default: CostModel
    regions: dict[str, CostModel]
    guardrails: Guardrails = field(default_factory=Guardrails)

    def for_region(self, region: str | None) -> CostModel:
        return self.regions.get(region or "", self.default)


def load_costs(path: str | Path | None = None) -> Costs:
    path = Path(path or DEFAULT_COSTS)
    try:
        raw = yaml.safe_load(path.read_text())
        default = CostModel.model_validate(raw["default"])
        regions = {
            name: CostModel.model_validate(default.model_dump() | (override or {}))
            for name, override in (raw.get("regions") or {}).items()
        }
        guardrails = Guardrails.model_validate(raw.get("guardrails") or {})
    except OSError as exc:
        raise CostError(f"cannot read costs {path}: {exc.strerror}") from exc
    except (KeyError, TypeError, yaml.YAMLError, pydantic.ValidationError) as exc:
        raise CostError(f"invalid costs {path}: {exc}") from exc
    return Costs(default, regions, guardrails)


def apply_guardrails(
    actions: np.ndarray,
    fraud_probability: np.ndarray,
    rule_blocked: np.ndarray,
    guardrails: Guardrails,
) -> np.ndarray:
    """A block the model proposes alone needs p(fraud) >= the floor; else it challenges."""
    actions = np.asarray(actions, dtype=object).copy()
    weak = (
        (actions == "block")
        & ~np.asarray(rule_blocked, dtype=bool)
        & (np.asarray(fraud_probability, dtype=np.float64) < guardrails.min_block_probability)
    )
    actions[weak] = "step_up"
    return actions


def expected_costs(
    costs: Costs, fraud_probability: np.ndarray, amount_usd: np.ndarray, region: np.ndarray
) -> dict[str, np.ndarray]:
    """Expected cost (USD) of each action per attempt."""
    p = np.asarray(fraud_probability, dtype=np.float64)
    amount = np.asarray(amount_usd, dtype=np.float64)
    region = np.asarray(region, dtype=object)
    out = {a: np.empty(len(p)) for a in ACTIONS}
    for name in {*np.unique(region).tolist()}:
        rows = region == name
        table = costs.for_region(name).outcome_costs(amount[rows])
        for a in ACTIONS:
            out[a][rows] = p[rows] * table[(a, True)] + (1 - p[rows]) * table[(a, False)]
    return out


def actions_for(
    costs: Costs, fraud_probability: np.ndarray, amount_usd: np.ndarray, region: np.ndarray
) -> np.ndarray:
    """The cheapest action per attempt (ties resolve toward the milder action)."""
    exp = expected_costs(costs, fraud_probability, amount_usd, region)
    stacked = np.vstack([exp[a] for a in ACTIONS])
    return np.array(ACTIONS, dtype=object)[np.argmin(stacked, axis=0)]


def action_for(costs: Costs, fraud_probability: float, amount_usd: float, region: str) -> str:
    return str(
        actions_for(
            costs,
            np.array([fraud_probability]),
            np.array([amount_usd]),
            np.array([region], dtype=object),
        )[0]
    )


def realized_costs(
    costs: Costs,
    actions: np.ndarray,
    is_fraud: np.ndarray,
    amount_usd: np.ndarray,
    region: np.ndarray,
) -> np.ndarray:
    """What each decision actually cost, given the truth (for evaluation and backtests)."""
    actions = np.asarray(actions, dtype=object)
    is_fraud = np.asarray(is_fraud, dtype=bool)
    amount = np.asarray(amount_usd, dtype=np.float64)
    region = np.asarray(region, dtype=object)
    out = np.zeros(len(actions))
    for name in {*np.unique(region).tolist()}:
        rows = region == name
        table = costs.for_region(name).outcome_costs(amount[rows])
        for (action, fraud), cost in table.items():
            hit = (actions[rows] == action) & (is_fraud[rows] == fraud)
            out[np.flatnonzero(rows)[hit]] = cost[hit]
    return out


def stricter(a: np.ndarray | str, b: np.ndarray | str) -> Any:
    """The more severe of two actions (elementwise for arrays)."""
    if isinstance(a, str) and isinstance(b, str):
        return a if SEVERITY[a] >= SEVERITY[b] else b
    a = np.asarray(a, dtype=object)
    b = np.asarray(b, dtype=object)
    sev = np.vectorize(SEVERITY.__getitem__, otypes=[int])
    return np.where(sev(a) >= sev(b), a, b)
