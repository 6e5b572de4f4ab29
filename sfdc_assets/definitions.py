"""The sfdc-sync code location: assembles assets, checks, sensors and resources.

It only assembles; what it assembles is defined in the modules beside it. Loading it must
stay cheap (no network, no warehouse connection, no dbt parse): every Dagster run imports it.
Optional parts plug in with one line each in `PLUGINS` when their module exists.
"""

import importlib
from collections.abc import Callable
from typing import Any

import dagster as dg

from sensors.automation import bootstrap_sensor
from sensors.cdc import cdc_sensors, polling_sensor
from sfdc_assets.assets import build_assets
from sfdc_assets.checks import reconcile_schedule
from sfdc_assets.objects import load_config
from sfdc_assets.resources import build_resources


def _dbt(defs: dg.Definitions, module: Any) -> dg.Definitions:
    from sensors.automation import dbt_refresh_sensor

    refresh = dbt_refresh_sensor(load_config())
    extra = dg.Definitions(sensors=[refresh] if refresh else [])
    return dg.Definitions.merge(defs, module.dbt_definitions(), extra)


def _alerts(defs: dg.Definitions, module: Any) -> dg.Definitions:
    from resources.slack import slack_alerter_from_env

    extra = dg.Definitions(
        sensors=module.alert_sensors(), resources={"slack": slack_alerter_from_env()}
    )
    return dg.Definitions.merge(defs, extra)


def _erase(defs: dg.Definitions, module: Any) -> dg.Definitions:
    return dg.Definitions.merge(defs, module.definitions())


def _freshness(defs: dg.Definitions, module: Any) -> dg.Definitions:
    return dg.Definitions(
        assets=module.apply_freshness(list(defs.assets or [])),
        asset_checks=defs.asset_checks,
        sensors=defs.sensors,
        schedules=defs.schedules,
        jobs=defs.jobs,
        resources=defs.resources,
        executor=defs.executor,
    )


# (module, how it joins): the dbt project, Slack alerting, the audited erase job, freshness
# policies (applied last, so they reach every asset).
PLUGINS: list[tuple[str, Callable[[dg.Definitions, Any], dg.Definitions]]] = [
    ("sfdc_assets.dbt_assets", _dbt),
    ("sensors.alerts", _alerts),
    ("sfdc_assets.erase", _erase),
    ("sfdc_assets.freshness", _freshness),
]


def _plugin(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise  # the module exists but is broken: say so
        return None


def build_definitions() -> dg.Definitions:
    """Every configured object's assets and checks, the sensors, the resources, plugins."""
    sync = load_config()
    assets = build_assets(sync)
    sensors = [*cdc_sensors(sync), *filter(None, [polling_sensor(sync)]), bootstrap_sensor(sync)]
    defs = dg.Definitions(
        assets=assets,
        sensors=sensors,
        schedules=[reconcile_schedule(sync)],
        resources=build_resources(),
        # Every run executes its steps in the run's own process. A run here is a chain
        # (raw -> current+scd2 -> dbt) whose steps serialise on the warehouse writer anyway;
        # the multiprocess executor would start (and import the code location in) one
        # more process per step, which cost a CDC micro-batch tens of seconds.
        executor=dg.in_process_executor,
    )
    for name, join in PLUGINS:
        module = _plugin(name)
        if module is not None:
            defs = join(defs, module)
    return defs


defs = build_definitions()
