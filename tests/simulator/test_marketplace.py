"""The simulated marketplace is believable, deterministic, and refuses impossible input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

from checkout_risk.cli import main
from feature_views.tables import read_attempts, read_labels
from simulator.config import ScenarioError, load_scenario
from simulator.marketplace import SimulationError, simulate


def _load(path: Path) -> pd.DataFrame:
    events = read_attempts(path / "events")
    truth = ds.dataset(path / "truth", partitioning="hive").to_table().to_pandas()
    return events.merge(truth[["transaction_id", "is_fraud", "pattern"]], on="transaction_id")


@pytest.fixture(scope="module")
def market(medium_sim: Path) -> pd.DataFrame:
    return _load(medium_sim)


def test_layout_and_manifest(medium_sim: Path) -> None:
    days = sorted(p.name for p in (medium_sim / "events").iterdir())
    assert len(days) == 60 and days[0] == "date=2026-06-01"
    manifest = json.loads((medium_sim / "_SUCCESS.json").read_text())
    assert manifest["days"] == 60 and manifest["seed"] == 11
    assert len(manifest["regions"]) >= 3
    assert (medium_sim / "labels" / "labels.parquet").exists()


def test_deterministic_per_seed(tmp_path: Path) -> None:
    sc = load_scenario()
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        simulate(sc, days=3, tx_per_day=800, seed=seed, out=tmp_path / name, progress=False)
    a, b, c = (read_attempts(tmp_path / n / "events") for n in "abc")
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(
        read_labels(tmp_path / "a" / "labels"), read_labels(tmp_path / "b" / "labels")
    )
    assert len(a) != len(c) or not a["amount"].equals(c["amount"])


def test_fraud_rate_and_cross_border_share(market: pd.DataFrame) -> None:
    assert 0.001 <= market["is_fraud"].mean() <= 0.005
    cross = (market["card_country"] != market["merchant_country"]).mean()
    assert 0.15 <= cross <= 0.25


def test_regions_have_their_own_currencies_and_local_hours(market: pd.DataFrame) -> None:
    legit = market[~market["is_fraud"]]
    assert legit["region"].nunique() >= 3
    assert legit.groupby("region")["currency"].agg(lambda s: s.mode()[0]).nunique() >= 3
    # the diurnal shape holds in each region's local time, not in UTC
    tz = {
        "us-east": "America/New_York",
        "eu-west": "Europe/Berlin",
        "ap-southeast": "Asia/Singapore",
    }
    for region, zone in tz.items():
        rows = legit[
            (legit["region"] == region) & (legit["card_country"] == legit["merchant_country"])
        ]
        hours = rows["event_time"].dt.tz_convert(zone).dt.hour.value_counts(normalize=True)
        assert hours.loc[[19, 20]].sum() > 3 * hours.loc[[3, 4]].sum(), region


def test_weekly_seasonality(market: pd.DataFrame) -> None:
    per_day = market.groupby(market["event_time"].dt.floor("D")).size()
    by_weekday = per_day.groupby(per_day.index.dayofweek).mean()
    assert by_weekday.loc[5] > by_weekday.loc[1] * 1.08  # Saturday above Tuesday


def test_power_law_merchant_sizes(market: pd.DataFrame) -> None:
    sizes = market["merchant_id"].value_counts()
    top = sizes.iloc[: max(1, len(sizes) // 100)].sum() / sizes.sum()
    assert top > 0.10  # the top 1% of merchants take well over 1% of attempts
    assert sizes.iloc[0] > 20 * sizes.median()


def test_new_merchants_cards_and_devices_every_day(market: pd.DataFrame) -> None:
    day = market["event_time"].dt.floor("D")
    for column in ("card_id", "device_id", "shopper_id"):
        first_seen = market.groupby(column)["event_time"].min().dt.floor("D")
        new_per_day = first_seen.value_counts().reindex(day.unique(), fill_value=0)
        assert (new_per_day.iloc[5:] > 0).all(), column
    onboarded = market.groupby("merchant_id")["merchant_created_at"].min().dt.floor("D")
    per_day = onboarded.value_counts().reindex(day.unique(), fill_value=0)
    assert (per_day.iloc[1:-3] > 0).all()  # merchants onboarding every day start trading


def test_late_labels_heavy_tailed_and_incomplete(tmp_path: Path) -> None:
    out = tmp_path / "long"
    simulate(
        load_scenario(overrides={"fraud": {"rate": 0.02}}),
        days=200,
        tx_per_day=300,
        seed=2,
        out=out,
        progress=False,
    )
    m = _load(out)
    labels = read_labels(out / "labels").merge(
        m[["transaction_id", "event_time", "is_fraud"]], on="transaction_id"
    )
    delay = (labels["label_time"] - labels["event_time"]).dt.total_seconds() / 86_400
    early = labels[labels["event_time"] < labels["event_time"].min() + pd.Timedelta(days=60)]
    early_delay = (early["label_time"] - early["event_time"]).dt.total_seconds() / 86_400
    assert 7 <= early_delay.median() <= 21
    assert early_delay.quantile(0.95) > 40
    assert delay.max() <= 120.0 + 1e-6
    fraud = m[m["is_fraud"] & (m["event_time"] < m["event_time"].min() + pd.Timedelta(days=60))]
    reported = fraud["transaction_id"].isin(labels["transaction_id"]).mean()
    assert 0.5 < reported < 0.95  # a share of fraud is never reported
    assert (labels["label_time"] > labels["event_time"]).all()
    assert set(labels["kind"]) == {"chargeback", "confirmed_fraud", "dispute_won"}


def test_each_campaign_is_present_and_distinguishable(market: pd.DataFrame) -> None:
    legit = market[market["pattern"] == ""]
    by = {p: g for p, g in market.groupby("pattern") if p}
    assert set(by) == {
        "card_testing",
        "stolen_card",
        "account_takeover",
        "compromised_merchant",
        "bust_out",
        "friendly_fraud",
    }
    ct = by["card_testing"]
    assert ct["amount_usd"].median() < 6 and legit["amount_usd"].median() > 20
    assert ct.groupby("device_id")["card_id"].nunique().median() >= 5  # many cards per device
    sc = by["stolen_card"]
    assert (sc["ip_country"] != sc["card_country"]).mean() > 0.9
    assert sc["amount_usd"].median() > 4 * legit["amount_usd"].median()
    ato = by["account_takeover"]
    assert ato["shopper_id"].notna().all()
    assert (ato["shipping_country"] != ato["billing_country"]).mean() > 0.9
    seen_devices = set(legit["device_id"])
    assert not ato["device_id"].isin(seen_devices).any()  # always a new device
    cm = by["compromised_merchant"]
    assert cm["merchant_id"].nunique() == 1
    span = (cm["event_time"].max() - cm["event_time"].min()).days
    assert 7 <= span <= 21
    assert market.loc[market["merchant_id"] == cm["merchant_id"].iloc[0], "event_time"].min() < cm[
        "event_time"
    ].min() - pd.Timedelta(days=7)  # established before it was hijacked
    bo = by["bust_out"]
    assert bo["merchant_id"].nunique() == 1
    bo_all = market[market["merchant_id"] == bo["merchant_id"].iloc[0]]
    assert bo_all["is_fraud"].all()
    assert (bo_all["event_time"].min() - bo_all["merchant_created_at"].min()).days <= 3
    assert bo["card_id"].nunique() < len(bo)  # a ring of cards, reused
    ff = by["friendly_fraud"]
    ratio = ff["amount_usd"].median() / legit["amount_usd"].median()
    assert 0.6 < ratio < 1.6
    assert (ff["ip_country"] != ff["card_country"]).mean() < 0.1


def test_drift_scenario_changes_the_mix_from_a_date(tmp_path: Path) -> None:
    drift = Path(__file__).resolve().parents[2] / "configs" / "simulation" / "drift.yaml"
    simulate(
        load_scenario(drift, overrides={"fraud": {"rate": 0.01}}),
        days=30,
        tx_per_day=5000,
        seed=4,
        out=tmp_path / "d",
        progress=False,
    )
    m = _load(tmp_path / "d")
    cut = m["event_time"].min().floor("D") + pd.Timedelta(days=15)
    before, after = m[m["event_time"] < cut], m[m["event_time"] >= cut]
    xb = lambda f: (f["card_country"] != f["merchant_country"]).mean()  # noqa: E731
    assert xb(after) > xb(before) + 0.1
    assert after["is_fraud"].mean() > 1.8 * before["is_fraud"].mean()
    ct = lambda f: (f["pattern"] == "card_testing").mean()  # noqa: E731
    assert ct(after) > 2 * ct(before)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--days", "-3"], "positive number of days"),
        (["--days", "2", "--tx-per-day", "0"], "must be positive"),
        (["--days", "2", "--regions", "us-east,mars-north"], "unknown region"),
    ],
)
def test_impossible_arguments_give_one_clear_line(tmp_path: Path, capsys, args, needle) -> None:
    out = tmp_path / "out"
    code = main(["simulate", *args, "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:") and needle in err[0]
    assert not out.exists() and not list(tmp_path.glob(".out.partial*"))


def test_unwritable_output_is_refused(tmp_path: Path, capsys) -> None:
    code = main(["simulate", "--days", "1", "--out", "/proc/forbidden/out", "--quiet"])
    assert code == 2 and "error:" in capsys.readouterr().err


def test_non_empty_output_needs_overwrite(tmp_path: Path, capsys) -> None:
    (tmp_path / "keep.txt").write_text("precious")
    code = main(["simulate", "--days", "1", "--out", str(tmp_path), "--quiet"])
    assert code == 2 and "not empty" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "precious"


def test_interrupted_run_leaves_nothing_that_looks_complete(tmp_path: Path, monkeypatch) -> None:
    from simulator import marketplace

    calls = {"n": 0}
    original = marketplace.Marketplace.generate_day

    def failing(self, day):  # a crash on the third day, as a full disk would cause
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return original(self, day)

    monkeypatch.setattr(marketplace.Marketplace, "generate_day", failing)
    with pytest.raises(OSError):
        simulate(
            load_scenario(), days=5, tx_per_day=200, seed=1, out=tmp_path / "x", progress=False
        )
    assert not (tmp_path / "x").exists()
    assert not [p for p in tmp_path.iterdir()]


def test_invalid_scenario_is_reported_with_its_location(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    base = (Path(__file__).resolve().parents[2] / "configs/simulation/default.yaml").read_text()
    bad.write_text(base.replace("rate: 0.003", "rate: 0.9"))
    with pytest.raises(ScenarioError, match="fraud.rate"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.yaml")


def test_simulation_rejects_zero_days_directly(tmp_path: Path) -> None:
    with pytest.raises(SimulationError):
        simulate(load_scenario(), days=0, tx_per_day=10, seed=1, out=tmp_path / "z", progress=False)
    assert np.isfinite(1.0)
