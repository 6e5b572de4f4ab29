"""Schema registry and evolution: what fields each object has, per describe.

`sync_schema(warehouse, spec)` is called with every describe (DESIGN §5):
- creates the object's tables in every layer if they do not exist;
- records each field in `sfdc_meta.schema_registry` (first/last seen, removed);
- a new field: adds its column to raw, current and scd2 (filling existing rows is a
  column-only Bulk query, done by the caller);
- a removed field: keeps its column and values (no data loss), marks it removed;
- an incompatible type change (a different warehouse type): raises
  `IncompatibleTypeChangeError` naming object, field, old and new type, before anything
  is changed.
It returns the spec to apply batches with: the described fields plus the removed ones,
whose columns the merge must carry along untouched.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from sync_engine import in_flight
from sync_engine import statements as st
from sync_engine.dialect import dialect_of
from sync_engine.spec import FieldSpec, ObjectSpec
from sync_engine.warehouse import Warehouse

RUNBOOK = "docs/engine.md#incompatible-type-change"


class IncompatibleTypeChangeError(RuntimeError):
    """A field's type changed in a way the existing column cannot hold."""

    def __init__(self, object_name: str, field_name: str, old: str, new: str) -> None:
        self.object_name, self.field_name, self.old, self.new = object_name, field_name, old, new
        super().__init__(
            f"{object_name}.{field_name} changed type from {old} to {new}, which the existing "
            f"column cannot hold. Batches for {object_name} are not merged until it is resolved; "
            f"raw keeps capturing payloads. See {RUNBOOK}."
        )


class UnknownLookupFieldError(ValueError):
    """A configured lookup field is not a field of the object's describe."""

    def __init__(self, object_name: str, field_name: str) -> None:
        self.object_name, self.field_name = object_name, field_name
        super().__init__(
            f"{object_name}.{field_name} is listed in lookup_fields but is not a field of "
            f"{object_name}'s describe (or is not synced): remove it from lookup_fields in "
            "objects.yaml, or check the field's API name and the integration user's access"
        )


@dataclass
class SchemaChange:
    """What one describe changed."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    created_tables: bool = False


@dataclass
class SyncedSchema:
    """The result of `sync_schema`: the spec to merge with and what changed."""

    spec: ObjectSpec
    change: SchemaChange


def _registered(warehouse: Warehouse, spec: ObjectSpec) -> list[tuple]:
    d = dialect_of(warehouse)
    q = d.q
    return warehouse.query(
        f"SELECT {q('field_name')}, {q('sf_type')}, {q('warehouse_type')}, "
        f"{q('removed_at')} FROM {d.table(warehouse.schema_names.meta, 'schema_registry')} "
        f"WHERE {q('object_name')} = {d.string(spec.name)} ORDER BY {q('first_seen_at')}, "
        f"{q('field_name')}"
    )


def _adds_search_optimization(warehouse: Warehouse) -> bool:
    """Does this warehouse resource want search optimization on new tables? (Snowflake's
    `adds_search_optimization`; fakesnow cannot run the statement, so tests leave it off.)"""
    wants = getattr(warehouse, "adds_search_optimization", None)
    return bool(wants and wants())


def _ensure_raw_appends(warehouse: Warehouse, spec: ObjectSpec) -> None:
    """Create the raw-append ledger; seed it from a raw table that predates it (once)."""
    d = dialect_of(warehouse)
    q, s = d.q, warehouse.schema_names
    warehouse.execute(st.create_raw_appends(d, s))
    ledger = warehouse.query(
        f"SELECT COUNT(*) FROM {d.table(s.meta, st.RAW_APPENDS)} "
        f"WHERE {q('object_name')} = {d.string(spec.name)}"
    )[0][0]
    if ledger:
        return
    held = warehouse.query(
        f"SELECT COUNT(*) FROM (SELECT 1 FROM {d.table(s.raw, spec.table)} LIMIT 1) r"
    )[0][0]
    if held:
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        warehouse.execute(st.raw_appends_from_raw(d, spec, s, now))


def ensure_tables(warehouse: Warehouse, spec: ObjectSpec) -> None:
    """Create the schemas, meta tables and the object's layer tables if absent."""
    d = dialect_of(warehouse)
    s = warehouse.schema_names
    warehouse.ensure_schemas()
    warehouse.execute(st.create_schema_registry(d, s))
    warehouse.execute(st.create_load_log(d, s))
    in_flight.ensure(warehouse)
    warehouse.execute(st.create_raw(d, spec, s))
    _ensure_raw_appends(warehouse, spec)
    warehouse.execute(st.create_current(d, spec, s))
    # A current table from before the read-whole marker: add it (NULL = unknown).
    warehouse.execute(st.add_read_whole(d, spec, s))
    warehouse.execute(st.create_history(d, spec, s))
    if d.point_lookups:
        warehouse.execute(st.create_history_index(d, spec, s))
    warehouse.execute(st.create_quarantine(d, spec, s))


def sync_schema(
    warehouse: Warehouse, spec: ObjectSpec, *, now: dt.datetime | None = None
) -> SyncedSchema:
    """Record a describe, evolve the tables, and return the spec to merge with."""
    d = dialect_of(warehouse)
    q, ts = d.q, d.timestamp_literal
    s = warehouse.schema_names
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    change = SchemaChange()

    warehouse.ensure_schemas()
    warehouse.execute(st.create_schema_registry(d, s))
    registered = {r[0]: r for r in _registered(warehouse, spec)}
    change.created_tables = not registered

    # Refuse before changing anything: a type change must not half-apply.
    for f in spec.fields:
        old = registered.get(f.name)
        if old is not None and old[2] != f.wtype.label():
            raise IncompatibleTypeChangeError(spec.name, f.name, old[2], f.wtype.label())

    ensure_tables(warehouse, spec)
    if change.created_tables and _adds_search_optimization(warehouse):
        # Once, with the object's first describe (an ALTER, so not on every run).
        for statement in st.search_optimization(d, spec, s):
            warehouse.execute(statement)
    reg = d.table(s.meta, "schema_registry")
    described = {f.name for f in spec.fields}
    for f in spec.fields:
        old = registered.get(f.name)
        if old is None:
            for schema in (s.raw, s.current, s.history):
                warehouse.execute(
                    st.add_column(d, schema, spec.table, f.column, d.column_type(f.wtype))
                )
            values = [spec.name, f.name, f.column, f.sf_type.lower(), f.wtype.label()]
            warehouse.execute(
                f"INSERT INTO {reg} VALUES ({', '.join(d.string(v) for v in values)}, "
                f"{ts(now)}, {ts(now)}, NULL)"
            )
            if registered:
                change.added.append(f.name)
        elif old[3] is not None:
            change.restored.append(f.name)
    for name, row in registered.items():
        if name not in described and row[3] is None:
            change.removed.append(name)
    warehouse.execute(
        f"UPDATE {reg} SET {q('last_seen_at')} = {ts(now)}, {q('removed_at')} = NULL "
        f"WHERE {q('object_name')} = {d.string(spec.name)} AND {q('field_name')} IN "
        f"({', '.join(d.string(n) for n in sorted(described)) or 'NULL'})"
    )
    if change.removed:
        warehouse.execute(
            f"UPDATE {reg} SET {q('removed_at')} = {ts(now)} "
            f"WHERE {q('object_name')} = {d.string(spec.name)} AND {q('field_name')} IN "
            f"({', '.join(d.string(n) for n in change.removed)})"
        )
    # Removed fields stay in the merge spec: their columns are carried along, never set.
    kept = [FieldSpec(r[0], r[1]) for n, r in registered.items() if n not in described]
    kept = [FieldSpec(f.name, f.sf_type, _scale(registered[f.name][2])) for f in kept]
    return SyncedSchema(ObjectSpec(spec.name, (*spec.fields, *kept)), change)


def _scale(label: str) -> int | None:
    if label.startswith("decimal("):
        return int(label.rstrip(")").split(",")[1])
    return None


def ensure_lookups(warehouse: Warehouse, spec: ObjectSpec, fields: Sequence[str]) -> list[str]:
    """Make current's reference columns `fields` (Salesforce names) fast to look up by value:
    an ART index each on DuckDB; search optimization (EQUALITY) on Snowflake, where the
    warehouse resource adds it (`adds_search_optimization`). Returns their columns.

    dbt's incremental marts read a changed parent's children by these columns (an
    account's opportunities by `accountid`, its activities by `whatid`/`whoid`); without
    this every such read scans the child table (docs/engine.md, "Lookup columns")."""
    if not fields:
        return []
    by_name = {f.name.lower(): f for f in spec.fields}
    columns = []
    for name in fields:
        found = by_name.get(name.lower())
        if found is None:
            raise UnknownLookupFieldError(spec.name, name)
        columns.append(found.column)
    d = dialect_of(warehouse)
    s = warehouse.schema_names
    if d.point_lookups:
        for column in columns:
            warehouse.execute(st.create_lookup_index(d, spec, s, column))
    elif _adds_search_optimization(warehouse):
        missing = [c for c in columns if c not in _search_optimized(warehouse, spec)]
        if missing:
            warehouse.execute(st.search_optimization_lookups(d, spec, s, missing))
    return columns


def _search_optimized(warehouse: Warehouse, spec: ObjectSpec) -> set[str]:
    """The current table's columns with an EQUALITY search access path (Snowflake's
    DESCRIBE SEARCH OPTIMIZATION: one row per method and target)."""
    d = dialect_of(warehouse)
    table = d.table(warehouse.schema_names.current, spec.table)
    rows = warehouse.query(f"DESCRIBE SEARCH OPTIMIZATION ON {table}")
    # columns: expression_id, method, target, target_data_type, active
    return {
        str(r[2]).strip('"').lower() for r in rows if len(r) > 2 and str(r[1]).upper() == "EQUALITY"
    }
