"""The data contract: payment attempts and (late) labels.

Each field is declared once, in :data:`ATTEMPT_FIELDS` / :data:`LABEL_FIELDS`. From that one
declaration we derive the pyarrow schema used for Parquet (simulator, offline engine,
training sets), the pydantic model used to validate ``POST /v1/decisions``, and the
normaliser that lets external datasets carrying only the core columns flow through the same
code. Only ``transaction_id, event_time, card_id, merchant_id, amount`` are required.

Times are UTC. ``card_id`` is a token issued by the vault, never a primary account number:
both the request model and the normaliser reject values that look like a PAN (13-19 digits
passing the Luhn check), so a raw card number cannot reach the feature store or the logs.

The same rules hold for every text field, in the API and in tables alike (one set of
checks, :func:`text_problem`): at most 128 characters; no control, format (bidirectional
overrides, zero-width), surrogate or private-use characters — they make ids that look equal
but differ, or render log lines misleadingly; no embedded card number (a 13-19 digit run
passing Luhn, from a card network's range 2-6, standing apart from letters and other
digits) and no e-mail address, since ids are stored
and logged as they are. Timestamps must lie in :data:`TIME_RANGE`; the serving API further
bounds ``event_time`` by its region's clock window (``serve_graph.config``).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pydantic

UTC = dt.timezone.utc
TIMESTAMP = pa.timestamp("ms", tz="UTC")
UNKNOWN = "unknown"
UNKNOWN_COUNTRY = "ZZ"  # ISO 3166 user-assigned code, used for "not provided"

# Static FX table (units of currency per USD). Production replaces this with the treasury
# feed; it lives here because both engines and the simulator must convert identically.
USD_PER_UNIT: dict[str, float] = {
    "USD": 1.0,
    "EUR": 1.08,
    "GBP": 1.27,
    "JPY": 0.0067,
    "SGD": 0.74,
    "AUD": 0.66,
    "BRL": 0.20,
    "INR": 0.012,
    "CAD": 0.73,
    "MXN": 0.058,
}


@dataclass(frozen=True)
class ContractField:
    """One column of the contract: its Arrow type, whether it is required, and its default."""

    name: str
    arrow_type: pa.DataType
    required: bool
    default: Any
    description: str


def _f(
    name: str,
    arrow_type: pa.DataType,
    description: str,
    *,
    required: bool = False,
    default: Any = None,
) -> ContractField:
    return ContractField(name, arrow_type, required, default, description)


ATTEMPT_FIELDS: tuple[ContractField, ...] = (
    _f(
        "transaction_id",
        pa.string(),
        "Unique id of the payment attempt; retries reuse it.",
        required=True,
    ),
    _f("event_time", TIMESTAMP, "When the attempt reached checkout (UTC).", required=True),
    _f("region", pa.string(), "Serving region that received the attempt.", default=UNKNOWN),
    _f("shopper_id", pa.string(), "Marketplace account id; null for guest checkout."),
    _f("card_id", pa.string(), "Vault token of the card (never a card number).", required=True),
    _f(
        "card_bin",
        pa.string(),
        "First 6 digits of the card (issuer identification).",
        default=UNKNOWN,
    ),
    _f("card_country", pa.string(), "Issuing country, ISO 3166 alpha-2.", default=UNKNOWN_COUNTRY),
    _f("card_network", pa.string(), "visa | mastercard | amex | ...", default=UNKNOWN),
    _f("device_id", pa.string(), "Device fingerprint id; null when the SDK sent none."),
    _f(
        "ip_country", pa.string(), "Country of the client IP, ISO alpha-2.", default=UNKNOWN_COUNTRY
    ),
    _f(
        "email_domain",
        pa.string(),
        "Domain of the shopper e-mail (never the address).",
        default=UNKNOWN,
    ),
    _f("billing_country", pa.string(), "Billing address country.", default=UNKNOWN_COUNTRY),
    _f("shipping_country", pa.string(), "Shipping address country.", default=UNKNOWN_COUNTRY),
    _f("merchant_id", pa.string(), "Marketplace merchant id.", required=True),
    _f("merchant_category", pa.string(), "Merchant category code (MCC).", default=UNKNOWN),
    _f("merchant_country", pa.string(), "Merchant's country.", default=UNKNOWN_COUNTRY),
    _f("merchant_created_at", TIMESTAMP, "When the merchant onboarded (UTC); null if unknown."),
    _f("channel", pa.string(), "web | app | api", default=UNKNOWN),
    _f("amount", pa.float64(), "Amount in `currency` units (> 0).", required=True),
    _f("currency", pa.string(), "ISO 4217 code; see USD_PER_UNIT.", default="USD"),
    _f("amount_usd", pa.float64(), "Amount converted to USD; derived from amount when null."),
)

LABEL_KINDS = ("chargeback", "confirmed_fraud", "dispute_won")
FRAUD_LABEL_KINDS = ("chargeback", "confirmed_fraud")

LABEL_FIELDS: tuple[ContractField, ...] = (
    _f("transaction_id", pa.string(), "The attempt this label is about.", required=True),
    _f("label_time", TIMESTAMP, "When the label became known to us (UTC).", required=True),
    _f(
        "kind",
        pa.string(),
        "chargeback | confirmed_fraud (both mean fraud) | dispute_won (merchant won: not fraud).",
        default="chargeback",
    ),
    _f("reason", pa.string(), "Network reason code or free text.", default=UNKNOWN),
)

REQUIRED_ATTEMPT_COLUMNS = tuple(f.name for f in ATTEMPT_FIELDS if f.required)
REQUIRED_LABEL_COLUMNS = tuple(f.name for f in LABEL_FIELDS if f.required)


class ContractError(ValueError):
    """Input that does not satisfy the data contract; the message names the problem."""


def arrow_schema(fields: tuple[ContractField, ...]) -> pa.Schema:
    """The Parquet schema for a contract (required fields are non-nullable)."""
    return pa.schema(
        [
            pa.field(
                f.name,
                f.arrow_type,
                nullable=not f.required,
                metadata={"description": f.description},
            )
            for f in fields
        ]
    )


ATTEMPT_SCHEMA = arrow_schema(ATTEMPT_FIELDS)
LABEL_SCHEMA = arrow_schema(LABEL_FIELDS)

_PAN_CANDIDATE = re.compile(r"^\d{13,19}$")
MAX_TEXT = 128

# Characters no id, code or country may hold: C0/C1 controls, format characters (soft
# hyphen, Arabic letter mark, zero-width, bidi embeddings/overrides/isolates, word joiners,
# BOM, interlinear annotation), surrogates, private use and tag characters. Declared once
# as code point ranges, rendered for Python's re and for Arrow's RE2.
FORBIDDEN_RANGES: tuple[tuple[int, int], ...] = (
    (0x00, 0x1F),
    (0x7F, 0x9F),
    (0xAD, 0xAD),
    (0x061C, 0x061C),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0xD800, 0xDFFF),
    (0xE000, 0xF8FF),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0xE0000, 0xE007F),
    (0xF0000, 0x10FFFF),
)
_FORBIDDEN = re.compile(
    "[" + "".join(f"{chr(a)}-{chr(b)}" if a != b else chr(a) for a, b in FORBIDDEN_RANGES) + "]"
)
# A card number standing on its own (not inside a longer token such as a hex uuid): a
# plain run of 13-19 digits, or the groupings printed on cards and typed by people —
# fours (the last group 1-4 digits, or a fifth of 1-3), 4-6-5 and 4-6-4 — with one kind
# of separator. Ids that merely hold
# numbers between dashes (order-412-1795921234) are not card numbers.
_DIGIT_RUN = re.compile(
    r"(?<![A-Za-z0-9])(?:"
    r"\d{13,19}"
    r"|\d{4}([ -])\d{4}\1\d{4}\1(?:\d{4}\1\d{1,3}|\d{1,4})"
    r"|\d{4}([ -])\d{6}\2\d{4,5}"
    r")(?![A-Za-z0-9]|[ -]\d)"
)
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
# A cheap superset of the problems above, run by Arrow over whole columns before the
# exact Python checks look at the few rows it flags.
_ARROW_PREFILTER = (
    "["
    + "".join(
        f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in FORBIDDEN_RANGES if not 0xD800 <= a <= 0xDFFF
    )
    + "]|@|[0-9][0-9 -]{11,}[0-9]|^.{129,}"
)

# Timestamps outside this range are errors, not history: epoch zero, year 1, year 9999.
TIME_RANGE = (dt.datetime(1990, 1, 1, tzinfo=UTC), dt.datetime(2100, 1, 1, tzinfo=UTC))
MAX_AMOUNT = 10_000_000


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def text_problem(value: str) -> str | None:
    """Why a text field's value is not acceptable, or None. Same rules for API and tables."""
    if len(value) > MAX_TEXT:
        return f"longer than {MAX_TEXT} characters"
    bad = _FORBIDDEN.search(value)
    if bad:
        return (
            f"contains control or invisible formatting character U+{ord(bad.group()):04X}; "
            "send plain printable text"
        )
    for match in _DIGIT_RUN.finditer(value):
        digits = re.sub(r"[ -]", "", match.group())
        if 13 <= len(digits) <= 19 and digits[0] in "23456" and _luhn(digits):
            return "contains what looks like a card number; send the vault token instead"
    if _EMAIL.search(value):
        return "contains an e-mail address; send an opaque id (or only the domain)"
    return None


def looks_like_pan(value: str) -> bool:
    """True for 13-19 digit strings that pass the Luhn check, i.e. plausible card numbers."""
    digits = re.sub(r"[\s-]", "", value)
    return bool(_PAN_CANDIDATE.match(digits)) and _luhn(digits)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


def to_ms(value: Any) -> int | None:
    """UTC epoch milliseconds of a datetime / pandas Timestamp / int (None for missing)."""
    if value is None or value != value:  # None, NaN, NaT
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, pd.Timestamp):
        return int(value.value // 1_000_000)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ContractError("naive datetime: timestamps must be UTC-aware")
        return (value - _EPOCH) // dt.timedelta(milliseconds=1)
    raise ContractError(f"not a timestamp: {value!r}")


def to_usd(amount: float, currency: str) -> float:
    """Convert one amount with the static FX table (same arithmetic as tables use)."""
    return float(usd_amounts(np.array([amount]), np.array([currency]))[0])


# ---------------------------------------------------------------------------------------
# pydantic model for the HTTP API, generated from the same declarations
# ---------------------------------------------------------------------------------------

_PY_TYPES = {pa.string(): str, pa.float64(): float, TIMESTAMP: dt.datetime}
_ID = {"min_length": 1, "max_length": 128}


def _model_fields() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in ATTEMPT_FIELDS:
        py = _PY_TYPES[f.arrow_type]
        kwargs: dict[str, Any] = {"description": f.description}
        if py is str:
            kwargs["max_length"] = 128
            if f.required:
                kwargs.update(_ID)
        if f.required:
            out[f.name] = (py, pydantic.Field(..., **kwargs))
        else:
            out[f.name] = (py | None, pydantic.Field(f.default, **kwargs))
    return out


class _AttemptBase(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", str_strip_whitespace=True)

    @pydantic.field_validator("event_time", "merchant_created_at", check_fields=False)
    @classmethod
    def _utc(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(
                "timestamp must carry a timezone (UTC expected), e.g. 2026-11-28T12:00:00Z"
            )
        outside = f"timestamp outside {TIME_RANGE[0]:%Y-%m-%d} .. {TIME_RANGE[1]:%Y-%m-%d} (UTC)"
        try:
            value = value.astimezone(UTC)
        except OverflowError as exc:  # year 1 or 9999 shifted past what datetime holds
            raise ValueError(outside) from exc
        if not TIME_RANGE[0] <= value < TIME_RANGE[1]:
            raise ValueError(outside)
        return value

    @pydantic.field_validator("*", mode="after")
    @classmethod
    def _plain_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            problem = text_problem(value)
            if problem:
                raise ValueError(problem)
        return value

    @pydantic.field_validator("amount", "amount_usd", check_fields=False)
    @classmethod
    def _positive_finite(cls, value: float | None) -> float | None:
        if value is None:
            return None
        if not math.isfinite(value) or value <= 0:
            raise ValueError("amount must be a finite number greater than 0")
        if value > MAX_AMOUNT:
            raise ValueError(f"amount above {MAX_AMOUNT:,} is not accepted")
        return value

    @pydantic.field_validator("currency", check_fields=False)
    @classmethod
    def _known_currency(cls, value: str | None) -> str | None:
        if value is not None and value.upper() not in USD_PER_UNIT:
            known = ", ".join(sorted(USD_PER_UNIT))
            raise ValueError(f"unknown currency {value!r}; known: {known}")
        return value.upper() if value else value

    @pydantic.field_validator("card_id", check_fields=False)
    @classmethod
    def _not_a_pan(cls, value: str) -> str:
        if looks_like_pan(value):
            raise ValueError("card_id looks like a card number; send the vault token instead")
        return value

    def to_record(self) -> dict[str, Any]:
        """A plain dict with every contract field filled (defaults applied, amount_usd set)."""
        rec = self.model_dump()
        for f in ATTEMPT_FIELDS:
            if rec.get(f.name) is None and f.default is not None:
                rec[f.name] = f.default
        if rec["amount_usd"] is None:
            rec["amount_usd"] = to_usd(rec["amount"], rec["currency"])
        return rec


PaymentAttempt: type[_AttemptBase] = pydantic.create_model(  # type: ignore[call-overload]
    "PaymentAttempt", __base__=_AttemptBase, **_model_fields()
)
PaymentAttempt.__doc__ = "One payment attempt as sent by checkout (see feature_views.contract)."


# ---------------------------------------------------------------------------------------
# normalisation of tables (simulator output, external datasets)
# ---------------------------------------------------------------------------------------


def _parse_times(series: pd.Series, column: str) -> pd.Series:
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC").astype("datetime64[ms, UTC]")
    try:
        if pd.api.types.is_numeric_dtype(series):
            raise ContractError(
                f"column {column!r} holds numbers; expected timestamps (ISO 8601 strings or "
                "datetime values)"
            )
        parsed = pd.to_datetime(series, utc=True, errors="raise", format="mixed")
    except pd.errors.OutOfBoundsDatetime as exc:
        lo, hi = TIME_RANGE
        raise ContractError(
            f"column {column!r} has times outside {lo:%Y-%m-%d} .. {hi:%Y-%m-%d} (UTC)"
        ) from exc
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ContractError):
            raise
        bad = series[
            pd.to_datetime(series, utc=True, errors="coerce", format="mixed").isna()
            & series.notna()
        ]
        example = bad.iloc[0] if len(bad) else "?"
        raise ContractError(f"column {column!r} has unparseable times, e.g. {example!r}") from exc
    return parsed.astype("datetime64[ms, UTC]")


def _require(frame: pd.DataFrame, required: tuple[str, ...], what: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ContractError(f"{what} table is missing required column(s): {', '.join(missing)}")
    for c in required:
        if frame[c].isna().any():
            raise ContractError(f"{what} table has nulls in required column {c!r}")


def usd_amounts(amount: np.ndarray, currency: np.ndarray) -> np.ndarray:
    """USD value of amounts in their currencies, rounded to cents (the one conversion)."""
    fx = (
        np.array([USD_PER_UNIT[c] for c in currency], dtype=np.float64)
        if len(currency)
        else np.empty(0)
    )
    return np.round(np.asarray(amount, dtype=np.float64) * fx, 2)


def normalize_attempts(frame: pd.DataFrame | pa.Table) -> pd.DataFrame:
    """Return attempts in contract form: every column present, typed, defaults filled.

    Accepts a DataFrame or an Arrow table. Extra columns are dropped. Raises ContractError
    naming the first problem found.
    """
    return normalize_attempts_table(frame).to_pandas()


def normalize_attempts_table(
    frame: pd.DataFrame | pa.Table, dictionaries: bool = False
) -> pa.Table:
    """:func:`normalize_attempts`, returning an Arrow table (the offline engine's input).

    Parquet input stays in Arrow: casts, defaults and checks run in Arrow's C++ kernels,
    so strings never become Python objects here. DataFrames are coerced in pandas first;
    both then pass through the same checks. With `dictionaries`, string columns that come
    dictionary-encoded stay so (otherwise they become plain strings).
    """
    if isinstance(frame, pa.Table):
        table = _coerce_arrow(frame, dictionaries)
        if table is None:  # types Arrow cannot cast (e.g. free-form time strings)
            table = _from_pandas(_coerce_pandas(frame.to_pandas()))
    else:
        table = _from_pandas(_coerce_pandas(frame))
    return _check_values(table)


# Every field nullable: the checks below, not the conversion, report bad values.
_LOOSE_ATTEMPT_SCHEMA = pa.schema([pa.field(f.name, f.arrow_type) for f in ATTEMPT_FIELDS])


def _from_pandas(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame, schema=_LOOSE_ATTEMPT_SCHEMA, preserve_index=False)


def attempts_table(frame: pd.DataFrame) -> pa.Table:
    """Contract-form attempts (from :func:`normalize_attempts`) as Arrow, without re-checking."""
    return _from_pandas(frame[[f.name for f in ATTEMPT_FIELDS]])


def _coerce_arrow(table: pa.Table, dictionaries: bool = False) -> pa.Table | None:
    import pyarrow.compute as pc

    missing = [c for c in REQUIRED_ATTEMPT_COLUMNS if c not in table.schema.names]
    if missing:
        raise ContractError(f"attempts table is missing required column(s): {', '.join(missing)}")
    columns = {}
    for f in ATTEMPT_FIELDS:
        if f.name not in table.schema.names:
            arr = pa.nulls(table.num_rows, f.arrow_type)
        else:
            arr = table.column(f.name)
            if dictionaries and _is_dictionary_of(arr.type, f.arrow_type):
                pass  # kept encoded: the checks and the offline engine read dictionaries
            elif arr.type != f.arrow_type:
                try:
                    arr = pc.cast(arr, f.arrow_type, safe=f.arrow_type != TIMESTAMP)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    return None
        if f.required and arr.null_count:
            raise ContractError(f"attempts table has nulls in required column {f.name!r}")
        if f.default is not None and arr.null_count:
            arr = pc.fill_null(arr, pa.scalar(f.default, f.arrow_type))
        columns[f.name] = arr
    return pa.table(columns)


def _coerce_pandas(frame: pd.DataFrame) -> pd.DataFrame:
    _require(frame, REQUIRED_ATTEMPT_COLUMNS, "attempts")
    out = pd.DataFrame(index=frame.index)
    n = len(frame)
    for f in ATTEMPT_FIELDS:
        col = frame[f.name] if f.name in frame.columns else pd.Series([None] * n, index=frame.index)
        if f.arrow_type == TIMESTAMP:
            if col.isna().all():
                out[f.name] = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ms, UTC]")
            else:
                out[f.name] = _parse_times(col, f.name)
        elif f.arrow_type == pa.float64():
            out[f.name] = pd.to_numeric(col, errors="coerce").astype("float64")
        else:
            col = col.astype("object").where(col.notna(), None)
            if f.default is not None:
                col = col.where(col.notna(), f.default)
            if pd.api.types.infer_dtype(col, skipna=True) not in ("string", "empty"):
                col = col.map(lambda v: v if v is None else str(v))
            out[f.name] = col.astype("object")
    return out.reset_index(drop=True)


def _is_dictionary_of(arrow_type: pa.DataType, value_type: pa.DataType) -> bool:
    return pa.types.is_dictionary(arrow_type) and arrow_type.value_type == value_type


def _text_values(column: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray | None]:
    """The values of a string column to check, and how many rows hold each (None: one).

    A dictionary-encoded column is checked once per distinct value it uses: the rules
    depend on the value alone, and most columns repeat a handful of values.
    """
    arr = column.combine_chunks()  # dictionaries of several chunks are unified
    if not pa.types.is_dictionary(arr.type):
        return arr, None
    indices = arr.indices.drop_null().to_numpy()
    rows = np.bincount(indices, minlength=len(arr.dictionary))
    used = np.flatnonzero(rows)
    return arr.dictionary.take(used), rows[used]


def _check_text(table: pa.Table) -> None:
    """The API's text rules over whole columns: Arrow flags candidates, Python decides."""
    import pyarrow.compute as pc

    for f in ATTEMPT_FIELDS:
        if f.arrow_type != pa.string():
            continue
        column, _ = _text_values(table.column(f.name))
        flagged = pc.fill_null(pc.match_substring_regex(column, _ARROW_PREFILTER), False)
        if not pc.any(flagged).as_py():
            continue
        for value in column.filter(flagged).to_pylist():
            problem = text_problem(value)
            if problem:
                raise ContractError(f"attempts table column {f.name!r} has a value that {problem}")


def _check_times(table: pa.Table) -> None:
    import pyarrow.compute as pc

    lo, hi = TIME_RANGE
    for name in ("event_time", "merchant_created_at"):
        bounds = pc.min_max(table.column(name)).as_py()
        if bounds["min"] is not None and (bounds["min"] < lo or bounds["max"] >= hi):
            raise ContractError(
                f"attempts table has {name} outside {lo:%Y-%m-%d} .. {hi:%Y-%m-%d} (UTC)"
            )


# Python's \d (str patterns) is Unicode's Nd, so RE2's \p{Nd} preselects exactly the
# card_ids the full Luhn check must see.
_PAN_SHAPE = r"^[\p{Nd} \-]{13,23}$"


def _check_values(table: pa.Table) -> pa.Table:
    import pyarrow.compute as pc

    amount = table.column("amount").to_numpy()
    if not np.isfinite(amount).all() or (amount <= 0).any():
        raise ContractError("attempts table has amounts that are not finite numbers > 0")
    if (amount > MAX_AMOUNT).any():
        raise ContractError(f"attempts table has amounts above {MAX_AMOUNT:,}")
    _check_times(table)
    # upper-case each distinct currency with Python's str.upper (a handful of values)
    currency = table.column("currency").combine_chunks().dictionary_encode()
    codes = currency.dictionary.to_pylist()
    upper = [c if c is None else c.upper() for c in codes]
    used = np.unique(currency.indices.drop_null().to_numpy())  # all, unless read encoded
    unknown = {upper[i] for i in used.tolist()} - set(USD_PER_UNIT)
    if unknown:
        raise ContractError(f"attempts table has unknown currencies: {sorted(unknown)}")
    if upper != codes:
        currency = pa.DictionaryArray.from_arrays(currency.indices, pa.array(upper, pa.string()))
        table = table.set_column(
            table.schema.get_field_index("currency"), "currency", currency.cast(pa.string())
        )
    usd = table.column("amount_usd").to_numpy()
    if np.isnan(usd).any():
        names = np.array(upper, dtype=object)[currency.indices.to_numpy()]
        usd = np.where(np.isnan(usd), usd_amounts(amount, names), usd)
        table = table.set_column(
            table.schema.get_field_index("amount_usd"), "amount_usd", pa.array(usd, pa.float64())
        )
    if not np.isfinite(usd).all() or (usd <= 0).any():
        raise ContractError("attempts table has amount_usd values that are not finite and > 0")
    transaction_id = table.column("transaction_id")
    if pc.count_distinct(transaction_id).as_py() != table.num_rows:
        ids = transaction_id.to_pandas()
        dup = ids[ids.duplicated()].iloc[0]
        raise ContractError(f"attempts table has duplicate transaction_id {dup!r}")
    card, rows = _text_values(table.column("card_id"))
    shaped = pc.fill_null(pc.match_substring_regex(card, _PAN_SHAPE), False)
    pan = np.array([looks_like_pan(v) for v in card.filter(shaped).to_pylist()], dtype=bool)
    pans = int(
        pan.sum() if rows is None else rows[shaped.to_numpy(zero_copy_only=False)][pan].sum()
    )
    if pans:
        raise ContractError(
            f"attempts table has {pans} card_id value(s) that look like card numbers"
        )
    _check_text(table)
    return table


def normalize_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """Return labels in contract form. An external ``is_fraud`` column maps onto ``kind``.

    A labels row means the transaction was reported; ``is_fraud`` false maps to
    ``dispute_won`` (reported but found legitimate).
    """
    _require(frame, REQUIRED_LABEL_COLUMNS, "labels")
    out = pd.DataFrame(index=frame.index)
    out["transaction_id"] = frame["transaction_id"].astype(str)
    out["label_time"] = _parse_times(frame["label_time"], "label_time")
    if "kind" in frame.columns:
        kind = frame["kind"].fillna("chargeback").astype(str)
    elif "is_fraud" in frame.columns:
        kind = np.where(frame["is_fraud"].astype(bool), "chargeback", "dispute_won")
        kind = pd.Series(kind, index=frame.index)
    else:
        kind = pd.Series("chargeback", index=frame.index)
    bad = sorted(set(kind) - set(LABEL_KINDS))
    if bad:
        raise ContractError(f"labels table has unknown kind(s) {bad}; expected {LABEL_KINDS}")
    out["kind"] = kind.astype(str)
    out["reason"] = (
        frame["reason"].fillna(UNKNOWN).astype(str) if "reason" in frame.columns else UNKNOWN
    )
    return out.reset_index(drop=True)


def attempts_from_records(records: list[Mapping[str, Any]]) -> pd.DataFrame:
    """Normalise a list of dicts (e.g. validated API requests) into contract form."""
    return normalize_attempts(pd.DataFrame.from_records(records))
