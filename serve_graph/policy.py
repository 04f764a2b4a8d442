"""The policy engine: hard rules and lists from ``configs/policies/*.yaml``.

A policy is data: rules are conjunctions of conditions on features or request fields, each
with an action. ``evaluate`` runs on one request (a dict) for serving; ``evaluate_frame``
runs the same rules vectorised over a table for backtests and the rules-only baseline.
Both return the firing rule ids, so every decision can say which rules it hit.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pydantic
import yaml

from serve_graph.decisioning import SEVERITY

ROOT = Path(__file__).resolve().parent.parent
CHAMPION_POLICY = ROOT / "configs" / "policies" / "champion.yaml"

_OPS = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class PolicyError(ValueError):
    """The policy file is unreadable or invalid."""


class Condition(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    field: str
    op: Literal["==", "!=", "<", "<=", ">", ">=", "in", "not_in"]
    value: Any

    def holds(self, value: Any) -> bool:
        if self.op == "in":
            return value in self.value
        if self.op == "not_in":
            return value not in self.value
        try:
            return bool(_OPS[self.op](value, self.value))
        except TypeError:
            return False

    def holds_frame(self, column: pd.Series) -> np.ndarray:
        if self.op == "in":
            return column.isin(self.value).to_numpy()
        if self.op == "not_in":
            return (~column.isin(self.value)).to_numpy()
        return np.asarray(_OPS[self.op](column, self.value), dtype=bool)


class Rule(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    id: str
    description: str
    action: Literal["step_up", "block"]
    when: list[Condition] = pydantic.Field(min_length=1)


class Lists(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    block: dict[str, list[str]] = {}
    allow: dict[str, list[str]] = {}


class Policy(pydantic.BaseModel):
    """A versioned set of rules and allow/block lists."""

    model_config = pydantic.ConfigDict(extra="forbid")
    version: str
    lists: Lists = Lists()
    rules: list[Rule]

    @pydantic.model_validator(mode="after")
    def _unique_ids(self) -> Policy:
        ids = [r.id for r in self.rules]
        if len(ids) != len(set(ids)):
            raise ValueError("rule ids must be unique")
        return self

    def fields(self) -> set[str]:
        return (
            {c.field for r in self.rules for c in r.when}
            | set(self.lists.block)
            | set(self.lists.allow)
        )


@dataclass(frozen=True)
class PolicyResult:
    """What the policy says about one attempt: an override (or None) and why."""

    action: str | None  # "approve" (allow-listed), "step_up", "block", or None
    rule_ids: tuple[str, ...]


def load_policy(path: str | Path | None = None) -> Policy:
    path = Path(path or CHAMPION_POLICY)
    try:
        return Policy.model_validate(yaml.safe_load(path.read_text()))
    except OSError as exc:
        raise PolicyError(f"cannot read policy {path}: {exc.strerror}") from exc
    except (yaml.YAMLError, pydantic.ValidationError) as exc:
        raise PolicyError(f"invalid policy {path}: {exc}") from exc


def evaluate(policy: Policy, values: Mapping[str, Any]) -> PolicyResult:
    """Rules and lists for one attempt; `values` holds features and request fields."""
    for field, blocked in policy.lists.block.items():
        if values.get(field) in blocked:
            return PolicyResult("block", (f"LIST_block_{field}",))
    for field, allowed in policy.lists.allow.items():
        if values.get(field) in allowed:
            return PolicyResult("approve", (f"LIST_allow_{field}",))
    hits = [r for r in policy.rules if all(c.holds(values.get(c.field)) for c in r.when)]
    if not hits:
        return PolicyResult(None, ())
    worst = max(hits, key=lambda r: SEVERITY[r.action])
    return PolicyResult(worst.action, tuple(r.id for r in hits))


def evaluate_frame(policy: Policy, frame: pd.DataFrame) -> tuple[np.ndarray, list[list[str]]]:
    """Vectorised `evaluate`: (override action or None per row, rule ids per row)."""
    n = len(frame)
    action = np.full(n, None, dtype=object)
    hits: list[list[str]] = [[] for _ in range(n)]
    missing = sorted(f for f in policy.fields() if f not in frame.columns)
    if missing:
        raise PolicyError(f"policy {policy.version} needs fields absent from the table: {missing}")
    severity = np.full(n, -1)
    for rule in policy.rules:
        fired = np.ones(n, dtype=bool)
        for cond in rule.when:
            fired &= cond.holds_frame(frame[cond.field])
        for i in np.flatnonzero(fired):
            hits[i].append(rule.id)
        better = fired & (SEVERITY[rule.action] > severity)
        action[better] = rule.action
        severity[better] = SEVERITY[rule.action]
    for field, allowed in policy.lists.allow.items():
        rows = frame[field].isin(allowed).to_numpy()
        action[rows] = "approve"
        for i in np.flatnonzero(rows):
            hits[i] = [f"LIST_allow_{field}"]
    for field, blocked in policy.lists.block.items():
        rows = frame[field].isin(blocked).to_numpy()
        action[rows] = "block"
        for i in np.flatnonzero(rows):
            hits[i] = [f"LIST_block_{field}"]
    return action, hits


def rules_only_actions(policy: Policy, frame: pd.DataFrame) -> np.ndarray:
    """The rules-only baseline: the policy's action, approve where no rule fires."""
    action, _ = evaluate_frame(policy, frame)
    return np.where(action == None, "approve", action).astype(object)  # noqa: E711
