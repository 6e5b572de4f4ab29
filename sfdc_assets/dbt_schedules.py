"""dbt builds per domain, each at its own cadence, and one nightly full build.

One `dbt build` of every model every 5 minutes (sensor `dbt_refresh`) rebuilt the
activity rollup over 500M rows as often as the revenue marts, and ran every key test over
every row. Here each domain (a dbt tag: `revenue`, `people`, `activities`; every model
has one in dbt/dbt_project.yml) is its own job, `dbt_<domain>`, on a schedule every
`settings.dbt.domains[<domain>]` minutes (objects.yaml), its tests reading the last
`recent_days` days only (macros/test_scope.sql); `dbt_nightly` builds everything with
every test over every row (and rebuilds the incremental marts from scratch when
`nightly_full_refresh`). docs/dbt.md "Cadence".

A domain build is skipped while any object is not bootstrapped yet (its relationship
tests would fail over half-loaded tables), while the domain's previous build is still
running, and when no current or scd2 asset was materialized since that build was
requested. The nightly build skips only before the bootstrap.
"""

from __future__ import annotations

import dagster as dg

from sfdc_assets.dbt_assets import DBT_ASSETS_NAME, DbtBuildConfig
from sfdc_assets.keys import DBT_LANE, LANE_TAG, SOURCE_TAG, asset_key
from sfdc_assets.objects import SyncConfig, dbt_cron, load_config
from sfdc_assets.partitions import daily_partitions

NIGHTLY = "nightly"
# The dbt project's asset key prefixes (SfdcDbtTranslator: [<schema folder>, <model>]).
DBT_PREFIXES = (["staging"], ["marts"], ["legacy"])
_IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def job_name(domain: str) -> str:
    """`dbt_<domain>`: the job and schedule of one domain (or `dbt_nightly`)."""
    return f"dbt_{domain}"


def source_tag(domain: str) -> str:
    """The `sfdc/source` tag value of a domain's runs: `dbt-<domain>`."""
    return f"dbt-{domain}"


def run_config(config: DbtBuildConfig) -> dg.RunConfig:
    """Run config giving the dbt assets op `config`."""
    return dg.RunConfig(ops={DBT_ASSETS_NAME: config})


def domain_selection(domain: str) -> dg.AssetSelection:
    """The dbt models tagged `domain` (dagster-dbt turns a dbt tag into an asset tag
    with an empty value), with their tests as checks, and the other dbt models they read
    (another domain's staging views, without their tests).

    On a fresh platform the first revenue build ran before any people build and failed
    on `stg_salesforce__user` (`fct_pipeline`, `commission_preview` and the owners'
    relationships read it); re-creating an upstream view is two statements.
    """
    tagged = dg.AssetSelection.tag(domain, "")
    upstream = tagged.upstream(include_self=False) & dg.AssetSelection.key_prefixes(*DBT_PREFIXES)
    return tagged | upstream.without_checks()


def pending_bootstrap(instance: dg.DagsterInstance, sync: SyncConfig) -> list[str]:
    """Objects whose first partition never reached `current` (not bootstrapped yet).

    The same test as `sensors.automation.is_bootstrapped` (sfdc_assets may not import
    sensors): one indexed event-log lookup per object.
    """
    first = daily_partitions(sync.settings.partitions_start).get_first_partition_key()
    assert first
    pending = []
    for obj in sync.objects:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key("current", obj), asset_partitions=[first]),
            limit=1,
        )
        if not records.records:
            pending.append(obj.name)
    return pending


def _newest_source_write(instance: dg.DagsterInstance, sync: SyncConfig) -> float:
    keys = [asset_key(layer, o) for o in sync.objects for layer in ("current", "scd2")]
    events = (instance.get_latest_materialization_event(key) for key in keys)
    return max((e.timestamp for e in events if e), default=0.0)


def _last_run(instance: dg.DagsterInstance, tag: str, statuses=None) -> dg.DagsterRun | None:
    runs = instance.get_runs(dg.RunsFilter(tags={SOURCE_TAG: tag}, statuses=statuses), limit=1)
    return runs[0] if runs else None


def domain_schedule(domain: str, minutes: int, sync: SyncConfig) -> dg.ScheduleDefinition:
    """Builds the models tagged `domain` every `minutes`, testing recent rows only."""
    tag = source_tag(domain)
    config = DbtBuildConfig(recent_days=sync.settings.dbt.recent_days)
    job = dg.define_asset_job(
        job_name(domain),
        selection=domain_selection(domain),
        description=f"dbt build of the {domain} models; tests read recent rows only.",
        tags={SOURCE_TAG: tag, LANE_TAG: DBT_LANE},
    )

    @dg.schedule(
        name=job_name(domain),
        cron_schedule=dbt_cron(minutes),
        job=job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"dbt build of the {domain} models every {minutes} min (objects.yaml).",
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        instance = context.instance
        pending = pending_bootstrap(instance, sync)
        if pending:
            return dg.SkipReason(f"waiting for the bootstrap of {', '.join(pending)}")
        if _last_run(instance, tag, _IN_FLIGHT):
            return dg.SkipReason(f"the previous {domain} build is still running")
        last = _last_run(instance, tag)
        record = instance.get_run_record_by_id(last.run_id) if last else None
        requested = record.create_timestamp.timestamp() if record else 0.0
        if _newest_source_write(instance, sync) <= requested:
            return dg.SkipReason("nothing applied since the last build")
        return dg.RunRequest(run_config=run_config(config), tags={SOURCE_TAG: tag})

    return _schedule


def nightly_schedule(sync: SyncConfig) -> dg.ScheduleDefinition:
    """Builds every dbt model with every test over every row, on `nightly_cron`."""
    settings = sync.settings.dbt
    config = DbtBuildConfig(recent_days=0, full_refresh=settings.nightly_full_refresh)
    job = dg.define_asset_job(
        job_name(NIGHTLY),
        selection=dg.AssetSelection.key_prefixes(*DBT_PREFIXES),
        description="dbt build of every model; every test reads every row.",
        tags={SOURCE_TAG: source_tag(NIGHTLY), LANE_TAG: DBT_LANE},
    )

    @dg.schedule(
        name=job_name(NIGHTLY),
        cron_schedule=settings.nightly_cron,
        job=job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Nightly dbt build with full tests (objects.yaml settings.dbt).",
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        pending = pending_bootstrap(context.instance, sync)
        if pending:
            return dg.SkipReason(f"waiting for the bootstrap of {', '.join(pending)}")
        return dg.RunRequest(run_config=run_config(config), tags={SOURCE_TAG: source_tag(NIGHTLY)})

    return _schedule


def dbt_schedules(sync: SyncConfig | None = None) -> list[dg.ScheduleDefinition]:
    """One schedule per configured domain plus the nightly one; none without domains
    (the `dbt_refresh` sensor builds everything then)."""
    sync = sync or load_config()
    domains = sync.settings.dbt.domains
    if not domains:
        return []
    return [
        *(domain_schedule(d, minutes, sync) for d, minutes in domains.items()),
        nightly_schedule(sync),
    ]
