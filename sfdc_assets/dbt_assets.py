"""The dbt project (dbt/) as Dagster assets: staging views, marts and legacy views.

Sources map to the sync engine's assets (`["salesforce", "current", <object>]` and
`["salesforce", "scd2", <object>]`, set in dbt/models/staging/salesforce/__sources.yml), so
lineage runs from Salesforce to the marts without a gap. dbt tests become asset checks;
error-severity tests (keys, uniqueness, relationships) are blocking, warn-severity ones
(picklist drift) are not.

Loading cost: importing this module costs the `dagster_dbt` import (~1.7 s) and reading
dbt_project.yml, nothing more: no dbt parse, no manifest read, no warehouse connection.
The manifest is read when `dbt_definitions()` is first called; a missing or stale one
(older than a model, macro or project file) is rebuilt with `dbt parse` (~4 s) first, so
`dagster dev` reloads pick up edits while runs never parse; deployments build it ahead
(`dagster-dbt project prepare-and-package --file sfdc_assets/dbt_assets.py` or
`dbt parse`, see docs/dbt.md).
"""

import fcntl
import functools
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)
from packaging.version import Version

from resources.environment import (
    DUCKDB_PATH_VAR,
    Environment,
    dbt_target,
    duckdb_path,
    sfdc_env,
)

DBT_PROJECT_DIR = Path(__file__).resolve().parent.parent / "dbt"
DBT_ASSETS_NAME = "sfdc_dbt"
# Model folder (= its schema) -> Dagster group.
GROUPS = {"staging": "staging", "marts": "marts", "legacy": "legacy"}
DBT_RETRY = dg.RetryPolicy(
    max_retries=3, delay=15, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
# The dbt installed beside this interpreter: `.venv/bin/dagster dev` does not put .venv/bin
# on PATH, where dagster-dbt looks for `dbt` by default.
_VENV_DBT = Path(sys.executable).with_name("dbt")
DBT_EXECUTABLE = str(_VENV_DBT) if _VENV_DBT.exists() else "dbt"


dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, target=dbt_target())


class SfdcDbtTranslator(DagsterDbtTranslator):
    """Models keyed `[<schema>, <relation name>]` in the group of their folder.

    Sources keep the asset key from their `meta.dagster.asset_key` (the engine's assets).
    A model's key is its relation: `["marts", "fct_pipeline"]`, `["legacy", "OPPORTUNITY"]`.
    """

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        """Sources: their configured key; models: schema folder + alias."""
        if dbt_resource_props["resource_type"] != "model":
            return super().get_asset_key(dbt_resource_props)
        folder = _folder(dbt_resource_props)
        name = dbt_resource_props.get("alias") or dbt_resource_props["name"]
        return dg.AssetKey([folder, name] if folder else [name])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        """staging / marts / legacy, from the model's folder."""
        if dbt_resource_props["resource_type"] != "model":
            return super().get_group_name(dbt_resource_props)
        return GROUPS.get(_folder(dbt_resource_props) or "", "dbt")


def _folder(dbt_resource_props: Mapping[str, Any]) -> str | None:
    # fqn = [project, folder, ..., model name]
    fqn = dbt_resource_props.get("fqn") or []
    return fqn[1] if len(fqn) > 2 else None


def warehouse_env(environ: Mapping[str, str], cwd: Path) -> dict[str, str]:
    """Environment overrides that make dbt open the engine's DuckDB file.

    `WAREHOUSE_DUCKDB_PATH` is relative to where Dagster runs (the repo root, as for
    `DuckDBWarehouse.from_env`), but dagster-dbt starts dbt inside dbt/, so a relative
    path would name a different file. Returns the absolute path, or nothing to change.
    """
    path = environ.get(DUCKDB_PATH_VAR)
    if not path or path == ":memory:" or Path(path).is_absolute():
        return {}
    return {DUCKDB_PATH_VAR: str((cwd / path).resolve())}


def dbt_env(environ: Mapping[str, str], cwd: Path) -> dict[str, str]:
    """Environment overrides for a dbt run: locally, the engine's DuckDB file, always named.

    The file is named even when `WAREHOUSE_DUCKDB_PATH` is unset (`DEFAULT_DUCKDB_PATH`),
    so profiles.yml's own fallback can never pick a different file than the engine.
    """
    if sfdc_env(environ) is Environment.PROD:
        return {}
    path = duckdb_path(environ)
    return warehouse_env({DUCKDB_PATH_VAR: path}, cwd) or {DUCKDB_PATH_VAR: path}


class SfdcDbtCliResource(DbtCliResource):
    """dagster-dbt's resource without the two things it does before every dbt command that
    this project never uses (measured 3.3 s of CPU per build on an idle machine, ~12 s
    under the scale bench's load, on the two cores the sync's runs share):

    - `dbt --version` in a subprocess, to learn the version: with the venv's own `dbt` it is
      the installed dbt-core's, read from the package metadata instead;
    - a dbt Core adapter built in-process (profile, project, macros), which dagster-dbt
      needs only for `fetch_row_counts()` / `fetch_column_metadata()`: not called here.

    Both override private members of dagster-dbt 0.29.x (pinned in pyproject.toml);
    tests/dbt/test_dbt_resource.py fails if an upgrade renames them.
    """

    @functools.cached_property
    def _cli_version(self) -> Version:
        if self.dbt_executable != str(_VENV_DBT):
            return super()._cli_version  # some other dbt: ask it
        from importlib.metadata import version

        return Version(version("dbt-core"))

    def _initialize_dbt_core_adapter(self, args: Sequence[str]) -> Any:
        return None


def dbt_resource() -> DbtCliResource:
    """The `dbt` resource: the project, with the target from `SFDC_ENV`."""
    return SfdcDbtCliResource(
        # DbtCliResource.__init__ takes a DbtProject; mypy's pydantic plugin sees the field.
        project_dir=dbt_project,  # type: ignore[arg-type]
        target=dbt_target(),
        dbt_executable=DBT_EXECUTABLE,
    )


class DbtBuildConfig(dg.Config):
    """Run config of a dbt build (the domain and nightly schedules set it; docs/dbt.md).

    recent_days: tests read only the rows written in the last N days (0 = every row).
    full_refresh: rebuild the incremental marts from scratch (`dbt build --full-refresh`).
    """

    recent_days: int = 0
    full_refresh: bool = False


def dbt_build_args(config: DbtBuildConfig) -> list[str]:
    """The `dbt` command line of a build with `config`."""
    args = ["build", "--vars", json.dumps({"recent_days": config.recent_days})]
    return [*args, "--full-refresh"] if config.full_refresh else args


def build_dbt_assets(manifest: Path | Mapping[str, Any]) -> dg.AssetsDefinition:
    """The `@dbt_assets` definition of every model (and its tests as checks)."""

    @dbt_assets(
        manifest=manifest,
        project=dbt_project,
        name=DBT_ASSETS_NAME,
        # DuckDB has one writer per file: a build that starts while a sync run writes
        # fails to take the lock; it is tried again shortly after.
        retry_policy=DBT_RETRY,
        dagster_dbt_translator=SfdcDbtTranslator(
            settings=DagsterDbtTranslatorSettings(enable_asset_checks=True)
        ),
    )
    def sfdc_dbt(
        context: dg.AssetExecutionContext, dbt: DbtCliResource, config: DbtBuildConfig
    ) -> Iterator[Any]:
        os.environ.update(dbt_env(os.environ, Path.cwd()))
        yield from dbt.cli(dbt_build_args(config), context=context).stream()

    return sfdc_dbt


# What `dbt parse` reads: a manifest older than any of these is stale.
PARSE_INPUTS = ("dbt_project.yml", "profiles.yml", "packages.yml", "models", "macros", "tests")


def manifest_is_stale(project: DbtProject = dbt_project) -> bool:
    """True when the manifest is missing or older than a file `dbt parse` reads."""
    manifest = project.manifest_path
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    root = Path(project.project_dir)
    for name in PARSE_INPUTS:
        path = root / name
        files = path.rglob("*") if path.is_dir() else [path] if path.exists() else []
        if any(f.stat().st_mtime > built for f in files):
            return True
    return False


def ensure_manifest(project: DbtProject = dbt_project) -> Path:
    """The manifest path, running `dbt parse` first when the manifest is missing or stale.

    Not `DbtProject.prepare_if_dev()`: `dagster dev` sets DAGSTER_IS_DEV_CLI, every run
    process inherits it, and a parse on every run import cost each CDC micro-batch ~5 s.
    A stale check gives the same "edit a model, reload, see it" loop at no cost per run.
    """
    if manifest_is_stale(project):
        _parse_and_publish(project)
    return project.manifest_path


def _parse_and_publish(project: DbtProject) -> None:
    """`dbt parse` once across processes, publishing the manifest whole.

    Several processes load the code location at once (pytest workers, `dagster dev`'s code
    server and its run workers): two parses writing one manifest.json left it half written
    for a third to read (orjson "unexpected content after document"). So the parse runs
    under an exclusive lock, into a private directory, and the manifest appears by rename.
    """
    # target_path may be relative to the project, and loaders run from any directory.
    target = project.manifest_path.parent
    target.mkdir(parents=True, exist_ok=True)
    with (target / ".parse.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not manifest_is_stale(project):  # another process parsed while we waited
            return
        scratch = Path(tempfile.mkdtemp(prefix=".parse-", dir=target))
        try:
            dbt_resource().cli(["parse", "--quiet"], target_path=scratch).wait()
            os.replace(scratch / "manifest.json", project.manifest_path)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


@functools.cache
def dbt_definitions() -> dg.Definitions:
    """The dbt assets, their checks and the `dbt` resource (built once per process)."""
    return dg.Definitions(
        assets=[build_dbt_assets(ensure_manifest())],
        resources={"dbt": dbt_resource()},
    )
