"""The sfdc-sync code location: assembles assets, checks, sensors, jobs and resources.

It only assembles; what it assembles is defined in the modules beside it, and project-wide
policy (freshness) is applied once over the asset list. Loading it must stay cheap (no
network, no warehouse connection, no dbt parse): every Dagster run imports it.
"""

import dagster as dg

from resources.slack import slack_alerter_from_env
from sensors.alerts import alert_sensors
from sensors.automation import bootstrap_sensor, dbt_refresh_sensor
from sensors.cdc import cdc_sensors, polling_sensor
from sensors.reconcile import reconcile_sensor
from sfdc_assets import erase
from sfdc_assets.assets import build_assets
from sfdc_assets.checks import nightly_checks_schedule, reconcile_schedule
from sfdc_assets.dbt_assets import dbt_definitions
from sfdc_assets.dbt_schedules import dbt_schedules
from sfdc_assets.freshness import apply_freshness
from sfdc_assets.objects import load_config
from sfdc_assets.resources import build_resources


def build_definitions() -> dg.Definitions:
    """Every configured object's assets and checks, the dbt project, the sensors, the
    erase job and the resources of the environment `SFDC_ENV` names."""
    sync = load_config()
    sensors = [
        *cdc_sensors(sync),
        polling_sensor(sync),
        bootstrap_sensor(sync),
        # Per-domain dbt schedules replace the one refresh of everything when configured.
        None if sync.settings.dbt.domains else dbt_refresh_sensor(sync),
        reconcile_sensor(sync),
        *alert_sensors(),
    ]
    platform = dg.Definitions(
        assets=apply_freshness(build_assets(sync)),
        sensors=[s for s in sensors if s is not None],
        schedules=[
            s
            for s in (reconcile_schedule(sync), nightly_checks_schedule(sync), *dbt_schedules(sync))
            if s is not None
        ],
        resources={**build_resources(), "slack": slack_alerter_from_env()},
        # Every run executes its steps in the run's own process. A run here is a chain
        # (raw -> current+scd2 -> dbt) whose steps serialise on the warehouse writer anyway;
        # the multiprocess executor would start (and import the code location in) one
        # more process per step, which cost a CDC micro-batch tens of seconds.
        executor=dg.in_process_executor,
    )
    return dg.Definitions.merge(platform, dbt_definitions(), erase.definitions())


defs = build_definitions()
