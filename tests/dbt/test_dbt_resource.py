"""sfdc_assets.dbt_assets.SfdcDbtCliResource: dagster-dbt's resource without its per-command
`dbt --version` subprocess and in-process adapter, and still the same dbt."""

import subprocess
from pathlib import Path

import pytest
from dagster_dbt import DbtCliResource
from dagster_dbt.core import resource as dagster_dbt_resource
from packaging.version import Version

from sfdc_assets import dbt_assets

pytestmark = pytest.mark.xdist_group("dbt")


def test_the_overridden_members_still_exist_in_dagster_dbt() -> None:
    # An upgrade that renames them would silently bring the per-command cost back.
    assert "_cli_version" in DbtCliResource.__dict__
    assert callable(DbtCliResource.__dict__["_initialize_dbt_core_adapter"])


def test_the_version_is_the_one_the_dbt_executable_reports() -> None:
    resource = dbt_assets.dbt_resource()
    assert resource.dbt_executable == str(dbt_assets._VENV_DBT)
    reported = subprocess.check_output([resource.dbt_executable, "--version"], text=True)
    assert f"installed: {resource._cli_version}" in reported
    assert resource._cli_version == Version(str(resource._cli_version))


def test_another_dbt_executable_is_asked_for_its_version(monkeypatch, tmp_path: Path) -> None:
    fake = tmp_path / "dbt"
    fake.write_text("#!/bin/sh\necho 'Core:\n  - installed: 9.8.7'\n")
    fake.chmod(0o755)
    resource = dbt_assets.SfdcDbtCliResource(
        project_dir=str(dbt_assets.DBT_PROJECT_DIR), dbt_executable=str(fake)
    )
    assert resource._cli_version == Version("9.8.7")


def test_a_dbt_command_spawns_no_version_check_and_builds_no_adapter(
    monkeypatch, tmp_path: Path
) -> None:
    def no_version_check(*args, **kwargs):
        raise AssertionError(f"dagster-dbt ran {args[0]!r} before the dbt command")

    monkeypatch.setattr(dagster_dbt_resource, "check_output", no_version_check)
    invocation = dbt_assets.dbt_resource().cli(["parse", "--quiet"], target_path=tmp_path)
    invocation.wait()
    assert invocation.is_successful()
    assert invocation.adapter is None
    assert (tmp_path / "manifest.json").exists()
