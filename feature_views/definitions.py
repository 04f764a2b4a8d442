"""The feature catalogue: every online/offline feature, declared once.

Read this file as a risk analyst would: entities, then views, each feature with its window,
default and meaning. The two engines (``offline.py`` over Parquet, ``online.py`` over Redis)
interpret these declarations; neither names a feature on its own, so a feature cannot be
written twice. ``tests/feature_views/test_parity.py`` proves the engines agree.

Time semantics (all UTC, all milliseconds):

* activity windows are exact and end-exclusive: an attempt at time ``t`` sees the entity's
  attempts with ``t - window <= event_time < t``. Attempts at exactly ``t`` are not "before".
* bucketed windows count whole buckets before the current one: with hourly buckets and a
  24 h window, an attempt at 10:37 sees 10:00 - 24 h up to 10:00.
* label statistics count fraud labels whose ``label_time`` falls in whole UTC days before
  the attempt's day, so a label is never used before it was known (``label_time < t``).
* a view's age is ``t`` minus the entity's latest attempt strictly before ``t``; a view older
  than its TTL is treated as missing (defaults) and flagged ``<view>_stale``. An entity never
  seen is flagged ``<view>_missing`` (cold start).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


def ms(delta: dt.timedelta) -> int:
    """Whole milliseconds of a timedelta (windows and TTLs are compared in ms)."""
    return int(delta.total_seconds() * 1000)


@dataclass(frozen=True)
class Entity:
    """A thing features are keyed by; ``key`` is the contract column (None: one global key)."""

    name: str
    key: str | None
    description: str


CARD = Entity("card", "card_id", "A payment card, by vault token.")
DEVICE = Entity("device", "device_id", "A device fingerprint.")
SHOPPER = Entity("shopper", "shopper_id", "A marketplace shopper account.")
MERCHANT = Entity("merchant", "merchant_id", "A merchant on the marketplace.")
MERCHANT_CATEGORY = Entity("merchant_category", "merchant_category", "A merchant category (MCC).")
CARD_BIN = Entity("card_bin", "card_bin", "An issuer BIN (first 6 digits).")
GLOBAL = Entity("global", None, "All traffic.")

AggKind = Literal[
    "count",
    "sum_usd",
    "mean_usd",
    "distinct",
    "match_count",
    "zscore_log_amount",
    "seconds_since_previous",
    "seconds_since_first",
]


@dataclass(frozen=True)
class Aggregation:
    """One feature computed from an entity's history.

    ``column`` is the contract column that ``distinct`` counts or ``match_count`` compares
    with the current attempt's value; amounts are always ``amount_usd`` (in integer cents
    internally so sums are exact in both engines).
    """

    name: str
    kind: AggKind
    description: str
    window: dt.timedelta | None = None
    column: str | None = None
    default: float = 0.0


@dataclass(frozen=True)
class ActivityView:
    """Exact sliding windows over the entity's own attempts (a Redis sorted set online)."""

    name: str
    entity: Entity
    ttl: dt.timedelta
    version: int
    description: str
    features: tuple[Aggregation, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        """Contract columns each history entry must carry for this view's aggregations."""
        return tuple(sorted({a.column for a in self.features if a.column}))

    @property
    def horizon(self) -> dt.timedelta:
        return max(a.window for a in self.features if a.window)


@dataclass(frozen=True)
class BucketedView:
    """Counters in fixed UTC buckets (a Redis hash of bucket counters online).

    Cheaper than exact windows for entities with huge volume (a large merchant takes
    thousands of attempts an hour); the price is that the current bucket is not counted.
    """

    name: str
    entity: Entity
    ttl: dt.timedelta
    version: int
    description: str
    bucket: dt.timedelta
    features: tuple[Aggregation, ...]

    @property
    def horizon(self) -> dt.timedelta:
        return max(a.window for a in self.features if a.window)


@dataclass(frozen=True)
class LabelRateView:
    """Fraud rates from labels known before the current UTC day, smoothed up a hierarchy.

    For each entity in ``chain`` (most specific first, ending at GLOBAL) the rate is
    ``(fraud + strength * parent_rate) / (attempts + strength)`` over ``window`` of whole
    days, where the global rate's parent is ``prior``. Cold-start merchants thus inherit
    their category's rate, and categories the global one. Only ``chargeback`` and
    ``confirmed_fraud`` labels count, once per transaction, at the first such label's time.
    """

    name: str
    chain: tuple[Entity, ...]
    version: int
    description: str
    window: dt.timedelta = dt.timedelta(days=90)
    strength: float = 100.0
    prior: float = 0.003
    prior_strength: float = 1000.0

    @property
    def bucket(self) -> dt.timedelta:
        return DAY

    def feature_names(self) -> tuple[str, ...]:
        out = []
        for e in self.chain:
            out += [
                f"{e.name}_fraud_rate_90d",
                f"{e.name}_attempts_90d",
                f"{e.name}_fraud_labels_90d",
            ]
        return tuple(out)


# ---------------------------------------------------------------------------------------
# the views
# ---------------------------------------------------------------------------------------


def _windows(prefix: str, windows: dict[str, dt.timedelta], what: str) -> tuple[Aggregation, ...]:
    out: list[Aggregation] = []
    for label, w in windows.items():
        out.append(
            Aggregation(
                f"{prefix}_count_{label}",
                "count",
                f"Attempts with this {what} in the previous {label}.",
                w,
            )
        )
        out.append(
            Aggregation(
                f"{prefix}_amount_usd_{label}",
                "sum_usd",
                f"USD amount attempted with this {what} in the previous {label}.",
                w,
            )
        )
    return tuple(out)


CARD_ACTIVITY = ActivityView(
    name="card_activity",
    entity=CARD,
    ttl=dt.timedelta(days=90),
    version=1,
    description="Velocity of a card: how often, how much, where and how recently it paid.",
    features=_windows(
        "card", {"10m": 10 * MINUTE, "1h": HOUR, "24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY}, "card"
    )
    + (
        Aggregation(
            "card_distinct_merchants_24h",
            "distinct",
            "Different merchants this card paid at in the previous 24 h.",
            DAY,
            "merchant_id",
        ),
        Aggregation(
            "card_distinct_ip_countries_24h",
            "distinct",
            "Different IP countries this card was used from in the previous 24 h.",
            DAY,
            "ip_country",
        ),
        Aggregation(
            "card_merchant_count_30d",
            "match_count",
            "Attempts of this card at this same merchant in the previous 30 days.",
            30 * DAY,
            "merchant_id",
        ),
        Aggregation(
            "card_amount_zscore_30d",
            "zscore_log_amount",
            "How unusual this amount is for the card: z-score of log(amount) against "
            "its attempts in the previous 30 days (0 with fewer than 2).",
            30 * DAY,
        ),
        Aggregation(
            "card_seconds_since_previous",
            "seconds_since_previous",
            "Seconds since this card's previous attempt (-1: none known).",
            default=-1.0,
        ),
        Aggregation(
            "card_age_seconds",
            "seconds_since_first",
            "Seconds since this card was first seen (-1: new card).",
            default=-1.0,
        ),
    ),
)

DEVICE_ACTIVITY = ActivityView(
    name="device_activity",
    entity=DEVICE,
    ttl=dt.timedelta(days=90),
    version=1,
    description="A device's history: age, volume and how many cards it carries.",
    features=(
        Aggregation(
            "device_count_1h", "count", "Attempts from this device in the previous hour.", HOUR
        ),
        Aggregation(
            "device_count_24h", "count", "Attempts from this device in the previous 24 h.", DAY
        ),
        Aggregation(
            "device_count_30d",
            "count",
            "Attempts from this device in the previous 30 days.",
            30 * DAY,
        ),
        Aggregation(
            "device_distinct_cards_24h",
            "distinct",
            "Different cards used on this device in the previous 24 h.",
            DAY,
            "card_id",
        ),
        Aggregation(
            "device_distinct_cards_30d",
            "distinct",
            "Different cards used on this device in the previous 30 days.",
            30 * DAY,
            "card_id",
        ),
        Aggregation(
            "device_seconds_since_previous",
            "seconds_since_previous",
            "Seconds since this device's previous attempt (-1: none known).",
            default=-1.0,
        ),
        Aggregation(
            "device_age_seconds",
            "seconds_since_first",
            "Seconds since this device was first seen (-1: new device).",
            default=-1.0,
        ),
    ),
)

SHOPPER_ACTIVITY = ActivityView(
    name="shopper_activity",
    entity=SHOPPER,
    ttl=dt.timedelta(days=180),
    version=1,
    description="A shopper account's history: age, spend, cards and devices.",
    features=(
        Aggregation(
            "shopper_count_24h", "count", "Attempts by this account in the previous 24 h.", DAY
        ),
        Aggregation(
            "shopper_count_30d",
            "count",
            "Attempts by this account in the previous 30 days.",
            30 * DAY,
        ),
        Aggregation(
            "shopper_amount_usd_30d",
            "sum_usd",
            "USD attempted by this account in the previous 30 days.",
            30 * DAY,
        ),
        Aggregation(
            "shopper_distinct_cards_30d",
            "distinct",
            "Different cards this account used in the previous 30 days.",
            30 * DAY,
            "card_id",
        ),
        Aggregation(
            "shopper_distinct_devices_30d",
            "distinct",
            "Different devices this account used in the previous 30 days.",
            30 * DAY,
            "device_id",
        ),
        Aggregation(
            "shopper_age_seconds",
            "seconds_since_first",
            "Seconds since this account's first attempt (-1: new account).",
            default=-1.0,
        ),
    ),
)

MERCHANT_VOLUME = BucketedView(
    name="merchant_volume",
    entity=MERCHANT,
    ttl=dt.timedelta(days=30),
    version=1,
    description="A merchant's volume and average ticket, in whole UTC hours.",
    bucket=HOUR,
    features=(
        Aggregation(
            "merchant_count_24h",
            "count",
            "Attempts at this merchant in the 24 whole hours before this one.",
            DAY,
        ),
        Aggregation(
            "merchant_amount_usd_24h",
            "sum_usd",
            "USD attempted at this merchant in the 24 whole hours before this one.",
            DAY,
        ),
        Aggregation(
            "merchant_count_7d",
            "count",
            "Attempts at this merchant in the 7 days of whole hours before this one.",
            7 * DAY,
        ),
        Aggregation(
            "merchant_avg_ticket_usd_7d",
            "mean_usd",
            "Average USD ticket at this merchant over the same 7 days (-1: none).",
            7 * DAY,
            default=-1.0,
        ),
        Aggregation(
            "merchant_seen_seconds",
            "seconds_since_first",
            "Seconds since this merchant's first attempt (-1: never seen).",
            default=-1.0,
        ),
    ),
)

LABEL_RATES = (
    LabelRateView(
        name="merchant_label_rates",
        chain=(MERCHANT, MERCHANT_CATEGORY, GLOBAL),
        version=1,
        description="Known fraud rate of the merchant, its category, and all traffic.",
    ),
    LabelRateView(
        name="bin_label_rates",
        chain=(CARD_BIN, GLOBAL),
        version=1,
        description="Known fraud rate of the card's BIN, smoothed toward all traffic.",
    ),
)

ACTIVITY_VIEWS: tuple[ActivityView, ...] = (CARD_ACTIVITY, DEVICE_ACTIVITY, SHOPPER_ACTIVITY)
BUCKETED_VIEWS: tuple[BucketedView, ...] = (MERCHANT_VOLUME,)
TIMELINE_VIEWS: tuple[ActivityView | BucketedView, ...] = ACTIVITY_VIEWS + BUCKETED_VIEWS

# Entities whose attempts and fraud labels are counted per UTC day for LABEL_RATES.
LABEL_ENTITIES: tuple[Entity, ...] = tuple(dict.fromkeys(e for v in LABEL_RATES for e in v.chain))


# ---------------------------------------------------------------------------------------
# request-time (on-demand) features: computed from the attempt itself
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestFeature:
    """A feature computed from the request (and other features) by ``request_features.py``."""

    name: str
    dtype: Literal["int", "float", "category"]
    description: str
    default: float | str = 0


REQUEST_FEATURES: tuple[RequestFeature, ...] = (
    RequestFeature("amount_usd", "float", "Attempted amount in USD."),
    RequestFeature("log_amount_usd", "float", "Natural log of the USD amount."),
    RequestFeature(
        "is_cross_border",
        "int",
        "1 when the card's country differs from the merchant's (both known).",
    ),
    RequestFeature(
        "ip_card_country_mismatch",
        "int",
        "1 when the IP country differs from the card's country (both known).",
    ),
    RequestFeature(
        "billing_shipping_mismatch",
        "int",
        "1 when shipping goes to another country than billing (both known).",
    ),
    RequestFeature(
        "shipping_card_country_mismatch",
        "int",
        "1 when shipping goes to another country than the card's (both known).",
    ),
    RequestFeature(
        "local_hour",
        "int",
        "Hour of day (0-23) in the billing country (else IP country, else UTC).",
    ),
    RequestFeature("local_weekday", "int", "Day of week (0=Monday) in the same local time."),
    RequestFeature(
        "merchant_age_days",
        "float",
        "Days since merchant onboarding (else since first seen; -1 unknown).",
        default=-1.0,
    ),
    RequestFeature("merchant_id", "category", "Merchant id (native categorical).", "unknown"),
    RequestFeature("merchant_category", "category", "MCC.", "unknown"),
    RequestFeature("card_bin", "category", "Issuer BIN.", "unknown"),
    RequestFeature("card_country", "category", "Card issuing country.", "ZZ"),
    RequestFeature("card_network", "category", "Card network.", "unknown"),
    RequestFeature("ip_country", "category", "IP country.", "ZZ"),
    RequestFeature("merchant_country", "category", "Merchant country.", "ZZ"),
    RequestFeature(
        "card_merchant_countries", "category", "Country pair card>merchant, e.g. 'US>DE'.", "ZZ>ZZ"
    ),
    RequestFeature("channel", "category", "web / app / api.", "unknown"),
    RequestFeature("email_domain", "category", "Shopper e-mail domain.", "unknown"),
    RequestFeature("currency", "category", "Payment currency.", "USD"),
    RequestFeature("region", "category", "Region that received the attempt.", "unknown"),
)

# Time zone used for local hour, by country (ISO alpha-2); unknown countries use UTC.
COUNTRY_TIMEZONES: dict[str, str] = {
    "US": "America/New_York",
    "CA": "America/Toronto",
    "MX": "America/Mexico_City",
    "BR": "America/Sao_Paulo",
    "GB": "Europe/London",
    "DE": "Europe/Berlin",
    "FR": "Europe/Paris",
    "ES": "Europe/Madrid",
    "IT": "Europe/Rome",
    "NL": "Europe/Amsterdam",
    "SG": "Asia/Singapore",
    "AU": "Australia/Sydney",
    "JP": "Asia/Tokyo",
    "IN": "Asia/Kolkata",
}


# ---------------------------------------------------------------------------------------
# the feature vector
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureSpec:
    """One column of the served/trained feature vector."""

    name: str
    dtype: Literal["int", "float", "category"]
    default: float | str
    description: str
    view: str
    view_version: int = 1
    flags: tuple[str, ...] = field(default=())


def _catalogue() -> tuple[FeatureSpec, ...]:
    specs: list[FeatureSpec] = []
    for v in TIMELINE_VIEWS:
        for a in v.features:
            dtype = "int" if a.kind in ("count", "distinct", "match_count") else "float"
            specs.append(FeatureSpec(a.name, dtype, a.default, a.description, v.name, v.version))
        specs.append(
            FeatureSpec(
                f"{v.name}_missing",
                "int",
                0,
                f"1 when the {v.entity.name} was never seen (cold start) or "
                "has no key in the request.",
                v.name,
                v.version,
            )
        )
        specs.append(
            FeatureSpec(
                f"{v.name}_stale",
                "int",
                0,
                f"1 when the {v.entity.name}'s history is older than the "
                f"view's TTL ({v.ttl.days} d) and was ignored.",
                v.name,
                v.version,
            )
        )
    for lv in LABEL_RATES:
        for e in lv.chain:
            if any(s.name == f"{e.name}_fraud_rate_90d" for s in specs):
                continue
            specs.append(
                FeatureSpec(
                    f"{e.name}_fraud_rate_90d",
                    "float",
                    lv.prior,
                    f"Smoothed known fraud rate of the {e.name} (90 whole days before today).",
                    lv.name,
                    lv.version,
                )
            )
            specs.append(
                FeatureSpec(
                    f"{e.name}_attempts_90d",
                    "int",
                    0,
                    f"Attempts of the {e.name} in those 90 days.",
                    lv.name,
                    lv.version,
                )
            )
            specs.append(
                FeatureSpec(
                    f"{e.name}_fraud_labels_90d",
                    "int",
                    0,
                    f"Fraud labels on the {e.name} known in those 90 days.",
                    lv.name,
                    lv.version,
                )
            )
    for r in REQUEST_FEATURES:
        specs.append(FeatureSpec(r.name, r.dtype, r.default, r.description, "request"))
    return tuple(specs)


FEATURES: tuple[FeatureSpec, ...] = _catalogue()
FEATURE_NAMES: tuple[str, ...] = tuple(s.name for s in FEATURES)
CATEGORICAL_FEATURES: tuple[str, ...] = tuple(s.name for s in FEATURES if s.dtype == "category")
FEATURE_BY_NAME: dict[str, FeatureSpec] = {s.name: s for s in FEATURES}


def _validate() -> None:
    names = [s.name for s in FEATURES]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"feature names declared twice: {dupes}")
    for v in TIMELINE_VIEWS:
        if v.ttl < v.horizon:
            raise ValueError(f"{v.name}: TTL shorter than its longest window")
    for v in BUCKETED_VIEWS:
        for a in v.features:
            if a.window and ms(a.window) % ms(v.bucket):
                raise ValueError(f"{a.name}: window is not a whole number of buckets")
            if a.kind not in (
                "count",
                "sum_usd",
                "mean_usd",
                "seconds_since_first",
                "seconds_since_previous",
            ):
                raise ValueError(f"{a.name}: {a.kind} is not available on bucketed views")


_validate()


def label_rate_values(counts: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    """Label-rate features from (attempts, fraud labels) per label entity.

    Plain arithmetic that works the same on Python numbers (online) and numpy arrays
    (offline), so both engines share these lines and agree bit for bit.
    """
    out: dict[str, Any] = {}
    for view in LABEL_RATES:
        parent = None
        for e in reversed(view.chain):
            n, f = counts[e.name]
            if parent is None:
                rate = (f + view.prior_strength * view.prior) / (n + view.prior_strength)
            else:
                rate = (f + view.strength * parent) / (n + view.strength)
            out[f"{e.name}_fraud_rate_90d"] = rate
            out[f"{e.name}_attempts_90d"] = n
            out[f"{e.name}_fraud_labels_90d"] = f
            parent = rate
    return out


def feature_versions() -> dict[str, int]:
    """View name -> version, recorded with every model and decision."""
    out = {v.name: v.version for v in TIMELINE_VIEWS}
    out.update({v.name: v.version for v in LABEL_RATES})
    return out


def describe() -> str:
    """The catalogue as a table for `checkout-risk features`."""
    lines = [f"{'feature':<36} {'type':<9} {'view':<22} default  meaning"]
    for s in FEATURES:
        lines.append(f"{s.name:<36} {s.dtype:<9} {s.view:<22} {str(s.default):<8} {s.description}")
    return "\n".join(lines)
