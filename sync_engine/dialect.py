"""What differs between the warehouses' SQL, as data: one `SqlDialect` per warehouse.

`sync_engine.statements` writes each correctness statement once and asks the dialect for
the few things DuckDB and Snowflake spell differently (docs/engine.md, "SQL per
dialect"): column types, the temp-table keyword, array membership, the hash function,
conditional counts, `IGNORE NULLS` placement, null ordering, and whether the engine can
count on indexes (DuckDB's ART) and on reading the batch's Arrow buffers in place.
The literal helpers (string, timestamp, date, record-id list) live here too, so every
value spliced into SQL is validated or escaped in one place.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sync_engine.types import WarehouseType
from sync_engine.warehouse import (
    Dialect,
    Warehouse,
    quote_identifier,
    validate_identifier,
)


@dataclass(frozen=True)
class SqlDialect:
    """One warehouse's spelling of the engine's SQL.

    `{}` in the `*_sql` templates is the argument (an expression or a literal's text).
    """

    name: Dialect  # picks identifier case folding and the field column types
    timestamp: str  # naive UTC timestamp column type
    bigint: str  # 64-bit integer column type
    json: str  # semi-structured column type (raw and quarantine payloads)
    text_array: str  # raw.set_fields
    temp: str  # CREATE OR REPLACE <temp> TABLE
    hash_fn: str  # 64-bit hash of a row of values: what makes an scd2 version
    count_if_sql: str
    last_value_sql: str  # last non-null value; the window's OVER follows
    timestamp_literal_sql: str
    array_contains_sql: str  # `{array}` holds the name `{item}`
    try_parse_json_sql: str  # JSON text -> the json type; NULL when it does not parse
    param: str  # the DB-API placeholder of the driver
    # DESC puts NULLs last without saying so (DuckDB); Snowflake sorts them first.
    desc_nulls_last: bool
    # Single-quoted literals treat a backslash as an escape (Snowflake).
    backslash_escapes: bool
    # Indexed point lookups (DuckDB's ART): current's PRIMARY KEY and an index on scd2.id
    # answer `id IN ('...')` lists, so apply inlines touched ids and may close scd2 rows
    # through the index. Without (Snowflake), statements join the touched-id temp table.
    point_lookups: bool
    # A local file whose WAL is checkpointed after big writes (DuckDB).
    checkpoints: bool
    # The batch is uploaded flat (Snowflake's PUT + COPY): set_fields and payload as JSON
    # text, parsed into raw, with one `<column>__set` flag per state column computed
    # before the upload. Otherwise (DuckDB) the stage is the batch's Arrow buffers and
    # the flags are computed from set_fields in SQL.
    flat_stage: bool
    # Appended to raw's CREATE TABLE: Snowflake clusters raw by change_date, the column
    # every raw read prunes by (`{}` is the quoted column). DuckDB: nothing (zone maps).
    raw_cluster_sql: str = ""
    # What gives current/scd2 point lookups by id without an index (`{table}`, `{column}`);
    # None where an index does (DuckDB). docs/engine.md, "Snowflake physical design".
    search_optimization_sql: str | None = None

    def q(self, name: str) -> str:
        """Validate and quote one identifier (case-folded the way this engine folds)."""
        return quote_identifier(name, self.name)

    def table(self, schema: str, table: str) -> str:
        """`"schema"."table"`, both validated and quoted."""
        return f"{self.q(schema)}.{self.q(table)}"

    def column_type(self, wtype: WarehouseType) -> str:
        """The DDL type of a Salesforce field's column."""
        return wtype.ddl(self.name)

    def count_if(self, condition: str) -> str:
        """How many rows satisfy `condition` (an aggregate)."""
        return self.count_if_sql.format(condition)

    def last_value(self, expr: str) -> str:
        """`LAST_VALUE` of `expr` skipping NULLs, up to where the window's OVER goes."""
        return self.last_value_sql.format(expr)

    def hash(self, columns: str) -> str:
        """The hash of a comma-separated list of expressions."""
        return f"{self.hash_fn}({columns})"

    def desc(self) -> str:
        """A descending sort key with NULLs last."""
        return "DESC" if self.desc_nulls_last else "DESC NULLS LAST"

    def array_contains(self, array: str, item: str) -> str:
        """Does the text array `array` (raw.set_fields) hold the field name `item`?"""
        return self.array_contains_sql.format(array=array, item=validate_identifier(item))

    def try_parse_json(self, expr: str) -> str:
        """`expr` (JSON text) as the json type, NULL where it is not valid JSON."""
        return self.try_parse_json_sql.format(expr)

    def string(self, value: str) -> str:
        """A string literal: quotes doubled, and backslashes where they escape."""
        if not isinstance(value, str):
            raise TypeError(f"a string literal needs a str, not {type(value).__name__}")
        if "\x00" in value:
            raise ValueError("a string literal cannot hold a NUL character")
        if self.backslash_escapes:
            value = value.replace("\\", "\\\\")
        return "'" + value.replace("'", "''") + "'"

    def timestamp_literal(self, value: dt.datetime) -> str:
        """A timestamp literal in naive UTC (an aware value is converted to UTC first)."""
        if not isinstance(value, dt.datetime):
            raise TypeError(f"a timestamp literal needs a datetime, not {type(value).__name__}")
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return self.timestamp_literal_sql.format(value.isoformat(sep=" "))

    def date_literal(self, value: dt.date) -> str:
        """A date literal."""
        if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
            raise TypeError(f"a date literal needs a date, not {type(value).__name__}")
        return f"DATE '{value.isoformat()}'"

    def id_list(self, ids: Sequence[str]) -> str:
        """The inside of an `IN (...)` list of Salesforce record ids, each validated.

        On DuckDB `id IN ('a', 'b', ...)` is answered from the ART index (current's
        PRIMARY KEY, the index on scd2.id): its cost is per id, not per table row.
        """
        if not ids:
            return ""
        # What RECORD_ID_RE checks, over the whole list at once: ~3x faster than a match per
        # id (20K ids, the inlining limit: 3 ms instead of 6 ms).
        chars = "".join(ids)
        if not (chars.isascii() and chars.isalnum()) or not set(map(len, ids)) <= {15, 18}:
            # Not the value itself: ids of a PII-bearing object are personal data.
            raise ValueError("a record id must be 15 or 18 letters and digits")
        return "'" + "', '".join(ids) + "'"


DUCKDB = SqlDialect(
    name="duckdb",
    timestamp="TIMESTAMP",
    bigint="BIGINT",
    json="JSON",
    text_array="VARCHAR[]",
    temp="TEMP",
    hash_fn="hash",
    count_if_sql="COUNT(*) FILTER (WHERE {})",
    last_value_sql="LAST_VALUE({} IGNORE NULLS)",
    timestamp_literal_sql="TIMESTAMP '{}'",
    array_contains_sql="list_contains({array}, '{item}')",
    try_parse_json_sql="TRY_CAST({} AS JSON)",
    param="?",
    desc_nulls_last=True,
    backslash_escapes=False,
    point_lookups=True,
    checkpoints=True,
    flat_stage=False,
)
SNOWFLAKE = SqlDialect(
    name="snowflake",
    timestamp="TIMESTAMP_NTZ",
    bigint="NUMBER(18,0)",
    json="VARIANT",
    text_array="ARRAY",
    temp="TEMPORARY",
    hash_fn="HASH",
    count_if_sql="COUNT_IF({})",
    last_value_sql="LAST_VALUE({}) IGNORE NULLS",
    timestamp_literal_sql="'{}'::TIMESTAMP_NTZ",
    # ARRAY_CONTAINS does not run on fakesnow; the array's JSON text holds `"name"`
    # exactly when the array holds the name (field names are validated identifiers).
    array_contains_sql="CONTAINS(TO_VARCHAR({array}), '\"{item}\"')",
    try_parse_json_sql="TRY_PARSE_JSON({})",
    param="%s",  # the connector's default paramstyle (pyformat)
    desc_nulls_last=False,
    backslash_escapes=True,
    point_lookups=False,
    checkpoints=False,
    flat_stage=True,
    raw_cluster_sql=" CLUSTER BY ({})",
    search_optimization_sql="ALTER TABLE {table} ADD SEARCH OPTIMIZATION ON EQUALITY({column})",
)
DIALECTS: dict[str, SqlDialect] = {d.name: d for d in (DUCKDB, SNOWFLAKE)}


def dialect_of(warehouse: Warehouse) -> SqlDialect:
    """The `SqlDialect` of `warehouse` (by its `dialect` name)."""
    try:
        return DIALECTS[warehouse.dialect]
    except KeyError:
        raise ValueError(f"unsupported warehouse dialect {warehouse.dialect!r}") from None
