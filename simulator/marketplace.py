"""A synthetic marketplace: shoppers, cards, devices and merchants across regions, with fraud
campaigns and chargebacks that arrive weeks late.

Everything is generated one UTC day at a time with vectorised numpy (no per-attempt Python),
so memory stays bounded by one day and a million attempts take well under a minute.
Determinism: one ``numpy.random.Generator`` seeded once drives every draw in a fixed order,
so the same scenario, size and seed give byte-identical tables.

Outputs (see :func:`simulate`)::

    OUT/events/date=YYYY-MM-DD/part-0.parquet   attempts, contract schema, sorted by time
    OUT/labels/labels.parquet                   labels known before the end of the period
    OUT/truth/date=YYYY-MM-DD/part-0.parquet    ground truth: is_fraud, pattern (never a feature)
    OUT/_SUCCESS.json                           manifest, written last
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from feature_views.contract import ATTEMPT_SCHEMA, LABEL_SCHEMA, USD_PER_UNIT
from simulator.config import CAMPAIGNS, Scenario

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
TRUTH_SCHEMA = pa.schema(
    [
        pa.field("transaction_id", pa.string(), nullable=False),
        pa.field("event_time", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("is_fraud", pa.bool_(), nullable=False),
        pa.field("pattern", pa.string(), nullable=False),
    ]
)
NETWORKS = np.array(["visa", "mastercard", "amex"], dtype=object)
EMAIL_DOMAINS = np.array(
    [
        "gmail.com",
        "outlook.com",
        "yahoo.com",
        "icloud.com",
        "proton.me",
        "gmx.de",
        "web.de",
        "orange.fr",
        "libero.it",
        "qq.com",
        "naver.com",
        "company.example",
    ],
    dtype=object,
)
THROWAWAY_DOMAINS = np.array(
    ["mailinator.example", "tempmail.example", "guerrilla.example"], dtype=object
)
HIGH_RISK_MCCS = ("5732", "5944", "4722", "5816")


class SimulationError(ValueError):
    """Impossible arguments or an unusable output location."""


@dataclasses.dataclass
class SimulationSummary:
    """What was written; printed by the CLI and stored in ``_SUCCESS.json``."""

    out: str
    days: int
    seed: int
    attempts: int
    fraud_attempts: int
    labels: int
    shoppers: int
    merchants: int
    cross_border_share: float
    patterns: dict[str, int]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _str_ids(prefix: str, *parts: np.ndarray) -> np.ndarray:
    """Vectorised id formatting: prefix + '_'.join(parts) as an object array."""
    out = np.char.add(prefix, parts[0].astype("U12"))
    for p in parts[1:]:
        out = np.char.add(np.char.add(out, "_"), p.astype("U12"))
    return out.astype(object)


class Marketplace:
    """Mutable population state advanced one day at a time."""

    def __init__(
        self,
        scenario: Scenario,
        tx_per_day: int,
        days: int,
        seed: int,
        regions: list[str] | None = None,
    ) -> None:
        self.sc = scenario
        self.tx_per_day = tx_per_day
        self.days = days
        self.rng = np.random.default_rng(seed)
        pop = scenario.population
        region_names = regions or list(scenario.regions)
        self.region_names = np.array(region_names, dtype=object)
        countries, weights, country_region = [], [], []
        for ri, name in enumerate(region_names):
            region = scenario.regions[name]
            total = sum(region.countries.values())
            for c, w in region.countries.items():
                countries.append(c)
                weights.append(region.weight * w / total)
                country_region.append(ri)
        self.countries = np.array(countries, dtype=object)
        self.country_p = np.array(weights) / sum(weights)
        self.country_region = np.array(country_region)
        self.country_currency = np.array([scenario.currencies[c] for c in countries], dtype=object)
        self.country_fx = np.array([USD_PER_UNIT[c] for c in self.country_currency])
        self.tz = [zoneinfo.ZoneInfo(scenario.regions[n].timezone) for n in region_names]
        mccs = list(scenario.merchant_categories)
        self.mccs = np.array(mccs, dtype=object)
        mcc_table = np.array([scenario.merchant_categories[m] for m in mccs], dtype=float)
        self.mcc_p = mcc_table[:, 0] / mcc_table[:, 0].sum()
        self.mcc_median = mcc_table[:, 1]
        self.mcc_sigma = mcc_table[:, 2]
        self.diurnal_p = np.array(scenario.traffic.diurnal) / sum(scenario.traffic.diurnal)
        ch = scenario.traffic.channels
        self.channels = np.array(list(ch), dtype=object)
        self.channel_p = np.array(list(ch.values())) / sum(ch.values())
        self.start_ms = int(
            dt.datetime.combine(scenario.start_date, dt.time(), tzinfo=dt.timezone.utc).timestamp()
            * 1000
        )

        n_shoppers = max(1000, int(tx_per_day * pop.shoppers_per_daily_attempt))
        self.sh_country = np.empty(0, dtype=np.int16)
        self.sh_activity = np.empty(0)
        self.sh_cards = np.empty(0, dtype=np.int32)
        self.sh_devices = np.empty(0, dtype=np.int32)
        self.sh_email = np.empty(0, dtype=np.int16)
        self._add_shoppers(n_shoppers)

        n_merchants = max(300, int(tx_per_day * pop.merchants_per_daily_attempt))
        self.m_country = np.empty(0, dtype=np.int16)
        self.m_mcc = np.empty(0, dtype=np.int16)
        self.m_size = np.empty(0)
        self.m_created_ms = np.empty(0, dtype=np.int64)
        self.m_ids = np.empty(0, dtype=object)
        self._add_merchants(
            n_merchants, created_from=self.start_ms - 3 * 365 * DAY_MS, created_to=self.start_ms
        )
        # the merchant compromised for some weeks: a mid-sized, established one
        mid = np.argsort(self.m_size)[int(len(self.m_size) * 0.9)]
        self.compromised_merchant = int(mid)
        self.bust_out_merchant: int | None = None
        self.bust_out_cards = _str_ids("card_bo", np.arange(scenario.fraud.bust_out.ring_cards))
        self.bust_out_devices = _str_ids("dev_bo", np.arange(5))

    # ---- population -------------------------------------------------------------------
    def _add_shoppers(self, n: int) -> None:
        rng = self.rng
        self.sh_country = np.concatenate(
            [self.sh_country, rng.choice(len(self.countries), n, p=self.country_p).astype(np.int16)]
        )
        self.sh_activity = np.concatenate([self.sh_activity, rng.lognormal(0.0, 1.0, n)])
        self.sh_cards = np.concatenate([self.sh_cards, 1 + (rng.random(n) < 0.3).astype(np.int32)])
        self.sh_devices = np.concatenate(
            [self.sh_devices, 1 + (rng.random(n) < 0.4).astype(np.int32)]
        )
        self.sh_email = np.concatenate(
            [self.sh_email, rng.integers(0, len(EMAIL_DOMAINS), n).astype(np.int16)]
        )

    def _add_merchants(self, n: int, created_from: int, created_to: int) -> None:
        rng = self.rng
        start = len(self.m_ids)
        self.m_country = np.concatenate(
            [self.m_country, rng.choice(len(self.countries), n, p=self.country_p).astype(np.int16)]
        )
        self.m_mcc = np.concatenate(
            [self.m_mcc, rng.choice(len(self.mccs), n, p=self.mcc_p).astype(np.int16)]
        )
        alpha = self.sc.population.merchant_size_pareto_alpha
        self.m_size = np.concatenate([self.m_size, rng.pareto(alpha, n) + 0.05])
        self.m_created_ms = np.concatenate(
            [self.m_created_ms, rng.integers(created_from, max(created_to, created_from + 1), n)]
        )
        self.m_ids = np.concatenate([self.m_ids, _str_ids("m", np.arange(start, start + n))])

    def _grow(self, day: int) -> None:
        pop, rng = self.sc.population, self.rng
        day_ms = self.start_ms + day * DAY_MS
        self._add_shoppers(rng.binomial(len(self.sh_country), pop.new_shoppers_per_day))
        n = len(self.sh_country)
        self.sh_cards += (rng.random(n) < pop.new_card_per_day).astype(np.int32)
        self.sh_devices += (rng.random(n) < pop.new_device_per_day).astype(np.int32)
        self._add_merchants(
            max(1, rng.binomial(len(self.m_ids), pop.new_merchants_per_day)),
            created_from=day_ms,
            created_to=day_ms + DAY_MS,
        )

    # ---- helpers ----------------------------------------------------------------------
    def _pick_merchants(
        self, country: np.ndarray, mcc_filter: tuple[str, ...] | None = None
    ) -> np.ndarray:
        """Merchants drawn by power-law size within each requested country."""
        out = np.empty(len(country), dtype=np.int64)
        allowed = np.ones(len(self.m_ids), dtype=bool)
        if mcc_filter:
            allowed = np.isin(self.mccs[self.m_mcc], mcc_filter)
        for c in np.unique(country):
            rows = np.flatnonzero(country == c)
            cand = np.flatnonzero((self.m_country == c) & allowed)
            if len(cand) == 0:
                cand = np.flatnonzero(allowed)
            cum = np.cumsum(self.m_size[cand])
            out[rows] = cand[np.searchsorted(cum, self.rng.random(len(rows)) * cum[-1])]
        return out

    def _other_country(self, country: np.ndarray) -> np.ndarray:
        """A different country than `country` per row, drawn by traffic weight."""
        k = len(self.countries)
        other = self.rng.choice(k, len(country), p=self.country_p)
        clash = other == country
        other[clash] = (other[clash] + 1 + self.rng.integers(0, k - 1, clash.sum())) % k
        return other

    def _local_times(
        self, day: int, region: np.ndarray, hour_p: np.ndarray | None = None
    ) -> np.ndarray:
        """UTC ms inside `day` whose local hour (in the row's region) follows `hour_p`."""
        rng = self.rng
        p = self.diurnal_p if hour_p is None else hour_p
        local_sec = rng.choice(24, len(region), p=p) * 3600 + rng.integers(0, 3600, len(region))
        noon = dt.datetime.combine(
            self.sc.start_date + dt.timedelta(days=day), dt.time(12), tzinfo=dt.timezone.utc
        )
        offsets = np.array([tz.utcoffset(noon).total_seconds() for tz in self.tz], dtype=np.int64)
        utc_sec = (local_sec - offsets[region]) % 86_400
        return self.start_ms + day * DAY_MS + utc_sec * 1000 + rng.integers(0, 1000, len(region))

    def _amounts(self, usd: np.ndarray, merchant: np.ndarray) -> tuple[np.ndarray, ...]:
        """Amount in the merchant's currency and its USD value, rounded like the contract."""
        country = self.m_country[merchant]
        fx = self.country_fx[country]
        currency = self.country_currency[country]
        decimals = np.where(currency == "JPY", 0, 2)
        local = np.round(usd / fx * 10.0**decimals) / 10.0**decimals
        local = np.maximum(local, 10.0**-decimals)
        return local, currency, np.round(local * fx, 2)

    def _cards(self, shopper: np.ndarray, k: np.ndarray, country: np.ndarray) -> dict[str, Any]:
        h = (shopper.astype(np.int64) * 1_000_003 + k * 7919) % 1_000_000
        network = np.where(h % 100 < 55, 0, np.where(h % 100 < 93, 1, 2))
        prefix = np.array(["4", "5", "3"])[network]
        bins = np.char.add(
            np.char.add(prefix, np.char.zfill(country.astype("U2"), 2)),
            np.char.zfill((h // 100 % 40).astype("U3"), 3),
        )
        return {
            "card_id": _str_ids("card_", shopper, k),
            "card_bin": bins.astype(object),
            "card_network": NETWORKS[network],
            "card_country": self.countries[country],
        }

    # ---- one day ----------------------------------------------------------------------
    def legit(self, day: int, n: int, cross_border_share: float) -> dict[str, Any]:
        """Ordinary shopping: the bulk of traffic and the camouflage for friendly fraud."""
        rng, pop = self.rng, self.sc.population
        cum = np.cumsum(self.sh_activity)
        shopper = np.searchsorted(cum, rng.random(n) * cum[-1])
        home = self.sh_country[shopper].astype(np.int64)
        card_k = (rng.random(n) * self.sh_cards[shopper]).astype(np.int64)
        dev_k = (rng.random(n) * self.sh_devices[shopper]).astype(np.int64)
        cross = rng.random(n) < cross_border_share
        m_country = np.where(cross, self._other_country(home), home)
        merchant = self._pick_merchants(m_country)
        mcc = self.m_mcc[merchant]
        usd = rng.lognormal(np.log(self.mcc_median[mcc]), self.mcc_sigma[mcc])
        ip = np.where(rng.random(n) < pop.travel_share, self._other_country(home), home)
        ship = np.where(rng.random(n) < pop.ship_elsewhere_share, self._other_country(home), home)
        guest = rng.random(n) < pop.guest_checkout_share
        rec = self._cards(shopper, card_k, home)
        rec.update(
            event_ms=self._local_times(day, self.country_region[home]),
            region=self.region_names[self.country_region[m_country]],
            shopper_id=np.where(guest, None, _str_ids("s", shopper)),
            device_id=_str_ids("dev_", shopper, dev_k),
            ip_country=self.countries[ip],
            email_domain=EMAIL_DOMAINS[self.sh_email[shopper]],
            billing_country=self.countries[home],
            shipping_country=self.countries[ship],
            merchant=merchant,
            channel=rng.choice(self.channels, n, p=self.channel_p),
            usd=usd,
        )
        return rec

    def card_testing(self, day: int, n: int) -> dict[str, Any]:
        """Bursts of small authorisations over fresh stolen cards across many merchants.

        Bursts are whole: `n` sets the expected number of rows, and the day gets a Poisson
        number of complete bursts (possibly none), as bots work in campaigns.
        """
        rng, cfg = self.rng, self.sc.fraud.card_testing
        mean_rows = (cfg.cards_per_burst[0] + cfg.cards_per_burst[1]) / 2 * 2.0
        rows: list[dict[str, Any]] = []
        for burst in range(int(rng.poisson(n / mean_rows))):
            cards = int(rng.integers(cfg.cards_per_burst[0], cfg.cards_per_burst[1] + 1))
            tries = rng.integers(1, 4, cards)
            k = int(tries.sum())
            card_idx = np.repeat(np.arange(cards), tries)
            n_m = int(rng.integers(cfg.merchants_per_burst[0], cfg.merchants_per_burst[1] + 1))
            targets = rng.choice(len(self.m_ids), n_m, replace=False)
            start = (
                self.start_ms
                + day * DAY_MS
                + int(rng.integers(0, DAY_MS - cfg.burst_minutes * 60_000))
            )
            card_country = rng.choice(len(self.countries), cards)[card_idx]
            ip = int(rng.integers(0, len(self.countries)))
            rec = self._cards(np.full(k, 10_000_000 + day * 1000 + burst), card_idx, card_country)
            rec["card_id"] = _str_ids(f"card_ct{day}_{burst}_", card_idx)
            rec.update(
                event_ms=np.sort(start + rng.integers(0, cfg.burst_minutes * 60_000, k)),
                shopper_id=np.full(k, None, dtype=object),
                device_id=np.full(k, f"dev_ct{day}_{burst}", dtype=object),
                ip_country=np.full(k, self.countries[ip], dtype=object),
                email_domain=THROWAWAY_DOMAINS[rng.integers(0, len(THROWAWAY_DOMAINS), k)],
                billing_country=self.countries[card_country],
                shipping_country=np.full(k, self.countries[ip], dtype=object),
                merchant=targets[rng.integers(0, n_m, k)],
                channel=np.where(rng.random(k) < 0.7, "api", "web").astype(object),
                usd=rng.uniform(cfg.amount_usd[0], cfg.amount_usd[1], k),
            )
            rec["region"] = self.region_names[self.country_region[self.m_country[rec["merchant"]]]]
            rows.append(rec)
        return _concat(rows) if rows else {}

    def _victims(self, n: int, with_account: bool) -> dict[str, Any]:
        """Existing shoppers whose card or account fraudsters take over."""
        rng = self.rng
        shopper = rng.integers(0, len(self.sh_country), n)
        home = self.sh_country[shopper].astype(np.int64)
        card_k = (rng.random(n) * self.sh_cards[shopper]).astype(np.int64)
        rec = self._cards(shopper, card_k, home)
        rec["shopper_id"] = (
            _str_ids("s", shopper)
            if with_account
            else np.where(rng.random(n) < 0.6, None, _str_ids("s", shopper))
        )
        rec["email_domain"] = EMAIL_DOMAINS[self.sh_email[shopper]]
        rec["billing_country"] = self.countries[home]
        rec["_home"] = home
        return rec

    def stolen_card(self, day: int, n: int) -> dict[str, Any]:
        """Existing cards used from abroad, new devices, shipped abroad, high tickets."""
        rng = self.rng
        rec = self._victims(n, with_account=False)
        home = rec.pop("_home")
        ip = self._other_country(home)
        m_country = np.where(rng.random(n) < 0.7, ip, home)
        merchant = self._pick_merchants(m_country, HIGH_RISK_MCCS if rng.random() < 0.9 else None)
        rec.update(
            event_ms=self._local_times(day, self.country_region[ip]),
            device_id=_str_ids(f"dev_sc{day}_", np.arange(n)),
            ip_country=self.countries[ip],
            shipping_country=self.countries[ip],
            merchant=merchant,
            channel=np.full(n, "web", dtype=object),
            usd=rng.lognormal(np.log(350.0), 0.7, n),
        )
        rec["region"] = self.region_names[self.country_region[m_country]]
        return rec

    def account_takeover(self, day: int, n: int) -> dict[str, Any]:
        """A shopper's account on a new device shipping to a new country, with a big basket."""
        rng = self.rng
        rec = self._victims(n, with_account=True)
        home = rec.pop("_home")
        ip = np.where(rng.random(n) < 0.5, home, self._other_country(home))
        merchant = self._pick_merchants(home, HIGH_RISK_MCCS)
        rec.update(
            event_ms=self._local_times(day, self.country_region[home]),
            device_id=_str_ids(f"dev_ato{day}_", np.arange(n)),
            ip_country=self.countries[ip],
            shipping_country=self.countries[self._other_country(home)],
            merchant=merchant,
            channel=np.where(rng.random(n) < 0.5, "app", "web").astype(object),
            usd=rng.lognormal(np.log(600.0), 0.6, n),
        )
        rec["region"] = self.region_names[self.country_region[home]]
        return rec

    def compromised_merchant_fraud(self, day: int, n: int) -> dict[str, Any]:
        """Stolen cards pushed through one hijacked, established merchant for some weeks."""
        rng = self.rng
        rec = self._victims(n, with_account=False)
        home = rec.pop("_home")
        m = self.compromised_merchant
        mcc = self.m_mcc[m]
        rec.update(
            event_ms=self._local_times(day, self.country_region[home]),
            device_id=_str_ids(f"dev_cm{day}_", rng.integers(0, max(2, n // 3), n)),
            ip_country=self.countries[
                np.where(rng.random(n) < 0.5, home, self._other_country(home))
            ],
            shipping_country=self.countries[home],
            merchant=np.full(n, m),
            channel=np.full(n, "web", dtype=object),
            usd=rng.lognormal(np.log(self.mcc_median[mcc] * 1.8), 0.6, n),
        )
        rec["region"] = self.region_names[np.full(n, self.country_region[self.m_country[m]])]
        return rec

    def bust_out(self, day: int, n: int, progress: float) -> dict[str, Any]:
        """A collusive new merchant cycling a ring of cards with growing tickets, then gone."""
        rng = self.rng
        if self.bust_out_merchant is None:
            day_ms = self.start_ms + day * DAY_MS
            self._add_merchants(1, day_ms - 2 * DAY_MS, day_ms - DAY_MS)
            self.bust_out_merchant = len(self.m_ids) - 1
            self.m_size[-1] = 0.0  # no organic traffic: only the ring pays there
        m = self.bust_out_merchant
        country = np.full(n, int(self.m_country[m]))
        card_k = rng.integers(0, len(self.bust_out_cards), n)
        rec = self._cards(np.full(n, 20_000_000), card_k, country)
        rec["card_id"] = self.bust_out_cards[card_k]
        rec.update(
            event_ms=self._local_times(day, self.country_region[country]),
            shopper_id=_str_ids("s_bo", card_k),
            device_id=self.bust_out_devices[rng.integers(0, len(self.bust_out_devices), n)],
            ip_country=self.countries[country],
            email_domain=THROWAWAY_DOMAINS[card_k % 3],
            billing_country=self.countries[country],
            shipping_country=self.countries[country],
            merchant=np.full(n, m),
            channel=np.full(n, "web", dtype=object),
            usd=rng.lognormal(np.log(120.0 + 500.0 * progress), 0.4, n),
        )
        rec["region"] = self.region_names[self.country_region[country]]
        return rec

    def generate_day(self, day: int) -> tuple[pa.Table, pa.Table, list[dict[str, Any]]]:
        """Attempts, ground truth and the labels they will eventually produce, for one day."""
        sc, rng = self.sc, self.rng
        if day > 0:
            self._grow(day)
        date = sc.start_date + dt.timedelta(days=day)
        drifting = sc.drift.enabled and day >= int(sc.drift.from_fraction * self.days)
        n = int(
            round(
                self.tx_per_day
                * sc.traffic.weekday_factors[date.weekday()]
                * (1.0 + sc.traffic.day_volume_noise * rng.standard_normal())
            )
        )
        n = max(n, 10)
        fraud_rate = sc.fraud.rate * (sc.drift.fraud_rate_multiplier if drifting else 1.0)
        shares = dict(sc.drift.campaigns if drifting else sc.fraud.campaigns)
        cm, bo = sc.fraud.compromised_merchant, sc.fraud.bust_out
        cm_start, bo_start = int(cm.start_fraction * self.days), int(bo.start_fraction * self.days)
        if not cm_start <= day < cm_start + cm.duration_days:
            shares.pop("compromised_merchant", None)
        if not bo_start <= day < bo_start + bo.duration_days:
            shares.pop("bust_out", None)
        names = [c for c in CAMPAIGNS if shares.get(c, 0) > 0]
        p = np.array([shares[c] for c in names])
        counts = dict(
            zip(names, rng.multinomial(rng.binomial(n, fraud_rate), p / p.sum()), strict=True)
        )
        cross = sc.drift.cross_border_share if drifting else sc.traffic.cross_border_share
        n_other_fraud = sum(v for k, v in counts.items() if k != "friendly_fraud")
        parts = [self.legit(day, n - n_other_fraud, cross)]
        pattern = [np.full(n - n_other_fraud, "", dtype=object)]
        friendly = counts.get("friendly_fraud", 0)
        if friendly:
            pattern[0][rng.choice(n - n_other_fraud, friendly, replace=False)] = "friendly_fraud"
        makers: dict[str, Callable[[int], dict[str, Any]]] = {
            "card_testing": lambda k: self.card_testing(day, k),
            "stolen_card": lambda k: self.stolen_card(day, k),
            "account_takeover": lambda k: self.account_takeover(day, k),
            "compromised_merchant": lambda k: self.compromised_merchant_fraud(day, k),
            "bust_out": lambda k: self.bust_out(day, k, (day - bo_start) / bo.duration_days),
        }
        for name in names:
            if name != "friendly_fraud" and counts[name] > 0:
                rows = makers[name](int(counts[name]))
                if rows:
                    parts.append(rows)
                    pattern.append(np.full(len(rows["event_ms"]), name, dtype=object))
        rec = _concat(parts)
        pattern_arr = np.concatenate(pattern)
        order = np.argsort(rec["event_ms"], kind="stable")
        rec = {k: v[order] for k, v in rec.items()}
        pattern_arr = pattern_arr[order]
        total = len(order)
        tx_ids = _str_ids(f"tx{day:04d}_", np.arange(total))
        merchant = rec["merchant"]
        amount, currency, amount_usd = self._amounts(rec["usd"], merchant)
        m_country = self.m_country[merchant]
        events = pa.Table.from_arrays(
            [
                pa.array(tx_ids, pa.string()),
                pa.array(rec["event_ms"], pa.timestamp("ms", tz="UTC")),
                pa.array(rec["region"], pa.string()),
                pa.array(rec["shopper_id"], pa.string()),
                pa.array(rec["card_id"], pa.string()),
                pa.array(rec["card_bin"], pa.string()),
                pa.array(rec["card_country"], pa.string()),
                pa.array(rec["card_network"], pa.string()),
                pa.array(rec["device_id"], pa.string()),
                pa.array(rec["ip_country"], pa.string()),
                pa.array(rec["email_domain"], pa.string()),
                pa.array(rec["billing_country"], pa.string()),
                pa.array(rec["shipping_country"], pa.string()),
                pa.array(self.m_ids[merchant], pa.string()),
                pa.array(self.mccs[self.m_mcc[merchant]], pa.string()),
                pa.array(self.countries[m_country], pa.string()),
                pa.array(self.m_created_ms[merchant], pa.timestamp("ms", tz="UTC")),
                pa.array(rec["channel"], pa.string()),
                pa.array(amount, pa.float64()),
                pa.array(currency, pa.string()),
                pa.array(amount_usd, pa.float64()),
            ],
            schema=ATTEMPT_SCHEMA,
        )
        is_fraud = pattern_arr != ""
        truth = pa.Table.from_arrays(
            [
                pa.array(tx_ids, pa.string()),
                pa.array(rec["event_ms"], pa.timestamp("ms", tz="UTC")),
                pa.array(is_fraud),
                pa.array(pattern_arr, pa.string()),
            ],
            schema=TRUTH_SCHEMA,
        )
        labels = self._labels(tx_ids, rec["event_ms"], pattern_arr)
        return events, truth, labels

    def _labels(
        self, tx_ids: np.ndarray, event_ms: np.ndarray, pattern: np.ndarray
    ) -> list[dict[str, Any]]:
        """Late labels: heavy-tailed delays; some fraud is never reported."""
        rng, lab = self.rng, self.sc.labels
        out: list[dict[str, Any]] = []
        fraud = np.flatnonzero(pattern != "")
        rate = np.array([lab.report_rate.get(p, 0.8) for p in pattern[fraud]])
        reported = fraud[rng.random(len(fraud)) < rate]
        confirmed = (rng.random(len(reported)) < lab.confirmed_fraud_share) & (
            pattern[reported] != "friendly_fraud"
        )
        median = np.where(confirmed, lab.confirmed_median_days, lab.chargeback_median_days)
        delay_days = np.clip(
            rng.lognormal(np.log(median), lab.chargeback_sigma), 0.02, lab.max_delay_days
        )
        label_ms = event_ms[reported] + (delay_days * DAY_MS).astype(np.int64)
        for i, idx in enumerate(reported):
            out.append(
                {
                    "transaction_id": tx_ids[idx],
                    "label_time": int(label_ms[i]),
                    "kind": "confirmed_fraud" if confirmed[i] else "chargeback",
                    "reason": pattern[idx]
                    if pattern[idx] == "friendly_fraud"
                    else ("issuer_confirmed" if confirmed[i] else "fraud_card_absent"),
                }
            )
        legit = np.flatnonzero(pattern == "")
        disputed = legit[rng.random(len(legit)) < lab.dispute_won_rate]
        delay = np.clip(
            rng.lognormal(np.log(lab.chargeback_median_days + 10), 0.5, len(disputed)),
            1,
            lab.max_delay_days,
        )
        for i, idx in enumerate(disputed):
            out.append(
                {
                    "transaction_id": tx_ids[idx],
                    "label_time": int(event_ms[idx] + delay[i] * DAY_MS),
                    "kind": "dispute_won",
                    "reason": "merchant_won_dispute",
                }
            )
        return out


def _concat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _prepare_out(out: Path, overwrite: bool) -> Path:
    if out.exists() and not out.is_dir():
        raise SimulationError(f"output {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise SimulationError(f"output directory {out} is not empty (pass --overwrite to replace)")
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SimulationError(f"cannot create {parent}: {exc.strerror}") from exc
    if not os.access(parent, os.W_OK):
        raise SimulationError(f"output location {parent} is not writable")
    staging = parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def simulate(
    scenario: Scenario,
    days: int,
    tx_per_day: int,
    seed: int,
    out: str | Path,
    regions: list[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    scenario_path: str | None = None,
) -> SimulationSummary:
    """Simulate `days` days of checkout traffic into `out`.

    Written to a hidden staging folder and renamed into place at the end, so an interrupted
    run never leaves a folder that looks complete (``_SUCCESS.json`` marks completion).
    """
    import time

    from tqdm import tqdm

    if days <= 0:
        raise SimulationError(f"--days must be a positive number of days, got {days}")
    if tx_per_day <= 0:
        raise SimulationError(f"--tx-per-day must be positive, got {tx_per_day}")
    if regions:
        unknown = sorted(set(regions) - set(scenario.regions))
        if unknown:
            raise SimulationError(
                f"unknown region(s) {unknown}; configured: {sorted(scenario.regions)}"
            )
    out = Path(out)
    staging = _prepare_out(out, overwrite)
    t0 = time.perf_counter()
    try:
        market = Marketplace(scenario, tx_per_day, days, seed, regions)
        end_ms = market.start_ms + days * DAY_MS
        labels: list[dict[str, Any]] = []
        attempts = fraud = cross = 0
        patterns: dict[str, int] = {}
        for day in tqdm(range(days), desc="simulating days", unit="day", disable=not progress):
            events, truth, day_labels = market.generate_day(day)
            date = (scenario.start_date + dt.timedelta(days=day)).isoformat()
            for name, table in (("events", events), ("truth", truth)):
                part = staging / name / f"date={date}"
                part.mkdir(parents=True)
                pq.write_table(table, part / "part-0.parquet")
            labels.extend(lab for lab in day_labels if lab["label_time"] < end_ms)
            attempts += events.num_rows
            pat = truth.column("pattern").to_numpy(zero_copy_only=False)
            fraud += int((pat != "").sum())
            for name, count in zip(*np.unique(pat[pat != ""], return_counts=True), strict=True):
                patterns[str(name)] = patterns.get(str(name), 0) + int(count)
            cross += int(
                np.sum(
                    events.column("card_country").to_numpy(zero_copy_only=False)
                    != events.column("merchant_country").to_numpy(zero_copy_only=False)
                )
            )
        labels.sort(key=lambda r: (r["label_time"], r["transaction_id"]))
        (staging / "labels").mkdir()
        label_table = pa.Table.from_pydict(
            {
                "transaction_id": [r["transaction_id"] for r in labels],
                "label_time": pa.array(
                    [r["label_time"] for r in labels], pa.timestamp("ms", tz="UTC")
                ),
                "kind": [r["kind"] for r in labels],
                "reason": [r["reason"] for r in labels],
            },
            schema=LABEL_SCHEMA,
        )
        pq.write_table(label_table, staging / "labels" / "labels.parquet")
        summary = SimulationSummary(
            out=str(out),
            days=days,
            seed=seed,
            attempts=attempts,
            fraud_attempts=fraud,
            labels=len(labels),
            shoppers=len(market.sh_country),
            merchants=len(market.m_ids),
            cross_border_share=round(cross / max(attempts, 1), 4),
            patterns=patterns,
            seconds=round(time.perf_counter() - t0, 2),
        )
        config_text = json.dumps(scenario.model_dump(mode="json"), sort_keys=True)
        manifest = summary.as_dict() | {
            "tx_per_day": tx_per_day,
            "regions": list(market.region_names),
            "scenario": scenario_path,
            "start_date": scenario.start_date.isoformat(),
            "scenario_sha256": hashlib.sha256(config_text.encode()).hexdigest(),
        }
        (staging / "_SUCCESS.json").write_text(json.dumps(manifest, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
        return summary
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
