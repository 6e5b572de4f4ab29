"""Pick the hand-written SQL module for a warehouse's dialect."""

from __future__ import annotations

from types import ModuleType

from sync_engine.warehouse import Warehouse


def sql_for(warehouse: Warehouse) -> ModuleType:
    """`duckdb_sql` or `snowflake_sql` (both expose the same statement functions)."""
    if warehouse.dialect == "duckdb":
        from sync_engine import duckdb_sql

        return duckdb_sql
    if warehouse.dialect == "snowflake":
        from sync_engine import snowflake_sql

        return snowflake_sql
    raise ValueError(f"unsupported warehouse dialect {warehouse.dialect!r}")
