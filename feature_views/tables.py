"""Reading attempt and label tables from Parquet, in contract form.

Accepts a single Parquet file or a folder (date-partitioned as the simulator writes, or any
folder of Parquet files). Folders of ``date=YYYY-MM-DD`` partitions stream one day at a time,
which is what lets the offline engine process tables larger than memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from feature_views.contract import (
    ContractError,
    normalize_attempts,
    normalize_labels,
)

_DATE_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


def _exists(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such table: {p}")
    return p


def _read_table(path: Path) -> pa.Table:
    if path.is_dir():
        dataset = ds.dataset(
            path, format="parquet", partitioning="hive", exclude_invalid_files=True
        )
        table = dataset.to_table()
        if "date" in table.schema.names:  # the partition column, not a contract field
            table = table.drop_columns(["date"])
        return table
    try:
        return pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for non-Parquet input
        raise ContractError(f"{path} is not a readable Parquet table: {exc}") from exc


def _read(path: Path) -> pd.DataFrame:
    return _read_table(path).to_pandas()


def read_attempts(path: str | Path) -> pd.DataFrame:
    """All attempts, normalised and sorted by (event_time, transaction_id)."""
    frame = normalize_attempts(_read_table(_exists(path)))
    return frame.sort_values(["event_time", "transaction_id"], kind="stable", ignore_index=True)


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
    parts = date_partitions(path)
    if parts:
        for part in parts:
            frame = normalize_attempts(_read_table(part))
            yield frame.sort_values(
                ["event_time", "transaction_id"], kind="stable", ignore_index=True
            )
        return
    frame = read_attempts(path)
    if frame.empty:
        return
    day = frame["event_time"].dt.floor("D")
    for _, group in frame.groupby(day, sort=True):
        yield group.reset_index(drop=True)


def read_attempt_columns(path: str | Path, columns: list[str]) -> pd.DataFrame:
    """Only some columns of every attempt (cheap: Parquet reads just those columns)."""
    p = _exists(path)
    try:
        if p.is_dir():
            dataset = ds.dataset(
                p, format="parquet", partitioning="hive", exclude_invalid_files=True
            )
            present = [c for c in columns if c in dataset.schema.names]
            return dataset.to_table(columns=present).to_pandas()
        table = pq.read_table(p)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ContractError(f"{p} is not a readable Parquet table: {exc}") from exc
    return table.select([c for c in columns if c in table.schema.names]).to_pandas()


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
