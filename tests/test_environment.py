"""resources/environment.py: one rule for SFDC_ENV and the local DuckDB file, everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import jinja2
import pytest
import yaml

from resources.duckdb_warehouse import DEFAULT_DUCKDB_PATH, DuckDBWarehouse
from resources.environment import Environment, dbt_target, duckdb_path, sfdc_env
from resources.salesforce.settings import SalesforceSettings
from sfdc_assets import dbt_assets
from sfdc_assets.resources import build_resources, warehouse_kind

REPO = Path(__file__).resolve().parents[1]
PROFILES = REPO / "dbt" / "profiles.yml"
VALUES = [None, "", "local", "LOCAL", " Local ", "prod", "PROD", " prod\n"]


@pytest.mark.parametrize("value", VALUES)
def test_every_reader_of_sfdc_env_agrees_on_the_environment(value: str | None) -> None:
    environ = {} if value is None else {"SFDC_ENV": value}
    env = sfdc_env(environ)
    settings_env = {**environ, "SFDC_INSTANCE_URL": "https://example.my.salesforce.com"}

    assert env is (Environment.PROD if value and "prod" in value.lower() else Environment.LOCAL)
    assert dbt_target(environ) == dbt_assets.dbt_target(environ) == env.value
    assert SalesforceSettings.from_env(settings_env).env == env.value
    assert warehouse_kind(environ) == ("snowflake" if env is Environment.PROD else "duckdb")


@pytest.mark.parametrize("value", VALUES)
def test_profiles_yml_default_target_reads_sfdc_env_as_the_platform_does(
    value: str | None,
) -> None:
    """Regression: SFDC_ENV=PROD gave production resources but dbt target `PROD`, which
    profiles.yml does not have."""
    profile = yaml.safe_load(PROFILES.read_text())["sfdc_sync"]
    environ = {} if value is None else {"SFDC_ENV": value}

    def env_var(name: str, default: str | None = None) -> str:
        return environ.get(name, default) if default is not None else environ[name]

    target = jinja2.Environment().from_string(profile["target"]).render(env_var=env_var)

    assert target == dbt_target(environ)
    assert target in profile["outputs"]


@pytest.mark.parametrize("value", ["staging", "production", "1"])
def test_an_unknown_sfdc_env_is_refused_by_every_reader_with_the_variable_named(
    value: str,
) -> None:
    environ = {"SFDC_ENV": value, "SFDC_INSTANCE_URL": "https://example.my.salesforce.com"}
    for read in (sfdc_env, dbt_target, build_resources, SalesforceSettings.from_env):
        with pytest.raises(ValueError, match=f"SFDC_ENV must be local or prod.*{value!r}"):
            read(environ)


def test_the_local_warehouse_file_defaults_to_one_constant() -> None:
    assert duckdb_path({}) == duckdb_path({"WAREHOUSE_DUCKDB_PATH": ""}) == DEFAULT_DUCKDB_PATH
    assert duckdb_path({"WAREHOUSE_DUCKDB_PATH": "/w.duckdb"}) == "/w.duckdb"
    assert DuckDBWarehouse().path == DEFAULT_DUCKDB_PATH
    assert build_resources({})["warehouse"].path == DEFAULT_DUCKDB_PATH


def test_profiles_yml_falls_back_to_the_same_file_from_dbt_s_directory() -> None:
    local = yaml.safe_load(PROFILES.read_text())["sfdc_sync"]["outputs"]["local"]
    fallback = {}

    def env_var(name: str, default: str) -> str:
        fallback[name] = default
        return default

    path = jinja2.Environment().from_string(local["path"]).render(env_var=env_var)

    assert list(fallback) == ["WAREHOUSE_DUCKDB_PATH"]
    assert (REPO / "dbt" / path).resolve() == (REPO / DEFAULT_DUCKDB_PATH).resolve()


def _resolved(resource: dg.ConfigurableResource) -> Any:
    # The values a run would see: Dagster resolves the EnvVars when a run starts.
    with dg.build_resources({"r": resource}) as built:
        return built.r


def test_the_erase_job_connects_as_the_eraser_not_as_the_loader(monkeypatch) -> None:
    for name, value in {
        "SNOWFLAKE_ACCOUNT": "acme-xy123",
        "SNOWFLAKE_DATABASE": "SFDC",
        "SNOWFLAKE_USER": "SFDC_LOADER_SVC",
        "SNOWFLAKE_PRIVATE_KEY_PATH": "/secrets/loader.p8",
        "SNOWFLAKE_ROLE": "SFDC_LOADER",
        "SNOWFLAKE_ERASER_USER": "SFDC_ERASER_SVC",
        "SNOWFLAKE_ERASER_PRIVATE_KEY_PATH": "/secrets/eraser.p8",
    }.items():
        monkeypatch.setenv(name, value)
    resources = build_resources({"SFDC_ENV": "prod"})
    loader, eraser = (_resolved(resources[k]) for k in ("warehouse", "erase_warehouse"))
    assert (loader.user, loader.role, loader.private_key_path) == (
        "SFDC_LOADER_SVC",
        "SFDC_LOADER",
        "/secrets/loader.p8",
    )
    # The role deploy/snowflake/setup.sql grants the audit tables to, unless overridden.
    assert (eraser.user, eraser.role, eraser.private_key_path) == (
        "SFDC_ERASER_SVC",
        "SFDC_ERASER",
        "/secrets/eraser.p8",
    )
    assert eraser.account == loader.account and eraser.database == loader.database
    monkeypatch.setenv("SNOWFLAKE_ERASER_ROLE", "GDPR_ERASER")
    assert _resolved(build_resources({"SFDC_ENV": "prod"})["erase_warehouse"]).role == (
        "GDPR_ERASER"
    )
