"""sfdc_assets.dbt_schedules: each dbt domain at its own cadence, full tests nightly.

Issue 11 item 4: one `dbt build` of everything every 5 minutes (sensor dbt_refresh) rebuilt
the activity rollup as often as the revenue marts and ran every test over every row.
"""

import datetime as dt
import time
import uuid
from collections.abc import Iterator

import dagster as dg
import pytest

from sfdc_assets import dbt_schedules
from sfdc_assets.dbt_assets import DBT_ASSETS_NAME, DbtBuildConfig, dbt_build_args
from sfdc_assets.definitions import build_definitions
from sfdc_assets.keys import DBT_LANE, LANE_TAG, SOURCE_TAG, asset_key
from sfdc_assets.objects import SyncConfig, dbt_cron, load_config, parse_config

pytestmark = pytest.mark.xdist_group("dbt")

FIRST = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)).isoformat()


def sync_config(dbt: str = "{domains: {revenue: 5, activities: 60}}") -> SyncConfig:
    return parse_config(
        f"""
settings:
  partitions_start: "{FIRST}"
  dbt: {dbt}
channel_groups:
  revenue: {{channel: /data/RevenueChannel__chn}}
  activities: {{channel: /data/ActivityChannel__chn}}
objects:
  - {{name: Opportunity, group: revenue}}
  - {{name: Task, group: activities, mode: polling}}
"""
    )


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    # On disk: a schedule's context opens the instance again from its ref, which an
    # in-memory event log would not survive.
    with dg.instance_for_test() as instance:
        yield instance


def _schedule(name: str, sync: SyncConfig) -> dg.ScheduleDefinition:
    (schedule,) = [s for s in dbt_schedules.dbt_schedules(sync) if s.name == name]
    return schedule


def _tick(schedule: dg.ScheduleDefinition, instance: dg.DagsterInstance):
    data = schedule.evaluate_tick(dg.build_schedule_context(instance=instance))
    return list(data.run_requests or []), data.skip_message


def _apply(instance: dg.DagsterInstance, name: str, partition: str = FIRST) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=asset_key("current", name), partition=partition)
    )


def _add_run(instance: dg.DagsterInstance, tag: str, status: dg.DagsterRunStatus) -> None:
    instance.add_run(
        dg.DagsterRun(
            job_name="dbt", run_id=str(uuid.uuid4()), status=status, tags={SOURCE_TAG: tag}
        )
    )


@pytest.mark.parametrize(
    ("minutes", "cron"),
    [(5, "*/5 * * * *"), (30, "*/30 * * * *"), (60, "0 * * * *"), (180, "0 */3 * * *")],
)
def test_a_cadence_becomes_the_cron_of_every_that_many_minutes(minutes, cron):
    assert dbt_cron(minutes) == cron
    assert dbt_cron(1440) == "0 0 * * *"


@pytest.mark.parametrize("minutes", [0, 45, 90, 300])
def test_a_cadence_cron_cannot_hold_is_refused_by_name(minutes):
    with pytest.raises(ValueError, match=f"dbt cadence {minutes} min"):
        sync_config(f"{{domains: {{revenue: {minutes}}}}}")


def test_a_domain_that_is_not_an_identifier_is_refused():
    with pytest.raises(ValueError):
        sync_config("{domains: {'tag:x or 1': 5}}")


def test_the_shipped_domains_build_revenue_in_minutes_and_activities_hourly():
    domains = load_config().settings.dbt.domains
    assert domains["revenue"] <= 10
    assert domains["activities"] == 60


def test_the_code_location_schedules_each_domain_and_drops_the_refresh_of_everything():
    defs = build_definitions()
    names = {s.name for s in defs.schedules or []}
    assert {"dbt_revenue", "dbt_people", "dbt_activities", "dbt_nightly"} <= names
    assert "dbt_refresh" not in {s.name for s in defs.sensors or []}


def test_every_dbt_build_runs_in_the_one_dbt_lane_the_local_instance_limits_to_one():
    import yaml

    from scripts.demo import INSTANCE_YAML

    defs = build_definitions()
    jobs = [s.job for s in defs.schedules or [] if s.name.startswith("dbt_")]
    assert jobs and all(job.tags[LANE_TAG] == DBT_LANE for job in jobs)
    limits = yaml.safe_load(INSTANCE_YAML)["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": LANE_TAG, "value": DBT_LANE, "limit": 1} in limits


def test_each_domain_selects_its_dbt_models_and_every_model_has_a_domain():
    graph = build_definitions().resolve_asset_graph()
    dbt_keys = dg.AssetSelection.key_prefixes(*dbt_schedules.DBT_PREFIXES).resolve(graph)
    domains = load_config().settings.dbt.domains
    by_domain = {d: dg.AssetSelection.tag(d, "").resolve(graph) for d in domains}
    assert by_domain["activities"] == {
        dg.AssetKey(["marts", "fct_account_activity"]),
        dg.AssetKey(["staging", "stg_salesforce__task"]),
        dg.AssetKey(["staging", "stg_salesforce__event"]),
        dg.AssetKey(["legacy", "TASK"]),
        dg.AssetKey(["legacy", "EVENT"]),
    }
    assert dg.AssetKey(["marts", "dim_account"]) in by_domain["revenue"]
    # Each model in exactly one domain: none built only nightly, none built twice.
    assert sorted(k for keys in by_domain.values() for k in keys) == sorted(dbt_keys)
    for d in domains:
        selected = dbt_schedules.domain_selection(d).resolve(graph)
        # A domain build also creates the dbt models its own read (another domain's views,
        # on a fresh platform not built yet), and nothing downstream of it.
        upstream = dg.AssetSelection.assets(*by_domain[d]).upstream().resolve(graph)
        assert selected == by_domain[d] | (upstream & dbt_keys)
    assert dg.AssetKey(["staging", "stg_salesforce__user"]) in (
        dbt_schedules.domain_selection("revenue").resolve(graph)
    )


def test_a_domain_build_runs_its_own_tests_not_those_of_the_views_it_borrows():
    graph = build_definitions().resolve_asset_graph()
    checks = dbt_schedules.domain_selection("activities").resolve_checks(graph)
    assert checks and {c.asset_key for c in checks} <= dg.AssetSelection.tag(
        "activities", ""
    ).resolve(graph)


def test_a_domain_build_waits_for_every_object_to_be_bootstrapped(instance):
    schedule = _schedule("dbt_revenue", sync_config())
    _apply(instance, "Opportunity")
    requests, skip = _tick(schedule, instance)
    assert requests == [] and "Task" in (skip or "")


def test_a_domain_build_tests_recent_rows_and_the_nightly_build_every_row(instance):
    sync = sync_config("{domains: {revenue: 5}, recent_days: 3, nightly_full_refresh: true}")
    for name in ("Opportunity", "Task"):
        _apply(instance, name)
    (frequent,), _ = _tick(_schedule("dbt_revenue", sync), instance)
    (nightly,), _ = _tick(_schedule("dbt_nightly", sync), instance)
    assert frequent.run_config["ops"][DBT_ASSETS_NAME]["config"] == {
        "recent_days": 3,
        "full_refresh": False,
    }
    assert nightly.run_config["ops"][DBT_ASSETS_NAME]["config"] == {
        "recent_days": 0,
        "full_refresh": True,
    }
    assert frequent.tags[SOURCE_TAG] == "dbt-revenue"


def test_a_domain_build_skips_while_running_and_when_nothing_new_was_applied(instance):
    schedule = _schedule("dbt_revenue", sync_config())
    for name in ("Opportunity", "Task"):
        _apply(instance, name)
    _add_run(instance, "dbt-revenue", dg.DagsterRunStatus.STARTED)
    assert _tick(schedule, instance)[0] == []
    # Another domain's build does not hold this one back.
    assert len(_tick(_schedule("dbt_activities", sync_config()), instance)[0]) == 1

    with dg.instance_for_test() as fresh:
        for name in ("Opportunity", "Task"):
            _apply(fresh, name)
        time.sleep(0.01)
        _add_run(fresh, "dbt-revenue", dg.DagsterRunStatus.SUCCESS)
        requests, skip = _tick(schedule, fresh)
        assert requests == [] and skip == "nothing applied since the last build"
        time.sleep(0.01)
        _apply(fresh, "Opportunity", partition=dt.datetime.now(dt.UTC).date().isoformat())
        assert len(_tick(schedule, fresh)[0]) == 1


def test_without_domains_there_is_no_domain_schedule():
    assert dbt_schedules.dbt_schedules(sync_config("{}")) == []


def test_a_build_passes_recent_days_to_dbt_and_full_refresh_when_asked():
    assert dbt_build_args(DbtBuildConfig()) == ["build", "--vars", '{"recent_days": 0}']
    assert dbt_build_args(DbtBuildConfig(recent_days=2, full_refresh=True)) == [
        "build",
        "--vars",
        '{"recent_days": 2}',
        "--full-refresh",
    ]
