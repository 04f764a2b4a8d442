"""A hand-made table whose feature values are known, covering the semantics' edges."""

from __future__ import annotations

import pandas as pd

from feature_views.contract import normalize_attempts, normalize_labels

T0 = pd.Timestamp("2026-01-01T00:00:00Z")


def _row(txid: str, offset: pd.Timedelta, amount: float, **kw) -> dict:
    base = {
        "transaction_id": txid,
        "event_time": T0 + offset,
        "card_id": "cA",
        "merchant_id": "m1",
        "amount": amount,
        "device_id": "d1",
        "shopper_id": "s1",
        "card_country": "US",
        "merchant_country": "US",
        "ip_country": "US",
        "billing_country": "US",
        "shipping_country": "US",
        "merchant_category": "5411",
        "card_bin": "411111",
    }
    return base | kw


def edge_attempts() -> pd.DataFrame:
    m, h, d = pd.Timedelta(minutes=1), pd.Timedelta(hours=1), pd.Timedelta(days=1)
    rows = [
        _row("e1", 0 * m, 10.0),
        _row("e2", 10 * m, 20.0),  # e1 sits exactly at t - 10 min: inside
        _row("e3", 10 * m, 20.0),  # same millisecond as e2: e2 is not "before"
        _row("e4", h, 40.0, merchant_id="m2"),
        _row("e6", 2 * d, 15.0, card_id="cB", device_id=None, shopper_id=None),
        _row(
            "e7",
            2 * d + 5 * m,
            15.0,
            card_id="cB",
            device_id=None,
            shopper_id=None,
            ip_country="FR",
            shipping_country="FR",
        ),
        _row("e5", 100 * d, 30.0),  # cA comes back after its 90-day TTL
        _row(
            "e8",
            100 * d + h,
            30.0,
            card_id="cNew",
            device_id="dNew",
            shopper_id="sNew",
            card_bin=None,
            merchant_id="mNew",
            merchant_category=None,
            currency="EUR",
        ),
    ]
    return normalize_attempts(pd.DataFrame(rows)).sort_values(
        ["event_time", "transaction_id"], ignore_index=True
    )


def edge_labels() -> pd.DataFrame:
    d = pd.Timedelta(days=1)
    return normalize_labels(
        pd.DataFrame(
            [
                {
                    "transaction_id": "e1",
                    "label_time": T0 + d + pd.Timedelta(hours=1),
                    "kind": "chargeback",
                },
                {"transaction_id": "e1", "label_time": T0 + 3 * d, "kind": "confirmed_fraud"},
                {"transaction_id": "e2", "label_time": T0 + d, "kind": "dispute_won"},
                {"transaction_id": "ghost", "label_time": T0 + d, "kind": "chargeback"},
            ]
        )
    )
