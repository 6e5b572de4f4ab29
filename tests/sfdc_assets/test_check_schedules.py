"""Which checks the hourly `sfdc_reconcile` job and the nightly `sfdc_nightly_checks` job run.

Issue 11 (production scale): `live_count_matches_salesforce` sent `SELECT COUNT()` to
Salesforce for every object every hour; over Task and Event (~500M rows) that risks the
query timeout. The polled objects' count runs nightly; the others' stays hourly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg

from resources.duckdb_warehouse import DuckDBWarehouse
from sfdc_assets.checks import (
    NIGHTLY_CHECKS_JOB,
    RECONCILE_CRON,
    RECONCILE_JOB,
    id_unique_full_check,
    live_count_check,
    nightly_checks_schedule,
    reconcile_schedule,
)
from sfdc_assets.keys import CURRENT_ID_UNIQUE_FULL, RECONCILE, asset_key
from sfdc_assets.objects import SyncConfig, load_config


def check_defs(sync: SyncConfig) -> list[dg.AssetChecksDefinition]:
    """Every object's live-count and whole-table checks, as assets.py builds them."""
    out = []
    for o in sync.objects:
        key = asset_key("current", o)
        out += [live_count_check(o.name, key, o.key_name), id_unique_full_check(o.name, key)]
    return out


def selected(schedule: dg.ScheduleDefinition, sync: SyncConfig, tmp: Path) -> set[tuple[str, str]]:
    """(object, check) pairs the schedule's job runs."""
    defs = dg.Definitions(
        asset_checks=check_defs(sync),
        schedules=[schedule],
        resources={
            "warehouse": DuckDBWarehouse(path=str(tmp / "wh.duckdb")),
            "salesforce": dg.ResourceDefinition.none_resource(),
        },
    )
    job = defs.resolve_job_def(schedule.job_name)
    keys: Any = job.asset_layer.asset_graph.asset_check_keys
    return {(k.asset_key.path[-1], k.name) for k in keys}


def test_the_hourly_count_leaves_the_polled_objects_to_the_nightly_job(tmp_path: Path) -> None:
    sync = load_config()
    polled = {o.key_name for o in sync.objects if o.mode == "polling"}
    others = {o.key_name for o in sync.objects} - polled
    assert polled and others  # the shipped config has both (Task, Event, User polled)

    hourly = reconcile_schedule(sync)
    assert hourly is not None
    assert (hourly.job_name, hourly.cron_schedule) == (RECONCILE_JOB, RECONCILE_CRON)
    assert selected(hourly, sync, tmp_path) == {(name, RECONCILE) for name in others}

    nightly = nightly_checks_schedule(sync)
    assert nightly.job_name == NIGHTLY_CHECKS_JOB
    assert selected(nightly, sync, tmp_path) == {
        *((o.key_name, CURRENT_ID_UNIQUE_FULL) for o in sync.objects),
        *((name, RECONCILE) for name in polled),
    }


def test_which_objects_count_nightly_follows_the_config_not_their_names(tmp_path: Path) -> None:
    base = load_config()
    # Opportunity polled instead of CDC: its count goes nightly too.
    objects = tuple(
        o.model_copy(update={"mode": "polling"}) if o.name == "Opportunity" else o
        for o in base.objects
    )
    sync = base.model_copy(update={"objects": objects})
    hourly = reconcile_schedule(sync)
    assert hourly is not None
    assert ("opportunity", RECONCILE) not in selected(hourly, sync, tmp_path)
    assert ("opportunity", RECONCILE) in selected(nightly_checks_schedule(sync), sync, tmp_path)

    # Every object polled: no hourly job at all.
    everything = tuple(o.model_copy(update={"mode": "polling"}) for o in base.objects)
    assert reconcile_schedule(base.model_copy(update={"objects": everything})) is None
