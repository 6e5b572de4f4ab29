"""The warehouse port: the interface the sync engine writes through, and its shared helpers.

The engine owns it; the adapters implement it from outside, in `resources.duckdb_warehouse`
(a local file, the default) and `resources.snowflake_warehouse` (production), so the
engine imports nothing from `resources`. The engine only sees `Warehouse`: it sends SQL it
wrote for the warehouse's `dialect`, bulk-loads Arrow tables into temporary tables, and
brackets the writes of one batch in a transaction.

Every identifier that reaches SQL (schema, table, column) passes `validate_identifier`
first; identifiers are then quoted per dialect so reserved words and case cannot bite.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: the Salesforce errors import this module
    import pyarrow as pa

Dialect = Literal["duckdb", "snowflake"]

# Salesforce API names (Account, Amount, My_Field__c) and our own snake_case names fit
# this; anything else (quotes, dots, spaces, leading digits) is refused before it can be
# spliced into SQL.
IDENTIFIER_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# Salesforce record ids are 15 (case-sensitive) or 18 (case-safe) alphanumeric characters.
RECORD_ID_RE = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")
# The engine's own bookkeeping columns: fixed names (not from configuration), underscored
# so they can never collide with a Salesforce field.
ENGINE_COLUMNS = frozenset({"_version", "_source", "_synced_at", "_read_whole"})
# 255 is Snowflake's identifier limit; DuckDB has none worth hitting.
MAX_IDENTIFIER_LENGTH = 255


class InvalidIdentifierError(ValueError):
    """An identifier from configuration or describe is not safe to use in SQL."""


def validate_identifier(name: str) -> str:
    """Return `name` if it is a safe SQL identifier, else raise InvalidIdentifierError."""
    if not isinstance(name, str) or not IDENTIFIER_RE.match(name):
        raise InvalidIdentifierError(
            f"{name!r} is not a valid identifier: expected letters, digits and underscores, "
            "starting with a letter (Salesforce API names such as My_Field__c qualify)"
        )
    if len(name) > MAX_IDENTIFIER_LENGTH:
        raise InvalidIdentifierError(f"identifier of {len(name)} characters is too long")
    return name


def quote_identifier(name: str, dialect: Dialect) -> str:
    """Validate and quote one identifier for `dialect`.

    Names are case-folded the way each engine folds unquoted names (DuckDB keeps lower
    case, Snowflake upper case), so `amount` in a dbt model finds the column either way.
    """
    if name not in ENGINE_COLUMNS:
        validate_identifier(name)
    return f'"{name.upper()}"' if dialect == "snowflake" else f'"{name.lower()}"'


@dataclass(frozen=True)
class SchemaNames:
    """The schemas of the layers (DESIGN §3); configurable per deployment."""

    raw: str = "sfdc_raw"
    current: str = "sfdc"
    history: str = "sfdc_history"
    quarantine: str = "sfdc_quarantine"
    meta: str = "sfdc_meta"

    def __post_init__(self) -> None:
        for name in self.all():
            validate_identifier(name)

    def all(self) -> tuple[str, ...]:
        """Every schema, in creation order."""
        return (self.raw, self.current, self.history, self.quarantine, self.meta)


@runtime_checkable
class Warehouse(Protocol):
    """What the sync engine needs from a warehouse connection."""

    @property
    def dialect(self) -> Dialect:
        """`duckdb` or `snowflake`: picks the SQL module the engine uses."""
        ...

    @property
    def schema_names(self) -> SchemaNames:
        """The configured layer schemas."""
        ...

    def execute(self, sql: str, params: list | tuple | None = None) -> int:
        """Run one statement; return the affected row count (-1 when not reported)."""
        ...

    def query(self, sql: str, params: list | tuple | None = None) -> list[tuple]:
        """Run one query and return its rows."""
        ...

    def query_arrow(self, sql: str) -> pa.Table:
        """Run one query and return its rows as an Arrow table (lower-case column names)."""
        ...

    def load_temp_table(self, name: str, columns_ddl: str, data: pa.Table) -> None:
        """(Re)create temporary table `name` with `columns_ddl` and bulk-load `data` into it.

        Columns of `data` are matched to the table by name.
        """
        ...

    def register_arrow(self, name: str, data: pa.Table) -> bool:
        """Expose `data` to the statements that follow as a read-only relation `name`.

        In place, without loading a copy; False when the warehouse cannot read this
        process's memory (Snowflake), and the caller loads a temp table instead. The
        relation lasts until `unregister_arrow(name)`.
        """
        ...

    def unregister_arrow(self, name: str) -> None:
        """Drop the relation `register_arrow` made (nothing if there is none)."""
        ...

    def begin(self) -> None:
        """Open an explicit transaction."""
        ...

    def commit(self) -> None:
        """Commit the open transaction."""
        ...

    def rollback(self) -> None:
        """Roll back the open transaction, if any."""
        ...

    def ensure_schemas(self) -> None:
        """Create every layer schema that does not exist yet."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


def let_go(warehouse: Warehouse) -> None:
    """Before a wait on Salesforce: close a DuckDB connection, keep any other.

    A DuckDB file has one writer process, so a run that keeps its connection through a
    Bulk read or a batch of REST re-reads makes every other run's steps wait (issue 11);
    the warehouse reopens on its next statement. A Snowflake session locks nothing.
    """
    if warehouse.dialect == "duckdb":
        warehouse.close()


def quote(warehouse: Warehouse, name: str) -> str:
    """Quote `name` for `warehouse`'s dialect."""
    return quote_identifier(name, warehouse.dialect)


def qualified(warehouse: Warehouse, schema: str, table: str) -> str:
    """`"schema"."table"`, both validated and quoted."""
    return f"{quote(warehouse, schema)}.{quote(warehouse, table)}"
