"""Where current disagrees with a listing of Salesforce: the reconciliation's set arithmetic.

A listing is what a two- or three-column Bulk `queryAll` over a SystemModstamp window
returned (`Id`, `SystemModstamp`, `IsDeleted`; or `Id` and the formula fields), loaded
part by part into the temp table `sfdc_tmp_listing`. The statements compare it with
`sfdc.<object>` in the warehouse, so memory is bounded by one landed part whatever the
object's size (the warehouse spills a large listing, DuckDB to its temp file):

- **stale**: listed records current lacks, holds with an older SystemModstamp, or holds
  with the same stamp but another IsDeleted. A current stamp *newer* than the listing's
  is a change the listing's read did not see yet, not drift.
- **missing**: live current records whose stamp lies in the window but that the listing
  lacks: purged (hard-deleted past the Recycle Bin, which no change event reports), or
  changed since the read (their stamp moved out of the window). Only a re-read by Id
  tells the two apart.
- **formula drift**: records whose formula values in the listing differ from current's.

Callers re-read stale and missing records by Id and apply what they find (snapshots, and
delete_scan changes for the records the re-read no longer finds) through `apply_batch`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sync_engine.dialect import SqlDialect, dialect_of
from sync_engine.spec import IS_DELETED_COLUMN, ObjectSpec

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

    from sync_engine.warehouse import Warehouse

LISTING = "sfdc_tmp_listing"
_PART = "sfdc_tmp_listing_part"
STAMP_COLUMN = "systemmodstamp"


@dataclass(frozen=True)
class Window:
    """A SystemModstamp window `[start, end)`; `start` None = the whole history."""

    start: dt.datetime | None
    end: dt.datetime


@dataclass(frozen=True)
class Drift:
    """Record ids where current and the listing disagree (see the module docstring)."""

    listed: int
    stale: tuple[str, ...]
    missing: tuple[str, ...]

    @property
    def differing(self) -> int:
        """How many records disagree."""
        return len(self.stale) + len(self.missing)


def listing_columns(spec: ObjectSpec, formula_fields: Sequence[str] = ()) -> list[str]:
    """The listing's columns: `id`, then the stamp and deletion flag, or formula columns."""
    by_name = {f.name: f for f in spec.fields}
    if formula_fields:
        return ["id", *(by_name[n].column for n in formula_fields)]
    return ["id", STAMP_COLUMN, IS_DELETED_COLUMN]


def _ddl(d: SqlDialect, spec: ObjectSpec, formula_fields: Sequence[str]) -> str:
    by_name = {f.name: f for f in spec.fields}
    cols = [f"{d.q('id')} VARCHAR(18) NOT NULL"]
    if formula_fields:
        cols += [
            f"{d.q(by_name[n].column)} {d.column_type(by_name[n].wtype)}" for n in formula_fields
        ]
    else:
        cols += [f"{d.q(STAMP_COLUMN)} {d.timestamp}", f"{d.q(IS_DELETED_COLUMN)} BOOLEAN"]
    return ", ".join(cols)


def load_listing(
    warehouse: Warehouse,
    spec: ObjectSpec,
    parts: Iterable[pa.Table],
    formula_fields: Sequence[str] = (),
) -> int:
    """(Re)create `sfdc_tmp_listing` from the listing's parts, one part in memory at a time.

    Each part holds the columns `listing_columns` names (lower case; others are dropped).
    Returns the number of listed rows.
    """
    d = dialect_of(warehouse)
    ddl = _ddl(d, spec, formula_fields)
    names = listing_columns(spec, formula_fields)
    warehouse.load_temp_table(LISTING, ddl, _empty(spec, formula_fields))
    rows = 0
    for part in parts:
        if part.num_rows == 0:
            continue
        warehouse.load_temp_table(_PART, ddl, part.select(names))
        cols = ", ".join(d.q(c) for c in names)
        warehouse.execute(f"INSERT INTO {d.q(LISTING)} ({cols}) SELECT {cols} FROM {d.q(_PART)}")
        rows += part.num_rows
    return rows


def _empty(spec: ObjectSpec, formula_fields: Sequence[str]) -> pa.Table:
    import pyarrow as pa

    by_name = {f.name: f for f in spec.fields}
    fields = [pa.field("id", pa.string())]
    if formula_fields:
        fields += [pa.field(by_name[n].column, by_name[n].wtype.arrow()) for n in formula_fields]
    else:
        fields += [
            pa.field(STAMP_COLUMN, pa.timestamp("us")),
            pa.field(IS_DELETED_COLUMN, pa.bool_()),
        ]
    return pa.schema(fields).empty_table()


def _in_window(d: SqlDialect, column: str, window: Window) -> str:
    upper = f"{column} < {d.timestamp_literal(window.end)}"
    if window.start is None:
        return upper
    return f"{column} >= {d.timestamp_literal(window.start)} AND {upper}"


def stale_sql(d: SqlDialect, spec: ObjectSpec, current_schema: str) -> str:
    """Ids of listed records that current lacks or holds older (or with another IsDeleted)."""
    q = d.q
    cur = d.table(current_schema, spec.table)
    stamp, deleted = q(STAMP_COLUMN), q(IS_DELETED_COLUMN)
    return (
        f"SELECT l.{q('id')} FROM {q(LISTING)} l LEFT JOIN {cur} c ON c.{q('id')} = l.{q('id')} "
        f"WHERE c.{q('id')} IS NULL OR c.{stamp} IS NULL OR c.{stamp} < l.{stamp} "
        f"OR (c.{stamp} = l.{stamp} AND c.{deleted} <> l.{deleted}) "
        f"ORDER BY 1"
    )


def missing_sql(d: SqlDialect, spec: ObjectSpec, current_schema: str, window: Window) -> str:
    """Ids of live current records stamped in the window that the listing lacks."""
    q = d.q
    cur = d.table(current_schema, spec.table)
    return (
        f"SELECT c.{q('id')} FROM {cur} c WHERE NOT c.{q(IS_DELETED_COLUMN)} "
        f"AND {_in_window(d, 'c.' + q(STAMP_COLUMN), window)} "
        f"AND NOT EXISTS (SELECT 1 FROM {q(LISTING)} l WHERE l.{q('id')} = c.{q('id')}) "
        f"ORDER BY 1"
    )


def formula_drift_sql(
    d: SqlDialect, spec: ObjectSpec, current_schema: str, formula_fields: Sequence[str]
) -> str:
    """The listed rows (id and formula columns) whose formula values current does not hold."""
    q = d.q
    cur = d.table(current_schema, spec.table)
    by_name = {f.name: f for f in spec.fields}
    cols = [q(by_name[n].column) for n in formula_fields]
    differs = " OR ".join(f"l.{c} IS DISTINCT FROM c.{c}" for c in cols)
    return (
        f"SELECT l.{q('id')}, {', '.join('l.' + c for c in cols)} FROM {q(LISTING)} l "
        f"JOIN {cur} c ON c.{q('id')} = l.{q('id')} WHERE {differs} ORDER BY 1"
    )


def find_drift(warehouse: Warehouse, spec: ObjectSpec, window: Window, listed: int) -> Drift:
    """Stale and missing ids of the loaded listing against current (see the module doc)."""
    d = dialect_of(warehouse)
    schema = warehouse.schema_names.current
    stale = tuple(r[0] for r in warehouse.query(stale_sql(d, spec, schema)))
    missing = tuple(r[0] for r in warehouse.query(missing_sql(d, spec, schema, window)))
    return Drift(listed=listed, stale=stale, missing=missing)


def find_formula_drift(
    warehouse: Warehouse, spec: ObjectSpec, formula_fields: Sequence[str]
) -> pa.Table:
    """Listed rows whose formula values differ from current's (`id` + formula columns)."""
    d = dialect_of(warehouse)
    sql = formula_drift_sql(d, spec, warehouse.schema_names.current, formula_fields)
    return warehouse.query_arrow(sql)


def live_ids(warehouse: Warehouse, spec: ObjectSpec, ids: Sequence[str]) -> list[str]:
    """Which of `ids` current holds as live records (chunked IN lists)."""
    d = dialect_of(warehouse)
    cur = d.table(warehouse.schema_names.current, spec.table)
    out: list[str] = []
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        out += [
            r[0]
            for r in warehouse.query(
                f"SELECT {d.q('id')} FROM {cur} WHERE {d.q('id')} IN ({d.id_list(chunk)}) "
                f"AND NOT {d.q(IS_DELETED_COLUMN)}"
            )
        ]
    return sorted(out)
