"""`sfdc_bootstrap` and `dbt_refresh` (sensors/automation.py) against a real Dagster instance.

No emulator: the sensors only read the instance. Applied partitions are runless
materializations of `current`; in-flight and failed runs are runs added with the tags the
sensors' own requests carry; the sensors' clock is monkeypatched.
"""

from __future__ import annotations

import datetime as dt
import time
import types
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import pytest

from sensors import automation
from sensors.automation import (
    BOOTSTRAP,
    DBT_REFRESH,
    SOURCE_TAG,
    bootstrap_sensor,
    dbt_refresh_sensor,
)
from sfdc_assets.keys import LAYERS, OBJECT_TAG, RECONCILE, asset_key, run_checks
from sfdc_assets.objects import SyncConfig, parse_config
from tests.sfdc_assets.harness import IN_MEMORY_EVENTS

TODAY = dt.datetime.now(dt.UTC).date()
FIRST = (TODAY - dt.timedelta(days=2)).isoformat()
NAMES = ("Opportunity", "Account", "Task")  # config order, not alphabetical
RETRY_MINUTES = 30
REFRESH_MINUTES = 5


def sync_config(**settings: object) -> SyncConfig:
    """Three objects in two groups; three daily partitions (first, yesterday, today)."""
    extra = "".join(f"\n  {k}: {v}" for k, v in settings.items())
    return parse_config(
        f"""
settings:
  partitions_start: "{FIRST}"
  bootstrap_retry_minutes: {RETRY_MINUTES}
  dbt_refresh_minutes: {REFRESH_MINUTES}{extra}
channel_groups:
  revenue: {{channel: /data/RevenueChannel__chn}}
  activities: {{channel: /data/ActivityChannel__chn}}
objects:
  - {{name: Opportunity, group: revenue}}
  - {{name: Account, group: revenue}}
  - {{name: Task, group: activities, mode: polling}}
"""
    )


@dataclass
class Tick:
    requests: list[dg.RunRequest]
    cursor: str | None
    skip: str | None


class Clock:
    """The sensors' `time.time()`, moved by the test."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test(overrides=IN_MEMORY_EVENTS) as instance:
        yield instance


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(automation, "time", types.SimpleNamespace(time=fake.time))
    return fake


def evaluate(sensor: dg.SensorDefinition, instance: dg.DagsterInstance, cursor: str | None) -> Tick:
    data = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor))
    # A skip keeps the stored cursor, as the daemon does.
    return Tick(list(data.run_requests), data.cursor or cursor, data.skip_message)


def apply(instance: dg.DagsterInstance, name: str, partition: str, layer: str = "current") -> None:
    """What a run applying `partition` of `name` leaves in the event log."""
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=asset_key(layer, name), partition=partition)
    )


def add_run(
    instance: dg.DagsterInstance, tags: dict[str, str], status: dg.DagsterRunStatus
) -> None:
    instance.add_run(
        dg.DagsterRun(job_name="__ASSET_JOB", run_id=str(uuid.uuid4()), status=status, tags=tags)
    )


def bootstrap_tags(name: str) -> dict[str, str]:
    return {OBJECT_TAG: name, SOURCE_TAG: BOOTSTRAP}


# --- sfdc_bootstrap ------------------------------------------------------------------------


def test_with_nothing_bootstrapped_only_the_first_object_is_requested_over_every_partition(
    instance: dg.DagsterInstance, clock: Clock
) -> None:
    tick = evaluate(bootstrap_sensor(sync_config()), instance, None)

    (request,) = tick.requests
    assert request.tags[OBJECT_TAG] == "Opportunity"
    assert request.tags[SOURCE_TAG] == BOOTSTRAP
    assert request.tags["dagster/asset_partition_range_start"] == FIRST
    assert request.tags["dagster/asset_partition_range_end"] == TODAY.isoformat()
    assert request.partition_key is None  # a range run, not one partition
    assert set(request.asset_selection or []) == {
        asset_key(layer, "Opportunity") for layer in LAYERS
    }
    checks = set(request.asset_check_keys or [])
    assert checks == set(run_checks("Opportunity"))
    # The reconciliation check calls the API: it runs on its own schedule, not here.
    assert RECONCILE not in {k.name for k in checks}
    assert tick.cursor is not None and '"done":[]' in tick.cursor


def test_the_sensor_runs_only_when_bootstrap_is_on() -> None:
    assert bootstrap_sensor(sync_config()).default_status == dg.DefaultSensorStatus.RUNNING
    off = bootstrap_sensor(sync_config(bootstrap="false"))
    assert off.default_status == dg.DefaultSensorStatus.STOPPED


# QUEUED is in flight too, but a queued run needs a code location origin that only the
# daemon's submission path builds (no public constructor); the status filter is the same.
@pytest.mark.parametrize("status", [s for s in automation.IN_FLIGHT if s.value != "QUEUED"])
def test_no_bootstrap_is_requested_while_one_is_in_flight(
    instance: dg.DagsterInstance, clock: Clock, status: dg.DagsterRunStatus
) -> None:
    sensor = bootstrap_sensor(sync_config())
    # Another object's bootstrap: the sensor keeps one at a time.
    add_run(instance, bootstrap_tags("Account"), status)

    tick = evaluate(sensor, instance, None)

    assert tick.requests == []
    assert tick.skip == "0 of 3 objects bootstrapped"


def test_a_running_cdc_run_of_the_object_does_not_hold_its_bootstrap_back(
    instance: dg.DagsterInstance, clock: Clock
) -> None:
    """Only bootstrap runs count as in flight or as a previous attempt; and a CDC run that
    applied today's partition did not backfill the range."""
    add_run(instance, {OBJECT_TAG: "Opportunity", SOURCE_TAG: "cdc"}, dg.DagsterRunStatus.STARTED)
    apply(instance, "Opportunity", TODAY.isoformat())

    tick = evaluate(bootstrap_sensor(sync_config()), instance, None)

    assert [r.tags[OBJECT_TAG] for r in tick.requests] == ["Opportunity"]


def test_an_object_whose_first_partition_is_applied_is_recorded_and_the_next_one_requested(
    instance: dg.DagsterInstance, clock: Clock
) -> None:
    sensor = bootstrap_sensor(sync_config())
    first = evaluate(sensor, instance, None)
    add_run(instance, bootstrap_tags("Opportunity"), dg.DagsterRunStatus.SUCCESS)
    apply(instance, "Opportunity", FIRST)
    apply(instance, "Opportunity", FIRST, layer="scd2")

    second = evaluate(sensor, instance, first.cursor)

    assert [r.tags[OBJECT_TAG] for r in second.requests] == ["Account"]
    assert second.cursor is not None and '"done":["Opportunity"]' in second.cursor
    assert second.requests[0].run_key != first.requests[0].run_key


def test_a_failed_bootstrap_is_retried_only_after_the_retry_interval(
    instance: dg.DagsterInstance, clock: Clock
) -> None:
    sensor = bootstrap_sensor(sync_config())
    add_run(instance, bootstrap_tags("Opportunity"), dg.DagsterRunStatus.FAILURE)

    clock.now = time.time() + (RETRY_MINUTES - 1) * 60
    early = evaluate(sensor, instance, None)
    # The failed object waits; one broken object does not hold the others back.
    assert [r.tags[OBJECT_TAG] for r in early.requests] == ["Account"]

    clock.now = time.time() + (RETRY_MINUTES + 1) * 60
    late = evaluate(sensor, instance, early.cursor)
    assert [r.tags[OBJECT_TAG] for r in late.requests] == ["Opportunity"]


def test_when_every_object_is_bootstrapped_the_sensor_skips(
    instance: dg.DagsterInstance, clock: Clock
) -> None:
    sensor = bootstrap_sensor(sync_config())
    for name in NAMES:
        apply(instance, name, FIRST)

    tick = evaluate(sensor, instance, None)

    assert tick.requests == []
    assert tick.skip == "3 of 3 objects bootstrapped"
    assert tick.cursor is not None and '"done":["Account","Opportunity","Task"]' in tick.cursor
    # The cursor alone is enough afterwards: no object is looked up again.
    with dg.instance_for_test(overrides=IN_MEMORY_EVENTS) as empty:
        again = evaluate(sensor, empty, tick.cursor)
    assert again.requests == [] and again.skip == "3 of 3 objects bootstrapped"


# --- dbt_refresh ---------------------------------------------------------------------------


def bootstrap_all(instance: dg.DagsterInstance) -> None:
    for name in NAMES:
        apply(instance, name, FIRST)
        apply(instance, name, FIRST, layer="scd2")


def test_no_dbt_refresh_sensor_when_its_interval_is_zero() -> None:
    assert dbt_refresh_sensor(sync_config(dbt_refresh_minutes=0)) is None
    assert dbt_refresh_sensor(sync_config()) is not None


def test_dbt_refresh_waits_for_every_object_to_be_bootstrapped(
    instance: dg.DagsterInstance, clock: Clock
) -> None:
    sensor = dbt_refresh_sensor(sync_config())
    assert sensor is not None
    for name in NAMES[:2]:
        apply(instance, name, FIRST)
    apply(instance, "Task", TODAY.isoformat())  # CDC-applied today, never backfilled

    tick = evaluate(sensor, instance, None)

    assert tick.requests == []
    assert tick.skip == "waiting for the bootstrap of Task"


def test_dbt_refresh_requests_one_build_once_everything_is_bootstrapped(
    instance: dg.DagsterInstance, clock: Clock
) -> None:
    sensor = dbt_refresh_sensor(sync_config())
    assert sensor is not None
    bootstrap_all(instance)

    tick = evaluate(sensor, instance, None)

    (request,) = tick.requests
    assert request.tags[SOURCE_TAG] == DBT_REFRESH
    assert request.asset_selection is None  # the sensor's target: staging, marts, legacy
    assert request.run_key == f"{DBT_REFRESH}:{int(clock.now)}"


def test_dbt_refresh_waits_for_the_interval_even_when_new_data_arrives(
    instance: dg.DagsterInstance, clock: Clock
) -> None:
    sensor = dbt_refresh_sensor(sync_config())
    assert sensor is not None
    bootstrap_all(instance)
    first = evaluate(sensor, instance, None)
    assert len(first.requests) == 1
    apply(instance, "Account", TODAY.isoformat())

    clock.now += REFRESH_MINUTES * 60 - 1
    within = evaluate(sensor, instance, first.cursor)
    assert within.requests == []
    assert within.skip == "refreshed less than the interval ago"

    clock.now += 2
    after = evaluate(sensor, instance, within.cursor)
    assert len(after.requests) == 1
    assert after.requests[0].run_key != first.requests[0].run_key


def test_dbt_refresh_skips_when_nothing_was_applied_since_the_last_build(
    instance: dg.DagsterInstance, clock: Clock
) -> None:
    sensor = dbt_refresh_sensor(sync_config())
    assert sensor is not None
    bootstrap_all(instance)
    first = evaluate(sensor, instance, None)
    assert len(first.requests) == 1

    clock.now += REFRESH_MINUTES * 60 + 1
    idle = evaluate(sensor, instance, first.cursor)
    assert idle.requests == []
    assert idle.skip == "nothing new applied since the last dbt build"

    apply(instance, "Opportunity", TODAY.isoformat(), layer="scd2")
    changed = evaluate(sensor, instance, idle.cursor)
    assert len(changed.requests) == 1


def test_dbt_refresh_skips_while_a_build_is_in_flight(
    instance: dg.DagsterInstance, clock: Clock
) -> None:
    sensor = dbt_refresh_sensor(sync_config())
    assert sensor is not None
    bootstrap_all(instance)
    add_run(instance, {SOURCE_TAG: DBT_REFRESH}, dg.DagsterRunStatus.STARTED)

    busy = evaluate(sensor, instance, None)
    assert busy.requests == []
    assert busy.skip == "a dbt build is still running"

    # A newer finished build does not hide the one still running.
    add_run(instance, {SOURCE_TAG: DBT_REFRESH}, dg.DagsterRunStatus.SUCCESS)
    still = evaluate(sensor, instance, None)
    assert still.requests == []


def test_a_bootstrapped_object_gets_one_tail_re_read_of_its_read_lag_window(
    instance: dg.DagsterInstance, clock: Clock
) -> None:
    """The bootstrap read stopped `bulk_lag_seconds` before it started; records whose
    latest change fell in that window are re-read whole once the window is old enough."""
    sync = sync_config()
    lag = sync.settings.bulk_lag_seconds
    sensor = bootstrap_sensor(sync)
    first = evaluate(sensor, instance, None)
    add_run(instance, bootstrap_tags("Opportunity"), dg.DagsterRunStatus.SUCCESS)
    apply(instance, "Opportunity", FIRST)

    applied = evaluate(sensor, instance, first.cursor)
    assert [r.tags[OBJECT_TAG] for r in applied.requests] == ["Account"]  # no tail yet

    clock.now += lag + automation.TAIL_MARGIN_S + 1
    due = evaluate(sensor, instance, applied.cursor)
    tails = [r for r in due.requests if r.tags.get("sfdc/reason") == "bootstrap-tail"]
    (tail,) = tails
    assert tail.tags[OBJECT_TAG] == "Opportunity" and tail.tags[SOURCE_TAG] == "rebackfill"
    since = dt.datetime.fromisoformat(
        tail.run_config["ops"]["salesforce__raw__opportunity"]["config"]["since"]
    )
    # From before the bootstrap's request minus the lag (the run was created just now).
    assert since.timestamp() <= time.time() - lag - automation.TAIL_MARGIN_S + 1

    again = evaluate(sensor, instance, due.cursor)
    assert not [r for r in again.requests if r.tags.get("sfdc/reason") == "bootstrap-tail"]
