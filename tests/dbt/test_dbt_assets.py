"""sfdc_assets.dbt_assets: how Dagster sees the dbt project, and that loading it is cheap."""

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster_dbt import DbtProject

from sfdc_assets import dbt_assets
from tests.dbt.harness import OBJECTS, create_tables, engine, once, query

pytestmark = pytest.mark.xdist_group("dbt")


@pytest.fixture(scope="module")
def sfdc_dbt(tmp_path_factory) -> dg.AssetsDefinition:
    """The @dbt_assets definition, from a freshly parsed manifest (dbt/target untouched)."""
    return once("dbt_assets", lambda: _parse(tmp_path_factory))


def _parse(tmp_path_factory) -> dg.AssetsDefinition:
    target = tmp_path_factory.mktemp("dbt_parse") / "target"
    project = DbtProject(project_dir=dbt_assets.DBT_PROJECT_DIR, target_path=target)
    # No manifest yet: ensure_manifest parses the project once (what a fresh code location
    # does when no packaged manifest exists).
    assert not project.manifest_path.exists()
    manifest = dbt_assets.ensure_manifest(project)
    assert manifest == target / "manifest.json"
    assert manifest.exists()
    return dbt_assets.build_dbt_assets(manifest)


def test_importing_dbt_assets_neither_parses_dbt_nor_reads_a_manifest():
    code = (
        "import sys, sfdc_assets.dbt_assets as m, dagster as dg; "
        "parsed = [k for k in sys.modules if k.startswith(('dbt.parser', 'dbt.cli.main'))]; "
        "built = [v for v in vars(m).values() if isinstance(v, dg.AssetsDefinition)]; "
        "sys.exit(1 if parsed or built else 0)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(dbt_assets.__file__).parents[1],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_dbt_sources_are_keyed_like_the_engines_current_and_scd2_assets(sfdc_dbt):
    deps = {dep.asset_key for spec in sfdc_dbt.specs for dep in spec.deps}
    upstream = deps - set(sfdc_dbt.keys)
    current = {dg.AssetKey(["salesforce", "current", name.lower()]) for name in OBJECTS}
    assert current <= upstream
    assert dg.AssetKey(["salesforce", "scd2", "opportunity"]) in upstream
    assert {key.path[0] for key in upstream} == {"salesforce"}
    deps = {
        dep.asset_key
        for spec in sfdc_dbt.specs
        if spec.key == dg.AssetKey(["staging", "stg_salesforce__opportunity"])
        for dep in spec.deps
    }
    assert deps == {dg.AssetKey(["salesforce", "current", "opportunity"])}


def test_dbt_models_are_grouped_and_keyed_by_their_schema(sfdc_dbt):
    groups = {spec.key.to_user_string(): spec.group_name for spec in sfdc_dbt.specs}
    assert groups["staging/stg_salesforce__opportunity"] == "staging"
    assert groups["marts/fct_pipeline"] == "marts"
    assert groups["marts/commission_preview"] == "marts"
    assert groups["legacy/OPPORTUNITY"] == "legacy"
    assert set(groups.values()) == {"staging", "marts", "legacy"}


def test_dbt_tests_are_asset_checks_and_only_key_tests_block(sfdc_dbt):
    checks = {(spec.asset_key.to_user_string(), spec.name): spec for spec in sfdc_dbt.check_specs}
    assert len(checks) >= 40
    unique = checks[
        ("staging/stg_salesforce__opportunity", "unique_stg_salesforce__opportunity_opportunity_id")
    ]
    assert unique.blocking
    relationship = next(
        spec
        for (key, name), spec in checks.items()
        if key == "staging/stg_salesforce__opportunity"
        and name.startswith("relationships_late_tolerant_stg_salesforce__opportunity_account_id")
    )
    assert relationship.blocking
    picklist = next(
        spec
        for (key, name), spec in checks.items()
        if name.startswith("accepted_values_stg_salesforce__opportunity_stage_name")
    )
    assert not picklist.blocking


def test_a_relative_duckdb_path_is_made_absolute_for_dbt(tmp_path):
    env = {"WAREHOUSE_DUCKDB_PATH": ".demo/warehouse.duckdb"}
    assert dbt_assets.warehouse_env(env, tmp_path) == {
        "WAREHOUSE_DUCKDB_PATH": str(tmp_path / ".demo" / "warehouse.duckdb")
    }
    assert dbt_assets.warehouse_env({"WAREHOUSE_DUCKDB_PATH": "/abs/w.duckdb"}, tmp_path) == {}
    assert dbt_assets.warehouse_env({}, tmp_path) == {}


def test_the_dbt_target_follows_sfdc_env():
    assert dbt_assets.dbt_target({}) == "local"
    assert dbt_assets.dbt_target({"SFDC_ENV": "prod"}) == "prod"


def test_materializing_the_dbt_assets_records_their_checks(sfdc_dbt, tmp_path, monkeypatch):
    # Relative to where Dagster runs, as WAREHOUSE_DUCKDB_PATH is in .env.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WAREHOUSE_DUCKDB_PATH", "warehouse.duckdb")
    monkeypatch.setenv("SFDC_ENV", "local")
    with engine(tmp_path / "warehouse.duckdb") as wh:
        create_tables(wh)
    result = dg.materialize(
        [sfdc_dbt],
        resources={"dbt": dbt_assets.dbt_resource()},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert result.success
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert materialized == set(sfdc_dbt.keys)
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == len(list(sfdc_dbt.check_specs))
    assert all(e.passed for e in evaluations)
    assert query(tmp_path / "warehouse.duckdb", "select count(*) from marts.fct_pipeline") == [(0,)]
