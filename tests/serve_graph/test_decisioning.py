"""Expected-cost actions, policy overrides and guardrails, on one row and on tables alike."""

from __future__ import annotations

import numpy as np
import pandas as pd

from serve_graph.combiner import combine_frame
from serve_graph.decisioning import Guardrails, actions_for, load_costs
from serve_graph.policy import PolicyResult, load_policy
from serve_graph.stages import DecisionCombiner

COSTS = load_costs()


def _actions(p: float, amount: float, region: str = "us-east") -> str:
    return str(actions_for(COSTS, np.array([p]), np.array([amount]), np.array([region]))[0])


def test_cheapest_action_moves_with_probability_and_amount() -> None:
    assert _actions(0.0001, 50) == "approve"
    assert _actions(0.2, 500) == "step_up"
    assert _actions(0.95, 500) == "block"
    # abandoned big baskets lose more margin: at the same small risk the $20 attempt is
    # challenged while the $2,000 one is not yet worth the friction
    assert _actions(0.008, 20) == "step_up"
    assert _actions(0.008, 2000) == "approve"
    ps = np.linspace(0, 1, 101)
    severity = [("approve", "step_up", "block").index(_actions(x, 300)) for x in ps]
    assert severity == sorted(severity)  # never milder as p(fraud) rises


def test_guardrail_turns_weak_model_blocks_into_challenges() -> None:
    combiner = DecisionCombiner.__new__(DecisionCombiner)
    combiner.step_up_usd = 100
    values = [{"amount_usd": 5000.0, "region": "us-east"}] * 3
    none, rule_block = PolicyResult(None, ()), PolicyResult("block", ("R",))
    p = np.array([0.9, 0.99, 0.9])
    strict = COSTS.__class__(COSTS.default, COSTS.regions, Guardrails(min_block_probability=0.95))
    assert _actions(0.9, 5000) == "block"  # cost alone blocks...
    out = combiner.combine(values, [none, none, rule_block], p, costs=strict)
    assert out == ["step_up", "block", "block"]  # ...under the floor only a rule may block
    assert combiner.combine(values[:1], [none], np.array([0.9]), costs=COSTS) == ["block"]


def test_table_and_request_paths_agree() -> None:
    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame(
        {
            "amount_usd": rng.lognormal(4, 1.2, n),
            "region": rng.choice(["us-east", "eu-west"], n),
            "device_distinct_cards_24h": rng.integers(0, 5, n),
            "card_count_1h": rng.integers(0, 7, n),
            "device_activity_missing": rng.integers(0, 2, n),
            "ip_card_country_mismatch": rng.integers(0, 2, n),
            "billing_shipping_mismatch": rng.integers(0, 2, n),
            "card_merchant_countries": "US>US",
            "merchant_fraud_rate_90d": rng.uniform(0, 0.1, n),
            "email_domain": "gmail.com",
            "card_id": "c",
            "shopper_id": "s",
            "merchant_id": "m",
        }
    )
    p = rng.uniform(0, 1, n) ** 3
    policy = load_policy()
    table, _ = combine_frame(frame, p, policy, COSTS)
    from serve_graph.policy import evaluate

    combiner = DecisionCombiner.__new__(DecisionCombiner)
    combiner.step_up_usd = 100
    rows = frame.to_dict("records")
    one = combiner.combine(rows, [evaluate(policy, r) for r in rows], p, costs=COSTS)
    assert list(table) == one
