"""The environment switch: the same resource keys bound to local or production resources.

`SFDC_ENV=local` (default): DuckDB file (`WAREHOUSE_DUCKDB_PATH`), the emulator
(`SFDC_EMULATOR_INFO` handshake) and a landing folder (`LANDING_URL`).
`SFDC_ENV=prod`: Snowflake (`SNOWFLAKE_*`), the real org (`SFDC_*`, JWT bearer) and S3.
`resources.environment.sfdc_env` reads the switch (and refuses values it does not know).
Nothing connects at import or at definitions load: connections open on first use in a run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import dagster as dg

from resources.environment import Environment, duckdb_path, sfdc_env
from resources.landing import LandingStore
from resources.salesforce.resource import SalesforceResource

WAREHOUSE = "warehouse"
# The audited erase's own connection: in production the eraser's user, key and role, so
# the sync's credentials never write the audit trail (deploy/README.md).
ERASE_WAREHOUSE = "erase_warehouse"
SALESFORCE = "salesforce"
LANDING = "landing"
DEFAULT_LANDING_URL = ".demo/landing"


class LandingResource(dg.ConfigurableResource):
    """The landing store root: a local folder or an fsspec URL (`LANDING_URL`)."""

    url: str = DEFAULT_LANDING_URL

    def store(self) -> LandingStore:
        """A store on the root (cheap: no listing, the folder is created if missing)."""
        return LandingStore(self.url)


def warehouse_kind(environ: Mapping[str, str] = os.environ) -> str:
    """The warehouse engine's kind tag for the asset catalog."""
    return "snowflake" if sfdc_env(environ) is Environment.PROD else "duckdb"


def _snowflake_warehouse(credentials: str = "SNOWFLAKE", role_default: str | None = None) -> Any:
    # Production only: keeps the Snowflake stack out of local processes. `credentials` is
    # the prefix of the user, key and role variables; account, database and warehouse are
    # the location's.
    from resources.snowflake_warehouse import SnowflakeWarehouse

    def optional(name: str) -> dg.EnvVar | None:
        # An unset variable stays None (the field's default), not an EnvVar that fails.
        return dg.EnvVar(name) if os.environ.get(name) else None

    role_var = f"{credentials}_ROLE"
    return SnowflakeWarehouse(
        account=dg.EnvVar("SNOWFLAKE_ACCOUNT"),
        user=dg.EnvVar(f"{credentials}_USER"),
        database=dg.EnvVar("SNOWFLAKE_DATABASE"),
        password=optional(f"{credentials}_PASSWORD"),
        private_key_path=optional(f"{credentials}_PRIVATE_KEY_PATH"),
        private_key_passphrase=optional(f"{credentials}_PRIVATE_KEY_PASSPHRASE"),
        role=optional(role_var) or role_default,
        warehouse=optional("SNOWFLAKE_WAREHOUSE"),
    )


def build_resources(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """`warehouse`, `erase_warehouse`, `salesforce` and `landing` for the environment
    `SFDC_ENV` names."""
    if sfdc_env(environ) is Environment.PROD:
        return {
            WAREHOUSE: _snowflake_warehouse(),
            # SNOWFLAKE_ERASER_USER / _PRIVATE_KEY_PATH / _ROLE (default SFDC_ERASER):
            # resolved when an erase run starts, so the location loads without them.
            ERASE_WAREHOUSE: _snowflake_warehouse("SNOWFLAKE_ERASER", "SFDC_ERASER"),
            SALESFORCE: SalesforceResource(env="prod"),
            LANDING: LandingResource(url=dg.EnvVar("LANDING_URL")),
        }
    from resources.duckdb_warehouse import DuckDBWarehouse

    return {
        WAREHOUSE: DuckDBWarehouse(path=duckdb_path(environ)),
        ERASE_WAREHOUSE: DuckDBWarehouse(path=duckdb_path(environ)),
        SALESFORCE: SalesforceResource(env="local"),
        LANDING: LandingResource(url=environ.get("LANDING_URL") or DEFAULT_LANDING_URL),
    }
