"""Snowflake warehouse: production. snowflake-connector-python, secrets from the environment.

Auth: key-pair (`SNOWFLAKE_PRIVATE_KEY_PATH`, optional `SNOWFLAKE_PRIVATE_KEY_PASSPHRASE`)
or password (`SNOWFLAKE_PASSWORD`). Every session gets a statement and a lock timeout
(`SNOWFLAKE_STATEMENT_TIMEOUT_SECONDS`, `SNOWFLAKE_LOCK_TIMEOUT_SECONDS`), so a hung query
or a lock held by a killed run's open transaction fails the run instead of stalling it.
Schemas: created on first need when `SNOWFLAKE_CREATE_SCHEMAS` is true (the default, for
a development account); with `false` (production, least privilege: the loader has no
CREATE SCHEMA) they must exist — `python -m resources.snowflake_setup schemas` or
deploy/snowflake/setup.sql creates them once — and a missing one is an error naming it.
Bulk loads go through the connector's `write_pandas`,
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

CREATE_SCHEMAS_VAR = "SNOWFLAKE_CREATE_SCHEMAS"
# Enterprise Edition and serverless credits: an operator's choice (docs/engine.md).
SEARCH_OPTIMIZATION_VAR = "SNOWFLAKE_SEARCH_OPTIMIZATION"
STATEMENT_TIMEOUT_VAR = "SNOWFLAKE_STATEMENT_TIMEOUT_SECONDS"
LOCK_TIMEOUT_VAR = "SNOWFLAKE_LOCK_TIMEOUT_SECONDS"
# Snowflake's own defaults are 2 days (statements) and 12 hours (locks): far beyond any
# run of this platform, so a stuck run would hold its slot (and a CDC group) for hours.
# The longest statement is a whole-history merge of a 500M-row object; 1 h leaves margin.
DEFAULT_STATEMENT_TIMEOUT_SECONDS = 3600
# A run waiting on a lock longer than this is behind a transaction nobody will commit.
DEFAULT_LOCK_TIMEOUT_SECONDS = 600


class SchemaSetupError(RuntimeError):
    """Layer schemas are missing and this warehouse is not allowed to create them."""


def _env_bool(name: str, default: bool) -> bool:
    raw = (os.environ.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("true", "1", "yes"):
        return True
    if raw in ("false", "0", "no"):
        return False
    raise ValueError(f"{name} must be true or false, got {raw!r}")


def _env_seconds(name: str, default: int) -> int:
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number of seconds, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{name} must be 0 (no limit) or more seconds, got {value}")
    return value


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
    # None: from the environment variables above (else their defaults). Read when the
    # session opens, so the code location's definitions need not bind them.
    create_schemas: bool | None = None
    search_optimization: bool | None = None
    statement_timeout_seconds: int | None = None
    lock_timeout_seconds: int | None = None

    _con: Any = PrivateAttr(default=None)
    _schemas_checked: bool = PrivateAttr(default=False)

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

    def may_create_schemas(self) -> bool:
        """Whether missing schemas are created (`create_schemas`, else the environment)."""
        if self.create_schemas is not None:
            return self.create_schemas
        return _env_bool(CREATE_SCHEMAS_VAR, True)

    def adds_search_optimization(self) -> bool:
        """Whether new current/scd2 tables get search optimization on `id`
        (`search_optimization`, else `SNOWFLAKE_SEARCH_OPTIMIZATION`, default off)."""
        if self.search_optimization is not None:
            return self.search_optimization
        return _env_bool(SEARCH_OPTIMIZATION_VAR, False)

    def session_parameters(self) -> dict[str, Any]:
        """The parameters every session opens with (tags, time zone, timeouts)."""
        statement = self.statement_timeout_seconds
        if statement is None:
            statement = _env_seconds(STATEMENT_TIMEOUT_VAR, DEFAULT_STATEMENT_TIMEOUT_SECONDS)
        lock = self.lock_timeout_seconds
        if lock is None:
            lock = _env_seconds(LOCK_TIMEOUT_VAR, DEFAULT_LOCK_TIMEOUT_SECONDS)
        return {
            "QUERY_TAG": "sfdc-sync",
            "TIMEZONE": "UTC",
            "STATEMENT_TIMEOUT_IN_SECONDS": statement,
            "LOCK_TIMEOUT": lock,
        }

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
            "session_parameters": self.session_parameters(),
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
        """The open connection; the meta schema is the session schema (temp tables go there).

        One `USE SCHEMA` per session; the schemas are created only when it fails and this
        warehouse may create them (never a `CREATE SCHEMA` on every connect).
        """
        if self._con is None:
            import snowflake.connector

            con = snowflake.connector.connect(**self.connect_args())
            self._con = con
            try:
                con.cursor().execute(
                    f"USE SCHEMA {quote_identifier(self.meta_schema, 'snowflake')}"
                )
            except snowflake.connector.errors.ProgrammingError:
                # The meta schema is missing: create the layer schemas (or say why not).
                self.ensure_schemas()
                con.cursor().execute(
                    f"USE SCHEMA {quote_identifier(self.meta_schema, 'snowflake')}"
                )
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
        """Create the layer schemas if this warehouse may, else check once that they exist.

        Raises:
            SchemaSetupError: `SNOWFLAKE_CREATE_SCHEMAS=false` and a schema is missing.
        """
        if self._schemas_checked:
            return
        cur = self.connection.cursor()
        if self.may_create_schemas():
            for schema in self.schema_names.all():
                cur.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(schema, 'snowflake')}")
        else:
            cur.execute(
                "SELECT UPPER(schema_name) FROM information_schema.schemata "
                "WHERE catalog_name = UPPER(%s)",
                (self.database,),
            )
            present = {r[0] for r in cur.fetchall()}
            missing = [s for s in self.schema_names.all() if s.upper() not in present]
            if missing:
                raise SchemaSetupError(
                    f"Snowflake schemas {missing} do not exist in {self.database} (or this "
                    f"role cannot see them) and {CREATE_SCHEMAS_VAR}=false: create them once "
                    "with `python -m resources.snowflake_setup schemas` as the schema owner "
                    "role (deploy/snowflake/setup.sql does it for the default names), then "
                    "grant the loader role its usage (deploy/README.md)"
                )
        self._schemas_checked = True

    def close(self) -> None:
        """Close the connection."""
        if self._con is not None:
            self._con.close()
            self._con = None
        self._schemas_checked = False

    def teardown_after_execution(self, context: Any) -> None:
        """Dagster hook: close the session when the step ends."""
        self.close()
