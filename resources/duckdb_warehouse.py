"""DuckDB warehouse: one local file, the default for `make demo` and the tests.

The layer schemas (sfdc_raw, sfdc, sfdc_history, sfdc_quarantine, sfdc_meta) are schemas
of that one file, so a batch's writes to several layers commit in one transaction.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import duckdb
import pyarrow as pa
import tenacity
from dagster import ConfigurableResource
from pydantic import PrivateAttr

from sync_engine.warehouse import Dialect, SchemaNames, quote_identifier

# DuckDB uses its ART index for an `IN (...)` filter only when fewer than
# max(index_scan_max_count, index_scan_percentage * rows) rows match; the defaults
# (2048, 0.1 %) send a 10K-id batch to a full scan. Point lookups stay index-driven up to
# this many ids (the engine switches to a hash join above its own, lower, threshold).
INDEX_SCAN_MAX_COUNT = 200_000
# A checkpoint rewrites the ART indexes whole: ~4 s for a 10M-row table plus its scd2,
# measured, against ~0.5 s for the rest of a 10K-change batch. DuckDB's default (16 MB of
# WAL) checkpoints after nearly every batch, making each batch cost O(table); at 1 GB a
# checkpoint comes every ~100+ batches of 10K changes and its cost is amortised.
DEFAULT_CHECKPOINT_THRESHOLD = "1GB"
# DuckDB lets one process at a time open a file for writing. Locally every Dagster run is a
# process (CDC applies, backfills, dbt), so a run waits for the file instead of failing;
# a CDC apply holds it for about a second, a dbt model for seconds to minutes.
DEFAULT_LOCK_TIMEOUT_S = 300.0
LOCK_RETRY_MAX_S = 0.25
# DuckDB's default memory limit is 80 % of RAM: a 1M-change batch grew the process to
# 5-8 GB. Capped, large folds and joins spill to a temp file next to the database instead;
# 3 GB keeps a 1M-row backfill batch in memory on the 24 GiB benchmark machine.
DEFAULT_MEMORY_LIMIT = "3GB"
DEFAULT_DUCKDB_PATH = ".demo/warehouse.duckdb"  # relative to the repo root, where Dagster runs


def _is_lock_conflict(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


def connect_waiting(
    path: str, timeout_s: float = DEFAULT_LOCK_TIMEOUT_S, *, read_only: bool = False
) -> duckdb.DuckDBPyConnection:
    """`duckdb.connect(path)`, retried with jittered backoff while another process holds it."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(_is_lock_conflict),
        # Short, jittered tries: dbt-duckdb lets go of the file between models for
        # moments only, and a waiter asleep for seconds missed them for a whole build.
        wait=tenacity.wait_random_exponential(multiplier=0.05, max=LOCK_RETRY_MAX_S),
        stop=tenacity.stop_after_delay(timeout_s),
        reraise=True,
    )
    return retrying(duckdb.connect, path, read_only=read_only)


class DuckDBWarehouse(ConfigurableResource):
    """A DuckDB file as the warehouse (`WAREHOUSE_DUCKDB_PATH`)."""

    path: str = DEFAULT_DUCKDB_PATH
    raw_schema: str = "sfdc_raw"
    current_schema: str = "sfdc"
    history_schema: str = "sfdc_history"
    quarantine_schema: str = "sfdc_quarantine"
    meta_schema: str = "sfdc_meta"
    memory_limit: str | None = DEFAULT_MEMORY_LIMIT
    checkpoint_threshold: str = DEFAULT_CHECKPOINT_THRESHOLD
    threads: int | None = None
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S

    _con: Any = PrivateAttr(default=None)

    @classmethod
    def from_env(cls) -> DuckDBWarehouse:
        """Build from `WAREHOUSE_DUCKDB_PATH` (default `DEFAULT_DUCKDB_PATH`)."""
        return cls(path=os.environ.get("WAREHOUSE_DUCKDB_PATH") or DEFAULT_DUCKDB_PATH)

    @property
    def dialect(self) -> Dialect:
        """Always `duckdb`."""
        return "duckdb"

    @property
    def schema_names(self) -> SchemaNames:
        """The configured layer schemas."""
        return SchemaNames(
            self.raw_schema,
            self.current_schema,
            self.history_schema,
            self.quarantine_schema,
            self.meta_schema,
        )

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The open connection (opened on first use)."""
        if self._con is None:
            if self.path != ":memory:":
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            con = connect_waiting(self.path, self.lock_timeout_s)
            con.execute(f"SET index_scan_max_count = {INDEX_SCAN_MAX_COUNT}")
            con.execute("SET TimeZone = 'UTC'")
            con.execute("SET checkpoint_threshold = ?", [self.checkpoint_threshold])
            if self.memory_limit:
                con.execute("SET memory_limit = ?", [self.memory_limit])
            if self.threads:
                con.execute(f"SET threads = {int(self.threads)}")
            self._con = con
        return self._con

    def execute(self, sql: str, params: list | tuple | None = None) -> int:
        """Run one statement; DML returns its affected row count."""
        rel = self.connection.execute(sql, params)
        try:
            row = rel.fetchone()
        except duckdb.InvalidInputException:
            return -1
        return int(row[0]) if row and isinstance(row[0], int) else -1

    def query(self, sql: str, params: list | tuple | None = None) -> list[tuple]:
        """Run one query and return its rows."""
        return self.connection.execute(sql, params).fetchall()

    def query_arrow(self, sql: str) -> pa.Table:
        """Run one query and return an Arrow table."""
        tbl = self.connection.sql(sql).to_arrow_table()
        return tbl.rename_columns([c.lower() for c in tbl.column_names])

    def load_temp_table(self, name: str, columns_ddl: str, data: pa.Table) -> None:
        """Create a temporary table and bulk-load an Arrow table into it (zero-copy scan)."""
        q = quote_identifier(name, "duckdb")
        con = self.connection
        con.execute(f"CREATE OR REPLACE TEMP TABLE {q} ({columns_ddl})")
        con.register("_sfdc_arrow_src", data)
        try:
            con.execute(f"INSERT INTO {q} BY NAME SELECT * FROM _sfdc_arrow_src")
        finally:
            con.unregister("_sfdc_arrow_src")

    def register_arrow(self, name: str, data: pa.Table) -> bool:
        """A view `name` over `data`'s own buffers (DuckDB scans Arrow in place)."""
        q = quote_identifier(name, "duckdb")
        con = self.connection
        con.unregister(name)
        # A temp table of that name (an earlier batch's load) would make the view clash.
        con.execute(f"DROP TABLE IF EXISTS temp.main.{q}")
        con.register(name, data)
        return True

    def unregister_arrow(self, name: str) -> None:
        """Drop the view, releasing DuckDB's reference to the Arrow table."""
        self.connection.unregister(name)

    def begin(self) -> None:
        """Open a transaction."""
        self.connection.execute("BEGIN TRANSACTION")

    def commit(self) -> None:
        """Commit."""
        self.connection.execute("COMMIT")

    def rollback(self) -> None:
        """Roll back if a transaction is open."""
        # No open transaction means nothing to undo.
        with contextlib.suppress(duckdb.TransactionException):
            self.connection.execute("ROLLBACK")

    def ensure_schemas(self) -> None:
        """Create the layer schemas."""
        for schema in self.schema_names.all():
            self.connection.execute(
                f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(schema, 'duckdb')}"
            )

    def close(self) -> None:
        """Close the connection."""
        if self._con is not None:
            self._con.close()
            self._con = None

    def teardown_after_execution(self, context: Any) -> None:
        """Dagster hook: release the file when the step ends."""
        self.close()
