"""Scenario configuration for the marketplace simulator, validated on load.

The YAML lives in ``configs/simulation/``; pydantic turns typos and impossible values into
one readable error instead of a wrong simulation.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from pathlib import Path
from typing import Any

import pydantic
import yaml

from feature_views.contract import USD_PER_UNIT

CAMPAIGNS = (
    "card_testing",
    "stolen_card",
    "account_takeover",
    "compromised_merchant",
    "bust_out",
    "friendly_fraud",
)

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "simulation" / "default.yaml"


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


Share = pydantic.confloat(ge=0.0, le=1.0)


class Region(_Strict):
    timezone: str
    countries: dict[str, pydantic.PositiveFloat]
    weight: pydantic.PositiveFloat

    @pydantic.field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}") from exc
        return value


class Population(_Strict):
    shoppers_per_daily_attempt: pydantic.PositiveFloat
    new_shoppers_per_day: Share
    guest_checkout_share: Share
    new_card_per_day: Share
    new_device_per_day: Share
    merchants_per_daily_attempt: pydantic.PositiveFloat
    new_merchants_per_day: Share
    merchant_size_pareto_alpha: pydantic.PositiveFloat
    travel_share: Share
    ship_elsewhere_share: Share


class Traffic(_Strict):
    cross_border_share: Share
    weekday_factors: list[pydantic.PositiveFloat] = pydantic.Field(min_length=7, max_length=7)
    diurnal: list[pydantic.NonNegativeFloat] = pydantic.Field(min_length=24, max_length=24)
    channels: dict[str, pydantic.PositiveFloat]
    day_volume_noise: Share


class CompromisedMerchant(_Strict):
    start_fraction: Share
    duration_days: pydantic.PositiveInt


class BustOut(_Strict):
    start_fraction: Share
    duration_days: pydantic.PositiveInt
    ring_cards: pydantic.PositiveInt


class CardTesting(_Strict):
    cards_per_burst: tuple[pydantic.PositiveInt, pydantic.PositiveInt]
    merchants_per_burst: tuple[pydantic.PositiveInt, pydantic.PositiveInt]
    burst_minutes: pydantic.PositiveInt
    amount_usd: tuple[pydantic.PositiveFloat, pydantic.PositiveFloat]


class Fraud(_Strict):
    rate: pydantic.confloat(ge=0.0, le=0.2)
    campaigns: dict[str, pydantic.NonNegativeFloat]
    compromised_merchant: CompromisedMerchant
    bust_out: BustOut
    card_testing: CardTesting

    @pydantic.field_validator("campaigns")
    @classmethod
    def _known(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(CAMPAIGNS))
        if unknown:
            raise ValueError(f"unknown campaign(s) {unknown}; known: {list(CAMPAIGNS)}")
        if sum(value.values()) <= 0:
            raise ValueError("campaign shares must not all be zero")
        return value


class Labels(_Strict):
    report_rate: dict[str, Share]
    confirmed_fraud_share: Share
    chargeback_median_days: pydantic.PositiveFloat
    chargeback_sigma: pydantic.PositiveFloat
    confirmed_median_days: pydantic.PositiveFloat
    max_delay_days: pydantic.PositiveFloat
    dispute_won_rate: Share


class Drift(_Strict):
    enabled: bool
    from_fraction: Share
    cross_border_share: Share
    fraud_rate_multiplier: pydantic.PositiveFloat
    campaigns: dict[str, pydantic.NonNegativeFloat]


class Scenario(_Strict):
    """A whole simulation scenario (see configs/simulation/default.yaml for meanings)."""

    start_date: dt.date
    regions: dict[str, Region]
    currencies: dict[str, str]
    population: Population
    traffic: Traffic
    merchant_categories: dict[str, tuple[Share, pydantic.PositiveFloat, pydantic.PositiveFloat]]
    fraud: Fraud
    labels: Labels
    drift: Drift

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> Scenario:
        if len(self.regions) < 3:
            raise ValueError("a marketplace needs at least 3 regions")
        for name, region in self.regions.items():
            for country in region.countries:
                if country not in self.currencies:
                    raise ValueError(f"region {name}: country {country} has no currency")
        for country, cur in self.currencies.items():
            if cur not in USD_PER_UNIT:
                raise ValueError(f"currency {cur} of {country} is not in the FX table")
        return self

    def country_list(self) -> list[str]:
        return [c for r in self.regions.values() for c in r.countries]


class ScenarioError(ValueError):
    """The scenario file is unreadable or invalid; the message says where."""


def load_scenario(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> Scenario:
    """Load and validate a scenario YAML; `overrides` is merged on top (nested dicts)."""
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ScenarioError(f"scenario {path} is not valid YAML: {exc}") from exc
    if overrides:
        raw = _merge(raw, overrides)
    try:
        return Scenario.model_validate(raw)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ScenarioError(f"scenario {path}: {where}: {first['msg']}") from exc


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
