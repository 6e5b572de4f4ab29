"""The org's DuckDB tables: column types, DDL, and reading and writing rows by Id.

One table per object, named exactly as the object (``"User"``, ``"Event"``… are SQL
keywords: always :func:`quote`), one column per stored field; ``_meta`` (key/value JSON:
catalog, clock offset, Id counters, Avro schemas) and ``_events`` (the CDC log, see
:mod:`sfdc_emulator.event_log`). Functions here take a cursor and hold no state: locking and
transactions are the caller's (:class:`sfdc_emulator.store.OrgStore`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import pyarrow as pa

from sfdc_emulator.describe import FieldDef, SObjectDef
from sfdc_emulator.formulas import CrossObjectFormula
from sfdc_emulator.schema import SchemaChange

# Up to this many ids a lookup or delete binds parameters; above it, an Arrow-registered
# id table is cheaper.
SMALL_IN = 64
# Up to this many rows/events a write uses parameterised statements (about 1 ms each);
# above it, one Arrow-registered bulk statement is cheaper.
SMALL_WRITE = 8

_DUCKDB_TYPES = {
    "boolean": "BOOLEAN",
    "int": "BIGINT",
    "double": "DOUBLE",
    "percent": "DOUBLE",
    "currency": "DECIMAL(18,2)",
    "date": "DATE",
    "datetime": "TIMESTAMP",
}
_ARROW_TYPES = {
    "boolean": pa.bool_(),
    "int": pa.int64(),
    "double": pa.float64(),
    "percent": pa.float64(),
    "currency": pa.decimal128(18, 2),
    "date": pa.date32(),
    "datetime": pa.timestamp("us"),
}


def duckdb_type(f: FieldDef) -> str:
    """DuckDB column type of a stored field."""
    return _DUCKDB_TYPES.get(f.type, "VARCHAR")


def arrow_type(f: FieldDef) -> pa.DataType:
    """Arrow type of a stored field (as :meth:`OrgStore.truth` returns it)."""
    return _ARROW_TYPES.get(f.type, pa.string())


def arrow_schema(spec: SObjectDef) -> pa.Schema:
    """Arrow schema of an object's table: its stored fields, in describe order."""
    return pa.schema([(f.name, arrow_type(f)) for f in spec.stored_fields()])


def quote(name: str) -> str:
    """A DuckDB identifier for ``name``."""
    return '"' + name.replace('"', '""') + '"'


def create_system_tables(cur: duckdb.DuckDBPyConnection) -> None:
    """``_meta`` and ``_events``, when the org is new."""
    cur.execute("CREATE TABLE IF NOT EXISTS _meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    cur.execute(
        "CREATE TABLE IF NOT EXISTS _events (replay_id BIGINT PRIMARY KEY, entity VARCHAR, "
        "change_type VARCHAR, commit_ts BIGINT, transaction_key VARCHAR, "
        "sequence_number INTEGER, record_ids VARCHAR[], schema_id VARCHAR, "
        "event_uuid VARCHAR, payload BLOB)"
    )


def create_object_table(cur: duckdb.DuckDBPyConnection, spec: SObjectDef) -> None:
    """The object's table and its Id index, when missing."""
    cols = ", ".join(f"{quote(f.name)} {duckdb_type(f)}" for f in spec.stored_fields())
    cur.execute(f"CREATE TABLE IF NOT EXISTS {quote(spec.name)} ({cols})")
    cur.execute(f"CREATE INDEX IF NOT EXISTS {quote(spec.name + '_id')} ON {quote(spec.name)} (Id)")


def alter_object_table(cur: duckdb.DuckDBPyConnection, change: SchemaChange) -> None:
    """The DDL of a catalog change (a picklist change needs none)."""
    if change.kind not in ("add_field", "remove_field"):
        return
    table = quote(change.object)
    index = quote(change.object + "_id")
    # DuckDB refuses ALTER TABLE on a table that has an index
    cur.execute(f"DROP INDEX IF EXISTS {index}")
    if change.kind == "add_field":
        col = f"{quote(change.field.name)} {duckdb_type(change.field)}"
        cur.execute(f"ALTER TABLE {table} ADD COLUMN {col}")
    else:
        cur.execute(f"ALTER TABLE {table} DROP COLUMN {quote(change.field.name)}")
    cur.execute(f"CREATE INDEX {index} ON {table} (Id)")


def one(cur: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> tuple | None:
    """The first row of ``sql``, or None."""
    # fetchall, not fetchone: DuckDB 2 refuses register() on a cursor whose last
    # result was not read to the end
    rows = cur.execute(sql, params or []).fetchall()
    return rows[0] if rows else None


def read_meta(cur: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Every ``_meta`` entry."""
    return dict(cur.execute("SELECT key, value FROM _meta").fetchall())


def get_meta(cur: duckdb.DuckDBPyConnection, key: str) -> str | None:
    """One ``_meta`` value, or None."""
    row = one(cur, "SELECT value FROM _meta WHERE key = ?", [key])
    return None if row is None else row[0]


def put_meta(cur: duckdb.DuckDBPyConnection, items: Mapping[str, str]) -> None:
    """Insert or replace ``_meta`` entries in one statement."""
    params: list[str] = []
    for k, v in items.items():
        params += [k, v]
    values = ", ".join(["(?, ?)"] * len(items))
    cur.execute(f"INSERT OR REPLACE INTO _meta VALUES {values}", params)


def fetch_rows(
    cur: duckdb.DuckDBPyConnection, table: str, record_ids: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The rows of ``record_ids`` that exist, as ``{Id: {field: value}}``."""
    if not record_ids:
        return {}
    if len(record_ids) > SMALL_IN:
        return _fetch_many(cur, table, record_ids)
    if len(record_ids) == 1:
        result = cur.execute(f"SELECT * FROM {quote(table)} WHERE Id = ?", list(record_ids))
    else:
        marks = ", ".join("?" * len(record_ids))
        result = cur.execute(
            f"SELECT * FROM {quote(table)} WHERE Id IN ({marks})", list(record_ids)
        )
    names = [d[0] for d in result.description]
    out = {}
    for r in result.fetchall():
        row = dict(zip(names, r, strict=True))
        out[row["Id"]] = row
    return out


def _fetch_many(
    cur: duckdb.DuckDBPyConnection, table: str, record_ids: Sequence[str]
) -> dict[str, dict[str, Any]]:
    ids_table = pa.table({"Id": pa.array(list(record_ids), pa.string())})
    cur.register("__fetch_ids", ids_table)
    try:
        result = cur.execute(
            f"SELECT t.* FROM {quote(table)} t SEMI JOIN __fetch_ids s ON t.Id = s.Id"
        )
        rows = result.fetchall()
        names = [d[0] for d in result.description]
    finally:
        cur.unregister("__fetch_ids")
    return {r[0]: dict(zip(names, r, strict=True)) for r in rows}


def delete_ids(cur: duckdb.DuckDBPyConnection, table: str, record_ids: list[str]) -> None:
    """Physically remove the rows of ``record_ids``."""
    if len(record_ids) == 1:
        cur.execute(f"DELETE FROM {quote(table)} WHERE Id = ?", record_ids)
    elif len(record_ids) <= SMALL_IN:
        marks = ", ".join("?" * len(record_ids))
        cur.execute(f"DELETE FROM {quote(table)} WHERE Id IN ({marks})", record_ids)
    else:
        cur.register("__del_ids", pa.table({"Id": pa.array(record_ids, pa.string())}))
        cur.execute(f"DELETE FROM {quote(table)} WHERE Id IN (SELECT Id FROM __del_ids)")
        cur.unregister("__del_ids")


def insert_arrow(cur: duckdb.DuckDBPyConnection, table: str, rows: pa.Table) -> None:
    """Insert an Arrow table's rows, columns matched by name (missing ones null)."""
    cur.register("__rows", rows)
    cur.execute(f"INSERT INTO {quote(table)} BY NAME SELECT * FROM __rows")
    cur.unregister("__rows")


def write_rows(
    cur: duckdb.DuckDBPyConnection,
    spec: SObjectDef,
    dirty: Mapping[str, dict[str, Any] | None],
    loaded: set[str],
) -> None:
    """Write one object's working set: ``dirty`` maps Id to its new row (None = purged);
    ``loaded`` names the ids that existed before, so the rest are inserts."""
    updates = [r for i, r in dirty.items() if i in loaded and r is not None]
    inserts = [r for i, r in dirty.items() if i not in loaded and r is not None]
    purged = [i for i, r in dirty.items() if i in loaded and r is None]
    if purged:
        delete_ids(cur, spec.name, purged)
    if len(updates) <= SMALL_WRITE:
        _update_each(cur, spec, updates)
    else:
        # one delete + bulk insert beats many single-row UPDATEs
        delete_ids(cur, spec.name, [r["Id"] for r in updates])
        inserts = updates + inserts
    if len(inserts) <= SMALL_WRITE:
        _insert_each(cur, spec, inserts)
    else:
        fields = spec.stored_fields()
        rows = pa.table(
            [pa.array([r[f.name] for r in inserts], arrow_type(f)) for f in fields],
            schema=arrow_schema(spec),
        )
        insert_arrow(cur, spec.name, rows)


def _update_each(
    cur: duckdb.DuckDBPyConnection, spec: SObjectDef, rows: list[dict[str, Any]]
) -> None:
    names = [f.name for f in spec.stored_fields()]
    sets = ", ".join(f"{quote(n)} = ?" for n in names[1:])
    for r in rows:
        cur.execute(
            f"UPDATE {quote(spec.name)} SET {sets} WHERE Id = ?",
            [r[n] for n in names[1:]] + [r["Id"]],
        )


def _insert_each(
    cur: duckdb.DuckDBPyConnection, spec: SObjectDef, rows: list[dict[str, Any]]
) -> None:
    names = [f.name for f in spec.stored_fields()]
    cols = ", ".join(quote(n) for n in names)
    marks = ", ".join("?" * len(names))
    for r in rows:
        cur.execute(
            f"INSERT INTO {quote(spec.name)} ({cols}) VALUES ({marks})", [r[n] for n in names]
        )


def refresh_formula(
    cur: duckdb.DuckDBPyConnection,
    fx: CrossObjectFormula,
    key: str | None = None,
    ids: Sequence[str] = (),
) -> None:
    """Re-evaluate the cross-object formula ``fx`` for the child rows whose ``key`` column
    is in ``ids`` (``key`` None: every row); a missing parent reads as null. Rows already
    right are not rewritten, and nothing else of the row (no stamp) changes."""
    child, parent = quote(fx.object), quote(fx.parent)
    sql_type = _DUCKDB_TYPES.get(fx.field_type, "VARCHAR")
    value = f"CAST(p.{quote(fx.parent_field)} AS {sql_type})"
    where = ""
    if key is not None:
        if not ids:
            return
        cur.register("__formula_ids", pa.table({"Id": pa.array(list(ids), pa.string())}))
        where = f" WHERE c.{quote(key)} IN (SELECT Id FROM __formula_ids)"
    try:
        cur.execute(
            f"UPDATE {child} SET {quote(fx.field)} = v.value FROM ("
            f'SELECT c."Id" AS id, {value} AS value FROM {child} c '
            f'LEFT JOIN {parent} p ON p."Id" = c.{quote(fx.lookup)}{where}) v '
            f'WHERE {child}."Id" = v.id AND {child}.{quote(fx.field)} IS DISTINCT FROM v.value'
        )
    finally:
        if key is not None:
            cur.unregister("__formula_ids")
