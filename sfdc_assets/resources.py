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


def _snowflake_warehouse() -> Any:
    # Production only: keeps the Snowflake stack out of local processes.
    from resources.snowflake_warehouse import SnowflakeWarehouse

    def optional(name: str) -> dg.EnvVar | None:
        # An unset variable stays None (the field's default), not an EnvVar that fails.
        return dg.EnvVar(name) if os.environ.get(name) else None

    return SnowflakeWarehouse(
        account=dg.EnvVar("SNOWFLAKE_ACCOUNT"),
        user=dg.EnvVar("SNOWFLAKE_USER"),
        database=dg.EnvVar("SNOWFLAKE_DATABASE"),
        password=optional("SNOWFLAKE_PASSWORD"),
        private_key_path=optional("SNOWFLAKE_PRIVATE_KEY_PATH"),
        private_key_passphrase=optional("SNOWFLAKE_PRIVATE_KEY_PASSPHRASE"),
        role=optional("SNOWFLAKE_ROLE"),
        warehouse=optional("SNOWFLAKE_WAREHOUSE"),
    )


def build_resources(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """`warehouse`, `salesforce` and `landing` for the environment `SFDC_ENV` names."""
    if sfdc_env(environ) is Environment.PROD:
        return {
            WAREHOUSE: _snowflake_warehouse(),
            SALESFORCE: SalesforceResource(env="prod"),
            LANDING: LandingResource(url=dg.EnvVar("LANDING_URL")),
        }
    from resources.duckdb_warehouse import DuckDBWarehouse

    return {
        WAREHOUSE: DuckDBWarehouse(path=duckdb_path(environ)),
        SALESFORCE: SalesforceResource(env="local"),
        LANDING: LandingResource(url=environ.get("LANDING_URL") or DEFAULT_LANDING_URL),
    }
