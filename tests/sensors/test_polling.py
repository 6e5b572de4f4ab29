"""`sfdc_polling` (sensors/cdc.py `polling_sensor`) against a real Dagster instance.

Issue 11: with the bootstrap on, a polled object is polled only once bootstrapped: a poll
before its backfill competed with the bootstrap runs in the run queue and re-read a window
of a table the backfill had not filled yet.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import dagster as dg
import pytest

from sensors.cdc import polling_sensor
from sfdc_assets.keys import OBJECT_TAG, asset_key
from sfdc_assets.objects import SyncConfig, parse_config
from tests.sfdc_assets.harness import IN_MEMORY_EVENTS

FIRST = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)).isoformat()


def sync_config(bootstrap: bool = True) -> SyncConfig:
    """One CDC object and two polled ones (Task, User)."""
    return parse_config(
        f"""
settings:
  partitions_start: "{FIRST}"
  bootstrap: {str(bootstrap).lower()}
channel_groups:
  revenue: {{channel: /data/RevenueChannel__chn}}
  activities: {{channel: /data/ActivityChannel__chn}}
objects:
  - {{name: Opportunity, group: revenue}}
  - {{name: Task, group: activities, mode: polling}}
  - {{name: User, group: activities, mode: polling}}
"""
    )


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test(overrides=IN_MEMORY_EVENTS) as instance:
        yield instance


def tick(
    sensor: dg.SensorDefinition, instance: dg.DagsterInstance, cursor: str | None
) -> tuple[list[str], str | None, str | None]:
    """(objects requested, cursor, skip message) of one tick."""
    data = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor))
    polled = sorted(r.tags[OBJECT_TAG] for r in data.run_requests)
    # A skip keeps the stored cursor, as the daemon does.
    return polled, data.cursor or cursor, data.skip_message


def bootstrapped(instance: dg.DagsterInstance, name: str) -> None:
    """What a bootstrap leaves in the event log: current applied over its first partition."""
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=asset_key("current", name), partition=FIRST)
    )


def test_a_polled_object_is_not_polled_before_its_bootstrap_and_is_once_bootstrapped(
    instance: dg.DagsterInstance,
) -> None:
    sensor = polling_sensor(sync_config())
    assert sensor is not None

    polled, cursor, skip = tick(sensor, instance, None)
    assert polled == []
    assert skip == "not polled until bootstrapped: Task, User"

    bootstrapped(instance, "Task")
    polled, cursor, skip = tick(sensor, instance, cursor)
    # User still waits; Task is polled on the first tick after its bootstrap.
    assert polled == ["Task"] and skip is None
    assert cursor is not None and set(json.loads(cursor)) == {"Task"}

    bootstrapped(instance, "User")
    polled, cursor, _ = tick(sensor, instance, cursor)
    assert polled == ["User"]  # Task polled less than an interval ago


def test_with_the_bootstrap_off_every_polled_object_is_polled(
    instance: dg.DagsterInstance,
) -> None:
    # The operator backfills by hand: nothing tells the sensor what is bootstrapped.
    sensor = polling_sensor(sync_config(bootstrap=False))
    assert sensor is not None
    polled, _, skip = tick(sensor, instance, None)
    assert polled == ["Task", "User"] and skip is None
