"""Snowflake warehouse: production. snowflake-connector-python, secrets from the environment.

Auth: key-pair (`SNOWFLAKE_PRIVATE_KEY_PATH`, optional `SNOWFLAKE_PRIVATE_KEY_PASSPHRASE`)
or password (`SNOWFLAKE_PASSWORD`). Bulk loads go through the connector's `write_pandas`,
which is PUT (Parquet to the table's temporary stage) + COPY INTO. Heavy imports
(the connector, dagster_snowflake: ~5 s) happen on first use, never at import.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import pyarrow as pa
from dagster import ConfigurableResource
from pydantic import PrivateAttr

from sync_engine.warehouse import Dialect, SchemaNames, quote_identifier


def _private_key_der(path: str, passphrase: str | None) -> bytes:
    from cryptography.hazmat.primitives import serialization

    with open(path, "rb") as fh:
        key = serialization.load_pem_private_key(
            fh.read(), password=passphrase.encode() if passphrase else None
        )
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class SnowflakeWarehouse(ConfigurableResource):
    """Snowflake as the warehouse. Bind fields with `dg.EnvVar("SNOWFLAKE_...")`."""

    account: str
    user: str
    database: str
    password: str | None = None
    private_key_path: str | None = None
    private_key_passphrase: str | None = None
    role: str | None = None
    warehouse: str | None = None
    raw_schema: str = "sfdc_raw"
    current_schema: str = "sfdc"
    history_schema: str = "sfdc_history"
    quarantine_schema: str = "sfdc_quarantine"
    meta_schema: str = "sfdc_meta"
    # Seconds; a hung request must fail the run, not stall it (the connector retries 5xx).
    network_timeout: int = 300

    _con: Any = PrivateAttr(default=None)

    @classmethod
    def from_env(cls) -> SnowflakeWarehouse:
        """Build from the SNOWFLAKE_* environment variables (DESIGN §8)."""
        env = os.environ
        return cls(
            account=env["SNOWFLAKE_ACCOUNT"],
            user=env["SNOWFLAKE_USER"],
            database=env["SNOWFLAKE_DATABASE"],
            password=env.get("SNOWFLAKE_PASSWORD"),
            private_key_path=env.get("SNOWFLAKE_PRIVATE_KEY_PATH") or None,
            private_key_passphrase=env.get("SNOWFLAKE_PRIVATE_KEY_PASSPHRASE"),
            role=env.get("SNOWFLAKE_ROLE") or None,
            warehouse=env.get("SNOWFLAKE_WAREHOUSE") or None,
        )

    @property
    def dialect(self) -> Dialect:
        """Always `snowflake`."""
        return "snowflake"

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

    def connect_args(self) -> dict[str, Any]:
        """Arguments for `snowflake.connector.connect` (secrets included: never log them)."""
        args: dict[str, Any] = {
            "account": self.account,
            "user": self.user,
            "database": self.database,
            "network_timeout": self.network_timeout,
            "session_parameters": {"QUERY_TAG": "sfdc-sync", "TIMEZONE": "UTC"},
        }
        if self.private_key_path:
            args["private_key"] = _private_key_der(
                self.private_key_path, self.private_key_passphrase
            )
        elif self.password:
            args["password"] = self.password
        else:
            raise ValueError("Snowflake needs SNOWFLAKE_PRIVATE_KEY_PATH or SNOWFLAKE_PASSWORD")
        if self.role:
            args["role"] = self.role
        if self.warehouse:
            args["warehouse"] = self.warehouse
        return args

    def dagster_resource(self) -> Any:
        """The same connection settings as dagster_snowflake's SnowflakeResource (for dbt)."""
        from dagster_snowflake import SnowflakeResource

        kwargs = {k: v for k, v in self.connect_args().items() if k != "session_parameters"}
        kwargs.pop("network_timeout", None)
        if "private_key" in kwargs:
            kwargs.pop("private_key")
            kwargs["private_key_path"] = self.private_key_path
            kwargs["private_key_password"] = self.private_key_passphrase
        return SnowflakeResource(**kwargs)

    @property
    def connection(self) -> Any:
        """The open connection; the meta schema is the session schema (temp tables go there)."""
        if self._con is None:
            import snowflake.connector

            con = snowflake.connector.connect(**self.connect_args())
            meta = quote_identifier(self.meta_schema, "snowflake")
            cur = con.cursor()
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {meta}")
            cur.execute(f"USE SCHEMA {meta}")
            self._con = con
        return self._con

    def execute(self, sql: str, params: list | tuple | None = None) -> int:
        """Run one statement; return the affected row count."""
        cur = self.connection.cursor()
        cur.execute(sql, params)
        return int(cur.rowcount) if cur.rowcount is not None else -1

    def query(self, sql: str, params: list | tuple | None = None) -> list[tuple]:
        """Run one query and return its rows."""
        cur = self.connection.cursor()
        cur.execute(sql, params)
        return [tuple(r) for r in cur.fetchall()]

    def query_arrow(self, sql: str) -> pa.Table:
        """Run one query and return an Arrow table with lower-case column names.

        Built from the DB-API rows (exact Decimals and NULLs, unlike a pandas round trip);
        meant for checks and tests, not for bulk reads.
        """
        cur = self.connection.cursor()
        cur.execute(sql)
        names = [d[0].lower() for d in cur.description]
        rows = cur.fetchall()
        return pa.table({n: pa.array([r[i] for r in rows]) for i, n in enumerate(names)})

    def load_temp_table(self, name: str, columns_ddl: str, data: pa.Table) -> None:
        """Create a temporary table and load `data` with write_pandas (PUT + COPY INTO)."""
        import pandas as pd
        from snowflake.connector import pandas_tools  # module attribute: fakesnow patches it

        q = quote_identifier(name, "snowflake")
        self.execute(f"CREATE OR REPLACE TEMPORARY TABLE {q} ({columns_ddl})")
        df = data.to_pandas(types_mapper=pd.ArrowDtype)
        df.columns = [c.upper() for c in df.columns]
        ok, *_ = pandas_tools.write_pandas(
            self.connection,
            df,
            name.upper(),
            quote_identifiers=True,
            auto_create_table=False,
            use_logical_type=True,
        )
        if not ok:
            raise RuntimeError(f"bulk load into temporary table {name} failed")

    def register_arrow(self, name: str, data: pa.Table) -> bool:
        """Snowflake cannot scan this process's memory: the caller uploads a temp table."""
        return False

    def unregister_arrow(self, name: str) -> None:
        """Nothing was registered."""

    def begin(self) -> None:
        """Open a transaction."""
        self.execute("BEGIN")

    def commit(self) -> None:
        """Commit."""
        self.execute("COMMIT")

    def rollback(self) -> None:
        """Roll back the open transaction (a no-op without one)."""
        with contextlib.suppress(Exception):
            self.execute("ROLLBACK")

    def ensure_schemas(self) -> None:
        """Create the layer schemas."""
        for schema in self.schema_names.all():
            self.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(schema, 'snowflake')}")

    def close(self) -> None:
        """Close the connection."""
        if self._con is not None:
            self._con.close()
            self._con = None

    def teardown_after_execution(self, context: Any) -> None:
        """Dagster hook: close the session when the step ends."""
        self.close()
