"""deploy/maintenance/prune_runs.py on a real Dagster instance (SQLite, temporary home)."""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path

import dagster as dg
import pytest
from dagster import DagsterInstance

REPO = Path(__file__).resolve().parents[2]


def _module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "prune_runs", REPO / "deploy" / "maintenance" / "prune_runs.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dg.asset
def thing() -> int:
    return 1


JOB = dg.define_asset_job("thing_job", selection=[thing])
DEFS = dg.Definitions(assets=[thing], jobs=[JOB])


@pytest.fixture
def instance(tmp_path: Path):  # type: ignore[no-untyped-def]
    with DagsterInstance.local_temp(str(tmp_path)) as inst:
        yield inst


def _run(instance: DagsterInstance, source: str) -> str:
    result = DEFS.get_job_def("thing_job").execute_in_process(
        instance=instance, tags={"sfdc/source": source}
    )
    assert result.success
    return result.run_id


def test_dry_run_then_apply_deletes_only_the_given_source(instance: DagsterInstance) -> None:
    prune = _module()
    refresh = [_run(instance, "dbt-refresh") for _ in range(3)]
    boot = _run(instance, "bootstrap")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)

    dry = prune.prune(instance, ["dbt-refresh"], dt.timedelta(0), apply=False, now=later)
    assert dry == {"dbt-refresh": {"matched": 3, "deleted": 0}}
    assert all(instance.get_run_by_id(r) for r in refresh)

    done = prune.prune(instance, ["dbt-refresh"], dt.timedelta(0), apply=True, now=later)
    assert done == {"dbt-refresh": {"matched": 3, "deleted": 3}}
    assert not [r for r in refresh if instance.get_run_by_id(r)]
    assert instance.get_run_by_id(boot) is not None


def test_runs_younger_than_the_age_are_kept(instance: DagsterInstance) -> None:
    prune = _module()
    run = _run(instance, "dbt-refresh")
    done = prune.prune(instance, ["dbt-refresh"], dt.timedelta(days=30), apply=True)
    assert done == {"dbt-refresh": {"matched": 0, "deleted": 0}}
    assert instance.get_run_by_id(run) is not None


@pytest.mark.parametrize("source", ["bootstrap", "rebackfill"])
def test_bootstrap_and_rebackfill_runs_are_refused(instance: DagsterInstance, source: str) -> None:
    with pytest.raises(ValueError, match="never pruned"):
        _module().prune(instance, [source], dt.timedelta(days=30), apply=True)
