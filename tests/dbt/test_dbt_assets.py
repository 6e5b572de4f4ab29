"""sfdc_assets.dbt_assets: how Dagster sees the dbt project, and that loading it is cheap."""

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster_dbt import DbtProject

from resources.duckdb_warehouse import DEFAULT_DUCKDB_PATH
from sfdc_assets import dbt_assets
from sfdc_assets.freshness import freshness_minutes
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


def test_loaders_racing_on_a_fresh_checkout_parse_once_and_read_a_whole_manifest(
    tmp_path, monkeypatch
):
    # Regression (CI on a fresh clone): two pytest workers parsed into one manifest.json at
    # once and a third read it half written. The lock is per open file, so threads race
    # exactly as processes do. The target path is relative to the project, as shipped, and
    # the loaders run from another directory, as Dagster's processes do.
    relative = Path(f"target-race-{os.getpid()}-{tmp_path.name}")
    project = DbtProject(project_dir=dbt_assets.DBT_PROJECT_DIR, target_path=relative)
    target = project.manifest_path.parent
    monkeypatch.chdir(tmp_path)
    parses = []
    real = dbt_assets.dbt_resource
    monkeypatch.setattr(dbt_assets, "dbt_resource", lambda: parses.append(1) or real())
    start = threading.Barrier(3)
    results: list[object] = []

    def load() -> None:
        start.wait()
        try:
            results.append(json.loads(dbt_assets.ensure_manifest(project).read_bytes()))
        except Exception as exc:  # the assertion below names it
            results.append(exc)

    threads = [threading.Thread(target=load) for _ in range(3)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        assert [type(r) for r in results] == [dict] * 3, results
        assert len(parses) == 1
        assert sorted(p.name for p in target.iterdir()) == [".parse.lock", "manifest.json"]
        assert not any(tmp_path.iterdir())  # nothing written relative to the cwd
    finally:
        shutil.rmtree(target, ignore_errors=True)


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


def test_the_dbt_target_is_a_profiles_yml_output_whatever_the_case_of_sfdc_env():
    """Regression: SFDC_ENV=PROD gave the dbt target `PROD`, which profiles.yml lacks."""
    assert dbt_assets.dbt_target({"SFDC_ENV": "PROD"}) == "prod"
    assert dbt_assets.dbt_target({"SFDC_ENV": " Local "}) == "local"
    with pytest.raises(ValueError, match="SFDC_ENV must be local or prod"):
        dbt_assets.dbt_target({"SFDC_ENV": "staging"})


def test_dbt_by_hand_picks_the_profile_target_sfdc_env_names_in_any_case(tmp_path):
    env = {
        **os.environ,
        "SFDC_ENV": " LOCAL ",
        "DBT_PROFILES_DIR": str(dbt_assets.DBT_PROJECT_DIR),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    proc = subprocess.run(
        [dbt_assets.DBT_EXECUTABLE, "parse", "--quiet", "--target-path", str(tmp_path / "t")],
        cwd=dbt_assets.DBT_PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dbt_is_always_given_the_engine_s_duckdb_file_locally(tmp_path):
    var = "WAREHOUSE_DUCKDB_PATH"
    assert dbt_assets.dbt_env({}, tmp_path) == {
        var: str((tmp_path / DEFAULT_DUCKDB_PATH).resolve())
    }
    assert dbt_assets.dbt_env({var: "w.duckdb"}, tmp_path) == {var: str(tmp_path / "w.duckdb")}
    assert dbt_assets.dbt_env({var: "/abs/w.duckdb"}, tmp_path) == {var: "/abs/w.duckdb"}
    assert dbt_assets.dbt_env({"SFDC_ENV": "prod"}, tmp_path) == {}


def test_dbt_source_freshness_follows_each_object_s_freshness_minutes():
    """objects.yaml is the one source: warn at the target, error at three times it."""
    path = dbt_assets.DBT_PROJECT_DIR / "models" / "staging" / "salesforce" / "__sources.yml"
    sources = yaml.safe_load(path.read_text())["sources"]
    current = next(s for s in sources if s["name"] == "salesforce")
    thresholds = {t["name"]: t["config"]["freshness"] for t in current["tables"]}

    assert thresholds == {
        name.lower(): {
            "warn_after": {"count": minutes, "period": "minute"},
            "error_after": {"count": 3 * minutes, "period": "minute"},
        }
        for name, minutes in freshness_minutes().items()
    }


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
