"""Request-time (on-demand) features, one function for both engines.

``request_features`` takes columns as numpy arrays — a whole Parquet partition offline, a
micro-batch of live requests online — so the same lines of code produce the training and
the serving values. No pandas here: it would cost milliseconds per request on the hot path.
"""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from feature_views.contract import UNKNOWN_COUNTRY
from feature_views.definitions import COUNTRY_TIMEZONES

HOUR_MS = 3_600_000
DAY_MS = 86_400_000

# Contract string columns `request_features` reads (besides event_ms, amount_usd, and the
# merchant ages); both engines gather exactly these.
STRING_INPUTS = (
    "card_country",
    "merchant_country",
    "ip_country",
    "billing_country",
    "shipping_country",
    "merchant_id",
    "merchant_category",
    "card_bin",
    "card_network",
    "channel",
    "email_domain",
    "currency",
    "region",
)

CATEGORY_PASSTHROUGH = (
    "merchant_id",
    "merchant_category",
    "card_bin",
    "card_country",
    "card_network",
    "ip_country",
    "merchant_country",
    "channel",
    "email_domain",
    "currency",
    "region",
)


@lru_cache(maxsize=65_536)
def _offset_ms(tz_name: str, utc_hour: int) -> int:
    """UTC offset of `tz_name` during the UTC hour `utc_hour` (transitions fall on hours)."""
    instant = dt.datetime.fromtimestamp(utc_hour * 3600, tz=dt.timezone.utc)
    offset = zoneinfo.ZoneInfo(tz_name).utcoffset(instant)
    return int(offset.total_seconds() * 1000) if offset else 0


@dataclass(frozen=True)
class Coded:
    """A string column as its distinct values and, per row, an index into them.

    The offline engine holds its string columns in this form (Parquet dictionaries), so
    per-value work — time zones, country comparisons, country-pair labels — runs once
    per distinct value (or pair of values) instead of once per row. Results are the
    same as for the decoded object array: the same expressions run over the values.
    """

    values: np.ndarray  # object array of str (None allowed)
    index: np.ndarray  # int per row, into values

    def decode(self) -> np.ndarray:
        return self.values[self.index]


Column = np.ndarray | Coded


def _as_column(values: np.ndarray | Coded) -> Column:
    return values if isinstance(values, Coded) else np.asarray(values, dtype=object)


def _elementwise(f: Callable[..., np.ndarray], *cols: Column) -> np.ndarray:
    """`f` (elementwise numpy code) over the rows of `cols`.

    When every column is Coded (and the grid is no larger than the rows), `f` runs on
    the grid of their distinct values (numpy broadcasting) and each row picks its cell,
    which equals `f` over the decoded rows.
    """
    coded = [c for c in cols if isinstance(c, Coded)]
    if len(coded) == len(cols) and math.prod(len(c.values) for c in coded) <= len(coded[0].index):
        grid = [
            c.values.reshape([-1 if i == j else 1 for j in range(len(coded))])
            for i, c in enumerate(coded)
        ]
        return f(*grid)[tuple(c.index for c in coded)]
    return f(*[c.decode() if isinstance(c, Coded) else c for c in cols])


def _lookup(values: np.ndarray, table: Mapping[str, str]) -> np.ndarray:
    """Vectorised dict lookup (loops over distinct values only, not rows); None if absent."""
    uniq, inverse = np.unique(values.astype(str), return_inverse=True)
    mapped = np.array([table.get(u) for u in uniq] + [None], dtype=object)[:-1]
    return mapped[inverse.reshape(values.shape)]


_ZONES = np.array(sorted({*COUNTRY_TIMEZONES.values(), "UTC"}))  # every zone used


def _zone_codes(billing: np.ndarray, ip: np.ndarray) -> np.ndarray:
    """Index in _ZONES of each attempt's time zone: the billing country's, else the IP
    country's, else UTC.
    """
    tz = _lookup(billing, COUNTRY_TIMEZONES)
    by_ip = _lookup(ip, COUNTRY_TIMEZONES)
    tz = np.where(tz == None, by_ip, tz)  # noqa: E711 (elementwise comparison)
    return np.searchsorted(_ZONES, np.where(tz == None, "UTC", tz).astype(str))  # noqa: E711


def _local_ms(event_ms: np.ndarray, billing: Column, ip: Column) -> np.ndarray:
    tz_code = _elementwise(_zone_codes, billing, ip)
    hours = event_ms // HOUR_MS
    pairs, inverse = np.unique(
        tz_code.reshape(-1).astype(np.int64) * (1 << 40) + hours, return_inverse=True
    )
    offsets = np.array(
        [_offset_ms(str(_ZONES[p >> 40]), int(p & ((1 << 40) - 1))) for p in pairs],
        dtype=np.int64,
    )
    return event_ms + offsets[inverse.reshape(-1)]


def _differs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    known = (a != UNKNOWN_COUNTRY) & (b != UNKNOWN_COUNTRY)
    return (known & (a != b)).astype(np.int64)


def _pair_label(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.char.add(np.char.add(a.astype(str), ">"), b.astype(str)).astype(object)


def request_features(cols: Mapping[str, np.ndarray | Coded]) -> dict[str, np.ndarray]:
    """Request-time features for a batch of attempts.

    `cols` holds contract columns as arrays (strings as object arrays with defaults already
    applied, or as :class:`Coded`) plus ``event_ms`` (int64 UTC ms),
    ``merchant_created_ms`` (int64, -1 when unknown) and ``merchant_seen_seconds``
    (float, the merchant view's first-seen age, -1 when unknown).
    """
    event_ms = np.asarray(cols["event_ms"], dtype=np.int64)
    amount = np.asarray(cols["amount_usd"], dtype=np.float64)
    card_c = _as_column(cols["card_country"])
    merch_c = _as_column(cols["merchant_country"])
    ip_c = _as_column(cols["ip_country"])
    bill_c = _as_column(cols["billing_country"])
    ship_c = _as_column(cols["shipping_country"])
    local = _local_ms(event_ms, bill_c, ip_c)
    created = np.asarray(cols["merchant_created_ms"], dtype=np.int64)
    seen = np.asarray(cols["merchant_seen_seconds"], dtype=np.float64)
    age_days = np.where(
        created >= 0,
        np.maximum(event_ms - created, 0) / DAY_MS,
        np.where(seen >= 0, seen / 86_400.0, -1.0),
    )
    out: dict[str, np.ndarray] = {
        "amount_usd": amount,
        "log_amount_usd": np.log(amount),
        "is_cross_border": _elementwise(_differs, card_c, merch_c),
        "ip_card_country_mismatch": _elementwise(_differs, ip_c, card_c),
        "billing_shipping_mismatch": _elementwise(_differs, bill_c, ship_c),
        "shipping_card_country_mismatch": _elementwise(_differs, ship_c, card_c),
        "local_hour": (local // HOUR_MS) % 24,
        "local_weekday": (local // DAY_MS + 3) % 7,  # 1970-01-01 was a Thursday
        "merchant_age_days": age_days,
        "card_merchant_countries": _elementwise(_pair_label, card_c, merch_c),
    }
    for name in CATEGORY_PASSTHROUGH:
        column = _as_column(cols[name])
        out[name] = column.decode() if isinstance(column, Coded) else column
    return out
