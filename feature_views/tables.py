"""Reading attempt and label tables from Parquet, in contract form.

Accepts a single Parquet file or a folder (date-partitioned as the simulator writes, or any
folder of Parquet files). Folders of ``date=YYYY-MM-DD`` partitions stream one day at a time,
which is what lets the offline engine process tables larger than memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from feature_views.contract import (
    ATTEMPT_FIELDS,
    ContractError,
    normalize_attempts_table,
    normalize_labels,
)

_DATE_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


def _exists(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such table: {p}")
    return p


_ATTEMPT_COLUMNS = [f.name for f in ATTEMPT_FIELDS]


# String columns the offline engine reads as Arrow dictionaries (Parquet stores them so):
# the reader skips building the strings, contract checks look at each distinct value
# once, and the engine's integer codes come from the dictionary alone. Transaction ids
# are unique, so a dictionary would not save anything there.
DICTIONARY_COLUMNS = [
    f.name for f in ATTEMPT_FIELDS if f.arrow_type == pa.string() and f.name != "transaction_id"
]


def _read_table(
    path: Path, columns: list[str] | None = None, dictionaries: bool = False
) -> pa.Table:
    """The table at `path`; with `columns`, only those of them it has (others cost nothing).

    With `dictionaries`, the DICTIONARY_COLUMNS come back dictionary-encoded.
    """
    wanted = DICTIONARY_COLUMNS if dictionaries else []
    if path.is_dir():
        options = ds.ParquetReadOptions(dictionary_columns=set(wanted))
        dataset = ds.dataset(
            path,
            format=ds.ParquetFileFormat(read_options=options),
            partitioning="hive",
            exclude_invalid_files=True,
        )
        if columns is not None:
            return dataset.to_table(columns=[c for c in columns if c in dataset.schema.names])
        table = dataset.to_table()
        if "date" in table.schema.names:  # the partition column, not a contract field
            table = table.drop_columns(["date"])
        return table
    try:
        names = pq.read_schema(path).names
        present = names if columns is None else [c for c in columns if c in names]
        return pq.read_table(
            path, columns=present, read_dictionary=[c for c in wanted if c in present]
        )
    except Exception as exc:  # pyarrow raises several types for non-Parquet input
        raise ContractError(f"{path} is not a readable Parquet table: {exc}") from exc


def _attempts_table(path: Path, dictionaries: bool = False) -> pa.Table:
    """Contract-form attempts at `path` as Arrow, sorted by (event_time, transaction_id).

    With `dictionaries`, string columns other than transaction_id stay dictionary-encoded.
    """
    table = _read_table(path, _ATTEMPT_COLUMNS, dictionaries)
    return sort_attempts(normalize_attempts_table(table, dictionaries))


def sort_attempts(table: pa.Table) -> pa.Table:
    """`table` in (event_time, transaction_id) order (Arrow's stable sort; no copy if sorted)."""
    order = pc.sort_indices(
        table, sort_keys=[("event_time", "ascending"), ("transaction_id", "ascending")]
    ).to_numpy()
    if (order[1:] > order[:-1]).all():
        return table
    return table.take(order)


def split_days(table: pa.Table) -> Iterator[pa.Table]:
    """Zero-copy slices of a time-sorted attempts table, one per UTC day, oldest first."""
    day = table.column("event_time").cast(pa.int64()).to_numpy() // 86_400_000
    bounds = [0, *(np.flatnonzero(day[1:] != day[:-1]) + 1).tolist(), len(day)]
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        if end > start:
            yield table.slice(start, end - start)


def _read(path: Path) -> pd.DataFrame:
    return _read_table(path).to_pandas()


def read_attempts(path: str | Path) -> pd.DataFrame:
    """All attempts, normalised and sorted by (event_time, transaction_id)."""
    return _attempts_table(_exists(path)).to_pandas()


def read_labels(path: str | Path | None) -> pd.DataFrame:
    """All labels, normalised (an empty table when `path` is None)."""
    if path is None:
        return normalize_labels(
            pd.DataFrame(
                {
                    "transaction_id": pd.Series([], dtype=object),
                    "label_time": pd.Series([], dtype="datetime64[ms, UTC]"),
                }
            )
        )
    return normalize_labels(_read(_exists(path)))


def date_partitions(path: str | Path) -> list[Path]:
    """The ``date=...`` partition folders under `path`, oldest first ([] if not partitioned)."""
    p = _exists(path)
    if not p.is_dir():
        return []
    return sorted(d for d in p.iterdir() if d.is_dir() and _DATE_DIR.match(d.name))


def iter_attempt_partitions(path: str | Path) -> Iterator[pd.DataFrame]:
    """Attempts one time-ordered partition at a time (one UTC day for partitioned folders).

    A single file or an unpartitioned folder is read whole, sorted, and split by UTC day, so
    callers see the same stream either way.
    """
    for table in iter_attempt_tables(path):
        yield table.to_pandas()


def iter_attempt_tables(path: str | Path, dictionaries: bool = False) -> Iterator[pa.Table]:
    """:func:`iter_attempt_partitions` as Arrow tables (the offline engine reads these).

    With `dictionaries`, string columns other than transaction_id come dictionary-encoded
    (see DICTIONARY_COLUMNS); values and checks are the same either way.
    """
    parts = date_partitions(path)
    if parts:
        for part in parts:
            yield _attempts_table(part, dictionaries)
        return
    yield from split_days(_attempts_table(_exists(path), dictionaries))


def read_attempt_columns(
    path: str | Path, columns: list[str], transaction_ids: Iterable[str] | None = None
) -> pd.DataFrame:
    """Only some columns of every attempt (cheap: Parquet reads just those columns).

    With `transaction_ids`, only those attempts: the filter runs in Arrow, so the other
    rows never become Python objects (the offline engine needs the keys of labelled
    attempts only, a small fraction of the table).
    """
    p = _exists(path)
    try:
        if p.is_dir():
            dataset = ds.dataset(
                p, format="parquet", partitioning="hive", exclude_invalid_files=True
            )
            table = dataset.to_table(columns=[c for c in columns if c in dataset.schema.names])
        else:
            table = pq.read_table(p)
            table = table.select([c for c in columns if c in table.schema.names])
    except (pa.ArrowInvalid, OSError) as exc:
        raise ContractError(f"{p} is not a readable Parquet table: {exc}") from exc
    if transaction_ids is not None:
        wanted = pa.array(list(dict.fromkeys(transaction_ids)), pa.string())
        table = table.filter(pc.is_in(table.column("transaction_id"), value_set=wanted))
    return table.to_pandas()


def count_attempts(path: str | Path) -> int:
    """Number of attempts, from Parquet metadata (no data read)."""
    p = _exists(path)
    try:
        if p.is_dir():
            return ds.dataset(
                p, format="parquet", partitioning="hive", exclude_invalid_files=True
            ).count_rows()
        return pq.ParquetFile(p).metadata.num_rows
    except (pa.ArrowInvalid, OSError) as exc:
        raise ContractError(f"{p} is not a readable Parquet table: {exc}") from exc
