"""The data contract: one declaration, a Parquet schema and an API model that agree."""

from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pydantic
import pytest

from feature_views.contract import (
    ATTEMPT_FIELDS,
    ATTEMPT_SCHEMA,
    LABEL_SCHEMA,
    REQUIRED_ATTEMPT_COLUMNS,
    ContractError,
    PaymentAttempt,
    looks_like_pan,
    normalize_attempts,
    normalize_labels,
    to_ms,
)
from feature_views.tables import read_attempts

CORE = {
    "transaction_id": "t1",
    "event_time": "2026-11-28T12:00:00Z",
    "card_id": "tok_1",
    "merchant_id": "m1",
    "amount": 12.5,
}


def test_required_columns_are_exactly_the_core_five() -> None:
    assert set(REQUIRED_ATTEMPT_COLUMNS) == {
        "transaction_id",
        "event_time",
        "card_id",
        "merchant_id",
        "amount",
    }
    for f in ATTEMPT_SCHEMA:
        assert f.nullable == (f.name not in REQUIRED_ATTEMPT_COLUMNS), f.name
    assert [f.name for f in LABEL_SCHEMA] == ["transaction_id", "label_time", "kind", "reason"]


def test_api_model_and_parquet_schema_come_from_one_declaration() -> None:
    assert list(PaymentAttempt.model_fields) == [f.name for f in ATTEMPT_FIELDS]
    assert [f.name for f in ATTEMPT_SCHEMA] == [f.name for f in ATTEMPT_FIELDS]


def test_core_only_request_gets_documented_defaults() -> None:
    rec = PaymentAttempt.model_validate(CORE).to_record()
    assert rec["currency"] == "USD" and rec["amount_usd"] == 12.5
    assert rec["card_country"] == "ZZ" and rec["region"] == "unknown"
    assert rec["device_id"] is None and rec["shopper_id"] is None
    assert rec["event_time"] == dt.datetime(2026, 11, 28, 12, tzinfo=dt.timezone.utc)


def test_amount_usd_is_derived_with_the_static_fx_table() -> None:
    rec = PaymentAttempt.model_validate(CORE | {"amount": 1000, "currency": "jpy"}).to_record()
    assert rec["currency"] == "JPY" and rec["amount_usd"] == 6.7


@pytest.mark.parametrize(
    "patch, needle",
    [
        ({"card_id": "4111111111111111"}, "card number"),
        ({"card_id": "4111 1111 1111 1111"}, "card number"),
        ({"amount": -1}, "greater than 0"),
        ({"amount": math.nan}, "finite"),
        ({"amount": math.inf}, "finite"),
        ({"currency": "XXX"}, "unknown currency"),
        ({"event_time": "2026-11-28T12:00:00"}, "timezone"),
        ({"event_time": "yesterday"}, "datetime"),
        ({"transaction_id": ""}, "at least 1"),
        ({"surprise": 1}, "Extra inputs"),
    ],
)
def test_api_model_rejects_bad_input_with_a_clear_message(patch: dict, needle: str) -> None:
    with pytest.raises(pydantic.ValidationError) as err:
        PaymentAttempt.model_validate(CORE | patch)
    assert needle.lower() in str(err.value).lower()


def test_missing_required_field_is_named() -> None:
    body = dict(CORE)
    del body["merchant_id"]
    with pytest.raises(pydantic.ValidationError) as err:
        PaymentAttempt.model_validate(body)
    assert "merchant_id" in str(err.value)


def test_luhn_detection() -> None:
    assert looks_like_pan("4242424242424242")
    assert not looks_like_pan("4242424242424241")
    assert not looks_like_pan("card_123_0")


def test_external_core_only_table_normalises() -> None:
    frame = pd.DataFrame([CORE, CORE | {"transaction_id": "t2", "currency": "EUR"}])
    out = normalize_attempts(frame)
    assert list(out.columns) == [f.name for f in ATTEMPT_FIELDS]
    assert out["amount_usd"].tolist() == [12.5, 13.5]
    assert out["card_bin"].tolist() == ["unknown", "unknown"]
    assert str(out["event_time"].dtype) == "datetime64[ms, UTC]"


@pytest.mark.parametrize(
    "frame, needle",
    [
        (
            pd.DataFrame([{k: v for k, v in CORE.items() if k != "amount"}]),
            "missing required column",
        ),
        (pd.DataFrame([CORE | {"event_time": "not a time"}]), "unparseable times"),
        (pd.DataFrame([CORE | {"event_time": 5}]), "holds numbers"),
        (pd.DataFrame([CORE, CORE]), "duplicate transaction_id"),
        (pd.DataFrame([CORE | {"card_id": "5555555555554444"}]), "look like card numbers"),
        (pd.DataFrame([CORE | {"amount": 0}]), "finite numbers > 0"),
        (pd.DataFrame([CORE | {"currency": "ABC"}]), "unknown currencies"),
    ],
)
def test_normalise_errors_name_the_problem(frame: pd.DataFrame, needle: str) -> None:
    with pytest.raises(ContractError, match=needle):
        normalize_attempts(frame)


def test_labels_accept_is_fraud_and_reject_unknown_kinds() -> None:
    out = normalize_labels(
        pd.DataFrame(
            {
                "transaction_id": ["a", "b"],
                "label_time": ["2026-01-01T00:00:00Z"] * 2,
                "is_fraud": [1, 0],
            }
        )
    )
    assert out["kind"].tolist() == ["chargeback", "dispute_won"]
    with pytest.raises(ContractError, match="unknown kind"):
        normalize_labels(
            pd.DataFrame(
                {
                    "transaction_id": ["a"],
                    "label_time": ["2026-01-01T00:00:00Z"],
                    "kind": ["refund"],
                }
            )
        )


def test_to_ms_is_exact() -> None:
    stamp = dt.datetime(2026, 11, 28, 12, 0, 0, 123000, tzinfo=dt.timezone.utc)
    assert to_ms(stamp) == to_ms(pd.Timestamp(stamp)) == 1795867200123
    assert to_ms(None) is None and to_ms(pd.NaT) is None


def test_schema_round_trip_through_parquet_and_the_api(small_sim) -> None:
    table = pq.read_table(next((small_sim / "events").iterdir()) / "part-0.parquet")
    assert table.schema.equals(ATTEMPT_SCHEMA, check_metadata=False)
    frame = read_attempts(small_sim / "events").head(300)
    for row in frame.to_dict("records"):
        body = {
            k: (v.isoformat() if isinstance(v, pd.Timestamp) else v)
            for k, v in row.items()
            if v is not None and not (isinstance(v, float) and math.isnan(v))
        }
        rec = PaymentAttempt.model_validate(body).to_record()
        for name, value in row.items():
            if isinstance(value, pd.Timestamp):
                assert to_ms(rec[name]) == to_ms(value), name
            else:
                assert rec[name] == value, name


# The same bad value is refused by the API model and by the table normaliser, for the same
# reason, so training tables and served requests obey one contract.
BAD_VALUES = [
    ({"shopper_id": "alice@example.com"}, "e-mail address"),
    ({"email_domain": "bob.smith@mail.example.org"}, "e-mail address"),
    ({"device_id": "dev 4111 1111 1111 1111"}, "card number"),
    ({"merchant_id": "m-5555555555554444"}, "card number"),
    ({"shopper_id": "eve\u202egnp.exe"}, r"U\+202E"),
    ({"merchant_id": "m\u200b1"}, r"U\+200B"),
    ({"channel": "web\x00"}, r"U\+0000"),
    ({"card_bin": "4242\x1b[31m"}, r"U\+001B"),
    ({"region": "r" * 129}, "128"),
    ({"event_time": "1970-01-01T00:00:00Z"}, "outside 1990-01-01"),
    ({"event_time": "9999-12-31T23:59:59Z"}, "outside 1990-01-01"),
    ({"merchant_created_at": "1900-01-01T00:00:00Z"}, "outside 1990-01-01"),
    ({"amount": 20_000_000}, "above 10,000,000"),
]


@pytest.mark.parametrize("patch, needle", BAD_VALUES)
def test_api_and_tables_refuse_the_same_values(patch: dict, needle: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=needle):
        PaymentAttempt.model_validate(CORE | patch)
    with pytest.raises(ContractError, match=needle):
        normalize_attempts(pd.DataFrame([CORE | patch]))
    with pytest.raises(ContractError, match=needle):  # the Arrow fast path too
        normalize_attempts(pa.Table.from_pandas(pd.DataFrame([CORE | patch])))


@pytest.mark.parametrize(
    "value",
    [
        "tok_1",
        "Zoë's Café",
        "店舗-42",
        "shop 😀",
        "1693526400000",  # a millisecond timestamp is not a card number
        "chaos-a4111111111111111b",  # a digit run inside a hex id is not one either
        "gmail.com",
        "tx0042_000017",
    ],
)
def test_ordinary_text_passes_everywhere(value: str) -> None:
    PaymentAttempt.model_validate(CORE | {"shopper_id": value})
    assert normalize_attempts(pd.DataFrame([CORE | {"shopper_id": value}]))["shopper_id"][0] == (
        value
    )


@pytest.mark.parametrize(
    "value",
    [
        "swap-412-1795921234.567891",
        "order-2024-11-29-000123",
        "412-1795921234",
        "tx 4121795921 234",
    ],
)
def test_ids_holding_numbers_are_not_mistaken_for_card_numbers(value: str) -> None:
    """Digits between dashes or spaces in groupings no card uses are an id, not a PAN."""
    from feature_views.contract import text_problem

    assert text_problem(value) is None


@pytest.mark.parametrize(
    "value", ["4222222222222", "4111 1111 1111 1111", "3782 822463 10005", "3782-8224-6310-005"]
)
def test_card_numbers_as_people_write_them_are_refused(value: str) -> None:
    from feature_views.contract import text_problem

    assert "card number" in (text_problem(value) or "")
