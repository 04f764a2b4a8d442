"""Decision combiner: expected-cost action, then policy overrides, then guardrails.

The model proposes the cheapest action given p(fraud); the policy may force it stricter
(a rule's step_up or block) or, for allow-listed entities, approve. ``combine_frame`` is
the vectorised form used by evaluation, batch scoring and policy backtests; serving calls
the same logic per micro-batch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from serve_graph.decisioning import Costs, actions_for, apply_guardrails, stricter
from serve_graph.policy import Policy, evaluate_frame


def combine_frame(
    frame: pd.DataFrame, fraud_probability: np.ndarray, policy: Policy, costs: Costs
) -> tuple[np.ndarray, list[list[str]]]:
    """Final action per row and the policy rules that fired."""
    proposed = actions_for(
        costs, fraud_probability, frame["amount_usd"].to_numpy(), frame["region"].to_numpy()
    )
    override, hits = evaluate_frame(policy, frame)
    forced = np.asarray([o is not None for o in override])
    final = proposed.copy()
    if forced.any():
        allow = forced & (override == "approve")
        stricter_rows = forced & ~allow
        final[allow] = "approve"
        final[stricter_rows] = stricter(proposed[stricter_rows], override[stricter_rows])
    final = apply_guardrails(final, fraud_probability, override == "block", costs.guardrails)
    return final, hits
