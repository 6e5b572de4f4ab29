"""Typing Bulk 2.0 CSV pages from describe.

Bulk CSV cannot tell null from "" (reference §3.4), so empty is null for every type.
Datetimes (``2024-01-31T12:34:56.000Z`` or ``+0000``) become UTC ``Datetime[ms]``; dates
``Date``; currency ``Decimal`` with describe's scale so amounts stay exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import IO

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from resources.salesforce.rest import FieldInfo, ObjectDescribe

_INT_TYPES = frozenset({"int", "long"})
_FLOAT_TYPES = frozenset({"double", "percent"})
OBSERVED_AT = "_observed_at_ms"
JOB_ID = "_job_id"


def polars_type(f: FieldInfo) -> pl.DataType:
    """The polars dtype a field's CSV text is cast to."""
    t = f.type
    if t == "boolean":
        return pl.Boolean()
    if t in _INT_TYPES:
        return pl.Int64()
    if t in _FLOAT_TYPES:
        return pl.Float64()
    if t == "currency":
        scale = f.scale if f.scale else 2
        return pl.Decimal(38, scale)
    if t == "datetime":
        return pl.Datetime("ms", "UTC")
    if t == "date":
        return pl.Date()
    return pl.String()


def schema_for(describe: ObjectDescribe, fields: Sequence[str]) -> dict[str, pl.DataType]:
    """Column name -> dtype for the selected fields, in SELECT order."""
    return {name: polars_type(describe.field(name)) for name in fields}


def _cast(name: str, dtype: pl.DataType) -> pl.Expr:
    col = pl.col(name)
    if dtype == pl.Boolean():
        # Bulk writes lowercase true/false; a plain comparison is ~20x cheaper than a
        # lowercase + replace_strict. Anything else (other spellings) goes to _slow_cast.
        return pl.when(col == "true").then(True).when(col == "false").then(False)
    if dtype == pl.Date():
        return col.str.to_date("%Y-%m-%d")
    return col.cast(dtype)


def _slow_cast(name: str, dtype: pl.DataType) -> pl.Expr:
    """The forgiving casts, for pages the fast path rejects."""
    col = pl.col(name)
    if dtype == pl.Boolean():
        return col.str.to_lowercase().replace_strict(
            {"true": True, "false": False}, default=None, return_dtype=pl.Boolean
        )
    if isinstance(dtype, pl.Datetime):
        return (
            col.str.replace(r"Z$", "+0000")
            .str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%z", time_unit="ms")
            .dt.convert_time_zone("UTC")
        )
    return _cast(name, dtype)


def _datetime_ms_utc(column: pl.Series) -> pl.Series:
    """ISO 8601 text (``…T12:34:56.000Z`` or ``+0000``) -> UTC Datetime[ms] through Arrow's
    ISO parser: ~5x faster than polars' strptime (11 vs 53 ms for 5 columns x 100K rows)."""
    arr = column.to_arrow()
    return pl.Series(column.name, pc.cast(arr, pa.timestamp("ms", "UTC")))


def read_page(
    source: str | Path | IO[bytes] | bytes,
    schema: dict[str, pl.DataType],
    *,
    separator: str = ",",
) -> pl.DataFrame:
    """One CSV page (header row included) as a typed frame with exactly ``schema``.

    Parsed with every column as text and empty (quoted or not) read as null by the CSV
    reader itself, then cast column by column with vectorised expressions."""
    raw = pl.read_csv(
        source, infer_schema=False, separator=separator, raise_if_empty=False, null_values=""
    )
    if raw.width == 0:
        return pl.DataFrame(schema=schema)
    missing = [c for c in schema if c not in raw.columns]
    if missing:
        raise ValueError(f"Bulk page lacks selected columns {missing}")
    raw = raw.select(list(schema))
    try:
        typed = raw.with_columns(
            _cast(name, dtype).alias(name)
            for name, dtype in schema.items()
            if dtype != pl.String() and not isinstance(dtype, pl.Datetime)
        )
        stamps = [
            _datetime_ms_utc(raw[name])
            for name, dtype in schema.items()
            if isinstance(dtype, pl.Datetime)
        ]
        typed = typed.with_columns(stamps) if stamps else typed
        if any(typed[n].null_count() != raw[n].null_count() for n in _booleans(schema)):
            raise ValueError("boolean spelt otherwise than true/false")
        return typed
    except (pa.ArrowInvalid, pl.exceptions.PolarsError, ValueError):
        return raw.with_columns(_slow_cast(n, t).alias(n) for n, t in schema.items())


def _booleans(schema: dict[str, pl.DataType]) -> list[str]:
    return [name for name, dtype in schema.items() if dtype == pl.Boolean()]
