"""The one switch between local and production: `SFDC_ENV` (DESIGN §7, §8).

`local` (the default, also when unset or empty) or `prod`, in any case and with stray
spaces; anything else is refused with the variable named, never taken for local. Every
reader goes through `sfdc_env`: the resources (warehouse, Salesforce, landing store), the
Salesforce settings (emulator handshake only locally), and the dbt target, which is the
environment's value (dbt/profiles.yml names its outputs `local` and `prod`, and its own
default target lower-cases `SFDC_ENV` the same way).

Lives in `resources` so that the resources can read it without importing the Dagster
definitions (`sfdc_assets`, `sensors`); cheap to import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum

ENV_VAR = "SFDC_ENV"
DUCKDB_PATH_VAR = "WAREHOUSE_DUCKDB_PATH"


class Environment(StrEnum):
    """Where the platform runs; the value is also the dbt target's name."""

    LOCAL = "local"
    PROD = "prod"


def sfdc_env(environ: Mapping[str, str] | None = None) -> Environment:
    """The environment `SFDC_ENV` names (of `os.environ` by default).

    Raises:
        ValueError: for any value but local or prod, naming the variable and the value.
    """
    env = os.environ if environ is None else environ
    raw = env.get(ENV_VAR) or ""
    try:
        return Environment(raw.strip().lower() or Environment.LOCAL.value)
    except ValueError:
        raise ValueError(
            f"{ENV_VAR} must be local or prod (any case), got {raw!r}: set it to prod for "
            "Snowflake and a real org, or leave it unset for the local defaults"
        ) from None


def dbt_target(environ: Mapping[str, str] | None = None) -> str:
    """The dbt target of the environment: `local` or `prod` (dbt/profiles.yml)."""
    return sfdc_env(environ).value


def duckdb_path(environ: Mapping[str, str] | None = None) -> str:
    """The local warehouse file: `WAREHOUSE_DUCKDB_PATH`, else `DEFAULT_DUCKDB_PATH`.

    Relative paths are relative to where Dagster runs (the repo root).
    """
    from resources.duckdb_warehouse import DEFAULT_DUCKDB_PATH

    env = os.environ if environ is None else environ
    return env.get(DUCKDB_PATH_VAR) or DEFAULT_DUCKDB_PATH
