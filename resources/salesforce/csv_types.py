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
    if dtype == pl.String():
        return col
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
    if dtype == pl.Date():
        return col.str.to_date("%Y-%m-%d")
    return col.cast(dtype)


def read_page(
    source: str | Path | IO[bytes] | bytes,
    schema: dict[str, pl.DataType],
    *,
    separator: str = ",",
) -> pl.DataFrame:
    """One CSV page (header row included) as a typed frame with exactly ``schema``."""
    raw = pl.read_csv(source, infer_schema=False, separator=separator, raise_if_empty=False)
    if raw.width == 0:
        return pl.DataFrame(schema=schema)
    missing = [c for c in schema if c not in raw.columns]
    if missing:
        raise ValueError(f"Bulk page lacks selected columns {missing}")
    raw = raw.select(list(schema)).with_columns(pl.all().replace("", None))
    return raw.with_columns(_cast(name, dtype) for name, dtype in schema.items())
